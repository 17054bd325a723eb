"""The placement shown in the Slicer views: per level, locked markups of what the report's pictures draw.

From ``roi.overlays.level_overlays`` (one geometry for the report, the scene and scripts), each
measured level gets, in a subject-hierarchy folder of the case ("OsteoROI placement"):

* "<level> outline" — the body's outer outline on the measured plane (closed curve, linear, so the
  drawn curve is the polygon itself);
* "<level> trabecular outline" — the trabecular boundary (closed curve), when the result holds it;
* "<level> AP axis" — the body's AP axis through its centre, posterior → anterior (line);
* "<level> plane" — the measured plane, the size of the body (plane, absolute size);
* "<level> superior endplate" / "<level> inferior endplate" — the endplates found, as lines across
  the body on its mid-sagittal strip (seen in a sagittal view);
* "<level> slab superior face" / "<level> slab inferior face" — the faces of the ROIs' slab (one slice
  or the QCT slab);
* "<level> bone island left out" — where a bone island was left out of the ROIs (its excluded sphere
  on the measured plane; the largest one when there are several — the report draws each).

A level whose placement raised concerns (low fit quality, shrunk ROIs, a snapped point, the rows'
warnings) shows its outline and endplates in red, with the reasons in the nodes' attribute
``OsteoROI.placementConcerns``: shown, never silently altered.

So that a radiologist can check the placement at a glance without changing it: every node is
locked and its number of control points fixed (``vtkMRMLMarkupsNode::SetLocked``,
``SetFixedNumberOfControlPoints``); a re-measure updates the same nodes (found by their role, as the
ROI nodes are), a level no longer measured loses its nodes, and a node the module did not create is
never reused, renamed or removed (``persistence.SceneState``). The markups calls used here are those
of Slicer 5.6.2, 5.8.1 and 5.10.0 (checked in ``Testing/slicer_standin.py``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import slicer
import vtk

from ..roi.overlays import LevelOverlays, level_overlays, placement_concerns
from .nodes import ROLE_ATTRIBUTE
from .persistence import SceneState

__all__ = ["CONCERN_COLOR", "CONCERNS_ATTRIBUTE", "FOLDER_NAME", "FOLDER_ROLE", "PLACEMENT_PARTS", "PlacementView",
           "placement_role"]

#: The subject-hierarchy folder of the case's placement nodes, and the item attribute marking it as ours.
FOLDER_NAME = "OsteoROI placement"
FOLDER_ROLE = "OsteoROI.placementFolder"
#: Each part shown: (name suffix, markups class), in the order they are made.
PLACEMENT_PARTS: Tuple[Tuple[str, str], ...] = (
    ("outline", "vtkMRMLMarkupsClosedCurveNode"),
    ("trabecular outline", "vtkMRMLMarkupsClosedCurveNode"),
    ("AP axis", "vtkMRMLMarkupsLineNode"),
    ("plane", "vtkMRMLMarkupsPlaneNode"),
    ("superior endplate", "vtkMRMLMarkupsLineNode"),
    ("inferior endplate", "vtkMRMLMarkupsLineNode"),
    ("slab superior face", "vtkMRMLMarkupsLineNode"),
    ("slab inferior face", "vtkMRMLMarkupsLineNode"),
    ("bone island left out", "vtkMRMLMarkupsClosedCurveNode"),
)
#: Colours (RGB 0..1), apart from the ROI colours of the scene (``nodes.SHAPE_COLORS``): the body's
#: boundary (outline, endplates) teal, the AP axis white, the plane and the slab lavender.
PART_COLORS = {"outline": (0.2, 0.9, 0.8), "trabecular outline": (0.6, 1.0, 0.95), "AP axis": (1.0, 1.0, 1.0),
               "plane": (0.65, 0.6, 1.0), "superior endplate": (0.2, 0.9, 0.8), "inferior endplate": (0.2, 0.9, 0.8),
               "slab superior face": (0.65, 0.6, 1.0), "slab inferior face": (0.65, 0.6, 1.0),
               "bone island left out": (0.0, 0.9, 0.9)}
#: A level whose placement raised concerns (``roi.overlays.placement_concerns``) shows its body's
#: boundary in red, and every one of its nodes holds the reasons in this attribute.
CONCERN_COLOR = (1.0, 0.15, 0.15)
CONCERN_PARTS = ("outline", "trabecular outline", "superior endplate", "inferior endplate")
CONCERNS_ATTRIBUTE = "OsteoROI.placementConcerns"
#: The endplate and slab lines reach this far beyond the body's half depth (as in the report).
LINE_REACH = 0.65


def placement_role(level: str, part: str) -> str:
    """The role of one level's placement node (``part`` from ``PLACEMENT_PARTS``)."""
    return f"OsteoROI.placement.{level}.{part.replace(' ', '_')}"


