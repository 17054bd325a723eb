"""The cohort table: one row per exam (its lead verdict, borderline flag and disagreeing criteria), as CSV.

Each row is read from one diagnosis document (:func:`diagnosis.verdict.build_diagnosis`) and its
impression (:mod:`impression`); nothing is re-classified. Per-level values are those of the lead
verdict's ROI type and quantity, so a row can be checked against the exam's own report.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from ..diagnosis.criteria import QUANTITIES
from ..diagnosis.document import to_table_text
from .impression import GRADE, borderline
from .wording import plain_words

LEVELS = ("L1", "L2", "L3", "L4")
COHORT_COLUMNS = ("exam", "patient_id", "study_date", "age_years", "sex", "applicable", "lead_criterion", "lead_shape",
                  "quantity", "unit", "levels_used", "value", "category", "borderline", "borderline_cutoff",
                  "agreeing", "disagreeing", "fractures", "excluded_levels") + tuple(f"{lv}_value" for lv in LEVELS) \
    + ("n_warnings",)


def _grade(v: Mapping[str, object]):
    return GRADE.get(str(v.get("category_class") or v.get("bmd_class") or ""))


def _name(v: Mapping[str, object]) -> str:
    return f"{v['criterion_id']}:{v['shape']}"


def cohort_row(exam: str, dx: Mapping[str, object], result_doc: Mapping[str, object]) -> Dict[str, object]:
    """One exam's row of the cohort table."""
    verdicts = list(dx.get("verdicts") or [])
    lead = next((v for v in verdicts if v.get("lead")), verdicts[0] if verdicts else {})
    facts = ((result_doc.get("volume") or {}).get("dicom") or {})
    rated = [v for v in verdicts if v is not lead and v.get("status") == "ok" and _grade(v) is not None]
    b = borderline(dx, lead) if lead else None
    field = QUANTITIES.get(str(lead.get("quantity")), "mean_hu")
    per_level = {r["level"]: r.get(field) for r in dx.get("rows") or [] if r["shape"] == lead.get("shape")}
    row: Dict[str, object] = {
        "exam": exam, "patient_id": facts.get("patient_id"), "study_date": (dx.get("study") or {}).get("study_date"),
        "age_years": (dx.get("patient") or {}).get("age_years"), "sex": (dx.get("patient") or {}).get("sex"),
        "applicable": (dx.get("patient") or {}).get("applicable"),
        "lead_criterion": lead.get("criterion_id"), "lead_shape": lead.get("shape"), "quantity": lead.get("quantity"),
        "unit": lead.get("unit"), "levels_used": lead.get("levels_used"), "value": lead.get("value"),
        "category": lead.get("category") or (lead.get("status") if lead.get("status") != "ok" else "not categorised"),
        "borderline": b is not None, "borderline_cutoff": None if b is None else b["cutoff"],
        "agreeing": [_name(v) for v in rated if _grade(v) == _grade(lead)],
        "disagreeing": [_name(v) for v in rated if _grade(v) != _grade(lead)],
        "fractures": [f"{f['level']} Genant {f['grade']}" for f in dx.get("fractures") or []],
        "excluded_levels": [lv["level"] for lv in dx.get("levels") or [] if lv.get("excluded")],
        "n_warnings": len(dx.get("warnings") or []),
    }
    row.update({f"{lv}_value": per_level.get(lv) for lv in LEVELS})
    # criterion ids stay machine ids; the category is text a reader sees
    row["category"] = plain_words(row["category"])
    return row


def cohort_text(exams: Sequence[tuple], delimiter: str = ",") -> str:
    """CSV (or TSV) of ``exams``: (exam name, diagnosis document, result document) per exam, in order."""
    rows: List[Dict[str, object]] = [cohort_row(name, dx, doc) for name, dx, doc in exams]
    return to_table_text(rows, COHORT_COLUMNS, delimiter)
