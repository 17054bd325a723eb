"""The largest shapes inside a region given by its AP extent on each lateral line: the region
tabulated once, its lateral extent, the largest ellipse and rectangles inside it (the ROI family's
optimisers; ``roi.family`` defines which region each ROI must fit).

Frame as in ``roi.outline``: ``s`` along the AP axis, ``t`` towards the patient's left; a region
is an ``IntervalFn`` ``f(t) -> (lo, hi)``, NaN where the line at ``t`` misses it.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import PlacementError
from .outline import IntervalFn

_ARANGE: Dict[int, np.ndarray] = {}



def linspace(start: float, stop: float, num: int) -> np.ndarray:
    """``np.linspace(start, stop, num)`` for floats, without its call overhead: the same
    arithmetic (``arange(num)·((stop − start)/(num − 1)) + start``, last sample = ``stop``)."""
    start, stop = float(start), float(stop)
    step = (stop - start) / (num - 1) if num > 1 else 0.0
    if num < 2 or step == 0 or not np.isfinite(step):
        return np.linspace(start, stop, num)
    base = _ARANGE.get(num)
    if base is None:
        base = _ARANGE[num] = np.arange(0, num, dtype=float)
    y = base * step
    y += start
    y[-1] = stop
    return y


class TabulatedRegion:
    """The region sampled once on a fine t-grid and linearly interpolated afterwards.

    Linear interpolation of a region that is convex along t under-estimates ``hi`` and
    over-estimates ``lo``, and a t between a valid and an invalid sample is treated as outside:
    the tabulated region lies inside the true one, so ROIs fitted to it stay inside too.

    Calling it gives ``(lo, hi)`` at t: on grid interval ``i0 = ⌊x⌋`` (``x = (t + limit)/step``,
    clipped to the last interval) with ``w = x − i0``, ``lo = lo[i0]·(1 − w) + lo[i0+1]·w``
    (``hi`` likewise), NaN outside the grid or where either sample of the interval is invalid.
    In range, the interval's left samples are stored as NaN where the interval is invalid, so
    NaN propagates through the same arithmetic without a mask; ``hi`` is stored negated so that
    :func:`largest_p` gets ``lo`` and ``−hi`` in one array (negation is exact, and rounding
    is symmetric, so ``−hi`` comes out as the exact negative of ``hi``).
    """

    def __init__(self, region: IntervalFn, limit: float, n: int = 4001):
        grid = linspace(-limit, limit, n)
        lo_g, hi_g = region(grid)
        valid = np.isfinite(lo_g) & np.isfinite(hi_g)
        self.limit, self.n, self.grid = limit, n, grid
        self.step = float(grid[1] - grid[0])
        self.lo_g, self.hi_g, self.valid = lo_g, hi_g, valid
        self.pair_valid = pair_valid = valid[:-1] & valid[1:]  # both ends of each grid interval valid
        lo_neg_hi = np.stack([lo_g, -hi_g])
        self._left = np.where(pair_valid, lo_neg_hi[:, :-1], np.nan)
        self._right = np.ascontiguousarray(lo_neg_hi[:, 1:])
        self._pairs = None

    def _x(self, t: np.ndarray) -> np.ndarray:
        return (t + self.limit) / self.step

    def in_range(self, t_abs_max: float) -> bool:
        """Whether every |t| ≤ ``t_abs_max`` lies strictly inside the grid's interpolation range
        (the rounded ``x`` is monotone in t, so checking the two ends suffices)."""
        lo_x = (-float(t_abs_max) + self.limit) / self.step  # the same float64 arithmetic as _x
        hi_x = (float(t_abs_max) + self.limit) / self.step
        return bool(lo_x >= 0 and hi_x < self.n - 1)

    def lo_neg_hi(self, t: np.ndarray, in_range: bool = False) -> np.ndarray:
        """``[lo, −hi]`` at t (shape ``(2,) + t.shape``); ``in_range``: the caller checked :meth:`in_range`."""
        t = np.asarray(t, dtype=float)
        x = self._x(t)
        if not in_range:
            in_range = t.ndim >= 1 and t.size > 0 and bool(x.min() >= 0) and bool(x.max() < self.n - 1)
        if in_range:
            fl = np.floor(x)
            i0 = fl.astype(np.intp)
            w = x - fl  # == x − i0: fl holds the same (exactly representable) integers
            return self._left.take(i0, axis=1) * (1 - w) + self._right.take(i0, axis=1) * w
        lo, hi = self._general(x)
        return np.stack([lo, -hi])

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        if t.ndim >= 1 and t.size > 0:
            both = self.lo_neg_hi(t)
            return both[0], -both[1]
        return self._general(self._x(t))

    def _general(self, x: np.ndarray):
        n = self.n
        if self._pairs is None:
            lo_f = np.where(self.valid, self.lo_g, 0.0)
            hi_f = np.where(self.valid, self.hi_g, 0.0)
            self._pairs = (np.stack([lo_f[:-1], lo_f[1:]], axis=1), np.stack([hi_f[:-1], hi_f[1:]], axis=1))
        lo_pairs, hi_pairs = self._pairs
        i0 = np.clip(np.floor(x), 0, n - 2).astype(np.intp)
        w = x - i0
        ok = (x >= 0) & (x <= n - 1) & self.pair_valid.take(i0, mode="clip")
        lo2 = lo_pairs.take(i0, axis=0, mode="clip")
        hi2 = hi_pairs.take(i0, axis=0, mode="clip")
        lo = lo2[..., 0] * (1 - w) + lo2[..., 1] * w
        hi = hi2[..., 0] * (1 - w) + hi2[..., 1] * w
        return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)

    def finite_at(self, t: np.ndarray) -> np.ndarray:
        """``isfinite(lo) & isfinite(hi)`` of ``self(t)``, without the interpolation."""
        x = self._x(np.asarray(t, dtype=float))
        i0 = np.clip(np.floor(x), 0, self.n - 2).astype(np.intp)
        return (x >= 0) & (x <= self.n - 1) & self.pair_valid.take(i0, mode="clip")


def tabulated(region: IntervalFn, limit: float, n: int = 4001) -> IntervalFn:
    """The region sampled once on a fine t-grid and linearly interpolated afterwards (:class:`TabulatedRegion`)."""
    return TabulatedRegion(region, limit, n)


def lateral_extent(region: IntervalFn, limit: float) -> Tuple[float, float]:
    """Patient-right and patient-left extent (both ≥ 0) of the region along t."""
    if isinstance(region, TabulatedRegion) and region.limit == limit and region.n == 4001:
        t = region.grid  # the same linspace
        ok = region.finite_at(t)
    else:
        t = linspace(-limit, limit, 4001)
        lo, hi = region(t)
        ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        raise PlacementError(
            "The anterior two thirds of the body outline hold no trabecular bone.",
            "Check the outline's depth, width and cortical margin.",
        )
    # Contiguous run through the midline (or nearest the midline).
    idx = np.nonzero(ok)[0]
    mid = idx[np.argmin(np.abs(t[idx]))]
    gaps = np.nonzero(~ok)[0]
    before, after = gaps[gaps < mid], gaps[gaps > mid]
    a = int(before[-1]) + 1 if before.size else 0
    b = int(after[0]) - 1 if after.size else t.size - 1
    return float(-t[a]), float(t[b])


def band_rectangle(region: IntervalFn, t_a: float, t_b: float, n: int = 161) -> Optional[Tuple[float, float]]:
    """AP range (lo, hi) of the largest rectangle in the region spanning t ∈ [t_a, t_b]."""
    t = linspace(t_a, t_b, n)
    lo, hi = region(t)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return None
    s_lo, s_hi = float(lo.max()), float(hi.min())
    if s_hi <= s_lo:
        return None
    return s_lo, s_hi


def largest_side_rectangle(region: IntervalFn, t_in: float, t_out_max: float, sign: float, n: int = 481):
    """Best rectangle from ``t_in`` outward (``sign`` = +1 left, −1 right) to at most ``t_out_max``.

    The region is sampled once from ``t_in`` outward; the running maximum of ``lo`` and minimum of
    ``hi`` give the AP range of every candidate outer edge at once.
    """
    t = linspace(t_in, t_out_max, n)
    lo, hi = region(sign * t)
    finite = np.isfinite(lo) & np.isfinite(hi)
    if not finite[0]:
        return None
    stop = n if finite.all() else int(np.argmin(finite))
    lo_run = np.maximum.accumulate(lo[:stop])
    hi_run = np.minimum.accumulate(hi[:stop])
    width = t[:stop] - t_in
    height = hi_run - lo_run
    area = np.where(height > 0, width * height, -1.0)
    k = int(np.argmax(area))
    if area[k] <= 0:
        return None
    return float(area[k]), float(t[k]), (float(lo_run[k]), float(hi_run[k]))


#: Boundary samples of the oval: containment is checked at t = q·sin φ for these φ.
ELLIPSE_PHI = np.linspace(-np.pi / 2, np.pi / 2, 151)
ELLIPSE_COS = np.cos(ELLIPSE_PHI)
ELLIPSE_SIN = np.sin(ELLIPSE_PHI)
_ELLIPSE_POS = ELLIPSE_COS > 1e-12
_ELLIPSE_HALF_SEC = 0.5 / ELLIPSE_COS[_ELLIPSE_POS]
_POS_IDX = np.nonzero(_ELLIPSE_POS)[0]
#: The samples with cos φ > 0 as a slice (all but φ = ±π/2), or the boolean mask if not contiguous.
_ELLIPSE_POS_SLICE = (slice(int(_POS_IDX[0]), int(_POS_IDX[-1]) + 1)
                      if _POS_IDX.size and np.all(np.diff(_POS_IDX) == 1) else _ELLIPSE_POS)


def largest_p(lo: np.ndarray, hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Largest p (and its centre s0) with ``max_i(lo_i + c_i·p) ≤ s0 ≤ min_j(hi_j − c_j·p)``, per row.

    ``lo``/``hi`` are (m, n) AP limits of the region at the n boundary samples (``ELLIPSE_PHI``)
    of m ellipses, ``c`` = cos φ ≥ 0. The answer is ``min over i, j of (hi_j − lo_i) / (c_i + c_j)``
    (over the pairs with c_i + c_j > 0), found without the n × n pair matrix: ``G(p) =
    min_j(hi_j − c_j·p) − max_i(lo_i + c_i·p)`` is concave, non-increasing and piecewise linear.
    The line through G's active pieces at any p lies above G, so a Newton step lands at or
    beyond the root; from there every step moves down monotonically and stops exactly on the
    root after a few pieces; it starts from the diagonal pairs' bound (i = j), an upper bound
    of the root that also caps every step. Rows with a non-finite limit or a negative gap
    ``hi_j − lo_i`` (no ellipse fits at all) get p = −1.
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    return largest_p_stacked(np.stack([lo, -hi]))


def largest_p_stacked(lnh: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`largest_p` of ``lnh = [lo, −hi]`` (shape (2, m, n)).

    With ``−hi`` beside ``lo``, one ``lnh + c·p`` gives ``lo + c·p`` and ``−(hi − c·p)`` (IEEE
    rounding is symmetric, so the negated terms are exact negatives of ``hi − c·p`` etc.) and one
    argmax gives both ``argmax(lo + c·p)`` and ``argmin(hi − c·p)`` (first index on ties, as
    argmin). Every row runs the same Newton iteration as before, bit for bit: an inactive row
    takes a zero step, which leaves its p unchanged.
    """
    c = ELLIPSE_COS
    m, n = lnh.shape[1], lnh.shape[2]
    absmax = np.abs(lnh).max(axis=(1, 2)) if m else np.zeros(2)  # [max|lo|, max|hi|]
    if not (np.isfinite(absmax).all() and absmax.max() < 1e300):  # a NaN/inf row (or lo + hi could overflow)
        lo, hi = lnh[0], -lnh[1]
        finite = np.isfinite(lo + hi).all(axis=1)
        lo = np.where(finite[:, None], lo, 0.0)
        hi = np.where(finite[:, None], hi, 0.0)
        lnh = np.stack([lo, -hi])
        absmax = np.abs(lnh).max(axis=(1, 2)) if m else np.zeros(2)
    else:
        finite = None
    row_max = lnh.max(axis=2)  # [max lo, −min hi]
    ok = row_max[1] <= -row_max[0]  # min hi ≥ max lo: G(0) ≥ 0, every gap non-negative
    if finite is not None:
        ok &= finite
    # the diagonal pairs' bound: min over cos φ > 0 of (hi − lo)/(2 cos φ); −(lo + (−hi)) == hi − lo
    sl = _ELLIPSE_POS_SLICE
    neg_gap = (lnh[0][:, sl] + lnh[1][:, sl]) * _ELLIPSE_HALF_SEC
    cap = np.where(ok, np.maximum(-neg_gap.max(axis=1), 0.0), 0.0)
    tol = 1e-12 * (1.0 + float(absmax[1]) + float(absmax[0]))
    tol_row = np.where(ok, tol, np.inf)  # rows that fit nothing never step
    flat_base = np.arange(2 * m) * n
    p = cap
    for _ in range(200):
        v = lnh + np.multiply.outer(p, c)  # [lo + c·p, −(hi − c·p)]
        k = v.argmax(axis=2)  # [argmax(lo + c·p), argmin(hi − c·p)]
        vk = v.take(k.ravel() + flat_base).reshape(2, m)  # [max(lo + c·p), −min(hi − c·p)]
        neg_g = vk[0] + vk[1]  # −G(p)
        active = np.abs(neg_g) > tol_row
        if not active.any():
            break
        ck = c.take(k)
        # p + G/(c_i + c_j) with G = 0 on the inactive rows: exactly the old p there
        p = np.minimum(np.maximum(p - (neg_g * active) / np.maximum(ck[0] + ck[1], 1e-12), 0.0), cap)
    s0 = 0.5 * (vk[0] - vk[1])  # (max(lo + c·p) + min(hi − c·p)) / 2
    return np.where(ok, p, -1.0), s0


