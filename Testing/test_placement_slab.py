"""The QCT-style slab option (``slab_mm="qct"``): the ROIs extruded over ~10 mm along the vertebra's
axis, centred at the body's mid-height and clear of the endplates; every row says what it was measured
on. And the conservative shrink of a poorly fitting outline: continuous in the fit quality (no step).

Oracle: the digital phantom's truth (mid-height, endplates) and its noise-free model, in which every
trabecular voxel reads exactly the configured HU.
"""
import numpy as np
import pytest

from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.errors import InputError
from OsteoROILib.placement.landmarks import FALLBACK_SCALE, LOW_QUALITY, conservative_scale
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.placement.slab import ENDPLATE_CLEARANCE_MM, QCT_SLAB_MM
from OsteoROILib.roi.geometry import RoiShape, roi_voxels

OFFSET = np.array([2.0, -1.5, 3.0])


def _voxel_values(volume, row):
    r = row["roi"]
    shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                     r["slab_mm"])
    return roi_voxels(shape, volume.ijk_to_ras, volume.dimensions).values(volume.array)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()  # 1 × 1 × 2.5 mm, noise-free, bodies 25 mm high


def test_qct_slab_is_centred_at_mid_height_and_holds_only_trabecular_bone(phantom):
    volume, truth = phantom
    points = {lv.name: lv.center_ras + OFFSET for lv in truth.levels}
    res = measure_levels(volume, points, slab_mm="qct")
    nrm = volume.slice_normal_ras()
    for row in res["rows"]:
        lv = truth.level(row["level"])
        assert row["slab_mm"] == pytest.approx(QCT_SLAB_MM)
        assert row["slab_centre"].startswith("the body's mid-height")
        # centred on the true mid-height (the endplates are found to within a fraction of a slice)
        assert abs(np.asarray(row["center_ras"]) @ nrm - lv.center_ras @ nrm) <= 0.5
        assert row["slab_endplate_clearance_mm"] >= ENDPLATE_CLEARANCE_MM
        values = _voxel_values(volume, row)
        assert values.size > 0 and np.all(values == np.float32(lv.trabecular_hu)), row["level"]
        assert row["n_voxels"] % 4 == 0  # 10 mm at 2.5 mm slices: four equal layers of voxels


def test_qct_slab_is_thinned_to_the_room_between_close_endplates():
    volume, truth = make_phantom(height_mm=14.0)
    lv = truth.level("L2")
    res = measure_levels(volume, {"L2": lv.center_ras + OFFSET}, slab_mm="qct")
    room = 14.0 - 2 * ENDPLATE_CLEARANCE_MM
    for row in res["rows"]:
        assert row["slab_mm"] <= room + 1.0  # the endplates are found within half a slice each
        assert any("does not fit between the endplates" in w for w in row["warnings"])
        assert np.all(_voxel_values(volume, row) == np.float32(lv.trabecular_hu))


def test_a_slab_given_in_mm_is_kept_and_a_crossed_endplate_is_said(phantom):
    volume, truth = phantom
    lv = truth.level("L3")
    height = lv.height_mm
    # thinner than the body but within the 3 mm clearance of its endplates: kept, with a warning
    thick = height - 2.0
    res = measure_levels(volume, {"L3": lv.center_ras + OFFSET}, slab_mm=thick, shapes=["oval"])
    row = res["rows"][0]
    assert row["slab_mm"] == pytest.approx(thick)
    assert any("endplate" in w and "--slab-mm qct" in w for w in row["warnings"])
    # thicker than the body between its endplates: refused (it would average the discs in)
    with pytest.raises(InputError, match="thicker than the vertebral body"):
        measure_levels(volume, {"L3": lv.center_ras + OFFSET}, slab_mm=height + 5.0, shapes=["oval"])


def test_default_is_one_slice_on_the_mid_vertebral_slice(phantom):
    volume, truth = phantom
    lv = truth.level("L1")
    row = measure_levels(volume, {"L1": lv.center_ras + OFFSET}, shapes=["oval"])["rows"][0]
    assert row["slab_mm"] == pytest.approx(volume.slice_spacing())
    assert row["slab_centre"] == "the mid-vertebral slice"
    assert row["slice_index"] == lv.mid_slice_index
    assert "holds mid-height" in row["mid_slice_rule"]


@pytest.mark.parametrize("bad", ["thick", -3.0, 0.0, float("nan")])
def test_a_bad_slab_is_refused_naming_the_preset(phantom, bad):
    volume, truth = phantom
    with pytest.raises(InputError) as err:
        measure_levels(volume, {"L1": truth.level("L1").center_ras}, slab_mm=bad)
    assert "qct" in err.value.remedy


def test_conservative_shrink_has_no_step_at_the_quality_cut_off():
    q = np.linspace(0.0, 1.0, 10001)
    s = np.array([conservative_scale(x) for x in q])
    assert np.all(np.diff(s) >= 0)  # never shrinks more for a better fit
    assert np.max(np.abs(np.diff(s))) <= (1 - FALLBACK_SCALE) / 0.2 * 1e-4 + 1e-12  # Lipschitz: no jump anywhere
    assert conservative_scale(LOW_QUALITY) == 1.0 and conservative_scale(1.0) == 1.0
    assert conservative_scale(0.0) == pytest.approx(FALLBACK_SCALE)
    # the case: a score of 0.49 against 0.50 changes the ROIs by ~1 %, not 20 %
    assert conservative_scale(LOW_QUALITY - 0.01) > 0.98


def test_command_line_takes_the_qct_slab(phantom, tmp_path, capsys):
    import json

    from OsteoROILib import cli
    from OsteoROILib.io.image_files import write_volume

    volume, truth = phantom
    path = str(tmp_path / "ct.nrrd")
    write_volume(volume, path)
    p = truth.level("L2").center_ras
    out = tmp_path / "m.json"
    code = cli.main(["measure", path, "--point", f"L2={p[0]},{p[1]},{p[2]}", "--slab-mm", "qct", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["rows"]
    assert {r["slab_mm"] for r in rows} == {QCT_SLAB_MM}
    assert cli.main(["measure", path, "--point", f"L2={p[0]},{p[1]},{p[2]}", "--slab-mm", "thick"]) != 0
    assert "qct" in capsys.readouterr().err
