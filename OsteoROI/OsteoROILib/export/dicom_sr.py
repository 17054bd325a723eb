"""The report for PACS: a DICOM Structured Report (TID 1500) of the ROI measurements, and the PDF as Encapsulated PDF.

The SR holds one planar-ROI group per level × ROI type — the ROI outline as a polygon on the
source CT slice it was measured on, the mean and SD of the HU and, when calibrated, the vBMD —
and one group per criterion with its value and category (a code of the local scheme
``99OSTEOROI``: the categories are the criteria files' own labels). Both objects belong to the
source study (same Study Instance UID, patient module copied from the source images); the SR
lists the source images as evidence. Written with highdicom and pydicom, an optional extra
(``pip install 'osteoroi[sr]'``; inside Slicer ``slicer.util.pip_install('highdicom')``).

Without DICOM source images there is nothing for the SR to reference, and the error says so.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import OutputError
from .images import roi_shape
from .impression import borderline

LOCAL_SCHEME = "99OSTEOROI"
SR_REMEDY = ("Install the optional extra: pip install 'osteoroi[sr]' (highdicom, pydicom); inside Slicer: "
             "slicer.util.pip_install('highdicom').")
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
#: Patient and study attributes the derived objects copy from the source images (same patient, same study).
PATIENT_STUDY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
                          "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                          "StudyDescription")
LEVEL_CODES = {"T11": "T11Vertebra", "T12": "T12Vertebra", "L1": "L1Vertebra", "L2": "L2Vertebra", "L3": "L3Vertebra",
               "L4": "L4Vertebra", "L5": "L5Vertebra"}


#: The packages of the ``sr`` extra that Slicer does not bundle (it bundles pydicom).
SR_PACKAGES = ("highdicom",)


def missing_sr_packages() -> List[str]:
    """The packages of the ``sr`` extra not installed here (what Slicer's ``pip_install`` should be given)."""
    import importlib.util

    return [name for name in SR_PACKAGES + ("pydicom",) if importlib.util.find_spec(name) is None]


def _libraries():
    """highdicom and pydicom, imported on first use (an optional extra)."""
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise OutputError("The DICOM export (SR and Encapsulated PDF) needs highdicom and pydicom.", SR_REMEDY) from None
    return highdicom, pydicom


def no_source_reason(result_doc: Mapping[str, object], source: Optional[str]) -> Optional[str]:
    """Why no SR can be written for this result (None when the source is a folder of DICOM files)."""
    if isinstance(source, (list, tuple)):  # the slices' files (Slicer: from its DICOM database)
        return None if source else "no source slice files were given"
    path = source or str((result_doc.get("volume") or {}).get("file") or "")
    if not path:
        return "the result does not name the CT it was measured on"
    if not os.path.isdir(path):
        return (f"the CT {os.path.basename(path)} is not a DICOM series, so there are no source images for the SR "
                "to reference")
    return None


def _source_paths(source: Union[str, Sequence[str]]) -> List[str]:
    """The files of a folder (recursively) or the list of files given."""
    if isinstance(source, (list, tuple)):
        return list(source)
    return [os.path.join(root, name) for root, _, files in os.walk(source) for name in sorted(files)]


def source_images(folder: Union[str, Sequence[str]], series_uid: Optional[str] = None) -> List[object]:
    """Headers (no pixels) of the source CT slices in ``folder`` (or the list of files), sorted along the slice normal."""
    _, pydicom = _libraries()
    images = []
    for path in _source_paths(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):  # not a DICOM file: skipped
            continue
        if "ImagePositionPatient" in ds and "SOPInstanceUID" in ds and getattr(ds, "Modality", "") == "CT" \
                and (series_uid is None or ds.SeriesInstanceUID == series_uid):
            images.append(ds)
    if not images:
        where = folder if isinstance(folder, str) else f"the {len(folder)} source files"
        raise OutputError(f"No CT image with a position was found in {where}.",
                          "Give the DICOM series the result was measured on with --dicom-source FOLDER.")
    normal = np.cross(*np.reshape(np.asarray(images[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(images, key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))


def ras_to_lps(points) -> np.ndarray:
    return np.asarray(points, float) * np.array([-1.0, -1.0, 1.0])


def lps_to_pixel(points_lps, image) -> np.ndarray:
    """(column, row) image coordinates of LPS points, (0, 0) the top-left corner of the top-left pixel (DICOM SCOORD)."""
    iop = np.asarray(image.ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    spacing = np.asarray(image.PixelSpacing, float)  # (between rows, between columns)
    d = np.asarray(points_lps, float) - np.asarray(image.ImagePositionPatient, float)
    return np.column_stack([d @ row_dir / spacing[1] + 0.5, d @ col_dir / spacing[0] + 0.5])


def slice_for(point_lps, images: Sequence[object]):
    """The source image whose plane is nearest the point."""
    normal = np.cross(*np.reshape(np.asarray(images[0].ImageOrientationPatient, float), (2, 3)))
    dist = [abs(float((np.asarray(point_lps) - np.asarray(d.ImagePositionPatient, float)) @ normal)) for d in images]
    return images[int(np.argmin(dist))]


def _codes():
    hd, _ = _libraries()
    from pydicom.sr.codedict import codes

    local = {
        "vbmd": hd.sr.CodedConcept("VBMD", LOCAL_SCHEME, "Volumetric bone mineral density"),
        "category": hd.sr.CodedConcept("CATEGORY", LOCAL_SCHEME, "Bone density category"),
        "borderline": hd.sr.CodedConcept("BORDERLINE", LOCAL_SCHEME, "Within measurement error of a cut-off"),
        "hu": hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit"),
        "mg_cm3": hd.sr.CodedConcept("mg/cm3", "UCUM", "milligram per cubic centimeter"),
    }
    return codes, local


def _finding_site(level: str):
    hd, _ = _libraries()
    codes, _ = _codes()
    return hd.sr.FindingSite(anatomic_location=getattr(codes.SCT, LEVEL_CODES.get(level, "LumbarSpine"),
                                                       codes.SCT.LumbarSpine))


def _roi_group(row: Mapping[str, object], images: Sequence[object]):
    """One level × ROI type: its outline on the source slice, mean and SD HU, vBMD."""
    hd, _ = _libraries()
    codes, local = _codes()
    roi = row["roi"]
    shape = roi_shape(roi)
    outline = ras_to_lps(shape.outline(48))
    image = slice_for(ras_to_lps([roi["center_ras"]])[0], images)
    pixels = lps_to_pixel(outline, image)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=np.vstack([pixels, pixels[:1]]).astype(np.float32),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(image))
    site = [_finding_site(str(row["level"]))]
    measurements = [hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=float(row["mean_hu"]),
                                      unit=local["hu"], derivation=codes.SCT.Mean)]
    if row.get("sd_hu") is not None:
        measurements.append(hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=float(row["sd_hu"]),
                                              unit=local["hu"], derivation=codes.SCT.StandardDeviation))
    if row.get("vbmd_mg_cm3") is not None:
        measurements.append(hd.sr.Measurement(name=local["vbmd"], value=float(row["vbmd_mg_cm3"]),
                                              unit=local["mg_cm3"], derivation=codes.SCT.Mean))
    tracking = hd.sr.TrackingIdentifier(identifier=f"{row['level']} {row['shape']} ROI", uid=hd.UID())
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Bone, finding_sites=site,
        measurements=measurements)


def _verdict_group(dx: Mapping[str, object], v: Mapping[str, object]):
    """One criterion × ROI type: its value over the levels used and its category."""
    hd, _ = _libraries()
    codes, local = _codes()
    name = local["vbmd"] if v["quantity"] == "vbmd" else codes.DCM.AttenuationCoefficient
    unit = local["mg_cm3"] if v["quantity"] == "vbmd" else local["hu"]
    label = str(v.get("category") or "not categorised")[:64]
    evaluations = [hd.sr.QualitativeEvaluation(local["category"], hd.sr.CodedConcept(
        str(v.get("category_class") or "none").upper()[:16], LOCAL_SCHEME, label))]
    evaluations.append(hd.sr.QualitativeEvaluation(local["borderline"],
                                                   codes.SCT.Yes if borderline(dx, v) else codes.SCT.No))
    ident = f"{v['criterion_id']} {v.get('shape') or ''}".strip()[:64]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier=ident, uid=hd.UID()),
        finding_sites=[_finding_site(lv) for lv in v.get("levels_used") or []],
        measurements=[hd.sr.Measurement(name=name, value=float(v["value"]), unit=unit, derivation=codes.SCT.Mean)],
        qualitative_evaluations=evaluations)



