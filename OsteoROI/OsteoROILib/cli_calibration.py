"""``osteoroi phantoms`` and ``osteoroi calibrate``: calibration from HU to QCT vBMD."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this module's sub-commands to the ``osteoroi`` parser (none yet)."""
