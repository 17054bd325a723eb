"""Catalogue of hostile and edge-case inputs from the image, the levels and the output files.

Every case runs the command line as a user would and asserts one of two outcomes:

* refused: exit code 1, a message naming the problem, and no output written or clobbered;
* flagged: the values are written, the affected rows carry the flag, no diagnostic criterion uses
  them, and nothing that existed before was changed.

The oracles are the inputs' construction (an intercept added, a level swapped, a slice removed), not
the code under test. The good scans (the real CTs, the digital phantom, a crop without air) must pass.
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib.cli import commands as cli
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.errors import OutputError
from OsteoROILib.io import outputs
from OsteoROILib.io.volume import Volume
from OsteoROILib.io.image_files import read_volume, write_volume

from conftest import SHARED

TOTALSEG = os.path.join(SHARED, "data", "totalseg_example")
TPTBOX = os.path.join(SHARED, "data", "tptbox_sample")
KEEP_TEXT = "an existing file nobody may touch\n"


# --- fixtures: one noisy phantom CT (HU with scanner-like noise), written once ----------------
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guards")
    volume, truth = make_phantom()
    noise = np.random.default_rng(7).normal(0.0, 8.0, volume.array.shape)
    hu = np.rint(np.asarray(volume.array, dtype=float) + noise).astype(np.int16)
    good = Volume(hu, volume.ijk_to_ras.copy())
    path = str(folder / "ct.nrrd")
    write_volume(good, path)
    points = {lv.name: [float(x) for x in lv.center_ras] for lv in truth.levels}
    return {"folder": folder, "ct": path, "hu": hu, "matrix": volume.ijk_to_ras.copy(), "points": points,
            "truth": truth}


@pytest.fixture()
def out(tmp_path):
    """The output folder of one case: a file that must survive, and the three outputs' paths."""
    keep = tmp_path / "keep.txt"
    keep.write_text(KEEP_TEXT)
    return {"dir": tmp_path, "keep": keep, "json": tmp_path / "r.json", "csv": tmp_path / "r.csv",
            "html": tmp_path / "r.html"}


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    o, e = capsys.readouterr()
    return code, o, e


def point_args(points):
    args = []
    for level, p in points.items():
        args += ["--point", f"{level}={p[0]},{p[1]},{p[2]}"]
    return args


def output_args(out):
    return ["--json", out["json"], "--csv", out["csv"], "--report", out["html"]]


def assert_refused(code, err, out, *words):
    assert code == 1, err
    for w in words:
        assert w.lower() in err.lower(), (w, err)
    assert_nothing_written(out)


def assert_nothing_written(out):
    assert out["keep"].read_text() == KEEP_TEXT
    left = sorted(p.name for p in out["dir"].iterdir())
    assert left == ["keep.txt"], f"outputs or temporary files were left: {left}"


def write_array(out, array, matrix, name="ct.nrrd"):
    path = str(out["dir"].parent / f"{out['dir'].name}-{name}")
    image = sitk.GetImageFromArray(array)
    grid = Volume(np.zeros((1, 1, 1)), matrix).sitk_grid()
    image.SetSpacing(grid["spacing"])
    image.SetOrigin(grid["origin"])
    image.SetDirection(grid["direction"])
    sitk.WriteImage(image, path, True)
    return path


def measure_refused(phantom, out, capsys, array, *words, name="ct.nrrd", matrix=None):
    path = write_array(out, array, phantom["matrix"] if matrix is None else matrix, name)
    code, _, err = run(["measure", path, *point_args(phantom["points"]), *output_args(out)], capsys)
    assert_refused(code, err, out, *words)


# --- the image is not in HU -------------------------------------------------------------------
def test_stored_values_without_rescale_intercept_and_padding_are_refused(phantom, out, capsys):
    stored = phantom["hu"].astype(np.int32) + 1024
    stored[:, :12, :] = -2000  # scanner padding: one voxel below -500 proves nothing
    measure_refused(phantom, out, capsys, stored.astype(np.int16), "intercept was not applied")


def test_intercept_applied_twice_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, (phantom["hu"].astype(np.int32) - 1024).astype(np.int16),
                    "applied twice")


def test_hu_times_two_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, (phantom["hu"].astype(np.int32) * 2).astype(np.int16), "twice HU")


def test_hu_times_half_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, (phantom["hu"] / 2.0).astype(np.float32), "half of HU")


