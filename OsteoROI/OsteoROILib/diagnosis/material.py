"""The reference material of a vBMD criterion against the measurement's, and a plausible trabecular range.

vBMD in K₂HPO₄ and in hydroxyapatite (HA) are different quantities (QCT_BRIEF §4): referenced to
the same bone, BMD_K2HPO4 / BMD_HA ≈ 0.86 at 80 kVp and 0.81 at 140 kVp, single energy (Goodsitt
1992, Bone Miner 19:145, Table of slopes; the HA standards were solid, the K₂HPO₄ ones liquid). A
criterion states the material its cut-offs were set in (``reference_material``); a measurement in
the other material is shown without a category unless the user opts into this documented
conversion (``convert_material=True``, ``osteoroi report --convert-material``), which the verdict
and the report state. Between 80 and 140 kVp the ratio is interpolated linearly in kVp; outside,
it is held at the nearer end; with the kVp unknown, 120 kVp is assumed (and said).

A trabecular vBMD outside ``PLAUSIBLE_VBMD_MG_CM3`` is shown but never categorised: lumbar
trabecular vBMD of adults lies well inside 0–350 mg/cm³ (young-adult means are about 170–200
mg/cm³ with SD about 30, so 350 is more than 5 SD above; values at or below 0 have no mineral).
This range is this tool's construction, to stop calibrations that gave 2102 or −4079 mg/cm³ from
being categorised.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

#: Goodsitt 1992 (Bone Miner 19:145): BMD_K2HPO4 / BMD_HA at (kVp, ratio), single-energy QCT.
GOODSITT_RATIOS = ((80.0, 0.86), (140.0, 0.81))
GOODSITT_SOURCE = ("Goodsitt MM. Conversion relations for quantitative CT bone mineral densities measured with solid "
                   "and liquid calibration standards. Bone Miner 1992;19:145-158: BMD_K2HPO4/BMD_HA = 0.86 at 80 kVp, "
                   "0.81 at 140 kVp (single energy)")
ASSUMED_KVP = 120.0
#: Trabecular vBMD (mg/cm³) that is categorised; outside it the value is shown, flagged, uncategorised.
PLAUSIBLE_VBMD_MG_CM3 = (0.0, 350.0)
MATERIALS = ("K2HPO4", "HA")
CONVERT_OPTION = "--convert-material"


def material_of_unit(unit: Optional[str]) -> Optional[str]:
    """"K2HPO4" or "HA" from a vBMD unit such as "mg/cm3 HA" (None when it names neither)."""
    text = str(unit or "").upper().replace("₂", "2").replace("₄", "4")
    if "K2HPO4" in text:
        return "K2HPO4"
    if "HA" in text.split() or text.endswith("HA") or "HYDROXYAPATITE" in text:
        return "HA"
    return None


def goodsitt_ratio(kvp) -> Tuple[float, float, str]:
    """(BMD_K2HPO4 / BMD_HA, the kVp used, how it was chosen)."""
    try:
        k = float(kvp)
        how = f"{k:g} kVp of the scan"
    except (TypeError, ValueError):
        k, how = ASSUMED_KVP, f"kVp unknown, {ASSUMED_KVP:g} kVp assumed"
    (k0, r0), (k1, r1) = GOODSITT_RATIOS
    kc = min(max(k, k0), k1)
    return r0 + (r1 - r0) * (kc - k0) / (k1 - k0), k, how


def reconcile(value: float, measured_unit: Optional[str], criterion: Dict[str, object], *, convert: bool,
              kvp=None) -> Tuple[Optional[float], Optional[Dict[str, object]], Optional[str]]:
    """(value in the criterion's material or None, the conversion made or None, why not categorised or None)."""
    wanted = criterion.get("reference_material")
    have = material_of_unit(measured_unit)
    if wanted is None or have is None or have == wanted:
        return value, None, None
    if not convert:
        return None, None, (f"the measurement is in mg/cm3 {have} but the criterion's cut-offs are in mg/cm3 {wanted}. "
                            f"Pass {CONVERT_OPTION} (convert_material=True) to apply the documented "
                            "conversion of Goodsitt 1992, which the report states.")
    ratio, k, how = goodsitt_ratio(kvp)
    converted = value * ratio if (have, wanted) == ("HA", "K2HPO4") else value / ratio
    record = {"from": have, "to": wanted, "ratio_k2hpo4_per_ha": round(ratio, 4), "kvp": k, "kvp_source": how,
              "value_measured": value, "value_converted": converted, "source": GOODSITT_SOURCE,
              "requested_by": "user (convert_material)"}
    return converted, record, None


def implausible_vbmd(value: float, unit: str) -> Optional[str]:
    """Why a trabecular vBMD is not categorised (outside the plausible range), or None."""
    lo, hi = PLAUSIBLE_VBMD_MG_CM3
    if lo < value <= hi:
        return None
    return (f"trabecular vBMD {value:.1f} {unit} is outside the plausible range ({lo:g} to {hi:g} mg/cm3): shown but "
            "not categorised; check the calibration (phantom, slope and intercept).")
