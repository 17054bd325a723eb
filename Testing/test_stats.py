"""Independent-oracle tests of OsteoROILib.roi.stats.roi_statistics.

Oracles: SimpleITK's LabelStatisticsImageFilter on a label image built from the ROI's voxel set,
numpy on values selected by a brute-force voxel-centre test written here, and the analytic
voxel volume (product of the spacings for an orthonormal direction matrix).
"""

import math

import numpy as np
import pytest
import SimpleITK as sitk
from OsteoROILib.roi.geometry import RoiShape, roi_voxels
from OsteoROILib.roi.stats import STAT_KEYS, roi_statistics
from OsteoROILib.io.volume import Volume


def rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def make_volume(rng, dims=(40, 36, 14), spacing=(0.7, 0.9, 1.5), direction=None, dtype=np.float64):
    ni, nj, nk = dims
    m = np.eye(4)
    d = np.diag([-1.0, -1.0, 1.0]) if direction is None else direction
    m[:3, :3] = d @ np.diag(spacing)
    m[:3, 3] = rng.uniform(-150, 150, 3)
    if np.dtype(dtype).kind == "f":
        arr = rng.normal(120.0, 80.0, size=(nk, nj, ni)).astype(dtype)
    else:
        arr = rng.integers(-1024, 3000, size=(nk, nj, ni)).astype(dtype)
    return Volume(arr, m)


def brute_values(volume, shape):
    """Values of voxels whose centre satisfies the membership rule (no tolerance; ties avoided)."""
    nk, nj, ni = volume.array.shape
    kk, jj, ii = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
    ras = ijk @ volume.ijk_to_ras[:3, :3].T + volume.ijk_to_ras[:3, 3]
    u, v = np.asarray(shape.axis_u), np.asarray(shape.axis_v)
    n = np.cross(u, v)
    d = ras - np.asarray(shape.center)
    su, sv, sn = d @ u, d @ v, d @ n
    slab = (sn >= -shape.slab_mm / 2) & (sn < shape.slab_mm / 2)
    if shape.kind == "ellipse":
        plane = (su / shape.half_u) ** 2 + (sv / shape.half_v) ** 2 <= 1.0
    else:
        plane = (np.abs(su) <= shape.half_u) & (np.abs(sv) <= shape.half_v)
    return volume.array.ravel()[slab & plane]


def random_shape(rng, volume, kind):
    ni, nj, nk = volume.dimensions
    c_ijk = rng.uniform([ni * 0.3, nj * 0.3, nk * 0.3], [ni * 0.7, nj * 0.7, nk * 0.7])
    centre = volume.ijk_to_ras_points(c_ijk)[0]
    f = rotation(rng)
    return RoiShape(kind, tuple(centre), tuple(f[:, 0]), tuple(f[:, 1]),
                    float(rng.uniform(3, 8)), float(rng.uniform(3, 8)), float(rng.uniform(2, 6)), name="test")


def sitk_label_stats(volume, shape):
    vs = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    label = np.zeros(volume.array.shape, dtype=np.uint8)
    label[vs.k, vs.j, vs.i] = 1
    image = volume.to_sitk()
    label_image = sitk.GetImageFromArray(label)
    label_image.CopyInformation(image)
    f = sitk.LabelStatisticsImageFilter()
    f.Execute(image, label_image)
    return f, vs


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["ellipse", "rectangle"])
def test_mean_sd_min_max_count_match_simpleitk(seed, kind):
    rng = np.random.default_rng(seed)
    volume = make_volume(rng, direction=rotation(rng) if seed % 2 else None,
                         dtype=np.int16 if seed % 3 == 0 else np.float64)
    shape = random_shape(rng, volume, kind)
    result = roi_statistics(volume, shape)
    f, vs = sitk_label_stats(volume, shape)
    assert f.HasLabel(1)
    assert result["n_voxels"] == f.GetCount(1) == vs.count > 10
    assert result["mean_hu"] == pytest.approx(f.GetMean(1), rel=0, abs=1e-6)
    assert result["sd_hu"] == pytest.approx(f.GetSigma(1), rel=0, abs=1e-6)
    assert result["min_hu"] == pytest.approx(f.GetMinimum(1), abs=1e-6)
    assert result["max_hu"] == pytest.approx(f.GetMaximum(1), abs=1e-6)


def test_simpleitk_sigma_is_sample_sd():
    """Check the oracle itself: ITK's LabelStatistics sigma uses the n-1 denominator (ddof=1)."""
    rng = np.random.default_rng(7)
    volume = make_volume(rng, dims=(6, 5, 4))
    label = np.zeros(volume.array.shape, np.uint8)
    label[1:3, 1:4, 2:5] = 1
    img = sitk.GetImageFromArray(volume.array)
    f = sitk.LabelStatisticsImageFilter()
    f.Execute(img, sitk.GetImageFromArray(label))
    vals = volume.array[label == 1]
    assert f.GetSigma(1) == pytest.approx(np.std(vals, ddof=1), abs=1e-9)
    assert abs(f.GetSigma(1) - np.std(vals, ddof=0)) > 1e-3


