"""Automatic placement from one click: the vertebral body in 3-D → mid-vertebral slice → outline.

What a radiologist does by hand (seed 002, Methods; QCT_BRIEF §1), done around one point:

1. **Find the body on the click's slice.** Rays are cast in ``N_RAYS`` directions on the image's
   axial slice (the per-pixel median of a thin slab's slices, so noise averages out and a dense
   focus in one slice does not draw a ring inside the body). On each
   ray the *outer* edge of bone is where the HU falls most steeply (cortex → soft tissue, fat or
   spinal canal). A closed contour is chosen jointly over all rays by dynamic programming
   (each ray's edge strength, minus a penalty for radius jumps between neighbouring rays, and
   minus a penalty for an edge lying behind a stronger one: the body's wall comes before the
   neural arch or a transverse process). Rays are re-cast from the contour's centroid until it
   settles. The contour is accepted as a vertebral body only when a **cortical shell** surrounds
   the point — on most rays the profile rises above the interior before the edge and drops
   behind it — and the enclosed area is that of a lumbar body; a click just outside the cortex
   (up to ``SNAP_MM``) is found from seeds around it. The HU at the point itself is
   never used to decide (osteoporotic trabecular bone reads 30–80 HU, like muscle).
   **The spinal canal** (``find_canal``: a low-HU hole directly behind the body with bone — the
   pedicles — on both sides) fixes the posterior wall, which thick slices often do not show
   (the basivertebral foramen at mid-height has no cortex at all): rays entering the canal end
   at its front and count as shell rays, and no part of the outline lies more than
   ``POSTERIOR_CORNER_MM`` behind that front (beyond it are the pedicles, with no edge between).
   **Smoothness prior**: a robust (Tukey-weighted) Fourier curve of order ``SMOOTH_ORDER`` is
   fitted to the radii and every ray's edge is searched again within ``SMOOTH_WINDOW_MM`` of it,
   as within a segmentation label's window, so single rays stopped by a trabecular spike or
   leaking into a pedicle are pulled back. **Precision**: the ray origin moves on the slice's
   voxel-centre lattice until it repeats, so clicks a few mm apart reach the same origin and
   hence the same outline (issue #3 precision target: CV < 1 %).
2. **Endplates → mid-height.** Along the image's slice axis, the mean HU of a small central
   disc of the body is profiled over ±``CROP_HALF_AXIAL_MM``; the endplates are the profile's
   prominent peaks. The body is the interval between the nearest peak above and below the
   click; an interval without a cortical ring (an intervertebral disc, where the click may have
   landed) is skipped in favour of the nearest body, with a warning. A peak that a trimmed
   profile (densest ``PROFILE_TRIM`` of the disc left out) does not show, well inside the run of
   slices where the body's wall stays dense, is a focal lesion (bone island), not an endplate.
   The wall run is otherwise only a fallback (at thick slices a bulging disc or an osteophyte
   continues the "wall" past the endplate). The mid-vertebral slice is the image's axial slice
   nearest the midpoint of the two endplates (as seed 002 did).
3. **Outline on the mid slice.** The contour is fitted again on the mid slice; the AP axis is the
   contour's minor principal axis (a lumbar body is wider than deep), signed towards the image's
   anterior — or, when the spinal canal was found, the direction from the canal's centre to the
   body's — so a rotated vertebra gets rotated ROIs; the cortical thickness is the median
   distance between the inner rise and the outer edge of the shell; the trabecular boundary is
   the outer contour offset inwards by it; where a ray's edge lies well beyond its cortical rise
   (bone attached outside the cortex: an osteophyte) the outline follows the cortex instead and
   a reason says so. AP depth, width and the demarcation line follow (``roifamily``).
4. **Fit quality** in [0, 1] (the weakest of: fraction of rays with a clear shell, left–right
   symmetry about the AP axis, endplates found, plausible size) with reasons. Below
   ``LOW_QUALITY`` the trabecular region is shrunk towards its centre (``FALLBACK_SCALE``) — a
   conservative ROI — and a warning asks the user to check it.

**Option: the vertebra's own plane** (``to_vertebra_plane``, ``measure_levels(plane="vertebra")``,
``osteoroi measure --plane vertebra``): the body's axis is the line through the centroids of its
axial cross-sections about mid-height; the image is resampled (trilinear) on planes
perpendicular to it through the mid-height point and the outline is fitted there, so the ROIs'
axes and slab follow the tilted vertebra (their voxels are still the image's, chosen by centre).

All work is local: a box of about ±``CROP_HALF_INPLANE_MM`` in-plane and
±``CROP_HALF_AXIAL_MM`` along the slice axis around the click is read; the whole volume is
never processed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import PlacementError
from ..roi.geometry import in_plane_frame
from .probe import _smooth
from ..roi.family import BodyOutline
from ..roi.stats import median_of
from ..io.volume import Volume

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
#: A click in a disc or on an endplate is snapped to a body ring found on a slice at most this far
#: (mm) away: half of a thick lumbar disc plus an endplate. Further away, a slice at the next disc
#: level can offer the ring around the spinal canal, which no body lies in front of there.
SNAP_AXIAL_MM = 12.0
#: The AP axis comes from the outline only when its principal extents differ by this ratio and it
#: turns less than MAX_ROTATION_DEG from the image's anterior (axial rotation of lumbar vertebrae
#: beyond ~30° is exceptional); otherwise the image's anterior direction is used, with a reason.
MIN_AXIS_RATIO = 1.08
MAX_ROTATION_DEG = 30.0
#: The canal check probes this far (mm) in front of a candidate ring's anterior edge.
CANAL_PROBE_MM = 12.0
#: The spinal canal behind a body: smoothed HU below min(CANAL_LOW_HU, interior −
#: CANAL_BELOW_INTERIOR_HU) (CSF ≈ 0–20 HU, epidural fat < 0) over at least CANAL_MIN_MM along a
#: posterior ray (searched ±CANAL_SEARCH_DEG about the image's posterior), with bone above
#: max(CANAL_BONE_MIN_HU, interior + CANAL_BONE_ABOVE_INTERIOR_HU) (the pedicles) on both sides
#: within CANAL_MAX_HALF_WIDTH_MM (lumbar canal ≈ 15–25 mm wide). A ray entering the canal (low
#: for CANAL_ENTRY_MM) ends within CANAL_WALL_MM behind the entry: the posterior wall.
CANAL_LOW_HU = 60.0
CANAL_BELOW_INTERIOR_HU = 25.0
CANAL_MIN_MM = 6.0
CANAL_SEARCH_DEG = 35.0
CANAL_BONE_MIN_HU = 150.0
CANAL_BONE_ABOVE_INTERIOR_HU = 60.0
CANAL_MAX_HALF_WIDTH_MM = 18.0
CANAL_ENTRY_MM = 3.0
CANAL_WALL_MM = 1.5
#: No part of the body's outline lies more than this (mm) behind the canal's front (the posterior
#: wall's concavity; beyond it are the pedicles).
POSTERIOR_CORNER_MM = 3.0
#: A ray whose outer edge lies more than this (mm) beyond the median cortical thickness from its
#: inner cortical rise ends on bone attached outside the cortex (an osteophyte).
SPUR_EXTRA_MM = 1.0
#: An osteophyte is reported when such rays form a run of at least this many neighbours (15° at
#: 72 rays): a spur spans an arc of the rim, while single rays scatter at thick slices, where the
#: blurred cortex reads thicker on a ray here and there (the outline still follows the cortex there).
SPUR_MIN_RUN = 3
#: Smoothness prior: Fourier order of the robust contour curve and the window (± mm) about it
#: in which each ray's edge is searched again.
SMOOTH_ORDER = 5
SMOOTH_WINDOW_MM = 2.5
#: Endplate peaks in the central profile must stand out by this much (HU).
PLATE_PROMINENCE_HU = 30.0
#: Fraction of the densest voxels left out of the central endplate profile.
PROFILE_TRIM = 0.25
#: Plausible distance between the endplates (mm); a shorter interval is a disc.
MIN_BODY_HEIGHT_MM = 12.0
MAX_BODY_HEIGHT_MM = 50.0
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
    axis_ras: Optional[np.ndarray] = None  # the vertebra's axis when the plane is perpendicular to it
    axis_tilt_deg: Optional[float] = None

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
            **({} if self.axis_ras is None else {
                "vertebra_axis_ras": [round(float(x), 6) for x in self.axis_ras],
                "axis_tilt_deg": round(float(self.axis_tilt_deg), 3)}),
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
        # reorder to [s, y, x] with x = in_axes[0], y = in_axes[1]; a view: only the parts the
        # placement reads (a few slabs, a thin central column, the wall's ring) become float32
        order = [2 - self.axis, 2 - self.in_axes[1], 2 - self.in_axes[0]]
        self._raw = np.transpose(sub, order)
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
    def data(self) -> np.ndarray:
        """The whole box as float32 [s, y, x] (converted on first use)."""
        data = self.__dict__.get("_data")
        if data is None:
            data = self._data = np.ascontiguousarray(self._raw, dtype=np.float32)
        return data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = self._raw = value

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self._raw.shape)

    def take(self, index) -> np.ndarray:
        """``data[index]`` (float32), converting only the part indexed."""
        data = self.__dict__.get("_data")
        if data is not None:
            return data[index]
        return np.ascontiguousarray(self._raw[index], dtype=np.float32)

    @property
    def ns(self) -> int:
        return self._raw.shape[0]

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
        # one smoothed plane per slab: the contour fits on it are cached by the plane's identity
        planes = self.__dict__.setdefault("_planes", {})
        plane = planes.get((s0, s1))
        if plane is None:
            plane = _smooth(_slab_median(self.take(slice(s0, s1 + 1))), self.dy, self.dx)
            plane.flags.writeable = False
            planes[(s0, s1)] = plane
        return plane

    def contains_xy(self, xy) -> bool:
        """Whether box (x, y) lies on the slice planes (between the first and last voxel centres)."""
        _, ny, nx = self.shape
        return bool(0 <= xy[0] <= nx - 1 and 0 <= xy[1] <= ny - 1)

    def direction_xy(self, ras_dirs) -> np.ndarray:
        """In-plane RAS directions → (dx, dy) box steps per mm."""
        return np.asarray(ras_dirs) @ self.p_pinv.T

    def onto_slice(self, ras, s: int) -> np.ndarray:
        """A RAS point moved along the slice normal onto box slice ``s``'s plane."""
        ijk = self.volume.ras_to_ijk_points(ras)[0]
        ijk[self.axis] = s + self.lo[self.axis]
        return self.volume.ijk_to_ras_points(ijk)[0]


