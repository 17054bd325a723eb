"""``osteoroi report``: the diagnosis table and HTML report from a result JSON.

    osteoroi report RESULT.json [--prior OLD.json] [--criteria NAME|FILE ...]
                    [--exclude L2=fracture:2 ...] [--age 67] [--sex F] [--menopause post|pre]
                    [--fragility-fracture TEXT] [--precision-pct 3] [--volume CT]
                    [--html OUT.html] [--pdf OUT.pdf [--page-size A4|Letter] [--browser PATH]]
                    [--dicom-sr SR.dcm] [--dicom-pdf PDF.dcm] [--dicom-source DICOM_FOLDER]
                    [--csv OUT.csv|.tsv] [--levels-csv OUT.csv] [--json OUT.json]
                    [--reader NAME] [--signed-date YYYY-MM-DD] [--comment TEXT]
                    [--patient-name NAME] [--patient-id ID] [--cohort-csv OUT.csv] [--overwrite]
    osteoroi report A.json B.json ... --cohort-csv COHORT.csv [--criteria ...] [--precision-pct 3]

Prints the vBMD table (when calibrated), the diagnosis table and the impression. Exit codes: 0
success, 1 bad input (the message says what to do), 2 wrong usage (e.g. a per-exam option with
several results).
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

from ..errors import InputError
from ..io.jsonfile import read_json
from ..export.wording import plain_words
from .console import print_impression, print_vbmd_table


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
    """The diagnosis table, one line per verdict, in plain words."""
    lines = [f"{'criterion':<24}{'ROI':<7}{'levels':<16}{'value':>16}  category"]
    for v in dx["verdicts"]:
        levels = ",".join(v["levels_used"]) or "-"
        value = f"{v['value']:.2f} {v['unit']}" if v.get("value") is not None else "-"
        cat = v.get("category") or ("values only" if v["status"] == "ok" else v["status"])
        lines.append(f"{plain_words(v['short_title'])[:23]:<24}{(v['shape'] or '-'):<7}{levels:<16}{value:>16}  {cat}")
    lines += [f"rule: {v['rule']}" for v in dx["verdicts"] if v.get("lead")]
    for s in ((dx.get("followup") or {}).get("summary") or []):
        if s.get("change_pct") is not None:
            lines.append(f"follow-up {s['criterion_id']} {s['shape']}: {s['change_pct']:+.2f} % "
                         f"(LSC {s['lsc_pct']:.2f} %) -> {s['verdict']}")
    note = dx["patient"].get("applicability_note")
    if note and not dx["patient"].get("applicable"):
        lines.append(f"note: {note}")
    for line in lines:
        print(plain_words(line), file=stream)


#: Options that describe one exam: with several results they would be applied to every exam, so they are refused.
PER_EXAM_OPTIONS = ("prior", "exclude", "age", "sex", "menopause", "fragility_fracture", "volume", "html", "pdf",
                    "dicom_sr", "dicom_pdf", "dicom_source", "csv",
                    "levels_csv", "json", "reader", "signed_date", "comment", "patient_name", "patient_id")


def _usage_error(message: str) -> int:
    """Wrong usage, as argparse reports it: exit code 2."""
    print(f"osteoroi report: error: {message}", file=sys.stderr)
    return 2


def _diagnose(args, result_path: str, result, prior=None, patient=None):
    from ..diagnosis.verdict import build_diagnosis

    return build_diagnosis(result, criteria=args.criteria, exclusions=getattr(args, "exclude", None), patient=patient,
                           prior=prior, precision_pct=args.precision_pct,
                           convert_material=getattr(args, "convert_material", False),
                           confirm_same_patient=getattr(args, "confirm_same_patient", False),
                           precision_mg_cm3=getattr(args, "precision_mg_cm3", None),
                           source_file=os.path.abspath(result_path),
                           prior_file=os.path.abspath(args.prior) if getattr(args, "prior", None) else "")


def cmd_cohort(args, out) -> int:
    """Several results → one cohort table (one row per exam), with one summary line per exam."""
    from ..export.cohort import cohort_text
    from ..io.outputs import check_output_paths, write_atomically

    given = [f"--{k.replace('_', '-')}" for k in PER_EXAM_OPTIONS if getattr(args, k, None)]
    if given:
        return _usage_error(f"the options {', '.join(given)} describe one exam; with {len(args.result)} results give only "
                            "--cohort-csv (and --criteria, --precision-pct), or run 'osteoroi report' once per exam.")
    if not args.cohort_csv:
        return _usage_error(f"{len(args.result)} results were given without --cohort-csv; give --cohort-csv OUT.csv "
                            "for the cohort table, or one result for a report.")
    check_output_paths([args.cohort_csv], overwrite=args.overwrite, inputs=list(args.result))
    exams = []
    for path in args.result:
        result = read_result(path)
        exams.append((path, _diagnose(args, path, result), result))
    delimiter = "\t" if args.cohort_csv.lower().endswith((".tsv", ".tab")) else ","
    write_atomically({args.cohort_csv: cohort_text(exams, delimiter)})
    for path, dx, _ in exams:
        lead = dx["verdicts"][0] if dx["verdicts"] else {}
        value = f"{lead['value']:.2f} {lead['unit']}" if lead.get("value") is not None else "no value"
        print(f"{os.path.basename(path)}: {lead.get('short_title', '-')} {value} "
              f"{lead.get('category') or 'not categorised'}", file=out)
    print(f"wrote {args.cohort_csv} ({len(exams)} exams)", file=out)
    return 0


def cmd_report(args, out=None) -> int:
    out = out or sys.stdout
    if len(args.result) > 1:
        return cmd_cohort(args, out)
    from ..export.html_report import write_report
    from ..export.impression import SignOff
    from ..io.outputs import check_output_paths

    result_path = args.result[0]
    outputs = [p for p in (args.html, args.pdf, args.csv, args.levels_csv, args.json, args.cohort_csv, args.dicom_sr,
                           args.dicom_pdf) if p]
    inputs = [result_path, args.prior, args.volume] + [c for c in (args.criteria or []) if os.path.isfile(c)]
    check_output_paths(outputs, overwrite=args.overwrite, inputs=inputs)
    if not outputs:
        print("note: no --html, --pdf, --csv, --levels-csv, --json or --cohort-csv given; printing the table only.",
              file=sys.stderr)
    if args.dicom_pdf and not args.pdf:
        return _usage_error("--dicom-pdf encapsulates the report PDF: give --pdf OUT.pdf too.")
    if args.volume and not os.path.exists(args.volume):
        raise InputError(f"The CT {args.volume} does not exist.", "Give the CT the result was measured on, or omit --volume.")
    result = read_result(result_path)
    prior = read_result(args.prior, "prior result") if args.prior else None
    patient = {"age": args.age, "sex": args.sex, "menopause": args.menopause,
               "fragility_fracture": args.fragility_fracture}
    dx = _diagnose(args, result_path, result, prior=prior, patient=patient)
    sign_off = SignOff(reader=args.reader or "", date=args.signed_date or "", comment=args.comment or "")
    identity = {"name": args.patient_name, "id": args.patient_id}
    written = write_report(dx, result, html_path=args.html, volume=args.volume, csv_path=args.csv,
                           json_path=args.json, levels_csv_path=args.levels_csv, overwrite=args.overwrite,
                           sign_off=sign_off, identity=identity, pdf_path=args.pdf, page_size=args.page_size,
                           browser=args.browser)
    if args.cohort_csv:
        written += _write_cohort_of_one(args, result_path, dx, result)
    if args.dicom_sr or args.dicom_pdf:
        from ..export.dicom_sr import write_dicom_exports

        written += write_dicom_exports(dx, result, source=args.dicom_source, sr_path=args.dicom_sr,
                                       pdf_dicom_path=args.dicom_pdf, pdf_path=args.pdf, sign_off=sign_off,
                                       overwrite=args.overwrite)
    print_vbmd_table(dx["rows"], out)
    print_summary(dx, out)
    print_impression(dx, out, sign_off)
    for w in dx["warnings"] + ((dx.get("followup") or {}).get("warnings") or []):
        print(f"warning: {w}", file=sys.stderr)
    for p in written:
        print(f"wrote {p}", file=out)
    return 0


def _write_cohort_of_one(args, result_path, dx, result):
    from ..export.cohort import cohort_text
    from ..io.outputs import write_atomically

    delimiter = "\t" if args.cohort_csv.lower().endswith((".tsv", ".tab")) else ","
    write_atomically({args.cohort_csv: cohort_text([(result_path, dx, result)], delimiter)})
    return [args.cohort_csv]


def register(subparsers) -> None:
    """Add ``report`` to the ``osteoroi`` parser."""
    p = subparsers.add_parser(
        "report", help="diagnosis table (criteria per level rule), follow-up and HTML/CSV/JSON report from a result JSON",
        description="Apply diagnostic criteria (QCT vBMD ACR/ISCD when calibrated; seed-002 and Pickhardt HU "
                    "thresholds) to a measurement result and write the diagnosis table and a printable HTML report.",
        epilog="Exit codes: 0 success; 1 bad input or an output that cannot be written (the message says what to "
               "do); 2 wrong usage (unknown option, per-exam options with several results, --dicom-pdf without --pdf).")
    p.add_argument("result", nargs="+",
                   help="result JSON written by 'osteoroi measure --json' or 'osteoroi demo'; several results "
                        "with --cohort-csv make the cohort table (one row per exam)")
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
    p.add_argument("--pdf", metavar="OUT.pdf",
                   help="write the same report as PDF here (printed by headless Chromium/Chrome; see --browser)")
    p.add_argument("--page-size", choices=("A4", "Letter"), default="A4", help="paper size of the PDF (default A4)")
    p.add_argument("--browser", metavar="PATH", help="Chromium or Chrome to print the PDF with (default: found on PATH)")
    p.add_argument("--dicom-sr", metavar="OUT.dcm",
                   help="write a DICOM SR (TID 1500: per-level ROI measurements on the source slices, vBMD, categories) "
                        "into the source study; needs the DICOM series (--dicom-source) and the extra osteoroi[sr]")
    p.add_argument("--dicom-pdf", metavar="OUT.dcm", help="write the --pdf report as a DICOM Encapsulated PDF of the study")
    p.add_argument("--dicom-source", metavar="FOLDER",
                   help="the DICOM series the result was measured on (default: the result's volume.file)")
    p.add_argument("--csv", metavar="OUT.csv", help="write the diagnosis table here (.tsv: tab-separated)")
    p.add_argument("--levels-csv", metavar="OUT.csv", help="write the per-level table here (.tsv: tab-separated)")
    p.add_argument("--json", metavar="OUT.json", help="write the diagnosis document (osteoroi-diagnosis/1) here")
    p.add_argument("--cohort-csv", metavar="OUT.csv",
                   help="write one row per exam (lead verdict, borderline flag, disagreeing criteria) here (.tsv: tabs)")
    p.add_argument("--reader", metavar="NAME", help="the reporting radiologist, printed in the sign-off block")
    p.add_argument("--signed-date", metavar="YYYY-MM-DD", help="date of the sign-off")
    p.add_argument("--comment", metavar="TEXT", help="the reader's own comment, printed under the impression")
    p.add_argument("--patient-name", metavar="NAME", help="patient name for the header (default: DICOM PatientName)")
    p.add_argument("--patient-id", metavar="ID", help="patient ID for the header (default: DICOM PatientID)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_report)
