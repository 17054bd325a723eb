"""OsteoROI's scene-level logic: MRML nodes in, editable ROI markups, a results table and a plot out.

Qt-free: it needs MRML (3D Slicer, or the ``slicer-core`` wheel, see ``mrmlscene``) but no GUI, so
the Slicer module's widget, the Python console and headless scripts share it. It takes its scene
from the nodes it is given (never from the ``slicer.mrmlScene`` global) and only converts between
MRML and ``OsteoROILib``'s plain data; every number comes from the Qt-free core
(``measure.measure_levels`` for placement, ``stats.roi_statistics`` for the statistics).

Workflow
--------
``OsteoROIMRMLLogic(scene).run(volumeNode, pointsNode)``:

1. the CT volume node becomes a :class:`~OsteoROILib.volume.Volume` (voxels copied, IJK→RAS
   including the node's parent transforms, which must be linear);
2. the point list's control points labelled L1…L4 (world coordinates) place the five seed-002
   ROIs of each level (``measure_levels``; QCT_BRIEF §1);
3. each ROI becomes a ``vtkMRMLMarkupsROINode`` the user can move, resize and rotate;
4. the table rows are measured **from the markups' geometry** (``roi_shape_from_node`` →
   ``roi_statistics``), so what is measured is exactly what is shown;
5. observers re-measure when an ROI is edited and re-place a level when its point moves
   (throttled through ``scheduler``); the table (``vtkMRMLTableNode``, column units) and the plot
   (``vtkMRMLPlotChartNode``: per-level bars and the criterion's thresholds) follow.

Markups type (the choice, and why)
----------------------------------
Every ROI is a ``vtkMRMLMarkupsROINode`` of type *Box*. Its object-to-node matrix gives the
in-plane axes (X = the body's anterior direction ``axis_u``, Y = the patient's left ``axis_v``,
Z = their cross product, the slice normal), its size gives ``2·half_u``, ``2·half_v`` and the **slab
thickness** — exactly the parameters of :class:`~OsteoROILib.geometry.RoiShape`, nothing
approximated. A *rectangle* ROI (front, left, right) is the box's cross-section; an *ellipse* ROI
(oval, round) is the ellipse inscribed in the box's cross-section (semi-axes = half sizes). The
ROI node's standard handles translate, rotate and resize it in the slice views while keeping it
a rectangle/ellipse. Rejected alternatives: a closed curve is drawn through control points the
user can drag one by one into a non-ellipse, and its interpolated curve is not an exact ellipse;
a plane node has no thickness, so it cannot carry the slab. So that the user *sees* the ellipse,
an ellipse ROI gets a derived, non-editable model (an elliptic band one slab thick whose
intersection with the slice is the ellipse), regenerated whenever its ROI changes.

Calibration
-----------
HU -> vBMD (``mrmlcalibration.CalibrationMixin``): rods of a phantom as a point list labelled by
rod name (placed by the user, or found by :meth:`autoDetectRods` into the module's own editable
list), reference tissues as a point list labelled air/adipose/muscle/blood/cortical_bone, a manual
line or a saved file. Rod and tissue lists are observed: an edit re-fits (throttled) and the vBMD
columns follow. The fit summary (slope, intercept, R², SEE, residuals, warnings) is in the state.
``run(..., calibration=KEEP_CALIBRATION)`` (the default) keeps the scene's calibration.

State and persistence
---------------------
All state is in the module's parameter node (``vtkMRMLScriptedModuleNode`` singleton tagged
"OsteoROI", the node ``ScriptedLoadableModuleLogic.getParameterNode()`` uses): node references to
the inputs and to the module's own nodes (ROIs, outlines, table, plot), and the JSON parameter
``OsteoROI.state`` (settings, per-level placement, exclusions, Genant grades, criterion,
calibration and the last measured rows at full precision). A scene saved as .mrml or .mrb and
loaded into a fresh scene gives the same points, ROIs and results: :meth:`attach` re-connects the
observers and rewrites the table from the stored rows (the table file itself keeps only six
significant digits).

Node ownership: the module creates and later reuses its own nodes (marked with the attribute
``OsteoROI.Role``); it never renames or removes a node it did not create.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from ..errors import InputError, OsteoROIError, OutputError
from ..roi.geometry import RoiShape
from ..io.markups_file import points_by_label
from .patient import dicom_facts_from_node
from .scene import placed_points
from ..placement.measure import LEVEL_NAMES, measure_levels, normalise_level, parse_shapes
from .calibration import (
    CALIBRATION_MODES,
    KEEP_CALIBRATION,
    LIVE_MODES,
    ROLE_CAL_VOLUME,
    TISSUE_LABELS,
    CalibrationMixin,
    calibration_fit_summary,
    format_calibration_summary,
)
from ..roi.family import SHAPE_NAMES
from ..roi.stats import roi_statistics
from ..io.volume import Volume, check_ct

__all__ = [
    "CALIBRATION_MODES",
    "KEEP_CALIBRATION",
    "TISSUE_LABELS",
    "calibration_fit_summary",
    "format_calibration_summary",
    "MODULE_NAME",
    "OsteoROIMRMLLogic",
    "TABLE_COLUMNS",
    "volume_from_node",
    "level_points_from_node",
    "roi_shape_from_node",
    "set_roi_node_geometry",
    "get_parameter_node",
]

MODULE_NAME = "OsteoROI"
STATE_PARAMETER = "OsteoROI.state"
STATE_VERSION = 1
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

#: The ROI kind of each seed-002 shape (roifamily.build_roi_family).
SHAPE_KINDS = {"oval": "ellipse", "round": "ellipse", "front": "rectangle", "left": "rectangle", "right": "rectangle"}
#: Display colours (RGB 0..1) of the shapes, shared by ROIs, outlines and plot bars.
SHAPE_COLORS = {
    "oval": (1.0, 0.55, 0.0),
    "round": (0.0, 0.75, 1.0),
    "front": (0.2, 0.85, 0.2),
    "left": (0.95, 0.25, 0.95),
    "right": (0.95, 0.9, 0.15),
}
GENANT_GRADES = (0, 1, 2, 3)  # QCT_BRIEF §3: 0 normal, 1 mild, 2 moderate, 3 severe; >= 1 is a fracture

#: Results table columns: (row key, column name, unit, description, type). Units use the
#: ``vtkMRMLTableNode`` column properties (shown by Slicer's table view).
#:
#: Undefined values (no NaN in a table). A value that can be undefined — every HU statistic of an
#: ROI that holds no voxel centre, the SD of a single voxel, vBMD without a mean, the vBMD SD of
#: a manual or two-rod calibration — is of type "optional": a ``vtkStringArray`` column whose
#: cell is EMPTY when the value is undefined (the Warnings column says why) and otherwise the
#: number exactly as Slicer shows a double column (``vtkVariant(value).ToString()``, six
#: significant digits). Why not a ``vtkDoubleArray``: a double cell can only hold NaN for
#: "undefined", and Slicer writes NaN as the text "nan" everywhere the user meets the table —
#: the table view (``qMRMLTableModel`` sets every cell's text from ``vtkVariant::ToString``),
#: the saved .tsv/.csv and copy-paste; it gains nothing in return, because the view sorts
#: cells by that text in either case. An empty cell is also what the CSV export and Slicer's
#: own table reader use for a missing value (column property ``nullValue`` = ""). Always-defined
#: values (voxel count, area, volume, slab) keep numeric columns. Full-precision values are in
#: :meth:`OsteoROIMRMLLogic.rows` (None when undefined) and in the JSON/CSV exports; in Python,
#: test a table cell with ``.ToString() == ""`` — ``vtkVariant("").ToDouble()`` is 0.0.
TABLE_COLUMNS: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("level", "Level", "", "Vertebral level (label of the control point).", "string"),
    ("shape", "ROI", "", "ROI type: oval, round, front, left or right (seed 002).", "string"),
    ("mean_hu", "Mean", "HU", "Mean attenuation of the voxels whose centre is inside the ROI; empty if none.",
     "optional"),
    ("sd_hu", "SD", "HU", "Sample standard deviation (ddof = 1); empty for a single voxel (undefined).", "optional"),
    ("median_hu", "Median", "HU", "Median attenuation; empty if the ROI holds no voxel.", "optional"),
    ("min_hu", "Min", "HU", "Lowest voxel value; empty if the ROI holds no voxel.", "optional"),
    ("max_hu", "Max", "HU", "Highest voxel value; empty if the ROI holds no voxel.", "optional"),
    ("p05_hu", "P5", "HU", "5th percentile; empty if the ROI holds no voxel.", "optional"),
    ("p95_hu", "P95", "HU", "95th percentile; empty if the ROI holds no voxel.", "optional"),
    ("n_voxels", "Voxels", "", "Number of voxels whose centre lies in the ROI.", "int"),
    ("area_mm2", "Area", "mm2", "Voxelised in-plane area (volume / slab thickness).", "double"),
    ("volume_mm3", "Volume", "mm3", "Number of voxels times the voxel volume.", "double"),
    ("slab_mm", "Slab", "mm", "ROI thickness along the slice normal.", "double"),
    ("vbmd_mg_cm3", "vBMD", "mg/cm3", "Volumetric BMD from the calibration; empty without a mean HU.", "optional"),
    ("vbmd_sd", "vBMD SD", "mg/cm3", "Standard error of the calibration at this HU; empty where the calibration "
     "has none (manual, two rods).", "optional"),
    ("excluded", "Excluded", "", "Level excluded from the summary (user choice or fracture).", "string"),
    ("genant_grade", "Genant", "", "Genant fracture grade of the level: 0-3, empty if not graded.", "string"),
    ("placement", "Placement", "", "How the ROI was placed; 'edited' when moved or resized by hand.", "string"),
    ("warnings", "Warnings", "", "Why a value is empty, and everything to check before using it.", "string"),
)

#: Columns shown only with a calibration.
CALIBRATION_COLUMNS = ("vbmd_mg_cm3", "vbmd_sd")

Scheduler = Callable[[Callable[[], None]], None]


# ------------------------------------------------------------------------------------------------
# MRML <-> OsteoROILib conversions
# ------------------------------------------------------------------------------------------------
def _matrix_to_world(node) -> Optional[np.ndarray]:
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
    to_world = _matrix_to_world(volumeNode)
    if to_world is not None:
        ijk_to_ras = to_world @ ijk_to_ras
    volume = Volume(array, ijk_to_ras, source=volumeNode.GetName(), facts=dicom_facts_from_node(volumeNode))
    check_ct(volume)
    return volume


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
    to_world = _matrix_to_world(roiNode)
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


def get_parameter_node(scene, create: bool = True):
    """The module's parameter node: the ``vtkMRMLScriptedModuleNode`` singleton tagged "OsteoROI"."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        node = slicer.vtkMRMLScriptedModuleNode()
        # As ScriptedLoadableModuleLogic.createParameterNode does, so that both find the same node.
        node.SetName(scene.GenerateUniqueName(MODULE_NAME))
        node.SetSingletonTag(MODULE_NAME)
        node.SetAttribute("ModuleName", MODULE_NAME)
        node = scene.AddNode(node)
    return node


