"""A vertebral body's outline on one axial plane and the trabecular region's AP extent per line.

Frame: ``s`` runs along the body's antero-posterior (AP) axis towards anterior and ``t`` towards
the patient's left, both in mm from the outline's centre. ``BodyOutline.inner_intervals`` gives,
on each line of constant ``t``, the AP extent ``(smin, smax)`` of the trabecular region (the
outline shrunk by the cortical margin: an ellipse, or a fitted polygon); the ROI family
(``roi.family``) is built from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import PlacementError
from .geometry import in_plane_frame

IntervalFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


@dataclass
class BodyOutline:
    """A vertebral body's outline on one axial plane.

    ``center`` — RAS mm, the middle of the outer outline (AP and lateral);
    ``ap_axis`` — RAS direction towards anterior (projected into the plane);
    ``normal`` — the plane normal (towards superior);
    ``depth_mm``/``width_mm`` — outer AP depth and lateral width;
    ``cortical_mm`` — cortical margin excluded inside the outer outline;
    ``inner_contour`` — optional polygon (N×2, columns s, t in mm) of the trabecular boundary;
    without it the inner boundary is the ellipse with semi-axes ``depth/2 − cortical`` and
    ``width/2 − cortical``.
    """

    center: Sequence[float]
    ap_axis: Sequence[float]
    normal: Sequence[float]
    depth_mm: float
    width_mm: float
    cortical_mm: float = 1.5
    inner_contour: Optional[np.ndarray] = None
    meta: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        self.center = np.asarray(self.center, dtype=float)
        u, v, n = in_plane_frame(self.normal, self.ap_axis)
        self.ap_axis, self.left_axis, self.normal = u, v, n
        for name in ("depth_mm", "width_mm"):
            if not float(getattr(self, name)) > 0:
                raise PlacementError(f"The body outline's {name} must be positive.", "Give the body's size in mm.")
        if self.cortical_mm < 0:
            raise PlacementError("The cortical margin must not be negative.", "Give a margin ≥ 0 mm.")
        if min(self.depth_mm, self.width_mm) / 2 - self.cortical_mm <= 0:
            raise PlacementError(
                "The cortical margin leaves no trabecular bone inside the outline.",
                "Use a smaller cortical margin or check the body's size.",
            )
        if self.inner_contour is not None:
            self.inner_contour = np.asarray(self.inner_contour, dtype=float)

    @property
    def demarcation_s(self) -> float:
        """The anterior-2/3 demarcation line: one third of the depth from the posterior edge."""
        return -self.depth_mm / 2.0 + self.depth_mm / 3.0

    def to_ras(self, s, t) -> np.ndarray:
        return self.center + np.multiply.outer(s, self.ap_axis) + np.multiply.outer(t, self.left_axis)

    def inner_intervals(self, margin_mm: float = 0.0) -> IntervalFn:
        """``f(t) -> (smin, smax)``: the trabecular region's AP extent on the line at ``t`` (NaN outside).

        ``margin_mm`` shrinks the region further (a polygon contour radially about its centroid).
        """
        if self.inner_contour is None:
            a = self.depth_mm / 2.0 - self.cortical_mm - margin_mm
            b = self.width_mm / 2.0 - self.cortical_mm - margin_mm
            if min(a, b) <= 0:
                raise PlacementError("The margins leave no trabecular bone inside the outline.",
                                     "Use a smaller cortical or partial-volume margin.")
            return ellipse_intervals(a, b)
        poly = self.inner_contour
        if margin_mm > 0:
            c = poly.mean(axis=0)
            d = poly - c
            r = np.linalg.norm(d, axis=1)
            scale = np.clip(1.0 - margin_mm / np.maximum(r, 1e-9), 0.0, None)
            poly = c + d * scale[:, None]
        return polygon_intervals(poly)

    def to_dict(self) -> Dict[str, object]:
        return {
            "center_ras": [round(float(x), 4) for x in self.center],
            "ap_axis_ras": [round(float(x), 6) for x in self.ap_axis],
            "normal_ras": [round(float(x), 6) for x in self.normal],
            "depth_mm": round(float(self.depth_mm), 3),
            "width_mm": round(float(self.width_mm), 3),
            "cortical_mm": round(float(self.cortical_mm), 3),
        }


def ellipse_intervals(a: float, b: float) -> IntervalFn:
    def f(t):
        t = np.asarray(t, dtype=float)
        with np.errstate(invalid="ignore"):
            h = a * np.sqrt(1.0 - (t / b) ** 2)
        h = np.where(np.abs(t) <= b, h, np.nan)
        return -h, h

    return f


def polygon_intervals(poly: np.ndarray) -> IntervalFn:
    """AP extent of a closed polygon (columns s, t) on lines of constant t.

    Takes the lowest and highest crossing, i.e. assumes the region is convex along s (true of
    a vertebral body's trabecular region on an axial slice). A line at ``t`` crosses edge
    ``(s0, t0) → (s1, t1)`` when ``min(t0, t1) ≤ t ≤ max(t0, t1)`` (edges along t excluded), at
    ``s = s0 + (t − t0)/(t1 − t0)·(s1 − s0)``; ``f(t)`` is NaN where no edge is crossed.

    Each edge is evaluated only on the lines it spans (found by binary search in the sorted t),
    not on every (t, edge) pair: a convex contour gives about two crossings per line.
    """
    p = np.asarray(poly, dtype=float)
    s0, t0 = p[:, 0], p[:, 1]
    s1, t1 = np.roll(s0, -1), np.roll(t0, -1)
    lo_t, hi_t = np.minimum(t0, t1), np.maximum(t0, t1)
    edges = np.nonzero(hi_t > lo_t)[0]
    e_lo, e_hi = lo_t[edges], hi_t[edges]
    e_s0, e_t0, e_ds, e_dt = s0[edges], t0[edges], (s1 - s0)[edges], (t1 - t0)[edges]

    def f(t):
        t = np.atleast_1d(np.asarray(t, dtype=float))
        if t.ndim != 1:  # lines of any shape: the same answer per line
            smin, smax = f(t.ravel())
            return smin.reshape(t.shape), smax.reshape(t.shape)
        order = np.argsort(t, kind="stable")
        ts = t[order]
        first = np.searchsorted(ts, e_lo, "left")  # lines with e_lo <= t <= e_hi: ts[first:last]
        count = np.searchsorted(ts, e_hi, "right") - first
        count = np.maximum(count, 0)
        total = int(count.sum())
        smin = np.full(t.shape, np.inf)
        smax = np.full(t.shape, -np.inf)
        hit = np.zeros(t.shape, dtype=bool)
        if total:
            e = np.repeat(np.arange(edges.size), count)
            pos = np.arange(total) + np.repeat(first - (np.cumsum(count) - count), count)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = (ts[pos] - e_t0[e]) / e_dt[e]
                s = e_s0[e] + frac * e_ds[e]
            k = order[pos]
            np.fmin.at(smin, k, s)
            np.fmax.at(smax, k, s)
            hit[k] = True
        smin[~hit] = np.nan
        smax[~hit] = np.nan
        return smin, smax

    return f


def outward_normals(poly: np.ndarray) -> np.ndarray:
    """Unit vertex normals (N×2) of a closed polygon (N×2), either winding, pointing away from its
    centroid: the cortical margin is taken off the outer contour along them (``placement.outline_fit``)
    and put back for the pictures (``roi.overlays``)."""
    p = np.asarray(poly, dtype=float)
    tangent = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    if np.mean(np.sum(normal * (p - p.mean(axis=0)), axis=1)) < 0:
        normal = -normal
    return normal


def radius_at(poly: np.ndarray, angles, grow_mm: float = 0.0):
    """The radius of a closed polygon (N×2, star-shaped about the origin) along the directions
    ``angles`` (rad, ``arctan2`` of the second coordinate over the first), linearly interpolated
    between its vertices, plus ``grow_mm``: where a point lies against an outline given about its
    centre (a click near the body, a label's boundary, the bone behind the body)."""
    p = np.asarray(poly, dtype=float)
    ang = np.arctan2(p[:, 1], p[:, 0])
    order = np.argsort(ang)
    return np.interp(angles, ang[order], np.hypot(p[:, 0], p[:, 1])[order] + grow_mm, period=2.0 * np.pi)
