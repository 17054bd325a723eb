"""A case finished in the scene: the diagnosis of the current results with the patient's facts and
a prior study, as the panel shows it and as the HTML report writes it.

The diagnosis is ``diagnosis.verdict.build_diagnosis`` of the module's result document
(``OsteoROIMRMLLogic.document``), its exclusions and Genant grades, the patient facts the user
gives (they override the DICOM PatientAge/PatientSex, seed 000 Table 2) and, for the follow-up,
a prior result: a saved result JSON or the results table of a prior study loaded in the scene.
The change is judged against the least significant change (``diagnosis.followup``, QCT_BRIEF §5).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..diagnosis.exclusions import parse_exclusion
from ..diagnosis.verdict import build_diagnosis
from ..errors import InputError
from ..export.html_report import write_report
from ..export.impression import build_impression, impression_lines
from ..io.jsonfile import read_json

__all__ = ["PATIENT_KEYS", "case_exclusions", "case_diagnosis", "prior_document", "result_document_from_table", "diagnosis_text",
           "export_case_report"]

#: Patient facts the panel collects (``diagnosis.verdict.resolve_patient``'s input).
PATIENT_KEYS = ("age", "sex", "menopause", "fragility_fracture")

#: Results-table column -> result-row key, for a prior study's table (``mrml.logic.TABLE_COLUMNS``).
_TABLE_KEYS = {"Level": "level", "ROI": "shape", "Mean": "mean_hu", "SD": "sd_hu", "Voxels": "n_voxels",
               "vBMD": "vbmd_mg_cm3", "vBMD SD": "vbmd_sd"}


def _number(text: str) -> Optional[float]:
    try:
        return float(text) if text not in ("", None) else None
    except ValueError:
        return None


def result_document_from_table(tableNode) -> Dict[str, Any]:
    """A result document (rows only) from an OsteoROI results table of a prior study in the scene."""
    table = tableNode.GetTable() if tableNode is not None else None
    if table is None:
        raise InputError("No prior results table is selected.", "Choose the OsteoROI table of the prior study.")
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    if not {"Level", "ROI", "Mean"} <= set(names):
        raise InputError(f"The table {tableNode.GetName()!r} is not an OsteoROI results table.",
                         "Choose the OsteoROI table of the prior study (columns Level, ROI, Mean).")
    unit = (tableNode.GetColumnUnitLabel("vBMD") or "").replace("mg/cm3", "").strip() or None
    rows = []
    for r in range(table.GetNumberOfRows()):
        row: Dict[str, Any] = {}
        for name in names:
            key = _TABLE_KEYS.get(name)
            if key is None:
                continue
            text = table.GetValueByName(r, name).ToString()
            row[key] = text if key in ("level", "shape") else _number(text)
        if row.get("vbmd_mg_cm3") is not None and unit:
            row["vbmd_unit"] = unit
        rows.append(row)
    return {"schema": "osteoroi-measurement/1", "rows": rows, "volume": {"file": tableNode.GetName()}}


def prior_document(priorFile: str = "", priorTable=None) -> Optional[Dict[str, Any]]:
    """The prior study's result document: the saved JSON if a file is given, else the table; None for neither."""
    if priorFile:
        return read_json(priorFile, "prior result file",
                         "Choose the result JSON of the prior study (Export JSON, or 'osteoroi measure --json').")
    if priorTable is not None:
        return result_document_from_table(priorTable)
    return None


