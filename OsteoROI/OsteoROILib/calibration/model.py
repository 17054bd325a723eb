"""Calibration from HU to QCT volumetric BMD (vBMD, mg/cm³ of K₂HPO₄ or HA).

Sources of a calibration (QCT_BRIEF §4):

* **Phantom** (synchronous, or asynchronous when saved and applied to another CT): rods of known
  density measured in the image, fitted by ordinary least squares ``HU = β + σ·ρ``
  (:func:`fit_phantom`), or for the Mindways Model 3 phantom by its two-component method:
  fit ``(HU − ρ_water) = σ_ref·ρ_K2HPO4 + β_ref`` over the rods, then
  ``σ_CT = σ_ref − 0.2174`` and ``β_CT = β_ref + 999.6`` (QCT Pro user guide v5, QCT_BRIEF §4).
  Either way ``vBMD = (HU − β)/σ``.
* **Manual**: a user's slope and intercept (:func:`manual_calibration`), recorded as such.
* **Internal** (phantomless, Michalski et al. 2020): see :mod:`OsteoROILib.internalcal`.

Quality rules (QCT_BRIEF §4, as in open tools): fewer than two distinct densities, a
non-positive slope or R² < 0.90 are refused (:class:`InputError`); R² < 0.98 warns; a rod
whose residual exceeds 3 × SEE is flagged — using the rod's leave-one-out residual (against
the line through the other rods) and that line's SEE, scaled to a prediction error
``SEE·√(1 + 1/m + (ρ_i − ρ̄)²/Sxx)``, because an outlier inflates the SEE it would be compared
with (with all rods in the fit, ``|residual| ≤ SEE·√(n−2)``, so the plain rule could never fire
with fewer than 11 rods); the SEE is floored by the rods' own measurement SE (median of
SD/√voxels), as a fit with few degrees of freedom can have a small SEE by chance; needs ≥ 4
rods. A rod ROI whose SD is high warns.

The unit (``"K2HPO4"`` or ``"HA"``) travels with every calibration and every vBMD; the two are
never mixed. A calibration is saved as JSON (schema ``Resources/Schemas/
osteoroi-calibration-1.schema.json``) with the scanner's manufacturer, model, kVp, kernel and
study date and the phantom, and applying it to a CT whose DICOM facts differ warns
(:func:`compare_scanner`).

Uncertainty: ``vbmd_sd`` is the standard error of the calibration line at that HU (inverse
prediction, treating the ROI's mean HU as exact):
``SEE/σ · √(1/n + (ρ̂ − ρ̄)²/Sxx)``. It is undefined (None, with a warning) for a two-rod fit
(no degrees of freedom) and for a manual calibration.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.jsonfile import read_json
from .phantom_library import METHOD_MINDWAYS, PhantomDefinition, normalize_unit, unit_label
from ..io.outputs import json_safe

SCHEMA_ID = "osteoroi-calibration/1"
SCHEMA_FILE = ("Schemas", "osteoroi-calibration-1.schema.json")

#: QA thresholds (QCT_BRIEF §4).
R2_WARN = 0.98
R2_REFUSE = 0.90
RESIDUAL_FLAG_SEE = 3.0
#: Absolute floor (HU) under 3 × SEE: a noise-free fit has SEE ≈ 0 and must not flag round-off.
RESIDUAL_FLAG_FLOOR_HU = 0.5
#: A rod ROI's SD is "high" above this many HU, or above twice the rods' median SD + 5 HU.
ROD_SD_WARN_HU = 50.0

#: Mindways Model 3 constants (QCT Pro user guide v5; QCT_BRIEF §4).
MINDWAYS_SLOPE_OFFSET = 0.2174
MINDWAYS_INTERCEPT_OFFSET = 999.6

#: DICOM facts (Volume.facts keys) recorded with a calibration and compared when it is applied.
SCANNER_KEYS = ("manufacturer", "model", "kvp", "convolution_kernel", "study_date")

KINDS = ("phantom", "manual", "internal")


# ----------------------------------------------------------------------------------------------
# Least squares
# ----------------------------------------------------------------------------------------------
@dataclass
class LinearFit:
    """OLS fit ``y = intercept + slope·x``: R², standard error of estimate (None for n = 2),
    residuals ``y − ŷ`` and the sums needed for inverse-prediction errors."""

    slope: float
    intercept: float
    r2: float
    see: Optional[float]
    n: int
    x_mean: float
    sxx: float
    residuals: List[float]

    def predict(self, x):
        return self.intercept + self.slope * np.asarray(x, dtype=float)


def fit_line(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Ordinary least squares of y on x. Needs ≥ 2 points and ≥ 2 distinct x."""
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.size != ya.size:
        raise InputError("The calibration points have unequal numbers of densities and HU values.",
                         "Give one HU value per density.")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise InputError("A calibration point is not a finite number.", "Measure every rod (no empty ROI).")
    if np.unique(xa).size < 2:
        raise InputError(
            f"The calibration has {np.unique(xa).size} distinct density value(s); a line needs at least 2 "
            "(3 or more recommended).",
            "Measure at least two rods of different density.",
        )
    n = int(xa.size)
    xm, ym = float(xa.mean()), float(ya.mean())
    dx, dy = xa - xm, ya - ym
    sxx = float(dx @ dx)
    syy = float(dy @ dy)
    slope = float(dx @ dy) / sxx
    intercept = ym - slope * xm
    res = ya - (intercept + slope * xa)
    sse = float(res @ res)
    if syy > 0:
        r2 = max(0.0, 1.0 - sse / syy)
    else:
        r2 = 0.0  # all HU equal: no relation to density
    see = math.sqrt(sse / (n - 2)) if n > 2 else None
    return LinearFit(slope=slope, intercept=intercept, r2=r2, see=see, n=n, x_mean=xm, sxx=sxx,
                     residuals=[float(r) for r in res])


