"""A disc ROI at a point: a circle in the image's axial plane, a slab of slices thick.

Calibration rods (cylinders along the table, QCT_BRIEF §4) and the reference tissues of an
internal calibration (Michalski et al. 2020) are both measured in such a disc.
"""
from __future__ import annotations

from typing import Sequence

from ..io.volume import Volume
from .geometry import RoiShape, in_plane_frame


def rod_roi(volume: Volume, center_ras: Sequence[float], roi_radius_mm: float, slab_mm: float,
            name: str = "rod") -> RoiShape:
    """The circular rod ROI in the image's axial plane, ``slab_mm`` thick."""
    u, v, _ = in_plane_frame(volume.slice_normal_ras(), volume.in_plane_anterior())
    return RoiShape("ellipse", tuple(float(x) for x in center_ras), tuple(u), tuple(v), float(roi_radius_mm),
                    float(roi_radius_mm), float(slab_mm), name=name)
