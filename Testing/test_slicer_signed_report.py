"""The signed report from the Slicer panel: the reader's comment and sign-off in the exported report,
the PDF (or, without a browser, the offer of the HTML), and the DICOM SR + Encapsulated PDF for PACS.

The widget runs on the Slicer stand-in over a real slicer-core scene (``slicer_standin``). Oracles:
the text typed into the panel, the UIDs and slice positions this test wrote as a DICOM series
(``test_export_dicom_sr.write_phantom_series``), the phantom's configured trabecular HU, and the PDF
and SR read back by other libraries (pypdf, pydicom/highdicom, dciodvfy when installed).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from OsteoROILib.errors import OsteoROIError  # noqa: E402
from OsteoROILib.mrml import signed_report  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.patient import DICOM_UIDS_ATTRIBUTE, dicom_source_files  # noqa: E402
from slicer_standin import StandIn, add_phantom_case, headless_scene, phantom_case  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")
COMMENT = "Compare with the DXA of March.\nNo fracture seen on the sagittal images."
READER = "Dr Paula Reader"

phantom = pytest.fixture(scope="module")(phantom_case)
headless = pytest.fixture(headless_scene)


def _measured_widget(monkeypatch, headless, volumeNode, pointsNode):
    """The module's widget entered, the CT and levels selected, measured, with the sign-off typed in."""
    standin = StandIn(monkeypatch, headless)
    module = standin.load_module()
    widget = standin.make_widget(module)
    standin.enter(widget)
    ui = widget.ui
    ui.inputVolumeSelector.setCurrentNode(volumeNode)
    ui.inputPointsSelector.setCurrentNode(pointsNode)
    for shape in ("Round", "Front", "Left", "Right"):  # the oval only: a faster case
        getattr(ui, f"{shape.lower()}CheckBox").setUserChecked(False)
    ui.applyButton.click()
    assert not standin.errors, standin.errors
    ui.readerCommentTextEdit.setUserText(COMMENT)
    ui.readerNameLineEdit.setUserText(READER)
    ui.signedDateLineEdit.setUserText("2024-02-01")
    return standin, widget


