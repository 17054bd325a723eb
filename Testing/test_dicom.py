"""Tests of the DICOM folder reader (OsteoROILib.io.dicom_read).

The DICOM files are written here with pydicom, so every expected value is known independently of
the reader: HU = stored × RescaleSlope + RescaleIntercept computed from the stored integers we wrote,
and the IJK→RAS matrix built by hand from the ImageOrientationPatient / ImagePositionPatient /
PixelSpacing we wrote (RAS = (−x, −y, z) of LPS).
"""
from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
from OsteoROILib.io import dicom_facts, dicom_series
from OsteoROILib.io import dicom_read as dicom
from OsteoROILib.errors import InputError
from OsteoROILib.io.image_files import read_volume

pydicom = pytest.importorskip("pydicom")  # only the tests write DICOM with pydicom; the reader does not need it
Dataset = pydicom.dataset.Dataset
FileMetaDataset = pydicom.dataset.FileMetaDataset
ExplicitVRLittleEndian = pydicom.uid.ExplicitVRLittleEndian
generate_uid = pydicom.uid.generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.22"

DEFAULT_TAGS = {
    "KVP": "120",
    "Manufacturer": "ACME Medical ",
    "ManufacturerModelName": "Scan 9000",
    "ConvolutionKernel": "B30f",
    "ContrastBolusAgent": "Iohexol 350",
    "PatientAge": "067Y",
    "PatientSex": "F",
    "StudyDate": "20240115",
    "SliceThickness": "2.5",
}


def lps_to_ras(v):
    """By hand: RAS = (−L, −P, S)."""
    return np.array([-v[0], -v[1], v[2]], dtype=float)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def save_dataset(ds, path):
    """Write a DICOM file with its preamble and meta header (pydicom 3; pydicom 2 on Python 3.9)."""
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:
        ds.save_as(path, write_like_original=False)


