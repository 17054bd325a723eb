"""A vertebra segmentation node as a label array on the CT's grid, its labels named by vertebral level.

Segments are matched to levels by name ("L1", "vertebrae_L1", "L2 vertebra"; TotalSegmentator's
names work); the placement itself is ``placement.labels.place_from_labels``.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

import numpy as np
import slicer
import vtk

from ..errors import InputError
from ..placement.labels import describe_missing

__all__ = ["labels_from_segmentation", "missing_level_notes", "segment_levels"]

#: A vertebral level in a segment's name (underscores read as spaces): T11, T12 or L1 to L5.
LEVEL_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(T1[12]|L[1-5])(?![0-9])", flags=re.IGNORECASE)


def segment_levels(segmentationNode) -> Tuple[vtk.vtkStringArray, Dict[str, int]]:
    """The IDs of the segments named by a level, and ``{level: label}`` (label = position in the list)."""
    segmentation = segmentationNode.GetSegmentation()
    ids = vtk.vtkStringArray()
    label_map: Dict[str, int] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        name = segmentation.GetSegment(segment_id).GetName().replace("_", " ")
        match = LEVEL_IN_NAME.search(name)
        if match is None:
            continue
        level = match.group(1).upper()
        if level in label_map:
            raise InputError(f"Two segments of {segmentationNode.GetName()!r} are named {level}.",
                             "Rename or remove one of them.")
        ids.InsertNextValue(segment_id)
        label_map[level] = ids.GetNumberOfValues()  # export value = position in the list
    if not label_map:
        raise InputError(f"No segment of {segmentationNode.GetName()!r} is named by a vertebral level.",
                         "Name the segments L1, L2, ... or vertebrae_L1, ... (TotalSegmentator names work).")
    return ids, label_map


def color_table_ids(scene) -> List[str]:
    nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def labels_from_segmentation(scene, segmentationNode, volumeNode) -> Tuple[np.ndarray, Dict[str, int]]:
    """A label array on the volume's grid and ``{level: label}`` from the segments' names."""
    ids, label_map = segment_levels(segmentationNode)
    colors_before = set(color_table_ids(scene))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__OsteoROI_labels__")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmap, volumeNode):
            raise InputError(f"The segments of {segmentationNode.GetName()!r} could not be resampled to the CT.",
                             "Check that the segmentation overlaps the CT.")
        labels = np.array(slicer.util.arrayFromVolume(labelmap), copy=True)
    finally:
        display = labelmap.GetDisplayNode()
        scene.RemoveNode(labelmap)
        if display is not None and display.GetScene() is not None:
            scene.RemoveNode(display)
        # The export adds a colour table ("<segmentation>_ColorTable") for the temporary label map.
        for color_id in set(color_table_ids(scene)) - colors_before:
            scene.RemoveNode(scene.GetNodeByID(color_id))
    volume_shape = slicer.util.arrayFromVolume(volumeNode).shape
    if labels.shape != volume_shape:
        raise InputError("The segmentation could not be resampled to the CT's grid.",
                         "Check the segmentation's geometry.")
    return labels, label_map


def missing_level_notes(missing, label_map: Mapping[str, int], name: str) -> List[str]:
    """Warnings for the levels a segmentation could not place, or does not name (L1-L4)."""
    notes = describe_missing(missing, label_map, name)
    notes += [f"{level}: {name!r} has no segment named {level}; this level was not measured."
              for level in ("L1", "L2", "L3", "L4") if level not in label_map]
    return notes
