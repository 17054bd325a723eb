"""Fit quality against true error: does the score mean what it says?

    .venv/bin/python benchmarks/bench_fit_quality.py [--quick]

writes ``benchmarks/results/fit_quality.json`` and prints the table. Per placed level of the
known-truth corpus (``fit_quality_corpus``: the synthetic family and its degradation ladders; the
real CTs against their labels as a second reference) the quality, its deficits and the true errors.
Reported, never asserted:

* Spearman rank correlation of the quality with the true reach (synthetic) and with the distance to
  the label's boundary (real; expected weaker: a label holds the cortex, the outline is its inside);
* the true reach and mean outline error per quality band;
* whether ``LOW_QUALITY`` separates the levels whose unshrunk ROIs hold cortex;
* the cortex onset: how far the true outlines may be grown before the ROIs take in cortex
  (``CORTEX_ONSET_MM`` is its smallest value);
* the calibration refitted on this run (non-negative least squares of the reach on the deficits)
  beside the constants pinned in ``placement/fit_quality.py``;
* each ladder's quality and true reach step by step.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_core as bc  # noqa: E402
import fit_quality_corpus as fq  # noqa: E402
import placement_corpus as pc  # noqa: E402
from OsteoROILib.placement import fit_quality  # noqa: E402
from OsteoROILib.placement.landmarks import LOW_QUALITY  # noqa: E402

OUT = os.path.join(HERE, "results", "fit_quality.json")
#: Clicks per level: in-plane offsets and heights (mm) within the middle 60 % of a 25 mm body.
CLICK_OFFSETS = ((1.5, -1.0, 2.0), (-2.0, 1.5, -5.0), (0.5, 2.0, 6.0))
BANDS = ((0.9, 1.01), (0.7, 0.9), (0.5, 0.7), (0.0, 0.5))


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Non-negative least squares (Lawson–Hanson active set) of ``a x ≈ b``."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(iterations):
        w = a.T @ (b - a @ x)
        if passive.all() or np.max(np.where(passive, -np.inf, w)) <= 1e-10:
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
    return x


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):
            r[v == val] = r[v == val].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def collect(quick: bool) -> List[Dict[str, Any]]:
    rows = []
    offsets = CLICK_OFFSETS[:1] if quick else CLICK_OFFSETS
    ladders = ["faint cortex", "image edge"] if quick else None
    for ladder, step, _, case in fq.ladder_cases(ladders):
        for k, off in enumerate(offsets):
            rows.append({**fq.record(case, off), "ladder": ladder, "step": step, "click": k})
    if not quick:
        for case in pc.synthetic_cases():
            rows.append({**fq.record(case), "ladder": "family", "click": 0})
    for case in pc.real_cases():
        if quick and case.level != "L3":
            continue
        rows.append({**fq.record(case), "ladder": "real", "click": 0, "partial": case.partial})
    return rows


def refit(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The reach's base and weights refitted on this run's synthetic rows."""
    keys = list(fit_quality.REACH_WEIGHTS_MM)
    syn = [r for r in rows if "reach_mm" in r]
    # the base may be negative (a clean outline lies inside the true one): +1 and −1 columns
    a = np.array([[1.0, -1.0] + [r["deficits"].get(k, 0.0) for k in keys] for r in syn])
    b = np.array([r["reach_mm"] for r in syn])
    x = nnls(a, b)
    base = x[0] - x[1]
    seen = {k: int(np.count_nonzero(a[:, i + 2] > 0)) for i, k in enumerate(keys)}
    pred = a @ x
    clean = [r["mid_height_error_mm"] for r in syn if r["deficits"].get("endplates", 0.0) == 0.0]
    return {"base_mm": round(float(base), 3), "weights_mm": {k: round(float(v), 3) for k, v in zip(keys, x[2:])},
            "height_error_clean_mean_mm": round(float(np.mean(clean)), 3),
            "cases_showing_each_deficit": seen, "rms_residual_mm": round(float(np.sqrt(np.mean((pred - b) ** 2))), 3),
            "n": len(syn)}