def test_negative_hu_stored_unsigned_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, phantom["hu"].astype(np.int32).astype(np.uint16), "unsigned")


def test_offset_scale_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, (phantom["hu"].astype(np.int32) + 300).astype(np.int16),
                    "does not look like a CT")


def test_mask_given_as_ct_is_refused(phantom, out, capsys):
    measure_refused(phantom, out, capsys, (phantom["hu"] > 300).astype(np.uint8), "does not look like a CT")


def test_random_values_are_refused(phantom, out, capsys):
    noise = np.random.default_rng(1).integers(0, 1200, phantom["hu"].shape).astype(np.int16)
    measure_refused(phantom, out, capsys, noise, "does not look like a CT")


# --- corrupt voxels ---------------------------------------------------------------------------
def test_nan_in_a_float_nifti_is_refused_before_the_reader_zeroes_it(phantom, out, capsys):
    a = phantom["hu"].astype(np.float32)
    k, j, i = phantom_index(phantom, "L1")
    a[k - 1:k + 2, j - 3:j + 4, i - 3:i + 4] = np.nan  # inside L1's ROIs
    measure_refused(phantom, out, capsys, a, "NaN", name="ct.nii.gz")


def test_inf_in_a_float_nrrd_is_refused(phantom, out, capsys):
    a = phantom["hu"].astype(np.float32)
    a[phantom_index(phantom, "L2")] = np.inf
    measure_refused(phantom, out, capsys, a, "NaN or infinite")


def test_float_voxel_of_3e38_is_refused(phantom, out, capsys):
    a = phantom["hu"].astype(np.float32)
    a[phantom_index(phantom, "L1")] = 3e38
    measure_refused(phantom, out, capsys, a, "outside the range a CT can store")


def test_int32_voxel_of_2e9_is_refused(phantom, out, capsys):
    a = phantom["hu"].astype(np.int32)
    a[phantom_index(phantom, "L3")] = 2_000_000_000
    measure_refused(phantom, out, capsys, a, "outside the range a CT can store")


def phantom_index(phantom, level):
    vol = Volume(np.zeros((1, 1, 1)), phantom["matrix"])
    i, j, k = np.rint(vol.ras_to_ijk_points(phantom["points"][level])[0]).astype(int)
    return k, j, i


# --- geometry ---------------------------------------------------------------------------------
def test_wrong_slice_spacing_puts_the_levels_too_far_apart(phantom, out, capsys):
    """The header says 10 mm where the scan has 2.5 mm: the clicks (made on that geometry) are 140 mm apart."""
    m = phantom["matrix"].copy()
    m[:3, 2] *= 4.0
    path = write_array(out, phantom["hu"], m)
    wrong = Volume(np.zeros((1, 1, 1)), m)
    right = Volume(np.zeros((1, 1, 1)), phantom["matrix"])
    points = {lv: wrong.ijk_to_ras_points(right.ras_to_ijk_points(p))[0] for lv, p in phantom["points"].items()}
    code, _, err = run(["measure", path, *point_args(points), *output_args(out)], capsys)
    assert_refused(code, err, out, "apart", "slice spacing")


# --- levels -----------------------------------------------------------------------------------
def measure_points(phantom, out, capsys, points, *extra):
    return run(["measure", phantom["ct"], *point_args(points), *output_args(out), *extra], capsys)


def _swap_l1_l4(p):
    return {**p, "L1": p["L4"], "L4": p["L1"]}


def _one_body_two_clicks(p):
    c = np.asarray(p["L2"])  # two clicks in one body, wherever they are inside it
    return {"L1": list(c + [3.0, 4.0, 6.0]), "L2": list(c + [-4.0, -2.0, -6.0])}


#: Impossible sets of levels (case → (points from the true centres, words of the refusal)).
LEVEL_CASES = {
    "L1 below L4": (_swap_l1_l4, "craniocaudal order"),
    "L1-L4 in reverse order": (lambda p: {"L1": p["L4"], "L2": p["L3"], "L3": p["L2"], "L4": p["L1"]},
                               "craniocaudal order"),
    "L1 and L2 at the same point": (lambda p: {"L1": p["L1"], "L2": p["L1"]}, "same vertebral body"),
    "L1 and L2 in one body": (_one_body_two_clicks, "same vertebral body"),
    "L1 and L3 on adjacent bodies": (lambda p: {"L1": p["L1"], "L3": p["L2"]}, "2 vertebra(e) apart"),
    "L2 and L3 two bodies apart": (lambda p: {"L2": p["L1"], "L3": p["L3"]}, "1 vertebra(e) apart"),
}


