"""OsteoROI's nodes in the scene: their roles and attributes, and MRML nodes converted to the core's plain data.

The module marks every node it creates with the attribute ``OsteoROI.Role`` and refers to it from
the parameter node under that role; it never renames or removes a node it did not create. The
conversions read world coordinates (parent transforms applied, which must be linear), so that a
``Volume``, a level point or an ``RoiShape`` means the same thing in the scene and in the core.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import slicer
import vtk

from ..errors import InputError
from ..io.markups_file import points_by_label
from ..io.volume import Volume, check_ct
from ..placement.measure import normalise_level
from ..roi.geometry import RoiShape
from .scene import placed_points
from .patient import dicom_facts_from_node

__all__ = [
    "MODULE_NAME",
    "SHAPE_KINDS",
    "SHAPE_COLORS",
    "roi_role",
    "outline_role",
    "matrix_to_world",
    "volume_from_node",
    "volume_key",
    "level_points_from_node",
    "labelled_points_from_node",
    "roi_shape_from_node",
    "set_roi_node_geometry",
    "shape_signature",
]

MODULE_NAME = "OsteoROI"
ROLE_ATTRIBUTE = "OsteoROI.Role"  # marks the module's own nodes
KIND_ATTRIBUTE = "OsteoROI.Kind"
LEVEL_ATTRIBUTE = "OsteoROI.Level"
SHAPE_ATTRIBUTE = "OsteoROI.Shape"

ROLE_VOLUME = "OsteoROI.volume"
ROLE_POINTS = "OsteoROI.points"
ROLE_TABLE = "OsteoROI.table"
ROLE_PLOT_CHART = "OsteoROI.plotChart"
ROLE_PLOT_TABLE = "OsteoROI.plotTable"
ROLE_THRESHOLD_TABLE = "OsteoROI.thresholdTable"
ROLE_SEG_POINTS = "OsteoROI.segmentationPoints"

ROLE_ROD_POINTS = "OsteoROI.rodPoints"  # the rod list in use (the user's or the module's)
ROLE_TISSUE_POINTS = "OsteoROI.tissuePoints"  # the tissue list in use
ROLE_OWN_RODS = "OsteoROI.ownRods"  # the module's own rod list ("Auto-detect", "Place rods")
ROLE_OWN_TISSUES = "OsteoROI.ownTissues"  # the module's own tissue list
ROLE_CAL_VOLUME = "OsteoROI.calibrationVolume"  # the CT the rods/tissues are measured in

#: The ROI kind of each seed-002 shape (``roi.family.build_roi_family``).
SHAPE_KINDS = {"oval": "ellipse", "round": "ellipse", "front": "rectangle", "left": "rectangle", "right": "rectangle"}
#: Display colours (RGB 0..1) of the shapes, shared by ROIs, outlines and plot bars.
SHAPE_COLORS = {
    "oval": (1.0, 0.55, 0.0),
    "round": (0.0, 0.75, 1.0),
    "front": (0.2, 0.85, 0.2),
    "left": (0.95, 0.25, 0.95),
    "right": (0.95, 0.9, 0.15),
}


def roi_role(level: str, shape: str) -> str:
    """The role of the ROI markups node of one level and ROI type."""
    return f"OsteoROI.roi.{level}.{shape}"


def outline_role(level: str, shape: str) -> str:
    """The role of the outline model that shows an ellipse ROI."""
    return f"OsteoROI.outline.{level}.{shape}"


def matrix_to_world(node) -> Optional[np.ndarray]:
    """4x4 node-to-world matrix of a transformable node; None without a parent transform."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return None
    m = vtk.vtkMatrix4x4()
    if not parent.GetMatrixTransformToWorld(m):
        raise InputError(
            f"{node.GetName()!r} is under a non-linear transform.",
            "Harden the transform (Data module, right-click > Harden transform) or remove it.",
        )
    return slicer.util.arrayFromVTKMatrix(m)


def volume_from_node(volumeNode) -> Volume:
    """The volume node's voxels (copied), world IJK-to-RAS matrix (parent transforms applied) and,
    for a volume loaded from Slicer's DICOM database, its DICOM facts (kVp, contrast, ...)."""
    if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.GetImageData() is None:
        raise InputError("No CT volume with image data is selected.", "Load a CT and select it as the input volume.")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{volumeNode.GetName()!r} is a label map, not a CT.", "Select the CT volume.")
    if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"The volume {volumeNode.GetName()!r} has several components per voxel (colour or vector image).",
            "Select a single-component CT volume in Hounsfield units.",
        )
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(m)
    to_world = matrix_to_world(volumeNode)
    if to_world is not None:
        ijk_to_ras = to_world @ ijk_to_ras
    volume = Volume(array, ijk_to_ras, source=volumeNode.GetName(), facts=dicom_facts_from_node(volumeNode))
    check_ct(volume)
    return volume


