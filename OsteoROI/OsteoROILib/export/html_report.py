"""Exports of a diagnosis: a self-contained HTML report, CSV/TSV tables and the versioned JSON.

The HTML has no external resource: charts are inline SVG and the per-level images are PNGs
(encoded here with zlib, no imaging library) embedded as ``data:`` URIs, so the file can be
mailed, archived, and printed to PDF from any browser (print CSS: A4, no table or figure split
across pages, colours kept).

Each per-level image is the axial plane through the level's ROIs, resampled from the CT in
radiological display (patient's right on the image's left, anterior up), bone-friendly window,
with the ROI outlines drawn from the rows' ``roi`` geometry — the same shapes that were measured.

All outputs are written atomically (:func:`results.write_atomically`).
"""
from __future__ import annotations

import base64
import html
import math
import os
import struct
import zlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..diagnosis.document import LEVEL_COLUMNS, VERDICT_COLUMNS, to_table_text, verdict_rows
from ..errors import InputError, OsteoROIError
from ..io.outputs import check_output_paths, write_atomically
from .measurement import to_json_text

#: ROI outline colours (RGB), also used for the legend.
SHAPE_COLOURS = {"oval": (230, 57, 70), "round": (255, 204, 0), "front": (0, 190, 255),
                 "left": (70, 210, 70), "right": (235, 90, 235)}
BAND_FILL = {"osteoporosis": "#f6c9c9", "possible_osteoporosis": "#fadcc0", "low_bone_mass": "#fcebb6",
             "indeterminate": "#fcebb6", "normal": "#cfe9cf"}
CATEGORY_CSS = {"osteoporosis": "cat-op", "possible_osteoporosis": "cat-pop", "low_bone_mass": "cat-low",
                "indeterminate": "cat-low", "normal": "cat-normal"}
#: Display window of the level images: centre 250 HU, width 900 HU (fat dark, trabecular mid-grey, cortex white).
WINDOW_LEVEL, WINDOW_WIDTH = 250.0, 900.0
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


def _draw_polyline(img: np.ndarray, pts: np.ndarray, colour, closed: bool = True, radius: int = 1) -> None:
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
    from ..roi.geometry import RoiShape

    drawn = []
    for r in rows:
        roi = r.get("roi")
        if not isinstance(roi, Mapping):
            continue
        shape = RoiShape(kind=roi["kind"], center=roi["center_ras"], axis_u=roi["axis_u_ras"], axis_v=roi["axis_v_ras"],
                         half_u=roi["half_u_mm"], half_v=roi["half_v_mm"], slab_mm=roi["slab_mm"])
        outline = shape.outline(180) if shape.kind == "ellipse" else shape.outline()
        d = outline - centre[None, :]
        xy = np.stack([d @ col_dir / px + (n_px - 1) / 2.0, d @ row_dir / px + (n_px - 1) / 2.0], axis=1)
        _draw_polyline(img, xy, SHAPE_COLOURS.get(str(r["shape"]), (255, 255, 255)))
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
    from ..io.volume import Volume, read_volume

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


