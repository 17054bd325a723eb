"""Whether a calibration line can be physical: slope, intercept and rod order against the NIST data.

A calibration ``HU = β + σ·ρ`` (QCT_BRIEF §4) adds ρ mg/cm³ of mineral (K₂HPO₄ or calcium
hydroxyapatite) to a water-equivalent matrix. In HU (1000·Δμ/μ_water) that raises the CT number by

* at most ``σ_max = (μ/ρ)_mineral / (μ/ρ)_water`` per mg/cm³ (no water displaced), and
* at least ``σ_min = (μ/ρ)_mineral / (μ/ρ)_water − 1/ρ_solid`` (the mineral displaces its own
  volume of water; ρ_solid in g/cm³: K₂HPO₄ 2.44, hydroxyapatite 3.16),

with μ/ρ from the NIST tables in ``Resources/Data`` (:mod:`.nist`) at the scan's effective energy.
For clinical CT the effective energy lies between about a third of the kVp (soft spectrum) and
0.7 × kVp (hardened by the patient); with the kVp unknown, the clinical range 70-150 kVp is
assumed. The window is widened by a factor of 2 each way for beam hardening, the phantom
matrix and this energy model: it is this tool's construction, meant to refuse lines with no
physical meaning (fat taken for rods: 0.02-0.06 HU per mg/cm³; a typed-in 1e6), not to grade good
ones. Examples (NIST ratios μ/ρ to water): HA 1.98 at 60 keV, 1.41 at 80 keV; K₂HPO₄ 1.89 and 1.37.

The intercept β is the HU of the matrix without mineral: water-equivalent, so near the HU of
water and soft tissue; |β| > 200 HU is refused. Rods must read higher HU for higher density
(beyond their measurement noise). The effective energy found by an internal calibration must lie
in the same clinical window.

A refusal lists every problem and names the override (``accept_implausible=True``,
``--accept-implausible-calibration``); an overridden problem stays in the calibration's
``overrides`` and warnings, and so in the result and the report.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .nist import mass_attenuation
from .phantom_library import MINDWAYS_INTERCEPT_OFFSET, MINDWAYS_SLOPE_OFFSET

#: NIST table and solid density (g/cm³) of each calibration mineral (K₂HPO₄ 2.44, HA 3.16: CRC Handbook).
MINERALS = {"K2HPO4": ("k2hpo4_table", 2.44), "HA": ("cha_table", 3.16)}
#: Tube voltages clinical CT uses (kVp); outside this range the kVp is not trusted for the window.
CLINICAL_KVP = (70.0, 150.0)
#: Effective energy as a fraction of the kVp: soft spectrum to patient-hardened (this tool's model).
EFFECTIVE_ENERGY_FRACTION = (1.0 / 3.0, 0.7)
#: Safety factor on each side of the physical slope window.
SLOPE_SAFETY_FACTOR = 2.0
#: The intercept must lie within this many HU of water (0 HU).
INTERCEPT_LIMIT_HU = 200.0
#: Rods closer in density than this (mg/cm³; Mindways rods A and B differ by 1.6) are not ordered.
ROD_ORDER_MIN_DENSITY_STEP = 10.0
#: A rod may read lower than the previous one by at most this much (HU) without its noise known.
ROD_ORDER_TOLERANCE_HU = 2.0
#: The command-line option and the Python keyword that accept an implausible calibration.
OVERRIDE_OPTION = "--accept-implausible-calibration"
OVERRIDE_KEYWORD = "accept_implausible"


def _kvp(kvp: Any) -> Optional[float]:
    try:
        v = float(kvp)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and CLINICAL_KVP[0] <= v <= CLINICAL_KVP[1] else None


def effective_energy_window_kev(kvp: Any = None) -> Tuple[float, float]:
    """(lowest, highest) effective energy (keV) a clinical CT at ``kvp`` produces (any clinical kVp if unknown)."""
    v = _kvp(kvp)
    lo_kvp, hi_kvp = (v, v) if v is not None else CLINICAL_KVP
    return lo_kvp * EFFECTIVE_ENERGY_FRACTION[0], hi_kvp * EFFECTIVE_ENERGY_FRACTION[1]


def slope_window(unit: str, kvp: Any = None) -> Tuple[float, float]:
    """(min, max) slope σ in HU per mg/cm³ of ``unit`` a phantom can give at ``kvp`` (module docstring)."""
    table, solid = MINERALS[unit]
    e_lo, e_hi = effective_energy_window_kev(kvp)
    ratio = mass_attenuation(table, [e_lo, e_hi]) / mass_attenuation("water_table", [e_lo, e_hi])
    s_max = float(ratio[0])
    s_min = float(ratio[1]) - 1.0 / solid
    return s_min / SLOPE_SAFETY_FACTOR, s_max * SLOPE_SAFETY_FACTOR


def _kvp_text(kvp: Any) -> str:
    v = _kvp(kvp)
    return f"{v:g} kVp" if v is not None else "an unknown kVp (70-150 kVp assumed)"


def line_problems(slope: float, intercept: float, unit: str, kvp: Any = None) -> List[str]:
    """Why a line ``HU = intercept + slope·ρ`` in ``unit`` cannot come from a phantom on clinical CT (empty if it can)."""
    out: List[str] = []
    lo, hi = slope_window(unit, kvp)
    if not lo <= float(slope) <= hi:
        out.append(f"the slope {float(slope):.4g} HU per mg/cm3 {unit} is outside the range {lo:.2f}-{hi:.2f} that "
                   f"{unit} can give at {_kvp_text(kvp)} (NIST mass attenuation, Resources/Data)")
    if abs(float(intercept)) > INTERCEPT_LIMIT_HU:
        out.append(f"the intercept {float(intercept):.4g} HU is not near the HU of water or soft tissue "
                   f"(|intercept| must be <= {INTERCEPT_LIMIT_HU:g} HU)")
    return out


def _rod_y(p: Mapping[str, Any], mindways: bool) -> float:
    return float(p["mean_hu"]) - (float(p["water_density"]) if mindways else 0.0)


def rod_order_problems(points: Sequence[Mapping[str, Any]], mindways: bool = False) -> List[str]:
    """Rods whose HU (for Mindways rods, HU − water density) do not rise with density beyond their noise."""
    pts = sorted((p for p in points if p.get("density") is not None and p.get("mean_hu") is not None),
                 key=lambda p: float(p["density"]))
    out = []
    for a, b in zip(pts, pts[1:]):
        if float(b["density"]) - float(a["density"]) < ROD_ORDER_MIN_DENSITY_STEP:
            continue
        se = [float(p["sd_hu"]) / math.sqrt(float(p["n_voxels"])) for p in (a, b)
              if p.get("sd_hu") is not None and p.get("n_voxels")]
        tol = max(ROD_ORDER_TOLERANCE_HU, 3.0 * math.sqrt(sum(s * s for s in se))) if se else ROD_ORDER_TOLERANCE_HU
        if _rod_y(b, mindways) < _rod_y(a, mindways) - tol:
            out.append(f"rod {b.get('name')} ({float(b['density']):g} mg/cm3) reads {float(b['mean_hu']):.1f} HU, less "
                       f"than rod {a.get('name')} ({float(a['density']):g} mg/cm3, {float(a['mean_hu']):.1f} HU)")
    return out


def energy_problems(energy_kev: float, kvp: Any = None) -> List[str]:
    """Why an effective energy cannot come from clinical CT at ``kvp`` (empty if it can)."""
    lo, hi = effective_energy_window_kev(kvp)
    if lo <= float(energy_kev) <= hi:
        return []
    return [f"the effective energy {float(energy_kev):g} keV is outside {lo:.0f}-{hi:.0f} keV, what clinical CT at "
            f"{_kvp_text(kvp)} produces"]


def enforce(problems: Sequence[str], what: str, *, accept_implausible: bool = False) -> List[str]:
    """Refuse ``problems`` (InputError naming the override), or with the override return them as
    override records ``"accepted by the user: …"``."""
    if not problems:
        return []
    if not accept_implausible:
        raise InputError(
            f"{what} has no physical meaning: " + "; ".join(problems) + ".",
            "Check the rods (or tissues), the phantom and its certificate values, or the slope/intercept typed in; "
            f"to use it anyway pass {OVERRIDE_OPTION} ({OVERRIDE_KEYWORD}=True in Python), which the result and the "
            "report record.",
        )
    return [f"accepted by the user ({OVERRIDE_OPTION}): {p}" for p in problems]


def refit_stored_line(points: Sequence[Mapping[str, Any]], method: str) -> Optional[Tuple[float, float]]:
    """(slope, intercept) refitted from a saved calibration's rod table, None when it cannot be refitted."""
    try:
        pts = [p for p in points if p.get("density") is not None and p.get("mean_hu") is not None]
        mindways = method == "mindways-two-component"
        x = np.array([float(p["density"]) for p in pts])
        y = np.array([_rod_y(p, mindways) for p in pts])
    except (TypeError, ValueError, KeyError):
        return None
    if x.size < 2 or np.unique(x).size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    if mindways:
        return slope - MINDWAYS_SLOPE_OFFSET, intercept + MINDWAYS_INTERCEPT_OFFSET
    return slope, intercept


