"""DICOM series: which image series a folder holds, which one to read, and which of its slices.

``list_dicom_series`` / ``find_series`` find the series in a folder (or, if the folder itself holds
none, in its subfolders); ``choose_series`` picks the CT series to measure: of several, the CT
series with the most images wins, and localizers / scouts / topograms and series of fewer than
``MIN_VOLUME_IMAGES`` images are skipped, as are all other modalities. ``plan_series`` checks the
chosen series' slice headers (duplicates, orientation, positions, spacing, gantry tilt, rescale)
and says which files to read, in which order, and how (QCT_BRIEF §6).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .dicom_facts import (
    TAG_COLUMNS,
    TAG_FRAMES,
    TAG_GANTRY_TILT,
    TAG_IMAGE_TYPE,
    TAG_IOP,
    TAG_IPP,
    TAG_PIXEL_SPACING,
    TAG_ROWS,
    TAG_SERIES_NUMBER,
    TAG_SOP_INSTANCE_UID,
    clean_text,
    facts_from_header,
    itk_warnings_off,
    read_header,
    read_header_pydicom,
    tag_float,
    tag_float_list,
    tag_floats,
)

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
#: A folder whose one GDCM scan lists a single series, beside at most this many other files that
#: are not DICOM images (checked one by one), holds just that series (see ``_only_series_in_directory``).
MAX_UNLISTED_FILES = 16


@dataclass
class DicomSeries:
    """One DICOM image series found in a folder (what ``list_dicom_series`` returns)."""

    uid: str
    files: List[str]
    header: Dict[str, str] = field(default_factory=dict)  # tags of the first file
    directories: List[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return clean_text(self.header.get("0008|0060", ""))

    @property
    def description(self) -> str:
        return clean_text(self.header.get("0008|103e", ""))

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


def list_dicom_series(path: str) -> List[DicomSeries]:
    """The DICOM image series in a folder (or its subfolders if it holds none), largest first."""
    series, _ = find_series(os.path.abspath(path))
    return sorted(series, key=_rank_key)


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
    if len(unlisted) > MAX_UNLISTED_FILES or any(read_header(f) is not None for f in unlisted):
        return None
    header = read_header(files[0])
    uid = clean_text(header.get("0020|000e", "")) if header is not None else ""
    if not uid:
        return None
    return DicomSeries(uid=uid, files=files, header=header, directories=[directory])


def find_series(path: str) -> Tuple[List[DicomSeries], str]:
    """Series in ``path``; if none, in its subfolders (same UID in several folders is merged)."""
    by_uid: Dict[str, DicomSeries] = {}
    note = ""
    with itk_warnings_off():
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
            header = read_header(f)
            if header is not None:
                s.header = header
                break
        series.append(s)
    return series, note


def no_series_hint(path: str) -> str:
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
                header = read_header_pydicom(f)
                if header and header.get("0008|0060"):
                    modalities.add(clean_text(header["0008|0060"]))
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


def choose_series(series: List[DicomSeries], series_uid: Optional[str], path: str, notes: List[str]) -> DicomSeries:
    """The series to read: ``series_uid`` if given, else the largest CT series that is not a localizer
    (ties: the lowest series number); refuses a folder without one. Notes say what was skipped."""
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
        _note_skipped(len(series), chosen, skipped, usable, notes)
    else:
        notes.append(f"DICOM: read {chosen.label()}.")
    return chosen


def rival_series(series: List[DicomSeries], chosen: DicomSeries) -> List[DicomSeries]:
    """The other CT volumes of a folder that could have been read instead of ``chosen``."""
    return [s for s in series if s is not chosen and s.modality.upper() == "CT" and not s.is_localizer
            and s.image_count >= MIN_VOLUME_IMAGES]


def _note_skipped(n_series: int, chosen: DicomSeries, skipped: List[DicomSeries], usable: List[DicomSeries],
                  notes: List[str]) -> None:
    """Note which series were skipped and why; warn when CT series of the same size tie (e.g. two
    kernels), as the one read may not be the reconstruction the user wants to measure."""
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
        f"DICOM: the folder holds {n_series} series; read the largest CT series, {chosen.label()}. "
        f"Skipped: {'; '.join(reasons)}. To measure another series, pass its SeriesInstanceUID "
        "(series_uid=...) or give a folder holding only that series."
    )
    ties = [s for s in usable[1:] if s.image_count == chosen.image_count]
    if ties:
        notes.append(
            f"DICOM: {len(ties) + 1} CT series have {chosen.image_count} images (e.g. soft-tissue and bone "
            "kernel reconstructions); the one with the lowest series number was read. Check that its kernel "
            f"({clean_text(chosen.header.get('0018|1210', '')) or 'not recorded'}) is the one you want to measure."
        )


@dataclass
class DicomSlice:
    path: str
    header: Dict[str, str]
    position: Optional[np.ndarray]  # IPP, LPS mm
    orientation: Optional[np.ndarray]  # IOP, 6 direction cosines (LPS)
    index: int = -1  # place in the header list given to plan_series


def _orientation_groups(slices: List[DicomSlice]) -> List[List[DicomSlice]]:
    """Slices grouped by matrix size and orientation (within ``ORIENTATION_TOLERANCE`` of each
    group's first slice), largest group first."""
    if _all_like_first(slices):
        return [list(slices)]  # the loop below would put every slice into the first slice's group
    groups: List[List[DicomSlice]] = []
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


def _all_like_first(slices: List[DicomSlice]) -> bool:
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


@dataclass
class SeriesPlan:
    """What to read of a series and how (the outcome of the header checks)."""

    label: str
    slices: List[DicomSlice]
    files: List[str]
    facts: Dict[str, object]
    positions: Optional[np.ndarray]
    normal_lps: Optional[np.ndarray]
    float_voxels: bool


def plan_series(series: DicomSeries, headers: Sequence[Tuple[str, Optional[Dict[str, str]]]],
                notes: List[str], complete: Optional[Callable[[int], Dict[str, str]]] = None) -> SeriesPlan:
    """Check the slices' headers (duplicates, orientation, positions, spacing, tilt, rescale).

    ``headers`` hold at least ``SLICE_TAGS``; when they hold only those, ``complete(index)`` gives
    header ``index`` with all of ``HEADER_TAGS`` (read for the slices whose other tags are reported).
    The steps, in order: the readable, distinct slices; those of the main orientation and matrix
    size; the facts and pixel spacing of the first slice; the slices stacked along their normal
    (with the gantry tilt reported); one rescale for all slices, or float voxels.
    """
    slices = _main_orientation(_distinct_slices(series, headers, notes), notes)
    label = series.label()
    facts = facts_from_header(_completed(slices[0], complete).header)
    _check_pixel_spacing(slices[0], label)
    positions: Optional[np.ndarray] = None
    normal_lps: Optional[np.ndarray] = None
    if len(slices) > 1:
        slices, positions, normal_lps = _stack_along_normal(slices, label)
        _completed(slices[0], complete)  # its GantryDetectorTilt is reported
        check_tilt(slices, normal_lps, label, notes)
    files = [s.path for s in slices]
    if len(files) == 1:
        notes.append("DICOM: the series is a single (multi-frame) file; its slice geometry is taken from the "
                     "file's header as interpreted by GDCM. Check the slice spacing before measuring.")
    float_voxels = _rescale_differs(slices, facts, notes)
    return SeriesPlan(label, slices, files, facts, positions, normal_lps, float_voxels)


def _distinct_slices(series: DicomSeries, headers: Sequence[Tuple[str, Optional[Dict[str, str]]]],
                     notes: List[str]) -> List[DicomSlice]:
    """The slices with a readable header, each SOPInstanceUID once (the others noted as left out)."""
    slices: List[DicomSlice] = []
    unreadable = 0
    seen_sop = set()
    duplicates = 0
    for index, (f, header) in enumerate(headers):
        if header is None:
            unreadable += 1
            continue
        sop = clean_text(header.get(TAG_SOP_INSTANCE_UID, ""))
        if sop and sop in seen_sop:
            duplicates += 1
            continue
        seen_sop.add(sop)
        iop = tag_float_list(header.get(TAG_IOP))
        ipp = tag_float_list(header.get(TAG_IPP))
        slices.append(DicomSlice(f, header, np.array(ipp, dtype=float) if ipp is not None and len(ipp) == 3 else None,
                                 np.array(iop, dtype=float) if iop is not None and len(iop) == 6 else None, index))
    if unreadable:
        notes.append(f"DICOM: {unreadable} file(s) of the series could not be read and were left out.")
    if duplicates:
        notes.append(f"DICOM: {duplicates} duplicate file(s) (same SOPInstanceUID) were left out.")
    if not slices:
        raise InputError(f"None of the files of {series.label()} could be read.",
                         "Check that the files are complete DICOM images (not truncated or compressed "
                         "with an unsupported transfer syntax).")
    return slices


def _main_orientation(slices: List[DicomSlice], notes: List[str]) -> List[DicomSlice]:
    """The largest group of slices of one orientation and matrix size (the others noted as left out)."""
    groups = _orientation_groups(slices)
    if len(groups) > 1:
        left_out = sum(len(g) for g in groups[1:])
        notes.append(
            f"DICOM: {left_out} image(s) of the series have another orientation or matrix size than the "
            f"{len(groups[0])} main images (e.g. a localizer stored in the same series) and were left out."
        )
    return groups[0]


def _completed(s: DicomSlice, complete: Optional[Callable[[int], Dict[str, str]]]) -> DicomSlice:
    """The slice with all of ``HEADER_TAGS`` in its header (read once, by ``complete``, if it lacks them)."""
    if complete is not None and s.index >= 0:
        s.header = complete(s.index)
        s.index = -1  # complete now
    return s


def _check_pixel_spacing(first: DicomSlice, label: str) -> None:
    """Refuse a zero or negative PixelSpacing: GDCM reads a zero one as 1 mm and a negative one as its
    absolute value, so areas and volumes would be silently wrong."""
    pixel_spacing = tag_floats(first.header.get(TAG_PIXEL_SPACING))
    if pixel_spacing is not None and pixel_spacing.size == 2 and not np.all(pixel_spacing > 0):
        raise InputError(
            f"The images of {label} have a PixelSpacing (0028,0030) of {tuple(float(x) for x in pixel_spacing)} mm; "
            "spacing must be positive.",
            "Export the original CT series from the scanner/PACS; a series with invalid geometry cannot be measured.",
        )


def _stack_along_normal(slices: List[DicomSlice], label: str) -> Tuple[List[DicomSlice], np.ndarray, np.ndarray]:
    """(slices sorted along their normal, their positions along it in mm, the unit normal in LPS).

    Refuses slices without position or orientation, a degenerate orientation, and two slices at
    the same position (several acquisitions mixed in one series).
    """
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
    return slices, positions, normal_lps


def _rescale_differs(slices: List[DicomSlice], facts: Dict[str, object], notes: List[str]) -> bool:
    """True when RescaleSlope/RescaleIntercept differ between slices (then each slice is converted to
    HU with its own values, as float voxels, and the series-wide rescale facts are dropped)."""
    slopes = {tag_float(t) for t in {s.header.get("0028|1053", "1") for s in slices}}
    intercepts = {tag_float(t) for t in {s.header.get("0028|1052", "0") for s in slices}}
    float_voxels = len(slopes) > 1 or len(intercepts) > 1
    if float_voxels:
        notes.append("DICOM: RescaleSlope/RescaleIntercept differ between slices; each slice was converted to "
                     "HU with its own values.")
        facts.pop("rescale_slope", None)
        facts.pop("rescale_intercept", None)
    elif "rescale_slope" not in facts and "rescale_intercept" not in facts:
        notes.append("DICOM: the series has no RescaleSlope/RescaleIntercept; stored values are taken as HU.")
    return float_voxels


def check_tilt(slices: List[DicomSlice], normal_lps: np.ndarray, label: str, notes: List[str]) -> None:
    """Note a gantry tilt: slices stacked more than ``TILT_NOTE_DEGREES`` off their normal (the volume is
    sheared; it is reported, not resampled)."""
    stack = slices[-1].position - slices[0].position
    length = float(np.linalg.norm(stack))
    if length <= 0:
        return
    along = float(stack @ normal_lps)
    angle = float(np.degrees(np.arccos(min(1.0, abs(along) / length))))
    if angle <= TILT_NOTE_DEGREES:
        return
    shift = float(np.linalg.norm(stack - along * normal_lps))
    header_tilt = tag_float(slices[0].header.get(TAG_GANTRY_TILT, ""))
    tag = f" (GantryDetectorTilt {header_tilt:g}°)" if header_tilt is not None else ""
    notes.append(
        f"DICOM: gantry tilt — the slices of {label} are stacked at {angle:.2f}° to their normal{tag}. "
        f"Each slice keeps its pixels and its position along the normal, but the in-plane shift between slices "
        f"({shift:.1f} mm from first to last slice) is not represented, so the 3-D volume is sheared. "
        "Measurements within an axial slice are unaffected; for 3-D distances or reformats, load the series in "
        "3D Slicer with 'Acquisition geometry regularization' enabled (Settings > DICOM) or resample it first."
    )
