"""From a point inside a vertebral body to a body outline on the point's axial slice.

This is the foundation's *simple default* outline (automatic mid-vertebral slice finding and
AP-axis fitting come later). On the image's axial slice through the point it casts rays in
``N_RAYS`` directions and looks for the cortical shell along each ray:

* the interior reference is the median HU within ``INTERIOR_RADIUS_MM`` of the point;
* along a ray the shell is the first peak that rises at least ``SHELL_CONTRAST_HU`` above the
  interior and falls by ``SHELL_CONTRAST_HU`` again behind it (bone, then the soft tissue,
  fat or spinal canal around the body); the boundary is where the profile first crosses
  halfway between the interior and the peak.

Whether the point is inside a vertebral body is judged by this shell — a closed ring of
cortex around the point — **never by the HU at the point**: osteoporotic trabecular bone reads
30–80 HU, like muscle, and those are the patients the tool exists for.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..roi.geometry import in_plane_frame
from ..roi.outline import BodyOutline
from ..io.volume import Volume

N_RAYS = 36
MAX_RAY_MM = 45.0
INTERIOR_RADIUS_MM = 3.0
SHELL_CONTRAST_HU = 40.0
SMOOTH_SIGMA_MM = 1.0
PROBE_HALF_SLAB_MM = 3.0
#: Rays whose boundary differs from the median of their neighbours by more than this are
#: treated as misses (a dense trabecular spot or a vessel, not the shell).
RAY_OUTLIER_MM = 4.0
#: A body is accepted when this fraction of rays find a shell.
MIN_HIT_FRACTION = 0.6
#: ... and at least this fraction in each quadrant (anterior, left, posterior, right).
MIN_QUADRANT_FRACTION = 0.4
#: Trabecular cross-section of lumbar bodies: well above the spinal canal's (≈ 2–3 cm²).
MIN_BODY_AREA_MM2 = 400.0
MAX_BODY_AREA_MM2 = 3500.0
#: Fallback size when the user forces a placement without a detected shell.
DEFAULT_DEPTH_MM = 30.0
DEFAULT_WIDTH_MM = 40.0
DEFAULT_CORTICAL_MM = 3.0


@dataclass
class ShellProbe:
    """What the rays found around a point."""

    point_ras: np.ndarray
    normal: np.ndarray
    ap_axis: np.ndarray
    left_axis: np.ndarray
    interior_hu: float
    hit: np.ndarray  # bool per ray
    radius_mm: np.ndarray  # boundary distance per ray (NaN where no shell)
    angles: np.ndarray
    inset_mm: float
    reasons: List[str] = field(default_factory=list)

    @property
    def hit_fraction(self) -> float:
        return float(np.mean(self.hit))

    @property
    def enclosed_area_mm2(self) -> float:
        r = np.where(self.hit, self.radius_mm, 0.0)
        # Polygon area of the ray end points (shoelace), misses count as zero radius.
        x, y = r * np.cos(self.angles), r * np.sin(self.angles)
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def quadrant_of_rays(self) -> np.ndarray:
        """0 anterior, 1 left, 2 posterior, 3 right, per ray."""
        return (np.round(self.angles / (np.pi / 2)).astype(int)) % 4

    def quadrant_fractions(self):
        q = self.quadrant_of_rays()
        return [float(np.mean(self.hit[q == i])) for i in range(4)]

    def quadrant_radius(self, i: int) -> float:
        """Median boundary distance of the hit rays within ±30° of quadrant direction ``i``."""
        centre = i * np.pi / 2
        d = np.abs((self.angles - centre + np.pi) % (2 * np.pi) - np.pi)
        sel = self.hit & (d <= np.pi / 6 + 1e-9)
        return float(np.median(self.radius_mm[sel])) if sel.any() else float("nan")

    @property
    def inside_body(self) -> bool:
        return not self.reasons


def _slice_sampler(volume: Volume, point_ras: np.ndarray):
    """Bilinear sampler of the image's axial slice nearest to the point, in RAS."""
    axis = volume.slice_axis()
    ijk = volume.ras_to_ijk_points(point_ras)[0]
    k = int(np.clip(np.round(ijk[axis]), 0, volume.dimensions[axis] - 1))
    # array is [k, j, i]; IJK axis a is array axis 2 - a.
    # Average the slices within ±PROBE_HALF_SLAB_MM (at least the neighbours): the body's
    # walls are vertical there, while noise and trabecular spikes average out.
    reach = max(1, int(np.floor(PROBE_HALF_SLAB_MM / volume.spacing[axis] + 1e-6)))
    ks = [kk for kk in range(k - reach, k + reach + 1) if 0 <= kk < volume.dimensions[axis]]
    plane = np.mean([np.take(volume.array, kk, axis=2 - axis).astype(np.float32) for kk in ks], axis=0)
    in_axes = [a for a in (0, 1, 2) if a != axis]  # IJK axes spanning the slice, ascending
    plane = smooth_plane(plane, volume.spacing[in_axes[1]], volume.spacing[in_axes[0]])
    inv = volume.ras_to_ijk

    def sample(ras_points: np.ndarray) -> np.ndarray:
        q = ras_points @ inv[:3, :3].T + inv[:3, 3]
        # plane is indexed [in_axes[1], in_axes[0]] (array order is reversed IJK order)
        x, y = q[..., in_axes[0]], q[..., in_axes[1]]
        ny, nx = plane.shape
        inside = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
        x = np.clip(x, 0, nx - 1)
        y = np.clip(y, 0, ny - 1)
        x0 = np.minimum(np.floor(x).astype(int), nx - 2) if nx > 1 else np.zeros_like(x, dtype=int)
        y0 = np.minimum(np.floor(y).astype(int), ny - 2) if ny > 1 else np.zeros_like(y, dtype=int)
        fx, fy = x - x0, y - y0
        x1, y1 = np.minimum(x0 + 1, nx - 1), np.minimum(y0 + 1, ny - 1)
        v = (
            plane[y0, x0] * (1 - fx) * (1 - fy)
            + plane[y0, x1] * fx * (1 - fy)
            + plane[y1, x0] * (1 - fx) * fy
            + plane[y1, x1] * fx * fy
        )
        return np.where(inside, v, np.nan)

    # The point, moved onto the slice's centre plane.
    ijk_on = ijk.copy()
    ijk_on[axis] = k
    on_slice = volume.ijk_to_ras_points(ijk_on)[0]
    return sample, on_slice, k


