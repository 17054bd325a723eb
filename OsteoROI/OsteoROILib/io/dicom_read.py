"""Reading a CT from a DICOM folder.

``read_dicom_directory(path)`` finds the DICOM image series in a folder (or, if the folder itself
holds none, in its subfolders), picks the CT series to measure, reads it with SimpleITK's
``ImageSeriesReader`` (which applies RescaleSlope/RescaleIntercept, so the voxels are in HU) and
returns a :class:`~.volume.Volume` in RAS (QCT_BRIEF §6: DICOM is LPS, RAS = diag(−1, −1, 1)·LPS).

* **Choice of series.** Of several series, the CT series with the most images wins; localizers /
  scouts / topograms and series of fewer than ``MIN_VOLUME_IMAGES`` images are skipped, as are all
  other modalities (MR, PT, SEG, …; objects without pixel data such as SR are not image series at
  all). ``volume.notes`` says which series was read and which were skipped, and how to pick another
  (``series_uid=``).
* **Geometry checks** (from each slice's ImagePositionPatient/ImageOrientationPatient):
  images of another orientation or size inside the series (e.g. a localizer) are left out;
  slices at the same position, or missing positions/orientations, are refused (the geometry would
  be wrong); non-uniform spacing or missing slices are repaired by linear interpolation onto a
  uniform grid, with a note naming the interpolated slices; a gantry tilt is reported.
* **Facts** (QCT_BRIEF §6) go to ``volume.facts`` with the keys of :data:`FACT_TAGS`; a tag that is
  absent or empty is left out (never ``None``/NaN).
* **Threads.** The pixels of a series of many files are read by up to ``MAX_READ_THREADS`` threads,
  each reading a contiguous chunk of the files, and copied into one array: the same Volume as one
  reader gives (any chunk that fails or disagrees -> one reader, as before). ``OSTEOROI_READ_THREADS=1``
  reads with one reader only.

Tags are read from SimpleITK's (GDCM's) metadata, so this works in 3D Slicer and needs neither
pydicom nor anything beyond numpy and SimpleITK; pydicom, when installed, is used only to name
non-image DICOM objects that SimpleITK cannot open.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .volume import LPS_TO_RAS, Volume

#: facts key -> (DICOM tag as "gggg|eeee", value type)
FACT_TAGS: Dict[str, Tuple[str, type]] = {
    "modality": ("0008|0060", str),
    "kvp": ("0018|0060", float),
    "manufacturer": ("0008|0070", str),
    "model": ("0008|1090", str),
    "convolution_kernel": ("0018|1210", str),
    "slice_thickness_mm": ("0018|0050", float),
    "contrast_agent": ("0018|0010", str),
    "patient_age": ("0010|1010", str),
    "patient_sex": ("0010|0040", str),
    "study_date": ("0008|0020", str),
    "series_description": ("0008|103e", str),
    "series_instance_uid": ("0020|000e", str),
    "rescale_slope": ("0028|1053", float),
    "rescale_intercept": ("0028|1052", float),
}

TAG_IMAGE_TYPE = "0008|0008"
TAG_SOP_INSTANCE_UID = "0008|0018"
TAG_SERIES_NUMBER = "0020|0011"
TAG_IPP = "0020|0032"
TAG_IOP = "0020|0037"
TAG_ROWS = "0028|0010"
TAG_COLUMNS = "0028|0011"
TAG_FRAMES = "0028|0008"
TAG_GANTRY_TILT = "0018|1120"
TAG_PIXEL_SPACING = "0028|0030"

_HEADER_TAGS = sorted(
    {t for t, _ in FACT_TAGS.values()}
    | {TAG_IMAGE_TYPE, TAG_SOP_INSTANCE_UID, TAG_SERIES_NUMBER, TAG_IPP, TAG_IOP, TAG_ROWS, TAG_COLUMNS,
       TAG_FRAMES, TAG_GANTRY_TILT, TAG_PIXEL_SPACING}
)
#: The tags the slice checks read from every slice (``_plan_series``); the others of ``_HEADER_TAGS``
#: are read only from the slices whose facts, pixel spacing or tilt are reported.
_SLICE_TAGS = (TAG_SOP_INSTANCE_UID, TAG_IPP, TAG_IOP, TAG_ROWS, TAG_COLUMNS, "0028|1053", "0028|1052")

#: A series with fewer images than this is not a CT volume (localizers have 1–2, dose reports 1).
MIN_VOLUME_IMAGES = 3
#: Words in ImageType or SeriesDescription that mark a localizer / scout image.
LOCALIZER_WORDS = ("LOCALIZER", "LOCALISER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM", "SCOUTVIEW")
#: Tolerances of the slice-geometry checks.
ORIENTATION_TOLERANCE = 1e-3  # direction-cosine difference that still counts as the same orientation
POSITION_TOLERANCE_MM = 0.01  # absolute part of the slice-spacing tolerance
SPACING_RELATIVE_TOLERANCE = 0.02  # relative part of the slice-spacing tolerance
TILT_NOTE_DEGREES = 0.1  # stacking direction this far off the slice normal is reported as a tilt
MAX_DIRECTORIES = 5000  # subfolders searched at most

#: Parallel pixel reading (``_read_chunked``): a series of at least ``2 * MIN_FILES_PER_CHUNK`` files
#: is read as contiguous chunks of files by up to ``MAX_READ_THREADS`` threads (SimpleITK releases the
#: GIL while reading) and assembled into one array; the environment variable ``OSTEOROI_READ_THREADS``
#: sets the number of threads (1: one reader, as before).
READ_THREADS_ENV = "OSTEOROI_READ_THREADS"
MAX_READ_THREADS = 4
MIN_FILES_PER_CHUNK = 16
#: The chunks held at once (one per thread) stay below this part of the volume, so a chunked read
#: needs about 1.2 volumes of memory, not 2.
MAX_CHUNK_MEMORY_FRACTION = 0.2


@dataclass
class DicomSeries:
    """One DICOM image series found in a folder (what ``list_dicom_series`` returns)."""

    uid: str
    files: List[str]
    header: Dict[str, str] = field(default_factory=dict)  # tags of the first file
    directories: List[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return _clean(self.header.get("0008|0060", ""))

    @property
    def description(self) -> str:
        return _clean(self.header.get("0008|103e", ""))

    @property
    def series_number(self) -> Optional[int]:
        try:
            return int(float(self.header.get(TAG_SERIES_NUMBER, "")))
        except ValueError:
            return None

    @property
    def image_count(self) -> int:
        """Number of images: files, or frames of a single multi-frame file."""
        if len(self.files) == 1:
            try:
                return max(1, int(float(self.header.get(TAG_FRAMES, "1"))))
            except ValueError:
                return 1
        return len(self.files)

    @property
    def is_localizer(self) -> bool:
        text = (self.header.get(TAG_IMAGE_TYPE, "") + "\\" + self.description).upper()
        return any(word in text for word in LOCALIZER_WORDS)

    def label(self) -> str:
        """A short human-readable name: description, number, modality, image count and UID."""
        details = []
        if self.series_number is not None:
            details.append(f"#{self.series_number}")
        details.append(self.modality or "modality unknown")
        if self.is_localizer:
            details.append("localizer")
        n = self.image_count
        details.append(f"{n} image{'s' if n != 1 else ''}")
        name = f"series '{self.description}'" if self.description else "series"
        return f"{name} ({', '.join(details)}; UID {self.uid})"


# --- public API -----------------------------------------------------------------------------


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
    series, search_note = _find_series(path)
    if search_note:
        notes.append(search_note)
    if not series:
        raise InputError(
            f"No DICOM series found in {path}{_no_series_hint(path)}.",
            "Give a folder containing a CT series or an image file (NRRD, NIfTI, MHA).",
        )
    chosen = _choose_series(series, series_uid, path, notes)
    return _read_series(chosen, path, notes)


def list_dicom_series(path: str) -> List[DicomSeries]:
    """The DICOM image series in a folder (or its subfolders if it holds none), largest first."""
    series, _ = _find_series(os.path.abspath(path))
    return sorted(series, key=_rank_key)


def dicom_facts_from_file(path: str) -> Dict[str, object]:
    """The QCT_BRIEF §6 facts of one DICOM file (keys of :data:`FACT_TAGS`; absent tags left out).

    Uses SimpleITK; falls back to pydicom (if installed) for non-image objects SimpleITK cannot open.
    """
    header = _read_header(path)
    if header is None:
        header = _read_header_pydicom(path)
    if header is None:
        raise InputError(f"Cannot read {path} as a DICOM file.", "Give a DICOM file of the CT series.")
    return facts_from_header(header)


def facts_from_header(header: Dict[str, str]) -> Dict[str, object]:
    """Convert raw tag strings ({"0018|0060": "120 ", …}) to the facts dictionary."""
    facts: Dict[str, object] = {}
    for key, (tag, kind) in FACT_TAGS.items():
        text = _clean(header.get(tag, ""))
        if not text:
            continue
        if kind is float:
            value = _to_float(text)
            if value is not None:
                facts[key] = value
        else:
            facts[key] = text
    return facts


def patient_age_years(age) -> Optional[float]:
    """DICOM Age String ("065Y", "018M", "010W", "003D") or a number -> age in years, else None."""
    if age is None:
        return None
    if isinstance(age, (int, float)):
        return float(age) if np.isfinite(age) else None
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(age).upper())
    if not m:
        return None
    value = float(m.group(1))
    return value / {"D": 365.25, "W": 365.25 / 7.0, "M": 12.0, "Y": 1.0, "": 1.0}[m.group(2)]


# --- finding series -------------------------------------------------------------------------


@contextlib.contextmanager
def _itk_warnings_off() -> Iterator[None]:
    """Silence ITK's console warnings (e.g. "No Series were found") while scanning folders."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _series_in_directory(directory: str) -> Dict[str, List[str]]:
    import SimpleITK as sitk

    found: Dict[str, List[str]] = {}
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(directory)
    except RuntimeError:
        return found
    for uid in uids:
        try:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory, uid))
        except RuntimeError:
            continue
        if files:
            found[uid] = files
    return found


