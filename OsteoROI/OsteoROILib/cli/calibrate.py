"""``osteoroi phantoms`` and ``osteoroi calibrate``: calibration from HU to QCT vBMD.

    osteoroi phantoms [--user-phantoms DIR]
    osteoroi phantoms --save ID --unit K2HPO4|HA --rod NAME=DENSITY[:WATER] ... [--name TEXT] [--user-phantoms DIR]
    osteoroi calibrate VOLUME --phantom ID (--rod KEY=R,A,S ... | --auto-rods [--region R0,R1,A0,A1[,S0,S1]])
                       --out cal.json [--slab-mm N] [--overwrite]
    osteoroi calibrate VOLUME --internal --tissue air=R,A,S --tissue adipose=R,A,S ... --out cal.json
    osteoroi calibrate --manual --slope S --intercept B --unit K2HPO4|HA --out cal.json

KEY is a rod's name (e.g. A-E on the Mindways phantom) or its density as listed by
``osteoroi phantoms``. Exit codes: 0 success, 1 bad input (the message says what to do),
2 wrong usage.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Sequence

from ..errors import InputError
from ..io.markups_file import parse_named_point


def _parse_keyed_point(text: str, option: str):
    return parse_named_point(text, option, "name", "A=10.5,-101,20" if option == "--rod" else "air=0,-140,20")


def _parse_region(text: Optional[str]):
    if not text:
        return None
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        vals = []
    if len(vals) not in (4, 6):
        raise InputError(f"--region {text!r} is not 4 or 6 numbers.",
                         "Give R0,R1,A0,A1 (or R0,R1,A0,A1,S0,S1) in RAS mm around the phantom.")
    return vals


def _command_line() -> str:
    return " ".join(["osteoroi"] + list(sys.argv[1:]))


def cmd_phantoms(args, out=None) -> int:
    from ..calibration.phantom_library import default_user_dir, load_library, phantom_from_certificate, save_user_phantom

    out = out or sys.stdout
    if args.save:
        if not args.unit or not args.rod or len(args.rod) < 2:
            args._parser.error("--save needs --unit and at least two --rod NAME=DENSITY[:WATER_DENSITY]")
        rods = []
        for text in args.rod:
            name, _, value = text.partition("=")
            dens, _, water = value.partition(":")
            try:
                rods.append((name.strip(), float(dens)) + ((float(water),) if water.strip() else ()))
            except ValueError:
                raise InputError(f"--rod {text!r} is not NAME=DENSITY[:WATER_DENSITY].",
                                 "Write e.g. --rod R75=97.3, or --rod A=-51.83:1012.25 for a Mindways rod.") from None
        phantom = phantom_from_certificate(args.save, rods, args.unit, name=args.name or "")
        path = save_user_phantom(phantom, args.user_phantoms or default_user_dir(), overwrite=args.overwrite)
        print(f"saved {phantom.describe_line()}", file=out)
        print(f"wrote {path}", file=out)
        return 0
    if args.rod or args.unit:
        args._parser.error("--rod and --unit go with --save ID")
    for p in load_library(args.user_phantoms).values():
        print(p.describe_line(), file=out)
    return 0


def _print_calibration(cal, out, report: Sequence[str] = ()) -> None:
    for line in report:
        print(line, file=out)
    print(f"Calibration ({cal.kind}, {cal.method}), unit {cal.unit_label}:", file=out)
    print(f"  {cal.equation()}", file=out)
    if cal.kind != "internal":
        print(f"  slope sigma = {cal.slope:.6g} HU per mg/cm3, intercept beta = {cal.intercept:.6g} HU", file=out)
    if cal.r2 is not None:
        see = "—" if cal.see is None else f"{cal.see:.4g} HU"
        print(f"  R2 = {cal.r2:.6f}, SEE = {see}, n = {cal.n_points}", file=out)
    if cal.kind == "internal":
        print(f"  effective energy {cal.internal['effective_energy_kev']:g} keV", file=out)
    if cal.points:
        if cal.kind == "internal":
            print(f"  {'tissue':<14}{'mean HU':>10}{'mu/rho':>10}", file=out)
            for p in cal.points:
                print(f"  {p['name']:<14}{p['mean_hu']:>10.1f}{p['mu_rho_cm2_g']:>10.4f}", file=out)
        else:
            print(f"  {'rod':<8}{'density':>10}{'mean HU':>10}{'SD':>8}{'resid':>8}  flag", file=out)
            for p in cal.points:
                sd = p.get("sd_hu")
                sd_text = f"{sd:>8.1f}" if sd is not None else f"{'—':>8}"
                print(f"  {p['name']:<8}{p['density']:>10g}{p['mean_hu']:>10.1f}{sd_text}{p['residual_hu']:>8.2f}"
                      f"  {'FLAG' if p.get('flagged') else ''}", file=out)


def cmd_calibrate(args, out=None) -> int:
    from ..calibration.model import save_calibration
    from ..calibration.phantom_fit import fit_phantom, manual_calibration, scanner_facts
    from ..io.outputs import check_output_paths

    out = out or sys.stdout
    modes = [bool(args.phantom), bool(args.internal), bool(args.manual)]
    if sum(modes) != 1:
        args._parser.error("choose exactly one of --phantom ID, --internal or --manual")
    if args.manual:
        if args.volume:
            args._parser.error("--manual takes no VOLUME")
        if args.slope is None or args.intercept is None or not args.unit:
            args._parser.error("--manual needs --slope, --intercept and --unit")
    elif not args.volume:
        args._parser.error("VOLUME is required (except with --manual)")
    check_output_paths([args.out], overwrite=args.overwrite, inputs=[args.volume])
    report: List[str] = []
    if args.manual:
        cal = manual_calibration(args.slope, args.intercept, args.unit, note=args.note or "", command=_command_line(),
                                 accept_implausible=args.accept_implausible_calibration)
    else:
        from ..io.image_files import read_volume

        if args.phantom:
            if bool(args.rod) == bool(args.auto_rods):
                args._parser.error("--phantom needs either --rod KEY=R,A,S (repeat per rod) or --auto-rods")
            if args.region and not args.auto_rods:
                args._parser.error("--region goes with --auto-rods")
        elif args.rod or args.auto_rods:
            args._parser.error("--rod and --auto-rods go with --phantom")
        if args.internal and not args.tissue:
            args._parser.error("--internal needs --tissue NAME=R,A,S for at least three tissues")
        if args.tissue and not args.internal:
            args._parser.error("--tissue goes with --internal")
        volume = read_volume(args.volume)
        facts = scanner_facts(volume)
        if args.phantom:
            from ..calibration.phantom_library import get_phantom
            from ..calibration.rods import auto_rods, measure_rods

            phantom = get_phantom(args.phantom, args.user_phantoms)
            if args.auto_rods:
                res = auto_rods(volume, phantom, region=_parse_region(args.region), slab_mm=args.slab_mm,
                                confirm_few_rods=args.confirm_rods)
                rods = res.rods
                report = list(res.report)
            else:
                points: Dict[str, List[float]] = {}
                for text in args.rod:
                    key, xyz = _parse_keyed_point(text, "--rod")
                    if key in points:
                        raise InputError(f"Rod {key} is given twice.", "Give one --rod per rod.")
                    points[key] = xyz
                rods = measure_rods(volume, points, phantom, slab_mm=args.slab_mm)
            cal = fit_phantom([m.to_dict() for m in rods], phantom, scanner=facts, source_volume=volume.source,
                              command=_command_line(), accept_implausible=args.accept_implausible_calibration)
        else:
            from ..calibration.internal import fit_internal, measure_tissues

            points = {}
            for text in args.tissue:
                key, xyz = _parse_keyed_point(text, "--tissue")
                points[key] = xyz
            measured = measure_tissues(volume, points, slab_mm=args.slab_mm)
            extra = {k: {kk: vv for kk, vv in v.items() if kk not in ("mean_hu", "sd_hu")} for k, v in measured.items()}
            cal = fit_internal({k: v["mean_hu"] for k, v in measured.items()},
                               tissue_sd={k: v["sd_hu"] for k, v in measured.items()}, scanner=facts,
                               source_volume=volume.source, command=_command_line(), points_extra=extra,
                               accept_implausible=args.accept_implausible_calibration)
        if args.note:
            cal.note = args.note
    path = save_calibration(cal, args.out, overwrite=args.overwrite)
    _print_calibration(cal, out, report)
    for w in cal.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {path}", file=out)
    return 0


def register(subparsers) -> None:
    """Add ``phantoms`` and ``calibrate`` to the ``osteoroi`` parser."""
    p = subparsers.add_parser("phantoms", help="list the calibration phantoms (id, rods: name, density, unit)")
    p.add_argument("--user-phantoms", metavar="DIR", default=None,
                   help="folder of saved user phantoms (default: $OSTEOROI_USER_PHANTOMS or ~/.osteoroi/phantoms)")
    p.add_argument("--save", metavar="ID", help="save a user phantom from its certificate (with --unit and --rod)")
    p.add_argument("--unit", help="density unit of the saved phantom: K2HPO4 or HA")
    p.add_argument("--rod", action="append", metavar="NAME=DENSITY[:WATER]",
                   help="a rod of the saved phantom (mg/cm3; water density for Mindways rods); repeat per rod")
    p.add_argument("--name", help="descriptive name of the saved phantom")
    p.add_argument("--overwrite", action="store_true", help="replace a saved user phantom of the same id")
    p.set_defaults(func=cmd_phantoms, _parser=p)

    c = subparsers.add_parser("calibrate", help="make a HU-to-vBMD calibration (phantom, internal or manual)")
    c.add_argument("volume", nargs="?", help="CT image file or DICOM folder (not with --manual)")
    c.add_argument("--phantom", metavar="ID", help="phantom id (see `osteoroi phantoms`)")
    c.add_argument("--rod", action="append", metavar="KEY=R,A,S",
                   help="a point in a rod (RAS mm); KEY = rod name or density as listed; repeat per rod")
    c.add_argument("--auto-rods", action="store_true", help="find the phantom's rods automatically")
    c.add_argument("--region", metavar="R0,R1,A0,A1[,S0,S1]",
                   help="RAS box (mm) to search for rods (default: the row of rods below the patient)")
    c.add_argument("--internal", action="store_true", help="internal (phantomless) calibration from tissues")
    c.add_argument("--tissue", action="append", metavar="NAME=R,A,S",
                   help="reference tissue point: air, adipose, muscle, blood or cortical_bone (at least 3)")
    c.add_argument("--manual", action="store_true", help="a user-entered slope and intercept")
    c.add_argument("--slope", type=float, help="manual slope (HU per mg/cm3)")
    c.add_argument("--intercept", type=float, help="manual intercept (HU)")
    c.add_argument("--unit", help="manual density unit: K2HPO4 or HA")
    c.add_argument("--slab-mm", type=float, default=None, help="ROI slab thickness for rods/tissues (default 10 mm)")
    c.add_argument("--user-phantoms", metavar="DIR", default=None, help="folder of saved user phantoms")
    c.add_argument("--note", help="free text stored with the calibration")
    c.add_argument("--accept-implausible-calibration", action="store_true",
                   help="use a calibration outside the physical range (NIST) anyway; recorded in the result and report")
    c.add_argument("--confirm-rods", action="store_true",
                   help="confirm that the discs found are the rods of a phantom with fewer than 3 rods (--auto-rods)")
    c.add_argument("--out", required=True, help="write the calibration JSON here")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    c.set_defaults(func=cmd_calibrate, _parser=c)
