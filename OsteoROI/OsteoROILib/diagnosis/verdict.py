"""The diagnosis table: criteria applied to a measurement result, level by level, with the rule named.

Facts (QCT_BRIEF §2, §3, §5, §6):

* QCT vBMD (ACR 2018 / ISCD 2007 / China 2018, seed 000 Table 2): mean trabecular vBMD of two
  lumbar vertebrae, L1+L2 by default; a fractured or unsuitable vertebra is replaced by the next
  valid one (L3, then L4). Normal > 120, low bone mass 80–120 (both ends inclusive), osteoporosis
  < 80, severe osteoporosis < 80 with a fragility fracture.
* Seed-002 HU cut-offs (Table 3) are on the L1–L4 mean of one ROI type; Pickhardt 2013 on L1.
* A fragility fracture on imaging means osteoporosis whatever the BMD (seed 000 key point i);
  Genant grade ≥ 1 counts as a fracture (grade 0 = no fracture).

Who the categories apply to and the technique they assume are in :mod:`patient`; the criteria
themselves are data (:mod:`criteria`, ``Resources/Criteria/*.json``).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import __version__
from ..io.outputs import json_safe
from .criteria import KNOWN_LEVELS, KNOWN_SHAPES, QUANTITIES, band_text, classify, load_criteria
from .document import SCHEMA_ID
from .exclusions import flag_excludes, flag_text, fractures, normalize_exclusions
from .followup import LSC_FACTOR, compare, lsc_pct
from .applicability import for_criterion
from .material import implausible_vbmd, reconcile
from .row_use import level_exclusion, row_exclusion
from .patient import aorta_contrast_hu, contrast_recorded, resolve_patient, study_facts, study_warnings
from .values import check_result_doc, finite_number, has_vbmd, level_order, value_table, vbmd_unit

FRACTURE_OVERRIDE_LABEL = "osteoporosis (fracture)"


# --------------------------------------------------------------------------------------------
# The level rule of one criterion on one ROI type
# --------------------------------------------------------------------------------------------
def _shapes_for(crit: Mapping[str, object], table) -> List[str]:
    present = {s for (_, s) in table}
    shapes = [s for s in crit["shapes"] if s in present]
    if crit["shape_mode"] == "first_available":
        return shapes[:1]
    return shapes


def _valid_levels(crit, shape, table, exclusions) -> Tuple[List[str], List[Dict[str, str]], Dict[str, float]]:
    """The rule's candidate levels that have a value and no exclusion, and why the others were skipped."""
    field = QUANTITIES[crit["quantity"]]
    used: List[str] = []
    skipped: List[Dict[str, str]] = []
    values: Dict[str, float] = {}
    for lv in crit["level_rule"]["levels"]:
        flags = [f for f in exclusions.get(lv, []) if flag_excludes(f)]
        if flags:
            skipped.append({"level": lv, "reason": "; ".join(flag_text(f) for f in flags)})
            continue
        row = table.get((lv, shape))
        if row is None:
            skipped.append({"level": lv, "reason": "not measured"})
            continue
        if row_exclusion(row):  # forced placement or a reader's caveat: shown, never categorised
            skipped.append({"level": lv, "reason": row_exclusion(row)})
            continue
        v = finite_number(row.get(field))
        if v is None:
            why = "no vBMD (not calibrated)" if crit["quantity"] == "vbmd" else "no value"
            skipped.append({"level": lv, "reason": why})
            continue
        used.append(lv)
        values[lv] = v
    return used, skipped, values