@pytest.mark.parametrize("case", list(LEVEL_CASES))
def test_impossible_levels_are_refused(phantom, out, capsys, case):
    make_points, words = LEVEL_CASES[case]
    code, _, err = measure_points(phantom, out, capsys, make_points(phantom["points"]))
    assert_refused(code, err, out, words, "Check the level of each point")


def test_the_correct_levels_pass(phantom, out, capsys):
    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    assert code == 0, err
    rows = json.loads(out["json"].read_text())["rows"]
    assert rows and all(r["flags"] == [] and r["use_in_criteria"] for r in rows)
    assert out["keep"].read_text() == KEEP_TEXT


# --- --force never categorises; the slab stays inside the body ---------------------------------
def forced_case(phantom, out, capsys, where):
    code, o, err = run(["measure", phantom["ct"], "--point", "L1=" + ",".join(str(x) for x in where), "--force",
                        *output_args(out)], capsys)
    assert code == 0, err
    doc = json.loads(out["json"].read_text())
    assert doc["rows"] and all("forced" in r["flags"] and r["use_in_criteria"] is False for r in doc["rows"])
    assert "osteoporosis" not in o.split("rule:")[0].lower() and "normal" not in o.split("rule:")[0].lower()
    html = out["html"].read_text()
    assert "flagged: forced" in html and ">valid<" not in html
    assert out["keep"].read_text() == KEEP_TEXT


def test_forced_click_in_air_is_measured_flagged_and_not_categorised(phantom, out, capsys):
    forced_case(phantom, out, capsys, phantom["truth"].landmarks["air"])


def test_forced_click_in_the_aorta_is_measured_flagged_and_not_categorised(phantom, out, capsys):
    forced_case(phantom, out, capsys, phantom["truth"].landmarks["aorta"])


@pytest.mark.parametrize("slab", [300, 40])
def test_slab_beyond_the_endplates_is_refused(phantom, out, capsys, slab):
    code, _, err = measure_points(phantom, out, capsys, phantom["points"], "--slab-mm", slab)
    assert_refused(code, err, out, "thicker than the vertebral body")


def test_slab_without_endplates_is_bounded_by_the_shortest_body(phantom, out, capsys):
    code, _, err = measure_points(phantom, out, capsys, phantom["points"], "--no-auto", "--slab-mm", 20)
    assert_refused(code, err, out, "endplates were not found")


# --- label files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def totalseg():
    if not os.path.isfile(os.path.join(TOTALSEG, "total.nii.gz")):
        pytest.skip("../shared/data/totalseg_example is not available")
    image = sitk.ReadImage(os.path.join(TOTALSEG, "total.nii.gz"))
    return {"ct": os.path.join(TOTALSEG, "ct.nii.gz"), "labels": image, "array": sitk.GetArrayFromImage(image)}


def write_labels(out, totalseg, array, name="labels.nii.gz"):
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(totalseg["labels"])
    path = str(out["dir"].parent / f"{out['dir'].name}-{name}")
    sitk.WriteImage(image, path, True)
    return path


def labels_refused(out, capsys, totalseg, path, *words, label_map=None):
    extra = ["--label-map", label_map] if label_map else []
    code, _, err = run(["measure", totalseg["ct"], "--labels", path, *extra, *output_args(out)], capsys)
    assert_refused(code, err, out, *words)


def test_l1_and_l4_swapped_in_a_label_file_are_refused(out, capsys, totalseg):
    a = totalseg["array"].copy()
    a[totalseg["array"] == 31], a[totalseg["array"] == 28] = 28, 31
    labels_refused(out, capsys, totalseg, write_labels(out, totalseg, a), "L1 ", "mm apart", "--label-map")


def test_a_reversed_label_map_is_refused(out, capsys, totalseg):
    labels_refused(out, capsys, totalseg, os.path.join(TOTALSEG, "total.nii.gz"), "craniocaudal order",
                   label_map="L1=28,L2=29,L3=30,L4=31")


def test_two_levels_merged_into_one_label_are_refused_not_crashed(out, capsys, totalseg):
    a = totalseg["array"].copy()
    a[a == 30] = 31  # L2 painted as L1
    labels_refused(out, capsys, totalseg, write_labels(out, totalseg, a), "two vertebrae share this label")


