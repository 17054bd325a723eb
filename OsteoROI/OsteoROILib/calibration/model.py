"""The calibration model: a line from HU to QCT volumetric BMD (vBMD, mg/cm³ of K₂HPO₄ or HA),
whatever made it, and how it is evaluated, saved and loaded.

Sources of a calibration (QCT_BRIEF §4): rods of a phantom (:mod:`.phantom_fit`, :mod:`.rods`), a
user's slope and intercept (:func:`.phantom_fit.manual_calibration`) or tissues in the scan
(:mod:`.internal`, Michalski et al. 2020). Linear kinds give ``vBMD = (HU − β)/σ``; the internal
kind is evaluated by :func:`internal_vbmd` from its fitted parameters. Both formulas live here
because evaluating a calibration belongs to the model, whatever its kind.

Quality limits shared by every fit (QCT_BRIEF §4): R² < 0.90 is refused, R² < 0.98 warns.

The unit (``"K2HPO4"`` or ``"HA"``) travels with every calibration and every vBMD; the two are
never mixed. A calibration is saved as JSON (schema ``Resources/Schemas/
osteoroi-calibration-1.schema.json``) with the scanner's manufacturer, model, kVp, kernel and
study date and the phantom.

Uncertainty: ``vbmd_sd`` is the standard error of the calibration line at that HU (inverse
prediction, treating the ROI's mean HU as exact):
``SEE/σ · √(1/n + (ρ̂ − ρ̄)²/Sxx)``. It is undefined (None, with a warning) for a two-rod fit
(no degrees of freedom) and for a manual calibration. For an internal calibration it is the
standard error of the μ/ρ(HU) line carried through the two-material split (:func:`internal_vbmd_sd`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .. import __version__
from ..errors import InputError
from ..io.jsonfile import read_json
from ..io.outputs import check_output_paths, json_safe, write_atomically
from ..resources import resource_path
from . import plausibility
from .phantom_library import METHOD_MINDWAYS, normalize_unit, unit_label

SCHEMA_ID = "osteoroi-calibration/1"
SCHEMA_FILE = ("Schemas", "osteoroi-calibration-1.schema.json")

#: QA thresholds of every fit, phantom or internal (QCT_BRIEF §4).
R2_WARN = 0.98
R2_REFUSE = 0.90

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



# ----------------------------------------------------------------------------------------------
# Calibration object
# ----------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A calibration from HU to vBMD in ``unit`` ("K2HPO4" or "HA").

    ``kind``: "phantom", "manual" or "internal"; ``method``: "ols",
    "mindways-two-component", "manual" or "michalski-2020". Linear kinds have
    ``vBMD = (HU − intercept)/slope`` (``slope`` σ in HU per mg/cm³, ``intercept`` β in HU);
    an internal calibration keeps its parameters in ``internal`` (see :mod:`.internal`).
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
    overrides: List[str] = field(default_factory=list)

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
            raise InputError("An internal calibration needs its parameters.", "Fit it with calibration.internal.fit_internal.")
        if not self.created:
            self.created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()

    @property
    def unit_label(self) -> str:
        return unit_label(self.unit)

    @property
    def phantom_id(self) -> Optional[str]:
        """The id of the phantom whose rods made the calibration (None for other kinds)."""
        return (self.phantom or {}).get("id")

    @property
    def effective_energy_kev(self) -> Optional[float]:
        """The scan's effective energy found by an internal calibration (None for other kinds)."""
        return (self.internal or {}).get("effective_energy_kev")

    # -- evaluation ----------------------------------------------------------------------------
    def vbmd(self, hu):
        """vBMD (mg/cm³ in ``unit``) of a mean HU (number or array)."""
        h = np.asarray(hu, dtype=float)
        if self.kind == "internal":
            out = internal_vbmd(self.internal, h)
        else:
            out = (h - float(self.intercept)) / float(self.slope)
        return float(out) if np.ndim(out) == 0 else out

    def vbmd_sd(self, hu) -> Optional[float]:
        """Standard error of the calibration at this HU (mg/cm³), or None when undefined."""
        if hu is None:
            return None
        if self.kind == "internal":
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
        module's fit summary, ``mrml.calibration.calibration_fit_summary``), in this order."""
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
            "overrides": list(self.overrides),
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
        overrides = _check_saved(doc, where)
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
            command=str(doc.get("command") or ""), origin="saved", origin_path=path, overrides=overrides,
        )
        vu = doc.get("vbmd_unit")
        if vu is not None and normalize_unit(vu) != cal.unit:
            raise InputError(f"{where} states unit {cal.unit} but vbmd_unit {vu}.",
                             "The file was edited inconsistently; create the calibration again.")
        return cal