def _loo(x: np.ndarray, y: np.ndarray, i: int):
    """Leave-one-out: residual of point i against the line fitted to the others, that fit's SEE,
    and the prediction factor √(1 + 1/m + (x_i − x̄)²/Sxx) of the m-point fit at x_i."""
    keep = np.arange(x.size) != i
    if np.unique(x[keep]).size < 2 or keep.sum() < 3:
        return None, None, None
    f = fit_line(x[keep], y[keep])
    factor = math.sqrt(1.0 + 1.0 / f.n + (float(x[i]) - f.x_mean) ** 2 / f.sxx)
    return float(y[i] - f.predict(x[i])), f.see, factor


# ----------------------------------------------------------------------------------------------
# Calibration object
# ----------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A calibration from HU to vBMD in ``unit`` ("K2HPO4" or "HA").

    ``kind``: "phantom", "manual" or "internal"; ``method``: "ols",
    "mindways-two-component", "manual" or "michalski-2020". Linear kinds have
    ``vBMD = (HU − intercept)/slope`` (``slope`` σ in HU per mg/cm³, ``intercept`` β in HU);
    an internal calibration keeps its parameters in ``internal`` (see internalcal).
    ``points`` are the rods/tissues with their HU, residuals and flags; ``scanner`` the DICOM
    facts of the CT it was made on; ``origin`` is "this-scan" or "saved" (loaded from a file,
    ``origin_path``).
    """

    kind: str
    unit: str
    method: str
    slope: Optional[float] = None
    intercept: Optional[float] = None
    r2: Optional[float] = None
    see: Optional[float] = None
    n_points: int = 0
    x_mean: Optional[float] = None
    sxx: Optional[float] = None
    density_range: Optional[List[float]] = None
    points: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    phantom: Optional[Dict[str, Any]] = None
    reference_fit: Optional[Dict[str, float]] = None
    scanner: Dict[str, Any] = field(default_factory=dict)
    source_volume: Optional[str] = None
    internal: Optional[Dict[str, Any]] = None
    note: str = ""
    created: str = ""
    command: str = ""
    origin: str = "this-scan"
    origin_path: Optional[str] = None

    def __post_init__(self):
        self.unit = normalize_unit(self.unit)
        if self.kind not in KINDS:
            raise InputError(f"Unknown calibration kind {self.kind!r}.", f"Use one of {', '.join(KINDS)}.")
        if self.kind != "internal":
            for name in ("slope", "intercept"):
                v = getattr(self, name)
                if v is None or not math.isfinite(float(v)):
                    raise InputError(f"The calibration's {name} is missing or not finite.",
                                     "Give a finite slope and intercept.")
            if float(self.slope) <= 0:
                raise InputError(
                    f"The calibration slope is {float(self.slope):g} HU per mg/cm3; it must be positive "
                    "(HU rises with mineral density).",
                    "Check the rods' assignment and densities (or the sign of a manual slope).",
                )
        elif not self.internal:
            raise InputError("An internal calibration needs its parameters.", "Fit it with internalcal.")
        if not self.created:
            self.created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()

    @property
    def unit_label(self) -> str:
        return unit_label(self.unit)

    # -- evaluation ----------------------------------------------------------------------------
    def vbmd(self, hu):
        """vBMD (mg/cm³ in ``unit``) of a mean HU (number or array)."""
        h = np.asarray(hu, dtype=float)
        if self.kind == "internal":
            from .internal import internal_vbmd

            out = internal_vbmd(self.internal, h)
        else:
            out = (h - float(self.intercept)) / float(self.slope)
        return float(out) if np.ndim(out) == 0 else out

    def vbmd_sd(self, hu) -> Optional[float]:
        """Standard error of the calibration at this HU (mg/cm³), or None when undefined."""
        if hu is None:
            return None
        if self.kind == "internal":
            from .internal import internal_vbmd_sd

            return internal_vbmd_sd(self.internal, float(hu))
        if self.see is None or self.n_points < 3 or not self.sxx:
            return None
        x0 = (float(hu) - float(self.intercept)) / float(self.slope)
        return float(self.see / float(self.slope) * math.sqrt(1.0 / self.n_points + (x0 - self.x_mean) ** 2 / self.sxx))

    def uncertainty_note(self) -> Optional[str]:
        """Why ``vbmd_sd`` is undefined, or None when it is defined."""
        if self.kind == "manual":
            return "a manual calibration carries no fit, so vBMD has no uncertainty (vbmd_sd empty)"
        if self.kind == "internal":
            return None
        if self.see is None or self.n_points < 3:
            return (f"the calibration has {self.n_points} points and no degrees of freedom for an error estimate "
                    "(vbmd_sd empty); use 3 or more rods")
        return None

    def equation(self) -> str:
        if self.kind == "internal":
            return ("vBMD = 1000 * rho(HU) * (mu_rho(HU) - mu_rho_triglyceride) / "
                    "(mu_rho_K2HPO4 - mu_rho_triglyceride)  (Michalski et al. 2020)")
        return f"vBMD [{self.unit_label}] = (HU - ({self.intercept:.4f})) / {self.slope:.6f}"

    def fit_fields(self) -> Dict[str, Any]:
        """The fit as the summaries show it (the result document's ``calibration`` block and the
        module's fit summary, ``mrmlcalibration.calibration_fit_summary``), in this order."""
        return {
            "unit": self.unit,
            "vbmd_unit": self.unit_label,
            "equation": self.equation(),
            "slope_hu_per_mg_cm3": self.slope,
            "intercept_hu": self.intercept,
            "r2": self.r2,
        }

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        fit = None
        if self.kind != "manual":
            fit = {
                "r2": self.r2,
                "see": self.see,
                "n_points": self.n_points,
                "density_mean": self.x_mean,
                "density_sxx": self.sxx,
                "density_range": self.density_range,
                "reference_fit": self.reference_fit,
            }
        doc = {
            "schema": SCHEMA_ID,
            "osteoroi_version": __version__,
            "created": self.created,
            "command": self.command,
            "kind": self.kind,
            "method": self.method,
            "unit": self.unit,
            "vbmd_unit": self.unit_label,
            "equation": self.equation(),
            "slope_hu_per_mg_cm3": self.slope,
            "intercept_hu": self.intercept,
            "fit": fit,
            "points": self.points,
            "phantom": self.phantom,
            "scanner": {k: self.scanner.get(k) for k in SCANNER_KEYS},
            "source_volume": self.source_volume,
            "internal": self.internal,
            "note": self.note,
            "warnings": list(self.warnings),
        }
        return json_safe(doc)

    def to_json_text(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], path: Optional[str] = None) -> "Calibration":
        where = path or "the calibration document"
        if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA_ID:
            raise InputError(f"{where} is not an OsteoROI calibration (schema {SCHEMA_ID}).",
                             "Create one with `osteoroi calibrate ... --out cal.json`.")
        _validate_schema(doc, where)
        fit = doc.get("fit") or {}
        cal = cls(
            kind=doc["kind"], unit=doc["unit"], method=doc["method"],
            slope=doc.get("slope_hu_per_mg_cm3"), intercept=doc.get("intercept_hu"),
            r2=fit.get("r2"), see=fit.get("see"), n_points=int(fit.get("n_points") or 0),
            x_mean=fit.get("density_mean"), sxx=fit.get("density_sxx"), density_range=fit.get("density_range"),
            reference_fit=fit.get("reference_fit"), points=list(doc.get("points") or []),
            warnings=list(doc.get("warnings") or []), phantom=doc.get("phantom"),
            scanner=dict(doc.get("scanner") or {}), source_volume=doc.get("source_volume"),
            internal=doc.get("internal"), note=str(doc.get("note") or ""), created=str(doc.get("created") or ""),
            command=str(doc.get("command") or ""), origin="saved", origin_path=path,
        )
        vu = doc.get("vbmd_unit")
        if vu is not None and normalize_unit(vu) != cal.unit:
            raise InputError(f"{where} states unit {cal.unit} but vbmd_unit {vu}.",
                             "The file was edited inconsistently; create the calibration again.")
        return cal


