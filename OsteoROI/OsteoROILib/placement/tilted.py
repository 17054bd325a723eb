"""The plane perpendicular to the vertebra's own axis, for tilted spines: the axis and the re-fit there."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..io.volume import Volume
from .contour import fit_body, fit_contour
from .landmarks import Placement, conservative_scale
from .outline_fit import outline_from_contour, outline_quality
from .sampling import CROP_HALF_AXIAL_MM, CROP_HALF_INPLANE_MM, FIT_HALF_SLAB_MM, Box, ObliqueBox

PLANE_VERTEBRA = "perpendicular to the vertebra's axis"
#: Cross-sections used for the body's axis: at ± this fraction of the endplate distance (or of
#: ``DEFAULT_HEIGHT_MM``) about the mid-vertebral slice (the walls are vertical there).
AXIS_SPAN_FRACTION = 0.3
DEFAULT_HEIGHT_MM = 25.0
#: A tilt beyond this (degrees from the image's slice normal) is reported.
MAX_TILT_DEG = 35.0


def vertebra_axis(volume: Volume, placement: Placement) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """The vertebral body's own axis: the line through the area centroids of its outline on the
    image's axial slices about mid-height (a prism's cross-sections slide along its axis).
    Returns (a point on the axis at the mid-vertebral slice, unit axis towards superior, notes)."""
    o = placement.outline
    box = Box(volume, o.center, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    c_xys = box.to_box(o.center)[0]
    s_mid = int(np.clip(round(c_xys[2]), 0, box.ns - 1))
    height = placement.height_mm or DEFAULT_HEIGHT_MM
    reach = max(1, int(np.floor(AXIS_SPAN_FRACTION * height / box.ds)))
    pts, heights = [], []
    start = c_xys[:2]
    for s in range(max(0, s_mid - reach), min(box.ns - 1, s_mid + reach) + 1):
        plane = box.plane(s, 0.0)
        contour = fit_contour(box, plane, s, start)
        if contour.ring_reasons():
            continue
        off = contour.centroid_offset_mm()
        centroid = box.to_ras([[contour.center_xy[0], contour.center_xy[1], float(s)]])[0] \
            + off[0] * contour.u + off[1] * contour.v
        pts.append(centroid)
        heights.append(float(centroid @ box.normal))
    notes: List[str] = []
    if len(pts) < 3:
        notes.append("too few clear cross-sections to find the vertebra's axis; the image's slice normal is used")
        return np.asarray(o.center, dtype=float), box.normal.copy(), notes
    pts_a, h = np.array(pts), np.array(heights)
    design = np.column_stack([np.ones_like(h), h - h.mean()])
    coef, *_ = np.linalg.lstsq(design, pts_a, rcond=None)
    slope = coef[1] - box.normal * float(coef[1] @ box.normal)  # in-plane drift per mm of height
    axis = box.normal + slope
    axis = axis / np.linalg.norm(axis)
    h_mid = float(np.asarray(o.center) @ box.normal)
    point = coef[0] + (h_mid - h.mean()) * coef[1]
    tilt = float(np.degrees(np.arccos(np.clip(axis @ box.normal, -1.0, 1.0))))
    if tilt > MAX_TILT_DEG:
        notes.append(f"the vertebra's axis is tilted {tilt:.0f}° from the image's slice normal; check the plane")
    return point, axis, notes


def to_vertebra_plane(volume: Volume, placement: Placement, level: str = "") -> Placement:
    """Re-fit a placement on the plane perpendicular to the vertebra's own axis through its
    mid-height (the option for tilted spines). The image is resampled (trilinear) on that
    plane; the outline's normal is the axis, so the ROIs' slab lies along it and their voxels
    are the image voxels whose centres fall inside (``geometry`` membership rule)."""
    prefix = f"{level}: " if level else ""
    point, axis, notes = vertebra_axis(volume, placement)
    step = float(min(min(volume.spacing), 1.0))
    half = FIT_HALF_SLAB_MM
    if placement.height_mm:
        half = min(half, 0.2 * placement.height_mm)
    obox = ObliqueBox(volume, point, axis, CROP_HALF_INPLANE_MM, half + step, step)
    s_c = obox.ns // 2
    plane = obox.plane(s_c, half)
    start = obox.to_box(point)[0][:2]
    warnings = list(placement.warnings) + [prefix + n + "." for n in notes]
    contour, canal = fit_body(obox, plane, s_c, start)
    reasons = contour.ring_reasons()
    if reasons:
        warnings.append(f"{prefix}no clear body outline on the vertebra's plane ({'; '.join(reasons)}); the image's "
                        "axial plane is kept.")
        return placement
    source = placement.method
    outline, metrics = outline_from_contour(obox, contour, source, canal=canal)
    plates_q = 1.0 if placement.height_mm else 0.6
    quality, q_reasons = outline_quality(contour, metrics, plates_q, None, outline.depth_mm, outline.width_mm)
    quality = min(quality, placement.fit_quality)
    q_reasons = list(placement.reasons) + [r for r in q_reasons if r not in placement.reasons]
    scale = conservative_scale(quality)
    fallback = scale < 1.0
    if fallback:
        outline, metrics = outline_from_contour(obox, contour, source + ", conservative", scale=scale, canal=canal)
        if not placement.fallback:
            warnings.append(f"{prefix}low fit quality on the vertebra's plane ({quality:.2f}); the ROIs were shrunk "
                            f"to {scale:.0%} of the trabecular region — check them.")
    tilt = float(np.degrees(np.arccos(np.clip(axis @ volume.slice_normal_ras(), -1.0, 1.0))))
    outline.meta.update({"fit_quality": round(quality, 3), "axis_tilt_deg": round(tilt, 2)})
    out = Placement(outline=outline, method=placement.method, plane=PLANE_VERTEBRA,
                    slice_index=volume.nearest_slice_index(outline.center), fit_quality=quality,
                    point_ras=placement.point_ras, reasons=q_reasons, warnings=warnings,
                    endplates_s=placement.endplates_s, snapped=placement.snapped,
                    fallback=fallback or placement.fallback, roi_scale=scale)
    out.axis_ras = axis
    out.axis_tilt_deg = tilt
    return out