#: A folder whose one GDCM scan lists a single series, beside at most this many other files that
#: are not DICOM images (checked one by one), holds just that series (see ``_only_series_in_directory``).
MAX_UNLISTED_FILES = 16


def _only_series_in_directory(directory: str) -> Optional[DicomSeries]:
    """The folder's image series if it holds exactly one, found with one GDCM scan; else None.

    ``GetGDCMSeriesFileNames(directory)`` lists one series' files in a single scan. When every
    other file of the folder (at most ``MAX_UNLISTED_FILES``) is not a DICOM image, that series
    is the folder's only one, and the second scan that listing all series costs
    (``GetGDCMSeriesIDs``, then the files of each) is skipped. Otherwise None: use
    :func:`_series_in_directory`.
    """
    import SimpleITK as sitk

    try:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(directory))
        names = [e.name for e in os.scandir(directory) if e.is_file()]
    except (RuntimeError, OSError):
        return None
    if not files:
        return None
    listed = {os.path.basename(f) for f in files}
    unlisted = [os.path.join(directory, n) for n in names if n not in listed]
    if len(unlisted) > MAX_UNLISTED_FILES or any(_read_header(f) is not None for f in unlisted):
        return None
    header = _read_header(files[0])
    uid = _clean(header.get("0020|000e", "")) if header is not None else ""
    if not uid:
        return None
    return DicomSeries(uid=uid, files=files, header=header, directories=[directory])