def _validate_schema(doc: Mapping[str, Any], where: str) -> None:
    try:
        import jsonschema
    except ImportError:  # optional: the constructor's own checks still apply
        return
    from ..resources import resource_path

    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(instance=dict(doc), schema=schema)
    except jsonschema.ValidationError as exc:
        loc = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise InputError(f"{where} does not match the calibration schema at {loc}: {exc.message}.",
                         "Create the calibration again with `osteoroi calibrate`.") from None


# ----------------------------------------------------------------------------------------------
# Building calibrations
# ----------------------------------------------------------------------------------------------
def scanner_facts(volume) -> Dict[str, Any]:
    """The DICOM facts a calibration records (None where the CT has none)."""
    facts = getattr(volume, "facts", None) or {}
    return {k: facts.get(k) for k in SCANNER_KEYS}


def _rod_value(rod: Any, key: str, default=None):
    if isinstance(rod, Mapping):
        return rod.get(key, default)
    return getattr(rod, key, default)


def fit_phantom(rods: Sequence[Any], phantom: PhantomDefinition, scanner: Optional[Mapping[str, Any]] = None,
                source_volume: Optional[str] = None, command: str = "") -> Calibration:
    """Fit a phantom calibration from measured rods and apply the QA rules.

    ``rods``: dicts (or objects) with ``name``, ``mean_hu`` and optionally ``sd_hu``,
    ``n_voxels``, ``center_ras``, ``roi_radius_mm``, ``slab_mm``, ``warnings``; the density
    (and water density) come from ``phantom`` by the rod's name. The phantom's method decides
    between OLS and the Mindways two-component fit.
    """
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
        for key in ("sd_hu", "n_voxels", "center_ras", "roi_radius_mm", "rod_radius_mm", "slab_mm", "found_by"):
            v = _rod_value(rod, key)
            if v is not None:
                p[key] = [float(c) for c in v] if key == "center_ras" else v
        p["warnings"] = list(_rod_value(rod, "warnings", None) or [])
        points.append(p)

    x = np.array([p["density"] for p in points], dtype=float)
    hu = np.array([p["mean_hu"] for p in points], dtype=float)
    mindways = phantom.method == METHOD_MINDWAYS
    if mindways:
        water = np.array([p["water_density"] for p in points], dtype=float)
        y = hu - water
    else:
        y = hu
    warnings: List[str] = []
    f = fit_line(x, y)  # refuses < 2 distinct densities
    if mindways:
        slope = f.slope - MINDWAYS_SLOPE_OFFSET
        intercept = f.intercept + MINDWAYS_INTERCEPT_OFFSET
        reference = {"slope": f.slope, "intercept": f.intercept}
        what = "Mindways reference fit (HU - water density) vs K2HPO4"
    else:
        slope, intercept, reference = f.slope, f.intercept, None
        what = "HU vs density"
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
    if f.r2 < R2_WARN:
        warnings.append(f"Calibration R² = {f.r2:.4f} is below {R2_WARN}: check the rods' ROIs and artefacts.")
    distinct = np.unique(x).size
    if distinct < 3:
        warnings.append(f"Only {distinct} distinct rod densities: the fit cannot be checked (3 or more recommended).")
    predicted = f.predict(x)
    # Measurement SE of the rods' means (median over rods): a floor under the SEE of a fit with
    # few degrees of freedom, which can be small by chance.
    meas_se = [float(p["sd_hu"]) / math.sqrt(float(p["n_voxels"])) for p in points
               if p.get("sd_hu") is not None and p.get("n_voxels")]
    se_floor = float(np.median(meas_se)) if meas_se else 0.0
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
    sds = [float(p["sd_hu"]) for p in points if p.get("sd_hu") is not None]
    if sds:
        med = float(np.median(sds))
        for p in points:
            sd = p.get("sd_hu")
            if sd is not None and (sd > ROD_SD_WARN_HU or sd > 2.0 * med + 5.0):
                msg = (f"Rod {p['name']}: its ROI's SD is high ({sd:.1f} HU; median of the rods {med:.1f} HU): "
                       "air bubble, wall, artefact or misplaced ROI?")
                p["warnings"].append(msg)
                warnings.append(msg)
    for p in points:
        for w in p["warnings"]:
            if w not in warnings:
                warnings.append(w)
    cal = Calibration(
        kind="phantom", unit=phantom.unit, method=METHOD_MINDWAYS if mindways else "ols",
        slope=slope, intercept=intercept, r2=f.r2, see=f.see, n_points=f.n, x_mean=f.x_mean, sxx=f.sxx,
        density_range=[float(x.min()), float(x.max())], points=points, warnings=warnings,
        phantom=phantom.to_dict(), reference_fit=reference, scanner=dict(scanner or {}),
        source_volume=source_volume, command=command,
    )
    note = cal.uncertainty_note()
    if note:
        cal.warnings.append(f"No uncertainty: {note}.")
    return cal


