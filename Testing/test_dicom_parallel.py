"""The chunked, multi-threaded DICOM pixel read (OsteoROILib.io.dicom_read.read_chunked) gives exactly the
Volume of one ImageSeriesReader.

Every series is read twice: with ``OSTEOROI_READ_THREADS=1`` (one reader: the reference) and with
several threads and ``MIN_FILES_PER_CHUNK`` lowered so that the small test series really are read in
chunks (a counter asserts the chunked path ran). The two Volumes must agree bit for bit: dtype and
values of the array, the bytes of ijk_to_ras, facts, notes and source. The reference itself is tied
to values known independently (the stored integers and rescale written with pydicom, and the
geometry built by hand in test_dicom.expected_matrix).
"""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
from OsteoROILib.io import dicom_series
from OsteoROILib.io import dicom_read as dicom
from OsteoROILib.errors import InputError
from test_dicom import expected_matrix, rotation, stored_values, write_series

pytest.importorskip("pydicom")

BENCH_SERIES = "/tmp/osteoroi-bench-cache/phantom-512x512x300-173006d88774-dicom"


@pytest.fixture
def chunks(monkeypatch):
    """Small chunks (4 files), and a record of every _read_chunked call: (with_tags, chunked?)."""
    monkeypatch.setattr(dicom, "MIN_FILES_PER_CHUNK", 4)
    calls = []
    real = dicom.read_chunked

    def counted(files, float_voxels, with_tags):
        result = real(files, float_voxels, with_tags)
        calls.append((with_tags, result is not None))
        return result

    monkeypatch.setattr(dicom, "read_chunked", counted)
    return calls


def read(path, threads, monkeypatch):
    monkeypatch.setenv(dicom.READ_THREADS_ENV, str(threads))
    return dicom.read_dicom_directory(str(path))


def assert_same_volume(a, b):
    assert a.array.dtype == b.array.dtype and a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    assert a.ijk_to_ras.tobytes() == b.ijk_to_ras.tobytes()
    assert a.facts == b.facts and a.notes == b.notes and a.source == b.source
    assert a.array.flags.writeable == b.array.flags.writeable  # read-only unless resampled


def _uneven_positions(n):
    z, out = 0.0, []
    for k in range(n):
        out.append(np.array([4.0, -2.0, z]))
        z += 5.0 if k in (11, 25) else 2.5  # two missing slices: resampled onto a uniform grid
    return out