def test_the_ct_given_as_labels_is_refused_not_crashed(out, capsys, totalseg):
    labels_refused(out, capsys, totalseg, totalseg["ct"], "not a label map")


def test_float_labels_with_fractions_are_refused(out, capsys, totalseg):
    a = totalseg["array"].astype(np.float32) * 0.5
    labels_refused(out, capsys, totalseg, write_labels(out, totalseg, a), "not a label map")


def test_labels_on_another_grid_are_resampled_with_a_caveat_that_reaches_the_user(out, capsys, totalseg):
    resampled = sitk.Resample(totalseg["labels"], [s * 2 for s in totalseg["labels"].GetSize()], sitk.Transform(),
                              sitk.sitkNearestNeighbor, totalseg["labels"].GetOrigin(),
                              [s / 2 for s in totalseg["labels"].GetSpacing()], totalseg["labels"].GetDirection())
    path = str(out["dir"].parent / f"{out['dir'].name}-fine.nii.gz")
    sitk.WriteImage(resampled, path, True)
    code, _, err = run(["measure", totalseg["ct"], "--labels", path, *output_args(out)], capsys)
    assert code == 0, err
    assert "caveat:" in err and "resampled" in err
    rows = json.loads(out["json"].read_text())["rows"]
    assert all("labels_resampled" in r["flags"] for r in rows)
    assert "resampled onto the CT" in out["html"].read_text()


def test_the_real_labels_pass(out, capsys, totalseg):
    code, _, err = run(["measure", totalseg["ct"], "--labels", os.path.join(TOTALSEG, "total.nii.gz"),
                        *output_args(out)], capsys)
    assert code == 0, err
    doc = json.loads(out["json"].read_text())
    assert {r["level"] for r in doc["rows"]} >= {"L1", "L2", "L3", "L4"}
    assert all(r["use_in_criteria"] for r in doc["rows"])


# --- good scans pass the HU check ----------------------------------------------------------------
def test_the_real_ct_passes_the_anatomy_check(totalseg):
    vol = read_volume(totalseg["ct"])
    assert any("air" in n and "fat" in n and "soft tissue" in n for n in vol.notes)
    assert not vol.caveats


def test_the_real_crop_without_body_air_passes_with_a_caveat():
    path = os.path.join(TPTBOX, "sub-ct_label-22_ct.nii.gz")
    if not os.path.isfile(path):
        pytest.skip("../shared/data/tptbox_sample is not available")
    vol = read_volume(path)
    assert [c.code for c in vol.caveats] == ["hu_scale_partly_checked"]
    assert not vol.caveats[0].excludes


def test_the_digital_phantom_passes_the_anatomy_check(phantom):
    vol = read_volume(phantom["ct"])
    assert any("air" in n and "fat" in n for n in vol.notes) and not vol.caveats


def test_a_crop_without_air_passes_with_a_caveat(totalseg, tmp_path):
    """The real CT cropped to the spine and its muscles: no air, fat and soft tissue only."""
    image = sitk.ReadImage(totalseg["ct"])
    a = np.array(sitk.GetArrayFromImage(image)[40:80, 40:70, 40:70])
    a[a < -500] = -100  # a few voxels of bowel gas become fat: the premise is no air at all
    crop = sitk.GetImageFromArray(a)
    crop.SetSpacing(image.GetSpacing())
    path = str(tmp_path / "crop.nrrd")
    sitk.WriteImage(crop, path)
    got = read_volume(path)
    assert [c.code for c in got.caveats] == ["hu_scale_partly_checked"]
    assert "air" in got.caveats[0].text


# --- DICOM caveats reach the user and flag the rows -----------------------------------------------
def write_dicom(folder, phantom, drop=(), **kw):
    from test_dicom import write_series

    m = phantom["matrix"]
    origin_lps = np.diag([-1.0, -1.0, 1.0]) @ m[:3, 3]
    stored = (phantom["hu"].astype(np.int32) + 1024).astype(np.int16)
    keep = [k for k in range(stored.shape[0]) if k not in drop]
    positions = [origin_lps + np.array([0.0, 0.0, m[2, 2] * k]) for k in keep]
    return write_series(str(folder), stored[keep], row=(-1.0, 0.0, 0.0), col=(0.0, -1.0, 0.0),
                        pixel_spacing=(m[1, 1], m[0, 0]), positions=positions, **kw)


