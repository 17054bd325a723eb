"""The DICOM export for PACS: a TID 1500 SR and an Encapsulated PDF, read back with pydicom and highdicom
(and dciodvfy from dicom3tools when installed).

The digital phantom is written as a DICOM CT series by this test (pydicom), read and measured as
a user's series would be; the SR must reference that study and those slices. Oracles: the UIDs
and slice positions this test wrote, the phantom's configured trabecular HU, and the geometry of
the slices (pixel ↔ patient coordinates written here, not by the code under test).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.errors import OsteoROIError
from OsteoROILib.export.impression import SignOff
from OsteoROILib.export.measurement import build_document
from OsteoROILib.io.image_files import read_volume
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.family import SHAPE_NAMES

pydicom = pytest.importorskip("pydicom", reason="the DICOM export needs pydicom (extra: pip install -e '.[sr]')")
hd = pytest.importorskip("highdicom", reason="the DICOM export needs highdicom (extra: pip install -e '.[sr]')")
from OsteoROILib.export.dicom_sr import write_dicom_exports  # noqa: E402

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PDF_BYTES = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def write_phantom_series(volume, folder, study_uid, series_uid):
    """The phantom (RAS storage, axial) as CT slices: IPP/IOP/PixelSpacing derived here from its IJK→RAS."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    m = volume.ijk_to_ras
    assert np.allclose(m[:3, :3], np.diag(np.diag(m[:3, :3]))) and (np.diag(m)[:3] > 0).all()
    sx, sy, sz = np.diag(m)[:3]
    sops = []
    for k in range(volume.array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_STORAGE, pydicom.uid.generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", study_uid, series_uid
        ds.FrameOfReferenceUID, ds.SeriesNumber, ds.InstanceNumber = study_uid, 2, k + 1
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientAge = "DOE^JANE", "PID-0042", "F", "068Y"
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime, ds.StudyID = "19560101", "20240131", "101500", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.KVP, ds.SliceThickness = "ACC1", "", "120", f"{sz:g}"
        ras = m[:3, 3] + np.array([0.0, 0.0, k * sz])
        ds.ImagePositionPatient = [f"{-ras[0]:.4f}", f"{-ras[1]:.4f}", f"{ras[2]:.4f}"]
        ds.ImageOrientationPatient = ["-1", "0", "0", "0", "-1", "0"]  # +i is R (= −L), +j is A (= −P)
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.Rows, ds.Columns = volume.array.shape[1], volume.array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 15, 1, "1", "-1024"
        stored = np.clip(np.rint(volume.array[k] + 1024), -32768, 32767).astype("<i2")
        ds.PixelData = stored.tobytes()
        ds.save_as(os.path.join(folder, f"ct{k:03d}.dcm"), enforce_file_format=True)
        sops.append((ds.SOPInstanceUID, float(ras[2])))
    return sops


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom_ct")
    phantom, truth = make_phantom(orientation="RAS", calibration_phantom=False, table=False, aorta=False)
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    sops = write_phantom_series(phantom, str(folder), study, series)
    volume = read_volume(str(folder))
    points = {lv.name: list(lv.center_ras) for lv in truth.levels}
    outlines = {lv.name: lv.outline() for lv in truth.levels}
    m = measure_levels(volume, points, shapes=SHAPE_NAMES, outlines=outlines)
    doc = build_document(m, volume.describe())
    dx = build_diagnosis(doc, criteria=["seed002", "pickhardt"], patient={"age": 68, "sex": "F"})
    return {"folder": str(folder), "doc": doc, "dx": dx, "truth": truth, "study": study, "series": series,
            "sops": sops}


@pytest.fixture(scope="module")
def written(exam, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr")
    pdf = out / "report.pdf"
    pdf.write_bytes(PDF_BYTES)
    paths = write_dicom_exports(exam["dx"], exam["doc"], source=exam["folder"], sr_path=str(out / "sr.dcm"),
                                pdf_dicom_path=str(out / "pdf.dcm"), pdf_path=str(pdf),
                                sign_off=SignOff(reader="Reader^Paula", date="2024-02-01"))
    return {"sr": paths[0], "pdf": paths[1]}


def test_sr_references_the_source_study_and_carries_every_roi(exam, written):
    sr = hd.sr.srread(written["sr"])
    assert sr.StudyInstanceUID == exam["study"] and sr.PatientID == "PID-0042"
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    evidence = {item.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {uid for uid, _ in exam["sops"]}
    groups = sr.content.get_planar_roi_measurement_groups()
    rows = [r for r in exam["doc"]["rows"] if r.get("mean_hu") is not None]
    assert len(groups) == len(rows) == 4 * len(SHAPE_NAMES)


def test_each_roi_sits_on_its_slice_at_its_place(exam, written):
    sr = hd.sr.srread(written["sr"])
    z_of = dict(exam["sops"])
    truth = {lv.name: lv for lv in exam["truth"].levels}
    for group in sr.content.get_planar_roi_measurement_groups():
        level, shape = str(group.tracking_identifier).split()[:2]
        row = next(r for r in exam["doc"]["rows"] if r["level"] == level and r["shape"] == shape)
        region = group.roi
        uid = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID  # SELECTED FROM
        # the slice nearest the ROI's centre, from the positions this test wrote
        nearest = min(exam["sops"], key=lambda s: abs(s[1] - row["roi"]["center_ras"][2]))[0]
        assert uid == nearest
        # pixel (column, row) → RAS with the geometry written above: x_R = origin_R + (col − 0.5) × sx
        pts = region.value
        sx = sy = 1.0
        centre = pts[:-1].mean(axis=0)
        m = np.array([-160.0 + (centre[0] - 0.5) * sx, -92.0 + (centre[1] - 0.5) * sy])
        assert m == pytest.approx(row["roi"]["center_ras"][:2], abs=0.05)
        assert z_of[uid] == pytest.approx(row["roi"]["center_ras"][2], abs=1.25)
        mean = [mm for mm in group.get_measurements() if mm.derivation is not None
                and mm.derivation.value == "373098007" and mm.unit.value == "[hnsf'U]"]
        assert len(mean) == 1 and mean[0].value == pytest.approx(truth[level].trabecular_hu, abs=0.5)


def test_sr_carries_the_categories(exam, written):
    sr = hd.sr.srread(written["sr"])
    groups = sr.content.get_image_measurement_groups()
    verdicts = [v for v in exam["dx"]["verdicts"] if v["status"] == "ok"]
    assert len(groups) == len(verdicts)
    for g, v in zip(groups, verdicts):
        assert str(g.tracking_identifier) == f"{v['criterion_id']} {v['shape']}"
        cats = [q for q in g.get_qualitative_evaluations() if q.name.value == "CATEGORY"]
        assert cats[0].value.meaning == v["category"][:64]


def test_encapsulated_pdf_is_in_the_source_study(exam, written):
    ds = pydicom.dcmread(written["pdf"])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.Modality == "DOC"
    assert ds.StudyInstanceUID == exam["study"] and ds.PatientName == "DOE^JANE"
    assert bytes(ds.EncapsulatedDocument)[:len(PDF_BYTES)] == PDF_BYTES
    assert ds.EncapsulatedDocumentLength == len(PDF_BYTES)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_no_error(written):
    for path in written.values():
        proc = subprocess.run(["dciodvfy", "-new", path], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, "\n".join(errors)


def test_without_dicom_source_no_sr_is_written_and_says_why(exam, tmp_path):
    doc = dict(exam["doc"], volume=dict(exam["doc"]["volume"], file=str(tmp_path / "ct.nrrd")))
    with pytest.raises(OsteoROIError) as exc:
        write_dicom_exports(exam["dx"], doc, sr_path=str(tmp_path / "sr.dcm"))
    assert "not a DICOM series" in exc.value.problem and "--dicom-source" in exc.value.remedy
    assert not (tmp_path / "sr.dcm").exists()


def test_cli_writes_the_sr_and_refuses_what_it_cannot(exam, tmp_path, capsys):
    import json

    from OsteoROILib import cli

    result = tmp_path / "result.json"
    result.write_text(json.dumps(exam["doc"]))
    sr = tmp_path / "sr.dcm"
    code = cli.main(["report", str(result), "--dicom-sr", str(sr), "--dicom-source", exam["folder"],
                     "--reader", "Reader^Paula"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"wrote {sr}" in out and hd.sr.srread(str(sr)).StudyInstanceUID == exam["study"]
    code = cli.main(["report", str(result), "--dicom-pdf", str(tmp_path / "p.dcm")])
    assert code == 2 and "--pdf" in capsys.readouterr().err
    nrrd = dict(exam["doc"], volume=dict(exam["doc"]["volume"], file=str(tmp_path / "ct.nrrd")))
    result.write_text(json.dumps(nrrd))
    code = cli.main(["report", str(result), "--dicom-sr", str(tmp_path / "sr2.dcm")])
    err = capsys.readouterr().err
    assert code == 1 and "not a DICOM series" in err and not (tmp_path / "sr2.dcm").exists()


def test_missing_sr_packages_names_what_to_install(monkeypatch):
    import importlib.util

    from OsteoROILib.export.dicom_sr import missing_sr_packages

    assert missing_sr_packages() == []  # both are importable here (this module imported them above)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "highdicom" else real(name, *a))
    assert missing_sr_packages() == ["highdicom"]


def test_reader_name_becomes_an_unambiguous_dicom_person_name():
    from OsteoROILib.export.dicom_sr import person_name

    assert person_name("Dr Paula Reader") == "Dr Paula Reader^"
    assert person_name(" Reader^Paula ") == "Reader^Paula"
