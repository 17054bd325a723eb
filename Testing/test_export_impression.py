"""The report's impression and front page: one lead statement consistent with the verdicts, the borderline
flag, supporting and disagreeing criteria, the sign-off, every header field, and no internal strings.

Oracles: hand-made result documents whose categories follow from the published cut-offs by hand
(QCT 80/120 mg/cm³, seed-002 oval ≤ 91.63 HU, Pickhardt L1 > 200 HU normal; QCT_BRIEF §2-3) and
hand arithmetic of the least significant change (2.77 × precision, QCT_BRIEF §5).
"""
from __future__ import annotations

import re

import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.errors import InputError
from OsteoROILib.export.front_page import HEADER_FIELDS, NOT_RECORDED, header_fields
from OsteoROILib.export.html_report import build_html
from OsteoROILib.export.impression import SignOff, borderline, build_impression, impression_lines
from OsteoROILib.export.wording import INTERNAL_MARKERS, plain_words, readable_date

WOMAN = {"age": 70, "sex": "F"}


def make_doc(vbmd=None, hu=None, vbmd_sd=1.0, dicom=None, shapes=("oval",)):
    """A minimal result: per level vBMD (optional) and HU, for each shape."""
    rows = []
    for lv, h in hu.items():
        for s in shapes:
            row = {"level": lv, "shape": s, "mean_hu": h, "sd_hu": 12.5, "median_hu": h, "n_voxels": 321,
                   "area_mm2": 100.0, "center_ras": [0.0, 0.0, 0.0], "slice_index": 0, "warnings": []}
            if vbmd:
                row.update(vbmd_mg_cm3=vbmd[lv], vbmd_unit="mg/cm3 K2HPO4", vbmd_sd=vbmd_sd)
            rows.append(row)
    doc = {"schema": "osteoroi-measurement/1", "osteoroi_version": "0", "created": "2024-01-01T00:00:00+00:00",
           "volume": {"file": "", "size": [10, 10, 10], "spacing_mm": [1.0, 1.0, 1.0],
                      "ijk_to_ras": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                      "dicom": dict({"kvp": 120.0}, **(dicom or {}))},
           "settings": {"shapes": list(shapes), "slab_mm": 1.0}, "levels": {}, "rows": rows, "warnings": []}
    if vbmd:
        doc["calibration"] = {"method": "ols", "kind": "phantom", "unit": "K2HPO4", "vbmd_unit": "mg/cm3 K2HPO4",
                              "slope_hu_per_mg_cm3": 1.0, "intercept_hu": 0.0, "r2": 0.999, "warnings": []}
    return doc


def disagreeing_doc():
    """QCT L1+L2 = 100 mg/cm³ (low bone mass), oval L1-L4 mean (210+3×40)/4 = 82.5 HU ≤ 91.63 (osteoporosis),
    Pickhardt L1 210 HU > 200 (normal)."""
    return make_doc(vbmd={"L1": 100.0, "L2": 100.0, "L3": 100.0, "L4": 100.0},
                    hu={"L1": 210.0, "L2": 40.0, "L3": 40.0, "L4": 40.0})


def test_impression_leads_with_qct_and_names_supporting_and_disagreeing():
    dx = build_diagnosis(disagreeing_doc(), patient=WOMAN)
    imp = build_impression(dx)
    assert imp["criterion_id"] == "qct-acr2018"
    assert imp["category"] == "low bone mass (osteopenia)"
    assert "100.0 mg/cm3 K2HPO4" in imp["statement"] and "low bone mass" in imp["statement"]
    assert imp["statement"].count(".") == 2  # one sentence (the decimal point and the full stop)
    assert imp["disagreeing"].startswith("Disagreeing: ")
    assert "L1-L4 HU (Wang et al.)" in imp["disagreeing"] and "82.5 HU osteoporosis" in imp["disagreeing"]
    assert "L1 HU (Pickhardt)" in imp["disagreeing"] and "210.0 HU osteoporosis unlikely" in imp["disagreeing"]
    assert imp["supporting"] == ""
    assert imp["borderline"] == ""  # 100 is 20 from either cut-off; LSC 8.31 % of 120 = 9.97


