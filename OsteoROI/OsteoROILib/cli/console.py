"""What the command line prints: per-level tables (HU, vBMD), the diagnosis summary and the impression."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

from ..export.impression import build_impression, impression_lines


def print_level_table(rows: Sequence[Mapping[str, object]], stream, truth: Optional[Dict[str, float]] = None,
                      key: str = "mean_hu", title: str = "Mean HU per ROI (SD in the JSON/CSV)") -> None:
    """Levels down, ROI types across; ``truth`` adds a column (the digital phantom's)."""
    shapes, levels = [], []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
        if r["level"] not in levels:
            levels.append(r["level"])
    header = f"{'level':<6}" + "".join(f"{s:>10}" for s in shapes) + (f"{'truth':>10}" if truth else "")
    print(f"{title}:", file=stream)
    print(header, file=stream)
    for level in levels:
        line = f"{level:<6}"
        for s in shapes:
            row = next((r for r in rows if r["level"] == level and r["shape"] == s), None)
            value = None if row is None else row.get(key)
            line += f"{value:>10.1f}" if isinstance(value, (int, float)) else f"{'—':>10}"
        if truth:
            line += f"{truth.get(level, float('nan')):>10.1f}"
        print(line, file=stream)


def vbmd_unit_of(rows: Sequence[Mapping[str, object]]) -> Optional[str]:
    """The vBMD unit of the rows, or None when no row has a vBMD (not calibrated)."""
    return next((str(r.get("vbmd_unit") or "mg/cm3") for r in rows if isinstance(r.get("vbmd_mg_cm3"), (int, float))),
                None)


def print_vbmd_table(rows: Sequence[Mapping[str, object]], stream, truth: Optional[Dict[str, float]] = None) -> None:
    """The vBMD table, when the rows are calibrated (nothing otherwise)."""
    unit = vbmd_unit_of(rows)
    if unit:
        print_level_table(rows, stream, truth=truth, key="vbmd_mg_cm3", title=f"vBMD per ROI ({unit})")


def print_impression(dx: Mapping[str, object], stream, sign_off=None) -> None:
    """The impression, one statement per line, as the report shows it."""
    print("Impression:", file=stream)
    for line in impression_lines(build_impression(dx, sign_off)):
        print(f"  {line}", file=stream)
