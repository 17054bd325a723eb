"""``osteoroi report``: the diagnosis table and HTML report from a result JSON.

    osteoroi report RESULT.json [--prior OLD.json] [--criteria NAME|FILE ...]
                    [--exclude L2=fracture:2 ...] [--age 67] [--sex F] [--menopause post|pre]
                    [--fragility-fracture TEXT] [--precision-pct 3] [--volume CT]
                    [--html OUT.html] [--csv OUT.csv|.tsv] [--levels-csv OUT.csv] [--json OUT.json]
                    [--overwrite]
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

from ..errors import InputError
from ..io.jsonfile import read_json


def read_result(path: str, what: str = "result") -> Mapping[str, object]:
    """A measurement result JSON, with a clear error for anything else."""
    doc = read_json(path, f"{what} file", "Give the JSON written by 'osteoroi measure --json' or 'osteoroi demo'.")
    from ..diagnosis.values import check_result_doc

    try:
        check_result_doc(doc)
    except InputError as exc:
        raise InputError(f"{path}: {exc.problem}", exc.remedy) from None
    return doc


def print_summary(dx: Mapping[str, object], stream) -> None:
    print(f"{'criterion':<20}{'ROI':<7}{'levels':<16}{'value':>16}  category", file=stream)
    for v in dx["verdicts"]:
        levels = ",".join(v["levels_used"]) or "-"
        value = f"{v['value']:.2f} {v['unit']}" if v.get("value") is not None else "-"
        cat = v.get("category") or ("values only" if v["status"] == "ok" else v["status"])
        print(f"{v['short_title'][:19]:<20}{(v['shape'] or '-'):<7}{levels:<16}{value:>16}  {cat}", file=stream)
    for v in dx["verdicts"]:
        if v.get("lead"):
            print(f"rule: {v['rule']}", file=stream)
    fu = dx.get("followup")
    if fu:
        for s in fu["summary"]:
            if s.get("change_pct") is not None:
                print(f"follow-up {s['criterion_id']} {s['shape']}: {s['change_pct']:+.2f} % "
                      f"(LSC {s['lsc_pct']:.2f} %) -> {s['verdict']}", file=stream)
    note = dx["patient"].get("applicability_note")
    if note and not dx["patient"].get("applicable"):
        print(f"note: {note}", file=stream)


def cmd_report(args, out=None) -> int:
    out = out or sys.stdout
    from ..diagnosis.verdict import build_diagnosis
    from ..export.html_report import write_report
    from ..io.outputs import check_output_paths

    outputs = [p for p in (args.html, args.csv, args.levels_csv, args.json) if p]
    inputs = [args.result, args.prior, args.volume] + [c for c in (args.criteria or []) if os.path.isfile(c)]
    check_output_paths(outputs, overwrite=args.overwrite, inputs=inputs)
    if not outputs:
        print("note: no --html, --csv, --levels-csv or --json given; printing the table only.", file=sys.stderr)
    if args.volume and not os.path.exists(args.volume):
        raise InputError(f"The CT {args.volume} does not exist.", "Give the CT the result was measured on, or omit --volume.")
    result = read_result(args.result)
    prior = read_result(args.prior, "prior result") if args.prior else None
    patient = {"age": args.age, "sex": args.sex, "menopause": args.menopause,
               "fragility_fracture": args.fragility_fracture}
    dx = build_diagnosis(result, criteria=args.criteria, exclusions=args.exclude, patient=patient, prior=prior,
                         precision_pct=args.precision_pct, convert_material=args.convert_material,
                         confirm_same_patient=args.confirm_same_patient, precision_mg_cm3=args.precision_mg_cm3,
                         source_file=os.path.abspath(args.result),
                         prior_file=os.path.abspath(args.prior) if args.prior else "")
    written = write_report(dx, result, html_path=args.html, volume=args.volume, csv_path=args.csv,
                           json_path=args.json, levels_csv_path=args.levels_csv, overwrite=args.overwrite)
    print_summary(dx, out)
    for w in dx["warnings"] + ((dx.get("followup") or {}).get("warnings") or []):
        print(f"warning: {w}", file=sys.stderr)
    for p in written:
        print(f"wrote {p}", file=out)
    return 0


def register(subparsers) -> None:
    """Add ``report`` to the ``osteoroi`` parser."""
    p = subparsers.add_parser(
        "report", help="diagnosis table (criteria per level rule), follow-up and HTML/CSV/JSON report from a result JSON",
        description="Apply diagnostic criteria (QCT vBMD ACR/ISCD when calibrated; seed-002 and Pickhardt HU "
                    "thresholds) to a measurement result and write the diagnosis table and a printable HTML report.")
    p.add_argument("result", help="result JSON written by 'osteoroi measure --json' or 'osteoroi demo'")
    p.add_argument("--prior", metavar="OLD.json", help="result JSON of the prior exam, for the follow-up")
    p.add_argument("--criteria", action="append", metavar="NAME|FILE",
                   help="criterion to apply, repeatable; the first leads. Built-in: qct-acr2018, seed002-hu, "
                        "pickhardt2013-l1 (default: all that apply), or a criteria JSON file")
    p.add_argument("--exclude", action="append", metavar="LEVEL=REASON",
                   help="exclude a level, repeatable: L2=fracture:GRADE (Genant 0-3; add :traumatic for a "
                        "non-fragility fracture), L3=artefact, L4=focal_lesion, L1=manual[:note]")
    p.add_argument("--age", help="age in years (overrides DICOM PatientAge)")
    p.add_argument("--sex", help="F or M (overrides DICOM PatientSex)")
    p.add_argument("--menopause", choices=["post", "pre"], help="menopausal status of a woman")
    p.add_argument("--fragility-fracture", metavar="TEXT",
                   help="a fragility fracture elsewhere (e.g. 'hip 2023'): osteoporosis whatever the BMD")
    p.add_argument("--convert-material", action="store_true",
                   help="categorise a vBMD measured in the other material (K2HPO4/HA) than the criterion's, by the "
                        "Goodsitt 1992 conversion; stated in the report")
    p.add_argument("--confirm-same-patient", action="store_true",
                   help="the prior's PatientID or birth date differs but it is the same patient (recorded)")
    p.add_argument("--precision-mg-cm3", type=float, default=None,
                   help="the site's vBMD precision error in mg/cm3: LSC = 2.77 x it, in absolute units (QCT)")
    p.add_argument("--precision-pct", type=float, default=3.0,
                   help="site precision error in %% for the follow-up (LSC = 2.77 x precision; default 3)")
    p.add_argument("--volume", metavar="CT", help="CT for the level images (default: the result's volume.file)")
    p.add_argument("--html", metavar="OUT.html", help="write the HTML report here")
    p.add_argument("--csv", metavar="OUT.csv", help="write the diagnosis table here (.tsv: tab-separated)")
    p.add_argument("--levels-csv", metavar="OUT.csv", help="write the per-level table here (.tsv: tab-separated)")
    p.add_argument("--json", metavar="OUT.json", help="write the diagnosis document (osteoroi-diagnosis/1) here")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_report)