def _part_points(ov: LevelOverlays) -> Dict[str, Any]:
    """What each part shows for these overlays: points (N×3) or, for the plane, (origin, axes, size)."""
    reach = LINE_REACH * max(ov.depth_mm, 10.0)
    sup, inf = ov.endplates_mm
    parts: Dict[str, Any] = {"outline": ov.body_outline, "trabecular outline": ov.trabecular_outline,
                             "AP axis": ov.ap_axis,
                             "superior endplate": None if sup is None else ov.sagittal_line(float(sup), reach),
                             "inferior endplate": None if inf is None else ov.sagittal_line(float(inf), reach),
                             "slab superior face": ov.sagittal_line(ov.slab_mm[1], reach) if ov.has_slab else None,
                             "slab inferior face": ov.sagittal_line(ov.slab_mm[0], reach) if ov.has_slab else None,
                             # the largest island left out of the ROIs (the report draws every one)
                             "bone island left out": max(ov.excluded, key=lambda c: np.ptp(c[:, 0]) + np.ptp(c[:, 1]),
                                                         default=None)}
    ap = -ov.sagittal.col_dir  # the sagittal strip runs anterior → left of the picture
    left = np.cross(ov.normal, ap)
    extent = np.ptp((ov.body_outline - ov.axial.origin) @ np.column_stack([ap, left]), axis=0)
    parts["plane"] = (ov.axial.origin, (ap, left, ov.normal), extent)
    return parts


class PlacementView:
    """The placement nodes of one scene's levels (found through the parameter node's references)."""

    def __init__(self, store: SceneState):
        self.store = store

    def nodes(self, level: str) -> Dict[str, Any]:
        """``{part: node}`` of the level's placement nodes in the scene."""
        out = {}
        for part, _ in PLACEMENT_PARTS:
            node = self.store.ref(placement_role(level, part))
            if node is not None:
                out[part] = node
        return out

    def show(self, result: Mapping[str, Any]) -> None:
        """Show (or update) every level of a placement result (``measure_levels``: levels and rows)."""
        rows: Dict[str, List[Mapping[str, Any]]] = {}
        for row in result.get("rows") or []:
            rows.setdefault(str(row["level"]), []).append(row)
        for level, entry in (result.get("levels") or {}).items():
            self.showLevel(level, entry, rows.get(level, []))

    def showLevel(self, level: str, entry: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
        """Make the level's nodes show its placement; a part with nothing to show loses its node."""
        points = _part_points(level_overlays(entry, [r for r in rows if r.get("roi")]))
        concerns = "; ".join(placement_concerns(entry, rows))
        folder = self._folder()
        for part, class_name in PLACEMENT_PARTS:
            shown = points[part]
            role = placement_role(level, part)
            if shown is None:
                self.store.removeOwnNode(role)
                continue
            node = self.store.ownNode(role, class_name, f"{level} {part}")
            if part == "plane":
                _set_plane(node, *shown)
            else:
                _set_points(node, shown, closed=class_name.endswith("ClosedCurveNode"), part=part)
            _style(node, CONCERN_COLOR if concerns and part in CONCERN_PARTS else PART_COLORS[part])
            node.SetAttribute(CONCERNS_ATTRIBUTE, concerns)
            self._file(node, folder)

    def remove(self, level: str) -> None:
        """Remove the level's placement nodes (only the module's own), and the folder once empty."""
        for part, _ in PLACEMENT_PARTS:
            self.store.removeOwnNode(placement_role(level, part))
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.store.scene)
        folder = self._findFolder(sh)
        if folder and _children(sh, folder) == []:
            sh.RemoveItem(folder, False, False)

    # --- subject hierarchy --------------------------------------------------------------------------
    def _findFolder(self, sh) -> int:
        for item in _children(sh, sh.GetSceneItemID()):
            if sh.GetItemAttribute(item, ROLE_ATTRIBUTE) == FOLDER_ROLE and sh.GetItemDataNode(item) is None:
                return item
        return 0

    def _folder(self) -> int:
        """The case's folder (made under the scene the first time)."""
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.store.scene)
        folder = self._findFolder(sh)
        if not folder:
            folder = sh.CreateFolderItem(sh.GetSceneItemID(), FOLDER_NAME)
            sh.SetItemAttribute(folder, ROLE_ATTRIBUTE, FOLDER_ROLE)
        return folder

    def _file(self, node, folder: int) -> None:
        # CreateItem reparents the node's existing item (made by Slicer for every node) or makes one
        # (vtkMRMLSubjectHierarchyNode::CreateItem, same at 5.6.2, 5.8.1 and 5.10.0)
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.store.scene)
        sh.CreateItem(folder, node)


