"""A level's sagittal image: the slice through the vertebral body along its AP axis, with the endplates,
the measured plane and the slab faces drawn.

The reader sees where between the endplates the ROIs were placed (mid-height, clear of the endplates,
QCT_BRIEF §1): anterior on the left, superior up; the endplates found by the placement in orange, the
plane of the ROIs as a yellow line with the oval ROI's antero-posterior extent on it in the oval's
colour, and the two faces of the ROIs' slab (one slice thick, or the QCT slab). The geometry is
``roi.overlays.level_overlays``, as in the axial picture and the Slicer view.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from .images import (IMAGE_PX, OVERLAY_COLOURS, draw_polyline, draw_scale_bar, level_rows_overlays, png_bytes,
                     roi_shape, windowed_rgb)
from .style import SHAPE_COLOURS

PLANE_COLOUR = OVERLAY_COLOURS["plane"]
#: The endplate and slab lines reach this far beyond the body's half depth, so their ends are seen
#: outside the cortex.
LINE_REACH = 0.65


def render_sagittal_image(volume, result_doc: Mapping[str, object], level: str, rows: Sequence[Mapping[str, object]],
                          n_px: int = IMAGE_PX) -> Tuple[bytes, Dict[str, object]]:
    """PNG of the level's sagittal slice along its AP axis (anterior left, superior up) with the
    endplates, the ROI plane and the slab faces."""
    ov = level_rows_overlays(result_doc, level, rows)
    px = ov.fov_mm / n_px
    img = windowed_rgb(volume, ov.sagittal, n_px, px)

    def xy(points):
        return ov.sagittal.to_pixels(points, n_px, px)

    reach = LINE_REACH * max(ov.depth_mm, 10.0)
    for position in ov.endplates_mm:
        if position is not None:
            draw_polyline(img, xy(ov.sagittal_line(float(position), reach)), OVERLAY_COLOURS["endplates"],
                          closed=False, radius=1)
    if ov.has_slab:
        for position in ov.slab_mm:
            draw_polyline(img, xy(ov.sagittal_line(float(position), reach)), OVERLAY_COLOURS["slab"], closed=False,
                          radius=0)
    draw_polyline(img, xy(ov.sagittal_line(ov.plane_mm, reach)), PLANE_COLOUR, closed=False, radius=0)
    anterior = -ov.sagittal.col_dir
    for r in rows:
        roi = r.get("roi")
        if r.get("shape") != "oval" or not isinstance(roi, Mapping):
            continue
        ap = roi_shape(roi).outline(180) @ anterior
        c = np.asarray(roi["center_ras"], float)
        ends = [c + anterior * (ap.min() - c @ anterior), c + anterior * (ap.max() - c @ anterior)]
        draw_polyline(img, xy(ends), SHAPE_COLOURS["oval"], closed=False, radius=1)
    draw_scale_bar(img, px)
    row = lambda position: float(xy(ov.sagittal_line(float(position), 1.0))[:, 1].mean())  # noqa: E731
    return png_bytes(img), {"level": level, "fov_mm": ov.fov_mm, "pixel_mm": px, "plane_row": row(ov.plane_mm),
                            "endplate_rows": [None if p is None else row(p) for p in ov.endplates_mm],
                            "slab_rows": [row(p) for p in ov.slab_mm] if ov.has_slab else [],
                            "centre_ras": [float(x) for x in ov.sagittal.origin], "overlays": ov}
