"""OsteoROI: trabecular attenuation (HU) of lumbar vertebrae on CT, measured with standardized ROIs.

This is the 3D Slicer scripted module (module, parameter node, widget, logic, self-test). It is
imported only inside Slicer. All computation lives in the Qt-free package ``OsteoROILib`` next to
this file, which the command line (``python -m OsteoROILib``) and scripts share; the logic below
only converts MRML nodes to and from that package's plain data.
"""
from __future__ import annotations

import logging
from typing import Annotated, Dict, List, Optional, Sequence, Tuple

import numpy as np
import vtk

import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from OsteoROILib import __version__
from OsteoROILib.errors import InputError
from OsteoROILib.markups import points_by_label
from OsteoROILib.measure import measure_levels
from OsteoROILib.roifamily import SHAPE_NAMES
from OsteoROILib.volume import Volume, check_ct

#
# OsteoROI
#


class OsteoROI(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel (Help & Acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("OsteoROI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["OsteoROI contributors (https://github.com/osteoroi/SlicerOsteoROI)"]
        self.parent.helpText = _("""
<p>OsteoROI measures the trabecular attenuation (Hounsfield units) of the lumbar vertebrae L1&ndash;L4
on CT, for opportunistic osteoporosis screening and, with a calibration phantom, QCT volumetric BMD.</p>
<p><b>How:</b> place one point inside each vertebral body (a Markups point list) and label the points
with their level (L1, L2, L3, L4). For each level OsteoROI finds the body on the axial slice through the
point and places the standardized ROIs in the anterior two thirds of the body, excluding the cortex and
the posterior venous plexus: <i>oval</i>, <i>round</i>, <i>front</i>, <i>left</i>, <i>right</i>.
The results table has one row per level and ROI: mean, SD and median HU, number of voxels and area.</p>
<p><b>Clinical context:</b> published HU cut-offs hold for 120 kV non-contrast CT and for the ROI type they
were derived with; other kV or contrast phases shift HU. HU is a screening measure, not a DXA T-score or a
diagnosis; check every ROI for osteophytes, fractures, bone islands and artefacts before using a value.</p>
<p><b>Python console:</b><br>
<code>logic = slicer.util.getModuleLogic("OsteoROI")</code><br>
<code>result, table = logic.process(volumeNode, pointsNode, shapes=["oval", "round"], slabMm=0)</code><br>
(<code>slabMm=0</code>: one slice; <code>result["rows"]</code> holds the measurements as dicts).
Outside Slicer: <code>python -m OsteoROILib measure ct.nrrd --points points.mrk.json</code>.</p>
<p>See the <a href="https://github.com/osteoroi/SlicerOsteoROI#readme">README</a> for details,
the ROI definitions and their sources.</p>
""")
        self.parent.acknowledgementText = _("""
ROI definitions follow the round/oval/front/left/right ROI study of L1&ndash;L4 trabecular HU; QCT
categories follow the ACR&ndash;SPR&ndash;SSR and ISCD criteria. Built on 3D Slicer, VTK, SimpleITK and NumPy.
""")


#
# OsteoROIParameterNode
#


@parameterNodeWrapper
class OsteoROIParameterNode:
    """The module's parameters, saved with the scene.

    inputVolume - the CT volume (HU).
    inputPoints - point list, one point inside each vertebral body, labelled L1, L2, ...
    slabMm - ROI thickness along the slice normal in mm; 0 means one slice (the slice spacing).
    shapeOval ... shapeRight - which ROI shapes to measure.
    outputTable - table to fill with the results (a new one is created when empty).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputPoints: vtkMRMLMarkupsFiducialNode
    slabMm: Annotated[float, WithinRange(0.0, 50.0)] = 0.0
    shapeOval: bool = True
    shapeRound: bool = True
    shapeFront: bool = True
    shapeLeft: bool = True
    shapeRight: bool = True
    outputTable: vtkMRMLTableNode


#: Parameter-node member for each ROI shape of ``OsteoROILib.roifamily.SHAPE_NAMES``.
SHAPE_PARAMETERS = {
    "oval": "shapeOval",
    "round": "shapeRound",
    "front": "shapeFront",
    "left": "shapeLeft",
    "right": "shapeRight",
}


#
# OsteoROIWidget
#


class OsteoROIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Minimal GUI: inputs, ROI shapes, slab thickness, output table and one Measure button."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        # The .ui file is in the extension's Resources/UI folder, copied to <module dir>/Resources/UI.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OsteoROI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # MRML widgets get the scene through the "mrmlSceneChanged(vtkMRMLScene*)" connections of the .ui.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = OsteoROILogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[OsteoROIParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if not (p and p.inputVolume and p.inputPoints):
            self.ui.applyButton.toolTip = _("Select a CT volume and a point list with points labelled L1, L2, ...")
            self.ui.applyButton.enabled = False
        elif not self.logic.shapesFromParameterNode(p):
            self.ui.applyButton.toolTip = _("Select at least one ROI shape.")
            self.ui.applyButton.enabled = False
        else:
            self.ui.applyButton.toolTip = _("Place the ROIs and measure every labelled level.")
            self.ui.applyButton.enabled = True

    def onApplyButton(self) -> None:
        """Measure, fill the output table and show it."""
        self.ui.statusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not measure."), waitCursor=True):
            p = self._parameterNode
            result, tableNode = self.logic.process(
                p.inputVolume,
                p.inputPoints,
                shapes=self.logic.shapesFromParameterNode(p),
                slabMm=p.slabMm,
                tableNode=p.outputTable,
            )
            p.outputTable = tableNode
            self.logic.showTable(tableNode)
            lines = [_("{count} measurements.").format(count=len(result["rows"]))]
            lines += [f"\u26a0 {w}" for w in result.get("warnings", [])]
            self.ui.statusLabel.text = "\n".join(lines)


#
# OsteoROILogic
#


class OsteoROILogic(ScriptedLoadableModuleLogic):
    """MRML in, MRML out; everything in between is ``OsteoROILib``.

    Usable without the GUI (Python console, scripts). It never deletes or renames the user's
    nodes: it reads the volume and the point list and writes only the output table.
    """

    #: Table columns: (row key, column name, unit, description, value type).
    TABLE_COLUMNS: Tuple[Tuple[str, str, str, str, str], ...] = (
        ("level", "Level", "", "Vertebral level (label of the control point).", "string"),
        ("shape", "ROI", "", "ROI shape: oval, round, front, left or right.", "string"),
        ("mean_hu", "Mean", "HU", "Mean attenuation of the voxels in the ROI.", "double"),
        ("sd_hu", "SD", "HU", "Sample standard deviation (ddof = 1) of the voxels in the ROI.", "double"),
        ("median_hu", "Median", "HU", "Median attenuation of the voxels in the ROI.", "double"),
        ("n_voxels", "Voxels", "", "Number of voxels whose centre lies in the ROI.", "int"),
        ("area_mm2", "Area", "mm2", "Voxelised in-plane area of the ROI (volume / slab thickness).", "double"),
    )

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return OsteoROIParameterNode(super().getParameterNode())

    @staticmethod
    def shapesFromParameterNode(parameterNode) -> List[str]:
        return [name for name in SHAPE_NAMES if getattr(parameterNode, SHAPE_PARAMETERS[name])]

    # --- MRML -> OsteoROILib ------------------------------------------------------------------
    def volumeFromNode(self, volumeNode) -> Volume:
        """The volume node's voxels (copied) and world IJK-to-RAS matrix as a ``Volume``."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise InputError(
                "No CT volume with image data is selected.", "Load a CT and select it as the input volume."
            )
        if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
            raise InputError(
                f"The volume {volumeNode.GetName()!r} has several components per voxel (colour or vector image).",
                "Select a single-component CT volume in Hounsfield units.",
            )
        array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        parentTransform = volumeNode.GetParentTransformNode()
        if parentTransform is not None:
            toWorld = vtk.vtkMatrix4x4()
            if not parentTransform.GetMatrixTransformToWorld(toWorld):
                raise InputError(
                    f"The volume {volumeNode.GetName()!r} is under a non-linear transform.",
                    "Harden the transform on the volume (Data module, right-click > Harden transform) or remove it.",
                )
            ijkToWorld = vtk.vtkMatrix4x4()
            vtk.vtkMatrix4x4.Multiply4x4(toWorld, ijkToRas, ijkToWorld)
            ijkToRas = ijkToWorld
        volume = Volume(array, slicer.util.arrayFromVTKMatrix(ijkToRas), source=volumeNode.GetName())
        check_ct(volume)
        return volume

    def levelPointsFromMarkups(self, pointsNode) -> Dict[str, List[float]]:
        """``{level: [R, A, S]}`` (world coordinates) of the point list's placed control points."""
        if pointsNode is None:
            raise InputError(
                "No level point list is selected.",
                "Place one point inside each vertebral body (Markups point list) and label the points L1, L2, ...",
            )
        points = []
        for i in range(pointsNode.GetNumberOfControlPoints()):
            if pointsNode.GetNthControlPointPositionStatus(i) != pointsNode.PositionDefined:
                continue
            ras = [0.0, 0.0, 0.0]
            pointsNode.GetNthControlPointPositionWorld(i, ras)
            points.append({"label": pointsNode.GetNthControlPointLabel(i), "ras": ras})
        if not points:
            raise InputError(
                f"The point list {pointsNode.GetName()!r} has no placed points.",
                "Place one point inside each vertebral body and label the points L1, L2, ...",
            )
        return points_by_label(points, source=f"point list {pointsNode.GetName()!r}")

    # --- measurement --------------------------------------------------------------------------
    def measure(self, volumeNode, pointsNode, shapes: Optional[Sequence[str]] = None,
                slabMm: Optional[float] = None) -> dict:
        """Measure every labelled level; returns ``OsteoROILib.measure.measure_levels``' result.

        ``slabMm`` None or 0 means one slice (the image's slice spacing).
        """
        volume = self.volumeFromNode(volumeNode)
        points = self.levelPointsFromMarkups(pointsNode)
        slab = None if slabMm is None or float(slabMm) == 0.0 else float(slabMm)
        return measure_levels(volume, points, shapes=None if shapes is None else list(shapes), slab_mm=slab)

    def process(self, volumeNode, pointsNode, shapes: Optional[Sequence[str]] = None,
                slabMm: Optional[float] = None, tableNode=None):
        """Measure and write the rows into ``tableNode`` (a new table if None).

        Returns ``(result, tableNode)``.
        """
        logging.info("OsteoROI %s: measuring", __version__)
        result = self.measure(volumeNode, pointsNode, shapes=shapes, slabMm=slabMm)
        tableNode = self.resultToTable(result, tableNode)
        for warning in result.get("warnings", []):
            logging.warning("OsteoROI: %s", warning)
        return result, tableNode

    # --- OsteoROILib -> MRML ------------------------------------------------------------------
    def resultToTable(self, result: dict, tableNode=None):
        """Fill ``tableNode`` (created if None) with one row per level and ROI shape.

        The table's previous columns are replaced; the node itself is neither renamed nor removed.
        """
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", slicer.mrmlScene.GenerateUniqueName("OsteoROI results"))
        rows = result["rows"]
        wasModifying = tableNode.StartModify()
        try:
            tableNode.RemoveAllColumns()
            for key, name, unit, description, kind in self.TABLE_COLUMNS:
                if kind == "string":
                    column = vtk.vtkStringArray()
                elif kind == "int":
                    column = vtk.vtkIntArray()
                else:
                    column = vtk.vtkDoubleArray()
                column.SetName(name)
                for row in rows:
                    value = row.get(key)
                    if kind == "string":
                        column.InsertNextValue("" if value is None else str(value))
                    elif kind == "int":
                        column.InsertNextValue(0 if value is None else int(value))
                    else:
                        column.InsertNextValue(float("nan") if value is None else float(value))
                tableNode.AddColumn(column)
                tableNode.SetColumnUnitLabel(name, unit)
                tableNode.SetColumnDescription(name, description)
        finally:
            tableNode.EndModify(wasModifying)
        return tableNode

    @staticmethod
    def showTable(tableNode) -> None:
        """Switch to a layout with a table view and show ``tableNode`` in it (GUI only)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None or tableNode is None:
            return
        layoutManager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout))
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(tableNode.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


#
# OsteoROITest
#


class OsteoROITest(ScriptedLoadableModuleTest):
    """Runs the module's workflow on OsteoROI's digital phantom (known trabecular HU per level)."""

    #: A measured ROI mean may differ from the phantom's trabecular HU by this much plus three
    #: standard errors of the mean (the ROIs lie wholly in the uniform trabecular region).
    MEAN_TOLERANCE_HU = 5.0

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_OsteoROI_phantom()
        self.setUp()
        self.test_OsteoROI_transformed()
        self.setUp()
        self.test_OsteoROI_errors()

    def _loadPhantom(self):
        from OsteoROILib.phantom import make_phantom

        volume, truth = make_phantom()
        volumeNode = slicer.util.addVolumeFromArray(volume.array, volume.ijk_to_ras, name="OsteoROI phantom")
        pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
        for level in truth.levels:
            pointsNode.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
        return volumeNode, pointsNode, truth

    def test_OsteoROI_phantom(self):
        self.delayDisplay("Measuring the digital phantom")
        volumeNode, pointsNode, truth = self._loadPhantom()
        nodeNames = [volumeNode.GetName(), pointsNode.GetName()]
        nPoints = pointsNode.GetNumberOfControlPoints()
        logic = OsteoROILogic()
        shapes = ["oval", "round", "front"]
        result, tableNode = logic.process(volumeNode, pointsNode, shapes=shapes, slabMm=0)

        truthHu = {level.name: float(level.trabecular_hu) for level in truth.levels}
        rows = result["rows"]
        self.assertEqual(len(rows), len(truthHu) * len(shapes))
        self.assertEqual({(r["level"], r["shape"]) for r in rows}, {(lv, s) for lv in truthHu for s in shapes})
        for row in rows:
            sem = (row["sd_hu"] or 0.0) / np.sqrt(max(row["n_voxels"], 1))
            self.assertGreater(row["n_voxels"], 0)
            self.assertAlmostEqual(row["mean_hu"], truthHu[row["level"]], delta=self.MEAN_TOLERANCE_HU + 3.0 * sem)

        # The table holds the same rows, with units.
        table = tableNode.GetTable()
        self.assertEqual(table.GetNumberOfRows(), len(rows))
        names = [c[1] for c in OsteoROILogic.TABLE_COLUMNS]
        self.assertEqual([table.GetColumnName(i) for i in range(table.GetNumberOfColumns())], names)
        self.assertEqual(tableNode.GetColumnUnitLabel("Mean"), "HU")
        self.assertEqual(tableNode.GetColumnUnitLabel("Area"), "mm2")
        for i, row in enumerate(rows):
            self.assertEqual(table.GetValueByName(i, "Level").ToString(), row["level"])
            self.assertAlmostEqual(table.GetValueByName(i, "Mean").ToDouble(), row["mean_hu"], places=6)
            self.assertEqual(table.GetValueByName(i, "Voxels").ToInt(), row["n_voxels"])

        # Re-running into the same table replaces its content; user nodes are untouched.
        result2, tableNode2 = logic.process(volumeNode, pointsNode, shapes=["round"], slabMm=0, tableNode=tableNode)
        self.assertIs(tableNode2, tableNode)
        self.assertEqual(tableNode.GetTable().GetNumberOfRows(), len(truthHu))
        self.assertEqual([volumeNode.GetName(), pointsNode.GetName()], nodeNames)
        self.assertEqual(pointsNode.GetNumberOfControlPoints(), nPoints)
        self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(volumeNode.GetID()))
        self.delayDisplay("Phantom test passed")

    def test_OsteoROI_transformed(self):
        """A linearly transformed volume is measured in world coordinates, like the points."""
        self.delayDisplay("Measuring a transformed phantom")
        volumeNode, pointsNode, truth = self._loadPhantom()
        logic = OsteoROILogic()
        before, _table = logic.process(volumeNode, pointsNode, shapes=["oval"], slabMm=0)

        shift = np.array([12.0, -7.0, 0.0])
        transformNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        for axis in range(3):
            matrix.SetElement(axis, 3, shift[axis])
        transformNode.SetMatrixTransformToParent(matrix)
        volumeNode.SetAndObserveTransformNodeID(transformNode.GetID())
        for i in range(pointsNode.GetNumberOfControlPoints()):
            ras = [0.0, 0.0, 0.0]
            pointsNode.GetNthControlPointPosition(i, ras)
            pointsNode.SetNthControlPointPosition(i, *[float(x) for x in np.add(ras, shift)])
        after, _table = logic.process(volumeNode, pointsNode, shapes=["oval"], slabMm=0)

        self.assertEqual(len(after["rows"]), len(before["rows"]))
        for a, b in zip(after["rows"], before["rows"]):
            self.assertEqual((a["level"], a["shape"]), (b["level"], b["shape"]))
            self.assertEqual(a["n_voxels"], b["n_voxels"])
            self.assertAlmostEqual(a["mean_hu"], b["mean_hu"], places=4)
        self.delayDisplay("Transform test passed")

    def test_OsteoROI_errors(self):
        """Bad input raises an error that says what to do, and creates no table."""
        from OsteoROILib.errors import OsteoROIError

        volumeNode, _points, _truth = self._loadPhantom()
        emptyPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Empty")
        logic = OsteoROILogic()
        nTables = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode")
        with self.assertRaises(OsteoROIError) as cm:
            logic.process(volumeNode, emptyPoints)
        self.assertIn("L1", str(cm.exception))
        with self.assertRaises(OsteoROIError):
            logic.process(volumeNode, None)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode"), nTables)
        self.delayDisplay("Error test passed")
