"""The `osteoroi` command line: demo, measure, and every bad-input case of the command line.

Every failure must exit non-zero with a message naming the problem and leave no output file.
Expected HU come from the phantom's configuration (its truth), never from a measurement run.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib import cli

from OsteoROILib.export import measurement as results

from OsteoROILib.io.markups_file import point_list_document
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.io.image_files import write_volume

from test_dicom import stored_values, write_series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    volume, truth = make_phantom()
    path = str(folder / "ct.nrrd")
    write_volume(volume, path)
    points = {lv.name: list(lv.center_ras) for lv in truth.levels}
    mrk = folder / "levels.mrk.json"
    mrk.write_text(json.dumps(point_list_document(points)))
    return {"ct": path, "points": points, "mrk": str(mrk), "truth": truth, "volume": volume}


def point_args(points):
    out = []
    for level, p in points.items():
        out += ["--point", f"{level}={p[0]},{p[1]},{p[2]}"]
    return out


def assert_no_outputs(*paths):
    for p in paths:
        assert not os.path.exists(p), f"{p} was written although the command failed"


# --- the main job ---------------------------------------------------------------------------
def test_demo_writes_a_4x5_table_matching_the_phantom_truth(tmp_path, capsys):
    code, out, err = run(["demo", "--out", tmp_path / "demo"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "demo" / "osteoroi-demo.json").read_text())
    results.validate_document(doc)
    rows = doc["rows"]
    assert len(rows) == 20
    assert {(r["level"], r["shape"]) for r in rows} == {
        (lv, s) for lv in ("L1", "L2", "L3", "L4") for s in ("oval", "round", "front", "left", "right")}
    from OsteoROILib.cli.commands import DEMO_DENSITIES, DEMO_PHANTOM_ID

    # the configured HU and densities, independent of the measurement
    _, demo_truth = make_phantom(calibration_preset=DEMO_PHANTOM_ID, trabecular_density=DEMO_DENSITIES)
    truth = demo_truth
    for r in rows:
        assert abs(r["mean_hu"] - truth.level(r["level"]).trabecular_hu) <= 1.0
        assert r["n_voxels"] > 20
    with open(tmp_path / "demo" / "osteoroi-demo.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 20
    assert list(table[0].keys()) == list(results.ROW_COLUMNS)
    assert "L4" in out and "wrote" in out
    # vBMD from the rods found automatically equals the phantom's configured density (noise-free).
    for r in rows:
        assert r["vbmd_unit"] == "mg/cm3 HA"
        assert abs(r["vbmd_mg_cm3"] - demo_truth.level(r["level"]).trabecular_density) <= 1.0
    assert doc["calibration"]["unit"] == "HA"
    # The diagnosis table: QCT leads, on L1+L2 (QCT_BRIEF §3), from the configured densities.
    with open(tmp_path / "demo" / "osteoroi-demo-diagnosis.csv", newline="") as f:
        dx = list(csv.DictReader(f))
    qct = next(r for r in dx if r["criterion_id"].startswith("qct"))
    # The demo (HA phantom) opts into the Goodsitt 1992 conversion to the criterion's K2HPO4: x 0.8267 at the
    # assumed 120 kVp (0.86 at 80 kVp, 0.81 at 140 kVp, linear in kVp).
    ratio = 0.86 + (0.81 - 0.86) * (120 - 80) / (140 - 80)
    expected = (demo_truth.level("L1").trabecular_density + demo_truth.level("L2").trabecular_density) / 2 * ratio
    assert float(qct["value"]) == pytest.approx(expected, abs=1.0) and qct["unit"] == "mg/cm3 K2HPO4"
    band = "normal" if expected > 120 else ("osteoporosis" if expected < 80 else "low bone mass")
    assert qct["category"].startswith(band)
    assert (tmp_path / "demo" / "osteoroi-demo-report.html").stat().st_size > 10000
    # The demo's own files can be re-measured with the point list it wrote.
    code, out, err = run(["measure", tmp_path / "demo" / "demo-phantom.nrrd",
                          "--points", tmp_path / "demo" / "demo-points.mrk.json",
                          "--json", tmp_path / "again.json"], capsys)
    assert code == 0, err
    again = json.loads((tmp_path / "again.json").read_text())
    for r in again["rows"]:
        assert abs(r["mean_hu"] - truth.level(r["level"]).trabecular_hu) <= 1.0


def test_measure_with_a_manual_calibration_and_report(phantom_files, tmp_path, capsys):
    cal, out, html = tmp_path / "cal.json", tmp_path / "m.json", tmp_path / "r.html"
    code, _, err = run(["calibrate", "--manual", "--slope", "1.25", "--intercept", "-10", "--unit", "HA",
                        "--out", cal], capsys)
    assert code == 0, err
    code, text, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]),
                           "--calibration", cal, "--json", out, "--report", html], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    results.validate_document(doc)
    for r in doc["rows"]:
        assert r["vbmd_mg_cm3"] == pytest.approx((r["mean_hu"] + 10.0) / 1.25, abs=1e-4)  # (HU - b) / s
        assert r["vbmd_unit"] == "mg/cm3 HA"
    assert doc["calibration"]["kind"] == "manual"
    # No uncertainty without a fit: every row says so, the document (and terminal) says it once.
    assert all(r["vbmd_sd"] is None and any("vbmd_sd empty" in w for w in r["warnings"]) for r in doc["rows"])
    assert sum("vbmd_sd" in w for w in doc["warnings"]) == 1
    assert sum("vbmd_sd" in line for line in err.splitlines()) == 1
    assert html.exists() and "<html" in html.read_text().lower()
    assert "QCT vBMD" in text


def test_same_file_for_two_outputs_is_refused(phantom_files, tmp_path, capsys):
    same = tmp_path / "same.txt"
    code, _, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]),
                        "--json", same, "--csv", same], capsys)
    assert code == 1 and "same file" in err
    assert_no_outputs(same)


def test_demo_can_run_twice_into_the_same_folder(tmp_path, capsys):
    assert run(["demo", "--out", tmp_path], capsys)[0] == 0
    assert run(["demo", "--out", tmp_path], capsys)[0] == 0


def test_measure_points_and_markups_agree(phantom_files, tmp_path, capsys):
    j1, c1, j2 = tmp_path / "a.json", tmp_path / "a.csv", tmp_path / "b.json"
    code, out, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]),
                          "--json", j1, "--csv", c1], capsys)
    assert code == 0, err
    code, out, err = run(["measure", phantom_files["ct"], "--points", phantom_files["mrk"], "--json", j2], capsys)
    assert code == 0, err
    a, b = json.loads(j1.read_text()), json.loads(j2.read_text())
    results.validate_document(a)
    assert [r["mean_hu"] for r in a["rows"]] == [r["mean_hu"] for r in b["rows"]]
    for r in a["rows"]:
        assert abs(r["mean_hu"] - phantom_files["truth"].level(r["level"]).trabecular_hu) <= 1.0
        assert r["placement"] == "auto (click)"  # automatic placement is the default
    assert a["volume"]["size"] == list(phantom_files["volume"].dimensions)


def test_measure_subset_of_shapes_and_slab(phantom_files, tmp_path, capsys):
    out_json = tmp_path / "s.json"
    spacing = phantom_files["volume"].slice_spacing()
    code, _, err = run(["measure", phantom_files["ct"], *point_args({"L2": phantom_files["points"]["L2"]}),
                        "--shapes", "round,left", "--slab-mm", 3 * spacing, "--json", out_json], capsys)
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert [(r["level"], r["shape"]) for r in doc["rows"]] == [("L2", "round"), ("L2", "left")]
    # A slab of three slices holds three layers: volume = 3 slices x area (one-slice area x 3 slices).
    for r in doc["rows"]:
        assert r["volume_mm3"] == pytest.approx(r["area_mm2"] * 3 * spacing)


def test_python_dash_m_runs_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "OsteoROILib", "demo", "--out", str(tmp_path)],
                          cwd=os.path.join(ROOT, "OsteoROI"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "osteoroi-demo.json").exists()


# --- bad input ------------------------------------------------------------------------------
def test_missing_volume(tmp_path, capsys):
    out = tmp_path / "o.json"
    code, _, err = run(["measure", tmp_path / "nope.nrrd", "--point", "L1=0,0,0", "--json", out], capsys)
    assert code == 1 and "No such file" in err
    assert_no_outputs(out)


def test_corrupt_volume(tmp_path, capsys):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ngarbage\n\x00\x01")
    out = tmp_path / "o.json"
    code, _, err = run(["measure", bad, "--point", "L1=0,0,0", "--json", out], capsys)
    assert code == 1 and "Cannot read" in err
    assert_no_outputs(out)


def test_not_a_ct(tmp_path, capsys):
    mr = tmp_path / "mr.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((5, 20, 20), 300, np.int16)), str(mr))
    out = tmp_path / "o.csv"
    code, _, err = run(["measure", mr, "--point", "L1=-5,-5,2", "--csv", out], capsys)
    assert code == 1 and "does not look like a CT" in err
    assert_no_outputs(out)


def test_dicom_modality_other_than_ct(tmp_path, capsys):
    folder = tmp_path / "mr"
    folder.mkdir()
    write_series(folder, stored_values(6, 16, 16), modality="MR", description="T1", intercept=-1024.0)
    code, _, err = run(["measure", folder, "--point", "L1=0,0,0"], capsys)
    assert code == 1 and "MR" in err


@pytest.mark.parametrize("shape, words", [((20, 20), "2 dimensions"), ((2, 5, 20, 20), "4 dimensions")])
def test_wrong_dimensionality(tmp_path, capsys, shape, words):
    path = tmp_path / "img.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full(shape, -1000, np.int16), isVector=False), str(path))
    code, _, err = run(["measure", path, "--point", "L1=0,0,0"], capsys)
    assert code == 1 and words in err


def test_point_outside_the_volume(phantom_files, tmp_path, capsys):
    out = tmp_path / "o.json"
    code, _, err = run(["measure", phantom_files["ct"], "--point", "L1=0,0,5000", "--json", out], capsys)
    assert code == 1 and "outside the image" in err
    assert_no_outputs(out)


def test_point_not_in_a_vertebral_body_is_refused_unless_forced(phantom_files, tmp_path, capsys):
    truth = phantom_files["truth"]
    muscle = truth.landmarks["muscle_left"] if "muscle_left" in truth.landmarks else None
    if muscle is None:
        muscle = next(v for k, v in truth.landmarks.items() if "muscle" in k)
    fat = next(v for k, v in truth.landmarks.items() if "fat" in k)
    for where in (muscle, fat):
        out = tmp_path / "o.json"
        arg = f"L1={where[0]},{where[1]},{where[2]}"
        code, _, err = run(["measure", phantom_files["ct"], "--point", arg, "--json", out], capsys)
        assert code == 1 and "does not look inside a vertebral body" in err and "--force" in err
        assert_no_outputs(out)
    code, _, err = run(["measure", phantom_files["ct"], "--point", f"L1={muscle[0]},{muscle[1]},{muscle[2]}",
                        "--force", "--json", tmp_path / "forced.json"], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "forced.json").read_text())
    assert all(r["placement"] == "default size (forced)" for r in doc["rows"])
    assert all(any("forced" in w for w in r["warnings"]) for r in doc["rows"])


def test_osteoporotic_body_is_accepted_although_its_hu_is_like_muscle(tmp_path, capsys):
    """Judged by the cortical shell, not by the HU at the point (osteoporotic bone reads like muscle)."""
    volume, truth = make_phantom(trabecular_hu=(45, 40, 35, 30))
    path = str(tmp_path / "osteo.nrrd")
    write_volume(volume, path)
    muscle_hu = truth.tissues["muscle"]
    assert abs(truth.levels[0].trabecular_hu - muscle_hu) < 20  # the premise of the test
    out = tmp_path / "o.json"
    code, _, err = run(["measure", path, *point_args({lv.name: lv.center_ras for lv in truth.levels}),
                        "--json", out], capsys)
    assert code == 0, err
    for r in json.loads(out.read_text())["rows"]:
        assert abs(r["mean_hu"] - truth.level(r["level"]).trabecular_hu) <= 1.0


def test_slab_thicker_than_the_body_is_refused(phantom_files, tmp_path, capsys):
    """A slab beyond the endplates would average discs and neighbours (it used to be clipped with a warning)."""
    out = tmp_path / "o.json"
    code, _, err = run(["measure", phantom_files["ct"], *point_args({"L1": phantom_files["points"]["L1"]}),
                        "--slab-mm", 1000, "--json", out], capsys)
    assert code == 1 and "thicker than the vertebral body" in err and "--slab-mm" in err
    assert not out.exists()


def test_duplicate_level_labels(phantom_files, capsys):
    p = phantom_files["points"]["L1"]
    arg = f"L1={p[0]},{p[1]},{p[2]}"
    code, _, err = run(["measure", phantom_files["ct"], "--point", arg, "--point", arg.replace("L1", "l1")], capsys)
    assert code == 1 and "more than once" in err


def test_duplicate_labels_in_markups(phantom_files, tmp_path, capsys):
    doc = point_list_document({"L1": phantom_files["points"]["L1"]})
    doc["markups"][0]["controlPoints"].append(dict(doc["markups"][0]["controlPoints"][0]))
    path = tmp_path / "dup.mrk.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(["measure", phantom_files["ct"], "--points", path], capsys)
    assert code == 1 and "more than once" in err


@pytest.mark.parametrize("arg, words", [("X9=0,0,0", "Unknown vertebral level"), ("L1=1,2", "three numbers"),
                                         ("L1", "no level label"), ("L1=a,b,c", "three numbers")])
def test_bad_point_syntax_and_labels(phantom_files, capsys, arg, words):
    code, _, err = run(["measure", phantom_files["ct"], "--point", arg], capsys)
    assert code == 1 and words in err


def test_unknown_shape(phantom_files, capsys):
    code, _, err = run(["measure", phantom_files["ct"], "--point", "L1=0,0,0", "--shapes", "oval,square"], capsys)
    assert code == 1 and "Unknown ROI shape" in err


def test_output_folder_missing_or_not_a_folder(phantom_files, tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    for out in (tmp_path / "missing" / "o.json", afile / "o.json"):
        code, _, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]), "--json", out],
                           capsys)
        assert code == 1 and "does not exist" in err
    assert afile.read_text() == "x"


def test_existing_output_is_kept_without_overwrite(phantom_files, tmp_path, capsys):
    out, csv_out = tmp_path / "o.json", tmp_path / "o.csv"
    out.write_text("precious")
    code, _, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]),
                        "--json", out, "--csv", csv_out], capsys)
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert out.read_text() == "precious"
    assert_no_outputs(csv_out)
    code, _, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]),
                        "--json", out, "--overwrite"], capsys)
    assert code == 0 and json.loads(out.read_text())["schema"] == "osteoroi-measurement/1"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_output_folder_not_writable(phantom_files, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(["measure", phantom_files["ct"], "--point", "L1=0,0,0", "--json", folder / "o.json"],
                           capsys)
        assert code == 1 and "not writable" in err
    finally:
        folder.chmod(0o700)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["measure"])
    assert e.value.code == 2
    code, _, err = run(["measure", "x.nrrd"], capsys)
    assert code == 1 and "No points" in err
