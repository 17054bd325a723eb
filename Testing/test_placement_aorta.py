"""The aorta beside L1-L2 (placement.aorta): found where the phantom's truth puts it, with its blood HU;
refused (no HU, a reason) where there is no round uniform blood region.

Oracles: the digital phantom's truth (``aorta_center_ras``, ``aorta_radius_mm``, ``blood_hu``, and the
decoy organs it was told to draw), the anatomy of a real CT (the aorta lies in front of and left of
the spine; QCT_BRIEF §7 calls totalseg_example a non-contrast CT, so its blood reads as unenhanced
blood, 20 ± 40 HU, QCT_BRIEF §4), and the size of the real 1.5 mm crop (its field ends at the body).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib import cli
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.io.image_files import read_volume
from OsteoROILib.placement.aorta import find_aorta
from OsteoROILib.export.measurement import build_document, validate_document
from OsteoROILib.placement.labels import place_from_labels, read_labels
from OsteoROILib.placement.measure import measure_levels

DATA = "/work/shared/data"
TOTALSEG = os.path.join(DATA, "totalseg_example")
TPTBOX = os.path.join(DATA, "tptbox_sample")
#: Decoys around the spine, in every axial plane: an enhanced inferior vena cava right of the
#: aorta's place, enhanced kidneys beside the spine, a bowel loop full of oral contrast in front.
IVC = {"name": "inferior vena cava", "center_ras": (26.0, 36.0), "semi_axes_mm": (13.0, 8.0), "hu": 170.0}
KIDNEYS = [{"name": "left kidney", "center_ras": (-78.0, 5.0), "semi_axes_mm": (26.0, 45.0), "hu": 180.0},
           {"name": "right kidney", "center_ras": (78.0, 5.0), "semi_axes_mm": (26.0, 45.0), "hu": 180.0}]
BOWEL = {"name": "bowel loop with oral contrast", "center_ras": (-8.0, 80.0), "semi_axes_mm": (12.0, 12.0),
         "hu": 320.0}


def _measured(**options):
    volume, truth = make_phantom(**options)
    points = {lv: truth.level(lv).center_ras for lv in ("L1", "L2")}
    return volume, truth, measure_levels(volume, points, shapes=["oval"])


def _in_plane_distance(a, b):
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


@pytest.mark.parametrize("blood_hu", [260.0, 160.0])
def test_an_enhanced_aorta_is_found_with_its_blood_hu(blood_hu):
    volume, truth, m = _measured(blood_hu=blood_hu, noise_sigma=12.0, seed=3)
    a = m["aorta"]
    assert a["hu"] == pytest.approx(blood_hu, abs=6.0)  # noise 12 HU over > 50 voxels
    assert _in_plane_distance(a["center_ras"], truth.spec.aorta_center_ras) < 3.0
    # the disc ROI stays inside the vessel (its wall is not measured)
    assert a["roi_radius_mm"] + _in_plane_distance(a["center_ras"], truth.spec.aorta_center_ras) \
        < truth.spec.aorta_radius_mm
    assert set(a["levels"]) == {"L1", "L2"} and a["confidence"] > 0.9 and a["reason"] is None
    validate_document(build_document(m, volume.describe()))


@pytest.mark.parametrize("options", [
    {"noise_sigma": 40.0, "seed": 1},  # thin-slice noise
    {"aorta_radius_mm": 16.0, "aorta_center_ras": (-24.0, 40.0)},  # 32 mm: wide (ectatic) aorta
    {"aorta_radius_mm": 7.5, "aorta_center_ras": (-18.0, 28.0)},  # 15 mm: narrow, close to the body
    {"aorta_center_ras": (-2.0, 35.0)},  # on the midline
    {"rotation_deg": 10.0},  # rotated vertebrae (the body's frame turns, the aorta does not)
], ids=["noise40", "wide", "narrow", "midline", "rotated"])
def test_the_aorta_is_found_across_sizes_places_and_noise(options):
    opts = dict({"blood_hu": 250.0, "noise_sigma": 10.0}, **options)
    _, truth, m = _measured(**opts)
    a = m["aorta"]
    assert a["hu"] == pytest.approx(250.0, abs=8.0)
    off = _in_plane_distance(a["center_ras"], truth.spec.aorta_center_ras)
    assert off < 3.0 and a["roi_radius_mm"] + off < truth.spec.aorta_radius_mm


def test_an_unenhanced_aorta_in_its_fat_is_found_and_reads_unenhanced_blood():
    volume, truth, m = _measured(blood_hu=45.0, aorta_fat_mm=4.0, noise_sigma=12.0, seed=5)
    assert m["aorta"]["hu"] == pytest.approx(45.0, abs=6.0)
    assert _in_plane_distance(m["aorta"]["center_ras"], truth.spec.aorta_center_ras) < 3.0


def test_an_aorta_with_no_edge_to_its_surroundings_is_not_guessed():
    # the default phantom's unenhanced aorta (50 HU) lies in muscle of 40 HU: no round region to see
    _, _, m = _measured()
    assert m["aorta"]["hu"] is None and m["aorta"]["center_ras"] is None
    assert "no round, uniform region of blood HU" in m["aorta"]["reason"]


def test_no_false_aorta_from_the_vena_cava_kidneys_or_bowel():
    _, _, m = _measured(aorta=False, organs=[IVC, BOWEL] + KIDNEYS, noise_sigma=10.0)
    assert m["aorta"]["hu"] is None and "Aorta not found" in m["aorta"]["reason"]
    # with the aorta present, it is the aorta that is measured (not the vena cava at 170 HU)
    volume, truth, m = _measured(blood_hu=250.0, organs=[IVC, BOWEL] + KIDNEYS, noise_sigma=10.0)
    assert m["aorta"]["hu"] == pytest.approx(250.0, abs=6.0)
    assert _in_plane_distance(m["aorta"]["center_ras"], truth.spec.aorta_center_ras) < 3.0


def test_an_aorta_cut_off_by_the_field_of_view_gives_a_reason():
    # the image ends 7 mm in front of the bodies (anterior wall at A = 15 mm): the aorta is not in it
    volume, truth = make_phantom(blood_hu=250.0, extent_ras=[[-90.0, 90.0], [-70.0, 22.0], [-110.0, 110.0]])
    m = measure_levels(volume, {lv: truth.level(lv).center_ras for lv in ("L1", "L2")}, shapes=["oval"])
    assert m["aorta"]["hu"] is None and "outside the image" in m["aorta"]["reason"]


def test_the_aorta_is_searched_beside_l1_l2_only_then_t12_or_l3():
    volume, truth = make_phantom(blood_hu=250.0)
    m = measure_levels(volume, {"L4": truth.level("L4").center_ras}, shapes=["oval"])
    assert m["aorta"]["hu"] is None and "none of them was measured" in m["aorta"]["reason"]
    m = measure_levels(volume, {"L3": truth.level("L3").center_ras}, shapes=["oval"])
    assert m["aorta"]["hu"] == pytest.approx(250.0, abs=1.0) and list(m["aorta"]["levels"]) == ["L3"]
    assert m["aorta"]["confidence"] < 0.7  # one level: not confirmed as a tube
    assert "aorta" not in measure_levels(volume, {"L3": truth.level("L3").center_ras}, aorta=False)


def test_two_levels_must_see_one_vessel():
    # below mid-way between L1 and L2 the round enhanced region is moved 24 mm to the right: two
    # regions that are not one tube are not an aorta
    volume, truth = make_phantom(blood_hu=250.0)  # RAS grid: array[k, j, i]
    k, j, i = np.indices(volume.array.shape)
    ras = volume.ijk_to_ras_points(np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)).reshape(*k.shape, 3)
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    (ax, ay), r = truth.spec.aorta_center_ras, truth.spec.aorta_radius_mm
    below = z < 0.5 * (truth.level("L1").center_ras[2] + truth.level("L2").center_ras[2])
    arr = volume.array
    arr[below & ((x - ax) ** 2 + (y - ay) ** 2 <= r * r)] = truth.spec.muscle_hu
    arr[below & ((x - ax - 24.0) ** 2 + (y - ay) ** 2 <= r * r)] = 250.0
    m = measure_levels(volume, {lv: truth.level(lv).center_ras for lv in ("L1", "L2")}, shapes=["oval"])
    assert m["aorta"]["hu"] is None and "not one vessel" in m["aorta"]["reason"]


@pytest.mark.skipif(not os.path.isdir(TOTALSEG), reason="real CT not available (../shared/data/totalseg_example)")
def test_the_real_ct_aorta_is_in_front_left_of_l1_l2_and_reads_unenhanced_blood():
    volume = read_volume(os.path.join(TOTALSEG, "ct.nii.gz"))
    labels, _ = read_labels(os.path.join(TOTALSEG, "vertebral_bodies.nii.gz"), volume)
    placements, _ = place_from_labels(volume, labels, {"L1": 20, "L2": 21})
    m = measure_levels(volume, None, shapes=["oval"], placements=placements)
    a = m["aorta"]
    assert a["hu"] is not None, a["reason"]
    assert -20.0 <= a["hu"] <= 60.0  # unenhanced blood 20 ± 40 HU (QCT_BRIEF §4): a non-contrast CT (§7)
    for level, info in a["levels"].items():
        body = m["levels"][level]["outline"]["center_ras"]
        assert info["center_ras"][1] > body[1] + 20.0  # in front of the body
        assert info["center_ras"][0] < body[0]  # on the patient's left (RAS: smaller R)


@pytest.mark.skipif(not os.path.isdir(TPTBOX), reason="real crop not available (../shared/data/tptbox_sample)")
def test_the_real_tight_crop_has_no_aorta_and_says_why():
    volume = read_volume(os.path.join(TPTBOX, "sub-ct_label-22_ct.nii.gz"))
    labels, _ = read_labels(os.path.join(TPTBOX, "sub-ct_seg-vert_label-22_msk.nii.gz"), volume)
    placements, _ = place_from_labels(volume, labels, {"L2": 21, "L3": 22})
    a = measure_levels(volume, None, shapes=["oval"], placements=placements)["aorta"]
    assert a["hu"] is None and "outside the image" in a["reason"]


def test_the_aorta_benchmark_row_is_consistent(tmp_path):
    """benchmarks/bench_aorta.py on a small CT: ratio = figure / baseline, the phantom's aorta found (no timing asserted)."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    sys.path.insert(0, bench)
    try:
        import bench_aorta
    finally:
        sys.path.remove(bench)
    (row,) = bench_aorta.run(quick=True, phantom={"size": (128, 128, 60), "spacing": (1.5, 1.5, 2.5)},
                             cache_dir=str(tmp_path))
    assert row["key"] == "aorta_search" and row["ratio"] == pytest.approx(row["figure"] / row["baseline"])
    assert f"(phantom {bench_aorta.BLOOD_HU:g})" in row["notes"] and "found None" not in row["notes"]


