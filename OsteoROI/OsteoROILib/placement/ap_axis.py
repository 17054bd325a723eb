"""The AP axis of a vertebra from its body, its spinal canal and its posterior elements.

The posterior elements (pedicles, laminae, transverse and spinous processes) are bilaterally
symmetric about the vertebra's mid-sagittal plane, like the body (QCT_BRIEF §1: the body's axes
follow the vertebra). Their bone centroid lies 33–39 mm behind the body's centre on the real CTs (the
canal's centre 18–29 mm), and it is summed over several slices, so it steadies the axis of a rotated
vertebra where the body's outline alone is nearly round and the canal is one short hole on one slice.

The rule (continuous: no switch on a score):

* the posterior direction is from the centroid of the bone behind the body (HU weighted by a ramp
  ``POSTERIOR_BONE_HU``, over several slices ±``POSTERIOR_HALF_HEIGHT_MM`` around mid-height, in a
  window outside the body's outline, within ±``POSTERIOR_SECTOR_DEG`` of the posterior direction,
  ``POSTERIOR_REACH_MM`` deep behind the wall and ±``POSTERIOR_HALF_WIDTH_MM`` wide, centred on
  the axis itself: ``POSTERIOR_ITERATIONS`` fixed-point steps from the canal's axis) to the
  body's centre;
* the AP axis is the mean of the body/canal axis and the posterior direction, each weighted by
  the square of its lever (the distance from the body's centre of the point that gives it: the
  canal's centre, else half the body's depth), so that equal position errors count equally; the
  posterior weight is scaled by how much bone was found (up to ``POSTERIOR_FULL_BONE_MM2``), by
  the share of the window inside the image and by the cosine between the two directions (bone
  off to one side is not an arch behind the body).

Computed from the settled body's centre and the first axis, never from the click. The constants
are design choices (anatomical sizes of the lumbar neural arch; the brief gives none), checked on
the real CTs against the posterior elements' labels (``benchmarks/bench_placement.py``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..roi.geometry import in_plane_frame
from ..roi.outline import radius_at
from .sampling import trilinear

#: Half-height (mm) of the slab sampled around mid-height, and the sampling step (mm) in it.
POSTERIOR_HALF_HEIGHT_MM = 6.0
POSTERIOR_STEP_MM = 2.0
#: Depth (mm) of the window behind the body's posterior wall (the lumbar spinous process ends
#: about this far behind it), its half-width about the axis (the transverse processes' reach),
#: and the soft edges (mm) of the window, so that bone crossing an edge changes the axis smoothly.
POSTERIOR_REACH_MM = 65.0
POSTERIOR_HALF_WIDTH_MM = 45.0
POSTERIOR_EDGE_MM = 5.0
#: The window starts this far (mm) outside the body's outline: the wall's own cortex is not weighed.
POSTERIOR_GAP_MM = 3.0
#: Half-angle (°) of the window's sector about the posterior direction (soft over ±5°): wide
#: enough for the transverse processes' tips (about 60° off it), short of the body's sides. Its
#: edges are radial, so turning the window moves no bone lying along the transverse processes
#: into or out of it (a straight front edge did, and the axis ran away from a wrong start).
POSTERIOR_SECTOR_DEG = 75.0
#: HU ramp of the bone weight: 0 at the first value (muscle, fat, canal), 1 from the second.
POSTERIOR_BONE_HU = (200.0, 400.0)
#: Mean bone area (mm² per sampled slice) at which the posterior direction gets its full weight.
POSTERIOR_FULL_BONE_MM2 = 300.0
POSTERIOR_ITERATIONS = 10


def _bone_behind(volume, frame, c: np.ndarray, reach: float, side: float):
    """The bone weight (0–1, averaged over the slab) and the share of samples inside the image, on
    a grid (x along ``frame[0]``, y along ``frame[1]``, mm from ``c``) covering the back of the body."""
    u0, v0, n = frame
    h = POSTERIOR_STEP_MM
    xs = np.arange(-reach, 0.5 * side + 1e-9, h)
    ys = np.arange(-side, side + 1e-9, h)
    zs = np.arange(-POSTERIOR_HALF_HEIGHT_MM, POSTERIOR_HALF_HEIGHT_MM + 1e-9, h)
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    hu = trilinear(volume, (c + gx[..., None] * u0 + gy[..., None] * v0 + gz[..., None] * n).reshape(-1, 3))
    hu = hu.reshape(gx.shape)
    lo, hi = POSTERIOR_BONE_HU
    bone = np.clip((np.nan_to_num(hu, nan=lo) - lo) / (hi - lo), 0.0, 1.0).mean(axis=2)
    return gx[..., 0], gy[..., 0], bone, np.isfinite(hu).mean(axis=2)


def _outside_body(x: np.ndarray, y: np.ndarray, body_xy: np.ndarray) -> np.ndarray:
    """0 inside the body's outline (polar about the origin), rising to 1 over ``POSTERIOR_EDGE_MM``
    from ``POSTERIOR_GAP_MM`` beyond it: the body's own cortex is not weighed."""
    r_body = radius_at(body_xy, np.arctan2(y, x))
    return np.clip((np.hypot(x, y) - r_body - POSTERIOR_GAP_MM) / POSTERIOR_EDGE_MM, 0.0, 1.0)