def test_impression_is_the_lead_verdict_for_every_lead():
    for criteria, lead_cat in ((["seed002", "qct"], "osteoporosis"),
                               (["pickhardt", "qct"], "osteoporosis unlikely (> 200 HU: NPV 99 %)")):
        dx = build_diagnosis(disagreeing_doc(), criteria=criteria, patient=WOMAN)
        imp = build_impression(dx)
        assert imp["category"] == lead_cat == dx["verdicts"][0]["category"]
        assert "QCT vBMD (L1+L2): oval 100.0 mg/cm3 K2HPO4 low bone mass" in imp["disagreeing"]


def test_agreeing_criteria_are_supporting():
    # QCT 70 (osteoporosis); oval mean 80 HU ≤ 91.63 (osteoporosis); L1 80 HU ≤ 110 (osteoporosis likely)
    doc = make_doc(vbmd={lv: 70.0 for lv in ("L1", "L2", "L3", "L4")}, hu={lv: 80.0 for lv in ("L1", "L2", "L3", "L4")})
    imp = build_impression(build_diagnosis(doc, patient=WOMAN))
    assert imp["category"] == "osteoporosis" and imp["disagreeing"] == ""
    assert "Wang et al." in imp["supporting"] and "Pickhardt" in imp["supporting"]


@pytest.mark.parametrize("value, precision, expect", [
    (86.0, 3.0, True),    # |86 - 80| = 6 ≤ 0.0831 × 80 = 6.648
    (87.0, 3.0, False),   # 7 > 6.648
    (87.0, 4.0, True),    # LSC 11.08 % of 80 = 8.864
    (111.0, 3.0, True),   # |111 - 120| = 9 ≤ 9.972
    (109.0, 3.0, False),  # 11 > 9.972
    (79.0, 3.0, True),    # the other side of the cut-off too
])
def test_borderline_within_the_least_significant_change(value, precision, expect):
    doc = make_doc(vbmd={"L1": value, "L2": value}, hu={"L1": 150.0, "L2": 150.0}, vbmd_sd=0.0)
    dx = build_diagnosis(doc, patient=WOMAN, precision_pct=precision)
    lead = dx["verdicts"][0]
    assert (borderline(dx, lead) is not None) is expect
    imp = build_impression(dx)
    assert bool(imp["borderline"]) is expect
    # the flag never changes the category the criterion gave
    assert imp["category"] == lead["category"]
    if expect:
        cut = 80 if value < 100 else 120
        assert f"{cut:g} mg/cm3 K2HPO4 cut-off" in imp["borderline"] and "least significant change" in imp["borderline"]


def test_borderline_within_the_calibration_uncertainty():
    # 90 is 10 from 80; LSC margin 6.648, calibration 1.96 × 5.5 = 10.78 → borderline by the calibration
    doc = make_doc(vbmd={"L1": 90.0, "L2": 90.0}, hu={"L1": 150.0, "L2": 150.0}, vbmd_sd=5.5)
    dx = build_diagnosis(doc, patient=WOMAN)
    b = borderline(dx, dx["verdicts"][0])
    assert b is not None and b["cutoff"] == 80 and b["margin"] == pytest.approx(1.96 * 5.5)
    assert "uncertainty of the calibration" in build_impression(dx)["borderline"]
    dx = build_diagnosis(make_doc(vbmd={"L1": 90.0, "L2": 90.0}, hu={"L1": 150.0, "L2": 150.0}, vbmd_sd=4.0),
                         patient=WOMAN)
    assert borderline(dx, dx["verdicts"][0]) is None  # 1.96 × 4 = 7.84 < 10


def test_not_applicable_patient_gets_no_category_in_the_impression():
    dx = build_diagnosis(disagreeing_doc(), patient={"age": 40, "sex": "M"})
    imp = build_impression(dx)
    assert imp["category"] is None and "not categorised" in imp["statement"]
    assert "40" in imp["applicability"] and "< 50" in imp["applicability"]


