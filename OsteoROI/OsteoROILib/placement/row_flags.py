"""Row flags: why a measured row must be shown but never categorised, carried on the row itself.

Every row has ``flags`` (short codes) and ``use_in_criteria``. A level placed by force (no vertebral
body was found around the point) is measured and flagged ``forced``; a caveat of the volume
(``io.caveats``: interpolated slices, a series chosen among several, ...) flags the rows whose slab
covers the slices it concerns. Diagnosis leaves a row with ``use_in_criteria`` false out of every
criterion; its value stays in the table, marked.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

from ..io.caveats import Caveat
from ..io.volume import Volume

FORCED = "forced"
FORCED_TEXT = ("{level}: placed by force (no vertebral body was found around the point); the values are shown "
               "but not used by any diagnostic criterion.")


def flag_row(row: Dict[str, object], code: str, excludes: bool, text: str = "") -> None:
    """Add ``code`` to the row's flags (and ``text`` to its warnings); ``excludes`` keeps it out of criteria."""
    flags: List[str] = row.setdefault("flags", [])  # type: ignore[assignment]
    if code not in flags:
        flags.append(code)
    if excludes:
        row["use_in_criteria"] = False
    warnings: List[str] = row.setdefault("warnings", [])  # type: ignore[assignment]
    if text and text not in warnings:
        warnings.append(text)


def flag_rows(volume: Volume, rows: Sequence[Dict[str, object]], warnings: List[str]) -> None:
    """Flag the rows of forced levels (placement "... (forced)") and the rows each caveat of ``volume``
    affects; add the texts to ``warnings``."""
    for row in rows:
        row.setdefault("flags", [])
        row.setdefault("use_in_criteria", True)
        if str(row.get("placement", "")).endswith("(forced)"):
            flag_row(row, FORCED, True, FORCED_TEXT.format(level=row["level"]))
        first, last = _slab_slices(volume, row)
        for caveat in volume.caveats:
            if caveat.affects(first, last):
                flag_row(row, caveat.code, caveat.excludes, _caveat_text(caveat))
        warnings.extend(w for w in row["warnings"] if w not in warnings)
    for caveat in volume.caveats:  # every caveat reaches the user, whether or not a row lies on its slices
        if _caveat_text(caveat) not in warnings:
            warnings.append(_caveat_text(caveat))


def _caveat_text(caveat: Caveat) -> str:
    if caveat.excludes:
        return f"{caveat.text} The rows on these slices are shown but not used by any diagnostic criterion."
    return caveat.text


def _slab_slices(volume: Volume, row: Dict[str, object]) -> tuple:
    """First and last image slice index the row's slab reaches."""
    centre = int(row.get("slice_index") or 0)
    half = 0.5 * float(row.get("slab_mm") or 0.0) / volume.slice_spacing()
    reach = int(math.ceil(half - 0.5)) if half > 0.5 else 0
    return centre - reach, centre + reach