def _children(sh, item: int) -> List[int]:
    ids = vtk.vtkIdList()
    sh.GetItemChildren(item, ids, False)
    return [ids.GetId(i) for i in range(ids.GetNumberOfIds())]


def _unlocked(node):
    """Unlock a node for the module's own update (locked nodes refuse new control points)."""
    node.SetLocked(0)
    node.SetFixedNumberOfControlPoints(False)


def _set_points(node, points: np.ndarray, *, closed: bool, part: str) -> None:
    """All control points in one call and one Modified event (a drag re-places a level many times)."""
    was_modifying = node.StartModify()
    try:
        _unlocked(node)
        if closed:
            node.SetCurveTypeToLinear()  # the drawn curve is the outline's polygon, not a spline through it
        vtk_points = vtk.vtkPoints()
        for p in np.asarray(points, dtype=float):
            vtk_points.InsertNextPoint(float(p[0]), float(p[1]), float(p[2]))
        node.SetControlPointPositionsWorld(vtk_points)  # adds or removes points to match
        if part == "AP axis":
            node.SetNthControlPointLabel(0, "posterior")
            node.SetNthControlPointLabel(1, "anterior")
        _lock(node)
    finally:
        node.EndModify(was_modifying)


def _lock(node) -> None:
    """Locked, fixed, and drawn as lines only: no control-point glyph to grab or to hide the CT."""
    for i in range(node.GetNumberOfControlPoints()):
        node.SetNthControlPointVisibility(i, False)
    node.SetFixedNumberOfControlPoints(True)
    node.SetLocked(1)


def _set_plane(node, origin, axes, size) -> None:
    was_modifying = node.StartModify()
    try:
        _unlocked(node)
        node.SetSizeMode(node.SizeModeAbsolute)
        node.SetOriginWorld([float(x) for x in origin])
        node.SetAxesWorld(*[[float(x) for x in a] for a in axes])
        node.SetSizeWorld(float(size[0]), float(size[1]))
        _lock(node)
    finally:
        node.EndModify(was_modifying)


def _style(node, colour) -> None:
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is None:
        return
    display.SetColor(*colour)
    display.SetSelectedColor(*colour)
    display.SetPointLabelsVisibility(False)
    display.SetPropertiesLabelVisibility(False)
    display.SetHandlesInteractive(False)
    display.SetFillVisibility(False)  # the plane as its outline: the CT stays visible through it