# --------------------------------------------------------------------------------------------
# SVG charts
# --------------------------------------------------------------------------------------------
def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _fmt(v, d: int = 1) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def _wrap(text: str, width: int) -> List[str]:
    lines: List[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _nice_step(span: float) -> float:
    raw = span / 6.0
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def bar_chart_svg(levels: Sequence[Tuple[str, Optional[float], str]], bands: Sequence[Mapping[str, object]],
                  unit: str, title: str, summary: Optional[Tuple[float, str]] = None,
                  width: int = 600, height: int = 318) -> str:
    """Bars per level (``(level, value, exclusion text)``) over the criterion's coloured bands."""
    vals = [v for _, v, _ in levels if v is not None]
    bounds = [b for band in bands for b in (band["lower"], band["upper"]) if b is not None]
    lo = min([0.0] + [v * 1.1 for v in vals])
    hi = max([1.0] + vals + bounds) * 1.15
    ml, mr, mt, mb = 52, 165, 28, 54
    pw, ph = width - ml - mr, height - mt - mb

    def y(v):
        return mt + ph - (v - lo) / (hi - lo) * ph

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f'<text x="{ml}" y="16" class="svg-title">{_esc(title)}</text>',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ddd"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>']
    for band in bands:
        b_lo = lo if band["lower"] is None else max(lo, band["lower"])
        b_hi = hi if band["upper"] is None else min(hi, band["upper"])
        if b_hi <= b_lo:
            continue
        fill = BAND_FILL.get(str(band["class"]), "#eee")
        out.append(f'<rect x="{ml}" y="{y(b_hi):.1f}" width="{pw}" height="{y(b_lo) - y(b_hi):.1f}" fill="{fill}"/>')
        lines = _wrap(str(band["label"]), 24)[:3]
        y0 = (y(b_lo) + y(b_hi)) / 2 + 4 - 6.5 * (len(lines) - 1)
        out.append(f'<text x="{ml + pw + 6}" y="{y0:.1f}" class="svg-band">' + "".join(
            f'<tspan x="{ml + pw + 6}" dy="{0 if i == 0 else 13}">{_esc(t)}</tspan>' for i, t in enumerate(lines))
            + "</text>")
    step = _nice_step(hi - lo)
    t = math.ceil(lo / step) * step
    while t <= hi + 1e-9:
        out.append(f'<line x1="{ml - 4}" x2="{ml + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#0002"/>'
                   f'<text x="{ml - 6}" y="{y(t) + 4:.1f}" text-anchor="end" class="svg-tick">{t:g}</text>')
        t += step
    for band in bands[:-1]:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(band["upper"]):.1f}" y2="{y(band["upper"]):.1f}" '
                   f'stroke="#555" stroke-width="1"/>')
    n = max(1, len(levels))
    slot = pw / n
    bw = min(60.0, slot * 0.6)
    for idx, (lv, v, excl) in enumerate(levels):
        cx = ml + slot * (idx + 0.5)
        out.append(f'<text x="{cx:.1f}" y="{mt + ph + 16}" text-anchor="middle" class="svg-tick">{_esc(lv)}</text>')
        if v is None:
            out.append(f'<text x="{cx:.1f}" y="{y(0) - 6:.1f}" text-anchor="middle" class="svg-note">no value</text>')
            continue
        top, base = (y(v), y(0)) if v >= 0 else (y(0), y(v))
        fill = 'url(#hatch)' if excl else "#2b4c7e"
        out.append(f'<rect x="{cx - bw / 2:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{max(base - top, 0.5):.1f}" '
                   f'fill="{fill}" stroke="#1b2c4e" stroke-width="0.8"/>')
        out.append(f'<text x="{cx:.1f}" y="{top - 4:.1f}" text-anchor="middle" class="svg-val">{v:.1f}</text>')
        if excl:
            out.append(f'<text x="{cx:.1f}" y="{mt + ph + 29}" text-anchor="middle" class="svg-note">excluded</text>')
    if summary is not None:
        sv, label = summary
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(sv):.1f}" y2="{y(sv):.1f}" stroke="#000" '
                   f'stroke-dasharray="6 4" stroke-width="1.5"/>'
                   f'<line x1="{ml}" x2="{ml + 22}" y1="{height - 10}" y2="{height - 10}" stroke="#000" stroke-dasharray="6 4" '
                   f'stroke-width="1.5"/><text x="{ml + 28}" y="{height - 6}" class="svg-val">{_esc(label)}</text>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#333"/>'
               f'<text transform="translate(12 {mt + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
               f'class="svg-tick">{_esc(unit)}</text></svg>')
    return "".join(out)


def _cal_points(cal: Mapping[str, object]) -> List[Tuple[float, float, str]]:
    pts = cal.get("points") or cal.get("rods") or []
    out = []
    for p in pts if isinstance(pts, list) else []:
        if not isinstance(p, Mapping):
            continue
        d = next((p[k] for k in ("density", "density_mg_cm3", "nominal_density", "rho")
                  if isinstance(p.get(k), (int, float))), None)
        h = next((p[k] for k in ("mean_hu", "hu") if isinstance(p.get(k), (int, float))), None)
        if d is not None and h is not None:
            out.append((float(d), float(h), str(p.get("name") or p.get("label") or p.get("rod") or "")))
    return out