def largest_ellipse(region: IntervalFn, t_max: float) -> Optional[Tuple[float, float, float]]:
    """Largest ellipse (centre s0 on t = 0, semi-axes p along s, q along t) inside the region.

    For a fixed q the ellipse's boundary at t = q·sin φ (φ sampled at ``ELLIPSE_PHI``) spans
    s0 ± p·cos φ, and containment is ``max(lo + p·cos φ) ≤ s0 ≤ min(hi − p·cos φ)``, whose
    largest feasible p :func:`largest_p` finds exactly. The area p·q is then maximised over q:
    a grid of 32 q, then finer grids of 17 q on the bracket around the best one (the area is
    unimodal in q for a region convex along t) until the bracket is below 1e-6 of the width.
    Every step is vectorised over q.
    """

    tabulated = isinstance(region, TabulatedRegion)

    def evaluate(qs):
        ts = np.multiply.outer(qs, ELLIPSE_SIN)
        if tabulated:  # |q·sin φ| ≤ max q: one range check for the whole batch
            lnh = region.lo_neg_hi(ts, in_range=region.in_range(float(np.abs(qs).max())))
        else:
            lo, hi = region(ts.ravel())
            lnh = np.stack([lo.reshape(ts.shape), -hi.reshape(ts.shape)])
        p, s0 = largest_p_stacked(lnh)
        return np.where(p > 0, p * qs, -1.0), p, s0

    qs = linspace(t_max / 32, t_max, 32)
    area, p, s0 = evaluate(qs)
    k = int(np.argmax(area))
    if area[k] <= 0:
        return None
    best = (float(area[k]), float(qs[k]), float(p[k]), float(s0[k]))
    while True:
        k_a, k_b = max(k - 1, 0), min(k + 1, qs.size - 1)
        a, b = qs[k_a], qs[k_b]
        if b - a <= 1e-6 * t_max:
            break
        qs = linspace(a, b, 17)
        area, p, s0 = evaluate(qs)
        k = int(np.argmax(area))
        if area[k] > best[0]:
            best = (float(area[k]), float(qs[k]), float(p[k]), float(s0[k]))
    _, q, p_best, s0_best = best
    return s0_best, p_best, q


def circle_excess(region: IntervalFn, s_c: float, r: float) -> float:
    """How far (mm, ≥ 0) a circle of radius ``r`` centred at (s_c, 0) reaches beyond ``region``,
    checked at the oval's boundary samples; infinite where it passes the region's lateral extent."""
    cos, sin = ELLIPSE_COS, ELLIPSE_SIN  # np.cos/np.sin of linspace(−π/2, π/2, 151)
    lo, hi = region(r * sin)
    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        return float("inf")
    return float(max(np.max(s_c + r * cos - hi), np.max(lo - (s_c - r * cos)), 0.0))