def _first_valid(rule, used, skipped, notes: List[str]) -> Tuple[List[str], Optional[str]]:
    """The first ``count`` valid levels (L1+L2, an excluded one replaced by L3, then L4)."""
    candidates = list(rule["levels"])
    skipped_text = ", ".join(f"{s['level']} ({s['reason']})" for s in skipped)
    n = rule["count"]
    if len(used) < n:
        return used, (f"needs {n} valid level{'s' if n > 1 else ''} among {', '.join(candidates)}; "
                      f"{len(used)} available" + (f" ({', '.join(used)})" if used else "")
                      + (f"; {skipped_text}" if skipped else ""))
    used = used[:n]
    default = candidates[:n]
    missing = [lv for lv in default if lv not in used]
    if missing:
        replacements = [lv for lv in used if lv not in default]
        why = {s["level"]: s["reason"] for s in skipped}
        notes.append("; ".join(f"{lv} {why.get(lv, 'skipped')}" for lv in missing)
                     + f": replaced by {', '.join(replacements)}.")
        if rule.get("fallback_note"):
            notes.append(str(rule["fallback_note"]))
    return used, None


def _mean_of_valid(rule, used, skipped, notes: List[str]) -> Tuple[List[str], Optional[str]]:
    """Every valid level, at least ``min_count`` of them (the seed-002 L1–L4 mean)."""
    candidates = list(rule["levels"])
    skipped_text = ", ".join(f"{s['level']} ({s['reason']})" for s in skipped)
    mc = rule.get("min_count", 1)
    if len(used) < mc:
        return used, (f"needs at least {mc} valid level{'s' if mc > 1 else ''} among {', '.join(candidates)}; "
                      f"none available" + (f" ({skipped_text})" if skipped else ""))
    if skipped:
        notes.append(f"{len(used)} of {len(candidates)} levels; not used: {skipped_text}.")
    return used, None


def _summary(crit, shape, table, exclusions) -> Dict[str, object]:
    """Apply the level rule: which levels are used, the mean, and why others were skipped."""
    rule = crit["level_rule"]
    used, skipped, values = _valid_levels(crit, shape, table, exclusions)
    notes: List[str] = []
    pick = _first_valid if rule["method"] == "first_valid" else _mean_of_valid
    used, insufficient = pick(rule, used, skipped, notes)
    value = None
    if insufficient is None:
        value = math.fsum(values[lv] for lv in used) / len(used)
    return {"levels_used": used if insufficient is None else [], "levels_skipped": skipped, "value_exact": value,
            "insufficient": insufficient, "notes": notes, "level_values": {lv: values[lv] for lv in used}}


# --------------------------------------------------------------------------------------------
# The verdicts of one criterion
# --------------------------------------------------------------------------------------------
def _value_to_classify(v: Dict[str, object], crit, s, unit: str, options: Mapping[str, object]) -> Optional[float]:
    """The summary value in the criterion's terms, or None (with the reason in ``not_categorised``) when the
    material differs without the user's opt-in or a vBMD is implausible (:mod:`material`)."""
    exact = s["value_exact"]
    if crit["quantity"] != "vbmd":
        return exact
    bad = implausible_vbmd(exact, unit)
    if bad:
        v["not_categorised"] = bad
        return None
    converted, record, refusal = reconcile(exact, unit, crit, convert=bool(options.get("convert_material")),
                                           kvp=options.get("kvp"))
    if refusal:
        v["not_categorised"] = refusal
        return None
    if record:
        v["material_conversion"] = record
        v["notes"].append(f"Converted from mg/cm3 {record['from']} to mg/cm3 {record['to']} at the user's request: "
                          f"x {record['ratio_k2hpo4_per_ha']:g} per K2HPO4/HA ({record['kvp_source']}; Goodsitt 1992).")
    return converted