def _ellipse_band_polydata(shape: RoiShape, n: int = 96):
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


def _set_column_title(tableNode, column: str, title: str) -> None:
    """Column title (``SetColumnTitle`` since Slicer 5.8; ``SetColumnLongName`` before)."""
    setter = getattr(tableNode, "SetColumnTitle", None) or tableNode.SetColumnLongName
    setter(column, title)


def _shape_signature(shape: RoiShape) -> Tuple[float, ...]:
    return tuple(shape.center) + tuple(shape.axis_u) + tuple(shape.axis_v) + (shape.half_u, shape.half_v, shape.slab_mm)


# ------------------------------------------------------------------------------------------------
# The logic
# ------------------------------------------------------------------------------------------------
def format_optional(value) -> str:
    """The text of an "optional" table cell: empty when undefined, else as Slicer shows a double."""
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return ""
    return vtk.vtkVariant(value).ToString()


class OsteoROIMRMLLogic(CalibrationMixin):
    """Scene-level OsteoROI logic (see the module docstring).

    ``scene`` — the MRML scene (in Slicer ``slicer.mrmlScene``); ``scheduler(callback)`` — how live
    updates are deferred: None runs them at once; the Slicer widget passes a single-shot Qt timer
    so that a drag re-measures at most once per timer period (throttling).
    ``onUpdate(logic)`` is called after every live update (e.g. to refresh a status line).
    """

    def __init__(self, scene, scheduler: Optional[Scheduler] = None, onUpdate: Optional[Callable] = None):
        if scene is None:
            raise InputError("No MRML scene was given.", "Pass the scene (slicer.mrmlScene in Slicer).")
        self.scene = scene
        self.scheduler = scheduler
        self.onUpdate = onUpdate
        self.lastError: Optional[str] = None
        self.updateCount = 0  # number of (re)measurements done; for tests and diagnostics
        self._observations: List[Tuple[Any, int]] = []
        self._volumes: Dict[str, Tuple[Tuple, Volume]] = {}  # node ID -> (geometry/image key, Volume)
        self._calibrationDirty = False
        self._dirtyRois: set = set()
        self._pointsDirty = False
        self._volumeDirty = False
        self._scheduled = False
        self._muted = 0
        self._signatures: Dict[Tuple[str, str], Tuple[float, ...]] = {}

    # --- parameter node and state ---------------------------------------------------------------
    @property
    def parameterNode(self):
        return get_parameter_node(self.scene)

    def state(self) -> Dict[str, Any]:
        """The module's state (a fresh default when the scene has no parameter node yet: reading
        the state never adds a node)."""
        node = get_parameter_node(self.scene, create=False)
        text = node.GetParameter(STATE_PARAMETER) if node is not None else ""
        if not text:
            return {"version": STATE_VERSION, "shapes": list(SHAPE_NAMES), "slab_mm": None, "levels": {},
                    "excluded": {}, "genant": {}, "criteria": None, "calibration": None, "rows": [],
                    "force": False, "calibration_source": {"mode": "none"}, "calibration_fit": None,
                    "calibration_error": None}
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise InputError(f"The scene's OsteoROI state has version {state.get('version')!r}, not {STATE_VERSION}.",
                             "Update OsteoROI to open this scene.")
        return state

    def _setState(self, state: Mapping[str, Any]) -> None:
        # repr-exact floats: json writes the shortest repr that round-trips.
        self.parameterNode.SetParameter(STATE_PARAMETER, json.dumps(state, allow_nan=False, sort_keys=True))

    def _ref(self, role: str):
        return self.parameterNode.GetNodeReference(role)

    def _setRef(self, role: str, node) -> None:
        self.parameterNode.SetNodeReferenceID(role, node.GetID() if node is not None else None)

    @staticmethod
    def roiRole(level: str, shape: str) -> str:
        return f"OsteoROI.roi.{level}.{shape}"

    @staticmethod
    def outlineRole(level: str, shape: str) -> str:
        return f"OsteoROI.outline.{level}.{shape}"

    # --- node access ------------------------------------------------------------------------------
    def volumeNode(self):
        return self._ref(ROLE_VOLUME)

    def pointsNode(self):
        return self._ref(ROLE_POINTS)

    def tableNode(self):
        return self._ref(ROLE_TABLE)

    def plotChartNode(self):
        return self._ref(ROLE_PLOT_CHART)

    def roiNode(self, level: str, shape: str):
        return self._ref(self.roiRole(level, shape))

    def roiNodes(self) -> Dict[Tuple[str, str], Any]:
        """``{(level, shape): ROI node}`` of the current levels and shapes."""
        state = self.state()
        out = {}
        for level in self._orderedLevels(state):
            for shape in state["shapes"]:
                node = self.roiNode(level, shape)
                if node is not None:
                    out[(level, shape)] = node
        return out

    @staticmethod
    def _orderedLevels(state) -> List[str]:
        return sorted(state["levels"], key=LEVEL_NAMES.index)

    def _ownNode(self, role: str, className: str, name: str):
        """The module's node for ``role``: the referenced one if it is still ours, else a new one."""
        node = self._ref(role)
        if node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == role and node.IsA(className):
            return node
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        self._setRef(role, node)
        return node

    def _removeOwnNode(self, role: str) -> None:
        node = self._ref(role)
        self._setRef(role, None)
        if node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == role:
            self.scene.RemoveNode(node)

    # --- inputs ------------------------------------------------------------------------------------
    def volume(self) -> Volume:
        """The input volume as a ``Volume`` (cached until the node, its image or its transform change)."""
        node = self.volumeNode()
        if node is None:
            raise InputError("No CT volume has been measured yet.", "Run the measurement first (logic.run).")
        return self._volumeOf(node)

    def _volumeOf(self, node) -> Volume:
        """``node`` as a ``Volume``, cached until its image or geometry change."""
        key = self._volumeKey(node)
        cached = self._volumes.get(node.GetID())
        if cached is None or cached[0] != key:
            if len(self._volumes) > 2:
                self._volumes.clear()
            cached = (key, volume_from_node(node))
            self._volumes[node.GetID()] = cached
        return cached[1]

    @staticmethod
    def _volumeKey(node) -> Tuple:
        image = node.GetImageData()
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        to_world = _matrix_to_world(node)
        return (node.GetID(), image.GetMTime() if image is not None else 0,
                tuple(slicer.util.arrayFromVTKMatrix(m).ravel()),
                None if to_world is None else tuple(to_world.ravel()))

    @staticmethod
    def loadCalibration(calibration):
        """A ``calibration.Calibration`` from one, its dict, or a saved calibration file; None stays None."""
        if calibration is None:
            return None
        from ..calibration import model as calibration_module

        if isinstance(calibration, calibration_module.Calibration):
            return calibration
        if isinstance(calibration, Mapping):
            return calibration_module.Calibration.from_dict(calibration)
        if isinstance(calibration, str):
            return calibration_module.load_calibration(calibration)
        raise InputError(f"Cannot use {calibration!r} as a calibration.",
                         "Give a Calibration, its dict, or the path of a saved calibration (.json).")

    @staticmethod
    def loadCriterion(criteria):
        """A validated criterion dict (``criteria.load_criterion``) or None."""
        if criteria is None or criteria == "":
            return None
        from ..diagnosis.criteria import load_criterion

        return load_criterion(criteria)

    # --- the main entry point ------------------------------------------------------------------------
    def run(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
            criteria=None, slabMm: Optional[float] = None, force: bool = False, tableNode=None,
            placements: Optional[Mapping[str, Any]] = None, extraWarnings: Optional[Sequence[str]] = None):
        """Place the ROIs of every labelled level, measure them and fill the table and the plot.

        ``shapes`` — ROI types (default all five); ``slabMm`` — ROI thickness, None or 0 = one slice;
        ``calibration`` — a ``Calibration`` (or its dict / file) to add vBMD, None for HU only; by
        default the scene's current calibration is kept (e.g. one fitted with
        :meth:`calibrateFromRods`, :meth:`autoDetectRods` or :meth:`calibrateFromTissues`); ``criteria`` — a
        criterion id or dict (``criteria.load_criterion``) whose thresholds the plot shows;
        ``tableNode`` — a table to fill instead of the module's own; ``placements`` —
        ``autoplace.Placement`` per level (from a segmentation) used instead of placing from the
        points. Returns the table node.
        Re-running reuses the module's nodes; the inputs are only read.
        """
        shape_names = parse_shapes(shapes)
        volume = volume_from_node(volumeNode)
        points = level_points_from_node(pointsNode)
        slab = None if slabMm is None or float(slabMm) == 0.0 else float(slabMm)
        previous = self.state()
        keep = calibration is KEEP_CALIBRATION
        cal = self._calibrationFromState(previous) if keep else self.loadCalibration(calibration)
        crit = self.loadCriterion(criteria)
        if crit is not None and crit.get("quantity") == "vbmd" and cal is None:
            raise InputError(f"The criterion {crit['id']!r} classifies vBMD, which needs a calibration.",
                             "Choose a calibration (phantom, saved, manual or internal) or an HU criterion.")
        # Validate and place everything before touching the scene: bad input leaves it unchanged.
        result = measure_levels(volume, points, shapes=shape_names, slab_mm=slab, force=force,
                                placements=placements, warnings=extraWarnings)
        self.detach()
        state = {
            "version": STATE_VERSION,
            "shapes": shape_names,
            "slab_mm": slab,
            "levels": {},
            "excluded": {k: v for k, v in previous.get("excluded", {}).items() if k in points},
            "genant": {k: v for k, v in previous.get("genant", {}).items() if k in points},
            "criteria": None if crit is None else crit["id"],
            "criterion": None if crit is None else {k: v for k, v in crit.items() if k != "_validated"},
            "rows": [],
            "force": bool(force),
            "notes": list(extraWarnings or []),
        }
        self._carryCalibration(state, previous, calibration, cal)
        self._setRef(ROLE_VOLUME, volumeNode)
        self._setRef(ROLE_POINTS, pointsNode)
        if tableNode is not None:
            self._setRef(ROLE_TABLE, tableNode)
        self._volumes[volumeNode.GetID()] = (self._volumeKey(volumeNode), volume)
        # Remove own ROIs of levels/shapes that are no longer measured.
        for level in previous.get("levels", {}):
            for shape in SHAPE_NAMES:
                if level not in points or shape not in shape_names:
                    self._removeOwnNode(self.roiRole(level, shape))
                    self._removeOwnNode(self.outlineRole(level, shape))
        self._applyPlacement(state, result)
        self._setState(state)
        self._measure(state)
        self.attach()
        return self.tableNode()

    def runFromSegmentation(self, volumeNode, segmentationNode, calibration=KEEP_CALIBRATION,
                            shapes: Optional[Sequence[str]] = None, criteria=None, slabMm: Optional[float] = None,
                            force: bool = False):
        """Place every level that has a segment (named e.g. "L1", "vertebrae_L1", "L2 vertebra") and measure.

        The mid-vertebral slice and outline come from ``segplacement.place_from_labels``; the
        levels' points go into the module's own point list "OsteoROI levels" (moving one later
        re-places that level from the click). Returns the table node.
        """
        from ..placement.labels import describe_missing, place_from_labels

        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("No vertebra segmentation is selected.",
                             "Select a segmentation whose segments are named by level (e.g. vertebrae_L1, L2).")
        volume = volume_from_node(volumeNode)
        labels, label_map = self._labelsFromSegmentation(segmentationNode, volumeNode)
        placements, missing = place_from_labels(volume, labels, label_map)
        notes = describe_missing(missing, label_map, segmentationNode.GetName())
        notes += [f"{level}: {segmentationNode.GetName()!r} has no segment named {level}; this level was not measured."
                  for level in ("L1", "L2", "L3", "L4") if level not in label_map]
        if not placements:
            raise InputError(f"No level could be placed from {segmentationNode.GetName()!r}.",
                             "Check that the segments cover the vertebral bodies of the CT.")
        pointsNode = self._ownNode(ROLE_SEG_POINTS, "vtkMRMLMarkupsFiducialNode", "OsteoROI levels")
        self._muted += 1
        try:
            pointsNode.RemoveAllControlPoints()  # the module's own list, refilled from the placements
            for level in sorted(placements, key=LEVEL_NAMES.index):
                pointsNode.AddControlPoint(*[float(x) for x in placements[level].point_ras], level)
        finally:
            self._muted -= 1
        return self.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                        slabMm=slabMm, force=force, placements=placements,
                        extraWarnings=notes)

    def _labelsFromSegmentation(self, segmentationNode, volumeNode) -> Tuple[np.ndarray, Dict[str, int]]:
        """A label array on the volume's grid and ``{level: label}`` from the segments' names."""
        import re

        segmentation = segmentationNode.GetSegmentation()
        ids = vtk.vtkStringArray()
        label_map: Dict[str, int] = {}
        for i in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(i)
            name = segmentation.GetSegment(segment_id).GetName().replace("_", " ")
            match = re.search(r"(?<![A-Za-z0-9])(T1[12]|L[1-5])(?![0-9])", name, flags=re.IGNORECASE)
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
        colorsBefore = set(self._colorTableIds())
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__OsteoROI_labels__")
        try:
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentationNode, ids, labelmap, volumeNode):
                raise InputError(f"The segments of {segmentationNode.GetName()!r} could not be resampled to the CT.",
                                 "Check that the segmentation overlaps the CT.")
            labels = np.array(slicer.util.arrayFromVolume(labelmap), copy=True)
        finally:
            display = labelmap.GetDisplayNode()
            self.scene.RemoveNode(labelmap)
            if display is not None and display.GetScene() is not None:
                self.scene.RemoveNode(display)
            # The export adds a colour table ("<segmentation>_ColorTable") for the temporary label map.
            for colorId in set(self._colorTableIds()) - colorsBefore:
                self.scene.RemoveNode(self.scene.GetNodeByID(colorId))
        volume_shape = slicer.util.arrayFromVolume(volumeNode).shape
        if labels.shape != volume_shape:
            raise InputError("The segmentation could not be resampled to the CT's grid.",
                             "Check the segmentation's geometry.")
        return labels, label_map

    def _colorTableIds(self) -> List[str]:
        nodes = self.scene.GetNodesByClass("vtkMRMLColorTableNode")
        return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]

    def watch(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
              criteria=None, slabMm: Optional[float] = None, force: bool = False):
        """Measure as points are placed: like :meth:`run`, but the point list may still be empty.

        Every level placed later (e.g. with the module's "Place L1" button) is measured as soon as
        its point is defined. Returns the table node (rows for the points already placed).
        """
        volume_from_node(volumeNode)  # refuse a bad volume now
        if pointsNode is None:
            raise InputError("No level point list is given.", "Create or select a point list for the levels.")
        if any(pointsNode.GetNthControlPointPositionStatus(i) == pointsNode.PositionDefined
               for i in range(pointsNode.GetNumberOfControlPoints())):
            return self.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                            slabMm=slabMm, force=force)
        previous = self.state()
        keep = calibration is KEEP_CALIBRATION
        cal = self._calibrationFromState(previous) if keep else self.loadCalibration(calibration)
        crit = self.loadCriterion(criteria)
        self.detach()
        for level in previous.get("levels", {}):
            for shape in SHAPE_NAMES:
                self._removeOwnNode(self.roiRole(level, shape))
                self._removeOwnNode(self.outlineRole(level, shape))
        self._setRef(ROLE_VOLUME, volumeNode)
        self._setRef(ROLE_POINTS, pointsNode)
        state = {
            "version": STATE_VERSION, "shapes": parse_shapes(shapes),
            "slab_mm": None if slabMm is None or float(slabMm) == 0.0 else float(slabMm),
            "levels": {}, "excluded": {}, "genant": {},
            "criteria": None if crit is None else crit["id"],
            "criterion": None if crit is None else {k: v for k, v in crit.items() if k != "_validated"},
            "rows": [], "force": bool(force), "notes": [],
        }
        self._carryCalibration(state, previous, calibration, cal)
        self._setState(state)
        self._measure(state)
        self.attach()
        return self.tableNode()

    def _carryCalibration(self, state: Dict[str, Any], previous: Mapping[str, Any], given, cal) -> None:
        """Put the calibration of a (re-)run in ``state``: the previous one kept, or the given one."""
        if given is KEEP_CALIBRATION:
            for key in ("calibration", "calibration_source", "calibration_fit", "calibration_error"):
                state[key] = previous.get(key)
            state.setdefault("calibration_source", {"mode": "none"})
            if state["calibration_source"] is None:
                state["calibration_source"] = {"mode": "none"}
        else:
            path = given if isinstance(given, str) else None
            self._storeCalibration(state, cal, self._sourceOf(cal, path),
                                   self._scannerWarnings(cal) if path and cal is not None else ())

    def _applyPlacement(self, state: Dict[str, Any], result: Mapping[str, Any]) -> None:
        """Store the levels' placement and make the ROI nodes show the placed shapes."""
        self._muted += 1
        try:
            for level, info in result["levels"].items():
                info = dict(info)
                info["placed"] = {}
                state["levels"][level] = info
            for row in result["rows"]:
                level, shape_name = row["level"], row["shape"]
                roi = row["roi"]
                shape = RoiShape(roi["kind"], roi["center_ras"], roi["axis_u_ras"], roi["axis_v_ras"],
                                 roi["half_u_mm"], roi["half_v_mm"], roi["slab_mm"], name=shape_name)
                node = self._roiNodeFor(level, shape_name)
                set_roi_node_geometry(node, shape)
                placed = roi_shape_from_node(node)  # as the node stores it (float control points)
                state["levels"][level]["placed"][shape_name] = list(_shape_signature(placed))
                self._updateOutline(level, shape_name, placed)
        finally:
            self._muted -= 1

    def _roiNodeFor(self, level: str, shape: str):
        role = self.roiRole(level, shape)
        node = self._ownNode(role, "vtkMRMLMarkupsROINode", f"{level} {shape}")
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

    def _updateOutline(self, level: str, shape_name: str, shape: RoiShape) -> None:
        if SHAPE_KINDS.get(shape_name) != "ellipse":
            return
        role = self.outlineRole(level, shape_name)
        model = self._ownNode(role, "vtkMRMLModelNode", f"{level} {shape_name} outline")
        model.SetAndObservePolyData(_ellipse_band_polydata(shape))
        if model.GetDisplayNode() is None:
            model.CreateDefaultDisplayNodes()
            display = model.GetDisplayNode()
            display.SetColor(*SHAPE_COLORS[shape_name])
            display.SetOpacity(0.3)
            display.SetVisibility2D(True)
            display.SetSliceIntersectionThickness(2)

    # --- measurement from the markups ---------------------------------------------------------------
    def _measure(self, state: Dict[str, Any], only: Optional[set] = None) -> List[Dict[str, Any]]:
        """Measure the ROI nodes (all, or the (level, shape) pairs in ``only``); update table and plot."""
        volume = self.volume()
        old = {(r["level"], r["shape"]): r for r in state.get("rows", [])}
        rows = []
        for level in self._orderedLevels(state):
            info = state["levels"][level]
            for shape_name in state["shapes"]:
                key = (level, shape_name)
                node = self.roiNode(level, shape_name)
                if node is None:
                    continue
                if only is not None and key not in only and key in old:
                    rows.append(old[key])
                    continue
                shape = roi_shape_from_node(node, SHAPE_KINDS[shape_name], shape_name)
                rows.append(self._row(volume, level, shape_name, shape, info))
                self._signatures[key] = _shape_signature(shape)
        rows = self._annotate(rows, state)
        state["rows"] = rows
        self._setState(state)
        self._writeTable(rows, state)
        self._writePlot(rows, state)
        self.updateCount += 1
        return rows

    @staticmethod
    def _row(volume: Volume, level: str, shape_name: str, shape: RoiShape, info: Mapping[str, Any]) -> Dict[str, Any]:
        stats = roi_statistics(volume, shape)
        stat_warnings = [f"{level}: {w}" for w in stats.pop("warnings")]
        placed = info.get("placed", {}).get(shape_name)
        edited = placed is not None and not np.allclose(placed, _shape_signature(shape), rtol=0, atol=1e-6)
        row: Dict[str, Any] = {"level": level, "shape": shape_name}
        row.update(stats)
        row.update({
            "nominal_area_mm2": shape.nominal_area_mm2,
            "center_ras": [float(x) for x in shape.center],
            "slice_index": volume.nearest_slice_index(shape.center),
            "slab_mm": shape.slab_mm,
            "placement": str(info.get("placement", "")) + (" (edited)" if edited else ""),
            "roi": {"kind": shape.kind, "center_ras": list(shape.center), "axis_u_ras": list(shape.axis_u),
                    "axis_v_ras": list(shape.axis_v), "half_u_mm": shape.half_u, "half_v_mm": shape.half_v,
                    "slab_mm": shape.slab_mm},
            "warnings": list(info.get("warnings", [])) + stat_warnings,
        })
        return row

    def _annotate(self, rows: List[Dict[str, Any]], state: Mapping[str, Any]) -> List[Dict[str, Any]]:
        """Exclusion, Genant grade and (with a calibration) vBMD of each row."""
        out = []
        for r in rows:
            r = {k: v for k, v in r.items() if k not in ("vbmd_mg_cm3", "vbmd_unit", "vbmd_sd", "excluded",
                                                         "exclusion_reason", "genant_grade")}
            base = [w for w in r.get("warnings", []) if not w.startswith(f"{r['level']}: excluded")
                    and "vbmd" not in w.lower() and "vBMD" not in w]
            r["warnings"] = base
            level = r["level"]
            grade = state["genant"].get(level)
            reason = state["excluded"].get(level)
            if reason is None and grade is not None and int(grade) >= 1:
                reason = f"Genant grade {grade} fracture (QCT_BRIEF §3: a fractured vertebra is replaced)"
            r["genant_grade"] = None if grade is None else int(grade)
            r["excluded"] = reason is not None
            r["exclusion_reason"] = reason
            if reason is not None:
                r["warnings"].append(f"{level}: excluded from the summary: {reason}.")
            out.append(r)
        cal = self._calibrationFromState(state)
        if cal is not None:
            from ..calibration.model import apply_calibration

            out = apply_calibration(out, cal)
        return out

    # --- table ----------------------------------------------------------------------------------------
    def _writeTable(self, rows: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
        tableNode = self._ownTable()
        calibrated = bool(state.get("calibration"))
        unit = rows[0].get("vbmd_unit", "mg/cm3") if rows and calibrated else "mg/cm3"
        wasModifying = tableNode.StartModify()
        try:
            tableNode.RemoveAllColumns()
            for key, name, colUnit, description, kind in TABLE_COLUMNS:
                if key in CALIBRATION_COLUMNS:
                    if not calibrated:
                        continue
                    colUnit = unit
                column = {"string": vtk.vtkStringArray, "optional": vtk.vtkStringArray,
                          "int": vtk.vtkIntArray}.get(kind, vtk.vtkDoubleArray)()
                column.SetName(name)
                for row in rows:
                    value = row.get(key)
                    if key == "excluded":
                        value = "yes" if value else ""
                    if key == "warnings":
                        value = " | ".join(value or [])
                    if kind == "string":
                        column.InsertNextValue("" if value is None else str(value))
                    elif kind == "optional":  # empty when undefined: see TABLE_COLUMNS
                        column.InsertNextValue(format_optional(value))
                    elif kind == "int":
                        column.InsertNextValue(int(value))
                    else:
                        column.InsertNextValue(float(value))
                tableNode.AddColumn(column)
                tableNode.SetColumnUnitLabel(name, colUnit)
                tableNode.SetColumnDescription(name, description)
                if kind == "optional":
                    tableNode.SetColumnNullValue(name, "")
                _set_column_title(tableNode, name, f"{name} ({colUnit})" if colUnit else name)
        finally:
            tableNode.EndModify(wasModifying)

    def _ownTable(self):
        node = self._ref(ROLE_TABLE)
        if node is not None and node.IsA("vtkMRMLTableNode"):
            return node  # the module's own table, or one the user chose to receive the results
        return self._ownNode(ROLE_TABLE, "vtkMRMLTableNode", "OsteoROI results")

    # --- plot -------------------------------------------------------------------------------------------
    def thresholds(self, state: Optional[Mapping[str, Any]] = None) -> List[Tuple[str, float]]:
        """``[(label, value)]`` band boundaries of the state's criterion for its first measured shape."""
        state = state or self.state()
        crit = state.get("criterion")
        if not crit:
            return []
        by_shape = crit.get("bands_by_shape", {})
        shape = next((s for s in state["shapes"] if s in by_shape), None)
        if shape is None:
            return []
        out = []
        unit = crit.get("unit", "")
        for band in by_shape[shape]:
            upper = band.get("upper")
            if upper is not None:
                sign = "\u2264" if band.get("upper_inclusive") else "<"
                label = (f"{crit.get('short_title', crit['id'])} ({shape}): "
                         f"{band.get('label', band.get('class', ''))} {sign} {float(upper):g} {unit}").strip()
                out.append((label, float(upper)))
        return out

    def _writePlot(self, rows: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
        crit = state.get("criterion") or {}
        useVbmd = crit.get("quantity") == "vbmd" and bool(state.get("calibration"))
        key = "vbmd_mg_cm3" if useVbmd else "mean_hu"
        yTitle = f"vBMD ({rows[0].get('vbmd_unit', 'mg/cm3')})" if useVbmd and rows else "Mean (HU)"
        levels = [lv for lv in self._orderedLevels(state)
                  if not any(r["level"] == lv and r.get("excluded") for r in rows)]
        plotTable = self._ownNode(ROLE_PLOT_TABLE, "vtkMRMLTableNode", "OsteoROI plot data")
        wasModifying = plotTable.StartModify()
        try:
            plotTable.RemoveAllColumns()
            names = vtk.vtkStringArray()
            names.SetName("Level")
            index = vtk.vtkDoubleArray()
            index.SetName("Index")
            for i, lv in enumerate(levels):
                names.InsertNextValue(lv)
                index.InsertNextValue(float(i))
            plotTable.AddColumn(names)
            plotTable.AddColumn(index)
            for shape in state["shapes"]:
                col = vtk.vtkDoubleArray()
                col.SetName(shape)
                for lv in levels:
                    value = next((r.get(key) for r in rows if r["level"] == lv and r["shape"] == shape), None)
                    col.InsertNextValue(float("nan") if value is None else float(value))
                plotTable.AddColumn(col)
        finally:
            plotTable.EndModify(wasModifying)
        thresholds = self.thresholds(state) if (crit.get("quantity") == "vbmd") == useVbmd else []
        thresholdTable = self._ownNode(ROLE_THRESHOLD_TABLE, "vtkMRMLTableNode", "OsteoROI thresholds")
        wasModifying = thresholdTable.StartModify()
        try:
            thresholdTable.RemoveAllColumns()
            x = vtk.vtkDoubleArray()
            x.SetName("Index")
            for v in (-0.5, max(len(levels), 1) - 0.5):
                x.InsertNextValue(v)
            thresholdTable.AddColumn(x)
            for i, (label, value) in enumerate(thresholds):
                col = vtk.vtkDoubleArray()
                col.SetName(f"threshold{i}")
                col.InsertNextValue(value)
                col.InsertNextValue(value)
                thresholdTable.AddColumn(col)
                _set_column_title(thresholdTable, f"threshold{i}", label)
        finally:
            thresholdTable.EndModify(wasModifying)

        chart = self._ownNode(ROLE_PLOT_CHART, "vtkMRMLPlotChartNode", "OsteoROI chart")
        chart.SetTitle("OsteoROI: " + ("vBMD" if useVbmd else "trabecular attenuation") + " per level")
        chart.SetXAxisTitle("Vertebral level (" + ", ".join(levels) + ")")
        chart.SetYAxisTitle(yTitle)
        wanted = []
        for shape in state["shapes"]:
            series = self._ownNode(f"OsteoROI.plotSeries.{shape}", "vtkMRMLPlotSeriesNode", f"OsteoROI {shape}")
            series.SetAndObserveTableNodeID(plotTable.GetID())
            series.SetPlotType(series.PlotTypeBar)
            series.SetXColumnName("Index")
            series.SetYColumnName(shape)
            series.SetLabelColumnName("Level")
            series.SetColor(*SHAPE_COLORS[shape])
            wanted.append(series)
        for i, (label, _value) in enumerate(thresholds):
            series = self._ownNode(f"OsteoROI.plotSeries.threshold{i}", "vtkMRMLPlotSeriesNode", "OsteoROI threshold")
            if series.GetName() != label:
                series.SetName(label)  # the module's own node: its name is the threshold's label
            series.SetAndObserveTableNodeID(thresholdTable.GetID())
            series.SetPlotType(series.PlotTypeLine)
            series.SetXColumnName("Index")
            series.SetYColumnName(f"threshold{i}")
            series.SetLineStyle(series.LineStyleDash)
            series.SetMarkerStyle(series.MarkerStyleNone)
            series.SetColor(0.8, 0.1, 0.1)
            wanted.append(series)
        for shape in SHAPE_NAMES:
            if shape not in state["shapes"]:
                self._removeOwnNode(f"OsteoROI.plotSeries.{shape}")
        for i in range(len(thresholds), 8):
            self._removeOwnNode(f"OsteoROI.plotSeries.threshold{i}")
        wantedIds = [s.GetID() for s in wanted]
        if [chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())] != wantedIds:
            chart.RemoveAllPlotSeriesNodeIDs()
            for sid in wantedIds:
                chart.AddAndObservePlotSeriesNodeID(sid)

    # --- user edits of the state ---------------------------------------------------------------------
    def setExcluded(self, level: str, excluded: bool, reason: str = "excluded by the user") -> None:
        """Exclude a level from the summary (e.g. osteophytes, bone island, artefact) or include it again."""
        level = normalise_level(level)
        state = self.state()
        if excluded:
            state["excluded"][level] = reason or "excluded by the user"
        else:
            state["excluded"].pop(level, None)
        self._setState(state)
        self._reannotate(state)

    def setGenantGrade(self, level: str, grade: Optional[int]) -> None:
        """Set the Genant fracture grade (0-3) of a level, or None for not graded. Grade >= 1 excludes it."""
        level = normalise_level(level)
        if grade is not None and (isinstance(grade, bool) or int(grade) not in GENANT_GRADES or int(grade) != grade):
            raise InputError(f"The Genant grade must be 0, 1, 2 or 3, got {grade!r}.",
                             "0 normal, 1 mild, 2 moderate, 3 severe (QCT_BRIEF §3); None for not graded.")
        state = self.state()
        if grade is None:
            state["genant"].pop(level, None)
        else:
            state["genant"][level] = int(grade)
        self._setState(state)
        self._reannotate(state)

    def setCriteria(self, criteria) -> None:
        crit = self.loadCriterion(criteria)
        state = self.state()
        state["criteria"] = None if crit is None else crit["id"]
        state["criterion"] = None if crit is None else {k: v for k, v in crit.items() if k != "_validated"}
        self._setState(state)
        self._reannotate(state)

    def _reannotate(self, state: Dict[str, Any]) -> None:
        rows = self._annotate(state.get("rows", []), state)
        state["rows"] = rows
        self._setState(state)
        if rows or self.tableNode() is not None:
            self._writeTable(rows, state)
            self._writePlot(rows, state)

    def rows(self) -> List[Dict[str, Any]]:
        """The current result rows (one per level and ROI type), as stored in the parameter node."""
        return list(self.state().get("rows", []))

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Per ROI type: mean of the level means over the included levels, and which levels."""
        out: Dict[str, Dict[str, Any]] = {}
        state = self.state()
        for shape in state["shapes"]:
            used = [r for r in state.get("rows", []) if r["shape"] == shape and not r.get("excluded")
                    and r.get("mean_hu") is not None]
            out[shape] = {
                "levels": [r["level"] for r in used],
                "mean_hu": float(np.mean([r["mean_hu"] for r in used])) if used else None,
            }
        return out

    # --- live updates -----------------------------------------------------------------------------------
    def attach(self) -> None:
        """Observe the inputs and the ROI nodes; after loading a scene, also restore the table and plot."""
        self._reobserve()
        state = self.state()
        # Restore the table and the plot from the stored rows (full precision).
        if state.get("rows"):
            self._writeTable(state["rows"], state)
            self._writePlot(state["rows"], state)

    def _reobserve(self) -> None:
        """(Re-)connect the observers of the inputs, the ROI nodes and a live calibration's points."""
        self.detach()
        for (level, shape), node in self.roiNodes().items():
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, vtk.vtkCommand.ModifiedEvent,
                          slicer.vtkMRMLTransformableNode.TransformModifiedEvent):
                self._observe(node, event, lambda caller, event, key=(level, shape): self._onRoiModified(key))
            self._signatures[(level, shape)] = _shape_signature(roi_shape_from_node(node, SHAPE_KINDS[shape], shape))
        points = self.pointsNode()
        if points is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                          slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
                          slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                          slicer.vtkMRMLTransformableNode.TransformModifiedEvent):
                self._observe(points, event, lambda caller, event: self._onPointsModified())
        volumeNode = self.volumeNode()
        if volumeNode is not None:
            for event in (slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent,
                          slicer.vtkMRMLTransformableNode.TransformModifiedEvent):
                self._observe(volumeNode, event, lambda caller, event: self._onVolumeModified())
        self._observeCalibration()

    def detach(self) -> None:
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        self._observations = []

    def _observe(self, obj, event, callback) -> None:
        self._observations.append((obj, obj.AddObserver(event, callback)))

    def _onRoiModified(self, key) -> None:
        if self._muted:
            return
        node = self.roiNode(*key)
        if node is None:
            return
        sig = _shape_signature(roi_shape_from_node(node, SHAPE_KINDS[key[1]], key[1]))
        if self._signatures.get(key) == sig:
            return  # display/selection change, not geometry
        self._signatures[key] = sig
        level, shape = key
        try:
            self._updateOutline(level, shape, roi_shape_from_node(node, SHAPE_KINDS[shape], shape))
        except OsteoROIError:
            pass
        self._dirtyRois.add(key)
        self._schedule()

    def _onPointsModified(self) -> None:
        if self._muted:
            return
        self._pointsDirty = True
        self._schedule()

    def _onVolumeModified(self) -> None:
        if self._muted:
            return
        self._volumeDirty = True
        source = self.state().get("calibration_source") or {}
        calibrationVolume = self._ref(ROLE_CAL_VOLUME)
        if source.get("mode") in LIVE_MODES and (calibrationVolume is None
                                                 or calibrationVolume is self.volumeNode()):
            self._calibrationDirty = True
        self._schedule()

    def _schedule(self) -> None:
        if self.scheduler is None:
            self.processPendingUpdates()
        elif not self._scheduled:
            self._scheduled = True
            self.scheduler(self.processPendingUpdates)

    def processPendingUpdates(self) -> None:
        """Apply the edits observed since the last update (the scheduler calls this)."""
        self._scheduled = False
        dirtyRois, self._dirtyRois = self._dirtyRois, set()
        pointsDirty, self._pointsDirty = self._pointsDirty, False
        volumeDirty, self._volumeDirty = self._volumeDirty, False
        calibrationDirty, self._calibrationDirty = self._calibrationDirty, False
        if not (dirtyRois or pointsDirty or volumeDirty or calibrationDirty):
            return
        try:
            self.lastError = None
            if calibrationDirty:
                self._refitCalibration()  # a failure clears the calibration and sets lastError
            if pointsDirty:
                self._replaceMovedLevels()
            elif volumeDirty:
                self._measure(self.state())
            elif dirtyRois:
                self._measure(self.state(), only=dirtyRois)
            else:
                self._reannotate(self.state())
        except OsteoROIError as exc:
            self.lastError = str(exc)
            logging.warning("OsteoROI: %s", exc)
        if self.onUpdate is not None:
            self.onUpdate(self)

    def _replaceMovedLevels(self) -> None:
        """Re-place the levels whose point moved, was added or removed; keep the other levels' ROIs."""
        state = self.state()
        points = level_points_from_node(self.pointsNode())
        changed = {lv: p for lv, p in points.items()
                   if lv not in state["levels"]
                   or not np.allclose(state["levels"][lv]["point_ras"], p, rtol=0, atol=1e-3)}
        removed = [lv for lv in state["levels"] if lv not in points]
        if not changed and not removed:
            self._measure(state)
            return
        self.detach()
        try:
            for level in removed:
                state["levels"].pop(level)
                for shape in SHAPE_NAMES:
                    self._removeOwnNode(self.roiRole(level, shape))
                    self._removeOwnNode(self.outlineRole(level, shape))
            if changed:
                result = measure_levels(self.volume(), changed, shapes=state["shapes"], slab_mm=state["slab_mm"],
                                        force=state.get("force", False))
                self._applyPlacement(state, result)
            self._setState(state)
            self._measure(state)
        finally:
            self.attach()

    # --- exports ------------------------------------------------------------------------------------------
    def document(self) -> Dict[str, Any]:
        """The result as an ``osteoroi-measurement/1`` document (``results.build_document``)."""
        from ..export.measurement import build_document

        state = self.state()
        if not state.get("rows"):
            raise OutputError("There are no results to export.", "Measure first.")
        volume = self.volume()
        levels = {lv: {k: v for k, v in info.items() if k != "placed"} for lv, info in state["levels"].items()}
        slab = state["slab_mm"] if state["slab_mm"] else volume.slice_spacing()
        warnings = list(state.get("notes", []))
        warnings += sorted({w for r in state["rows"] for w in r.get("warnings", [])} - set(warnings))
        measurement = {"rows": state["rows"], "levels": levels, "shapes": state["shapes"], "slab_mm": slab,
                       "warnings": warnings}
        extra: Dict[str, Any] = {}
        cal = self._calibrationFromState(state)
        if cal is not None:
            from ..calibration.model import calibration_summary

            extra["calibration"] = calibration_summary(cal)
            for w in (state.get("calibration_fit") or {}).get("warnings", []):
                if w not in warnings:
                    warnings.append(w)
        return build_document(measurement, volume.describe(), command="3D Slicer OsteoROI module", extra=extra)

    def diagnosisExclusions(self) -> Dict[str, List[Dict[str, Any]]]:
        """The state's exclusions and Genant grades in ``diagnosis.normalize_exclusions`` form."""
        state = self.state()
        out: Dict[str, List[Dict[str, Any]]] = {}
        for level, grade in state.get("genant", {}).items():
            if grade is not None and int(grade) >= 1:
                out.setdefault(level, []).append({"reason": "fracture", "grade": int(grade)})
        for level, reason in state.get("excluded", {}).items():
            out.setdefault(level, []).append({"reason": "manual", "note": str(reason)})
        return out

    def exportReport(self, htmlPath: str, overwrite: bool = False) -> List[str]:
        """Write the self-contained HTML report (``report.write_report``) of the current results."""
        from ..diagnosis.verdict import build_diagnosis
        from ..export.html_report import write_report

        doc = self.document()
        state = self.state()
        criteria = [state["criterion"]] if state.get("criterion") else None
        diagnosis = build_diagnosis(doc, criteria=criteria, exclusions=self.diagnosisExclusions())
        return write_report(diagnosis, doc, html_path=htmlPath, volume=self.volume(), overwrite=overwrite)

    def exportResults(self, jsonPath: Optional[str] = None, csvPath: Optional[str] = None,
                      overwrite: bool = False) -> List[str]:
        """Write the JSON document and/or the CSV table atomically; refuses to replace files unless asked."""
        from ..io.outputs import check_output_paths, write_atomically
        from ..export.measurement import ROW_COLUMNS, to_csv_text, to_json_text

        paths = check_output_paths([p for p in (jsonPath, csvPath) if p], overwrite=overwrite)
        doc = self.document()
        outputs = {}
        if jsonPath:
            outputs[paths[0]] = to_json_text(doc)
        if csvPath:
            columns = ROW_COLUMNS + (("excluded", "genant_grade")
                                     + (("vbmd_mg_cm3", "vbmd_sd", "vbmd_unit") if doc.get("calibration") else ()))
            outputs[paths[-1]] = to_csv_text(doc["rows"], columns=columns)
        write_atomically(outputs)
        return list(outputs)
