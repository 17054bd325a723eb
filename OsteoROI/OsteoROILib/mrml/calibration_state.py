"""The calibration as the scene's state holds it: its source, its fit summary and the summary's text.

``calibration_source["mode"]`` is one of ``CALIBRATION_MODES`` (see ``mrml.calibration``); the
fit summary is what the widget's calibration panel shows (slope, intercept, R², SEE, each rod's or
tissue's residual, warnings), the calibration itself is ``Calibration.to_dict()`` at full precision.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from ..calibration.model import Calibration, load_calibration
from ..errors import InputError
from ..io.outputs import json_safe

__all__ = [
    "CALIBRATION_MODES",
    "KEEP_CALIBRATION",
    "calibration_fit_summary",
    "calibration_from",
    "format_calibration_summary",
    "source_of",
    "store_calibration",
]

CALIBRATION_MODES = ("none", "saved", "manual", "phantom", "internal")


class _Keep:
    """``run(..., calibration=KEEP_CALIBRATION)``: keep the scene's current calibration."""

    def __repr__(self) -> str:
        return "KEEP_CALIBRATION"


KEEP_CALIBRATION = _Keep()


#: Per-point keys the fit summary keeps (rods: density and HU residual; tissues: mu/rho residual).
_POINT_KEYS = ("name", "density", "water_density", "mean_hu", "sd_hu", "n_voxels", "predicted_hu", "residual_hu",
               "loo_residual_hu", "flagged", "mu_rho_cm2_g", "residual_mu_rho", "center_ras", "warnings")


def calibration_fit_summary(cal, extra_warnings: Sequence[str] = ()) -> Dict[str, Any]:
    """The fit summary of a ``calibration.Calibration``: what the widget shows and the state stores."""
    warnings = list(cal.warnings)
    warnings += [w for w in extra_warnings if w not in warnings]
    return json_safe({
        "kind": cal.kind,
        "method": cal.method,
        **cal.fit_fields(),
        "see_hu": cal.see,
        "n_points": cal.n_points,
        "effective_energy_kev": cal.effective_energy_kev,
        "phantom": cal.phantom_id,
        "points": [{k: p[k] for k in _POINT_KEYS if k in p} for p in cal.points],
        "uncertainty": cal.uncertainty_note(),
        "warnings": warnings,
    })


def _fmt(value, spec: str, none: str = "—") -> str:
    return none if value is None else format(float(value), spec)


def format_calibration_summary(source: Optional[Mapping[str, Any]], fit: Optional[Mapping[str, Any]],
                               error: Optional[str] = None) -> str:
    """Plain-text fit summary (one fact per line) for the widget's calibration panel and logs."""
    mode = (source or {}).get("mode") or "none"
    if error:
        return f"Calibration ({mode}) is not valid: {error}\nNo vBMD is shown until it is fixed."
    if fit is None:
        if mode == "none":
            return "No calibration: the table shows HU only."
        return f"Calibration ({mode}): not fitted yet."
    lines = [f"Calibration: {mode}" + (f", phantom {fit['phantom']}" if fit.get("phantom") else "")
             + f" ({fit['method']}), vBMD in {fit['vbmd_unit']}", fit["equation"]]
    if fit.get("slope_hu_per_mg_cm3") is not None:
        lines.append(f"slope {_fmt(fit['slope_hu_per_mg_cm3'], '.5g')} HU per mg/cm3, "
                     f"intercept {_fmt(fit['intercept_hu'], '.4g')} HU")
    if fit.get("r2") is not None:
        lines.append(f"R\u00b2 = {_fmt(fit['r2'], '.5f')}, SEE = {_fmt(fit.get('see_hu'), '.3g')} HU, "
                     f"n = {fit['n_points']}")
    if fit.get("effective_energy_kev") is not None:
        lines.append(f"effective energy {_fmt(fit['effective_energy_kev'], 'g')} keV")
    for p in fit.get("points", []):
        if "residual_hu" in p:
            lines.append(f"  {p['name']}: {_fmt(p.get('density'), 'g')} mg/cm3, {_fmt(p['mean_hu'], '.1f')} HU "
                         f"(SD {_fmt(p.get('sd_hu'), '.1f')}), residual {_fmt(p['residual_hu'], '+.2f')} HU"
                         + ("  FLAGGED" if p.get("flagged") else ""))
        else:
            lines.append(f"  {p['name']}: {_fmt(p['mean_hu'], '.1f')} HU (SD {_fmt(p.get('sd_hu'), '.1f')})")
    if fit.get("uncertainty"):
        lines.append(f"Note: {fit['uncertainty']}")
    lines += [f"\u26a0 {w}" for w in fit.get("warnings", [])]
    return "\n".join(lines)


def calibration_from(calibration):
    """A ``calibration.Calibration`` from one, its dict, or a saved calibration file; None stays None."""
    if calibration is None:
        return None
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, Mapping):
        return Calibration.from_dict(calibration)
    if isinstance(calibration, str):
        return load_calibration(calibration)
    raise InputError(f"Cannot use {calibration!r} as a calibration.",
                     "Give a Calibration, its dict, or the path of a saved calibration (.json).")


def source_of(cal, path: Optional[str] = None) -> Dict[str, Any]:
    """The source of a calibration given directly (not live: no point list behind it)."""
    if cal is None:
        return {"mode": "none"}
    if path or cal.origin == "saved":
        return {"mode": "saved", "file": path or cal.origin_path}
    return {"mode": cal.kind, "live": False}


def store_calibration(state: Dict[str, Any], cal, source: Mapping[str, Any],
                      extraWarnings: Sequence[str] = ()) -> None:
    """Put a calibration, its source and its fit summary in ``state`` (None: HU only)."""
    state["calibration"] = None if cal is None else cal.to_dict()
    state["calibration_source"] = json_safe(dict(source))
    state["calibration_fit"] = None if cal is None else calibration_fit_summary(cal, extraWarnings)
    state["calibration_error"] = None
