"""The benchmark code paths on a tiny CT, so that `benchmarks/run_benchmarks.py` cannot rot.

Asserts computed values only — equal statistics from the fast path and the full-volume baseline,
the baseline against statistics computed here from an independent voxel mask, the geometry rows
against their brute-force counts, the results document's shape — never a timing.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import bench_core  # noqa: E402
import run_benchmarks  # noqa: E402
from OsteoROILib.roi.stats import statistics_of_values  # noqa: E402

TINY = {"size": (128, 112, 64), "spacing": (1.5, 1.5, 2.5)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bench_cache"))
    volume, truth, nrrd = bench_core.phantom_ct(cache_dir=folder, **TINY)
    return {"dir": folder, "volume": volume, "truth": truth, "nrrd": nrrd}


@pytest.fixture(autouse=True)
def no_warmup_no_profile(monkeypatch):
    monkeypatch.setattr(bench_core, "WARMUP", 0)
    monkeypatch.setattr(bench_core, "PROFILE", False)


def mask_oracle(shape, volume):
    """The ROI's voxels by evaluating the membership rule at every voxel centre (independent code)."""
    nk, nj, ni = volume.array.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(float)
    ras = ijk @ volume.ijk_to_ras[:3, :3].T + volume.ijk_to_ras[:3, 3]
    u, v = np.asarray(shape.axis_u), np.asarray(shape.axis_v)
    d = ras - np.asarray(shape.center)
    su, sv, sn = d @ u, d @ v, d @ np.cross(u, v)
    inside = (sn >= -shape.slab_mm / 2) & (sn < shape.slab_mm / 2)
    if shape.kind == "ellipse":
        inside &= (su / shape.half_u) ** 2 + (sv / shape.half_v) ** 2 <= 1.0
    else:
        inside &= (np.abs(su) <= shape.half_u) & (np.abs(sv) <= shape.half_v)
    return inside.reshape(nk, nj, ni)


def test_phantom_cache_is_reused(tiny):
    before = sorted(os.listdir(tiny["dir"]))
    volume, truth, nrrd = bench_core.phantom_ct(cache_dir=tiny["dir"], **TINY)
    assert nrrd == tiny["nrrd"] and sorted(os.listdir(tiny["dir"])) == before
    assert tuple(volume.dimensions) == TINY["size"]
    assert np.allclose(volume.spacing, TINY["spacing"])
    assert np.array_equal(np.asarray(volume.array), np.asarray(tiny["volume"].array))


def test_full_volume_baseline_matches_an_independent_mask(tiny):
    volume, truth = tiny["volume"], tiny["truth"]
    ct = bench_core.sitk_ct(volume)
    shapes = bench_core.family_shapes(volume, truth, "L2")
    for (level, name) in (("L2", "oval"), ("L2", "left")):
        shape = shapes[(level, name)]
        base = bench_core.full_volume_statistics(ct, volume, shape)
        values = np.asarray(volume.array)[mask_oracle(shape, volume)]
        want = statistics_of_values(values)
        assert base["n_voxels"] == values.size > 10, (level, name)
        for key in ("mean_hu", "sd_hu", "min_hu", "max_hu"):
            assert base[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), (level, name, key)


def test_roi_statistics_row(tiny):
    (row,) = bench_core.bench_roi_statistics(tiny["volume"], tiny["truth"], repeats=2, baseline_repeats=1)
    fast, base = row["check"]["fast"], row["check"]["baseline"]
    assert fast["n_voxels"] == base["n_voxels"] > 10
    for key in ("mean_hu", "sd_hu", "min_hu", "max_hu"):
        assert fast[key] == pytest.approx(base[key], rel=1e-9)
    assert row["speedup"] == pytest.approx(row["baseline"] / row["figure"])
    assert row["unit"] == "ms" and row["met"] in (True, False)


def test_check_same_statistics_catches_a_difference():
    a = {"n_voxels": 10, "mean_hu": 100.0, "sd_hu": 5.0, "min_hu": 90.0, "max_hu": 110.0}
    bench_core.check_same_statistics(a, dict(a), "same")
    with pytest.raises(AssertionError):
        bench_core.check_same_statistics(a, dict(a, sd_hu=5.01), "different SD")
    with pytest.raises(AssertionError):
        bench_core.check_same_statistics(a, dict(a, n_voxels=11), "different count")