def case_exclusions(mrmlLogic) -> Dict[str, List[Dict[str, Any]]]:
    """The scene's exclusions for the diagnosis: a level excluded for a reason the diagnosis knows
    (artefact, focal lesion, bone island, ...; ``diagnosis.verdict.parse_exclusion``) is flagged
    with that reason, any other stays the reader's own ("manual") with the text as its note."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for level, flags in mrmlLogic.diagnosisExclusions().items():
        for flag in flags:
            if flag["reason"] == "manual" and flag.get("note"):
                try:
                    flag = parse_exclusion(f"{level}={flag['note']}")[1]
                except InputError:
                    pass  # not a known reason: the reader's note stays as written
            out.setdefault(level, []).append(flag)
    return out


def case_diagnosis(mrmlLogic, patient: Optional[Mapping[str, Any]] = None,
                   prior: Optional[Mapping[str, Any]] = None, priorName: str = "") -> Dict[str, Any]:
    """The diagnosis document of the scene's results (``build_diagnosis``), with patient and prior."""
    state = mrmlLogic.state()
    criteria = [state["criterion"]] if state.get("criterion") else None
    patient = {k: v for k, v in (patient or {}).items() if k in PATIENT_KEYS and v not in (None, "")}
    return build_diagnosis(mrmlLogic.document(), criteria=criteria, exclusions=case_exclusions(mrmlLogic),
                           patient=patient, prior=prior, prior_file=priorName)


def _verdict_line(v: Mapping[str, Any]) -> str:
    value = v.get("value")
    number = f"{value:.1f} {v.get('unit') or ''}".strip() if isinstance(value, (int, float)) else "no value"
    status = v.get("status")
    category = v.get("category") or ("not categorised" if status == "ok" else status) or "not applicable"
    if not v.get("category") and v.get("not_categorised"):
        category += f" ({v['not_categorised']})"
    return f"{v.get('criterion_id')} ({v.get('shape')}, {', '.join(v.get('levels_used') or []) or 'no level'}): " \
           f"{number} \u2192 {category}"


def diagnosis_text(diagnosis: Mapping[str, Any], sign_off=None) -> str:
    """The panel's summary: the impression as the report states it (with the reader's comment and
    sign-off, an ``export.impression.SignOff``, when given), then the lead criterion, the other
    verdicts, the excluded levels with their reasons, patient applicability, the follow-up against
    the least significant change, and every warning."""
    verdicts = list(diagnosis.get("verdicts") or [])
    lead = next((v for v in verdicts if v.get("lead")), None)
    lines: List[str] = ["Impression:"] + ["  " + line for line in impression_lines(build_impression(diagnosis, sign_off))]
    if lead is not None:
        lines.append("Lead: " + _verdict_line(lead))
    lines += ["  " + _verdict_line(v) for v in verdicts if v is not lead]
    excluded = [f"{lv['level']} ({lv.get('flag_text') or 'excluded'})" for lv in diagnosis.get("levels") or []
                if lv.get("excluded")]
    if excluded:
        lines.append("Excluded: " + ", ".join(excluded))
    patient = diagnosis.get("patient") or {}
    if patient.get("applicability_note"):
        lines.append(str(patient["applicability_note"]))
    followup = diagnosis.get("followup") or {}
    for item in followup.get("summary") or []:
        change = item.get("change_pct")
        lines.append(f"Follow-up {item.get('criterion_id', '')} ({item.get('shape', '')}): "
                     + (f"{change:+.1f} % (LSC {item.get('lsc_pct', 0):.1f} %) \u2192 {item.get('verdict')}"
                        if isinstance(change, (int, float)) else "no comparable value"))
    lines += [f"\u26a0 {w}" for w in list(diagnosis.get("warnings") or []) + list(followup.get("warnings") or [])]
    return "\n".join(lines)


def export_case_report(mrmlLogic, htmlPath: str, patient=None, prior=None, priorName: str = "",
                       overwrite: bool = False, *, sign_off=None) -> List[str]:
    """Write the HTML report of the case (diagnosis with patient facts and follow-up; the reader's
    comment and sign-off, an ``export.impression.SignOff``, when given)."""
    diagnosis = case_diagnosis(mrmlLogic, patient=patient, prior=prior, priorName=priorName)
    return write_report(diagnosis, mrmlLogic.document(), html_path=htmlPath, volume=mrmlLogic.volume(),
                        overwrite=overwrite, sign_off=sign_off)
