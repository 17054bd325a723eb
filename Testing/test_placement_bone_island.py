"""A bone island inside an ROI is left out of it with a margin (QCT_BRIEF §1: keep the ROIs clear of
focal lesions such as bone islands), recorded in the row and the warnings.

Oracle: the phantom's own island (its centre and radius as configured) and its noise-free trabecular
HU (without noise every trabecular voxel reads exactly the configured value).
"""
import numpy as np
import pytest

from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.geometry import RoiShape, roi_voxels
from OsteoROILib.roi.islands import outside_spheres, voxel_ras


def _shape(row):
    r = row["roi"]
    return RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                    r["slab_mm"])


def _measured_ras(volume, row):
    """The RAS centres of the voxels the row was measured on (its mask without the recorded islands)."""
    ras = voxel_ras(roi_voxels(_shape(row), volume.ijk_to_ras, volume.dimensions), volume.ijk_to_ras)
    spheres = [(f["center_ras"], f["radius_mm"]) for f in row["bone_islands_excluded"]]
    return ras[outside_spheres(ras, spheres)]


@pytest.fixture(scope="module")
def oval_centre():
    """Where L2's oval ROI lies on the plain phantom (the island is put there)."""
    volume, truth = make_phantom()
    lv = truth.level("L2")
    row = next(r for r in measure_levels(volume, {"L2": lv.center_ras})["rows"] if r["shape"] == "oval")
    return lv.center_ras, np.array(row["center_ras"])


@pytest.mark.parametrize("radius_mm, up_mm, slab", [(3.0, 0.0, None), (4.0, 3.0, None), (2.0, 0.0, None),
                                                     (3.0, 2.0, "qct")])
def test_a_bone_island_is_left_out_of_every_roi_with_a_margin(oval_centre, radius_mm, up_mm, slab):
    """The island at the oval's centre (on the mid slice, or above it so that only its cap lies in
    the slice; or across several slices of the QCT slab): every ROI whose mask holds island voxels
    records the island and says so; no voxel it is measured on lies in the island or within 1 mm of
    it, so its mean is the trabecular HU."""
    click, centre = oval_centre
    island = centre + np.array([0.0, 0.0, up_mm])
    volume, truth = make_phantom(bone_islands=[{"center_ras": island, "radius_mm": radius_mm, "hu": 1000.0}])
    res = measure_levels(volume, {"L2": click}, slab_mm=slab)
    trabecular = truth.level("L2").trabecular_hu
    hit = 0
    for row in res["rows"]:
        mask = voxel_ras(roi_voxels(_shape(row), volume.ijk_to_ras, volume.dimensions), volume.ijk_to_ras)
        if np.any(np.linalg.norm(mask - island, axis=1) <= radius_mm):
            hit += 1
            assert row["bone_islands_excluded"], row["shape"]
            assert any("bone island" in w and "left out" in w for w in row["warnings"])
            focus = row["bone_islands_excluded"][0]
            assert focus["n_excluded_voxels"] > focus["n_dense_voxels"] > 0 and focus["area_mm2"] > 0
        # no measured voxel centre lies in the island (+ 1 mm): the phantom's own sphere
        ras = _measured_ras(volume, row)
        assert np.all(np.linalg.norm(ras - island, axis=1) > radius_mm + 1.0 - 1e-6), row["shape"]
        assert row["mean_hu"] == pytest.approx(trabecular, abs=1e-3), row["shape"]
    assert hit or up_mm > 0, "the island at the oval's centre lies in no ROI"


def test_a_focus_just_under_the_threshold_moves_the_mean_no_more_than_itself(oval_centre):
    """No cliff: a focus 149 HU above the trabecular bone stays in (below the dense threshold of
    150 HU above the median), one 151 HU above is left out; the two means differ by no more than
    the kept focus moves the mean away from the trabecular HU (its own share)."""
    click, centre = oval_centre
    _, truth = make_phantom()
    trabecular = truth.level("L2").trabecular_hu
    means, kept = {}, {}
    for above in (149.0, 151.0):
        volume, _ = make_phantom(bone_islands=[{"center_ras": centre, "radius_mm": 3.0, "hu": trabecular + above}])
        oval = next(r for r in measure_levels(volume, {"L2": click})["rows"] if r["shape"] == "oval")
        means[above], kept[above] = oval["mean_hu"], oval["bone_islands_excluded"]
    assert not kept[149.0] and kept[151.0]
    share = means[149.0] - trabecular  # the focus's own effect on the mean
    assert share > 0.5
    assert abs(means[151.0] - means[149.0]) <= share + 1e-3


def test_scattered_noise_is_no_island():
    """A noisy phantom (σ 12 HU) without any island: no ROI loses voxels."""
    volume, truth = make_phantom(noise_sigma=12.0, seed=3)
    res = measure_levels(volume, {"L2": truth.level("L2").center_ras})
    assert all(not r["bone_islands_excluded"] for r in res["rows"])
