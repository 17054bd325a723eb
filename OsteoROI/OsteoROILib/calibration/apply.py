"""Applying a calibration to measurement rows: vBMD, its uncertainty and the document's calibration block.

Each row's mean HU becomes ``vbmd_mg_cm3`` in the calibration's unit (QCT_BRIEF §4–5), with
``vbmd_sd`` the calibration's standard error at that HU (:meth:`.model.Calibration.vbmd_sd`);
a value beyond the rods' density range warns as an extrapolation. The CT's DICOM facts are
compared with the calibration's (:func:`.phantom_fit.compare_scanner`), and calibrations of
different units (K₂HPO₄, HA) are never mixed (:func:`check_units`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError
from ..io.outputs import json_safe
from .model import SCANNER_KEYS, Calibration
from .phantom_fit import compare_scanner


def check_units(calibrations: Sequence[Calibration]) -> str:
    """The one unit of several calibrations; refuses a mix of K2HPO4 and HA."""
    units = {c.unit for c in calibrations}
    if len(units) > 1:
        raise InputError(f"The calibrations mix density units ({', '.join(sorted(units))}).",
                         "K2HPO4 and HA densities are different quantities: use calibrations of one unit.")
    return units.pop() if units else ""


def apply_calibration(rows: Sequence[Mapping[str, Any]], calibration: Calibration) -> List[Dict[str, Any]]:
    """Copies of ``rows`` with ``vbmd_mg_cm3``, ``vbmd_unit`` and ``vbmd_sd`` from ``mean_hu``.

    A row without a mean HU gets None values and a warning (never NaN); ``vbmd_sd`` is None
    with a warning where the calibration has no uncertainty; a value outside the calibrated
    density range (more than 10 % of the range beyond the rods) warns as an extrapolation.
    """
    cal = calibration
    note = cal.uncertainty_note()
    lo_hi = cal.density_range if cal.kind == "phantom" and cal.density_range else None
    out: List[Dict[str, Any]] = []
    for row in rows:
        r = dict(row)
        warnings = list(r.get("warnings") or [])
        label = " ".join(str(r[k]) for k in ("level", "shape") if r.get(k) is not None) or "row"
        hu = r.get("mean_hu")
        r["vbmd_unit"] = cal.unit_label
        if hu is None or not math.isfinite(float(hu)):
            r["vbmd_mg_cm3"] = None
            r["vbmd_sd"] = None
            warnings.append(f"{label}: no mean HU, so no vBMD.")
        else:
            v = float(cal.vbmd(float(hu)))
            r["vbmd_mg_cm3"] = v if math.isfinite(v) else None
            sd = cal.vbmd_sd(float(hu))
            r["vbmd_sd"] = sd
            if sd is None and note:
                warnings.append(f"{label}: vbmd_sd empty: {note}.")
            if lo_hi is not None and math.isfinite(v):
                lo, hi = lo_hi
                margin = 0.1 * (hi - lo)
                if v < lo - margin or v > hi + margin:
                    warnings.append(f"{label}: vBMD {v:.1f} {cal.unit_label} lies outside the rods' range "
                                    f"({lo:g} to {hi:g}): extrapolated.")
        r["warnings"] = warnings
        out.append(r)
    return out


def calibration_summary(cal: Calibration) -> Dict[str, Any]:
    """The ``calibration`` block of a measurement result document."""
    summary: Dict[str, Any] = {
        "kind": cal.kind,
        "method": cal.method,
        "origin": cal.origin,
        "file": cal.origin_path,
        **cal.fit_fields(),
        "see": cal.see,
        "n_points": cal.n_points,
        "phantom": cal.phantom_id,
        "scanner": {k: cal.scanner.get(k) for k in SCANNER_KEYS},
        "created": cal.created,
        "uncertainty": ("vbmd_sd = standard error of the calibration at the ROI's mean HU "
                        "(fit only; the ROI's own noise is not included)") if cal.uncertainty_note() is None
        else cal.uncertainty_note(),
        "warnings": list(cal.warnings),
        # the rods (or reference tissues) the line was fitted to, so a report can plot them with their residuals
        "points": [{k: p.get(k) for k in ("name", "density", "mean_hu", "sd_hu", "n_voxels", "residual_hu")
                    if k in p} for p in (cal.points or []) if isinstance(p, Mapping)],
        "overrides": list(cal.overrides),
    }
    if cal.kind == "internal" and cal.internal:
        summary["effective_energy_kev"] = cal.effective_energy_kev
        summary["r2"] = cal.internal.get("r2")
        summary["screening_only"] = True
        summary["method_error"] = cal.internal.get("method_error")
        summary["contrast_from_aorta_hu"] = cal.internal.get("contrast_from_aorta_hu")
    return json_safe(summary)


def calibrate_measurement(measurement: Mapping[str, Any], cal: Calibration,
                          facts: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The measurement stage's output with vBMD added: ``(measurement, extra)``.

    Rows gain ``vbmd_mg_cm3``/``vbmd_unit``/``vbmd_sd`` (``apply_calibration``); the warnings gain
    the scanner mismatches between the CT's DICOM ``facts`` and the calibration's
    (``compare_scanner``); ``extra`` is ``{"calibration": calibration_summary(cal)}`` for
    ``export.measurement.build_document``.
    """
    out = dict(measurement)
    out["rows"] = apply_calibration(measurement["rows"], cal)
    warnings = list(measurement.get("warnings", []))
    # A calibration-wide note (no vBMD uncertainty) is stated once for the document; each row keeps it.
    note = cal.uncertainty_note()
    wide = [f"vbmd_sd is empty: {note}."] if note else []
    row_warnings = [w for r in out["rows"] for w in r.get("warnings", []) if not (note and w.endswith(f"vbmd_sd empty: {note}."))]
    for w in compare_scanner(cal, facts) + wide + row_warnings:
        if w not in warnings:
            warnings.append(w)
    out["warnings"] = warnings
    return out, {"calibration": calibration_summary(cal)}
