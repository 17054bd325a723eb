"""Per-level exclusion flags: fractures (Genant grade), artefacts, focal lesions, the reader's choice.

An excluded vertebra is left out of every criterion's level rule and replaced by the next valid
one (QCT_BRIEF §1 "also to avoid", §3). A fracture is graded by Genant's semi-quantitative method:
grade 0 documents a normal vertebra, grade ≥ 1 is a fracture; a fragility fracture (the default)
means osteoporosis whatever the BMD (seed 000 key point i), a traumatic one only excludes the level.
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



def fractures(exclusions: Mapping[str, List[Mapping[str, object]]]) -> List[Dict[str, object]]:
    """The graded fractures (Genant ≥ 1) among the flags, head to foot: level, grade, fragility."""
    out = []
    for lv in level_order(exclusions):
        for f in exclusions[lv]:
            if f["reason"] == "fracture" and int(f["grade"]) >= 1:
                out.append({"level": lv, "grade": int(f["grade"]), "fragility": bool(f.get("fragility", True))})
    return out
