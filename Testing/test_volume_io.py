"""Independent-oracle tests of OsteoROILib.io.volume: SimpleITK conversion, file round trips,
input validation and slice geometry.

Oracles: SimpleITK's own index->physical-point transforms (LPS; RAS = diag(-1,-1,1) * LPS),
hand-computed direction cosines, and files written/read by SimpleITK directly.
"""
import os

import numpy as np
import pytest
import SimpleITK as sitk
from OsteoROILib.errors import InputError
from OsteoROILib.io.volume import Volume
from OsteoROILib.io.image_files import read_volume, write_volume

FLIP = np.diag([-1.0, -1.0, 1.0])


def rot_x(deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float)


def rot_z(deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)


def oblique(seed, reflect=False):
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] *= -1
    return q


# LPS direction matrices as SimpleITK/DICOM store them.
LPS_DIRECTIONS = {
    "lps_identity": np.eye(3),
    "ras_identity": FLIP.copy(),  # RAS-aligned grid expressed in LPS
    "feet_first": np.diag([1.0, 1.0, -1.0]),
    "permuted": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),
    "gantry_tilt": rot_x(17.0),
    "oblique": oblique(1),
    "oblique_reflected": oblique(2, reflect=True),
}


def ct_array(shape=(6, 7, 8), seed=0, dtype=np.int16):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1024, 2000, size=shape).astype(dtype)
    a.flat[0] = -1000  # air present
    return a


def sitk_image(direction_lps, spacing=(0.7, 0.8, 2.5), origin=(10.5, -20.25, 300.0), seed=0):
    img = sitk.GetImageFromArray(ct_array(seed=seed))
    img.SetSpacing(spacing)
    img.SetDirection([float(x) for x in np.asarray(direction_lps).ravel()])
    img.SetOrigin(origin)
    return img


# --------------------------------------------------------------------------------------------
# SimpleITK conversion
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LPS_DIRECTIONS))
def test_from_sitk_to_sitk_round_trip(name):
    img = sitk_image(LPS_DIRECTIONS[name])
    vol = Volume.from_sitk(img)
    assert vol.dimensions == img.GetSize()
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img))
    assert vol.array.dtype == np.int16
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(vol.direction, FLIP @ LPS_DIRECTIONS[name], atol=1e-12)
    np.testing.assert_allclose(vol.voxel_volume_mm3, 0.7 * 0.8 * 2.5, rtol=1e-12)
    back = vol.to_sitk()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-12)


@pytest.mark.parametrize("name", sorted(LPS_DIRECTIONS))
def test_ijk_to_ras_matches_simpleitk_physical_points(name):
    img = sitk_image(LPS_DIRECTIONS[name])
    vol = Volume.from_sitk(img)
    rng = np.random.default_rng(3)
    idx = [tuple(int(x) for x in rng.integers(0, 6, 3)) for _ in range(10)] + [(0, 0, 0), (7, 6, 5)]
    for index in idx:
        lps = np.array(img.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(vol.ijk_to_ras_points(index)[0], FLIP @ lps, atol=1e-9)
    for cidx in rng.uniform(-1, 8, size=(10, 3)):
        lps = np.array(img.TransformContinuousIndexToPhysicalPoint([float(x) for x in cidx]))
        ras = FLIP @ lps
        np.testing.assert_allclose(vol.ijk_to_ras_points(cidx)[0], ras, atol=1e-9)
        np.testing.assert_allclose(vol.ras_to_ijk_points(ras)[0], cidx, atol=1e-9)
        back = img.TransformPhysicalPointToContinuousIndex([float(x) for x in lps])
        np.testing.assert_allclose(vol.ras_to_ijk_points(ras)[0], back, atol=1e-9)


def test_dimensions_are_i_j_k():
    vol = Volume(np.zeros((3, 4, 5), np.int16), np.eye(4))
    assert vol.dimensions == (5, 4, 3)


def test_contains_ras_half_voxel_margin():
    m = np.eye(4)
    m[:3, :3] = FLIP @ np.diag([0.5, 0.5, 2.0])
    vol = Volume(np.zeros((4, 10, 10), np.int16), m)
    pts = vol.ijk_to_ras_points([[-0.49, 0, 0], [-0.51, 0, 0], [9.49, 9.49, 3.49], [9.0, 9.0, 3.51]])
    assert vol.contains_ras(pts).tolist() == [True, False, True, False]


# --------------------------------------------------------------------------------------------
# File round trips
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nii.gz"])
@pytest.mark.parametrize("name", sorted(LPS_DIRECTIONS))
def test_write_read_round_trip(tmp_path, ext, name):
    img = sitk_image(LPS_DIRECTIONS[name])
    vol = Volume.from_sitk(img)
    path = str(tmp_path / ("vol" + ext))
    write_volume(vol, path)
    # Oracle 1: SimpleITK reads back what was meant.
    raw = sitk.ReadImage(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(raw), vol.array)
    tol = 1e-5 if ext == ".nii.gz" else 1e-9  # NIfTI stores geometry as float32
    np.testing.assert_allclose(raw.GetDirection(), img.GetDirection(), atol=tol)
    np.testing.assert_allclose(raw.GetSpacing(), img.GetSpacing(), atol=tol)
    np.testing.assert_allclose(raw.GetOrigin(), img.GetOrigin(), atol=1e-4 if ext == ".nii.gz" else 1e-9)
    # Oracle 2: read_volume gives the same volume.
    got = read_volume(path)
    np.testing.assert_array_equal(got.array, vol.array)
    assert got.array.dtype == vol.array.dtype
    np.testing.assert_allclose(got.ijk_to_ras[:3, :3], vol.ijk_to_ras[:3, :3], atol=1e-5 if ext == ".nii.gz" else 1e-9)
    np.testing.assert_allclose(got.ijk_to_ras[:3, 3], vol.ijk_to_ras[:3, 3], atol=1e-4 if ext == ".nii.gz" else 1e-9)
    np.testing.assert_array_equal(got.ijk_to_ras[3], [0, 0, 0, 1])
    assert got.source == os.path.abspath(path)


# --------------------------------------------------------------------------------------------
# read_volume errors
# --------------------------------------------------------------------------------------------
def message(excinfo, path=None):
    """The error's text, lower-case, with the file's path removed (so path words cannot match)."""
    e = excinfo.value
    assert isinstance(e, InputError)
    assert e.remedy, "an InputError must say what to do"
    text = str(e)
    if path is not None:
        text = text.replace(os.path.abspath(str(path)), "<path>").replace(str(path), "<path>")
    return text.lower()


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.nrrd")
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei)
    assert "no such file" in text and path.lower() in text


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.nrrd"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as ei:
        read_volume(str(path))
    text = message(ei, str(path))
    assert "cannot read" in text and "corrupt" in text


