"""Reading a CT from a DICOM folder.

``read_dicom_directory(path)`` finds the DICOM image series in a folder (or, if the folder itself
holds none, in its subfolders), picks the CT series to measure, reads it with SimpleITK's
``ImageSeriesReader`` (which applies RescaleSlope/RescaleIntercept, so the voxels are in HU) and
returns a :class:`~.volume.Volume` in RAS (QCT_BRIEF §6: DICOM is LPS, RAS = diag(−1, −1, 1)·LPS).

* **Choice of series** (``dicom_series.choose_series``). Of several series, the CT series with the
  most images wins; localizers / scouts / topograms, series of fewer than ``MIN_VOLUME_IMAGES`` images
  and all other modalities are skipped. ``volume.notes`` says which series was read and which were
  skipped, and how to pick another (``series_uid=``).
* **Geometry checks** (``dicom_series.plan_series``, from each slice's ImagePositionPatient/
  ImageOrientationPatient): images of another orientation or size inside the series are left out;
  slices at the same position, or missing positions/orientations, are refused; a gantry tilt is
  reported. Here, non-uniform spacing or missing slices are repaired by linear interpolation onto a
  uniform grid, with a note naming the interpolated slices (``_fix_slice_geometry``).
* **Facts** (QCT_BRIEF §6) go to ``volume.facts`` with the keys of ``dicom_facts.FACT_TAGS``; a tag
  that is absent or empty is left out (never ``None``/NaN).
* **Threads.** The pixels of a series of many files are read by up to ``MAX_READ_THREADS`` threads,
  each reading a contiguous chunk of the files, and copied into one array: the same Volume as one
  reader gives (any chunk that fails or disagrees -> one reader, as before). ``OSTEOROI_READ_THREADS=1``
  reads with one reader only.

Tags are read from SimpleITK's (GDCM's) metadata, so this works in 3D Slicer and needs neither
pydicom nor anything beyond numpy and SimpleITK; pydicom, when installed, is used only to name
non-image DICOM objects that SimpleITK cannot open.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .dicom_facts import HEADER_TAGS, SLICE_TAGS, itk_warnings_off, read_header
from .dicom_series import (
    POSITION_TOLERANCE_MM,
    SPACING_RELATIVE_TOLERANCE,
    DicomSeries,
    DicomSlice,
    SeriesPlan,
    choose_series,
    rival_series,
    find_series,
    no_series_hint,
    plan_series,
)
from .caveats import Caveat, add_caveat
from .volume import LPS_TO_RAS, Volume

#: Parallel pixel reading (``read_chunked``): a series of at least ``2 * MIN_FILES_PER_CHUNK`` files
#: is read as contiguous chunks of files by up to ``MAX_READ_THREADS`` threads (SimpleITK releases the
#: GIL while reading) and assembled into one array; the environment variable ``OSTEOROI_READ_THREADS``
#: sets the number of threads (1: one reader, as before).
READ_THREADS_ENV = "OSTEOROI_READ_THREADS"
MAX_READ_THREADS = 4
MIN_FILES_PER_CHUNK = 16
#: The chunks held at once (one per thread) stay below this part of the volume, so a chunked read
#: needs about 1.2 volumes of memory, not 2.
MAX_CHUNK_MEMORY_FRACTION = 0.2


def read_dicom_directory(path: str, series_uid: Optional[str] = None) -> Volume:
    """Read the CT series of a DICOM folder into a :class:`Volume` (HU, RAS geometry).

    ``series_uid`` reads that series instead of the automatic choice (largest CT series).
    Raises :class:`InputError` when the folder holds no DICOM image series, no CT series, or a
    series whose geometry cannot be trusted.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise InputError(f"{path} is not a folder.", "Give a folder containing a CT series or an image file.")
    notes: List[str] = []
    series, search_note = find_series(path)
    if search_note:
        notes.append(search_note)
    if not series:
        raise InputError(
            f"No DICOM series found in {path}{no_series_hint(path)}.",
            "Give a folder containing a CT series or an image file (NRRD, NIfTI, MHA).",
        )
    chosen = choose_series(series, series_uid, path, notes)
    volume = read_series(chosen, path, notes)
    rivals = [] if series_uid else rival_series(series, chosen)
    if rivals:
        add_caveat(volume.caveats, Caveat(
            "series_chosen", f"DICOM: the folder holds {len(rivals) + 1} CT series; {chosen.label()} was read "
            f"automatically, not {'; '.join(s.label() for s in rivals)}. Another reconstruction (kernel) or phase "
            "(contrast) changes HU: choose the series with --series UID.", excludes=True))
    return volume