def _find_series(path: str) -> Tuple[List[DicomSeries], str]:
    """Series in ``path``; if none, in its subfolders (same UID in several folders is merged)."""
    by_uid: Dict[str, DicomSeries] = {}
    note = ""
    with _itk_warnings_off():
        only = _only_series_in_directory(path)
        top = {} if only is not None else _series_in_directory(path)
        if only is not None:
            by_uid[only.uid] = only
        elif top:
            for uid, files in top.items():
                by_uid[uid] = DicomSeries(uid=uid, files=files, directories=[path])
        else:
            visited = 0
            for root, dirs, _files in os.walk(path):
                dirs.sort()
                if root == path:
                    continue
                visited += 1
                if visited > MAX_DIRECTORIES:
                    note = (f"DICOM search stopped after {MAX_DIRECTORIES} subfolders of {path}; "
                            "give the folder of the CT series itself to search less.")
                    break
                for uid, files in _series_in_directory(root).items():
                    s = by_uid.setdefault(uid, DicomSeries(uid=uid, files=[], directories=[]))
                    s.files.extend(files)
                    s.directories.append(root)
            if by_uid:
                dirs_found = sorted({d for s in by_uid.values() for d in s.directories})
                shown = ", ".join(os.path.relpath(d, path) for d in dirs_found[:5])
                more = f" and {len(dirs_found) - 5} more" if len(dirs_found) > 5 else ""
                note = (f"{path} holds no DICOM images itself; searched its subfolders and found "
                        f"{len(by_uid)} series in {shown}{more}." + (" " + note if note else ""))
    series = []
    for s in by_uid.values():
        for f in s.files if not s.header else ():
            header = _read_header(f)
            if header is not None:
                s.header = header
                break
        series.append(s)
    return series, note


def _no_series_hint(path: str) -> str:
    """Explain an empty search: count files that are DICOM but not images (SR, reports, …)."""
    non_image = 0
    modalities = set()
    checked = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            checked += 1
            if checked > 2000:
                break
            f = os.path.join(root, name)
            try:
                with open(f, "rb") as fh:
                    head = fh.read(132)
            except OSError:
                continue
            if len(head) == 132 and head[128:132] == b"DICM":
                non_image += 1
                header = _read_header_pydicom(f)
                if header and header.get("0008|0060"):
                    modalities.add(_clean(header["0008|0060"]))
        if checked > 2000:
            break
    if not non_image:
        return ""
    kinds = f" (modality {', '.join(sorted(modalities))})" if modalities else ""
    files = "is 1 DICOM file" if non_image == 1 else f"are {non_image} DICOM files"
    return f" (there {files} without image data{kinds}, e.g. structured reports)"


