"""Internal (phantomless) calibration, after Michalski et al. 2020 (Med Eng Phys 78:55-63).

Tissues in the same scan serve as references (QCT_BRIEF §4): at least three of air, adipose
tissue, skeletal muscle, blood and cortical bone, each measured in a uniform ROI.

1. **Effective energy**: for every energy from 1 to 200 keV in 0.5 keV steps, the tissues'
   mass attenuation coefficients μ/ρ (NIST tables, ``Resources/Data/nist_mass_attenuation.csv``,
   linear interpolation in energy between the tabulated points) are regressed on their measured
   HU; the energy with the largest R² is the scan's effective energy.
2. At that energy, two straight lines in HU are fitted over the tissues: μ/ρ(HU), and the
   tissue density ρ(HU) = μ_water·(1 + HU/1000)/(μ/ρ)_tissue (g/cm³, water density 1 g/cm³).
3. Each voxel (or ROI mean HU) is split into K₂HPO₄ and triglyceride by their μ/ρ at that
   energy: ``vBMD = 1000 · ρ(HU) · (μ/ρ(HU) − μ/ρ_TG)/(μ/ρ_K2HPO4 − μ/ρ_TG)`` mg/cm³ K₂HPO₄.

Tissue HU outside the typical ranges (adipose −100 ± 30, air −1000 −30/+20, blood 20 ± 40,
muscle 30 ± 35, cortical bone 1200 ± 250; QCT_BRIEF §4) warn: the ROI may be in the wrong
tissue, or the scan contrast-enhanced.

Uncertainty: the standard error of the μ/ρ(HU) line at the ROI's HU
(``SEE·√(1/n + (HU − mean)²/Shh)``, n − 2 degrees of freedom) carried through step 3.

This module fits the model; evaluating it (step 3 and its uncertainty) is
:func:`.model.internal_vbmd` and :func:`.model.internal_vbmd_sd`, as for every calibration kind.
Each tissue is measured in a disc ROI (:func:`..roi.disc.rod_roi`), as the rods are.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..io.tissue_hu import ENHANCED_BLOOD_HU  # blood above it is contrast-enhanced (one number everywhere)
from ..io.volume import Volume
from ..roi.disc import rod_roi
from ..roi.stats import roi_statistics
from .nist import NIST_FILE, load_nist, mass_attenuation  # noqa: F401  (re-exported: the old home)
from . import plausibility
from .model import R2_REFUSE, R2_WARN, Calibration, LinearFit, fit_line

#: Reference tissues and their NIST table (ICRU-44 compositions).
TISSUE_TABLES = {
    "air": "air_table",
    "adipose": "adipose_table",
    "muscle": "muscle_table",
    "blood": "blood_table",
    "cortical_bone": "bone_table",
}
TISSUE_ALIASES = {
    "fat": "adipose", "subcutaneous_fat": "adipose", "adipose_tissue": "adipose",
    "skeletal_muscle": "muscle", "paraspinal_muscle": "muscle", "paraspinal_muscle_left": "muscle",
    "paraspinal_muscle_right": "muscle",
    "aorta": "blood",
    "bone": "cortical_bone", "cortical": "cortical_bone", "cortex": "cortical_bone",
}
#: Typical HU of each tissue: (centre, allowed below, allowed above) (QCT_BRIEF §4).
TISSUE_SANITY = {
    "adipose": (-100.0, 30.0, 30.0),
    "air": (-1000.0, 30.0, 20.0),
    "blood": (20.0, 40.0, 40.0),
    "muscle": (30.0, 35.0, 35.0),
    "cortical_bone": (1200.0, 250.0, 250.0),
}
#: Energy grid of the effective-energy search (keV): 1 to 200 in 0.5 keV steps (Michalski 2020).
ENERGIES_KEV = np.arange(1.0, 200.0 + 0.25, 0.5)
MIN_TISSUES = 3
#: The five reference tissues of the method (Michalski et al. 2020); fewer is a documented minimum
#: of MIN_TISSUES whose error is larger: 3-tissue subsets of one scan gave 74 to 106 mg/cm³ for one
#: vertebra (this project's test of the method), so a reduced set is recorded with that spread.
FULL_TISSUE_SET = ("air", "adipose", "muscle", "blood", "cortical_bone")
REDUCED_SET_SPREAD_MG_CM3 = (74.0, 106.0)
#: Method error of phantomless calibration without pre-calibration: 12.6 ± 13.2 mg/cm³
#: (Bartenschlager et al. 2023, J Bone Miner Res): values are screening, not diagnostic QCT.
METHOD_ERROR_MG_CM3 = (12.6, 13.2)
METHOD_ERROR_SOURCE = ("Bartenschlager S et al. J Bone Miner Res 2023: phantomless calibration without "
                       "pre-calibration differed from phantom-based QCT by 12.6 ± 13.2 mg/cm3")
SCREENING_NOTE = ("Internal (phantomless) calibration: vBMD is a screening estimate, not diagnostic QCT; method "
                  "error 12.6 ± 13.2 mg/cm3 (Bartenschlager 2023).")

def normalize_tissue(name: str) -> str:
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    key = TISSUE_ALIASES.get(key, key)
    if key not in TISSUE_TABLES:
        raise InputError(f"Unknown reference tissue {name!r}.",
                         f"Use {', '.join(TISSUE_TABLES)} (at least {MIN_TISSUES} of them).")
    return key


def tissue_sanity_warnings(tissue_hu: Mapping[str, float]) -> List[str]:
    out = []
    for name, hu in tissue_hu.items():
        t = normalize_tissue(name)
        c, below, above = TISSUE_SANITY[t]
        if hu is not None and not (c - below <= float(hu) <= c + above):
            out.append(f"Reference tissue {t}: {float(hu):.1f} HU is outside its typical range "
                       f"{c - below:g} to {c + above:g} HU — ROI in the wrong tissue, or a contrast-enhanced scan?")
    return out


def _r2_all(hu: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """R² of the regression of μ/ρ on HU at every energy (mu: tissues × energies)."""
    h = hu - hu.mean()
    m = mu - mu.mean(axis=0, keepdims=True)
    shh = float(h @ h)
    smm = np.einsum("ij,ij->j", m, m)
    shm = h @ m
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(smm > 0, shm * shm / (shh * smm), 0.0)
    return r2


def effective_energy(tissue_hu: Mapping[str, float]) -> Tuple[float, float, np.ndarray]:
    """(energy keV, its R², R² at every grid energy) maximising R² of μ/ρ against HU."""
    names = [normalize_tissue(n) for n in tissue_hu]
    hu = np.array([float(v) for v in tissue_hu.values()])
    mu = np.array([mass_attenuation(TISSUE_TABLES[n], ENERGIES_KEV) for n in names])
    r2 = _r2_all(hu, mu)
    i = int(np.argmax(r2))
    return float(ENERGIES_KEV[i]), float(r2[i]), r2


def _clean_tissue_hu(tissue_hu: Mapping[str, float]) -> Dict[str, float]:
    """Mean HU by canonical tissue name; refuses a tissue given twice or without a mean HU, fewer
    than MIN_TISSUES tissues and tissues that all have the same HU."""
    clean: Dict[str, float] = {}
    for name, hu in tissue_hu.items():
        t = normalize_tissue(name)
        if t in clean:
            raise InputError(f"Reference tissue {t} is given twice.", "Give one ROI per tissue.")
        if hu is None or not math.isfinite(float(hu)):
            raise InputError(f"Reference tissue {t} has no mean HU.", "Place its point inside the tissue.")
        clean[t] = float(hu)
    if len(clean) < MIN_TISSUES:
        raise InputError(
            f"Internal calibration needs at least {MIN_TISSUES} reference tissues; got {len(clean)} "
            f"({', '.join(clean) or 'none'}).",
            "Add ROIs in air, subcutaneous fat, paraspinal muscle, the aorta (blood) or cortical bone.",
        )
    if np.unique(list(clean.values())).size < 2:
        raise InputError("The reference tissues all have the same HU.", "Check the ROIs: they must lie in different tissues.")
    return clean


def _tissue_points(names: Sequence[str], hu: np.ndarray, mu: np.ndarray, dens: np.ndarray, f_mu: LinearFit,
                   tissue_sd: Optional[Mapping[str, float]],
                   points_extra: Optional[Mapping[str, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """The calibration's points: each tissue's HU, μ/ρ, density, residual and typical HU range."""
    points = []
    for i, n in enumerate(names):
        p: Dict[str, Any] = {"name": n, "mean_hu": float(hu[i]), "mu_rho_cm2_g": float(mu[i]),
                             "density_g_cm3": float(dens[i]), "residual_mu_rho": float(f_mu.residuals[i]),
                             "typical_hu": [TISSUE_SANITY[n][0] - TISSUE_SANITY[n][1],
                                            TISSUE_SANITY[n][0] + TISSUE_SANITY[n][2]]}
        if tissue_sd and tissue_sd.get(n) is not None:
            p["sd_hu"] = float(tissue_sd[n])
        if points_extra and n in points_extra:
            for k, v in points_extra[n].items():
                p.setdefault(k, v)
        points.append(p)
    return points


def _internal_guards(clean: Mapping[str, float], energy: float, scanner: Optional[Mapping[str, Any]],
                     accept_implausible: bool) -> Tuple[List[str], List[str]]:
    """(warnings, overrides): an effective energy clinical CT cannot produce is refused
    (:mod:`.plausibility`); a reduced tissue set and the method's error are stated."""
    overrides = plausibility.enforce(plausibility.energy_problems(energy, (scanner or {}).get("kvp")),
                                     "The internal calibration", accept_implausible=accept_implausible)
    warnings = list(overrides) + [SCREENING_NOTE]
    blood = clean.get("blood")
    if blood is not None and blood > ENHANCED_BLOOD_HU:
        warnings.append(f"Blood (aorta) reads {blood:.0f} HU (> {ENHANCED_BLOOD_HU:g}): the scan is contrast-enhanced; "
                        "enhanced blood is no reference tissue (remove its ROI) and the criteria were not validated "
                        "on contrast-enhanced CT.")
    missing = [t for t in FULL_TISSUE_SET if t not in clean]
    if missing:
        lo, hi = REDUCED_SET_SPREAD_MG_CM3
        warnings.append(f"Reduced tissue set ({len(clean)} of 5; missing {', '.join(missing)}): subsets of 3 tissues "
                        f"of one scan gave {lo:g} to {hi:g} mg/cm3 for the same vertebra; add the missing tissues.")
    return warnings, overrides


