"""Is the prior exam a prior exam of this patient, comparable with the current one? (QCT_BRIEF §5)

A change since a prior exam means something only when both are of the same patient, are two
different studies, and were measured the same way. Refused (InputError, with what to do):

* one exam is the synthetic digital phantom and the other is not;
* the prior is the current study itself (same Study Instance UID) or a copy of it (every shared
  level and ROI type with identical mean HU, and identical vBMD where both have one);
* a different PatientID or birth date, unless the user confirms it is the same patient
  (``confirm_same_patient=True``, ``--confirm-same-patient``; recorded in the follow-up);
* different contrast phases (contrast raises trabecular HU);
* a different ROI slab thickness.

A different calibration kind or material leaves vBMD out of the comparison (HU are compared);
a different scanner, kVp or kernel warns (:mod:`followup`). Identity that cannot be checked (no
DICOM header) is said in the follow-up's notes.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

from ..errors import InputError
from .patient import IDENTITY_KEYS, aorta_blood_hu, scan_enhanced

#: Slab thicknesses (mm) closer than this are the same measurement setting.
SLAB_TOLERANCE_MM = 0.5
CONFIRM_OPTION = "--confirm-same-patient"


def _facts(doc: Mapping[str, object]) -> Mapping[str, object]:
    return (doc.get("volume") or {}).get("dicom") or {}


def _refuse(problem: str, remedy: str) -> InputError:
    return InputError(f"Follow-up refused: {problem}", remedy)


def _check_not_synthetic_mix(cur, pri) -> None:
    if ("truth" in cur) != ("truth" in pri):
        which = "prior" if "truth" in pri else "current"
        raise _refuse(f"the {which} result is the synthetic digital phantom, the other a patient's CT.",
                      "Give as --prior an earlier result of the same patient.")


def _check_not_a_copy(cur, pri, cf, pf) -> None:
    uid_c, uid_p = cf.get("study_instance_uid"), pf.get("study_instance_uid")
    if uid_c and uid_p and str(uid_c).strip() == str(uid_p).strip():
        raise _refuse(f"the prior is the same study as the current one (Study Instance UID {uid_c}).",
                      "Give as --prior a result from an earlier study of the patient.")
    cur_rows = {(r.get("level"), r.get("shape")): r for r in cur.get("rows") or []}
    pri_rows = {(r.get("level"), r.get("shape")): r for r in pri.get("rows") or []}
    shared = [k for k in cur_rows if k in pri_rows and cur_rows[k].get("mean_hu") is not None
              and pri_rows[k].get("mean_hu") is not None]
    if shared and all(_same_values(cur_rows[k], pri_rows[k]) for k in shared):
        raise _refuse(f"the prior has the same values as the current exam at every one of the {len(shared)} shared "
                      "levels and ROI types: it is a copy of the current measurement, not an earlier study.",
                      "Give as --prior the result of an earlier study of the patient.")


def _same_values(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    """The same mean HU, and the same vBMD where both rows have one (a copy, perhaps calibrated since)."""
    if float(a["mean_hu"]) != float(b["mean_hu"]):
        return False
    va, vb = a.get("vbmd_mg_cm3"), b.get("vbmd_mg_cm3")
    return va is None or vb is None or float(va) == float(vb)


def _identity(cf, pf, confirm: bool, notes: List[str]) -> Dict[str, object]:
    """Same patient by PatientID and birth date; a difference is refused unless confirmed."""
    differ = []
    unknown = []
    for key in ("patient_id", "patient_birth_date"):
        a, b = cf.get(key), pf.get(key)
        if not a or not b:
            unknown.append(key)
        elif str(a).strip() != str(b).strip():
            differ.append(f"{key} {b} (prior) vs {a} (current)")
    if differ and not confirm:
        raise _refuse("the exams are of different patients: " + "; ".join(differ) + ".",
                      f"Give the prior exam of this patient, or pass {CONFIRM_OPTION} if they are the same patient "
                      "(the report records it).")
    if unknown:
        notes.append("Cannot check that both exams are of the same patient (" + ", ".join(unknown)
                     + " not recorded in both results).")
    return {"current": {k: cf.get(k) for k in IDENTITY_KEYS}, "prior": {k: pf.get(k) for k in IDENTITY_KEYS},
            "differences": differ, "confirmed_same_patient_by_user": bool(confirm and differ)}


def _check_protocol(cur, pri, cf, pf) -> None:
    c_con, p_con = scan_enhanced(cur), scan_enhanced(pri)  # the DICOM tag or the aorta's blood HU
    if c_con is not None and p_con is not None and c_con != p_con:
        c_hu, p_hu = aorta_blood_hu(cur)[0], aorta_blood_hu(pri)[0]
        aorta = "" if c_hu is None and p_hu is None else (
            f"; aorta prior {'-' if p_hu is None else f'{p_hu:.0f} HU'}, current {'-' if c_hu is None else f'{c_hu:.0f} HU'}")
        raise _refuse(f"one exam is contrast-enhanced and the other not (prior {pf.get('contrast_agent')!r}, current "
                      f"{cf.get('contrast_agent')!r}{aorta}); contrast raises trabecular HU.",
                      "Compare exams of the same contrast phase.")
    sc = (cur.get("settings") or {}).get("slab_mm")
    sp = (pri.get("settings") or {}).get("slab_mm")
    if isinstance(sc, (int, float)) and isinstance(sp, (int, float)) and abs(float(sc) - float(sp)) > SLAB_TOLERANCE_MM:
        raise _refuse(f"the ROI slabs differ (prior {float(sp):g} mm, current {float(sc):g} mm).",
                      f"Measure both exams with the same --slab-mm (e.g. measure the prior again with --slab-mm {sc:g}).")


def calibration_mismatch(cur, pri) -> Optional[str]:
    """Why vBMD of the two exams cannot be compared (calibration kind or material), or None."""
    cc, pc = cur.get("calibration") or {}, pri.get("calibration") or {}
    if not cc or not pc:
        return None
    for key, name in (("kind", "calibration kind"), ("unit", "calibration material")):
        if cc.get(key) and pc.get(key) and cc.get(key) != pc.get(key):
            return f"the {name} differs (prior {pc.get(key)}, current {cc.get(key)}): vBMD is not compared; HU are."
    return None


def check_prior(current_doc: Mapping[str, object], prior_doc: Mapping[str, object], *,
                confirm_same_patient: bool = False, notes: Optional[List[str]] = None) -> Dict[str, object]:
    """Refuse a prior that is not an earlier, comparable exam of this patient; return the identity record."""
    notes = notes if notes is not None else []
    cf, pf = _facts(current_doc), _facts(prior_doc)
    _check_not_synthetic_mix(current_doc, prior_doc)
    _check_not_a_copy(current_doc, prior_doc, cf, pf)
    identity = _identity(cf, pf, confirm_same_patient, notes)
    _check_protocol(current_doc, prior_doc, cf, pf)
    return identity
