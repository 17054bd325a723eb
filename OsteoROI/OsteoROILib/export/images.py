"""The report's per-level images: the axial plane through a level's ROIs, with their outlines, as PNG.

Each image is resampled from the CT in radiological display (patient's right on the image's left,
anterior up), bone-friendly window, with the body's outline, its AP axis and the ROI outlines drawn
from ``roi.overlays.level_overlays`` and the rows' ``roi`` geometry — the same shapes that were
measured. The PNG is encoded here with zlib (no imaging library) so the
report can embed it as a ``data:`` URI.
"""
from __future__ import annotations

import base64
import os
import struct
import zlib
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from ..errors import OsteoROIError
from ..io.image_files import read_volume
from ..io.volume import Volume
from ..roi.geometry import RoiShape
from ..roi.overlays import LevelOverlays, level_overlays
from .style import SHAPE_COLOURS

#: Display window of the level images: centre 250 HU, width 900 HU (fat dark, trabecular mid-grey, cortex white).
WINDOW_LEVEL, WINDOW_WIDTH = 250.0, 900.0
#: Side of a level image in pixels.
IMAGE_PX = 320
#: Colours of what the level pictures show besides the ROIs (``SHAPE_COLOURS``), one table for the
#: pictures and the report's legend: the body's outer outline and its endplates in orange (the body's
#: boundary), the trabecular boundary pale, the AP axis blue, the measured plane and slab yellow, a
#: bone island left out of the ROIs (its excluded sphere on the plane) cyan.
OVERLAY_COLOURS = {"body outline": (255, 140, 0), "trabecular outline": (255, 214, 170),
                   "AP axis": (60, 130, 255), "endplates": (255, 140, 0), "plane": (255, 230, 0),
                   "slab": (200, 255, 120), "bone island left out": (0, 230, 230)}


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------
def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an ``(h, w, 3)`` or ``(h, w)`` uint8 array as PNG (filter 0, zlib)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim == 2:
        colour_type, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError("png_bytes needs an (h, w) or (h, w, 3) array")
    h, w = a.shape[:2]
    raw = np.zeros((h, 1 + w * channels), dtype=np.uint8)
    raw[:, 1:] = a.reshape(h, w * channels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------------------------
# Level images
# --------------------------------------------------------------------------------------------
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def sample_plane(volume, origin, col_dir, row_dir, n_px: int, pixel_mm: float, outside: float = -1024.0) -> np.ndarray:
    """Trilinear samples of the CT on an ``n_px × n_px`` grid centred on ``origin`` (RAS)."""
    c = (np.arange(n_px) - (n_px - 1) / 2.0) * pixel_mm
    cc, rr = np.meshgrid(c, c)
    pts = origin[None, None, :] + cc[..., None] * col_dir + rr[..., None] * row_dir
    ijk = volume.ras_to_ijk_points(pts.reshape(-1, 3))
    arr = volume.array
    nk, nj, ni = arr.shape
    i, j, k = ijk[:, 0], ijk[:, 1], ijk[:, 2]
    inside = (i >= -0.5) & (i <= ni - 0.5) & (j >= -0.5) & (j <= nj - 0.5) & (k >= -0.5) & (k <= nk - 0.5)
    i = np.clip(i, 0, ni - 1)
    j = np.clip(j, 0, nj - 1)
    k = np.clip(k, 0, nk - 1)
    i0, j0, k0 = (np.minimum(np.floor(x).astype(int), m - 2 if m > 1 else 0) for x, m in ((i, ni), (j, nj), (k, nk)))
    fi, fj, fk = i - i0, j - j0, k - k0
    i1, j1, k1 = np.minimum(i0 + 1, ni - 1), np.minimum(j0 + 1, nj - 1), np.minimum(k0 + 1, nk - 1)
    out = np.zeros(i.shape, dtype=float)
    for kk, wk in ((k0, 1 - fk), (k1, fk)):
        for jj, wj in ((j0, 1 - fj), (j1, fj)):
            for ii, wi in ((i0, 1 - fi), (i1, fi)):
                out += wk * wj * wi * arr[kk, jj, ii]
    out[~inside] = outside
    return out.reshape(n_px, n_px)


def draw_polyline(img: np.ndarray, pts: np.ndarray, colour, closed: bool = True, radius: int = 1) -> None:
    h, w = img.shape[:2]
    seq = np.vstack([pts, pts[:1]]) if closed else pts
    for a, b in zip(seq[:-1], seq[1:]):
        n = max(2, int(np.ceil(np.hypot(*(b - a)) * 3)))
        t = np.linspace(0.0, 1.0, n)
        xy = a[None, :] + t[:, None] * (b - a)[None, :]
        xs = np.round(xy[:, 0]).astype(int)
        ys = np.round(xy[:, 1]).astype(int)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dx * dx + dy * dy > radius * radius + 1:
                    continue
                x, y = xs + dx, ys + dy
                ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                img[y[ok], x[ok]] = colour


def roi_shape(roi: Mapping[str, object]) -> RoiShape:
    """The ROI of a result row (its ``roi`` block, RAS) as a :class:`RoiShape`."""
    return RoiShape(kind=roi["kind"], center=roi["center_ras"], axis_u=roi["axis_u_ras"], axis_v=roi["axis_v_ras"],
                    half_u=roi["half_u_mm"], half_v=roi["half_v_mm"], slab_mm=roi["slab_mm"])


def draw_arrow(img: np.ndarray, tail_xy, head_xy, colour, head_px: float = 12.0) -> None:
    """A line from ``tail_xy`` to ``head_xy`` (column, row) with an arrowhead at ``head_xy``."""
    tail, head = np.asarray(tail_xy, dtype=float), np.asarray(head_xy, dtype=float)
    draw_polyline(img, np.array([tail, head]), colour, closed=False, radius=1)
    back = _unit(tail - head) * head_px
    for angle in (np.radians(25.0), -np.radians(25.0)):
        c, s = np.cos(angle), np.sin(angle)
        wing = head + np.array([c * back[0] - s * back[1], s * back[0] + c * back[1]])
        draw_polyline(img, np.array([head, wing]), colour, closed=False, radius=1)


def windowed_rgb(volume, view, n_px: int, pixel_mm: float) -> np.ndarray:
    """The CT on a picture's plane (``roi.overlays.ViewPlane``) in the report's window, as grey RGB."""
    hu = sample_plane(volume, view.origin, view.col_dir, view.row_dir, n_px, pixel_mm)
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    grey = np.clip((hu - lo) / WINDOW_WIDTH * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def level_rows_overlays(result_doc: Mapping[str, object], level: str,
                        rows: Sequence[Mapping[str, object]]) -> LevelOverlays:
    """The level's picture geometry (``roi.overlays.level_overlays``) from the result document."""
    entry = (result_doc.get("levels") or {}).get(level)
    if not entry:
        raise KeyError(f"the result holds no placement of {level}")
    return level_overlays(entry, [r for r in rows if isinstance(r.get("roi"), Mapping)])


def draw_scale_bar(img: np.ndarray, pixel_mm: float) -> int:
    """A 10 mm white bar at the bottom left; returns its length in pixels."""
    n_px = img.shape[0]
    bar = int(round(10.0 / pixel_mm))
    img[n_px - 12:n_px - 9, 10:10 + bar] = 255
    return bar


def render_level_image(volume, result_doc: Mapping[str, object], level: str, rows: Sequence[Mapping[str, object]],
                       n_px: int = IMAGE_PX) -> Tuple[bytes, Dict[str, object]]:
    """PNG of the level's axial plane (radiological display, anterior up) with the body outline, the
    trabecular outline, the AP axis as an arrow towards anterior and the ROI outlines, all from
    ``roi.overlays.level_overlays``."""
    ov = level_rows_overlays(result_doc, level, rows)
    px = ov.fov_mm / n_px
    img = windowed_rgb(volume, ov.axial, n_px, px)

    def xy(points):
        return ov.axial.to_pixels(points, n_px, px)

    draw_polyline(img, xy(ov.body_outline), OVERLAY_COLOURS["body outline"], radius=1)
    if ov.trabecular_outline is not None:
        draw_polyline(img, xy(ov.trabecular_outline), OVERLAY_COLOURS["trabecular outline"], radius=0)
    tail, head = xy(ov.ap_axis)
    draw_arrow(img, tail, head, OVERLAY_COLOURS["AP axis"])
    for circle in ov.excluded:  # a bone island left out of the ROIs, with its margin
        draw_polyline(img, xy(circle), OVERLAY_COLOURS["bone island left out"], radius=0)
    drawn = []
    for r in rows:  # last: the ROIs are what was measured, nothing covers them
        roi = r.get("roi")
        if not isinstance(roi, Mapping):
            continue
        shape = roi_shape(roi)
        outline = shape.outline(180) if shape.kind == "ellipse" else shape.outline()
        draw_polyline(img, xy(outline), SHAPE_COLOURS.get(str(r["shape"]), (255, 255, 255)))
        drawn.append(str(r["shape"]))
    bar = draw_scale_bar(img, px)
    meta = {"level": level, "fov_mm": ov.fov_mm, "pixel_mm": px, "shapes": drawn,
            "window": [WINDOW_LEVEL, WINDOW_WIDTH], "scale_bar_px": bar, "overlays": ov}
    return png_bytes(img), meta


def load_volume_for_report(result_doc: Mapping[str, object], volume=None, result_path: str = ""):
    """(Volume or None, note): the given Volume/path, else the result's ``volume.file``."""
    if isinstance(volume, Volume):
        return volume, ""
    path = volume if isinstance(volume, str) and volume else (result_doc.get("volume") or {}).get("file", "")
    if path and not os.path.isabs(path) and not os.path.exists(path) and result_path:
        # a relative volume.file is taken relative to the result JSON's folder when not found here
        beside = os.path.join(os.path.dirname(os.path.abspath(result_path)), path)
        path = beside if os.path.exists(beside) else path
    if not path:
        return None, "Level images skipped: the result names no CT file; give the CT with --volume."
    if not os.path.exists(path):
        return None, f"Level images skipped: the CT {path} was not found; give it with --volume."
    try:
        vol = read_volume(path)
    except OsteoROIError as exc:
        return None, f"Level images skipped: the CT {path} could not be read ({exc.problem})."
    size = (result_doc.get("volume") or {}).get("size")
    if size and list(size) != [int(d) for d in vol.dimensions]:
        return None, (f"Level images skipped: the CT {path} has size {list(vol.dimensions)}, the result was measured "
                      f"on size {list(size)}; give the measured CT with --volume.")
    return vol, ""
