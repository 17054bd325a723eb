"""Per-level values read from a measurement result document (``osteoroi-measurement/1``).

The diagnosis and the follow-up both read a result the same way: the document is checked, its
rows become a ``{(level, shape): row}`` table, and the vBMD unit is the one unit its calibrated
rows share (K2HPO4 and HA densities are never mixed, QCT_BRIEF §4).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from ..errors import InputError
from .criteria import KNOWN_LEVELS

#: What :func:`vbmd_unit` answers, when asked not to refuse, for rows calibrated in different units.
MIXED_UNITS = "mixed"


def finite_number(v) -> Optional[float]:
    """``v`` as a float when it is a finite number (not a bool), else None."""
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
    return any(finite_number(r.get("vbmd_mg_cm3")) is not None for r in result_doc.get("rows") or [])


def vbmd_unit(result_doc: Mapping[str, object], *, refuse_mixed: bool = True) -> Optional[str]:
    """The unit of the result's vBMD values, None without vBMD.

    The rows' own ``vbmd_unit`` decides; rows without one take the calibration's unit, else mg/cm3.
    Rows in different units are refused (a diagnosis cannot average them); with
    ``refuse_mixed=False`` the answer is :data:`MIXED_UNITS` instead (a follow-up then compares HU).
    """
    units = {str(r.get("vbmd_unit") or "") for r in result_doc.get("rows") or []
             if finite_number(r.get("vbmd_mg_cm3")) is not None}
    units.discard("")
    if len(units) > 1:
        if not refuse_mixed:
            return MIXED_UNITS
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


def level_order(levels: Iterable[str]) -> List[str]:
    """Distinct levels from head to foot (T11 … L5); unknown names last, alphabetically."""
    return sorted(set(levels), key=lambda lv: (KNOWN_LEVELS.index(lv) if lv in KNOWN_LEVELS else 99, lv))
