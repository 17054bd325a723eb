"""NIST mass attenuation tables (``Resources/Data/nist_mass_attenuation.csv``): μ/ρ of body tissues,
water, K₂HPO₄, calcium hydroxyapatite and triglyceride against photon energy.

Source: NIST Standard Reference Database 126 (Hubbell & Seltzer) and NIST XCOM, as described in
``Resources/Data/NIST_SOURCE.txt``. Read by the internal calibration (Michalski et al. 2020) and by
the physical plausibility checks of every calibration (:mod:`.plausibility`).
"""
from __future__ import annotations

import csv
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..resources import resource_path

NIST_FILE = ("Data", "nist_mass_attenuation.csv")

_TABLES: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None


def load_nist(path: Optional[str] = None) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """NIST mass attenuation tables: material -> (energy keV, μ/ρ cm²/g), energies ascending."""
    global _TABLES
    if path is None and _TABLES is not None:
        return _TABLES
    p = path or resource_path(*NIST_FILE)
    rows: Dict[str, List[Tuple[float, float]]] = {}
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for r in reader:
            rows.setdefault(r["material"].strip(), []).append(
                (float(r["energy_keV"]), float(r["mass_attenuation_cm2_per_g"])))
    tables = {}
    for name, items in rows.items():
        e = np.array([a for a, _ in items])
        m = np.array([b for _, b in items])
        if np.any(np.diff(e) < 0):
            raise InputError(f"The NIST table {name} is not sorted by energy.",
                             "Restore Resources/Data/nist_mass_attenuation.csv.")
        tables[name] = (e, m)
    if path is None:
        _TABLES = tables
    return tables


def mass_attenuation(material: str, energies_kev) -> np.ndarray:
    """μ/ρ (cm²/g) of a NIST table material at the given energies (linear interpolation; an
    absorption edge is a pair of rows with one energy, so values never straddle it)."""
    tables = load_nist()
    if material not in tables:
        raise InputError(f"No NIST table {material!r}.", f"Known: {', '.join(sorted(tables))}.")
    e, m = tables[material]
    return np.interp(np.asarray(energies_kev, dtype=float), e, m)