def fit_internal(tissue_hu: Mapping[str, float], tissue_sd: Optional[Mapping[str, float]] = None,
                 scanner: Optional[Mapping[str, Any]] = None, source_volume: Optional[str] = None,
                 command: str = "", points_extra: Optional[Mapping[str, Mapping[str, Any]]] = None, *,
                 accept_implausible: bool = False) -> Calibration:
    """Internal calibration from the mean HU of ≥ 3 reference tissues (Michalski et al. 2020).

    Returns a :class:`~OsteoROILib.calibration.Calibration` (kind "internal", unit K2HPO4). An
    effective energy outside what clinical CT produces is refused unless ``accept_implausible``
    (recorded); the method error (Bartenschlager 2023) is recorded and fewer than five tissues warn.
    """
    clean = _clean_tissue_hu(tissue_hu)
    energy, r2, _ = effective_energy(clean)
    guard_warnings, overrides = _internal_guards(clean, energy, scanner, accept_implausible)
    names = list(clean)
    hu = np.array([clean[n] for n in names])
    mu = np.array([float(mass_attenuation(TISSUE_TABLES[n], energy)) for n in names])
    mu_w = float(mass_attenuation("water_table", energy))
    mu_k = float(mass_attenuation("k2hpo4_table", energy))
    mu_tg = float(mass_attenuation("triglyceride_table", energy))
    warnings = guard_warnings + tissue_sanity_warnings(clean)
    if r2 < R2_REFUSE:
        raise InputError(
            f"The reference tissues do not fit a line of μ/ρ against HU at any energy (best R² = {r2:.3f} at "
            f"{energy:g} keV).",
            "Check each tissue ROI (uniform tissue, no contrast agent, right label).",
        )
    if r2 < R2_WARN:
        warnings.append(f"Internal calibration R² = {r2:.4f} (below {R2_WARN}) at {energy:g} keV: check the tissue ROIs.")
    if energy <= ENERGIES_KEV[0] or energy >= ENERGIES_KEV[-1]:
        warnings.append(f"The effective energy {energy:g} keV is at the end of the 1-200 keV search: the tissue HU "
                        "are implausible for a CT scan.")
    f_mu = fit_line(hu, mu)
    dens = mu_w * (1.0 + hu / 1000.0) / mu
    f_rho = fit_line(hu, dens)
    if mu_k <= mu_tg:
        raise InputError(f"At {energy:g} keV K2HPO4 does not attenuate more than triglyceride.",
                         "The effective energy is implausible; check the tissue ROIs.")
    points = _tissue_points(names, hu, mu, dens, f_mu, tissue_sd, points_extra)
    params = {
        "method": "michalski-2020",
        "effective_energy_kev": energy,
        "r2": r2,
        "mu_rho_water": mu_w,
        "mu_rho_k2hpo4": mu_k,
        "mu_rho_triglyceride": mu_tg,
        "hu_to_mu_rho_slope": f_mu.slope,
        "hu_to_mu_rho_intercept": f_mu.intercept,
        "hu_to_mu_rho_see": f_mu.see,
        "hu_to_density_slope": f_rho.slope,
        "hu_to_density_intercept": f_rho.intercept,
        "hu_mean": float(hu.mean()),
        "hu_sxx": float(((hu - hu.mean()) ** 2).sum()),
        "n_tissues": len(names),
        "method_error": {"mean_mg_cm3": METHOD_ERROR_MG_CM3[0], "sd_mg_cm3": METHOD_ERROR_MG_CM3[1],
                         "source": METHOD_ERROR_SOURCE},
        "screening_only": True,
        "contrast_from_aorta_hu": clean["blood"] if clean.get("blood", 0.0) > ENHANCED_BLOOD_HU else None,
        "nist_source": "NIST XCOM / X-ray mass attenuation coefficients (Resources/Data/NIST_SOURCE.txt)",
    }
    cal = Calibration(kind="internal", unit="K2HPO4", method="michalski-2020", r2=r2, n_points=len(names),
                      points=points, warnings=warnings, internal=params, scanner=dict(scanner or {}),
                      source_volume=source_volume, command=command, overrides=overrides)
    return cal


