"""What the reader learnt about the image, printed on the terminal before the table: its notes (how it
was read, what the HU check saw) and its caveats (what may change a number; ``io.caveats``)."""
from __future__ import annotations

from typing import Iterable, List, Mapping, Optional

from ..io.tissue_hu import ENHANCED_BLOOD_HU, blood_enhancement
from ..io.volume import Volume


def print_caveats(volume: Volume, stream, aorta: Optional[Mapping[str, object]] = None) -> None:
    """``note:`` lines for the volume's notes, ``caveat:`` lines for its caveats; a ``note:`` when the
    aorta found beside L1-L2 (``aorta``, the result's entry) reads enhanced blood."""
    for note in volume.notes:
        print(f"note: {note}", file=stream)
    contrast = volume.facts.get("contrast_agent")
    if contrast:  # the DICOM fact as recorded; the diagnosis says what it means for the thresholds
        print(f"note: DICOM: contrast agent recorded: {contrast} (contrast raises HU; QCT_BRIEF §2).", file=stream)
    hu = (aorta or {}).get("hu")
    if blood_enhancement(hu) == "enhanced":  # whatever the DICOM tag says; the diagnosis warns
        print(f"note: the aorta beside L1-L2 reads {hu:.0f} HU (> {ENHANCED_BLOOD_HU:g} HU: contrast-enhanced blood; "
              "contrast raises HU; QCT_BRIEF §2).", file=stream)
    for caveat in volume.caveats:
        rows = " (the rows it affects are flagged and not categorised)" if caveat.excludes else ""
        print(f"caveat: {caveat.text}{rows}", file=stream)


def warnings_not_printed(volume: Volume, warnings: Iterable[str]) -> List[str]:
    """The warnings a caveat line has not already said."""
    said = [c.text for c in volume.caveats]
    return [w for w in warnings if not any(w.startswith(t) for t in said)]