def posterior_direction(volume, normal, u0, center_ras, body_ras, depth_mm: float, ap0
                        ) -> Optional[Tuple[np.ndarray, float, float]]:
    """The in-plane direction from the posterior elements' bone centroid to ``center_ras``, its
    lever (mm) and its confidence (0–1: the bone found, the window's share inside the image, the
    agreement with ``ap0``); None when no bone lies behind the body (``body_ras``: its outline).
    The window (outside the body, within ``POSTERIOR_SECTOR_DEG`` of the posterior direction,
    ±``POSTERIOR_HALF_WIDTH_MM`` across it and ``POSTERIOR_REACH_MM`` behind the wall) starts on
    ``ap0`` and then follows the direction found."""
    frame = in_plane_frame(normal, u0)
    c = np.asarray(center_ras, dtype=float)
    back, e = 0.5 * float(depth_mm), POSTERIOR_EDGE_MM
    x, y, bone, inside = _bone_behind(volume, frame, c, back + POSTERIOR_REACH_MM + e,
                                      POSTERIOR_HALF_WIDTH_MM + 2.0 * e)
    rel = np.asarray(body_ras, dtype=float) - c
    clear = _outside_body(x, y, np.column_stack([rel @ frame[0], rel @ frame[1]]))
    r = np.maximum(np.hypot(x, y), 1e-9)
    a = np.array([ap0 @ frame[0], ap0 @ frame[1]])
    a = a / np.linalg.norm(a)
    cos_lo, cos_hi = np.cos(np.radians(POSTERIOR_SECTOR_DEG + 5.0)), np.cos(np.radians(POSTERIOR_SECTOR_DEG - 5.0))
    for _ in range(POSTERIOR_ITERATIONS):
        s, t = x * a[0] + y * a[1], -x * a[1] + y * a[0]
        win = (clear * np.clip((-s / r - cos_lo) / (cos_hi - cos_lo), 0.0, 1.0)
               * np.clip((back + POSTERIOR_REACH_MM + s) / e + 1.0, 0.0, 1.0)
               * np.clip((POSTERIOR_HALF_WIDTH_MM - np.abs(t)) / e + 1.0, 0.0, 1.0))
        w = bone * win
        total = float(w.sum())
        p = np.array([(w * x).sum(), (w * y).sum()]) / max(total, 1e-12)
        lever = float(np.linalg.norm(p))
        if total <= 0.0 or lever < 1e-6:
            return None
        a = -p / lever
    axis = a[0] * frame[0] + a[1] * frame[1]
    share = float((inside * win).sum() / max(win.sum(), 1e-9))
    # a direction far from the first axis (bone off to one side, not an arch behind) counts less
    agree = max(0.0, float(axis @ ap0) / float(np.linalg.norm(ap0)))
    confidence = min(1.0, total * POSTERIOR_STEP_MM ** 2 / POSTERIOR_FULL_BONE_MM2) * share * agree
    return axis, lever, confidence


def combined_ap_axis(volume, normal, u0, center_ras, body_ras, depth_mm: float, ap0, lever0: float) -> np.ndarray:
    """The AP axis: ``ap0`` (the canal's or the outline's axis, from a point ``lever0`` mm from the
    centre) and the posterior elements' direction, averaged with weights lever² (× the posterior
    confidence); ``ap0`` when no bone lies behind the body. Signed like ``ap0``."""
    ap0 = np.asarray(ap0, dtype=float)
    post = posterior_direction(volume, normal, u0, center_ras, body_ras, depth_mm, ap0)
    if post is None:
        return ap0
    axis, lever, confidence = post
    v = lever0 ** 2 * ap0 + confidence * lever ** 2 * axis
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        return ap0
    v = v / norm
    return v if v @ ap0 >= 0 else -v
