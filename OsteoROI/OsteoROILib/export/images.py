"""The report's per-level images: the axial plane through a level's ROIs, with their outlines, as PNG.

Each image is resampled from the CT in radiological display (patient's right on the image's left,
anterior up), bone-friendly window, with the ROI outlines drawn from the rows' ``roi`` geometry —
the same shapes that were measured. The PNG is encoded here with zlib (no imaging library) so the
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
from .style import SHAPE_COLOURS

#: Display window of the level images: centre 250 HU, width 900 HU (fat dark, trabecular mid-grey, cortex white).
WINDOW_LEVEL, WINDOW_WIDTH = 250.0, 900.0
#: Side of a level image in pixels.
IMAGE_PX = 320


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


def level_geometry(result_doc: Mapping[str, object], level: str, rows: Sequence[Mapping[str, object]]):
    """(plane point, normal, crop centre, field of view mm) for a level's image."""
    lv = (result_doc.get("levels") or {}).get(level) or {}
    outline = lv.get("outline") or {}
    rois = [r["roi"] for r in rows if isinstance(r.get("roi"), Mapping)]
    if rois:
        plane_point = np.mean([np.asarray(r["center_ras"], float) for r in rois], axis=0)
        normal = _unit(np.cross(np.asarray(rois[0]["axis_u_ras"], float), np.asarray(rois[0]["axis_v_ras"], float)))
    else:
        plane_point = np.asarray(outline.get("center_ras") or lv.get("point_ras"), float)
        normal = _unit(outline.get("normal_ras") or [0.0, 0.0, 1.0])
    if normal[2] < 0:
        normal = -normal
    centre = np.asarray(outline.get("center_ras"), float) if outline.get("center_ras") else plane_point
    centre = centre - normal * float((centre - plane_point) @ normal)
    size = [outline.get("width_mm"), outline.get("depth_mm")]
    size = [float(s) for s in size if isinstance(s, (int, float)) and s > 0]
    if size:
        fov = 2.2 * max(size)
    elif rois:
        fov = 5.0 * max(max(r["half_u_mm"], r["half_v_mm"]) for r in rois)
    else:
        fov = 100.0
    return plane_point, normal, centre, float(min(max(fov, 50.0), 200.0))


def render_level_image(volume, result_doc: Mapping[str, object], level: str, rows: Sequence[Mapping[str, object]],
                       n_px: int = IMAGE_PX) -> Tuple[bytes, Dict[str, object]]:
    """PNG of the level's axial plane with its ROI outlines (radiological display, anterior up)."""
    plane_point, normal, centre, fov = level_geometry(result_doc, level, rows)
    col_dir = np.array([-1.0, 0.0, 0.0])  # towards the patient's left = screen right
    col_dir = _unit(col_dir - normal * float(col_dir @ normal))
    row_dir = _unit(np.cross(normal, col_dir))  # posterior = screen down
    px = fov / n_px
    hu = sample_plane(volume, centre, col_dir, row_dir, n_px, px)
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    grey = np.clip((hu - lo) / WINDOW_WIDTH * 255.0, 0, 255).astype(np.uint8)
    img = np.repeat(grey[..., None], 3, axis=2)
    drawn = []
    for r in rows:
        roi = r.get("roi")
        if not isinstance(roi, Mapping):
            continue
        shape = roi_shape(roi)
        outline = shape.outline(180) if shape.kind == "ellipse" else shape.outline()
        d = outline - centre[None, :]
        xy = np.stack([d @ col_dir / px + (n_px - 1) / 2.0, d @ row_dir / px + (n_px - 1) / 2.0], axis=1)
        draw_polyline(img, xy, SHAPE_COLOURS.get(str(r["shape"]), (255, 255, 255)))
        drawn.append(str(r["shape"]))
    # 10 mm scale bar, bottom left
    bar = int(round(10.0 / px))
    y0 = n_px - 12
    img[y0:y0 + 3, 10:10 + bar] = 255
    meta = {"level": level, "fov_mm": fov, "pixel_mm": px, "shapes": drawn,
            "window": [WINDOW_LEVEL, WINDOW_WIDTH], "scale_bar_px": bar}
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
