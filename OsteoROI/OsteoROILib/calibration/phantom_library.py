"""The calibration phantom library: definitions, validation, user phantoms.

A phantom definition lists its rods (name, mineral density in mg/cm³, and for the Mindways
Model 3 phantom each rod's water density) and the density **unit**: ``"K2HPO4"`` or ``"HA"``
(hydroxyapatite). The two units are different quantities and are never mixed (QCT_BRIEF §4).

The built-in library is ``Resources/Phantoms/phantoms.json`` (every phantom of QCT_BRIEF §4;
values are defaults and examples — certificate values differ per serial). A user enters their
own phantom's certificate with :func:`phantom_from_certificate`, checks it with
:func:`validate_phantom` and saves it with :func:`save_user_phantom`; :func:`load_library`
merges the saved user phantoms (``*.json`` files in a folder, by default
``$OSTEOROI_USER_PHANTOMS`` or ``~/.osteoroi/phantoms``) with the built-in ones.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..io.outputs import check_output_paths, write_atomically
from ..resources import resource_path

#: Density units of calibration phantoms (QCT_BRIEF §4: K₂HPO₄ and HA are different units).
UNITS = ("K2HPO4", "HA")

METHOD_LINEAR = "linear"
METHOD_MINDWAYS = "mindways-two-component"
METHODS = (METHOD_LINEAR, METHOD_MINDWAYS)
#: Mindways Model 3 two-component constants: σ_CT = σ_ref − 0.2174, β_CT = β_ref + 999.6
#: (QCT Pro user guide v5; QCT_BRIEF §4).
MINDWAYS_SLOPE_OFFSET = 0.2174
MINDWAYS_INTERCEPT_OFFSET = 999.6
#: Rod densities a calibration phantom can hold (mg/cm³): Mindways rods go slightly negative
#: (−53.40, QCT_BRIEF §4), HA rods reach 800-1200 (QRM, cortical inserts); beyond is a typing error.
ROD_DENSITY_RANGE = (-200.0, 1500.0)
#: Water density of a two-component rod (mg/cm³; Mindways example 923-1120, QCT_BRIEF §4).
ROD_WATER_DENSITY_RANGE = (700.0, 1300.0)

_UNIT_ALIASES = {
    "k2hpo4": "K2HPO4",
    "k₂hpo₄": "K2HPO4",
    "dipotassiumphosphate": "K2HPO4",
    "dipotassiumhydrogenphosphate": "K2HPO4",
    "ha": "HA",
    "hydroxyapatite": "HA",
    "calciumhydroxyapatite": "HA",
    "cha": "HA",
}

_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def normalize_unit(text: Any) -> str:
    """``"K2HPO4"`` or ``"HA"`` from e.g. "mg/cm3 HA", "hydroxyapatite", "K₂HPO₄".

    Raises InputError for anything else (including a missing unit).
    """
    raw = "" if text is None else str(text)
    key = raw.lower()
    for prefix in ("mg/cm3", "mg/cm^3", "mg/cm³", "mg/cc", "mg cm-3"):
        key = key.replace(prefix, "")
    key = re.sub(r"[\s_\-()]", "", key)
    if key in _UNIT_ALIASES:
        return _UNIT_ALIASES[key]
    raise InputError(
        f"Unknown density unit {raw!r}.",
        "Give K2HPO4 (dipotassium phosphate, e.g. Mindways) or HA (hydroxyapatite, e.g. QRM, B-MAS) as on the "
        "phantom's certificate.",
    )


def unit_label(unit: str) -> str:
    """The unit as written in tables: ``"mg/cm3 K2HPO4"`` or ``"mg/cm3 HA"``."""
    return f"mg/cm3 {normalize_unit(unit)}"


@dataclass
class Rod:
    """One rod (or insert) of a phantom: ``density`` mg/cm³ of the phantom's mineral;
    ``water_density`` mg/cm³ for Mindways-style two-component rods."""

    name: str
    density: float
    water_density: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.name, "density": float(self.density)}
        if self.water_density is not None:
            d["water_density"] = float(self.water_density)
        return d


@dataclass
class PhantomDefinition:
    """A calibration phantom: rods, density unit and fitting method.

    ``method`` is ``"linear"`` (OLS HU = β + σ·ρ) or ``"mindways-two-component"``;
    ``layout`` is ``"rods"`` (cylinders along the table, automatic finding applies) or
    ``"vertebrae"`` (e.g. the European Spine Phantom: place one point per insert);
    ``rod_radius_mm`` is the rods' radius when known (else it is fitted from the image).
    """

    id: str
    name: str
    unit: str
    rods: List[Rod]
    method: str = METHOD_LINEAR
    layout: str = "rods"
    rod_radius_mm: Optional[float] = None
    notes: str = ""
    source: str = "library"
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def unit_label(self) -> str:
        return unit_label(self.unit)

    def rod(self, key: str) -> Rod:
        """A rod by name (case-insensitive) or by its density as listed (e.g. "100" or "-51.83")."""
        text = str(key).strip()
        for r in self.rods:
            if r.name.lower() == text.lower():
                return r
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is not None:
            hits = [r for r in self.rods if abs(r.density - value) < 1e-6]
            if len(hits) == 1:
                return hits[0]
        listed = ", ".join(f"{r.name} ({r.density:g})" for r in self.rods)
        raise InputError(
            f"Phantom {self.id} has no rod {key!r}.",
            f"Name a rod by its name or its density as listed: {listed}.",
        )

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "unit": self.unit,
            "method": self.method,
            "layout": self.layout,
            "rods": [r.to_dict() for r in self.rods],
        }
        if self.rod_radius_mm is not None:
            d["rod_radius_mm"] = float(self.rod_radius_mm)
        if self.notes:
            d["notes"] = self.notes
        return d

    def describe_line(self) -> str:
        """One line: the id, then each rod's name, density and unit (and Mindways water density)."""
        label = self.unit_label
        rods = ", ".join(f"{r.name} {r.density:g} {label}" + (f" (water {r.water_density:g})"
                                                               if r.water_density is not None else "")
                         for r in self.rods)
        return f"{self.id}: {rods} — {self.name}"


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v):
        raise InputError(f"{what} is not a finite number ({value!r}).", "Enter the value as printed on the certificate.")
    return v


