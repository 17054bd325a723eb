"""Whether a measured row may be categorised: a row with ``use_in_criteria`` false (a forced placement,
a caveat of the reader such as interpolated slices; see ``placement.row_flags``) is shown with its
value, never used by a criterion."""
from __future__ import annotations

from typing import Iterable, Mapping, Optional


def row_exclusion(row: Mapping[str, object]) -> Optional[str]:
    """``"flagged: <codes>"`` for a row that must not be categorised, else None."""
    if row.get("use_in_criteria") is not False:
        return None
    return "flagged: " + ", ".join(str(c) for c in (row.get("flags") or ["not for diagnosis"]))


def level_exclusion(rows: Iterable[Mapping[str, object]]) -> Optional[str]:
    """The exclusion of a level: its rows' (they share the placement and the slices' caveats)."""
    texts = [t for t in (row_exclusion(r) for r in rows) if t]
    return texts[0] if texts else None