def _no_browser(monkeypatch, tmp_path):
    """No browser on PATH nor in the default install folders."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(signed_report, "installed_browser", lambda: None)


def test_the_report_carries_the_readers_comment_and_sign_off(monkeypatch, headless, phantom, tmp_path):
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    p = widget._parameterNode
    assert (p.readerComment, p.readerName, p.signedDate) == (COMMENT, READER, "2024-02-01")
    assert widget.ui.exportPdfButton.enabled and widget.ui.exportDicomButton.enabled
    # The panel shows the impression as it will be signed.
    widget.ui.diagnoseButton.click()
    impression = widget.ui.diagnosisLabel.text.split("\nLead:")[0]
    assert "Reader's comment: Compare with the DXA of March." in impression
    assert f"Signed: {READER}, 1 February 2024" in impression
    report = tmp_path / "signed.html"
    standin.file_dialog_answers.append(str(report))
    widget.ui.exportHtmlButton.click()
    assert not standin.errors, standin.errors
    html = report.read_text(encoding="utf-8")
    assert "Compare with the DXA of March." in html and "No fracture seen on the sagittal images." in html
    assert READER in html and "1 February 2024" in html
    # The sign-off is the scene's: saved with it, back in the fields when the module is entered again.
    standin.exit(widget)
    standin.enter(widget)
    assert widget.ui.readerCommentTextEdit.toPlainText() == COMMENT and widget.ui.readerNameLineEdit.text == READER


def test_without_a_browser_the_pdf_button_offers_the_html_report(monkeypatch, headless, phantom, tmp_path):
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    _no_browser(monkeypatch, tmp_path)
    # "No": nothing is written, nothing is reported as an error.
    widget.ui.exportPdfButton.click()
    assert len(standin.questions) == 1 and "No browser that prints to PDF" in standin.questions[0]
    assert "HTML report instead" in standin.questions[0] and not standin.errors
    assert not list(tmp_path.glob("*.pdf")) and not list(tmp_path.glob("*.html"))
    # "Yes": the HTML report is written, with the sign-off.
    standin.confirm_answers.append(True)
    report = tmp_path / "instead.html"
    standin.file_dialog_answers.append(str(report))
    widget.ui.exportPdfButton.click()
    assert not standin.errors, standin.errors
    assert READER in report.read_text(encoding="utf-8")
    # The logic refuses before writing anything, with a remedy that names the HTML report button.
    with pytest.raises(OsteoROIError) as exc:
        widget.logic.exportPdfFromParameterNode(widget._parameterNode, str(tmp_path / "r.pdf"))
    assert "'HTML report'" in exc.value.remedy and not (tmp_path / "r.pdf").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium/Chrome to print the PDF (apt-get install chromium)")
def test_the_pdf_report_is_printed_with_the_sign_off(monkeypatch, headless, phantom, tmp_path):
    pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF back (test extras)")
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    pdf = tmp_path / "signed.pdf"
    standin.file_dialog_answers.append(str(pdf))
    widget.ui.exportPdfButton.click()
    assert not standin.errors, standin.errors
    text = " ".join(" ".join(page.extract_text().split()) for page in pypdf.PdfReader(str(pdf)).pages)
    assert "Compare with the DXA of March." in text and READER in text and "1 February 2024" in text
    assert str(pdf) in widget.ui.statusLabel.text


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium/Chrome to print the PDF (apt-get install chromium)")
def test_a_browser_off_path_in_its_install_folder_prints_the_pdf(monkeypatch, headless, phantom, tmp_path):
    """Windows and macOS installers put no browser on PATH: the default install folder is used."""
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    _no_browser(monkeypatch, tmp_path)
    monkeypatch.setattr(signed_report, "installed_browser", lambda: os.path.realpath(CHROMIUM))
    pdf = tmp_path / "off-path.pdf"
    standin.file_dialog_answers.append(str(pdf))
    widget.ui.exportPdfButton.click()
    assert not standin.errors and not standin.questions, standin.errors
    assert pdf.read_bytes().startswith(b"%PDF")


def test_without_dicom_sources_no_sr_is_written_and_the_panel_says_why(monkeypatch, headless, phantom, tmp_path):
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)  # an array, not a DICOM series
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    monkeypatch.setattr(signed_report, "missing_sr_packages", lambda: ["highdicom"])
    sr = tmp_path / "sr.dcm"
    standin.file_dialog_answers.append(str(sr))
    widget.ui.exportDicomButton.click()
    assert len(standin.errors) == 1 and "not loaded from Slicer's DICOM database" in standin.errors[0]
    assert "no source images for the SR" in standin.errors[0]
    assert not standin.questions and not standin.pip_installs  # nothing to install highdicom for
    assert not list(tmp_path.iterdir())


def test_missing_highdicom_is_installed_only_when_the_user_agrees(monkeypatch):
    installed = []
    missing = ["highdicom"]
    monkeypatch.setattr(signed_report, "missing_sr_packages", lambda: list(missing))

    def install(requirements):
        installed.append(requirements)
        missing.clear()

    assert signed_report.ensure_sr_packages(lambda question: False, install) is False and installed == []
    questions = []
    assert signed_report.ensure_sr_packages(lambda q: questions.append(q) or True, install) is True
    assert installed == ["highdicom"] and "highdicom" in questions[0]
    assert signed_report.ensure_sr_packages(lambda q: pytest.fail("asked again"), install) is True


# ------------------------------------------------------------------------------------------------
# A CT loaded from Slicer's DICOM database
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dicom_exam(tmp_path_factory):
    """The digital phantom written as a DICOM CT series (by the SR export's own test helper)."""
    pydicom = pytest.importorskip("pydicom", reason="the DICOM export needs pydicom (extra: pip install -e '.[sr]')")
    pytest.importorskip("highdicom", reason="the DICOM export needs highdicom (extra: pip install -e '.[sr]')")
    from OsteoROILib.digital_phantom import make_phantom
    from test_export_dicom_sr import write_phantom_series

    folder = tmp_path_factory.mktemp("slicer_dicom_ct")
    volume, truth = make_phantom(orientation="RAS", calibration_phantom=False, table=False, aorta=False)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    sops = write_phantom_series(volume, str(folder), study, series)
    return {"folder": str(folder), "truth": truth, "study": study, "sops": sops}


def _dicom_case(headless, dicom_exam, monkeypatch):
    from slicer_standin import add_dicom_volume

    volumeNode, database = add_dicom_volume(headless.scene, dicom_exam["folder"])
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    pointsNode = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
    for level in dicom_exam["truth"].levels:
        pointsNode.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
    return volumeNode, pointsNode, database


def test_the_sr_of_a_dicom_ct_is_written_into_its_study_and_reads_back(monkeypatch, headless, dicom_exam, tmp_path):
    import highdicom as hd
    import pydicom

    volumeNode, pointsNode, _db = _dicom_case(headless, dicom_exam, monkeypatch)
    standin, widget = _measured_widget(monkeypatch, headless, volumeNode, pointsNode)
    if CHROMIUM is None:
        _no_browser(monkeypatch, tmp_path)
    sr_path = tmp_path / "case-sr.dcm"
    standin.file_dialog_answers.append(str(sr_path))
    widget.ui.exportDicomButton.click()
    assert not standin.errors, standin.errors
    sr = hd.sr.srread(str(sr_path))
    assert sr.StudyInstanceUID == dicom_exam["study"] and sr.PatientID == "PID-0042"
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {uid for uid, _ in dicom_exam["sops"]}
    groups = sr.content.get_planar_roi_measurement_groups()
    assert sorted(str(g.tracking_identifier) for g in groups) == [f"{lv} oval ROI" for lv in ("L1", "L2", "L3", "L4")]
    truth = {lv.name: lv.trabecular_hu for lv in dicom_exam["truth"].levels}
    z_of = dict(dicom_exam["sops"])
    for g in groups:
        level = str(g.tracking_identifier).split()[0]
        mean = [m for m in g.get_measurements() if m.derivation is not None and m.derivation.value == "373098007"
                and m.unit.value == "[hnsf'U]"]
        assert mean[0].value == pytest.approx(truth[level], abs=0.5)
        uid = g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        centre_z = next(float(lv.center_ras[2]) for lv in dicom_exam["truth"].levels if lv.name == level)
        assert abs(z_of[uid] - centre_z) < 10.0  # the ROI's slice lies in its vertebral body
    # Signed: the reader is the observer and the SR is final (not preliminary).
    assert sr.PreliminaryFlag == "FINAL" and sr.CompletionFlag == "COMPLETE"
    assert READER in str(sr.content)
    pdf_path = tmp_path / "case-sr-pdf.dcm"
    if CHROMIUM is None:
        assert not pdf_path.exists() and "No Encapsulated PDF" in widget.ui.statusLabel.text
    else:
        ds = pydicom.dcmread(str(pdf_path))
        assert ds.StudyInstanceUID == dicom_exam["study"] and ds.Modality == "DOC"
        assert bytes(ds.EncapsulatedDocument).startswith(b"%PDF")
        if shutil.which("dciodvfy"):
            for path in (sr_path, pdf_path):
                proc = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
                errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
                assert not errors, "\n".join(errors)


def test_a_series_whose_slices_left_the_database_is_refused(monkeypatch, headless, dicom_exam, tmp_path):
    volumeNode, pointsNode, database = _dicom_case(headless, dicom_exam, monkeypatch)
    uids = volumeNode.GetAttribute(DICOM_UIDS_ATTRIBUTE).split()
    assert len(dicom_source_files(volumeNode)) == len(uids) == len(dicom_exam["sops"])
    del database.files[uids[5]]  # one slice no longer in the database: the SR would draw on a wrong slice
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(volumeNode, pointsNode, shapes=["oval"])
    with pytest.raises(OsteoROIError) as exc:
        signed_report.export_case_dicom(logic, str(tmp_path / "sr.dcm"))
    assert f"1 of the {len(uids)} DICOM slices" in exc.value.problem and "Add DICOM data" in exc.value.remedy
    assert not os.listdir(tmp_path)
    # A file load of the same series (no instance UIDs on the node) has no sources at all.
    volumeNode.RemoveAttribute(DICOM_UIDS_ATTRIBUTE)
    assert dicom_source_files(volumeNode) == []