def _check_saved(doc: Mapping[str, Any], where: str) -> List[str]:
    """A saved calibration is checked again as it is loaded: typed fields, its own fit quality (R² ≥
    R2_REFUSE), its line against its own rod table, and the physical window (:mod:`.plausibility`).
    Problems the user accepted when it was made (its ``overrides``) stay accepted; returns them."""
    typed = plausibility.typed_field_problems(doc)
    if typed:
        raise InputError(f"{where} has fields of the wrong type: " + "; ".join(typed) + ".",
                         "Create the calibration again with `osteoroi calibrate` instead of editing the file.")
    r2 = (doc.get("fit") or {}).get("r2")
    if doc.get("kind") != "manual" and r2 is not None and float(r2) < R2_REFUSE:
        raise InputError(f"{where}: its own fit has R² = {float(r2):.3f} < {R2_REFUSE} (QCT_BRIEF §4).",
                         "Calibrate again: check each rod's ROI, the phantom and its certificate values.")
    edited = plausibility.stored_line_problems(doc)
    if edited:
        raise InputError(f"{where}: " + "; ".join(edited) + ".",
                         "Create the calibration again with `osteoroi calibrate` instead of editing the file.")
    accepted = [str(o) for o in (doc.get("overrides") or [])]
    problems = []
    if doc.get("kind") in ("phantom", "manual"):
        kvp = (doc.get("scanner") or {}).get("kvp")
        problems = plausibility.line_problems(doc["slope_hu_per_mg_cm3"], doc["intercept_hu"],
                                              normalize_unit(doc["unit"]), kvp)
        problems += plausibility.rod_order_problems(doc.get("points") or [], doc.get("method") == METHOD_MINDWAYS)
    elif doc.get("kind") == "internal" and isinstance(doc.get("internal"), Mapping):
        energy = doc["internal"].get("effective_energy_kev")
        if isinstance(energy, (int, float)):
            problems = plausibility.energy_problems(energy, (doc.get("scanner") or {}).get("kvp"))
    open_problems = [p for p in problems if not any(p in a for a in accepted)]
    plausibility.enforce(open_problems, f"The saved calibration {where}")
    return accepted


def _validate_schema(doc: Mapping[str, Any], where: str) -> None:
    try:
        import jsonschema
    except ImportError:  # optional: the constructor's own checks still apply
        return
    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(instance=dict(doc), schema=schema)
    except jsonschema.ValidationError as exc:
        loc = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise InputError(f"{where} does not match the calibration schema at {loc}: {exc.message}.",
                         "Create the calibration again with `osteoroi calibrate`.") from None


# ----------------------------------------------------------------------------------------------
# The internal (phantomless) model: its two evaluation formulas (Michalski et al. 2020)
# ----------------------------------------------------------------------------------------------
def internal_vbmd(params: Mapping[str, Any], hu):
    """mg/cm³ K₂HPO₄ of HU values under an internal calibration's parameters."""
    h = np.asarray(hu, dtype=float)
    mu = params["hu_to_mu_rho_slope"] * h + params["hu_to_mu_rho_intercept"]
    rho = params["hu_to_density_slope"] * h + params["hu_to_density_intercept"]
    frac = (mu - params["mu_rho_triglyceride"]) / (params["mu_rho_k2hpo4"] - params["mu_rho_triglyceride"])
    return 1000.0 * rho * frac


def internal_vbmd_sd(params: Mapping[str, Any], hu: float) -> Optional[float]:
    """Standard error (mg/cm³ K₂HPO₄) at ``hu`` from the μ/ρ(HU) line's SEE, or None with fewer
    than 3 tissues."""
    see = params.get("hu_to_mu_rho_see")
    n = int(params.get("n_tissues") or 0)
    sxx = params.get("hu_sxx")
    if see is None or n < 3 or not sxx:
        return None
    h = float(hu)
    se_mu = float(see) * math.sqrt(1.0 / n + (h - float(params["hu_mean"])) ** 2 / float(sxx))
    rho = params["hu_to_density_slope"] * h + params["hu_to_density_intercept"]
    return float(1000.0 * abs(rho) * se_mu / (params["mu_rho_k2hpo4"] - params["mu_rho_triglyceride"]))


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------
def save_calibration(cal: Calibration, path: str, overwrite: bool = False) -> str:
    """Write the calibration JSON atomically (refuses to replace a file unless ``overwrite``)."""
    [out] = check_output_paths([path], overwrite=overwrite)
    write_atomically({out: cal.to_json_text()}, overwrite=overwrite)
    return out


def load_calibration(path: str) -> Calibration:
    """Read a saved calibration (validated against its schema when jsonschema is installed)."""
    doc = read_json(path, "calibration file", "Give a calibration JSON written by `osteoroi calibrate`.")
    return Calibration.from_dict(doc, path=path)
