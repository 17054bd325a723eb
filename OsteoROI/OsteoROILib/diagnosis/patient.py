"""What the criteria assume of the exam: who they apply to and the scan technique they were set for.

Facts (QCT_BRIEF §2, §3; seed 000 Table 2):

* The categories are for post-menopausal women and men ≥ 50 (seed 000 Table 2 footnote): for
  anyone else the values are shown with a note and no category.
* The thresholds hold at 120 kV without contrast: other kV, contrast and thick slices are warned
  about, never hidden.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

from ..errors import InputError
from ..io.dicom_facts import patient_age_years
from ..io.tissue_hu import ENHANCED_BLOOD_HU, blood_enhancement
from .applicability import DEFAULT_APPLIES_TO, MAX_PLAUSIBLE_AGE, applicability, ask

#: Reference technique of the criteria (QCT_BRIEF §2, §3).
REFERENCE_KVP = 120.0
MAX_SLICE_THICKNESS_MM = 3.0
#: Age from which men are in the criteria's population (seed 000 Table 2 footnote).
MIN_AGE_MEN = float(DEFAULT_APPLIES_TO["men_min_age_years"])
#: Age from which a woman of unstated menopausal status is presumed post-menopausal.
PRESUMED_MENOPAUSE_AGE = float(DEFAULT_APPLIES_TO["presumed_menopause_age_years"])
#: Patient identity recorded from the DICOM header (a follow-up checks it is the same patient).
IDENTITY_KEYS = ("patient_id", "patient_name", "patient_birth_date")


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



def _dicom_facts(result_doc) -> Mapping[str, object]:
    return ((result_doc.get("volume") or {}).get("dicom") or {}) if isinstance(result_doc, Mapping) else {}


def _resolve_age(facts: Mapping[str, object], user_age, notes: List[str]) -> Dict[str, object]:
    """The age given (years or a DICOM age string) over the DICOM PatientAge; a disagreement is noted."""
    dicom_age = patient_age_years(facts.get("patient_age")) if facts.get("patient_age") else None
    if dicom_age is not None and not 0 <= dicom_age <= MAX_PLAUSIBLE_AGE and (user_age is None or user_age == ""):
        notes.append(f"DICOM PatientAge {facts.get('patient_age')} is implausible; it is not used. Give the {ask('age')}.")
        return {"age_years": None, "age_source": f"DICOM PatientAge {facts.get('patient_age')} (implausible)",
                "age_implausible": True}
    if user_age is not None and user_age != "":
        age = patient_age_years(user_age if not isinstance(user_age, str) else user_age.strip())
        if age is None or not 0 <= age <= MAX_PLAUSIBLE_AGE:
            raise InputError(f"Age {user_age!r} is not understood or not plausible.",
                             "Give the age in years (0-120): the panel's Age field, or --age 67 on the command line.")
        if dicom_age is not None and abs(dicom_age - age) >= 1.0:
            notes.append(f"The age given ({age:g}) differs from the DICOM PatientAge ({facts.get('patient_age')}); "
                         "the age given is used.")
        return {"age_years": age, "age_source": "user input"}
    if dicom_age is not None:
        return {"age_years": round(dicom_age, 2), "age_source": f"DICOM PatientAge {facts.get('patient_age')}"}
    return {"age_years": None, "age_source": "unknown"}


def _resolve_sex(facts: Mapping[str, object], user_value, notes: List[str]) -> Dict[str, object]:
    """The sex given over the DICOM PatientSex (an unreadable DICOM value counts as unknown)."""
    dicom_sex = None
    try:
        dicom_sex = _norm_sex(facts.get("patient_sex"))
    except InputError:
        dicom_sex = None
    user_sex = _norm_sex(user_value)
    if user_sex:
        if dicom_sex and dicom_sex != user_sex:
            notes.append(f"The sex given ({user_sex}) differs from the DICOM PatientSex ({dicom_sex}); the sex given is used.")
        return {"sex": user_sex, "sex_source": "user input"}
    if dicom_sex:
        return {"sex": dicom_sex, "sex_source": "DICOM PatientSex"}
    return {"sex": None, "sex_source": "unknown"}


def _norm_menopause(value) -> Optional[str]:
    if value is None or value == "":
        return None
    meno = str(value).strip().lower()
    if meno in ("post", "postmenopausal", "post-menopausal", "yes", "true"):
        return "post"
    if meno in ("pre", "premenopausal", "pre-menopausal", "peri", "no", "false"):
        return "pre"
    raise InputError(f"Menopausal status {value!r} is not understood.", "Give post or pre.")


def resolve_patient(result_doc: Mapping[str, object], patient: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
    """Age, sex, menopausal status and whether the criteria's categories apply (seed 000 Table 2).

    User input (``patient``: ``age`` years or a DICOM age string, ``sex`` F/M, ``menopause``
    "post"/"pre", ``fragility_fracture`` free text for a fracture elsewhere) overrides the DICOM
    facts ``patient_age`` ("067Y") / ``patient_sex``; a disagreement is noted.
    """
    patient = dict(patient or {})
    facts = _dicom_facts(result_doc)
    notes: List[str] = []
    out: Dict[str, object] = {}
    out.update(_resolve_age(facts, patient.get("age"), notes))
    out.update(_resolve_sex(facts, patient.get("sex"), notes))
    meno = _norm_menopause(patient.get("menopause"))
    out["menopause"] = meno
    out["menopause_source"] = "user input" if meno else None
    ff = patient.get("fragility_fracture")
    out["fragility_fracture"] = str(ff).strip() if ff else None

    out["menopause_stated"] = meno
    out["age_implausible"] = bool(out.get("age_implausible"))
    out.update({k: facts.get(k) for k in IDENTITY_KEYS})
    age, sex = out["age_years"], out["sex"]
    applicable, note = applicability(age, sex, meno, age_implausible=out["age_implausible"])
    if sex == "F" and meno is None and applicable:
        out["menopause"], out["menopause_source"] = "post", f"presumed from age ≥ {PRESUMED_MENOPAUSE_AGE:g}"
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


def contrast_recorded(value) -> Optional[bool]:
    """True when the DICOM ContrastBolusAgent names an agent, False when it says none, None when absent."""
    if value is None:
        return None
    return str(value).strip().upper() not in _NO_CONTRAST


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def aorta_blood_hu(result_doc: Mapping[str, object]) -> Tuple[Optional[float], str]:
    """(HU, where it was measured) of the aorta: the search beside L1-L2 (``placement.aorta``,
    the result's ``aorta``) or an internal calibration's enhanced blood ROI; (None, "") when neither."""
    if not isinstance(result_doc, Mapping):
        return None, ""
    found = result_doc.get("aorta")
    hu = _number(found.get("hu")) if isinstance(found, Mapping) else None
    if hu is not None:
        return hu, "measured in the aorta beside L1-L2"
    cal = result_doc.get("calibration")
    hu = _number(cal.get("contrast_from_aorta_hu")) if isinstance(cal, Mapping) else None
    return (hu, "measured for the internal calibration") if hu is not None else (None, "")


def aorta_contrast_hu(result_doc: Mapping[str, object]) -> Optional[float]:
    """The aorta's HU when it is enhanced blood (> ``tissue_hu.ENHANCED_BLOOD_HU``), else None."""
    hu, _ = aorta_blood_hu(result_doc)
    return hu if blood_enhancement(hu) == "enhanced" else None


def scan_enhanced(result_doc: Mapping[str, object]) -> Optional[bool]:
    """True when the DICOM tag names an agent or the aorta reads enhanced blood; False when the aorta
    reads unenhanced blood or the tag says none; None when neither is known."""
    tag = contrast_recorded(_dicom_facts(result_doc).get("contrast_agent"))
    state = blood_enhancement(aorta_blood_hu(result_doc)[0])
    if tag or state == "enhanced":
        return True
    return False if state == "unenhanced" else tag


def _aorta_messages(result_doc: Mapping[str, object], warnings: List[str], notes: List[str]) -> None:
    """Enhanced blood marks the scan contrast-enhanced whatever the DICOM tag says (a warning); blood
    above the unenhanced range but not clearly enhanced is a note (io/tissue_hu.py, QCT_BRIEF §4)."""
    hu, where = aorta_blood_hu(result_doc)
    state = blood_enhancement(hu)
    found = result_doc.get("aorta") if isinstance(result_doc.get("aorta"), Mapping) else {}
    seen = list(found.get("levels") or {}) if where.startswith("measured in the aorta") else []
    if len(seen) == 1:  # one level: not confirmed as a tube (placement.aorta), so the reader should look
        where += f" (found beside {seen[0]} only: check that it is the aorta)"
    if state == "enhanced":
        warnings.append(f"The aorta reads {hu:.0f} HU (enhanced blood, above {ENHANCED_BLOOD_HU:g} HU; {where}): the "
                        "scan is contrast-enhanced whatever the DICOM tag says; the thresholds are for non-contrast CT.")
    elif state == "above unenhanced range":
        notes.append(f"The aorta reads {hu:.0f} HU ({where}): above unenhanced blood (20 ± 40 HU, QCT_BRIEF §4) but "
                     f"not above {ENHANCED_BLOOD_HU:g} HU; a late contrast phase cannot be excluded.")


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
        # the aorta's blood HU beside L1-L2 and what it and the tag say together (True: enhanced)
        "aorta_hu": aorta_blood_hu(result_doc)[0],
        "contrast_enhanced": scan_enhanced(result_doc),
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
    _aorta_messages(result_doc, warnings, notes)
    st = study["slice_thickness_mm"]
    if st is not None and st > MAX_SLICE_THICKNESS_MM + 1e-9:
        warnings.append(f"Slice thickness {st:g} mm (> {MAX_SLICE_THICKNESS_MM:g} mm): partial volume with the "
                        "endplates and cortex can bias trabecular values.")
    cal = result_doc.get("calibration")
    if isinstance(cal, Mapping):
        for w in cal.get("warnings") or []:
            warnings.append(f"Calibration: {w}")
    return warnings, notes

