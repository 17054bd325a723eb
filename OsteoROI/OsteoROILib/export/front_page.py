"""The report's front page: patient and exam header, the impression, the reader's comment and the sign-off.

Read from the diagnosis document (patient, study) and the result's DICOM facts (name, ID); every
field a reader looks for is shown, "not recorded" where the source did not have it.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .impression import build_impression
from .style import CATEGORY_CSS, esc
from .wording import plain_words, readable_date

TITLE = "Lumbar spine bone density — CT report"
NOT_RECORDED = "not recorded"

#: Every header field, in the order shown (label, key of :func:`header_fields`).
HEADER_FIELDS = (("Patient", "name"), ("Patient ID", "patient_id"), ("Age", "age"), ("Sex", "sex"),
                 ("Study date", "study_date"), ("Scanner", "scanner"), ("Tube voltage", "kvp"),
                 ("Reconstruction kernel", "kernel"), ("Slice thickness", "slice_thickness"),
                 ("Contrast agent", "contrast"))


def _person_name(value) -> Optional[str]:
    """DICOM PersonName ``FAMILY^GIVEN^MIDDLE`` → "FAMILY, GIVEN MIDDLE"."""
    if not value:
        return None
    parts = [p.strip() for p in str(value).split("^")]
    given = " ".join(p for p in parts[1:3] if p)
    return f"{parts[0]}, {given}" if given else parts[0]


def header_fields(dx: Mapping[str, object], result_doc: Mapping[str, object],
                  identity: Optional[Mapping[str, object]] = None) -> Dict[str, str]:
    """The header's values as text, keyed as in :data:`HEADER_FIELDS` (``identity`` name/id override DICOM)."""
    pat, study = dx.get("patient") or {}, dx.get("study") or {}
    facts = ((result_doc.get("volume") or {}).get("dicom") or {}) if isinstance(result_doc, Mapping) else {}
    ident = dict(identity or {})
    age = pat.get("age_years")
    sex = {"F": "female", "M": "male", "O": "other"}.get(pat.get("sex") or "")
    kvp, st = study.get("kvp"), study.get("slice_thickness_mm")
    scanner = " ".join(str(x) for x in (study.get("manufacturer"), study.get("model")) if x)
    values = {
        "name": _person_name(ident.get("name") or facts.get("patient_name")),
        "patient_id": ident.get("id") or facts.get("patient_id"),
        "age": f"{age:g} years" if isinstance(age, (int, float)) else None,
        "sex": sex,
        "study_date": readable_date(study.get("study_date")),
        "scanner": scanner or None,
        "kvp": f"{kvp:g} kV" if isinstance(kvp, (int, float)) else None,
        "kernel": study.get("convolution_kernel"),
        "slice_thickness": (f"{st:g} mm" + ("" if study.get("slice_thickness_source", "").startswith("DICOM")
                                             else " (from the voxel size)")) if isinstance(st, (int, float)) else None,
        "contrast": study.get("contrast_agent"),
    }
    return {k: str(v) if v not in (None, "") else NOT_RECORDED for k, v in values.items()}


def _facts_table(pairs: Sequence[Tuple[str, object]], css: str = "") -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table class='{css}'>{rows}</table>"


def header_html(dx: Mapping[str, object], result_doc: Mapping[str, object],
                identity: Optional[Mapping[str, object]] = None) -> str:
    """Title, then the patient and exam facts in two columns."""
    fields = header_fields(dx, result_doc, identity)
    pairs = [(label, fields[key]) for label, key in HEADER_FIELDS]
    half = (len(pairs) + 1) // 2
    generated = readable_date(dx.get("created")) or "—"
    return (f"<header><h1>{esc(TITLE)}</h1><p class='sub'>Report prepared {esc(generated)} with OsteoROI "
            f"{esc(dx.get('osteoroi_version'))}. Decision support: to be read by a physician together with the "
            "images.</p><div class='facts header-facts'>" + _facts_table(pairs[:half], "hdr")
            + _facts_table(pairs[half:], "hdr") + "</div></header>")


def _line(css: str, text: str) -> str:
    return f"<p class='{css}'>{esc(text)}</p>" if text else ""


def _sign_off_html(imp: Mapping[str, object]) -> str:
    sign = imp.get("sign_off") or {}
    comment = sign.get("comment") or ""
    return ("<div class='signoff'><div class='comment'><b>Reader's comment</b><div class='comment-box'>"
            + (esc(comment) if comment else "&nbsp;") + "</div></div><table class='sign'><tr><td>Reader</td><td>"
            + esc(sign.get("reader") or "") + "</td></tr><tr><td>Date</td><td>"
            + esc(imp.get("signed_date_text") or sign.get("date") or "") + "</td></tr><tr><td>Signature</td><td>"
            "</td></tr></table></div>")


def impression_html(imp: Mapping[str, object]) -> str:
    """The impression: lead statement in large type, then one sentence per supporting fact, and the sign-off."""
    cls = CATEGORY_CSS.get(str(imp.get("category_class")), "cat-none")
    parts: List[str] = [f"<p class='big'><span class='{cls}'>{esc(imp['statement'])}</span></p>"]
    if imp.get("borderline"):
        parts.append(f"<p class='borderline'><b>Borderline.</b> {esc(str(imp['borderline'])[len('borderline: '):])}</p>")
    for key in ("level_rule", "fractures", "applicability", "supporting", "disagreeing", "not_assessable"):
        parts.append(_line(f"imp-{key.replace('_', '-')}", str(imp.get(key) or "")))
    return ("<section class='impression verdict'><h2>Impression</h2>" + "".join(parts) + _sign_off_html(imp)
            + "</section>")


def front_page_html(dx: Mapping[str, object], result_doc: Mapping[str, object], sign_off=None,
                    identity: Optional[Mapping[str, object]] = None) -> str:
    """Header and impression (with sign-off), the first thing the reader sees."""
    imp = build_impression(dx, sign_off)
    warnings = "".join(f"<div class='warn'>{esc(plain_words(w))}</div>" for w in dx.get("warnings") or [])
    return header_html(dx, result_doc, identity) + impression_html(imp) + (
        f"<section><h2>Warnings</h2>{warnings}</section>" if warnings else "")
