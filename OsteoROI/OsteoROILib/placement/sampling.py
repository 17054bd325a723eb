"""Sampling the image around a click: the box read around it, interpolation, rays and the fit cache.

All placement work is local: a box of about ±``CROP_HALF_INPLANE_MM`` in-plane and
±``CROP_HALF_AXIAL_MM`` along the slice axis around the click is read (or, for a tilted
vertebra, resampled on planes perpendicular to its axis); the whole volume is never processed.
The contour, canal and endplate searches read the box through the helpers here.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..io.volume import Volume
from ..roi.geometry import in_plane_frame
from ..roi.stats import median_of
from .probe import smooth_plane

N_RAYS = 72
RAY_STEP_MM = 0.5
MAX_RAY_MM = 40.0
MIN_RAY_MM = 1.0
#: In-plane half-width and axial half-height (mm) of the box read around the click.
CROP_HALF_INPLANE_MM = MAX_RAY_MM + 12.0
CROP_HALF_AXIAL_MM = 45.0
#: Slab (± mm) averaged for the in-plane fit: the body's walls are vertical over it.
FIT_HALF_SLAB_MM = 3.0


# ----------------------------------------------------------------------------------------------
# A box of the image around a point, as [s, y, x] (s = slice axis)
# ----------------------------------------------------------------------------------------------
class Box:
    """The image around a point as [s, y, x] (s = the slice axis, x and y the in-plane IJK axes),
    read without copying; slabs are smoothed (``plane``) and converted to float32 only when used."""

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
            plane = smooth_plane(slab_median(self.take(slice(s0, s1 + 1))), self.dy, self.dx)
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


def trilinear(volume: Volume, ras: np.ndarray) -> np.ndarray:
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


class ObliqueBox(Box):
    """A stack of planes perpendicular to ``normal`` around ``center_ras``, resampled from the
    image (trilinear) on a square grid of ``step_mm``: the same interface as ``Box``, so the
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
        self.data = trilinear(volume, grid.reshape(-1, 3)).reshape(grid.shape[:3]).astype(np.float32)
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


#: Slabs of up to this many slices take their median with a sorting network (see ``slab_median``).
SLAB_NETWORK_MAX = 15


def slab_median(slab: np.ndarray) -> np.ndarray:
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


def fast_median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a float64 sample, without numpy's per-call overhead
    (``stats.median_of``: the same value); other dtypes go to ``np.median`` itself."""
    v = np.asarray(values)
    return median_of(v) if v.dtype == np.float64 else float(np.median(v))


def cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of two 3-vectors (the same products and differences, without its overhead)."""
    a0, a1, a2 = float(a[0]), float(a[1]), float(a[2])
    b0, b1, b2 = float(b[0]), float(b[1]), float(b[2])
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def bilinear(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
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


def cached_fit(box: Box, plane: np.ndarray, kind: str, key: tuple, compute, keep: tuple = ()):
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



def smooth_circular(r: np.ndarray, width: int = 1) -> np.ndarray:
    k = np.ones(2 * width + 1) / (2 * width + 1)
    padded = np.concatenate([r[-width:], r, r[:width]])
    return np.convolve(padded, k, mode="valid")

