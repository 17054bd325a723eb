"""ROI geometry and voxel statistics: ellipse/rectangle ROIs in RAS, the five seed-002 ROI types
(round, oval, front, left, right) built from a body outline, HU statistics of their voxels, and the
level and shape names a user may give."""
from ..import_paths import stage_getattr

__all__ = ["RoiShape", "roi_voxels", "BodyOutline", "build_roi_family", "SHAPE_NAMES", "roi_statistics",
           "LEVEL_NAMES", "normalise_level", "parse_shapes", "level_overlays"]
__getattr__ = stage_getattr(__name__, {
    "RoiShape": "geometry", "roi_voxels": "geometry", "BodyOutline": "outline", "build_roi_family": "family",
    "SHAPE_NAMES": "family", "roi_statistics": "stats",
    "LEVEL_NAMES": "levels", "normalise_level": "levels", "parse_shapes": "levels",
    "level_overlays": "overlays",
})