def _check_rod_range(value: float, limits: Tuple[float, float], what: str) -> None:
    if not limits[0] <= value <= limits[1]:
        raise InputError(f"{what} is {value:g} mg/cm3, outside what a calibration phantom holds "
                         f"({limits[0]:g} to {limits[1]:g} mg/cm3).",
                         "Enter the value in mg/cm3 as printed on the phantom's certificate (--rod NAME=DENSITY).")


def validate_phantom(data: Any) -> PhantomDefinition:
    """Check a phantom (a dict as in phantoms.json, or a PhantomDefinition) and return it.

    Refuses: a bad id, no unit or an unknown one, fewer than two rods or fewer than two distinct
    densities, duplicate rod names or densities, non-finite numbers, water densities on some
    rods only, a two-component method without water densities or not in K₂HPO₄.
    """
    if isinstance(data, PhantomDefinition):
        data = dict(data.to_dict(), source=data.source)
    if not isinstance(data, dict):
        raise InputError("A phantom definition must be a JSON object.", "See Resources/Phantoms/phantoms.json.")
    pid = str(data.get("id", "")).strip()
    if not _ID_PATTERN.match(pid):
        raise InputError(
            f"Phantom id {pid!r} is not valid.",
            "Use 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. qrm-bdc-6-sn1234).",
        )
    unit = normalize_unit(data.get("unit"))
    rods_in = data.get("rods")
    if not isinstance(rods_in, (list, tuple)) or len(rods_in) < 2:
        raise InputError(f"Phantom {pid} needs at least two rods.", "List each rod with its name and density.")
    rods: List[Rod] = []
    for n, item in enumerate(rods_in, start=1):
        if not isinstance(item, dict):
            raise InputError(f"Rod {n} of phantom {pid} is not an object.", "Give each rod as {name, density}.")
        name = str(item.get("name", "")).strip()
        if not name:
            raise InputError(f"Rod {n} of phantom {pid} has no name.", "Give each rod a name (e.g. A or R100).")
        if "unit" in item and item["unit"] is not None and normalize_unit(item["unit"]) != unit:
            raise InputError(
                f"Rod {name} of phantom {pid} is in {item['unit']} but the phantom is in {unit}.",
                "A phantom has one density unit: K2HPO4 and HA cannot be mixed.",
            )
        density = _finite(item.get("density"), f"The density of rod {name} of phantom {pid}")
        water = item.get("water_density")
        water = None if water is None else _finite(water, f"The water density of rod {name} of phantom {pid}")
        _check_rod_range(density, ROD_DENSITY_RANGE, f"The density of rod {name} of phantom {pid}")
        if water is not None:
            _check_rod_range(water, ROD_WATER_DENSITY_RANGE, f"The water density of rod {name} of phantom {pid}")
        rods.append(Rod(name=name, density=density, water_density=water))
    names = [r.name.lower() for r in rods]
    if len(set(names)) != len(names):
        dup = sorted({r.name for r in rods if names.count(r.name.lower()) > 1})
        raise InputError(f"Phantom {pid} lists rod name(s) {', '.join(dup)} more than once.", "Give each rod a unique name.")
    densities = [r.density for r in rods]
    if len(set(densities)) != len(densities):
        dup = sorted({d for d in densities if densities.count(d) > 1})
        raise InputError(
            f"Phantom {pid} lists the density {', '.join(f'{d:g}' for d in dup)} on more than one rod.",
            "Each rod needs its own density (check the certificate); remove the duplicate.",
        )
    if len(set(densities)) < 2:
        raise InputError(f"Phantom {pid} has fewer than two distinct densities.", "A calibration needs at least two.")
    has_water = [r.water_density is not None for r in rods]
    if any(has_water) and not all(has_water):
        raise InputError(f"Phantom {pid} gives water densities for some rods only.",
                         "Give a water density for every rod (Mindways) or for none.")
    method = str(data.get("method") or (METHOD_MINDWAYS if all(has_water) else METHOD_LINEAR))
    if method not in METHODS:
        raise InputError(f"Phantom {pid} has an unknown method {method!r}.", f"Use one of {', '.join(METHODS)}.")
    if method == METHOD_MINDWAYS and not all(has_water):
        raise InputError(f"Phantom {pid} uses the Mindways two-component method but has no water densities.",
                         "Give each rod's water density from the certificate, or use method 'linear'.")
    if method == METHOD_MINDWAYS and unit != "K2HPO4":
        raise InputError(f"Phantom {pid}: the Mindways two-component method is defined for K2HPO4 rods.",
                         "Use unit K2HPO4, or method 'linear'.")
    layout = str(data.get("layout") or "rods")
    if layout not in ("rods", "vertebrae"):
        raise InputError(f"Phantom {pid} has an unknown layout {layout!r}.", "Use 'rods' or 'vertebrae'.")
    radius = data.get("rod_radius_mm")
    if radius is not None:
        radius = _finite(radius, f"The rod radius of phantom {pid}")
        if radius <= 0:
            raise InputError(f"The rod radius of phantom {pid} must be positive.", "Give it in mm, or leave it out.")
    return PhantomDefinition(
        id=pid, name=str(data.get("name") or pid), unit=unit, rods=rods, method=method, layout=layout,
        rod_radius_mm=radius, notes=str(data.get("notes") or ""), source=str(data.get("source") or "library"),
    )


