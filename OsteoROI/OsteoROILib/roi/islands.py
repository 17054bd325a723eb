"""Bone islands inside an ROI: dense foci among its voxels, left out of its mask with a margin.

QCT_BRIEF §1 (seed 002, Methods): the radiologist keeps the ROIs clear of focal lesions such as bone
islands. A bone island (enostosis) is compact bone inside the trabecular bone, hundreds of HU above
it. Among an ROI's voxels, a *dense* voxel lies above the ROI's median by more than
``ISLAND_ABOVE_MEDIAN_HU`` and five robust SDs (``dense_threshold``, also the rule of the dense-voxel
warning); a *dense focus* is a 26-connected group of at least ``MIN_ISLAND_VOXELS`` dense voxels. Each
focus is followed into the image beyond the ROI (``ISLAND_REACH_MM``) and left out of the ROI's
statistics together with every voxel whose centre lies within one voxel (where the island's edge and
partial-volume rim lie) and ``ISLAND_MARGIN_MM`` of its dense voxels, as a sphere (centre, radius)
that the row records, so that the measured mask can be rebuilt anywhere (report, Slicer view,
benchmark). A focus just under the threshold stays in: the mean then moves by the focus's own share,
and leaving it out moves it by no more than that (the margin's voxels are trabecular).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io.volume import Volume
from .geometry import RoiShape, VoxelSet, roi_voxels
from .stats import median_of, voxel_statistics

#: A voxel is dense when above the ROI's median by at least this much (HU) and five robust SDs:
#: compact bone is hundreds of HU above trabecular bone (the dense-voxel warning's rule).
ISLAND_ABOVE_MEDIAN_HU = 150.0
ISLAND_ROBUST_SDS = 5.0
#: A focus smaller than this many connected dense voxels is noise or a speck, not an island.
MIN_ISLAND_VOXELS = 3
#: Voxels whose centre lies this close (mm) to a focus's voxels are left out with it (its partial-volume rim).
ISLAND_MARGIN_MM = 1.0


def dense_threshold(values: np.ndarray) -> float:
    """The HU above which an ROI voxel is dense: median + max(``ISLAND_ABOVE_MEDIAN_HU``, 5 robust SDs)."""
    v = np.asarray(values, dtype=float).ravel()
    med = median_of(v)
    robust_sd = 1.4826 * median_of(np.abs(v - med))
    return med + max(ISLAND_ABOVE_MEDIAN_HU, ISLAND_ROBUST_SDS * robust_sd)


@dataclass
class DenseFocus:
    """One bone island left out of an ROI: the sphere excluded (centre RAS, radius mm), how many of
    the ROI's voxels were dense, how many were left out in all, their in-plane area and the peak HU."""

    center_ras: Tuple[float, float, float]
    radius_mm: float
    n_dense: int
    n_excluded: int
    area_mm2: float
    peak_hu: float

    def to_dict(self) -> Dict[str, object]:
        return {"center_ras": [round(float(x), 4) for x in self.center_ras], "radius_mm": round(self.radius_mm, 4),
                "n_dense_voxels": self.n_dense, "n_excluded_voxels": self.n_excluded,
                "area_mm2": round(self.area_mm2, 3), "peak_hu": round(self.peak_hu, 1)}


def _components(kji: np.ndarray) -> List[np.ndarray]:
    """26-connected groups of voxel indices (rows of ``kji``), as arrays of row numbers."""
    where = {tuple(p): n for n, p in enumerate(kji.tolist())}
    steps = [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)]
    seen = np.zeros(len(kji), dtype=bool)
    groups = []
    for start in range(len(kji)):
        if seen[start]:
            continue
        seen[start] = True
        stack, group = [start], []
        while stack:
            n = stack.pop()
            group.append(n)
            k, j, i = kji[n]
            for a, b, c in steps:
                m = where.get((k + a, j + b, i + c))
                if m is not None and not seen[m]:
                    seen[m] = True
                    stack.append(m)
        groups.append(np.asarray(group))
    return groups


def voxel_ras(voxels: VoxelSet, ijk_to_ras: np.ndarray) -> np.ndarray:
    """The RAS centres of an ROI's voxels (N × 3)."""
    ijk = np.column_stack([voxels.i, voxels.j, voxels.k, np.ones(voxels.count)]).astype(float)
    return (ijk @ np.asarray(ijk_to_ras, dtype=float).T)[:, :3]


def outside_spheres(ras: np.ndarray, spheres: Sequence[Tuple[Sequence[float], float]]) -> np.ndarray:
    """Which points lie outside every (centre RAS, radius mm) sphere."""
    keep = np.ones(len(ras), dtype=bool)
    for centre, radius in spheres:
        keep &= np.linalg.norm(ras - np.asarray(centre, dtype=float), axis=1) > radius
    return keep


#: The island is followed into the image (beyond the ROI) this far (mm) from its voxels in the ROI;
#: bone islands are millimetres to about 2 cm across. Dense bone reaching further (the cortex, an
#: endplate) is no focal island: then only its voxels inside the ROI are left out (with the margin).
ISLAND_REACH_MM = 12.0


