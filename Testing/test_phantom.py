"""Tests of the digital CT phantom (OsteoROILib.digital_phantom).

Oracles are independent of the generator: the configured numbers (densities, scanner slope and
intercept, sizes), analytic geometry computed here from the truth's centres/axes/sizes, the
Mindways two-component formulas of QCT_BRIEF §4, and the analytic area of a circle.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_PKG = os.path.join(os.path.dirname(_HERE), "OsteoROI")
if _PKG not in sys.path:
    sys.path.insert(0, _PKG)

from OsteoROILib.errors import InputError, OsteoROIError  # noqa: E402
from OsteoROILib.digital_phantom import PhantomSpec, generate, make_phantom  # noqa: E402
from OsteoROILib.roi.family import SHAPE_NAMES, build_roi_family  # noqa: E402
from OsteoROILib.roi.stats import roi_statistics  # noqa: E402

# Extent around the lumbar column only (fast grids for geometry tests).
SPINE_BOX = ((-40.0, 40.0), (-45.0, 35.0), (-72.0, 72.0))
SLOPE, INTERCEPT = 1.5, -3.0
DENSITIES = (150.0, 120.0, 90.0, 60.0)
EXPECTED_HU = tuple(INTERCEPT + SLOPE * d for d in DENSITIES)  # 222, 177, 132, 87


# ---------------------------------------------------------------------------------------------
# independent geometry helpers
# ---------------------------------------------------------------------------------------------
def voxel_centres_ras(vol, k=None):
    """RAS of every voxel centre (or of slice k), with the matching [k, j, i] index arrays."""
    nk, nj, ni = vol.array.shape
    ks = np.arange(nk) if k is None else np.array([k])
    kk, jj, ii = np.meshgrid(ks, np.arange(nj), np.arange(ni), indexing="ij")
    ijk = np.column_stack([ii.ravel(), jj.ravel(), kk.ravel()]).astype(float)
    ras = ijk @ vol.ijk_to_ras[:3, :3].T + vol.ijk_to_ras[:3, 3]
    return ras, (kk.ravel(), jj.ravel(), ii.ravel())


def local(level, ras):
    d = np.asarray(ras, dtype=float) - np.asarray(level.center_ras)
    return d @ np.asarray(level.ap_axis_ras), d @ np.asarray(level.left_axis_ras), d @ np.asarray(level.normal_ras)


def superellipse_value(s, t, a, b, p):
    return np.abs(s / a) ** p + np.abs(t / b) ** p


def trabecular_core(level, ras, margin):
    """Points at least ~``margin`` mm inside the trabecular region (from truth geometry only)."""
    s, t, n = local(level, ras)
    a = level.depth_mm / 2 - level.cortical_mm - margin
    b = level.width_mm / 2 - level.cortical_mm - margin
    return (superellipse_value(s, t, a, b, level.body_exponent) <= 1.0) & (
        np.abs(n) <= level.height_mm / 2 - level.endplate_mm - margin
    )


def half_diagonal(vol):
    return 0.5 * float(np.linalg.norm(vol.spacing))


def value_at(vol, ras):
    ijk = np.round(vol.ras_to_ijk_points(ras)[0]).astype(int)
    return vol.array[ijk[2], ijk[1], ijk[0]]


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_phantom():
    return make_phantom()


@pytest.fixture(scope="module")
def scanner_phantom():
    """Noise-free, supersampled, custom scanner and densities, only the spine region."""
    return make_phantom(
        trabecular_density=DENSITIES,
        scanner_slope=SLOPE,
        scanner_intercept=INTERCEPT,
        spacing=(0.8, 0.8, 1.25),
        extent_ras=SPINE_BOX,
        supersample=3,
    )


# ---------------------------------------------------------------------------------------------
# default phantom
# ---------------------------------------------------------------------------------------------
def test_default_phantom_levels_and_scanner_model(default_phantom):
    vol, truth = default_phantom
    assert [lv.name for lv in truth.levels] == ["L1", "L2", "L3", "L4"]
    assert vol.array.dtype == np.float32
    # small: ~1 mm in-plane, 2.5 mm slices
    assert vol.spacing == pytest.approx([1.0, 1.0, 2.5])
    assert vol.array.size < 8_000_000
    # documented defaults: densities 140/116/96/72, HU = -10 + 1.25 * density
    for lv, dens in zip(truth.levels, (140.0, 116.0, 96.0, 72.0)):
        assert lv.trabecular_density == pytest.approx(dens)
        assert lv.trabecular_hu == pytest.approx(-10.0 + 1.25 * dens)
    assert truth.scanner.slope == 1.25 and truth.scanner.intercept == -10.0
    assert truth.scanner.noise_sigma == 0.0
    # ordered top to bottom, heights and discs as configured (25 mm bodies, 10 mm discs)
    s = [lv.center_ras[2] for lv in truth.levels]
    assert np.allclose(np.diff(s), -35.0)
    for upper, lower in zip(truth.levels[:-1], truth.levels[1:]):
        assert upper.inferior_endplate_s - lower.superior_endplate_s == pytest.approx(10.0)
    for lv in truth.levels:
        assert lv.superior_endplate_s - lv.inferior_endplate_s == pytest.approx(25.0)
        assert 30 <= lv.depth_mm <= 35 and 40 <= lv.width_mm <= 50
        assert np.allclose(lv.normal_ras, [0, 0, 1]) and np.allclose(lv.ap_axis_ras, [0, 1, 0])


def test_default_mid_planes_are_voxel_centre_slices(default_phantom):
    vol, truth = default_phantom
    for lv in truth.levels:
        ijk = vol.ras_to_ijk_points(lv.center_ras)[0]
        assert np.allclose(ijk, np.round(ijk), atol=1e-6), lv.name
        assert lv.mid_slice_offset_mm == pytest.approx(0.0, abs=1e-6)
        assert lv.mid_slice_index == int(round(ijk[2])) == vol.nearest_slice_index(lv.center_ras)
        assert tuple(lv.center_ijk) == tuple(int(round(x)) for x in ijk)
        assert value_at(vol, lv.center_ras) == np.float32(lv.trabecular_hu)


def test_default_tissues_air_and_trabecular_area(default_phantom):
    vol, truth = default_phantom
    lv = truth.level("L1")
    k = lv.mid_slice_index
    ras, idx = voxel_centres_ras(vol, k)
    values = vol.array[idx]
    # air outside the skin ellipse, away from the table/calibration block (which lie below y_skin)
    (bx, by), (rx, ry) = truth.body["center_ras"], truth.body["semi_axes_mm"]
    e = ((ras[:, 0] - bx) / rx) ** 2 + ((ras[:, 1] - by) / ry) ** 2
    outside = (e > 1.0) & (ras[:, 1] > by - ry + 1.0)
    assert outside.sum() > 1000
    assert np.all(values[outside] == -1000.0)
    # the number of trabecular voxels on the mid slice matches the analytic inner-ellipse area
    near = np.linalg.norm(ras[:, :2] - lv.center_ras[:2], axis=1) < 40
    n_trab = int(np.count_nonzero(values[near] == np.float32(lv.trabecular_hu)))
    area = math.pi * (lv.depth_mm / 2 - lv.cortical_mm) * (lv.width_mm / 2 - lv.cortical_mm)
    assert n_trab * vol.spacing[0] * vol.spacing[1] == pytest.approx(area, rel=0.03)
    # tissue landmarks hold their tissue's HU
    for key, tissue in (("air", "air"), ("subcutaneous_fat", "subcutaneous_fat"),
                        ("paraspinal_muscle_left", "muscle"), ("paraspinal_muscle_right", "muscle"),
                        ("aorta", "blood"), ("spinal_canal", "spinal_canal")):
        assert value_at(vol, truth.landmarks[key]) == np.float32(truth.tissues[tissue]), key
    assert truth.tissues["air"] == -1000 and truth.tissues["subcutaneous_fat"] == -100
    assert truth.tissues["muscle"] == 40 and truth.tissues["disc"] == 80 and truth.tissues["spinal_canal"] == 10


def test_default_calibration_rods_below_patient(default_phantom):
    vol, truth = default_phantom
    dens = [r.density for r in truth.rods]
    assert dens == [0, 100, 200, 400, 600, 800]  # QRM-BDC 6-rod (QCT_BRIEF §4)
    assert all(r.unit == "mg/cm3 HA" for r in truth.rods)
    by, ry = truth.body["center_ras"][1], truth.body["semi_axes_mm"][1]
    for r in truth.rods:
        assert r.expected_hu == pytest.approx(-10.0 + 1.25 * r.density)
        assert r.center_ras[1] + r.radius_mm < by - ry  # posterior to the skin: under the patient
        assert np.allclose(r.direction_ras, [0, 0, 1])
        assert value_at(vol, r.center_ras) == np.float32(r.expected_hu)


# ---------------------------------------------------------------------------------------------
# noise-free interior, cortex, rods
# ---------------------------------------------------------------------------------------------
def test_trabecular_interior_exact_with_supersampling(scanner_phantom):
    vol, truth = scanner_phantom
    ras, idx = voxel_centres_ras(vol)
    values = vol.array[idx]
    for lv, hu in zip(truth.levels, EXPECTED_HU):
        assert lv.trabecular_hu == pytest.approx(hu)
        core = trabecular_core(lv, ras, margin=half_diagonal(vol) + 1e-6)
        assert core.sum() > 5000
        assert np.all(values[core] == np.float32(hu)), lv.name
    # supersampling made intermediate values somewhere (edges), so the exactness is not trivial
    finite = np.unique(values)
    assert finite.size > 50


def test_cortical_shell_endplates_disc_canal_and_posterior_elements():
    vol, truth = make_phantom(spacing=(0.5, 0.5, 0.5), extent_ras=((-30, 30), (-45, 25), (38, 70)),
                              cortical_mm=1.2, cortical_hu=900.0)
    lv = truth.level("L1")
    ras, idx = voxel_centres_ras(vol)
    values = vol.array[idx]
    s, t, n = local(lv, ras)
    a, b = lv.depth_mm / 2, lv.width_mm / 2
    c = lv.cortical_mm
    outer = superellipse_value(s, t, a, b, 2.0)
    inner = superellipse_value(s, t, a - c, b - c, 2.0)
    tol = 1e-9
    shell = (outer <= 1 - tol) & (inner > 1 + tol) & (np.abs(n) < lv.height_mm / 2 - c - tol)
    assert shell.sum() > 1000
    assert np.all(values[shell] == np.float32(900.0))
    # the shell surrounds the body in every direction of the mid plane
    mid = shell & (np.abs(n) < 0.3)
    angles = np.degrees(np.arctan2(t[mid], s[mid]))
    hist, _ = np.histogram(angles, bins=12, range=(-180, 180))
    assert np.all(hist > 0)
    # endplates: along the normal, bone between the outer endplate and endplate_mm inside it
    for sign in (+1, -1):
        p = lv.center_ras + sign * (lv.height_mm / 2 - c / 2) * np.asarray(lv.normal_ras)
        assert value_at(vol, p) == np.float32(900.0)
    # disc above L1 (between T12 and L1), canal directly posterior, posterior arch behind it
    disc_point = lv.center_ras + (lv.height_mm / 2 + 5.0) * np.asarray(lv.normal_ras)
    assert value_at(vol, disc_point) == np.float32(80.0)
    ap = np.asarray(lv.ap_axis_ras)
    assert value_at(vol, lv.center_ras - (a + 1.0) * ap) == np.float32(10.0)  # canal touches the body
    assert value_at(vol, lv.center_ras - (a + 16.0 + 3.0) * ap) == np.float32(500.0)  # lamina
    # outside the body at the mid plane: no cortical value
    out = (outer > 1.05) & (np.abs(n) < 0.3)
    assert not np.any(values[out] == np.float32(900.0))


def test_rods_interior_equal_scanner_model():
    dens = (50.0, 150.0, 300.0)
    vol, truth = make_phantom(rod_densities=dens, rod_radius_mm=5.0, scanner_slope=SLOPE,
                              scanner_intercept=INTERCEPT, spacing=(0.7, 0.7, 3.0), supersample=3,
                              extent_ras=((-45, 45), (-125, -80), (0, 12)))
    assert [r.density for r in truth.rods] == list(dens)
    ras, idx = voxel_centres_ras(vol)
    values = vol.array[idx]
    m = half_diagonal(vol)
    for r, d in zip(truth.rods, dens):
        expected = INTERCEPT + SLOPE * d
        assert r.expected_hu == pytest.approx(expected)
        dist = np.linalg.norm(ras[:, :2] - np.asarray(r.center_ras)[:2], axis=1)
        inside = dist < r.radius_mm - m
        assert inside.sum() > 50
        assert np.all(values[inside] == np.float32(expected))
        ring = (dist > r.radius_mm + m) & (dist < r.radius_mm + 2.5)
        assert np.all(values[ring] == np.float32(truth.tissues["calibration_block"]))


def test_mindways_two_component_rods_recover_scanner():
    """QCT_BRIEF §4: fit (HU − ρ_water) = σ_ref·ρ + β_ref; σ_CT = σ_ref − 0.2174, β_CT = β_ref + 999.6."""
    vol, truth = make_phantom(calibration_preset="mindways-example", scanner_slope=1.3, scanner_intercept=-4.0,
                              extent_ras=((-70, 70), (-125, -80), (0, 6)), rod_radius_mm=6.0)
    rods = truth.rods
    assert [r.name for r in rods] == ["A", "B", "C", "D", "E"]
    assert [r.density for r in rods] == [-51.83, -53.40, 58.88, 157.05, 375.83]
    assert [r.water_density for r in rods] == [1012.25, 1056.95, 1103.57, 1119.52, 923.20]
    assert rods[0].unit == "mg/cm3 K2HPO4"
    hu = np.array([float(value_at(vol, np.r_[r.center_ras[:2], 3.0])) for r in rods])  # rods run along S
    rho = np.array([r.density for r in rods])
    water = np.array([r.water_density for r in rods])
    sigma_ref, beta_ref = np.polyfit(rho, hu - water, 1)
    assert sigma_ref - 0.2174 == pytest.approx(1.3, abs=1e-4)
    assert beta_ref + 999.6 == pytest.approx(-4.0, abs=1e-2)


# ---------------------------------------------------------------------------------------------
# grid orientations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "orientation",
    ["RAS", "LPS", "oblique", [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]],
)
def test_truth_centres_map_to_trabecular_voxels(orientation):
    vol, truth = make_phantom(orientation=orientation, spacing=(1.2, 1.2, 1.2), extent_ras=SPINE_BOX,
                              rotation_deg=(0, 12, 0, -8))
    d = vol.direction
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-9)
    if orientation == "LPS":
        assert np.allclose(d, np.diag([-1, -1, 1]))
    if orientation == "oblique":
        assert np.max(np.abs(np.abs(d) - np.eye(3))) > 0.02 and np.linalg.det(d) > 0
    for lv in truth.levels:
        assert value_at(vol, lv.center_ras) == np.float32(lv.trabecular_hu), lv.name
        ijk = vol.ras_to_ijk_points(lv.center_ras)[0]
        assert lv.mid_slice_index == int(np.round(ijk[vol.slice_axis()]))


def test_ras_and_lps_grids_sample_identical_values():
    kw = dict(spacing=(1.0, 1.0, 1.5), extent_ras=SPINE_BOX, supersample=2, rotation_deg=(0, 9, 0, 0))
    v_ras, _ = make_phantom(orientation="RAS", **kw)
    v_lps, _ = make_phantom(orientation="LPS", **kw)
    ras, idx = voxel_centres_ras(v_lps)
    q = v_ras.ras_to_ijk_points(ras)
    qi = np.round(q).astype(int)
    assert np.allclose(q, qi, atol=1e-6)  # both grids snapped to the same voxel centres
    ni, nj, nk = v_ras.dimensions
    ok = (qi[:, 0] >= 0) & (qi[:, 0] < ni) & (qi[:, 1] >= 0) & (qi[:, 1] < nj) & (qi[:, 2] >= 0) & (qi[:, 2] < nk)
    assert ok.mean() > 0.95
    a = v_lps.array[idx][ok]
    b = v_ras.array[qi[ok, 2], qi[ok, 1], qi[ok, 0]]
    assert np.array_equal(a, b)


def test_oblique_grid_agrees_with_ras_grid_in_uniform_regions():
    kw = dict(spacing=(1.0, 1.0, 1.0), extent_ras=((-35, 35), (-40, 30), (-30, 30)))
    v_ras, _ = make_phantom(orientation="RAS", **kw)
    v_obl, _ = make_phantom(orientation="oblique", oblique_degrees=(7.0, -5.0, 11.0), **kw)
    ras, idx = voxel_centres_ras(v_obl)
    q = v_ras.ras_to_ijk_points(ras)
    lo = np.floor(q).astype(int)
    ni, nj, nk = v_ras.dimensions
    ok = np.all(lo >= 0, axis=1) & (lo[:, 0] < ni - 1) & (lo[:, 1] < nj - 1) & (lo[:, 2] < nk - 1)
    lo, vals = lo[ok], v_obl.array[idx][ok]
    corners = np.stack([
        v_ras.array[lo[:, 2] + dk, lo[:, 1] + dj, lo[:, 0] + di]
        for di in (0, 1) for dj in (0, 1) for dk in (0, 1)
    ])
    uniform = np.all(corners == corners[0], axis=0)
    assert uniform.sum() > 100_000
    assert np.array_equal(vals[uniform], corners[0][uniform])
    # and the comparison covers the bone values, not only soft tissue
    assert len(np.unique(vals[uniform])) >= 8


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------
def test_noise_sd_mean_and_determinism():
    kw = dict(spacing=(0.8, 0.8, 1.25), extent_ras=SPINE_BOX, noise_sigma=20.0, seed=11)
    vol, truth = make_phantom(**kw)
    ras, idx = voxel_centres_ras(vol)
    values = vol.array[idx].astype(np.float64)
    for lv in truth.levels:
        core = trabecular_core(lv, ras, margin=half_diagonal(vol))
        n = int(core.sum())
        assert n > 5000
        sample = values[core]
        sd = sample.std(ddof=1)
        # SE(SD) ≈ σ/√(2n) ≈ 0.2 HU here: ±1.2 HU is ~6 SE, and fails for σ = 0 or a wrong σ
        assert abs(sd - 20.0) < 1.2, (lv.name, sd)
        assert abs(sample.mean() - lv.trabecular_hu) < 4 * 20.0 / math.sqrt(n)
    again, _ = make_phantom(**kw)
    assert np.array_equal(vol.array, again.array)
    other, _ = make_phantom(**dict(kw, seed=12))
    diff = vol.array.astype(np.float64) - other.array
    assert np.std(diff) == pytest.approx(20.0 * math.sqrt(2), rel=0.05)  # independent draws
    clean, _ = make_phantom(**dict(kw, noise_sigma=0.0))
    resid = vol.array.astype(np.float64) - clean.array
    assert abs(resid.mean()) < 0.2 and resid.std() == pytest.approx(20.0, rel=0.02)


# ---------------------------------------------------------------------------------------------
# partial volume
# ---------------------------------------------------------------------------------------------
def test_partial_volume_matches_analytic_area_fraction():
    r_mm = 5.5
    vol, truth = make_phantom(rod_densities=(400.0,), rod_radius_mm=r_mm, supersample=5, spacing=(1.0, 1.0, 3.0),
                              extent_ras=((-20, 20), (-125, -80), (0, 6)))
    rod = truth.rods[0]
    block = truth.tissues["calibration_block"]
    k = vol.nearest_slice_index(np.r_[rod.center_ras[:2], 3.0])
    ras, idx = voxel_centres_ras(vol, k)
    values = vol.array[idx].astype(np.float64)
    d = ras[:, :2] - np.asarray(rod.center_ras)[:2]
    # a square of voxels (whole voxels) containing the whole rod, inside the block
    square = np.all(np.abs(d) <= r_mm + 3.0, axis=1)
    area = square.sum() * vol.spacing[0] * vol.spacing[1]
    fraction = math.pi * r_mm ** 2 / area
    expected = block + (rod.expected_hu - block) * fraction
    assert values[square].mean() == pytest.approx(expected, abs=0.01 * (rod.expected_hu - block) * fraction)
    dist = np.linalg.norm(d, axis=1)
    hd = half_diagonal(vol)
    edge = values[(dist > r_mm - 0.5) & (dist < r_mm + 0.5)]
    lo, hi = min(block, rod.expected_hu), max(block, rod.expected_hu)
    assert np.count_nonzero((edge > lo + 1) & (edge < hi - 1)) >= 10  # intermediate edge values
    assert np.all(values[dist < r_mm - hd] == np.float32(rod.expected_hu))  # interior unaffected
    # without supersampling the same square holds only the two pure values
    crisp, _ = make_phantom(rod_densities=(400.0,), rod_radius_mm=r_mm, supersample=1, spacing=(1.0, 1.0, 3.0),
                            extent_ras=((-20, 20), (-125, -80), (0, 6)))
    assert set(np.unique(crisp.array[idx][square]).tolist()) == {np.float32(block), np.float32(rod.expected_hu)}


# ---------------------------------------------------------------------------------------------
# ROI family on the truth outline
# ---------------------------------------------------------------------------------------------
def _check_roi_family(vol, truth):
    for lv in truth.levels:
        family = build_roi_family(lv.outline(), slab_mm=vol.slice_spacing(), level=lv.name)
        assert set(family.shapes) == set(SHAPE_NAMES)
        for name, shape in family.shapes.items():
            st = roi_statistics(vol, shape)
            assert st["n_voxels"] >= 20, (lv.name, name)
            assert abs(st["mean_hu"] - lv.trabecular_hu) <= 1.0, (lv.name, name, st["mean_hu"])
            assert st["max_hu"] <= lv.trabecular_hu + 1.0, (lv.name, name, st["max_hu"])  # no cortex
            assert st["min_hu"] >= lv.trabecular_hu - 1.0, (lv.name, name)


def test_roi_family_from_truth_recovers_trabecular_hu(default_phantom):
    _check_roi_family(*default_phantom)


def test_roi_family_on_rotated_superelliptic_bodies():
    vol, truth = make_phantom(rotation_deg=(0.0, 20.0, 0.0, -12.0), body_exponent=2.6, extent_ras=SPINE_BOX,
                              spacing=(0.8, 0.8, 2.5), trabecular_hu=(190.0, 150.0, 120.0, 85.0))
    for lv, hu in zip(truth.levels, (190.0, 150.0, 120.0, 85.0)):
        assert lv.trabecular_hu == hu
        assert lv.trabecular_density == pytest.approx((hu - truth.scanner.intercept) / truth.scanner.slope)
        assert lv.outline().inner_contour is not None
    _check_roi_family(vol, truth)


def test_rotated_level_truth_axis_and_image_orientation():
    angles = (0.0, 20.0, 0.0, -12.0)
    vol, truth = make_phantom(rotation_deg=angles, extent_ras=SPINE_BOX, spacing=(0.5, 0.5, 2.5))
    for lv, ang in zip(truth.levels, angles):
        th = math.radians(ang)
        # rotation about +S by θ: anterior (0,1,0) → (−sin θ, cos θ, 0); left = S × anterior
        assert np.allclose(lv.ap_axis_ras, [-math.sin(th), math.cos(th), 0.0], atol=1e-12)
        assert np.allclose(lv.left_axis_ras, np.cross([0, 0, 1], lv.ap_axis_ras), atol=1e-12)
        assert lv.rotation_deg == ang
        # the trabecular voxels' second moments give the AP (minor) axis direction
        ras, idx = voxel_centres_ras(vol, lv.mid_slice_index)
        sel = (vol.array[idx] == np.float32(lv.trabecular_hu)) & (
            np.linalg.norm(ras[:, :2] - lv.center_ras[:2], axis=1) < 30
        )
        xy = ras[sel, :2] - ras[sel, :2].mean(axis=0)
        _, v = np.linalg.eigh(xy.T @ xy)
        minor = v[:, 0] * np.sign(v[1, 0])
        measured = math.degrees(math.atan2(-minor[0], minor[1]))
        assert measured == pytest.approx(ang, abs=0.5), lv.name
        ap = np.asarray(lv.ap_axis_ras)
        a = lv.depth_mm / 2
        assert value_at(vol, lv.center_ras + (a - lv.cortical_mm - 0.8) * ap) == np.float32(lv.trabecular_hu)
        assert value_at(vol, lv.center_ras + (a + 1.0) * ap) < 100  # soft tissue in front of the body
        assert value_at(vol, lv.center_ras - (a + 1.0) * ap) == np.float32(truth.tissues["spinal_canal"])


# ---------------------------------------------------------------------------------------------
# output, truth serialisation, size, errors
# ---------------------------------------------------------------------------------------------
def test_truth_to_dict_is_json(default_phantom):
    vol, truth = default_phantom
    d = json.loads(json.dumps(truth.to_dict()))
    assert [lv["name"] for lv in d["levels"]] == ["L1", "L2", "L3", "L4"]
    l2 = d["levels"][1]
    assert l2["trabecular_hu"] == 135.0 and l2["trabecular_density"] == 116.0
    assert l2["center_ras"] == pytest.approx(list(truth.level("L2").center_ras))
    assert len(d["rods"]) == 6 and d["rods"][3]["expected_hu"] == pytest.approx(-10 + 1.25 * 400)
    assert d["scanner"]["slope"] == 1.25 and d["scanner"]["intercept"] == -10.0
    assert [c["name"] for c in d["context_levels"]] == ["T12", "L5"]
    assert d["spec"]["spacing"] == [1.0, 1.0, 2.5]


def test_size_int16_and_volume_roundtrip_through_sitk():
    spec = PhantomSpec(size=(256, 256, 100), spacing=(1.4, 1.4, 1.6), supersample=2, noise_sigma=5.0, seed=1,
                       dtype="int16")
    vol, truth = generate(spec)
    assert vol.array.shape == (100, 256, 256) and vol.array.dtype == np.int16
    lv = truth.level("L2")
    ras, idx = voxel_centres_ras(vol, lv.mid_slice_index)
    core = trabecular_core(lv, ras, margin=half_diagonal(vol))
    sample = vol.array[idx][core].astype(float)
    assert abs(sample.mean() - lv.trabecular_hu) < 1.5 and abs(sample.std() - 5.0) < 1.0
    # the geometry survives the LPS conversion used for files
    back = type(vol).from_sitk(vol.to_sitk())
    assert np.allclose(back.ijk_to_ras, vol.ijk_to_ras) and np.array_equal(back.array, vol.array)


@pytest.mark.parametrize(
    "options",
    [
        dict(orientation="XYZ"),
        dict(trabecular_density=(100.0, 90.0)),
        dict(supersample=0),
        dict(spacing=(1.0, 0.0, 1.0)),
        dict(cortical_mm=30.0),
        dict(calibration_preset="nope"),
        dict(orientation=[[1, 0, 0], [1, 1, 0], [0, 0, 1]]),
        dict(no_such_option=1),
        dict(noise_sigma=-1.0),
    ],
)
def test_bad_options_raise_input_error_with_remedy(options):
    with pytest.raises(InputError) as info:
        make_phantom(**options)
    assert isinstance(info.value, OsteoROIError) and info.value.remedy


# --- hard-case options: wedge fracture, osteophytes, bone islands, tilted column ----
from OsteoROILib.digital_phantom import analytic_hu  # noqa: E402


def _rot_x(deg):
    t = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def _rot_y(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])


def test_hard_case_options_at_their_defaults_change_nothing():
    plain_vol, plain_truth = make_phantom(supersample=2)
    vol, truth = make_phantom(supersample=2, wedge_mm=0.0, osteophytes=(), bone_islands=(), spine_tilt_deg=(0, 0))
    assert np.array_equal(plain_vol.array, vol.array)
    assert json.dumps(plain_truth.to_dict(), sort_keys=True) == json.dumps(truth.to_dict(), sort_keys=True)
    assert not {"wedge_mm", "osteophytes", "bone_islands", "spine_tilt_deg"} & set(truth.to_dict()["spec"])


def test_wedge_option_lowers_the_anterior_superior_endplate():
    spec = dict(wedge_mm=(0.0, 8.0, 0.0, 0.0))
    _, truth = make_phantom(**spec)
    lv = truth.level("L2")
    a, c = lv.depth_mm / 2, lv.center_ras
    top = lv.height_mm / 2
    pts = np.array([
        c + [0, a - 2.5, top - 2.0],  # anterior, 2 mm below the old top: now disc (loss there ≈ 7.3 mm)
        c + [0, -a + 2.5, top - 2.5],  # posterior, 2.5 mm below the top: still trabecular
        c + [0, 0, top - 4.0 - 1.6],  # centre: top lowered by 4 mm, endplate 1.5 mm → just inside the cortex
        c + [0, 0, top - 4.0 - 1.4],  # ... and just outside of the trabecular bone, in the endplate
        c + [0, 0, -top + 2.0],  # inferior half unchanged
    ])
    hu = analytic_hu(pts, **spec)
    assert hu[0] == truth.tissues["disc"]
    assert hu[1] == lv.trabecular_hu and hu[2] == lv.trabecular_hu and hu[4] == lv.trabecular_hu
    assert hu[3] == lv.cortical_hu
    assert lv.wedge_mm == 8.0 and lv.central_mid_s == pytest.approx(c[2] - 2.0)
    assert truth.to_dict()["levels"][1]["wedge_mm"] == 8.0
    with pytest.raises(InputError):
        make_phantom(wedge_mm=30.0)


def test_osteophyte_option_adds_a_spur_outside_the_rim():
    spur = {"level": "L3", "angle_deg": 90.0, "length_mm": 6.0, "width_mm": 10.0, "hu": 650.0}
    _, truth = make_phantom(osteophytes=[spur])
    lv = truth.level("L3")
    left = lv.left_axis_ras
    rim = lv.center_ras + lv.width_mm / 2 * left
    hu = analytic_hu(np.array([rim + 1.0 * left, rim + 5.5 * left, rim + 7.0 * left,
                               rim + 1.0 * left + 4.9 * lv.ap_axis_ras,  # beyond the taper
                               rim - 4.0 * left]), osteophytes=[spur])
    assert list(hu[:2]) == [650.0, 650.0]
    assert hu[2] == truth.tissues["muscle"] and hu[3] == truth.tissues["muscle"]
    assert hu[4] == lv.trabecular_hu  # the body itself is untouched
    with pytest.raises(InputError):
        make_phantom(osteophytes=[{"level": "L9"}])


def test_bone_island_option_places_a_dense_sphere():
    isl = {"level": "L2", "offset_mm": (5.0, -3.0, 2.0), "radius_mm": 3.0, "hu": 1100.0}
    _, truth = make_phantom(bone_islands=[isl])
    lv = truth.level("L2")
    centre = lv.center_ras + 5.0 * lv.ap_axis_ras - 3.0 * lv.left_axis_ras + [0, 0, 2.0]
    hu = analytic_hu(np.array([centre, centre + [0, 0, 2.9], centre + [0, 0, 3.1]]), bone_islands=[isl])
    assert list(hu) == [1100.0, 1100.0, lv.trabecular_hu]
    hu = analytic_hu(np.array([[0.0, 0.0, 0.0]]), bone_islands=[{"center_ras": (0, 0, 0), "radius_mm": 1.0}])
    assert hu[0] == 1000.0


def test_spine_tilt_option_rotates_the_column_and_its_truth():
    tilt = (12.0, -7.0)
    vol, truth = make_phantom(spine_tilt_deg=tilt)
    r = _rot_y(tilt[1]) @ _rot_x(tilt[0])  # about R first, then about A
    n = r @ [0, 0, 1.0]
    _, plain = make_phantom()
    for lv, lp in zip(truth.levels, plain.levels):
        assert np.allclose(lv.normal_ras, n) and np.allclose(lv.ap_axis_ras, r @ lp.ap_axis_ras)
        assert np.allclose(lv.center_ras, r @ lp.center_ras)  # the column turns about (0, 0, 0)
        pts = np.array([lv.center_ras,
                        lv.center_ras + n * (lv.height_mm / 2 - lv.endplate_mm / 2),  # in the endplate
                        lv.center_ras + n * (lv.height_mm / 2 + 5.0)])  # in the disc above
        hu = analytic_hu(pts, spine_tilt_deg=tilt)
        assert list(hu) == [lv.trabecular_hu, lv.cortical_hu, truth.tissues["disc"]]
        assert lv.mid_slice_index == vol.nearest_slice_index(lv.center_ras)
    # snapping keeps the first level's (tilted) centre on a voxel centre
    ijk = vol.ras_to_ijk_points(truth.levels[0].center_ras)[0]
    assert np.allclose(ijk, np.round(ijk), atol=1e-6)
    with pytest.raises(InputError):
        make_phantom(spine_tilt_deg=(50.0, 0.0))


def test_beam_hardening_streak_is_a_gaussian_band_of_the_given_fwhm():
    """A streak (``streaks`` option) adds ``hu`` on its centre line and half of it at half its width
    (FWHM) from the line, in every axial plane, and leaves the truth alone."""
    from OsteoROILib.digital_phantom import make_phantom as make

    opts = {"extent_ras": ((-60.0, 60.0), (-80.0, 60.0), (-20.0, 20.0)), "context_vertebrae": False}
    plain, truth = make(**opts)
    band = {"angle_deg": 30.0, "hu": -100.0, "width_mm": 4.0, "through_ras": (5.0, -10.0)}
    streaked, truth2 = make(**opts, streaks=[band])
    diff = streaked.array.astype(float) - plain.array.astype(float)
    kji = np.argwhere(np.ones(plain.array.shape, dtype=bool))
    ras = plain.ijk_to_ras_points(kji[:, ::-1].astype(float))
    a = np.radians(30.0)
    # distance from the line through (5, -10) along (cos a, sin a), by the cross product
    d = np.abs((ras[:, 0] - 5.0) * np.sin(a) - (ras[:, 1] + 10.0) * np.cos(a))
    expected = -100.0 * 0.5 ** ((d / 2.0) ** 2)  # half the value at half the FWHM (2 mm)
    np.testing.assert_allclose(diff.ravel(), expected, atol=1e-3)
    assert truth2.level("L1").trabecular_hu == truth.level("L1").trabecular_hu
