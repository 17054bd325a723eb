"""Semantic checks of a criterion beyond its format: what its bands mean and whom they could mislead.

* Bands run from the worst category to the best as the value rises (more bone, higher HU or vBMD):
  osteoporosis, then possible osteoporosis, then low bone mass / indeterminate, then normal. A file
  with the bands reversed (vBMD 0 → "normal") is refused.
* A vBMD criterion names the material its cut-offs were set in (``reference_material``: K2HPO4 or
  HA, QCT_BRIEF §4); HU criteria have none.
* A custom criterion's cut-offs must not be a built-in criterion's cut-offs of the other quantity
  (the seed-002 HU cut-offs relabelled as vBMD are refused).
* A custom criterion may not reuse a built-in id (or alias) unless its content is the same.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Mapping, Optional, Set

from ..errors import InputError

#: Rank of each band class from worst (0) to best; bands must not go down in rank as values rise.
CLASS_RANK = {"osteoporosis": 0, "possible_osteoporosis": 1, "low_bone_mass": 2, "indeterminate": 2, "normal": 3}
MATERIALS = ("K2HPO4", "HA")
#: The fields whose equality makes a custom criterion "the same content" as a built-in one.
CONTENT_KEYS = ("quantity", "unit", "level_rule", "shapes", "shape_mode", "bands_by_shape", "severe",
                "reference_material", "value_decimals")


def _bad(where: str, what: str, remedy: str) -> InputError:
    return InputError(f"Criteria {where}: {what}.", remedy)


def check_band_order(bands: List[Mapping[str, object]], where: str) -> None:
    """Bands in increasing value must go from worse to better categories, and end better than they start."""
    ranks = [CLASS_RANK[str(b["class"])] for b in bands]
    for a, b, ra, rb in zip(bands, bands[1:], ranks, ranks[1:]):
        if rb < ra:
            raise _bad(where, f"band '{b['label']}' ({b['class']}) lies above band '{a['label']}' ({a['class']}): bands "
                              "must run from the worst category (lowest values) to the best",
                       "List the bands from osteoporosis (lowest values) to normal (highest), with their classes.")
    if ranks[-1] <= ranks[0]:
        raise _bad(where, "the highest band is not better than the lowest",
                   "The lowest band must be osteoporosis-like and the highest normal-like (class).")


def check_material(doc: Mapping[str, object], where: str) -> Optional[str]:
    """The reference material of a vBMD criterion (required); None for an HU criterion."""
    material = doc.get("reference_material")
    if doc.get("quantity") == "vbmd":
        if material not in MATERIALS:
            raise _bad(where, f"a vBMD criterion must state \"reference_material\" (K2HPO4 or HA), got {material!r}",
                       "Add the material the cut-offs were set in; K2HPO4 and HA vBMD differ (Goodsitt 1992).")
        return str(material)
    if material is not None:
        raise _bad(where, "an HU criterion has no reference material", "Remove \"reference_material\" or use vBMD.")
    return None


def _cutoffs(crit: Mapping[str, object]) -> Set[float]:
    return {float(b["upper"]) for bands in crit["bands_by_shape"].values() for b in bands if b["upper"] is not None}


def check_against_builtins(crit: Mapping[str, object], builtins: Iterable[Mapping[str, object]],
                           aliases: Mapping[str, str], where: str) -> None:
    """A custom criterion: no built-in id reused with other content, no other quantity's cut-offs relabelled."""
    cid = str(crit["id"])
    for b in builtins:
        if cid == b["id"] or aliases.get(cid) == b["id"]:
            if any(crit.get(k) != b.get(k) for k in CONTENT_KEYS):
                raise _bad(where, f"the id {cid!r} is a built-in criterion's, with different content",
                           "Give the custom criterion its own id (e.g. 'mysite-qct'), or use the built-in one.")
        if crit["quantity"] != b["quantity"] and len(_cutoffs(crit)) >= 2 and _cutoffs(crit) <= _cutoffs(b):
            raise _bad(where, f"its cut-offs are those of the built-in {b['quantity'].upper()} criterion {b['id']!r}, "
                              f"relabelled as {crit['quantity'].upper()}",
                       f"Use {b['id']!r} for {b['quantity'].upper()} values; cut-offs do not carry over between HU "
                       "and vBMD.")


def builtin_checker(load_builtins: Callable[[], List[Mapping[str, object]]], aliases: Mapping[str, str]):
    """A checker bound to the built-in criteria (loaded once, on first use)."""
    cache: List[Mapping[str, object]] = []

    def check(crit: Mapping[str, object], where: str) -> None:
        if not cache:
            cache.extend(load_builtins())
        check_against_builtins(crit, cache, aliases, where)
    return check
