"""OsteoROI: trabecular attenuation (HU) of lumbar vertebrae on CT, measured with standardized ROIs.

This is the 3D Slicer scripted module (module, parameter node, widget, logic, self-test). It is
imported only inside Slicer and is thin wiring: the scene-level work (ROI markups, live updates,
table, plot, persistence) is ``OsteoROILib.mrmllogic`` (Qt-free, tested on the slicer-core wheel)
and every number comes from the Qt-free package ``OsteoROILib``, which the command line
(``python -m OsteoROILib``) and scripts share.
"""
from __future__ import annotations

import logging
import os
from typing import Annotated, List, Optional, Sequence

import numpy as np
import qt
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
from OsteoROILib.measure import LEVEL_NAMES, measure_levels
from OsteoROILib.mrmllogic import OsteoROIMRMLLogic, level_points_from_node, volume_from_node
from OsteoROILib.roifamily import SHAPE_NAMES

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
on CT, for opportunistic osteoporosis screening and, with a calibration, QCT volumetric BMD.</p>
<p><b>How:</b> select the CT, then click <i>Place L1</i> &hellip; <i>Place L4</i> and click inside each
vertebral body (or use a point list whose points are labelled L1&ndash;L4, or <i>Place from
segmentation</i>). OsteoROI finds the body and places the standardized ROIs in the anterior two thirds,
excluding the cortex and the posterior venous plexus: <i>oval</i>, <i>round</i>, <i>front</i>, <i>left</i>,
<i>right</i>. Each ROI is an editable box markup (an ellipse ROI is the ellipse inscribed in its box):
move, resize or rotate it and the table and the plot update. Exclude a level or give its Genant
fracture grade (grade &ge; 1 excludes it from the summary).</p>
<p><b>Clinical context:</b> published HU cut-offs hold for 120 kV non-contrast CT and for the ROI type they
were derived with; other kV or contrast phases shift HU. HU is a screening measure, not a DXA T-score or a
diagnosis; check every ROI for osteophytes, fractures, bone islands and artefacts before using a value.</p>
<p><b>Python console:</b><br>
<code>logic = slicer.util.getModuleLogic("OsteoROI")</code><br>
<code>tableNode = logic.run(volumeNode, pointsNode, calibration=None, shapes=None, criteria=None)</code><br>
returns the results table node (one row per level and ROI type). <code>shapes</code>: e.g.
<code>["oval", "round"]</code> (default all five); <code>criteria</code>: <code>"seed002-hu"</code>,
<code>"qct-acr2018"</code> (needs a calibration) or <code>"pickhardt2013-l1"</code>; <code>calibration</code>: a
saved calibration file or <code>OsteoROILib.calibration.Calibration</code>; <code>slabMm=</code> ROI thickness
(default one slice). <code>logic.rows()</code> gives the rows as dicts, <code>logic.setGenantGrade("L2", 2)</code>,
<code>logic.setExcluded("L3", True, "bone island")</code>, <code>logic.exportResults(jsonPath, csvPath)</code>,
<code>logic.exportReport(htmlPath)</code>.
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
    """The module's GUI parameters, saved with the scene.

    inputVolume - the CT volume (HU).
    inputPoints - point list, one point inside each vertebral body, labelled L1, L2, ...
    inputSegmentation - optional vertebra segmentation for "Place from segmentation".
    slabMm - ROI thickness along the slice normal in mm; 0 means one slice (the slice spacing).
    shapeOval ... shapeRight - which ROI shapes to measure.
    outputTable - table to fill with the results (the module's own table when empty).
    criteria - id of the diagnostic criterion whose thresholds the plot shows ("" for none).
    calibrationMode - none, saved or manual (phantom and internal are placed in their own panels).
    calibrationFile - a saved calibration (.json) for the "saved" mode.
    manualSlope, manualIntercept - HU = intercept + slope * density for the "manual" mode.

    Everything the measurement produced (ROIs, results, exclusions, Genant grades) is kept by
    ``OsteoROILib.mrmllogic`` in the same parameter node.
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
    criteria: str = "seed002-hu"
    calibrationMode: str = "none"
    calibrationFile: str = ""
    manualSlope: Annotated[float, WithinRange(0.01, 10.0)] = 1.0
    manualIntercept: Annotated[float, WithinRange(-500.0, 500.0)] = 0.0


#: Parameter-node member for each ROI shape of ``OsteoROILib.roifamily.SHAPE_NAMES``.
SHAPE_PARAMETERS = {
    "oval": "shapeOval",
    "round": "shapeRound",
    "front": "shapeFront",
    "left": "shapeLeft",
    "right": "shapeRight",
}

#: The levels with their own place button, exclusion check box and Genant grade box.
GUI_LEVELS = ("L1", "L2", "L3", "L4")

#: Live updates are deferred by this many milliseconds (a drag re-measures at most this often).
THROTTLE_MS = 150


#
# OsteoROIWidget
#


class OsteoROIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Inputs, per-level placement, ROI types, calibration, exclusions, results table, plot and exports."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingLevelWidgets = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        # The .ui file is in the extension's Resources/UI folder, copied to <module dir>/Resources/UI.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/OsteoROI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # MRML widgets get the scene through the "mrmlSceneChanged(vtkMRMLScene*)" connections of the .ui.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = OsteoROILogic()
        self.logic.setLiveUpdate(self._deferred, self._onLiveUpdate)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.placeL1Button.connect("clicked(bool)", lambda checked: self.onPlaceLevel("L1"))
        self.ui.placeL2Button.connect("clicked(bool)", lambda checked: self.onPlaceLevel("L2"))
        self.ui.placeL3Button.connect("clicked(bool)", lambda checked: self.onPlaceLevel("L3"))
        self.ui.placeL4Button.connect("clicked(bool)", lambda checked: self.onPlaceLevel("L4"))
        self.ui.placeFromSegmentationButton.connect("clicked(bool)", self.onPlaceFromSegmentation)
        self.ui.excludeL1CheckBox.connect("toggled(bool)", lambda on: self.onExcludeLevel("L1", on))
        self.ui.excludeL2CheckBox.connect("toggled(bool)", lambda on: self.onExcludeLevel("L2", on))
        self.ui.excludeL3CheckBox.connect("toggled(bool)", lambda on: self.onExcludeLevel("L3", on))
        self.ui.excludeL4CheckBox.connect("toggled(bool)", lambda on: self.onExcludeLevel("L4", on))
        self.ui.genantL1ComboBox.connect("currentIndexChanged(int)", lambda i: self.onGenantGrade("L1", i))
        self.ui.genantL2ComboBox.connect("currentIndexChanged(int)", lambda i: self.onGenantGrade("L2", i))
        self.ui.genantL3ComboBox.connect("currentIndexChanged(int)", lambda i: self.onGenantGrade("L3", i))
        self.ui.genantL4ComboBox.connect("currentIndexChanged(int)", lambda i: self.onGenantGrade("L4", i))
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.exportCsvButton.connect("clicked(bool)", lambda checked: self.onExport("csv"))
        self.ui.exportJsonButton.connect("clicked(bool)", lambda checked: self.onExport("json"))
        self.ui.exportHtmlButton.connect("clicked(bool)", lambda checked: self.onExport("html"))

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is not None:
            self.logic.mrml.detach()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.mrml.detach()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        """A loaded scene: re-connect the live updates and restore the table and plot."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not restore its results from the scene.")):
            self.logic.mrml.attach()
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    # --- GUI state ------------------------------------------------------------------------------
    def _updateGui(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        if not (p and p.inputVolume and p.inputPoints):
            self.ui.applyButton.toolTip = _("Select a CT volume and a point list with points labelled L1, L2, ...")
            self.ui.applyButton.enabled = False
        elif not self.logic.shapesFromParameterNode(p):
            self.ui.applyButton.toolTip = _("Select at least one ROI shape.")
            self.ui.applyButton.enabled = False
        else:
            self.ui.applyButton.toolTip = _("Place the ROIs and measure every labelled level.")
            self.ui.applyButton.enabled = True
        self.ui.placeFromSegmentationButton.enabled = bool(p.inputVolume and self.ui.segmentationSelector.currentNode())
        mode = p.calibrationMode
        self.ui.calibrationFileLineEdit.enabled = mode == "saved"
        self.ui.manualSlopeSpinBox.enabled = mode == "manual"
        self.ui.manualInterceptSpinBox.enabled = mode == "manual"
        self.ui.resultsTableView.setMRMLTableNode(self.logic.mrml.tableNode())
        hasResults = bool(self.logic.mrml.rows())
        for button in (self.ui.exportCsvButton, self.ui.exportJsonButton, self.ui.exportHtmlButton,
                       self.ui.showPlotButton):
            button.enabled = hasResults
        self._updateLevelWidgets()

    def _updateLevelWidgets(self) -> None:
        state = self.logic.mrml.state()
        self._updatingLevelWidgets = True
        try:
            for level in GUI_LEVELS:
                exclude = getattr(self.ui, f"exclude{level}CheckBox")
                genant = getattr(self.ui, f"genant{level}ComboBox")
                exclude.blockSignals(True)
                genant.blockSignals(True)
                exclude.checked = level in state.get("excluded", {})
                grade = state.get("genant", {}).get(level)
                genant.setCurrentIndex(0 if grade is None else int(grade) + 1)
                exclude.blockSignals(False)
                genant.blockSignals(False)
        finally:
            self._updatingLevelWidgets = False

    def _deferred(self, callback) -> None:
        qt.QTimer.singleShot(THROTTLE_MS, callback)

    def _onLiveUpdate(self, mrmlLogic) -> None:
        self._showStatus()
        self._updateGui()

    def _showStatus(self) -> None:
        mrml = self.logic.mrml
        lines = [_("{count} measurements.").format(count=len(mrml.rows()))]
        if mrml.lastError:
            lines.append("\u26a0 " + mrml.lastError)
        warnings = sorted({w for r in mrml.rows() for w in r.get("warnings", [])})
        lines += [f"\u26a0 {w}" for w in warnings]
        self.ui.statusLabel.text = "\n".join(lines)

    # --- actions --------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Measure, fill the table and the plot, and show them."""
        self.ui.statusLabel.text = ""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not measure."), waitCursor=True):
            p = self._parameterNode
            tableNode = self.logic.run(
                p.inputVolume,
                p.inputPoints,
                calibration=self.logic.calibrationFromParameterNode(p),
                shapes=self.logic.shapesFromParameterNode(p),
                criteria=p.criteria or None,
                slabMm=p.slabMm,
                tableNode=p.outputTable,
            )
            p.outputTable = tableNode
            self._showStatus()
            self._updateGui()

    def onPlaceLevel(self, level: str) -> None:
        """Place (or re-place) the level's point with the next click in a slice view."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not start placing {level}.").format(level=level)):
            p = self._parameterNode
            if p.inputVolume is None:
                raise ValueError(_("Select the CT volume first."))
            if p.inputPoints is None:
                p.inputPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "OsteoROI levels")
            mrml = self.logic.mrml
            if mrml.volumeNode() is not p.inputVolume or mrml.pointsNode() is not p.inputPoints:
                # Measure each level as soon as its point is placed.
                p.outputTable = mrml.watch(p.inputVolume, p.inputPoints,
                                           calibration=self.logic.calibrationFromParameterNode(p),
                                           shapes=self.logic.shapesFromParameterNode(p),
                                           criteria=p.criteria or None, slabMm=p.slabMm)
            self.logic.startPlacing(p.inputPoints, level)

    def onPlaceFromSegmentation(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not place from the segmentation."), waitCursor=True):
            p = self._parameterNode
            tableNode = self.logic.mrml.runFromSegmentation(
                p.inputVolume, self.ui.segmentationSelector.currentNode(),
                calibration=self.logic.calibrationFromParameterNode(p),
                shapes=self.logic.shapesFromParameterNode(p), criteria=p.criteria or None, slabMm=p.slabMm)
            p.inputPoints = self.logic.mrml.pointsNode()
            p.outputTable = tableNode
            self._showStatus()
            self._updateGui()

    def onExcludeLevel(self, level: str, excluded: bool) -> None:
        if self._updatingLevelWidgets or not self.logic.mrml.rows():
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not change the exclusion.")):
            self.logic.mrml.setExcluded(level, excluded, _("excluded by the user"))
            self._showStatus()

    def onGenantGrade(self, level: str, index: int) -> None:
        if self._updatingLevelWidgets or not self.logic.mrml.rows():
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not set the Genant grade.")):
            self.logic.mrml.setGenantGrade(level, None if index <= 0 else index - 1)
            self._showStatus()

    def onShowPlot(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not show the plot.")):
            chart = self.logic.mrml.plotChartNode()
            if chart is not None:
                slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onExport(self, kind: str) -> None:
        filters = {"csv": "CSV (*.csv)", "json": "JSON (*.json)", "html": "HTML report (*.html)"}
        path = qt.QFileDialog.getSaveFileName(None, _("Export OsteoROI results"), f"osteoroi.{kind}", filters[kind])
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not export."), waitCursor=True):
            # The file dialog has already asked whether to replace an existing file.
            overwrite = os.path.exists(path)
            if kind == "csv":
                written = self.logic.mrml.exportResults(csvPath=path, overwrite=overwrite)
            elif kind == "json":
                written = self.logic.mrml.exportResults(jsonPath=path, overwrite=overwrite)
            else:
                written = self.logic.mrml.exportReport(path, overwrite=overwrite)
            self.ui.statusLabel.text = _("Written: {paths}").format(paths=", ".join(written))


#
# OsteoROILogic
#


class OsteoROILogic(ScriptedLoadableModuleLogic):
    """The module logic: ``OsteoROILib.mrmllogic.OsteoROIMRMLLogic`` on ``slicer.mrmlScene``.

    Usable without the GUI (Python console, scripts): ``run(...)`` returns the results table.
    It never deletes or renames the user's nodes; re-running reuses the module's own nodes.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._mrml = None
        self._scheduler = None
        self._onUpdate = None

    @property
    def mrml(self) -> OsteoROIMRMLLogic:
        if self._mrml is None or self._mrml.scene is not slicer.mrmlScene:
            self._mrml = OsteoROIMRMLLogic(slicer.mrmlScene, scheduler=self._scheduler, onUpdate=self._onUpdate)
        return self._mrml

    def setLiveUpdate(self, scheduler, onUpdate) -> None:
        """Throttle live updates with ``scheduler(callback)`` and report them to ``onUpdate(mrmlLogic)``."""
        self._scheduler, self._onUpdate = scheduler, onUpdate
        self.mrml.scheduler, self.mrml.onUpdate = scheduler, onUpdate

    def getParameterNode(self):
        return OsteoROIParameterNode(super().getParameterNode())

    @staticmethod
    def shapesFromParameterNode(parameterNode) -> List[str]:
        return [name for name in SHAPE_NAMES if getattr(parameterNode, SHAPE_PARAMETERS[name])]

    @staticmethod
    def calibrationFromParameterNode(parameterNode):
        """The calibration the GUI selects (None, a saved file, or a manual line)."""
        mode = parameterNode.calibrationMode
        if mode in ("phantom", "internal"):
            from OsteoROILib.errors import InputError

            raise InputError(f"{mode.capitalize()} calibration cannot be fitted in the module yet.",
                             "Fit it with the osteoroi command line ('osteoroi calibrate') and choose 'saved' "
                             "with the calibration file, or choose 'none' or 'manual'.")
        if mode == "saved":
            return parameterNode.calibrationFile or None
        if mode == "manual":
            from OsteoROILib.calibration import manual_calibration

            return manual_calibration(parameterNode.manualSlope, parameterNode.manualIntercept, "K2HPO4",
                                      note="entered in the OsteoROI module")
        return None

    def run(self, volumeNode, pointsNode, calibration=None, shapes: Optional[Sequence[str]] = None,
            criteria=None, slabMm: Optional[float] = None, force: bool = False, tableNode=None):
        """Place the ROIs of every labelled level and measure them; returns the results table node.

        See ``OsteoROILib.mrmllogic.OsteoROIMRMLLogic.run`` for the arguments.
        """
        logging.info("OsteoROI %s: measuring", __version__)
        table = self.mrml.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                              slabMm=slabMm, force=force, tableNode=tableNode)
        for warning in sorted({w for r in self.mrml.rows() for w in r.get("warnings", [])}):
            logging.warning("OsteoROI: %s", warning)
        return table

    def measure(self, volumeNode, pointsNode, shapes: Optional[Sequence[str]] = None,
                slabMm: Optional[float] = None) -> dict:
        """Plain measurement without scene changes: ``OsteoROILib.measure.measure_levels``' result."""
        slab = None if slabMm is None or float(slabMm) == 0.0 else float(slabMm)
        return measure_levels(volume_from_node(volumeNode), level_points_from_node(pointsNode),
                              shapes=None if shapes is None else list(shapes), slab_mm=slab)

    def rows(self) -> List[dict]:
        return self.mrml.rows()

    def setExcluded(self, level: str, excluded: bool, reason: str = "excluded by the user") -> None:
        self.mrml.setExcluded(level, excluded, reason)

    def setGenantGrade(self, level: str, grade: Optional[int]) -> None:
        self.mrml.setGenantGrade(level, grade)

    def exportResults(self, jsonPath: Optional[str] = None, csvPath: Optional[str] = None,
                      overwrite: bool = False) -> List[str]:
        return self.mrml.exportResults(jsonPath, csvPath, overwrite=overwrite)

    def exportReport(self, htmlPath: str, overwrite: bool = False) -> List[str]:
        return self.mrml.exportReport(htmlPath, overwrite=overwrite)

    @staticmethod
    def startPlacing(pointsNode, level: str) -> None:
        """Let the next click in a view place ``level``'s point (an existing one is re-placed)."""
        if level not in LEVEL_NAMES:
            raise ValueError(f"Unknown level {level!r}")
        index = next((i for i in range(pointsNode.GetNumberOfControlPoints())
                      if pointsNode.GetNthControlPointLabel(i).strip().upper() == level), None)
        if index is None:
            index = pointsNode.AddControlPoint(vtk.vtkVector3d(0, 0, 0), level)
        pointsNode.ResetNthControlPointPosition(index)  # unplaced: the next click places it
        slicer.modules.markups.logic().SetActiveList(pointsNode)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(False)
        interaction.SetCurrentInteractionMode(interaction.Place)


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
        self.test_OsteoROI_edit_and_persist()
        self.setUp()
        self.test_OsteoROI_errors()

    def _loadPhantom(self):
        from OsteoROILib.phantom import make_phantom

        volume, truth = make_phantom(noise_sigma=10.0, seed=1)
        volumeNode = slicer.util.addVolumeFromArray(volume.array, volume.ijk_to_ras, name="OsteoROI phantom")
        pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
        for level in truth.levels:
            pointsNode.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
        return volumeNode, pointsNode, truth

    def test_OsteoROI_phantom(self):
        self.delayDisplay("Measuring the digital phantom")
        volumeNode, pointsNode, truth = self._loadPhantom()
        nodeNames = [volumeNode.GetName(), pointsNode.GetName()]
        logic = OsteoROILogic()
        shapes = ["oval", "round", "front"]
        tableNode = logic.run(volumeNode, pointsNode, shapes=shapes, criteria="seed002-hu")
        truthHu = {level.name: float(level.trabecular_hu) for level in truth.levels}
        rows = logic.rows()
        self.assertEqual({(r["level"], r["shape"]) for r in rows}, {(lv, s) for lv in truthHu for s in shapes})
        for row in rows:
            sem = (row["sd_hu"] or 0.0) / np.sqrt(max(row["n_voxels"], 1))
            self.assertAlmostEqual(row["mean_hu"], truthHu[row["level"]], delta=self.MEAN_TOLERANCE_HU + 3.0 * sem)
        self.assertEqual(tableNode.GetNumberOfRows(), len(rows))
        self.assertEqual(tableNode.GetColumnUnitLabel("Mean"), "HU")
        self.assertIsNotNone(logic.mrml.plotChartNode())
        # Re-running reuses the module's nodes; user nodes are untouched.
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        self.assertIs(logic.run(volumeNode, pointsNode, shapes=shapes), tableNode)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertEqual([volumeNode.GetName(), pointsNode.GetName()], nodeNames)
        self.delayDisplay("Phantom test passed")

    def test_OsteoROI_edit_and_persist(self):
        """Moving an ROI re-measures; the scene saved as .mrb and loaded again restores the results."""
        import tempfile

        volumeNode, pointsNode, _truth = self._loadPhantom()
        logic = OsteoROILogic()
        logic.run(volumeNode, pointsNode, shapes=["oval"])
        roi = logic.mrml.roiNode("L1", "oval")
        c = [0.0, 0.0, 0.0]
        roi.GetCenter(c)
        roi.SetCenter(c[0] + 1.5, c[1], c[2])
        logic.mrml.processPendingUpdates()
        row = next(r for r in logic.rows() if r["level"] == "L1")
        self.assertTrue(row["placement"].endswith("(edited)"))
        rows = logic.rows()
        path = os.path.join(tempfile.mkdtemp(), "osteoroi.mrb")
        self.assertTrue(slicer.util.saveScene(path))
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(path)
        restored = OsteoROILogic()
        restored.mrml.attach()
        self.assertEqual(restored.rows(), rows)
        self.delayDisplay("Edit and persistence test passed")

    def test_OsteoROI_errors(self):
        """Bad input raises an error that says what to do, and adds no node."""
        from OsteoROILib.errors import OsteoROIError

        volumeNode, _points, _truth = self._loadPhantom()
        emptyPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Empty")
        logic = OsteoROILogic()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(OsteoROIError) as cm:
            logic.run(volumeNode, emptyPoints)
        self.assertIn("L1", str(cm.exception))
        with self.assertRaises(OsteoROIError):
            logic.run(volumeNode, None)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Error test passed")