TILT = math.radians(9.0)
SERIES = {
    # name: (write_series keyword arguments, whether the chunked read needs float voxels)
    "oblique": dict(row=rotation((0, 1, 0), 10)[:, 0], col=rotation((0, 1, 0), 10)[:, 1], origin=(3, -4, 50), step=1.25),
    "tilted": dict(stack=2.0 * np.array([0.0, math.sin(TILT), math.cos(TILT)]), origin=(0, 0, 0),
                   tags={"GantryDetectorTilt": "9"}),
    "per_slice_slopes": dict(slopes=[(1.0, 2.0)[k // 20] for k in range(40)]),
    # some chunks are read as float, others as integers: the one-pass read falls back to one reader
    "per_slice_fractional_slopes": dict(slopes=[(1.0, 2.0, 0.5)[k % 3] for k in range(40)]),
    "against_normal": dict(stack=(0.0, 0.0, -2.0)),
    "uneven_spacing": dict(positions=_uneven_positions(40)),
    "no_rescale": dict(omit=("RescaleSlope",)),
}


@pytest.mark.parametrize("name", sorted(SERIES))
def test_chunked_read_equals_one_reader(tmp_path, monkeypatch, chunks, name):
    stored = stored_values(40, 12, 10, seed=len(name))
    write_series(tmp_path, stored, **SERIES[name])
    single = read(tmp_path, 1, monkeypatch)
    assert chunks and not any(chunked for _, chunked in chunks)  # one thread: never chunked
    del chunks[:]
    parallel = read(tmp_path, 3, monkeypatch)
    # the one-pass read (pixels + tags) ran in chunks, unless its chunks disagreed in pixel type
    assert chunks[0] == (True, name != "per_slice_fractional_slopes")
    assert_same_volume(single, parallel)
    if name.startswith("per_slice"):
        assert chunks[1:] == [(False, True)]  # the float re-read ran in chunks
        assert parallel.array.dtype == np.float32
        slopes = np.array(SERIES[name]["slopes"])[:, None, None]
        np.testing.assert_allclose(parallel.array, stored * slopes - 1024.0, rtol=0, atol=1e-3)
    elif name == "oblique":
        m = rotation((0, 1, 0), 10)
        np.testing.assert_array_equal(parallel.array, stored.astype(np.int64) - 1024)
        np.testing.assert_allclose(parallel.ijk_to_ras, expected_matrix(m[:, 0], m[:, 1], (0.8, 0.7), 1.25, (3, -4, 50)),
                                   atol=1e-6)
    elif name == "uneven_spacing":
        assert parallel.array.shape[0] == 42 and any("appear to be missing" in n for n in parallel.notes)
    elif name == "tilted":
        assert any("gantry tilt" in n for n in parallel.notes)
    # the Volume works as one from a SimpleITK image: to_sitk keeps the geometry
    back = parallel.to_sitk()
    assert back.GetSize() == parallel.array.shape[::-1]


def test_duplicate_and_localizer_files_are_left_out_by_a_chunked_re_read(tmp_path, monkeypatch, chunks):
    stored = stored_values(36, 12, 12, seed=5)
    uid, _ = write_series(tmp_path, stored, shuffle=False)
    write_series(tmp_path, stored_values(1, 12, 12, seed=6), uid=uid, prefix="loc",
                 row=(1, 0, 0), col=(0, 0, -1), origin=(0, 0, 0))
    first = sorted(tmp_path.glob("img*.dcm"))[7]
    shutil.copy(first, tmp_path / "copy_of_img0007.dcm")  # same SOPInstanceUID
    single = read(tmp_path, 1, monkeypatch)
    del chunks[:]
    parallel = read(tmp_path, 2, monkeypatch)
    assert (False, True) in chunks  # the re-read of the chosen files ran in chunks
    assert_same_volume(single, parallel)
    np.testing.assert_array_equal(parallel.array, stored.astype(np.int64) - 1024)
    assert any("1 duplicate file(s)" in n for n in parallel.notes)
    assert any("another orientation" in n for n in parallel.notes)


def test_series_split_over_subfolders(tmp_path, monkeypatch, chunks):
    stored = stored_values(24, 10, 10, seed=11)
    uid = "1.2.3.4.5.6.7"
    z = [np.array([5.0, -3.0, 2.0 * k]) for k in range(24)]
    write_series(tmp_path / "disk1", stored[0::2], uid=uid, positions=z[0::2], prefix="a")
    write_series(tmp_path / "disk2", stored[1::2], uid=uid, positions=z[1::2], prefix="b")
    single = read(tmp_path, 1, monkeypatch)
    del chunks[:]
    parallel = read(tmp_path, 4, monkeypatch)
    assert chunks == [(False, True)]  # the careful path's pixel read ran in chunks
    assert_same_volume(single, parallel)
    np.testing.assert_array_equal(parallel.array, stored.astype(np.int64) - 1024)


def test_repeated_chunked_reads_are_identical(tmp_path, monkeypatch, chunks):
    write_series(tmp_path, stored_values(33, 8, 8, seed=3), stack=(0.1, 0.2, 1.7))
    first = read(tmp_path, 4, monkeypatch)
    for _ in range(3):
        assert_same_volume(first, read(tmp_path, 4, monkeypatch))
    assert all(c == (True, True) for c in chunks)


def test_small_series_and_one_thread_stay_single(tmp_path, monkeypatch):
    write_series(tmp_path, stored_values(20, 8, 8))
    monkeypatch.setattr(dicom, "MIN_FILES_PER_CHUNK", 16)  # the default: 20 < 2 × 16 files
    monkeypatch.setenv(dicom.READ_THREADS_ENV, "4")
    assert dicom.read_chunked(dicom_series.list_dicom_series(str(tmp_path))[0].files, False, True) is None
    monkeypatch.setattr(dicom, "MIN_FILES_PER_CHUNK", 2)
    monkeypatch.setenv(dicom.READ_THREADS_ENV, "1")
    assert dicom.read_chunked(dicom_series.list_dicom_series(str(tmp_path))[0].files, False, True) is None


@pytest.mark.parametrize("threads", [2, 3, 4, 8])
@pytest.mark.parametrize("n_files", [8, 9, 33, 64, 100, 300, 1001])
def test_chunk_bounds(monkeypatch, threads, n_files):
    monkeypatch.setattr(dicom, "MIN_FILES_PER_CHUNK", 4)
    bounds = dicom.chunk_bounds(n_files, threads)
    assert bounds[0][0] == 0 and bounds[-1][1] == n_files
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in order
    assert len(bounds) >= 2 and all(stop - start >= 4 for start, stop in bounds)
    sizes = [stop - start for start, stop in bounds]
    if n_files >= 4 * math.ceil((threads + 1) / dicom.MAX_CHUNK_MEMORY_FRACTION):
        # the chunks held at once (one per thread and one being copied) are a small part of the volume
        assert (threads + 1) * max(sizes) <= (dicom.MAX_CHUNK_MEMORY_FRACTION + 0.05) * n_files


def test_read_threads_setting(monkeypatch):
    monkeypatch.setenv(dicom.READ_THREADS_ENV, "1")
    assert dicom.read_threads() == 1
    monkeypatch.setenv(dicom.READ_THREADS_ENV, "3")
    assert dicom.read_threads() == 3
    monkeypatch.setenv(dicom.READ_THREADS_ENV, "lots")
    assert dicom.read_threads() == min(os.cpu_count() or 1, dicom.MAX_READ_THREADS)
    monkeypatch.delenv(dicom.READ_THREADS_ENV)
    assert dicom.read_threads() == min(os.cpu_count() or 1, dicom.MAX_READ_THREADS)


# --- a chunk that fails or disagrees: one reader instead, never a mixed result ----------------


def test_a_failing_chunk_falls_back_to_one_reader(tmp_path, monkeypatch, chunks):
    stored = stored_values(30, 8, 8, seed=9)
    write_series(tmp_path, stored)
    single = read(tmp_path, 1, monkeypatch)
    files = dicom_series.list_dicom_series(str(tmp_path))[0].files
    real = dicom.read_chunk

    def failing(chunk_files, float_voxels, with_tags):
        if files[12] in chunk_files:
            raise RuntimeError("simulated read failure")
        return real(chunk_files, float_voxels, with_tags)

    monkeypatch.setattr(dicom, "read_chunk", failing)
    del chunks[:]
    parallel = read(tmp_path, 3, monkeypatch)
    assert chunks == [(True, False)]  # tried in chunks, then read with one reader
    assert_same_volume(single, parallel)


def test_a_chunk_of_another_pixel_type_falls_back_to_one_reader(tmp_path, monkeypatch, chunks):
    import SimpleITK as sitk

    write_series(tmp_path, stored_values(30, 8, 8, seed=10))
    single = read(tmp_path, 1, monkeypatch)
    files = dicom_series.list_dicom_series(str(tmp_path))[0].files
    real = dicom.read_chunk

    def other_type(chunk_files, float_voxels, with_tags):
        image, headers = real(chunk_files, float_voxels, with_tags)
        if files[-1] in chunk_files:
            image = sitk.Cast(image, sitk.sitkFloat64)
        return image, headers

    monkeypatch.setattr(dicom, "read_chunk", other_type)
    del chunks[:]
    parallel = read(tmp_path, 2, monkeypatch)
    assert chunks == [(True, False)]
    assert_same_volume(single, parallel)


def outcome(path, threads, monkeypatch):
    try:
        return read(path, threads, monkeypatch)
    except InputError as exc:
        return str(exc)


def assert_same_outcome(single, parallel):
    if isinstance(single, str):
        assert parallel == single
    else:
        assert_same_volume(single, parallel)


def test_an_image_of_another_size_takes_the_careful_path_as_before(tmp_path, monkeypatch, chunks):
    # One reader cannot read a series with an image of another matrix size: the careful path reads every
    # header, leaves that image out and reads the others again (here in chunks).
    stored = stored_values(30, 16, 16, seed=12)
    uid, _ = write_series(tmp_path, stored, origin=(0, 0, 0), step=2.0)
    write_series(tmp_path, stored_values(1, 10, 10, seed=13), uid=uid, prefix="odd", origin=(0, 0, 31.0))
    single = outcome(tmp_path, 1, monkeypatch)
    del chunks[:]
    parallel = outcome(tmp_path, 3, monkeypatch)
    assert chunks == [(True, False), (False, True)]  # chunks disagree -> one reader fails -> careful path
    assert_same_outcome(single, parallel)
    np.testing.assert_array_equal(parallel.array, stored.astype(np.int64) - 1024)
    assert any("another orientation or matrix size" in n for n in parallel.notes)


def test_truncated_file_gives_the_same_outcome(tmp_path, monkeypatch, chunks):
    write_series(tmp_path, stored_values(30, 16, 16, seed=12), shuffle=False)
    victim = sorted(tmp_path.glob("*.dcm"))[20]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 200])  # pixel data cut short (GDCM's scan leaves the file out)
    single = outcome(tmp_path, 1, monkeypatch)
    del chunks[:]
    parallel = outcome(tmp_path, 3, monkeypatch)
    assert chunks and chunks[0][0]
    assert_same_outcome(single, parallel)


# --- the 512 × 512 × 300 benchmark CT ------------------------------------------------------


def test_benchmark_series_chunked_equals_one_reader(monkeypatch):
    if not os.path.isdir(BENCH_SERIES):
        pytest.skip("the benchmark DICOM series is not cached (benchmarks/run_benchmarks.py writes it)")
    (series,) = dicom_series.list_dicom_series(BENCH_SERIES)  # found once; each read below reads all 300 files

    def read_series(threads):
        monkeypatch.setenv(dicom.READ_THREADS_ENV, str(threads))
        return dicom.read_series(series, BENCH_SERIES, ["chosen"])

    single = read_series(1)
    calls = []
    real = dicom.read_chunked
    monkeypatch.setattr(dicom, "read_chunked", lambda *a, **k: calls.append(k["with_tags"]) or real(*a, **k))
    parallel = read_series(2)
    assert calls == [True] and len(dicom.chunk_bounds(len(series.files), 2)) > 2
    assert single.array.shape == (300, 512, 512) and single.array.dtype == parallel.array.dtype
    assert np.array_equal(single.array, parallel.array)
    assert single.ijk_to_ras.tobytes() == parallel.ijk_to_ras.tobytes()
    assert single.facts == parallel.facts and single.notes == parallel.notes and single.source == parallel.source
