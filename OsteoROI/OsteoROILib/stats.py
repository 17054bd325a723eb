"""Statistics of the voxels inside an ROI.

SD uses ddof = 1 (sample standard deviation), as Slicer's Segment Statistics does.
Percentiles use numpy's default linear interpolation. Area is the voxelised in-plane area:
``volume_mm3 / slab_mm`` (for a slab one slice thick on an axial grid this is
``n_voxels × in-plane voxel area``).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .geometry import RoiShape, roi_voxels
from .volume import Volume

STAT_KEYS = (
    "mean_hu",
    "sd_hu",
    "median_hu",
    "min_hu",
    "max_hu",
    "p05_hu",
    "p95_hu",
    "n_voxels",
    "area_mm2",
    "volume_mm3",
)


def statistics_of_values(values: np.ndarray) -> Dict[str, Optional[float]]:
    """Mean, SD (ddof=1), median, min, max, 5th/95th percentiles of a 1-D sample.

    An empty sample gives ``None`` for every value; a single voxel has no SD (``None``).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    n = int(v.size)
    if n == 0:
        return {k: None for k in ("mean_hu", "sd_hu", "median_hu", "min_hu", "max_hu", "p05_hu", "p95_hu")}
    p05, median, p95 = np.percentile(v, [5.0, 50.0, 95.0])
    return {
        "mean_hu": float(v.mean()),
        "sd_hu": float(v.std(ddof=1)) if n > 1 else None,
        "median_hu": float(median),
        "min_hu": float(v.min()),
        "max_hu": float(v.max()),
        "p05_hu": float(p05),
        "p95_hu": float(p95),
    }


def roi_statistics(volume: Volume, shape: RoiShape) -> Dict[str, object]:
    """Statistics of ``volume`` inside ``shape``, plus count, area, volume and clipping warnings."""
    voxels = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    stats: Dict[str, object] = dict(statistics_of_values(voxels.values(volume.array)))
    n = voxels.count
    volume_mm3 = n * volume.voxel_volume_mm3
    stats["n_voxels"] = n
    stats["volume_mm3"] = float(volume_mm3)
    stats["area_mm2"] = float(volume_mm3 / shape.slab_mm)
    warnings: List[str] = []
    if voxels.n_outside:
        warnings.append(
            f"ROI {shape.name or shape.kind} is partly outside the image: {voxels.n_outside} of "
            f"{voxels.n_outside + n} voxels were clipped."
        )
    if n == 0:
        warnings.append(f"ROI {shape.name or shape.kind} contains no voxel centre; enlarge it.")
    elif n == 1:
        warnings.append(f"ROI {shape.name or shape.kind} contains a single voxel; SD is undefined.")
    stats["warnings"] = warnings
    return stats