def calibration_view(cal: Mapping[str, object]) -> Dict[str, object]:
    """The calibration summary's numbers under one set of names.

    Reads the ``osteoroi-calibration/1`` fields (``slope_hu_per_mg_cm3``, ``intercept_hu``,
    ``fit.r2``, ``vbmd_unit``, ``points``) and the short forms (``slope``, ``intercept``, ``r2``).
    """
    fit = cal.get("fit") if isinstance(cal.get("fit"), Mapping) else {}

    def first(*keys, src=cal):
        for k in keys:
            v = src.get(k)
            if v is not None and v != "":
                return v
        return None

    phantom = cal.get("phantom")
    if isinstance(phantom, Mapping):
        phantom = phantom.get("name") or phantom.get("id") or phantom.get("model")
    return {"method": first("method", "kind"), "phantom": phantom,
            "unit": first("vbmd_unit", "unit") or "mg/cm3",
            "slope": first("slope", "slope_hu_per_mg_cm3"), "intercept": first("intercept", "intercept_hu"),
            "r2": first("r2") if first("r2") is not None else first("r2", src=fit),
            "equation": cal.get("equation"), "points": _cal_points(cal), "warnings": list(cal.get("warnings") or [])}


def calibration_svg(cal: Mapping[str, object], width: int = 420, height: int = 300) -> str:
    """Rod mean HU against density with the fitted line HU = intercept + slope × density."""
    view = calibration_view(cal)
    pts = view["points"]
    slope, icpt = view["slope"], view["intercept"]
    if not pts and not (isinstance(slope, (int, float)) and isinstance(icpt, (int, float))):
        return ""
    xs = [p[0] for p in pts] or [0.0, 200.0]
    x_lo, x_hi = min(xs + [0.0]), max(xs + [1.0])
    pad = 0.08 * (x_hi - x_lo or 1)
    x_lo, x_hi = x_lo - pad, x_hi + pad
    ys = [p[1] for p in pts]
    if isinstance(slope, (int, float)) and isinstance(icpt, (int, float)):
        ys += [icpt + slope * x_lo, icpt + slope * x_hi]
    y_lo, y_hi = min(ys), max(ys)
    pad = 0.08 * (y_hi - y_lo or 1)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    ml, mr, mt, mb = 56, 14, 26, 40
    pw, ph = width - ml - mr, height - mt - mb

    def X(v):
        return ml + (v - x_lo) / (x_hi - x_lo) * pw

    def Y(v):
        return mt + ph - (v - y_lo) / (y_hi - y_lo) * ph

    unit = view["unit"]
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="calibration fit">',
           f'<text x="{ml}" y="16" class="svg-title">Calibration: rod mean HU vs density</text>',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>']
    step = _nice_step(x_hi - x_lo)
    t = math.ceil(x_lo / step) * step
    while t <= x_hi:
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{mt}" y2="{mt + ph}" stroke="#0001"/>'
                   f'<text x="{X(t):.1f}" y="{mt + ph + 14}" text-anchor="middle" class="svg-tick">{t:g}</text>')
        t += step
    step = _nice_step(y_hi - y_lo)
    t = math.ceil(y_lo / step) * step
    while t <= y_hi:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#0001"/>'
                   f'<text x="{ml - 5}" y="{Y(t) + 4:.1f}" text-anchor="end" class="svg-tick">{t:g}</text>')
        t += step
    if isinstance(slope, (int, float)) and isinstance(icpt, (int, float)):
        out.append(f'<line x1="{X(x_lo):.1f}" y1="{Y(icpt + slope * x_lo):.1f}" x2="{X(x_hi):.1f}" '
                   f'y2="{Y(icpt + slope * x_hi):.1f}" stroke="#c0392b" stroke-width="1.5"/>')
    for d, h, name in pts:
        out.append(f'<circle cx="{X(d):.1f}" cy="{Y(h):.1f}" r="4" fill="#2b4c7e"><title>{_esc(name)} {d:g} '
                   f'{_esc(unit)}: {h:.1f} HU</title></circle>')
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" class="svg-tick">density '
               f'({_esc(unit)})</text><text transform="translate(14 {mt + ph / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle" class="svg-tick">mean HU</text></svg>')
    return "".join(out)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
