"""What the placement finds and when it accepts it: the Placement, Contour and Canal records and
the limits (shell contrast, body area, height, axis, fit quality) a vertebral body must meet."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..roi.outline import BodyOutline
from .sampling import RAY_STEP_MM, Box

METHOD_CLICK = "auto (click)"
METHOD_LABEL = "auto (label)"
PLANE_AXIAL = "image axial slice"

#: A ray shows a cortical shell when the profile rises this much above the interior before the
#: edge and drops this much across it (HU). At 3 mm slices the posterior wall is weak (≈ +50 HU).
SHELL_RISE_HU = 30.0
EDGE_DROP_HU = 60.0
MIN_SHELL_FRACTION = 0.6
MIN_QUADRANT_FRACTION = 0.3
#: Outer cross-section of lumbar (and T11–L5) bodies, mm² (adult bodies ≈ 8–25 cm²).
MIN_BODY_AREA_MM2 = 300.0
MAX_BODY_AREA_MM2 = 4500.0
#: The AP axis comes from the outline only when its principal extents differ by this ratio and it
#: turns less than MAX_ROTATION_DEG from the image's anterior (axial rotation of lumbar vertebrae
#: beyond ~30° is exceptional); otherwise the image's anterior direction is used, with a reason.
MIN_AXIS_RATIO = 1.08
MAX_ROTATION_DEG = 30.0
#: A ray entering the spinal canal (its smoothed HU low for CANAL_ENTRY_MM) ends within
#: CANAL_WALL_MM behind the entry: the posterior wall.
CANAL_ENTRY_MM = 3.0
CANAL_WALL_MM = 1.5
#: No part of the body's outline lies more than this (mm) behind the canal's front (the posterior
#: wall's concavity; beyond it are the pedicles).
POSTERIOR_CORNER_MM = 3.0
#: Plausible distance between the endplates (mm); a shorter interval is a disc.
MIN_BODY_HEIGHT_MM = 12.0
MAX_BODY_HEIGHT_MM = 50.0
#: Fit quality (0–1, ``fit_quality``: a calibrated map of the expected errors) below which the ROIs
#: are shrunk towards their centre (a conservative ROI, with a warning): continuously, from no shrink
#: at LOW_QUALITY to FALLBACK_SCALE at FULL_SHRINK_QUALITY and below, so that a score flickering
#: about the cut-off moves the ROIs by a hair, never by a step (``conservative_scale``). LOW_QUALITY
#: is the score of an outline expected to reach ``fit_quality.CORTEX_ONSET_MM`` into the cortex —
#: where the ROIs start to take in cortical voxels — or of a plane expected half the QCT slab from
#: mid-height; FULL_SHRINK_QUALITY that of a reach 40 % further. Shrinking to FALLBACK_SCALE takes
#: an ROI edge on a 40 mm wide body about 4 mm off the outline, beyond any reach the calibration saw.
LOW_QUALITY = 0.5
FULL_SHRINK_QUALITY = 0.3
FALLBACK_SCALE = 0.8
#: Mid-height this far (slices) or more from the chosen slice's centre is said to lie between slices.
MID_BETWEEN_SLICES = 0.3


def conservative_scale(quality: float) -> float:
    """The factor the trabecular region is shrunk by at fit quality ``quality``: 1 at or above
    ``LOW_QUALITY``, ``FALLBACK_SCALE`` at or below ``FULL_SHRINK_QUALITY``, linear between."""
    t = float(np.clip((quality - FULL_SHRINK_QUALITY) / (LOW_QUALITY - FULL_SHRINK_QUALITY), 0.0, 1.0))
    return FALLBACK_SCALE + (1.0 - FALLBACK_SCALE) * t


# ----------------------------------------------------------------------------------------------
# What a placement gives
# ----------------------------------------------------------------------------------------------
@dataclass
class Placement:
    """Where a level's ROIs go: the outline on the mid-vertebral slice and how it was found."""

    outline: BodyOutline
    method: str
    plane: str
    slice_index: int
    fit_quality: float
    point_ras: np.ndarray
    reasons: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    endplates_s: Tuple[Optional[float], Optional[float]] = (None, None)  # superior, inferior (mm along normal)
    snapped: bool = False
    fallback: bool = False
    axis_ras: Optional[np.ndarray] = None  # the vertebra's axis when the plane is perpendicular to it
    axis_tilt_deg: Optional[float] = None
    #: mid-height minus the chosen slice, in slices (+: towards the next slice index); None when the
    #: slice was not chosen from the endplates
    mid_offset_slices: Optional[float] = None
    #: the voxel (IJK) the placement was last made from: the body's own centre, not the click
    seed_ijk: Optional[Tuple[int, int, int]] = None
    #: the factor the trabecular region was shrunk by (``conservative_scale``; 1 = not shrunk)
    roi_scale: float = 1.0
    #: the evidence that the ring is a vertebral body (``fit_quality.body_evidence``; None: not scored
    #: apart, the fit quality stands for it)
    body_evidence: Optional[float] = None

    @property
    def recognised(self) -> float:
        """How clearly a vertebral body was found (refusals and retries are decided on this, not on
        how exactly its edge could be drawn)."""
        return self.fit_quality if self.body_evidence is None else self.body_evidence

    def mid_slice_rule(self) -> str:
        """How the mid-vertebral slice was chosen, in words (when mid-height lies between slices, the
        nearer one; at exactly half way the one with the higher index, a fixed rule)."""
        off = self.mid_offset_slices
        if off is None:
            return "not chosen from the endplates"
        if abs(off) < MID_BETWEEN_SLICES:
            return f"slice {self.slice_index} holds mid-height ({off:+.2f} slice)"
        other = self.slice_index + (1 if off > 0 else -1)
        return (f"mid-height lies between slices {min(self.slice_index, other)} and {max(self.slice_index, other)} "
                f"({off:+.2f} slice from {self.slice_index}); the nearer, {self.slice_index}, is used "
                "(use a slab, --slab-mm, to cover both)")

    @property
    def height_mm(self) -> Optional[float]:
        sup, inf = self.endplates_s
        return None if sup is None or inf is None else float(sup - inf)

    def to_dict(self) -> Dict[str, object]:
        sup, inf = self.endplates_s
        return {
            "method": self.method,
            "plane": self.plane,
            "slice_index": int(self.slice_index),
            "fit_quality": round(float(self.fit_quality), 3),
            "reasons": list(self.reasons),
            "superior_endplate_mm": None if sup is None else round(float(sup), 3),
            "inferior_endplate_mm": None if inf is None else round(float(inf), 3),
            "endplate_distance_mm": None if self.height_mm is None else round(self.height_mm, 3),
            "snapped": bool(self.snapped),
            "conservative_fallback": bool(self.fallback),
            "roi_scale": round(float(self.roi_scale), 4),
            **({} if self.mid_offset_slices is None else {
                "mid_height_offset_slices": round(float(self.mid_offset_slices), 3),
                "mid_slice_rule": self.mid_slice_rule()}),
            **({} if self.axis_ras is None else {
                "vertebra_axis_ras": [round(float(x), 6) for x in self.axis_ras],
                "axis_tilt_deg": round(float(self.axis_tilt_deg), 3)}),
            **self.expected_errors(),
        }

    def expected_errors(self) -> Dict[str, float]:
        """What the fit quality stands for, when the reasons carry it (``fit_quality.FitReasons``):
        how far the outline is expected to reach into the cortex and the plane to lie from
        mid-height (mm)."""
        reach = getattr(self.reasons, "expected_reach_mm", None)
        height = getattr(self.reasons, "expected_height_error_mm", None)
        if reach is None or height is None:
            return {}
        return {"expected_reach_into_cortex_mm": round(max(float(reach), 0.0), 2),
                "expected_distance_from_mid_height_mm": round(float(height), 2)}