def test_a_lead_without_value_has_no_agreeing_or_disagreeing_criteria():
    # QCT needs two valid levels among L1-L4: L2-L4 excluded leaves one, so the lead has no value
    dx = build_diagnosis(disagreeing_doc(), patient=WOMAN, exclusions=["L2=artefact", "L3=artefact", "L4=artefact"])
    imp = build_impression(dx)
    assert dx["verdicts"][0]["status"] == "insufficient" and imp["category"] is None
    assert "no result" in imp["statement"] and imp["supporting"] == ""
    assert imp["disagreeing"].startswith("Other criteria: ") and "Pickhardt" in imp["disagreeing"]


def test_fracture_turns_the_impression_and_is_named():
    dx = build_diagnosis(disagreeing_doc(), patient=WOMAN, exclusions=["L2=fracture:2:fragility"])
    imp = build_impression(dx)
    assert imp["category"] == dx["verdicts"][0]["category"] == "osteoporosis (fracture)"
    assert "L1+L3" in imp["statement"] and "L2 Genant grade 2 (fragility)" in imp["fractures"]
    assert "replaced by L3" in imp["level_rule"]


def test_sign_off_is_carried_and_checked():
    dx = build_diagnosis(disagreeing_doc(), patient=WOMAN)
    sign = SignOff(reader="Dr. A. Reader", date="2026-03-05", comment="Compare with DXA <hip>.")
    lines = impression_lines(build_impression(dx, sign))
    assert lines[-2] == "Reader's comment: Compare with DXA <hip>." and lines[-1] == "Signed: Dr. A. Reader, 5 March 2026"
    text = build_html(dx, disagreeing_doc(), render_images=False, sign_off=sign)
    assert "Dr. A. Reader" in text and "5 March 2026" in text and "Compare with DXA &lt;hip&gt;." in text
    with pytest.raises(InputError):
        SignOff(reader=3)
    empty = build_html(dx, disagreeing_doc(), render_images=False)
    assert "class='signoff'" in empty and "Reader's comment" in empty


FACTS = {"patient_name": "DOE^JANE", "patient_id": "PID-0042", "patient_age": "071Y", "patient_sex": "F",
         "study_date": "20240131", "manufacturer": "ACME", "model": "Scan 64", "kvp": 120.0,
         "convolution_kernel": "B30f", "slice_thickness_mm": 1.25, "contrast_agent": "NONE"}


def test_every_header_field_is_shown():
    doc = make_doc(hu={"L1": 150.0, "L2": 150.0}, dicom=FACTS)
    dx = build_diagnosis(doc)
    fields = header_fields(dx, doc)
    expect = {"name": "DOE, JANE", "patient_id": "PID-0042", "age": "71 years", "sex": "female",
              "study_date": "31 January 2024", "scanner": "ACME Scan 64", "kvp": "120 kV", "kernel": "B30f",
              "slice_thickness": "1.25 mm", "contrast": "NONE"}
    assert fields == expect
    text = build_html(dx, doc, render_images=False)
    for label, key in HEADER_FIELDS:
        assert re.search(f"<td>{re.escape(label)}</td><td>{re.escape(expect[key])}</td>", text), label
    # a field the source lacks is said to be missing, and the caller's identity overrides DICOM
    bare = make_doc(hu={"L1": 150.0, "L2": 150.0})
    f2 = header_fields(build_diagnosis(bare), bare, identity={"name": "Roe, Richard", "id": "X1"})
    assert f2["name"] == "Roe, Richard" and f2["patient_id"] == "X1" and f2["kernel"] == NOT_RECORDED