def stored_values(n, rows, cols, seed=0):
    """int16 stored values 0..2000 with a corner of 0 (air after intercept −1024)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2001, size=(n, rows, cols)).astype(np.int16)
    a[:, 0, 0] = 0
    return a


def write_series(
    directory,
    stored,
    *,
    row=(1.0, 0.0, 0.0),
    col=(0.0, 1.0, 0.0),
    pixel_spacing=(0.8, 0.7),  # (row spacing = between rows = dy, column spacing = dx), DICOM order
    origin=(-12.0, 30.0, 100.0),
    step=2.5,
    stack=None,  # stacking vector per slice (LPS mm); default step × normal
    positions=None,  # explicit IPPs, overrides origin/step/stack
    slope=1.0,
    intercept=-1024.0,
    slopes=None,  # per-slice slopes
    modality="CT",
    sop_class=None,
    uid=None,
    description="Abdomen 2.5 mm",
    series_number=3,
    image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    tags=None,
    omit=(),
    prefix="img",
    shuffle=True,
):
    """Write one series slice by slice with pydicom; return (series UID, list of IPPs in slice order)."""
    os.makedirs(directory, exist_ok=True)
    uid = uid or generate_uid()
    study = generate_uid()
    row = np.asarray(row, float)
    col = np.asarray(col, float)
    normal = np.cross(row, col)
    n, rows, cols = stored.shape
    if positions is None:
        vec = normal * step if stack is None else np.asarray(stack, float)
        positions = [np.asarray(origin, float) + k * vec for k in range(n)]
    values = dict(DEFAULT_TAGS)
    values.update(tags or {})
    order = list(range(n))
    if shuffle:
        random.Random(n).shuffle(order)  # file names unrelated to slice order
    for file_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class or (CT_STORAGE if modality == "CT" else MR_STORAGE)
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.FrameOfReferenceUID = study
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.ImageType = list(image_type)
        ds.ImagePositionPatient = [f"{x:.6f}" for x in positions[k]]
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in list(row) + list(col)]
        ds.PixelSpacing = [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"]
        for name, value in values.items():
            if name not in omit:
                setattr(ds, name, value)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        s = slope if slopes is None else slopes[k]
        if "RescaleSlope" not in omit:
            ds.RescaleSlope = f"{s:g}"
            ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[k], dtype="<i2").tobytes()
        save_dataset(ds, os.path.join(directory, f"{prefix}{file_index:04d}.dcm"))
    return uid, [np.asarray(p, float) for p in positions]


def write_sr(directory):
    """A DICOM structured report (no pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    os.makedirs(directory, exist_ok=True)
    save_dataset(ds, os.path.join(directory, "report.dcm"))


def expected_matrix(row, col, pixel_spacing, step, first_ipp):
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    m = np.eye(4)
    m[:3, 0] = lps_to_ras(row) * pixel_spacing[1]
    m[:3, 1] = lps_to_ras(col) * pixel_spacing[0]
    m[:3, 2] = lps_to_ras(normal) * step
    m[:3, 3] = lps_to_ras(first_ipp)
    return m


# --- one CT series: HU and geometry ---------------------------------------------------------


@pytest.mark.parametrize("slope,intercept", [(1.0, -1024.0), (0.5, -1000.0)])
def test_oblique_series_hu_and_geometry(tmp_path, slope, intercept):
    # An oblique orientation with an LPS flip: columns run towards patient right (−L).
    m = rotation((1.0, 2.0, 3.0), 20.0) @ np.diag([-1.0, 1.0, 1.0])
    row, col = m[:, 0], m[:, 1]
    stored = stored_values(20, 32, 24)
    ps = (0.8, 0.7)
    origin = (-12.5, 30.25, 100.0)
    write_series(tmp_path, stored, row=row, col=col, pixel_spacing=ps, origin=origin, step=2.5,
                 slope=slope, intercept=intercept)

    vol = dicom.read_dicom_directory(str(tmp_path))

    hu = stored.astype(float) * slope + intercept
    assert vol.array.shape == (20, 32, 24)
    np.testing.assert_allclose(vol.array, hu, atol=1e-4)
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix(row, col, ps, 2.5, origin), atol=1e-5)
    # a voxel's RAS position from the matrix equals its IPP-derived position by hand
    i, j, k = 5, 7, 11
    lps = np.asarray(origin) + i * ps[1] * row + j * ps[0] * col + k * 2.5 * np.cross(row, col)
    np.testing.assert_allclose(vol.ijk_to_ras_points([i, j, k])[0], lps_to_ras(lps), atol=1e-5)
    assert vol.facts["rescale_slope"] == slope
    assert vol.facts["rescale_intercept"] == intercept
    assert not any("spacing" in n or "tilt" in n for n in vol.notes)


def test_slices_stacked_against_the_normal_are_sorted(tmp_path):
    # Positions decrease along row × col (feet-first order); files shuffled.
    row, col = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    stored = stored_values(12, 16, 16, seed=3)
    top = np.array([0.0, 0.0, 50.0])
    positions = [top - 3.0 * k * np.array([0.0, 0.0, 1.0]) for k in range(12)]
    write_series(tmp_path, stored, row=row, col=col, positions=positions)
    vol = dicom.read_dicom_directory(str(tmp_path))
    # Slice k of the volume is the written slice with the k-th lowest position (written index 11 - k).
    np.testing.assert_array_equal(vol.array, stored[::-1].astype(float) - 1024)
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix(row, col, (0.8, 0.7), 3.0, positions[-1]), atol=1e-6)


def test_per_slice_rescale_is_applied_per_slice(tmp_path):
    stored = stored_values(6, 16, 16, seed=4)
    slopes = [1.0, 1.0, 0.5, 1.0, 2.0, 1.0]
    write_series(tmp_path, stored, slopes=slopes, shuffle=False)
    vol = dicom.read_dicom_directory(str(tmp_path))
    expected = stored.astype(float) * np.asarray(slopes)[:, None, None] - 1024.0
    np.testing.assert_allclose(vol.array, expected, atol=1e-4)
    assert "rescale_slope" not in vol.facts
    assert any("differ between slices" in n for n in vol.notes)


# --- facts ----------------------------------------------------------------------------------