# The body's contour on one slab
# ----------------------------------------------------------------------------------------------
@dataclass
class Contour:
    """The outer cortical contour found on one slab, rays from ``center_xy``."""

    center_xy: np.ndarray  # box (x, y) of the ray origin
    s: int  # box slice
    angles: np.ndarray  # ray angles from the image's in-plane anterior towards the left
    r_out: np.ndarray  # outer edge radius per ray (mm)
    r_in: np.ndarray  # inner rise of the shell per ray (mm, NaN where no shell)
    shell: np.ndarray  # bool per ray: a cortical shell (rise and drop) at the edge
    interior_hu: float
    drop_hu: np.ndarray
    outside_fov: np.ndarray  # bool per ray: the ray left the image before its edge
    u: np.ndarray
    v: np.ndarray

    def points_ras(self, box: Box, radii=None) -> np.ndarray:
        r = self.r_out if radii is None else radii
        dirs = np.outer(np.cos(self.angles), self.u) + np.outer(np.sin(self.angles), self.v)
        dxy = box.direction_xy(dirs)
        xy = self.center_xy[None, :] + r[:, None] * dxy
        return box.to_ras(np.column_stack([xy, np.full(len(r), float(self.s))]))

    def area_mm2(self) -> float:
        x, y = self.r_out * np.cos(self.angles), self.r_out * np.sin(self.angles)
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def centroid_offset_mm(self) -> np.ndarray:
        """Area centroid of the contour polygon relative to the ray origin, in (u, v) mm."""
        x, y = self.r_out * np.cos(self.angles), self.r_out * np.sin(self.angles)
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        a = 0.5 * cross.sum()
        if abs(a) < 1e-9:
            return np.zeros(2)
        return np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6.0 * a)

    @property
    def shell_fraction(self) -> float:
        return float(np.mean(self.shell))

    def quadrant_fractions(self) -> List[float]:
        q = (np.round(self.angles / (np.pi / 2)).astype(int)) % 4
        return [float(np.mean(self.shell[q == i])) for i in range(4)]

    def ring_reasons(self) -> List[str]:
        reasons = []
        q = self.quadrant_fractions()
        if not np.isfinite(self.interior_hu):
            reasons.append("the point's neighbourhood is outside the image")
        elif self.shell_fraction < MIN_SHELL_FRACTION or min(q) < MIN_QUADRANT_FRACTION:
            reasons.append(
                f"no cortical shell surrounds the point (clear on {self.shell_fraction:.0%} of the rim around it: "
                f"front {q[0]:.0%}, left {q[1]:.0%}, back {q[2]:.0%}, right {q[3]:.0%})")
        else:
            area = self.area_mm2()
            if area < MIN_BODY_AREA_MM2:
                reasons.append(f"the bone ring around the point encloses only {area / 100:.1f} cm², too small for a "
                               "vertebral body (spinal canal or foramen?)")
            elif area > MAX_BODY_AREA_MM2:
                reasons.append(f"the ring around the point encloses {area / 100:.1f} cm², too large for a "
                               "vertebral body")
        return reasons



