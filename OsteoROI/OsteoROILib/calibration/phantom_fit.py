"""Fitting a calibration from a phantom's rods, or recording a user's line, with the CT's scanner facts.

A phantom calibration (synchronous, or asynchronous when saved and applied to another CT) comes
from rods of known density measured in the image, fitted by ordinary least squares
``HU = β + σ·ρ`` (:func:`fit_phantom`), or for the Mindways Model 3 phantom by its
two-component method: fit ``(HU − ρ_water) = σ_ref·ρ_K2HPO4 + β_ref`` over the rods, then
``σ_CT = σ_ref − 0.2174`` and ``β_CT = β_ref + 999.6`` (QCT Pro user guide v5, QCT_BRIEF §4).
Either way ``vBMD = (HU − β)/σ``. A manual calibration is a user's slope and intercept
(:func:`manual_calibration`), recorded as such.

Quality rules (QCT_BRIEF §4, as in open tools): fewer than two distinct densities, a
non-positive slope or R² < 0.90 are refused (:class:`InputError`); R² < 0.98 warns; a rod
whose residual exceeds 3 × SEE is flagged — using the rod's leave-one-out residual (against
the line through the other rods) and that line's SEE, scaled to a prediction error
``SEE·√(1 + 1/m + (ρ_i − ρ̄)²/Sxx)``, because an outlier inflates the SEE it would be compared
with (with all rods in the fit, ``|residual| ≤ SEE·√(n−2)``, so the plain rule could never fire
with fewer than 11 rods); the SEE is floored by the rods' own measurement SE (median of
SD/√voxels), as a fit with few degrees of freedom can have a small SEE by chance; needs ≥ 4
rods. A rod ROI whose SD is high warns.

A calibration records the DICOM facts of the CT it was made on (:func:`scanner_facts`);
applying it to a CT whose facts differ warns (:func:`compare_scanner`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from . import plausibility
from .model import R2_REFUSE, R2_WARN, SCANNER_KEYS, Calibration, LinearFit, fit_line
from .phantom_library import METHOD_MINDWAYS, MINDWAYS_INTERCEPT_OFFSET, MINDWAYS_SLOPE_OFFSET, PhantomDefinition

#: A rod is flagged when its leave-one-out residual exceeds this many SEE (QCT_BRIEF §4).
RESIDUAL_FLAG_SEE = 3.0
#: Absolute floor (HU) under 3 × SEE: a noise-free fit has SEE ≈ 0 and must not flag round-off.
RESIDUAL_FLAG_FLOOR_HU = 0.5
#: A rod ROI's SD is "high" above this many HU, or above twice the rods' median SD + 5 HU.
ROD_SD_WARN_HU = 50.0


#: Measurement keys a rod's point keeps (when the rod has them).
_ROD_KEYS = ("sd_hu", "n_voxels", "center_ras", "roi_radius_mm", "rod_radius_mm", "slab_mm", "found_by")


# ----------------------------------------------------------------------------------------------
# Scanner facts
# ----------------------------------------------------------------------------------------------
def scanner_facts(volume) -> Dict[str, Any]:
    """The DICOM facts a calibration records (None where the CT has none)."""
    facts = getattr(volume, "facts", None) or {}
    return {k: facts.get(k) for k in SCANNER_KEYS}


def _norm_fact(key: str, value: Any):
    if value is None or value == "":
        return None
    if key == "kvp":
        try:
            return round(float(value), 1)
        except (TypeError, ValueError):
            return str(value).strip()
    return " ".join(str(value).split()).lower()


def compare_scanner(cal: Calibration, facts: Optional[Mapping[str, Any]]) -> List[str]:
    """Warnings where the CT's DICOM facts differ from (or cannot be checked against) the
    calibration's: manufacturer, model, kVp, convolution kernel; the study date is reported."""
    facts = facts or {}
    out: List[str] = []
    names = {"manufacturer": "manufacturer", "model": "scanner model", "kvp": "kVp",
             "convolution_kernel": "convolution kernel"}
    unknown = []
    for key, label in names.items():
        a, b = _norm_fact(key, cal.scanner.get(key)), _norm_fact(key, facts.get(key))
        if a is None or b is None:
            unknown.append(label)
        elif a != b:
            out.append(f"The calibration was made with {label} {cal.scanner.get(key)!s} but this CT has "
                       f"{facts.get(key)!s}: HU-to-density calibrations hold for one scanner, kV and kernel.")
    if unknown and cal.kind != "manual":
        out.append(f"Cannot check the calibration's {', '.join(unknown)} against this CT (not recorded in both).")
    da, db = cal.scanner.get("study_date"), facts.get("study_date")
    if da and db and str(da) != str(db):
        out.append(f"The calibration is from another date ({da}; this CT {db}): an asynchronous calibration assumes "
                   "the scanner has not drifted since.")
    return out


