"""OsteoROI: trabecular attenuation (HU) of lumbar vertebrae on CT, measured with standardized ROIs.

This is the 3D Slicer scripted module (module, parameter node, widget, logic, self-test). It is
imported only inside Slicer and is thin wiring: the scene-level work (ROI markups, live updates,
table, plot, persistence) is ``OsteoROILib.mrml.logic`` (Qt-free, tested on the slicer-core wheel)
and every number comes from the Qt-free package ``OsteoROILib``, which the command line
(``python -m OsteoROILib``) and scripts share.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, List, Optional, Sequence

import numpy as np
import qt
import vtk

import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from OsteoROILib import __version__
from OsteoROILib.calibration.phantom_library import UNITS
from OsteoROILib.errors import InputError, OsteoROIError
from OsteoROILib.mrml.calibration_state import CALIBRATION_MODES, KEEP_CALIBRATION
from OsteoROILib.mrml.case import case_diagnosis, diagnosis_text, export_case_report, prior_document
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic
from OsteoROILib.mrml.nodes import level_points_from_node, volume_from_node
from OsteoROILib.mrml.patient import describe_facts, dicom_facts_from_node, dicom_patient_id
from OsteoROILib.mrml.signed_report import (
    encapsulated_pdf_path,
    export_case_dicom,
    export_case_pdf,
    pdf_browser,
    sign_off,
)
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.family import SHAPE_NAMES
from OsteoROILib.roi.levels import LEVEL_NAMES

#: Criteria offered in the panel (ids of ``Resources/Criteria``; "" = none, the plot shows no thresholds).
CRITERIA_CHOICES = ("seed002-hu", "qct-acr2018", "pickhardt2013-l1", "")


def moduleResourcePath(relativePath: str) -> str:
    """A file of the extension's ``Resources/`` folder, e.g. ``"UI/OsteoROI.ui"``.

    Installed, ``Resources/`` is beside ``OsteoROI.py`` (where Slicer's ``resourcePath`` looks);
    in the source tree it is one level up, at the top of the repository.
    """
    moduleDir = os.path.dirname(os.path.abspath(__file__))
    for folder in (os.path.join(moduleDir, "Resources"), os.path.join(moduleDir, os.pardir, "Resources")):
        path = os.path.normpath(os.path.join(folder, *relativePath.split("/")))
        if os.path.exists(path):
            return path
    raise OsteoROIError(f"OsteoROI resource {relativePath} is missing next to {moduleDir}.",
                        "Reinstall the OsteoROI extension, or add the OsteoROI folder of a complete clone "
                        "to Slicer's additional module paths.")


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
        # Slicer sets the icon only from <folder of OsteoROI.py>/Resources/Icons (the installed layout).
        self.parent.icon = qt.QIcon(moduleResourcePath("Icons/OsteoROI.png"))
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
<p><b>Calibration</b> (vBMD, mg/cm&sup3;): choose <i>phantom</i> and the phantom in the scan, then
<i>Auto-detect rods</i> or <i>Place rods</i> (click each rod in the order shown), or <i>internal</i> and
<i>Place tissue points</i> (air, subcutaneous fat, paraspinal muscle, aorta, cortical bone), or <i>manual</i>
/ <i>saved</i>; <i>Apply calibration</i> fits it. The panel shows slope, intercept, R&sup2;, SEE, each rod's
residual and every warning. An empty cell in the table means the value is undefined (e.g. the SD of a single
voxel); the Warnings column says why.</p>
<p><b>Report:</b> under the diagnosis, type your comment, your name and the date (YYYY-MM-DD): they are
printed in the sign-off block of the report. <i>HTML report</i> and <i>PDF report</i> (printed with Chromium,
Chrome or Edge; without one, the HTML report is offered) write it; <i>DICOM SR + PDF</i> writes a DICOM
Structured Report and the PDF as Encapsulated PDF into the CT's study for PACS (the CT must be loaded from
the DICOM database; highdicom is installed the first time, after asking).</p>
<p><b>Clinical context:</b> published HU cut-offs hold for 120 kV non-contrast CT and for the ROI type they
were derived with; other kV or contrast phases shift HU. HU is a screening measure, not a DXA T-score or a
diagnosis; check every ROI for osteophytes, fractures, bone islands and artefacts before using a value.</p>
<p><b>Python console:</b><br>
<code>logic = slicer.util.getModuleLogic("OsteoROI")</code><br>
<code>tableNode = logic.run(volumeNode, pointsNode, shapes=None, criteria=None)</code><br>
returns the results table node (one row per level and ROI type). <code>shapes</code>: e.g.
<code>["oval", "round"]</code> (default all five); <code>criteria</code>: <code>"seed002-hu"</code>,
<code>"qct-acr2018"</code> (needs a calibration) or <code>"pickhardt2013-l1"</code>; <code>calibration</code>: a
saved calibration file or <code>OsteoROILib.calibration.model.Calibration</code>, <code>None</code> for HU only (default:
keep the scene's calibration); <code>slabMm=</code> ROI thickness (default one slice).<br>
Calibration: <code>logic.mrml.calibrateFromRods(rodPointsNode, "qrm-bdc-6")</code> (points labelled by rod name,
e.g. R0&hellip;R800, or A&hellip;E for <code>"mindways-example"</code>),
<code>logic.mrml.autoDetectRods("qrm-bdc-6", volumeNode)</code> (creates the editable list "OsteoROI rods"),
<code>logic.mrml.calibrateFromTissues(tissuePointsNode)</code> (labels air, adipose, muscle, blood, cortical_bone),
<code>logic.mrml.setManualCalibration(slope, intercept, "HA")</code>,
<code>logic.mrml.setCalibration("cal.json")</code>, <code>logic.mrml.calibrationSummary()</code>,
<code>logic.mrml.saveCalibration("cal.json")</code>. Moving a rod or tissue point re-fits the calibration and
the vBMD columns follow.<br>
<code>logic.rows()</code> gives the rows as dicts, <code>logic.setGenantGrade("L2", 2)</code>,
<code>logic.setExcluded("L3", True, "bone island")</code>, <code>logic.exportResults(jsonPath, csvPath)</code>,
<code>logic.exportReport(htmlPath, patient={"age": 67, "sex": "F"})</code>,
<code>logic.diagnosis(patient=..., priorFile="prior.json")</code> (categories, lead criterion, follow-up).
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
    inputSegmentation - vertebra segmentation (segments named by level) for "Place from segmentation".
    slabMm - ROI thickness along the slice normal in mm; 0 means one slice (the slice spacing).
    shapeOval ... shapeRight - which ROI shapes to measure.
    outputTable - table to fill with the results (the module's own table when empty).
    criteria - id of the diagnostic criterion whose thresholds the plot shows ("" for none).
    calibrationMode - none, saved, manual, phantom or internal (OsteoROILib.mrml.calibration).
    calibrationPhantom - phantom id of the library for the "phantom" mode (rod names and densities). Not
        bound to its combo box (a combo box needs a fixed Choice, and user phantoms are added at run
        time): the widget keeps the two in sync.
    rodPoints - point list labelled by rod name for the "phantom" mode (or the module's auto-detected list).
    tissuePoints - point list labelled air, adipose, muscle, blood, cortical_bone for the "internal" mode.
    calibrationFile - a saved calibration (.json) for the "saved" mode.
    manualSlope, manualIntercept, manualUnit - HU = intercept + slope * density for the "manual" mode.
    patientAge, patientSex, menopause, fragilityFracture - the patient's facts for the diagnosis
        (filled from DICOM PatientAge/PatientSex when empty; what the user enters overrides them).
    priorResultFile, priorTable - the prior study for the follow-up: a saved result JSON, else
        the OsteoROI results table of a prior study in the scene.
    readerComment, readerName, signedDate - the radiologist's free-text comment and sign-off
        (reader, date YYYY-MM-DD), printed in the impression of the HTML/PDF report and the DICOM SR.

    Everything the measurement produced (ROIs, results, exclusions, Genant grades) is kept by
    ``OsteoROILib.mrml.logic`` in the same parameter node.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    inputPoints: vtkMRMLMarkupsFiducialNode
    inputSegmentation: vtkMRMLSegmentationNode
    slabMm: Annotated[float, WithinRange(0.0, 50.0)] = 0.0
    shapeOval: bool = True
    shapeRound: bool = True
    shapeFront: bool = True
    shapeLeft: bool = True
    shapeRight: bool = True
    outputTable: vtkMRMLTableNode
    criteria: Annotated[str, Choice(CRITERIA_CHOICES)] = "seed002-hu"
    calibrationMode: Annotated[str, Choice(CALIBRATION_MODES)] = "none"
    calibrationPhantom: str = "qrm-bdc-6"
    rodPoints: vtkMRMLMarkupsFiducialNode
    tissuePoints: vtkMRMLMarkupsFiducialNode
    calibrationFile: str = ""
    manualSlope: Annotated[float, WithinRange(0.01, 10.0)] = 1.0
    manualIntercept: Annotated[float, WithinRange(-500.0, 500.0)] = 0.0
    manualUnit: Annotated[str, Choice(UNITS)] = "K2HPO4"
    patientAge: str = ""
    patientSex: Annotated[str, Choice(("", "F", "M", "O"))] = ""
    menopause: Annotated[str, Choice(("", "post", "pre"))] = ""
    fragilityFracture: str = ""
    priorResultFile: str = ""
    priorTable: vtkMRMLTableNode
    readerComment: str = ""
    readerName: str = ""
    signedDate: str = ""


#: Parameter-node member for each ROI shape of ``OsteoROILib.roi.family.SHAPE_NAMES``.
SHAPE_PARAMETERS = {
    "oval": "shapeOval",
    "round": "shapeRound",
    "front": "shapeFront",
    "left": "shapeLeft",
    "right": "shapeRight",
}

#: The levels with their own place button, exclusion check box and Genant grade box.
GUI_LEVELS = ("L1", "L2", "L3", "L4")

#: Exclusion reasons of the panel's "Reason" combo box, in its order (diagnosis exclusion reasons:
#: artefact, focal lesion, or the reader's own reason).
EXCLUSION_REASONS = ("artefact", "focal lesion", "excluded by the user")

#: Live updates are deferred by this many milliseconds (a drag re-measures at most this often).
THROTTLE_MS = 150


#
# OsteoROICasePanel
#


class OsteoROICasePanel:
    """The "Patient, follow-up and diagnosis" section of the widget: DICOM facts shown and copied
    into the editable patient fields, the prior study, the diagnosis text, the reader's comment and
    sign-off, and the signed report's exports (PDF, DICOM SR + Encapsulated PDF)."""

    def __init__(self, ui, logic) -> None:
        self.ui, self.logic = ui, logic
        self._factsVolumeId = None
        self.ui.diagnoseButton.connect("clicked(bool)", self.onShowDiagnosis)
        self.ui.priorResultBrowseButton.connect("clicked(bool)", self.onBrowsePrior)
        self.ui.exportPdfButton.connect("clicked(bool)", self.onExportPdf)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.parameterNode = None

    def update(self, p, hasResults: bool) -> None:
        """Refresh from the parameter node ``p`` (the GUI's state)."""
        self.parameterNode = p
        for button in (self.ui.diagnoseButton, self.ui.exportPdfButton, self.ui.exportDicomButton):
            button.enabled = hasResults
        volume = p.inputVolume
        volumeId = volume.GetID() if volume is not None else None
        if volumeId == self._factsVolumeId:
            return
        self._factsVolumeId = volumeId
        facts = dicom_facts_from_node(volume) if volume is not None else {}
        self.ui.dicomFactsLabel.text = describe_facts(facts, dicom_patient_id(volume) if volume is not None else "")
        # Read first from DICOM; the user edits the fields to correct them.
        if not p.patientAge and facts.get("patient_age"):
            p.patientAge = str(facts["patient_age"])
        if not p.patientSex and str(facts.get("patient_sex", "")).upper() in ("F", "M", "O"):
            p.patientSex = str(facts["patient_sex"]).upper()

    def onShowDiagnosis(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not build the diagnosis.")):
            p = self.parameterNode
            self.ui.diagnosisLabel.text = diagnosis_text(self.logic.diagnosisFromParameterNode(p),
                                                         self.logic.signOffFromParameterNode(p))

    def onBrowsePrior(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Result of the prior study"), "", _("OsteoROI result (*.json)"))
        if path and self.parameterNode is not None:
            self.parameterNode.priorResultFile = path

    def onExportPdf(self) -> None:
        """The signed report as PDF; without a browser to print it, offer the HTML report instead."""
        if self.logic.pdfBrowser() is None:
            if slicer.util.confirmYesNoDisplay(_(
                    "No browser that prints to PDF was found (Chromium, Google Chrome or Microsoft Edge).\n"
                    "Write the HTML report instead? Any browser prints it to PDF.")):
                self.ui.exportHtmlButton.click()
            return
        path = qt.QFileDialog.getSaveFileName(None, _("Save the PDF report"), "osteoroi-report.pdf", _("PDF (*.pdf)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not write the PDF report."), waitCursor=True):
            # The file dialog has already asked whether to replace an existing file.
            written = self.logic.exportPdfFromParameterNode(self.parameterNode, path, overwrite=os.path.exists(path))
            self.ui.statusLabel.text = _("Written: {paths}").format(paths=", ".join(written))

    def onExportDicom(self) -> None:
        """The DICOM SR (and the PDF as Encapsulated PDF beside it) in the source study, for PACS."""
        path = qt.QFileDialog.getSaveFileName(None, _("Save the DICOM SR"), "osteoroi-sr.dcm", _("DICOM (*.dcm)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI wrote no DICOM SR."), waitCursor=True):
            written = self.logic.exportDicomFromParameterNode(
                self.parameterNode, path, overwrite=os.path.exists(path),
                ask=slicer.util.confirmYesNoDisplay, install=slicer.util.pip_install)
            lines = [_("Written: {paths}").format(paths=", ".join(written))]
            if len(written) == 1:
                lines.append(_("No Encapsulated PDF: no browser that prints to PDF was found."))
            self.ui.statusLabel.text = "\n".join(lines)


#
# OsteoROICalibrationPanel
#


class OsteoROICalibrationPanel(VTKObservationMixin):
    """The "Calibration" section of the widget: mode, phantom, rod and tissue placement, fit, save."""

    def __init__(self, widget) -> None:
        VTKObservationMixin.__init__(self)
        self.widget, self.ui, self.logic = widget, widget.ui, widget.logic
        self.placingList = None  # the rod/tissue list being placed (observed until complete)
        self.ui.placeRodsButton.connect("clicked(bool)", self.onPlaceRods)
        self.ui.autoRodsButton.connect("clicked(bool)", self.onAutoDetectRods)
        self.ui.placeTissuesButton.connect("clicked(bool)", self.onPlaceTissues)
        self.ui.calibrationFileBrowseButton.connect("clicked(bool)", self.onBrowseCalibrationFile)
        self.ui.applyCalibrationButton.connect("clicked(bool)", self.onApplyCalibration)
        self.ui.saveCalibrationButton.connect("clicked(bool)", self.onSaveCalibration)
        self.addUserPhantoms()
        self.ui.phantomComboBox.connect("currentTextChanged(QString)", self.onPhantomChosen)

    def update(self, p) -> None:
        """Enable the controls of the chosen mode; show the phantom and the fit summary."""
        self._showPhantom(p.calibrationPhantom)
        mode = p.calibrationMode
        for widget in (self.ui.phantomComboBox, self.ui.rodPointsSelector, self.ui.placeRodsButton):
            widget.enabled = mode == "phantom"
        self.ui.autoRodsButton.enabled = mode == "phantom" and bool(p.inputVolume)
        self.ui.tissuePointsSelector.enabled = mode == "internal"
        self.ui.placeTissuesButton.enabled = mode == "internal"
        self.ui.calibrationFileLineEdit.enabled = mode == "saved"
        self.ui.calibrationFileBrowseButton.enabled = mode == "saved"
        for widget in (self.ui.manualSlopeSpinBox, self.ui.manualInterceptSpinBox, self.ui.manualUnitComboBox):
            widget.enabled = mode == "manual"
        self.ui.saveCalibrationButton.enabled = self.logic.mrml.calibration() is not None
        self.ui.calibrationSummaryLabel.text = self.logic.mrml.calibrationSummary()["text"]

    def addUserPhantoms(self) -> None:
        """Add the user's saved phantoms (~/.osteoroi/phantoms) to the built-in ones listed in the .ui."""
        from OsteoROILib.calibration.phantom_library import load_library

        try:
            library = load_library()
        except Exception as exc:  # a broken user phantom file must not break the module
            logging.warning("OsteoROI: user phantoms not loaded: %s", exc)
            return
        for phantomId in library:
            if self.ui.phantomComboBox.findText(phantomId) < 0:
                self.ui.phantomComboBox.addItem(phantomId)

    def _showPhantom(self, phantomId: str) -> None:
        combo = self.ui.phantomComboBox
        if combo.findText(phantomId) < 0:
            combo.addItem(phantomId)
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(combo.findText(phantomId))
        combo.blockSignals(wasBlocked)

    def onPhantomChosen(self, phantomId: str) -> None:
        if self.widget._parameterNode is not None and phantomId:
            self.widget._parameterNode.calibrationPhantom = phantomId

    def onApplyCalibration(self) -> None:
        """Fit or set the calibration the panel selects; vBMD columns follow."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not calibrate."), waitCursor=True):
            self.logic.applyCalibrationFromParameterNode(self.widget._parameterNode)
            self.widget._showStatus()
        self.widget._updateGui()

    def onAutoDetectRods(self) -> None:
        """Find the phantom's rods; they go into the editable list "OsteoROI rods" and are fitted."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not find the rods."), waitCursor=True):
            p = self.widget._parameterNode
            if p.inputVolume is None:
                raise ValueError(_("Select the CT volume first."))
            p.rodPoints = self.logic.mrml.autoDetectRods(p.calibrationPhantom, volumeNode=p.inputVolume)
            self.widget._showStatus()
        self.widget._updateGui()

    def onPlaceRods(self) -> None:
        """One (unplaced) point per rod of the chosen phantom; click the rods in the order listed."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not start placing the rods.")):
            p = self.widget._parameterNode
            p.rodPoints = self.logic.mrml.prepareRodPoints(p.calibrationPhantom, p.rodPoints)
            self._startPlacingList(p.rodPoints)

    def onPlaceTissues(self) -> None:
        """One (unplaced) point per reference tissue; click air, fat, muscle, aorta, cortical bone."""
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not start placing the tissue points.")):
            p = self.widget._parameterNode
            p.tissuePoints = self.logic.mrml.prepareTissuePoints(p.tissuePoints)
            self._startPlacingList(p.tissuePoints)

    def _startPlacingList(self, pointsNode) -> None:
        """Place the list's unplaced points one click each; when none is left, stop and fit."""
        self.stopPlacingList()
        self.placingList = pointsNode
        self.addObserver(pointsNode, pointsNode.PointPositionDefinedEvent, self._onListPointPlaced)
        self.logic.startPlacingList(pointsNode)

    def stopPlacingList(self) -> None:
        """End the persistent place mode a rod/tissue placement started (if any)."""
        if self.placingList is None:
            return
        self.removeObserver(self.placingList, self.placingList.PointPositionDefinedEvent, self._onListPointPlaced)
        self.placingList = None
        self.logic.stopPlacing()

    def _onListPointPlaced(self, caller, event) -> None:
        if any(caller.GetNthControlPointPositionStatus(i) != caller.PositionDefined
               for i in range(caller.GetNumberOfControlPoints())):
            return
        self.stopPlacingList()
        self.onApplyCalibration()

    def onBrowseCalibrationFile(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Saved OsteoROI calibration"), "",
                                              _("Calibration (*.json)"))
        if path:
            self.widget._parameterNode.calibrationFile = path

    def onSaveCalibration(self) -> None:
        path = qt.QFileDialog.getSaveFileName(None, _("Save the calibration"), "osteoroi-calibration.json",
                                              _("Calibration (*.json)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not save the calibration.")):
            # The file dialog has already asked whether to replace an existing file.
            written = self.logic.mrml.saveCalibration(path, overwrite=os.path.exists(path))
            self.ui.statusLabel.text = _("Written: {paths}").format(paths=written)



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

        uiWidget = slicer.util.loadUI(moduleResourcePath("UI/OsteoROI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # MRML widgets get the scene through the "mrmlSceneChanged(vtkMRMLScene*)" connections of the .ui.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = OsteoROILogic()
        self.logic.setLiveUpdate(self._deferred, self._onLiveUpdate)
        self.casePanel = OsteoROICasePanel(self.ui, self.logic)
        self.calibrationPanel = OsteoROICalibrationPanel(self)

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
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        self.calibrationPanel.removeObservers()
        if self.logic is not None:
            self.logic.mrml.detach()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module: disconnect the GUI, end placing."""
        self.calibrationPanel.stopPlacingList()
        self.setParameterNode(None)

    def onReload(self) -> None:
        """Developer's Reload: Slicer re-executes only OsteoROI.py, so drop OsteoROILib's modules
        first; the re-executed file imports the edited library."""
        for name in [n for n in sys.modules if n == "OsteoROILib" or n.startswith("OsteoROILib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def onSceneStartClose(self, caller, event) -> None:
        """The scene is closing: forget its nodes, including the cached copy of the CT's voxels."""
        self.calibrationPanel.stopPlacingList()
        self.setParameterNode(None)
        self.logic.forgetScene()

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
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # connectParametersToGui returns its tag in every Slicer 5.6-5.10 (connectGui only
            # from 5.10), so that disconnectGui really disconnects when the module is left.
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(self._boundWidgets())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _boundWidgets(self) -> dict:
        """``{parameter name: widget}`` of the widgets with a "SlicerParameterName" property in the .ui."""
        widgets = {}
        for widget in self.ui.__dict__.values():
            name = widget.property("SlicerParameterName")
            if name:
                widgets[name] = widget
        return widgets

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
        self.ui.placeFromSegmentationButton.enabled = bool(p.inputVolume and p.inputSegmentation)
        self.calibrationPanel.update(p)
        self.ui.resultsTableView.setMRMLTableNode(self.logic.mrml.tableNode())
        hasResults = bool(self.logic.mrml.rows())
        for button in (self.ui.exportCsvButton, self.ui.exportJsonButton, self.ui.exportHtmlButton,
                       self.ui.showPlotButton):
            button.enabled = hasResults
        self.casePanel.update(p, hasResults)
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
            self.logic.applyCalibrationFromParameterNode(p)
            tableNode = self.logic.run(
                p.inputVolume,
                p.inputPoints,
                calibration=KEEP_CALIBRATION,
                shapes=self.logic.shapesFromParameterNode(p),
                criteria=p.criteria or None,
                slabMm=p.slabMm,
                tableNode=p.outputTable,
            )
            p.outputTable = tableNode
            self._showStatus()
            self._updateGui()
            self.casePanel.onShowDiagnosis()

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
                p.outputTable = mrml.watch(p.inputVolume, p.inputPoints, calibration=KEEP_CALIBRATION,
                                           shapes=self.logic.shapesFromParameterNode(p),
                                           criteria=p.criteria or None, slabMm=p.slabMm)
            self.logic.startPlacing(p.inputPoints, level)

    def onPlaceFromSegmentation(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not place from the segmentation."), waitCursor=True):
            p = self._parameterNode
            self.logic.applyCalibrationFromParameterNode(p)
            tableNode = self.logic.mrml.runFromSegmentation(
                p.inputVolume, p.inputSegmentation, calibration=KEEP_CALIBRATION,
                shapes=self.logic.shapesFromParameterNode(p), criteria=p.criteria or None, slabMm=p.slabMm)
            p.inputPoints = self.logic.mrml.pointsNode()
            p.outputTable = tableNode
            self._showStatus()
            self._updateGui()

    def onExcludeLevel(self, level: str, excluded: bool) -> None:
        if self._updatingLevelWidgets or not self.logic.mrml.rows():
            return
        with slicer.util.tryWithErrorDisplay(_("OsteoROI could not change the exclusion.")):
            self.logic.mrml.setExcluded(level, excluded, EXCLUSION_REASONS[self.ui.exclusionReasonComboBox.currentIndex])
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
                written = self.logic.exportReportFromParameterNode(self._parameterNode, path, overwrite=overwrite)
            self.ui.statusLabel.text = _("Written: {paths}").format(paths=", ".join(written))


#
# OsteoROILogic
#


class OsteoROILogic(ScriptedLoadableModuleLogic):
    """The module logic: ``OsteoROILib.mrml.logic.OsteoROIMRMLLogic`` on ``slicer.mrmlScene``.

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

    def forgetScene(self) -> None:
        """Stop observing the scene's nodes and drop the MRML logic with its cached volume copy
        (called when the scene closes; the next use starts a fresh one)."""
        if self._mrml is not None:
            self._mrml.detach()
        self._mrml = None

    def setLiveUpdate(self, scheduler, onUpdate) -> None:
        """Throttle live updates with ``scheduler(callback)`` and report them to ``onUpdate(mrmlLogic)``."""
        self._scheduler, self._onUpdate = scheduler, onUpdate
        self.mrml.scheduler, self.mrml.onUpdate = scheduler, onUpdate

    def getParameterNode(self):
        return OsteoROIParameterNode(super().getParameterNode())

    @staticmethod
    def shapesFromParameterNode(parameterNode) -> List[str]:
        return [name for name in SHAPE_NAMES if getattr(parameterNode, SHAPE_PARAMETERS[name])]

    def applyCalibrationFromParameterNode(self, parameterNode) -> dict:
        """Set or fit the calibration the GUI selects; returns ``mrml.calibrationSummary()``.

        none: HU only; saved: the calibration file; manual: slope/intercept/unit; phantom: fit
        from the rod point list (labelled by rod name) of the chosen phantom; internal: fit from
        the tissue point list. Phantom and internal calibrations then re-fit when a point moves.
        """
        p = parameterNode
        mode = p.calibrationMode
        mrml = self.mrml
        if mode == "none":
            mrml.setCalibration(None)
        elif mode == "saved":
            if not p.calibrationFile:
                raise InputError("No calibration file is chosen.",
                                 "Choose a saved calibration (.json) or another mode.")
            mrml.setCalibration(p.calibrationFile)
        elif mode == "manual":
            mrml.setManualCalibration(p.manualSlope, p.manualIntercept, p.manualUnit)
        elif mode == "phantom":
            if p.rodPoints is None:
                raise InputError("No rod points are placed.",
                                 "Click 'Auto-detect rods', or 'Place rods' and click each rod of the phantom.")
            mrml.calibrateFromRods(p.rodPoints, p.calibrationPhantom, volumeNode=p.inputVolume)
        elif mode == "internal":
            if p.tissuePoints is None:
                raise InputError("No reference tissue points are placed.",
                                 "Click 'Place tissue points' and click air, fat, muscle and the aorta (at least 3).")
            mrml.calibrateFromTissues(p.tissuePoints, volumeNode=p.inputVolume)
        else:
            raise InputError(f"Unknown calibration mode {mode!r}.", "Choose none, saved, manual, phantom or internal.")
        return mrml.calibrationSummary()

    def run(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
            criteria=None, slabMm: Optional[float] = None, force: bool = False, tableNode=None):
        """Place the ROIs of every labelled level and measure them; returns the results table node.

        See ``OsteoROILib.mrml.logic.OsteoROIMRMLLogic.run`` for the arguments.
        """
        logging.info("OsteoROI %s: measuring", __version__)
        table = self.mrml.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                              slabMm=slabMm, force=force, tableNode=tableNode)
        for warning in sorted({w for r in self.mrml.rows() for w in r.get("warnings", [])}):
            logging.warning("OsteoROI: %s", warning)
        return table

    def measure(self, volumeNode, pointsNode, shapes: Optional[Sequence[str]] = None,
                slabMm: Optional[float] = None) -> dict:
        """Plain measurement without scene changes: ``OsteoROILib.placement.measure.measure_levels``' result."""
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

    def exportReport(self, htmlPath: str, overwrite: bool = False, patient: Optional[dict] = None,
                     priorFile: str = "", priorTable=None, signOff=None) -> List[str]:
        """The HTML report; with ``patient`` facts (age, sex, menopause, fragility_fracture) and a
        prior study (``priorFile`` JSON or ``priorTable``) it includes them and the follow-up;
        ``signOff``: ``OsteoROILib.mrml.signed_report.sign_off(reader, date, comment)``."""
        prior = prior_document(priorFile, priorTable)
        priorName = priorFile or (priorTable.GetName() if priorTable is not None else "")
        return export_case_report(self.mrml, htmlPath, patient=patient, prior=prior, priorName=priorName,
                                  overwrite=overwrite, sign_off=signOff)

    def diagnosis(self, patient: Optional[dict] = None, priorFile: str = "", priorTable=None) -> dict:
        """The diagnosis document (categories per criterion, lead criterion, warnings, follow-up)."""
        prior = prior_document(priorFile, priorTable)
        priorName = priorFile or (priorTable.GetName() if priorTable is not None else "")
        return case_diagnosis(self.mrml, patient=patient, prior=prior, priorName=priorName)

    @staticmethod
    def patientFromParameterNode(p) -> dict:
        return {"age": p.patientAge, "sex": p.patientSex, "menopause": p.menopause,
                "fragility_fracture": p.fragilityFracture}

    def diagnosisFromParameterNode(self, p) -> dict:
        return self.diagnosis(self.patientFromParameterNode(p), p.priorResultFile, p.priorTable)

    def exportReportFromParameterNode(self, p, htmlPath: str, overwrite: bool = False) -> List[str]:
        prior = prior_document(p.priorResultFile, p.priorTable)
        return export_case_report(self.mrml, htmlPath, patient=self.patientFromParameterNode(p), prior=prior,
                                  priorName=self._priorName(p), overwrite=overwrite,
                                  sign_off=self.signOffFromParameterNode(p))

    @staticmethod
    def signOffFromParameterNode(p):
        return sign_off(p.readerName, p.signedDate, p.readerComment)

    @staticmethod
    def _priorName(p) -> str:
        return p.priorResultFile or (p.priorTable.GetName() if p.priorTable is not None else "")

    @staticmethod
    def pdfBrowser() -> Optional[str]:
        """The browser that prints the PDF report (None: none found; the HTML report prints from any browser)."""
        return pdf_browser()

    def exportPdfFromParameterNode(self, p, pdfPath: str, overwrite: bool = False) -> List[str]:
        """The case's report, with the reader's comment and sign-off, printed to PDF."""
        return export_case_pdf(self.mrml, pdfPath, patient=self.patientFromParameterNode(p),
                               prior=prior_document(p.priorResultFile, p.priorTable), priorName=self._priorName(p),
                               signOff=self.signOffFromParameterNode(p), overwrite=overwrite)

    def exportDicomFromParameterNode(self, p, srPath: str, overwrite: bool = False, ask=None, install=None) -> List[str]:
        """The DICOM SR and, when a browser prints the PDF, the Encapsulated PDF beside it
        (``mrml.signed_report.export_case_dicom``; ``ask``/``install`` install highdicom when missing)."""
        return export_case_dicom(self.mrml, srPath, pdfDicomPath=encapsulated_pdf_path(srPath) if pdf_browser() else None,
                                 patient=self.patientFromParameterNode(p),
                                 prior=prior_document(p.priorResultFile, p.priorTable), priorName=self._priorName(p),
                                 signOff=self.signOffFromParameterNode(p), overwrite=overwrite, ask=ask, install=install)

    @staticmethod
    def startPlacing(pointsNode, level: str) -> None:
        """Let the next click in a view place ``level``'s point (an existing one is re-placed)."""
        if level not in LEVEL_NAMES:
            raise ValueError(f"Unknown level {level!r}")
        index = next((i for i in range(pointsNode.GetNumberOfControlPoints())
                      if pointsNode.GetNthControlPointLabel(i).strip().upper() == level), None)
        if index is None:
            index = pointsNode.AddControlPoint(vtk.vtkVector3d(0, 0, 0), level)
        # Undefined (not Preview, which a click elsewhere in the list would take first) and the
        # placement start: the next click in a view places exactly this level (Slicer markups).
        pointsNode.UnsetNthControlPointPosition(index)
        pointsNode.SetControlPointPlacementStartIndex(index)
        slicer.modules.markups.logic().SetActiveList(pointsNode)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(False)
        interaction.SetCurrentInteractionMode(interaction.Place)

    @staticmethod
    def startPlacingList(pointsNode) -> None:
        """Let the next clicks place the list's unplaced points in order (rods or reference tissues)."""
        slicer.modules.markups.logic().SetActiveList(pointsNode)
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(True)
        interaction.SetCurrentInteractionMode(interaction.Place)

    @staticmethod
    def stopPlacing() -> None:
        """Back to view mode, with place-mode persistence off (Slicer's default)."""
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetPlaceModePersistence(False)
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)


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
        self.test_OsteoROI_calibration()
        self.setUp()
        self.test_OsteoROI_edit_and_persist()
        self.setUp()
        self.test_OsteoROI_errors()
        self.setUp()
        self.test_OsteoROI_signed_report()

    def _loadPhantom(self):
        from OsteoROILib.digital_phantom import make_phantom

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
        self.assertIs(logic.run(volumeNode, pointsNode, shapes=shapes, criteria="seed002-hu"), tableNode)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.assertEqual([volumeNode.GetName(), pointsNode.GetName()], nodeNames)
        self.delayDisplay("Phantom test passed")

    def test_OsteoROI_calibration(self):
        """Rods found automatically give vBMD = the phantom's trabecular density; rods re-fit when moved;
        internal (tissue points), manual and the GUI's parameter-node path work too."""
        volumeNode, pointsNode, truth = self._loadPhantom()
        logic = OsteoROILogic()
        rods = logic.mrml.autoDetectRods("qrm-bdc-6", volumeNode=volumeNode)
        self.assertEqual([rods.GetNthControlPointLabel(i) for i in range(rods.GetNumberOfControlPoints())],
                         [rod.name for rod in truth.rods])
        cal = logic.mrml.calibration()
        self.assertAlmostEqual(cal.slope, truth.scanner.slope, delta=0.02 * truth.scanner.slope)
        expectedHu = {rod.name: rod.expected_hu for rod in truth.rods}
        for point in logic.mrml.calibrationSummary()["fit"]["points"]:
            sem = point["sd_hu"] / np.sqrt(point["n_voxels"])
            self.assertAlmostEqual(point["mean_hu"], expectedHu[point["name"]], delta=4.0 * sem + 1.0)
        tableNode = logic.run(volumeNode, pointsNode, shapes=["oval"], criteria="qct-acr2018")
        self.assertEqual(tableNode.GetColumnUnitLabel("vBMD"), "mg/cm3 HA")
        density = {level.name: float(level.trabecular_density) for level in truth.levels}
        for row in logic.rows():
            sem = row["sd_hu"] / np.sqrt(row["n_voxels"]) / cal.slope
            self.assertAlmostEqual(row["vbmd_mg_cm3"], density[row["level"]],
                                   delta=3.0 * (row["vbmd_sd"] + sem) + self.MEAN_TOLERANCE_HU / cal.slope)
        self.assertIn("R\u00b2", logic.mrml.calibrationSummary()["text"])
        # A rod point moved out of its rod re-fits at once (no GUI timer here): the rod is flagged.
        p = [0.0, 0.0, 0.0]
        rods.GetNthControlPointPosition(3, p)
        rods.SetNthControlPointPosition(3, p[0], p[1] + 11.0, p[2])
        summary = logic.mrml.calibrationSummary()
        self.assertTrue(summary["error"] or any(q["flagged"] for q in summary["fit"]["points"]))
        rods.SetNthControlPointPosition(3, *p)
        self.assertIsNone(logic.mrml.calibrationSummary()["error"])
        # Internal calibration from reference tissue points (Michalski 2020).
        tissues = logic.mrml.prepareTissuePoints()
        marks = truth.landmarks
        where = {"air": marks["air"], "adipose": marks["subcutaneous_fat"],
                 "muscle": marks["paraspinal_muscle_right"], "blood": marks["aorta"]}
        for i in range(tissues.GetNumberOfControlPoints()):
            label = tissues.GetNthControlPointLabel(i)
            if label in where:
                tissues.SetNthControlPointPosition(i, *[float(x) for x in where[label]])
        self.assertEqual(logic.mrml.calibrateFromTissues(tissues).kind, "internal")
        self.assertTrue(all(r["vbmd_mg_cm3"] is not None for r in logic.rows()))
        # Manual, and the GUI's path through the parameter node.
        logic.mrml.setManualCalibration(1.25, -10.0, "HA")
        for row in logic.rows():
            self.assertAlmostEqual(row["vbmd_mg_cm3"], (row["mean_hu"] + 10.0) / 1.25, places=9)
        parameterNode = logic.getParameterNode()
        parameterNode.inputVolume = volumeNode
        parameterNode.calibrationMode = "phantom"
        parameterNode.calibrationPhantom = "qrm-bdc-6"
        parameterNode.rodPoints = rods
        summary = logic.applyCalibrationFromParameterNode(parameterNode)
        self.assertEqual(summary["mode"], "phantom")
        parameterNode.calibrationMode = "none"
        logic.applyCalibrationFromParameterNode(parameterNode)
        self.assertIsNone(logic.mrml.calibration())
        self.assertEqual(tableNode.GetColumnIndex("vBMD"), -1)
        self.delayDisplay("Calibration test passed")

    def test_OsteoROI_edit_and_persist(self):
        """Moving an ROI re-measures; the scene saved as .mrb and loaded again restores the results."""
        import tempfile

        volumeNode, pointsNode, _truth = self._loadPhantom()
        logic = OsteoROILogic()
        logic.mrml.autoDetectRods("qrm-bdc-6", volumeNode=volumeNode)
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
        self.assertEqual(restored.mrml.calibrationSummary()["fit"], logic.mrml.calibrationSummary()["fit"])
        self.assertTrue(all(r["vbmd_mg_cm3"] is not None for r in restored.rows()))
        self.delayDisplay("Edit and persistence test passed")

    def test_OsteoROI_errors(self):
        """Bad input raises an error that says what to do, and adds no node."""
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

    def test_OsteoROI_signed_report(self):
        """The reader's comment and sign-off are in the HTML report; a CT not loaded from the DICOM
        database gets no SR, and the error says why."""
        import tempfile

        volumeNode, pointsNode, _truth = self._loadPhantom()
        logic = OsteoROILogic()
        logic.run(volumeNode, pointsNode, shapes=["oval"], criteria="seed002-hu")
        p = logic.getParameterNode()
        p.readerComment, p.readerName, p.signedDate = "Compare with the DXA.", "Reader^Paula", "2024-02-01"
        folder = tempfile.mkdtemp()
        html = os.path.join(folder, "signed.html")
        logic.exportReportFromParameterNode(p, html)
        with open(html, encoding="utf-8") as f:
            text = f.read()
        for expected in ("Compare with the DXA.", "Reader^Paula", "1 February 2024"):
            self.assertIn(expected, text)
        with self.assertRaises(OsteoROIError) as cm:
            logic.exportDicomFromParameterNode(p, os.path.join(folder, "sr.dcm"))
        self.assertIn("not loaded from Slicer's DICOM database", str(cm.exception))
        self.assertFalse(os.path.exists(os.path.join(folder, "sr.dcm")))
        self.delayDisplay("Signed report test passed")
