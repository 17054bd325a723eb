"""ROI geometry and voxel statistics: ellipse/rectangle ROIs in RAS, the five seed-002 ROI types
(round, oval, front, left, right) built from a body outline, and HU statistics of their voxels."""
from ..import_paths import stage_getattr

__all__ = ["RoiShape", "roi_voxels", "BodyOutline", "build_roi_family", "SHAPE_NAMES", "roi_statistics"]
__getattr__ = stage_getattr(__name__, {
    "RoiShape": "geometry", "roi_voxels": "geometry", "BodyOutline": "family", "build_roi_family": "family",
    "SHAPE_NAMES": "family", "roi_statistics": "stats",
})
