"""Diagnostic criteria as data: the built-in files in ``Resources/Criteria/`` and custom ones.

A criterion file (``"format": "osteoroi-criteria/1"``) states

* ``quantity`` — ``"vbmd"`` (a row's ``vbmd_mg_cm3``, needs a calibration) or ``"hu"`` (``mean_hu``);
* ``level_rule`` — which vertebrae make the summary value:
  ``{"method": "first_valid", "levels": [...], "count": n}`` (mean of the first *n* valid levels in
  that order; an excluded level is replaced by the next one; fewer than *n* → insufficient) or
  ``{"method": "mean_of_valid", "levels": [...], "min_count": m}`` (mean of every valid level);
* ``shapes`` and ``shape_mode`` — the ROI types it applies to: ``"each"`` gives one verdict per ROI
  type (seed-002 cut-offs differ per ROI), ``"first_available"`` uses the first listed type present;
* ``bands`` (or ``bands_by_shape``) — categories that partition the number line, each with
  ``lower``/``upper`` (null = unbounded) and whether each end is inclusive. Validation refuses gaps,
  overlaps and a boundary value that belongs to two bands or to none;
* optional ``severe`` — the category a fragility fracture turns a band into (QCT: < 80 with a fracture);
* ``source.citation`` — where the numbers come from (required);
* ``reference_material`` — for vBMD, the material of the cut-offs (K2HPO4 or HA; :mod:`material`);
* ``applies_to`` — whom the categories apply to (:mod:`applicability`; defaults: post-menopausal
  women and men ≥ 50, never children);
* a band's optional ``basis`` — ``"source"`` (a category of the source) or ``"tool"`` (this tool's
  construction between the source's thresholds, said in the verdict);
* ``level_rule.derived_on_count`` — the number of levels the cut-offs were derived on (fewer → indicative).

Beyond the format, :mod:`criteria_semantics` refuses bands not ordered from worst to best, a vBMD
criterion without its material, a custom file reusing a built-in id with other content, and a
built-in's cut-offs relabelled as the other quantity. The file format is also described by
``Resources/Schemas/osteoroi-criteria-1.schema.json`` (checked when jsonschema is installed).

``value_decimals``: the summary value is rounded to this many decimals (the precision the
cut-offs are published with) before it is compared, so the category always agrees with the
value printed in the table.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import InputError
from ..io.jsonfile import read_json
from ..resources import resource_path, resources_dir
from .applicability import check_applies_to
from .criteria_semantics import builtin_checker, check_band_order, check_material

FORMAT_ID = "osteoroi-criteria/1"
SCHEMA_FILE = ("Schemas", "osteoroi-criteria-1.schema.json")
QUANTITIES = {"vbmd": "vbmd_mg_cm3", "hu": "mean_hu"}
BAND_CLASSES = ("osteoporosis", "possible_osteoporosis", "low_bone_mass", "indeterminate", "normal")
LEVEL_METHODS = ("first_valid", "mean_of_valid")
SHAPE_MODES = ("each", "first_available")
KNOWN_SHAPES = ("oval", "round", "front", "left", "right")
KNOWN_LEVELS = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")

#: Built-in criteria, by id, in the order they are shown (file names in Resources/Criteria/).
BUILTIN_FILES = {
    "qct-acr2018": "qct-acr2018.json",
    "seed002-hu": "seed002-wang-hu.json",
    "pickhardt2013-l1": "pickhardt2013-l1.json",
}
#: Short names accepted on the command line.
ALIASES = {"qct": "qct-acr2018", "acr": "qct-acr2018", "iscd": "qct-acr2018", "seed002": "seed002-hu",
           "wang": "seed002-hu", "pickhardt": "pickhardt2013-l1"}


def _bad(where: str, what: str) -> InputError:
    return InputError(f"Criteria {where}: {what}.",
                      "Fix the file; Resources/Criteria/qct-acr2018.json is a complete example of the format.")


def _number(value, where: str, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, f"{name} must be a number or null, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(where, f"{name} must be finite")
    return value


def validate_bands(bands, where: str) -> List[Dict[str, object]]:
    """Check that bands partition the number line; return them normalised (floats, sorted as given)."""
    if not isinstance(bands, list) or len(bands) < 2:
        raise _bad(where, "needs a list of at least two bands")
    out = []
    for i, b in enumerate(bands):
        w = f"{where} band {i + 1}"
        if not isinstance(b, dict):
            raise _bad(w, "must be an object")
        label = b.get("label")
        if not isinstance(label, str) or not label.strip():
            raise _bad(w, "needs a label")
        cls = b.get("class")
        if cls not in BAND_CLASSES:
            raise _bad(w, f"class must be one of {', '.join(BAND_CLASSES)}, got {cls!r}")
        lower = _number(b.get("lower"), w, "lower")
        upper = _number(b.get("upper"), w, "upper")
        lo_inc = b.get("lower_inclusive", False)
        up_inc = b.get("upper_inclusive", False)
        if not isinstance(lo_inc, bool) or not isinstance(up_inc, bool):
            raise _bad(w, "lower_inclusive/upper_inclusive must be true or false")
        if lower is not None and upper is not None and not lower < upper:
            raise _bad(w, f"lower {lower:g} must be below upper {upper:g}")
        basis = b.get("basis", "source")
        if basis not in ("source", "tool"):
            raise _bad(w, f'"basis" must be "source" or "tool", got {basis!r}')
        out.append({"label": label, "class": cls, "lower": lower, "lower_inclusive": lo_inc if lower is not None else False,
                    "upper": upper, "upper_inclusive": up_inc if upper is not None else False, "basis": basis})
    if out[0]["lower"] is not None:
        raise _bad(where, "the first band must have lower null (unbounded below)")
    if out[-1]["upper"] is not None:
        raise _bad(where, "the last band must have upper null (unbounded above)")
    for a, b in zip(out, out[1:]):
        if a["upper"] is None or b["lower"] is None or a["upper"] != b["lower"]:
            raise _bad(where, f"bands '{a['label']}' and '{b['label']}' do not meet (upper {a['upper']} vs lower "
                              f"{b['lower']}); bands must be in increasing order without gaps or overlaps")
        if a["upper_inclusive"] == b["lower_inclusive"]:
            raise _bad(where, f"the boundary {a['upper']:g} between '{a['label']}' and '{b['label']}' must belong to "
                              "exactly one of them (set exactly one of upper_inclusive / lower_inclusive)")
    check_band_order(out, where)
    return out


def _check_header(doc, where: str) -> Tuple[str, str]:
    """id, title, quantity, unit, source and decimals; returns (where with the id, title)."""
    if not isinstance(doc, dict):
        raise _bad(where, "the file must hold a JSON object")
    if doc.get("format") != FORMAT_ID:
        raise _bad(where, f'"format" must be "{FORMAT_ID}", got {doc.get("format")!r}')
    cid = doc.get("id")
    if not isinstance(cid, str) or not cid.strip():
        raise _bad(where, 'needs an "id"')
    where = f"{where} ({cid})"
    title = doc.get("title")
    if not isinstance(title, str) or not title.strip():
        raise _bad(where, 'needs a "title"')
    quantity = doc.get("quantity")
    if quantity not in QUANTITIES:
        raise _bad(where, f'"quantity" must be one of {", ".join(QUANTITIES)}, got {quantity!r}')
    unit = doc.get("unit")
    if not isinstance(unit, str) or not unit:
        raise _bad(where, 'needs a "unit"')
    if quantity == "vbmd" and not unit.lower().startswith("mg/cm"):
        raise _bad(where, f"a vBMD criterion's unit must be mg/cm3, got {unit!r}")
    source = doc.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("citation"), str) or not source["citation"].strip():
        raise _bad(where, 'needs "source": {"citation": "..."} naming where the numbers come from')
    return where, title


def _check_level_rule(rule, where: str) -> Dict[str, object]:
    """The level rule: method, distinct known levels, and its count (first_valid) or min_count."""
    if not isinstance(rule, dict) or rule.get("method") not in LEVEL_METHODS:
        raise _bad(where, f'"level_rule.method" must be one of {", ".join(LEVEL_METHODS)}')
    levels = rule.get("levels")
    if not isinstance(levels, list) or not levels or any(lv not in KNOWN_LEVELS for lv in levels) \
            or len(set(levels)) != len(levels):
        raise _bad(where, f'"level_rule.levels" must list distinct levels among {", ".join(KNOWN_LEVELS)}')
    rule = dict(rule)
    if rule["method"] == "first_valid":
        count = rule.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(levels):
            raise _bad(where, '"level_rule.count" must be an integer between 1 and the number of levels')
    else:
        mc = rule.get("min_count", 1)
        if isinstance(mc, bool) or not isinstance(mc, int) or not 1 <= mc <= len(levels):
            raise _bad(where, '"level_rule.min_count" must be an integer between 1 and the number of levels')
        rule["min_count"] = mc
    full = rule.get("derived_on_count")
    if full is not None and (isinstance(full, bool) or not isinstance(full, int) or not 1 <= full <= len(levels)):
        raise _bad(where, '"level_rule.derived_on_count" must be an integer between 1 and the number of levels')
    return rule


def _check_bands_by_shape(doc, shapes: List[str], where: str) -> Dict[str, List[Dict[str, object]]]:
    """Exactly one of ``bands`` (every ROI type) or ``bands_by_shape`` (each listed ROI type)."""
    by_shape = doc.get("bands_by_shape")
    bands = doc.get("bands")
    if (by_shape is None) == (bands is None):
        raise _bad(where, 'give exactly one of "bands" (all ROI types) or "bands_by_shape"')
    if by_shape is None:
        common = validate_bands(bands, where)
        return {s: common for s in shapes}
    if not isinstance(by_shape, dict):
        raise _bad(where, '"bands_by_shape" must map ROI types to band lists')
    for s in shapes:
        if s not in by_shape:
            raise _bad(where, f'"bands_by_shape" has no bands for ROI type {s!r}')
    norm_by_shape: Dict[str, List[Dict[str, object]]] = {}
    for s in by_shape:
        if s not in shapes:
            raise _bad(where, f'"bands_by_shape" has bands for {s!r}, which is not in "shapes"')
        norm_by_shape[s] = validate_bands(by_shape[s], f"{where} {s}")
    return norm_by_shape


def _check_severe(severe, where: str) -> Optional[Dict[str, object]]:
    """The severe category: a label given to a band class with a fracture of at least a Genant grade."""
    if severe is None:
        return None
    if not isinstance(severe, dict) or not isinstance(severe.get("label"), str):
        raise _bad(where, '"severe" needs a "label"')
    if severe.get("when_class", "osteoporosis") not in BAND_CLASSES:
        raise _bad(where, '"severe.when_class" must be a band class')
    g = severe.get("min_fracture_grade", 1)
    if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= 3:
        raise _bad(where, '"severe.min_fracture_grade" must be 1, 2 or 3 (Genant)')
    return {"label": severe["label"], "when_class": severe.get("when_class", "osteoporosis"),
            "min_fracture_grade": g, "description": severe.get("description", "")}


def validate_criterion(doc, where: str = "file") -> Dict[str, object]:
    """Validate a criterion document; return a normalised copy (``bands_by_shape`` always filled)."""
    where, title = _check_header(doc, where)
    decimals = doc.get("value_decimals", 2)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
        raise _bad(where, '"value_decimals" must be an integer 0-6')
    rule = _check_level_rule(doc.get("level_rule"), where)
    shapes = doc.get("shapes")
    if not isinstance(shapes, list) or not shapes or any(s not in KNOWN_SHAPES for s in shapes) \
            or len(set(shapes)) != len(shapes):
        raise _bad(where, f'"shapes" must list distinct ROI types among {", ".join(KNOWN_SHAPES)}')
    mode = doc.get("shape_mode", "first_available")
    if mode not in SHAPE_MODES:
        raise _bad(where, f'"shape_mode" must be one of {", ".join(SHAPE_MODES)}')
    norm_by_shape = _check_bands_by_shape(doc, shapes, where)
    severe = _check_severe(doc.get("severe"), where)
    material = check_material(doc, where)
    out = dict(doc)
    out.update({"level_rule": rule, "shape_mode": mode, "bands_by_shape": norm_by_shape, "severe": severe,
                "value_decimals": decimals, "short_title": doc.get("short_title") or title,
                "reference_material": material, "applies_to": check_applies_to(doc.get("applies_to"), where)})
    out.pop("bands", None)
    return out


def builtin_ids() -> List[str]:
    return list(BUILTIN_FILES)


def criteria_dir() -> str:
    return os.path.join(resources_dir(), "Criteria")


def _validate_schema(doc, where: str) -> None:
    try:
        import jsonschema
    except ImportError:  # optional: the checks of validate_criterion still apply
        return
    schema = read_json(resource_path(*SCHEMA_FILE), "criteria schema", "Restore Resources/Schemas.")
    try:
        jsonschema.validate(instance=doc, schema=schema)
    except jsonschema.ValidationError as exc:
        loc = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise _bad(where, f"does not match the criteria schema at {loc}: {exc.message}") from None


def _builtin_docs() -> List[Dict[str, object]]:
    return [load_builtin(cid) for cid in BUILTIN_FILES]


_CHECK_BUILTINS = builtin_checker(_builtin_docs, ALIASES)


def load_criterion_file(path: str, *, builtin: bool = False) -> Dict[str, object]:
    doc = read_json(path, "criteria file",
                    f"Give a built-in name ({', '.join(BUILTIN_FILES)}) or the path of a valid criteria JSON file.")
    _validate_schema(doc, os.path.basename(path))
    crit = validate_criterion(doc, where=os.path.basename(path))
    if not builtin:
        _CHECK_BUILTINS(crit, os.path.basename(path))
    crit["_file"] = os.path.abspath(path)
    return crit


def load_builtin(name: str) -> Dict[str, object]:
    cid = ALIASES.get(name, name)
    if cid not in BUILTIN_FILES:
        raise InputError(f"There is no built-in criterion {name!r}.",
                         f"Use one of {', '.join(BUILTIN_FILES)} (or {', '.join(ALIASES)}), or give a JSON file.")
    crit = load_criterion_file(resource_path("Criteria", BUILTIN_FILES[cid]), builtin=True)
    crit["_builtin"] = True
    return crit


def load_criterion(spec: Union[str, Mapping[str, object]]) -> Dict[str, object]:
    """A criterion from a built-in name/alias, a JSON file path, or an already-loaded dict."""
    if isinstance(spec, Mapping):
        if "bands_by_shape" in spec and "bands" not in spec and spec.get("_validated"):
            return dict(spec)
        crit = validate_criterion(dict(spec), where="given criterion")
        _CHECK_BUILTINS(crit, "given criterion")
    elif isinstance(spec, str):
        key = spec.strip()
        if key in BUILTIN_FILES or key in ALIASES:
            crit = load_builtin(key)
        elif os.path.exists(key) or key.lower().endswith(".json"):
            crit = load_criterion_file(key)
        else:
            raise InputError(f"{spec!r} is neither a built-in criterion nor an existing file.",
                             f"Use one of {', '.join(BUILTIN_FILES)} or the path of a criteria JSON file.")
    else:
        raise InputError(f"Cannot use {spec!r} as a criterion.", "Give a name, a file path or a criterion dict.")
    crit["_validated"] = True
    return crit


def load_criteria(specs: Optional[Sequence[Union[str, Mapping[str, object]]]]) -> List[Dict[str, object]]:
    """Several criteria; duplicate ids are refused (the table names each criterion by its id)."""
    out = [load_criterion(s) for s in specs or []]
    seen = set()
    for c in out:
        if c["id"] in seen:
            raise InputError(f"The criterion {c['id']!r} was given twice.", "Give each criterion once.")
        seen.add(c["id"])
    return out


def classify(value: float, bands: Sequence[Mapping[str, object]]) -> Dict[str, object]:
    """The band that holds ``value`` (bands validated by :func:`validate_bands`)."""
    for b in bands:
        lo, hi = b["lower"], b["upper"]
        if lo is not None and (value < lo or (value == lo and not b["lower_inclusive"])):
            continue
        if hi is not None and (value > hi or (value == hi and not b["upper_inclusive"])):
            continue
        return dict(b)
    raise AssertionError(f"bands do not cover {value!r}")  # impossible for validated bands


def band_text(band: Mapping[str, object], unit: str) -> str:
    """``80 ≤ x ≤ 120 mg/cm3`` style description of a band."""
    lo, hi = band["lower"], band["upper"]
    if lo is None:
        return f"x {'≤' if band['upper_inclusive'] else '<'} {hi:g} {unit}"
    if hi is None:
        return f"x {'≥' if band['lower_inclusive'] else '>'} {lo:g} {unit}"
    return f"{lo:g} {'≤' if band['lower_inclusive'] else '<'} x {'≤' if band['upper_inclusive'] else '<'} {hi:g} {unit}"
