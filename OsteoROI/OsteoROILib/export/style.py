"""How the report looks: colours, the print-ready CSS, and the text and number formats of its cells.

Colours are one table for the level images, the legend and the charts, so an ROI type or a
category reads the same everywhere; the CSS prints on A4 with no table or figure split across
pages and colours kept.
"""
from __future__ import annotations

import html

#: ROI outline colours (RGB), also used for the legend.
SHAPE_COLOURS = {"oval": (230, 57, 70), "round": (255, 204, 0), "front": (0, 190, 255),
                 "left": (70, 210, 70), "right": (235, 90, 235)}
#: Fill of each criterion band in the charts, and the CSS class of each category's cell (same hues).
BAND_FILL = {"osteoporosis": "#f6c9c9", "possible_osteoporosis": "#fadcc0", "low_bone_mass": "#fcebb6",
             "indeterminate": "#fcebb6", "normal": "#cfe9cf"}
CATEGORY_CSS = {"osteoporosis": "cat-op", "possible_osteoporosis": "cat-pop", "low_bone_mass": "cat-low",
                "indeterminate": "cat-low", "normal": "cat-normal"}


def esc(x) -> str:
    """HTML-escaped text of ``x`` (None → empty), safe inside attributes too."""
    return html.escape("" if x is None else str(x), quote=True)


def number_text(v, d: int = 1) -> str:
    """``v`` with ``d`` decimals, an em dash when missing."""
    return "—" if v is None else f"{v:.{d}f}"


#: The report's style sheet (screen, and print on A4).
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
.verdict .big span { padding: 1px 4px; }
.borderline { background: #fff4d6; border-left: 4px solid #e0a800; padding: 4px 8px; }
.impression p { margin: 4px 0; }
.signoff { display: grid; grid-template-columns: 2fr 1fr; gap: 12px; margin-top: 8px; }
.comment-box { border: 1px solid var(--line); min-height: 44px; padding: 4px 6px; white-space: pre-wrap; }
table.sign td:first-child, table.hdr td:first-child { width: 38%; color: var(--muted); }
table.sign td { height: 22px; }
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
figure img + img { margin-top: 3px; }
figcaption { font-size: 11px; margin-top: 3px; }
figure.check { border: 3px solid #d9480f; }
.placement-check { font-size: 11px; color: #8a2c00; margin-top: 3px; }
.placement-check ul { margin: 2px 0; padding-left: 16px; }
.legend span { display: inline-block; margin-right: 10px; white-space: nowrap; }
.legend i { display: inline-block; width: 14px; height: 4px; margin-right: 4px; vertical-align: middle; }
footer { margin-top: 18px; color: var(--muted); font-size: 11px; }
table, .verdict, .charts, svg { break-inside: avoid; page-break-inside: avoid; }
section.calibration, section.level-images, footer li { break-inside: avoid; page-break-inside: avoid; }
table.residuals td, table.residuals th { font-size: 11px; padding: 1px 4px; }
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
  h1 { font-size: 15pt; } h2 { font-size: 11pt; margin: 10px 0 4px; }
  .verdict .big { font-size: 12.5pt; }
  table.hdr td, table.sign td { font-size: 8.5pt; padding: 1px 4px; }
  .caltable { flex: 0 1 300px; }
  .charts { gap: 8px; } .charts svg { max-width: 330px; height: auto; }
  footer { font-size: 7.5pt; } footer p, footer ul { margin: 2px 0; }
  table.diagnosis { break-inside: auto; page-break-inside: auto; }
  tr { break-inside: avoid; page-break-inside: avoid; }
}
"""

