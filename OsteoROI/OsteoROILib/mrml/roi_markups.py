"""The ROI markups: one editable box ROI node per level and ROI type, and the outline that shows an ellipse.

Markups type (the choice, and why)
----------------------------------
Every ROI is a ``vtkMRMLMarkupsROINode`` of type *Box*. Its object-to-node matrix gives the
in-plane axes (X = the body's anterior direction ``axis_u``, Y = the patient's left ``axis_v``,
Z = their cross product, the slice normal), its size gives ``2·half_u``, ``2·half_v`` and the **slab
thickness** — exactly the parameters of :class:`~OsteoROILib.roi.geometry.RoiShape`, nothing
approximated. A *rectangle* ROI (front, left, right) is the box's cross-section; an *ellipse* ROI
(oval, round) is the ellipse inscribed in the box's cross-section (semi-axes = half sizes). The
ROI node's standard handles translate, rotate and resize it in the slice views while keeping it
a rectangle/ellipse. Rejected alternatives: a closed curve is drawn through control points the
user can drag one by one into a non-ellipse, and its interpolated curve is not an exact ellipse;
a plane node has no thickness, so it cannot carry the slab. So that the user *sees* the ellipse,
an ellipse ROI gets a derived, non-editable model (an elliptic band one slab thick whose
intersection with the slice is the ellipse), regenerated whenever its ROI changes.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import numpy as np
import vtk

from ..roi.family import SHAPE_NAMES
from ..roi.geometry import RoiShape
from .nodes import (
    KIND_ATTRIBUTE,
    LEVEL_ATTRIBUTE,
    SHAPE_ATTRIBUTE,
    SHAPE_COLORS,
    SHAPE_KINDS,
    outline_role,
    roi_role,
    roi_shape_from_node,
    set_roi_node_geometry,
    shape_signature,
)
from .persistence import SceneState, ordered_levels

__all__ = ["RoiMarkups", "ellipse_band_polydata", "shape_from_row_roi"]


def ellipse_band_polydata(shape: RoiShape, n: int = 96):
    """Side surface of the elliptic cylinder of ``shape`` (its slice intersection is the ellipse)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, u, v, nn = np.asarray(shape.center), np.asarray(shape.axis_u), np.asarray(shape.axis_v), shape.normal
    ring = c + np.outer(shape.half_u * np.cos(t), u) + np.outer(shape.half_v * np.sin(t), v)
    half = 0.5 * shape.slab_mm * nn
    points = vtk.vtkPoints()
    for p in ring - half:
        points.InsertNextPoint(*p)
    for p in ring + half:
        points.InsertNextPoint(*p)
    cells = vtk.vtkCellArray()
    for i in range(n):
        j = (i + 1) % n
        quad = vtk.vtkQuad()
        for k, pid in enumerate((i, j, n + j, n + i)):
            quad.GetPointIds().SetId(k, pid)
        cells.InsertNextCell(quad)
    poly = vtk.vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def shape_from_row_roi(roi: Mapping[str, Any], name: str) -> RoiShape:
    """The ``RoiShape`` of a result row's ``roi`` block (``measure_levels``)."""
    return RoiShape(roi["kind"], roi["center_ras"], roi["axis_u_ras"], roi["axis_v_ras"],
                    roi["half_u_mm"], roi["half_v_mm"], roi["slab_mm"], name=name)


class RoiMarkups:
    """The module's ROI nodes and ellipse outlines in one scene (found through the parameter node)."""

    def __init__(self, store: SceneState):
        self.store = store

    def roiNode(self, level: str, shape: str):
        return self.store.ref(roi_role(level, shape))

    def roiNodes(self, state: Mapping[str, Any]) -> Dict[Tuple[str, str], Any]:
        """``{(level, shape): ROI node}`` of the state's levels and shapes."""
        out = {}
        for level in ordered_levels(state):
            for shape in state["shapes"]:
                node = self.roiNode(level, shape)
                if node is not None:
                    out[(level, shape)] = node
        return out

    def remove(self, level: str, shapes=SHAPE_NAMES) -> None:
        """Remove the module's ROI and outline nodes of ``level`` (every ROI type by default)."""
        for shape in shapes:
            self.store.removeOwnNode(roi_role(level, shape))
            self.store.removeOwnNode(outline_role(level, shape))

    def place(self, state: Dict[str, Any], result: Mapping[str, Any]) -> None:
        """Store the levels' placement in ``state`` and make the ROI nodes show the placed shapes."""
        for level, info in result["levels"].items():
            info = dict(info)
            info["placed"] = {}
            state["levels"][level] = info
        for row in result["rows"]:
            level, shape_name = row["level"], row["shape"]
            node = self.nodeFor(level, shape_name)
            set_roi_node_geometry(node, shape_from_row_roi(row["roi"], shape_name))
            placed = roi_shape_from_node(node)  # as the node stores it (float control points)
            state["levels"][level]["placed"][shape_name] = list(shape_signature(placed))
            self.updateOutline(level, shape_name, placed)

    def nodeFor(self, level: str, shape: str):
        """The module's ROI node of ``level`` and ``shape``, created and styled on first use."""
        node = self.store.ownNode(roi_role(level, shape), "vtkMRMLMarkupsROINode", f"{level} {shape}")
        if node.GetAttribute(LEVEL_ATTRIBUTE) != level:
            node.SetAttribute(LEVEL_ATTRIBUTE, level)
            node.SetAttribute(SHAPE_ATTRIBUTE, shape)
            node.SetAttribute(KIND_ATTRIBUTE, SHAPE_KINDS[shape])
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(*SHAPE_COLORS[shape])
                display.SetColor(*SHAPE_COLORS[shape])
                display.SetFillOpacity(0.08 if SHAPE_KINDS[shape] == "ellipse" else 0.2)
                display.SetPropertiesLabelVisibility(False)
        return node

    def updateOutline(self, level: str, shape_name: str, shape: RoiShape) -> None:
        """Regenerate the outline model of an ellipse ROI (rectangles need none)."""
        if SHAPE_KINDS.get(shape_name) != "ellipse":
            return
        model = self.store.ownNode(outline_role(level, shape_name), "vtkMRMLModelNode", f"{level} {shape_name} outline")
        model.SetAndObservePolyData(ellipse_band_polydata(shape))
        if model.GetDisplayNode() is None:
            model.CreateDefaultDisplayNodes()
            display = model.GetDisplayNode()
            display.SetColor(*SHAPE_COLORS[shape_name])
            display.SetOpacity(0.3)
            display.SetVisibility2D(True)
            display.SetSliceIntersectionThickness(2)