def _classify_value(v: Dict[str, object], crit, shape, s, table, unit: str, options: Mapping[str, object]) -> str:
    """Status, value, band and decision of one verdict; returns the rule's prefix (what was averaged)."""
    decimals = int(crit["value_decimals"])
    what = "vBMD" if crit["quantity"] == "vbmd" else "HU"
    if s["insufficient"] is not None:
        field = QUANTITIES[crit["quantity"]]
        if crit["quantity"] == "vbmd" and not any(finite_number(r.get(field)) is not None
                                                  for (_, sh), r in table.items() if sh == shape):
            v["status"] = "unavailable"
            v["decision"] = "no vBMD in the result: calibrate the measurement (phantom or internal) to use this criterion"
        else:
            v["status"] = "insufficient"
            v["decision"] = f"insufficient: {s['insufficient']}"
        return ""
    v["status"] = "ok"
    exact = _value_to_classify(v, crit, s, unit, options)
    lv_text = "+".join(s["levels_used"]) if len(s["levels_used"]) <= 2 else \
        f"{', '.join(s['levels_used'])} (n = {len(s['levels_used'])})"
    mean = "mean " if len(s["levels_used"]) > 1 else ""
    if exact is None:
        v["value"] = round(s["value_exact"], decimals)
        v["decision"] = f"not categorised: {v['not_categorised']}"
        return f"{mean}{what} of {lv_text}, {shape} ROI = {v['value']:.{decimals}f} {unit}; "
    value = round(exact, decimals)
    v["value"] = value
    band = classify(value, crit["bands_by_shape"][shape])
    v["bmd_category"], v["bmd_class"] = band["label"], band["class"]
    v["band"] = band_text(band, crit["unit"])
    shown_unit = unit
    if v.get("material_conversion"):
        shown_unit = v["unit"] = f"mg/cm3 {v['material_conversion']['to']}"
    v["decision"] = f"{v['band'].replace('x', 'value', 1)} → {band['label']}"
    v["category"], v["category_class"] = band["label"], band["class"]
    if band.get("basis") == "tool":
        v["notes"].append(f"The band '{band['label']}' is this tool's construction between the source's cut-offs, "
                          "not a category of the source.")
    return f"{mean}{what} of {lv_text}, {shape} ROI = {value:.{decimals}f} {shown_unit}; "


def _apply_fracture_rules(v: Dict[str, object], crit, fx: List[Dict[str, object]], patient) -> None:
    """A fragility fracture means osteoporosis whatever the BMD; any fragility fracture, vertebral or not, with a
    band of the severe rule (vBMD < 80) is severe osteoporosis (seed 000 key points i, iv; QCT_BRIEF §3). A flagged
    fracture whose cause the reader did not state is of unknown cause: it excludes the level, nothing more."""
    what = "vBMD" if crit["quantity"] == "vbmd" else "HU"
    vertebral = [f for f in fx if f.get("cause") == "fragility"]
    fragility = [f"{f['level']} (Genant {f['grade']})" for f in vertebral]
    if patient.get("fragility_fracture"):
        fragility.append(f"{patient['fragility_fracture']} (non-vertebral, reader)")
    if fragility:
        where = ", ".join(fragility)
        severe = crit.get("severe")
        # a non-vertebral fragility fracture has no Genant grade: it meets the severe rule as it is
        graded = patient.get("fragility_fracture") or any(f["grade"] >= severe["min_fracture_grade"]
                                                          for f in vertebral) if severe else False
        if severe and graded and v["bmd_class"] == severe["when_class"]:
            v["category"], v["category_class"] = severe["label"], "osteoporosis"
            v["decision"] += f"; with fragility fracture at {where} → {severe['label']}"
        else:
            v["category"], v["category_class"] = FRACTURE_OVERRIDE_LABEL, "osteoporosis"
            v["decision"] += (f"; fragility fracture at {where} → {FRACTURE_OVERRIDE_LABEL} whatever the "
                              f"{what} (seed 000 key point i)")
    unknown = [f["level"] for f in fx if f.get("cause") == "unknown"]
    if unknown:
        v["notes"].append(f"Fracture(s) at {', '.join(unknown)} of unknown cause: level excluded; the fragility-fracture "
                          "rule is not applied. State the cause with --exclude LEVEL=fracture:GRADE:fragility "
                          "(or :traumatic).")
    if [f for f in fx if f.get("cause") == "traumatic"]:
        v["notes"].append("Traumatic fracture(s) at " + ", ".join(f["level"] for f in fx if f.get("cause") == "traumatic")
                          + ": level excluded, no fragility-fracture rule applied.")