def phantom_from_certificate(phantom_id: str, rods: Sequence[Sequence[Any]], unit: str, name: str = "",
                             rod_radius_mm: Optional[float] = None, notes: str = "") -> PhantomDefinition:
    """A user phantom from a certificate: ``rods`` = [(name, density[, water_density]), ...]."""
    items = []
    for r in rods:
        r = list(r)
        if len(r) not in (2, 3):
            raise InputError(f"Certificate entry {r!r} is not (name, density[, water density]).",
                             "Give each rod as name and density (and water density for Mindways).")
        item: Dict[str, Any] = {"name": r[0], "density": r[1]}
        if len(r) == 3 and r[2] is not None:
            item["water_density"] = r[2]
        items.append(item)
    return validate_phantom({"id": phantom_id, "name": name or phantom_id, "unit": unit, "rods": items,
                             "rod_radius_mm": rod_radius_mm, "notes": notes, "source": "user"})


def default_user_dir() -> str:
    return os.environ.get("OSTEOROI_USER_PHANTOMS") or os.path.join(os.path.expanduser("~"), ".osteoroi", "phantoms")


def load_builtin() -> Dict[str, PhantomDefinition]:
    """The built-in library (Resources/Phantoms/phantoms.json), by id, in file order."""
    path = resource_path("Phantoms", "phantoms.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out: Dict[str, PhantomDefinition] = {}
    for item in doc.get("phantoms", []):
        p = validate_phantom(dict(item, source="library"))
        out[p.id] = p
    return out


def load_user_phantoms(folder: Optional[str] = None) -> Dict[str, PhantomDefinition]:
    """User phantoms saved as ``<id>.json`` in ``folder`` (missing folder: none)."""
    folder = folder or default_user_dir()
    out: Dict[str, PhantomDefinition] = {}
    if not os.path.isdir(folder):
        return out
    for fname in sorted(os.listdir(folder)):
        if not fname.endswith(".json"):
            continue
        path = os.path.join(folder, fname)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"The user phantom file {path} cannot be read ({exc}).",
                             "Fix or delete the file.") from None
        p = validate_phantom(dict(data, source="user"))
        out[p.id] = p
    return out


def load_library(user_dir: Optional[str] = None, include_user: bool = True) -> Dict[str, PhantomDefinition]:
    """Built-in phantoms, then user phantoms (a user phantom may not reuse a built-in id)."""
    lib = load_builtin()
    if include_user:
        for pid, p in load_user_phantoms(user_dir).items():
            if pid in lib:
                raise InputError(f"The user phantom {pid} has the id of a built-in phantom.",
                                 "Rename it (e.g. add its serial number to the id).")
            lib[pid] = p
    return lib


def get_phantom(phantom_id: str, user_dir: Optional[str] = None) -> PhantomDefinition:
    lib = load_library(user_dir)
    key = str(phantom_id).strip()
    if key in lib:
        return lib[key]
    raise InputError(f"Unknown phantom {phantom_id!r}.",
                     f"Choose one of: {', '.join(lib)} (list them with `osteoroi phantoms`).")


def save_user_phantom(phantom: PhantomDefinition, folder: Optional[str] = None, overwrite: bool = False) -> str:
    """Validate and save a user phantom as ``<folder>/<id>.json`` (atomic); returns the path."""
    p = validate_phantom(phantom)
    if p.id in load_builtin():
        raise InputError(f"{p.id} is the id of a built-in phantom.", "Choose another id (e.g. add the serial number).")
    folder = folder or default_user_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{p.id}.json")
    check_output_paths([path], overwrite=overwrite)
    doc = dict(p.to_dict(), schema="osteoroi-phantom/1")
    write_atomically({path: json.dumps(doc, indent=2) + "\n"}, overwrite=overwrite)
    return path
