"""The MRML scene logic: OsteoROI's nodes (points, ROI markups, table, plot, calibration) in a Slicer
scene. Imports ``slicer`` (Slicer itself or the ``slicer-core`` wheel) and no Qt.

``logic.OsteoROIMRMLLogic`` is the front the Slicer module and scripts call; it composes the parts,
each of which only calls the parts below it:

* ``nodes`` — node roles and attributes, MRML nodes ↔ the core's plain data;
* ``persistence`` — the parameter node: JSON state, node references, the module's own nodes;
* ``roi_markups`` — the ROI markups and the outlines of ellipse ROIs;
* ``placement_view`` — the placement shown in the views: locked outline, AP axis, plane, endplates;
* ``live_update`` — observers, pending edits and the volume cache;
* ``calibration_state``, ``calibration`` — HU → vBMD calibration in the state and in the scene;
* ``rows``, ``results_table``, ``results_plot`` — the result rows, the table and the plot;
* ``segment_labels``, ``levels`` — the levels placed from points or a segmentation;
* ``exports`` — the measurement document, JSON/CSV files and the HTML report;
* ``scene``, ``offscreen_view`` — a scene and a slice view without the Slicer application.
"""
from ..import_paths import stage_getattr

__all__ = ["OsteoROIMRMLLogic"]
__getattr__ = stage_getattr(__name__, {"OsteoROIMRMLLogic": "logic"})
