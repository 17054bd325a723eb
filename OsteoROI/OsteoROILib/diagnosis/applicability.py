"""Who a criterion's categories apply to, read from the criterion's own ``applies_to`` data.

A criterion file states its population (``"applies_to"``); the defaults are those of the QCT and
opportunistic-CT criteria here: post-menopausal women and men aged 50 or over (seed 000 Table 2
footnote; QCT_BRIEF §3), never children ("T-score-style categories must not be applied to
children", QCT_BRIEF §3). Outside the population the values are shown and the category is not
given, with a plain reason (the verdict keeps the would-be category in its notes).

Facts that make the categories inapplicable whatever the criterion says:

* an age below ``min_age_years`` (a child), or an implausible age (outside 0–``MAX_PLAUSIBLE_AGE``,
  e.g. DICOM PatientAge "999Y");
* a menopausal status given for a man (the facts contradict each other).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

from ..errors import InputError

#: Ages above this are not plausible for a living patient (years); DICOM "999Y" is a placeholder.
MAX_PLAUSIBLE_AGE = 120.0
#: The population of the built-in criteria (seed 000 Table 2 footnote, QCT_BRIEF §3).
DEFAULT_APPLIES_TO: Dict[str, object] = {
    "sexes": ["F", "M"],
    "min_age_years": 18,
    "men_min_age_years": 50,
    "women_menopause": "post",
    "presumed_menopause_age_years": 50,
}
_KEYS = tuple(DEFAULT_APPLIES_TO)


def check_applies_to(value, where: str) -> Dict[str, object]:
    """Validate a criterion's ``applies_to`` block; return it with the defaults filled in."""
    if value is None:
        return dict(DEFAULT_APPLIES_TO)
    if not isinstance(value, Mapping):
        raise InputError(f"Criteria {where}: \"applies_to\" must be an object.",
                         'Give e.g. {"sexes": ["F", "M"], "min_age_years": 18, "men_min_age_years": 50}.')
    out = dict(DEFAULT_APPLIES_TO)
    for key, v in value.items():
        if key in ("source", "description"):
            out[key] = v
            continue
        if key not in _KEYS:
            raise InputError(f"Criteria {where}: unknown \"applies_to\" field {key!r}.", f"Use {', '.join(_KEYS)}.")
        out[key] = v
    sexes = out["sexes"]
    if not isinstance(sexes, list) or not sexes or any(s not in ("F", "M") for s in sexes):
        raise InputError(f"Criteria {where}: \"applies_to.sexes\" must list F and/or M.", 'Give e.g. ["F", "M"].')
    for key in ("min_age_years", "men_min_age_years", "presumed_menopause_age_years"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 18 <= float(v) <= MAX_PLAUSIBLE_AGE:
            raise InputError(f"Criteria {where}: \"applies_to.{key}\" must be an age of 18 or more (children are "
                             "never given densitometric categories).", "Give the age in years, e.g. 50.")
    if out["women_menopause"] not in ("post", "any"):
        raise InputError(f"Criteria {where}: \"applies_to.women_menopause\" must be \"post\" or \"any\".",
                         'Give "post" (post-menopausal women only) or "any".')
    return out


# Where a reader gives each patient fact: the panel's field ("Patient, follow-up and diagnosis" section
# of the Slicer module) and the command line's option, so one message serves both.
_FIELDS = {"age": ("Age", "--age"), "sex": ("Sex", "--sex"), "menopause": ("Menopause", "--menopause")}


def ask(fact: str, value: str = "") -> str:
    """How to give a patient fact, in the panel and on the command line: ``ask("menopause", "post")`` →
    "Menopause: post (--menopause post)"."""
    label, option = _FIELDS[fact]
    return f"{label}: {value} ({option} {value})" if value else f"{label} ({option})"


def _man(age: Optional[float], meno: Optional[str], rule: Mapping[str, object]) -> Tuple[bool, str]:
    if meno is not None:
        return False, (f"Menopausal status '{meno}' was given for a man: the patient facts contradict each other, so "
                       f"no category is given. Check {ask('sex')} and {ask('menopause')}.")
    limit = float(rule["men_min_age_years"])
    if age is None:
        return False, f"Age unknown: the categories apply to men aged {limit:g} or over. Give the {ask('age')} to apply them."
    if age >= limit:
        return True, f"Man aged {age:g} (≥ {limit:g}): the criteria apply."
    return False, (f"Man aged {age:g} (< {limit:g}): the categories are not applied; low values in younger patients "
                   "prompt a search for secondary causes (seed 000 Table 2).")


def _woman(age: Optional[float], meno: Optional[str], rule: Mapping[str, object]) -> Tuple[bool, str]:
    presumed = float(rule["presumed_menopause_age_years"])
    if rule["women_menopause"] == "any":
        return True, "Woman: the criteria apply whatever the menopausal status."
    if meno == "post":
        return True, "Post-menopausal woman (stated): the criteria apply."
    if meno == "pre":
        return False, ("Pre-menopausal woman: the categories are not applied; low values prompt a search for "
                       "secondary causes (seed 000 Table 2).")
    if age is not None and age >= presumed:
        return True, f"Woman aged {age:g}: presumed post-menopausal (give {ask('menopause', 'pre')} if not); the criteria apply."
    if age is None:
        return False, ("Age and menopausal status unknown: the categories apply to post-menopausal women. "
                       f"Give the {ask('age')} or {ask('menopause', 'post')} to apply them.")
    return False, (f"Woman aged {age:g}, menopausal status not given: the categories are not applied. "
                   f"Give {ask('menopause', 'post')} if she is post-menopausal.")


def applicability(age: Optional[float], sex: Optional[str], meno: Optional[str],
                  rule: Optional[Mapping[str, object]] = None, *, age_implausible: bool = False) -> Tuple[bool, str]:
    """Whether a criterion's categories apply to this patient, and why (module docstring)."""
    rule = rule or DEFAULT_APPLIES_TO
    if age_implausible:
        return False, f"The recorded age is implausible: no category is given. Give the real {ask('age')}."
    if age is not None and age < float(rule["min_age_years"]):
        return False, (f"Age {age:g}: densitometric categories are never applied to children (QCT_BRIEF §3); "
                       "the values are shown without a category.")
    if sex in ("F", "M") and sex not in rule["sexes"]:
        return False, f"The criterion applies to {' and '.join(rule['sexes'])} only; the categories are not applied."
    if sex == "M":
        return _man(age, meno, rule)
    if sex == "F":
        return _woman(age, meno, rule)
    if sex == "O":
        return False, "Sex recorded as other: the categories (post-menopausal women, men ≥ 50) are not applied."
    return False, ("Sex unknown: the categories apply to post-menopausal women and men aged 50 or over. "
                   f"Give the {ask('sex')} and {ask('age')} (or {ask('menopause')}) to apply them.")


def for_criterion(crit: Mapping[str, object], patient: Mapping[str, object]) -> Tuple[bool, str]:
    """The applicability of one criterion (its ``applies_to``) to a resolved patient."""
    return applicability(patient.get("age_years"), patient.get("sex"), patient.get("menopause_stated"),
                         crit.get("applies_to") or DEFAULT_APPLIES_TO,
                         age_implausible=bool(patient.get("age_implausible")))
