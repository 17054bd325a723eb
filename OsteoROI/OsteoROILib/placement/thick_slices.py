"""How far the mid-height can be trusted at the image's slice thickness: the slices between the endplates.

The mid-height is half way between the two endplate peaks of the body's central HU profile; each peak
is located to a fraction of a slice from the slice holding it and its two neighbours
(``endplates._peaks``). The mid-vertebral slice is clear of the endplates' partial volume only when a
whole slice lies between it and each endplate's slice: endplate, clear slice, mid slice, clear slice,
endplate, i.e. the endplates at least ``MIN_SLICES_BETWEEN_ENDPLATES`` slice spacings apart. Below
that (an adult lumbar body of ~25 mm at 6 mm slices) the chosen slice is still decided by a fixed rule
from the body's own geometry, and the level carries a caveat in plain words. Seed 002 measured on
2.5 mm slices (its Methods), ten or more slices per body.
"""
from __future__ import annotations

from typing import Optional

from .landmarks import Placement

#: The endplates must lie at least this many slice spacings apart for the mid slice to be clear of
#: their partial volume (see the module docstring).
MIN_SLICES_BETWEEN_ENDPLATES = 4.0
META_KEY = "slices_between_endplates"


def slices_between_endplates(placed: Placement, slice_mm: float) -> Optional[float]:
    """The endplates' distance in slice spacings (None when they were not both found)."""
    height = placed.height_mm
    return None if height is None or slice_mm <= 0 else float(height / slice_mm)


def thick_slice_caveat(placed: Placement, slice_mm: float, level: str = "") -> Optional[str]:
    """The plain-word caveat for a body spanning fewer than ``MIN_SLICES_BETWEEN_ENDPLATES`` slices,
    or None. Records the count in the outline's ``meta`` (``META_KEY``) either way."""
    n = slices_between_endplates(placed, slice_mm)
    placed.outline.meta[META_KEY] = None if n is None else round(n, 2)
    if n is None or n >= MIN_SLICES_BETWEEN_ENDPLATES:
        return None
    prefix = f"{level}: " if level else ""
    return (f"{prefix}thick slices: the endplates lie only {n:.1f} slices apart ({slice_mm:g} mm slices; fewer than "
            f"{MIN_SLICES_BETWEEN_ENDPLATES:g}), so the mid slice may hold the endplates' partial volume and the "
            f"mid-height is known to about half a slice; slice {placed.slice_index} is used ({placed.mid_slice_rule()}). "
            "Prefer a reconstruction of 3 mm or thinner for this measurement and for follow-up.")