def manual_calibration(slope: float, intercept: float, unit: str, note: str = "", command: str = "",
                       scanner: Optional[Mapping[str, Any]] = None) -> Calibration:
    """A user's slope (HU per mg/cm³) and intercept (HU), recorded as manual."""
    try:
        s, b = float(slope), float(intercept)
    except (TypeError, ValueError):
        raise InputError("The manual slope and intercept must be numbers.",
                         "Give e.g. --slope 1.25 --intercept -10.") from None
    if not (math.isfinite(s) and math.isfinite(b)):
        raise InputError("The manual slope and intercept must be finite numbers.", "Give e.g. --slope 1.25 --intercept -10.")
    cal = Calibration(kind="manual", unit=unit, method="manual", slope=s, intercept=b, note=note, command=command,
                      scanner=dict(scanner or {}))
    cal.warnings.append("Manual calibration: slope and intercept were entered by the user, not fitted; "
                        "vBMD has no uncertainty from a fit.")
    return cal


# ----------------------------------------------------------------------------------------------
# Saving, loading, checking
# ----------------------------------------------------------------------------------------------
def save_calibration(cal: Calibration, path: str, overwrite: bool = False) -> str:
    """Write the calibration JSON atomically (refuses to replace a file unless ``overwrite``)."""
    from ..io.outputs import check_output_paths, write_atomically

    [out] = check_output_paths([path], overwrite=overwrite)
    write_atomically({out: cal.to_json_text()})
    return out


