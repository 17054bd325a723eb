"""Calibration rods in the image: one point per rod, or automatic finding.

Rods are cylinders along the table (the scanner's z axis), so they are measured on the image's
axial slices: a **circular ROI inset from the rod wall** (radius ``min(0.7·R, R − 1.5 pixels)``
of the rod radius R) over a **slab of several slices** (default ``ROD_SLAB_MM`` = 10 mm, at least
3 slices), with the project's exact ROI membership (:mod:`geometry`, :mod:`stats`).

Finding a rod works on the slab-averaged axial image (noise falls with the number of slices):
a disc detector compares, for a set of radii, the mean of an inner disc with the mean of a ring
just outside (a Welch t statistic, both parts required to be uniform), so a candidate is a
*circular uniform cylinder* on a uniform background. Each candidate's centre and radius are then
refined from the soft membership ``w = (I − ring mean)/(inner mean − ring mean)``: the radius from
``Σw·pixel area = πR²`` and the centre from the w-weighted centroid (unbiased by zero-mean noise).

* :func:`measure_rod` — one point per rod: the rod around the point is refined (the point need
  not be central); a rod too faint to see (e.g. a water-equivalent 0 mg/cm³ rod) is measured
  around the point itself with the given radius, with a warning.
* :func:`find_rods` — all rod-like discs in a region (RAS box) or the whole slab.
* :func:`auto_rods` — the chosen phantom's rods: by default the most posterior row of similar
  discs ("below the patient"), or every disc in a given region; the count must equal the
  phantom's; the rods are ordered by HU and matched to the phantom's rods in the order their
  HU must rise (for Mindways rods, every order a positive slope can produce is tried and the
  best fit kept); a wrong count or a match whose fit fails the QA rules is refused with a report
  of what was found.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..roi.geometry import RoiShape, in_plane_frame
from .phantom_library import METHOD_MINDWAYS, PhantomDefinition
from ..roi.stats import roi_statistics
from ..io.volume import Volume

#: Default rod slab thickness (mm; at least ``MIN_SLAB_SLICES`` slices).
ROD_SLAB_MM = 10.0
MIN_SLAB_SLICES = 3
#: Slab used to find rods (thicker = less noise; rods are long).
FIND_SLAB_MM = 20.0
#: ROI radius = min(ROI_FRACTION·R, R − ROI_WALL_PIXELS·pixel).
ROI_FRACTION = 0.7
ROI_WALL_PIXELS = 1.5
#: Detection thresholds: Welch t of inner disc vs ring, minimum contrast, uniformity.
Z_MIN = 8.0
MIN_CONTRAST_HU = 4.0
UNIFORM_SD_FACTOR = 3.0
UNIFORM_SD_FLOOR_HU = 8.0
#: Radii tried when the phantom does not give its rod radius (mm).
SEARCH_RADII_MM = (2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0, 12.5, 16.0)
MAX_CANDIDATES = 40


@dataclass
class RodCandidate:
    """A disc found in the slab image: centre (RAS, at the slab's middle), radius, inner mean,
    ring (background) mean, inner SD and detection score."""

    center_ras: np.ndarray
    radius_mm: float
    mean_hu: float
    background_hu: float
    sd_hu: float
    score: float

    def to_dict(self) -> Dict[str, Any]:
        return {
            "center_ras": [round(float(v), 3) for v in self.center_ras],
            "radius_mm": round(float(self.radius_mm), 3),
            "mean_hu": round(float(self.mean_hu), 3),
            "background_hu": round(float(self.background_hu), 3),
            "sd_hu": round(float(self.sd_hu), 3),
            "score": round(float(min(self.score, 1e6)), 2),
        }


@dataclass
class RodMeasurement:
    """A measured rod: its ROI (circle ``roi_radius_mm`` around ``center_ras`` in the axial plane,
    ``slab_mm`` thick) and the ROI's mean/SD/voxel count."""

    name: str
    center_ras: List[float]
    rod_radius_mm: float
    roi_radius_mm: float
    slab_mm: float
    mean_hu: Optional[float]
    sd_hu: Optional[float]
    n_voxels: int
    found_by: str
    point_ras: Optional[List[float]] = None
    radius_source: str = "fitted"
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "center_ras": [round(float(v), 3) for v in self.center_ras],
            "point_ras": None if self.point_ras is None else [round(float(v), 3) for v in self.point_ras],
            "rod_radius_mm": round(float(self.rod_radius_mm), 3),
            "radius_source": self.radius_source,
            "roi_radius_mm": round(float(self.roi_radius_mm), 3),
            "slab_mm": round(float(self.slab_mm), 3),
            "mean_hu": self.mean_hu,
            "sd_hu": self.sd_hu,
            "n_voxels": self.n_voxels,
            "found_by": self.found_by,
            "warnings": list(self.warnings),
        }


