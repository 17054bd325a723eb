"""Export: the versioned measurement document (JSON/CSV) and the printable HTML report."""
from ..import_paths import stage_getattr

__all__ = ["build_document", "to_json_text", "to_csv_text", "write_report"]
__getattr__ = stage_getattr(__name__, {
    "build_document": "measurement", "to_json_text": "measurement", "to_csv_text": "measurement",
    "write_report": "html_report",
})
