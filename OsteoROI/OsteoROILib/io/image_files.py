"""Image files: read a CT from a file or DICOM folder into a :class:`~.volume.Volume`, and write one.

SimpleITK reads and writes the image formats (NRRD, NIfTI, MHA/MHD); a folder goes to the DICOM
reader (:func:`~.dicom_read.read_dicom_directory`). Every volume read is checked as a CT in
Hounsfield units (:func:`~.volume.check_ct`). A truncated NIfTI file, which ITK would zero-fill
without an error, is refused from its header's promised size.
"""
from __future__ import annotations

import gzip
import os
import re
import struct
from typing import Optional

from ..errors import InputError
from .dicom_read import read_dicom_directory
from .nifti_raw import refuse_nonfinite
from .volume import Volume, check_ct


def read_volume(path: str, series_uid: Optional[str] = None) -> Volume:
    """Read a CT from an image file (NRRD, NIfTI, MHA, … via SimpleITK) or a DICOM directory
    (``series_uid``: the series to read when it holds several).

    The result is validated as a 3-D CT (``check_ct``); errors say what to do.
    """
    if not os.path.exists(path):
        raise InputError(f"No such file or directory: {path}.", "Check the path to the CT volume.")
    if os.path.isdir(path):
        volume = read_dicom_directory(path, series_uid=series_uid)
    elif series_uid:
        raise InputError(f"--series was given but {path} is a file, not a DICOM folder.",
                         "Leave out --series, or give the DICOM folder.")
    else:
        volume = _read_image_file(path)
    check_ct(volume)
    return volume


def _read_image_file(path: str) -> Volume:
    import SimpleITK as sitk

    if not os.access(path, os.R_OK):
        raise InputError(f"Cannot read {path}: permission denied.", "Check the file's permissions.")
    lower = path.lower()
    if lower.endswith(".nii") or lower.endswith(".nii.gz"):
        _check_nifti_complete(path)
        refuse_nonfinite(path)
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise _itk_read_error(path, str(exc)) from None
    return Volume.from_sitk(image, source=os.path.abspath(path))


def _itk_read_error(path: str, text: str) -> InputError:
    """Turn ITK's multi-line exception text into a message a user can act on."""
    if "Bad direction" in text or "determinant is 0" in text:
        return InputError(
            f"Cannot read {path}: its direction matrix is singular (its axes are parallel).",
            "Fix the file's header: the three direction cosines must be independent.",
        )
    if "spacing" in text.lower() and ("zero" in text.lower() or "Refusing" in text):
        return InputError(
            f"Cannot read {path}: its voxel spacing is zero or negative.",
            "Fix the file's header (spacing must be > 0 mm on every axis).",
        )
    detail = ""
    for line in text.splitlines():
        if "ITK ERROR" in line or "Description:" in line:
            detail = re.sub(r"\w*\s*\(0x[0-9a-fA-F]+\):\s*", "", line.split("ITK ERROR:")[-1])
            detail = detail.replace("Description:", "").strip()
            break
    if not detail or "No such file" in detail:
        detail = "unknown format, truncated or corrupt"
    return InputError(
        f"Cannot read {path} as an image ({detail[:200]}).",
        "Give a NRRD, NIfTI (.nii/.nii.gz), MHA/MHD file or a DICOM folder; the file may be truncated or corrupt.",
    )


def _nifti_expected_bytes(header: bytes) -> Optional[int]:
    """Header + voxel data size a NIfTI-1/2 header promises, or None if it is not NIfTI."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = int(struct.unpack(endian + "q", header[168:176])[0])
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    count = 1
    for d in dims[1 : ndim + 1]:
        count *= max(int(d), 1)
    return max(offset, 348) + count * bitpix // 8


def _check_nifti_complete(path: str) -> None:
    """ITK zero-fills a truncated NIfTI file without an error; refuse one here."""
    truncated = InputError(
        f"Cannot read {path}: the file is truncated (it holds less voxel data than its header says).",
        "Copy or export the file again.",
    )
    if path.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                header = f.read(540)
        except (OSError, EOFError):
            raise truncated from None
        expected = _nifti_expected_bytes(header)
        if expected is None:
            return
        # The gzip trailer stores the uncompressed size (mod 2**32): a cheap check; read the whole
        # stream only when it disagrees (a truncated file's last bytes are not a trailer).
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]
        if isize == expected % 2**32:
            return
        total = 0
        try:
            with gzip.open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    total += len(chunk)
        except (OSError, EOFError):
            raise truncated from None
        if total < expected:
            raise truncated
        return
    with open(path, "rb") as f:
        header = f.read(540)
    expected = _nifti_expected_bytes(header)
    if expected is not None and os.path.getsize(path) < expected:
        raise truncated


def write_volume(volume: Volume, path: str) -> None:
    """Write a volume with SimpleITK (format from the extension), atomically.

    The image goes to a temporary file beside ``path`` and is renamed into place when
    complete, so a failed write leaves no partial file.
    """
    import SimpleITK as sitk

    folder, name = os.path.split(os.path.abspath(path))
    base = name.lower()
    ext = next((e for e in (".nii.gz", ".nrrd", ".nii", ".mha", ".mhd", ".nhdr") if base.endswith(e)),
               os.path.splitext(name)[1])
    if ext in (".mhd", ".nhdr"):  # header + separate data file: cannot be renamed as one
        sitk.WriteImage(volume.to_sitk(), path, True)
        return
    tmp = os.path.join(folder, f".{name}.part{ext}")
    try:
        sitk.WriteImage(volume.to_sitk(), tmp, True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