# ----------------------------------------------------------------------------------------------
# The slab image
# ----------------------------------------------------------------------------------------------
class _Slab:
    """The mean of several axial slices, with pixel ↔ RAS mapping."""

    def __init__(self, volume: Volume, center_s_ras: Sequence[float], slab_mm: float,
                 box_ras: Optional[np.ndarray] = None, margin_mm: float = 0.0):
        self.volume = volume
        ax = volume.slice_axis()
        self.ax = ax
        rem = [a for a in (2, 1, 0) if a != ax]  # ijk axes in array order
        self.rows_ijk, self.cols_ijk = rem
        sp = volume.spacing
        self.dr, self.dc = float(sp[self.rows_ijk]), float(sp[self.cols_ijk])
        dims = volume.dimensions
        n_slices = max(MIN_SLAB_SLICES, int(round(slab_mm / float(sp[ax]))))
        kc = float(volume.ras_to_ijk_points(center_s_ras)[0][ax])
        k0 = int(round(kc - (n_slices - 1) / 2.0))
        k0 = min(max(k0, 0), max(dims[ax] - n_slices, 0))
        k1 = min(k0 + n_slices, dims[ax])
        self.k_mid = 0.5 * (k0 + k1 - 1)
        self.n_slices = k1 - k0
        r0, r1, c0, c1 = 0, dims[self.rows_ijk], 0, dims[self.cols_ijk]
        if box_ras is not None:
            corners = np.array([[x, y, z] for x in box_ras[0] for y in box_ras[1] for z in box_ras[2]])
            ijk = volume.ras_to_ijk_points(corners)
            mr, mc = margin_mm / self.dr, margin_mm / self.dc
            r0 = max(0, int(math.floor(ijk[:, self.rows_ijk].min() - mr)))
            r1 = min(dims[self.rows_ijk], int(math.ceil(ijk[:, self.rows_ijk].max() + mr)) + 1)
            c0 = max(0, int(math.floor(ijk[:, self.cols_ijk].min() - mc)))
            c1 = min(dims[self.cols_ijk], int(math.ceil(ijk[:, self.cols_ijk].max() + mc)) + 1)
            if r1 - r0 < 3 or c1 - c0 < 3:
                raise InputError("The rod search region does not overlap the image.",
                                 "Give a region (RAS mm) inside the image, around the phantom.")
        self.r0, self.c0 = r0, c0
        idx = [slice(None)] * 3
        idx[2 - ax] = slice(k0, k1)
        idx[2 - self.rows_ijk] = slice(r0, r1)
        idx[2 - self.cols_ijk] = slice(c0, c1)
        block = np.asarray(volume.array[tuple(idx)], dtype=np.float64)
        self.image = block.mean(axis=2 - ax)
        # remaining array axes are in array order = (rows, cols)

    def to_ras(self, r, c) -> np.ndarray:
        r = np.atleast_1d(np.asarray(r, dtype=float))
        c = np.atleast_1d(np.asarray(c, dtype=float))
        ijk = np.zeros((r.size, 3))
        ijk[:, self.rows_ijk] = r + self.r0
        ijk[:, self.cols_ijk] = c + self.c0
        ijk[:, self.ax] = self.k_mid
        return self.volume.ijk_to_ras_points(ijk)

    def to_pixel(self, ras) -> Tuple[float, float]:
        ijk = self.volume.ras_to_ijk_points(ras)[0]
        return float(ijk[self.rows_ijk] - self.r0), float(ijk[self.cols_ijk] - self.c0)

    def noise_sd(self) -> float:
        """Robust noise SD of the slab image (MAD of neighbour differences / √2)."""
        img = self.image
        d = np.concatenate([np.diff(img, axis=0).ravel(), np.diff(img, axis=1).ravel()])
        if d.size == 0:
            return 0.0
        mad = float(np.median(np.abs(d - np.median(d))))
        return 1.4826 * mad / math.sqrt(2.0)


