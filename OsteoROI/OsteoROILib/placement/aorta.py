"""The aorta beside L1–L2: a round, uniform pool of blood anterior / anterior-left of the vertebral body.

Its HU says whether the scan is contrast-enhanced when the DICOM header does not (QCT_BRIEF §2:
contrast raises HU; the diagnosis warns). It is searched once per measurement, on the axial slice
through the mid-height centre of L1 and of L2 (T12 or L3 when neither was measured; never L4, near
the aortic bifurcation), in the body's own frame (s anterior along its AP axis, t patient left):

1. the slice (averaged with its neighbours, so noise drops) is resampled on a 1 mm grid in front of
   the body, beside it to the left and a little to the right (the inferior vena cava lies further
   right, the kidneys beside the body, the bowel further in front);
2. every centre and radius (7.5–17.5 mm: an abdominal aorta of 15–35 mm) is scored: the region
   inside must be uniform (its SD small, its HU that of blood, unenhanced to arterial phase,
   ``tissue_hu.BLOOD_SEARCH_HU``) and, on at least ``MIN_EDGE_FRACTION`` of ``N_ANGLES`` directions,
   differ from just outside by more than the noise (an edge all round: a round region); its
   back wall must lie within ``MAX_GAP_MM`` of the body's front (the aorta lies on the spine);
3. the best region's mean HU is measured in a disc ROI (``roi.disc``) well inside it; two levels
   must find the same vessel (centres within ``SAME_VESSEL_MM``), one level alone gives a lower
   confidence.

No round uniform region, or one outside the image, gives no HU and a reason: the search never
guesses (an unenhanced aorta inside muscle of the same HU has no edge and is not found).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..io.tissue_hu import BLOOD_SEARCH_HU
from ..io.volume import Volume
from ..roi.disc import rod_roi
from ..roi.stats import roi_statistics_and_values
from .sampling import cross3, trilinear

#: Levels beside which the aorta is searched, and the fall-back pair (not L4: the bifurcation).
SEARCH_LEVELS = ("L1", "L2")
FALLBACK_LEVELS = ("T12", "L3")
#: Radii tried (mm): an abdominal aorta of 15–35 mm diameter.
RADII_MM = tuple(float(r) for r in np.arange(7.5, 17.5 + 1e-6, 1.25))
#: Where the centre may lie, left of the body's AP axis (t, mm; negative = right), and how far the
#: vessel's back wall may lie in front of the body's anterior cortex (mm).
CENTRE_T_MM = (-12.0, 45.0)
MAX_GAP_MM = 15.0
MAX_OVERLAP_MM = 3.0
GRID_MM = 1.0
N_ANGLES = 16
#: An edge: inside minus outside beyond max(MIN_EDGE_HU, EDGE_NOISE_FACTOR × interior SD), with the
#: ring inside within the same bound of the interior mean, on MIN_EDGE_FRACTION of the directions.
MIN_EDGE_HU = 20.0
EDGE_NOISE_FACTOR = 1.5
MIN_EDGE_FRACTION = 0.75
#: A blood pool is uniform: interior SD at most this (HU) after averaging three slices.
MAX_INTERIOR_SD_HU = 45.0
#: Two levels see one vessel when their centres (in plane) are this close (mm).
SAME_VESSEL_MM = 12.0
#: Confidence of a vessel seen on one level only (a second level confirms the tube).
SINGLE_LEVEL_WEIGHT = 0.6
#: The measuring disc's radius, as a fraction of the vessel's (clear of its wall), and at least (mm).
ROI_FRACTION = 0.6
MIN_ROI_RADIUS_MM = 3.0


@dataclass(frozen=True)
class AortaFinding:
    """The aorta's mean HU in a disc ROI, where it is and how sure the search is; or why not."""

    hu: Optional[float]
    reason: Optional[str] = None
    sd_hu: Optional[float] = None
    n_voxels: int = 0
    center_ras: Optional[List[float]] = None
    radius_mm: Optional[float] = None
    roi_radius_mm: Optional[float] = None
    confidence: float = 0.0
    levels: Dict[str, Dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        def r(x):
            return None if x is None else round(float(x), 2)

        return {"hu": r(self.hu), "sd_hu": r(self.sd_hu), "n_voxels": int(self.n_voxels),
                "center_ras": None if self.center_ras is None else [round(float(x), 2) for x in self.center_ras],
                "radius_mm": r(self.radius_mm), "roi_radius_mm": r(self.roi_radius_mm),
                "confidence": round(float(self.confidence), 3), "levels": self.levels, "reason": self.reason,
                "searched": "round uniform blood region anterior/anterior-left of the vertebral body (placement.aorta)"}


@dataclass
class _Frame:
    """The body's frame on the axial slice through its centre: origin, anterior, left, superior."""

    origin: np.ndarray
    ant: np.ndarray
    left: np.ndarray
    sup: np.ndarray
    front_mm: float  # the anterior cortex, mm in front of the origin


def _frame(volume: Volume, entry: Mapping[str, object]) -> _Frame:
    outline = entry["outline"]
    n = volume.slice_normal_ras()
    a = np.asarray(outline.get("ap_axis_ras") or volume.in_plane_anterior(), dtype=float)
    a = a - n * float(a @ n)
    if np.linalg.norm(a) < 1e-6:
        a = volume.in_plane_anterior()
    a = a / np.linalg.norm(a)
    front = 0.5 * float(outline.get("depth_mm", 30.0)) + float(outline.get("cortical_mm", 1.0))
    return _Frame(np.asarray(outline["center_ras"], dtype=float), a, cross3(n, a), n, front)


def _plane(volume: Volume, fr: _Frame, s_mm: np.ndarray, t_mm: np.ndarray) -> np.ndarray:
    """The image on the (s, t) grid, averaged over the slice and its two neighbours (NaN outside)."""
    ss, tt = np.meshgrid(s_mm, t_mm, indexing="ij")
    base = fr.origin + ss.reshape(-1, 1) * fr.ant + tt.reshape(-1, 1) * fr.left
    step = min(volume.slice_spacing(), 2.5)
    planes = [trilinear(volume, base + k * step * fr.sup) for k in (-1, 0, 1)]
    return np.mean(planes, axis=0).reshape(ss.shape)


class _Boxes:
    """Box means of a plane (and of its square) at every candidate centre, from integral images."""

    def __init__(self, plane: np.ndarray, rows: np.ndarray, cols: np.ndarray):
        bad = ~np.isfinite(plane)
        p = np.where(bad, 0.0, plane)
        self.ii = [self._integral(p), self._integral(p * p), self._integral(bad.astype(float))]
        self.r0, self.nr = int(rows[0]), len(rows)  # the centres: contiguous rows and columns
        self.c0, self.nc = int(cols[0]), len(cols)

    @staticmethod
    def _integral(p: np.ndarray) -> np.ndarray:
        ii = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
        ii[1:, 1:] = p.cumsum(0).cumsum(1)
        return ii

    def mean(self, di: int, dj: int, h: int, which: int = 0) -> np.ndarray:
        """Mean over the (2h+1)² box centred (di, dj) grid steps from every centre."""
        ii = self.ii[which]
        lo_r, hi_r = self.r0 + di - h, self.r0 + di + h + 1
        lo_c, hi_c = self.c0 + dj - h, self.c0 + dj + h + 1
        a = ii[hi_r:hi_r + self.nr, hi_c:hi_c + self.nc] - ii[lo_r:lo_r + self.nr, hi_c:hi_c + self.nc]
        b = ii[hi_r:hi_r + self.nr, lo_c:lo_c + self.nc] - ii[lo_r:lo_r + self.nr, lo_c:lo_c + self.nc]
        return (a - b) / float((2 * h + 1) ** 2)


def _score_radius(boxes: _Boxes, radius_mm: float) -> Tuple[np.ndarray, ...]:
    """(edge fraction, interior mean, interior SD, mean edge) at every centre for one radius."""
    g = GRID_MM
    h = max(1, int(round(0.6 * radius_mm / g)))
    m_in = boxes.mean(0, 0, h)
    sd_in = np.sqrt(np.maximum(boxes.mean(0, 0, h, 1) - m_in ** 2, 0.0))
    off = max(3.0, 0.25 * radius_mm)
    theta = np.arange(N_ANGLES) * (2.0 * np.pi / N_ANGLES)
    inner = np.stack([boxes.mean(int(round((radius_mm - off) * np.cos(a) / g)),
                                 int(round((radius_mm - off) * np.sin(a) / g)), 1) for a in theta])
    outer = np.stack([boxes.mean(int(round((radius_mm + off) * np.cos(a) / g)),
                                 int(round((radius_mm + off) * np.sin(a) / g)), 1) for a in theta])
    edge = inner - outer
    sign = np.where(np.count_nonzero(edge >= 0, axis=0) * 2 >= N_ANGLES, 1.0, -1.0)  # the majority's side
    bound = np.maximum(MIN_EDGE_HU, EDGE_NOISE_FACTOR * sd_in)
    ok = (edge * sign >= bound) & (np.abs(inner - m_in) <= bound)
    reach = int(np.ceil((radius_mm + off) / g)) + 1
    clean = boxes.mean(0, 0, reach, 2) == 0  # no voxel of the neighbourhood outside the image
    frac = np.where(clean, ok.mean(axis=0), 0.0)
    return frac, m_in, sd_in, np.mean(np.abs(edge), axis=0)


def _search_level(volume: Volume, level: str, entry: Mapping[str, object]) -> Tuple[Optional[Dict], str]:
    """The best round uniform blood region beside one level (its centre and radius), or a reason."""
    fr = _frame(volume, entry)
    margin = max(RADII_MM) * 1.25 + 4.0
    s_lo, s_hi = fr.front_mm - MAX_OVERLAP_MM, fr.front_mm + MAX_GAP_MM + max(RADII_MM)
    t_lo, t_hi = CENTRE_T_MM
    s_mm = np.arange(s_lo - margin, s_hi + margin + GRID_MM / 2, GRID_MM)
    t_mm = np.arange(t_lo - margin, t_hi + margin + GRID_MM / 2, GRID_MM)
    plane = _plane(volume, fr, s_mm, t_mm)
    rows = np.nonzero((s_mm >= s_lo) & (s_mm <= s_hi))[0]
    cols = np.nonzero((t_mm >= t_lo) & (t_mm <= t_hi))[0]
    if np.mean(~np.isfinite(plane[np.ix_(rows, cols)])) > 0.5:
        return None, f"{level}: the region in front of the body is mostly outside the image (cropped)"
    boxes = _Boxes(plane, rows, cols)
    best, best_score = None, -1.0
    lo_hu, hi_hu = BLOOD_SEARCH_HU
    for radius in RADII_MM:
        frac, m_in, sd_in, contrast = _score_radius(boxes, radius)
        back = s_mm[rows][:, None] - radius - fr.front_mm  # gap between the body and the back wall
        valid = ((frac >= MIN_EDGE_FRACTION) & (m_in >= lo_hu) & (m_in <= hi_hu) & (sd_in <= MAX_INTERIOR_SD_HU)
                 & (back <= MAX_GAP_MM) & (back >= -MAX_OVERLAP_MM))
        if not valid.any():
            continue
        score = np.where(valid, frac + 0.5 * np.minimum(contrast / (sd_in + 5.0), 10.0) / 10.0, -1.0)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[i, j] > best_score:
            best_score = float(score[i, j])
            s, t = float(s_mm[rows[i]]), float(t_mm[cols[j]])
            best = {"center_ras": fr.origin + s * fr.ant + t * fr.left, "radius_mm": radius,
                    "edge_fraction": float(frac[i, j]), "interior_sd_hu": float(sd_in[i, j]),
                    "edge_contrast_hu": float(contrast[i, j]), "anterior_mm": s, "left_mm": t}
    if best is None:
        return None, (f"{level}: no round, uniform region of blood HU ({lo_hu:g} to {hi_hu:g} HU, "
                      f"{2 * min(RADII_MM):g}-{2 * max(RADII_MM):g} mm across) in front of or left of the body")
    return best, ""


def _measure(volume: Volume, found: Mapping[str, object]) -> Tuple[Dict[str, object], float]:
    radius = max(MIN_ROI_RADIUS_MM, ROI_FRACTION * float(found["radius_mm"]))
    stats, _ = roi_statistics_and_values(volume, rod_roi(volume, found["center_ras"], radius,
                                                         volume.slice_spacing(), name="aorta"))
    return stats, radius


def _levels_to_search(levels: Mapping[str, Mapping[str, object]]) -> List[str]:
    """L1 and L2 when measured, else T12 and L3; a level without an outline centre cannot be searched."""
    usable = {lv for lv, e in levels.items()
              if isinstance(e, Mapping) and isinstance(e.get("outline"), Mapping) and e["outline"].get("center_ras")}
    chosen = [lv for lv in SEARCH_LEVELS if lv in usable]
    return chosen or [lv for lv in FALLBACK_LEVELS if lv in usable][:2]


def find_aorta(volume: Volume, levels: Mapping[str, Mapping[str, object]]) -> AortaFinding:
    """The aorta beside L1–L2 (``levels`` as ``measure_levels`` records them: outline centre, AP
    axis, depth): its mean HU in a disc ROI, centre, radius and a confidence in [0, 1]; or
    ``hu=None`` with the reason when no round uniform blood region is found."""
    names = _levels_to_search(levels)
    if not names:
        return AortaFinding(None, reason="The aorta is searched beside L1-L2 (or T12/L3); none of them was measured.")
    # The finding depends only on the image and the searched bodies' outlines, which a re-measure after an
    # ROI edit leaves as they were: it is kept on the volume (as its derived geometry is) and reused then.
    key = (volume.ijk_to_ras.tobytes(), volume.array.__array_interface__["data"][0], volume.array.shape,
           tuple((name, _frame_key(levels[name])) for name in names))
    cached = volume.__dict__.get("_aorta_cache")
    if cached is not None and cached[0] == key:
        return cached[1]
    finding = _find_uncached(volume, names, levels)
    volume.__dict__["_aorta_cache"] = (key, finding)
    return finding


def _frame_key(entry: Mapping[str, object]) -> Tuple:
    """What :func:`_frame` reads of a level entry, rounded to 1 µm / 1e-6 (a hashable cache key)."""
    outline = entry["outline"]

    def rounded(v):
        return None if v is None else tuple(round(float(x), 6) for x in np.ravel(v))

    return (rounded(outline["center_ras"]), rounded(outline.get("ap_axis_ras")),
            rounded(outline.get("depth_mm")), rounded(outline.get("cortical_mm")))


def _find_uncached(volume: Volume, names: Sequence[str], levels: Mapping[str, Mapping[str, object]]) -> AortaFinding:
    found: Dict[str, Dict[str, object]] = {}
    reasons: List[str] = []
    for level in names:
        best, why = _search_level(volume, level, levels[level])
        if best is None:
            reasons.append(why)
        else:
            found[level] = best
    if not found:
        return AortaFinding(None, reason="Aorta not found: " + "; ".join(reasons) + ".")
    return _combine(volume, names, found, reasons)


def _combine(volume: Volume, names: Sequence[str], found: Dict[str, Dict[str, object]],
             reasons: List[str]) -> AortaFinding:
    """One finding from the levels' regions: the same vessel on every level, HU pooled by voxel count."""
    centres = [np.asarray(f["center_ras"]) for f in found.values()]
    n = volume.slice_normal_ras()
    if len(centres) == 2:
        d = centres[1] - centres[0]
        apart = float(np.linalg.norm(d - n * float(d @ n)))
        if apart > SAME_VESSEL_MM:
            return AortaFinding(None, reason=(f"Aorta not found: the round regions beside {' and '.join(found)} lie "
                                              f"{apart:.0f} mm apart (more than {SAME_VESSEL_MM:g} mm: not one vessel)."))
    per_level: Dict[str, Dict[str, object]] = {}
    total, sum_hu, sum_sq = 0, 0.0, 0.0
    for level, f in found.items():
        stats, roi_r = _measure(volume, f)
        k = int(stats["n_voxels"])
        if k == 0 or stats.get("mean_hu") is None:
            continue
        mean, sd = float(stats["mean_hu"]), float(stats.get("sd_hu") or 0.0)
        total, sum_hu, sum_sq = total + k, sum_hu + k * mean, sum_sq + (k - 1) * sd * sd + k * mean * mean
        per_level[level] = {"hu": round(mean, 2), "sd_hu": round(sd, 2), "n_voxels": k, "roi_radius_mm": roi_r,
                            "center_ras": [round(float(x), 2) for x in f["center_ras"]],
                            "radius_mm": f["radius_mm"], "edge_fraction": round(f["edge_fraction"], 3)}
    if total == 0:
        return AortaFinding(None, reason="Aorta not found: its disc ROI holds no voxel.")
    hu = sum_hu / total
    sd = float(np.sqrt(max(sum_sq - total * hu * hu, 0.0) / max(total - 1, 1)))
    weight = 1.0 if len(per_level) >= 2 else SINGLE_LEVEL_WEIGHT
    confidence = weight * float(np.mean([f["edge_fraction"] for f in found.values()]))
    first = next(iter(found.values()))
    return AortaFinding(hu, reason=("; ".join(reasons) + ".") if reasons else None, sd_hu=sd, n_voxels=total,
                        center_ras=list(first["center_ras"]), radius_mm=float(first["radius_mm"]),
                        roi_radius_mm=per_level[next(iter(per_level))]["roi_radius_mm"], confidence=confidence,
                        levels=per_level)
