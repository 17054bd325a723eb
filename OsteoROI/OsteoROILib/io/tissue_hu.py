"""Blood on CT: the HU of unenhanced blood and the level above which blood is contrast-enhanced.

Shared by the aorta search (placement), the internal calibration's blood ROI and the diagnosis's
contrast warning, so that one number decides "enhanced" everywhere.

* Unenhanced blood reads 20 ± 40 HU (QCT_BRIEF §4, typical tissue ranges of Michalski et al. 2020).
* ``ENHANCED_BLOOD_HU`` = 100 HU is this tool's choice, not a published cut-off: it lies above the
  top of the unenhanced range (60 HU) by a margin for noise, partial volume and a high haematocrit,
  and below the aorta of any contrast phase in routine abdominal CT (arterial and portal-venous
  phases put the aorta well above 150 HU); neither the brief nor the seed papers give a number.
* Between 60 and 100 HU the blood is above the unenhanced range without being clearly enhanced
  (a late phase, or a dense blood pool): said, not decided.
"""
from __future__ import annotations

from typing import Optional

#: Unenhanced blood: centre and half-range (HU), QCT_BRIEF §4.
UNENHANCED_BLOOD_HU = 20.0
UNENHANCED_BLOOD_RANGE_HU = 40.0
#: Blood above this HU is contrast-enhanced (this tool's choice; see the module's docstring).
ENHANCED_BLOOD_HU = 100.0
#: HU a blood pool can read on CT, unenhanced to arterial phase: the lower end of the unenhanced
#: range (QCT_BRIEF §4) to 600 HU (this tool's bound: denser is calcification or bone).
BLOOD_SEARCH_HU = (UNENHANCED_BLOOD_HU - UNENHANCED_BLOOD_RANGE_HU, 600.0)


def blood_enhancement(hu: Optional[float]) -> Optional[str]:
    """``"enhanced"``, ``"above unenhanced range"`` or ``"unenhanced"`` for a blood HU; None when unknown."""
    if hu is None:
        return None
    if hu > ENHANCED_BLOOD_HU:
        return "enhanced"
    if hu > UNENHANCED_BLOOD_HU + UNENHANCED_BLOOD_RANGE_HU:
        return "above unenhanced range"
    return "unenhanced"
