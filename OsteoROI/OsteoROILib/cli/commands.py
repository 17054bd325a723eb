"""The ``osteoroi`` command line (also ``python -m OsteoROILib``).

    osteoroi demo [--out DIR]
    osteoroi measure VOLUME (--point L1=R,A,S ... | --points FILE.mrk.json | --labels SEG [--label-map MAP])
                     [--shapes oval,round,front,left,right] [--slab-mm N] [--no-auto]
                     [--json OUT] [--csv OUT] [--report OUT.html] [--force] [--overwrite] [--series UID]

Exit codes: 0 success, 1 bad input or a result that cannot be written (the message says what
to do), 2 wrong command-line usage (unknown option, missing argument, options that do not go
together), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

from .. import __version__
from . import calibrate as cli_calibration
from . import report as cli_report
from .console import print_impression, print_level_table, print_vbmd_table
from ..errors import InputError, OsteoROIError
from ..io.markups_file import parse_named_point, point_list_document, points_by_label, read_point_list
from ..placement.measure import measure_levels
from ..io.outputs import check_output_paths, write_atomically
from .caveats import print_caveats, warnings_not_printed
from ..export.measurement import build_document, to_csv_text, to_json_text
from ..roi.family import SHAPE_NAMES


#: Modules that add further sub-commands: each has ``register(subparsers)``.
COMMAND_MODULES = (cli_calibration, cli_report)


def parse_point(text: str):
    """``L1=R,A,S`` → ("L1", [R, A, S])."""
    return parse_named_point(text, "--point", "level label", "L1=-5.2,30.1,120")


def collect_points(point_args: Optional[Sequence[str]], points_file: Optional[str]) -> Dict[str, List[float]]:
    if point_args and points_file:
        raise InputError("Both --point and --points were given.", "Use one of them.")
    if points_file:
        return points_by_label(read_point_list(points_file), source=points_file)
    if not point_args:
        raise InputError("No points were given.", "Give --point L1=R,A,S (repeat per level) or --points FILE.mrk.json.")
    pairs = [parse_point(p) for p in point_args]
    return points_by_label([{"label": lab, "ras": xyz} for lab, xyz in pairs], source="--point")


def _placements_from_labels(args, volume):
    """``--labels SEG [--label-map ...]`` → (placements, warnings)."""
    from ..placement.labels import describe_missing, parse_label_map, place_from_labels, read_labels

    map_name, label_map = parse_label_map(args.label_map or "total")
    labels, notes = read_labels(args.labels, volume)
    volume.notes.extend(notes)
    estimate = "label" if getattr(args, "label_fit", False) else "image"  # --label-fit: an explicit override
    placements, missing = place_from_labels(volume, labels, label_map, estimate=estimate)
    warnings = describe_missing(missing, label_map, os.path.basename(args.labels))
    if not placements:
        raise InputError(
            f"None of the levels of the label map '{map_name}' ({', '.join(f'{k}={v}' for k, v in label_map.items())}) "
            f"is present in {args.labels}.",
            "Choose the map that matches the segmentation: --label-map total, bodies, or e.g. L1=31,L2=30.")
    volume.notes.append(f"Levels placed from the segmentation {args.labels} with the label map '{map_name}'"
                        + (" (outlines fitted near the label's boundary: --label-fit)." if estimate == "label" else "."))
    return placements, warnings


def cmd_measure(args, out=None) -> int:
    out = out or sys.stdout
    from ..io.image_files import read_volume

    outputs = check_output_paths([args.json, args.csv, args.report], overwrite=args.overwrite,
                                 inputs=[args.volume, args.points, args.labels, args.calibration])
    if not outputs:
        print("note: no --json, --csv or --report given; printing the table only.", file=sys.stderr)
    if args.labels and (args.point or args.points):
        raise InputError("Both a segmentation (--labels) and points were given.", "Use one of them.")
    if args.label_map and not args.labels:
        raise InputError("--label-map was given without --labels.", "Give the segmentation with --labels SEG.")
    if getattr(args, "label_fit", False) and not args.labels:
        raise InputError("--label-fit was given without --labels.", "Give the segmentation with --labels SEG.")
    points = None if args.labels else collect_points(args.point, args.points)
    calibration = _load_calibration(args.calibration)
    volume = read_volume(args.volume, series_uid=args.series)
    placements, warnings = ({}, [])
    if args.labels:
        placements, warnings = _placements_from_labels(args, volume)
    measurement = measure_levels(volume, points, shapes=args.shapes, slab_mm=args.slab_mm, force=args.force,
                                 auto=args.auto, placements=placements, warnings=warnings, plane=args.plane)
    doc = _document(measurement, volume, calibration)
    texts = {}
    if args.json:
        texts[args.json] = to_json_text(doc)
    if args.csv:
        texts[args.csv] = to_csv_text(doc["rows"])
    if args.report:
        texts[args.report] = _report_html(doc, volume, out)
    print_caveats(volume, sys.stderr, aorta=doc.get("aorta"))
    write_atomically(texts, overwrite=args.overwrite)  # all or nothing: no JSON/CSV without the report
    print_level_table(doc["rows"], out)
    print_vbmd_table(doc["rows"], out)
    for w in warnings_not_printed(volume, doc["warnings"]):
        print(f"warning: {w}", file=sys.stderr)
    for path in texts:
        print(f"wrote {path}", file=out)
    return 0


def _load_calibration(path: Optional[str]):
    if not path:
        return None
    from ..calibration.model import load_calibration

    return load_calibration(path)


def _document(measurement, volume, calibration=None, extra=None):
    """Measurement (+ calibration) → the result document."""
    extra = dict(extra or {})
    if calibration is not None:
        from ..calibration.apply import calibrate_measurement

        measurement, cal_extra = calibrate_measurement(measurement, calibration, volume.facts)
        extra.update(cal_extra)
    return build_document(measurement, volume.describe(), command=_command_line(), extra=extra)


def _print_diagnosis(dx, out) -> None:
    """The diagnosis table and the impression, as ``measure --report`` and the demo print them."""
    from .report import print_summary

    print_summary(dx, out)
    print_impression(dx, out)


def _report_html(doc, volume, out, patient=None) -> str:
    """The HTML report of a result document (its diagnosis table and impression printed to ``out``)."""
    from ..diagnosis.verdict import build_diagnosis
    from ..export.html_report import build_html

    dx = build_diagnosis(doc, patient=patient)
    _print_diagnosis(dx, out)
    return build_html(dx, doc, volume=volume)


def _write_report(doc, volume, html_path: str, overwrite: bool, out, patient=None, csv_path=None,
                  convert_material: bool = False) -> List[str]:
    """Diagnosis table + HTML report of a result document (``osteoroi report`` has all options)."""
    from ..diagnosis.verdict import build_diagnosis
    from ..export.html_report import write_report

    dx = build_diagnosis(doc, patient=patient, convert_material=convert_material)
    written = write_report(dx, doc, html_path=html_path, volume=volume, csv_path=csv_path, overwrite=overwrite)
    _print_diagnosis(dx, out)
    return list(written)


#: The demo's patient: the QCT and HU categories apply to post-menopausal women and men ≥ 50
#: (QCT_BRIEF §3), so the demo states one to show them.
DEMO_PATIENT = {"age": 67, "sex": "F"}
DEMO_PHANTOM_ID = "qrm-bdc-6"
#: Trabecular densities (mg/cm³ HA) of L1-L4 in the demo: an L1+L2 mean of 102 mg/cm³ lies in the
#: low-bone-mass band 80-120 (QCT_BRIEF §3), so the demo shows a non-trivial verdict.
DEMO_DENSITIES = (108.0, 96.0, 90.0, 84.0)


def cmd_demo(args, out=None) -> int:
    """The main job on a generated sample: phantom CT → calibration → ROIs → vBMD → diagnosis table."""
    out = out or sys.stdout
    import json

    from ..calibration.model import save_calibration
    from ..calibration.phantom_fit import fit_phantom
    from ..digital_phantom import make_phantom
    from ..calibration.phantom_library import get_phantom
    from ..calibration.rods import auto_rods
    from ..io.image_files import write_volume

    folder = os.path.abspath(args.out)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OsteoROIError(f"Cannot create the output folder {folder} ({exc.strerror}).",
                            "Choose another folder with --out.") from None
    names = {k: os.path.join(folder, f) for k, f in (
        ("json", "osteoroi-demo.json"), ("csv", "osteoroi-demo.csv"), ("diagnosis", "osteoroi-demo-diagnosis.csv"),
        ("report", "osteoroi-demo-report.html"), ("calibration", "demo-calibration.json"),
        ("volume", "demo-phantom.nrrd"), ("points", "demo-points.mrk.json"))}
    # The demo owns these files: re-running it replaces them.
    check_output_paths(names.values(), overwrite=True)
    print("Generating the digital CT phantom: L1-L4 of known density under a QRM-BDC-like 6-rod HA phantom ...",
          file=out)
    volume, truth = make_phantom(calibration_preset=DEMO_PHANTOM_ID, trabecular_density=DEMO_DENSITIES)
    volume.source = names["volume"]
    phantom = get_phantom(DEMO_PHANTOM_ID)
    found = auto_rods(volume, phantom)
    cal = fit_phantom([m.to_dict() for m in found.rods], phantom, source_volume=names["volume"], command="osteoroi demo")
    print(f"Calibration from {len(found.rods)} rods found automatically: {cal.equation()} (R² {cal.r2:.4f})", file=out)
    # One "click" per level at the body centre; placement is automatic, as for a user's click.
    points = {lv.name: list(lv.center_ras) for lv in truth.levels}
    measurement = measure_levels(volume, points, shapes=SHAPE_NAMES)
    doc = _document(measurement, volume, cal, extra={"truth": truth.to_dict()})
    texts = {
        names["json"]: to_json_text(doc),
        names["csv"]: to_csv_text(doc["rows"]),
        names["points"]: json.dumps(point_list_document(points), indent=2) + "\n",
    }
    write_volume(volume, names["volume"])
    save_calibration(cal, names["calibration"], overwrite=True)
    write_atomically(texts, overwrite=True)  # the demo owns its files
    print_level_table(doc["rows"], out, truth={lv.name: lv.trabecular_hu for lv in truth.levels})
    print_vbmd_table(doc["rows"], out, truth={lv.name: lv.trabecular_density for lv in truth.levels})
    print(f"\n{len(doc['rows'])} rows ({len(points)} levels x {len(SHAPE_NAMES)} ROI shapes).", file=out)
    print(f"\nDiagnosis (demo patient: {DEMO_PATIENT['age']}-year-old woman):", file=out)
    # The demo's phantom is HA and the QCT cut-offs are taken as K2HPO4: the demo opts into the documented
    # Goodsitt 1992 conversion, which its verdict and report state (diagnosis.material).
    _write_report(doc, volume, names["report"], overwrite=True, out=out, patient=dict(DEMO_PATIENT),
                  csv_path=names["diagnosis"], convert_material=True)
    print("", file=out)
    for key in ("json", "csv", "diagnosis", "report", "calibration", "volume", "points"):
        print(f"wrote {names[key]}", file=out)
    print(f"\nMeasure it again from the files: osteoroi measure {names['volume']} --points {names['points']} "
          f"--calibration {names['calibration']}", file=out)
    return 0


def _command_line() -> str:
    return " ".join(["osteoroi"] + [a for a in sys.argv[1:]])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osteoroi",
        description="Vertebral trabecular HU in the seed-002 ROIs (oval, round, front, left, right) of L1-L4 on CT.",
    )
    parser.add_argument("--version", action="version", version=f"osteoroi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="the whole job on a generated phantom CT: calibration, ROIs, vBMD, diagnosis table")
    demo.add_argument("--out", default="osteoroi-demo", help="output folder (default: ./osteoroi-demo)")
    demo.set_defaults(func=cmd_demo)

    m = sub.add_parser("measure", help="measure the ROIs of the levels given by points")
    m.add_argument("volume", help="CT image file (NRRD, NIfTI, MHA, ...) or a DICOM series folder")
    m.add_argument("--point", action="append", metavar="LEVEL=R,A,S",
                   help="a point inside a vertebral body in RAS mm (Slicer's coordinates); repeat per level")
    m.add_argument("--points", metavar="FILE.mrk.json", help="Slicer point list with control points labelled L1...L4")
    m.add_argument("--shapes", default=",".join(SHAPE_NAMES),
                   help=f"comma-separated ROI shapes (default: all: {','.join(SHAPE_NAMES)})")
    m.add_argument("--slab-mm", default=None,
                   help="ROI slab thickness in mm, or qct (10 mm centred at mid-height, clear of the endplates); "
                        "default: one slice")
    m.add_argument("--json", help="write the result document (JSON) here")
    m.add_argument("--csv", help="write the table (CSV) here")
    m.add_argument("--force", action="store_true",
                   help="measure even where no vertebral body is detected around a point (rows are flagged)")
    m.add_argument("--calibration", metavar="CAL.json",
                   help="calibration from `osteoroi calibrate`: adds vbmd_mg_cm3, vbmd_unit and vbmd_sd to every row")
    m.add_argument("--report", metavar="OUT.html",
                   help="also write the diagnosis table and HTML report (all options: `osteoroi report`)")
    m.add_argument("--overwrite", action="store_true", help="replace existing output files")
    m.add_argument("--series", metavar="UID",
                   help="the SeriesInstanceUID to read when the DICOM folder holds several CT series")
    m.add_argument("--no-auto", dest="auto", action="store_false",
                   help="outline the body on the point's own axial slice (the simple shell-ray probe) instead of "
                        "finding the mid-vertebral slice and the body's outline and AP axis automatically")
    m.add_argument("--labels", metavar="SEG",
                   help="place every level from a vertebra segmentation (label map file) instead of points")
    m.add_argument("--label-map", metavar="MAP", default=None,
                   help="label values of the levels in --labels: total (TotalSegmentator: L1=31 ... L4=28, T12=32), "
                        "bodies (L1=20 ... L4=23) or e.g. L1=31,L2=30 (default: total)")
    m.add_argument("--label-fit", action="store_true",
                   help="with --labels: fit each outline near the label's boundary instead of taking the image's own "
                        "estimate (the one a click inside the body gives) checked against the label; recorded in "
                        "every row (label_estimate)")
    m.add_argument("--plane", choices=("image", "vertebra"), default="image",
                   help="plane of the ROIs: the image's axial slice nearest mid-height (image, default, as seed 002) "
                        "or the plane perpendicular to the vertebra's own axis, resampled (vertebra: tilted spines)")
    m.set_defaults(func=cmd_measure)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


_PARSER: List[argparse.ArgumentParser] = []


def _parser() -> argparse.ArgumentParser:
    """The command's parser, built once per process (building it costs a few ms of argparse/gettext)."""
    if not _PARSER:
        _PARSER.append(build_parser())
    return _PARSER[0]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OsteoROIError as exc:
        print(f"osteoroi: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("osteoroi: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