# ----------------------------------------------------------------------------------------------
# Fitting the rods
# ----------------------------------------------------------------------------------------------
def _rod_value(rod: Any, key: str, default=None):
    if isinstance(rod, Mapping):
        return rod.get(key, default)
    return getattr(rod, key, default)



def _rod_points(rods: Sequence[Any], phantom: PhantomDefinition) -> List[Dict[str, Any]]:
    """One calibration point per measured rod, with the rod's density from the phantom; refuses
    an empty list, a rod measured twice and a rod without a mean HU."""
    if not rods:
        raise InputError("No rods were measured.", "Give one point per rod (--rod NAME=R,A,S) or use --auto-rods.")
    points: List[Dict[str, Any]] = []
    seen = set()
    for rod in rods:
        name = _rod_value(rod, "name")
        prod = phantom.rod(name)
        if prod.name in seen:
            raise InputError(f"Rod {prod.name} of phantom {phantom.id} was measured twice.", "Give one point per rod.")
        seen.add(prod.name)
        hu = _rod_value(rod, "mean_hu")
        if hu is None or not math.isfinite(float(hu)):
            raise InputError(f"Rod {prod.name} has no mean HU (its ROI holds no voxel).",
                             "Place the rod's point inside the rod, within the image.")
        p: Dict[str, Any] = {"name": prod.name, "density": prod.density, "mean_hu": float(hu)}
        if prod.water_density is not None:
            p["water_density"] = prod.water_density
        for key in _ROD_KEYS:
            v = _rod_value(rod, key)
            if v is not None:
                p[key] = [float(c) for c in v] if key == "center_ras" else v
        p["warnings"] = list(_rod_value(rod, "warnings", None) or [])
        points.append(p)
    return points


def _scanner_line(f: LinearFit, mindways: bool) -> Tuple[float, float, Optional[Dict[str, float]], str]:
    """The CT's slope and intercept from the fitted line, the Mindways reference fit (or None) and
    what was fitted (for messages)."""
    if mindways:
        return (f.slope - MINDWAYS_SLOPE_OFFSET, f.intercept + MINDWAYS_INTERCEPT_OFFSET,
                {"slope": f.slope, "intercept": f.intercept}, "Mindways reference fit (HU - water density) vs K2HPO4")
    return f.slope, f.intercept, None, "HU vs density"


def _check_fit(f: LinearFit, slope: float, what: str, mindways: bool, points: Sequence[Mapping[str, Any]],
               x: np.ndarray) -> List[str]:
    """Refuses a non-positive slope and R² < R2_REFUSE; the warnings for a low R² and for fewer
    than 3 distinct densities."""
    if not (f.slope > 0 and slope > 0):
        order = ", ".join(f"{p['name']} {p['mean_hu']:.1f} HU" for p in sorted(points, key=lambda q: q["density"]))
        raise InputError(
            f"The calibration slope is not positive ({what}: {f.slope:.4g}"
            + (f", sigma_CT {slope:.4g}" if mindways else "") + f"); the rods' HU do not rise with density ({order}).",
            "Check that each point lies in the rod named for it and that the phantom (and its certificate values) is right.",
        )
    if f.r2 < R2_REFUSE:
        raise InputError(
            f"The calibration fit is too poor: R² = {f.r2:.3f} < {R2_REFUSE} ({what}).",
            "Check each rod's point (inside the right rod, away from its wall and from artefacts) and the phantom "
            "definition.",
        )
    warnings: List[str] = []
    if f.r2 < R2_WARN:
        warnings.append(f"Calibration R² = {f.r2:.4f} is below {R2_WARN}: check the rods' ROIs and artefacts.")
    distinct = np.unique(x).size
    if distinct < 3:
        warnings.append(f"Only {distinct} distinct rod densities: the fit cannot be checked (3 or more recommended).")
    return warnings