def test_facts(tmp_path):
    stored = stored_values(5, 16, 16)
    uid, _ = write_series(tmp_path, stored, description="  Abdomen venous ", tags={"KVP": "100 "})
    vol = dicom.read_dicom_directory(str(tmp_path))
    f = vol.facts
    assert f["modality"] == "CT"
    assert f["kvp"] == 100.0 and isinstance(f["kvp"], float)
    assert f["manufacturer"] == "ACME Medical"
    assert f["model"] == "Scan 9000"
    assert f["convolution_kernel"] == "B30f"
    assert f["contrast_agent"] == "Iohexol 350"
    assert f["patient_age"] == "067Y"
    assert f["patient_sex"] == "F"
    assert f["study_date"] == "20240115"
    assert f["slice_thickness_mm"] == 2.5
    assert f["series_description"] == "Abdomen venous"
    assert f["series_instance_uid"] == uid
    assert f["rescale_slope"] == 1.0 and f["rescale_intercept"] == -1024.0
    assert set(f) <= set(dicom_facts.FACT_TAGS)
    assert all(isinstance(v, (str, float, int)) for v in f.values())
    # the same facts from one file
    one = dicom_facts.dicom_facts_from_file(str(next(tmp_path.glob("*.dcm"))))
    assert one == f
    # and the volume description carries them (JSON-friendly)
    assert vol.describe()["dicom"]["kvp"] == 100.0


def test_missing_tags_are_absent_not_none(tmp_path):
    stored = stored_values(4, 16, 16)
    write_series(tmp_path, stored, omit=("ContrastBolusAgent", "KVP", "PatientAge"),
                 tags={"ConvolutionKernel": "  "})
    f = dicom.read_dicom_directory(str(tmp_path)).facts
    for key in ("contrast_agent", "kvp", "patient_age", "convolution_kernel"):
        assert key not in f
    assert None not in f.values()
    assert f["manufacturer"] == "ACME Medical"


def test_patient_age_years():
    assert dicom_facts.patient_age_years("067Y") == 67.0
    assert dicom_facts.patient_age_years("018M") == 1.5
    assert dicom_facts.patient_age_years("052W") == pytest.approx(52 * 7 / 365.25)
    assert dicom_facts.patient_age_years("") is None
    assert dicom_facts.patient_age_years("abc") is None
    assert dicom_facts.patient_age_years(None) is None


# --- several series, wrong modality, empty folder -------------------------------------------


def test_largest_ct_series_is_picked_and_noted(tmp_path):
    ct = stored_values(40, 16, 16, seed=1)
    ct_uid, _ = write_series(tmp_path, ct, prefix="ct", description="Body 1.25", series_number=4, step=1.25)
    small_uid, _ = write_series(tmp_path, stored_values(10, 16, 16, seed=2), prefix="small",
                                description="Body 5 mm", series_number=2, step=5.0)
    loc_uid, _ = write_series(tmp_path, stored_values(2, 16, 16, seed=5), prefix="loc",
                              description="Topogram", series_number=1,
                              row=(1.0, 0.0, 0.0), col=(0.0, 0.0, -1.0),
                              image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    mr_uid, _ = write_series(tmp_path, stored_values(45, 16, 16, seed=6), prefix="mr", modality="MR",
                             description="T1 ax", series_number=9, slope=1.0, intercept=0.0)
    write_sr(tmp_path)
    (tmp_path / "readme.txt").write_text("not DICOM")

    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, ct.astype(float) - 1024)
    assert vol.facts["series_instance_uid"] == ct_uid
    note = " ".join(vol.notes)
    assert ct_uid in note and "40 images" in note and "Body 1.25" in note
    for skipped in (small_uid, loc_uid, mr_uid):
        assert skipped in note
    assert "Skipped" in note and "localizer" in note and "not CT" in note

    # an explicitly chosen series is read instead
    other = dicom.read_dicom_directory(str(tmp_path), series_uid=small_uid)
    assert other.array.shape[0] == 10 and other.facts["series_instance_uid"] == small_uid
    with pytest.raises(InputError, match="not in"):
        dicom.read_dicom_directory(str(tmp_path), series_uid="1.2.3.4")
    # listing: largest first
    listed = dicom_series.list_dicom_series(str(tmp_path))
    assert [s.uid for s in listed] == [mr_uid, ct_uid, small_uid, loc_uid]