def test_table_and_click_rows(tiny):
    table = bench_core.bench_table(tiny["volume"], tiny["truth"], repeats=1)
    assert [r["key"] for r in table] == ["table_truth_outlines", "table_default_placement"]
    assert all(r["figure"] > 0 and r["baseline"] > 0 for r in table)
    (click,) = bench_core.bench_click(tiny["volume"], tiny["truth"], repeats=1)
    assert "5 ROIs" in click["name"] and click["speedup"] > 0
    # The click lies inside L1's trabecular bone (the benchmark's premise).
    lv = tiny["truth"].level("L1")
    d = np.asarray(bench_core.click_point(tiny["truth"])) - np.asarray(lv.center_ras)
    s, t, z = d @ lv.ap_axis_ras, d @ lv.left_axis_ras, d @ lv.normal_ras
    a, b = lv.depth_mm / 2 - lv.cortical_mm, lv.width_mm / 2 - lv.cortical_mm
    assert (s / a) ** 2 + (t / b) ** 2 < 1 and abs(z) < lv.height_mm / 2 - lv.endplate_mm


def test_memory_row(tiny):
    point = {"L1": bench_core.truth_points(tiny["truth"])["L1"]}
    (row,) = bench_core.bench_memory(tiny["nrrd"], point)
    assert row["baseline"] * 1e6 == tiny["volume"].array.nbytes
    assert row["ratio"] == pytest.approx(row["figure"] / row["baseline"])
    assert row["subprocesses"]["measure"]["code"] == 0
    assert row["subprocesses"]["measure"]["traced_peak"] > 0


def test_dicom_row_reads_the_same_table(tiny, tmp_path):
    pytest.importorskip("pydicom")
    folder = bench_core.write_dicom_series(tiny["volume"], str(tmp_path / "dcm"))
    assert len(os.listdir(folder)) == TINY["size"][2]
    # The series read back by SimpleITK alone holds the phantom's HU on the same grid.
    image = bench_core.sitk_read_series(folder)
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayViewFromImage(image), np.asarray(tiny["volume"].array))
    (row,) = bench_core.bench_dicom(tiny["volume"], tiny["truth"], tiny["nrrd"], repeats=1, folder=folder,
                                    levels=["L2"])
    assert "equal to the NRRD table" in row["notes"] and row["ratio"] > 0
    # the read alone is timed too, and the table's time beyond it is what the table adds
    assert row["osteoroi_read_s"] > 0
    assert row["beyond_read_ms"] == pytest.approx(1e3 * (row["figure"] - row["osteoroi_read_s"]))


def test_geometry_accuracy_rows():
    rows = bench_core.bench_geometry_accuracy()
    assert len(rows) == len(bench_core.GEOMETRY_CASES)
    for r in rows:
        assert r["n_voxels"] == r["brute_force_count"] > 100
        assert r["met"] is True
        assert r["ratio"] == pytest.approx(r["figure"] / r["baseline"])


PLUGIN_OK = '''
def run(quick=False):
    return [{"key": "cal_1", "name": "calibration recovery", "figure": 0.4, "unit": "mg/cm3",
             "ratio_kind": "ratio", "ratio": 0.4, "target": "<= 1", "met": quick is True}]
'''
PLUGIN_MAIN = '''
def main():
    print("placement precision: CV 1.2 %")
'''
PLUGIN_BROKEN = '''
def run():
    raise ValueError("boom")
'''


@pytest.mark.parametrize("broken", [False, True])
def test_run_all_with_plugins_writes_a_results_document(tiny, tmp_path, broken, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bench_calibration.py").write_text(PLUGIN_BROKEN if broken else PLUGIN_OK)
    (plugins / "bench_placement.py").write_text(PLUGIN_MAIN)
    doc = run_benchmarks.run_all(quick=True, phantom=TINY, cache_dir=tiny["dir"], only=["accuracy", "plugins"],
                                 plugin_dir=str(plugins), log=lambda s: None)
    keys = [r["key"] for r in doc["rows"]]
    n_geo = len(bench_core.GEOMETRY_CASES)
    assert keys[:n_geo] == [f"geometry_{n + 1}" for n in range(n_geo)]
    assert "hu_accuracy" in keys
    cal = [r for r in doc["rows"] if r.get("key", "").startswith("cal") or "bench_calibration" in r.get("name", "")]
    assert len(cal) == 1
    if broken:
        assert cal[0]["notes"].startswith("ERROR ValueError: boom") and cal[0]["met"] is False
    else:
        assert cal[0]["met"] is True and cal[0]["source"] == "bench_calibration.py"  # run(quick=True) was called
    assert any(r["key"] == "bench_placement" for r in doc["rows"])
    # The HU accuracy row: mean HU of the 20 ROIs against the configured truth.
    hu = next(r for r in doc["rows"] if r["key"] == "hu_accuracy")
    assert hu["met"] is True
    text = run_benchmarks.format_table(doc)
    assert "speedup/ratio" in text and "Geometry: circle" in text
    out = tmp_path / "results" / "latest.json"
    run_benchmarks.write_results(doc, str(out))
    again = json.loads(out.read_text())
    assert again["schema"] == run_benchmarks.SCHEMA and again["ct"]["size"] == list(TINY["size"])
    assert again["rows"] == json.loads(json.dumps(doc["rows"]))
