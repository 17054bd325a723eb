"""The vertebral levels and ROI shapes a user may name, as the command line, the module and scripts
accept them: ``L1``…, ``oval,round,…``."""
from __future__ import annotations

from typing import List

from ..errors import InputError
from .family import SHAPE_NAMES

#: Levels a point may be labelled with. The product targets L1–L4 (QCT_BRIEF §1, §3);
#: T12 and L5 are accepted so that an unsuitable level can be replaced by a neighbour.
LEVEL_NAMES = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")


def normalise_level(label: str) -> str:
    name = str(label).strip().upper()
    if name not in LEVEL_NAMES:
        raise InputError(
            f"Unknown vertebral level label {label!r}.",
            f"Label each point with one of {', '.join(LEVEL_NAMES)} (e.g. L1).",
        )
    return name


def parse_shapes(shapes) -> List[str]:
    if shapes is None:
        return list(SHAPE_NAMES)
    if isinstance(shapes, str):
        shapes = [s for s in shapes.split(",")]
    out = []
    for s in shapes:
        name = str(s).strip().lower()
        if not name:
            continue
        if name not in SHAPE_NAMES:
            raise InputError(f"Unknown ROI shape {s!r}.", f"Choose from {', '.join(SHAPE_NAMES)}.")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("No ROI shape was chosen.", f"Choose one or more of {', '.join(SHAPE_NAMES)}.")
    return out
