"""The impression of one exam: one lead statement reconciling every criterion, read from the diagnosis document.

Nothing is re-classified here: the category of each criterion, its levels and its rule are the
verdicts of :func:`diagnosis.verdict.build_diagnosis`; the impression only orders and words them.

* The lead statement is the lead verdict (QCT vBMD when calibrated, else the HU criterion chosen
  first), with the level rule, the fractures and whether the categories apply to this patient.
* The other categorised verdicts are named in one sentence for those that agree with the lead
  (same grade: osteoporosis / low or indeterminate / normal) and one for those that disagree.
* **Borderline**: a value within the least significant change of a cut-off of its criterion
  (LSC = 2.77 × the site's precision error, ISCD; QCT_BRIEF §5), or within the calibration's
  95 % uncertainty (1.96 × the rows' ``vbmd_sd``, the standard error of the calibration line at
  that HU), is flagged: a repeat scan could fall on the other side of the cut-off. The flag never
  changes the category; it tells the reader how firm it is.
* The reader's own comment and the sign-off (reader, date) are carried as given, never invented.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from ..errors import InputError
from .wording import plain_words, readable_date

#: Coarse grade of a category class: two criteria agree when their grades are equal.
GRADE = {"osteoporosis": 0, "possible_osteoporosis": 1, "low_bone_mass": 1, "indeterminate": 1, "normal": 2}
#: Two-sided 95 % factor for the calibration's standard error.
Z95 = 1.96


def _is_calendar_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


@dataclass(frozen=True)
class SignOff:
    """What the radiologist adds: a free-text comment, their name and the date they sign (all optional)."""

    reader: str = ""
    date: str = ""
    comment: str = ""

    def __post_init__(self):
        for name in ("reader", "date", "comment"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"The sign-off {name} must be text, got {getattr(self, name)!r}.",
                                 "Pass --reader NAME, --signed-date YYYY-MM-DD and --comment TEXT as text.")
        date = self.date.strip()
        # A signed report must say unambiguously when it was signed: 02/01/2024 reads two ways.
        if date and not _is_calendar_date(date):
            raise InputError(f"The signed date {date!r} is not a date written as YYYY-MM-DD.",
                             "Give the date as YYYY-MM-DD (e.g. --signed-date 2024-02-01), or leave it empty.")

    def to_dict(self) -> Dict[str, str]:
        return {"reader": self.reader.strip(), "date": self.date.strip(), "comment": self.comment.strip()}


def _quantity_name(v: Mapping[str, object]) -> str:
    return "vBMD" if v.get("quantity") == "vbmd" else "HU"


def _value_text(v: Mapping[str, object]) -> str:
    return "no value" if v.get("value") is None else f"{v['value']:.1f} {v['unit']}"


def _levels(v: Mapping[str, object]) -> str:
    levels = v.get("levels_used") or []
    return "+".join(levels) if len(levels) <= 2 else f"{', '.join(levels)}"


def _where(v: Mapping[str, object]) -> str:
    return f"{_levels(v)}, {v['shape']} ROI" if v.get("shape") else _levels(v)


def _criterion(dx: Mapping[str, object], cid: str) -> Mapping[str, object]:
    return next((c for c in dx.get("criteria") or [] if c["id"] == cid), {})


def _cutoffs(dx: Mapping[str, object], v: Mapping[str, object]) -> List[tuple]:
    """(cut-off, band below, band above) of the verdict's criterion on its ROI type."""
    bands = (_criterion(dx, v["criterion_id"]).get("bands_by_shape") or {}).get(v.get("shape")) or []
    return [(a["upper"], a["label"], b["label"]) for a, b in zip(bands, bands[1:]) if a.get("upper") is not None]


def _calibration_sd(dx: Mapping[str, object], v: Mapping[str, object]) -> Optional[float]:
    """The calibration's standard error of the verdict's mean vBMD: the mean of its levels' ``vbmd_sd``.

    One calibration line serves every level, so its error is shared, not averaged away.
    """
    if v.get("quantity") != "vbmd":
        return None
    sds = [r.get("vbmd_sd") for r in dx.get("rows") or []
           if r["shape"] == v.get("shape") and r["level"] in (v.get("levels_used") or [])]
    if not sds or any(not isinstance(s, (int, float)) or not math.isfinite(s) for s in sds):
        return None
    return sum(sds) / len(sds)


