"""The measurement table: a versioned JSON document and a CSV with the same row columns."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Dict, Iterable, Mapping, Optional

from .. import __version__
from ..io.outputs import json_safe
from ..resources import resource_path
from ..roi.stats import STAT_KEYS

SCHEMA_ID = "osteoroi-measurement/1"
SCHEMA_FILE = ("Schemas", "osteoroi-measurement-1.schema.json")

#: Row columns, in table order (JSON rows also carry ``roi``, the ROI's geometry).
ROW_COLUMNS = ("level", "shape") + STAT_KEYS + (
    "nominal_area_mm2",
    "center_ras",
    "slice_index",
    "slab_mm",
    "placement",
    "plane",
    "fit_quality",
    "body_depth_mm",
    "body_width_mm",
    "ap_axis_ras",
    "high_hu_fraction",
    "vbmd_mg_cm3",
    "vbmd_unit",
    "vbmd_sd",
    "warnings",
)


def _clean(value):
    """The measurement document's values: JSON-safe, floats to 6 decimals."""
    return json_safe(value, 6)


def build_document(
    measurement: Mapping[str, object],
    volume_info: Mapping[str, object],
    command: str = "",
    extra: Optional[Mapping[str, object]] = None,
    timestamp: Optional[str] = None,
) -> Dict[str, object]:
    """The result document (validated by ``Resources/Schemas/osteoroi-measurement-1.schema.json``).

    ``timestamp`` is the only field that changes between identical runs.
    """
    doc: Dict[str, object] = {
        "schema": SCHEMA_ID,
        "osteoroi_version": __version__,
        "created": timestamp or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        "volume": dict(volume_info),
        "settings": {"shapes": list(measurement["shapes"]), "slab_mm": measurement["slab_mm"]},
        "levels": measurement["levels"],
        "rows": measurement["rows"],
        "warnings": list(measurement.get("warnings", [])),
    }
    if measurement.get("aorta") is not None:  # the aorta beside L1-L2 (placement.aorta): contrast from blood HU
        doc["aorta"] = measurement["aorta"]
    if extra:
        doc.update(extra)
    return _clean(doc)


def load_schema() -> Dict[str, object]:
    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        return json.load(f)


def validate_document(doc: Mapping[str, object]) -> None:
    """Validate against the JSON schema (needs the ``jsonschema`` package)."""
    import jsonschema

    jsonschema.validate(instance=doc, schema=load_schema())


def to_json_text(doc: Mapping[str, object]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return " | ".join(value)
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv_text(rows: Iterable[Mapping[str, object]], columns=ROW_COLUMNS) -> str:
    """CSV of the rows; empty cell for a missing value (e.g. SD of a single voxel), never NaN."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue()
