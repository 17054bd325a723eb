"""Automatic placement from one click: the vertebral body in 3-D → mid-vertebral slice → outline.

What a radiologist does by hand (seed 002, Methods; QCT_BRIEF §1), done around one point:

1. **Find the body on the click's slice.** Rays are cast in ``N_RAYS`` directions on the image's
   axial slice (averaged over a thin slab so trabecular spikes and noise average out). On each
   ray the *outer* edge of bone is where the HU falls most steeply (cortex → soft tissue, fat or
   spinal canal). A closed contour is chosen jointly over all rays by dynamic programming
   (each ray's edge strength, minus a penalty for radius jumps between neighbouring rays, and
   minus a penalty for an edge lying behind a stronger one: the body's wall comes before the
   neural arch or a transverse process). Rays are re-cast from the contour's centroid until it
   settles. The contour is accepted as a vertebral body only when a **cortical shell** surrounds
   the point — on most rays the profile rises above the interior before the edge and drops
   behind it — and the enclosed area is that of a lumbar body. The HU at the point itself is
   never used to decide (osteoporotic trabecular bone reads 30–80 HU, like muscle).
2. **Endplates → mid-height.** Along the image's slice axis, the mean HU of a small central
   disc of the body is profiled over ±``CROP_HALF_AXIAL_MM``; the endplates are the profile's
   prominent peaks. The body is the interval between the nearest peak above and below the
   click; an interval without a cortical ring (an intervertebral disc, where the click may have
   landed) is skipped in favour of the nearest body, with a warning. The mid-vertebral slice is
   the image's axial slice nearest the midpoint of the two endplates (as seed 002 did).
3. **Outline on the mid slice.** The contour is fitted again on the mid slice; the AP axis is the
   contour's minor principal axis (a lumbar body is wider than deep), signed towards the image's
   anterior, so a rotated vertebra gets rotated ROIs; the cortical thickness is the median
   distance between the inner rise and the outer edge of the shell; the trabecular boundary is
   the outer contour offset inwards by it. AP depth, width and the demarcation line follow
   (``roifamily``).
4. **Fit quality** in [0, 1] (the weakest of: fraction of rays with a clear shell, left–right
   symmetry about the AP axis, endplates found, plausible size) with reasons. Below
   ``LOW_QUALITY`` the trabecular region is shrunk towards its centre (``FALLBACK_SCALE``) — a
   conservative ROI — and a warning asks the user to check it.

All work is local: a box of about ±``CROP_HALF_INPLANE_MM`` in-plane and
±``CROP_HALF_AXIAL_MM`` along the slice axis around the click is read; the whole volume is
never processed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PlacementError
from .geometry import in_plane_frame
from .placement import _smooth
from .roifamily import BodyOutline
from .volume import Volume

METHOD_CLICK = "auto (click)"
METHOD_LABEL = "auto (label)"
PLANE_AXIAL = "image axial slice"

N_RAYS = 72
RAY_STEP_MM = 0.5
MAX_RAY_MM = 40.0
MIN_RAY_MM = 1.0
#: In-plane half-width and axial half-height (mm) of the box read around the click.
CROP_HALF_INPLANE_MM = MAX_RAY_MM + 12.0
CROP_HALF_AXIAL_MM = 45.0
#: Slab (± mm) averaged for the in-plane fit: the body's walls are vertical over it.
FIT_HALF_SLAB_MM = 3.0
#: Dynamic programming: largest radius change between neighbouring rays (mm), its cost per mm
#: (in units of the typical edge strength) and the weight of a stronger edge earlier on the ray.
MAX_JUMP_MM = 3.0
JUMP_COST = 0.12
EARLIER_EDGE_WEIGHT = 1.0
#: Cost per mm of radius (prefers the innermost coherent edge: the body before the neural arch).
RADIUS_COST = 0.01
#: A low-HU gap (fluid or fat) at least GAP_MM long and this far below the interior ends the body.
GAP_BELOW_INTERIOR_HU = 40.0
GAP_MM = 3.0
#: A ray shows a cortical shell when the profile rises this much above the interior before the
#: edge and drops this much across it (HU). At 3 mm slices the posterior wall is weak (≈ +50 HU).
SHELL_RISE_HU = 30.0
EDGE_DROP_HU = 60.0
MIN_SHELL_FRACTION = 0.6
MIN_QUADRANT_FRACTION = 0.3
#: Outer cross-section of lumbar (and T11–L5) bodies, mm² (adult bodies ≈ 8–25 cm²).
MIN_BODY_AREA_MM2 = 300.0
MAX_BODY_AREA_MM2 = 4500.0
#: A click up to this far outside the found body is snapped to it (with a warning).
SNAP_MM = 6.0
#: The AP axis comes from the outline only when its principal extents differ by this ratio and it
#: turns less than MAX_ROTATION_DEG from the image's anterior (axial rotation of lumbar vertebrae
#: beyond ~30° is exceptional); otherwise the image's anterior direction is used, with a reason.
MIN_AXIS_RATIO = 1.08
MAX_ROTATION_DEG = 30.0
#: The canal check probes this far (mm) in front of a candidate ring's anterior edge.
CANAL_PROBE_MM = 12.0
#: Endplate peaks in the central profile must stand out by this much (HU).
PLATE_PROMINENCE_HU = 30.0
#: Plausible distance between the endplates (mm); a shorter interval is a disc.
MIN_BODY_HEIGHT_MM = 12.0
MAX_BODY_HEIGHT_MM = 50.0
#: Endplate interval and wall run differing by more than this (mm) → trust the wall.
WALL_PLATE_MISMATCH_MM = 9.0
#: Cortical margin limits (mm).
MIN_CORTICAL_MM = 1.0
LOW_QUALITY = 0.5
REASON_QUALITY = 0.8
FALLBACK_SCALE = 0.8


# ----------------------------------------------------------------------------------------------
# Result
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
        }


# ----------------------------------------------------------------------------------------------
# A box of the image around a point, as [s, y, x] (s = slice axis)
# ----------------------------------------------------------------------------------------------
class _Box:
    def __init__(self, volume: Volume, center_ras, half_inplane_mm: float, half_axial_mm: float):
        self.volume = volume
        self.axis = volume.slice_axis()
        self.in_axes = [a for a in (0, 1, 2) if a != self.axis]
        spacing = volume.spacing
        ijk = volume.ras_to_ijk_points(center_ras)[0]
        dims = np.asarray(volume.dimensions)
        half = np.empty(3)
        half[self.in_axes] = half_inplane_mm / spacing[self.in_axes]
        half[self.axis] = half_axial_mm / spacing[self.axis]
        lo = np.maximum(np.floor(ijk - half).astype(int), 0)
        hi = np.minimum(np.ceil(ijk + half).astype(int), dims - 1)
        self.lo, self.hi = lo, hi
        # array is [k, j, i]; IJK axis a is array axis 2 - a.
        sl = [slice(None)] * 3
        for a in range(3):
            sl[2 - a] = slice(int(lo[a]), int(hi[a]) + 1)
        sub = volume.array[tuple(sl)]
        # reorder to [s, y, x] with x = in_axes[0], y = in_axes[1]
        order = [2 - self.axis, 2 - self.in_axes[1], 2 - self.in_axes[0]]
        self.data = np.ascontiguousarray(np.transpose(sub, order), dtype=np.float32)
        m3 = volume.ijk_to_ras[:3, :3]
        self.p = m3[:, self.in_axes]  # RAS per in-plane index step (x, y)
        self.p_pinv = np.linalg.pinv(self.p)
        self.dx = float(spacing[self.in_axes[0]])
        self.dy = float(spacing[self.in_axes[1]])
        self.ds = float(spacing[self.axis])
        # +s in the box is +slice index; its RAS direction along the slice normal (superior)?
        self.s_sign = 1.0 if volume.direction[2, self.axis] >= 0 else -1.0
        self.normal = volume.slice_normal_ras()
        self.u0 = volume.in_plane_anterior()
        self.at_fov_edge = (lo[self.axis] == 0, hi[self.axis] == dims[self.axis] - 1)

    @property
    def ns(self) -> int:
        return self.data.shape[0]

    def to_box(self, ras) -> np.ndarray:
        """RAS → continuous (x, y, s) box coordinates."""
        ijk = self.volume.ras_to_ijk_points(ras)
        return np.stack([ijk[:, self.in_axes[0]] - self.lo[self.in_axes[0]],
                         ijk[:, self.in_axes[1]] - self.lo[self.in_axes[1]],
                         ijk[:, self.axis] - self.lo[self.axis]], axis=1)

    def to_ras(self, xys) -> np.ndarray:
        xys = np.atleast_2d(np.asarray(xys, dtype=float))
        ijk = np.zeros((xys.shape[0], 3))
        ijk[:, self.in_axes[0]] = xys[:, 0] + self.lo[self.in_axes[0]]
        ijk[:, self.in_axes[1]] = xys[:, 1] + self.lo[self.in_axes[1]]
        ijk[:, self.axis] = xys[:, 2] + self.lo[self.axis]
        return self.volume.ijk_to_ras_points(ijk)

    def slice_index(self, s: int) -> int:
        return int(s + self.lo[self.axis])

    def plane(self, s_center: int, half_mm: float) -> np.ndarray:
        reach = max(1, int(np.floor(half_mm / self.ds + 1e-6))) if half_mm > 0 else 0
        s0, s1 = max(0, s_center - reach), min(self.ns - 1, s_center + reach)
        plane = self.data[s0:s1 + 1].mean(axis=0)
        return _smooth(plane, self.dy, self.dx)

    def direction_xy(self, ras_dirs) -> np.ndarray:
        """In-plane RAS directions → (dx, dy) box steps per mm."""
        return np.asarray(ras_dirs) @ self.p_pinv.T


def _bilinear(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ny, nx = plane.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    x = np.clip(x, 0, nx - 1)
    y = np.clip(y, 0, ny - 1)
    x0 = np.minimum(np.floor(x).astype(int), max(nx - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(ny - 2, 0))
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, nx - 1), np.minimum(y0 + 1, ny - 1)
    v = (plane[y0, x0] * (1 - fx) * (1 - fy) + plane[y0, x1] * fx * (1 - fy)
         + plane[y1, x0] * (1 - fx) * fy + plane[y1, x1] * fx * fy)
    return np.where(inside, v, np.nan)


# ----------------------------------------------------------------------------------------------
# In-plane contour
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

    def points_ras(self, box: _Box, radii=None) -> np.ndarray:
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
                f"no cortical shell surrounds the point (found on {int(self.shell.sum())} of {len(self.shell)} "
                f"rays; anterior {q[0]:.0%}, left {q[1]:.0%}, posterior {q[2]:.0%}, right {q[3]:.0%})")
        else:
            area = self.area_mm2()
            if area < MIN_BODY_AREA_MM2:
                reasons.append(f"the bone ring around the point encloses only {area / 100:.1f} cm², too small for a "
                               "vertebral body (spinal canal or foramen?)")
            elif area > MAX_BODY_AREA_MM2:
                reasons.append(f"the ring around the point encloses {area / 100:.1f} cm², too large for a "
                               "vertebral body")
        return reasons


def _dp_contour(score: np.ndarray, step_mm: float) -> np.ndarray:
    """Circular dynamic programming: one radius index per ray maximising the summed score minus
    ``JUMP_COST`` per mm of radius change between neighbours (at most ``MAX_JUMP_MM``)."""
    n_rays, n_r = score.shape
    jump = max(1, int(round(MAX_JUMP_MM / step_mm)))
    tiled = np.concatenate([score, score, score], axis=0)
    acc = tiled[0].copy()
    back = np.zeros(tiled.shape, dtype=np.int32)
    offsets = np.arange(-jump, jump + 1)
    penalty = JUMP_COST * np.abs(offsets) * step_mm
    idx = np.arange(n_r)
    src = idx[None, :] + offsets[:, None]  # (n_off, n_r)
    ok = (src >= 0) & (src < n_r)
    src_c = np.clip(src, 0, n_r - 1)
    pen = np.where(ok, penalty[:, None], np.inf)
    cols = np.arange(n_r)
    for k in range(1, tiled.shape[0]):
        cand = acc[src_c] - pen
        a = np.argmax(cand, axis=0)
        best = cand[a, cols]
        arg = src_c[a, cols]
        acc = best + tiled[k]
        back[k] = arg
    path = np.zeros(tiled.shape[0], dtype=np.int32)
    path[-1] = int(np.argmax(acc))
    for k in range(tiled.shape[0] - 1, 0, -1):
        path[k - 1] = back[k, path[k]]
    return path[n_rays:2 * n_rays]


def fit_contour(box: _Box, plane: np.ndarray, s: int, center_xy, u=None,
                prior_r: Optional[np.ndarray] = None, prior_window=(6.0, 4.0)) -> Contour:
    """Outer cortical contour on ``plane`` around ``center_xy`` (see module docstring, step 1).

    ``prior_r`` (mm per ray) restricts each ray's edge to ``[prior − window[0], prior + window[1]]``
    (used with a segmentation label)."""
    u = box.u0 if u is None else u
    u, v, _ = in_plane_frame(box.normal, u)
    angles = np.linspace(0.0, 2.0 * np.pi, N_RAYS, endpoint=False)
    radii = np.arange(0.0, MAX_RAY_MM + 1e-9, RAY_STEP_MM)
    dirs = np.outer(np.cos(angles), u) + np.outer(np.sin(angles), v)
    dxy = box.direction_xy(dirs)  # (rays, 2) box steps per mm
    cx, cy = float(center_xy[0]), float(center_xy[1])
    x = cx + radii[None, :] * dxy[:, 0:1]
    y = cy + radii[None, :] * dxy[:, 1:2]
    prof = _bilinear(plane, x, y)
    in_plane_max = max(box.dx, box.dy)
    h = max(1, int(round(max(1.0, 0.5 * in_plane_max) / RAY_STEP_MM)))
    filled = np.where(np.isfinite(prof), prof, np.nan)
    g = np.full(prof.shape, np.nan)
    g[:, h:-h] = filled[:, :-2 * h] - filled[:, 2 * h:]
    valid = np.isfinite(g)
    gpos = np.where(valid, np.clip(g, 0.0, None), 0.0)
    # the strongest edge met earlier on the ray (at least 2h before)
    run = np.maximum.accumulate(gpos, axis=1)
    earlier = np.zeros_like(gpos)
    earlier[:, 2 * h:] = run[:, :-2 * h]
    score = gpos - EARLIER_EDGE_WEIGHT * earlier
    scale = float(np.median(np.max(score, axis=1)))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    score = score / scale - RADIUS_COST * radii[None, :]
    # An edge beyond a stretch of fluid/fat (the spinal canal behind the posterior wall, the fat
    # around the body) is not the body's: penalise positions after a long low-HU gap.
    near = prof[:, radii <= 5.0]
    rough = float(np.nanmedian(near)) if np.isfinite(near).any() else np.nan
    if np.isfinite(rough):
        dip = min(rough - GAP_BELOW_INTERIOR_HU, 0.5 * rough) if rough > 0 else rough - GAP_BELOW_INTERIOR_HU
        low = np.isfinite(prof) & (prof < dip)
        n_gap = max(1, int(round(GAP_MM / RAY_STEP_MM)))
        c = np.cumsum(low, axis=1)
        run_long = np.zeros_like(low)
        run_long[:, n_gap - 1:] = (c[:, n_gap - 1:] - np.concatenate(
            [np.zeros((low.shape[0], 1), dtype=c.dtype), c[:, :-n_gap]], axis=1)) == n_gap
        seen = np.maximum.accumulate(run_long, axis=1)
        after = np.zeros_like(seen)
        after[:, h:] = seen[:, :-h]
        score[after] -= 2.0
    score[:, radii < MIN_RAY_MM] = -1e3
    score[~valid] = np.minimum(score[~valid], -0.5)
    if prior_r is not None:
        lo = prior_r[:, None] - prior_window[0]
        hi = prior_r[:, None] + prior_window[1]
        score[(radii[None, :] < lo) | (radii[None, :] > hi)] = -1e3
    path = _dp_contour(score, RAY_STEP_MM)
    r_out = radii[path].astype(float)
    rows = np.arange(N_RAYS)
    n_r = len(radii)
    # sub-step refinement (parabola through the edge strength)
    i = np.clip(path, 1, n_r - 2)
    ga, gb, gc = g[rows, i - 1], g[rows, i], g[rows, i + 1]
    den = ga - 2 * gb + gc
    ok = (path >= 1) & (path <= n_r - 2) & np.isfinite(ga + gb + gc) & (den < 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(ok, np.clip(0.5 * (ga - gc) / np.where(ok, den, -1.0), -0.5, 0.5), 0.0)
    r_out = radii[path].astype(float) + RAY_STEP_MM * shift
    # interior and shell per ray
    inner = radii[None, :] <= 0.5 * r_out[:, None]
    vals = prof[inner & np.isfinite(prof)]
    interior = float(np.median(vals)) if vals.size else float("nan")
    back_n = int(round(4.0 / RAY_STEP_MM))
    drop = np.where(np.isfinite(g[rows, path]), g[rows, path], 0.0)
    ridx = np.arange(n_r)[None, :]
    reach = np.minimum(path + 2 * h, n_r - 1)
    outside = np.any(~np.isfinite(prof) & (ridx <= reach[:, None]), axis=1)
    win = (ridx >= (path - back_n)[:, None]) & (ridx <= path[:, None])
    pw = np.where(win & np.isfinite(prof), prof, -np.inf)
    pk = np.argmax(pw, axis=1)
    peak = pw[rows, pk]
    shell = np.isfinite(peak) & (peak - interior >= SHELL_RISE_HU) & (drop >= EDGE_DROP_HU)
    half = interior + 0.5 * (peak - interior)
    below = (ridx <= pk[:, None]) & (prof < half[:, None])
    has = below.any(axis=1)
    j = np.where(has, n_r - 1 - np.argmax(below[:, ::-1], axis=1), 0)
    j1 = np.minimum(j + 1, n_r - 1)
    pa, pb = prof[rows, j], prof[rows, j1]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(pb != pa, (half - pa) / (pb - pa), 0.0)
    r_in = np.where(has, radii[j] + np.clip(frac, 0, 1) * RAY_STEP_MM, 0.0)
    r_in = np.where(shell, r_in, np.nan)
    return Contour(np.array([cx, cy]), int(s), angles, r_out, r_in, shell, interior, drop, outside, u, v)


def _fit_centred(box: _Box, plane: np.ndarray, s: int, start_xy, u=None, iterations: int = 4,
                 max_shift_mm: float = 30.0, prior_fn=None) -> Contour:
    """Fit, then re-cast the rays from the contour's centroid until it settles."""
    c = np.asarray(start_xy, dtype=float)
    start = c.copy()
    contour = fit_contour(box, plane, s, c, u, prior_r=None if prior_fn is None else prior_fn(c, u))
    for _ in range(iterations):
        off = contour.centroid_offset_mm()
        shift_ras = off[0] * contour.u + off[1] * contour.v
        new_c = c + box.direction_xy(shift_ras[None, :])[0]
        moved = np.hypot((new_c[0] - start[0]) * box.dx, (new_c[1] - start[1]) * box.dy)
        if moved > max_shift_mm:
            break
        c = new_c
        contour = fit_contour(box, plane, s, c, u, prior_r=None if prior_fn is None else prior_fn(c, u))
        if np.hypot(*off) < 0.3:
            break
    return contour


