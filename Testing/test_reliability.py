"""The bad-input catalogue: every way a user can feed OsteoROI something unusable.

One table, one test: each case builds its bad input in a fresh folder, runs it through the command
line (``OsteoROILib.cli.commands.main``) or the Python API, and asserts that

* it fails: exit code non-zero (CLI) or an ``OsteoROIError`` with a remedy (API), and no traceback;
* the message names the problem (the case's words, case-insensitive; ``a|b`` = either word);
* nothing was written and nothing existing was changed: every file under the case's folder and the
  shared inputs (contents and modification times) is the same before and after, including a
  pre-existing ``out/keep.json`` and the JSON/CSV targets the command was asked to write.

Cases of commands that are still being built (``osteoroi calibrate``, ``measure --calibration``)
skip cleanly while their sub-command or option does not exist. Cases marked ``xfail(strict=True)``
document a known defect: they start failing (XPASS) once it is fixed, so the marker gets removed.

Testing/test_cli.py, test_volume_io.py and test_dicom.py test some of the same failures through one
interface each; the cases here use other formats, other interfaces or other variants.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib import cli


from OsteoROILib.io import outputs
from OsteoROILib.errors import OsteoROIError, OutputError
from OsteoROILib.roi.geometry import RoiShape
from OsteoROILib.io.markups_file import point_list_document, read_point_list
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.roi.family import build_roi_family
from OsteoROILib.roi.outline import BodyOutline
from OsteoROILib.io.volume import Volume, check_ct
from OsteoROILib.io.image_files import write_volume

# --------------------------------------------------------------------------------------------
# Shared inputs: a small phantom CT and its points (never modified by any case)
# --------------------------------------------------------------------------------------------
KEEP = "precious result of an earlier run\n"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared_inputs")
    volume, truth = make_phantom()
    ct = str(folder / "ct.nrrd")
    write_volume(volume, ct)
    points = {lv.name: [float(x) for x in lv.center_ras] for lv in truth.levels}
    mrk = folder / "levels.mrk.json"
    mrk.write_text(json.dumps(point_list_document(points)))
    return {"dir": str(folder), "ct": ct, "volume": volume, "truth": truth, "points": points, "mrk": str(mrk)}


class Ctx:
    """What a case builder gets: the shared inputs and its own folders ``in/`` and ``out/``."""

    def __init__(self, shared, root):
        self.shared = shared
        self.root = root
        self.inp = os.path.join(root, "in")
        self.out = os.path.join(root, "out")
        os.makedirs(self.inp)
        os.makedirs(self.out)
        with open(os.path.join(self.out, "keep.json"), "w") as f:
            f.write(KEEP)

    def path(self, name):
        return os.path.join(self.inp, name)

    def outputs(self):
        return ["--json", os.path.join(self.out, "result.json"), "--csv", os.path.join(self.out, "result.csv")]

    def point(self, level="L1", offset=(0.0, 0.0, 0.0)):
        p = np.asarray(self.shared["points"][level]) + np.asarray(offset)
        return ["--point", f"{level}=" + ",".join(repr(float(x)) for x in p)]

    def all_points(self):
        out = []
        for level in self.shared["points"]:
            out += self.point(level)
        return out

    def measure(self, volume_path, *extra):
        return ["measure", volume_path, *extra, *self.outputs()]


@dataclass
class Case:
    id: str
    via: str  # "cli" or "api"
    build: Callable[[Ctx], object]  # -> argv (cli) or a zero-argument callable (api)
    words: Sequence[str]
    requires: Optional[Tuple[str, Optional[str]]] = None  # (sub-command, option) that must exist
    xfail: Optional[str] = None
    strict: bool = True  # strict xfail: fails once the defect is fixed, so that the marker is removed
    exit_code: Optional[int] = None  # None: any non-zero
    marks: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Builders of bad inputs
# --------------------------------------------------------------------------------------------
def ct_like(shape=(6, 24, 24)):
    a = np.full(shape, 40, np.int16)
    a[..., :3] = -1000
    return a


def write_image(path, array, spacing=(0.8, 0.8, 2.5), vector=False):
    img = sitk.GetImageFromArray(array, isVector=vector)
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
    sitk.WriteImage(img, path)
    return path


def truncated_copy(ctx, ext, keep_fraction=0.5, compress=False):
    full = ctx.path("full" + ext)
    sitk.WriteImage(sitk.GetImageFromArray(ct_like((20, 40, 40))), full, compress)
    data = open(full, "rb").read()
    os.unlink(full)
    cut = ctx.path("cut" + ext)
    with open(cut, "wb") as f:
        f.write(data[: int(len(data) * keep_fraction)])
    return cut


def raw_nrrd(ctx, name, header_lines, values=None):
    values = ct_like((4, 4, 4)) if values is None else values
    path = ctx.path(name)
    header = "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\nendian: little\n"
    with open(path, "wb") as f:
        f.write((header + "".join(line + "\n" for line in header_lines) + "\n").encode())
        f.write(values.astype("<i2").tobytes())
    return path


def dicom_series(ctx, name, **kw):
    from test_dicom import stored_values, write_series  # pydicom writer of the DICOM tests

    folder = ctx.path(name)
    write_series(folder, stored_values(6, 16, 16), **kw)
    return folder


def mrk(ctx, doc_or_text, name="points.mrk.json"):
    path = ctx.path(name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text))
    return path


def mrk_doc(ctx, points=None):
    return point_list_document(points or {"L1": ctx.shared["points"]["L1"]})


def with_cp(ctx, **changes):
    doc = mrk_doc(ctx)
    cp = doc["markups"][0]["controlPoints"][0]
    for k, v in changes.items():
        if v is None:
            cp.pop(k, None)
        else:
            cp[k] = v
    return doc


def two_lists_same_level(ctx):
    doc = mrk_doc(ctx)
    other = mrk_doc(ctx, {"L1": ctx.shared["points"]["L2"]})
    doc["markups"].append(other["markups"][0])
    return doc


def phantom_id_with_rods(ctx):
    """The id of a library phantom holding 100 and 400 mg/cm3 rods (from `osteoroi phantoms`)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            cli.main(["phantoms"])
        except SystemExit:
            pass
    for line in buf.getvalue().splitlines():
        if "qrm" in line.lower() and line.split():
            return line.split()[0].rstrip(":,")
    pytest.skip("no QRM phantom id found in `osteoroi phantoms` output")