def _loo(x: np.ndarray, y: np.ndarray, i: int):
    """Leave-one-out: residual of point i against the line fitted to the others, that fit's SEE,
    and the prediction factor √(1 + 1/m + (x_i − x̄)²/Sxx) of the m-point fit at x_i."""
    keep = np.arange(x.size) != i
    if np.unique(x[keep]).size < 2 or keep.sum() < 3:
        return None, None, None
    f = fit_line(x[keep], y[keep])
    factor = math.sqrt(1.0 + 1.0 / f.n + (float(x[i]) - f.x_mean) ** 2 / f.sxx)
    return float(y[i] - f.predict(x[i])), f.see, factor


def _flag_outlier_rods(points: List[Dict[str, Any]], x: np.ndarray, y: np.ndarray, f: LinearFit,
                       mindways: bool) -> List[str]:
    """Each point's predicted HU, residual and leave-one-out residual; a rod off the line through the
    others by more than 3 × that line's SEE is flagged, with a warning (returned, and on the point)."""
    predicted = f.predict(x)
    # Measurement SE of the rods' means (median over rods): a floor under the SEE of a fit with
    # few degrees of freedom, which can be small by chance.
    meas_se = [float(p["sd_hu"]) / math.sqrt(float(p["n_voxels"])) for p in points
               if p.get("sd_hu") is not None and p.get("n_voxels")]
    se_floor = float(np.median(meas_se)) if meas_se else 0.0
    warnings: List[str] = []
    for i, p in enumerate(points):
        p["predicted_hu"] = float(predicted[i] + (p["water_density"] if mindways else 0.0))
        p["residual_hu"] = float(f.residuals[i])
        loo, loo_see, factor = _loo(x, y, i)
        p["loo_residual_hu"] = loo
        flagged = False
        if loo is not None and loo_see is not None:
            scale = max(loo_see, se_floor) * factor
            limit = max(RESIDUAL_FLAG_SEE * scale, RESIDUAL_FLAG_FLOOR_HU)
            p["loo_limit_hu"] = limit
            flagged = abs(loo) > limit
            if flagged:
                msg = (f"Rod {p['name']}: its HU is {loo:+.1f} HU off the line fitted through the other rods, more "
                       f"than 3 x the SEE of that line ({limit:.1f} HU): check its ROI, certificate value and "
                       "artefacts.")
                p["warnings"].append(msg)
                warnings.append(msg)
        p["flagged"] = flagged
    return warnings


def _flag_noisy_rods(points: List[Dict[str, Any]]) -> List[str]:
    """Warnings (returned, and on the point) for rod ROIs whose SD is high: above ROD_SD_WARN_HU or
    above twice the rods' median SD + 5 HU."""
    sds = [float(p["sd_hu"]) for p in points if p.get("sd_hu") is not None]
    if not sds:
        return []
    med = float(np.median(sds))
    warnings: List[str] = []
    for p in points:
        sd = p.get("sd_hu")
        if sd is not None and (sd > ROD_SD_WARN_HU or sd > 2.0 * med + 5.0):
            msg = (f"Rod {p['name']}: its ROI's SD is high ({sd:.1f} HU; median of the rods {med:.1f} HU): "
                   "air bubble, wall, artefact or misplaced ROI?")
            p["warnings"].append(msg)
            warnings.append(msg)
    return warnings


