"""From a body contour to the ROIs' outline: AP axis, depth and width, cortical margin, fit quality.

See the method overview in ``OsteoROILib.placement``, steps 3 and 4.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..roi.geometry import in_plane_frame
from ..roi.outline import BodyOutline, outward_normals, polygon_intervals
from .ap_axis import combined_ap_axis
from .fit_quality import (FitReasons, expected_error_phrase, expected_height_error_mm, expected_reach_mm,
                          outline_deficits, plain_reasons, quality_of)
from .landmarks import MAX_ROTATION_DEG, MIN_AXIS_RATIO, Canal, Contour
from .sampling import Box, fast_median, smooth_circular

#: A ray whose outer edge lies more than this (mm) beyond the median cortical thickness from its
#: inner cortical rise ends on bone attached outside the cortex (an osteophyte).
SPUR_EXTRA_MM = 1.0
#: An osteophyte is reported when such rays form a run of at least this many neighbours (15° at
#: 72 rays): a spur spans an arc of the rim, while single rays scatter at thick slices, where the
#: blurred cortex reads thicker on a ray here and there (the outline still follows the cortex there).
SPUR_MIN_RUN = 3
#: Cortical margin limits (mm).
MIN_CORTICAL_MM = 1.0


def _ap_axis_from_points(pts_ras: np.ndarray, normal: np.ndarray, u0: np.ndarray) -> Tuple[np.ndarray, float]:
    """Minor principal axis of the contour (a lumbar body is wider than deep), signed towards
    the image's anterior; and the ratio of the principal extents (≥ 1)."""
    u0, v0, n = in_plane_frame(normal, u0)
    c = pts_ras.mean(axis=0)
    # polygon (not vertex) second moments, in the (u0, v0) plane
    x, y = (pts_ras - c) @ u0, (pts_ras - c) @ v0
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cr = x * y1 - x1 * y
    a = 0.5 * cr.sum()
    cx = ((x + x1) * cr).sum() / (6 * a)
    cy = ((y + y1) * cr).sum() / (6 * a)
    ixx = ((x * x + x * x1 + x1 * x1) * cr).sum() / (12 * a) - cx * cx
    iyy = ((y * y + y * y1 + y1 * y1) * cr).sum() / (12 * a) - cy * cy
    ixy = ((x * y1 + 2 * x * y + 2 * x1 * y1 + x1 * y) * cr).sum() / (24 * a) - cx * cy
    w, vec = np.linalg.eigh(np.array([[ixx, ixy], [ixy, iyy]]))
    minor = vec[:, 0]
    ratio = float(np.sqrt(max(w[1], 1e-12) / max(w[0], 1e-12)))
    ap = minor[0] * u0 + minor[1] * v0
    if ap @ u0 < 0:
        ap = -ap
    return ap, ratio