def test_only_mr_is_refused(tmp_path):
    write_series(tmp_path, stored_values(8, 16, 16), modality="MR", description="T2 sag", intercept=0.0)
    with pytest.raises(InputError) as err:
        dicom.read_dicom_directory(str(tmp_path))
    text = str(err.value)
    assert "MR" in text and "no CT series" in text and "give a folder containing a CT series" in text
    with pytest.raises(InputError, match="MR"):
        read_volume(str(tmp_path))


def test_only_localizer_is_refused(tmp_path):
    write_series(tmp_path, stored_values(2, 16, 16), description="Scout",
                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    with pytest.raises(InputError, match="localizer"):
        dicom.read_dicom_directory(str(tmp_path))


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError) as err:
        dicom.read_dicom_directory(str(tmp_path))
    assert "No DICOM series found in" in str(err.value) and str(tmp_path) in str(err.value)
    assert "CT series or an image file" in str(err.value)
    (tmp_path / "notes.txt").write_text("hello")
    write_sr(tmp_path / "sr")
    with pytest.raises(InputError, match="without image data"):
        read_volume(str(tmp_path))


def test_series_in_subfolder_is_found(tmp_path):
    stored = stored_values(6, 16, 16)
    uid, _ = write_series(tmp_path / "patient" / "study" / "series3", stored)
    vol = dicom.read_dicom_directory(str(tmp_path))
    assert vol.facts["series_instance_uid"] == uid
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    assert any("subfolders" in n for n in vol.notes)


def test_read_volume_on_a_dicom_folder(tmp_path):
    # air, fat and soft tissue (stored = HU + 1024) with noise, as the HU-scale check expects of a CT
    rng = np.random.default_rng(0)
    tissue = np.choose(rng.integers(0, 3, size=(20, 32, 32)), [24, 924, 1064])
    stored = (tissue + rng.integers(-8, 9, size=tissue.shape)).astype(np.int16)
    m = rotation((0.0, 0.0, 1.0), 15.0)
    write_series(tmp_path, stored, row=m[:, 0], col=m[:, 1], origin=(1.0, 2.0, 3.0), step=2.0)
    vol = read_volume(str(tmp_path))  # runs check_ct: air present, modality CT
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix(m[:, 0], m[:, 1], (0.8, 0.7), 2.0, (1, 2, 3)),
                               atol=1e-6)
    assert vol.facts["modality"] == "CT"
    assert os.path.samefile(vol.source, tmp_path)


# --- geometry problems ----------------------------------------------------------------------


def test_missing_slices_are_interpolated_and_reported(tmp_path):
    full = stored_values(20, 16, 16, seed=7)
    hu = full.astype(float) - 1024
    keep = [k for k in range(20) if k not in (8, 9)]
    origin = np.array([0.0, 0.0, -40.0])
    positions = [origin + np.array([0.0, 0.0, 2.5 * k]) for k in keep]
    write_series(tmp_path, full[keep], positions=positions)

    vol = dicom.read_dicom_directory(str(tmp_path))
    assert vol.array.shape[0] == 20  # a uniform grid over the whole range
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix((1, 0, 0), (0, 1, 0), (0.8, 0.7), 2.5, origin),
                               atol=1e-6)
    for k in keep:  # every written slice sits at its own position, unchanged
        np.testing.assert_array_equal(vol.array[k], hu[k])
    # the two missing ones are linear interpolations between slices 7 and 10
    np.testing.assert_allclose(vol.array[8], hu[7] + (hu[10] - hu[7]) / 3, atol=1e-3)
    np.testing.assert_allclose(vol.array[9], hu[7] + 2 * (hu[10] - hu[7]) / 3, atol=1e-3)
    note = " ".join(vol.notes)
    assert "2 slice(s) appear to be missing" in note and "k=8–9" in note and "re-export" in note


