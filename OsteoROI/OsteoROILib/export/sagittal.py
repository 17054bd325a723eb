"""A level's sagittal image: the mid-sagittal slice through the vertebral body with the measurement plane drawn.

The reader sees where between the endplates the ROIs were placed (mid-height, QCT_BRIEF §1):
anterior on the left, superior up; the plane of the ROIs as a yellow line across the field and
the oval ROI's antero-posterior extent on it in the oval's colour.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from .images import (IMAGE_PX, WINDOW_LEVEL, WINDOW_WIDTH, draw_polyline, level_geometry, png_bytes, roi_shape,
                     sample_plane)
from .style import SHAPE_COLOURS

PLANE_COLOUR = (255, 230, 0)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / (np.linalg.norm(v) or 1.0)


def sagittal_frame(result_doc: Mapping[str, object], level: str, normal) -> np.ndarray:
    """The body's anterior direction in the ROI plane (the outline's AP axis, else RAS anterior)."""
    outline = ((result_doc.get("levels") or {}).get(level) or {}).get("outline") or {}
    anterior = np.asarray(outline.get("ap_axis_ras") or [0.0, 1.0, 0.0], float)
    return _unit(anterior - normal * float(anterior @ normal))


def render_sagittal_image(volume, result_doc: Mapping[str, object], level: str, rows: Sequence[Mapping[str, object]],
                          n_px: int = IMAGE_PX) -> Tuple[bytes, Dict[str, object]]:
    """PNG of the level's mid-sagittal slice (anterior left, superior up) with the ROI plane."""
    plane_point, normal, centre, fov = level_geometry(result_doc, level, rows)
    anterior = sagittal_frame(result_doc, level, normal)
    col_dir, row_dir = -anterior, -normal  # anterior = screen left, superior = screen up
    px = fov / n_px
    hu = sample_plane(volume, centre, col_dir, row_dir, n_px, px)
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    grey = np.clip((hu - lo) / WINDOW_WIDTH * 255.0, 0, 255).astype(np.uint8)
    img = np.repeat(grey[..., None], 3, axis=2)
    mid = (n_px - 1) / 2.0

    def to_px(points):
        d = np.asarray(points, float) - centre[None, :]
        return np.stack([d @ col_dir / px + mid, d @ row_dir / px + mid], axis=1)

    half = fov / 2.0
    line = to_px([plane_point - anterior * half, plane_point + anterior * half])
    draw_polyline(img, line, PLANE_COLOUR, closed=False, radius=0)
    for r in rows:
        roi = r.get("roi")
        if r.get("shape") != "oval" or not isinstance(roi, Mapping):
            continue
        shape = roi_shape(roi)
        ap = shape.outline(180) @ anterior
        c = np.asarray(roi["center_ras"], float)
        ends = [c + anterior * (ap.min() - c @ anterior), c + anterior * (ap.max() - c @ anterior)]
        draw_polyline(img, to_px(ends), SHAPE_COLOURS["oval"], closed=False, radius=1)
    bar = int(round(10.0 / px))
    img[n_px - 12:n_px - 9, 10:10 + bar] = 255
    plane_row = float(to_px([plane_point])[0, 1])
    return png_bytes(img), {"level": level, "fov_mm": fov, "pixel_mm": px, "plane_row": plane_row,
                            "centre_ras": [float(x) for x in centre], "window": [WINDOW_LEVEL, WINDOW_WIDTH]}
