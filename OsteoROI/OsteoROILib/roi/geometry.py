"""ROI shapes in RAS and their voxel sets.

An ROI is an ellipse (a circle is an ellipse with equal half-sizes) or a rectangle lying in a
plane, extruded into a slab along the plane's normal:

* ``center`` — RAS mm;
* ``axis_u``, ``axis_v`` — orthonormal in-plane directions in RAS (for vertebral ROIs ``axis_u``
  is the body's anterior direction and ``axis_v`` the patient's left; they may be rotated
  relative to the image axes); the normal is ``n = axis_u × axis_v``;
* ``half_u``, ``half_v`` — half-sizes along ``axis_u`` and ``axis_v`` (mm);
* ``slab_mm`` — slab thickness along ``n`` (mm).

**Membership rule.** A voxel belongs to the ROI when its *centre* ``p`` satisfies, with
``d = p − center``, ``su = d·u``, ``sv = d·v``, ``sn = d·n``:

* ellipse: ``(su/half_u)² + (sv/half_v)² ≤ 1``; rectangle: ``|su| ≤ half_u`` and ``|sv| ≤ half_v``
  (the in-plane boundary belongs to the ROI);
* slab: ``−slab/2 ≤ sn < +slab/2`` (half-open, so that a slab one slice thick always holds
  exactly one layer of voxels when ``n`` is the slice normal, even when the centre lies
  exactly between two slices).

Each comparison allows ``TOLERANCE_MM`` for floating-point round-off (boundary voxels stay in,
the upper slab face stays out). Only the ROI's bounding box in IJK is ever visited; no
full-volume mask is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

from ..errors import PlacementError

TOLERANCE_MM = 1e-6
SHAPE_KINDS = ("ellipse", "rectangle")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        raise PlacementError("An ROI axis direction is zero or not finite.", "Give a non-zero direction.")
    return v / n


def _cross(u, v) -> Tuple[float, float, float]:
    """u × v of two 3-vectors (the same products and differences as ``numpy.cross``, without its overhead)."""
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


@dataclass(frozen=True)
class RoiShape:
    """One planar ROI (ellipse or rectangle) with a slab thickness, in RAS."""

    kind: str
    center: Tuple[float, float, float]
    axis_u: Tuple[float, float, float]
    axis_v: Tuple[float, float, float]
    half_u: float
    half_v: float
    slab_mm: float
    name: str = ""
    meta: Dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.kind not in SHAPE_KINDS:
            raise PlacementError(f"Unknown ROI kind {self.kind!r}.", f"Use one of {', '.join(SHAPE_KINDS)}.")
        u = _unit(self.axis_u)
        v = np.asarray(self.axis_v, dtype=float)
        v = _unit(v - u * float(u @ v))  # tolerate a slightly non-orthogonal v
        object.__setattr__(self, "axis_u", tuple(float(x) for x in u))
        object.__setattr__(self, "axis_v", tuple(float(x) for x in v))
        object.__setattr__(self, "center", tuple(float(x) for x in self.center))
        for attr in ("half_u", "half_v", "slab_mm"):
            value = float(getattr(self, attr))
            if not np.isfinite(value) or value <= 0:
                raise PlacementError(
                    f"ROI {self.name or self.kind}: {attr} must be a positive number of mm, got {value:g}.",
                    "Give a positive size.",
                )
            object.__setattr__(self, attr, value)

    @property
    def normal(self) -> np.ndarray:
        return np.array(_cross(self.axis_u, self.axis_v))

    @property
    def nominal_area_mm2(self) -> float:
        """Analytic area of the in-plane shape (π·a·b or 4·a·b)."""
        if self.kind == "ellipse":
            return float(np.pi * self.half_u * self.half_v)
        return float(4.0 * self.half_u * self.half_v)

    def moved(self, **changes) -> "RoiShape":
        return replace(self, **changes)

    def corners(self) -> np.ndarray:
        """The 8 corners of the ROI's bounding box in RAS."""
        c = np.asarray(self.center)
        u, v, n = np.asarray(self.axis_u), np.asarray(self.axis_v), self.normal
        out = []
        for a in (-1, 1):
            for b in (-1, 1):
                for s in (-1, 1):
                    out.append(c + a * self.half_u * u + b * self.half_v * v + s * 0.5 * self.slab_mm * n)
        return np.array(out)

    def outline(self, n_points: int = 64) -> np.ndarray:
        """In-plane boundary polygon in RAS (for drawing)."""
        c = np.asarray(self.center)
        u, v = np.asarray(self.axis_u), np.asarray(self.axis_v)
        if self.kind == "ellipse":
            t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
            return c + np.outer(self.half_u * np.cos(t), u) + np.outer(self.half_v * np.sin(t), v)
        signs = [(1, 1), (1, -1), (-1, -1), (-1, 1)]
        return np.array([c + a * self.half_u * u + b * self.half_v * v for a, b in signs])

    def to_dict(self) -> Dict[str, object]:
        return {
            "kind": self.kind,
            "center_ras": [round(x, 4) for x in self.center],
            "axis_u_ras": [round(x, 6) for x in self.axis_u],
            "axis_v_ras": [round(x, 6) for x in self.axis_v],
            "half_u_mm": round(self.half_u, 4),
            "half_v_mm": round(self.half_v, 4),
            "slab_mm": round(self.slab_mm, 4),
        }