def summarise(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    syn = [r for r in rows if "reach_mm" in r]
    real = [r for r in rows if "label_mean_mm" in r]
    q = np.array([r["quality"] for r in syn])
    reach = np.array([r["reach_mm"] for r in syn])
    bands = []
    for lo, hi in BANDS:
        m = (q >= lo) & (q < hi)
        bands.append({"quality": [lo, min(hi, 1.0)], "n": int(m.sum()),
                      "reach_median_mm": float(np.median(reach[m])) if m.any() else None,
                      "reach_max_mm": float(np.max(reach[m])) if m.any() else None,
                      "outline_mean_median_mm": float(np.median([r["outline_mean_mm"] for r, k in zip(syn, m) if k]))
                      if m.any() else None,
                      "expected_reach_mm": [round(fit_quality.reach_of_quality(min(hi, 1.0)), 2),
                                            round(fit_quality.reach_of_quality(lo), 2)]})
    cortex = np.array([r["cortex_voxels"] > 0 for r in syn])
    low = q < LOW_QUALITY
    separation = {"low_quality_cutoff": LOW_QUALITY,
                  "levels_with_cortex_in_unshrunk_rois": int(cortex.sum()),
                  "of_which_below_cutoff": int((cortex & low).sum()),
                  "levels_below_cutoff": int(low.sum()),
                  "of_which_with_cortex": int((cortex & low).sum()),
                  "true_reach_over_onset": int((reach > fit_quality.CORTEX_ONSET_MM).sum()),
                  "of_which_below_cutoff_reach": int(((reach > fit_quality.CORTEX_ONSET_MM) & low).sum())}
    ladders: Dict[str, List[Dict[str, Any]]] = {}
    for r in syn + [r for r in rows if "refused" in r and r.get("ladder") not in ("family", "real")]:
        if r.get("ladder") in (None, "family", "real"):
            continue
        ladders.setdefault(r["ladder"], []).append(r)
    ladder_table = {}
    for name, rs in ladders.items():
        steps = sorted({r["step"] for r in rs})
        ladder_table[name] = [{"step": r0["case"].split(": ", 1)[1],
                               "quality_median": _median([r["quality"] for r in rs if r["step"] == s and "quality" in r]),
                               "reach_median_mm": _median([r["reach_mm"] for r in rs if r["step"] == s and "reach_mm" in r]),
                               "refused": sum("refused" in r for r in rs if r["step"] == s)}
                              for s in steps for r0 in [next(r for r in rs if r["step"] == s)]]
    return {
        "n_synthetic": len(syn), "n_real": len(real),
        "refused": sum("refused" in r for r in rows),
        "spearman_quality_vs_reach": spearman(q, -reach),
        "spearman_expected_vs_true_reach": spearman([r["expected_reach_mm"] for r in syn], reach),
        "spearman_quality_vs_label_distance_real": spearman([r["quality"] for r in real],
                                                            [-r["label_mean_mm"] for r in real]) if real else None,
        "bands": bands, "low_quality_separation": separation, "ladders": ladder_table,
    }


def _mm(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def _median(v):
    return float(np.median(v)) if len(v) else None


def run(quick: bool = False) -> List[Dict[str, Any]]:
    rows = collect(quick)
    summary = summarise(rows)
    onset = [fq.cortex_onset(sp) for sp in ([(1.0, 1.0, 2.5)] if quick else
                                            [(1.0, 1.0, 2.5), (0.7, 0.7, 0.6), (0.8, 0.8, 5.0)])]
    summary["cortex_onset"] = onset
    summary["refit"] = refit(rows)
    summary["pinned"] = {"reach_base_mm": fit_quality.REACH_BASE_MM, "reach_weights_mm": fit_quality.REACH_WEIGHTS_MM,
                         "cortex_onset_mm": fit_quality.CORTEX_ONSET_MM, "height_error_mm": fit_quality.HEIGHT_ERROR_MM}
    rho = summary["spearman_quality_vs_reach"]
    sep = summary["low_quality_separation"]
    out = [bc.make_row(
        "fit_quality_rank", "fit quality vs true reach into the cortex (synthetic known truth)", rho,
        "Spearman ρ (quality vs −reach)", target="ρ > 0.5; cortex in unshrunk ROIs only below LOW_QUALITY",
        met=bool(rho > 0.5 and sep["levels_with_cortex_in_unshrunk_rois"] == sep["of_which_below_cutoff"]),
        notes=f"{summary['n_synthetic']} synthetic levels, {summary['refused']} refused; real ρ (label distance) "
              f"{summary['spearman_quality_vs_label_distance_real']}; cortex in {sep['levels_with_cortex_in_unshrunk_rois']}"
              f" levels ({sep['of_which_below_cutoff']} below {LOW_QUALITY}); onset "
              + ", ".join(f"{o['onset_mm']} mm at {o['spacing_mm'][2]} mm slices" for o in onset),
        summary=summary)]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as fh:
        json.dump({"schema": "osteoroi-fit-quality/1", "quick": quick, "summary": summary,
                   "rows": [{k: v for k, v in r.items()} for r in rows]}, fh, indent=1, default=float)
    return out


def table(summary: Dict[str, Any]) -> str:
    lines = [f"Spearman quality vs true reach: {summary['spearman_quality_vs_reach']:.2f}; expected vs true reach: "
             f"{summary['spearman_expected_vs_true_reach']:.2f}; real (label distance): "
             f"{summary['spearman_quality_vs_label_distance_real']}",
             f"{'quality band':<14} {'n':>4} {'reach med':>10} {'reach max':>10} {'mean|err|':>10} {'stands for':>12}"]
    for b in summary["bands"]:
        lines.append(f"{b['quality'][0]:.1f}–{b['quality'][1]:.1f}{'':<7} {b['n']:>4} {_mm(b['reach_median_mm']):>10} "
                     f"{_mm(b['reach_max_mm']):>10} {_mm(b['outline_mean_median_mm']):>10} "
                     f"{b['expected_reach_mm'][0]:.2f}–{b['expected_reach_mm'][1]:.2f} mm")
    lines.append(f"LOW_QUALITY separation: {summary['low_quality_separation']}")
    for name, steps in summary["ladders"].items():
        lines.append(f"  {name}: " + " → ".join(
            f"{s['step']} q {s['quality_median'] if s['quality_median'] is None else round(s['quality_median'], 2)}"
            f" reach {s['reach_median_mm'] if s['reach_median_mm'] is None else round(s['reach_median_mm'], 2)}"
            + (f" ({s['refused']} refused)" if s["refused"] else "") for s in steps))
    lines.append(f"refit: {summary['refit']}")
    return "\n".join(lines)


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    print(table(rows[0]["summary"]))