CSS = """
:root { --ink:#1d1d1f; --muted:#5a5a60; --line:#c9ccd3; --head:#eef1f6; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Segoe UI", Arial, sans-serif; color: var(--ink); margin: 0; background: #fff;
       font-size: 13px; line-height: 1.35; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
main { max-width: 1120px; margin: 0 auto; padding: 18px 24px 32px; }
h1 { font-size: 21px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 18px 0 6px; border-bottom: 2px solid var(--head); padding-bottom: 2px; }
.sub { color: var(--muted); margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.facts { display: grid; grid-template-columns: 1fr 1fr; gap: 0 18px; }
.facts table td:first-child { width: 38%; color: var(--muted); }
.verdict { border: 2px solid #2b4c7e; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.verdict .big { font-size: 18px; font-weight: 700; }
.cat-op { background: #f6c9c9; } .cat-pop { background: #fadcc0; } .cat-low { background: #fcebb6; }
.cat-normal { background: #cfe9cf; } .cat-none { background: #eee; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: 5px 10px; margin: 6px 0; }
.note { color: var(--muted); font-size: 12px; }
tr.excluded td { color: #777; background: repeating-linear-gradient(45deg, #fff, #fff 6px, #f3f3f3 6px, #f3f3f3 12px); }
.lead td { font-weight: 600; }
.caltable { flex: 0 1 420px; }
table.levels td, table.levels th { font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.chart text { font-family: inherit; }
.svg-title { font-size: 13px; font-weight: 600; } .svg-tick { font-size: 11px; fill: #333; }
.svg-band { font-size: 11px; fill: #333; } .svg-val { font-size: 11px; font-weight: 600; }
.svg-note { font-size: 10px; fill: #666; }
.images { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }
figure { margin: 0; border: 1px solid var(--line); padding: 4px; break-inside: avoid; page-break-inside: avoid; }
figure img { display: block; width: 100%; height: auto; image-rendering: auto; background: #000; }
figcaption { font-size: 11px; margin-top: 3px; }
.legend span { display: inline-block; margin-right: 10px; white-space: nowrap; }
.legend i { display: inline-block; width: 14px; height: 4px; margin-right: 4px; vertical-align: middle; }
footer { margin-top: 18px; color: var(--muted); font-size: 11px; }
section, table, .verdict, .charts, svg { break-inside: avoid; page-break-inside: avoid; }
@page { size: A4; margin: 12mm; }
@media print {
  body { font-size: 9.5pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .images { grid-template-columns: repeat(4, 1fr); }
  td.num, th.num { white-space: normal; }
  .note, figcaption { font-size: 7.5pt; }
  table.levels td, table.levels th, table.diagnosis td, table.diagnosis th { font-size: 8pt; padding: 2px 4px; }
  a { color: inherit; text-decoration: none; }
}
"""


def _cat_cell(v: Mapping[str, object]) -> str:
    if v.get("category"):
        cls = CATEGORY_CSS.get(str(v.get("category_class")), "cat-none")
        return f'<td class="{cls}">{_esc(v["category"])}</td>'
    if v.get("status") == "ok" and not v.get("applicable"):
        return '<td class="cat-none">values only (not categorised)</td>'
    return f'<td class="cat-none">{_esc(v.get("status"))}</td>'


def _facts_table(pairs: Sequence[Tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v if v not in (None, '') else '—')}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _lead_shape(diagnosis: Mapping[str, object], result_doc) -> Optional[str]:
    lead = diagnosis.get("lead") or {}
    if lead.get("shape"):
        return lead["shape"]
    shapes = [r["shape"] for r in diagnosis.get("rows") or []]
    return shapes[0] if shapes else None


