"""ROIs on the plane perpendicular to the vertebra's own axis (the option for tilted spines),
and the click placement on a real 3 mm CT.

Oracles: the phantom's configured tilt (its truth normal and AP axis are the configured rotation
applied to the straight column), the noise-free phantom's exact trabecular HU (a single cortical,
disc or canal voxel in an ROI shows up as a different value) and, on the real CT, the
segmentation model's labels (independent of our code).
"""
import json

import numpy as np
import pytest

from OsteoROILib import cli

from OsteoROILib.export import measurement as results

from OsteoROILib.placement.click import place_from_click
from OsteoROILib.placement.tilted import PLANE_VERTEBRA
from OsteoROILib.errors import InputError
from OsteoROILib.roi.geometry import RoiShape, roi_voxels
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.roi.family import build_roi_family
from OsteoROILib.io.image_files import write_volume

TILT = (12.0, -8.0)
SPINE_BOX = ((-75.0, 75.0), (-75.0, 60.0), (-85.0, 85.0))
OFFSET = np.array([2.0, 1.5, 2.0])


def _angle(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def _values(volume, row):
    r = row["roi"]
    shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                     r["slab_mm"])
    return roi_voxels(shape, volume.ijk_to_ras, volume.dimensions).values(volume.array)


@pytest.fixture(scope="module")
def tilted():
    return make_phantom(spine_tilt_deg=TILT, extent_ras=SPINE_BOX)


def test_vertebra_plane_follows_a_tilted_spine(tilted):
    volume, truth = tilted
    points = {lv.name: lv.center_ras + OFFSET for lv in truth.levels}
    result = measure_levels(volume, points, plane="vertebra")
    expected_tilt = np.degrees(np.arccos(truth.levels[0].normal_ras[2]))
    assert expected_tilt > 10.0
    for row in result["rows"]:
        lv = truth.level(row["level"])
        normal = np.cross(row["roi"]["axis_u_ras"], row["roi"]["axis_v_ras"])
        assert row["plane"] == PLANE_VERTEBRA
        assert _angle(normal, lv.normal_ras) <= 1.5
        assert _angle(row["ap_axis_ras"], lv.ap_axis_ras) <= 3.0
        assert abs(row["body_depth_mm"] - lv.depth_mm) <= 2.5 and abs(row["body_width_mm"] - lv.width_mm) <= 2.5
        vals = _values(volume, row)
        assert vals.size > 20 and np.all(vals == np.float32(lv.trabecular_hu)), (row["level"], row["shape"])
    for name, entry in result["levels"].items():
        assert entry["plane"] == PLANE_VERTEBRA
        assert entry["auto"]["axis_tilt_deg"] == pytest.approx(expected_tilt, abs=1.5)
        # the oval fills the true anterior two thirds of the body's own cross-section
        lv = truth.level(name)
        oval = next(r for r in result["rows"] if r["level"] == name and r["shape"] == "oval")["roi"]
        best = build_roi_family(lv.outline(), volume.slice_spacing(), ["oval"]).shapes["oval"]
        assert np.pi * oval["half_u_mm"] * oval["half_v_mm"] >= 0.8 * best.nominal_area_mm2


def test_image_plane_stays_axial_on_a_tilted_spine(tilted):
    volume, truth = tilted
    lv = truth.level("L2")
    result = measure_levels(volume, {"L2": lv.center_ras + OFFSET})
    for row in result["rows"]:
        normal = np.cross(row["roi"]["axis_u_ras"], row["roi"]["axis_v_ras"])
        assert _angle(normal, volume.slice_normal_ras()) <= 1e-6
        assert row["plane"] == "image axial slice"


def test_vertebra_plane_of_a_straight_spine_is_the_axial_plane():
    volume, truth = make_phantom(extent_ras=SPINE_BOX)
    lv = truth.level("L3")
    result = measure_levels(volume, {"L3": lv.center_ras + OFFSET}, plane="vertebra")
    assert result["levels"]["L3"]["auto"]["axis_tilt_deg"] <= 1.0
    for row in result["rows"]:
        assert np.all(_values(volume, row) == np.float32(lv.trabecular_hu))


def test_plane_option_errors_and_cli(tmp_path, capsys, tilted):
    volume, truth = tilted
    lv = truth.level("L1")
    with pytest.raises(InputError, match="plane"):
        measure_levels(volume, {"L1": lv.center_ras}, plane="sideways")
    with pytest.raises(InputError, match="automatic placement"):
        measure_levels(volume, {"L1": lv.center_ras}, plane="vertebra", auto=False)
    ct = str(tmp_path / "ct.nrrd")
    write_volume(volume, ct)
    p = lv.center_ras + OFFSET
    out = tmp_path / "v.json"
    code = cli.main(["measure", ct, "--point", f"L1={p[0]},{p[1]},{p[2]}", "--plane", "vertebra", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    results.validate_document(doc)
    assert all(r["plane"] == PLANE_VERTEBRA for r in doc["rows"])
    code = cli.main(["measure", ct, "--point", f"L1={p[0]},{p[1]},{p[2]}", "--plane", "vertebra", "--no-auto"])
    assert code == 1 and "automatic placement" in capsys.readouterr().err


# --- real CT (3 mm slices, model-made labels) ----------------------------------------------
def test_real_ct_click_placement_is_stable_and_matches_the_labels(totalseg_dir):
    """Clicks a few mm apart reach the same slice and outline; the outline's size agrees with the
    segmentation model's label (which ends about half a voxel inside our outer cortical edge)."""
    import SimpleITK as sitk

    from OsteoROILib.io.image_files import read_volume

    volume = read_volume(f"{totalseg_dir}/ct.nii.gz")
    body = sitk.GetArrayFromImage(sitk.ReadImage(f"{totalseg_dir}/vertebral_bodies.nii.gz"))
    u = volume.in_plane_anterior()
    v = np.cross(volume.slice_normal_ras(), u)
    for level, value in {"L2": 21, "L3": 22, "L4": 23}.items():
        kji = np.argwhere(body == value)
        centre = volume.ijk_to_ras_points(kji.mean(axis=0)[::-1])[0]
        placed = [place_from_click(volume, centre + du * u + dv * v, level)
                  for du, dv in ((0.0, 0.0), (2.5, -2.0), (-2.0, 2.5))]
        assert len({pl.slice_index for pl in placed}) == 1
        assert max(np.linalg.norm(pl.outline.center - placed[0].outline.center) for pl in placed) <= 1.0
        pl = placed[0]
        assert pl.fit_quality >= 0.5 and not pl.fallback
        on_mid = kji[kji[:, 0] == pl.slice_index]
        ras = volume.ijk_to_ras_points(on_mid[:, ::-1].astype(float))
        o = pl.outline
        depth_label = np.ptp(ras @ o.ap_axis) + volume.spacing[1]
        width_label = np.ptp(ras @ o.left_axis) + volume.spacing[0]
        assert -2.0 <= o.depth_mm - depth_label <= 8.0, (level, o.depth_mm, depth_label)
        assert -2.0 <= o.width_mm - width_label <= 6.0, (level, o.width_mm, width_label)
