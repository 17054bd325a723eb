"""Live updates: observers on the inputs and the ROI nodes, the edits pending until the next update, and caches.

An edit (an ROI moved or resized, a level point moved, added or removed, the CT changed, a
calibration point moved) is only recorded here and ``wake`` is called; the logic then applies
everything pending at once, so that a drag re-measures at most once per scheduler period. The
module's own changes are made while ``muted`` so that they are not taken for edits. An ROI event
that leaves its geometry unchanged (display or selection) is ignored.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Tuple

import slicer
import vtk

from ..errors import InputError, OsteoROIError
from ..io.volume import Volume
from ..roi.geometry import RoiShape
from .nodes import ROLE_CAL_VOLUME, ROLE_VOLUME, SHAPE_KINDS, roi_role, roi_shape_from_node, shape_signature, \
    volume_from_node, volume_key
from .persistence import LIVE_MODES, SceneState
from .roi_markups import RoiMarkups

__all__ = ["LiveUpdates", "Pending", "VolumeCache", "POINT_LIST_EVENTS", "VOLUME_EVENTS"]

Key = Tuple[str, str]

#: Events of a point list that move, add, remove or place its points.
POINT_LIST_EVENTS = (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                     slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
                     slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                     slicer.vtkMRMLTransformableNode.TransformModifiedEvent)
ROI_EVENTS = (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, vtk.vtkCommand.ModifiedEvent,
              slicer.vtkMRMLTransformableNode.TransformModifiedEvent)
VOLUME_EVENTS = (slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent,
                 slicer.vtkMRMLTransformableNode.TransformModifiedEvent)


class VolumeCache:
    """Volume nodes as ``Volume`` objects, each kept until its image or geometry change."""

    #: Volumes kept at most (the measured CT and a separate phantom scan, plus one).
    MAX_VOLUMES = 3

    def __init__(self):
        self._volumes: Dict[str, Tuple[Tuple, Volume]] = {}  # node ID -> (geometry/image key, Volume)

    def of(self, node) -> Volume:
        """``node`` as a ``Volume``, cached until its image or geometry change."""
        key = volume_key(node)
        cached = self._volumes.get(node.GetID())
        if cached is None or cached[0] != key:
            if len(self._volumes) >= self.MAX_VOLUMES:
                self._volumes.clear()
            cached = (key, volume_from_node(node))
            self._volumes[node.GetID()] = cached
        return cached[1]

    def measured(self, store: SceneState) -> Volume:
        """The measured CT (the parameter node's input volume) as a ``Volume``."""
        node = store.ref(ROLE_VOLUME)
        if node is None:
            raise InputError("No CT volume has been measured yet.", "Run the measurement first (logic.run).")
        return self.of(node)

    def put(self, node, volume: Volume) -> None:
        """Remember ``volume`` as the node's current ``Volume`` (already read from it)."""
        self._volumes[node.GetID()] = (volume_key(node), volume)


@dataclass
class Pending:
    """The edits observed since the last update."""

    rois: set = field(default_factory=set)
    points: bool = False
    volume: bool = False
    calibration: bool = False

    def __bool__(self) -> bool:
        return bool(self.rois or self.points or self.volume or self.calibration)


class LiveUpdates:
    """Observers of one scene's OsteoROI inputs; ``wake()`` is called when an edit is pending."""

    def __init__(self, store: SceneState, rois: RoiMarkups, wake: Callable[[], None]):
        self.store = store
        self.rois = rois
        self.wake = wake
        self.muted = 0
        self.scheduled = False
        self.pending = Pending()
        self._observations: List[Tuple[Any, int]] = []
        self._signatures: Dict[Key, Tuple[float, ...]] = {}

    @contextlib.contextmanager
    def mute(self) -> Iterator[None]:
        """The module's own edits inside this block are not taken for the user's."""
        self.muted += 1
        try:
            yield
        finally:
            self.muted -= 1

    def observe(self, obj, events, callback: Callable[[], None]) -> None:
        for event in events:
            self._observations.append((obj, obj.AddObserver(event, lambda caller, event: callback())))

    def detach(self) -> None:
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        self._observations = []

    def remember(self, key: Key, shape: RoiShape) -> None:
        """The geometry an ROI node has now (a later event that keeps it is not an edit)."""
        self._signatures[key] = shape_signature(shape)

    def observeLevels(self, roiNodes: Mapping[Key, Any], pointsNode, volumeNode) -> None:
        """Observe the ROI nodes, the level point list and the measured CT."""
        for (level, shape), node in roiNodes.items():
            self.observe(node, ROI_EVENTS, lambda key=(level, shape): self._onRoiModified(key))
            self.remember((level, shape), roi_shape_from_node(node, SHAPE_KINDS[shape], shape))
        if pointsNode is not None:
            self.observe(pointsNode, POINT_LIST_EVENTS, self._onPointsModified)
        if volumeNode is not None:
            self.observe(volumeNode, VOLUME_EVENTS, self._onVolumeModified)

    def markCalibration(self) -> None:
        """A live calibration's point list or CT changed: re-fit at the next update."""
        if self.muted:
            return
        self.pending.calibration = True
        self.wake()

    def takePending(self) -> Pending:
        """The edits to apply now; nothing is pending afterwards."""
        self.scheduled = False
        pending, self.pending = self.pending, Pending()
        return pending

    def _onRoiModified(self, key: Key) -> None:
        if self.muted:
            return
        node = self.store.ref(roi_role(*key))
        if node is None:
            return
        sig = shape_signature(roi_shape_from_node(node, SHAPE_KINDS[key[1]], key[1]))
        if self._signatures.get(key) == sig:
            return  # display/selection change, not geometry
        self._signatures[key] = sig
        level, shape = key
        try:
            self.rois.updateOutline(level, shape, roi_shape_from_node(node, SHAPE_KINDS[shape], shape))
        except OsteoROIError:
            pass
        self.pending.rois.add(key)
        self.wake()

    def _onPointsModified(self) -> None:
        if self.muted:
            return
        self.pending.points = True
        self.wake()

    def _onVolumeModified(self) -> None:
        if self.muted:
            return
        self.pending.volume = True
        source = self.store.state().get("calibration_source") or {}
        calibrationVolume = self.store.ref(ROLE_CAL_VOLUME)
        if source.get("mode") in LIVE_MODES and (calibrationVolume is None
                                                 or calibrationVolume is self.store.ref(ROLE_VOLUME)):
            self.pending.calibration = True
        self.wake()
