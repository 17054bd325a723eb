"""Plain words for a reader: internal source labels, jargon and raw dates turned into what a radiologist reads.

The diagnosis and calibration documents cite their sources with the project's short labels
("QCT_BRIEF §3", "seed 000 Table 2"); a signed report names the publication instead, and says
"least-squares line" rather than "ols". Every text a report shows passes through
:func:`plain_words`; :data:`INTERNAL_MARKERS` are the strings that must never reach a reader.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from typing import Optional

#: Strings of the project's own vocabulary that a report must not show.
INTERNAL_MARKERS = ("QCT_BRIEF", "seed 000", "seed 002", "seed 004", "seed-002", "seed002")

#: The publications behind the short labels, short (the report's reference list names them in full).
CONSENSUS_2020 = "Chinese imaging consensus 2020"
WANG_ROI = "Wang et al. ROI study"
ACR_FOLLOWUP = "ACR-guided follow-up workflow"

_REPLACEMENTS = (
    # a bracketed or parenthesised pointer into the project's brief says nothing to a reader
    (re.compile(r"\s*[\[(](?:see )?QCT_BRIEF[^\])]*[\])]"), ""),
    (re.compile(r"[;,]\s*QCT_BRIEF[^)\]]*"), ""),
    (re.compile(r"QCT_BRIEF (?:section|§)\s*[\d–\-, §]+;?\s*"), ""),
    (re.compile(r"\bseed 000 key points? ", re.I), CONSENSUS_2020 + ", key point "),
    (re.compile(r"\bseed 000 Table (\d+)", re.I), CONSENSUS_2020 + r", Table \1"),
    (re.compile(r"\bseed 000\b", re.I), CONSENSUS_2020),
    (re.compile(r"\(seed[ -]?002\)", re.I), "(Wang et al.)"),
    (re.compile(r"\bseed[ -]?002 Table (\d+)", re.I), WANG_ROI + r", Table \1"),
    (re.compile(r"\bseed[ -]?002\b", re.I), WANG_ROI),
    (re.compile(r"\bseed 004\b", re.I), ACR_FOLLOWUP),
)

#: Calibration method names of the calibration documents, in words.
METHOD_WORDS = {
    "ols": "least-squares line through the phantom rods",
    "phantom": "phantom rods in the same scan",
    "mindways": "Mindways two-component fit (K2HPO4 and water)",
    "manual": "slope and intercept entered by hand",
    "internal": "internal calibration from the patient's own tissues",
    "asynchronous": "phantom scanned separately on the same scanner",
}


def plain_words(text: Optional[str]) -> str:
    """``text`` with the project's source labels replaced by the publications they stand for."""
    out = "" if text is None else str(text)
    for pattern, repl in _REPLACEMENTS:
        out = pattern.sub(repl, out)
    return re.sub(r"\(\s*\)", "", out)


def method_words(method: Optional[str]) -> Optional[str]:
    """A calibration method or kind in words (unknown names are returned unchanged)."""
    if not method:
        return None
    return METHOD_WORDS.get(str(method).strip().lower(), str(method))


def readable_date(text: Optional[str]) -> Optional[str]:
    """A DICOM date (``20240131``), an ISO date or an ISO timestamp → "31 January 2024" (with time, "… 14:05 UTC")."""
    if not text:
        return None
    t = str(text).strip()
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", t)
    if m:
        try:
            d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return t
        return f"{d.day} {d.strftime('%B')} {d.year}"
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return t
    zone = " UTC" if dt.utcoffset() is not None and dt.utcoffset().total_seconds() == 0 else ""
    return f"{dt.day} {dt.strftime('%B')} {dt.year}, {dt.strftime('%H:%M')}{zone}"
