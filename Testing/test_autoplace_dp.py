"""Parts of the contour search checked against plain oracles written here: its circular dynamic
programming (``placement.contour.dp_contour``) against a Python loop written from its specification (rays
unrolled three times round, each step taking for every radius the best predecessor within ±jump
indices, first best on ties by offset from −jump up, the middle lap of the back-traced path being
the answer); the slab median against numpy's median; the canal search's run finder against a plain loop; the
osteophyte rays' run count on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from OsteoROILib.placement.canal import first_long_runs
from OsteoROILib.placement.contour import JUMP_COST, MAX_JUMP_MM, dp_contour
from OsteoROILib.placement.outline_fit import rays_in_runs
from OsteoROILib.placement.sampling import MAX_RAY_MM, N_RAYS, RAY_STEP_MM, slab_median


def _oracle(score, step_mm):
    n_rays, n_r = len(score), len(score[0])
    jump = max(1, int(round(MAX_JUMP_MM / step_mm)))
    pen = [JUMP_COST * abs(o) * step_mm for o in range(-jump, jump + 1)]
    n_steps = 3 * n_rays
    acc = [list(score[0])]
    back = [[0] * n_r]
    for k in range(1, n_steps):
        prev, row, ptr = acc[-1], [], []
        for i in range(n_r):
            best, arg = -math.inf, None
            for o in range(-jump, jump + 1):
                j = i + o
                c = prev[j] - pen[o + jump] if 0 <= j < n_r else -math.inf
                if arg is None or c > best:
                    best, arg = c, j
            row.append(best + score[k % n_rays][i])
            ptr.append(arg)
        acc.append(row)
        back.append(ptr)
    last = acc[-1]
    p = max(range(n_r), key=lambda i: (last[i], -i))  # first maximum
    path = [p]
    for k in range(n_steps - 1, 0, -1):
        p = back[k][p]
        path.append(p)
    path.reverse()
    return path[n_rays:2 * n_rays], path, acc


def _objective(path, score, step_mm):
    n_rays = len(score)
    total = sum(score[k % n_rays][p] for k, p in enumerate(path))
    return total - sum(JUMP_COST * abs(a - b) * step_mm for a, b in zip(path, path[1:]))


@pytest.mark.parametrize("seed", range(12))
def test_dp_equals_the_plain_oracle(seed):
    rng = np.random.default_rng(seed)
    n_rays, n_r = (int(rng.integers(5, 24)), int(rng.integers(3, 30)))
    score = rng.normal(size=(n_rays, n_r))
    if seed % 3 == 0:
        score = rng.integers(0, 3, size=(n_rays, n_r)).astype(float)  # many exact ties (first best wins)
    if seed % 4 == 1:
        score[:, : min(2, n_r)] = -1e3  # forbidden radii, as below MIN_RAY_MM
    step = (0.5, 1.0, 0.25)[seed % 3]
    got = dp_contour(score, step)
    want, full, acc = _oracle(score.tolist(), step)
    assert got.tolist() == want
    # the unrolled path is optimal: its objective equals the best accumulated score
    assert _objective(full, score.tolist(), step) == pytest.approx(max(acc[-1]), abs=1e-9)
    # and every move stays within the allowed jump
    jump = max(1, int(round(MAX_JUMP_MM / step)))
    assert max(abs(a - b) for a, b in zip(full, full[1:])) <= jump


def test_dp_on_the_contour_search_sizes_with_ties():
    """The real sizes (72 rays, 0–40 mm in 0.5 mm steps) with a constant score: every path ties,
    and the first-best rule must pick the same one as the oracle."""
    n_r = int(round(MAX_RAY_MM / RAY_STEP_MM)) + 1
    for score in (np.zeros((N_RAYS, n_r)), np.tile(np.linspace(0, 1, n_r) % 0.3, (N_RAYS, 1))):
        assert dp_contour(score, RAY_STEP_MM).tolist() == _oracle(score.tolist(), RAY_STEP_MM)[0]


@pytest.mark.parametrize("n", range(1, 19))
def test_slab_median_equals_numpy_median(n):
    """The fitting plane is the per-pixel median of the slab's slices (a sorting network for small
    slabs): the same values as numpy's median, ties and even counts included."""
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        for slab in (rng.normal(size=(n, 6, 5)), rng.integers(-3, 3, size=(n, 6, 5))):
            slab = slab.astype(dtype)
            got = slab_median(slab)
            assert got.dtype == dtype
            assert np.array_equal(got, np.median(slab, axis=0).astype(dtype))


def _runs_oracle(is_low, start, stop_at, n_min):
    """The canal search's scan written as a plain loop over each ray's samples."""
    out = []
    n = len(is_low[0])
    for i, row in enumerate(is_low):
        j, stop = int(start[i]), min(int(stop_at[i]), n - 1)
        while j <= stop:
            if row[j]:
                k = j
                while k < n and row[k]:
                    k += 1
                if k - j >= n_min:
                    out.append((i, j, k))
                    break
                j = k
            j += 1
    return out


@pytest.mark.parametrize("seed", range(8))
def test_canal_run_search_equals_the_plain_scan(seed):
    rng = np.random.default_rng(seed)
    rays, n = 15, int(rng.integers(5, 90))
    is_low = rng.random((rays, n)) < rng.uniform(0.2, 0.9)
    start = rng.integers(0, n, size=rays)
    stop_at = rng.uniform(-2, n + 5, size=rays)
    n_min = int(rng.integers(1, 14))
    got = first_long_runs(is_low, start, stop_at, n_min)
    assert got == _runs_oracle(is_low.tolist(), start, stop_at, n_min)


def test_spur_rays_count_only_runs():
    """Osteophyte rays are counted only in runs of neighbours (circularly), never scattered singles."""
    f = np.zeros(12, dtype=bool)
    assert rays_in_runs(f, 3) == 0
    f[[0, 1, 11]] = True  # a run of 3 across the cut
    assert rays_in_runs(f, 3) == 3
    f[[5, 7]] = True  # singles
    assert rays_in_runs(f, 3) == 3
    f[[6]] = True  # 5, 6, 7 now a run
    assert rays_in_runs(f, 3) == 6
    assert rays_in_runs(np.ones(12, dtype=bool), 3) == 12
    assert rays_in_runs(f, 1) == int(f.sum())
