"""The body's outer cortical contour on one slab: rays, dynamic programming, re-centring, smoothness.

Rays are cast in ``N_RAYS`` directions; on each the outer edge of bone is where the HU falls
most steeply, and one closed contour is chosen jointly over all rays by dynamic programming
(see the method overview in ``OsteoROILib.placement``, step 1).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..roi.geometry import in_plane_frame
from .canal import find_canal
from .landmarks import EDGE_DROP_HU, SHELL_RISE_HU, CANAL_WALL_MM, Canal, Contour
from .sampling import MAX_RAY_MM, MIN_RAY_MM, N_RAYS, RAY_STEP_MM, Box, bilinear, cached_fit, fast_median

#: Dynamic programming: largest radius change between neighbouring rays (mm), its cost per mm
#: (in units of the typical edge strength) and the weight of a stronger edge earlier on the ray.
MAX_JUMP_MM = 3.0
JUMP_COST = 0.12
EARLIER_EDGE_WEIGHT = 1.0
#: Cost per mm of radius (prefers the innermost coherent edge: the body before the neural arch).
RADIUS_COST = 0.01
#: A low-HU gap (fluid or fat) at least GAP_MM long and this far below the interior ends the body.
GAP_BELOW_INTERIOR_HU = 40.0
GAP_MM = 3.0
#: Smoothness prior: Fourier order of the robust contour curve and the window (± mm) about it
#: in which each ray's edge is searched again.
SMOOTH_ORDER = 5
SMOOTH_WINDOW_MM = 2.5


def dp_contour(score: np.ndarray, step_mm: float) -> np.ndarray:
    """Circular dynamic programming: one radius index per ray maximising the summed score minus
    ``JUMP_COST`` per mm of radius change between neighbouring rays (at most ``MAX_JUMP_MM``).

    The rays are run three times round and the middle lap's path is the answer (free of the
    cut): the path back-traced from the best radius after the third lap.

    Forward pass: each step's accumulated score, for every radius, is its best predecessor's
    within ``±jump`` indices (minus the jump's penalty) plus the ray's score. The steps' scores
    sit in one array padded with −inf (radii outside the ray), so a strided view lays out a
    step's candidates as (offset, radius) without copying and each step is three whole-row
    operations. Predecessors are the *first* best candidate (by offset, as ``argmax`` breaks
    ties). During the third lap every radius's ancestor at the end of the second lap is carried
    along; once all radii share one ancestor (the survivor paths have merged, typically 10–20
    rays into the lap), the best radius at the end of the third lap — whichever it is — traces
    back through it, so the rest of the lap cannot change the answer and is not computed. The
    middle lap is then traced back from that ancestor, comparing the same stored numbers (score
    minus the same penalties) as the forward pass took the maximum of: the path is the one the
    full three laps give, bit for bit."""
    n_rays, n_r = score.shape
    jump = max(1, int(round(MAX_JUMP_MM / step_mm)))
    n_off = 2 * jump + 1
    n_steps = 3 * n_rays
    end_of_middle = 2 * n_rays - 1
    penalty = JUMP_COST * np.abs(np.arange(-jump, jump + 1)) * step_mm
    width = n_r + 2 * jump
    acc = np.full((n_steps, width), -np.inf)
    acc[0, jump:jump + n_r] = score[0]
    item = acc.itemsize
    # win[k, o, i] = acc[k, i + o]: step k's accumulated score at radius i + o − jump (−inf outside)
    win = np.lib.stride_tricks.as_strided(acc, shape=(n_steps, n_off, n_r), strides=(width * item, item, item),
                                          writeable=False)
    pen_col = penalty[:, None]
    cand = np.empty((n_off, n_r))
    subtract, best_of, add = np.subtract, np.maximum.reduce, np.add
    to_radius = np.arange(n_r) - jump  # offset index o at radius i → predecessor radius i + o − jump
    ancestor = np.arange(n_r)  # per radius of the current step: its ancestor at end_of_middle
    rows = list(acc[:, jump:jump + n_r])
    scores = list(score)
    for k in range(1, n_steps):
        subtract(win[k - 1], pen_col, out=cand)
        row = rows[k]
        best_of(cand, axis=0, out=row)
        add(row, scores[k % n_rays], out=row)
        if k > end_of_middle:
            ancestor = ancestor[cand.argmax(axis=0) + to_radius]
            if ancestor[0] == ancestor[-1] and (ancestor == ancestor[0]).all():
                break  # merged: every radius of this step, the best one included, has this ancestor
    p = int(ancestor[int(np.argmax(rows[k]))])
    table = acc[n_rays:end_of_middle].tolist()  # steps n … 2n − 2, padded: radius r sits at r + jump
    pen = penalty.tolist()
    offsets = range(1, n_off)
    path = [0] * n_rays
    path[-1] = p
    for m in range(n_rays - 1, 0, -1):  # step n + m → its predecessor at step n + m − 1
        before = table[m - 1]
        best_o, best = 0, before[p] - pen[0]
        for o in offsets:
            c = before[p + o] - pen[o]
            if c > best:
                best_o, best = o, c
        p += best_o - jump
        path[m - 1] = p
    return np.array(path, dtype=np.int32)



def fit_contour(box: Box, plane: np.ndarray, s: int, center_xy, u=None,
                prior_r: Optional[np.ndarray] = None, prior_window=(6.0, 4.0),
                canal: Optional["Canal"] = None) -> Contour:
    """Outer cortical contour on ``plane`` around ``center_xy`` (method overview in
    ``OsteoROILib.placement``, step 1).

    ``prior_r`` (mm per ray) restricts each ray's edge to ``[prior − window[0], prior + window[1]]``
    (used with a segmentation label and for the smoothness prior). With a ``canal``, rays that
    meet the spinal canal end at its front (the body's posterior wall) and count as shell rays
    when the HU drops into the canal there (the wall may be invisible at the basivertebral
    foramen)."""
    def compute():
        return _fit_contour(box, plane, s, center_xy, u, prior_r, prior_window, canal)

    if prior_r is not None:
        return compute()
    u_key = None if u is None else np.asarray(u, dtype=float).tobytes()
    key = (int(s), float(center_xy[0]), float(center_xy[1]), u_key, tuple(map(float, prior_window)),
           None if canal is None else id(canal))
    return cached_fit(box, plane, "contour", key, compute, keep=(canal,))


def _fit_contour(box: Box, plane: np.ndarray, s: int, center_xy, u=None,
                 prior_r: Optional[np.ndarray] = None, prior_window=(6.0, 4.0),
                 canal: Optional[Canal] = None) -> Contour:
    u = box.u0 if u is None else u
    u, v, _ = in_plane_frame(box.normal, u)
    angles = np.linspace(0.0, 2.0 * np.pi, N_RAYS, endpoint=False)
    radii = np.arange(0.0, MAX_RAY_MM + 1e-9, RAY_STEP_MM)
    dirs = np.outer(np.cos(angles), u) + np.outer(np.sin(angles), v)
    dxy = box.direction_xy(dirs)  # (rays, 2) box steps per mm
    cx, cy = float(center_xy[0]), float(center_xy[1])
    x = cx + radii[None, :] * dxy[:, 0:1]
    y = cy + radii[None, :] * dxy[:, 1:2]
    prof = bilinear(plane, x, y)
    in_plane_max = max(box.dx, box.dy)
    h = max(1, int(round(max(1.0, 0.5 * in_plane_max) / RAY_STEP_MM)))
    g, score = _edge_scores(prof, radii, h)
    if prior_r is not None:
        lo = prior_r[:, None] - prior_window[0]
        hi = prior_r[:, None] + prior_window[1]
        score[(radii[None, :] < lo) | (radii[None, :] > hi)] = -1e3
    cap = None
    if canal is not None:
        cap = canal.caps(box, np.array([cx, cy]), dirs, radii, prof)
        score[radii[None, :] > cap[:, None]] = -1e3
    path = dp_contour(score, RAY_STEP_MM)
    r_out = _refined_radii(g, radii, path)
    interior, r_in, shell, drop, outside = _shell_per_ray(prof, g, radii, path, r_out, h, cap)
    return Contour(np.array([cx, cy]), int(s), angles, r_out, r_in, shell, interior, drop, outside, u, v)


def _edge_scores(prof: np.ndarray, radii: np.ndarray, h: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per ray and radius: the HU drop across ±``h`` samples (the edge strength ``g``) and the
    dynamic programming's score (the drop, less a stronger edge met earlier, scaled by the
    typical edge, less the radius cost and a penalty behind a long low-HU gap)."""
    filled = np.where(np.isfinite(prof), prof, np.nan)
    g = np.full(prof.shape, np.nan)
    g[:, h:-h] = filled[:, :-2 * h] - filled[:, 2 * h:]
    valid = np.isfinite(g)
    gpos = np.where(valid, np.clip(g, 0.0, None), 0.0)
    # the strongest edge met earlier on the ray (at least 2h before)
    run = np.maximum.accumulate(gpos, axis=1)
    earlier = np.zeros_like(gpos)
    earlier[:, 2 * h:] = run[:, :-2 * h]
    score = gpos - EARLIER_EDGE_WEIGHT * earlier
    scale = fast_median(np.max(score, axis=1))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    score = score / scale - RADIUS_COST * radii[None, :]
    # An edge beyond a stretch of fluid/fat (the spinal canal behind the posterior wall, the fat
    # around the body) is not the body's: penalise positions after a long low-HU gap.
    near = prof[:, radii <= 5.0]
    rough = fast_median(near[~np.isnan(near)]) if np.isfinite(near).any() else np.nan
    if np.isfinite(rough):
        dip = min(rough - GAP_BELOW_INTERIOR_HU, 0.5 * rough) if rough > 0 else rough - GAP_BELOW_INTERIOR_HU
        low = np.isfinite(prof) & (prof < dip)
        n_gap = max(1, int(round(GAP_MM / RAY_STEP_MM)))
        c = np.cumsum(low, axis=1)
        run_long = np.zeros_like(low)
        run_long[:, n_gap - 1:] = (c[:, n_gap - 1:] - np.concatenate(
            [np.zeros((low.shape[0], 1), dtype=c.dtype), c[:, :-n_gap]], axis=1)) == n_gap
        seen = np.maximum.accumulate(run_long, axis=1)
        after = np.zeros_like(seen)
        after[:, h:] = seen[:, :-h]
        score[after] -= 2.0
    score[:, radii < MIN_RAY_MM] = -1e3
    score[~valid] = np.minimum(score[~valid], -0.5)
    return g, score


def _refined_radii(g: np.ndarray, radii: np.ndarray, path: np.ndarray) -> np.ndarray:
    """The outer edge radius per ray (mm): the path's radius refined to sub-step by the parabola
    through the edge strength."""
    rows = np.arange(N_RAYS)
    n_r = len(radii)
    i = np.clip(path, 1, n_r - 2)
    ga, gb, gc = g[rows, i - 1], g[rows, i], g[rows, i + 1]
    den = ga - 2 * gb + gc
    ok = (path >= 1) & (path <= n_r - 2) & np.isfinite(ga + gb + gc) & (den < 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(ok, np.clip(0.5 * (ga - gc) / np.where(ok, den, -1.0), -0.5, 0.5), 0.0)
    r_out = radii[path].astype(float) + RAY_STEP_MM * shift
    return r_out


def _shell_per_ray(prof: np.ndarray, g: np.ndarray, radii: np.ndarray, path: np.ndarray, r_out: np.ndarray,
                   h: int, cap: Optional[np.ndarray]):
    """The interior HU, and per ray: the shell's inner rise (mm, NaN without a shell), whether a
    cortical shell (rise and drop, or the drop into the spinal canal) ends the ray, the drop at
    the edge, and whether the ray left the image before its edge."""
    rows = np.arange(N_RAYS)
    n_r = len(radii)
    inner = radii[None, :] <= 0.5 * r_out[:, None]
    vals = prof[inner & np.isfinite(prof)]
    interior = fast_median(vals) if vals.size else float("nan")
    back_n = int(round(4.0 / RAY_STEP_MM))
    drop = np.where(np.isfinite(g[rows, path]), g[rows, path], 0.0)
    ridx = np.arange(n_r)[None, :]
    reach = np.minimum(path + 2 * h, n_r - 1)
    outside = np.any(~np.isfinite(prof) & (ridx <= reach[:, None]), axis=1)
    win = (ridx >= (path - back_n)[:, None]) & (ridx <= path[:, None])
    pw = np.where(win & np.isfinite(prof), prof, -np.inf)
    pk = np.argmax(pw, axis=1)
    peak = pw[rows, pk]
    shell = rise_shell = np.isfinite(peak) & (peak - interior >= SHELL_RISE_HU) & (drop >= EDGE_DROP_HU)
    if cap is not None:
        at_canal = np.isfinite(cap) & (r_out >= cap - CANAL_WALL_MM - 1.0) & (drop >= 0.5 * EDGE_DROP_HU)
        shell = shell | at_canal
    half = interior + 0.5 * (peak - interior)
    below = (ridx <= pk[:, None]) & (prof < half[:, None])
    has = below.any(axis=1)
    j = np.where(has, n_r - 1 - np.argmax(below[:, ::-1], axis=1), 0)
    j1 = np.minimum(j + 1, n_r - 1)
    pa, pb = prof[rows, j], prof[rows, j1]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(pb != pa, (half - pa) / (pb - pa), 0.0)
    r_in = np.where(has, radii[j] + np.clip(frac, 0, 1) * RAY_STEP_MM, 0.0)
    r_in = np.where(rise_shell, r_in, np.nan)
    return interior, r_in, shell, drop, outside


def fit_centred(box: Box, plane: np.ndarray, s: int, start_xy, u=None, iterations: int = 4,
                 max_shift_mm: float = 30.0, prior_fn=None, canal: Optional["Canal"] = None,
                 snap: bool = False) -> Contour:
    """Fit, then re-cast the rays from the contour's centroid until it settles.

    With ``snap`` the ray origin moves on the voxel-centre lattice of the slice and the loop
    stops when an origin repeats: clicks a few mm apart then reach the *same* origin, hence the
    same contour (placement precision), instead of origins a fraction of a mm apart."""
    c = np.asarray(start_xy, dtype=float)
    if snap:
        c = np.round(c)
    start = c.copy()
    seen = {}

    def fit(c0):
        return fit_contour(box, plane, s, c0, u, prior_r=None if prior_fn is None else prior_fn(c0, u), canal=canal)

    contour = fit(c)
    seen[tuple(c)] = contour
    for _ in range(iterations + (4 if snap else 0)):
        off = contour.centroid_offset_mm()
        shift_ras = off[0] * contour.u + off[1] * contour.v
        new_c = c + box.direction_xy(shift_ras[None, :])[0]
        if snap:
            new_c = np.round(new_c)
        moved = np.hypot((new_c[0] - start[0]) * box.dx, (new_c[1] - start[1]) * box.dy)
        if moved > max_shift_mm:
            break
        if snap and tuple(new_c) in seen:
            # a fixed point or a cycle: take the cycle's member nearest its own centroid, a
            # choice that does not depend on where the loop entered the cycle
            keys = list(seen)
            cands = [seen[k] for k in keys[keys.index(tuple(new_c)):]]
            contour = min(cands, key=lambda k: (round(float(np.hypot(*k.centroid_offset_mm())), 6),
                                                tuple(np.round(k.center_xy, 3))))
            break
        c = new_c
        contour = fit(c)
        if snap:
            seen[tuple(c)] = contour
        elif np.hypot(*off) < 0.3:
            break
    return contour


# ----------------------------------------------------------------------------------------------


def robust_fourier(angles: np.ndarray, r: np.ndarray, order: int = SMOOTH_ORDER) -> np.ndarray:
    """A smooth closed curve r(θ) (Fourier series up to ``order``) fitted to the per-ray radii
    with Tukey biweights, so a few rays stopped by a trabecular spike or leaking into a pedicle
    do not pull it (the smoothness prior on the contour)."""
    cols = [np.ones_like(angles)]
    for k in range(1, order + 1):
        cols += [np.cos(k * angles), np.sin(k * angles)]
    a = np.column_stack(cols)
    w = np.ones_like(r)
    fit = r.copy()
    for _ in range(6):
        coef, *_ = np.linalg.lstsq(a * w[:, None], r * w, rcond=None)
        fit = a @ coef
        res = r - fit
        scale = max(1.4826 * fast_median(np.abs(res)), 0.5)
        z = res / (4.685 * scale)
        w = np.where(np.abs(z) < 1, (1 - z ** 2) ** 2, 0.0)
    return fit


def fit_body(box: Box, plane: np.ndarray, s: int, start_xy, snap: bool = True, use_canal: bool = True,
             smooth: bool = True) -> Tuple[Contour, Optional[Canal]]:
    """The body's contour on one slab: centred fit → spinal canal → refit with the canal as the
    posterior wall → smoothness prior (robust Fourier curve, then each ray's edge searched within
    ``SMOOTH_WINDOW_MM`` of it, like a segmentation label's window)."""
    contour = fit_centred(box, plane, s, start_xy, snap=snap)
    canal = find_canal(box, plane, contour) if use_canal else None
    if canal is not None:
        contour = fit_centred(box, plane, s, contour.center_xy, canal=canal, snap=snap)
    if smooth:
        r_s = robust_fourier(contour.angles, contour.r_out)
        contour = fit_contour(box, plane, s, contour.center_xy, contour.u, prior_r=r_s,
                              prior_window=(SMOOTH_WINDOW_MM, SMOOTH_WINDOW_MM), canal=canal)
    return contour, canal


def distance_outside(contour: Contour, box: Box, point_xy) -> float:
    """Signed distance-like test: how far (mm) the point lies outside the contour (≤ 0 inside)."""
    d = np.array([(point_xy[0] - contour.center_xy[0]) * 1.0, (point_xy[1] - contour.center_xy[1]) * 1.0])
    ras = box.p @ d
    du, dv = float(ras @ contour.u), float(ras @ contour.v)
    r = float(np.hypot(du, dv))
    if r < 1e-9:
        return -float(contour.r_out.min())
    ang = np.arctan2(dv, du) % (2 * np.pi)
    rb = float(np.interp(ang, np.append(contour.angles, 2 * np.pi), np.append(contour.r_out, contour.r_out[0])))
    return r - rb


# ----------------------------------------------------------------------------------------------
