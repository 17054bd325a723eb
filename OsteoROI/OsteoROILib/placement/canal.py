"""The spinal canal behind a vertebral body: a low-HU hole with bone (the pedicles) on both sides.

Found behind a body's contour, it fixes the posterior wall, which thick slices often do not
show (the basivertebral foramen at mid-height has no cortex), and the AP axis of a rotated
vertebra (QCT_BRIEF §1: the body's axes follow the vertebra).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..roi.geometry import in_plane_frame
from .landmarks import CANAL_ENTRY_MM, MAX_ROTATION_DEG, Canal, Contour
from .sampling import MAX_RAY_MM, RAY_STEP_MM, Box, bilinear, cached_fit, cross3

#: The spinal canal behind a body: smoothed HU below min(CANAL_LOW_HU, interior −
#: CANAL_BELOW_INTERIOR_HU) (CSF ≈ 0–20 HU, epidural fat < 0) over at least CANAL_MIN_MM along a
#: posterior ray (searched ±CANAL_SEARCH_DEG about the image's posterior), with bone above
#: max(CANAL_BONE_MIN_HU, interior + CANAL_BONE_ABOVE_INTERIOR_HU) (the pedicles) on both sides
#: within CANAL_MAX_HALF_WIDTH_MM (lumbar canal ≈ 15–25 mm wide).
CANAL_LOW_HU = 60.0
CANAL_BELOW_INTERIOR_HU = 25.0
CANAL_MIN_MM = 6.0
CANAL_SEARCH_DEG = 35.0
CANAL_BONE_MIN_HU = 150.0
CANAL_BONE_ABOVE_INTERIOR_HU = 60.0
CANAL_MAX_HALF_WIDTH_MM = 18.0


def find_canal(box: Box, plane: np.ndarray, contour: Contour) -> Optional[Canal]:
    """The spinal canal: a low-HU hole directly behind the body, with bone (the pedicles) on
    both sides of it. None when not found (then the
    contour alone decides; e.g. an osteoporotic body whose trabecular HU is as low as the canal's
    content)."""
    return cached_fit(box, plane, "canal", (id(contour),), lambda: _find_canal(box, plane, contour), keep=(contour,))


def first_long_runs(is_low: np.ndarray, start: np.ndarray, stop_at: np.ndarray, n_min: int) -> List[Tuple[int, int, int]]:
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


def _find_canal(box: Box, plane: np.ndarray, contour: Contour) -> Optional[Canal]:
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
    prof = bilinear(plane, c[0] + radii[None, :] * dxy[:, 0:1], c[1] + radii[None, :] * dxy[:, 1:2])
    r_wall = np.interp((np.pi + angs) % (2 * np.pi), np.append(contour.angles, 2 * np.pi),
                       np.append(contour.r_out, contour.r_out[0]))
    n_min = int(round(CANAL_MIN_MM / step))
    n_in = max(1, int(round(CANAL_ENTRY_MM / step)))
    lat_r = np.arange(0.0, CANAL_MAX_HALF_WIDTH_MM + 1e-9, step)
    runs = first_long_runs(np.isfinite(prof) & (prof < low), (0.4 * r_wall / step).astype(int),
                            (r_wall + 8.0) / step, n_min)
    # both lateral probes of every candidate ray, sampled in one call
    probes = []
    for i, j, k in runs:
        d = dirs[i]
        w = cross3(box.normal, d)
        depth = min(radii[k - 1] - radii[j], 16.0)
        mid = c + box.direction_xy((d * (radii[j] + 0.5 * depth))[None, :])[0]
        lxys = [box.direction_xy((sgn * w)[None, :])[0] for sgn in (1.0, -1.0)]
        probes.append((i, w, mid, lxys))
    if probes:
        qs = bilinear(plane, np.array([mid[0] + lat_r * lxy[0] for _, _, mid, lxys in probes for lxy in lxys]),
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
    q = bilinear(plane, centre[0] + radii * axy[0], centre[1] + radii * axy[1])
    above = np.nonzero(~(np.isfinite(q) & (q < low)))[0]
    if above.size == 0:
        return None
    front = centre + radii[above[0]] * axy
    return Canal(front_xy=front, center_xy=centre, axis=axis, lateral=lateral, half_width_mm=float(half_width),
                 low_hu=float(low))