def read_series(series: DicomSeries, path: str, notes: List[str]) -> Volume:
    """Read one series, checking its slices' geometry (see the module docstring).

    A series of several files in one folder is read in one pass: the pixels and every slice's
    tags come from the same ``ImageSeriesReader`` run (``MetaDataDictionaryArrayUpdateOn``), and
    the checks run on those tags afterwards. Only when the checks change what has to be read
    (duplicates or images of another orientation left out, another slice order, per-slice
    rescale needing float voxels) are the pixels read again, from the chosen files. A series
    that cannot be read in one pass, a multi-frame file and a series spread over several
    folders go the careful way: each file's header first, then the pixels. Either way, a series of
    many files is read in chunks by several threads (``read_chunked``).
    """
    if len(series.files) > 1 and len(series.directories) <= 1:
        volume = _read_series_in_one_pass(series, path, notes)
        if volume is not None:
            return volume
    headers = [(f, read_header(f)) for f in series.files]
    plan = plan_series(series, headers, notes)
    return finish_series(series, path, plan, execute_series(plan), notes)


def _reader_for(files: List[str], float_voxels: bool, with_tags: bool = False):
    """A GDCM reader of ``files``; ``with_tags``: a series reader that also keeps every slice's tags
    (public ones), read with the pixels."""
    import SimpleITK as sitk

    if len(files) == 1:  # a multi-frame file (or a single slice): GDCM reads the frames as one 3-D image
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.SetSpacingWarningRelThreshold(1e9)  # spacing is checked (and reported) below
    reader.SetImageIO("GDCMImageIO")
    if float_voxels:
        reader.SetOutputPixelType(sitk.sitkFloat32)  # each slice's own rescale, without integer truncation
    if with_tags:
        reader.MetaDataDictionaryArrayUpdateOn()
        reader.LoadPrivateTagsOff()
    return reader


def _read_series_in_one_pass(series: DicomSeries, path: str, notes: List[str]) -> Optional[Volume]:
    """Pixels and per-slice tags from one read; None when the careful path must be taken."""
    import SimpleITK as sitk

    files = list(series.files)
    # Every slice's checked tags now; the other tags only of the slices whose facts are reported
    # (``complete``): the same header a slice would have with all of HEADER_TAGS read.
    headers: List[Tuple[str, Optional[Dict[str, str]]]] = []
    chunked = read_chunked(files, float_voxels=False, with_tags=True)
    if chunked is not None:
        # The chunks' readers gave all of HEADER_TAGS of each slice (a reader holding tags also holds
        # its pixels, so none is kept): the checked tags are picked from those, in _tags_of_slice's order.
        image = chunked
        full_headers = chunked.headers
        for f, full in zip(files, full_headers):
            headers.append((f, {tag: full[tag] for tag in SLICE_TAGS if tag in full}))

        def complete(index: int) -> Dict[str, str]:
            return dict(full_headers[index])
    else:
        reader = _reader_for(files, float_voxels=False, with_tags=True)
        try:
            with itk_warnings_off():
                image = reader.Execute()
        except RuntimeError:
            return None  # e.g. a truncated file or one of another size: the careful path says which
        all_keys: List[Tuple[str, ...]] = []
        for index, f in enumerate(files):
            try:
                keys = tuple(reader.GetMetaDataKeys(index))
            except RuntimeError:
                return None
            all_keys.append(keys)
            headers.append((f, _tags_of_slice(reader, index, keys, SLICE_TAGS)))

        def complete(index: int) -> Dict[str, str]:
            return _tags_of_slice(reader, index, all_keys[index], HEADER_TAGS)

    mark = len(notes)
    try:
        plan = plan_series(series, headers, notes, complete)
    except InputError:
        del notes[mark:]
        raise
    # The slices' tags are no longer needed (while the reader lives, a numpy view of its image is a copy).
    reader = full_headers = chunked = None
    if plan.files != files or (plan.float_voxels and _pixel_id(image) != sitk.sitkFloat32) or (
            isinstance(image, _ChunkedImage) and plan.positions is None):
        del image  # read again from the chosen files, in slice order (never two volumes at once)
        image = execute_series(plan)
    return finish_series(series, path, plan, image, notes)