def _box_in_frame(box: Box, contour: Contour, pts: np.ndarray, ap: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """The centre (on the contour's slice), depth and width of the contour's bounding box along
    ``ap`` and across it."""
    u, v, _ = in_plane_frame(box.normal, ap)
    c0 = pts.mean(axis=0)
    s, t = (pts - c0) @ u, (pts - c0) @ v
    center = c0 + 0.5 * (s.max() + s.min()) * u + 0.5 * (t.max() + t.min()) * v
    return box.onto_slice(center, contour.s), float(s.max() - s.min()), float(t.max() - t.min())


def canal_lever_mm(box: Box, contour: Contour, canal: Canal, center: np.ndarray) -> float:
    """In-plane distance (mm) from the spinal canal's centre to the body's centre."""
    d = box.to_ras(np.array([[canal.center_xy[0], canal.center_xy[1], contour.s]]))[0] - center
    return float(np.linalg.norm(d - box.normal * float(d @ box.normal)))


def _offset_polygon(poly: np.ndarray, distance: float) -> np.ndarray:
    """Move each vertex of a counter-clockwise-or-not closed polygon inwards by ``distance``."""
    p = np.asarray(poly, dtype=float)
    c = p.mean(axis=0)
    out = p - distance * outward_normals(p)
    # never cross the centre: keep each inner vertex on its side
    d_old = np.linalg.norm(p - c, axis=1)
    d_new = np.linalg.norm(out - c, axis=1)
    too_far = d_new > d_old
    out[too_far] = c + (p[too_far] - c) * np.clip(1 - distance / np.maximum(d_old[too_far], 1e-9), 0.05, 1)[:, None]
    return out


def rays_in_runs(flags: np.ndarray, min_run: int) -> int:
    """How many of the (circular) rays' flags belong to a run of at least ``min_run`` neighbours."""
    flags = np.asarray(flags, dtype=bool)
    n = flags.size
    if n == 0 or not flags.any():
        return 0
    if flags.all():
        return n if n >= min_run else 0
    start = int(np.argmin(flags))  # a False: no run wraps past it
    rolled = np.roll(flags, -start).tolist()
    total = run = 0
    for f in rolled + [False]:
        if f:
            run += 1
        else:
            total += run if run >= min_run else 0
            run = 0
    return total



def outline_from_contour(box: Box, contour: Contour, source: str, cortical_min_mm: float = MIN_CORTICAL_MM,
                         scale: float = 1.0, canal: Optional[Canal] = None) -> Tuple[BodyOutline, Dict[str, float]]:
    """BodyOutline (centre, AP axis, depth, width, cortical margin, trabecular polygon).

    The first AP axis is the outline's minor principal axis, or with a spinal ``canal`` found
    behind the body the canal → body direction; it is then averaged with the direction from the
    posterior elements to the body (``ap_axis.combined_ap_axis``)."""
    thick = contour.r_out - contour.r_in
    ok = contour.shell & np.isfinite(thick)
    cortical = fast_median(thick[ok]) if ok.any() else 2.0
    # Bone beyond the cortex (an osteophyte on the rim): the ray's shell rose to the cortex well
    # before its outer edge. There the outline follows the cortex (inner rise + the margin), so
    # the spur neither enters the trabecular region nor stretches the depth and width.
    spur = ok & (thick > cortical + SPUR_EXTRA_MM)
    r_eff = np.where(spur, contour.r_in + cortical, contour.r_out)
    r_sm = smooth_circular(r_eff, 1)
    pts = contour.points_ras(box, r_sm)
    ap, ratio = _ap_axis_from_points(pts, box.normal, box.u0)
    u0 = in_plane_frame(box.normal, box.u0)[0]
    turn = float(np.degrees(np.arccos(np.clip(ap @ u0, -1.0, 1.0))))
    axis_from_image = ratio < MIN_AXIS_RATIO or turn > MAX_ROTATION_DEG
    if canal is not None:
        ap = canal.axis
        turn = float(np.degrees(np.arccos(np.clip(ap @ u0, -1.0, 1.0))))
        axis_from_image = False
    if axis_from_image:
        ap = u0
    center, depth, _ = _box_in_frame(box, contour, pts, ap)
    lever = canal_lever_mm(box, contour, canal, center) if canal is not None else 0.5 * depth
    ap = combined_ap_axis(box.volume, box.normal, box.u0, center, pts, depth, ap, lever)
    center, depth, width = _box_in_frame(box, contour, pts, ap)
    u, v, n = in_plane_frame(box.normal, ap)
    cortical = float(np.clip(cortical, cortical_min_mm, 0.2 * min(depth, width)))
    poly = np.column_stack([(pts - center) @ u, (pts - center) @ v])
    inner = _offset_polygon(poly, cortical)
    if scale != 1.0:
        ci = inner.mean(axis=0)
        inner = ci + scale * (inner - ci)
    outline = FittedOutline(center=center, ap_axis=u, normal=n, depth_mm=depth, width_mm=width,
                          cortical_mm=cortical, inner_contour=inner,
                          meta={"source": source, "shape_ratio": round(ratio, 3)})
    # left-right symmetry about the AP axis
    f = polygon_intervals(poly)
    tt = np.linspace(-0.4 * width, 0.4 * width, 41)
    lo, hi = f(tt)
    lo_m, hi_m = f(-tt)
    asym = np.nanmean(np.abs(hi - hi_m) + np.abs(lo - lo_m)) / 2.0 / max(depth, 1e-6)
    return outline, {"asymmetry": float(asym) if np.isfinite(asym) else 1.0, "shape_ratio": ratio,
                     "axis_from_image": float(axis_from_image), "axis_turn_deg": turn,
                     "canal": float(canal is not None),
                     # reported on the anterior and lateral rim only: behind, the pedicles join the body
                     "spur_rays": rays_in_runs(spur & (np.cos(contour.angles) > -0.3), SPUR_MIN_RUN)}


class FittedOutline(BodyOutline):
    """A BodyOutline whose trabecular polygon is tabulated once per margin (``TABLE_SAMPLES``
    lines of constant t, linear in between): the ROI family queries it thousands of times."""

    TABLE_SAMPLES = 1201

    def inner_intervals(self, margin_mm: float = 0.0):
        cache = self.__dict__.setdefault("_tables", {})
        key = round(float(margin_mm), 9)
        if key not in cache:
            f = super().inner_intervals(margin_mm)
            poly = self.inner_contour
            t_lo, t_hi = float(poly[:, 1].min()), float(poly[:, 1].max())
            tt = np.linspace(t_lo, t_hi, self.TABLE_SAMPLES)
            lo, hi = f(tt)
            ok = np.isfinite(lo) & np.isfinite(hi)
            tt, lo, hi = tt[ok], lo[ok], hi[ok]
            cache[key] = (tt, lo, hi)
        tt, lo, hi = cache[key]

        def g(t):
            t = np.atleast_1d(np.asarray(t, dtype=float))
            a = np.interp(t, tt, lo)
            b = np.interp(t, tt, hi)
            out = (t < tt[0]) | (t > tt[-1])
            a[out] = np.nan
            b[out] = np.nan
            return a, b

        return g


def outline_quality(contour: Contour, metrics: Dict[str, float], plates_q: float, plates_reason: Optional[str],
                    depth: float, width: float) -> Tuple[float, List[str]]:
    """The fit quality (0–1) and its reasons in plain words: the errors the contour's evidence
    predicts, mapped to a score (calibrated on known truth: ``fit_quality``). The reasons are a
    ``FitReasons`` list that also carries the deficits, the raw measures and the expected errors."""
    drops = contour.drop_hu[np.isfinite(contour.drop_hu)]
    # behind, the outline ends at the spinal canal's front, not at a shell (a posterior wall is weak
    # at 3 mm slices and open at the basivertebral foramen: ``landmarks.SHELL_RISE_HU``): the shell
    # is judged on the front and the sides
    side = (np.round(contour.angles / (np.pi / 2)).astype(int) % 4) != 2
    measures = {"shell_fraction": float(np.mean(contour.shell[side])),
                "edge_drop_hu": float(np.median(drops)) if drops.size else 0.0,
                "asymmetry": float(metrics["asymmetry"]), "off_image_share": float(np.mean(contour.outside_fov)),
                "spur_share": float(metrics.get("spur_rays", 0)) / max(len(contour.r_out), 1)}
    deficits = outline_deficits(measures["shell_fraction"], measures["edge_drop_hu"], measures["asymmetry"],
                                bool(metrics.get("axis_from_image")), plates_q, depth, width,
                                measures["off_image_share"], measures["spur_share"])
    reach, height = expected_reach_mm(deficits), expected_height_error_mm(deficits)
    reasons = FitReasons(plain_reasons(deficits, contour.quadrant_fractions(), depth, width, plates_reason))
    if reasons:
        reasons.append(expected_error_phrase(reach, height))
    reasons.deficits, reasons.measures = deficits, measures
    reasons.expected_reach_mm, reasons.expected_height_error_mm = reach, height
    return quality_of(deficits), reasons
