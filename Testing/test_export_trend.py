"""The follow-up trend chart: the prior and current lead values placed on a linear axis, the current point outside
the prior ± LSC band exactly when the change is significant.

Oracle: hand-made exams (QCT L1+L2 vBMD) and hand arithmetic of the LSC (2.77 × 3 % = 8.31 %; QCT_BRIEF §5).
"""
from __future__ import annotations

import re

import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.export.html_report import build_html
from OsteoROILib.export.trend_chart import trend_svg

from test_export_impression import WOMAN, make_doc


def exam(value, date):
    levels = {"L1": value, "L2": value}
    return make_doc(vbmd=levels, hu={"L1": 150.0, "L2": 150.0}, dicom={"study_date": date})


def _y(svg, cls):
    return float(re.search(rf'<circle class="{cls}" cx="[\d.]+" cy="([\d.]+)"', svg).group(1))


@pytest.mark.parametrize("current, significant", [(90.0, True), (95.0, False), (109.0, True), (108.0, False)])
def test_current_point_leaves_the_band_exactly_when_the_change_is_significant(current, significant):
    # prior 100: LSC band 91.69 .. 108.31; 90 (−10 %) and 109 (+9 %) are outside, 95 and 108 inside
    dx = build_diagnosis(exam(current, "20250101"), patient=WOMAN, prior=exam(100.0, "20240101"))
    svg = trend_svg(dx)
    band = re.search(r'<rect class="lsc-band" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg)
    top, bottom = float(band.group(1)), float(band.group(1)) + float(band.group(2))
    y_prior, y_current = _y(svg, "prior"), _y(svg, "current")
    assert top < y_prior < bottom
    # a linear axis: the band is symmetric about the prior point (± 8.31 % of 100)
    assert y_prior - top == pytest.approx(bottom - y_prior, abs=0.2)
    scale = (bottom - top) / (2 * 8.31)
    assert y_prior - y_current == pytest.approx((current - 100.0) * scale, abs=0.3)
    outside = y_current < top or y_current > bottom
    assert outside is significant
    assert ("significant" in svg) is significant and "1 January 2024" in svg and "1 January 2025" in svg
    assert "cut-off 80" in svg and "cut-off 120" in svg
    assert svg in build_html(dx, exam(current, "20250101"), render_images=False)


def test_no_trend_without_a_prior_or_a_comparable_value():
    assert trend_svg(build_diagnosis(exam(90.0, "20250101"), patient=WOMAN)) == ""
    prior_hu_only = make_doc(hu={"L1": 140.0, "L2": 140.0})  # an earlier study: other values than the current
    dx = build_diagnosis(exam(90.0, "20250101"), patient=WOMAN, prior=prior_hu_only)
    assert trend_svg(dx) == "" and "class=\"chart trend\"" not in build_html(dx, exam(90.0, "20250101"),
                                                                            render_images=False)
