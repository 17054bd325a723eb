"""The five axial ROI types of seed 002 (QCT_BRIEF §1), built from a vertebral body outline.

Frame: on the mid-vertebral axial plane, ``s`` runs along the body's antero-posterior (AP)
axis towards anterior and ``t`` towards the patient's left, both in mm from the outline's
centre. The body spans ``s ∈ [−depth/2, +depth/2]``. The *inner* (trabecular) contour is the
outer outline shrunk by the cortical margin; every ROI lies inside it, so the marginal cortex
is excluded (seed 002: "All the ROIs exclude the marginal cortical area").

Definitions (seed 002, Methods; QCT_BRIEF §1):

* anterior two thirds: ``s ≥ s_d`` with the demarcation line ``s_d = −depth/2 + depth/3``;
* **round** — a circle on the AP midline whose diameter is the distance from the demarcation
  line to the inner edge of the anterior cortex, ``hi(0) − s_d``;
* **oval** — the largest-area ellipse, symmetric about the AP midline and aligned with it,
  inside the anterior-2/3 trabecular region;
* **front / right / left** — the anterior-2/3 trabecular region is divided into three equal
  columns about the AP midline (zone A = patient right, B = front, C = patient left; seed 002
  Fig. 3). The front ROI is the rectangle in the middle column bounded by the demarcation line
  and the inner anterior cortex; the right and left ROIs extend the front ROI's longitudinal
  (AP-running) borders sideways: each starts at the front ROI's side and is the largest
  rectangle inside the region within its column.

The paper does not give the columns' widths; equal thirds of the region's width is this
module's reading of Fig. 3, stated here so that a user can judge it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..errors import PlacementError
from .geometry import RoiShape
from .inscribed import (band_rectangle, circle_excess, lateral_extent, largest_ellipse, largest_side_rectangle,
                        tabulated)
from .outline import BodyOutline, IntervalFn

SHAPE_NAMES = ("oval", "round", "front", "left", "right")
#: The round ROI follows the paper's definition even where the body is too narrow for it; it is
#: flagged when it crosses the trabecular outline by more than this (sub-voxel overlaps are not).
ROUND_EXCESS_TOLERANCE_MM = 0.25
ZONES = {"right": "A", "front": "B", "left": "C"}


@dataclass
class RoiFamily:
    """The five ROIs of one level, the outline they came from, and any warnings."""

    outline: BodyOutline
    shapes: Dict[str, RoiShape]
    warnings: List[str] = field(default_factory=list)


def anterior_region(outline: BodyOutline, margin_mm: float = 0.0) -> IntervalFn:
    """Anterior-2/3 trabecular region: ``lo(t) = max(s_d, smin(t))``, ``hi(t) = smax(t)``."""
    inner = outline.inner_intervals(margin_mm)
    s_d = outline.demarcation_s

    def f(t):
        smin, smax = inner(t)
        lo = np.maximum(smin, s_d)
        bad = ~(smax > lo)
        lo = np.where(bad, np.nan, lo)
        hi = np.where(bad, np.nan, smax)
        return lo, hi

    return f


def build_roi_family(
    outline: BodyOutline,
    slab_mm: float,
    shapes: Sequence[str] = SHAPE_NAMES,
    level: str = "",
    edge_margin_mm: float = 0.0,
) -> RoiFamily:
    """Build the requested seed-002 ROIs (QCT_BRIEF §1) for one vertebral body outline.

    ``edge_margin_mm`` keeps every ROI that far inside the trabecular boundary, so that voxels
    whose centres are inside but which straddle the cortex (partial volume) stay out; about half
    the in-plane voxel diagonal does that.
    """
    unknown = [s for s in shapes if s not in SHAPE_NAMES]
    if unknown:
        raise PlacementError(
            f"Unknown ROI shape(s): {', '.join(unknown)}.", f"Choose from {', '.join(SHAPE_NAMES)}."
        )
    if edge_margin_mm < 0:
        raise PlacementError("The partial-volume margin must not be negative.", "Give a margin ≥ 0 mm.")
    limit = outline.width_mm / 2.0 + 1.0
    region = tabulated(anterior_region(outline, edge_margin_mm), limit)
    right_ext, left_ext = lateral_extent(region, limit)
    half = min(right_ext, left_ext)
    warnings: List[str] = []
    prefix = f"{level}: " if level else ""
    u, v = outline.ap_axis, outline.left_axis
    out: Dict[str, RoiShape] = {}

    def make(kind, name, s, t, hu, hv, meta):
        center = outline.to_ras(s, t)
        out[name] = RoiShape(kind, tuple(center), tuple(u), tuple(v), hu, hv, slab_mm, name=name, meta=meta)

    if "round" in shapes:
        s_c, r, diameter = _round_circle(outline, region, edge_margin_mm, prefix, warnings)
        make("ellipse", "round", s_c, 0.0, r, r, {"diameter_mm": diameter})

    if "oval" in shapes:
        fit = largest_ellipse(region, half if half > 0 else limit)
        if fit is None:
            raise PlacementError(f"{prefix}no ellipse fits in the anterior two thirds.", "Check the outline.")
        s0, p, q = fit
        make("ellipse", "oval", s0, 0.0, p, q, {})

    third = half / 3.0
    if "front" in shapes:
        rng = band_rectangle(region, -third, third)
        if rng is None:
            raise PlacementError(f"{prefix}the front ROI does not fit.", "Check the outline.")
        make("rectangle", "front", 0.5 * (rng[0] + rng[1]), 0.0, 0.5 * (rng[1] - rng[0]), third,
             {"zone": ZONES["front"]})
    for name, sign, extent in (("left", 1.0, left_ext), ("right", -1.0, right_ext)):
        if name not in shapes:
            continue
        best = largest_side_rectangle(region, third, min(extent, half), sign)
        if best is None:
            raise PlacementError(f"{prefix}the {name} ROI does not fit.", "Check the outline.")
        _, t_out, rng = best
        t_mid = sign * 0.5 * (third + t_out)
        make("rectangle", name, 0.5 * (rng[0] + rng[1]), t_mid, 0.5 * (rng[1] - rng[0]), 0.5 * (t_out - third),
             {"zone": ZONES[name]})
    ordered = {name: out[name] for name in SHAPE_NAMES if name in out}
    return RoiFamily(outline=outline, shapes=ordered, warnings=warnings)


def _round_circle(outline: BodyOutline, region: IntervalFn, edge_margin_mm: float, prefix: str,
                  warnings: List[str]) -> Tuple[float, float, float]:
    """The round ROI (seed 002): a circle on the AP midline from the demarcation line to the inner
    edge of the anterior cortex, as (centre s, radius, diameter). It follows the definition even
    where the body is too narrow for it; a warning then says how far it reaches past the region."""
    s_d = outline.demarcation_s
    lo0, hi0 = region(np.array([0.0]))
    if not np.isfinite(hi0[0]):
        raise PlacementError(f"{prefix}the AP midline crosses no trabecular bone.", "Check the outline.")
    diameter = float(hi0[0]) - s_d
    r = diameter / 2.0
    s_c = s_d + r
    # Does the circle stay inside the trabecular region? (It may not on a narrow body.)
    excess = circle_excess(region, s_c, r)
    if excess > ROUND_EXCESS_TOLERANCE_MM:
        # ``region`` keeps ``edge_margin_mm`` off the trabecular outline (partial volume): say
        # whether the circle crosses the outline itself or only enters that margin.
        beyond = circle_excess(anterior_region(outline, 0.0), s_c, r) if edge_margin_mm > 0 else excess
        start = f"{prefix}the round ROI (diameter {diameter:.1f} mm, seed-002 definition) "
        if beyond > ROUND_EXCESS_TOLERANCE_MM:
            by = "beyond the outline's width" if not np.isfinite(beyond) else f"by up to {beyond:.1f} mm"
            warnings.append(f"{start}reaches beyond the trabecular outline ({by}) on this narrow body; check it "
                            "for cortex.")
        else:
            warnings.append(f"{start}stays inside the trabecular outline but reaches {excess:.1f} mm into the "
                            f"{edge_margin_mm:.1f} mm margin kept off it on this narrow body: its edge voxels may "
                            "hold a little cortex (partial volume).")
    return s_c, r, diameter
