"""Level sanity: the placed levels lie in craniocaudal order, one vertebra apart, each its own body.

Which vertebra is L1 cannot be told from one click; an impossible set of levels can. Lumbar bodies
are about 21–29 mm high (heights of L1–L5 in the real example's peer report,
``totalseg_example/spine_report.json``) with a disc of about 8–12 mm between them, so the centres
of adjacent bodies lie ``ADJACENT_CENTRE_MM`` apart; levels further apart in name are further apart
in proportion. Distances use the placed bodies' centres (mid-height, as fitted), never the clicks,
so the check does not depend on where inside a body the user clicked. A level label must be one
vertebral body: a label taller than ``MAX_LABEL_HEIGHT_MM`` holds two.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..roi.levels import LEVEL_NAMES
from .landmarks import MIN_BODY_HEIGHT_MM

#: Distance (mm) between the centres of adjacent vertebral bodies (body height + disc, see above).
ADJACENT_CENTRE_MM = (20.0, 45.0)
#: The tallest one lumbar body can be along the slice axis (mm): twice the tallest body in the
#: peer report (29 mm) would be two bodies; 45 mm leaves room for a tilted body on axial slices.
MAX_LABEL_HEIGHT_MM = 45.0
#: A label map whose values are not a few integers is not a segmentation (e.g. the CT itself).
MAX_LABEL_VALUES = 1000


def _remedy(source: str) -> str:
    if source == "labels":
        return ("Check the label map (--label-map, e.g. total or bodies) and that the segmentation belongs to "
                "this CT.")
    return ("Check the level of each point (L1 is the most cranial lumbar vertebra, one point per vertebral "
            "body) and the CT's slice spacing.")


def check_level_order(centres: Mapping[str, Sequence[float]], source: str = "points") -> None:
    """Refuse levels out of craniocaudal order (RAS S), closer than one body, or further apart than
    their names allow. ``centres``: level name → RAS centre of the placed body."""
    known = sorted((lv for lv in centres if lv in LEVEL_NAMES), key=LEVEL_NAMES.index)
    for upper, lower in zip(known, known[1:]):
        a = np.asarray(centres[upper], dtype=float)
        b = np.asarray(centres[lower], dtype=float)
        steps = LEVEL_NAMES.index(lower) - LEVEL_NAMES.index(upper)
        gap = float(np.linalg.norm(a - b))
        lo, hi = ADJACENT_CENTRE_MM
        if gap < lo:
            raise InputError(
                f"{upper} and {lower} are the same vertebral body: their centres are {gap:.1f} mm apart, less than "
                f"one vertebra ({lo:.0f}-{hi:.0f} mm between adjacent bodies).", _remedy(source))
        if a[2] <= b[2]:
            raise InputError(
                f"{upper} lies below {lower} (S {a[2]:.1f} mm vs {b[2]:.1f} mm): the levels are not in "
                f"craniocaudal order ({', '.join(LEVEL_NAMES[2:6])} run from head to foot).", _remedy(source))
        if not steps * lo <= gap <= steps * hi:
            raise InputError(
                f"{upper} and {lower} are {gap:.1f} mm apart; {steps} vertebra(e) apart they should be "
                f"{steps * lo:.0f}-{steps * hi:.0f} mm (adjacent bodies {lo:.0f}-{hi:.0f} mm): a level is "
                "mislabelled, or the slice spacing is wrong.", _remedy(source))


def check_slab_within_body(level: str, slab_mm: float, height_mm: Optional[float]) -> None:
    """Refuse a slab thicker than the body between its endplates (``height_mm``; when they were not
    found, the shortest plausible body, ``MIN_BODY_HEIGHT_MM``): it would average discs and the
    neighbouring vertebrae into the trabecular value (QCT_BRIEF §1: measure between the endplates)."""
    limit = float(height_mm) if height_mm else MIN_BODY_HEIGHT_MM
    if slab_mm > limit:
        where = (f"its body is {limit:.1f} mm high between the endplates" if height_mm else
                 f"its endplates were not found, so at most {limit:.0f} mm (the shortest lumbar body) is allowed")
        raise InputError(f"{level}: the ROI slab ({slab_mm:g} mm) is thicker than the vertebral body ({where}).",
                         f"Give a thinner slab (--slab-mm {max(1.0, np.floor(limit * 0.5)):g}), or leave it out for "
                         "one slice.")


def check_label_height(level: str, height_mm: float) -> None:
    """Refuse a level label taller than one vertebral body (two levels merged into one label)."""
    if height_mm > MAX_LABEL_HEIGHT_MM:
        raise InputError(
            f"{level}: its label is {height_mm:.0f} mm tall along the slice axis, more than one vertebral body "
            f"({MAX_LABEL_HEIGHT_MM:.0f} mm at most): two vertebrae share this label value, or the slice spacing "
            "is wrong.", _remedy("labels"))


def check_label_image(labels: np.ndarray, path: str) -> None:
    """Refuse an image given as labels that is not a label map (non-integer, negative or too many values)."""
    if labels.size == 0:
        raise InputError(f"The label image {path} is empty.", "Give the segmentation's label map.")
    sample = np.asarray(labels[::4, ::4, ::4]).ravel()
    if not np.issubdtype(labels.dtype, np.integer):
        finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
        if finite.size != sample.size or np.any(finite != np.round(finite)):
            raise InputError(f"{path} is not a label map: its values are not whole numbers (is it the CT?).",
                             "Give the segmentation (one integer label per voxel), e.g. TotalSegmentator's total.nii.gz.")
    values = np.unique(sample)
    if values.min() < 0 or values.size > MAX_LABEL_VALUES:
        raise InputError(
            f"{path} is not a label map: it holds {'negative values' if values.min() < 0 else f'{values.size} values'}"
            " (is it the CT?).",
            "Give the segmentation (one integer label per voxel), e.g. TotalSegmentator's total.nii.gz.")