@pytest.mark.parametrize("seed", range(10))
def test_median_percentiles_vs_numpy_on_brute_force_values(seed):
    rng = np.random.default_rng(100 + seed)
    volume = make_volume(rng, direction=rotation(rng))
    shape = random_shape(rng, volume, ["ellipse", "rectangle"][seed % 2])
    values = brute_values(volume, shape)
    result = roi_statistics(volume, shape)
    assert result["n_voxels"] == values.size > 10
    assert result["median_hu"] == pytest.approx(float(np.median(values)), abs=1e-9)
    assert result["p05_hu"] == pytest.approx(float(np.percentile(values, 5)), abs=1e-9)
    assert result["p95_hu"] == pytest.approx(float(np.percentile(values, 95)), abs=1e-9)
    assert result["mean_hu"] == pytest.approx(float(np.mean(values)), abs=1e-6)
    assert result["sd_hu"] == pytest.approx(float(np.std(values, ddof=1)), abs=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_area_and_volume(seed):
    rng = np.random.default_rng(200 + seed)
    spacing = rng.uniform(0.3, 3.0, 3)
    volume = make_volume(rng, spacing=tuple(spacing), direction=rotation(rng))
    shape = random_shape(rng, volume, "ellipse")
    n = brute_values(volume, shape).size
    result = roi_statistics(volume, shape)
    voxel_volume = float(np.prod(spacing))  # orthonormal direction
    assert result["n_voxels"] == n
    assert result["volume_mm3"] == pytest.approx(n * voxel_volume, rel=1e-9)
    assert result["area_mm2"] == pytest.approx(n * voxel_volume / shape.slab_mm, rel=1e-9)


def test_area_on_axial_grid_is_count_times_pixel_area():
    """One-slice-thick slab on an axial grid: area = n_voxels x in-plane voxel area (stats docstring)."""
    rng = np.random.default_rng(3)
    volume = make_volume(rng, dims=(60, 60, 6), spacing=(0.6, 0.6, 2.5))
    centre = volume.ijk_to_ras_points([30.2, 29.7, 3.0])[0]
    shape = RoiShape("ellipse", tuple(centre), (0, 1, 0), (-1, 0, 0), 8.0, 6.0, 2.5)
    result = roi_statistics(volume, shape)
    assert result["area_mm2"] == pytest.approx(result["n_voxels"] * 0.36, rel=1e-9)
    assert abs(result["area_mm2"] - math.pi * 48) < 0.03 * math.pi * 48


def no_nan(d):
    for key, value in d.items():
        if isinstance(value, float):
            assert math.isfinite(value), f"{key} is {value}"


def test_single_voxel_roi():
    rng = np.random.default_rng(4)
    volume = make_volume(rng, dims=(10, 10, 5), spacing=(1.0, 1.0, 1.0))
    centre = volume.ijk_to_ras_points([4, 5, 2])[0]
    shape = RoiShape("ellipse", tuple(centre), (0, 1, 0), (-1, 0, 0), 0.3, 0.3, 0.5, name="tiny")
    result = roi_statistics(volume, shape)
    assert result["n_voxels"] == 1
    assert result["sd_hu"] is None
    assert result["mean_hu"] == pytest.approx(float(volume.array[2, 5, 4]))
    assert result["median_hu"] == result["min_hu"] == result["max_hu"] == result["mean_hu"]
    no_nan(result)
    text = " ".join(result["warnings"]).lower()
    assert "single voxel" in text and "sd" in text


def test_empty_roi():
    rng = np.random.default_rng(5)
    volume = make_volume(rng, dims=(10, 10, 5), spacing=(1.0, 1.0, 1.0))
    centre = volume.ijk_to_ras_points([4.5, 5.5, 2.0])[0]  # between voxel centres in-plane
    shape = RoiShape("ellipse", tuple(centre), (0, 1, 0), (-1, 0, 0), 0.3, 0.3, 0.5, name="empty")
    result = roi_statistics(volume, shape)
    assert result["n_voxels"] == 0
    for key in ("mean_hu", "sd_hu", "median_hu", "min_hu", "max_hu", "p05_hu", "p95_hu"):
        assert result[key] is None, key
    assert result["area_mm2"] == 0.0 and result["volume_mm3"] == 0.0
    no_nan(result)
    assert set(STAT_KEYS) <= set(result)
    text = " ".join(result["warnings"]).lower()
    assert "no voxel" in text


def test_partially_outside_warns_about_clipping():
    rng = np.random.default_rng(6)
    volume = make_volume(rng, dims=(20, 20, 8), spacing=(1.0, 1.0, 1.0), direction=rotation(rng))
    centre = volume.ijk_to_ras_points([0.3, 10.2, 4.1])[0]
    shape = RoiShape("ellipse", tuple(centre), (0, 1, 0), (-1, 0, 0), 5.0, 5.0, 2.0, name="edge")
    # Brute-force count of in-ROI centres outside the grid (virtual grid enlarged by 10 voxels).
    m = volume.ijk_to_ras
    r = np.arange(-10, 31)
    ii, jj, kk = np.meshgrid(r, r, np.arange(-10, 19), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], 1).astype(float)
    d = ijk @ m[:3, :3].T + m[:3, 3] - centre
    u, v = np.asarray(shape.axis_u), np.asarray(shape.axis_v)
    su, sv, sn = d @ u, d @ v, d @ np.cross(u, v)
    inside = (su ** 2 + sv ** 2 <= 25.0) & (sn >= -1.0) & (sn < 1.0)
    in_image = np.all((ijk >= 0) & (ijk < [20, 20, 8]), axis=1)
    n_out = int(np.count_nonzero(inside & ~in_image))
    n_in = int(np.count_nonzero(inside & in_image))
    result = roi_statistics(volume, shape)
    assert n_out > 0
    assert result["n_voxels"] == n_in
    text = " ".join(result["warnings"]).lower()
    assert "outside the image" in text and "clipped" in text
    assert f"{n_out} of {n_out + n_in}" in text
    no_nan(result)


def test_no_warning_when_inside():
    rng = np.random.default_rng(8)
    volume = make_volume(rng)
    result = roi_statistics(volume, random_shape(rng, volume, "rectangle"))
    assert result["warnings"] == []
    assert all(result[k] is not None for k in STAT_KEYS)
