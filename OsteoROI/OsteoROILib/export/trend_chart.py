"""The follow-up trend as inline SVG: the lead value at the prior and the current exam, against the LSC band.

The band is the prior value ± the least significant change (LSC = 2.77 × precision, ISCD;
QCT_BRIEF §5): a current point outside it is a significant change, inside it is stable. The lead
criterion's cut-offs are drawn as dashed lines so the trend reads against the categories. Values
come from the diagnosis document's follow-up summary; nothing is recomputed but the drawing.
"""
from __future__ import annotations

from typing import Mapping, Optional

from .style import esc
from .wording import readable_date

WIDTH, HEIGHT = 360, 220
ML, MR, MT, MB = 52, 110, 26, 34


def _lead_summary(dx: Mapping[str, object]) -> Optional[Mapping[str, object]]:
    lead = dx.get("lead") or {}
    for s in (dx.get("followup") or {}).get("summary") or []:
        if s["criterion_id"] == lead.get("criterion_id") and s["shape"] == lead.get("shape"):
            return s if s.get("change_pct") is not None and s.get("current") is not None else None
    return None


def _cutoffs(dx: Mapping[str, object], s: Mapping[str, object]):
    crit = next((c for c in dx.get("criteria") or [] if c["id"] == s["criterion_id"]), {})
    bands = (crit.get("bands_by_shape") or {}).get(s["shape"]) or []
    return [b["upper"] for b in bands[:-1] if b.get("upper") is not None]


def trend_svg(dx: Mapping[str, object]) -> str:
    """The lead value's trend (prior → current) over the LSC band; empty without a comparable prior."""
    s = _lead_summary(dx)
    if s is None:
        return ""
    prior, current, lsc = float(s["prior"]), float(s["current"]), float(s["lsc_pct"])
    band_lo, band_hi = prior * (1 - lsc / 100.0), prior * (1 + lsc / 100.0)
    cuts = _cutoffs(dx, s)
    lo = min([band_lo, current] + cuts) * 0.9
    hi = max([band_hi, current] + cuts) * 1.1
    pw, ph = WIDTH - ML - MR, HEIGHT - MT - MB

    def y(v: float) -> float:
        return MT + ph - (v - lo) / (hi - lo) * ph

    x0, x1 = ML + pw * 0.2, ML + pw * 0.8
    dates = [readable_date(((dx.get("followup") or {}).get("prior") or {}).get("study_date")) or "prior",
             readable_date((dx.get("study") or {}).get("study_date")) or "current"]
    out = [f'<svg class="chart trend" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="follow-up trend">',
           f'<text x="{ML}" y="16" class="svg-title">Trend: {esc(s["unit"])}, {esc(s["shape"])} ROI</text>',
           f'<rect class="lsc-band" x="{ML}" y="{y(band_hi):.1f}" width="{pw}" height="{y(band_lo) - y(band_hi):.1f}" '
           f'fill="#dfe8f5"/><text x="{ML + pw + 6}" y="{y(prior) + 4:.1f}" class="svg-band">prior ± LSC</text>']
    for c in cuts:
        out.append(f'<line class="cutoff" x1="{ML}" x2="{ML + pw}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#a33" '
                   f'stroke-dasharray="4 3"/><text x="{ML + pw + 6}" y="{y(c) + 4:.1f}" class="svg-note">'
                   f'cut-off {c:g}</text>')
    out.append(f'<line x1="{x0:.1f}" y1="{y(prior):.1f}" x2="{x1:.1f}" y2="{y(current):.1f}" stroke="#2b4c7e" '
               'stroke-width="2"/>')
    for x, v, d, cls in ((x0, prior, dates[0], "prior"), (x1, current, dates[1], "current")):
        out.append(f'<circle class="{cls}" cx="{x:.1f}" cy="{y(v):.1f}" r="4.5" fill="#2b4c7e"/>'
                   f'<text x="{x:.1f}" y="{y(v) - 8:.1f}" text-anchor="middle" class="svg-val">{v:.1f}</text>'
                   f'<text x="{x:.1f}" y="{HEIGHT - 12}" text-anchor="middle" class="svg-tick">{esc(d)}</text>')
    out.append(f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{MT + ph}" stroke="#333"/>'
               f'<text x="{ML}" y="{HEIGHT - 1}" class="svg-note">{esc(s.get("verdict") or "")} '
               f'({s["change_pct"]:+.1f} %, LSC {lsc:.2f} %)</text></svg>')
    return "".join(out)
