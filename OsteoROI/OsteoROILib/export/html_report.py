"""The printable report of a diagnosis: one self-contained HTML file, with its CSV/TSV and JSON tables.

The HTML has no external resource: charts are inline SVG (:mod:`charts`) and the per-level images
are PNGs (:mod:`images`) embedded as ``data:`` URIs, so the file can be mailed, archived, and
printed to PDF from any browser (print CSS: A4, no table or figure split across pages, colours
kept; :mod:`style`). The report is built one section at a time, in reading order.

All outputs are written atomically (:func:`io.outputs.write_atomically`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..diagnosis.document import LEVEL_COLUMNS, VERDICT_COLUMNS, to_table_text, verdict_rows
from ..errors import InputError, OsteoROIError
from ..io.outputs import check_output_paths, write_atomically
from ..roi.overlays import placement_concerns
from .front_page import TITLE, front_page_html
from .impression import borderline
from .calibration_html import calibration_section
from .charts import bar_chart_svg
from .sagittal import render_sagittal_image
from .trend_chart import trend_svg
from .images import (IMAGE_PX, OVERLAY_COLOURS, WINDOW_LEVEL, WINDOW_WIDTH, data_uri, load_volume_for_report,
                     render_level_image)
from .measurement import to_json_text
from .pdf import find_browser, write_pdf
from .style import CATEGORY_CSS, CSS, SHAPE_COLOURS, esc, number_text
from .wording import plain_words, readable_date



# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------
def _cat_cell(dx: Mapping[str, object], v: Mapping[str, object]) -> str:
    if v.get("category"):
        cls = CATEGORY_CSS.get(str(v.get("category_class")), "cat-none")
        flag = "<br><span class='note'>borderline</span>" if borderline(dx, v) else ""
        return f'<td class="{cls}">{esc(v["category"])}{flag}</td>'
    if v.get("status") == "ok" and not v.get("applicable"):
        return '<td class="cat-none">values only (not categorised)</td>'
    return f'<td class="cat-none">{esc(v.get("status"))}</td>'


def _facts_table(pairs: Sequence[Tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v if v not in (None, '') else '—')}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def _lead_shape(diagnosis: Mapping[str, object], result_doc) -> Optional[str]:
    lead = diagnosis.get("lead") or {}
    if lead.get("shape"):
        return lead["shape"]
    shapes = [r["shape"] for r in diagnosis.get("rows") or []]
    return shapes[0] if shapes else None


def _shapes(rows: Sequence[Mapping[str, object]]) -> List[str]:
    """The ROI types of the per-level rows, in order of first appearance."""
    shapes: List[str] = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    return shapes


def _notes(texts, css: str = "note", prefix: str = "") -> str:
    return "".join(f"<div class='{css}'>{prefix}{esc(t)}</div>" for t in texts or [])


# --------------------------------------------------------------------------------------------
# Sections, in reading order
# --------------------------------------------------------------------------------------------
def _followup_cell(s: Optional[Mapping[str, object]]) -> str:
    if s and s.get("change_pct") is not None:
        return (f"<td class='num'>{s['change']:+.2f} ({s['change_pct']:+.1f} %)<br>"
                f"<span class='note'>LSC {s['lsc_pct']:.2f} %: {esc(s['verdict'])}</span></td>")
    return f"<td class='note'>{esc((s or {}).get('note', '—'))}</td>"


def _diagnosis_table(dx: Mapping[str, object]) -> str:
    """One row per criterion × ROI type, with the rule applied and the change since the prior exam."""
    fu = {(s["criterion_id"], s["shape"]): s for s in ((dx.get("followup") or {}).get("summary") or [])}
    has_fu = bool(fu)
    head = ("<tr><th>Criterion</th><th>ROI</th><th>Levels (n)</th><th class='num'>Value</th><th>Category</th>"
            "<th>Rule applied</th>" + ("<th class='num'>Change vs prior</th>" if has_fu else "") + "</tr>")
    body = []
    for v in dx["verdicts"]:
        levels = ", ".join(v["levels_used"]) + f" ({v['n_levels']})" if v["levels_used"] else "—"
        val = f"{v['value']:.2f} {v['unit']}" if v.get("value") is not None else "—"
        rule = esc(v.get("decision") or v["rule"]) + _notes(v.get("notes"))
        fu_cell = _followup_cell(fu.get((v["criterion_id"], v["shape"]))) if has_fu else ""
        body.append(f"<tr class='{'lead' if v.get('lead') else ''}'><td>{esc(v['short_title'])}</td>"
                    f"<td>{esc(v['shape'] or '—')}</td><td>{esc(levels)}</td><td class='num'>{esc(val)}</td>"
                    f"{_cat_cell(dx, v)}<td>{rule}</td>{fu_cell}</tr>")
    return ("<section><h2>Diagnosis table</h2><table class='diagnosis'><thead>" + head + "</thead><tbody>"
            + "".join(body) + "</tbody></table>"
            + _notes(dx.get("notes")) + "</section>")


def _level_row(dx: Mapping[str, object], info: Mapping[str, object], shapes: Sequence[str], with_vbmd: bool) -> str:
    lv = info["level"]
    rows = dx["rows"]
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
        n = f"<br><span class='note'>n = {r['n_voxels']}</span>" if r.get("n_voxels") is not None else ""
        txt = f"{number_text(r['mean_hu'])} ± {number_text(r['sd_hu'])}{n}"
        if with_vbmd:
            txt += f"<br>{number_text(r.get('vbmd_mg_cm3'))}"
        cells.append(f"<td class='num'>{txt}</td>")
    short = {c["id"]: c["short_title"] for c in dx["criteria"]}
    return (f"<tr class='{'excluded' if info['excluded'] else ''}'><td>{esc(lv)}</td><td>{esc(status)}</td>"
            + "".join(cells) + f"<td>{esc(', '.join(sorted(short.get(u, u) for u in used)) or '—')}</td></tr>")


def _level_table(dx: Mapping[str, object]) -> str:
    """Per-level values: rows = levels, columns = ROI types; excluded levels stay, hatched."""
    rows = dx["rows"]
    shapes = _shapes(rows)
    with_vbmd = any(r.get("vbmd_mg_cm3") is not None for r in rows)
    head = "<tr><th>Level</th><th>Status</th>" + "".join(
        f"<th class='num'>{esc(s)}<br><span class='note'>HU ± SD{' / vBMD' if with_vbmd else ''}</span></th>"
        for s in shapes) + "<th>Used by</th></tr>"
    body = [_level_row(dx, info, shapes, with_vbmd) for info in dx["levels"]]
    row_warn = sorted({w for r in rows for w in r.get("warnings") or []})
    unit_note = f" vBMD in {rows[0].get('vbmd_unit') or 'mg/cm3'}." if with_vbmd else ""
    return ("<section><h2>Per-level values</h2><table class='levels'>" + head + "".join(body) + "</table>"
            f"<div class='note'>Mean HU ± standard deviation and number of voxels (n) per ROI type.{esc(unit_note)} "
            "Excluded levels stay in the "
            "table with their reason and are not used by any criterion.</div>"
            + _notes(row_warn, prefix="⚠ ") + "</section>")


def _level_figure(lv: str, png: bytes, sag: bytes, meta: Mapping[str, object], info: Mapping[str, object],
                  concerns: Sequence[str]) -> str:
    """One level's axial and sagittal pictures; a level whose placement raised concerns is framed
    and its reasons are printed with it, so the reader looks before using its values."""
    cap = f"<b>{esc(lv)}</b> — field {meta['fov_mm']:.0f} mm, bar 10 mm"
    if info.get("excluded"):
        cap += f" — <b>excluded</b>: {esc(info['flag_text'])}"
    check = ("<div class='placement-check'><b>Check the placement:</b><ul>"
             + "".join(f"<li>{esc(c)}</li>" for c in concerns) + "</ul></div>") if concerns else ""
    return (f"<figure class='level-figure{' check' if concerns else ''}' data-level='{esc(lv)}'>"
            f"<img class='roi-image' data-level='{esc(lv)}' alt='{esc(lv)} axial slice with the body outline, AP "
            f"axis and ROI outlines' width='{IMAGE_PX}' height='{IMAGE_PX}' src='{data_uri(png)}'>"
            f"<img class='sag-image' data-level='{esc(lv)}' alt='{esc(lv)} sagittal slice with the endplates and the "
            f"ROI plane' width='{IMAGE_PX}' height='{IMAGE_PX}' src='{data_uri(sag)}'>"
            f"<figcaption>{cap}</figcaption>{check}</figure>")


def _images(dx: Mapping[str, object], result_doc: Mapping[str, object], volume) -> Tuple[List[str], str]:
    """The level figures, and a note on any level (or the CT) that could not be shown."""
    vol, img_note = load_volume_for_report(result_doc, volume, result_path=dx["source"].get("file") or "")
    if vol is None:
        return [], img_note
    lvl_info = {lv["level"]: lv for lv in dx["levels"]}
    by_level: Dict[str, List[Mapping[str, object]]] = {}
    for r in result_doc.get("rows") or []:
        by_level.setdefault(str(r["level"]), []).append(r)
    figures = []
    for lv in [x["level"] for x in dx["levels"]]:
        if lv not in by_level:
            continue
        try:
            png, meta = render_level_image(vol, result_doc, lv, by_level[lv])
            sag, _ = render_sagittal_image(vol, result_doc, lv, by_level[lv])
        except (OsteoROIError, ValueError, KeyError, IndexError, TypeError) as exc:
            img_note += f" {lv}: image not rendered ({exc})."
            continue
        concerns = placement_concerns(result_doc["levels"][lv], by_level[lv])
        figures.append(_level_figure(lv, png, sag, meta, lvl_info.get(lv, {}), concerns))
    return figures, img_note


def _legend(dx: Mapping[str, object], result_doc: Mapping[str, object]) -> str:
    """What the pictures show, in plain words, with the colours they are drawn in."""
    def swatch(colour, text):
        return f"<span><i style='background: rgb{tuple(colour)}'></i>{esc(text)}</span>"

    rois = "".join(swatch(SHAPE_COLOURS[s], f"{s} ROI") for s in _shapes(dx["rows"]) if s in SHAPE_COLOURS)
    shown = "".join(swatch(OVERLAY_COLOURS[k], text) for k, text in (
        ("body outline", "body outline"), ("trabecular outline", "trabecular outline (inside the cortex)"),
        ("AP axis", "AP axis, arrow towards anterior"), ("endplates", "endplates found"),
        ("plane", "measured plane"), ("slab", "slab faces (the ROIs' thickness)")))
    if any(r.get("bone_islands_excluded") for r in result_doc.get("rows") or []):
        shown += swatch(OVERLAY_COLOURS["bone island left out"], "bone island left out of the ROIs (with its margin)")
    return (f"<div class='legend note'>{rois}{shown} — axial (top): radiological view, patient's right on the "
            f"left, anterior up; sagittal (bottom): through the body along its AP axis, anterior on the left, "
            f"superior up; window {WINDOW_LEVEL:g}/{WINDOW_WIDTH:g} HU. A framed level raised placement "
            f"concerns: its reasons are printed under its pictures.</div>")


def _images_section(dx: Mapping[str, object], result_doc: Mapping[str, object], volume, render_images: bool) -> str:
    """Each level's axial slice with the body outline, AP axis and measured ROIs, and its sagittal
    slice with the endplates, the plane and the slab, with the legend and display window."""
    img_html, img_note = _images(dx, result_doc, volume) if render_images else ([], "Level images not requested.")
    return ("<section class='level-images'><h2>Levels: axial slice with the body outline, AP axis and measured "
            "ROIs (top) and sagittal slice with the endplates and the ROI plane (bottom)</h2>"
            + (_legend(dx, result_doc) + "<div class='images'>" + "".join(img_html) + "</div>" if img_html else "")
            + (f"<p class='note'>{esc(img_note.strip())}</p>" if img_note.strip() else "") + "</section>")


def _followup_section(dx: Mapping[str, object], result_doc: Mapping[str, object]) -> str:
    """Change per level on the lead ROI type against the LSC (QCT_BRIEF §5)."""
    f = dx.get("followup")
    if not f:
        return ""
    lead_shape = _lead_shape(dx, result_doc)
    q = "vbmd" if any(x["quantity"] == "vbmd" for x in f["levels"]) and dx.get("quantity") == "vbmd" else "hu"
    lrows = [x for x in f["levels"] if x["shape"] == lead_shape and x["quantity"] == q]
    head = ("<tr><th>Level</th><th class='num'>Prior</th><th class='num'>Current</th><th class='num'>Change</th>"
            "<th class='num'>% change</th><th>Verdict (LSC " + f"{f['lsc_pct']:.2f} %)" + "</th></tr>")
    body = "".join(
        f"<tr><td>{esc(x['level'])}</td><td class='num'>{number_text(x['prior'], 2)}</td><td class='num'>"
        f"{number_text(x['current'], 2)}</td><td class='num'>{'—' if x['change'] is None else format(x['change'], '+.2f')}"
        f"</td><td class='num'>{'—' if x['change_pct'] is None else format(x['change_pct'], '+.2f')}</td>"
        f"<td>{esc(x['verdict'] or x['note'])}</td></tr>" for x in lrows)
    interval = f"; interval {f['interval_days']} days" if f.get("interval_days") is not None else ""
    return ("<section><h2>Follow-up</h2>"
            f"<p>Prior exam: {esc(os.path.basename(str(f['prior'].get('file') or '')) or '—')} "
            f"(study date {esc(readable_date(f['prior'].get('study_date')) or 'unknown')}{esc(interval)}). Least "
            f"significant change LSC = 2.77 × precision error {f['precision_pct']:g} % = {f['lsc_pct']:.2f} % (ISCD).</p>"
            + _notes(f.get("warnings"), "warn")
            + f"<table><caption class='note'>{esc(lead_shape)} ROI, {'vBMD' if q == 'vbmd' else 'HU'}</caption>"
            + head + body + "</table>" + _notes(f.get("notes")) + f"<div class='charts'>{trend_svg(dx)}</div></section>")


def _values_chart(dx: Mapping[str, object]) -> str:
    """The lead verdict's ROI type per level, as bars over the lead criterion's bands."""
    verdicts = dx["verdicts"]
    lead = verdicts[0] if verdicts else None
    if not (lead and lead.get("shape")):
        return ""
    key = "vbmd_mg_cm3" if lead["quantity"] == "vbmd" else "mean_hu"
    crit = next(c for c in dx["criteria"] if c["id"] == lead["criterion_id"])
    # The bars are drawn in the cut-offs' material: converted as the verdict was (Goodsitt 1992), and
    # with no bands when the verdict could not compare them (other material, implausible value).
    bands = [] if lead.get("not_categorised") else crit["bands_by_shape"][lead["shape"]]
    conversion = lead.get("material_conversion") or {}
    factor = (conversion["value_converted"] / conversion["value_measured"]
              if conversion.get("value_measured") else 1.0)
    data = []
    for info in dx["levels"]:
        lv = info["level"]
        r = next((x for x in dx["rows"] if x["level"] == lv and x["shape"] == lead["shape"]), None)
        value = None if r is None or r.get(key) is None else r[key] * factor
        data.append((lv, value, info["flag_text"] if info["excluded"] else ""))
    summary = None
    if lead.get("value") is not None:
        summary = (lead["value"], f"{'mean ' if lead['n_levels'] > 1 else ''}{'+'.join(lead['levels_used'])} = "
                                  f"{lead['value']:.1f}")
    chart = bar_chart_svg(data, bands, lead["unit"], f"{crit['short_title']}: {lead['shape']} ROI per level",
                          summary=summary)
    return "<section><h2>Values per level</h2><div class='charts'>" + chart + "</div></section>"


def _sources(dx: Mapping[str, object]) -> str:
    """Method and references, in plain words, at the end."""
    src = "".join(f"<li><b>{esc(c['title'])}</b>: {esc(c['citation'])}"
                  + ("" if c.get("builtin") else f" <span class='note'>(custom criteria file {esc(c.get('file'))})</span>")
                  + "</li>" for c in dx["criteria"])
    return ("<footer><h2>Method and references</h2><p>The reader marks each lumbar vertebra; the software finds the "
            "vertebral body's mid-height axial slice and its outline, and places five regions of interest (oval, "
            "round, front, left and right) in the anterior two thirds of the body, away from the cortex and the "
            "posterior venous plexus. The mean and standard deviation of the CT numbers (HU) in each region are "
            "reported; with a calibration they are converted to volumetric bone mineral density (vBMD). Each "
            "criterion combines the levels as stated in its rule. A category is given only for post-menopausal "
            "women and men aged 50 or over. A value within the least significant change (2.77 × the site's "
            "precision error) of a cut-off is called borderline. Follow-up changes are compared with the same "
            f"least significant change.</p><ul>{src}</ul></footer>")


def build_html(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], volume=None,
               render_images: bool = True, *, sign_off=None, identity: Optional[Mapping[str, object]] = None) -> str:
    """The report as one self-contained HTML string.

    ``sign_off``: an :class:`impression.SignOff` (reader, date, comment) or None for an empty
    sign-off block; ``identity``: ``{"name": ..., "id": ...}`` over the DICOM patient name and ID.
    """
    dx = diagnosis
    parts = [front_page_html(dx, result_doc, sign_off=sign_off, identity=identity),
             _diagnosis_table(dx), _level_table(dx),
             _images_section(dx, result_doc, volume, render_images), _followup_section(dx, result_doc),
             _values_chart(dx), calibration_section(dx), _sources(dx)]
    # Every text passes through plain_words: no internal source label reaches the reader.
    return plain_words("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
                       "content='width=device-width, initial-scale=1'><title>" + esc(TITLE) + "</title><style>" + CSS
                       + "</style></head><body><main>" + "".join(parts) + "</main></body></html>\n")


def write_report(diagnosis: Mapping[str, object], result_doc: Mapping[str, object], html_path: Optional[str] = None,
                 volume=None, csv_path: Optional[str] = None, json_path: Optional[str] = None,
                 levels_csv_path: Optional[str] = None, overwrite: bool = False, *, sign_off=None,
                 identity: Optional[Mapping[str, object]] = None, pdf_path: Optional[str] = None,
                 page_size: str = "A4", browser: Optional[str] = None) -> List[str]:
    """Write the HTML report and/or tables atomically; return the paths written.

    ``volume``: a :class:`volume.Volume`, a CT path, or None (the result's ``volume.file``); without
    a readable CT the report says so instead of showing images. CSV/TSV by extension
    (``.tsv`` → tab-separated): ``csv_path`` holds the diagnosis table (one row per criterion × ROI
    type), ``levels_csv_path`` the per-level table. ``sign_off``/``identity``: see :func:`build_html`.
    ``pdf_path``: the same report printed to PDF (:func:`pdf.write_pdf`, on ``page_size`` A4 or Letter).
    """
    paths = [p for p in (html_path, csv_path, json_path, levels_csv_path, pdf_path) if p]
    if len(set(os.path.abspath(p) for p in paths)) != len(paths):
        raise InputError("Two outputs have the same file name.", "Give each output its own file.")
    check_output_paths(paths, overwrite=overwrite)
    texts: Dict[str, str] = {}
    html_text = build_html(diagnosis, result_doc, volume=volume, sign_off=sign_off, identity=identity) \
        if (html_path or pdf_path) else ""
    if pdf_path:
        find_browser(browser)  # before anything is written: no browser, no files
    if html_path:
        texts[html_path] = html_text
    if csv_path:
        texts[csv_path] = to_table_text(verdict_rows(diagnosis), VERDICT_COLUMNS, _delimiter(csv_path))
    if levels_csv_path:
        texts[levels_csv_path] = to_table_text(diagnosis["rows"], LEVEL_COLUMNS, _delimiter(levels_csv_path))
    if json_path:
        texts[json_path] = to_json_text(diagnosis)
    write_atomically(texts, overwrite=overwrite)  # exclusive create unless overwrite
    if pdf_path:
        write_pdf(html_text, pdf_path, page_size=page_size, browser=browser, overwrite=overwrite)
    return list(texts) + ([pdf_path] if pdf_path else [])


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith((".tsv", ".tab")) else ","
