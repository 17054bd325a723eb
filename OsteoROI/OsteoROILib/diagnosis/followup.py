"""Follow-up: change since a prior exam against the least significant change (QCT_BRIEF §5, seed 004).

A change is real only if it exceeds the least significant change, LSC = 2.77 × precision error
(ISCD; 2.77 = 1.96 × √2, the 95 % limit for the difference of two measurements). Spine QCT
precision is typically 2–4 %; the default is 3 % (LSC 8.31 %), and the site's own value should be
given. Percent change = (current − prior) / prior × 100; verdict: > +LSC significant gain,
< −LSC significant loss, otherwise stable (a change exactly equal to the LSC does not exceed it).

For vBMD the LSC is kept in absolute units: QCT precision is nearly constant in mg/cm³ (e.g.
0.53-0.91 mg/cm³ intra-scanner on the European Spine Phantom, Wang 2017 Sci Rep 7:6284), so a
site precision given in mg/cm³ (``precision_mg_cm3``, ``--precision-mg-cm3``) gives
LSC = 2.77 × that, and the percentage is derived from it at the prior value; a precision given in %
gives the absolute LSC derived at the prior value. HU changes use the percentage.

Summaries compare like with like: the prior exam's value is taken over the same levels and ROI
type the current verdict used (a vertebra fractured since the prior exam is left out of both).
"""
from __future__ import annotations

import math
from datetime import date
from typing import Dict, List, Mapping, Optional

from ..errors import InputError
from .criteria import QUANTITIES
from .followup_identity import calibration_mismatch, check_prior
from .values import MIXED_UNITS, check_result_doc, finite_number, value_table, vbmd_unit

LSC_FACTOR = 2.77
DEFAULT_PRECISION_PCT = 3.0
#: Facts that must match between exams for a change to be trusted (QCT_BRIEF §4, §5).
SCANNER_FACTS = (("manufacturer", "manufacturer"), ("model", "scanner model"), ("kvp", "kVp"),
                 ("convolution_kernel", "reconstruction kernel"))


def lsc_pct(precision_pct: float = DEFAULT_PRECISION_PCT) -> float:
    """Least significant change in percent: 2.77 × precision error (ISCD)."""
    p = float(precision_pct)
    if not math.isfinite(p) or p <= 0 or p > 50:
        raise InputError(f"Precision error {precision_pct!r} % is not usable.",
                         "Give the site's precision error as a percentage between 0 and 50 (typically 2-4; default 3).")
    return LSC_FACTOR * p


def lsc_abs(precision_mg_cm3: Optional[float]) -> Optional[float]:
    """Least significant change in mg/cm³ from the site's precision in mg/cm³ (None when not given)."""
    if precision_mg_cm3 is None:
        return None
    p = finite_number(precision_mg_cm3)
    if p is None or p <= 0 or p > 50:
        raise InputError(f"Precision error {precision_mg_cm3!r} mg/cm3 is not usable.",
                         "Give the site's precision error in mg/cm3 between 0 and 50 (e.g. --precision-mg-cm3 2).")
    return LSC_FACTOR * p


def vbmd_change(prior: Optional[float], current: Optional[float], lsc: float,
                lsc_mg: Optional[float]) -> Dict[str, object]:
    """A vBMD change with its LSC in mg/cm³: the site's absolute LSC when given (the % derived at the prior),
    else the % LSC (the mg/cm³ derived at the prior). The verdict compares the change in the unit given."""
    out = change(prior, current, lsc)
    if prior is None or current is None or prior <= 0:
        out["lsc_abs"] = lsc_mg
        return out
    if lsc_mg is None:
        out["lsc_abs"] = round(lsc * prior / 100.0, 4)
        return out
    out["lsc_abs"] = round(lsc_mg, 4)
    out["lsc_pct"] = round(lsc_mg / prior * 100.0, 4)
    diff, limit = round(current - prior, 2), round(lsc_mg, 2)
    out["verdict"] = "significant gain" if diff > limit else ("significant loss" if diff < -limit else "stable")
    return out


def change_verdict(change_pct: Optional[float], lsc: float) -> Optional[str]:
    """Compared at 2 decimals, as printed: exceeding the LSC is required for a significant change."""
    if change_pct is None:
        return None
    change, limit = round(change_pct, 2), round(lsc, 2)
    if change > limit:
        return "significant gain"
    if change < -limit:
        return "significant loss"
    return "stable"


