"""Where OsteoROI's data files (schemas, phantoms, criteria, UI) are.

The extension keeps them in the top-level ``Resources/`` folder. This finds that folder in a
source checkout (and an editable pip install), in a Slicer install (the module folder's
``Resources/``), or wherever ``OSTEOROI_RESOURCES`` points.
"""
from __future__ import annotations

import os

from .errors import OsteoROIError

_HERE = os.path.dirname(os.path.abspath(__file__))


def resources_dir() -> str:
    candidates = [
        os.environ.get("OSTEOROI_RESOURCES", ""),
        os.path.join(_HERE, "Resources"),  # wheel: packaged beside the code
        os.path.join(_HERE, "..", "Resources"),  # Slicer install: <module dir>/Resources
        os.path.join(_HERE, "..", "..", "Resources"),  # source checkout / editable install
    ]
    for c in candidates:
        if c and os.path.isdir(os.path.join(c, "Schemas")):
            return os.path.normpath(c)
    raise OsteoROIError(
        "OsteoROI's Resources folder (schemas, phantom and criteria data) was not found.",
        "Reinstall OsteoROI, or set OSTEOROI_RESOURCES to the Resources folder of the source tree.",
    )


def resource_path(*parts: str) -> str:
    path = os.path.join(resources_dir(), *parts)
    if not os.path.exists(path):
        raise OsteoROIError(f"OsteoROI resource {'/'.join(parts)} is missing.", "Reinstall OsteoROI.")
    return path