def _tags_of_slice(reader, index: int, keys: Sequence[str], tags: Sequence[str]) -> Dict[str, str]:
    """``tags`` of slice ``index`` of an ``ImageSeriesReader`` run (those among ``keys``, readable)."""
    header: Dict[str, str] = {}
    for tag in tags:
        if tag in keys:
            try:
                header[tag] = reader.GetMetaData(index, tag)
            except (RuntimeError, UnicodeDecodeError):
                continue
    return header


def execute_series(plan: SeriesPlan):
    """The pixels of the plan's files, in its order: a SimpleITK image, or a :class:`_ChunkedImage`."""
    chunked = read_chunked(plan.files, plan.float_voxels, with_tags=False) if plan.positions is not None else None
    if chunked is not None:
        return chunked
    reader = _reader_for(plan.files, plan.float_voxels)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise InputError(
            f"SimpleITK could not read {plan.label} ({last[:200]}).",
            "The files may be truncated or use an unsupported compression; re-export the series "
            "uncompressed, or convert it to NRRD/NIfTI and give that file.",
        ) from None


def finish_series(series: DicomSeries, path: str, plan: SeriesPlan, image, notes: List[str]) -> Volume:
    source = series.directories[0] if len(series.directories) == 1 else path
    if isinstance(image, _ChunkedImage):
        volume = image.to_volume(source=source, facts=plan.facts, notes=notes)
    else:
        volume = Volume.from_sitk(image, source=source, facts=plan.facts, notes=notes)
    if plan.positions is not None:
        _fix_slice_geometry(volume, plan.slices, plan.positions, plan.normal_lps, volume.notes)
    return volume


# --- reading a series' pixels with several threads ----------------------------------------


def read_threads() -> int:
    """Number of reader threads: ``OSTEOROI_READ_THREADS`` if set to a whole number, else min(CPUs, 4)."""
    text = os.environ.get(READ_THREADS_ENV, "").strip()
    if text:
        try:
            return max(1, min(int(text), 64))
        except ValueError:
            pass
    return max(1, min(os.cpu_count() or 1, MAX_READ_THREADS))


