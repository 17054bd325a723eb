"""A case finished in the GUI: DICOM facts of a volume from Slicer's DICOM database, patient facts
in the panel, the diagnosis shown, the follow-up against a prior study, the report exported.

Slicer's DICOM database is a stand-in with the two calls the module uses (``fileForInstance``,
``fileValue``, as ``ctkDICOMDatabase`` answers them); everything else is the real slicer-core scene.
Oracles: the tags given to the stand-in database, the QCT/HU criteria's published rules as the
diagnosis package states them (kV ≠ 120 and contrast warnings), and the least significant change
2.77 × precision (QCT_BRIEF §5).
"""
from __future__ import annotations

import json
import os

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.nodes import volume_from_node  # noqa: E402
from OsteoROILib.mrml.patient import DICOM_UIDS_ATTRIBUTE, dicom_facts_from_node  # noqa: E402
from slicer_standin import StandIn, add_phantom_case, headless_scene, phantom_case  # noqa: E402

TAGS = {"0008,0060": "CT", "0018,0060": "100", "0018,0010": "IOMERON 400", "0008,0070": "SIEMENS",
        "0008,1090": "SOMATOM Force", "0018,1210": "Br40", "0018,0050": "1.0", "0010,1010": "071Y",
        "0010,0040": "F", "0008,0020": "20240115", "0010,0020": "PAT-0042"}


class DicomDatabase:
    """ctkDICOMDatabase's fileForInstance/fileValue for one series."""

    def __init__(self, tags):
        self.tags = tags

    def fileForInstance(self, uid):
        return f"/dicom/{uid}.dcm" if uid.startswith("1.2.3.") else ""

    def fileValue(self, path, tag):
        return self.tags.get(tag, "")


phantom = pytest.fixture(scope="module")(phantom_case)
headless = pytest.fixture(headless_scene)


def _dicom_volume(headless, phantom):
    node, points = add_phantom_case(headless.scene, phantom, "CT from DICOM")
    node.SetAttribute(DICOM_UIDS_ATTRIBUTE, "1.2.3.1 1.2.3.2 1.2.3.3")
    return node, points


def test_volume_from_node_keeps_the_dicom_facts(monkeypatch, headless, phantom):
    node, points = _dicom_volume(headless, phantom)
    monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(TAGS), raising=False)
    facts = volume_from_node(node).facts
    assert facts["kvp"] == 100.0 and facts["contrast_agent"] == "IOMERON 400"
    assert facts["patient_age"] == "071Y" and facts["patient_sex"] == "F" and facts["slice_thickness_mm"] == 1.0
    # The result document carries them, so the diagnosis warns about kV and contrast.
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(node, points, shapes=["oval"])
    assert logic.document()["volume"]["dicom"]["kvp"] == 100.0
    # A volume not loaded from the database (or no database) has no facts.
    monkeypatch.setattr(slicer, "dicomDatabase", None, raising=False)
    assert dicom_facts_from_node(node) == {}
    node.RemoveAttribute(DICOM_UIDS_ATTRIBUTE)
    assert dicom_facts_from_node(node, DicomDatabase(TAGS)) == {}


def test_a_case_in_the_panel(monkeypatch, headless, phantom, tmp_path):
    """DICOM facts shown and copied into the patient fields; the diagnosis shown after measuring;
    the follow-up against a prior result JSON and against a prior table; the report exported."""
    monkeypatch.setattr(slicer, "dicomDatabase", DicomDatabase(TAGS), raising=False)
    standin = StandIn(monkeypatch, headless)
    module = standin.load_module()
    node, points = _dicom_volume(headless, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    ui, p = widget.ui, widget._parameterNode
    assert "PAT-0042" in ui.dicomFactsLabel.text and "100 kV" in ui.dicomFactsLabel.text
    assert "IOMERON" in ui.dicomFactsLabel.text
    assert (p.patientAge, p.patientSex) == ("071Y", "F")
    assert ui.patientAgeLineEdit.text == "071Y" and ui.patientSexComboBox.currentText == "F"
    assert not ui.diagnoseButton.enabled
    ui.inputPointsSelector.setCurrentNode(points)
    ui.applyButton.click()
    assert not standin.errors, standin.errors
    text = ui.diagnosisLabel.text
    # The impression the report states comes first; its lead category is the lead verdict's.
    assert text.startswith("Impression:\n") and "\nLead: seed002-hu" in text
    lead = next(v for v in widget.logic.diagnosisFromParameterNode(p)["verdicts"] if v.get("lead"))
    assert lead["category"] and lead["category"] in text.split("\nLead:")[0]
    assert "Woman aged 71" in text and "100 kV" in text and "Contrast agent recorded (IOMERON 400)" in text
    # Excluded levels carry their reason into the diagnosis: a focal lesion at L3, a fracture at L2.
    ui.exclusionReasonComboBox.setCurrentIndex(ui.exclusionReasonComboBox.findText("focal lesion"))
    ui.excludeL3CheckBox.setUserChecked(True)
    ui.genantL2ComboBox.setCurrentIndex(3)  # "2 moderate"
    ui.diagnoseButton.click()
    assert "Excluded: L2 (fracture, " in ui.diagnosisLabel.text and "L3 (focal lesion)" in ui.diagnosisLabel.text
    # The user corrects the facts: pre-menopausal, so the categories are not applied.
    ui.menopauseComboBox.setCurrentIndex(ui.menopauseComboBox.findText("pre"))
    ui.diagnoseButton.click()
    assert "Pre-menopausal woman" in ui.diagnosisLabel.text
    # Follow-up against a prior result JSON: the same study, so no change beyond the LSC.
    prior = tmp_path / "prior.json"
    widget.logic.exportResults(jsonPath=str(prior))
    doc = json.loads(prior.read_text())
    for row in doc["rows"]:
        row["mean_hu"] = row["mean_hu"] * 1.2  # 20 % more a year ago: a significant loss now
    prior.write_text(json.dumps(doc))
    ui.priorResultFileLineEdit.setUserText(str(prior))
    ui.diagnoseButton.click()
    assert not standin.errors, standin.errors
    assert "Follow-up seed002-hu" in ui.diagnosisLabel.text and "significant loss" in ui.diagnosisLabel.text
    # ... or against the results table of a prior study in the scene.
    ui.priorResultFileLineEdit.setUserText("")
    ui.priorTableSelector.setCurrentNode(widget.logic.mrml.tableNode())
    ui.diagnoseButton.click()
    assert "Follow-up seed002-hu" in ui.diagnosisLabel.text and "stable" in ui.diagnosisLabel.text
    # The HTML report of the case.
    report = str(tmp_path / "case.html")
    standin.file_dialog_answers.append(report)
    ui.exportHtmlButton.click()
    assert not standin.errors, standin.errors
    html = open(report, encoding="utf-8").read()
    assert "Pre-menopausal" in html and os.path.getsize(report) > 10000
