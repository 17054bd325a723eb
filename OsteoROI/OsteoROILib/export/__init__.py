"""Export: the versioned measurement document (JSON/CSV) and the printable HTML report.

Modules: ``measurement`` (the measurement document); ``style`` (colours, CSS, cell formats),
``images`` (per-level PNG images), ``charts`` (SVG charts), ``wording`` (plain words for
readers), ``impression`` (the reconciled impression, borderline flag and sign-off), ``front_page``
(header and impression) and ``html_report`` (the report built section by section, and its tables
written). Export imports ``io``, ``roi`` and ``diagnosis``.
"""
from ..import_paths import stage_getattr

__all__ = ["build_document", "to_json_text", "to_csv_text", "write_report", "build_impression", "SignOff"]
__getattr__ = stage_getattr(__name__, {
    "build_document": "measurement", "to_json_text": "measurement", "to_csv_text": "measurement",
    "write_report": "html_report", "build_impression": "impression", "SignOff": "impression",
})
