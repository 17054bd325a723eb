"""The MRML scene logic: OsteoROI's nodes (points, ROI markups, table, plot, calibration) in a Slicer
scene. Imports ``slicer`` (Slicer itself or the ``slicer-core`` wheel) and no Qt."""
from ..import_paths import stage_getattr

__all__ = ["OsteoROIMRMLLogic"]
__getattr__ = stage_getattr(__name__, {"OsteoROIMRMLLogic": "logic"})
