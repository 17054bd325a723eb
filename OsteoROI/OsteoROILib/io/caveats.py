"""Caveats: what the reader knows about how a volume was made that the measurement must carry.

A note (``Volume.notes``) records how a volume was read. A caveat is a note that can change a number:
interpolated or missing slices, a series chosen among several, labels resampled, a HU scale that could
not be checked. Every caveat is printed by the command line, shown in the module and the report, and
flags the rows it affects (``slices``: the image slice indices it concerns; ``None``: all of them).
A caveat with ``excludes`` set keeps the rows it flags out of every diagnostic criterion: their values
are shown, never categorised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import InputError


@dataclass(frozen=True)
class Caveat:
    """One caveat: a short ``code`` (the row flag), the ``text`` the user reads, the slices it concerns."""

    code: str
    text: str
    slices: Optional[List[int]] = field(default=None)
    excludes: bool = False

    def __post_init__(self):
        if not self.code or not self.text:
            raise InputError("A caveat needs a code and a text.", "Give both (e.g. Caveat('interpolated', '...')).")

    def affects(self, first_slice: int, last_slice: int) -> bool:
        """True when the caveat concerns any image slice from ``first_slice`` to ``last_slice``."""
        if self.slices is None:
            return True
        return any(first_slice <= k <= last_slice for k in self.slices)

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"code": self.code, "text": self.text, "excludes": self.excludes}
        if self.slices is not None:
            out["slices"] = [int(k) for k in self.slices]
        return out


def add_caveat(caveats: List[Caveat], caveat: Caveat) -> None:
    """Append ``caveat`` unless the same one is already there."""
    if caveat not in caveats:
        caveats.append(caveat)