def test_missing_slices_through_l2_flag_l2_and_reach_terminal_and_report(phantom, out, capsys):
    k = phantom_index(phantom, "L2")[0]
    folder = out["dir"].parent / f"{out['dir'].name}-dicom"
    write_dicom(folder, phantom, drop=range(k - 2, k + 3))
    code, o, err = run(["measure", folder, *point_args(phantom["points"]), *output_args(out)], capsys)
    assert code == 0, err
    assert "caveat: DICOM" in err and "interpolated" in err
    rows = json.loads(out["json"].read_text())["rows"]
    l2 = [r for r in rows if r["level"] == "L2"]
    assert l2 and all("interpolated_slices" in r["flags"] and not r["use_in_criteria"] for r in l2)
    assert all(r["use_in_criteria"] for r in rows if r["level"] in ("L1", "L4"))
    assert "interpolated" in out["html"].read_text()


def test_a_truncated_slice_file_is_left_out_and_its_level_flagged(phantom, out, capsys):
    k = phantom_index(phantom, "L3")[0]
    folder = out["dir"].parent / f"{out['dir'].name}-dicom"
    write_dicom(folder, phantom, shuffle=False)
    victim = sorted(folder.iterdir())[k]
    victim.write_bytes(victim.read_bytes()[:4000])
    code, _, err = run(["measure", folder, *point_args(phantom["points"]), *output_args(out)], capsys)
    assert code == 0, err
    l3 = [r for r in json.loads(out["json"].read_text())["rows"] if r["level"] == "L3"]
    assert l3 and all("interpolated_slices" in r["flags"] and not r["use_in_criteria"] for r in l3)


def test_two_ct_series_the_choice_is_flagged_and_uncategorised_until_series_is_given(phantom, out, capsys):
    folder = out["dir"].parent / f"{out['dir'].name}-dicom"
    plain, _ = write_dicom(folder / "plain", phantom, series_number=2, description="plain")
    write_dicom(folder / "venous", phantom, series_number=3, description="portal venous",
                tags={"ContrastBolusAgent": "Iomeron"}, drop=())
    code, o, err = run(["measure", folder, *point_args(phantom["points"]), *output_args(out)], capsys)
    assert code == 0, err
    assert "caveat:" in err and "--series" in err
    rows = json.loads(out["json"].read_text())["rows"]
    assert all("series_chosen" in r["flags"] and not r["use_in_criteria"] for r in rows)
    for p in (out["json"], out["csv"], out["html"]):
        p.unlink()
    code, _, err = run(["measure", folder, "--series", plain, *point_args(phantom["points"]), *output_args(out)],
                       capsys)
    assert code == 0, err
    rows = json.loads(out["json"].read_text())["rows"]
    assert all(r["flags"] == [] for r in rows)


def test_series_option_with_an_unknown_uid_is_refused(phantom, out, capsys):
    folder = out["dir"].parent / f"{out['dir'].name}-dicom"
    write_dicom(folder, phantom)
    code, _, err = run(["measure", folder, "--series", "1.2.3", *point_args(phantom["points"]),
                        *output_args(out)], capsys)
    assert_refused(code, err, out, "is not in")


def test_series_option_on_an_image_file_is_refused(phantom, out, capsys):
    code, _, err = run(["measure", phantom["ct"], "--series", "1.2.3", *point_args(phantom["points"]),
                        *output_args(out)], capsys)
    assert_refused(code, err, out, "--series")