def change(prior: Optional[float], current: Optional[float], lsc: float) -> Dict[str, object]:
    out: Dict[str, object] = {"prior": prior, "current": current, "change": None, "change_pct": None,
                              "lsc_pct": round(lsc, 4), "verdict": None, "note": ""}
    if prior is None or current is None:
        out["note"] = "value missing in the " + ("prior" if prior is None else "current") + " exam"
        return out
    out["change"] = current - prior
    if prior <= 0:
        out["note"] = "percent change undefined: the prior value is not positive"
        return out
    out["change_pct"] = (current - prior) / prior * 100.0
    out["verdict"] = change_verdict(out["change_pct"], lsc)
    return out


def _parse_date(text) -> Optional[date]:
    if not text:
        return None
    t = str(text).strip().replace("-", "")
    try:
        return date(int(t[0:4]), int(t[4:6]), int(t[6:8]))
    except (ValueError, IndexError):
        return None


def _check_same_scanner(cf, pf, cc, pc, warnings: List[str], notes: List[str]) -> None:
    """Warn when scanner, kVp, kernel or calibration differ between the exams (QCT_BRIEF §4, §5)."""
    unknown = []
    for key, name in SCANNER_FACTS:
        a, b = cf.get(key), pf.get(key)
        if a is None or b is None or a == "" or b == "":
            unknown.append(name)
            continue
        same = (abs(float(a) - float(b)) < 0.5) if key == "kvp" else (str(a).strip().lower() == str(b).strip().lower())
        if not same:
            warnings.append(f"The {name} differs between the exams (prior {b}, current {a}): changes may reflect the "
                            "scanner rather than the bone; compare on the same scanner and protocol (QCT_BRIEF §5).")
    if unknown:
        notes.append("Cannot check that both exams used the same " + ", ".join(unknown)
                     + " (not recorded in one or both results).")
    if cc and pc and cc.get("method") and pc.get("method") and cc.get("method") != pc.get("method"):
        warnings.append(f"The calibration method differs (prior {pc.get('method')}, current {cc.get('method')}): "
                        "vBMD may not be comparable.")


def _interval_days(cf, pf, warnings: List[str]) -> Optional[int]:
    d_cur, d_pri = _parse_date(cf.get("study_date")), _parse_date(pf.get("study_date"))
    interval = (d_cur - d_pri).days if d_cur and d_pri else None
    if interval is not None and interval < 0:
        warnings.append("The 'prior' exam is dated after the current one: check the order of the files.")
    return interval


def _comparable_vbmd_unit(current_doc, prior_doc, warnings: List[str], notes: List[str]) -> Optional[str]:
    """The vBMD unit both exams share, or None when vBMD cannot be compared (then HU are): different units,
    or a different calibration kind or material (:func:`followup_identity.calibration_mismatch`)."""
    mismatch = calibration_mismatch(current_doc, prior_doc)
    if mismatch:
        warnings.append(mismatch[0].upper() + mismatch[1:])
        return None
    u_cur = vbmd_unit(current_doc, refuse_mixed=False)
    u_pri = vbmd_unit(prior_doc, refuse_mixed=False)
    vbmd_ok = bool(u_cur) and bool(u_pri) and u_cur == u_pri and u_cur != MIXED_UNITS
    if u_cur and u_pri and u_cur != u_pri:
        warnings.append(f"vBMD units differ (prior {u_pri}, current {u_cur}): vBMD is not compared; HU are.")
    elif bool(u_cur) != bool(u_pri):
        notes.append("Only one exam has vBMD: the follow-up compares HU.")
    return u_cur if vbmd_ok else None


def _level_changes(cur_t, pri_t, unit: Optional[str], lsc: float, lsc_mg: Optional[float]) -> List[Dict[str, object]]:
    """Change per level × ROI type measured in both exams, vBMD (when comparable) then HU."""
    levels = []
    for quantity in (("vbmd", "hu") if unit else ("hu",)):
        field = QUANTITIES[quantity]
        for key in cur_t:
            if key not in pri_t:
                continue
            c, p = finite_number(cur_t[key].get(field)), finite_number(pri_t[key].get(field))
            if c is None and p is None:
                continue
            row = {"level": key[0], "shape": key[1], "quantity": quantity,
                   "unit": unit if quantity == "vbmd" else "HU"}
            row.update(vbmd_change(p, c, lsc, lsc_mg) if quantity == "vbmd" else change(p, c, lsc))
            levels.append(row)
    return levels