def _apply_level_count_note(v: Dict[str, object], crit) -> None:
    """Cut-offs derived on a mean of n levels, used on fewer: the verdict is indicative (seed 002 Methods)."""
    full = crit["level_rule"].get("derived_on_count")
    if v["status"] == "ok" and full and v["n_levels"] < int(full):
        v["indicative"] = True
        v["notes"].append(f"Indicative only: the cut-offs were derived on the mean of {int(full)} levels "
                          f"({crit['level_rule'].get('derived_on', 'the source')}); {v['n_levels']} used here.")


def _apply_applicability(v: Dict[str, object], applicable: bool, note: str) -> None:
    """Outside the criterion's population the values stay, the category goes (its ``applies_to``; seed 000 Table 2)."""
    if not applicable and v["category"] is not None:
        # The printed rule must not end in a category the table does not give.
        v["notes"].append(f"Not categorised (would be: {v['category']}). {note}")
        v["decision"] = (f"not categorised: the criteria do not apply to this patient (the bands alone would give: "
                         f"{v['decision']})")
        v["category"], v["category_class"] = None, None
    elif not applicable and v["status"] == "ok":
        v["notes"].append(note)


def evaluate(crit: Mapping[str, object], table, exclusions, patient: Mapping[str, object],
             unit_actual: Optional[str] = None, options: Optional[Mapping[str, object]] = None) -> List[Dict[str, object]]:
    """The verdicts of one criterion (one per ROI type for ``shape_mode: each``). ``options``:
    ``convert_material`` (the user's opt-in to the Goodsitt conversion) and the scan's ``kvp``."""
    options = options or {}
    unit = unit_actual if (crit["quantity"] == "vbmd" and unit_actual) else crit["unit"]
    applicable, app_note = for_criterion(crit, patient)
    shapes = _shapes_for(crit, table)
    base = {"criterion_id": crit["id"], "criterion": crit["title"], "short_title": crit["short_title"],
            "quantity": crit["quantity"], "unit": unit, "citation": crit["source"]["citation"]}
    if not shapes:
        return [dict(base, shape=None, status="unavailable", levels_used=[], n_levels=0, levels_skipped=[],
                     value=None, value_exact=None, bmd_category=None, bmd_class=None, band=None, category=None,
                     category_class=None, applicable=applicable,
                     rule=f"no rows of the ROI types this criterion uses ({', '.join(crit['shapes'])})", notes=[])]
    fx = fractures(exclusions)
    out = []
    for shape in shapes:
        s = _summary(crit, shape, table, exclusions)
        v: Dict[str, object] = dict(base, shape=shape, levels_used=s["levels_used"], n_levels=len(s["levels_used"]),
                                    levels_skipped=s["levels_skipped"], value_exact=s["value_exact"],
                                    level_values=s["level_values"], notes=list(s["notes"]),
                                    applicable=applicable)
        v.update(value=None, bmd_category=None, bmd_class=None, band=None, category=None, category_class=None)
        prefix = _classify_value(v, crit, shape, s, table, unit, options)
        _apply_fracture_rules(v, crit, fx, patient)
        _apply_level_count_note(v, crit)
        if options.get("contrast") and crit.get("contrast_validated") is False and v["status"] == "ok":
            v["notes"].append("Contrast-enhanced scan: this criterion was not validated on contrast-enhanced CT; "
                              "contrast raises trabecular HU and may under-call osteoporosis.")
        _apply_applicability(v, applicable, app_note)
        v["rule"] = prefix + v["decision"]
        out.append(v)
    return out


# --------------------------------------------------------------------------------------------
# The diagnosis document
# --------------------------------------------------------------------------------------------
def default_criteria_specs(result_doc: Mapping[str, object]) -> List[str]:
    """Built-in criteria: with vBMD the QCT criterion leads and the HU criteria follow."""
    hu = ["seed002-hu", "pickhardt2013-l1"]
    return (["qct-acr2018"] + hu) if has_vbmd(result_doc) else hu