def _inside_contour(contour: Contour, box: _Box, point_xy) -> float:
    """Signed distance-like test: how far (mm) the point lies outside the contour (≤ 0 inside)."""
    d = np.array([(point_xy[0] - contour.center_xy[0]) * 1.0, (point_xy[1] - contour.center_xy[1]) * 1.0])
    ras = box.p @ d
    du, dv = float(ras @ contour.u), float(ras @ contour.v)
    r = float(np.hypot(du, dv))
    if r < 1e-9:
        return -float(contour.r_out.min())
    ang = np.arctan2(dv, du) % (2 * np.pi)
    rb = float(np.interp(ang, np.append(contour.angles, 2 * np.pi), np.append(contour.r_out, contour.r_out[0])))
    return r - rb


# ----------------------------------------------------------------------------------------------
# Endplates along the slice axis
# ----------------------------------------------------------------------------------------------
def central_profile(box: _Box, center_xy, radius_mm: float) -> np.ndarray:
    """Mean HU per box slice within ``radius_mm`` (in-plane) of ``center_xy``."""
    ny, nx = box.data.shape[1:]
    rx = int(np.ceil(radius_mm / box.dx)) + 1
    ry = int(np.ceil(radius_mm / box.dy)) + 1
    cx, cy = int(round(center_xy[0])), int(round(center_xy[1]))
    x0, x1 = max(0, cx - rx), min(nx, cx + rx + 1)
    y0, y1 = max(0, cy - ry), min(ny, cy + ry + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    off = np.stack([xx - center_xy[0], yy - center_xy[1]], axis=-1) @ box.p.T
    mask = np.linalg.norm(off, axis=-1) <= radius_mm
    if not mask.any():
        mask[min(max(cy - y0, 0), mask.shape[0] - 1), min(max(cx - x0, 0), mask.shape[1] - 1)] = True
    sub = box.data[:, y0:y1, x0:x1]
    return sub[:, mask].mean(axis=1)


def _peaks(m: np.ndarray, min_prominence: float) -> List[Tuple[float, float]]:
    """(sub-slice position, prominence) of the prominent local maxima of a 1-D profile."""
    out = []
    n = m.size
    for i in range(n):
        left = m[i - 1] if i > 0 else -np.inf
        right = m[i + 1] if i < n - 1 else -np.inf
        if not (m[i] >= left and m[i] > right) and not (m[i] > left and m[i] >= right):
            continue
        # prominence: height above the higher of the two minima towards a higher point (or the end)
        j = i
        lmin = m[i]
        while j > 0 and m[j - 1] <= m[i]:
            j -= 1
            lmin = min(lmin, m[j])
        j = i
        rmin = m[i]
        while j < n - 1 and m[j + 1] <= m[i]:
            j += 1
            rmin = min(rmin, m[j])
        base = max(lmin if i > 0 else -np.inf, rmin if i < n - 1 else -np.inf)
        if not np.isfinite(base):
            base = min(lmin, rmin)
        prom = float(m[i] - base)
        if prom < min_prominence:
            continue
        pos = float(i)
        if 0 < i < n - 1:
            den = m[i - 1] - 2 * m[i] + m[i + 1]
            if den < 0:
                pos += float(np.clip(0.5 * (m[i - 1] - m[i + 1]) / den, -0.5, 0.5))
        out.append((pos, prom))
    return out


def wall_run(box: _Box, contour: Contour) -> Tuple[Optional[float], Optional[float], bool, bool]:
    """The body's axial extent from its wall: slices where the HU just inside the outer contour
    stays high (a disc has no cortical wall). Returns (lo, hi) in box slices (sub-slice, None if
    the run reaches the box end) and whether each open end is the image's edge."""
    r = np.maximum(_smooth_circular(contour.r_out, 2) - 1.0, 0.5)
    dirs = np.outer(np.cos(contour.angles), contour.u) + np.outer(np.sin(contour.angles), contour.v)
    dxy = box.direction_xy(dirs)
    x = np.clip(contour.center_xy[0] + r * dxy[:, 0], 0, box.data.shape[2] - 1)
    y = np.clip(contour.center_xy[1] + r * dxy[:, 1], 0, box.data.shape[1] - 1)
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    w = np.median(box.data[:, yi, xi], axis=1)
    s0 = contour.s
    ring = float(np.median(w[max(0, s0 - 1):s0 + 2]))
    low = float(np.min(w))
    thr = low + 0.5 * (ring - low)
    if ring - low < EDGE_DROP_HU:
        return None, None, False, False
    lo_i = s0
    while lo_i - 1 >= 0 and w[lo_i - 1] >= thr:
        lo_i -= 1
    hi_i = s0
    while hi_i + 1 < w.size and w[hi_i + 1] >= thr:
        hi_i += 1

    def cross(a, b):  # sub-slice crossing of thr between slices a (above) and b (below thr)
        wa, wb = w[a], w[b]
        return a + (b - a) * (wa - thr) / (wa - wb) if wa != wb else 0.5 * (a + b)

    lo = cross(lo_i, lo_i - 1) if lo_i > 0 else None
    hi = cross(hi_i, hi_i + 1) if hi_i < w.size - 1 else None
    return lo, hi, lo is None and box.at_fov_edge[0], hi is None and box.at_fov_edge[1]


@dataclass
class _Interval:
    lo: Optional[float]  # inferior-side plate position in box slices (or None: open)
    hi: Optional[float]
    lo_edge: bool = False  # open because the image ends there
    hi_edge: bool = False


def _intervals(box: _Box, m: np.ndarray) -> List[_Interval]:
    """Intervals between successive endplate peaks of the central profile (in box-slice order)."""
    base = float(np.median(m))
    prom = max(PLATE_PROMINENCE_HU, 0.15 * (float(m.max()) - base))
    peaks = [p for p, _ in _peaks(m, prom)]
    # merge peaks closer than 4 mm (one thick/blurred endplate)
    merged: List[float] = []
    for p in peaks:
        if merged and (p - merged[-1]) * box.ds < 4.0:
            merged[-1] = 0.5 * (merged[-1] + p)
        else:
            merged.append(p)
    edges = [None] + merged + [None]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(_Interval(a, b, lo_edge=a is None and box.at_fov_edge[0], hi_edge=b is None and box.at_fov_edge[1]))
    return out


# ----------------------------------------------------------------------------------------------
# Outline from a contour
# ----------------------------------------------------------------------------------------------
def _ap_axis_from_points(pts_ras: np.ndarray, normal: np.ndarray, u0: np.ndarray) -> Tuple[np.ndarray, float]:
    """Minor principal axis of the contour (a lumbar body is wider than deep), signed towards
    the image's anterior; and the ratio of the principal extents (≥ 1)."""
    u0, v0, n = in_plane_frame(normal, u0)
    c = pts_ras.mean(axis=0)
    # polygon (not vertex) second moments, in the (u0, v0) plane
    x, y = (pts_ras - c) @ u0, (pts_ras - c) @ v0
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cr = x * y1 - x1 * y
    a = 0.5 * cr.sum()
    cx = ((x + x1) * cr).sum() / (6 * a)
    cy = ((y + y1) * cr).sum() / (6 * a)
    ixx = ((x * x + x * x1 + x1 * x1) * cr).sum() / (12 * a) - cx * cx
    iyy = ((y * y + y * y1 + y1 * y1) * cr).sum() / (12 * a) - cy * cy
    ixy = ((x * y1 + 2 * x * y + 2 * x1 * y1 + x1 * y) * cr).sum() / (24 * a) - cx * cy
    w, vec = np.linalg.eigh(np.array([[ixx, ixy], [ixy, iyy]]))
    minor = vec[:, 0]
    ratio = float(np.sqrt(max(w[1], 1e-12) / max(w[0], 1e-12)))
    ap = minor[0] * u0 + minor[1] * v0
    if ap @ u0 < 0:
        ap = -ap
    return ap, ratio


def _offset_polygon(poly: np.ndarray, distance: float) -> np.ndarray:
    """Move each vertex of a counter-clockwise-or-not closed polygon inwards by ``distance``."""
    p = np.asarray(poly, dtype=float)
    c = p.mean(axis=0)
    tangent = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    # orient the normals inwards
    if np.mean(np.sum(normal * (c - p), axis=1)) < 0:
        normal = -normal
    out = p + distance * normal
    # never cross the centre: keep each inner vertex on its side
    d_old = np.linalg.norm(p - c, axis=1)
    d_new = np.linalg.norm(out - c, axis=1)
    too_far = d_new > d_old
    out[too_far] = c + (p[too_far] - c) * np.clip(1 - distance / np.maximum(d_old[too_far], 1e-9), 0.05, 1)[:, None]
    return out


def _smooth_circular(r: np.ndarray, width: int = 1) -> np.ndarray:
    k = np.ones(2 * width + 1) / (2 * width + 1)
    padded = np.concatenate([r[-width:], r, r[:width]])
    return np.convolve(padded, k, mode="valid")


def outline_from_contour(box: _Box, contour: Contour, source: str, cortical_min_mm: float = MIN_CORTICAL_MM,
                         scale: float = 1.0) -> Tuple[BodyOutline, Dict[str, float]]:
    """BodyOutline (centre, AP axis, depth, width, cortical margin, trabecular polygon)."""
    r_sm = _smooth_circular(contour.r_out, 1)
    pts = contour.points_ras(box, r_sm)
    ap, ratio = _ap_axis_from_points(pts, box.normal, box.u0)
    u0 = in_plane_frame(box.normal, box.u0)[0]
    turn = float(np.degrees(np.arccos(np.clip(ap @ u0, -1.0, 1.0))))
    axis_from_image = ratio < MIN_AXIS_RATIO or turn > MAX_ROTATION_DEG
    if axis_from_image:
        ap = u0
    u, v, n = in_plane_frame(box.normal, ap)
    c0 = pts.mean(axis=0)
    s, t = (pts - c0) @ u, (pts - c0) @ v
    depth = float(s.max() - s.min())
    width = float(t.max() - t.min())
    center = c0 + 0.5 * (s.max() + s.min()) * u + 0.5 * (t.max() + t.min()) * v
    # keep the centre on the slice's plane
    ijk = box.volume.ras_to_ijk_points(center)[0]
    ijk[box.axis] = contour.s + box.lo[box.axis]
    center = box.volume.ijk_to_ras_points(ijk)[0]
    thick = contour.r_out - contour.r_in
    ok = contour.shell & np.isfinite(thick)
    cortical = float(np.median(thick[ok])) if ok.any() else 2.0
    cortical = float(np.clip(cortical, cortical_min_mm, 0.2 * min(depth, width)))
    poly = np.column_stack([(pts - center) @ u, (pts - center) @ v])
    inner = _offset_polygon(poly, cortical)
    if scale != 1.0:
        ci = inner.mean(axis=0)
        inner = ci + scale * (inner - ci)
    outline = FittedOutline(center=center, ap_axis=u, normal=n, depth_mm=depth, width_mm=width,
                          cortical_mm=cortical, inner_contour=inner,
                          meta={"source": source, "shape_ratio": round(ratio, 3)})
    # left-right symmetry about the AP axis
    from .roifamily import polygon_intervals

    f = polygon_intervals(poly)
    tt = np.linspace(-0.4 * width, 0.4 * width, 41)
    lo, hi = f(tt)
    lo_m, hi_m = f(-tt)
    asym = np.nanmean(np.abs(hi - hi_m) + np.abs(lo - lo_m)) / 2.0 / max(depth, 1e-6)
    return outline, {"asymmetry": float(asym) if np.isfinite(asym) else 1.0, "shape_ratio": ratio,
                     "axis_from_image": float(axis_from_image), "axis_turn_deg": turn}


class FittedOutline(BodyOutline):
    """A BodyOutline whose trabecular polygon is tabulated once per margin (``TABLE_SAMPLES``
    lines of constant t, linear in between): the ROI family queries it thousands of times."""

    TABLE_SAMPLES = 1201

    def inner_intervals(self, margin_mm: float = 0.0):
        cache = self.__dict__.setdefault("_tables", {})
        key = round(float(margin_mm), 9)
        if key not in cache:
            f = super().inner_intervals(margin_mm)
            poly = self.inner_contour
            t_lo, t_hi = float(poly[:, 1].min()), float(poly[:, 1].max())
            tt = np.linspace(t_lo, t_hi, self.TABLE_SAMPLES)
            lo, hi = f(tt)
            ok = np.isfinite(lo) & np.isfinite(hi)
            tt, lo, hi = tt[ok], lo[ok], hi[ok]
            cache[key] = (tt, lo, hi)
        tt, lo, hi = cache[key]

        def g(t):
            t = np.atleast_1d(np.asarray(t, dtype=float))
            a = np.interp(t, tt, lo)
            b = np.interp(t, tt, hi)
            out = (t < tt[0]) | (t > tt[-1])
            a[out] = np.nan
            b[out] = np.nan
            return a, b

        return g


def _quality(contour: Contour, metrics: Dict[str, float], plates_q: float, plates_reason: Optional[str],
             depth: float, width: float) -> Tuple[float, List[str]]:
    parts = {}
    reasons: List[str] = []
    parts["shell"] = float(np.clip((contour.shell_fraction - 0.5) / 0.4, 0, 1))
    if parts["shell"] < REASON_QUALITY:
        reasons.append(f"the cortical shell is clear on only {contour.shell_fraction:.0%} of the rays")
    parts["symmetry"] = float(np.clip(1.0 - (metrics["asymmetry"] - 0.04) / 0.16, 0, 1))
    if parts["symmetry"] < REASON_QUALITY:
        reasons.append(f"the outline is asymmetric about its AP axis ({metrics['asymmetry']:.0%} of the depth): "
                       "osteophyte, fracture or a neighbouring structure?")
    if metrics.get("axis_from_image"):
        parts["axis"] = 0.7
        reasons.append(f"the outline gives no reliable AP axis (shape ratio {metrics['shape_ratio']:.2f}, "
                       f"turn {metrics['axis_turn_deg']:.0f}°); the image's anterior direction is used")
    parts["endplates"] = plates_q
    if plates_reason:
        reasons.append(plates_reason)
    size_ok = 15.0 <= depth <= 55.0 and 20.0 <= width <= 75.0 and 0.9 <= width / depth <= 2.5
    parts["size"] = 1.0 if size_ok else 0.4
    if not size_ok:
        reasons.append(f"unusual body size (AP depth {depth:.1f} mm, width {width:.1f} mm)")
    if contour.outside_fov.mean() > 0.1:
        parts["fov"] = 0.4
        reasons.append("the body reaches the edge of the image")
    return float(min(parts.values())), reasons


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------
def _find_ring(box: _Box, s0: int, xy0) -> Tuple[Optional[Contour], List[str]]:
    plane = box.plane(s0, FIT_HALF_SLAB_MM)
    contour = _fit_centred(box, plane, s0, xy0)
    reasons = contour.ring_reasons()
    if not reasons:
        outside = _inside_contour(contour, box, xy0)
        if outside > SNAP_MM:
            reasons.append(f"the nearest bone ring is {outside:.0f} mm away from the point")
    if not reasons and _is_spinal_canal(box, plane, s0, contour):
        reasons.append("the bone ring around the point is the neural arch around the spinal canal (a vertebral body "
                       "lies directly in front of it)")
    return (None if reasons else contour), reasons


def _is_spinal_canal(box: _Box, plane: np.ndarray, s: int, contour: Contour) -> bool:
    """True when a larger bone ring (a vertebral body) lies directly anterior to ``contour``:
    then ``contour`` is the spinal canal inside the neural arch, not a body."""
    ant = float(np.median(contour.r_out[np.abs(((contour.angles + np.pi) % (2 * np.pi)) - np.pi) <= np.pi / 9]))
    probe_ras = contour.u * (ant + CANAL_PROBE_MM)
    probe_xy = contour.center_xy + box.direction_xy(probe_ras[None, :])[0]
    ny, nx = plane.shape
    if not (0 <= probe_xy[0] <= nx - 1 and 0 <= probe_xy[1] <= ny - 1):
        return False
    front = _fit_centred(box, plane, s, probe_xy, iterations=2, max_shift_mm=20.0)
    if front.ring_reasons() or front.area_mm2() <= contour.area_mm2():
        return False
    # the candidate ring must lie behind the front ring (posterior, along the image's AP direction)
    d = box.p @ (contour.center_xy - front.center_xy)
    return bool(d @ contour.u < -0.3 * float(np.median(front.r_out)))


def place_from_click(volume: Volume, point_ras: Sequence[float], level: str = "") -> Placement:
    """Find the vertebral body around a click and its outline on the mid-vertebral slice.

    Raises ``PlacementError`` (with the reasons) when no vertebral body is found around the
    point — a point in muscle, fat, the spinal canal — so that the caller can refuse or force.
    """
    prefix = f"{level}: " if level else ""
    point = np.asarray(point_ras, dtype=float).reshape(3)
    box = _Box(volume, point, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    pxys = box.to_box(point)[0]
    s_click = int(np.clip(round(pxys[2]), 0, box.ns - 1))
    warnings: List[str] = []
    snapped = False

    contour, reasons = _find_ring(box, s_click, pxys[:2])
    if contour is None:
        # A click in a disc or on an endplate: look for the nearest slice with a body ring.
        found = None
        max_steps = int(np.ceil(20.0 / box.ds))
        for step in range(1, max_steps + 1):
            for sgn in (1, -1):
                s_try = s_click + sgn * step
                if 0 <= s_try < box.ns:
                    c_try, r_try = _find_ring(box, s_try, pxys[:2])
                    if c_try is not None:
                        found = c_try
                        break
            if found is not None:
                break
            # probing every slice of a fine grid is wasteful: skip ahead on thin slices
        if found is None:
            raise PlacementError(
                f"{prefix}the point (RAS {point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) does not look inside a "
                f"vertebral body: {'; '.join(reasons)}.",
                "Click inside the vertebral body, or force the placement (--force) if you are sure.")
        contour = found
        snapped = True
        dist = abs(found.s - s_click) * box.ds
        warnings.append(f"{prefix}the point is not inside a vertebral body on its own slice (intervertebral disc or "
                        f"endplate?); snapped {dist:.1f} mm to the nearest body.")
    else:
        outside = _inside_contour(contour, box, pxys[:2])
        if outside > 0:
            snapped = True
            warnings.append(f"{prefix}the point lies {outside:.1f} mm outside the body's outer cortex; snapped to the "
                            "body.")

    # --- endplates ---------------------------------------------------------------------------
    r_min = float(np.min(_smooth_circular(contour.r_out, 2)))
    m = central_profile(box, contour.center_xy, max(2.0, 0.45 * r_min))
    intervals = _intervals(box, m)
    plates_q, plates_reason = 1.0, None
    chosen = None
    s_ring = contour.s
    for iv in intervals:
        if (iv.lo is None or iv.lo <= s_ring) and (iv.hi is None or s_ring <= iv.hi):
            chosen = iv
            break
    if chosen is not None and chosen.lo is not None and chosen.hi is not None:
        if (chosen.hi - chosen.lo) * box.ds < MIN_BODY_HEIGHT_MM:
            # the ring slice sits in a short interval: a disc; try the neighbouring intervals
            i = intervals.index(chosen)
            cands = [intervals[j] for j in (i - 1, i + 1) if 0 <= j < len(intervals)]
            cands = [c for c in cands if c.lo is not None and c.hi is not None
                     and MIN_BODY_HEIGHT_MM <= (c.hi - c.lo) * box.ds <= MAX_BODY_HEIGHT_MM]
            if cands:
                chosen = min(cands, key=lambda c: abs(0.5 * (c.lo + c.hi) - s_ring))
                if not snapped:
                    warnings.append(f"{prefix}the point lies in an intervertebral disc; snapped to the nearest body.")
                    snapped = True
    sup = inf = None
    w_lo, w_hi, w_lo_edge, w_hi_edge = wall_run(box, contour)
    plates_ok = (chosen is not None and chosen.lo is not None and chosen.hi is not None
                 and MIN_BODY_HEIGHT_MM <= (chosen.hi - chosen.lo) * box.ds <= MAX_BODY_HEIGHT_MM)
    wall_ok = (w_lo is not None and w_hi is not None
               and MIN_BODY_HEIGHT_MM <= (w_hi - w_lo) * box.ds <= MAX_BODY_HEIGHT_MM)
    if plates_ok and wall_ok and abs((chosen.hi - chosen.lo) - (w_hi - w_lo)) * box.ds > WALL_PLATE_MISMATCH_MM:
        # a dense focus inside the body (bone island) reads as an extra "endplate" in the central
        # profile; the wall, all around the body, is not fooled by it
        plates_ok = False
    if plates_ok:
        lo_s, hi_s = chosen.lo, chosen.hi
    elif wall_ok:
        lo_s, hi_s = w_lo, w_hi
    else:
        lo_s = hi_s = None
    if lo_s is not None:
        s_mid = 0.5 * (lo_s + hi_s)
        ends = [float(box.to_ras([[contour.center_xy[0], contour.center_xy[1], q]])[0] @ box.normal)
                for q in (lo_s, hi_s)]
        sup, inf = max(ends), min(ends)
    else:
        known = w_lo if w_lo is not None else w_hi
        if known is None and chosen is not None:
            known = chosen.lo if chosen.lo is not None else chosen.hi
        at_edge = w_lo_edge or w_hi_edge or (chosen is not None and (chosen.lo_edge or chosen.hi_edge))
        if known is not None and at_edge:
            plates_q = 0.6
            plates_reason = "the vertebra is partly outside the image: only one endplate is visible"
            warnings.append(f"{prefix}{plates_reason}; the mid-vertebral slice is estimated.")
            typical = 0.5 * 25.0 / box.ds
            below_known = w_lo is not None or (w_hi is None and chosen is not None and chosen.lo is not None)
            direction = 1 if below_known else -1
            s_mid = float(np.clip(known + direction * typical, 0, box.ns - 1))
        else:
            plates_q = 0.4
            plates_reason = "the endplates were not found; the click's slice is used"
            warnings.append(f"{prefix}{plates_reason}.")
            s_mid = float(s_ring)
    s_fit = int(np.clip(round(s_mid), 0, box.ns - 1))

    # --- outline on the mid slice ------------------------------------------------------------
    half = FIT_HALF_SLAB_MM
    if sup is not None:
        half = min(half, 0.2 * (sup - inf))
    plane = box.plane(s_fit, half)
    final = _fit_centred(box, plane, s_fit, contour.center_xy)
    if final.ring_reasons():
        # the mid slice is worse than the ring slice (e.g. a bone island): keep the ring's shape there
        plates_reason = (plates_reason + "; " if plates_reason else "") + "the mid-slice outline was weak"
        final = fit_contour(box, plane, s_fit, contour.center_xy, prior_r=contour.r_out, prior_window=(3.0, 3.0))
    outline, metrics = outline_from_contour(box, final, METHOD_CLICK)
    quality, q_reasons = _quality(final, metrics, plates_q, plates_reason, outline.depth_mm, outline.width_mm)
    fallback = False
    if quality < LOW_QUALITY:
        outline, metrics = outline_from_contour(box, final, METHOD_CLICK + ", conservative", scale=FALLBACK_SCALE)
        fallback = True
        warnings.append(f"{prefix}low fit quality ({quality:.2f}: {'; '.join(q_reasons)}); the ROIs were shrunk to "
                        f"{FALLBACK_SCALE:.0%} of the trabecular region — check them.")
    elif q_reasons:
        warnings.append(f"{prefix}fit quality {quality:.2f}: {'; '.join(q_reasons)}.")
    outline.meta.update({"fit_quality": round(quality, 3)})
    return Placement(outline=outline, method=METHOD_CLICK, plane=PLANE_AXIAL, slice_index=box.slice_index(s_fit),
                     fit_quality=quality, point_ras=point, reasons=q_reasons, warnings=warnings,
                     endplates_s=(sup, inf), snapped=snapped, fallback=fallback)
