"""The ROIs' slab along the vertebra's axis: one slice (seed 002) or a QCT-style slab at mid-height,
kept clear of the endplates.

Seed 002 measured on one axial section through the body's mid-height (QCT_BRIEF §1); that stays the
default, so that its Table 3 cut-offs apply as published. QCT practice measures a slab of about
9–10 mm centred at mid-height, clear of the endplates (not in QCT_BRIEF; stated here so that a user can
judge it): ``slab_mm="qct"`` asks for ``QCT_SLAB_MM``. A slab thicker than one slice is centred on the
body's mid-height (between the endplates found), not on the chosen slice, so it does not move when the
mid-height falls between two slices; it is thinned, with a warning, where the endplates leave less
room than asked for. Every row records the slab it was measured on and where it was centred.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from ..roi.family import RoiFamily
from .landmarks import Placement

#: The QCT-style slab (mm): about 9–10 mm at mid-height in QCT practice.
QCT_SLAB_MM = 10.0
#: A slab's faces stay at least this far (mm) from each endplate's centre (the endplate peak of the
#: central profile): half a thick endplate plus the partial volume of a 3 mm slice.
ENDPLATE_CLEARANCE_MM = 3.0
SLAB_PRESETS = {"qct": QCT_SLAB_MM}
CENTRE_SLICE = "the mid-vertebral slice"
CENTRE_MID_HEIGHT = "the body's mid-height between the endplates"


def is_preset(slab_mm) -> bool:
    """Whether ``slab_mm`` names a preset (``"qct"``) rather than a thickness the user gave."""
    return isinstance(slab_mm, str) and slab_mm.strip().lower() in SLAB_PRESETS


def check_slab(volume: Volume, slab_mm: Union[None, float, str]) -> float:
    """The ROIs' slab thickness (mm): one slice when not given, ``"qct"`` for ``QCT_SLAB_MM``;
    refused unless positive."""
    if slab_mm is None:
        return volume.slice_spacing()
    if isinstance(slab_mm, str) and slab_mm.strip().lower() in SLAB_PRESETS:
        return SLAB_PRESETS[slab_mm.strip().lower()]
    try:
        value = float(slab_mm)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"The slab thickness must be a positive number of mm or 'qct', got {slab_mm!r}.",
                         f"Give e.g. --slab-mm 3 or --slab-mm qct ({QCT_SLAB_MM:g} mm at mid-height), or leave it "
                         "out for one slice.")
    return value


@dataclass
class LevelSlab:
    """The slab one level was measured on: thickness, where it is centred, how far its faces stay
    from the endplates (None when the endplates are unknown) and any warning."""

    slab_mm: float
    centre: str
    clearance_mm: Optional[float] = None
    warning: Optional[str] = None

    def to_row(self) -> dict:
        return {"slab_mm": round(self.slab_mm, 4), "slab_centre": self.centre,
                "slab_endplate_clearance_mm": None if self.clearance_mm is None else round(self.clearance_mm, 3)}


def level_slab(volume: Volume, placed: Optional[Placement], slab_mm: float, level: str = "",
               bound: bool = True) -> LevelSlab:
    """The slab for one level, centred at mid-height when thicker than one slice and the endplates
    are known. Where the endplates leave less room than ``slab_mm``: with ``bound`` (the ``"qct"``
    preset) it is thinned to that room (never below one slice); a thickness the user gave is kept
    as given. Either way a warning says so."""
    one = volume.slice_spacing()
    sup, inf = (None, None) if placed is None else placed.endplates_s
    if sup is None or inf is None or placed.axis_ras is not None:
        return LevelSlab(slab_mm, CENTRE_SLICE)
    height = float(sup - inf)
    room = height - 2.0 * ENDPLATE_CLEARANCE_MM
    prefix = f"{level}: " if level else ""
    warning = None
    thick = slab_mm
    if slab_mm > one + 1e-6 and slab_mm > room:
        if bound:
            thick = max(room, one)
            warning = (f"{prefix}the {slab_mm:g} mm slab does not fit between the endplates ({height:.1f} mm apart, "
                       f"{ENDPLATE_CLEARANCE_MM:g} mm kept from each): measured on {thick:.1f} mm.")
        else:
            warning = (f"{prefix}the {slab_mm:g} mm slab reaches within {ENDPLATE_CLEARANCE_MM:g} mm of the endplates "
                       f"or beyond ({height:.1f} mm apart): endplate and disc voxels may be measured; a thinner slab "
                       "(--slab-mm qct) stays clear of them.")
    centre = CENTRE_MID_HEIGHT if thick > one + 1e-6 else CENTRE_SLICE
    return LevelSlab(thick, centre, 0.5 * (height - thick), warning)


def centre_on_mid_height(volume: Volume, family: RoiFamily, placed: Placement, slab: LevelSlab) -> RoiFamily:
    """The family with every ROI moved along the image's slice normal onto the body's mid-height
    (only for a slab centred there; the in-plane geometry is unchanged)."""
    if slab.centre != CENTRE_MID_HEIGHT:
        return family
    sup, inf = placed.endplates_s
    n = volume.slice_normal_ras()  # the endplates are positions along it
    shapes = {}
    for name, shape in family.shapes.items():
        c = np.asarray(shape.center, dtype=float)
        shift = 0.5 * (sup + inf) - float(c @ n)
        shapes[name] = shape.moved(center=tuple(c + shift * n))
    warnings: List[str] = list(family.warnings)
    return RoiFamily(outline=family.outline, shapes=shapes, warnings=warnings)