def load_calibration(path: str) -> Calibration:
    """Read a saved calibration (validated against its schema when jsonschema is installed)."""
    doc = read_json(path, "calibration file", "Give a calibration JSON written by `osteoroi calibrate`.")
    return Calibration.from_dict(doc, path=path)


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


def check_units(calibrations: Sequence[Calibration]) -> str:
    """The one unit of several calibrations; refuses a mix of K2HPO4 and HA."""
    units = {c.unit for c in calibrations}
    if len(units) > 1:
        raise InputError(f"The calibrations mix density units ({', '.join(sorted(units))}).",
                         "K2HPO4 and HA densities are different quantities: use calibrations of one unit.")
    return units.pop() if units else ""


# ----------------------------------------------------------------------------------------------
# Applying to measurement rows
# ----------------------------------------------------------------------------------------------
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
        "phantom": None if not cal.phantom else cal.phantom.get("id"),
        "scanner": {k: cal.scanner.get(k) for k in SCANNER_KEYS},
        "created": cal.created,
        "uncertainty": ("vbmd_sd = standard error of the calibration at the ROI's mean HU "
                        "(fit only; the ROI's own noise is not included)") if cal.uncertainty_note() is None
        else cal.uncertainty_note(),
        "warnings": list(cal.warnings),
    }
    if cal.kind == "internal" and cal.internal:
        summary["effective_energy_kev"] = cal.internal.get("effective_energy_kev")
        summary["r2"] = cal.internal.get("r2")
    return json_safe(summary)


def calibrate_measurement(measurement: Mapping[str, Any], cal: Calibration,
                          facts: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The measurement stage's output with vBMD added: ``(measurement, extra)``.

    Rows gain ``vbmd_mg_cm3``/``vbmd_unit``/``vbmd_sd`` (``apply_calibration``); the warnings gain
    the scanner mismatches between the CT's DICOM ``facts`` and the calibration's
    (``compare_scanner``); ``extra`` is ``{"calibration": calibration_summary(cal)}`` for
    ``results.build_document``.
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
