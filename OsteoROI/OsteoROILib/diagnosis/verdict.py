"""The diagnosis table: criteria applied to a measurement result, level by level, with the rule named.

Facts (QCT_BRIEF §2, §3, §5, §6):

* QCT vBMD (ACR 2018 / ISCD 2007 / China 2018, seed 000 Table 2): mean trabecular vBMD of two
  lumbar vertebrae, L1+L2 by default; a fractured or unsuitable vertebra is replaced by the next
  valid one (L3, then L4). Normal > 120, low bone mass 80–120 (both ends inclusive), osteoporosis
  < 80, severe osteoporosis < 80 with a fragility fracture.
* Seed-002 HU cut-offs (Table 3) are on the L1–L4 mean of one ROI type; Pickhardt 2013 on L1.
* A fragility fracture on imaging means osteoporosis whatever the BMD (seed 000 key point i);
  Genant grade ≥ 1 counts as a fracture (grade 0 = no fracture).
* The categories are for post-menopausal women and men ≥ 50 (seed 000 Table 2 footnote): for
  anyone else the values are shown with a note and no category.
* The thresholds hold at 120 kV without contrast: other kV, contrast and thick slices are warned
  about, never hidden.

The criteria themselves are data (:mod:`criteria`, ``Resources/Criteria/*.json``).
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .. import __version__
from .criteria import KNOWN_LEVELS, KNOWN_SHAPES, QUANTITIES, band_text, classify, load_criteria
from ..io.dicom_facts import patient_age_years
from ..errors import InputError
from ..io.outputs import json_safe

SCHEMA_ID = "osteoroi-diagnosis/1"
SCHEMA_FILE = ("Schemas", "osteoroi-diagnosis-1.schema.json")

#: Per-level exclusion reasons (QCT_BRIEF §1 "also to avoid"): name → text shown in the table.
EXCLUSION_REASONS = {
    "fracture": "fracture",
    "artefact": "artefact",
    "focal_lesion": "focal lesion",
    "manual": "excluded by the reader",
}
_REASON_ALIASES = {
    "fracture": "fracture", "fx": "fracture", "fractured": "fracture",
    "artefact": "artefact", "artifact": "artefact", "metal": "artefact", "beam-hardening": "artefact",
    "focal_lesion": "focal_lesion", "focal-lesion": "focal_lesion", "lesion": "focal_lesion", "focal": "focal_lesion",
    "bone-island": "focal_lesion", "schmorl": "focal_lesion",
    "manual": "manual", "exclude": "manual", "excluded": "manual", "other": "manual",
}
GENANT_TEXT = {0: "Genant 0 (no fracture)", 1: "Genant 1 (mild)", 2: "Genant 2 (moderate)", 3: "Genant 3 (severe)"}

#: Reference technique of the criteria (QCT_BRIEF §2, §3).
REFERENCE_KVP = 120.0
MAX_SLICE_THICKNESS_MM = 3.0
#: Age from which men are in the criteria's population (seed 000 Table 2 footnote).
MIN_AGE_MEN = 50.0
#: Age from which a woman of unstated menopausal status is presumed post-menopausal.
PRESUMED_MENOPAUSE_AGE = 50.0

FRACTURE_OVERRIDE_LABEL = "osteoporosis (fracture)"


# --------------------------------------------------------------------------------------------
# Exclusions
# --------------------------------------------------------------------------------------------
def _check_level(level: str, where: str) -> str:
    lv = str(level).strip().upper()
    if lv not in KNOWN_LEVELS:
        raise InputError(f"{where}: unknown vertebral level {level!r}.", f"Use one of {', '.join(KNOWN_LEVELS)}.")
    return lv


def _flag(reason: str, grade=None, fragility=True, note: str = "", where: str = "exclusion") -> Dict[str, object]:
    key = _REASON_ALIASES.get(str(reason).strip().lower().replace(" ", "-"))
    if key is None:
        raise InputError(f"{where}: unknown exclusion reason {reason!r}.",
                         "Use fracture:GRADE (Genant 0-3), artefact, focal_lesion or manual.")
    flag: Dict[str, object] = {"reason": key, "note": str(note or "")}
    if key == "fracture":
        if grade is None or grade == "":
            raise InputError(f"{where}: a fracture needs its Genant grade.",
                             "Write e.g. L2=fracture:2 (0 normal, 1 mild, 2 moderate, 3 severe).")
        g = grade if isinstance(grade, int) and not isinstance(grade, bool) else \
            ({"0": 0, "1": 1, "2": 2, "3": 3}.get(str(grade).strip(), -1))
        if g not in (0, 1, 2, 3):
            raise InputError(f"{where}: Genant grade {grade!r} is not 0, 1, 2 or 3.",
                             "Give the Genant semi-quantitative grade: 0 normal, 1 mild, 2 moderate, 3 severe.")
        flag["grade"] = g
        flag["fragility"] = bool(fragility)
    return flag


def parse_exclusion(text: str) -> Tuple[str, Dict[str, object]]:
    """``L2=fracture:2`` / ``L2=fracture:2:traumatic`` / ``L3=artefact[:note]`` / ``L4=focal_lesion`` /
    ``L1=manual[:note]`` → (level, flag)."""
    where = f"--exclude {text!r}"
    if "=" not in str(text):
        raise InputError(f"{where} has no level.", "Write it as LEVEL=REASON, e.g. --exclude L2=fracture:2.")
    level, _, spec = str(text).partition("=")
    level = _check_level(level, where)
    parts = spec.split(":")
    reason = parts[0]
    if _REASON_ALIASES.get(reason.strip().lower().replace(" ", "-")) == "fracture":
        grade = parts[1] if len(parts) > 1 else None
        kind = parts[2].strip().lower() if len(parts) > 2 else "fragility"
        if kind not in ("fragility", "traumatic", "insufficiency", "osteoporotic"):
            raise InputError(f"{where}: fracture kind {kind!r} is not understood.",
                             "Add :traumatic for a traumatic fracture; fragility is the default.")
        return level, _flag("fracture", grade, fragility=(kind != "traumatic"), where=where)
    return level, _flag(reason, note=":".join(parts[1:]), where=where)


def normalize_exclusions(exclusions) -> Dict[str, List[Dict[str, object]]]:
    """Accept ``["L2=fracture:2", ...]``, ``{"L2": "fracture:2"}``, ``{"L2": {"reason": "fracture",
    "grade": 2}}`` or ``{"L2": [flag, ...]}``; return ``{level: [flag, ...]}``."""
    out: Dict[str, List[Dict[str, object]]] = {}
    if not exclusions:
        return out
    items: List[Tuple[str, Dict[str, object]]] = []
    if isinstance(exclusions, Mapping):
        for level, spec in exclusions.items():
            specs = spec if isinstance(spec, list) else [spec]
            for s in specs:
                if isinstance(s, str):
                    items.append(parse_exclusion(f"{level}={s}"))
                elif isinstance(s, Mapping):
                    lv = _check_level(level, "exclusion")
                    items.append((lv, _flag(s.get("reason", ""), s.get("grade"), s.get("fragility", True),
                                            s.get("note", ""), where=f"exclusion of {lv}")))
                else:
                    raise InputError(f"Exclusion of {level}: {s!r} is not understood.",
                                     'Give e.g. {"reason": "fracture", "grade": 2}.')
    else:
        for s in exclusions:
            items.append(parse_exclusion(s))
    for level, flag in items:
        flags = out.setdefault(level, [])
        if any(f["reason"] == flag["reason"] for f in flags):
            raise InputError(f"{level} has two '{flag['reason']}' flags.", "Give each reason once per level.")
        flags.append(flag)
    return out


def flag_text(flag: Mapping[str, object]) -> str:
    if flag["reason"] == "fracture":
        text = f"fracture, {GENANT_TEXT[int(flag['grade'])]}"
        if not flag.get("fragility", True) and int(flag["grade"]) >= 1:
            text += ", traumatic"
        return text
    text = EXCLUSION_REASONS[str(flag["reason"])]
    return f"{text}: {flag['note']}" if flag.get("note") else text


def flag_excludes(flag: Mapping[str, object]) -> bool:
    """A Genant-0 entry documents a normal vertebra; everything else excludes the level."""
    return not (flag["reason"] == "fracture" and int(flag["grade"]) == 0)


# --------------------------------------------------------------------------------------------
# Patient and study
# --------------------------------------------------------------------------------------------
def _norm_sex(value) -> Optional[str]:
    if value is None:
        return None
    s = str(value).strip().upper()
    if not s:
        return None
    if s in ("F", "FEMALE", "W", "WOMAN"):
        return "F"
    if s in ("M", "MALE", "MAN"):
        return "M"
    if s in ("O", "OTHER"):
        return "O"
    raise InputError(f"Sex {value!r} is not understood.", "Give F or M (DICOM PatientSex).")


def resolve_patient(result_doc: Mapping[str, object], patient: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
    """Age, sex, menopausal status and whether the criteria's categories apply (seed 000 Table 2).

    User input (``patient``: ``age`` years or a DICOM age string, ``sex`` F/M, ``menopause``
    "post"/"pre", ``fragility_fracture`` free text for a fracture elsewhere) overrides the DICOM
    facts ``patient_age`` ("067Y") / ``patient_sex``; a disagreement is noted.
    """
    patient = dict(patient or {})
    facts = ((result_doc.get("volume") or {}).get("dicom") or {}) if isinstance(result_doc, Mapping) else {}
    notes: List[str] = []
    out: Dict[str, object] = {}

    dicom_age = patient_age_years(facts.get("patient_age")) if facts.get("patient_age") else None
    user_age = patient.get("age")
    if user_age is not None and user_age != "":
        age = patient_age_years(user_age if not isinstance(user_age, str) else user_age.strip())
        if age is None or not 0 <= age < 130:
            raise InputError(f"Age {user_age!r} is not understood.", "Give the age in years, e.g. --age 67.")
        out["age_years"], out["age_source"] = age, "user input"
        if dicom_age is not None and abs(dicom_age - age) >= 1.0:
            notes.append(f"The age given ({age:g}) differs from the DICOM PatientAge ({facts.get('patient_age')}); "
                         "the age given is used.")
    elif dicom_age is not None:
        out["age_years"], out["age_source"] = round(dicom_age, 2), f"DICOM PatientAge {facts.get('patient_age')}"
    else:
        out["age_years"], out["age_source"] = None, "unknown"

    dicom_sex = None
    try:
        dicom_sex = _norm_sex(facts.get("patient_sex"))
    except InputError:
        dicom_sex = None
    user_sex = _norm_sex(patient.get("sex"))
    if user_sex:
        out["sex"], out["sex_source"] = user_sex, "user input"
        if dicom_sex and dicom_sex != user_sex:
            notes.append(f"The sex given ({user_sex}) differs from the DICOM PatientSex ({dicom_sex}); the sex given is used.")
    elif dicom_sex:
        out["sex"], out["sex_source"] = dicom_sex, "DICOM PatientSex"
    else:
        out["sex"], out["sex_source"] = None, "unknown"

    meno = patient.get("menopause")
    if meno is not None and meno != "":
        meno = str(meno).strip().lower()
        if meno in ("post", "postmenopausal", "post-menopausal", "yes", "true"):
            meno = "post"
        elif meno in ("pre", "premenopausal", "pre-menopausal", "peri", "no", "false"):
            meno = "pre"
        else:
            raise InputError(f"Menopausal status {patient.get('menopause')!r} is not understood.", "Give post or pre.")
    else:
        meno = None
    out["menopause"] = meno
    out["menopause_source"] = "user input" if meno else None
    ff = patient.get("fragility_fracture")
    out["fragility_fracture"] = str(ff).strip() if ff else None

    age, sex = out["age_years"], out["sex"]
    applicable = False
    if sex == "M":
        if age is None:
            note = "Age unknown: the categories apply to men aged 50 or over. Give the age (--age) to apply them."
        elif age >= MIN_AGE_MEN:
            applicable, note = True, f"Man aged {age:g} (≥ 50): the criteria apply."
        else:
            note = (f"Man aged {age:g} (< 50): the categories are not applied; low values in younger patients "
                    "prompt a search for secondary causes (seed 000 Table 2).")
    elif sex == "F":
        if meno == "post":
            applicable, note = True, "Post-menopausal woman (stated): the criteria apply."
        elif meno == "pre":
            note = ("Pre-menopausal woman: the categories are not applied; low values prompt a search for "
                    "secondary causes (seed 000 Table 2).")
        elif age is not None and age >= PRESUMED_MENOPAUSE_AGE:
            applicable = True
            out["menopause"], out["menopause_source"] = "post", f"presumed from age ≥ {PRESUMED_MENOPAUSE_AGE:g}"
            note = (f"Woman aged {age:g}: presumed post-menopausal (state --menopause pre if not); the criteria apply.")
        elif age is None:
            note = ("Age and menopausal status unknown: the categories apply to post-menopausal women. "
                    "Give --age or --menopause post to apply them.")
        else:
            note = (f"Woman aged {age:g}, menopausal status not given: the categories are not applied. "
                    "Give --menopause post if she is post-menopausal.")
    elif sex == "O":
        note = "Sex recorded as other: the categories (post-menopausal women, men ≥ 50) are not applied."
    else:
        note = ("Sex unknown: the categories apply to post-menopausal women and men aged 50 or over. "
                "Give --sex and --age (or --menopause) to apply them.")
    if age is not None and age < 18:
        note += " Densitometric categories must never be applied to children."
    out["applicable"] = applicable
    out["applicability_note"] = note
    out["notes"] = notes
    return out


def _slice_thickness(volume: Mapping[str, object]) -> Optional[float]:
    facts = volume.get("dicom") or {}
    if isinstance(facts.get("slice_thickness_mm"), (int, float)):
        return float(facts["slice_thickness_mm"])
    m = volume.get("ijk_to_ras")
    sp = volume.get("spacing_mm")
    if m and sp:
        # the IJK axis most nearly along S is the slice-stacking axis
        col = max(range(3), key=lambda c: abs(m[2][c]) / (math.sqrt(sum(m[r][c] ** 2 for r in range(3))) or 1.0))
        return float(sp[col])
    return None


_NO_CONTRAST = {"", "NONE", "NO", "N", "N/A", "NA", "NIL", "0", "WITHOUT", "NON-CONTRAST", "NONCONTRAST", "NATIVE"}


def study_facts(result_doc: Mapping[str, object]) -> Dict[str, object]:
    volume = result_doc.get("volume") or {}
    facts = dict(volume.get("dicom") or {})
    return {
        "file": volume.get("file", ""),
        "modality": facts.get("modality"),
        "manufacturer": facts.get("manufacturer"),
        "model": facts.get("model"),
        "kvp": facts.get("kvp"),
        "convolution_kernel": facts.get("convolution_kernel"),
        "slice_thickness_mm": _slice_thickness(volume),
        "slice_thickness_source": "DICOM SliceThickness" if "slice_thickness_mm" in facts else "voxel spacing",
        "contrast_agent": facts.get("contrast_agent"),
        "study_date": facts.get("study_date"),
        "spacing_mm": volume.get("spacing_mm"),
        "size": volume.get("size"),
        "notes": list(volume.get("notes") or []),
    }


def study_warnings(result_doc: Mapping[str, object]) -> Tuple[List[str], List[str]]:
    """(warnings, notes) about technique: kVp ≠ 120, contrast, slice thickness > 3 mm, calibration QA."""
    warnings: List[str] = []
    notes: List[str] = []
    study = study_facts(result_doc)
    kvp = study["kvp"]
    if isinstance(kvp, (int, float)):
        if abs(float(kvp) - REFERENCE_KVP) > 0.5:
            warnings.append(f"Scanned at {float(kvp):g} kV: the HU thresholds and the QCT criteria were set at 120 kV; "
                            "HU shift with kV, so the HU categories are less reliable (QCT_BRIEF §2).")
    else:
        notes.append("Tube voltage (kVp) unknown (not a DICOM source): the thresholds assume 120 kV.")
    contrast = study["contrast_agent"]
    if contrast is not None and str(contrast).strip().upper() not in _NO_CONTRAST:
        warnings.append(f"Contrast agent recorded ({contrast}): contrast raises trabecular HU; the thresholds are for "
                        "non-contrast CT and may under-call osteoporosis.")
    st = study["slice_thickness_mm"]
    if st is not None and st > MAX_SLICE_THICKNESS_MM + 1e-9:
        warnings.append(f"Slice thickness {st:g} mm (> {MAX_SLICE_THICKNESS_MM:g} mm): partial volume with the "
                        "endplates and cortex can bias trabecular values.")
    cal = result_doc.get("calibration")
    if isinstance(cal, Mapping):
        for w in cal.get("warnings") or []:
            warnings.append(f"Calibration: {w}")
    return warnings, notes


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------
def _num(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def check_result_doc(result_doc) -> None:
    if not isinstance(result_doc, Mapping) or not isinstance(result_doc.get("rows"), list):
        raise InputError("The result has no 'rows' table.",
                         "Give the JSON written by 'osteoroi measure --json' or 'osteoroi demo'.")
    schema = result_doc.get("schema")
    if schema is not None and schema != "osteoroi-measurement/1":
        raise InputError(f"The result's schema is {schema!r}, not osteoroi-measurement/1.",
                         "Give the measurement JSON written by 'osteoroi measure --json' or 'osteoroi demo'.")
    for i, row in enumerate(result_doc["rows"]):
        if not isinstance(row, Mapping) or "level" not in row or "shape" not in row:
            raise InputError(f"Row {i + 1} of the result has no level/shape.", "Give an unmodified OsteoROI result JSON.")


def has_vbmd(result_doc: Mapping[str, object]) -> bool:
    return any(_num(r.get("vbmd_mg_cm3")) is not None for r in result_doc.get("rows") or [])


def vbmd_unit(result_doc: Mapping[str, object]) -> Optional[str]:
    units = {str(r.get("vbmd_unit") or "") for r in result_doc.get("rows") or [] if _num(r.get("vbmd_mg_cm3")) is not None}
    units.discard("")
    if len(units) > 1:
        raise InputError(f"The result's vBMD rows have different units ({', '.join(sorted(units))}).",
                         "Calibrate all rows with one phantom; K2HPO4 and HA densities cannot be mixed.")
    if units:
        return units.pop()
    cal = result_doc.get("calibration")
    if isinstance(cal, Mapping) and cal.get("unit"):
        return str(cal["unit"])
    return "mg/cm3" if has_vbmd(result_doc) else None


def value_table(result_doc: Mapping[str, object]) -> Dict[Tuple[str, str], Mapping[str, object]]:
    """{(level, shape): row}; a duplicated (level, shape) is refused."""
    out: Dict[Tuple[str, str], Mapping[str, object]] = {}
    for r in result_doc["rows"]:
        key = (str(r["level"]), str(r["shape"]))
        if key in out:
            raise InputError(f"The result has two rows for {key[0]} {key[1]}.", "Give an unmodified OsteoROI result JSON.")
        out[key] = r
    return out


def _level_order(levels) -> List[str]:
    return sorted(set(levels), key=lambda lv: (KNOWN_LEVELS.index(lv) if lv in KNOWN_LEVELS else 99, lv))


def _fmt(value: Optional[float], decimals: int = 2) -> str:
    return "—" if value is None else f"{value:.{decimals}f}"


# --------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------
def _shapes_for(crit: Mapping[str, object], table) -> List[str]:
    present = {s for (_, s) in table}
    shapes = [s for s in crit["shapes"] if s in present]
    if crit["shape_mode"] == "first_available":
        return shapes[:1]
    return shapes


def _summary(crit, shape, table, exclusions) -> Dict[str, object]:
    """Apply the level rule: which levels are used, the mean, and why others were skipped."""
    rule = crit["level_rule"]
    field = QUANTITIES[crit["quantity"]]
    candidates = list(rule["levels"])
    used: List[str] = []
    skipped: List[Dict[str, str]] = []
    values: Dict[str, float] = {}
    for lv in candidates:
        flags = [f for f in exclusions.get(lv, []) if flag_excludes(f)]
        if flags:
            skipped.append({"level": lv, "reason": "; ".join(flag_text(f) for f in flags)})
            continue
        row = table.get((lv, shape))
        if row is None:
            skipped.append({"level": lv, "reason": "not measured"})
            continue
        v = _num(row.get(field))
        if v is None:
            why = "no vBMD (not calibrated)" if crit["quantity"] == "vbmd" else "no value"
            skipped.append({"level": lv, "reason": why})
            continue
        used.append(lv)
        values[lv] = v
    notes: List[str] = []
    insufficient = None
    skipped_text = ", ".join(f"{s['level']} ({s['reason']})" for s in skipped)
    if rule["method"] == "first_valid":
        n = rule["count"]
        if len(used) < n:
            insufficient = (f"needs {n} valid level{'s' if n > 1 else ''} among {', '.join(candidates)}; "
                            f"{len(used)} available" + (f" ({', '.join(used)})" if used else "")
                            + (f"; {skipped_text}" if skipped else ""))
        else:
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
    else:
        mc = rule.get("min_count", 1)
        if len(used) < mc:
            insufficient = (f"needs at least {mc} valid level{'s' if mc > 1 else ''} among {', '.join(candidates)}; "
                            f"none available" + (f" ({skipped_text})" if skipped else ""))
        elif skipped:
            notes.append(f"{len(used)} of {len(candidates)} levels; not used: {skipped_text}.")
    value = None
    if insufficient is None:
        value = math.fsum(values[lv] for lv in used) / len(used)
    return {"levels_used": used if insufficient is None else [], "levels_skipped": skipped, "value_exact": value,
            "insufficient": insufficient, "notes": notes, "level_values": {lv: values[lv] for lv in used}}


def _fractures(exclusions, patient) -> List[Dict[str, object]]:
    out = []
    for lv in _level_order(exclusions):
        for f in exclusions[lv]:
            if f["reason"] == "fracture" and int(f["grade"]) >= 1:
                out.append({"level": lv, "grade": int(f["grade"]), "fragility": bool(f.get("fragility", True))})
    return out


def evaluate(crit: Mapping[str, object], table, exclusions, patient: Mapping[str, object],
             unit_actual: Optional[str] = None) -> List[Dict[str, object]]:
    """The verdicts of one criterion (one per ROI type for ``shape_mode: each``)."""
    decimals = int(crit["value_decimals"])
    unit = unit_actual if (crit["quantity"] == "vbmd" and unit_actual) else crit["unit"]
    shapes = _shapes_for(crit, table)
    base = {"criterion_id": crit["id"], "criterion": crit["title"], "short_title": crit["short_title"],
            "quantity": crit["quantity"], "unit": unit, "citation": crit["source"]["citation"]}
    if not shapes:
        return [dict(base, shape=None, status="unavailable", levels_used=[], n_levels=0, levels_skipped=[],
                     value=None, value_exact=None, bmd_category=None, bmd_class=None, band=None, category=None,
                     category_class=None, applicable=patient["applicable"],
                     rule=f"no rows of the ROI types this criterion uses ({', '.join(crit['shapes'])})", notes=[])]
    fractures = _fractures(exclusions, patient)
    fragility = [f for f in fractures if f["fragility"]]
    out = []
    for shape in shapes:
        s = _summary(crit, shape, table, exclusions)
        v: Dict[str, object] = dict(base, shape=shape, levels_used=s["levels_used"], n_levels=len(s["levels_used"]),
                                    levels_skipped=s["levels_skipped"], value_exact=s["value_exact"],
                                    level_values=s["level_values"], notes=list(s["notes"]),
                                    applicable=patient["applicable"])
        v.update(value=None, bmd_category=None, bmd_class=None, band=None, category=None, category_class=None)
        what = "vBMD" if crit["quantity"] == "vbmd" else "HU"
        prefix = ""
        if s["insufficient"] is not None:
            field = QUANTITIES[crit["quantity"]]
            if crit["quantity"] == "vbmd" and not any(_num(r.get(field)) is not None
                                                      for (_, sh), r in table.items() if sh == shape):
                v["status"] = "unavailable"
                v["decision"] = "no vBMD in the result: calibrate the measurement (phantom or internal) to use this criterion"
            else:
                v["status"] = "insufficient"
                v["decision"] = f"insufficient: {s['insufficient']}"
        else:
            v["status"] = "ok"
            value = round(s["value_exact"], decimals)
            v["value"] = value
            band = classify(value, crit["bands_by_shape"][shape])
            v["bmd_category"], v["bmd_class"] = band["label"], band["class"]
            v["band"] = band_text(band, crit["unit"])
            lv_text = "+".join(s["levels_used"]) if len(s["levels_used"]) <= 2 else \
                f"{', '.join(s['levels_used'])} (n = {len(s['levels_used'])})"
            mean = "mean " if len(s["levels_used"]) > 1 else ""
            prefix = f"{mean}{what} of {lv_text}, {shape} ROI = {value:.{decimals}f} {unit}; "
            v["decision"] = f"{v['band'].replace('x', 'value', 1)} → {band['label']}"
            v["category"], v["category_class"] = band["label"], band["class"]
        # Fracture rules (seed 000 key points i and iv).
        if fragility:
            where = ", ".join(f"{f['level']} (Genant {f['grade']})" for f in fragility)
            severe = crit.get("severe")
            max_grade = max(f["grade"] for f in fragility)
            if severe and v["bmd_class"] == severe["when_class"] and max_grade >= severe["min_fracture_grade"]:
                v["category"], v["category_class"] = severe["label"], "osteoporosis"
                v["decision"] += f"; with fragility fracture at {where} → {severe['label']}"
            else:
                v["category"], v["category_class"] = FRACTURE_OVERRIDE_LABEL, "osteoporosis"
                v["decision"] += (f"; fragility fracture at {where} → {FRACTURE_OVERRIDE_LABEL} whatever the "
                                  f"{what} (seed 000 key point i)")
        elif patient.get("fragility_fracture"):
            v["category"], v["category_class"] = FRACTURE_OVERRIDE_LABEL, "osteoporosis"
            v["decision"] += (f"; fragility fracture recorded ({patient['fragility_fracture']}) → "
                              f"{FRACTURE_OVERRIDE_LABEL} whatever the {what} (seed 000 key point i)")
        if [f for f in fractures if not f["fragility"]]:
            v["notes"].append("Traumatic fracture(s) at " + ", ".join(f["level"] for f in fractures if not f["fragility"])
                              + ": level excluded, no fragility-fracture rule applied.")
        if not patient["applicable"] and v["category"] is not None:
            # The printed rule must not end in a category the table does not give.
            v["notes"].append(f"Not categorised (would be: {v['category']}). {patient['applicability_note']}")
            v["decision"] = (f"not categorised: the criteria do not apply to this patient (the bands alone would give: "
                             f"{v['decision']})")
            v["category"], v["category_class"] = None, None
        elif not patient["applicable"] and v["status"] == "ok":
            v["notes"].append(patient["applicability_note"])
        v["rule"] = prefix + v["decision"]
        out.append(v)
    return out


def default_criteria_specs(result_doc: Mapping[str, object]) -> List[str]:
    """Built-in criteria: with vBMD the QCT criterion leads and the HU criteria follow."""
    hu = ["seed002-hu", "pickhardt2013-l1"]
    return (["qct-acr2018"] + hu) if has_vbmd(result_doc) else hu


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
) -> Dict[str, object]:
    """The diagnosis document (schema ``Resources/Schemas/osteoroi-diagnosis-1.schema.json``).

    ``criteria``: names/paths/dicts (default: :func:`default_criteria_specs`); the first leads.
    ``exclusions``: see :func:`normalize_exclusions`. ``patient``: see :func:`resolve_patient`.
    ``prior``: an earlier result document for the follow-up (see :mod:`followup`).
    """
    check_result_doc(result_doc)
    table = value_table(result_doc)
    excl = normalize_exclusions(exclusions)
    pat = resolve_patient(result_doc, patient)
    specs = list(criteria) if criteria else default_criteria_specs(result_doc)
    crits = load_criteria(specs)
    unit = vbmd_unit(result_doc)
    warnings, notes = study_warnings(result_doc)
    notes = list(pat["notes"]) + notes
    if not criteria and not has_vbmd(result_doc):
        notes.append("No calibration in the result: the QCT vBMD criterion (ACR/ISCD) needs vBMD; "
                     "all built-in HU criteria are shown instead.")
    if any(c["quantity"] == "hu" for c in crits):
        notes.append("HU criteria are opportunistic screening thresholds for 120 kV non-contrast CT, not QCT diagnosis.")
    verdicts: List[Dict[str, object]] = []
    for c in crits:
        verdicts.extend(evaluate(c, table, excl, pat, unit_actual=unit))
    if verdicts:
        verdicts[0]["lead"] = True
        for v in verdicts[1:]:
            v["lead"] = False
    lead = verdicts[0] if verdicts else None

    # Per-level rows: every measured (level, shape), plus flagged levels that were not measured.
    used_by: Dict[Tuple[str, str], List[str]] = {}
    for v in verdicts:
        for lv in v["levels_used"]:
            used_by.setdefault((lv, v["shape"]), []).append(v["criterion_id"])
    rows = []
    def _row_key(item):
        lv, shape = item[0]
        return (KNOWN_LEVELS.index(lv) if lv in KNOWN_LEVELS else 99, lv,
                KNOWN_SHAPES.index(shape) if shape in KNOWN_SHAPES else 99, shape)

    for (lv, shape), r in sorted(table.items(), key=_row_key):
        flags = excl.get(lv, [])
        rows.append({
            "level": lv, "shape": shape,
            "mean_hu": _num(r.get("mean_hu")), "sd_hu": _num(r.get("sd_hu")), "n_voxels": r.get("n_voxels"),
            "vbmd_mg_cm3": _num(r.get("vbmd_mg_cm3")), "vbmd_sd": _num(r.get("vbmd_sd")),
            "vbmd_unit": r.get("vbmd_unit") if _num(r.get("vbmd_mg_cm3")) is not None else None,
            "excluded": any(flag_excludes(f) for f in flags),
            "flags": [flag_text(f) for f in flags],
            "genant_grade": next((int(f["grade"]) for f in flags if f["reason"] == "fracture"), None),
            "used_by": used_by.get((lv, shape), []),
            "warnings": list(r.get("warnings") or []),
        })
    measured_levels = {lv for (lv, _) in table}
    levels = []
    for lv in _level_order(list(measured_levels) + list(excl)):
        flags = excl.get(lv, [])
        levels.append({"level": lv, "measured": lv in measured_levels,
                       "excluded": any(flag_excludes(f) for f in flags),
                       "flags": [dict(f) for f in flags], "flag_text": "; ".join(flag_text(f) for f in flags)})

    fractures = _fractures(excl, pat)
    doc: Dict[str, object] = {
        "schema": SCHEMA_ID,
        "osteoroi_version": __version__,
        "created": timestamp or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "source": {"file": source_file or "", "schema": result_doc.get("schema"), "created": result_doc.get("created"),
                   "command": result_doc.get("command", "")},
        "patient": pat,
        "study": study_facts(result_doc),
        "calibration": dict(result_doc["calibration"]) if isinstance(result_doc.get("calibration"), Mapping) else None,
        "quantity": "vbmd" if lead and lead["quantity"] == "vbmd" else "hu",
        "lead": {"criterion_id": lead["criterion_id"], "shape": lead["shape"]} if lead else None,
        "criteria": [{"id": c["id"], "title": c["title"], "short_title": c["short_title"], "quantity": c["quantity"],
                      "unit": c["unit"], "citation": c["source"]["citation"], "where": c["source"].get("where", ""),
                      "level_rule": c["level_rule"].get("description", c["level_rule"]["method"]),
                      "file": c.get("_file", ""), "builtin": bool(c.get("_builtin")),
                      "bands_by_shape": c["bands_by_shape"], "notes": list(c.get("notes") or [])} for c in crits],
        "levels": levels,
        "rows": rows,
        "fractures": fractures,
        "verdicts": verdicts,
        "followup": None,
        "warnings": warnings + [w for w in (result_doc.get("warnings") or []) if w not in warnings],
        "notes": notes,
    }
    if prior is not None:
        from .followup import compare

        doc["followup"] = compare(result_doc, prior, doc, precision_pct=precision_pct, prior_file=prior_file)
    return json_safe(doc)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
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
    import csv
    import io

    buf = io.StringIO()
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
    import json

    try:
        import jsonschema
    except ImportError:  # pragma: no cover - optional dependency
        raise InputError("Validating a diagnosis needs the jsonschema package.", "pip install jsonschema") from None
    from ..resources import resource_path

    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.validate(instance=doc, schema=schema)