def write_truncated(tmp_path, ext):
    img = sitk.GetImageFromArray(ct_array(shape=(20, 30, 40)))
    full = str(tmp_path / ("full" + ext))
    sitk.WriteImage(img, full, ext.endswith(".gz"))
    with open(full, "rb") as fh:
        data = fh.read()
    cut = tmp_path / ("cut" + ext)
    cut.write_bytes(data[: len(data) // 2])
    return str(cut)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_truncated_file(tmp_path, ext):
    path = write_truncated(tmp_path, ext)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "cannot read" in text and "truncated" in text


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_truncated_nifti(tmp_path, ext):
    path = write_truncated(tmp_path, ext)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    assert "truncated" in message(ei, path)


def test_truncated_mha_message_is_not_misleading(tmp_path):
    path = write_truncated(tmp_path, ".mha")
    with pytest.raises(InputError) as ei:
        read_volume(path)
    assert "no such file" not in message(ei, path)


MHA_HEADER = """ObjectType = Image
NDims = 3
BinaryData = True
BinaryDataByteOrderMSB = False
CompressedData = False
TransformMatrix = {matrix}
Offset = 0 0 0
ElementSpacing = {spacing}
DimSize = 8 7 6
ElementType = MET_SHORT
ElementDataFile = LOCAL
"""


def hand_written_mha(tmp_path, name, matrix, spacing):
    path = tmp_path / (name + ".mha")
    path.write_bytes(MHA_HEADER.format(matrix=matrix, spacing=spacing).encode() + ct_array().tobytes())
    return str(path)


def test_zero_spacing_in_file(tmp_path):
    path = hand_written_mha(tmp_path, "zs", "1 0 0 0 1 0 0 0 1", "1 0 1")
    with pytest.raises(InputError) as ei:
        read_volume(path)
    assert "spacing" in message(ei, path)


def test_singular_direction_in_file(tmp_path):
    path = hand_written_mha(tmp_path, "sing", "1 0 0 1 0 0 0 0 1", "1 1 1")
    with pytest.raises(InputError) as ei:
        read_volume(path)
    assert "direction" in message(ei, path)


def test_two_d_image(tmp_path):
    path = str(tmp_path / "slice.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(ct_array(shape=(7, 8))), path)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "2 dimensions" in text and "3-d" in text


def test_four_d_image(tmp_path):
    path = str(tmp_path / "series.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(ct_array(shape=(3, 4, 5, 6)), isVector=False), path)
    assert sitk.ReadImage(path).GetDimension() == 4
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "4 dimensions" in text and "3-d" in text


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_rgb_image(tmp_path, ext):
    rgb = np.random.default_rng(0).integers(0, 255, size=(4, 5, 6, 3)).astype(np.uint8)
    img = sitk.GetImageFromArray(rgb, isVector=True)
    assert img.GetDimension() == 3 and img.GetNumberOfComponentsPerPixel() == 3
    path = str(tmp_path / ("rgb" + ext))
    sitk.WriteImage(img, path)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "3 components" in text and "colour" in text


def test_mr_like_image(tmp_path):
    a = np.random.default_rng(0).integers(0, 1200, size=(5, 6, 7)).astype(np.int16)
    path = str(tmp_path / "mr.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(a), path)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "does not look like a ct" in text and "hounsfield" in text
    assert f"lowest value is {int(a.min())}" in text


def test_mr_like_threshold_is_minus_500(tmp_path):
    """-499 is refused, -501 accepted (CT_MIN_HU_REQUIRED = -500)."""
    for low, ok in ((-499, False), (-501, True)):
        a = np.full((4, 5, 6), 40, np.int16)
        a[0, 0, 0] = low
        path = str(tmp_path / f"v{-low}.nrrd")
        sitk.WriteImage(sitk.GetImageFromArray(a), path)
        if ok:
            assert read_volume(path).array.min() == low
        else:
            with pytest.raises(InputError):
                read_volume(path)


def test_nan_voxels(tmp_path):
    a = ct_array(dtype=np.float32)
    a[2, 3, 4] = np.nan
    a[1, 1, 1] = np.nan
    path = str(tmp_path / "nan.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(a), path)
    with pytest.raises(InputError) as ei:
        read_volume(path)
    text = message(ei, path)
    assert "nan" in text and "2 " in text


def test_zero_spacing_volume():
    m = np.diag([0.7, 0.0, 2.5, 1.0])
    with pytest.raises(InputError) as ei:
        Volume(ct_array(), m)
    text = message(ei)
    assert "spacing" in text and "not positive" in text


def test_singular_direction_volume():
    m = np.eye(4)
    m[:3, :3] = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.5]])  # i and j parallel
    with pytest.raises(InputError) as ei:
        Volume(ct_array(), m)
    text = message(ei)
    assert "singular" in text and "direction" in text


def test_non_finite_geometry_volume():
    m = np.eye(4)
    m[0, 1] = np.nan
    with pytest.raises(InputError) as ei:
        Volume(ct_array(), m)
    assert "nan" in message(ei)


def test_two_d_array_volume():
    with pytest.raises(InputError) as ei:
        Volume(np.zeros((4, 5)), np.eye(4))
    assert "2 dimensions" in message(ei)


# --------------------------------------------------------------------------------------------
# Slice geometry on permuted / oblique grids (expectations by hand)
# --------------------------------------------------------------------------------------------
def vol_with(direction_ras, spacing):
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction_ras, float) @ np.diag(spacing)
    m[:3, 3] = (1.0, 2.0, 3.0)
    return Volume(np.zeros((4, 5, 6), np.int16), m)


S20, C20 = np.sin(np.radians(20)), np.cos(np.radians(20))
# name: (RAS direction columns i, j, k), spacing, slice axis, normal, in-plane anterior, slice spacing
SLICE_CASES = {
    "dicom_axial": (FLIP, (0.7, 0.7, 2.5), 2, (0, 0, 1), (0, 1, 0), 2.5),
    "feet_first": (np.diag([-1.0, -1.0, -1.0]), (0.7, 0.7, 2.5), 2, (0, 0, 1), (0, 1, 0), 2.5),
    # i -> S, j -> L (-R), k -> A: slices stack along i.
    "permuted": (np.array([[0, -1, 0], [0, 0, 1], [1, 0, 0]], float), (1.25, 0.5, 0.6), 0, (0, 0, 1), (0, 1, 0), 1.25),
    # i -> R, j -> I (rows downwards), k -> A: coronal acquisition; j is the axis most along S.
    "coronal": (np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float), (0.6, 0.9, 3.0), 1, (0, 0, 1), (0, 1, 0), 0.9),
    # Gantry tilt 20 deg about R: k = (0, sin, cos), j = (0, -cos, sin).
    "tilted": (np.array([[-1, 0, 0], [0, -C20, S20], [0, S20, C20]]), (0.8, 0.8, 2.0), 2, (0, S20, C20), (0, C20, -S20), 2.0),
    # In-plane rotation 30 deg about S: the slice plane stays axial.
    "in_plane_rotated": (rot_z(30) @ FLIP, (0.8, 0.8, 2.0), 2, (0, 0, 1), (0, 1, 0), 2.0),
}


@pytest.mark.parametrize("name", sorted(SLICE_CASES))
def test_slice_geometry(name):
    direction, spacing, axis, normal, anterior, slice_spacing = SLICE_CASES[name]
    vol = vol_with(direction, spacing)
    assert vol.slice_axis() == axis
    np.testing.assert_allclose(vol.slice_normal_ras(), normal, atol=1e-12)
    np.testing.assert_allclose(vol.in_plane_anterior(), anterior, atol=1e-12)
    assert vol.slice_spacing() == pytest.approx(slice_spacing)


def test_nearest_slice_index():
    vol = vol_with(np.diag([-1.0, -1.0, -1.0]), (0.7, 0.7, 2.5))
    for k, expected in ((0.0, 0), (1.4, 1), (1.6, 2), (3.2, 3)):
        ras = vol.ijk_to_ras_points([2.3, 1.1, k])[0]
        assert vol.nearest_slice_index(ras) == expected
