"""The report's charts as inline SVG: values per level over a criterion's bands, and the calibration fit.

Inline SVG keeps the report self-contained (no external resource, prints from any browser).
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .style import BAND_FILL, esc


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


def _ticks(lo: float, hi: float, slack: float = 0.0) -> Iterator[float]:
    """Axis tick values: multiples of a round step from ``lo`` up to ``hi`` (+ ``slack``)."""
    step = _nice_step(hi - lo)
    t = math.ceil(lo / step) * step
    while t <= hi + slack:
        yield t
        t += step


def _band_areas(bands: Sequence[Mapping[str, object]], lo: float, hi: float, y, ml: float, pw: float) -> List[str]:
    """The criterion's bands as coloured areas, each labelled at the right of the plot."""
    out: List[str] = []
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
            f'<tspan x="{ml + pw + 6}" dy="{0 if i == 0 else 13}">{esc(t)}</tspan>' for i, t in enumerate(lines))
            + "</text>")
    return out


def _bars(levels: Sequence[Tuple[str, Optional[float], str]], y, ml: float, mt: float, pw: float,
          ph: float) -> List[str]:
    """One bar per level with its value; an excluded level hatched, a missing value said."""
    out: List[str] = []
    n = max(1, len(levels))
    slot = pw / n
    bw = min(60.0, slot * 0.6)
    for idx, (lv, v, excl) in enumerate(levels):
        cx = ml + slot * (idx + 0.5)
        out.append(f'<text x="{cx:.1f}" y="{mt + ph + 16}" text-anchor="middle" class="svg-tick">{esc(lv)}</text>')
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
    return out


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
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="{ml}" y="16" class="svg-title">{esc(title)}</text>',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ddd"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>']
    out += _band_areas(bands, lo, hi, y, ml, pw)
    for t in _ticks(lo, hi, slack=1e-9):
        out.append(f'<line x1="{ml - 4}" x2="{ml + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#0002"/>'
                   f'<text x="{ml - 6}" y="{y(t) + 4:.1f}" text-anchor="end" class="svg-tick">{t:g}</text>')
    for band in bands[:-1]:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(band["upper"]):.1f}" y2="{y(band["upper"]):.1f}" '
                   f'stroke="#555" stroke-width="1"/>')
    out += _bars(levels, y, ml, mt, pw, ph)
    if summary is not None:
        sv, label = summary
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y(sv):.1f}" y2="{y(sv):.1f}" stroke="#000" '
                   f'stroke-dasharray="6 4" stroke-width="1.5"/>'
                   f'<line x1="{ml}" x2="{ml + 22}" y1="{height - 10}" y2="{height - 10}" stroke="#000" stroke-dasharray="6 4" '
                   f'stroke-width="1.5"/><text x="{ml + 28}" y="{height - 6}" class="svg-val">{esc(label)}</text>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="#333"/>'
               f'<text transform="translate(12 {mt + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
               f'class="svg-tick">{esc(unit)}</text></svg>')
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
    for t in _ticks(x_lo, x_hi):
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{mt}" y2="{mt + ph}" stroke="#0001"/>'
                   f'<text x="{X(t):.1f}" y="{mt + ph + 14}" text-anchor="middle" class="svg-tick">{t:g}</text>')
    for t in _ticks(y_lo, y_hi):
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#0001"/>'
                   f'<text x="{ml - 5}" y="{Y(t) + 4:.1f}" text-anchor="end" class="svg-tick">{t:g}</text>')
    if isinstance(slope, (int, float)) and isinstance(icpt, (int, float)):
        out.append(f'<line x1="{X(x_lo):.1f}" y1="{Y(icpt + slope * x_lo):.1f}" x2="{X(x_hi):.1f}" '
                   f'y2="{Y(icpt + slope * x_hi):.1f}" stroke="#c0392b" stroke-width="1.5"/>')
    for d, h, name in pts:
        out.append(f'<circle cx="{X(d):.1f}" cy="{Y(h):.1f}" r="4" fill="#2b4c7e"><title>{esc(name)} {d:g} '
                   f'{esc(unit)}: {h:.1f} HU</title></circle>')
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" class="svg-tick">density '
               f'({esc(unit)})</text><text transform="translate(14 {mt + ph / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle" class="svg-tick">mean HU</text></svg>')
    return "".join(out)