def smooth_plane(plane: np.ndarray, spacing_y: float, spacing_x: float) -> np.ndarray:
    """Gaussian smoothing (σ = ``SMOOTH_SIGMA_MM``) so single trabecular spikes do not read as cortex."""
    out = plane
    for axis, spacing in ((0, spacing_y), (1, spacing_x)):
        sigma = SMOOTH_SIGMA_MM / float(spacing)
        radius = int(np.ceil(3 * sigma))
        if radius < 1:
            continue
        x = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 * (x / sigma) ** 2)
        w /= w.sum()
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        acc = np.zeros_like(out)
        for o, wo in enumerate(w):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(o, o + out.shape[axis])
            acc += wo * padded[tuple(sl)]
        out = acc
    return out


def probe_shell(volume: Volume, point_ras, ap_direction=None) -> ShellProbe:
    """Cast rays on the point's axial slice and locate the cortical shell (see module docstring)."""
    point = np.asarray(point_ras, dtype=float)
    sample, on_slice, _ = _slice_sampler(volume, point)
    n = volume.slice_normal_ras()
    u, v, n = in_plane_frame(n, volume.in_plane_anterior() if ap_direction is None else ap_direction)
    in_plane = volume.spacing[[a for a in (0, 1, 2) if a != volume.slice_axis()]]
    step = float(min(0.5, 0.25 * in_plane.min()))
    # Interior reference: median over a small disc.
    rr = np.arange(0.0, INTERIOR_RADIUS_MM + 1e-9, step)
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    disc = on_slice + np.multiply.outer(rr, np.cos(ang))[..., None] * u + np.multiply.outer(rr, np.sin(ang))[..., None] * v
    disc_values = sample(disc.reshape(-1, 3))
    interior = float(np.nanmedian(disc_values)) if np.isfinite(disc_values).any() else float("nan")

    angles = np.linspace(0, 2 * np.pi, N_RAYS, endpoint=False)
    radii = np.arange(0.0, MAX_RAY_MM + 1e-9, step)
    dirs = np.outer(np.cos(angles), u) + np.outer(np.sin(angles), v)  # (rays, 3)
    pts = on_slice + radii[None, :, None] * dirs[:, None, :]
    prof = sample(pts.reshape(-1, 3)).reshape(N_RAYS, radii.size)
    hit = np.zeros(N_RAYS, dtype=bool)
    radius = np.full(N_RAYS, np.nan)
    for r in range(N_RAYS):
        found = _shell_on_profile(prof[r], interior, radii)
        if found is not None:
            hit[r] = True
            radius[r] = found
    # Reject isolated outliers against the circular median of the neighbouring rays.
    if hit.sum() >= 5:
        padded = np.concatenate([radius[-2:], radius, radius[:2]])
        windows = np.stack([padded[i : i + N_RAYS] for i in range(5)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: no neighbours
            local = np.nanmedian(windows, axis=0)
        outlier = hit & (np.abs(radius - local) > RAY_OUTLIER_MM)
        hit &= ~outlier
        radius[outlier] = np.nan
    inset = 0.5 * float(in_plane.max()) + 0.5
    probe = ShellProbe(on_slice, n, u, v, interior, hit, radius, angles, inset)
    if not np.isfinite(interior):
        probe.reasons.append("the point's neighbourhood is outside the image")
    elif probe.hit_fraction < MIN_HIT_FRACTION or min(probe.quadrant_fractions()) < MIN_QUADRANT_FRACTION:
        q = probe.quadrant_fractions()
        probe.reasons.append(
            f"no cortical shell surrounds the point (found on {int(hit.sum())} of {N_RAYS} rays; "
            f"anterior {q[0]:.0%}, left {q[1]:.0%}, posterior {q[2]:.0%}, right {q[3]:.0%})"
        )
    else:
        area = probe.enclosed_area_mm2
        if area < MIN_BODY_AREA_MM2:
            probe.reasons.append(
                f"the bone ring around the point encloses only {area / 100:.1f} cm², too small for a vertebral "
                "body (spinal canal or foramen?)"
            )
        elif area > MAX_BODY_AREA_MM2:
            probe.reasons.append(f"the ring around the point encloses {area / 100:.1f} cm², too large for a vertebral body")
    return probe


def _shell_on_profile(p: np.ndarray, interior: float, radii: np.ndarray) -> Optional[float]:
    """Distance to the half-way crossing of the first cortical peak on a ray profile, or None."""
    if not np.isfinite(interior):
        return None
    finite = np.isfinite(p)
    if not finite[0]:
        return None
    # Stop at the image border.
    end = int(np.argmin(finite)) if not finite.all() else p.size
    q = p[:end]
    above = q >= interior + SHELL_CONTRAST_HU
    if not above.any():
        return None
    start = int(np.argmax(above))
    # Peak of this run of high values, then require a drop behind it.
    stop = start
    while stop + 1 < q.size and above[stop + 1]:
        stop += 1
    peak_idx = start + int(np.argmax(q[start : stop + 1]))
    peak = float(q[peak_idx])
    behind = q[peak_idx:]
    if not np.any(behind <= peak - SHELL_CONTRAST_HU):
        return None
    half = interior + 0.5 * (peak - interior)
    idx = int(np.argmax(q[: peak_idx + 1] >= half))
    if idx == 0:
        return float(radii[0])
    # Linear interpolation of the crossing.
    a, b = q[idx - 1], q[idx]
    frac = (half - a) / (b - a) if b != a else 0.0
    return float(radii[idx - 1] + frac * (radii[idx] - radii[idx - 1]))


def outline_from_probe(probe: ShellProbe) -> BodyOutline:
    """An elliptic body outline from the shell's median distance in the four directions.

    The outer outline spans the anterior/posterior and left/right boundary distances (medians
    of the rays within ±30° of each direction, robust to single noisy rays); the cortical
    margin is ``probe.inset_mm`` (half an in-plane voxel + 0.5 mm, so partial-volume voxels of
    the shell stay out).
    """
    ant, left, post, right = (probe.quadrant_radius(i) for i in range(4))
    if not all(np.isfinite([ant, left, post, right])):
        raise ValueError("outline_from_probe needs a shell in all four directions")
    depth = ant + post
    width = left + right
    center = probe.point_ras + 0.5 * (ant - post) * probe.ap_axis + 0.5 * (left - right) * probe.left_axis
    cortical = min(probe.inset_mm, 0.25 * min(depth, width))
    return BodyOutline(
        center=center,
        ap_axis=probe.ap_axis,
        normal=probe.normal,
        depth_mm=depth,
        width_mm=width,
        cortical_mm=cortical,
        meta={"source": "shell rays", "hit_fraction": round(probe.hit_fraction, 3)},
    )


def default_outline(volume: Volume, point_ras) -> BodyOutline:
    """A conservative fixed-size outline centred on the point's slice (used only when forced)."""
    sample, on_slice, _ = _slice_sampler(volume, np.asarray(point_ras, dtype=float))
    u, v, n = in_plane_frame(volume.slice_normal_ras(), volume.in_plane_anterior())
    return BodyOutline(on_slice, u, n, DEFAULT_DEPTH_MM, DEFAULT_WIDTH_MM, DEFAULT_CORTICAL_MM,
                       meta={"source": "default size"})
