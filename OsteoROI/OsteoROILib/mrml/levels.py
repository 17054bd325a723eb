"""The measured levels in the scene: the state a (re-)run starts from, and levels re-placed when their point moves.

Placing is the core's (``placement.measure.measure_levels`` from the level points, or
``placement.labels.place_from_labels`` from a vertebra segmentation); this part validates the
inputs before it touches the scene, so that bad input leaves the scene unchanged, then records
the inputs and the placement in the state and the ROI nodes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..placement.labels import place_from_labels
from ..placement.level_checks import check_level_order
from ..placement.measure import measure_levels
from ..roi.levels import LEVEL_NAMES, parse_shapes
from ..roi.family import SHAPE_NAMES
from .calibration_state import KEEP_CALIBRATION, calibration_from
from .nodes import ROLE_POINTS, ROLE_SEG_POINTS, ROLE_TABLE, ROLE_VOLUME, level_points_from_node, volume_from_node
from .parts import SceneParts
from .persistence import criterion_from, run_state, slab_from
from .segment_labels import labels_from_segmentation, missing_level_notes

__all__ = ["SceneLevels", "moved_levels"]


def moved_levels(state: Mapping[str, Any], points: Mapping[str, Sequence[float]]) -> Tuple[Dict[str, Any], List[str]]:
    """The levels whose point moved or was added (``{level: point}``), and those whose point was removed."""
    changed = {lv: p for lv, p in points.items()
               if lv not in state["levels"]
               or not np.allclose(state["levels"][lv]["point_ras"], p, rtol=0, atol=1e-3)}
    removed = [lv for lv in state["levels"] if lv not in points]
    return changed, removed


class SceneLevels:
    """Runs and re-placements of the levels of one scene (the state is stored by the caller)."""

    def __init__(self, parts: SceneParts):
        self.store, self.rois, self.volumes, self.live, self.cal = (parts.store, parts.rois, parts.volumes,
                                                                    parts.live, parts.cal)
        self.view = parts.view

    def newRun(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
               criteria=None, slabMm: Optional[float] = None, force: bool = False, tableNode=None,
               placements=None, extraWarnings: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """Place every labelled level, then record inputs, placement and ROI nodes; returns the new state."""
        shape_names = parse_shapes(shapes)
        volume = volume_from_node(volumeNode)
        points = level_points_from_node(pointsNode)
        slab = slab_from(slabMm)
        previous = self.store.state()
        cal, crit = self._calibrationAndCriterion(previous, calibration, criteria)
        if crit is not None and crit.get("quantity") == "vbmd" and cal is None:
            raise InputError(f"The criterion {crit['id']!r} classifies vBMD, which needs a calibration.",
                             "Choose a calibration (phantom, saved, manual or internal) or an HU criterion.")
        # Validate and place everything before touching the scene: bad input leaves it unchanged.
        result = measure_levels(volume, points, shapes=shape_names, slab_mm=slab, force=force,
                                placements=placements, warnings=extraWarnings, aorta=False)
        self.live.detach()
        state = run_state(shape_names, slab, crit, force, notes=extraWarnings or [],
                          excluded={k: v for k, v in previous.get("excluded", {}).items() if k in points},
                          genant={k: v for k, v in previous.get("genant", {}).items() if k in points})
        self.cal.carry(state, previous, calibration, cal)
        self._setInputs(volumeNode, pointsNode, tableNode)
        self.volumes.put(volumeNode, volume)
        for level in previous.get("levels", {}):  # own ROIs of levels/shapes no longer measured
            self.rois.remove(level, [s for s in SHAPE_NAMES if level not in points or s not in shape_names])
            if level not in points:
                self.view.remove(level)
        self.place(state, result)
        return state

    @staticmethod
    def hasPlacedPoint(volumeNode, pointsNode) -> bool:
        """Whether a run can place levels now (a point is placed); refuses a bad volume or no point list."""
        volume_from_node(volumeNode)  # refuse a bad volume now
        if pointsNode is None:
            raise InputError("No level point list is given.", "Create or select a point list for the levels.")
        return any(pointsNode.GetNthControlPointPositionStatus(i) == pointsNode.PositionDefined
                   for i in range(pointsNode.GetNumberOfControlPoints()))

    def newWatch(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
                 criteria=None, slabMm: Optional[float] = None, force: bool = False) -> Dict[str, Any]:
        """The state of a run whose point list has no placed point yet (every level comes later)."""
        previous = self.store.state()
        cal, crit = self._calibrationAndCriterion(previous, calibration, criteria)
        self.live.detach()
        for level in previous.get("levels", {}):
            self.rois.remove(level)
            self.view.remove(level)
        self._setInputs(volumeNode, pointsNode)
        state = run_state(parse_shapes(shapes), slab_from(slabMm), crit, force, excluded={}, genant={}, notes=[])
        self.cal.carry(state, previous, calibration, cal)
        return state

    def fromSegmentation(self, volumeNode, segmentationNode) -> Tuple[Any, Dict[str, Any], List[str]]:
        """Place the levels a segmentation names; returns the module's level point list (refilled),
        the placements and the notes on levels that could not be placed."""
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("No vertebra segmentation is selected.",
                             "Select a segmentation whose segments are named by level (e.g. vertebrae_L1, L2).")
        volume = volume_from_node(volumeNode)
        labels, label_map = labels_from_segmentation(self.store.scene, segmentationNode, volumeNode)
        placements, missing = place_from_labels(volume, labels, label_map)
        notes = missing_level_notes(missing, label_map, segmentationNode.GetName())
        if not placements:
            raise InputError(f"No level could be placed from {segmentationNode.GetName()!r}.",
                             "Check that the segments cover the vertebral bodies of the CT.")
        pointsNode = self.store.ownNode(ROLE_SEG_POINTS, "vtkMRMLMarkupsFiducialNode", "OsteoROI levels")
        with self.live.mute():
            pointsNode.RemoveAllControlPoints()  # the module's own list, refilled from the placements
            for level in sorted(placements, key=LEVEL_NAMES.index):
                pointsNode.AddControlPoint(*[float(x) for x in placements[level].point_ras], level)
        return pointsNode, placements, notes

    def replace(self, state: Dict[str, Any], changed: Mapping[str, Any], removed: Sequence[str]) -> None:
        """Drop the removed levels and re-place the changed ones in ``state`` (the other ROIs stay)."""
        for level in removed:
            state["levels"].pop(level)
            self.rois.remove(level)
            self.view.remove(level)
        if changed:
            result = measure_levels(self.volumes.measured(self.store), changed, shapes=state["shapes"],
                                    slab_mm=state["slab_mm"], force=state.get("force", False), aorta=False)
            # the moved levels against the others too, not only among themselves
            check_level_order({lv: info["outline"]["center_ras"] for lv, info in
                               list(state["levels"].items()) + list(result["levels"].items())})
            self.place(state, result)

    def place(self, state: Dict[str, Any], result: Mapping[str, Any]) -> None:
        """Show a placement in the ROI nodes (the module's own edits: not taken for the user's)."""
        with self.live.mute():
            self.rois.place(state, result)
            self.view.show(result)  # the outline, AP axis, endplates and plane, locked, for a look

    def _calibrationAndCriterion(self, previous, calibration, criteria):
        keep = calibration is KEEP_CALIBRATION
        cal = self.cal.fromState(previous) if keep else calibration_from(calibration)
        return cal, criterion_from(criteria)

    def _setInputs(self, volumeNode, pointsNode, tableNode=None) -> None:
        self.store.setRef(ROLE_VOLUME, volumeNode)
        self.store.setRef(ROLE_POINTS, pointsNode)
        if tableNode is not None:
            self.store.setRef(ROLE_TABLE, tableNode)