# --- outputs: all or nothing, exclusive, never through a link --------------------------------------
def replace_failing_at(monkeypatch, nth, error):
    """``os.replace`` as the output writer sees it, raising ``error`` at its ``nth`` call."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == nth:
            raise error
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)


def test_a_failure_while_publishing_leaves_no_output(phantom, out, capsys, monkeypatch):
    replace_failing_at(monkeypatch, 3, OSError(28, "No space left on device"))  # JSON, CSV in place; report fails
    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    monkeypatch.undo()
    assert_refused(code, err, out, "could not write")


def test_a_killed_run_leaves_no_output(phantom, out, capsys, monkeypatch):
    replace_failing_at(monkeypatch, 2, KeyboardInterrupt())
    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    monkeypatch.undo()
    assert code == 130
    assert_nothing_written(out)


def test_a_failure_with_overwrite_restores_the_old_files(phantom, out, capsys, monkeypatch):
    for p in (out["json"], out["csv"], out["html"]):
        p.write_text("old " + p.name)
    replace_failing_at(monkeypatch, 3, OSError(5, "I/O error"))
    code, _, err = measure_points(phantom, out, capsys, phantom["points"], "--overwrite")
    monkeypatch.undo()
    assert code == 1 and "could not write" in err.lower()
    for p in (out["json"], out["csv"], out["html"]):
        assert p.read_text() == "old " + p.name
    assert sorted(p.name for p in out["dir"].iterdir()) == ["keep.txt", "r.csv", "r.html", "r.json"]


def test_a_dangling_symlink_as_json_is_refused(phantom, out, capsys):
    target = out["dir"].parent / f"{out['dir'].name}-elsewhere.json"
    os.symlink(target, out["json"])
    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    assert code == 1 and "symbolic link" in err
    assert os.path.islink(out["json"]) and not target.exists()
    assert sorted(p.name for p in out["dir"].iterdir()) == ["keep.txt", "r.json"]


def test_a_symlink_is_not_replaced_even_with_overwrite(phantom, out, capsys):
    os.symlink(out["keep"], out["json"])
    code, _, err = measure_points(phantom, out, capsys, phantom["points"], "--overwrite")
    assert code == 1 and "symbolic link" in err
    assert os.path.islink(out["json"]) and out["keep"].read_text() == KEEP_TEXT
    assert not out["csv"].exists() and not out["html"].exists()


def test_an_existing_output_is_not_clobbered(phantom, out, capsys):
    out["csv"].write_text("mine")
    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    assert code == 1 and "already exists" in err
    assert out["csv"].read_text() == "mine" and not out["json"].exists() and not out["html"].exists()


def test_a_file_created_after_the_check_is_not_clobbered(tmp_path):
    """A concurrent run that wrote the file between our check and our write: exclusive create refuses."""
    a, b = tmp_path / "a.json", tmp_path / "b.csv"
    b.write_text("the other run's result")
    with pytest.raises(OutputError) as ei:
        outputs.write_atomically({str(a): "{}", str(b): "x"}, overwrite=False)
    assert "already exists" in ei.value.problem
    assert b.read_text() == "the other run's result" and not a.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]


def test_two_concurrent_writers_one_wins_and_the_other_is_told(tmp_path):
    target = str(tmp_path / "same.json")
    results = []
    barrier = threading.Barrier(8)

    def writer(n):
        barrier.wait()
        try:
            outputs.write_atomically({target: f"run {n}\n"}, overwrite=False)
            results.append(("wrote", n))
        except OutputError:
            results.append(("refused", n))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for what, n in results if what == "wrote"]
    assert len(winners) == 1 and len(results) == 8
    assert open(target).read() == f"run {winners[0]}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.json"]


def test_output_folder_missing_writes_nothing_else(phantom, out, capsys):
    code, _, err = run(["measure", phantom["ct"], *point_args(phantom["points"]), "--json", out["json"],
                        "--csv", out["csv"], "--report", out["dir"] / "no" / "r.html"], capsys)
    assert_refused(code, err, out, "does not exist")


def test_nan_split_across_read_chunks_is_counted(tmp_path, monkeypatch):
    """The NaN scan reads gzip in chunks: a value split across two chunks is still counted once."""
    from OsteoROILib.io import nifti_raw

    a = np.zeros((4, 4, 4), np.float32)
    a.flat[[5, 40]] = [np.nan, -np.inf]
    path = str(tmp_path / "x.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(a), path)
    monkeypatch.setattr(nifti_raw, "CHUNK_BYTES", 7)  # not a multiple of 4 bytes
    assert nifti_raw.count_nonfinite(path) == 2


def test_a_flagged_level_is_left_out_of_every_criterion_and_replaced(phantom, out, capsys):
    """Rows that must not be categorised (here L2, as interpolated slices would flag it) are skipped by
    every criterion's level rule, like an excluded vertebra, and marked in the level table."""
    from OsteoROILib.diagnosis.verdict import build_diagnosis

    code, _, err = measure_points(phantom, out, capsys, phantom["points"])
    assert code == 0, err
    doc = json.loads(out["json"].read_text())
    for r in doc["rows"]:
        if r["level"] == "L2":
            r["flags"], r["use_in_criteria"] = ["interpolated_slices"], False
    dx = build_diagnosis(doc, patient={"age": 67, "sex": "F"})
    assert dx["verdicts"] and all("L2" not in v["levels_used"] for v in dx["verdicts"])
    assert any(v["levels_used"] for v in dx["verdicts"])  # the other levels still serve
    l2 = next(lv for lv in dx["levels"] if lv["level"] == "L2")
    assert l2["excluded"] and "interpolated_slices" in l2["flag_text"]