def _verdict_change(v: Mapping[str, object], pri_t, vbmd_ok: bool, lsc: float,
                    lsc_mg: Optional[float] = None) -> Dict[str, object]:
    """Change of one verdict's value, the prior taken over the same levels and ROI type."""
    q = v["quantity"]
    entry = {"criterion_id": v["criterion_id"], "shape": v["shape"], "quantity": q, "unit": v["unit"],
             "levels": list(v["levels_used"])}
    if v["status"] != "ok" or not v["levels_used"]:
        entry.update(change(None, None, lsc))
        entry["note"] = "no current value"
    elif q == "vbmd" and not vbmd_ok:
        entry.update(change(None, v["value_exact"], lsc))
        entry["note"] = "the prior exam has no comparable vBMD"
    else:
        field = QUANTITIES[q]
        vals = [finite_number((pri_t.get((lv, v["shape"])) or {}).get(field)) for lv in v["levels_used"]]
        missing = [lv for lv, x in zip(v["levels_used"], vals) if x is None]
        if missing:
            entry.update(change(None, v["value_exact"], lsc))
            entry["note"] = f"the prior exam has no value at {', '.join(missing)}"
        else:
            prior_value = math.fsum(vals) / len(vals)
            entry.update(vbmd_change(prior_value, v["value_exact"], lsc, lsc_mg) if q == "vbmd"
                         else change(prior_value, v["value_exact"], lsc))
            entry["note"] = "; ".join(x for x in ("same levels and ROI type in both exams", entry["note"]) if x)
    return entry


def compare(current_doc: Mapping[str, object], prior_doc: Mapping[str, object], diagnosis: Mapping[str, object],
            precision_pct: float = DEFAULT_PRECISION_PCT, prior_file: str = "", *,
            confirm_same_patient: bool = False, precision_mg_cm3: Optional[float] = None) -> Dict[str, object]:
    """The follow-up block of a diagnosis: per level × ROI type and per verdict, with warnings. A prior
    that is not an earlier, comparable exam of this patient is refused (:mod:`followup_identity`)."""
    try:
        check_result_doc(prior_doc)
    except InputError as exc:
        raise InputError(f"Prior exam: {exc.problem}", exc.remedy) from None
    lsc = lsc_pct(precision_pct)
    lsc_mg = lsc_abs(precision_mg_cm3)
    cur_t, pri_t = value_table(current_doc), value_table(prior_doc)
    warnings: List[str] = []
    notes: List[str] = []
    identity = check_prior(current_doc, prior_doc, confirm_same_patient=confirm_same_patient, notes=notes)
    if identity["confirmed_same_patient_by_user"]:
        warnings.append("The user confirmed the exams are of the same patient although "
                        + "; ".join(identity["differences"]) + ".")
    cf = (current_doc.get("volume") or {}).get("dicom") or {}
    pf = (prior_doc.get("volume") or {}).get("dicom") or {}
    _check_same_scanner(cf, pf, current_doc.get("calibration") or {}, prior_doc.get("calibration") or {},
                        warnings, notes)
    interval = _interval_days(cf, pf, warnings)
    unit = _comparable_vbmd_unit(current_doc, prior_doc, warnings, notes)
    levels = _level_changes(cur_t, pri_t, unit, lsc, lsc_mg)
    summary = [_verdict_change(v, pri_t, unit is not None, lsc, lsc_mg) for v in diagnosis.get("verdicts") or []]
    prior_vol = prior_doc.get("volume") or {}
    return {
        "prior": {"file": prior_file or prior_vol.get("file", ""), "created": prior_doc.get("created"),
                  "study_date": pf.get("study_date"), "manufacturer": pf.get("manufacturer"), "model": pf.get("model"),
                  "kvp": pf.get("kvp"), "convolution_kernel": pf.get("convolution_kernel")},
        "identity": identity,
        "interval_days": interval,
        "precision_pct": float(precision_pct),
        "lsc_factor": LSC_FACTOR,
        "lsc_pct": round(lsc, 4),
        "precision_mg_cm3": None if lsc_mg is None else float(precision_mg_cm3),
        "lsc_mg_cm3": None if lsc_mg is None else round(lsc_mg, 4),
        "lsc_basis": "mg/cm3 (site precision; % derived at the prior value)" if lsc_mg is not None
        else "% (site precision; mg/cm3 derived at the prior value)",
        "levels": levels,
        "summary": summary,
        "warnings": warnings,
        "notes": notes,
    }