def _whole_focus(array: np.ndarray, seeds: np.ndarray, threshold: float, spacing: Sequence[float]) -> np.ndarray:
    """The focus's voxels (k, j, i rows) in the whole image: the dense voxels 26-connected to
    ``seeds`` within ``ISLAND_REACH_MM``; the seeds alone when the dense region reaches that far."""
    reach = np.ceil(ISLAND_REACH_MM / np.asarray(spacing, dtype=float)[::-1]).astype(int)  # k, j, i
    lo = np.maximum(seeds.min(axis=0) - reach, 0)
    hi = np.minimum(seeds.max(axis=0) + reach + 1, array.shape)
    dense = array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] > threshold
    grown = np.zeros_like(dense)
    grown[tuple((seeds - lo).T)] = True
    while True:
        pad = np.pad(grown, 1)
        near = np.zeros_like(grown)
        for a in (0, 1, 2):
            for b in (0, 1, 2):
                for c in (0, 1, 2):
                    near |= pad[a:a + grown.shape[0], b:b + grown.shape[1], c:c + grown.shape[2]]
        new = near & dense | grown
        if np.array_equal(new, grown):
            break
        grown = new
    inner = grown[1:-1, 1:-1, 1:-1]
    if grown.sum() > inner.sum():  # the dense region reaches the search box's faces: not a focal island
        return seeds
    return np.argwhere(grown) + lo


def without_islands(voxels: VoxelSet, values: np.ndarray, volume: Volume, slab_mm: float
                    ) -> Tuple[VoxelSet, List[DenseFocus]]:
    """The ROI's voxels with every dense focus and its margin left out, and the foci left out."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size < 2 * MIN_ISLAND_VOXELS:
        return voxels, []
    threshold = dense_threshold(values)
    dense = np.flatnonzero(values > threshold)
    if dense.size < MIN_ISLAND_VOXELS:
        return voxels, []
    kji = np.column_stack([voxels.k[dense], voxels.j[dense], voxels.i[dense]])
    ras = voxel_ras(voxels, volume.ijk_to_ras)
    step_mm = float(max(volume.spacing[a] for a in range(3) if a != volume.slice_axis()))  # in-plane step
    keep = np.ones(voxels.count, dtype=bool)
    foci: List[DenseFocus] = []
    for group in _components(kji):
        if group.size < MIN_ISLAND_VOXELS:
            continue
        members = dense[group]
        focus = _whole_focus(volume.array, kji[group], threshold, volume.spacing)
        focus_ras = volume.ijk_to_ras_points(focus[:, ::-1].astype(float))
        centre = focus_ras.mean(axis=0)
        # the sphere holds every dense voxel of the island (also beyond the ROI), the one voxel beyond
        # them within which its edge lies (its partial-volume rim), and ISLAND_MARGIN_MM beyond that
        radius = float(np.max(np.linalg.norm(focus_ras - centre, axis=1))) + step_mm + ISLAND_MARGIN_MM
        out = ~outside_spheres(ras, [(centre, radius)]) & keep
        keep &= ~out
        n_out = int(np.count_nonzero(out))
        foci.append(DenseFocus(tuple(centre), radius, int(group.size), n_out,
                               n_out * volume.voxel_volume_mm3 / slab_mm, float(values[members].max())))
    if not foci:
        return voxels, []
    return VoxelSet(voxels.k[keep], voxels.j[keep], voxels.i[keep], voxels.n_outside), foci


def statistics_clear_of_islands(volume: Volume, shape: RoiShape
                                ) -> Tuple[Dict[str, object], np.ndarray, List[DenseFocus]]:
    """The ROI's statistics and voxel values with every bone island (and its margin) left out, and
    the islands left out (empty: the ROI's whole mask was measured)."""
    voxels = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    values = voxels.values(volume.array)
    kept, foci = without_islands(voxels, values, volume, shape.slab_mm)
    if foci:
        values = kept.values(volume.array)
    return voxel_statistics(volume, shape, kept, values), values, foci


def island_warning(level: str, name: str, foci: Sequence[DenseFocus]) -> str:
    """The row's plain-word note that bone islands were left out of an ROI."""
    n = sum(f.n_excluded for f in foci)
    area = sum(f.area_mm2 for f in foci)
    peak = max(f.peak_hu for f in foci)
    what = "a bone island" if len(foci) == 1 else f"{len(foci)} bone islands"
    return (f"{level}: {what} (dense focus, up to {peak:.0f} HU) lay in the {name} ROI: left out of its statistics "
            f"with a {ISLAND_MARGIN_MM:g} mm margin ({n} voxels, {area:.1f} mm²); check the ROI.")


#: Dense-voxel check (QCT_BRIEF §1: avoid focal lesions): an ROI still holding more than this share of
#: dense voxels (``dense_threshold``) once its bone islands are left out is flagged (scattered
#: sclerosis, osteophyte or cortex).
HIGH_HU_WARN_FRACTION = 0.01


def high_hu_fraction(values) -> Optional[float]:
    """Fraction of ROI voxels far above the ROI's median (``dense_threshold``); None under 2 voxels."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        return None
    return float(np.count_nonzero(v > dense_threshold(v)) / v.size)


def measured_roi(volume: Volume, shape: RoiShape, level: str, name: str
                 ) -> Tuple[Dict[str, object], List[str], Dict[str, object]]:
    """What one ROI's row takes from the image, the same for a placement (``placement.measure``) and
    for an ROI the user moved in Slicer (``mrml.rows``): the statistics with bone islands left out,
    the warnings (prefixed with the level), and the fields ``high_hu_fraction`` and
    ``bone_islands_excluded``."""
    stats, values, islands = statistics_clear_of_islands(volume, shape)
    warnings = [f"{level}: {w}" for w in stats.pop("warnings")]
    if islands:
        warnings.append(island_warning(level, name, islands))
    high = high_hu_fraction(values)
    if high is not None and high > HIGH_HU_WARN_FRACTION:
        warnings.append(f"{level}: {high:.1%} of the {name} ROI's voxels are far denser than the rest (bone island, "
                        "sclerosis, osteophyte or cortex?); check the ROI or move it.")
    return stats, warnings, {"high_hu_fraction": None if high is None else round(high, 5),
                             "bone_islands_excluded": [f.to_dict() for f in islands]}