def degenerate_rods(ctx):
    """Two rods clicked on the same spot: equal HU for different densities, a zero slope."""
    rod = ctx.shared["truth"].rods[1]
    p = ",".join(repr(float(x)) for x in rod.center_ras)
    pid = phantom_id_with_rods(ctx)
    return ["calibrate", ctx.shared["ct"], "--phantom", pid, "--rod", f"100={p}", "--rod", f"400={p}",
            "--out", os.path.join(ctx.out, "cal.json")]


def unknown_phantom(ctx):
    rod = ctx.shared["truth"].rods[0]
    p = ",".join(repr(float(x)) for x in rod.center_ras)
    return ["calibrate", ctx.shared["ct"], "--phantom", "no-such-phantom-xyz", "--rod", f"A={p}",
            "--out", os.path.join(ctx.out, "cal.json")]


def bad_calibration_json(ctx, text):
    path = ctx.path("cal.json")
    with open(path, "w") as f:
        f.write(text)
    return ctx.measure(ctx.shared["ct"], *ctx.point(), "--calibration", path)


def failing_second_write(ctx):
    """write_atomically: the second target's folder is missing, so nothing at all may appear."""
    first = os.path.join(ctx.out, "a.json")
    second = os.path.join(ctx.out, "missing-folder", "b.csv")
    return lambda: outputs.write_atomically({first: "{}\n", second: "x\n"})


def api_measure(ctx, points, **kw):
    return lambda: measure_levels(ctx.shared["volume"], points, **kw)


def degenerate_outline(ctx):
    """A 'body' 4 mm deep with a 2.5 mm cortex: no trabecular bone left for any ROI."""
    def run():
        outline = BodyOutline(center=(0.0, 0.0, 0.0), ap_axis=(0.0, 1.0, 0.0), normal=(0.0, 0.0, 1.0),
                              depth_mm=4.0, width_mm=40.0, cortical_mm=2.5)
        return build_roi_family(outline, 2.5)

    return run


def binary_points_file(ctx):
    path = ctx.path("bin.mrk.json")
    with open(path, "wb") as f:
        f.write(b"\xff\xfe\x00\x81" * 50)
    return lambda: read_point_list(path)


def float_volume(values, spacing=1.0):
    m = np.diag([spacing, spacing, spacing, 1.0])
    return Volume(values, m)


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------
S = lambda ctx: ctx.shared  # noqa: E731