def person_name(text: str) -> str:
    """The reader's name as a DICOM person name (PS3.5 §6.2.1.2). A name already in ``Family^Given``
    form is kept; free text ("Dr Paula Reader") is kept whole as one component with the trailing caret
    that marks a single-component name, rather than guessing which word is the family name."""
    text = text.strip()
    return text if "^" in text else text + "^"

def _observation_context(sign_off):
    hd, _ = _libraries()
    codes, _ = _codes()
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="OsteoROI"))
    person = None
    if sign_off is not None and sign_off.reader.strip():
        person = hd.sr.ObserverContext(observer_type=codes.DCM.Person,
                                       observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                                           name=person_name(sign_off.reader)))
    return hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)


def build_sr(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], images: Sequence[object],
             sign_off=None):
    """The TID 1500 measurement report of one exam, as a Comprehensive 3D SR dataset."""
    hd, _ = _libraries()
    codes, _ = _codes()
    groups = [_roi_group(r, images) for r in result_doc.get("rows") or []
              if isinstance(r.get("roi"), Mapping) and r.get("mean_hu") is not None]
    groups += [_verdict_group(diagnosis, v) for v in diagnosis.get("verdicts") or []
               if v.get("status") == "ok" and v.get("value") is not None]
    report = hd.sr.MeasurementReport(observation_context=_observation_context(sign_off),
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=list(images), content=report, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="OsteoROI", is_complete=True,
        is_final=bool(sign_off is not None and sign_off.reader.strip()),
        series_description="OsteoROI bone density measurements")


