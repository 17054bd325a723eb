"""Calibration: HU → volumetric BMD (mg/cm³ K₂HPO₄ or HA) from phantom rods, a saved calibration,
a manual slope/intercept or internal tissue references (QCT_BRIEF §4–5)."""
from ..import_paths import stage_getattr

__all__ = ["Calibration", "fit_phantom", "manual_calibration", "load_calibration", "save_calibration",
           "calibrate_measurement", "auto_rods", "fit_internal", "get_phantom"]
__getattr__ = stage_getattr(__name__, {
    "Calibration": "model", "fit_phantom": "phantom_fit", "manual_calibration": "phantom_fit",
    "load_calibration": "model", "save_calibration": "model", "calibrate_measurement": "apply",
    "auto_rods": "rods", "fit_internal": "internal", "get_phantom": "phantom_library",
})