def _all_verdicts(crits, table, excl, pat, unit: Optional[str], options) -> List[Dict[str, object]]:
    """Every criterion's verdicts in order; the first one leads."""
    verdicts: List[Dict[str, object]] = []
    for c in crits:
        verdicts.extend(evaluate(c, table, excl, pat, unit_actual=unit, options=options))
    if verdicts:
        verdicts[0]["lead"] = True
        for v in verdicts[1:]:
            v["lead"] = False
    return verdicts


def _general_notes(result_doc, pat, crits, criteria_given: bool, study_notes: List[str]) -> List[str]:
    notes = list(pat["notes"]) + study_notes
    if not criteria_given and not has_vbmd(result_doc):
        notes.append("No calibration in the result: the QCT vBMD criterion (ACR/ISCD) needs vBMD; "
                     "all built-in HU criteria are shown instead.")
    if any(c["quantity"] == "hu" for c in crits):
        notes.append("HU criteria are opportunistic screening thresholds for 120 kV non-contrast CT, not QCT diagnosis.")
    return notes


def _row_key(item) -> Tuple[int, str, int, str]:
    lv, shape = item[0]
    return (KNOWN_LEVELS.index(lv) if lv in KNOWN_LEVELS else 99, lv,
            KNOWN_SHAPES.index(shape) if shape in KNOWN_SHAPES else 99, shape)


def _level_rows(table, excl, verdicts) -> List[Dict[str, object]]:
    """Per-level rows: every measured (level, shape), with its flags and the criteria that used it."""
    used_by: Dict[Tuple[str, str], List[str]] = {}
    for v in verdicts:
        for lv in v["levels_used"]:
            used_by.setdefault((lv, v["shape"]), []).append(v["criterion_id"])
    rows = []
    for (lv, shape), r in sorted(table.items(), key=_row_key):
        flags = excl.get(lv, [])
        rows.append({
            "level": lv, "shape": shape,
            "mean_hu": finite_number(r.get("mean_hu")), "sd_hu": finite_number(r.get("sd_hu")),
            "n_voxels": r.get("n_voxels"),
            "vbmd_mg_cm3": finite_number(r.get("vbmd_mg_cm3")), "vbmd_sd": finite_number(r.get("vbmd_sd")),
            "vbmd_unit": r.get("vbmd_unit") if finite_number(r.get("vbmd_mg_cm3")) is not None else None,
            "excluded": any(flag_excludes(f) for f in flags) or bool(row_exclusion(r)),
            "flags": [flag_text(f) for f in flags] + ([row_exclusion(r)] if row_exclusion(r) else []),
            "genant_grade": next((int(f["grade"]) for f in flags if f["reason"] == "fracture"), None),
            "used_by": used_by.get((lv, shape), []),
            "warnings": list(r.get("warnings") or []),
        })
    return rows


def _level_flags(table, excl) -> List[Dict[str, object]]:
    """One entry per measured or flagged level (a flagged level need not have been measured)."""
    measured_levels = {lv for (lv, _) in table}
    levels = []
    for lv in level_order(list(measured_levels) + list(excl)):
        flags = excl.get(lv, [])
        flagged = level_exclusion(r for (level, _), r in table.items() if level == lv)
        levels.append({"level": lv, "measured": lv in measured_levels,
                       "excluded": any(flag_excludes(f) for f in flags) or bool(flagged),
                       "flags": [dict(f) for f in flags],
                       "flag_text": "; ".join([flag_text(f) for f in flags] + ([flagged] if flagged else []))})
    return levels


def _criterion_entry(c: Mapping[str, object]) -> Dict[str, object]:
    return {"id": c["id"], "title": c["title"], "short_title": c["short_title"], "quantity": c["quantity"],
            "unit": c["unit"], "citation": c["source"]["citation"], "where": c["source"].get("where", ""),
            "level_rule": c["level_rule"].get("description", c["level_rule"]["method"]),
            "file": c.get("_file", ""), "builtin": bool(c.get("_builtin")),
            "bands_by_shape": c["bands_by_shape"], "notes": list(c.get("notes") or [])}


