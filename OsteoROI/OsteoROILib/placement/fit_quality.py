"""Fit quality as expected error: the signs of trouble a fitted outline shows, the errors (mm) they
predict, the 0–1 score those errors map to, and the reasons in plain words.

Each sign of trouble — a faint cortical edge, a shell missing on part of the rim, a lopsided
outline, no clear front-to-back direction, an unusual size, the body running off the image, bone
growing out of the rim, endplates not found — becomes a *deficit* between 0 (no sign) and 1,
continuous in what it is measured from. Two errors are predicted from them:

* the **reach** (mm): how far the trabecular outline is expected to reach beyond the true
  trabecular edge (the 90th percentile of the signed radial error along the outline; into the
  cortex when positive) — a base plus a non-negative weight per in-plane deficit
  (``REACH_BASE_MM``, ``REACH_WEIGHTS_MM``), fitted by non-negative least squares on cases whose
  truth is known (``benchmarks/bench_fit_quality.py``);
* the **height error** (mm): how far the chosen plane is expected to lie from the body's
  mid-height, from the endplate search (``HEIGHT_ERROR_MM``).

The score is the lower of two fixed decreasing maps: reach 0 → 1, ``CORTEX_ONSET_MM`` → 0.5
(``LOW_QUALITY``: the reach at which the ROIs start to take in cortex, measured by growing the
true outlines, ``fit_quality_corpus.cortex_onset``), twice that → 0; height error 0 → 1,
``HEIGHT_RISK_MM`` → 0.5 (the plane leaves the central QCT slab), twice that → 0. Every weight is
non-negative and both maps decrease: more evidence of trouble never raises the score.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .slab import QCT_SLAB_MM

#: Calibration (``benchmarks/bench_fit_quality.py``, 2026-12-06: 497 placed levels of the synthetic
#: known-truth corpus — the placement corpus's family and the degradation ladders of
#: ``fit_quality_corpus``, three clicks per ladder level; reach = 90th percentile of the signed radial
#: distance from the true trabecular outline, mm). Non-negative least squares: the base (a clean
#: outline lies 0.3 mm inside the true one) and the mm each full deficit adds; rms residual 0.13 mm.
#: The straight line under-predicts the faintest cortex (a 280 HU cortex: 0.93 mm true, 0.7 expected).
#: Lopsided outlines (osteophytes) and the image's edge did not make the outline reach further on
#: known truth (weight 0: they are said in words, the score does not fall). ``no_direction`` and
#: ``unusual_size`` never occurred in the corpus: their weights are priors. A shell missing on more
#: than a quarter of the front and sides (``missing_shell``) never occurred either: there the outline
#: follows whatever edge it met, so its prior is a cortex's thickness and the partial volume beyond
#: it (1.5 mm) — enough to refuse a ring that is not a body (the spinal canal at a disc level).
REACH_BASE_MM = -0.3
REACH_WEIGHTS_MM: Dict[str, float] = {
    "faint_edge": 1.02,
    "faint_shell": 0.06,
    "missing_shell": 1.5,  # prior: never on known truth (such rings are refused); see above
    "lopsided": 0.0,
    "no_direction": 0.5,  # prior
    "unusual_size": 0.5,  # prior
    "off_image": 0.0,
    "spur": 0.09,
}
#: Expected distance (mm) of the plane from mid-height against the endplate deficit: both endplates
#: found (0: 0.06 mm on the corpus), one found and the other placed a typical height away (0.4: 0.0 mm
#: on the corpus, whose bodies have the typical height; 2 mm allows a body 4 mm taller or shorter),
#: none found and the click's slice used (0.6: a click anywhere in the middle 60 % of a 25 mm body
#: lies 3.75 mm from mid-height on average), nothing known (1: half that band's height).
HEIGHT_ERROR_MM = ((0.0, 0.4, 0.6, 1.0), (0.1, 2.0, 3.75, 7.5))
#: Reach (mm) at which the ROIs start to take in cortex: the true outlines grown step by step on the
#: noise-free phantom at 0.6, 2.5 and 5 mm slices, cortex first inside an ROI at 0.75–1.0 mm (the
#: ROIs keep half a voxel diagonal off the outline); the smallest.
CORTEX_ONSET_MM = 0.75
#: Plane distance from mid-height (mm) at which the plane leaves the central QCT slab
#: (``slab.QCT_SLAB_MM`` centred at mid-height).
HEIGHT_RISK_MM = 0.5 * QCT_SLAB_MM
#: A deficit from this on is said in words.
REASON_DEFICIT = 0.2
#: Share of a side's rim with a clear shell below which that side's shell is called faint.
FAINT_SIDE_SHARE = 0.6
SIDE_NAMES = ("front", "left", "back", "right")
#: Median HU drop across the body's edge: clear at this and above, faint at EDGE_DROP_FAINT_HU and
#: below (the phantom's 800 HU cortex reads ≈ 300, a 280 HU cortex ≈ 110; real CTs 100–170).
EDGE_DROP_CLEAR_HU = 300.0
EDGE_DROP_FAINT_HU = 100.0


def _falling(x: float, one_at: float, half_at: float) -> float:
    """1 at or below ``one_at``, 0.5 at ``half_at``, 0 at ``2·half_at − one_at``; linear."""
    return float(np.clip(1.0 - 0.5 * (float(x) - one_at) / (half_at - one_at), 0.0, 1.0))


def quality_of_reach(reach_mm: float) -> float:
    """The score of an expected reach into the cortex (mm): 1 at 0, 0.5 at ``CORTEX_ONSET_MM``."""
    return _falling(reach_mm, 0.0, CORTEX_ONSET_MM)


def reach_of_quality(quality: float) -> float:
    """The expected reach (mm) a score stands for when the outline decides it (inverse of
    ``quality_of_reach`` between 0 and 1)."""
    return 2.0 * CORTEX_ONSET_MM * (1.0 - float(np.clip(quality, 0.0, 1.0)))


def quality_of_height(error_mm: float) -> float:
    """The score of an expected plane distance from mid-height (mm): 1 at the clean error, 0.5 at
    ``HEIGHT_RISK_MM``."""
    return _falling(error_mm, HEIGHT_ERROR_MM[1][0], HEIGHT_RISK_MM)


def expected_reach_mm(deficits: Dict[str, float]) -> float:
    """The expected reach of the outline into the cortex (mm) given the deficits (missing ones 0)."""
    return REACH_BASE_MM + sum(w * float(np.clip(deficits.get(k, 0.0), 0.0, 1.0))
                               for k, w in REACH_WEIGHTS_MM.items())


def expected_height_error_mm(deficits: Dict[str, float]) -> float:
    """The expected distance (mm) of the plane from mid-height given the endplate deficit."""
    return float(np.interp(np.clip(deficits.get("endplates", 0.0), 0.0, 1.0), *HEIGHT_ERROR_MM))


def quality_of(deficits: Dict[str, float]) -> float:
    """The fit quality: the lower of the reach's and the height error's scores."""
    return min(quality_of_reach(expected_reach_mm(deficits)), quality_of_height(expected_height_error_mm(deficits)))


#: The deficits that say whether a ring is a vertebral body at all — a shell around it, a body's
#: size and shape, its endplates — as against how exactly its edge can be drawn: a faint cortex (an
#: osteoporotic body, a noisy or thick-slice scan) lowers the fit quality (the ROIs are shrunk
#: continuously) but is still a body. A click is refused, or its placement retried, on this evidence
#: (``body_evidence``), never on the faint edge alone.
BODY_DEFICITS = ("faint_shell", "missing_shell", "lopsided", "no_direction", "unusual_size", "off_image", "spur",
                 "endplates")


def body_evidence(deficits: Dict[str, float]) -> float:
    """The evidence (0–1, on the fit quality's scale) that the fitted ring is a vertebral body: the fit
    quality with only ``BODY_DEFICITS`` counted."""
    return quality_of({k: v for k, v in deficits.items() if k in BODY_DEFICITS})


def outline_deficits(shell_fraction: float, edge_drop_hu: float, asymmetry: float, axis_from_image: bool,
                     plates_q: float, depth_mm: float, width_mm: float, off_image_share: float,
                     spur_share: float) -> Dict[str, float]:
    """Each sign of trouble as a deficit in [0, 1], continuous in the measure it comes from.

    ``shell_fraction`` — share of the front and sides with a clear cortical shell (faint from 0.9
    down to 0.75, missing from 0.75 down to 0.5); ``edge_drop_hu`` — median HU drop across the edge
    (``EDGE_DROP_*``); ``asymmetry`` — mean left-right mismatch about the AP axis over the depth (a
    normal body 0.04, a lopsided one 0.2); ``axis_from_image`` — the outline gave no front-to-back
    direction; ``plates_q`` — the endplate search's confidence (1 found both); ``off_image_share``
    — share of the rim beyond the image (a quarter counts fully); ``spur_share`` — share of the rim
    with bone beyond the cortex (a sixth counts fully)."""
    return {
        "faint_edge": float(np.clip((EDGE_DROP_CLEAR_HU - edge_drop_hu) / (EDGE_DROP_CLEAR_HU - EDGE_DROP_FAINT_HU),
                                    0.0, 1.0)),
        "faint_shell": float(np.clip((0.9 - shell_fraction) / 0.15, 0.0, 1.0)),
        "missing_shell": float(np.clip((0.75 - shell_fraction) / 0.25, 0.0, 1.0)),
        "lopsided": float(np.clip((asymmetry - 0.04) / 0.16, 0.0, 1.0)),
        "no_direction": 1.0 if axis_from_image else 0.0,
        "endplates": float(np.clip(1.0 - plates_q, 0.0, 1.0)),
        "unusual_size": size_deficit(depth_mm, width_mm),
        "off_image": float(np.clip(off_image_share / 0.25, 0.0, 1.0)),
        "spur": float(np.clip(spur_share * 6.0, 0.0, 1.0)),
    }


def size_deficit(depth_mm: float, width_mm: float) -> float:
    """0 inside adult lumbar sizes (AP 15–55 mm, width 20–75 mm, width/AP 0.9–2.5), rising to 1
    over 5 mm (0.3 in the ratio) beyond them."""
    ratio = width_mm / max(depth_mm, 1e-6)
    over = max(15.0 - depth_mm, depth_mm - 55.0, 20.0 - width_mm, width_mm - 75.0, 0.0) / 5.0
    over_ratio = max(0.9 - ratio, ratio - 2.5, 0.0) / 0.3
    return float(np.clip(max(over, over_ratio), 0.0, 1.0))


class FitReasons(list):
    """The reasons (plain words) a fit is doubtful: a list of str that also carries what it was
    drawn from — ``deficits``, ``measures`` (the raw evidence), ``expected_reach_mm`` and
    ``expected_height_error_mm``."""

    deficits: Dict[str, float]
    measures: Dict[str, float]
    expected_reach_mm: float
    expected_height_error_mm: float


def plain_reasons(deficits: Dict[str, float], side_shares: List[float], depth_mm: float, width_mm: float,
                  plates_reason: Optional[str]) -> List[str]:
    """What a radiologist should check, in plain words, one short phrase per sign of trouble."""
    out: List[str] = []
    faint_sides = [name for name, share in zip(SIDE_NAMES, side_shares) if share < FAINT_SIDE_SHARE]
    if max(deficits["faint_shell"], deficits["missing_shell"]) >= REASON_DEFICIT or \
            (deficits["faint_edge"] >= 0.5 and faint_sides):
        where = "on the " + " and ".join(faint_sides) + (" side" if len(faint_sides) == 1 else " sides") if faint_sides \
            else "in several places"
        out.append(f"the bone's outer shell is faint {where}")
    elif deficits["faint_edge"] >= 0.5:
        out.append("the bone's outer shell is faint (thin or osteoporotic cortex?)")
    if deficits["lopsided"] >= REASON_DEFICIT:
        out.append("the outline is lopsided — an osteophyte, a fracture or a structure against the body?")
    if deficits["no_direction"] >= REASON_DEFICIT:
        out.append("the body's shape shows no clear front-to-back direction; the image's was used")
    if plates_reason:
        out.append(plates_reason)
    if deficits["spur"] > 0.0:
        out.append("bone growing out of the rim (an osteophyte?) was left out of the outline")
    if deficits["unusual_size"] > 0.0:
        out.append(f"unusual body size ({depth_mm:.0f} mm front to back, {width_mm:.0f} mm across)")
    if deficits["off_image"] >= 0.4:
        out.append("the body reaches the edge of the image")
    return out


def expected_error_phrase(reach_mm: float, height_mm: float) -> str:
    """The expected errors in words, added after the reasons."""
    parts = []
    if reach_mm >= 0.25:
        parts.append(f"the outline may reach about {reach_mm:.1f} mm into the cortex")
    if height_mm >= 1.0:
        parts.append(f"the slice may lie about {height_mm:.0f} mm from mid-height")
    return "; ".join(parts) or "the outline is not expected to reach into the cortex"