def encapsulated_pdf(pdf_bytes: bytes, reference, title: str = "Lumbar spine bone density CT report"):
    """The PDF as an Encapsulated PDF instance of the source image's study."""
    hd, _ = _libraries()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if not pdf_bytes.startswith(b"%PDF"):
        raise OutputError("The file given as the report PDF is not a PDF.", "Write the PDF with --pdf first.")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_STORAGE
    meta.MediaStorageSOPInstanceUID = hd.UID()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword in PATIENT_STUDY_KEYWORDS:  # Type 2 attributes stay present, empty when the source lacks them
        setattr(ds, keyword, reference.get(keyword))
    now = datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "DOC", hd.UID(), 9902, 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.ConversionType, ds.Manufacturer, ds.BurnedInAnnotation = "WSD", "OsteoROI", "YES"
    ds.DocumentTitle, ds.ConceptNameCodeSequence = title, []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf_bytes + (b"\0" if len(pdf_bytes) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf_bytes)
    return ds


def _save(ds, path: str) -> None:
    """Write atomically: a temporary file in the target folder, then moved into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_dicom_exports(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], *,
                        source: Union[str, Sequence[str], None] = None, sr_path: Optional[str] = None,
                        pdf_dicom_path: Optional[str] = None, pdf_path: Optional[str] = None, sign_off=None,
                        overwrite: bool = False) -> List[str]:
    """Write the SR and/or the Encapsulated PDF (of ``pdf_path``) into the source study; return the paths.

    ``source``: the DICOM folder of the CT, or the list of its slice files; None: the result's ``volume.file``.
    """
    _libraries()
    reason = no_source_reason(result_doc, source)
    if reason:
        raise OutputError(f"No DICOM SR or Encapsulated PDF written: {reason}.",
                          "Measure the DICOM series itself (osteoroi measure DICOM_FOLDER ...) and give that folder "
                          "with --dicom-source FOLDER.")
    for path in (sr_path, pdf_dicom_path):
        if path and os.path.exists(path) and not overwrite:
            raise OutputError(f"{path} already exists.", "Pass --overwrite to replace it, or choose another name.")
    if pdf_dicom_path and not pdf_path:
        raise OutputError("An Encapsulated PDF needs the report PDF.", "Give --pdf OUT.pdf together with --dicom-pdf.")
    facts = (result_doc.get("volume") or {}).get("dicom") or {}
    images = source_images(source or str(result_doc["volume"]["file"]), facts.get("series_instance_uid"))
    objects: Dict[str, object] = {}
    if sr_path:
        objects[sr_path] = build_sr(diagnosis, result_doc, images, sign_off=sign_off)
    if pdf_dicom_path:
        with open(pdf_path, "rb") as f:
            objects[pdf_dicom_path] = encapsulated_pdf(f.read(), images[0])
    for path, ds in objects.items():
        _save(ds, path)
    return list(objects)