def measure_tissues(volume: Volume, points: Mapping[str, Sequence[float]], radius_mm: float = 4.0,
                    slab_mm: Optional[float] = None) -> Dict[str, Dict[str, Any]]:
    """Mean/SD HU of a circular ROI (``radius_mm``, ``slab_mm`` thick, axial) at each tissue point."""
    out: Dict[str, Dict[str, Any]] = {}
    slab = float(slab_mm) if slab_mm is not None else max(3.0 * volume.slice_spacing(), 5.0)
    for name, xyz in points.items():
        t = normalize_tissue(name)
        if t in out:
            raise InputError(f"Reference tissue {t} is given twice.", "Give one point per tissue.")
        p = np.asarray(xyz, dtype=float).reshape(-1)
        if p.size != 3 or not np.all(np.isfinite(p)) or not volume.contains_ras(p)[0]:
            raise InputError(f"The point of tissue {t} is not a RAS point inside the image.",
                             "Give R,A,S in mm as Slicer shows them.")
        stats = roi_statistics(volume, rod_roi(volume, p, radius_mm, slab, name=t))
        if stats["mean_hu"] is None:
            raise InputError(f"The ROI of tissue {t} holds no voxel.", "Place the point inside the image.")
        out[t] = {"mean_hu": stats["mean_hu"], "sd_hu": stats["sd_hu"], "n_voxels": stats["n_voxels"],
                  "center_ras": [float(v) for v in p], "roi_radius_mm": radius_mm, "slab_mm": slab,
                  "warnings": stats["warnings"]}
    return out
