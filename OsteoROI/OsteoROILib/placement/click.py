"""Placement from one click: the vertebral body around the point, its endplates and the outline
on the mid-vertebral slice, or the reasons why the point is not inside a vertebral body."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import PlacementError
from ..io.volume import Volume
from ..roi.geometry import in_plane_frame
from ..roi.outline import radius_at
from .contour import distance_outside, fit_body, fit_centred, fit_contour
from .endplates import PROFILE_TRIM, PlateInterval, central_profile, plate_intervals, wall_run
from .landmarks import (LOW_QUALITY, MAX_BODY_HEIGHT_MM, METHOD_CLICK, MIN_BODY_HEIGHT_MM, PLANE_AXIAL,
                        Canal, Contour, Placement, conservative_scale)
from .fit_quality import body_evidence
from .outline_fit import outline_from_contour, outline_quality
from .sampling import CROP_HALF_AXIAL_MM, CROP_HALF_INPLANE_MM, FIT_HALF_SLAB_MM, Box, fast_median, smooth_circular
from .thick_slices import thick_slice_caveat

#: A click up to this far outside the found body is snapped to it (with a warning).
SNAP_MM = 6.0
#: A click in a disc or on an endplate is snapped to a body ring found on a slice at most this far
#: (mm) away: half of a thick lumbar disc plus an endplate. Further away, a slice at the next disc
#: level can offer the ring around the spinal canal, which no body lies in front of there.
SNAP_AXIAL_MM = 12.0
#: A lumbar body's height (mm) used to estimate mid-height from one endplate (adult L1–L4 bodies are
#: ~25 mm high; QCT_BRIEF §7's peer report gives 22–24 mm middle heights on the real 3 mm CT).
TYPICAL_BODY_HEIGHT_MM = 25.0
#: The canal check probes this far (mm) in front of a candidate ring's anterior edge.
CANAL_PROBE_MM = 12.0


def _find_ring(box: Box, s0: int, xy0) -> Tuple[Optional[Contour], List[str]]:
    plane = box.plane(s0, FIT_HALF_SLAB_MM)
    contour, _ = fit_body(box, plane, s0, xy0, smooth=False)
    reasons = contour.ring_reasons()
    if not reasons:
        outside = distance_outside(contour, box, xy0)
        if outside > SNAP_MM:
            reasons.append(f"the nearest bone ring is {outside:.0f} mm away from the point")
    if not reasons and _is_spinal_canal(box, plane, s0, contour):
        reasons.append("the bone ring around the point is the neural arch around the spinal canal (a vertebral body "
                       "lies directly in front of it)")
    return (None if reasons else contour), reasons


#: Seeds for a click just outside a body (distances in mm, eight in-plane directions each): far
#: enough to land inside the body across the cortex from a click up to ``SNAP_MM`` outside it.
SNAP_SEED_MM = (8.0, 14.0)


def _ring_near(box: Box, s: int, xy0) -> Optional[Contour]:
    """A body ring on slice ``s`` whose outer cortex lies at most ``SNAP_MM`` from ``xy0`` (a
    click just outside the body: from the click itself the rays only reach the cortex), searched
    from seeds around the click; the ring nearest the click (then the first seed) wins."""
    best, best_d = None, np.inf
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    u, v, _ = in_plane_frame(box.normal, box.u0)
    for dist in SNAP_SEED_MM:
        for a in angles:
            seed = np.asarray(xy0, dtype=float) + box.direction_xy((dist * (np.cos(a) * u + np.sin(a) * v))[None, :])[0]
            if not box.contains_xy(seed):
                continue
            contour, reasons = _find_ring(box, s, seed)
            if contour is None:
                continue
            d = distance_outside(contour, box, xy0)
            if d <= SNAP_MM and d < best_d:
                best, best_d = contour, d
        if best is not None:
            break
    return best


#: Slice offsets (mm) at which a poorly fitting ring is checked for bodies in front (``_canal_ring_between_bodies``).
CANAL_LEVEL_OFFSETS_MM = (6.0, -6.0, 12.0, -12.0)


def _canal_ring_between_bodies(box: Box, contour: Contour) -> bool:
    """True when ``contour`` is the ring around the spinal canal at a disc level: there no body lies in
    front of it on its own slice (the disc does), but one does a few millimetres above or below.
    Only asked of poorly fitting rings (it costs up to four more canal checks)."""
    for off in CANAL_LEVEL_OFFSETS_MM:
        s = int(round(contour.s + off / box.ds))
        if s == contour.s or not 0 <= s < box.ns:
            continue
        if _is_spinal_canal(box, box.plane(s, FIT_HALF_SLAB_MM), s, contour):
            return True
    return False


def _is_spinal_canal(box: Box, plane: np.ndarray, s: int, contour: Contour) -> bool:
    """True when a larger bone ring (a vertebral body) lies directly anterior to ``contour``:
    then ``contour`` is the spinal canal inside the neural arch, not a body."""
    ant = fast_median(contour.r_out[np.abs(((contour.angles + np.pi) % (2 * np.pi)) - np.pi) <= np.pi / 9])
    probe_ras = contour.u * (ant + CANAL_PROBE_MM)
    probe_xy = contour.center_xy + box.direction_xy(probe_ras[None, :])[0]
    if not box.contains_xy(probe_xy):
        return False
    front = fit_centred(box, plane, s, probe_xy, iterations=2, max_shift_mm=20.0)
    if front.ring_reasons() or front.area_mm2() <= contour.area_mm2():
        return False
    # the candidate ring must lie behind the front ring (posterior, along the image's AP direction)
    d = box.p @ (contour.center_xy - front.center_xy)
    return bool(d @ contour.u < -0.3 * fast_median(front.r_out))


def _not_in_a_body(prefix: str, point: np.ndarray, why: str,
                   click: str = "Click inside the vertebral body") -> PlacementError:
    """The refusal of a click that is not inside a vertebral body (``why`` ends the sentence)."""
    return PlacementError(
        f"{prefix}the point (RAS {point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) does not look inside a vertebral "
        f"body: {why}",
        f"{click}, or force the placement (--force) if you are sure.")


def place_from_click(volume: Volume, point_ras: Sequence[float], level: str = "") -> Placement:
    """Find the vertebral body around a click and its outline on the mid-vertebral slice (see the
    method overview in ``OsteoROILib.placement``).

    The click only says which vertebra: the placement is first made from the click, then made
    again from the body's own centre at mid-height (``vertebra_seed``: the outline's centre on the
    mid slice, on the image's voxel lattice) until that seed repeats, so that every click inside
    the same body ends at the same seed, hence at the same placement. A cycle between seeds
    (mid-height between two slices, decided differently from the two) is broken by a rule that
    does not depend on where the cycle was entered (``_settled``). What the click itself showed
    (snapped from outside the body, from a disc) stays in the warnings.

    Raises ``PlacementError`` (with the reasons) when no vertebral body is found around the
    point — a point in muscle, fat, the spinal canal — so that the caller can refuse or force.
    """
    point = np.asarray(point_ras, dtype=float).reshape(3)
    first, refusal = _place_once(volume, point, level, defer_refusal=True)
    try:
        current, seed = _settle(volume, first, level, point if refusal is None else None)
    except PlacementError:
        if refusal is not None or first.recognised < LOW_QUALITY:
            # neither the click's ring nor the body's own centre gives a good body: refuse
            raise refusal or _not_in_a_body(f"{level}: " if level else "", point, "the bone around it fits "
                                            f"poorly ({'; '.join(first.reasons)}) and the placement cannot "
                                            "be repeated from its centre.") from None
        # the body's own centre is refused where the click was not (a body at the image's edge):
        # keep the placement made from the click, and say that it depends on the click
        current, seed = first, vertebra_seed(volume, first)
        current.warnings.append(f"{level + ': ' if level else ''}the placement could not be repeated from the "
                                "body's own centre; it may depend on where you clicked.")
    if current.fit_quality < LOW_QUALITY:
        current, seed = _better_beside(volume, current, seed, level)
    if refusal is not None and current.recognised < LOW_QUALITY:
        raise refusal  # neither the click's ring nor the body's own centre fits well
    if (refusal is not None or first.snapped) and not _near_body(volume, current, point):
        # the click was moved to a body that does not hold it (e.g. a click in the spinal canal at a
        # disc level, moved across the cortex and then along the spine)
        raise refusal or _not_in_a_body(f"{level}: " if level else "", point, "the nearest vertebral body lies "
                                        "beyond the snapping distance from it.")
    click_notes = [w for w in first.warnings if w not in current.warnings and "snapped" in w]
    result = replace(current, point_ras=point, snapped=first.snapped, warnings=click_notes + list(current.warnings))
    result.seed_ijk = seed
    caveat = thick_slice_caveat(result, volume.slice_spacing(), level)
    if caveat:
        result.warnings.append(caveat)
    return result


#: Passes from the body's own centre before a placement is taken as settled (two suffice in
#: practice: the second repeats the first's seed).
MAX_SEED_PASSES = 4


def _settle(volume: Volume, first: Placement, level: str, point: Optional[np.ndarray] = None
            ) -> Tuple[Placement, Tuple[int, int, int]]:
    """The placement made again from the body's own centre (``vertebra_seed``) until the seed
    repeats; a cycle is broken by ``_settled``. Raises ``PlacementError`` when a pass is refused.
    When ``point`` (the click, placed without refusal) is the body's own centre voxel, the pass from
    it was already the pass from that seed."""
    seen: Dict[Tuple[int, int, int], Placement] = {}
    seed = vertebra_seed(volume, first)
    current = first
    if point is not None and np.array_equal(volume.ijk_to_ras_points(np.array([seed], dtype=float))[0], point):
        seen[seed] = first
    for _ in range(MAX_SEED_PASSES):
        if seed in seen:
            return _settled(seen, seed), seed
        current, _ = _place_once(volume, volume.ijk_to_ras_points(np.array([seed], dtype=float))[0], level)
        seen[seed] = current
        seed = vertebra_seed(volume, current)
    return current, seed


def _better_beside(volume: Volume, placed: Placement, seed: Tuple[int, int, int], level: str
                   ) -> Tuple[Placement, Tuple[int, int, int]]:
    """A placement that settled fitting poorly, retried from the slices on either side of its seed:
    at thick slices the seed's slice can hold an endplate's partial volume (no cortical shell around
    the centre there), while the body's well-fitting placement is reached from the next slice. The
    best-fitting placement found wins (then the lowest seed); a well-fitting placement is never
    retried, so every click that reaches either ends at the same one."""
    found = [(placed.fit_quality, seed, placed)]
    axis = volume.slice_axis()
    for step in (-1, 1):
        beside = list(seed)
        beside[axis] += step
        if not 0 <= beside[axis] < volume.dimensions[axis]:
            continue
        try:
            start, _ = _place_once(volume, volume.ijk_to_ras_points(np.array([beside], dtype=float))[0], level)
            other, other_seed = _settle(volume, start, level)
        except PlacementError:
            continue
        found.append((other.fit_quality, other_seed, other))
    quality, best_seed, best = min(found, key=lambda f: (-round(f[0], 6), f[1]))
    return best, best_seed


def vertebra_seed(volume: Volume, placement: Placement) -> Tuple[int, int, int]:
    """The voxel (IJK, rounded) at the centre of the placement's outline on its mid slice: where
    the placement is made again from (the body's own centre, not the click)."""
    ijk = volume.ras_to_ijk_points(np.asarray(placement.outline.center, dtype=float))[0]
    ijk[volume.slice_axis()] = placement.slice_index
    return tuple(int(x) for x in np.floor(ijk + 0.5))


def _settled(seen: Dict[Tuple[int, int, int], Placement], seed: Tuple[int, int, int]) -> Placement:
    """The placement a cycle of seeds settles on: the pass whose mid-height lies nearest its own
    slice (then the lowest seed), the same whichever seed the cycle was entered from."""
    keys = list(seen)
    cycle = keys[keys.index(seed):]
    return seen[min(cycle, key=lambda k: (round(abs(seen[k].mid_offset_slices), 6), k))]


def _near_body(volume: Volume, placement: Placement, point: np.ndarray) -> bool:
    """Whether ``point`` lies within ``SNAP_MM`` of the placed body's outer outline in-plane and
    within ``SNAP_AXIAL_MM`` of its endplates along the slice normal (a click that the body may
    be snapped to)."""
    o = placement.outline
    d = point - np.asarray(o.center, dtype=float)
    sup, inf = placement.endplates_s
    h = float(point @ np.asarray(o.normal, dtype=float))
    if sup is not None and not inf - SNAP_AXIAL_MM <= h <= sup + SNAP_AXIAL_MM:
        return False
    st = np.array([d @ np.asarray(o.ap_axis), d @ np.asarray(o.left_axis)])
    r = float(np.hypot(*st))
    if o.inner_contour is None or r < 1e-9:
        return True
    edge = float(radius_at(o.inner_contour, np.arctan2(st[1], st[0])))
    return r <= edge + o.cortical_mm + SNAP_MM


def _place_once(volume: Volume, point: np.ndarray, level: str, defer_refusal: bool = False
                ) -> Tuple[Placement, Optional[PlacementError]]:
    """One pass of the placement from ``point``: find the body's ring near the point, find its
    endplates, fit the outline on the mid slice, score it. With ``defer_refusal`` a poorly fitting
    ring is returned with its refusal (for the caller to raise unless the body's own centre fits
    well) instead of raised."""
    prefix = f"{level}: " if level else ""
    box = Box(volume, point, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    pxys = box.to_box(point)[0]
    s_click = int(np.clip(round(pxys[2]), 0, box.ns - 1))
    warnings: List[str] = []
    contour, snapped, axial_mm = _find_body(box, s_click, pxys[:2], prefix, point, warnings)
    # the click's own height (sub-slice) says which endplate interval it is in: at thick slices the
    # slice nearest the click can hold an endplate, and its rounded index would put the click in the disc
    s_ref = float(pxys[2]) if contour.s == s_click else float(contour.s)
    plates, snapped = _find_endplates(box, contour, prefix, snapped, warnings, s_ref)
    s_fit = int(np.clip(np.floor(plates.s_mid + 0.5), 0, box.ns - 1))
    final, canal, plates_reason = _fit_mid_slice(box, contour, s_fit, plates)
    outline, metrics = outline_from_contour(box, final, METHOD_CLICK, canal=canal)
    quality, q_reasons = outline_quality(final, metrics, plates.quality, plates_reason, outline.depth_mm,
                                         outline.width_mm)
    evidence = body_evidence(q_reasons.deficits)
    refusal = None
    try:
        _refuse_a_poor_ring(box, contour, evidence, q_reasons, snapped, axial_mm, prefix, point)
    except PlacementError as exc:
        if not defer_refusal:
            raise
        refusal = exc
    scale = conservative_scale(quality)
    fallback = scale < 1.0
    if fallback:
        outline, metrics = outline_from_contour(box, final, METHOD_CLICK + ", conservative", scale=scale, canal=canal)
        warnings.append(f"{prefix}low fit quality ({quality:.2f}: {'; '.join(q_reasons)}); the ROIs were shrunk to "
                        f"{scale:.0%} of the trabecular region — check them.")
    elif q_reasons:
        warnings.append(f"{prefix}fit quality {quality:.2f}: {'; '.join(q_reasons)}.")
    outline.meta.update({"fit_quality": round(quality, 3)})
    pl = Placement(outline=outline, method=METHOD_CLICK, plane=PLANE_AXIAL, slice_index=box.slice_index(s_fit),
                   fit_quality=quality, point_ras=point, reasons=q_reasons, warnings=warnings,
                   endplates_s=(plates.sup, plates.inf), snapped=snapped, fallback=fallback,
                   roi_scale=scale, body_evidence=evidence)
    pl.mid_offset_slices = float(plates.s_mid - s_fit)
    return pl, refusal


def _find_body(box: Box, s_click: int, xy, prefix: str, point: np.ndarray, warnings: List[str]
               ) -> Tuple[Contour, bool, Optional[float]]:
    """The body's ring around the click: on the click's slice, from seeds around a click just
    outside the cortex, or on the nearest slice with a body ring (a click in a disc or on an
    endplate). Returns (ring, whether the click was snapped, the axial snap distance in mm or None);
    a snap adds a warning. Raises the click's refusal when no ring is found."""
    contour, reasons = _find_ring(box, s_click, xy)
    if contour is None:
        # A click just outside the cortex: the body is found from seeds around the click.
        contour = _ring_near(box, s_click, xy)
    if contour is None:
        found = _ring_on_nearest_slice(box, s_click, xy)
        if found is None:
            raise _not_in_a_body(prefix, point, f"{'; '.join(reasons)}.")
        dist = abs(found.s - s_click) * box.ds
        warnings.append(f"{prefix}the point is not inside a vertebral body on its own slice (intervertebral disc or "
                        f"endplate?); snapped {dist:.1f} mm to the nearest body.")
        return found, True, dist
    outside = distance_outside(contour, box, xy)
    if outside > 0:
        warnings.append(f"{prefix}the point lies {outside:.1f} mm outside the body's outer cortex; snapped to the "
                        "body.")
        return contour, True, None
    return contour, False, None


def _ring_on_nearest_slice(box: Box, s_click: int, xy) -> Optional[Contour]:
    """A click in a disc or on an endplate: the body ring on the nearest slice (above first) at
    most ``SNAP_AXIAL_MM`` away, or None."""
    max_steps = int(np.ceil(SNAP_AXIAL_MM / box.ds))
    for step in range(1, max_steps + 1):
        for sgn in (1, -1):
            s_try = s_click + sgn * step
            if 0 <= s_try < box.ns:
                c_try, _ = _find_ring(box, s_try, xy)
                if c_try is not None:
                    return c_try
    return None


@dataclass
class _Endplates:
    """Where the body lies along the slice axis: the mid-height (box slice, sub-slice), the
    endplates (mm along the slice normal, None when not both found) and the quality part and
    reason the endplate search gives."""

    s_mid: float
    sup: Optional[float] = None
    inf: Optional[float] = None
    quality: float = 1.0
    reason: Optional[str] = None


def _find_endplates(box: Box, contour: Contour, prefix: str, snapped: bool, warnings: List[str],
                    s_ref: Optional[float] = None) -> Tuple[_Endplates, bool]:
    """The endplates above and below the ring (method overview, step 2): the interval holding
    ``s_ref`` (the click's height in box slices; the ring's slice by default). A ring in a disc moves
    to the nearest body interval (a snap, with a warning); returns the endplates and ``snapped``."""
    r_min = float(np.min(smooth_circular(contour.r_out, 2)))
    wall = wall_run(box, contour)
    radius = max(2.0, 0.45 * r_min)
    m = central_profile(box, contour.center_xy, radius)
    m_trim = central_profile(box, contour.center_xy, radius, trim=PROFILE_TRIM)
    intervals = plate_intervals(box, m, m_trim, (wall[0], wall[1]))
    s_ref = float(contour.s) if s_ref is None else s_ref
    chosen, moved = _body_interval(box, _off_the_endplate(intervals, s_ref, m), intervals)
    if not moved and chosen is not None and _is_disc(box, intervals, intervals.index(chosen), contour.center_xy,
                                                     wall, m):
        # a disc is never a body: the click's ring was an endplate's rim or a bulging annulus; the
        # body is the neighbouring interval that holds bone. Without one, the fit quality speaks.
        alt = _neighbour_body(box, intervals, intervals.index(chosen), contour, wall, m)
        if alt is not None:
            chosen, moved = alt, True
    elif not moved and chosen is not None:
        alt = _clearer_neighbour(box, intervals, intervals.index(chosen), contour, m)
        if alt is not None:
            chosen, moved = alt, True
    if moved and not snapped:
        warnings.append(f"{prefix}the point lies in an intervertebral disc; snapped to the nearest body.")
        snapped = True
    return _mid_height(box, contour, chosen, wall, prefix, warnings), snapped


#: An interval between endplates whose central HU (median, endplates left out) is at least this much
#: below both neighbouring intervals' is disc-like (a disc next to brighter bone above and below).
DISC_DARKER_HU = 20.0


def _interior_hu(m: np.ndarray, iv: PlateInterval) -> Optional[float]:
    """Median of the central profile strictly inside the interval, one slice clear of each endplate."""
    if iv.lo is None or iv.hi is None:
        return None
    a, b = int(np.floor(iv.lo)) + 2, int(np.ceil(iv.hi)) - 1
    if b <= a:  # thick slices: the interval's middle slice
        a = int(np.clip(np.floor(0.5 * (iv.lo + iv.hi) + 0.5), 0, m.size - 1))
        b = a + 1
    return float(np.median(m[a:b]))


def _is_disc(box: Box, intervals: List[PlateInterval], i: int, xy, wall, m: np.ndarray) -> bool:
    """Whether interval ``i`` bounds a disc rather than a body: no body ring on its middle slice, and
    either the body's wall run (from the click's ring) does not reach its middle or its central HU
    is disc-like (``DISC_DARKER_HU`` below both neighbours). A weak mid-slice ring alone (the real
    3 mm CT's L1) or a body darker than the discs beside it (the noisy TPTBox crop) is not enough."""
    iv = intervals[i]
    if iv.lo is None or iv.hi is None:
        return False
    mid = 0.5 * (iv.lo + iv.hi)
    s_mid = int(np.clip(np.floor(mid + 0.5), 0, box.ns - 1))
    w_lo, w_hi = wall[0], wall[1]
    walled = (w_lo is not None or w_hi is not None) and (w_lo is None or w_lo <= mid) and (w_hi is None or mid <= w_hi)
    if walled:
        here = _interior_hu(m, iv)
        around = [_interior_hu(m, intervals[j]) for j in (i - 1, i + 1) if 0 <= j < len(intervals)]
        darker = here is not None and len(around) == 2 and None not in around and \
            all(here <= x - DISC_DARKER_HU for x in around)
        if not darker:
            return False
    # the body ring test last (it costs a contour fit): a ring on the middle slice makes it a body
    return _find_ring(box, s_mid, xy)[0] is None


#: At thick slices a disc's middle slice still shows a ring (the endplates' partial volume): a
#: neighbouring interval whose middle-slice ring has a cortical shell on this much larger a share of the
#: rays, while the chosen one is disc-dark next to it, is the body.
CLEARER_SHELL_FRACTION = 0.15


def _clearer_neighbour(box: Box, intervals: List[PlateInterval], i: int, contour: Contour, m: np.ndarray
                       ) -> Optional[PlateInterval]:
    """A neighbouring interval of a body's height that is the body the chosen interval ``i`` is a disc
    next to: the chosen one's central HU is ``DISC_DARKER_HU`` below it, and its middle slice's ring has
    a clearer cortical shell (``CLEARER_SHELL_FRACTION``); the one with the clearest shell, or None."""
    here = _interior_hu(m, intervals[i])
    if here is None:
        return None
    mine = None
    best, best_f = None, -1.0
    for j in (i - 1, i + 1):
        if not 0 <= j < len(intervals):
            continue
        iv = intervals[j]
        there = _interior_hu(m, iv)
        if not _plausible_height(box, iv.lo, iv.hi) or there is None or here > there - DISC_DARKER_HU:
            continue
        if mine is None:
            mine = _mid_shell_fraction(box, intervals[i], contour.center_xy)
        f = _mid_shell_fraction(box, iv, contour.center_xy)
        if f >= mine + CLEARER_SHELL_FRACTION and f > best_f:
            best, best_f = iv, f
    return best


def _mid_shell_fraction(box: Box, iv: PlateInterval, xy) -> float:
    """The share of rays with a cortical shell on the interval's middle slice (0 without a ring)."""
    s_mid = int(np.clip(np.floor(0.5 * (iv.lo + iv.hi) + 0.5), 0, box.ns - 1))
    ring, _ = _find_ring(box, s_mid, xy)
    return 0.0 if ring is None else ring.shell_fraction


def _neighbour_body(box: Box, intervals: List[PlateInterval], i: int, contour: Contour, wall, m: np.ndarray
                    ) -> Optional[PlateInterval]:
    """The interval above or below interval ``i`` of a body's height that is no disc, the one whose
    middle is nearer the ring's slice; None when neither is."""
    cands = [j for j in (i - 1, i + 1) if 0 <= j < len(intervals)
             and _plausible_height(box, intervals[j].lo, intervals[j].hi)
             and not _is_disc(box, intervals, j, contour.center_xy, wall, m)]
    best = min(cands, key=lambda j: abs(0.5 * (intervals[j].lo + intervals[j].hi) - contour.s), default=None)
    return None if best is None else intervals[best]


def _plausible_height(box: Box, lo: Optional[float], hi: Optional[float]) -> bool:
    """Whether box slices ``lo`` and ``hi`` (None: open) are a body's endplates apart."""
    return lo is not None and hi is not None and MIN_BODY_HEIGHT_MM <= (hi - lo) * box.ds <= MAX_BODY_HEIGHT_MM


def _off_the_endplate(intervals: List[PlateInterval], s_ref: float, m: np.ndarray) -> float:
    """``s_ref`` moved off an endplate onto its body's side: a click on the slice that holds an
    endplate (within half a slice of its peak; at thick slices a click in a body's middle 60 % can lie
    there) belongs to the brighter of the two intervals the endplate separates (the body, not the
    disc: ``_interior_hu``), whichever side of the peak it fell on."""
    for a, b in zip(intervals[:-1], intervals[1:]):
        plate = a.hi
        if plate is None or abs(s_ref - plate) > 0.5:
            continue
        below, above = _interior_hu(m, a), _interior_hu(m, b)
        if below is None or above is None or below == above:
            return s_ref
        return plate + (0.5 if above > below else -0.5)
    return s_ref


def _body_interval(box: Box, s_ring: float, intervals: List[PlateInterval]) -> Tuple[Optional[PlateInterval], bool]:
    """The endplate interval holding the ring's slice; when that one is too short for a body (a
    disc), the nearest neighbouring interval of a body's height instead (then True)."""
    chosen = None
    for iv in intervals:
        if (iv.lo is None or iv.lo <= s_ring) and (iv.hi is None or s_ring <= iv.hi):
            chosen = iv
            break
    if chosen is not None and chosen.lo is not None and chosen.hi is not None:
        if (chosen.hi - chosen.lo) * box.ds < MIN_BODY_HEIGHT_MM:
            i = intervals.index(chosen)
            cands = [intervals[j] for j in (i - 1, i + 1) if 0 <= j < len(intervals)]
            cands = [c for c in cands if _plausible_height(box, c.lo, c.hi)]
            if cands:
                return min(cands, key=lambda c: abs(0.5 * (c.lo + c.hi) - s_ring)), True
    return chosen, False


def _mid_height(box: Box, contour: Contour, chosen: Optional[PlateInterval], wall, prefix: str,
                warnings: List[str]) -> _Endplates:
    """The mid-height between the endplates of ``chosen``, else of the wall run; with one endplate
    at the image's edge it is estimated from a typical height, with none the ring's slice is used."""
    w_lo, w_hi, w_lo_edge, w_hi_edge = wall
    # The wall run is only a fallback: at thick slices an osteophyte or a bulging disc continues the
    # "wall" past the endplate, while the median central profile is not fooled by a focal lesion.
    if chosen is not None and _plausible_height(box, chosen.lo, chosen.hi):
        lo_s, hi_s = chosen.lo, chosen.hi
    elif _plausible_height(box, w_lo, w_hi):
        lo_s, hi_s = w_lo, w_hi
    else:
        lo_s = hi_s = None
    if lo_s is not None:
        ends = [float(box.to_ras([[contour.center_xy[0], contour.center_xy[1], q]])[0] @ box.normal)
                for q in (lo_s, hi_s)]
        return _Endplates(0.5 * (lo_s + hi_s), max(ends), min(ends))
    # the one visible endplate: the central profile's peak first (it does not move with the ring's
    # slice, as the wall run's end does), else the wall run's end; +1: the body lies above it in the box
    if chosen is not None and (chosen.lo is not None) != (chosen.hi is not None):
        known, direction = (chosen.lo, 1) if chosen.lo is not None else (chosen.hi, -1)
    elif w_lo is not None or w_hi is not None:
        known, direction = (w_lo, 1) if w_lo is not None else (w_hi, -1)
    else:
        known, direction = None, 1
    at_edge = w_lo_edge or w_hi_edge or (chosen is not None and (chosen.lo_edge or chosen.hi_edge))
    if known is not None and at_edge:
        reason = "the vertebra is partly outside the image: only one endplate is visible"
        mid = known + direction * 0.5 * TYPICAL_BODY_HEIGHT_MM / box.ds
        if not -0.5 <= mid <= box.ns - 0.5:
            raise PlacementError(f"{prefix}{reason}, and its mid-height (estimated from a typical body height) lies "
                                 "outside the image.", "Measure a vertebra that the image covers whole, or give a "
                                 "CT that covers this one.")
        warnings.append(f"{prefix}{reason}; the mid-vertebral slice is estimated.")
        return _Endplates(float(np.clip(mid, 0, box.ns - 1)), quality=0.6, reason=reason)
    reason = "the endplates were not found; the click's slice is used"
    warnings.append(f"{prefix}{reason}.")
    return _Endplates(float(contour.s), quality=0.4, reason=reason)


def _fit_mid_slice(box: Box, contour: Contour, s_fit: int, plates: _Endplates
                   ) -> Tuple[Contour, Optional[Canal], Optional[str]]:
    """The body's contour on the mid slice (a slab of at most a fifth of the body's height); where
    it is worse than the ring's (e.g. a bone island) the ring's shape is kept as the prior there.
    Returns the contour, the spinal canal and the endplate reason with that note added."""
    half = FIT_HALF_SLAB_MM
    if plates.sup is not None:
        half = min(half, 0.2 * (plates.sup - plates.inf))
    plane = box.plane(s_fit, half)
    final, canal = fit_body(box, plane, s_fit, contour.center_xy)
    reason = plates.reason
    if final.ring_reasons():
        reason = (reason + "; " if reason else "") + "the mid-slice outline was weak"
        final = fit_contour(box, plane, s_fit, contour.center_xy, prior_r=contour.r_out, prior_window=(3.0, 3.0),
                            canal=canal)
    return final, canal, reason


def _refuse_a_poor_ring(box: Box, contour: Contour, evidence: float, q_reasons: List[str], snapped: bool,
                        axial_mm: Optional[float], prefix: str, point: np.ndarray) -> None:
    """Refuse the click when its ring shows little evidence of being a body (``evidence``:
    ``fit_quality.body_evidence``) and either the click was moved to it or the ring is the spinal
    canal at a disc level."""
    if snapped and evidence < LOW_QUALITY:
        # The point is not inside a body, and the one it would be moved to is no clear body either
        # (e.g. a click in the spinal canal: at the next disc level its ring has no body in front).
        where = f"there is none on its own slice, and the bone ring {axial_mm:.0f} mm away" if axial_mm is not None \
            else "the nearest bone ring"
        raise _not_in_a_body(prefix, point, f"{where} fits poorly ({'; '.join(q_reasons)}).",
                             "Click inside the vertebral body on a slice near its mid-height")
    if evidence < LOW_QUALITY and _canal_ring_between_bodies(box, contour):
        raise _not_in_a_body(prefix, point, "the poorly fitting bone ring around it is the spinal canal at a disc level "
                             "(vertebral bodies lie in front of it a few millimetres above or below).")