def borderline(dx: Mapping[str, object], v: Mapping[str, object]) -> Optional[Dict[str, object]]:
    """The nearest cut-off within the LSC or the calibration's 95 % uncertainty of the verdict's value, or None."""
    value = v.get("value_exact")
    if v.get("status") != "ok" or not isinstance(value, (int, float)):
        return None
    lsc_pct = float(((dx.get("precision") or {}).get("lsc_pct")) or 0.0)
    cal_sd = _calibration_sd(dx, v)
    best = None
    for cut, below, above in _cutoffs(dx, v):
        lsc_abs = abs(cut) * lsc_pct / 100.0
        cal_abs = Z95 * cal_sd if cal_sd is not None else 0.0
        margin = max(lsc_abs, cal_abs)
        distance = abs(value - cut)
        if distance <= margin and (best is None or distance < best["distance"]):
            basis = (f"least significant change {lsc_pct:.2f} %" if lsc_abs >= cal_abs
                     else "95 % uncertainty of the calibration")
            best = {"cutoff": cut, "below": below, "above": above, "distance": distance, "margin": margin,
                    "basis": basis}
    return best


def borderline_text(dx: Mapping[str, object], v: Mapping[str, object]) -> str:
    b = borderline(dx, v)
    if b is None:
        return ""
    return (f"borderline: {v['value_exact']:.1f} {v['unit']} lies {b['distance']:.1f} {v['unit']} from the "
            f"{b['cutoff']:g} {v['unit']} cut-off between {b['below']} and {b['above']}, within the "
            f"{b['basis']} (± {b['margin']:.1f} {v['unit']}): a repeat measurement may fall on the other side")


def _class(v: Mapping[str, object]) -> Optional[str]:
    return v.get("category_class") or v.get("bmd_class")


def _lead_statement(dx: Mapping[str, object], lead: Mapping[str, object]) -> str:
    what = f"{lead['short_title']} ({_quantity_name(lead)} of {_where(lead)}) {_value_text(lead)}"
    if lead.get("category"):
        return f"{what}: {lead['category']}."
    if lead.get("status") == "ok":
        would = f" (the bands alone would give: {lead['bmd_category']})" if lead.get("bmd_category") else ""
        return f"{what}: not categorised, the criteria do not apply to this patient{would}."
    return f"{lead['short_title']}: no result — {plain_words(lead.get('decision') or lead.get('rule'))}."


def _one_sentence(head: str, verdicts: Sequence[Mapping[str, object]], dx: Mapping[str, object]) -> str:
    """One sentence naming the verdicts, grouped by criterion (its ROI types after one name)."""
    if not verdicts:
        return ""
    groups: Dict[str, List[str]] = {}
    for v in verdicts:
        cat = v.get("category") or f"{v.get('bmd_category')} (not categorised)"
        flag = ", borderline" if borderline(dx, v) else ""
        shape = f"{v['shape']} " if v.get("shape") else ""
        groups.setdefault(f"{v['short_title']} ({_levels(v)})", []).append(f"{shape}{_value_text(v)} {cat}{flag}")
    return f"{head}: " + "; ".join(f"{name}: {', '.join(items)}" for name, items in groups.items()) + "."


def _level_rule(dx: Mapping[str, object], lead: Mapping[str, object]) -> str:
    crit = _criterion(dx, lead["criterion_id"])
    text = str(crit.get("level_rule") or "")
    notes = " ".join(str(n) for n in lead.get("notes") or [] if "replaced" in str(n) or "not used" in str(n))
    return plain_words(" ".join(x for x in (text, notes) if x))