def build_diagnosis(
    result_doc: Mapping[str, object],
    criteria: Optional[Sequence[Union[str, Mapping[str, object]]]] = None,
    exclusions=None,
    patient: Optional[Mapping[str, object]] = None,
    prior: Optional[Mapping[str, object]] = None,
    precision_pct: float = 3.0,
    source_file: str = "",
    prior_file: str = "",
    timestamp: Optional[str] = None,
    *,
    convert_material: bool = False,
    confirm_same_patient: bool = False,
    precision_mg_cm3: Optional[float] = None,
) -> Dict[str, object]:
    """The diagnosis document (schema ``Resources/Schemas/osteoroi-diagnosis-1.schema.json``).

    ``criteria``: names/paths/dicts (default: :func:`default_criteria_specs`); the first leads.
    ``exclusions``: see :func:`exclusions.normalize_exclusions`. ``patient``: see
    :func:`patient.resolve_patient`. ``prior``: an earlier result document for the follow-up (see
    :mod:`followup`). ``convert_material``: the user opts into the Goodsitt 1992 conversion between
    K2HPO4 and HA when the measurement and a criterion differ in material (:mod:`material`).
    ``confirm_same_patient``: the user confirms a prior whose PatientID or birth date differs
    (:mod:`followup_identity`; recorded in the follow-up). ``precision_mg_cm3``: the site's vBMD
    precision in mg/cm³ (LSC in absolute units, :mod:`followup`).
    """
    check_result_doc(result_doc)
    table = value_table(result_doc)
    excl = normalize_exclusions(exclusions)
    pat = resolve_patient(result_doc, patient)
    crits = load_criteria(list(criteria) if criteria else default_criteria_specs(result_doc))
    unit = vbmd_unit(result_doc)
    warnings, study_notes = study_warnings(result_doc)
    notes = _general_notes(result_doc, pat, crits, bool(criteria), study_notes)
    study = study_facts(result_doc)
    options = {"convert_material": bool(convert_material), "kvp": study.get("kvp"),
               "contrast": contrast_recorded(study.get("contrast_agent")) or aorta_contrast_hu(result_doc) is not None}
    verdicts = _all_verdicts(crits, table, excl, pat, unit, options)
    lead = verdicts[0] if verdicts else None
    cal = result_doc.get("calibration")
    doc: Dict[str, object] = {
        "schema": SCHEMA_ID,
        "osteoroi_version": __version__,
        "created": timestamp or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "source": {"file": source_file or "", "schema": result_doc.get("schema"), "created": result_doc.get("created"),
                   "command": result_doc.get("command", "")},
        "patient": pat,
        "study": study_facts(result_doc),
        "calibration": dict(cal) if isinstance(cal, Mapping) else None,
        "quantity": "vbmd" if lead and lead["quantity"] == "vbmd" else "hu",
        "lead": {"criterion_id": lead["criterion_id"], "shape": lead["shape"]} if lead else None,
        "criteria": [_criterion_entry(c) for c in crits],
        "levels": _level_flags(table, excl),
        "rows": _level_rows(table, excl, verdicts),
        "fractures": fractures(excl),
        "verdicts": verdicts,
        "followup": None,
        # The site's precision and its LSC, also without a prior: the report's borderline flag reads them.
        "precision": {"precision_pct": float(precision_pct), "lsc_factor": LSC_FACTOR,
                      "lsc_pct": round(lsc_pct(precision_pct), 4)},
        "warnings": warnings + [w for w in (result_doc.get("warnings") or []) if w not in warnings],
        "notes": notes,
    }
    if prior is not None:
        doc["followup"] = compare(result_doc, prior, doc, precision_pct=precision_pct, prior_file=prior_file,
                                  confirm_same_patient=confirm_same_patient, precision_mg_cm3=precision_mg_cm3)
    return json_safe(doc)
