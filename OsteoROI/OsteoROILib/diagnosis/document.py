"""The diagnosis document's tables and schema: verdict and per-level columns, CSV/TSV text, validation.

The document itself (``osteoroi-diagnosis/1``) is built by :func:`verdict.build_diagnosis`; its
schema is ``Resources/Schemas/osteoroi-diagnosis-1.schema.json``.
"""
from __future__ import annotations

import csv
import json
import re
from io import StringIO
from typing import Dict, List, Mapping, Sequence

from ..errors import InputError
from ..resources import resource_path

SCHEMA_ID = "osteoroi-diagnosis/1"
SCHEMA_FILE = ("Schemas", "osteoroi-diagnosis-1.schema.json")

VERDICT_COLUMNS = ("criterion_id", "criterion", "shape", "quantity", "unit", "levels_used", "n_levels", "value",
                   "bmd_category", "category", "status", "applicable", "rule", "notes",
                   "followup_prior", "followup_change", "followup_change_pct", "followup_lsc_pct", "followup_verdict")
LEVEL_COLUMNS = ("level", "shape", "mean_hu", "sd_hu", "n_voxels", "vbmd_mg_cm3", "vbmd_sd", "vbmd_unit", "excluded",
                 "flags", "genant_grade", "used_by", "warnings")


def verdict_rows(diagnosis: Mapping[str, object]) -> List[Dict[str, object]]:
    """The diagnosis table: one row per criterion × ROI type, with follow-up columns when present."""
    fu = {}
    for s in ((diagnosis.get("followup") or {}).get("summary") or []):
        fu[(s["criterion_id"], s["shape"])] = s
    out = []
    for v in diagnosis["verdicts"]:
        row = {k: v.get(k) for k in VERDICT_COLUMNS if not k.startswith("followup_")}
        s = fu.get((v["criterion_id"], v["shape"]))
        if s:
            row.update(followup_prior=s.get("prior"), followup_change=s.get("change"),
                       followup_change_pct=s.get("change_pct"), followup_lsc_pct=s.get("lsc_pct"),
                       followup_verdict=s.get("verdict"))
        out.append(row)
    return out


def to_table_text(rows: Sequence[Mapping[str, object]], columns: Sequence[str], delimiter: str = ",") -> str:
    """CSV (or TSV with ``delimiter="\\t"``); lists joined with " | ", missing values empty (never NaN)."""
    buf = StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if v is None:
                cells.append("")
            elif isinstance(v, bool):
                cells.append("yes" if v else "no")
            elif isinstance(v, (list, tuple)):
                cells.append(" | ".join(str(x) for x in v))
            elif isinstance(v, float):
                cells.append(repr(round(v, 6)))
            else:
                cells.append(re.sub(r"[\r\n]+", " ", str(v)))
        w.writerow(cells)
    return buf.getvalue()


def validate_diagnosis(doc: Mapping[str, object]) -> None:
    """Validate against ``Resources/Schemas/osteoroi-diagnosis-1.schema.json`` (needs ``jsonschema``)."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - optional dependency
        raise InputError("Validating a diagnosis needs the jsonschema package.", "pip install jsonschema") from None

    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.validate(instance=doc, schema=schema)