def _fractures(dx: Mapping[str, object]) -> str:
    fx = dx.get("fractures") or []
    other = (dx.get("patient") or {}).get("fragility_fracture")
    if not fx and not other:
        return "No vertebral fracture recorded by the reader."
    causes = {"fragility": "fragility", "traumatic": "traumatic"}
    parts = [f"{f['level']} Genant grade {f['grade']} ({causes.get(str(f.get('cause')), 'cause not stated')})"
             for f in fx]
    if other:
        parts.append(f"fragility fracture elsewhere: {other}")
    tail = (" A fragility fracture means osteoporosis whatever the density; fractured vertebrae are left out "
            "of the measurement.") if any(f["fragility"] for f in fx) or other else \
        " Fractured vertebrae are left out of the measurement."
    return "Fractures: " + "; ".join(parts) + "." + tail


def build_impression(dx: Mapping[str, object], sign_off: Optional[SignOff] = None) -> Dict[str, object]:
    """The impression block of a report, from a diagnosis document (:func:`diagnosis.verdict.build_diagnosis`)."""
    verdicts = list(dx.get("verdicts") or [])
    lead = next((v for v in verdicts if v.get("lead")), verdicts[0] if verdicts else None)
    sign = (sign_off or SignOff()).to_dict()
    if lead is None:
        return {"statement": "No criterion could be applied.", "category": None, "category_class": None,
                "borderline": "", "level_rule": "", "fractures": _fractures(dx), "applicability": "",
                "supporting": "", "disagreeing": "", "not_assessable": "", "sign_off": sign}
    others = [v for v in verdicts if v is not lead]
    # only categorised verdicts can support or contradict the lead; values without a category are listed apart
    rated = [v for v in others if v.get("status") == "ok" and v.get("category") and _class(v) in GRADE]
    uncategorised = [v for v in others if v.get("status") == "ok" and not v.get("category")]
    lead_grade = GRADE.get(_class(lead) or "")
    agree = [v for v in rated if lead_grade is not None and GRADE[_class(v)] == lead_grade]
    differ = [v for v in rated if v not in agree]
    # without a lead category nothing can agree or disagree with it: the others are listed as they are
    differ_head = "Disagreeing" if lead_grade is not None else "Other criteria"
    missing = [v for v in others if v.get("status") != "ok"] + uncategorised
    patient = dx.get("patient") or {}
    return {
        "statement": plain_words(_lead_statement(dx, lead)),
        "category": lead.get("category"),
        "category_class": lead.get("category_class"),
        "criterion_id": lead["criterion_id"],
        "borderline": plain_words(borderline_text(dx, lead)),
        "level_rule": _level_rule(dx, lead),
        "fractures": _fractures(dx),
        "applicability": plain_words(patient.get("applicability_note") or ""),
        "supporting": plain_words(_one_sentence("Supporting", agree, dx)),
        "disagreeing": plain_words(_one_sentence(differ_head, differ, dx)),
        "not_assessable": plain_words(_one_sentence_missing(missing)),
        "sign_off": sign,
        "signed_date_text": readable_date(sign["date"]) or "",
    }


def _one_sentence_missing(verdicts: Sequence[Mapping[str, object]]) -> str:
    if not verdicts:
        return ""
    return "Not assessable: " + "; ".join(
        f"{v['short_title']}{' ' + str(v['shape']) + ' ROI' if v.get('shape') else ''} "
        f"({'not categorised' if v['status'] == 'ok' else v['status']})"
        for v in verdicts) + "."


def impression_lines(imp: Mapping[str, object]) -> List[str]:
    """The impression as plain text lines, in reading order (console, DICOM SR text)."""
    keys = ("statement", "borderline", "level_rule", "fractures", "applicability", "supporting", "disagreeing",
            "not_assessable")
    lines = []
    for k in keys:
        t = str(imp.get(k) or "").strip()
        if t:
            lines.append(t[0].upper() + t[1:] if k == "borderline" else t)
    sign = imp.get("sign_off") or {}
    if sign.get("comment"):
        lines.append(f"Reader's comment: {sign['comment']}")
    if sign.get("reader") or sign.get("date"):
        lines.append(f"Signed: {sign.get('reader') or '—'}, {imp.get('signed_date_text') or sign.get('date') or '—'}")
    return lines
