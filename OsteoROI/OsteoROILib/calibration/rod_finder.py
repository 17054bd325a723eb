"""Finding calibration rods in the image: a detector of circular uniform discs on a slab of axial slices.

Rods are cylinders along the table (the scanner's z axis, QCT_BRIEF §4), so they are found on the
slab-averaged axial image (noise falls with the number of slices). A disc detector compares, for a
set of radii, the mean of an inner disc with the mean of a ring just outside (a Welch t
statistic, both parts required to be uniform), so a candidate is a *circular uniform cylinder* on
a uniform background. Each candidate's centre and radius are then refined from the soft
membership ``w = (I − ring mean)/(inner mean − ring mean)``: the radius from
``Σw·pixel area = πR²`` and the centre from the w-weighted centroid (unbiased by zero-mean noise).

:func:`find_rods` returns every rod-like disc in a region (RAS box) or the whole slab; measuring
and naming the rods is :mod:`.rods`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from .phantom_library import PhantomDefinition

#: A rod slab has at least this many slices.
MIN_SLAB_SLICES = 3
#: Slab used to find rods (mm; thicker = less noise; rods are long).
FIND_SLAB_MM = 20.0
#: Gap between a rod's wall and what is measured inside (its ROI) or outside (the detector's ring), in pixels.
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