def _rank_key(s: DicomSeries):
    number = s.series_number
    return (-s.image_count, number if number is not None else 1 << 30, s.uid)


def _choose_series(series: List[DicomSeries], series_uid: Optional[str], path: str, notes: List[str]) -> DicomSeries:
    ranked = sorted(series, key=_rank_key)
    if series_uid:
        for s in ranked:
            if s.uid == series_uid.strip():
                notes.append(f"DICOM: read {s.label()} as requested.")
                return s
        raise InputError(
            f"Series {series_uid} is not in {path}; it holds: " + "; ".join(s.label() for s in ranked) + ".",
            "Give one of these SeriesInstanceUIDs, or none to read the largest CT series.",
        )
    ct = [s for s in ranked if s.modality.upper() == "CT"]
    unknown = [s for s in ranked if not s.modality]
    usable = [s for s in ct if not s.is_localizer and s.image_count >= MIN_VOLUME_IMAGES]
    if not usable:
        usable = [s for s in unknown if not s.is_localizer and s.image_count >= MIN_VOLUME_IMAGES]
        if usable:
            notes.append("DICOM: no series is marked as CT; reading one whose Modality tag is missing.")
    if not usable:
        listing = "; ".join(s.label() for s in ranked)
        if ct:
            raise InputError(
                f"The DICOM folder {path} holds no CT volume, only CT localizer/scout or too-small series "
                f"(fewer than {MIN_VOLUME_IMAGES} images): {listing}.",
                "Give the folder of the axial CT series (usually dozens to hundreds of images).",
            )
        modalities = ", ".join(sorted({s.modality or "unknown" for s in ranked}))
        raise InputError(
            f"The DICOM folder {path} holds no CT series: found modality {modalities} ({listing}).",
            "OsteoROI measures Hounsfield units on CT; give a folder containing a CT series, "
            "or an image file (NRRD, NIfTI) of the CT.",
        )
    chosen = usable[0]
    skipped = [s for s in ranked if s is not chosen]
    if skipped:
        reasons = []
        for s in skipped:
            if s.modality and s.modality.upper() != "CT":
                why = "not CT"
            elif s.is_localizer:
                why = "localizer"
            elif s.image_count < MIN_VOLUME_IMAGES:
                why = "too few images"
            else:
                why = "fewer images" if s.image_count < chosen.image_count else "same size, listed later"
            reasons.append(f"{s.label()} [{why}]")
        notes.append(
            f"DICOM: the folder holds {len(series)} series; read the largest CT series, {chosen.label()}. "
            f"Skipped: {'; '.join(reasons)}. To measure another series, pass its SeriesInstanceUID "
            "(series_uid=...) or give a folder holding only that series."
        )
        ties = [s for s in usable[1:] if s.image_count == chosen.image_count]
        if ties:
            notes.append(
                f"DICOM: {len(ties) + 1} CT series have {chosen.image_count} images (e.g. soft-tissue and bone "
                "kernel reconstructions); the one with the lowest series number was read. Check that its kernel "
                f"({_clean(chosen.header.get('0018|1210', '')) or 'not recorded'}) is the one you want to measure."
            )
    else:
        notes.append(f"DICOM: read {chosen.label()}.")
    return chosen


# --- headers --------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return str(text).replace("\x00", " ").strip()


def _to_float(text: str) -> Optional[float]:
    try:
        value = float(_clean(text).split("\\")[0])
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _floats(text: Optional[str]) -> Optional[np.ndarray]:
    values = _float_list(text)
    return None if values is None else np.array(values, dtype=float)


def _float_list(text: Optional[str]) -> Optional[List[float]]:
    """The backslash-separated numbers of a DICOM multi-value string; None if absent, unparsable or not finite."""
    if not text:
        return None
    try:
        values = [float(v) for v in _clean(text).split("\\") if v.strip()]
    except ValueError:
        return None
    return values if all(map(math.isfinite, values)) else None


