"""Per-level exclusion flags: fractures (Genant grade), artefacts, focal lesions, the reader's choice.

An excluded vertebra is left out of every criterion's level rule and replaced by the next valid
one (QCT_BRIEF §1 "also to avoid", §3). A fracture is graded by Genant's semi-quantitative method:
grade 0 documents a normal vertebra, grade ≥ 1 is a fracture. Whether a fracture is a fragility
fracture is the reader's call (QCT_BRIEF §3): its cause is "unknown" unless stated. A fragility
fracture means osteoporosis whatever the BMD (seed 000 key point i); a traumatic one or one of
unknown cause only excludes the level.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from ..errors import InputError
from .criteria import KNOWN_LEVELS
from .values import level_order

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


def _check_level(level: str, where: str) -> str:
    lv = str(level).strip().upper()
    if lv not in KNOWN_LEVELS:
        raise InputError(f"{where}: unknown vertebral level {level!r}.", f"Use one of {', '.join(KNOWN_LEVELS)}.")
    return lv


#: Fracture causes: what the reader stated, else unknown (QCT_BRIEF §3).
FRACTURE_CAUSES = {"fragility": "fragility", "insufficiency": "fragility", "osteoporotic": "fragility",
                   "traumatic": "traumatic", "trauma": "traumatic", "unknown": "unknown"}


def _cause(fragility) -> str:
    """"fragility", "traumatic" or "unknown" from a flag's ``fragility`` (True/False/None) or cause text."""
    if fragility is None:
        return "unknown"
    if isinstance(fragility, bool):
        return "fragility" if fragility else "traumatic"
    cause = FRACTURE_CAUSES.get(str(fragility).strip().lower())
    if cause is None:
        raise InputError(f"Fracture cause {fragility!r} is not understood.",
                         "Add :fragility or :traumatic after the grade (e.g. L2=fracture:2:fragility); unknown otherwise.")
    return cause


def _flag(reason: str, grade=None, fragility=None, note: str = "", where: str = "exclusion") -> Dict[str, object]:
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
        flag["cause"] = _cause(fragility)
        flag["fragility"] = {"fragility": True, "traumatic": False}.get(flag["cause"])
    return flag


def parse_exclusion(text: str) -> Tuple[str, Dict[str, object]]:
    """``L2=fracture:2`` (cause unknown) / ``L2=fracture:2:fragility`` / ``L2=fracture:2:traumatic`` /
    ``L3=artefact[:note]`` / ``L4=focal_lesion`` / ``L1=manual[:note]`` → (level, flag)."""
    where = f"--exclude {text!r}"
    if "=" not in str(text):
        raise InputError(f"{where} has no level.", "Write it as LEVEL=REASON, e.g. --exclude L2=fracture:2.")
    level, _, spec = str(text).partition("=")
    level = _check_level(level, where)
    parts = spec.split(":")
    reason = parts[0]
    if _REASON_ALIASES.get(reason.strip().lower().replace(" ", "-")) == "fracture":
        grade = parts[1] if len(parts) > 1 else None
        kind = parts[2].strip().lower() if len(parts) > 2 else "unknown"
        if kind not in FRACTURE_CAUSES:
            raise InputError(f"{where}: fracture cause {kind!r} is not understood.",
                             "Add :fragility or :traumatic after the grade; without it the cause is unknown.")
        return level, _flag("fracture", grade, fragility=kind, where=where)
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
                    items.append((lv, _flag(s.get("reason", ""), s.get("grade"), s.get("cause", s.get("fragility")),
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
        if int(flag["grade"]) >= 1:
            text += {"fragility": ", fragility", "traumatic": ", traumatic"}.get(str(flag.get("cause")), ", cause unknown")
        return text
    text = EXCLUSION_REASONS[str(flag["reason"])]
    return f"{text}: {flag['note']}" if flag.get("note") else text


def flag_excludes(flag: Mapping[str, object]) -> bool:
    """A Genant-0 entry documents a normal vertebra; everything else excludes the level."""
    return not (flag["reason"] == "fracture" and int(flag["grade"]) == 0)



def fractures(exclusions: Mapping[str, List[Mapping[str, object]]]) -> List[Dict[str, object]]:
    """The graded fractures (Genant ≥ 1) among the flags, head to foot: level, grade, cause
    ("fragility", "traumatic", "unknown") and ``fragility`` (True only when the reader said so)."""
    out = []
    for lv in level_order(exclusions):
        for f in exclusions[lv]:
            if f["reason"] == "fracture" and int(f["grade"]) >= 1:
                cause = f.get("cause") or _cause(f.get("fragility"))
                out.append({"level": lv, "grade": int(f["grade"]), "cause": cause, "fragility": cause == "fragility"})
    return out