def _offsets(dr: float, dc: float, radius: float):
    nr, nc = int(math.ceil(radius / dr)), int(math.ceil(radius / dc))
    u = np.arange(-nr, nr + 1) * dr
    v = np.arange(-nc, nc + 1) * dc
    return np.hypot(u[:, None], v[None, :])


def _fast_len(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (a fast FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _conv_same(fa: np.ndarray, shape, fk: np.ndarray, kshape, full_shape) -> np.ndarray:
    full = np.fft.irfft2(fa * fk, full_shape)
    h, w = kshape
    return full[h // 2:h // 2 + shape[0], w // 2:w // 2 + shape[1]]


def _ring_gaps(radius: float, pixel: float) -> Tuple[float, float]:
    g1 = max(ROI_WALL_PIXELS * pixel, 0.15 * radius)
    g2 = g1 + max(3.0 * pixel, 0.5 * radius)
    return g1, g2


def _detect_maps(slab: _Slab, radii: Sequence[float], sigma: float):
    """Best score and its radius per pixel over ``radii``, with inner/ring means."""
    img = slab.image
    shape = img.shape
    pixel = max(slab.dr, slab.dc)
    rmax = max(radii)
    g1, g2 = _ring_gaps(rmax, pixel)
    pad = int(math.ceil((rmax + g2) / min(slab.dr, slab.dc))) * 2 + 1
    full_shape = (_fast_len(shape[0] + pad), _fast_len(shape[1] + pad))
    f1 = np.fft.rfft2(img, full_shape)
    f2 = np.fft.rfft2(img * img, full_shape)
    best = np.zeros(shape)
    best_r = np.zeros(shape)
    limit = max(UNIFORM_SD_FACTOR * sigma, UNIFORM_SD_FLOOR_HU)
    rows = np.arange(shape[0])[:, None]
    cols = np.arange(shape[1])[None, :]
    for radius in radii:
        g1, g2 = _ring_gaps(radius, pixel)
        dist = _offsets(slab.dr, slab.dc, radius + g2)
        hr, hc = dist.shape[0] // 2, dist.shape[1] // 2
        # kernels must lie wholly inside the image (no partial rings at the border)
        inside = (rows >= hr) & (rows < shape[0] - hr) & (cols >= hc) & (cols < shape[1] - hc)
        k_in = (dist <= 0.6 * radius).astype(float)
        k_ring = ((dist >= radius + g1) & (dist <= radius + g2)).astype(float)
        stats = []
        for k in (k_in, k_ring):
            fk = np.fft.rfft2(k, full_shape)
            n = float(k.sum())
            m = _conv_same(f1, shape, fk, k.shape, full_shape) / n
            s2 = _conv_same(f2, shape, fk, k.shape, full_shape) / n
            var = np.maximum(s2 - m * m, 0.0) * n / max(n - 1.0, 1.0)
            stats.append((m, var, n, inside))
        (m_in, v_in, n_in, ok_in), (m_r, v_r, n_r, ok_r) = stats
        contrast = m_in - m_r
        se = np.sqrt(v_in / n_in + v_r / n_r + 0.25 ** 2)
        z = np.abs(contrast) / se
        good = (ok_in & ok_r & (np.sqrt(v_in) <= limit) & (np.sqrt(v_r) <= limit)
                & (np.abs(contrast) >= MIN_CONTRAST_HU) & (m_in > -500.0) & (z >= Z_MIN))
        z = np.where(good, z, 0.0)
        better = z > best
        best = np.where(better, z, best)
        best_r = np.where(better, radius, best_r)
    return best, best_r


def _refine(slab: _Slab, r: float, c: float, radius: float, iterations: int = 4):
    """Refine a disc's centre (pixel coords) and radius (mm) from soft membership weights."""
    full = slab.image
    H, W = full.shape
    pixel = max(slab.dr, slab.dc)
    result = None
    for _ in range(iterations):
        g1, g2 = _ring_gaps(radius, pixel)
        reach = radius + g2 + pixel
        ra, rb = max(0, int(math.floor(r - reach / slab.dr))), min(H, int(math.ceil(r + reach / slab.dr)) + 1)
        ca, cb = max(0, int(math.floor(c - reach / slab.dc))), min(W, int(math.ceil(c + reach / slab.dc)) + 1)
        if rb - ra < 3 or cb - ca < 3:
            return None
        img = full[ra:rb, ca:cb]
        rr = np.arange(ra, rb, dtype=float)[:, None]
        cc = np.arange(ca, cb, dtype=float)[None, :]
        d = np.hypot((rr - r) * slab.dr, (cc - c) * slab.dc)
        inner = d <= 0.6 * radius
        ring = (d >= radius + g1) & (d <= radius + g2)
        if inner.sum() < 1 or ring.sum() < 3:
            return None
        m_in, m_ring = float(img[inner].mean()), float(img[ring].mean())
        contrast = m_in - m_ring
        if abs(contrast) < 1e-6:
            return None
        window = d <= radius + g1
        w = (img[window] - m_ring) / contrast
        wsum = float(w.sum())
        area = wsum * slab.dr * slab.dc
        if area <= 0:
            return None
        r_new = float((w * np.broadcast_to(rr, img.shape)[window]).sum() / wsum)
        c_new = float((w * np.broadcast_to(cc, img.shape)[window]).sum() / wsum)
        radius_new = math.sqrt(area / math.pi)
        if not (np.isfinite(r_new) and np.isfinite(c_new)) or radius_new > 3.0 * radius + 5.0:
            return None
        r, c, radius = r_new, c_new, radius_new
        sd_in = float(img[inner].std(ddof=1)) if inner.sum() > 1 else 0.0
        result = (r, c, radius, m_in, m_ring, sd_in)
    return result


def _radii_for(phantom: Optional[PhantomDefinition], radius_mm: Optional[float]) -> List[float]:
    r = radius_mm if radius_mm is not None else (phantom.rod_radius_mm if phantom is not None else None)
    if r:
        return [0.8 * r, r, 1.2 * r]
    return list(SEARCH_RADII_MM)


def _parse_box(region) -> Optional[np.ndarray]:
    if region is None:
        return None
    box = np.asarray(region, dtype=float)
    if box.size == 6:
        box = box.reshape(3, 2)
    elif box.size == 4:
        box = np.vstack([box.reshape(2, 2), [-1e9, 1e9]])
    else:
        raise InputError("A rod search region needs 4 numbers (R0,R1,A0,A1) or 6 (R0,R1,A0,A1,S0,S1) in RAS mm.",
                         "Give e.g. --region -80,80,-130,-80.")
    if not np.all(np.isfinite(box)):
        raise InputError("The rod search region contains a non-finite number.", "Give RAS millimetres.")
    return np.sort(box, axis=1)


def _slab_center(volume: Volume, box: Optional[np.ndarray], center_s: Optional[float]) -> np.ndarray:
    dims = np.asarray(volume.dimensions, dtype=float)
    mid = volume.ijk_to_ras_points((dims - 1) / 2.0)[0]
    if center_s is not None:
        mid[2] = float(center_s)
    elif box is not None and box[2, 1] - box[2, 0] < 1e8:
        mid[2] = 0.5 * (box[2, 0] + box[2, 1])
    return mid


def find_rods(volume: Volume, region=None, center_s: Optional[float] = None, slab_mm: float = FIND_SLAB_MM,
              phantom: Optional[PhantomDefinition] = None, radius_mm: Optional[float] = None) -> List[RodCandidate]:
    """Every rod-like disc (circular, uniform, on a uniform background) in the slab.

    ``region``: RAS box ((R0, R1), (A0, A1)[, (S0, S1)]) or None (the whole slice); ``center_s``:
    the S coordinate of the slab's middle (default: the region's or the image's middle).
    Candidates are sorted by score.
    """
    box = _parse_box(region)
    center = _slab_center(volume, box, center_s)
    radii = _radii_for(phantom, radius_mm)
    margin = max(radii) * 2.2 + 5.0
    slab = _Slab(volume, center, slab_mm, box_ras=None if box is None else _box_with_s(box, center), margin_mm=margin)
    sigma = slab.noise_sd()
    score, score_r = _detect_maps(slab, radii, sigma)
    out: List[RodCandidate] = []
    H, W = score.shape
    rr = np.arange(H)[:, None]
    cc = np.arange(W)[None, :]
    work = score.copy()
    while len(out) < MAX_CANDIDATES:
        idx = int(np.argmax(work))
        best = float(work.flat[idx])
        if best <= 0:
            break
        r, c = divmod(idx, W)
        ref = _refine(slab, float(r), float(c), float(score_r[r, c]))
        if ref is None:
            work[max(0, r - 1):r + 2, max(0, c - 1):c + 2] = 0.0
            continue
        rf, cf, radius, m_in, m_ring, sd_in = ref
        suppress = max(1.5 * radius, radius + 3.0, 0.6 * float(score_r[r, c]))
        d = np.hypot((rr - rf) * slab.dr, (cc - cf) * slab.dc)
        work[d <= suppress] = 0.0
        work[max(0, r - 1):r + 2, max(0, c - 1):c + 2] = 0.0
        if not (0 <= rf < H and 0 <= cf < W) or radius < 1.0:
            continue
        ras = slab.to_ras(rf, cf)[0]
        if box is not None and not _in_box(ras, box):
            continue
        if any(np.linalg.norm(ras[:2] - o.center_ras[:2]) < max(radius, o.radius_mm) for o in out):
            continue
        out.append(RodCandidate(center_ras=ras, radius_mm=radius, mean_hu=m_in, background_hu=m_ring, sd_hu=sd_in,
                                score=best))
    out.sort(key=lambda cnd: -cnd.score)
    return out


def _box_with_s(box: np.ndarray, center: np.ndarray) -> np.ndarray:
    b = box.copy()
    if b[2, 1] - b[2, 0] >= 1e8:
        b[2] = [center[2], center[2]]
    return b


def _in_box(ras: np.ndarray, box: np.ndarray) -> bool:
    return bool(box[0, 0] <= ras[0] <= box[0, 1] and box[1, 0] <= ras[1] <= box[1, 1])


# ----------------------------------------------------------------------------------------------
# Measuring a rod
# ----------------------------------------------------------------------------------------------
def default_slab_mm(volume: Volume) -> float:
    return max(ROD_SLAB_MM, MIN_SLAB_SLICES * volume.slice_spacing())


def roi_radius_for(rod_radius_mm: float, volume: Volume) -> float:
    """The ROI radius inset from the rod wall: min(0.7·R, R − 1.5 in-plane pixels), ≥ 1 pixel."""
    ax = volume.slice_axis()
    pixel = max(float(volume.spacing[a]) for a in (0, 1, 2) if a != ax)
    return max(min(ROI_FRACTION * rod_radius_mm, rod_radius_mm - ROI_WALL_PIXELS * pixel), pixel)


def rod_roi(volume: Volume, center_ras: Sequence[float], roi_radius_mm: float, slab_mm: float,
            name: str = "rod") -> RoiShape:
    """The circular rod ROI in the image's axial plane, ``slab_mm`` thick."""
    u, v, _ = in_plane_frame(volume.slice_normal_ras(), volume.in_plane_anterior())
    return RoiShape("ellipse", tuple(float(x) for x in center_ras), tuple(u), tuple(v), float(roi_radius_mm),
                    float(roi_radius_mm), float(slab_mm), name=name)


def _measure_at(volume: Volume, name: str, center, rod_radius: float, slab_mm: float, found_by: str,
                point=None, radius_source: str = "fitted", warnings=None) -> RodMeasurement:
    roi_r = roi_radius_for(rod_radius, volume)
    stats = roi_statistics(volume, rod_roi(volume, center, roi_r, slab_mm, name=f"rod {name}"))
    w = list(warnings or []) + [f"rod {name}: {x}" for x in stats["warnings"]]
    return RodMeasurement(name=name, center_ras=[float(x) for x in center], rod_radius_mm=float(rod_radius),
                          roi_radius_mm=float(roi_r), slab_mm=float(slab_mm), mean_hu=stats["mean_hu"],
                          sd_hu=stats["sd_hu"], n_voxels=int(stats["n_voxels"]), found_by=found_by,
                          point_ras=None if point is None else [float(x) for x in point],
                          radius_source=radius_source, warnings=w)


def measure_rod(volume: Volume, point_ras: Sequence[float], name: str = "rod", rod_radius_mm: Optional[float] = None,
                slab_mm: Optional[float] = None, fallback_radius_mm: Optional[float] = None) -> RodMeasurement:
    """Measure the rod around ``point_ras``: refine its centre (and radius unless given), then
    measure a circular ROI inset from the wall over a slab of several slices.

    A rod that cannot be seen around the point (too faint) is measured around the point with
    ``rod_radius_mm`` or ``fallback_radius_mm`` (else refused), with a warning.
    """
    p = np.asarray(point_ras, dtype=float).reshape(-1)
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise InputError(f"The point of rod {name} is not three finite RAS coordinates.", "Give R,A,S in mm.")
    if not volume.contains_ras(p)[0]:
        raise InputError(f"The point of rod {name} (RAS {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) is outside the image.",
                         "Give RAS millimetres as Slicer shows them, inside the phantom's rod.")
    slab_mm = float(slab_mm) if slab_mm is not None else default_slab_mm(volume)
    reach = (rod_radius_mm or max(SEARCH_RADII_MM)) * 1.6 + 4.0
    box = np.array([[p[0] - reach, p[0] + reach], [p[1] - reach, p[1] + reach], [p[2], p[2]]])
    try:
        cands = find_rods(volume, region=box, center_s=p[2], slab_mm=max(slab_mm, FIND_SLAB_MM),
                          radius_mm=rod_radius_mm)
    except InputError:
        cands = []
    hit = None
    for cnd in cands:
        if np.linalg.norm(cnd.center_ras[:2] - p[:2]) <= cnd.radius_mm:
            if hit is None or cnd.score > hit.score:
                hit = cnd
    if hit is not None:
        center = np.array([hit.center_ras[0], hit.center_ras[1], p[2]])
        # Keep the in-plane refined centre, at the point's own S (rods run along S).
        center = _in_plane_at(volume, hit.center_ras, p)
        radius = float(rod_radius_mm) if rod_radius_mm else hit.radius_mm
        src = "phantom definition" if rod_radius_mm else "fitted"
        warnings = []
        shift = float(np.linalg.norm(center - p))
        if shift > 0.5 * radius:
            warnings.append(f"rod {name}: the point was {shift:.1f} mm from the rod's centre; the ROI was centred on the rod.")
        return _measure_at(volume, name, center, radius, slab_mm, "point (refined)", p, src, warnings)
    radius = rod_radius_mm or fallback_radius_mm
    if not radius:
        raise InputError(
            f"No rod was found around the point of rod {name} (RAS {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}), and its radius "
            "is unknown.",
            "Place the point inside the rod, or give the rods' radius (phantom definition rod_radius_mm).",
        )
    warning = (f"rod {name}: no rod edge is visible around the point (too little contrast to its surroundings); "
               f"measured a circle around the point itself with rod radius {radius:.1f} mm — make sure the point is "
               "at the rod's centre.")
    return _measure_at(volume, name, p, float(radius), slab_mm, "point (as given)", p,
                       "phantom definition" if rod_radius_mm else "other rods", [warning])


def _in_plane_at(volume: Volume, center_ras, point_ras) -> np.ndarray:
    """``center_ras`` moved along the slice normal to the point's slice plane."""
    n = volume.slice_normal_ras()
    c = np.asarray(center_ras, dtype=float)
    return c + n * float((np.asarray(point_ras, dtype=float) - c) @ n)


def measure_rods(volume: Volume, points: Mapping[str, Sequence[float]], phantom: PhantomDefinition,
                 slab_mm: Optional[float] = None) -> List[RodMeasurement]:
    """Measure one point per rod; keys are the phantom's rod names or densities as listed."""
    if not points:
        raise InputError("No rod points were given.", "Give --rod NAME=R,A,S for each rod (at least two).")
    resolved = []
    names = set()
    for key, xyz in points.items():
        rod = phantom.rod(key)
        if rod.name in names:
            raise InputError(f"Rod {rod.name} is given twice.", "Give one point per rod.")
        names.add(rod.name)
        resolved.append((rod.name, xyz))
    radius = phantom.rod_radius_mm
    out: Dict[str, RodMeasurement] = {}
    pending = []
    for name, xyz in resolved:
        try:
            out[name] = measure_rod(volume, xyz, name=name, rod_radius_mm=radius, slab_mm=slab_mm)
        except InputError as exc:
            if radius is None and "No rod was found" in str(exc):
                pending.append((name, xyz))
            else:
                raise
    if pending:
        fitted = [m.rod_radius_mm for m in out.values() if m.radius_source == "fitted"]
        if not fitted:
            raise InputError(
                f"No rod could be seen around the points of {', '.join(n for n, _ in pending)}, and the phantom does "
                "not give its rod radius.",
                "Check the points (RAS mm, inside the rods) or use a phantom definition with rod_radius_mm.",
            )
        fb = float(np.median(fitted))
        for name, xyz in pending:
            out[name] = measure_rod(volume, xyz, name=name, slab_mm=slab_mm, fallback_radius_mm=fb)
    return [out[n] for n, _ in resolved]


# ----------------------------------------------------------------------------------------------
# Automatic finding and matching
# ----------------------------------------------------------------------------------------------
def _rows_by_a(cands: List[RodCandidate]) -> List[List[RodCandidate]]:
    """Group candidates into rows of similar A (anterior) coordinate and similar radius."""
    if not cands:
        return []
    med_r = float(np.median([c.radius_mm for c in cands]))
    tol = max(5.0, 0.75 * med_r)
    order = sorted(cands, key=lambda c: c.center_ras[1])
    rows: List[List[RodCandidate]] = [[order[0]]]
    for c in order[1:]:
        if c.center_ras[1] - rows[-1][-1].center_ras[1] <= tol:
            rows[-1].append(c)
        else:
            rows.append([c])
    out = []
    for row in rows:
        rmed = float(np.median([c.radius_mm for c in row]))
        out.append([c for c in row if abs(c.radius_mm - rmed) <= 0.35 * rmed])
    return out


def expected_orders(phantom: PhantomDefinition) -> List[List[int]]:
    """Rod index orders (ascending expected HU) a positive-slope scanner can produce.

    Linear phantoms: ascending density. Mindways rods: HU ≈ (ρ_water − 999.6) + σ_ref·ρ + const,
    whose order depends on σ_ref; every order for σ_ref from 0.3 to 3 HU per mg/cm³ is returned.
    """
    dens = np.array([r.density for r in phantom.rods])
    if phantom.method != METHOD_MINDWAYS:
        return [list(np.argsort(dens, kind="stable"))]
    water = np.array([r.water_density for r in phantom.rods])
    orders: List[List[int]] = []
    for s in np.linspace(0.3, 3.0, 271):
        o = list(np.argsort(water + s * dens, kind="stable"))
        if o not in orders:
            orders.append(o)
    return orders


@dataclass
class AutoRodsResult:
    rods: List[RodMeasurement]
    candidates: List[RodCandidate]
    chosen: List[RodCandidate]
    report: List[str]


def auto_rods(volume: Volume, phantom: PhantomDefinition, region=None, center_s: Optional[float] = None,
              slab_mm: Optional[float] = None) -> AutoRodsResult:
    """Find the phantom's rods, match them to its rods by HU order and measure them.

    Refuses (InputError, saying what was found) when the count differs from the phantom's or
    when no order consistent with HU rising with density gives an acceptable fit.
    """
    from .model import fit_phantom

    if phantom.layout != "rods":
        raise InputError(f"Phantom {phantom.id} has {phantom.layout}, not rods: automatic rod finding does not apply.",
                         "Place one point per insert with --rod NAME=R,A,S.")
    n = len(phantom.rods)
    cands = find_rods(volume, region=region, center_s=center_s, phantom=phantom)
    report = [f"found {len(cands)} rod-like disc(s)" + (" in the region" if region is not None else "")]
    for c in cands:
        cr = c.center_ras
        report.append(f"  disc at RAS ({cr[0]:.1f}, {cr[1]:.1f}, {cr[2]:.1f}) radius {c.radius_mm:.1f} mm, "
                      f"{c.mean_hu:.1f} HU (background {c.background_hu:.1f})")
    if region is not None:
        chosen = list(cands)
        if len(chosen) != n:
            raise InputError(
                f"Found {len(chosen)} rod-like disc(s) in the region but phantom {phantom.id} has {n} rods.\n"
                + "\n".join(report),
                "Adjust the region to hold exactly the phantom's rods, check the phantom choice, or place one point "
                "per rod with --rod NAME=R,A,S.",
            )
    else:
        rows = [r for r in _rows_by_a(cands) if len(r) >= 2]
        exact = [r for r in rows if len(r) == n]
        if not exact:
            sizes = ", ".join(f"{len(r)} at A≈{np.mean([c.center_ras[1] for c in r]):.0f} mm" for r in rows) or "none"
            raise InputError(
                f"No row of {n} similar rods (phantom {phantom.id}) was found below the patient; rows found: {sizes}.\n"
                + "\n".join(report),
                "Give a region around the phantom with --region R0,R1,A0,A1, check the phantom choice, or place one "
                "point per rod with --rod NAME=R,A,S.",
            )
        chosen = exact[0]  # the most posterior row: "below the patient" (supine)
    by_hu = sorted(chosen, key=lambda c: c.mean_hu)
    slab_mm = float(slab_mm) if slab_mm is not None else default_slab_mm(volume)
    radius_def = phantom.rod_radius_mm
    measured = []
    for c in by_hu:
        r = float(radius_def) if radius_def else c.radius_mm
        measured.append((c, r))
    best = None
    errors = []
    for order in expected_orders(phantom):
        rods = []
        for (c, r), idx in zip(measured, order):
            name = phantom.rods[idx].name
            center = c.center_ras.copy()
            rods.append(_measure_at(volume, name, center, r, slab_mm, "auto", None,
                                    "phantom definition" if radius_def else "fitted"))
        try:
            cal = fit_phantom([m.to_dict() for m in rods], phantom)
        except InputError as exc:
            errors.append(str(exc.problem))
            continue
        if best is None or cal.r2 > best[1].r2:
            best = (rods, cal)
    if best is None:
        raise InputError(
            f"The {n} discs found do not match phantom {phantom.id}: ordered by HU, no assignment to its rods gives an "
            f"acceptable fit ({errors[0] if errors else ''}).\n" + "\n".join(report),
            "Check the phantom choice and its certificate values, or place one point per rod with --rod NAME=R,A,S.",
        )
    rods = best[0]
    order_names = " < ".join(f"{m.name} ({m.mean_hu:.1f} HU)" for m in rods)
    report.append(f"matched by HU order: {order_names}")
    by_name = {m.name: m for m in rods}
    ordered = [by_name[r.name] for r in phantom.rods]
    return AutoRodsResult(rods=ordered, candidates=cands, chosen=chosen, report=report)
