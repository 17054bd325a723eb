"""Non-finite voxels of a float NIfTI file, counted in its raw data before ITK reads it.

ITK's NIfTI reader turns NaN into 0 without a word, so an image with missing values would be
measured as if they were water (0 HU). The voxel data are scanned in chunks, as stored.
"""
from __future__ import annotations

import gzip
import struct
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError

#: NIfTI datatype codes of floating-point voxels → numpy type (NIfTI-1 standard, nifti1.h).
FLOAT_DATATYPES = {16: "f4", 64: "f8"}
CHUNK_BYTES = 1 << 22


def float_layout(header: bytes) -> Optional[Tuple[str, int]]:
    """(numpy dtype with byte order, data offset) of a float NIfTI-1/2 header; None otherwise."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            datatype = struct.unpack(endian + "h", header[70:72])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype = struct.unpack(endian + "h", header[12:14])[0]
            offset = int(struct.unpack(endian + "q", header[168:176])[0])
            break
    else:
        return None
    if datatype not in FLOAT_DATATYPES:
        return None
    return endian + FLOAT_DATATYPES[datatype], max(offset, 348)


def count_nonfinite(path: str) -> int:
    """Non-finite voxels in a float NIfTI file (0 for other files and types)."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        layout = float_layout(f.read(540))
        if layout is None:
            return 0
        dtype, offset = np.dtype(layout[0]), layout[1]
        f.seek(offset)
        bad, rest = 0, b""
        while True:
            chunk = f.read(CHUNK_BYTES)
            if not chunk:
                break
            data = rest + chunk
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            rest = data[usable:]
    return bad


def refuse_nonfinite(path: str) -> None:
    """Refuse a float NIfTI that holds NaN or infinite voxels (ITK would read them as 0 HU)."""
    try:
        bad = count_nonfinite(path)
    except (OSError, EOFError):
        return  # a truncated file is refused by the completeness check with its own message
    if bad:
        raise InputError(
            f"{path} holds {bad} NaN or infinite voxel(s) (missing values); the image reader would turn them "
            "into 0 HU and they would be measured as water.",
            "Re-export the CT without missing values (or fill them) and try again.")