def fit_phantom(rods: Sequence[Any], phantom: PhantomDefinition, scanner: Optional[Mapping[str, Any]] = None,
                source_volume: Optional[str] = None, command: str = "", *,
                accept_implausible: bool = False) -> Calibration:
    """Fit a phantom calibration from measured rods and apply the QA rules.

    ``rods``: dicts (or objects) with ``name``, ``mean_hu`` and optionally ``sd_hu``,
    ``n_voxels``, ``center_ras``, ``roi_radius_mm``, ``slab_mm``, ``warnings``; the density
    (and water density) come from ``phantom`` by the rod's name. The phantom's method decides
    between OLS and the Mindways two-component fit. A line with no physical meaning (slope,
    intercept or rod order, :mod:`.plausibility`) is refused unless ``accept_implausible``, which
    is then recorded in the calibration's ``overrides``.
    """
    points = _rod_points(rods, phantom)
    mindways = phantom.method == METHOD_MINDWAYS
    x = np.array([p["density"] for p in points], dtype=float)
    y = np.array([p["mean_hu"] for p in points], dtype=float)
    if mindways:
        y = y - np.array([p["water_density"] for p in points], dtype=float)
    f = fit_line(x, y)  # refuses < 2 distinct densities
    slope, intercept, reference, what = _scanner_line(f, mindways)
    warnings = _check_fit(f, slope, what, mindways, points, x)
    problems = plausibility.line_problems(slope, intercept, phantom.unit, (scanner or {}).get("kvp"))
    problems += plausibility.rod_order_problems(points, mindways)
    overrides = plausibility.enforce(problems, f"The calibration of phantom {phantom.id}",
                                     accept_implausible=accept_implausible)
    warnings += overrides
    warnings += _flag_outlier_rods(points, x, y, f, mindways)
    warnings += _flag_noisy_rods(points)
    for p in points:
        for w in p["warnings"]:
            if w not in warnings:
                warnings.append(w)
    cal = Calibration(
        kind="phantom", unit=phantom.unit, method=METHOD_MINDWAYS if mindways else "ols",
        slope=slope, intercept=intercept, r2=f.r2, see=f.see, n_points=f.n, x_mean=f.x_mean, sxx=f.sxx,
        density_range=[float(x.min()), float(x.max())], points=points, warnings=warnings,
        phantom=phantom.to_dict(), reference_fit=reference, scanner=dict(scanner or {}),
        source_volume=source_volume, command=command, overrides=overrides,
    )
    note = cal.uncertainty_note()
    if note:
        cal.warnings.append(f"No uncertainty: {note}.")
    return cal


def manual_calibration(slope: float, intercept: float, unit: str, note: str = "", command: str = "",
                       scanner: Optional[Mapping[str, Any]] = None, *, accept_implausible: bool = False) -> Calibration:
    """A user's slope (HU per mg/cm³) and intercept (HU), recorded as manual; a line no phantom
    can give (:mod:`.plausibility`) is refused unless ``accept_implausible`` (recorded)."""
    try:
        s, b = float(slope), float(intercept)
    except (TypeError, ValueError):
        raise InputError("The manual slope and intercept must be numbers.",
                         "Give e.g. --slope 1.25 --intercept -10.") from None
    if not (math.isfinite(s) and math.isfinite(b)):
        raise InputError("The manual slope and intercept must be finite numbers.", "Give e.g. --slope 1.25 --intercept -10.")
    cal = Calibration(kind="manual", unit=unit, method="manual", slope=s, intercept=b, note=note, command=command,
                      scanner=dict(scanner or {}))
    cal.overrides = plausibility.enforce(plausibility.line_problems(s, b, cal.unit, cal.scanner.get("kvp")),
                                         "The manual calibration", accept_implausible=accept_implausible)
    cal.warnings.extend(cal.overrides)
    cal.warnings.append("Manual calibration: slope and intercept were entered by the user, not fitted; "
                        "vBMD has no uncertainty from a fit.")
    return cal