@pytest.mark.parametrize("blood_hu, said", [(250.0, True), (45.0, False)])
def test_measure_on_the_command_line_says_when_the_aorta_is_enhanced(tmp_path, capsys, blood_hu, said):
    volume, truth = make_phantom(blood_hu=blood_hu, aorta_fat_mm=4.0, noise_sigma=8.0, level_names=("L1", "L2"),
                                 trabecular_density=(140.0, 116.0), depth_mm=(30.0, 31.0), width_mm=(42.0, 44.0))
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(volume.to_sitk(), str(ct))
    points = [arg for lv in truth.levels for arg in ("--point", "{}={},{},{}".format(lv.name, *lv.center_ras))]
    code = cli.main(["measure", str(ct), *points, "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("contrast-enhanced blood" in err) is said
    assert json.loads((tmp_path / "r.json").read_text())["aorta"]["hu"] == pytest.approx(blood_hu, abs=5.0)


def test_a_level_without_an_outline_is_not_searched():
    volume, _ = make_phantom(blood_hu=250.0)
    found = find_aorta(volume, {"L1": {"point_ras": [0.0, 0.0, 0.0]}, "L2": None})
    assert found.hu is None and "none of them was measured" in found.reason


def test_a_re_measure_reuses_the_finding_and_a_moved_body_searches_again():
    """The finding depends only on the image and the searched bodies' outlines: an unchanged body gives
    the same object back (a re-measure after an ROI edit costs nothing), a moved one a new search."""
    import copy

    from OsteoROILib.placement.aorta import find_aorta
    from OsteoROILib.placement.measure import measure_levels

    volume, truth = make_phantom(blood_hu=250.0, aorta_fat_mm=3.0)
    levels = measure_levels(volume, {lv.name: lv.center_ras for lv in truth.levels[:2]}, shapes=["oval"])["levels"]
    first = find_aorta(volume, levels)
    assert find_aorta(volume, copy.deepcopy(levels)) is first
    moved = copy.deepcopy(levels)
    moved["L1"]["outline"]["center_ras"] = [c + (5.0 if i == 0 else 0.0)
                                            for i, c in enumerate(moved["L1"]["outline"]["center_ras"])]
    assert find_aorta(volume, moved) is not first