def test_moving_one_level_onto_another_in_the_scene_is_refused():
    """The Slicer module re-places only a moved level; it is still checked against the others."""
    pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
    from test_mrml_logic import Headless
    from OsteoROILib.mrml.logic import OsteoROIMRMLLogic

    volume, truth = make_phantom(noise_sigma=25.0, seed=11)
    h = Headless((volume, truth))
    try:
        logic = OsteoROIMRMLLogic(h.scene)
        logic.run(h.volumeNode, h.pointsNode, shapes=["oval"])
        before = logic.state()["levels"]["L2"]["point_ras"]
        i = next(i for i in range(4) if h.pointsNode.GetNthControlPointLabel(i) == "L2")
        l4 = truth.level("L4").center_ras
        h.pointsNode.SetNthControlPointPosition(i, float(l4[0]), float(l4[1]), float(l4[2]))
        logic.processPendingUpdates()
        assert logic.lastError and "L2" in logic.lastError
        assert logic.state()["levels"].get("L2", {}).get("point_ras", before) == before  # not re-placed there
    finally:
        h.close()


def test_air_alone_is_not_a_body(phantom, out, capsys):
    """A scan whose only tissue-like peak is air (everything else shifted) is refused, not flagged."""
    a = phantom["hu"].astype(np.int32)
    a = np.where(a > -500, a - 1024, a).astype(np.int16)  # tissue moved to air level; air left as is
    measure_refused(phantom, out, capsys, a, "does not look like a CT")


def test_the_guards_benchmark_row_is_consistent(tmp_path):
    """benchmarks/bench_guards.py on a tiny CT: the row's ratio is its figure over its baseline (no timing asserted)."""
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    sys.path.insert(0, bench)
    try:
        import bench_guards
    finally:
        sys.path.remove(bench)
    (row,) = bench_guards.run(quick=True, phantom={"size": (96, 96, 48), "spacing": (2.0, 2.0, 3.0)},
                              cache_dir=str(tmp_path))
    assert row["key"] == "guards_check_ct" and row["ratio"] == pytest.approx(row["figure"] / row["baseline"])
    assert row["met"] == (row["ratio"] <= bench_guards.MAX_CHECK_TO_READ)


@pytest.mark.parametrize("agent", ["Iomeron 350", None])
def test_a_recorded_contrast_agent_is_printed(phantom, out, capsys, agent):
    folder = out["dir"].parent / f"{out['dir'].name}-dicom"
    if agent:
        write_dicom(folder, phantom, tags={"ContrastBolusAgent": agent})
    else:
        write_dicom(folder, phantom, omit=("ContrastBolusAgent",))
    code, _, err = run(["measure", folder, *point_args(phantom["points"]), *output_args(out)], capsys)
    assert code == 0, err
    assert ("contrast agent recorded: Iomeron 350" in err) == bool(agent)


def test_every_writer_is_exclusive_unless_told_to_overwrite(tmp_path, monkeypatch):
    """The default of the one output writer is exclusive create; a saved calibration goes through it."""
    import OsteoROILib.calibration.model as model
    from OsteoROILib.calibration.model import save_calibration
    from OsteoROILib.calibration.phantom_fit import manual_calibration

    target = tmp_path / "cal.json"
    target.write_text("the other run's calibration")
    with pytest.raises(OutputError):
        outputs.write_atomically({str(target): "{}"})
    cal = manual_calibration(1.2, -5.0, unit="HA")
    racing = tmp_path / "race.json"
    real_check = outputs.check_output_paths

    def check_then_race(paths, overwrite=False, inputs=()):  # another run writes between check and write
        out = real_check(paths, overwrite=overwrite, inputs=inputs)
        racing.write_text("written by the other run")
        return out

    monkeypatch.setattr(model, "check_output_paths", check_then_race)
    with pytest.raises(OutputError):
        save_calibration(cal, str(racing))
    assert racing.read_text() == "written by the other run" and target.read_text() == "the other run's calibration"