def inside_mask(shape: RoiShape, su, sv, sn) -> np.ndarray:
    """Membership of points given their ROI-frame coordinates (see module docstring)."""
    tol = TOLERANCE_MM
    half_slab = 0.5 * shape.slab_mm
    slab = (sn >= -half_slab - tol) & (sn < half_slab - tol)
    if shape.kind == "ellipse":
        # Scale the tolerance to the ellipse's normalised radius.
        r2 = (su / shape.half_u) ** 2 + (sv / shape.half_v) ** 2
        limit = (1.0 + tol / min(shape.half_u, shape.half_v)) ** 2
        plane = r2 <= limit
    else:
        plane = (np.abs(su) <= shape.half_u + tol) & (np.abs(sv) <= shape.half_v + tol)
    return slab & plane


@dataclass
class VoxelSet:
    """The voxels of one ROI: indices into ``array[k, j, i]`` and what was clipped."""

    k: np.ndarray
    j: np.ndarray
    i: np.ndarray
    n_outside: int  # voxel centres inside the ROI but outside the image grid

    @property
    def count(self) -> int:
        return int(self.k.size)

    def values(self, array: np.ndarray) -> np.ndarray:
        return array[self.k, self.j, self.i]


@lru_cache(maxsize=16)
def _inverse(matrix_bytes: bytes) -> np.ndarray:
    inv = np.linalg.inv(np.frombuffer(matrix_bytes, dtype=float).reshape(4, 4))
    inv.flags.writeable = False
    return inv


def _inverse_of(ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS → IJK of a 4×4 matrix (cached: the same image's matrix is inverted once)."""
    return _inverse(np.ascontiguousarray(ijk_to_ras, dtype=float).tobytes())


def bounding_box_ijk(shape: RoiShape, ijk_to_ras: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Integer IJK range (inclusive lo, inclusive hi) that contains every voxel centre of the ROI.

    The ROI's bounding box (centre ± half_u·u ± half_v·v ± slab/2·n) mapped to IJK: its extent
    along each IJK axis is the sum of the absolute IJK components of the three half-edges.
    """
    inv = _inverse_of(ijk_to_ras)
    a = inv[:3, :3]
    c = a @ np.asarray(shape.center) + inv[:3, 3]
    edges = np.array([shape.axis_u, shape.axis_v, _cross(shape.axis_u, shape.axis_v)]) * np.array(
        [[shape.half_u], [shape.half_v], [0.5 * shape.slab_mm]])
    half = np.abs(edges @ a.T).sum(axis=0)
    lo = np.ceil(c - half - 1e-6).astype(int)
    hi = np.floor(c + half + 1e-6).astype(int)
    return lo, hi


def roi_voxels(shape: RoiShape, ijk_to_ras: np.ndarray, dimensions) -> VoxelSet:
    """Voxels (centres) inside ``shape`` for an image of ``dimensions`` = (ni, nj, nk).

    Only the ROI's IJK bounding box is evaluated. Voxel centres inside the ROI but outside the
    image are counted in ``n_outside`` and left out.
    """
    m = np.asarray(ijk_to_ras, dtype=float)
    lo, hi = bounding_box_ijk(shape, m)
    (i0, j0, k0), (i1, j1, k1) = lo.tolist(), hi.tolist()
    if i1 < i0 or j1 < j0 or k1 < k0:
        empty = np.zeros(0, dtype=np.intp)
        return VoxelSet(empty, empty, empty, 0)
    # ROI-frame coordinate of voxel (i, j, k): s = R @ (M3 @ ijk + t - c) = A @ ijk + o.
    frame = np.array([shape.axis_u, shape.axis_v, _cross(shape.axis_u, shape.axis_v)])
    a = frame @ m[:3, :3]
    o = frame @ (m[:3, 3] - np.asarray(shape.center))
    ii = np.arange(i0, i1 + 1, dtype=float)
    jj = np.arange(j0, j1 + 1, dtype=float)
    kk = np.arange(k0, k1 + 1, dtype=float)
    # Broadcast over a [r, k, j, i] grid, all three frame coordinates r at once:
    # s[r] = ((a[r, 0]·i + a[r, 1]·j) + a[r, 2]·k) + o[r], the same operations in the same order per voxel.
    coords = ((a[:, 0, None] * ii)[:, None, None, :] + (a[:, 1, None] * jj)[:, None, :, None]
              + (a[:, 2, None] * kk)[:, :, None, None]) + o[:, None, None, None]
    mask = inside_mask(shape, coords[0], coords[1], coords[2])
    kx, jx, ix = (np.asarray(x, dtype=np.intp) for x in np.nonzero(mask))
    kx += k0
    jx += j0
    ix += i0
    ni, nj, nk = (int(d) for d in dimensions)
    if min(i0, j0, k0) >= 0 and i1 < ni and j1 < nj and k1 < nk:
        return VoxelSet(kx, jx, ix, 0)  # the whole box lies inside the image: nothing to clip
    valid = (ix >= 0) & (ix < ni) & (jx >= 0) & (jx < nj) & (kx >= 0) & (kx < nk)
    n_outside = int(valid.size - np.count_nonzero(valid))
    return VoxelSet(kx[valid], jx[valid], ix[valid], n_outside)


def in_plane_frame(normal, anterior) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal (u = anterior in plane, v = patient left, n = u × v) for a plane normal.

    ``anterior`` is projected into the plane. With n = superior and u = anterior, v = n × u
    is patient *left* (−R in RAS), so u × v = n.
    """
    n = _unit(normal)
    u = np.asarray(anterior, dtype=float)
    u = u - n * float(u @ n)
    u = _unit(u)
    v = np.array(_cross(n.tolist(), u.tolist()))
    return u, v, n


def shapes_by_name(shapes: List[RoiShape]) -> Dict[str, RoiShape]:
    return {s.name: s for s in shapes}
