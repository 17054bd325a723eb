"""Export: the measurement document (JSON/CSV), the printable report (HTML, PDF), the DICOM SR and cohort table.

Modules: ``measurement`` (the measurement document); ``style`` (colours, CSS, cell formats),
``images`` and ``sagittal`` (per-level PNG images), ``charts`` and ``trend_chart`` (SVG charts),
``wording`` (plain words for readers), ``impression`` (the reconciled impression, borderline flag
and sign-off), ``front_page`` (header and impression), ``calibration_html`` (the calibration
section) and ``html_report`` (the report built section by section, and its tables written);
``pdf`` (the report printed by a headless browser), ``browser_locations`` (browsers installed off
PATH), ``dicom_sr`` (TID 1500 SR and Encapsulated PDF, optional extra ``sr``) and ``cohort`` (one
row per exam). Export imports ``io``, ``roi`` and ``diagnosis``.
"""
from ..import_paths import stage_getattr

__all__ = ["build_document", "to_json_text", "to_csv_text", "write_report", "build_impression", "SignOff",
           "write_pdf", "write_dicom_exports", "cohort_text"]
__getattr__ = stage_getattr(__name__, {
    "build_document": "measurement", "to_json_text": "measurement", "to_csv_text": "measurement",
    "write_report": "html_report", "build_impression": "impression", "SignOff": "impression",
    "write_pdf": "pdf", "write_dicom_exports": "dicom_sr", "cohort_text": "cohort",
})