# The spinal canal behind the body
# ----------------------------------------------------------------------------------------------
@dataclass
class Canal:
    """The spinal canal found behind a body contour (box slice coordinates and RAS directions).

    ``front_xy`` — where the canal meets the body's posterior wall on the canal's axis;
    ``center_xy`` — the canal's centre (lateral: midway between the pedicles);
    ``axis`` — RAS in-plane unit vector from the canal's centre towards the body (anterior);
    ``half_width_mm`` — half the distance between the pedicles; ``low_hu`` — the HU below which
    the smoothed image reads as canal content."""

    front_xy: np.ndarray
    center_xy: np.ndarray
    axis: np.ndarray
    lateral: np.ndarray
    half_width_mm: float
    low_hu: float

    def caps(self, box: Box, origin_xy, dirs: np.ndarray, radii: np.ndarray, prof: np.ndarray) -> np.ndarray:
        """Per ray: the radius (mm) at which the ray enters the canal (+ ``CANAL_WALL_MM``), inf
        for rays that do not meet it. A ray enters where it is inside the canal's band (within
        its half-width of the canal axis, behind the front) and the HU stays low for
        ``CANAL_ENTRY_MM``: the posterior wall's own concavity is respected."""
        o = box.p @ (np.asarray(origin_xy, dtype=float) - self.front_xy)  # origin relative to the front (RAS)
        along = (o @ self.axis) + radii[None, :] * (dirs @ self.axis)[:, None]
        lat = (o @ self.lateral) + radii[None, :] * (dirs @ self.lateral)[:, None]
        band = (np.abs(lat) <= self.half_width_mm) & (along <= CANAL_WALL_MM + 1.5) & (along >= -25.0)
        low = np.isfinite(prof) & (prof < self.low_hu)
        n = max(1, int(round(CANAL_ENTRY_MM / RAY_STEP_MM)))
        c = np.cumsum(np.concatenate([np.zeros((low.shape[0], 1), dtype=int), low.astype(int)], axis=1), axis=1)
        run = np.zeros_like(low)
        m = low.shape[1] - n + 1
        if m > 0:
            run[:, :m] = (c[:, n:n + m] - c[:, :m]) == n
        enter = band & run
        has = enter.any(axis=1)
        first = np.argmax(enter, axis=1)
        cap = np.where(has, radii[first] + CANAL_WALL_MM, np.inf)
        # beside the canal the body ends at about the canal's front too (the posterior wall is
        # slightly concave): the pedicles continue the bone behind it, with no edge between
        behind = along < -POSTERIOR_CORNER_MM
        has = behind.any(axis=1)
        corner = np.where(has, radii[np.argmax(behind, axis=1)], np.inf)
        return np.minimum(cap, corner)