CASES = [
    # --- files: corrupt, truncated, empty ----------------------------------------------------
    Case("truncated-nrrd-gz", "cli", lambda c: c.measure(truncated_copy(c, ".nrrd", 0.6, True), *c.point()),
         ["cannot read|truncated"]),
    Case("truncated-nifti", "cli", lambda c: c.measure(truncated_copy(c, ".nii"), *c.point()), ["truncated"]),
    Case("empty-file", "cli", lambda c: c.measure(open(c.path("zero.nrrd"), "w").close() or c.path("zero.nrrd"),
                                                  *c.point()), ["cannot read"]),
    Case("garbage-dicom-folder", "cli",
         lambda c: (os.makedirs(c.path("dcm")), [open(c.path(f"dcm/IM{i}.dcm"), "wb").write(os.urandom(900))
                                                  for i in range(4)], c.measure(c.path("dcm"), *c.point()))[-1],
         ["no dicom series"]),
    Case("empty-folder", "cli", lambda c: (os.makedirs(c.path("empty")), c.measure(c.path("empty"), *c.point()))[-1],
         ["no dicom series"]),
    Case("points-file-is-an-image", "cli", lambda c: c.measure(S(c)["ct"], "--points", S(c)["ct"]),
         ["points file", "json|read"]),
    # --- not a usable CT ---------------------------------------------------------------------
    Case("mr-intensities", "cli",
         lambda c: c.measure(write_image(c.path("t1.nii.gz"), np.random.default_rng(1).integers(
             0, 2500, (6, 32, 32)).astype(np.int16)), *c.point()), ["does not look like a ct"]),
    Case("pet-dicom-modality", "cli",
         lambda c: c.measure(dicom_series(c, "pet", modality="PT", description="PET AC"), *c.point()),
         ["pt|modality|no ct"]),
    Case("empty-volume-api", "api", lambda c: lambda: check_ct(float_volume(np.zeros((0, 5, 5), np.float32))),
         ["empty"]),
    Case("nan-voxels-mha", "cli",
         lambda c: c.measure(write_image(c.path("nan.mha"), np.where(ct_like() > 0, np.nan, -1000).astype(
             np.float32)), *c.point()), ["nan"]),
    Case("inf-voxels-api", "api",
         lambda c: lambda: check_ct(float_volume(np.where(ct_like() > 0, np.inf, -1000.0).astype(np.float32))),
         ["infinite"]),
    Case("2d-png", "cli", lambda c: c.measure(write_image(c.path("slice.png"), np.zeros((16, 16), np.uint8)),
                                              *c.point()), ["2 dimensions"]),
    Case("4d-nifti", "cli", lambda c: c.measure(write_image(c.path("dyn.nii.gz"), np.full((2, 3, 8, 8), -1000,
                                                                                          np.int16)), *c.point()),
         ["4 dimensions"]),
    Case("rgb-mha", "cli", lambda c: c.measure(write_image(c.path("rgb.mha"), np.zeros((4, 8, 8, 3), np.uint8),
                                                           vector=True), *c.point()), ["components"]),
    Case("zero-spacing-nrrd", "cli",
         lambda c: c.measure(raw_nrrd(c, "zs.nrrd", ["space: left-posterior-superior",
                                                     "space directions: (1,0,0) (0,0,0) (0,0,1)"]), *c.point()),
         ["spacing|direction|cannot read"]),
    Case("singular-direction-nrrd", "cli",
         lambda c: c.measure(raw_nrrd(c, "sing.nrrd", ["space: left-posterior-superior",
                                                       "space directions: (1,0,0) (2,0,0) (0,0,1)"]), *c.point()),
         ["singular|direction"]),
    Case("zero-spacing-api", "api", lambda c: lambda: Volume(ct_like(), np.diag([0.8, 0.0, 2.5, 1.0])),
         ["spacing"]),
    Case("dicom-zero-pixel-spacing", "cli",
         lambda c: c.measure(dicom_series(c, "zps", pixel_spacing=(0.0, 0.7)), *c.point()), ["spacing"]),
    Case("dicom-slices-at-one-position", "cli",
         lambda c: c.measure(dicom_series(c, "same", step=0.0), *c.point()), ["same slice position"]),
    Case("dicom-parallel-orientation", "cli",
         lambda c: c.measure(dicom_series(c, "par", row=(1.0, 0.0, 0.0), col=(1.0, 0.0, 0.0)), *c.point()),
         ["degenerate|parallel"]),
    # --- points ------------------------------------------------------------------------------
    Case("point-just-beyond-edge", "cli",
         lambda c: c.measure(S(c)["ct"], "--point", "L1=" + ",".join(
             repr(float(x)) for x in S(c)["volume"].ijk_to_ras_points([-0.6, 0.0, 0.0])[0])),
         ["outside the image"]),
    Case("point-at-corner-voxel", "cli",
         lambda c: c.measure(S(c)["ct"], "--point", "L1=" + ",".join(
             repr(float(x)) for x in S(c)["volume"].ijk_to_ras_points([0.0, 0.0, 0.0])[0])),
         ["does not look inside a vertebral body", "--force"]),
    Case("point-in-aorta", "cli",  # blood reads ~50 HU, like osteoporotic bone: judged by the shell
         lambda c: c.measure(S(c)["ct"], "--point", "L1=" + ",".join(
             repr(float(x)) for x in S(c)["truth"].landmarks["aorta"])), ["does not look inside a vertebral body"]),
    Case("point-in-spinal-canal", "cli",  # fluid inside the bony ring of the neural arch
         lambda c: c.measure(S(c)["ct"], "--point", "L1=" + ",".join(
             repr(float(x)) for x in S(c)["truth"].landmarks["spinal_canal"])), ["vertebral body"]),
    Case("point-nan", "cli", lambda c: c.measure(S(c)["ct"], "--point", "L1=nan,0,0"), ["finite"]),
    Case("points-api-unknown-level", "api", lambda c: api_measure(c, {"L9": [0, 0, 0]}), ["unknown", "L9"]),
    Case("points-api-duplicate-after-normalising", "api",
         lambda c: api_measure(c, {"L1": S(c)["points"]["L1"], " l1 ": S(c)["points"]["L1"]}), ["given twice"]),
    Case("points-api-none", "api", lambda c: api_measure(c, {}), ["no points"]),
    Case("points-api-two-coordinates", "api", lambda c: api_measure(c, {"L1": [1.0, 2.0]}), ["three finite"]),
    # --- point lists (.mrk.json) -------------------------------------------------------------
    Case("mrk-truncated-json", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, json.dumps(mrk_doc(c))[:-25])), ["not valid json"]),
    Case("mrk-not-markups", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, {"schema": "osteoroi-measurement/1", "rows": []})),
         ["no 'markups' list"]),
    Case("mrk-point-without-position", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, with_cp(c, position=None))), ["position"]),
    Case("mrk-units-not-mm", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, dict(mrk_doc(c), markups=[
             dict(mrk_doc(c)["markups"][0], coordinateUnits="um")]))), ["not mm"]),
    Case("mrk-only-undefined-points", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, with_cp(c, positionStatus="undefined"))),
         ["no defined control points"]),
    Case("mrk-unlabelled-point", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, with_cp(c, label=""))), ["no label"]),
    Case("mrk-duplicate-level-across-lists", "cli",
         lambda c: c.measure(S(c)["ct"], "--points", mrk(c, two_lists_same_level(c))), ["more than once"]),
    Case("mrk-binary-file", "api", binary_points_file, ["cannot read the points file"]),
    # --- options and ROIs --------------------------------------------------------------------
    Case("slab-nan", "cli", lambda c: c.measure(S(c)["ct"], *c.point(), "--slab-mm", "nan"), ["positive"]),
    Case("slab-negative", "cli", lambda c: c.measure(S(c)["ct"], *c.point(), "--slab-mm=-2.5"), ["positive"]),
    Case("no-shape", "cli", lambda c: c.measure(S(c)["ct"], *c.point(), "--shapes", ","), ["no roi shape"]),
    Case("roi-negative-size-api", "api",
         lambda c: lambda: RoiShape("ellipse", (0, 0, 0), (0, 1, 0), (-1, 0, 0), -3.0, 2.0, 1.0), ["half_u"]),
    Case("roi-zero-axis-api", "api",
         lambda c: lambda: RoiShape("rectangle", (0, 0, 0), (0, 0, 0), (-1, 0, 0), 3.0, 2.0, 1.0), ["direction"]),
    Case("degenerate-body-outline-api", "api", degenerate_outline, ["trabecular|outline|fit"]),
    # --- outputs -----------------------------------------------------------------------------
    Case("existing-csv-output", "cli",
         lambda c: ["measure", S(c)["ct"], *c.all_points(), "--json", os.path.join(c.out, "new.json"),
                    "--csv", os.path.join(c.out, "keep.json")], ["already exists", "--overwrite"]),
    Case("output-is-a-folder", "cli",
         lambda c: ["measure", S(c)["ct"], *c.point(), "--json", c.out], ["is a directory"]),
    Case("unwritable-output-sysfs", "cli",
         lambda c: ["measure", S(c)["ct"], *c.point(), "--csv", os.path.join(c.out, "ok.csv"),
                    "--json", "/sys/osteoroi-result.json"], ["could not write|not writable"],
         marks=[pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs a read-only /sys")]),
    Case("atomic-write-second-target-fails", "api", failing_second_write, ["could not write"]),
    Case("json-and-csv-same-file", "cli",
         lambda c: ["measure", S(c)["ct"], *c.point(), "--json", os.path.join(c.out, "r.txt"),
                    "--csv", os.path.join(c.out, "r.txt")], ["same|both"]),
    # --- calibration (skipped where the command/option does not exist) -----------------------
    Case("calibrate-unknown-phantom", "cli", unknown_phantom, ["no-such-phantom-xyz"],
         requires=("calibrate", None)),
    Case("calibrate-degenerate-rods", "cli", degenerate_rods, ["slope|distinct|same|degenerate"],
         requires=("calibrate", None)),
    Case("calibrate-manual-zero-slope", "cli",
         lambda c: ["calibrate", "--manual", "--slope", "0", "--intercept", "-10", "--unit", "K2HPO4",
                    "--out", os.path.join(c.out, "cal.json")], ["slope"], requires=("calibrate", None)),
    Case("calibration-json-truncated", "cli",
         lambda c: bad_calibration_json(c, '{"schema": "osteoroi-calibration/1", "slope": 1.2'),
         ["calibration", "json"], requires=("measure", "--calibration")),
    Case("calibration-json-is-a-point-list", "cli",
         lambda c: bad_calibration_json(c, json.dumps(point_list_document({"L1": [0, 0, 0]}))),
         ["calibration"], requires=("measure", "--calibration")),
]


def _has(command, option):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if command not in sub.choices:
        return False
    if option is None:
        return True
    return any(option in a.option_strings for a in sub.choices[command]._actions)


def _params():
    out = []
    for case in CASES:
        marks = list(case.marks)
        if case.xfail:
            marks.append(pytest.mark.xfail(reason=case.xfail, strict=case.strict))
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def snapshot(*folders):
    state = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for d in dirnames:
                state[os.path.join(dirpath, d)] = "dir"
            for name in filenames:
                p = os.path.join(dirpath, name)
                st = os.stat(p)
                with open(p, "rb") as f:
                    digest = hashlib.sha1(f.read()).hexdigest()
                state[p] = (st.st_size, st.st_mtime_ns, digest)
    return state


def matches(text, words):
    low = text.lower()
    missing = [w for w in words if not any(alt.lower() in low for alt in w.split("|"))]
    return missing


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.via for c in CASES} == {"cli", "api"}