def volume_key(node) -> Tuple:
    """What a volume node's ``Volume`` depends on: its ID, image modification time and geometry."""
    image = node.GetImageData()
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    to_world = matrix_to_world(node)
    return (node.GetID(), image.GetMTime() if image is not None else 0,
            tuple(slicer.util.arrayFromVTKMatrix(m).ravel()),
            None if to_world is None else tuple(to_world.ravel()))


def level_points_from_node(pointsNode) -> Dict[str, List[float]]:
    """``{level: [R, A, S]}`` (world) of the point list's placed control points, labels normalised."""
    if pointsNode is None:
        raise InputError(
            "No level point list is selected.",
            "Place one point inside each vertebral body (Markups point list) and label the points L1, L2, ...",
        )
    points = placed_points(pointsNode)
    if not points:
        raise InputError(
            f"The point list {pointsNode.GetName()!r} has no placed points.",
            "Place one point inside each vertebral body and label the points L1, L2, ...",
        )
    byLabel = points_by_label(points, source=f"point list {pointsNode.GetName()!r}")
    out: Dict[str, List[float]] = {}
    for label, ras in byLabel.items():
        level = normalise_level(label)
        if level in out:
            raise InputError(f"Level {level} is given twice in {pointsNode.GetName()!r}.", "Give one point per level.")
        out[level] = [float(x) for x in ras]
    return out


def labelled_points_from_node(pointsNode, what: str) -> Dict[str, List[float]]:
    """``{label: [R, A, S]}`` (world) of the placed control points; unplaced ones are skipped."""
    if pointsNode is None:
        raise InputError(f"No {what} point list is selected.",
                         f"Place one point per {what} (or auto-detect the rods) and label each point.")
    points = placed_points(pointsNode)
    if not points:
        raise InputError(f"The {what} point list {pointsNode.GetName()!r} has no placed points.",
                         f"Place one point inside each {what} and label it.")
    return {k: [float(x) for x in v] for k, v in
            points_by_label(points, source=f"{what} point list {pointsNode.GetName()!r}").items()}


def roi_shape_from_node(roiNode, kind: Optional[str] = None, name: str = "") -> RoiShape:
    """The :class:`RoiShape` an ROI markups node shows (world coordinates).

    ``kind`` "rectangle" measures the box's cross-section, "ellipse" its inscribed ellipse; by
    default the node's ``OsteoROI.Kind`` attribute.
    """
    kind = kind or roiNode.GetAttribute(KIND_ATTRIBUTE) or "rectangle"
    center, x, y, size = [0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3
    roiNode.GetCenterWorld(center)
    roiNode.GetXAxisWorld(x)
    roiNode.GetYAxisWorld(y)
    roiNode.GetSizeWorld(size)
    return RoiShape(kind, tuple(center), tuple(x), tuple(y), 0.5 * size[0], 0.5 * size[1], size[2],
                    name=name or roiNode.GetAttribute(SHAPE_ATTRIBUTE) or roiNode.GetName())


def set_roi_node_geometry(roiNode, shape: RoiShape) -> None:
    """Make the ROI node show ``shape`` (world coordinates; a linear parent transform is allowed)."""
    rot = np.eye(4)
    rot[:3, 0] = shape.axis_u
    rot[:3, 1] = shape.axis_v
    rot[:3, 2] = shape.normal
    rot[:3, 3] = shape.center
    to_world = matrix_to_world(roiNode)
    if to_world is not None:
        rot = np.linalg.inv(to_world) @ rot
    size = [2.0 * shape.half_u, 2.0 * shape.half_v, shape.slab_mm]
    if to_world is not None:  # sizes along the node axes
        scale = np.linalg.norm(np.linalg.inv(to_world)[:3, :3] @ np.array([shape.axis_u, shape.axis_v, shape.normal]).T,
                               axis=0)
        size = [s * k for s, k in zip(size, scale)]
        rot[:3, :3] = rot[:3, :3] / scale
    wasModifying = roiNode.StartModify()
    try:
        roiNode.SetROIType(roiNode.ROITypeBox)
        roiNode.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(rot))
        roiNode.SetCenter(*[float(c) for c in rot[:3, 3]])
        roiNode.SetSize(*[float(s) for s in size])
    finally:
        roiNode.EndModify(wasModifying)


def shape_signature(shape: RoiShape) -> Tuple[float, ...]:
    """The numbers that define an ROI's geometry: centre, in-plane axes, half sizes and slab."""
    return tuple(shape.center) + tuple(shape.axis_u) + tuple(shape.axis_v) + (shape.half_u, shape.half_v, shape.slab_mm)