def test_no_internal_strings_jargon_or_raw_timestamps():
    doc = make_doc(vbmd={"L1": 85.0, "L2": 85.0, "L3": 85.0, "L4": 85.0}, hu={lv: 95.0 for lv in ("L1", "L2", "L3", "L4")},
                   dicom={"kvp": 100.0, "contrast_agent": "IOMERON", "study_date": "20240131"})
    doc["volume"]["file"] = "/data/dicom"
    # an earlier study of the same patient (a copy of the current exam is refused as a prior)
    prior = make_doc(vbmd={lv: 90.0 for lv in ("L1", "L2", "L3", "L4")}, hu={lv: 100.0 for lv in ("L1", "L2", "L3", "L4")},
                     dicom={"kvp": 100.0, "contrast_agent": "IOMERON", "study_date": "20230131"})
    for patient, excl in ((WOMAN, ["L2=fracture:2", "L3=fracture:1:traumatic"]), ({"age": 30, "sex": "F"}, None),
                          ({"age": 60, "sex": "M", "fragility_fracture": "hip 2023"}, None)):
        dx = build_diagnosis(doc, patient=patient, exclusions=excl, prior=prior, timestamp="2026-12-06T20:15:00+00:00")
        text = build_html(dx, doc, render_images=False)
        for marker in INTERNAL_MARKERS:
            assert marker.lower() not in text.lower(), marker
        assert not re.search(r"\bols\b", text) and "CT file" not in text
        assert "2026-12-06T20:15" not in text and "6 December 2026, 20:15 UTC" in text
        assert "20240131" not in text and "31 January 2024" in text
        assert "n = 321" in text  # voxel counts in the level table
        assert "Method and references" in text and "least-squares line" in text


def test_plain_words_and_dates():
    assert plain_words("HU shift with kV (QCT_BRIEF §2).") == "HU shift with kV."
    assert plain_words("LSC (ISCD; QCT_BRIEF §5)") == "LSC (ISCD)"
    assert "Table 2" in plain_words("see seed 000 Table 2") and "seed" not in plain_words("see seed 000 Table 2")
    assert readable_date("20240229") == "29 February 2024" and readable_date("2024-13-01") == "2024-13-01"
    assert readable_date(None) is None


def _chart_values(html: str):
    chart = html.split("<h2>Values per level</h2>", 1)[1].split("</svg>", 1)[0]
    return chart


def test_values_chart_is_drawn_in_the_cut_offs_material():
    """An HA measurement against the K2HPO4 QCT cut-offs: the bars carry the converted values the verdict
    used (Goodsitt 1992: 0.81-0.86 K2HPO4 per HA), and without the conversion no bands are drawn."""
    from OsteoROILib.export.html_report import build_html

    doc = make_doc(vbmd={"L1": 100.0, "L2": 100.0}, hu={"L1": 150.0, "L2": 150.0})
    for row in doc["rows"]:
        row["vbmd_unit"] = "mg/cm3 HA"
    doc["calibration"].update(unit="HA", vbmd_unit="mg/cm3 HA")
    dx = build_diagnosis(doc, patient=WOMAN, criteria=["qct"], convert_material=True)
    conv = dx["verdicts"][0]["material_conversion"]
    ratio = conv["ratio_k2hpo4_per_ha"]
    assert 0.81 <= ratio <= 0.86
    chart = _chart_values(build_html(dx, doc, render_images=False))
    assert f"{100.0 * ratio:.1f}" in chart and ">100.0<" not in chart
    dx = build_diagnosis(doc, patient=WOMAN, criteria=["qct"])
    assert dx["verdicts"][0]["category"] is None
    chart = _chart_values(build_html(dx, doc, render_images=False))
    assert "osteoporosis" not in chart and "low bone mass" not in chart


@pytest.mark.parametrize("date", ["02/01/2024", "2024-13-45", "2024-2-1", "yesterday"])
def test_a_signed_date_must_be_an_unambiguous_calendar_date(date):
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        SignOff(reader="Dr Q", date=date)
    assert SignOff(reader="Dr Q", date="2024-02-01").to_dict()["date"] == "2024-02-01"
    assert SignOff().to_dict()["date"] == ""


def test_uncategorised_criteria_neither_support_nor_contradict_the_lead():
    """A man of 40: the criteria do not apply, so no verdict has a category; none may be listed as
    supporting or disagreeing, they are listed as not categorised."""
    dx = build_diagnosis(disagreeing_doc(), patient={"age": 40, "sex": "M"})
    assert all(v.get("category") is None for v in dx["verdicts"])
    imp = build_impression(dx)
    assert imp["supporting"] == "" and imp["disagreeing"] == ""
    assert "not categorised" in imp["not_assessable"]