def chunk_bounds(n_files: int, threads: int) -> List[Tuple[int, int]]:
    """Contiguous [start, stop) file ranges, one per chunk; a single range when not worth splitting.

    Enough chunks that one more than the ``threads`` held at once stay below ``MAX_CHUNK_MEMORY_FRACTION``
    of the volume, but none smaller than ``MIN_FILES_PER_CHUNK`` files.
    """
    if threads < 2 or n_files < 2 * MIN_FILES_PER_CHUNK:
        return [(0, n_files)]
    wanted = max(2 * threads, math.ceil((threads + 1) / MAX_CHUNK_MEMORY_FRACTION))
    count = max(2, min(wanted, n_files // MIN_FILES_PER_CHUNK))
    return [(n_files * c // count, n_files * (c + 1) // count) for c in range(count)]


def read_chunk(files: List[str], float_voxels: bool, with_tags: bool):
    """(image, headers) of one chunk of files; ``headers`` (``with_tags``): each slice's HEADER_TAGS.

    Raises RuntimeError as ``Execute`` or ``GetMetaDataKeys`` do. The reader is dropped before the
    image is returned: while it lives, the image shares its buffer and a numpy view would be a copy.
    """
    reader = _reader_for(files, float_voxels, with_tags)
    image = reader.Execute()
    headers: List[Dict[str, str]] = []
    if with_tags:
        for index in range(len(files)):
            keys = tuple(reader.GetMetaDataKeys(index))
            headers.append(_tags_of_slice(reader, index, keys, HEADER_TAGS))
    del reader
    return image, headers


def _pixel_id(image) -> int:
    return image.pixel_id if isinstance(image, _ChunkedImage) else image.GetPixelID()


class _ChunkedImage:
    """A series' pixels read in chunks by several ``ImageSeriesReader`` runs and copied into one array.

    Stands in for the SimpleITK image of one reader: ``to_volume`` gives the same Volume as
    ``Volume.from_sitk`` of that image -- the same voxels (each file is read and rescaled by its own
    GDCM reader either way) and the in-plane geometry of the first file, which a series reader also
    takes from its first file; the slice axis is set afterwards from the slice positions
    (``_fix_slice_geometry``; so only series with several slice positions are read in chunks).
    """

    def __init__(self, array: np.ndarray, geometry, pixel_id: int, headers: List[Dict[str, str]]):
        self.array = array
        self.geometry = geometry  # a one-voxel SimpleITK image with chunk 0's origin, spacing and direction
        self.pixel_id = pixel_id
        self.headers = headers  # each file's HEADER_TAGS (with_tags), in the order of the files

    def to_volume(self, source: str, facts, notes) -> Volume:
        volume = Volume.from_sitk(self.geometry, source=source, facts=facts, notes=notes)
        volume.array = self.array  # read-only, as from_sitk's view of an image buffer; it owns its memory
        volume.owner = None
        return volume


class _ChunkAssembly:
    """The one array the chunks of a series are copied into (made by the first chunk placed, with the
    geometry of chunk 0), filled from several threads."""

    def __init__(self, n_files: int, bounds: List[Tuple[int, int]]):
        self.n_files = n_files
        self.bounds = bounds
        self.lock = threading.Lock()
        self.out: Dict[str, object] = {}  # "array", "pixel_id", "geometry", set under the lock
        self.placed_chunks: List[int] = []

    def place(self, c: int, image) -> bool:
        """Copy chunk ``c`` into the array (made by the first chunk read); False if it disagrees."""
        import SimpleITK as sitk

        start, end = self.bounds[c]
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            return False
        view = sitk.GetArrayViewFromImage(image)
        out = self.out
        with self.lock:
            if "array" not in out:
                out["pixel_id"] = image.GetPixelID()
                out["array"] = np.empty((self.n_files,) + view.shape[1:], dtype=view.dtype)
            array = out["array"]
            if (image.GetPixelID() != out["pixel_id"] or view.dtype != array.dtype
                    or view.shape != (end - start,) + array.shape[1:]):
                return False
            if c == 0:  # a one-voxel image carrying chunk 0's geometry, exactly
                geometry = sitk.Image([1, 1, 1], image.GetPixelID())
                geometry.SetOrigin(image.GetOrigin())
                geometry.SetSpacing(image.GetSpacing())
                geometry.SetDirection(image.GetDirection())
                out["geometry"] = geometry
        array[start:end] = view  # numpy copies without the GIL: the threads copy in parallel
        with self.lock:
            self.placed_chunks.append(c)
        return True

    def complete(self) -> bool:
        return sorted(self.placed_chunks) == list(range(len(self.bounds)))


def read_chunked(files: List[str], float_voxels: bool, with_tags: bool) -> Optional[_ChunkedImage]:
    """Read ``files`` (one slice each, in this order) in chunks on several threads; None when not worth it.

    None too when any chunk fails or disagrees with the others (dimension, pixel type, size): the
    caller then reads with one reader as before, so a chunked read never gives a mixed result.
    Each thread copies its chunk into the one preallocated array as soon as it is read, then drops
    it (so the copies, and the first touches of the array's memory, run in parallel too).
    """
    threads = read_threads()
    bounds = chunk_bounds(len(files), threads)
    if len(bounds) < 2:
        return None
    jobs: "queue.Queue[int]" = queue.Queue()
    for c in range(len(bounds)):
        jobs.put(c)
    failed = threading.Event()
    assembly = _ChunkAssembly(len(files), bounds)
    headers: List[List[Dict[str, str]]] = [[] for _ in bounds]

    def work() -> None:
        while not failed.is_set():
            try:
                c = jobs.get_nowait()
            except queue.Empty:
                return
            start, end = bounds[c]
            try:
                image, headers[c] = read_chunk(files[start:end], float_voxels, with_tags)
                placed = assembly.place(c, image)
            except Exception:  # noqa: BLE001 - any failure: the caller reads with one reader instead
                placed = False
            image = None  # the chunk's memory is freed now
            if not placed:
                failed.set()
                return

    workers = [threading.Thread(target=work, name=f"osteoroi-dicom-read-{t}", daemon=True)
               for t in range(min(threads, len(bounds)))]
    with itk_warnings_off():  # a process-wide switch: set once here, not in each thread
        try:
            for worker in workers:
                worker.start()
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.join()
    if failed.is_set() or not assembly.complete():
        return None
    array = assembly.out["array"]
    array.flags.writeable = False
    return _ChunkedImage(array, assembly.out["geometry"], assembly.out["pixel_id"],
                         [h for chunk in headers for h in chunk])


def _fix_slice_geometry(volume: Volume, slices: List[DicomSlice], positions: np.ndarray,
                        normal_lps: np.ndarray, notes: List[str]) -> None:
    """Set the slice axis from the measured slice positions; resample if they are not uniform."""
    n = len(positions)
    steps = np.diff(positions)
    median = float(np.median(steps))
    tolerance = max(POSITION_TOLERANCE_MM, SPACING_RELATIVE_TOLERANCE * median)
    first_ras = LPS_TO_RAS @ slices[0].position
    normal_ras = LPS_TO_RAS @ normal_lps
    if np.all(np.abs(steps - median) <= tolerance):
        step = float((positions[-1] - positions[0]) / (n - 1))
        volume.ijk_to_ras[:3, 2] = normal_ras * step
        volume.ijk_to_ras[:3, 3] = first_ras
        return

    # Non-uniform: resample onto a uniform grid of about the median spacing.
    span = float(positions[-1] - positions[0])
    n_out = round(span / median) + 1
    step = span / (n_out - 1)
    grid = positions[0] + step * np.arange(n_out)
    source = volume.array
    out_dtype = np.result_type(source.dtype, np.float32)
    out = np.empty((n_out,) + source.shape[1:], dtype=out_dtype)
    interpolated: List[int] = []
    for j, t in enumerate(grid):
        k = int(np.clip(np.searchsorted(positions, t, side="right") - 1, 0, n - 2))
        if abs(t - positions[k]) <= tolerance:
            out[j] = source[k]
        elif abs(t - positions[k + 1]) <= tolerance:
            out[j] = source[k + 1]
        else:
            w = (t - positions[k]) / (positions[k + 1] - positions[k])
            out[j] = (1.0 - w) * source[k].astype(out_dtype) + w * source[k + 1].astype(out_dtype)
            interpolated.append(j)
    volume.array = out
    volume.ijk_to_ras[:3, 2] = normal_ras * step
    volume.ijk_to_ras[:3, 3] = first_ras

    ratios = steps / median
    missing = int(sum(round(r) - 1 for r in ratios.tolist() if round(r) >= 2 and abs(r - round(r)) < 0.1))
    irregular = int(np.count_nonzero(np.abs(steps - median) > tolerance))
    what = []
    if missing:
        what.append(f"{missing} slice(s) appear to be missing")
    what.append(f"the slice spacing varies from {steps.min():.3g} to {steps.max():.3g} mm "
                f"(usually {median:.3g} mm; {irregular} irregular gap(s))")
    add_caveat(volume.caveats, Caveat(
        "interpolated_slices", f"DICOM: {' and '.join(what)}; {len(interpolated)} slice(s) were interpolated between "
        f"neighbours ({_index_ranges(interpolated)}).", slices=list(interpolated), excludes=True))
    notes.append(
        f"DICOM: {' and '.join(what)}. The volume was resampled to a uniform {step:.4g} mm grid of {n_out} slices "
        f"so that positions are correct; {len(interpolated)} slice(s) were interpolated between neighbours "
        f"({_index_ranges(interpolated)}), the largest gap being {steps.max():.3g} mm. Do not place ROIs on those "
        "slices; if a vertebra you measure lies there, re-export the complete series from the scanner/PACS."
    )


def _index_ranges(indices: Sequence[int]) -> str:
    if not indices:
        return "none"
    parts = []
    start = prev = indices[0]
    for i in list(indices[1:]) + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"k={start}" if start == prev else f"k={start}–{prev}")
        if i is not None:
            start = prev = i
    return "slice index " + ", ".join(parts)