def _read_header(path: str) -> Optional[Dict[str, str]]:
    """The tags OsteoROI uses, read with SimpleITK/GDCM (no pixel decoding); None if unreadable."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    try:
        with _itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    header: Dict[str, str] = {}
    for tag in _HEADER_TAGS:
        try:
            if reader.HasMetaDataKey(tag):
                header[tag] = reader.GetMetaData(tag)
        except (RuntimeError, UnicodeDecodeError):
            continue
    return header


def _read_header_pydicom(path: str) -> Optional[Dict[str, str]]:
    """Same tags via pydicom, if it is installed (used only for objects SimpleITK cannot open)."""
    try:
        import pydicom
    except ImportError:
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not DICOM" here
        return None
    header: Dict[str, str] = {}
    for tag in _HEADER_TAGS:
        group, element = (int(x, 16) for x in tag.split("|"))
        elem = ds.get((group, element))
        if elem is None or elem.value is None:
            continue
        value = elem.value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        header[tag] = str(value)
    return header


# --- reading one series ---------------------------------------------------------------------


@dataclass
class _Slice:
    path: str
    header: Dict[str, str]
    position: Optional[np.ndarray]  # IPP, LPS mm
    orientation: Optional[np.ndarray]  # IOP, 6 direction cosines (LPS)
    index: int = -1  # place in the header list given to _plan_series


def _orientation_groups(slices: List[_Slice]) -> List[List[_Slice]]:
    """Slices grouped by matrix size and orientation (within ``ORIENTATION_TOLERANCE`` of each
    group's first slice), largest group first."""
    if _all_like_first(slices):
        return [list(slices)]  # the loop below would put every slice into the first slice's group
    groups: List[List[_Slice]] = []
    for s in slices:
        for g in groups:
            ref = g[0]
            same_size = (ref.header.get(TAG_ROWS), ref.header.get(TAG_COLUMNS)) == (
                s.header.get(TAG_ROWS), s.header.get(TAG_COLUMNS))
            if ref.orientation is None or s.orientation is None:
                same_orientation = ref.orientation is None and s.orientation is None
            else:
                same_orientation = bool(np.max(np.abs(ref.orientation - s.orientation)) <= ORIENTATION_TOLERANCE)
            if same_size and same_orientation:
                g.append(s)
                break
        else:
            groups.append([s])
    groups.sort(key=len, reverse=True)
    return groups


def _all_like_first(slices: List[_Slice]) -> bool:
    """True when every slice has the first slice's matrix size and orientation (the usual series)."""
    if not slices:
        return False
    ref = slices[0]
    size = (ref.header.get(TAG_ROWS), ref.header.get(TAG_COLUMNS))
    if any((s.header.get(TAG_ROWS), s.header.get(TAG_COLUMNS)) != size for s in slices):
        return False
    if any(s.orientation is None for s in slices):
        return all(s.orientation is None for s in slices)
    cosines = np.array([s.orientation for s in slices])
    return bool(np.max(np.abs(cosines - ref.orientation)) <= ORIENTATION_TOLERANCE)


def _read_series(series: DicomSeries, path: str, notes: List[str]) -> Volume:
    """Read one series, checking its slices' geometry (see the module docstring).

    A series of several files in one folder is read in one pass: the pixels and every slice's
    tags come from the same ``ImageSeriesReader`` run (``MetaDataDictionaryArrayUpdateOn``), and
    the checks run on those tags afterwards. Only when the checks change what has to be read
    (duplicates or images of another orientation left out, another slice order, per-slice
    rescale needing float voxels) are the pixels read again, from the chosen files. A series
    that cannot be read in one pass, a multi-frame file and a series spread over several
    folders go the careful way: each file's header first, then the pixels. Either way, a series of
    many files is read in chunks by several threads (``_read_chunked``).
    """
    if len(series.files) > 1 and len(series.directories) <= 1:
        volume = _read_series_in_one_pass(series, path, notes)
        if volume is not None:
            return volume
    headers = [(f, _read_header(f)) for f in series.files]
    plan = _plan_series(series, headers, notes)
    return _finish_series(series, path, plan, _execute_series(plan), notes)


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
    # (``complete``): the same header a slice would have with all of _HEADER_TAGS read.
    headers: List[Tuple[str, Optional[Dict[str, str]]]] = []
    chunked = _read_chunked(files, float_voxels=False, with_tags=True)
    if chunked is not None:
        # The chunks' readers gave all of _HEADER_TAGS of each slice (a reader holding tags also holds
        # its pixels, so none is kept): the checked tags are picked from those, in _tags_of_slice's order.
        image = chunked
        full_headers = chunked.headers
        for f, full in zip(files, full_headers):
            headers.append((f, {tag: full[tag] for tag in _SLICE_TAGS if tag in full}))

        def complete(index: int) -> Dict[str, str]:
            return dict(full_headers[index])
    else:
        reader = _reader_for(files, float_voxels=False, with_tags=True)
        try:
            with _itk_warnings_off():
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
            headers.append((f, _tags_of_slice(reader, index, keys, _SLICE_TAGS)))

        def complete(index: int) -> Dict[str, str]:
            return _tags_of_slice(reader, index, all_keys[index], _HEADER_TAGS)

    mark = len(notes)
    try:
        plan = _plan_series(series, headers, notes, complete)
    except InputError:
        del notes[mark:]
        raise
    # The slices' tags are no longer needed (while the reader lives, a numpy view of its image is a copy).
    reader = full_headers = chunked = None
    if plan.files != files or (plan.float_voxels and _pixel_id(image) != sitk.sitkFloat32) or (
            isinstance(image, _ChunkedImage) and plan.positions is None):
        del image  # read again from the chosen files, in slice order (never two volumes at once)
        image = _execute_series(plan)
    return _finish_series(series, path, plan, image, notes)


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


@dataclass
class _SeriesPlan:
    """What to read of a series and how (the outcome of the header checks)."""

    label: str
    slices: List[_Slice]
    files: List[str]
    facts: Dict[str, object]
    positions: Optional[np.ndarray]
    normal_lps: Optional[np.ndarray]
    float_voxels: bool


def _plan_series(series: DicomSeries, headers: Sequence[Tuple[str, Optional[Dict[str, str]]]],
                 notes: List[str], complete: Optional[Callable[[int], Dict[str, str]]] = None) -> _SeriesPlan:
    """Check the slices' headers (duplicates, orientation, positions, spacing, tilt, rescale).

    ``headers`` hold at least ``_SLICE_TAGS``; when they hold only those, ``complete(index)`` gives
    header ``index`` with all of ``_HEADER_TAGS`` (read for the slices whose other tags are reported).
    """
    slices: List[_Slice] = []
    unreadable = 0
    seen_sop = set()
    duplicates = 0
    for index, (f, header) in enumerate(headers):
        if header is None:
            unreadable += 1
            continue
        sop = _clean(header.get(TAG_SOP_INSTANCE_UID, ""))
        if sop and sop in seen_sop:
            duplicates += 1
            continue
        seen_sop.add(sop)
        iop = _float_list(header.get(TAG_IOP))
        ipp = _float_list(header.get(TAG_IPP))
        slices.append(_Slice(f, header, np.array(ipp, dtype=float) if ipp is not None and len(ipp) == 3 else None,
                             np.array(iop, dtype=float) if iop is not None and len(iop) == 6 else None, index))
    if unreadable:
        notes.append(f"DICOM: {unreadable} file(s) of the series could not be read and were left out.")
    if duplicates:
        notes.append(f"DICOM: {duplicates} duplicate file(s) (same SOPInstanceUID) were left out.")
    if not slices:
        raise InputError(f"None of the files of {series.label()} could be read.",
                         "Check that the files are complete DICOM images (not truncated or compressed "
                         "with an unsupported transfer syntax).")

    groups = _orientation_groups(slices)
    slices = groups[0]
    if len(groups) > 1:
        left_out = sum(len(g) for g in groups[1:])
        notes.append(
            f"DICOM: {left_out} image(s) of the series have another orientation or matrix size than the "
            f"{len(slices)} main images (e.g. a localizer stored in the same series) and were left out."
        )

    def completed(s: _Slice) -> _Slice:
        if complete is not None and s.index >= 0:
            s.header = complete(s.index)
            s.index = -1  # complete now
        return s

    label = series.label()
    facts = facts_from_header(completed(slices[0]).header)
    # GDCM reads a zero PixelSpacing as 1 mm and a negative one as its absolute value: areas
    # and volumes would be silently wrong, so refuse the series.
    pixel_spacing = _floats(slices[0].header.get(TAG_PIXEL_SPACING))
    if pixel_spacing is not None and pixel_spacing.size == 2 and not np.all(pixel_spacing > 0):
        raise InputError(
            f"The images of {label} have a PixelSpacing (0028,0030) of {tuple(float(x) for x in pixel_spacing)} mm; "
            "spacing must be positive.",
            "Export the original CT series from the scanner/PACS; a series with invalid geometry cannot be measured.",
        )
    positions: Optional[np.ndarray] = None
    normal_lps: Optional[np.ndarray] = None
    if len(slices) > 1:
        if any(s.position is None for s in slices) or slices[0].orientation is None:
            raise InputError(
                f"The images of {label} lack ImagePositionPatient/ImageOrientationPatient (0020,0032/0037), "
                "so the slice geometry is unknown.",
                "Export the original CT series from the scanner/PACS (not secondary captures), or convert it "
                "to NRRD/NIfTI with the correct spacing and give that file.",
            )
        row = slices[0].orientation[:3]
        col = slices[0].orientation[3:]
        normal_lps = np.cross(row, col)
        if np.linalg.norm(normal_lps) < 0.5:
            raise InputError(
                f"The ImageOrientationPatient of {label} is degenerate (row and column directions are parallel).",
                "Fix or re-export the series; its orientation header is corrupt.",
            )
        normal_lps = normal_lps / np.linalg.norm(normal_lps)
        along = [float(s.position @ normal_lps) for s in slices]
        order = sorted(range(len(slices)), key=along.__getitem__)  # stable, as slices.sort(key=...)
        slices = [slices[i] for i in order]
        positions = np.array([along[i] for i in order])
        steps = np.diff(positions)
        if np.any(steps <= POSITION_TOLERANCE_MM):
            same = int(np.count_nonzero(steps <= POSITION_TOLERANCE_MM))
            raise InputError(
                f"{same} image(s) of {label} lie at the same slice position as another "
                "image (several acquisitions, phases or echoes mixed in one series), so they do not form one volume.",
                "Export each acquisition/phase into its own folder (or split the series in 3D Slicer's DICOM "
                "browser) and give the folder of one of them.",
            )
        completed(slices[0])  # its GantryDetectorTilt is reported
        _check_tilt(slices, normal_lps, label, notes)

    files = [s.path for s in slices]
    if len(files) == 1:
        notes.append("DICOM: the series is a single (multi-frame) file; its slice geometry is taken from the "
                     "file's header as interpreted by GDCM. Check the slice spacing before measuring.")
    slopes = {_to_float(t) for t in {s.header.get("0028|1053", "1") for s in slices}}
    intercepts = {_to_float(t) for t in {s.header.get("0028|1052", "0") for s in slices}}
    float_voxels = len(slopes) > 1 or len(intercepts) > 1
    if float_voxels:
        notes.append("DICOM: RescaleSlope/RescaleIntercept differ between slices; each slice was converted to "
                     "HU with its own values.")
        facts.pop("rescale_slope", None)
        facts.pop("rescale_intercept", None)
    elif "rescale_slope" not in facts and "rescale_intercept" not in facts:
        notes.append("DICOM: the series has no RescaleSlope/RescaleIntercept; stored values are taken as HU.")
    return _SeriesPlan(label, slices, files, facts, positions, normal_lps, float_voxels)


def _execute_series(plan: _SeriesPlan):
    """The pixels of the plan's files, in its order: a SimpleITK image, or a :class:`_ChunkedImage`."""
    chunked = _read_chunked(plan.files, plan.float_voxels, with_tags=False) if plan.positions is not None else None
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


def _finish_series(series: DicomSeries, path: str, plan: _SeriesPlan, image, notes: List[str]) -> Volume:
    source = series.directories[0] if len(series.directories) == 1 else path
    if isinstance(image, _ChunkedImage):
        volume = image.to_volume(source=source, facts=plan.facts, notes=notes)
    else:
        volume = Volume.from_sitk(image, source=source, facts=plan.facts, notes=notes)
    if plan.positions is not None:
        _fix_slice_geometry(volume, plan.slices, plan.positions, plan.normal_lps, volume.notes)
    return volume


# --- reading a series' pixels with several threads ----------------------------------------


def _read_threads() -> int:
    """Number of reader threads: ``OSTEOROI_READ_THREADS`` if set to a whole number, else min(CPUs, 4)."""
    text = os.environ.get(READ_THREADS_ENV, "").strip()
    if text:
        try:
            return max(1, min(int(text), 64))
        except ValueError:
            pass
    return max(1, min(os.cpu_count() or 1, MAX_READ_THREADS))


def _chunk_bounds(n_files: int, threads: int) -> List[Tuple[int, int]]:
    """Contiguous [start, stop) file ranges, one per chunk; a single range when not worth splitting.

    Enough chunks that one more than the ``threads`` held at once stay below ``MAX_CHUNK_MEMORY_FRACTION``
    of the volume, but none smaller than ``MIN_FILES_PER_CHUNK`` files.
    """
    if threads < 2 or n_files < 2 * MIN_FILES_PER_CHUNK:
        return [(0, n_files)]
    wanted = max(2 * threads, math.ceil((threads + 1) / MAX_CHUNK_MEMORY_FRACTION))
    count = max(2, min(wanted, n_files // MIN_FILES_PER_CHUNK))
    return [(n_files * c // count, n_files * (c + 1) // count) for c in range(count)]


def _read_chunk(files: List[str], float_voxels: bool, with_tags: bool):
    """(image, headers) of one chunk of files; ``headers`` (``with_tags``): each slice's _HEADER_TAGS.

    Raises RuntimeError as ``Execute`` or ``GetMetaDataKeys`` do. The reader is dropped before the
    image is returned: while it lives, the image shares its buffer and a numpy view would be a copy.
    """
    reader = _reader_for(files, float_voxels, with_tags)
    image = reader.Execute()
    headers: List[Dict[str, str]] = []
    if with_tags:
        for index in range(len(files)):
            keys = tuple(reader.GetMetaDataKeys(index))
            headers.append(_tags_of_slice(reader, index, keys, _HEADER_TAGS))
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
        self.headers = headers  # each file's _HEADER_TAGS (with_tags), in the order of the files

    def to_volume(self, source: str, facts, notes) -> Volume:
        volume = Volume.from_sitk(self.geometry, source=source, facts=facts, notes=notes)
        volume.array = self.array  # read-only, as from_sitk's view of an image buffer; it owns its memory
        volume.owner = None
        return volume


def _read_chunked(files: List[str], float_voxels: bool, with_tags: bool) -> Optional[_ChunkedImage]:
    """Read ``files`` (one slice each, in this order) in chunks on several threads; None when not worth it.

    None too when any chunk fails or disagrees with the others (dimension, pixel type, size): the
    caller then reads with one reader as before, so a chunked read never gives a mixed result.
    Each thread copies its chunk into the one preallocated array as soon as it is read, then drops
    it (so the copies, and the first touches of the array's memory, run in parallel too).
    """
    import SimpleITK as sitk

    threads = _read_threads()
    bounds = _chunk_bounds(len(files), threads)
    if len(bounds) < 2:
        return None
    jobs: "queue.Queue[int]" = queue.Queue()
    for c in range(len(bounds)):
        jobs.put(c)
    failed = threading.Event()
    lock = threading.Lock()
    out: Dict[str, object] = {}  # "array", "pixel_id", "geometry", set under the lock
    headers: List[List[Dict[str, str]]] = [[] for _ in bounds]
    placed_chunks: List[int] = []

    def place(c: int, image) -> bool:
        """Copy chunk ``c`` into the array (made by the first chunk read); False if it disagrees."""
        start, end = bounds[c]
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            return False
        view = sitk.GetArrayViewFromImage(image)
        with lock:
            if "array" not in out:
                out["pixel_id"] = image.GetPixelID()
                out["array"] = np.empty((len(files),) + view.shape[1:], dtype=view.dtype)
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
        with lock:
            placed_chunks.append(c)
        return True

    def work() -> None:
        while not failed.is_set():
            try:
                c = jobs.get_nowait()
            except queue.Empty:
                return
            start, end = bounds[c]
            try:
                image, headers[c] = _read_chunk(files[start:end], float_voxels, with_tags)
                placed = place(c, image)
            except Exception:  # noqa: BLE001 - any failure: the caller reads with one reader instead
                placed = False
            image = None  # the chunk's memory is freed now
            if not placed:
                failed.set()
                return

    workers = [threading.Thread(target=work, name=f"osteoroi-dicom-read-{t}", daemon=True)
               for t in range(min(threads, len(bounds)))]
    with _itk_warnings_off():  # a process-wide switch: set once here, not in each thread
        try:
            for worker in workers:
                worker.start()
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.join()
    if failed.is_set() or sorted(placed_chunks) != list(range(len(bounds))):
        return None
    array = out["array"]
    array.flags.writeable = False
    return _ChunkedImage(array, out["geometry"], out["pixel_id"], [h for chunk in headers for h in chunk])


def _check_tilt(slices: List[_Slice], normal_lps: np.ndarray, label: str, notes: List[str]) -> None:
    stack = slices[-1].position - slices[0].position
    length = float(np.linalg.norm(stack))
    if length <= 0:
        return
    along = float(stack @ normal_lps)
    angle = float(np.degrees(np.arccos(min(1.0, abs(along) / length))))
    if angle <= TILT_NOTE_DEGREES:
        return
    shift = float(np.linalg.norm(stack - along * normal_lps))
    header_tilt = _to_float(slices[0].header.get(TAG_GANTRY_TILT, ""))
    tag = f" (GantryDetectorTilt {header_tilt:g}°)" if header_tilt is not None else ""
    notes.append(
        f"DICOM: gantry tilt — the slices of {label} are stacked at {angle:.2f}° to their normal{tag}. "
        f"Each slice keeps its pixels and its position along the normal, but the in-plane shift between slices "
        f"({shift:.1f} mm from first to last slice) is not represented, so the 3-D volume is sheared. "
        "Measurements within an axial slice are unaffected; for 3-D distances or reformats, load the series in "
        "3D Slicer with 'Acquisition geometry regularization' enabled (Settings > DICOM) or resample it first."
    )


def _fix_slice_geometry(volume: Volume, slices: List[_Slice], positions: np.ndarray,
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