def _trilinear(volume: Volume, ras: np.ndarray) -> np.ndarray:
    """The image at RAS points (N×3), trilinear between voxel centres; NaN outside the image."""
    ijk = volume.ras_to_ijk_points(ras)
    dims = np.asarray(volume.dimensions)
    inside = np.all((ijk >= 0) & (ijk <= dims - 1), axis=1)
    ijk = np.clip(ijk, 0, dims - 1)
    i0 = np.minimum(np.floor(ijk).astype(int), np.maximum(dims - 2, 0))
    f = ijk - i0
    i1 = np.minimum(i0 + 1, dims - 1)
    a = volume.array
    out = np.zeros(len(ijk))
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                w = ((f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
                     * (f[:, 2] if dk else 1 - f[:, 2]))
                out += w * a[(i1 if dk else i0)[:, 2], (i1 if dj else i0)[:, 1], (i1 if di else i0)[:, 0]]
    return np.where(inside, out, np.nan)


class _ObliqueBox(_Box):
    """A stack of planes perpendicular to ``normal`` around ``center_ras``, resampled from the
    image (trilinear) on a square grid of ``step_mm``: the same interface as ``_Box``, so the
    contour, canal and outline code work on a plane of any orientation."""

    def __init__(self, volume: Volume, center_ras, normal, half_inplane_mm: float, half_axial_mm: float,
                 step_mm: float):
        self.volume = volume
        n = np.asarray(normal, dtype=float)
        n = n / np.linalg.norm(n)
        if n[2] < 0:
            n = -n
        self.normal = n
        self.u0 = in_plane_frame(n, np.array([0.0, 1.0, 0.0]))[0]
        e1 = self.u0
        e2 = np.cross(n, e1)
        h = float(step_mm)
        self.dx = self.dy = self.ds = h
        nxy = int(np.ceil(half_inplane_mm / h))
        ns = int(np.ceil(half_axial_mm / h))
        self._frame = np.array([e1, e2, n])
        self.origin = np.asarray(center_ras, dtype=float) - h * (nxy * e1 + nxy * e2 + ns * n)
        xs = np.arange(2 * nxy + 1) * h
        ss = np.arange(2 * ns + 1) * h
        grid = (self.origin[None, None, None, :] + ss[:, None, None, None] * n
                + xs[None, :, None, None] * e2 + xs[None, None, :, None] * e1)
        self.data = _trilinear(volume, grid.reshape(-1, 3)).reshape(grid.shape[:3]).astype(np.float32)
        # a plane that leaves the image: fill with the mean so the smoothing stays finite, and mark
        # it as outside for the rays (NaN after smoothing would spread)
        self.outside = ~np.isfinite(self.data)
        if self.outside.any():
            self.data[self.outside] = float(np.nanmean(self.data)) if np.isfinite(self.data).any() else 0.0
        self.p = np.column_stack([e1 * h, e2 * h])
        self.p_pinv = np.linalg.pinv(self.p)
        self.axis = None
        self.in_axes = None
        self.lo = None
        self.at_fov_edge = (False, False)
        self.s_sign = 1.0

    def to_box(self, ras) -> np.ndarray:
        d = np.atleast_2d(np.asarray(ras, dtype=float)) - self.origin
        return (d @ self._frame.T) / self.dx

    def to_ras(self, xys) -> np.ndarray:
        xys = np.atleast_2d(np.asarray(xys, dtype=float))
        return self.origin + (xys * self.dx) @ self._frame

    def slice_index(self, s: int) -> int:
        return -1

    def onto_slice(self, ras, s: int) -> np.ndarray:
        ras = np.asarray(ras, dtype=float)
        return ras - self.normal * float((ras - self.origin) @ self.normal - s * self.ds)


#: Slabs of up to this many slices take their median with a sorting network (see ``_slab_median``).
SLAB_NETWORK_MAX = 15


def _slab_median(slab: np.ndarray) -> np.ndarray:
    """Per-pixel median of a slab's slices (the mean of the middle two for an even count).

    Not the mean: a dense focus (bone island, the edge of a tilted endplate) in one slice of the
    slab would otherwise show as a bright ring *inside* the body on the averaged plane, and its
    edge can outscore the body's faint outer cortex (seen on the real 3 mm CT's L1)."""
    n = slab.shape[0]
    if n <= 2:
        return slab.mean(axis=0)
    if n > SLAB_NETWORK_MAX:
        return np.median(slab, axis=0).astype(slab.dtype, copy=False)
    # Odd-even transposition sort of the n planes (a sorting network: n rounds of neighbour
    # compare-exchanges, whole planes at a time), then the middle plane(s): the same values as
    # np.median, several times faster for the few slices of a slab.
    rows = [slab[i] for i in range(n)]
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            a, b = rows[i], rows[i + 1]
            rows[i], rows[i + 1] = np.minimum(a, b), np.maximum(a, b)
    m = n // 2
    if n % 2:
        return rows[m].copy()
    return (rows[m - 1] + rows[m]) / slab.dtype.type(2)  # as np.median: the mean of the middle two


def _median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a float64 sample, without numpy's per-call overhead
    (``stats.median_of``: the same value); other dtypes go to ``np.median`` itself."""
    v = np.asarray(values)
    return median_of(v) if v.dtype == np.float64 else float(np.median(v))


def _cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of two 3-vectors (the same products and differences, without its overhead)."""
    a0, a1, a2 = float(a[0]), float(a[1]), float(a[2])
    b0, b1, b2 = float(b[0]), float(b[1]), float(b[2])
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _bilinear(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ny, nx = plane.shape
    inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    x = np.clip(x, 0, nx - 1)
    y = np.clip(y, 0, ny - 1)
    x0 = np.minimum(np.floor(x).astype(int), max(nx - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(ny - 2, 0))
    fx, fy = x - x0, y - y0
    gx, gy = 1 - fx, 1 - fy
    # flat indices of the four neighbours (x1 = min(x0 + 1, nx - 1), y1 likewise)
    flat = plane.reshape(-1)
    i00 = y0 * nx + x0
    dx1 = (x0 + 1 < nx).astype(int)
    dy1 = (y0 + 1 < ny) * nx
    v = (flat.take(i00) * gx * gy + flat.take(i00 + dx1) * fx * gy
         + flat.take(i00 + dy1) * gx * fy + flat.take(i00 + dy1 + dx1) * fx * fy)
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
    ``JUMP_COST`` per mm of radius change between neighbouring rays (at most ``MAX_JUMP_MM``).

    The rays are run three times round and the middle lap's path is the answer (free of the
    cut): the path back-traced from the best radius after the third lap.

    Forward pass: each step's accumulated score, for every radius, is its best predecessor's
    within ``±jump`` indices (minus the jump's penalty) plus the ray's score. The steps' scores
    sit in one array padded with −inf (radii outside the ray), so a strided view lays out a
    step's candidates as (offset, radius) without copying and each step is three whole-row
    operations. Predecessors are the *first* best candidate (by offset, as ``argmax`` breaks
    ties). During the third lap every radius's ancestor at the end of the second lap is carried
    along; once all radii share one ancestor (the survivor paths have merged, typically 10–20
    rays into the lap), the best radius at the end of the third lap — whichever it is — traces
    back through it, so the rest of the lap cannot change the answer and is not computed. The
    middle lap is then traced back from that ancestor, comparing the same stored numbers (score
    minus the same penalties) as the forward pass took the maximum of: the path is the one the
    full three laps give, bit for bit."""
    n_rays, n_r = score.shape
    jump = max(1, int(round(MAX_JUMP_MM / step_mm)))
    n_off = 2 * jump + 1
    n_steps = 3 * n_rays
    end_of_middle = 2 * n_rays - 1
    penalty = JUMP_COST * np.abs(np.arange(-jump, jump + 1)) * step_mm
    width = n_r + 2 * jump
    acc = np.full((n_steps, width), -np.inf)
    acc[0, jump:jump + n_r] = score[0]
    item = acc.itemsize
    # win[k, o, i] = acc[k, i + o]: step k's accumulated score at radius i + o − jump (−inf outside)
    win = np.lib.stride_tricks.as_strided(acc, shape=(n_steps, n_off, n_r), strides=(width * item, item, item),
                                          writeable=False)
    pen_col = penalty[:, None]
    cand = np.empty((n_off, n_r))
    subtract, best_of, add = np.subtract, np.maximum.reduce, np.add
    to_radius = np.arange(n_r) - jump  # offset index o at radius i → predecessor radius i + o − jump
    ancestor = np.arange(n_r)  # per radius of the current step: its ancestor at end_of_middle
    rows = list(acc[:, jump:jump + n_r])
    scores = list(score)
    for k in range(1, n_steps):
        subtract(win[k - 1], pen_col, out=cand)
        row = rows[k]
        best_of(cand, axis=0, out=row)
        add(row, scores[k % n_rays], out=row)
        if k > end_of_middle:
            ancestor = ancestor[cand.argmax(axis=0) + to_radius]
            if ancestor[0] == ancestor[-1] and (ancestor == ancestor[0]).all():
                break  # merged: every radius of this step, the best one included, has this ancestor
    p = int(ancestor[int(np.argmax(rows[k]))])
    table = acc[n_rays:end_of_middle].tolist()  # steps n … 2n − 2, padded: radius r sits at r + jump
    pen = penalty.tolist()
    offsets = range(1, n_off)
    path = [0] * n_rays
    path[-1] = p
    for m in range(n_rays - 1, 0, -1):  # step n + m → its predecessor at step n + m − 1
        before = table[m - 1]
        best_o, best = 0, before[p] - pen[0]
        for o in offsets:
            c = before[p + o] - pen[o]
            if c > best:
                best_o, best = o, c
        p += best_o - jump
        path[m - 1] = p
    return np.array(path, dtype=np.int32)


def _cached(box: _Box, plane: np.ndarray, kind: str, key: tuple, compute, keep: tuple = ()):
    """``compute()`` once per (plane, kind, key) for a plane made by ``box.plane`` (the fits are
    pure functions of the plane and their arguments; a click fits the same origin on the same
    slab several times: the ring search, the re-centring loops and the mid-slice fit). ``keep``
    holds the objects whose ``id`` is part of ``key`` alive with the entry, so no id is reused."""
    planes = box.__dict__.get("_planes")
    if not planes or not any(p is plane for p in planes.values()):
        return compute()
    cache = box.__dict__.setdefault("_fits", {})
    full = (id(plane), kind) + key
    hit = cache.get(full)
    if hit is None:
        hit = cache[full] = (compute(), plane, keep)
    return hit[0]


def fit_contour(box: _Box, plane: np.ndarray, s: int, center_xy, u=None,
                prior_r: Optional[np.ndarray] = None, prior_window=(6.0, 4.0),
                canal: Optional["Canal"] = None) -> Contour:
    """Outer cortical contour on ``plane`` around ``center_xy`` (see module docstring, step 1).

    ``prior_r`` (mm per ray) restricts each ray's edge to ``[prior − window[0], prior + window[1]]``
    (used with a segmentation label and for the smoothness prior). With a ``canal``, rays that
    meet the spinal canal end at its front (the body's posterior wall) and count as shell rays
    when the HU drops into the canal there (the wall may be invisible at the basivertebral
    foramen)."""
    def compute():
        return _fit_contour(box, plane, s, center_xy, u, prior_r, prior_window, canal)

    if prior_r is not None:
        return compute()
    u_key = None if u is None else np.asarray(u, dtype=float).tobytes()
    key = (int(s), float(center_xy[0]), float(center_xy[1]), u_key, tuple(map(float, prior_window)),
           None if canal is None else id(canal))
    return _cached(box, plane, "contour", key, compute, keep=(canal,))


def _fit_contour(box: _Box, plane: np.ndarray, s: int, center_xy, u=None,
                 prior_r: Optional[np.ndarray] = None, prior_window=(6.0, 4.0),
                 canal: Optional["Canal"] = None) -> Contour:
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
    scale = _median(np.max(score, axis=1))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    score = score / scale - RADIUS_COST * radii[None, :]
    # An edge beyond a stretch of fluid/fat (the spinal canal behind the posterior wall, the fat
    # around the body) is not the body's: penalise positions after a long low-HU gap.
    near = prof[:, radii <= 5.0]
    rough = _median(near[~np.isnan(near)]) if np.isfinite(near).any() else np.nan
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
    cap = None
    if canal is not None:
        cap = canal.caps(box, np.array([cx, cy]), dirs, radii, prof)
        score[radii[None, :] > cap[:, None]] = -1e3
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
    interior = _median(vals) if vals.size else float("nan")
    back_n = int(round(4.0 / RAY_STEP_MM))
    drop = np.where(np.isfinite(g[rows, path]), g[rows, path], 0.0)
    ridx = np.arange(n_r)[None, :]
    reach = np.minimum(path + 2 * h, n_r - 1)
    outside = np.any(~np.isfinite(prof) & (ridx <= reach[:, None]), axis=1)
    win = (ridx >= (path - back_n)[:, None]) & (ridx <= path[:, None])
    pw = np.where(win & np.isfinite(prof), prof, -np.inf)
    pk = np.argmax(pw, axis=1)
    peak = pw[rows, pk]
    shell = rise_shell = np.isfinite(peak) & (peak - interior >= SHELL_RISE_HU) & (drop >= EDGE_DROP_HU)
    if cap is not None:
        at_canal = np.isfinite(cap) & (r_out >= cap - CANAL_WALL_MM - 1.0) & (drop >= 0.5 * EDGE_DROP_HU)
        shell = shell | at_canal
    half = interior + 0.5 * (peak - interior)
    below = (ridx <= pk[:, None]) & (prof < half[:, None])
    has = below.any(axis=1)
    j = np.where(has, n_r - 1 - np.argmax(below[:, ::-1], axis=1), 0)
    j1 = np.minimum(j + 1, n_r - 1)
    pa, pb = prof[rows, j], prof[rows, j1]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(pb != pa, (half - pa) / (pb - pa), 0.0)
    r_in = np.where(has, radii[j] + np.clip(frac, 0, 1) * RAY_STEP_MM, 0.0)
    r_in = np.where(rise_shell, r_in, np.nan)
    return Contour(np.array([cx, cy]), int(s), angles, r_out, r_in, shell, interior, drop, outside, u, v)


def _fit_centred(box: _Box, plane: np.ndarray, s: int, start_xy, u=None, iterations: int = 4,
                 max_shift_mm: float = 30.0, prior_fn=None, canal: Optional["Canal"] = None,
                 snap: bool = False) -> Contour:
    """Fit, then re-cast the rays from the contour's centroid until it settles.

    With ``snap`` the ray origin moves on the voxel-centre lattice of the slice and the loop
    stops when an origin repeats: clicks a few mm apart then reach the *same* origin, hence the
    same contour (placement precision, issue #3), instead of origins a fraction of a mm apart."""
    c = np.asarray(start_xy, dtype=float)
    if snap:
        c = np.round(c)
    start = c.copy()
    seen = {}

    def fit(c0):
        return fit_contour(box, plane, s, c0, u, prior_r=None if prior_fn is None else prior_fn(c0, u), canal=canal)

    contour = fit(c)
    seen[tuple(c)] = contour
    for _ in range(iterations + (4 if snap else 0)):
        off = contour.centroid_offset_mm()
        shift_ras = off[0] * contour.u + off[1] * contour.v
        new_c = c + box.direction_xy(shift_ras[None, :])[0]
        if snap:
            new_c = np.round(new_c)
        moved = np.hypot((new_c[0] - start[0]) * box.dx, (new_c[1] - start[1]) * box.dy)
        if moved > max_shift_mm:
            break
        if snap and tuple(new_c) in seen:
            # a fixed point or a cycle: take the cycle's member nearest its own centroid, a
            # choice that does not depend on where the loop entered the cycle
            keys = list(seen)
            cands = [seen[k] for k in keys[keys.index(tuple(new_c)):]]
            contour = min(cands, key=lambda k: (round(float(np.hypot(*k.centroid_offset_mm())), 6),
                                                tuple(np.round(k.center_xy, 3))))
            break
        c = new_c
        contour = fit(c)
        if snap:
            seen[tuple(c)] = contour
        elif np.hypot(*off) < 0.3:
            break
    return contour


# ----------------------------------------------------------------------------------------------
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

    def caps(self, box: _Box, origin_xy, dirs: np.ndarray, radii: np.ndarray, prof: np.ndarray) -> np.ndarray:
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


def find_canal(box: _Box, plane: np.ndarray, contour: Contour) -> Optional[Canal]:
    """The spinal canal: a low-HU hole directly behind the body, with bone (the pedicles) on
    both sides of it (issue #3: "the spinal canal behind it"). None when not found (then the
    contour alone decides; e.g. an osteoporotic body whose trabecular HU is as low as the canal's
    content)."""
    return _cached(box, plane, "canal", (id(contour),), lambda: _find_canal(box, plane, contour), keep=(contour,))


def _first_long_runs(is_low: np.ndarray, start: np.ndarray, stop_at: np.ndarray, n_min: int) -> List[Tuple[int, int, int]]:
    """Per row ``i`` of ``is_low`` (rays × samples), the first run of True that starts at an index
    ``j`` in ``[start[i], min(int(stop_at[i]), n − 1)]`` and holds at least ``n_min`` samples,
    as ``(i, j, k)`` with ``k`` the index after the run (which may go past the stop); a run already
    under way at ``start[i]`` counts from there. Rows without one are left out."""
    n_rays, n = is_low.shape
    idx = np.arange(n)
    start = np.asarray(start, dtype=np.intp)[:, None]
    stop = np.minimum(np.asarray(stop_at).astype(int), n - 1)[:, None]
    # the index after the run through each sample: the first False at or after it (n if none)
    after = np.where(is_low, n, idx)
    after = np.minimum.accumulate(after[:, ::-1], axis=1)[:, ::-1]
    before_low = np.zeros_like(is_low)
    before_low[:, 1:] = is_low[:, :-1]
    begins = is_low & ((idx == start) | ~before_low) & (idx >= start) & (idx <= stop) & (after - idx >= n_min)
    rows = np.nonzero(begins.any(axis=1))[0]
    j = begins.argmax(axis=1)
    return [(int(i), int(j[i]), int(after[i, j[i]])) for i in rows]


def _find_canal(box: _Box, plane: np.ndarray, contour: Contour) -> Optional[Canal]:
    interior = contour.interior_hu
    if not np.isfinite(interior):
        return None
    low = min(CANAL_LOW_HU, interior - CANAL_BELOW_INTERIOR_HU)
    bone = max(CANAL_BONE_MIN_HU, interior + CANAL_BONE_ABOVE_INTERIOR_HU)
    step = RAY_STEP_MM
    c = contour.center_xy
    radii = np.arange(0.0, MAX_RAY_MM + 1e-9, step)
    angs = np.radians(np.arange(-CANAL_SEARCH_DEG, CANAL_SEARCH_DEG + 1e-9, 5.0))
    dirs = -(np.outer(np.cos(angs), contour.u) + np.outer(np.sin(angs), contour.v))
    dxy = box.direction_xy(dirs)
    prof = _bilinear(plane, c[0] + radii[None, :] * dxy[:, 0:1], c[1] + radii[None, :] * dxy[:, 1:2])
    r_wall = np.interp((np.pi + angs) % (2 * np.pi), np.append(contour.angles, 2 * np.pi),
                       np.append(contour.r_out, contour.r_out[0]))
    n_min = int(round(CANAL_MIN_MM / step))
    n_in = max(1, int(round(CANAL_ENTRY_MM / step)))
    lat_r = np.arange(0.0, CANAL_MAX_HALF_WIDTH_MM + 1e-9, step)
    runs = _first_long_runs(np.isfinite(prof) & (prof < low), (0.4 * r_wall / step).astype(int),
                            (r_wall + 8.0) / step, n_min)
    # both lateral probes of every candidate ray, sampled in one call
    probes = []
    for i, j, k in runs:
        d = dirs[i]
        w = _cross3(box.normal, d)
        depth = min(radii[k - 1] - radii[j], 16.0)
        mid = c + box.direction_xy((d * (radii[j] + 0.5 * depth))[None, :])[0]
        lxys = [box.direction_xy((sgn * w)[None, :])[0] for sgn in (1.0, -1.0)]
        probes.append((i, w, mid, lxys))
    if probes:
        qs = _bilinear(plane, np.array([mid[0] + lat_r * lxy[0] for _, _, mid, lxys in probes for lxy in lxys]),
                       np.array([mid[1] + lat_r * lxy[1] for _, _, mid, lxys in probes for lxy in lxys]))
    found = []
    for n, (i, w, mid, _) in enumerate(probes):
        hits = []
        for side in (0, 1):
            q = qs[2 * n + side]
            if not np.all(np.isfinite(q[:n_in]) & (q[:n_in] < low)):
                break
            above = np.nonzero(np.isfinite(q) & (q >= bone))[0]
            if above.size == 0:
                break
            hits.append(float(lat_r[above[0]]))
        if len(hits) != 2:
            continue
        centre = mid + box.direction_xy((0.5 * (hits[0] - hits[1]) * w)[None, :])[0]
        found.append((abs(hits[0] - hits[1]), abs(float(angs[i])), centre, 0.5 * (hits[0] + hits[1])))
    if not found:
        return None
    _, _, centre, half_width = min(found, key=lambda f: (round(f[0], 6), f[1]))
    body = c + box.direction_xy((contour.centroid_offset_mm() @ np.array([contour.u, contour.v]))[None, :])[0]
    axis = box.p @ (body - centre)
    axis = axis - box.normal * float(axis @ box.normal)
    if np.linalg.norm(axis) < 1e-6:
        return None
    axis = axis / np.linalg.norm(axis)
    u0 = in_plane_frame(box.normal, box.u0)[0]
    if np.degrees(np.arccos(np.clip(axis @ u0, -1.0, 1.0))) > MAX_ROTATION_DEG + 5.0:
        return None
    lateral = np.cross(box.normal, axis)
    # the front: from the canal's centre towards the body until the HU is no longer low
    axy = box.direction_xy(axis[None, :])[0]
    q = _bilinear(plane, centre[0] + radii * axy[0], centre[1] + radii * axy[1])
    above = np.nonzero(~(np.isfinite(q) & (q < low)))[0]
    if above.size == 0:
        return None
    front = centre + radii[above[0]] * axy
    return Canal(front_xy=front, center_xy=centre, axis=axis, lateral=lateral, half_width_mm=float(half_width),
                 low_hu=float(low))


def _robust_fourier(angles: np.ndarray, r: np.ndarray, order: int = SMOOTH_ORDER) -> np.ndarray:
    """A smooth closed curve r(θ) (Fourier series up to ``order``) fitted to the per-ray radii
    with Tukey biweights, so a few rays stopped by a trabecular spike or leaking into a pedicle
    do not pull it (the smoothness prior on the contour)."""
    cols = [np.ones_like(angles)]
    for k in range(1, order + 1):
        cols += [np.cos(k * angles), np.sin(k * angles)]
    a = np.column_stack(cols)
    w = np.ones_like(r)
    fit = r.copy()
    for _ in range(6):
        coef, *_ = np.linalg.lstsq(a * w[:, None], r * w, rcond=None)
        fit = a @ coef
        res = r - fit
        scale = max(1.4826 * _median(np.abs(res)), 0.5)
        z = res / (4.685 * scale)
        w = np.where(np.abs(z) < 1, (1 - z ** 2) ** 2, 0.0)
    return fit


def fit_body(box: _Box, plane: np.ndarray, s: int, start_xy, snap: bool = True, use_canal: bool = True,
             smooth: bool = True) -> Tuple[Contour, Optional[Canal]]:
    """The body's contour on one slab: centred fit → spinal canal → refit with the canal as the
    posterior wall → smoothness prior (robust Fourier curve, then each ray's edge searched within
    ``SMOOTH_WINDOW_MM`` of it, like a segmentation label's window)."""
    contour = _fit_centred(box, plane, s, start_xy, snap=snap)
    canal = find_canal(box, plane, contour) if use_canal else None
    if canal is not None:
        contour = _fit_centred(box, plane, s, contour.center_xy, canal=canal, snap=snap)
    if smooth:
        r_s = _robust_fourier(contour.angles, contour.r_out)
        contour = fit_contour(box, plane, s, contour.center_xy, contour.u, prior_r=r_s,
                              prior_window=(SMOOTH_WINDOW_MM, SMOOTH_WINDOW_MM), canal=canal)
    return contour, canal


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
def central_profile(box: _Box, center_xy, radius_mm: float, trim: float = 0.0) -> np.ndarray:
    """Mean HU per box slice within ``radius_mm`` (in-plane) of ``center_xy``; with ``trim`` the
    densest fraction ``trim`` of the disc's voxels is left out (a focal dense lesion covering less
    than that then does not raise it, while an endplate, covering the whole disc, does)."""
    ny, nx = box.shape[1:]
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
    vals = np.sort(box.take((slice(None), slice(y0, y1), slice(x0, x1)))[:, mask], axis=1)
    keep = max(1, int(np.ceil((1.0 - trim) * vals.shape[1])))
    return vals[:, :keep].mean(axis=1)


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
    x = np.clip(contour.center_xy[0] + r * dxy[:, 0], 0, box.shape[2] - 1)
    y = np.clip(contour.center_xy[1] + r * dxy[:, 1], 0, box.shape[1] - 1)
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    w = np.median(box.take((slice(None), yi, xi)), axis=1)
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


def _intervals(box: _Box, m: np.ndarray, m_trim: Optional[np.ndarray] = None,
               wall: Optional[Tuple[Optional[float], Optional[float]]] = None) -> List[_Interval]:
    """Intervals between successive endplate peaks of the central profile (in box-slice order).

    With the trimmed profile ``m_trim`` and the body's ``wall`` run (lo, hi), a peak that the
    trimmed profile does not show (a focal dense lesion, e.g. a bone island) and that lies well
    inside the wall run is not an endplate and is dropped."""
    base = float(np.median(m))
    prom = max(PLATE_PROMINENCE_HU, 0.15 * (float(m.max()) - base))
    peaks = [p for p, _ in _peaks(m, prom)]
    if m_trim is not None and wall is not None and wall[0] is not None and wall[1] is not None:
        t_base = float(np.median(m_trim))
        inside = 2.0 * max(1.0, 2.5 / box.ds)
        kept = []
        for p in peaks:
            i = int(round(p))
            lo_i, hi_i = max(0, i - 1), min(m_trim.size, i + 2)
            focal = float(np.max(m_trim[lo_i:hi_i])) - t_base < PLATE_PROMINENCE_HU
            if focal and wall[0] + inside <= p <= wall[1] - inside:
                continue
            kept.append(p)
        peaks = kept
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


def _rays_in_runs(flags: np.ndarray, min_run: int) -> int:
    """How many of the (circular) rays' flags belong to a run of at least ``min_run`` neighbours."""
    flags = np.asarray(flags, dtype=bool)
    n = flags.size
    if n == 0 or not flags.any():
        return 0
    if flags.all():
        return n if n >= min_run else 0
    start = int(np.argmin(flags))  # a False: no run wraps past it
    rolled = np.roll(flags, -start).tolist()
    total = run = 0
    for f in rolled + [False]:
        if f:
            run += 1
        else:
            total += run if run >= min_run else 0
            run = 0
    return total


def _smooth_circular(r: np.ndarray, width: int = 1) -> np.ndarray:
    k = np.ones(2 * width + 1) / (2 * width + 1)
    padded = np.concatenate([r[-width:], r, r[:width]])
    return np.convolve(padded, k, mode="valid")


def outline_from_contour(box: _Box, contour: Contour, source: str, cortical_min_mm: float = MIN_CORTICAL_MM,
                         scale: float = 1.0, canal: Optional[Canal] = None) -> Tuple[BodyOutline, Dict[str, float]]:
    """BodyOutline (centre, AP axis, depth, width, cortical margin, trabecular polygon).

    The AP axis is the outline's minor principal axis; with a spinal ``canal`` found behind the
    body it is the mean of that and the canal → body direction (the canal alone when the
    outline is too round to give an axis)."""
    thick = contour.r_out - contour.r_in
    ok = contour.shell & np.isfinite(thick)
    cortical = _median(thick[ok]) if ok.any() else 2.0
    # Bone beyond the cortex (an osteophyte on the rim): the ray's shell rose to the cortex well
    # before its outer edge. There the outline follows the cortex (inner rise + the margin), so
    # the spur neither enters the trabecular region nor stretches the depth and width.
    spur = ok & (thick > cortical + SPUR_EXTRA_MM)
    r_eff = np.where(spur, contour.r_in + cortical, contour.r_out)
    r_sm = _smooth_circular(r_eff, 1)
    pts = contour.points_ras(box, r_sm)
    ap, ratio = _ap_axis_from_points(pts, box.normal, box.u0)
    u0 = in_plane_frame(box.normal, box.u0)[0]
    turn = float(np.degrees(np.arccos(np.clip(ap @ u0, -1.0, 1.0))))
    axis_from_image = ratio < MIN_AXIS_RATIO or turn > MAX_ROTATION_DEG
    if canal is not None:
        ap = canal.axis
        turn = float(np.degrees(np.arccos(np.clip(ap @ u0, -1.0, 1.0))))
        axis_from_image = False
    if axis_from_image:
        ap = u0
    u, v, n = in_plane_frame(box.normal, ap)
    c0 = pts.mean(axis=0)
    s, t = (pts - c0) @ u, (pts - c0) @ v
    depth = float(s.max() - s.min())
    width = float(t.max() - t.min())
    center = c0 + 0.5 * (s.max() + s.min()) * u + 0.5 * (t.max() + t.min()) * v
    center = box.onto_slice(center, contour.s)
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
    from ..roi.family import polygon_intervals

    f = polygon_intervals(poly)
    tt = np.linspace(-0.4 * width, 0.4 * width, 41)
    lo, hi = f(tt)
    lo_m, hi_m = f(-tt)
    asym = np.nanmean(np.abs(hi - hi_m) + np.abs(lo - lo_m)) / 2.0 / max(depth, 1e-6)
    return outline, {"asymmetry": float(asym) if np.isfinite(asym) else 1.0, "shape_ratio": ratio,
                     "axis_from_image": float(axis_from_image), "axis_turn_deg": turn,
                     "canal": float(canal is not None),
                     # reported on the anterior and lateral rim only: behind, the pedicles join the body
                     "spur_rays": _rays_in_runs(spur & (np.cos(contour.angles) > -0.3), SPUR_MIN_RUN)}


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
    if metrics.get("spur_rays"):
        reasons.append(f"bone beyond the cortex on {int(metrics['spur_rays'])} of {len(contour.r_out)} rays "
                       "(osteophyte?) was left out of the outline")
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
    contour, _ = fit_body(box, plane, s0, xy0, smooth=False)
    reasons = contour.ring_reasons()
    if not reasons:
        outside = _inside_contour(contour, box, xy0)
        if outside > SNAP_MM:
            reasons.append(f"the nearest bone ring is {outside:.0f} mm away from the point")
    if not reasons and _is_spinal_canal(box, plane, s0, contour):
        reasons.append("the bone ring around the point is the neural arch around the spinal canal (a vertebral body "
                       "lies directly in front of it)")
    return (None if reasons else contour), reasons


#: Seeds for a click just outside a body (distances in mm, eight in-plane directions each): far
#: enough to land inside the body across the cortex from a click up to ``SNAP_MM`` outside it.
SNAP_SEED_MM = (8.0, 14.0)


def _ring_near(box: _Box, s: int, xy0) -> Optional[Contour]:
    """A body ring on slice ``s`` whose outer cortex lies at most ``SNAP_MM`` from ``xy0`` (a
    click just outside the body: from the click itself the rays only reach the cortex), searched
    from seeds around the click; the ring nearest the click (then the first seed) wins."""
    best, best_d = None, np.inf
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    u, v, _ = in_plane_frame(box.normal, box.u0)
    for dist in SNAP_SEED_MM:
        for a in angles:
            seed = np.asarray(xy0, dtype=float) + box.direction_xy((dist * (np.cos(a) * u + np.sin(a) * v))[None, :])[0]
            if not box.contains_xy(seed):
                continue
            contour, reasons = _find_ring(box, s, seed)
            if contour is None:
                continue
            d = _inside_contour(contour, box, xy0)
            if d <= SNAP_MM and d < best_d:
                best, best_d = contour, d
        if best is not None:
            break
    return best


#: Slice offsets (mm) at which a poorly fitting ring is checked for bodies in front (``_canal_ring_between_bodies``).
CANAL_LEVEL_OFFSETS_MM = (6.0, -6.0, 12.0, -12.0)


def _canal_ring_between_bodies(box: _Box, contour: Contour) -> bool:
    """True when ``contour`` is the ring around the spinal canal at a disc level: there no body lies in
    front of it on its own slice (the disc does), but one does a few millimetres above or below.
    Only asked of poorly fitting rings (it costs up to four more canal checks)."""
    for off in CANAL_LEVEL_OFFSETS_MM:
        s = int(round(contour.s + off / box.ds))
        if s == contour.s or not 0 <= s < box.ns:
            continue
        if _is_spinal_canal(box, box.plane(s, FIT_HALF_SLAB_MM), s, contour):
            return True
    return False


def _is_spinal_canal(box: _Box, plane: np.ndarray, s: int, contour: Contour) -> bool:
    """True when a larger bone ring (a vertebral body) lies directly anterior to ``contour``:
    then ``contour`` is the spinal canal inside the neural arch, not a body."""
    ant = _median(contour.r_out[np.abs(((contour.angles + np.pi) % (2 * np.pi)) - np.pi) <= np.pi / 9])
    probe_ras = contour.u * (ant + CANAL_PROBE_MM)
    probe_xy = contour.center_xy + box.direction_xy(probe_ras[None, :])[0]
    if not box.contains_xy(probe_xy):
        return False
    front = _fit_centred(box, plane, s, probe_xy, iterations=2, max_shift_mm=20.0)
    if front.ring_reasons() or front.area_mm2() <= contour.area_mm2():
        return False
    # the candidate ring must lie behind the front ring (posterior, along the image's AP direction)
    d = box.p @ (contour.center_xy - front.center_xy)
    return bool(d @ contour.u < -0.3 * _median(front.r_out))


def _not_in_a_body(prefix: str, point: np.ndarray, why: str,
                   click: str = "Click inside the vertebral body") -> PlacementError:
    """The refusal of a click that is not inside a vertebral body (``why`` ends the sentence)."""
    return PlacementError(
        f"{prefix}the point (RAS {point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) does not look inside a vertebral "
        f"body: {why}",
        f"{click}, or force the placement (--force) if you are sure.")


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
    snapped = snapped_axially = False

    contour, reasons = _find_ring(box, s_click, pxys[:2])
    if contour is None:
        # A click just outside the cortex: the body is found from seeds around the click.
        contour = _ring_near(box, s_click, pxys[:2])
    if contour is None:
        # A click in a disc or on an endplate: look for the nearest slice with a body ring.
        found = None
        max_steps = int(np.ceil(SNAP_AXIAL_MM / box.ds))
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
            raise _not_in_a_body(prefix, point, f"{'; '.join(reasons)}.")
        contour = found
        snapped = snapped_axially = True
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
    w_lo, w_hi, w_lo_edge, w_hi_edge = wall_run(box, contour)
    m = central_profile(box, contour.center_xy, max(2.0, 0.45 * r_min))
    m_trim = central_profile(box, contour.center_xy, max(2.0, 0.45 * r_min), trim=PROFILE_TRIM)
    intervals = _intervals(box, m, m_trim, (w_lo, w_hi))
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
    plates_ok = (chosen is not None and chosen.lo is not None and chosen.hi is not None
                 and MIN_BODY_HEIGHT_MM <= (chosen.hi - chosen.lo) * box.ds <= MAX_BODY_HEIGHT_MM)
    wall_ok = (w_lo is not None and w_hi is not None
               and MIN_BODY_HEIGHT_MM <= (w_hi - w_lo) * box.ds <= MAX_BODY_HEIGHT_MM)
    # The wall run is only a fallback: at thick slices an osteophyte or a bulging disc continues the
    # "wall" past the endplate, while the median central profile is not fooled by a focal lesion.
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
    final, canal = fit_body(box, plane, s_fit, contour.center_xy)
    if final.ring_reasons():
        # the mid slice is worse than the ring slice (e.g. a bone island): keep the ring's shape there
        plates_reason = (plates_reason + "; " if plates_reason else "") + "the mid-slice outline was weak"
        final = fit_contour(box, plane, s_fit, contour.center_xy, prior_r=contour.r_out, prior_window=(3.0, 3.0),
                            canal=canal)
    outline, metrics = outline_from_contour(box, final, METHOD_CLICK, canal=canal)
    quality, q_reasons = _quality(final, metrics, plates_q, plates_reason, outline.depth_mm, outline.width_mm)
    if snapped and quality < LOW_QUALITY:
        # The point is not inside a body, and the one it would be moved to is no clear body either
        # (e.g. a click in the spinal canal: at the next disc level its ring has no body in front).
        where = f"there is none on its own slice, and the bone ring {dist:.0f} mm away" if snapped_axially else \
            "the nearest bone ring"
        raise _not_in_a_body(prefix, point, f"{where} fits poorly ({'; '.join(q_reasons)}).",
                             "Click inside the vertebral body on a slice near its mid-height")
    if quality < LOW_QUALITY and _canal_ring_between_bodies(box, contour):
        raise _not_in_a_body(prefix, point, "the poorly fitting bone ring around it is the spinal canal at a disc level "
                             "(vertebral bodies lie in front of it a few millimetres above or below).")
    fallback = False
    if quality < LOW_QUALITY:
        outline, metrics = outline_from_contour(box, final, METHOD_CLICK + ", conservative", scale=FALLBACK_SCALE,
                                                canal=canal)
        fallback = True
        warnings.append(f"{prefix}low fit quality ({quality:.2f}: {'; '.join(q_reasons)}); the ROIs were shrunk to "
                        f"{FALLBACK_SCALE:.0%} of the trabecular region — check them.")
    elif q_reasons:
        warnings.append(f"{prefix}fit quality {quality:.2f}: {'; '.join(q_reasons)}.")
    outline.meta.update({"fit_quality": round(quality, 3)})
    return Placement(outline=outline, method=METHOD_CLICK, plane=PLANE_AXIAL, slice_index=box.slice_index(s_fit),
                     fit_quality=quality, point_ras=point, reasons=q_reasons, warnings=warnings,
                     endplates_s=(sup, inf), snapped=snapped, fallback=fallback)


# ----------------------------------------------------------------------------------------------
# The plane perpendicular to the vertebra's own axis (tilted spines)
# ----------------------------------------------------------------------------------------------
PLANE_VERTEBRA = "perpendicular to the vertebra's axis"
#: Cross-sections used for the body's axis: at ± this fraction of the endplate distance (or of
#: ``DEFAULT_HEIGHT_MM``) about the mid-vertebral slice (the walls are vertical there).
AXIS_SPAN_FRACTION = 0.3
DEFAULT_HEIGHT_MM = 25.0
#: A tilt beyond this (degrees from the image's slice normal) is reported.
MAX_TILT_DEG = 35.0


def vertebra_axis(volume: Volume, placement: Placement) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """The vertebral body's own axis: the line through the area centroids of its outline on the
    image's axial slices about mid-height (a prism's cross-sections slide along its axis).
    Returns (a point on the axis at the mid-vertebral slice, unit axis towards superior, notes)."""
    o = placement.outline
    box = _Box(volume, o.center, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    c_xys = box.to_box(o.center)[0]
    s_mid = int(np.clip(round(c_xys[2]), 0, box.ns - 1))
    height = placement.height_mm or DEFAULT_HEIGHT_MM
    reach = max(1, int(np.floor(AXIS_SPAN_FRACTION * height / box.ds)))
    pts, heights = [], []
    start = c_xys[:2]
    for s in range(max(0, s_mid - reach), min(box.ns - 1, s_mid + reach) + 1):
        plane = box.plane(s, 0.0)
        contour = fit_contour(box, plane, s, start)
        if contour.ring_reasons():
            continue
        off = contour.centroid_offset_mm()
        centroid = box.to_ras([[contour.center_xy[0], contour.center_xy[1], float(s)]])[0] \
            + off[0] * contour.u + off[1] * contour.v
        pts.append(centroid)
        heights.append(float(centroid @ box.normal))
    notes: List[str] = []
    if len(pts) < 3:
        notes.append("too few clear cross-sections to find the vertebra's axis; the image's slice normal is used")
        return np.asarray(o.center, dtype=float), box.normal.copy(), notes
    pts_a, h = np.array(pts), np.array(heights)
    design = np.column_stack([np.ones_like(h), h - h.mean()])
    coef, *_ = np.linalg.lstsq(design, pts_a, rcond=None)
    slope = coef[1] - box.normal * float(coef[1] @ box.normal)  # in-plane drift per mm of height
    axis = box.normal + slope
    axis = axis / np.linalg.norm(axis)
    h_mid = float(np.asarray(o.center) @ box.normal)
    point = coef[0] + (h_mid - h.mean()) * coef[1]
    tilt = float(np.degrees(np.arccos(np.clip(axis @ box.normal, -1.0, 1.0))))
    if tilt > MAX_TILT_DEG:
        notes.append(f"the vertebra's axis is tilted {tilt:.0f}° from the image's slice normal; check the plane")
    return point, axis, notes


def to_vertebra_plane(volume: Volume, placement: Placement, level: str = "") -> Placement:
    """Re-fit a placement on the plane perpendicular to the vertebra's own axis through its
    mid-height (issue #3 option for tilted spines). The image is resampled (trilinear) on that
    plane; the outline's normal is the axis, so the ROIs' slab lies along it and their voxels
    are the image voxels whose centres fall inside (``geometry`` membership rule)."""
    prefix = f"{level}: " if level else ""
    point, axis, notes = vertebra_axis(volume, placement)
    step = float(min(min(volume.spacing), 1.0))
    half = FIT_HALF_SLAB_MM
    if placement.height_mm:
        half = min(half, 0.2 * placement.height_mm)
    obox = _ObliqueBox(volume, point, axis, CROP_HALF_INPLANE_MM, half + step, step)
    s_c = obox.ns // 2
    plane = obox.plane(s_c, half)
    start = obox.to_box(point)[0][:2]
    warnings = list(placement.warnings) + [prefix + n + "." for n in notes]
    contour, canal = fit_body(obox, plane, s_c, start)
    reasons = contour.ring_reasons()
    if reasons:
        warnings.append(f"{prefix}no clear body outline on the vertebra's plane ({'; '.join(reasons)}); the image's "
                        "axial plane is kept.")
        return placement
    source = placement.method
    outline, metrics = outline_from_contour(obox, contour, source, canal=canal)
    plates_q = 1.0 if placement.height_mm else 0.6
    quality, q_reasons = _quality(contour, metrics, plates_q, None, outline.depth_mm, outline.width_mm)
    quality = min(quality, placement.fit_quality)
    q_reasons = list(placement.reasons) + [r for r in q_reasons if r not in placement.reasons]
    fallback = False
    if quality < LOW_QUALITY:
        outline, metrics = outline_from_contour(obox, contour, source + ", conservative", scale=FALLBACK_SCALE,
                                                canal=canal)
        fallback = True
        if not placement.fallback:
            warnings.append(f"{prefix}low fit quality on the vertebra's plane ({quality:.2f}); the ROIs were shrunk "
                            f"to {FALLBACK_SCALE:.0%} of the trabecular region — check them.")
    tilt = float(np.degrees(np.arccos(np.clip(axis @ volume.slice_normal_ras(), -1.0, 1.0))))
    outline.meta.update({"fit_quality": round(quality, 3), "axis_tilt_deg": round(tilt, 2)})
    out = Placement(outline=outline, method=placement.method, plane=PLANE_VERTEBRA,
                    slice_index=volume.nearest_slice_index(outline.center), fit_quality=quality,
                    point_ras=placement.point_ras, reasons=q_reasons, warnings=warnings,
                    endplates_s=placement.endplates_s, snapped=placement.snapped,
                    fallback=fallback or placement.fallback)
    out.axis_ras = axis
    out.axis_tilt_deg = tilt
    return out
