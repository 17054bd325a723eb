"""The endplates along the slice axis: a central HU profile's peaks and the run of the body's wall.

Along the image's slice axis the mean HU of a small central disc of the body is profiled; the
endplates are its prominent peaks (see the method overview in ``OsteoROILib.placement``, step 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .landmarks import EDGE_DROP_HU, MIN_BODY_HEIGHT_MM, Contour
from .sampling import Box, smooth_circular

#: Endplate peaks in the central profile must stand out by this much (HU).
PLATE_PROMINENCE_HU = 30.0
#: Fraction of the densest voxels left out of the central endplate profile.
PROFILE_TRIM = 0.25
#: Inside the run of slices where the body's wall stays dense, a peak of the central profile less
#: deep (its drop into the deeper neighbouring valley, ``_valley_depth``) than this fraction of the
#: profile's deepest is not an endplate (the real 1.5 mm
#: TPTBox crop: ~80 HU bands inside L3 between endplate peaks of ~400 HU split the body in two and
#: sent a click at 40 % of its height to the disc above).
WEAK_PLATE_FRACTION = 0.4


def central_profile(box: Box, center_xy, radius_mm: float, trim: float = 0.0) -> np.ndarray:
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


def wall_run(box: Box, contour: Contour) -> Tuple[Optional[float], Optional[float], bool, bool]:
    """The body's axial extent from its wall: slices where the HU just inside the outer contour
    stays high (a disc has no cortical wall). Returns (lo, hi) in box slices (sub-slice, None if
    the run reaches the box end) and whether each open end is the image's edge."""
    r = np.maximum(smooth_circular(contour.r_out, 2) - 1.0, 0.5)
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


#: Reach (mm) on each side of a peak within which the valley next to it (a disc) is looked for.
VALLEY_REACH_MM = 8.0


def _valley_depth(m: np.ndarray, pos: float, ds: float) -> float:
    """How far the profile drops from a peak into the deeper of its two neighbouring valleys within
    ``VALLEY_REACH_MM``: an endplate drops into its disc on one side, whatever the bone on the other
    (the peak's prominence, measured to the higher valley, understates an endplate next to dense bone)."""
    i = int(round(pos))
    reach = max(2, int(np.ceil(VALLEY_REACH_MM / ds)))
    lo = m[max(0, i - reach):i + 1]
    hi = m[i:min(m.size, i + reach + 1)]
    return float(m[i] - min(float(lo.min()), float(hi.min())))


#: A disc's central HU lies at least this far (HU) below the body's (``click.DISC_DARKER_HU`` too).
DISC_DARK_HU = 20.0
#: A disc valley this close (slices) to an endplate peak, with no peak on its other side, hides the
#: other endplate: at thick slices the body's own endplate blurs into the body and shows no peak.
HIDDEN_PLATE_REACH_SLICES = 1.5


def _valley_pos(m: np.ndarray, i: int) -> float:
    """Sub-slice position of the profile's local minimum at ``i`` (parabola through three slices)."""
    if 0 < i < m.size - 1:
        den = m[i - 1] - 2 * m[i] + m[i + 1]
        if den > 0:
            return i + float(np.clip(0.5 * (m[i - 1] - m[i + 1]) / den, -0.5, 0.5))
    return float(i)


def _hidden_plates(box: Box, m: np.ndarray, plates: List[float]) -> List[float]:
    """The endplates the profile shows no peak for: inside the interval between two plates, a
    disc-dark valley (``DISC_DARK_HU`` below the interval's median) within
    ``HIDDEN_PLATE_REACH_SLICES`` of one plate is the disc next to it; the body's own endplate on the
    valley's other side lies as far from the valley as the plate seen (a disc's two endplates are
    symmetric about its middle), provided a body's height (``MIN_BODY_HEIGHT_MM``) remains beyond it."""
    out = list(plates)
    for a, b in zip(plates[:-1], plates[1:]):
        lo, hi = int(np.floor(a)) + 1, int(np.ceil(b)) - 1
        if hi - lo < 2:
            continue
        inner = m[lo:hi + 1]
        dark = float(np.median(inner)) - DISC_DARK_HU
        for i in range(lo, hi + 1):
            if not (m[i] <= dark and m[i] < m[i - 1] and m[i] <= m[i + 1]):
                continue
            v = _valley_pos(m, i)
            if b - v <= HIDDEN_PLATE_REACH_SLICES and (2 * v - b - a) * box.ds >= MIN_BODY_HEIGHT_MM:
                out.append(2 * v - b)
            elif v - a <= HIDDEN_PLATE_REACH_SLICES and (b - (2 * v - a)) * box.ds >= MIN_BODY_HEIGHT_MM:
                out.append(2 * v - a)
    return sorted(out)


@dataclass
class PlateInterval:
    lo: Optional[float]  # inferior-side plate position in box slices (or None: open)
    hi: Optional[float]
    lo_edge: bool = False  # open because the image ends there
    hi_edge: bool = False


def plate_intervals(box: Box, m: np.ndarray, m_trim: Optional[np.ndarray] = None,
               wall: Optional[Tuple[Optional[float], Optional[float]]] = None) -> List[PlateInterval]:
    """Intervals between successive endplate peaks of the central profile (in box-slice order).

    With the trimmed profile ``m_trim`` and the body's ``wall`` run (lo, hi), a peak that the
    trimmed profile does not show (a focal dense lesion, e.g. a bone island) and that lies well
    inside the wall run is not an endplate and is dropped."""
    base = float(np.median(m))
    prom = max(PLATE_PROMINENCE_HU, 0.15 * (float(m.max()) - base))
    found = _peaks(m, prom)
    peaks = [p for p, _ in found]
    if m_trim is not None and wall is not None and wall[0] is not None and wall[1] is not None:
        t_base = float(np.median(m_trim))
        inside = 2.0 * max(1.0, 2.5 / box.ds)
        depth = {p: _valley_depth(m, p, box.ds) for p, _ in found}
        strongest = max(depth.values(), default=0.0)
        kept = []
        for p, _ in found:
            i = int(round(p))
            lo_i, hi_i = max(0, i - 1), min(m_trim.size, i + 2)
            focal = float(np.max(m_trim[lo_i:hi_i])) - t_base < PLATE_PROMINENCE_HU
            # a faint band across the body well inside its wall (a sclerotic band, a vein's wall, noise in a
            # noisy crop) is not an endplate either: the endplates are the profile's strongest peaks
            weak = depth[p] < WEAK_PLATE_FRACTION * strongest
            if (focal or weak) and wall[0] + inside <= p <= wall[1] - inside:
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
    edges = [None] + _hidden_plates(box, m, merged) + [None]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(PlateInterval(a, b, lo_edge=a is None and box.at_fov_edge[0], hi_edge=b is None and box.at_fov_edge[1]))
    return out