def stored_line_problems(doc: Mapping[str, Any]) -> List[str]:
    """A saved phantom calibration whose slope/intercept no longer match its own rod table (edited)."""
    if doc.get("kind") != "phantom":
        return []
    refit = refit_stored_line(doc.get("points") or [], str(doc.get("method")))
    if refit is None:
        return ["its rod table cannot be refitted (fewer than two rods with density and HU)"]
    slope, intercept = float(doc["slope_hu_per_mg_cm3"]), float(doc["intercept_hu"])
    if abs(refit[0] - slope) > 1e-3 * abs(refit[0]) + 1e-6 or abs(refit[1] - intercept) > 0.05:
        return [f"its slope/intercept ({slope:.6g}, {intercept:.6g} HU) differ from the line its own rods give "
                f"({refit[0]:.6g}, {refit[1]:.6g} HU): the file was edited"]
    return []


def typed_field_problems(doc: Mapping[str, Any]) -> List[str]:
    """Fields of a saved calibration that are not numbers where numbers are required."""
    out = []
    def bad(v, allow_none):
        return not ((v is None and allow_none) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    and math.isfinite(float(v))))
    linear = doc.get("kind") in ("phantom", "manual")
    for key in ("slope_hu_per_mg_cm3", "intercept_hu"):
        if bad(doc.get(key), not linear):
            out.append(f"{key} is {doc.get(key)!r}, not a finite number")
    fit = doc.get("fit") or {}
    if isinstance(fit, Mapping) and bad(fit.get("r2"), True):
        out.append(f"fit.r2 is {fit.get('r2')!r}, not a number")
    for i, p in enumerate(doc.get("points") or []):
        for key in ("density", "mean_hu", "water_density"):
            if isinstance(p, Mapping) and key in p and bad(p.get(key), False):
                out.append(f"point {i + 1} {key} is {p.get(key)!r}, not a finite number")
    return out


def summary(unit: str, kvp: Any = None) -> Dict[str, Any]:
    """The window used, for a calibration's record."""
    lo, hi = slope_window(unit, kvp)
    e_lo, e_hi = effective_energy_window_kev(kvp)
    return {"slope_range_hu_per_mg_cm3": [round(lo, 4), round(hi, 4)], "intercept_limit_hu": INTERCEPT_LIMIT_HU,
            "effective_energy_range_kev": [round(e_lo, 1), round(e_hi, 1)], "kvp": _kvp(kvp)}
