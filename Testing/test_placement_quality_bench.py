"""The fit-quality benchmark's own arithmetic, so that its table cannot rot: the non-negative least
squares against closed-form solutions, the rank correlation against hand-worked values, the band and
separation summary on made-up rows whose answer is known."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import bench_fit_quality as bfq  # noqa: E402


def test_nnls_matches_least_squares_when_unconstrained_and_clips_a_negative_weight():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (40, 3))
    x_true = np.array([0.5, 1.5, 2.0])
    assert bfq.nnls(a, a @ x_true) == pytest.approx(x_true, abs=1e-9)
    # b = 2·x1 − 1·x2 on [x1, x2] = [[1,0],[0,1],[1,1]]: with x2 ≥ 0 forced to 0, x1 = (2 + 1)/2
    a2 = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert bfq.nnls(a2, np.array([2.0, -1.0, 1.0])) == pytest.approx([1.5, 0.0])


def test_spearman_is_one_for_any_increasing_map_and_handles_ties():
    x = np.array([0.1, 0.5, 0.2, 3.0, 1.0])
    assert bfq.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert bfq.spearman(x, -x ** 3) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson of the ranks by hand = 0.9487
    assert bfq.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)


def test_summary_counts_bands_and_the_cut_off_separation():
    def row(q, reach, cortex):
        return {"case": "ladder: step", "level": "L1", "quality": q, "reach_mm": reach, "outline_mean_mm": 0.8,
                "cortex_voxels": cortex, "expected_reach_mm": reach, "ladder": "x", "step": 0,
                "deficits": {}, "mid_height_error_mm": 0.0}
    rows = [row(1.0, -0.2, 0), row(0.8, 0.3, 0), row(0.6, 0.6, 0), row(0.3, 1.1, 5)]
    s = bfq.summarise(rows)
    assert [b["n"] for b in s["bands"]] == [1, 1, 1, 1]
    sep = s["low_quality_separation"]
    assert sep["levels_with_cortex_in_unshrunk_rois"] == 1 and sep["of_which_below_cutoff"] == 1
    assert sep["true_reach_over_onset"] == 1
    assert s["spearman_quality_vs_reach"] == pytest.approx(1.0)