def test_gantry_tilt_is_reported(tmp_path):
    stored = stored_values(10, 16, 16)
    tilt = math.radians(12.0)
    stack = 2.0 * np.array([0.0, math.sin(tilt), math.cos(tilt)])  # slices shift posteriorly
    write_series(tmp_path, stored, stack=stack, origin=(0, 0, 0), tags={"GantryDetectorTilt": "12"})
    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    # slice spacing along the normal = stacking step projected on the normal
    assert vol.slice_spacing() == pytest.approx(2.0 * math.cos(tilt), abs=1e-6)
    note = " ".join(vol.notes)
    assert "gantry tilt" in note and "12.00°" in note and "Acquisition geometry regularization" in note


def test_duplicate_positions_are_refused(tmp_path):
    stored = stored_values(6, 16, 16)
    positions = [np.array([0.0, 0.0, 2.0 * (k // 2)]) for k in range(6)]  # two images per position
    write_series(tmp_path, stored, positions=positions)
    with pytest.raises(InputError, match="same slice position"):
        dicom.read_dicom_directory(str(tmp_path))


def test_localizer_inside_the_series_is_left_out(tmp_path):
    stored = stored_values(8, 16, 16)
    uid, _ = write_series(tmp_path, stored, prefix="ax")
    write_series(tmp_path, stored_values(1, 16, 16, seed=9), uid=uid, prefix="loc",
                 row=(1, 0, 0), col=(0, 0, -1), origin=(0, 0, 0))
    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    assert any("another orientation" in n for n in vol.notes)


def test_missing_position_is_refused(tmp_path):
    write_series(tmp_path, stored_values(4, 16, 16))
    f = sorted(tmp_path.glob("*.dcm"))[1]
    ds = pydicom.dcmread(str(f))
    del ds.ImagePositionPatient
    ds.save_as(str(f))
    with pytest.raises(InputError, match="ImagePositionPatient"):
        dicom.read_dicom_directory(str(tmp_path))


def test_single_multiframe_file(tmp_path):
    stored = stored_values(5, 16, 16)
    write_series(tmp_path, stored[:1], shuffle=False)
    f = next(tmp_path.glob("*.dcm"))
    with pytest.raises(InputError, match="too-small"):  # one single-frame image is not a volume
        dicom.read_dicom_directory(str(tmp_path))
    ds = pydicom.dcmread(str(f))
    ds.NumberOfFrames = 5
    ds.SpacingBetweenSlices = "2.5"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    ds.save_as(str(f))
    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    assert any("multi-frame" in n for n in vol.notes)


def test_series_split_over_subfolders_is_merged_and_sorted(tmp_path):
    stored = stored_values(12, 16, 16, seed=11)
    uid = generate_uid()
    z = [np.array([5.0, -3.0, 2.0 * k]) for k in range(12)]
    write_series(tmp_path / "disk1", stored[0::2], uid=uid, positions=z[0::2], prefix="a")
    write_series(tmp_path / "disk2", stored[1::2], uid=uid, positions=z[1::2], prefix="b")
    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix((1, 0, 0), (0, 1, 0), (0.8, 0.7), 2.0, z[0]), atol=1e-6)


# --- one read of each file ------------------------------------------------------------------


def _count_reads(monkeypatch):
    """Count per-file header reads and series pixel reads made by the reader."""
    import SimpleITK as sitk

    counts = {"headers": 0, "series_reads": 0}
    real_header = dicom_facts.read_header
    real_execute = sitk.ImageSeriesReader.Execute

    def header(path):
        counts["headers"] += 1
        return real_header(path)

    def execute(self, *args):
        counts["series_reads"] += 1
        return real_execute(self, *args)

    monkeypatch.setattr(dicom_series, "read_header", header)  # choosing the series
    monkeypatch.setattr(dicom, "read_header", header)  # the careful path: each file's header first
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", execute)
    return counts


def test_plain_series_reads_each_file_once(tmp_path, monkeypatch):
    stored = stored_values(30, 16, 12, seed=21)
    m = rotation((0.0, 1.0, 0.0), 10.0)
    write_series(tmp_path, stored, row=m[:, 0], col=m[:, 1], origin=(3.0, -4.0, 50.0), step=1.25)
    (tmp_path / "notes.txt").write_text("not DICOM")  # a stray non-DICOM file does not matter
    counts = _count_reads(monkeypatch)
    vol = dicom.read_dicom_directory(str(tmp_path))
    # one header to choose the series (+ the stray file, found to be no image), one pixel read
    assert counts == {"headers": 2, "series_reads": 1}
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    np.testing.assert_allclose(vol.ijk_to_ras, expected_matrix(m[:, 0], m[:, 1], (0.8, 0.7), 1.25, (3, -4, 50)),
                               atol=1e-6)
    assert vol.facts["kvp"] == 120.0 and vol.facts["slice_thickness_mm"] == 2.5
    assert vol.notes == [f"DICOM: read series 'Abdomen 2.5 mm' (#3, CT, 30 images; UID "
                         f"{vol.facts['series_instance_uid']})."]


def test_duplicate_file_is_left_out(tmp_path):
    stored = stored_values(7, 16, 16, seed=22)
    write_series(tmp_path, stored, shuffle=False)
    first = sorted(tmp_path.glob("*.dcm"))[3]
    (tmp_path / "copy_of_img0003.dcm").write_bytes(first.read_bytes())  # same SOPInstanceUID
    vol = dicom.read_dicom_directory(str(tmp_path))
    np.testing.assert_array_equal(vol.array, stored.astype(float) - 1024)
    assert any("1 duplicate file(s)" in n for n in vol.notes)


def test_a_small_second_series_beside_the_ct_is_still_found(tmp_path):
    # The second series has few files: the single-scan shortcut must notice them and list both.
    ct_uid, _ = write_series(tmp_path, stored_values(9, 16, 16, seed=23), prefix="ct", series_number=2)
    other_uid, _ = write_series(tmp_path, stored_values(3, 16, 16, seed=24), prefix="zz", series_number=5,
                                description="Bone 5 mm", step=5.0)
    vol = dicom.read_dicom_directory(str(tmp_path))
    assert vol.facts["series_instance_uid"] == ct_uid and vol.array.shape[0] == 9
    note = " ".join(vol.notes)
    assert "holds 2 series" in note and other_uid in note
    assert {s.uid for s in dicom_series.list_dicom_series(str(tmp_path))} == {ct_uid, other_uid}


@pytest.mark.parametrize("slopes", [None, (1.0, 2.0)])
def test_one_pass_read_equals_the_careful_path(tmp_path, slopes):
    """The one-pass read (per-slice tags from the pixel read, the other tags only of the reported
    slices) gives the same volume, facts and notes as reading every file's full header first."""
    stored = stored_values(9, 16, 12, seed=31)
    tilt = math.radians(7.0)
    stack = 1.5 * np.array([0.0, math.sin(tilt), math.cos(tilt)])
    write_series(tmp_path, stored, stack=stack, origin=(2.0, -3.0, 40.0), tags={"GantryDetectorTilt": "7"},
                 slopes=None if slopes is None else [slopes[k % 2] for k in range(9)])
    one_pass = dicom.read_dicom_directory(str(tmp_path))
    (series,), _ = dicom_series.find_series(str(tmp_path))
    notes = [f"DICOM: read {series.label()}."]
    plan = dicom_series.plan_series(series, [(f, dicom_facts.read_header(f)) for f in series.files], notes)
    careful = dicom.finish_series(series, str(tmp_path), plan, dicom.execute_series(plan), notes)
    assert one_pass.array.dtype == careful.array.dtype
    np.testing.assert_array_equal(one_pass.array, careful.array)
    assert one_pass.ijk_to_ras.tobytes() == careful.ijk_to_ras.tobytes()
    assert one_pass.facts == careful.facts and one_pass.notes == careful.notes
    assert any("GantryDetectorTilt 7°" in n for n in one_pass.notes)
    assert one_pass.facts["kvp"] == 120.0 and ("rescale_slope" in one_pass.facts) == (slopes is None)