def build_html(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], volume=None,
               render_images: bool = True) -> str:
    """The report as one self-contained HTML string."""
    dx = diagnosis
    pat, study = dx["patient"], dx["study"]
    verdicts = dx["verdicts"]
    lead = verdicts[0] if verdicts else None
    parts: List[str] = []
    title = "OsteoROI report — lumbar trabecular bone density"
    parts.append(f"<header><h1>{_esc(title)}</h1><p class='sub'>Generated {_esc(dx['created'])} by OsteoROI "
                 f"{_esc(dx['osteoroi_version'])} from {_esc(os.path.basename(dx['source'].get('file') or '') or 'a result')}"
                 f" (measured {_esc(dx['source'].get('created') or '—')}). Decision support: to be read by a "
                 "physician with the images.</p></header>")

    # Headline verdict.
    if lead:
        q = "vBMD" if lead["quantity"] == "vbmd" else "HU"
        value = f"{lead['value']:.2f} {lead['unit']}" if lead.get("value") is not None else "no value"
        if lead.get("category"):
            big = f"{_esc(lead['category'])}"
            cls = CATEGORY_CSS.get(str(lead.get("category_class")), "cat-none")
        elif lead.get("status") == "ok":
            big, cls = "values only — not categorised", "cat-none"
        else:
            big, cls = _esc(lead.get("status")), "cat-none"
        parts.append(f"<div class='verdict'><div class='note'>Leading criterion: {_esc(lead['criterion'])}"
                     f"{' — ' + _esc(lead['shape']) + ' ROI' if lead.get('shape') else ''}</div>"
                     f"<div class='big'><span class='{cls}'>&nbsp;{big}&nbsp;</span> &nbsp; {_esc(q)} {_esc(value)}</div>"
                     f"<div>{_esc(lead['rule'])}</div>"
                     + "".join(f"<div class='note'>{_esc(n)}</div>" for n in lead.get("notes") or []) + "</div>")

    # Patient and study facts.
    age = pat.get("age_years")
    age_txt = f"{age:g} years ({pat.get('age_source')})" if age is not None else "unknown"
    sex_txt = {"F": "female", "M": "male", "O": "other"}.get(pat.get("sex") or "", "unknown")
    if pat.get("sex"):
        sex_txt += f" ({pat.get('sex_source')})"
    meno = pat.get("menopause")
    kvp = study.get("kvp")
    st = study.get("slice_thickness_mm")
    parts.append("<section><h2>Patient and study</h2><div class='facts'>" + _facts_table([
        ("Age", age_txt), ("Sex", sex_txt),
        ("Menopausal status", f"{meno} ({pat.get('menopause_source')})" if meno else "—"),
        ("Criteria applicable", ("yes — " if pat.get("applicable") else "no — ") + str(pat.get("applicability_note"))),
        ("Fractures recorded", ", ".join(f"{f['level']} Genant {f['grade']}" + ("" if f["fragility"] else " (traumatic)")
                                         for f in dx.get("fractures") or []) or (pat.get("fragility_fracture") or "none")),
    ]) + _facts_table([
        ("Study date", study.get("study_date")), ("Scanner", " ".join(str(x) for x in (study.get("manufacturer"),
                                                                                   study.get("model")) if x) or None),
        ("Tube voltage", f"{kvp:g} kV" if isinstance(kvp, (int, float)) else "unknown"),
        ("Kernel", study.get("convolution_kernel")),
        ("Slice thickness", f"{st:g} mm ({study.get('slice_thickness_source')})" if st is not None else None),
        ("Contrast agent", study.get("contrast_agent") or "none recorded"),
        ("CT file", os.path.basename(str(study.get("file") or "")) or None),
    ]) + "</div></section>")

    if dx.get("warnings"):
        parts.append("<section><h2>Warnings</h2>" + "".join(f"<div class='warn'>{_esc(w)}</div>" for w in dx["warnings"])
                     + "</section>")

    # Diagnosis table.
    fu = {(s["criterion_id"], s["shape"]): s for s in ((dx.get("followup") or {}).get("summary") or [])}
    has_fu = bool(fu)
    head = ("<tr><th>Criterion</th><th>ROI</th><th>Levels (n)</th><th class='num'>Value</th><th>Category</th>"
            "<th>Rule applied</th>" + ("<th class='num'>Change vs prior</th>" if has_fu else "") + "</tr>")
    body = []
    for v in verdicts:
        levels = ", ".join(v["levels_used"]) + f" ({v['n_levels']})" if v["levels_used"] else "—"
        val = f"{v['value']:.2f} {v['unit']}" if v.get("value") is not None else "—"
        rule = _esc(v.get("decision") or v["rule"]) + "".join(f"<div class='note'>{_esc(n)}</div>" for n in v.get("notes") or [])
        fu_cell = ""
        if has_fu:
            s = fu.get((v["criterion_id"], v["shape"]))
            if s and s.get("change_pct") is not None:
                fu_cell = (f"<td class='num'>{s['change']:+.2f} ({s['change_pct']:+.1f} %)<br>"
                           f"<span class='note'>LSC {s['lsc_pct']:.2f} %: {_esc(s['verdict'])}</span></td>")
            else:
                fu_cell = f"<td class='note'>{_esc((s or {}).get('note', '—'))}</td>"
        body.append(f"<tr class='{'lead' if v.get('lead') else ''}'><td>{_esc(v['short_title'])}</td>"
                    f"<td>{_esc(v['shape'] or '—')}</td><td>{_esc(levels)}</td><td class='num'>{_esc(val)}</td>"
                    f"{_cat_cell(v)}<td>{rule}</td>{fu_cell}</tr>")
    parts.append("<section><h2>Diagnosis table</h2><table class='diagnosis'>" + head + "".join(body) + "</table>"
                 + "".join(f"<div class='note'>{_esc(n)}</div>" for n in dx.get("notes") or []) + "</section>")

    # Per-level table: rows = levels, columns = ROI types.
    rows = dx["rows"]
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    with_vbmd = any(r.get("vbmd_mg_cm3") is not None for r in rows)
    lvl_info = {lv["level"]: lv for lv in dx["levels"]}
    head = "<tr><th>Level</th><th>Status</th>" + "".join(
        f"<th class='num'>{_esc(s)}<br><span class='note'>HU ± SD{' / vBMD' if with_vbmd else ''}</span></th>"
        for s in shapes) + "<th>Used by</th></tr>"
    body = []
    for lv in [x["level"] for x in dx["levels"]]:
        info = lvl_info[lv]
        status = info["flag_text"] or "valid"
        if not info["measured"]:
            status = ("not measured; " + status) if info["flag_text"] else "not measured"
        cells = []
        used = set()
        for s in shapes:
            r = next((x for x in rows if x["level"] == lv and x["shape"] == s), None)
            if r is None:
                cells.append("<td class='num'>—</td>")
                continue
            used.update(r["used_by"])
            txt = f"{_fmt(r['mean_hu'])} ± {_fmt(r['sd_hu'])}"
            if with_vbmd:
                txt += f"<br>{_fmt(r.get('vbmd_mg_cm3'))}"
            cells.append(f"<td class='num'>{txt}</td>")
        short = {c["id"]: c["short_title"] for c in dx["criteria"]}
        body.append(f"<tr class='{'excluded' if info['excluded'] else ''}'><td>{_esc(lv)}</td><td>{_esc(status)}</td>"
                    + "".join(cells) + f"<td>{_esc(', '.join(sorted(short.get(u, u) for u in used)) or '—')}</td></tr>")
    row_warn = sorted({w for r in rows for w in r.get("warnings") or []})
    unit_note = f" vBMD in {rows[0].get('vbmd_unit') or 'mg/cm3'}." if with_vbmd else ""
    parts.append("<section><h2>Per-level values</h2><table class='levels'>" + head + "".join(body) + "</table>"
                 f"<div class='note'>Mean HU ± SD (ddof 1) per ROI type.{_esc(unit_note)} Excluded levels stay in the "
                 "table with their reason and are not used by any criterion.</div>"
                 + "".join(f"<div class='note'>⚠ {_esc(w)}</div>" for w in row_warn) + "</section>")

    # Follow-up per level.
    fu_html = ""
    if dx.get("followup"):
        f = dx["followup"]
        lead_shape = _lead_shape(dx, result_doc)
        q = "vbmd" if any(x["quantity"] == "vbmd" for x in f["levels"]) and dx.get("quantity") == "vbmd" else "hu"
        lrows = [x for x in f["levels"] if x["shape"] == lead_shape and x["quantity"] == q]
        head = ("<tr><th>Level</th><th class='num'>Prior</th><th class='num'>Current</th><th class='num'>Change</th>"
                "<th class='num'>% change</th><th>Verdict (LSC " + f"{f['lsc_pct']:.2f} %)" + "</th></tr>")
        body = "".join(
            f"<tr><td>{_esc(x['level'])}</td><td class='num'>{_fmt(x['prior'], 2)}</td><td class='num'>"
            f"{_fmt(x['current'], 2)}</td><td class='num'>{'—' if x['change'] is None else format(x['change'], '+.2f')}"
            f"</td><td class='num'>{'—' if x['change_pct'] is None else format(x['change_pct'], '+.2f')}</td>"
            f"<td>{_esc(x['verdict'] or x['note'])}</td></tr>" for x in lrows)
        interval = f"; interval {f['interval_days']} days" if f.get("interval_days") is not None else ""
        fu_html = (
            "<section><h2>Follow-up</h2>"
            f"<p>Prior exam: {_esc(os.path.basename(str(f['prior'].get('file') or '')) or '—')} "
            f"(study date {_esc(f['prior'].get('study_date') or 'unknown')}{_esc(interval)}). Least significant change "
            f"LSC = 2.77 × precision error {f['precision_pct']:g} % = {f['lsc_pct']:.2f} % (ISCD; QCT_BRIEF §5).</p>"
            + "".join(f"<div class='warn'>{_esc(w)}</div>" for w in f.get("warnings") or [])
            + f"<table><caption class='note'>{_esc(lead_shape)} ROI, {'vBMD' if q == 'vbmd' else 'HU'}</caption>"
            + head + body + "</table>"
            + "".join(f"<div class='note'>{_esc(n)}</div>" for n in f.get("notes") or []) + "</section>")

    # Charts: per-level bar chart with the lead criterion's bands; calibration fit.
    charts = []
    if lead and lead.get("shape"):
        q = lead["quantity"]
        key = "vbmd_mg_cm3" if q == "vbmd" else "mean_hu"
        crit = next(c for c in dx["criteria"] if c["id"] == lead["criterion_id"])
        bands = crit["bands_by_shape"][lead["shape"]]
        data = []
        for lv in [x["level"] for x in dx["levels"]]:
            r = next((x for x in rows if x["level"] == lv and x["shape"] == lead["shape"]), None)
            data.append((lv, None if r is None else r.get(key), lvl_info[lv]["flag_text"] if lvl_info[lv]["excluded"] else ""))
        summary = None
        if lead.get("value") is not None:
            summary = (lead["value"], f"{'mean ' if lead['n_levels'] > 1 else ''}{'+'.join(lead['levels_used'])} = "
                                      f"{lead['value']:.1f}")
        charts.append(bar_chart_svg(data, bands, lead["unit"], f"{crit['short_title']}: {lead['shape']} ROI per level",
                                    summary=summary))
    cal = dx.get("calibration")
    if isinstance(cal, Mapping):
        cv = calibration_view(cal)
        items = [("Method", cv["method"]), ("Phantom", cv["phantom"]), ("Unit", cv["unit"]),
                 ("Slope (HU per mg/cm³)", cv["slope"]), ("Intercept (HU)", cv["intercept"]),
                 ("R²", cv["r2"]), ("Rods / references", len(cv["points"]) or None)]
        cal_html = ("<section><h2>Calibration</h2><div class='charts'><div class='caltable'>"
                    + _facts_table([(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in items if v is not None])
                    + f"<div class='note'>{_esc(cv['equation'] or 'vBMD = (HU − intercept) / slope')}</div>"
                    + "".join(f"<div class='warn'>{_esc(w)}</div>" for w in cv["warnings"])
                    + "</div>" + calibration_svg(cal) + "</div></section>")
    else:
        cal_html = ("<section><h2>Calibration</h2><p class='note'>None: the values are uncalibrated HU. QCT vBMD "
                    "needs a phantom or internal calibration.</p></section>")
    chart_html = ("<section><h2>Values per level</h2><div class='charts'>" + "".join(charts) + "</div></section>"
                  if charts else "")

    # Level images.
    img_html = []
    img_note = ""
    if render_images:
        vol, img_note = load_volume_for_report(result_doc, volume, result_path=dx["source"].get("file") or "")
        if vol is not None:
            by_level: Dict[str, List[Mapping[str, object]]] = {}
            for r in result_doc.get("rows") or []:
                by_level.setdefault(str(r["level"]), []).append(r)
            for lv in [x["level"] for x in dx["levels"]]:
                if lv not in by_level:
                    continue
                try:
                    png, meta = render_level_image(vol, result_doc, lv, by_level[lv])
                except (OsteoROIError, ValueError, KeyError, IndexError, TypeError) as exc:
                    img_note += f" {lv}: image not rendered ({exc})."
                    continue
                info = lvl_info.get(lv, {})
                cap = f"<b>{_esc(lv)}</b> — field {meta['fov_mm']:.0f} mm, bar 10 mm"
                if info.get("excluded"):
                    cap += f" — <b>excluded</b>: {_esc(info['flag_text'])}"
                img_html.append(f"<figure><img class='roi-image' data-level='{_esc(lv)}' alt='{_esc(lv)} axial slice "
                                f"with ROI outlines' width='{IMAGE_PX}' height='{IMAGE_PX}' src='{data_uri(png)}'>"
                                f"<figcaption>{cap}</figcaption></figure>")
    else:
        img_note = "Level images not requested."
    legend = "".join(f"<span><i style='background: rgb{SHAPE_COLOURS[s]}'></i>{_esc(s)}</span>"
                     for s in shapes if s in SHAPE_COLOURS)
    img_section = ("<section><h2>Levels: axial slice with the measured ROIs</h2>"
                 + (f"<div class='legend note'>{legend} — radiological view: patient's right on the left, anterior "
                    f"up; window {WINDOW_LEVEL:g}/{WINDOW_WIDTH:g} HU.</div><div class='images'>" + "".join(img_html)
                    + "</div>" if img_html else "")
                 + (f"<p class='note'>{_esc(img_note.strip())}</p>" if img_note.strip() else "") + "</section>")

    parts.extend([img_section, fu_html, chart_html, cal_html])

    # Sources.
    src = "".join(f"<li><b>{_esc(c['title'])}</b>: {_esc(c['citation'])}"
                  + (f" <span class='note'>[{_esc(c['where'])}]</span>" if c.get("where") else "")
                  + ("" if c.get("builtin") else f" <span class='note'>(custom criteria file {_esc(c.get('file'))})</span>")
                  + "</li>" for c in dx["criteria"])
    parts.append(f"<footer><h2>Criteria and sources</h2><ul>{src}</ul><p>Follow-up: least significant change = 2.77 × "
                 "precision error (ISCD). Values are computed from the ROI statistics of the measurement file; "
                 "a category is only given for post-menopausal women and men aged 50 or over.</p></footer>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width, initial-scale=1'><title>" + _esc(title) + "</title><style>" + CSS
            + "</style></head><body><main>" + "".join(parts) + "</main></body></html>\n")


def write_report(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], html_path: Optional[str] = None,
                 volume=None, csv_path: Optional[str] = None, json_path: Optional[str] = None,
                 levels_csv_path: Optional[str] = None, overwrite: bool = False) -> List[str]:
    """Write the HTML report and/or tables atomically; return the paths written.

    ``volume``: a :class:`volume.Volume`, a CT path, or None (the result's ``volume.file``); without
    a readable CT the report says so instead of showing images. CSV/TSV by extension
    (``.tsv`` → tab-separated): ``csv_path`` holds the diagnosis table (one row per criterion × ROI
    type), ``levels_csv_path`` the per-level table.
    """
    paths = [p for p in (html_path, csv_path, json_path, levels_csv_path) if p]
    if len(set(os.path.abspath(p) for p in paths)) != len(paths):
        raise InputError("Two outputs have the same file name.", "Give each output its own file.")
    check_output_paths(paths, overwrite=overwrite)
    texts: Dict[str, str] = {}
    if html_path:
        texts[html_path] = build_html(diagnosis, result_doc, volume=volume)
    if csv_path:
        texts[csv_path] = to_table_text(verdict_rows(diagnosis), VERDICT_COLUMNS, _delimiter(csv_path))
    if levels_csv_path:
        texts[levels_csv_path] = to_table_text(diagnosis["rows"], LEVEL_COLUMNS, _delimiter(levels_csv_path))
    if json_path:
        texts[json_path] = to_json_text(diagnosis)
    write_atomically(texts)
    return list(texts)


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith((".tsv", ".tab")) else ","
