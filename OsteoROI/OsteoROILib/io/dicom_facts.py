"""DICOM facts: the tags OsteoROI reads, reading them from a file's header, and the facts they give.

``FACT_TAGS`` names the QCT_BRIEF §6 facts (kVp, kernel, patient age, rescale ...) by tag;
``read_header`` reads the tags of ``HEADER_TAGS`` from one file with SimpleITK's GDCM (no pixels),
or with pydicom when it is installed and SimpleITK cannot open the object (``read_header_pydicom``);
``facts_from_header`` turns the raw tag strings into the facts dictionary, a tag that is absent or
empty left out (never ``None``/NaN). The series modules (``dicom_series``, ``dicom_read``) build on
this vocabulary.
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import InputError

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
    # patient identity and study: a follow-up compares the same patient (QCT_BRIEF §5); the signed
    # report's header and the DICOM SR reference the study
    "patient_id": ("0010|0020", str),
    "patient_name": ("0010|0010", str),
    "patient_birth_date": ("0010|0030", str),
    "study_instance_uid": ("0020|000d", str),
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

HEADER_TAGS = sorted(
    {t for t, _ in FACT_TAGS.values()}
    | {TAG_IMAGE_TYPE, TAG_SOP_INSTANCE_UID, TAG_SERIES_NUMBER, TAG_IPP, TAG_IOP, TAG_ROWS, TAG_COLUMNS,
       TAG_FRAMES, TAG_GANTRY_TILT, TAG_PIXEL_SPACING}
)
#: The tags the slice checks read from every slice (``plan_series``); the others of ``HEADER_TAGS``
#: are read only from the slices whose facts, pixel spacing or tilt are reported.
SLICE_TAGS = (TAG_SOP_INSTANCE_UID, TAG_IPP, TAG_IOP, TAG_ROWS, TAG_COLUMNS, "0028|1053", "0028|1052")


def dicom_facts_from_file(path: str) -> Dict[str, object]:
    """The QCT_BRIEF §6 facts of one DICOM file (keys of :data:`FACT_TAGS`; absent tags left out).

    Uses SimpleITK; falls back to pydicom (if installed) for non-image objects SimpleITK cannot open.
    """
    header = read_header(path)
    if header is None:
        header = read_header_pydicom(path)
    if header is None:
        raise InputError(f"Cannot read {path} as a DICOM file.", "Give a DICOM file of the CT series.")
    return facts_from_header(header)


def facts_from_header(header: Dict[str, str]) -> Dict[str, object]:
    """Convert raw tag strings ({"0018|0060": "120 ", …}) to the facts dictionary."""
    facts: Dict[str, object] = {}
    for key, (tag, kind) in FACT_TAGS.items():
        text = clean_text(header.get(tag, ""))
        if not text:
            continue
        if kind is float:
            value = tag_float(text)
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


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """Silence ITK's console warnings (e.g. "No Series were found") while scanning folders."""
    import SimpleITK as sitk


    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def clean_text(text: str) -> str:
    return str(text).replace("\x00", " ").strip()


def tag_float(text: str) -> Optional[float]:
    try:
        value = float(clean_text(text).split("\\")[0])
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def tag_floats(text: Optional[str]) -> Optional[np.ndarray]:
    values = tag_float_list(text)
    return None if values is None else np.array(values, dtype=float)


def tag_float_list(text: Optional[str]) -> Optional[List[float]]:
    """The backslash-separated numbers of a DICOM multi-value string; None if absent, unparsable or not finite."""
    if not text:
        return None
    try:
        values = [float(v) for v in clean_text(text).split("\\") if v.strip()]
    except ValueError:
        return None
    return values if all(map(math.isfinite, values)) else None


def read_header(path: str) -> Optional[Dict[str, str]]:
    """The tags OsteoROI uses, read with SimpleITK/GDCM (no pixel decoding); None if unreadable."""
    import SimpleITK as sitk


    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    try:
        with itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    header: Dict[str, str] = {}
    for tag in HEADER_TAGS:
        try:
            if reader.HasMetaDataKey(tag):
                header[tag] = reader.GetMetaData(tag)
        except (RuntimeError, UnicodeDecodeError):
            continue
    return header


def read_header_pydicom(path: str) -> Optional[Dict[str, str]]:
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
    for tag in HEADER_TAGS:
        group, element = (int(x, 16) for x in tag.split("|"))
        elem = ds.get((group, element))
        if elem is None or elem.value is None:
            continue
        value = elem.value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        header[tag] = str(value)
    return header