@pytest.mark.parametrize("case", _params())
def test_bad_input(case, shared, tmp_path, capsys):
    if case.requires and not _has(*case.requires):
        what = " ".join(x for x in case.requires if x)
        pytest.skip(f"`osteoroi {what}` does not exist yet")
    ctx = Ctx(shared, str(tmp_path / "case"))
    action = case.build(ctx)
    capsys.readouterr()
    before = snapshot(ctx.root, shared["dir"])
    if case.via == "cli":
        try:
            code = cli.main([str(a) for a in action])
        except SystemExit as exc:  # argparse usage error
            code = exc.code
        out, err = capsys.readouterr()
        assert code not in (0, None), f"exit code {code}; stdout: {out[-300:]}"
        if case.exit_code is not None:
            assert code == case.exit_code
        assert "Traceback" not in err
        missing = matches(err, case.words)
        assert not missing, f"message does not name the problem ({missing}): {err.strip()}"
        if code == 1:
            assert err.lstrip().startswith("osteoroi: error:") or "\nosteoroi: error:" in err
    else:
        with pytest.raises(OsteoROIError) as ei:
            action()
        exc = ei.value
        missing = matches(str(exc), case.words)
        assert not missing, f"message does not name the problem ({missing}): {exc}"
        assert exc.remedy, f"no remedy in {exc!r}"
    after = snapshot(ctx.root, shared["dir"])
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not added, f"partial output left behind: {added}"
    assert not removed and not changed, f"existing files changed: {removed + changed}"
    with open(os.path.join(ctx.out, "keep.json")) as f:
        assert f.read() == KEEP


def test_failed_atomic_write_is_an_output_error(tmp_path):
    """The write failure of the catalogue is an OutputError (exit 1 in the CLI), not an OSError."""
    with pytest.raises(OutputError):
        outputs.write_atomically({str(tmp_path / "a.json"): "{}", str(tmp_path / "no" / "b.csv"): ""})
    assert os.listdir(tmp_path) == []
