"""Follow-up against a prior exam: % change, LSC = 2.77 × precision error, verdicts, like-for-like levels.

Expected numbers are computed by hand in the test (QCT_BRIEF §5: ISCD LSC = 2.77 × precision).
"""
from __future__ import annotations

import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.errors import InputError
from OsteoROILib.diagnosis.followup import change_verdict, lsc_pct

from test_diagnosis import ADULT_MAN, make_doc, verdict


def summary(dx, cid, shape="oval"):
    return next(s for s in dx["followup"]["summary"] if s["criterion_id"] == cid and s["shape"] == shape)


def test_lsc_is_2_77_times_precision():
    assert lsc_pct(3.0) == pytest.approx(8.31)
    assert lsc_pct(2.0) == pytest.approx(5.54)
    assert lsc_pct(1.5) == pytest.approx(4.155)
    for bad in (0, -1, float("nan"), 80):
        with pytest.raises(InputError):
            lsc_pct(bad)


def test_verdict_needs_the_change_to_exceed_the_lsc():
    assert change_verdict(8.31, 8.31) == "stable"
    assert change_verdict(8.32, 8.31) == "significant gain"
    assert change_verdict(-8.31, 8.31) == "stable"
    assert change_verdict(-8.32, 8.31) == "significant loss"
    assert change_verdict(None, 8.31) is None


def test_summary_and_per_level_changes_by_hand():
    prior = make_doc({"L1": 100.0, "L2": 110.0, "L3": 120.0, "L4": 130.0})
    current = make_doc({"L1": 90.0, "L2": 99.0, "L3": 126.0, "L4": 130.0})
    dx = build_diagnosis(current, prior=prior, patient=ADULT_MAN)
    f = dx["followup"]
    assert f["lsc_pct"] == pytest.approx(8.31) and f["precision_pct"] == 3.0
    s = summary(dx, "qct-acr2018")
    # L1+L2: prior (100 + 110) / 2 = 105, current (90 + 99) / 2 = 94.5: -10.5, -10 %
    assert s["levels"] == ["L1", "L2"] and s["prior"] == pytest.approx(105.0) and s["current"] == pytest.approx(94.5)
    assert s["change"] == pytest.approx(-10.5) and s["change_pct"] == pytest.approx(-10.0)
    assert s["verdict"] == "significant loss"
    per = {(x["level"], x["quantity"]): x for x in f["levels"] if x["shape"] == "oval"}
    assert per[("L1", "vbmd")]["change_pct"] == pytest.approx(-10.0)
    assert per[("L2", "vbmd")]["change_pct"] == pytest.approx(-10.0)
    assert per[("L3", "vbmd")]["change_pct"] == pytest.approx(5.0) and per[("L3", "vbmd")]["verdict"] == "stable"
    assert per[("L4", "vbmd")]["change"] == 0.0 and per[("L4", "vbmd")]["verdict"] == "stable"
    # a larger site precision error makes the same change stable: LSC = 2.77 × 4 = 11.08 % > 10 %
    dx = build_diagnosis(current, prior=prior, patient=ADULT_MAN, precision_pct=4.0)
    assert summary(dx, "qct-acr2018")["lsc_pct"] == pytest.approx(11.08)
    assert summary(dx, "qct-acr2018")["verdict"] == "stable"


def test_gain_and_exact_lsc_boundary():
    prior = make_doc({"L1": 100.0, "L2": 100.0})
    dx = build_diagnosis(make_doc({"L1": 108.31, "L2": 108.31}), prior=prior, patient=ADULT_MAN)
    assert summary(dx, "qct-acr2018")["verdict"] == "stable"  # +8.31 % does not exceed the LSC of 8.31 %
    dx = build_diagnosis(make_doc({"L1": 108.32, "L2": 108.32}), prior=prior, patient=ADULT_MAN)
    assert summary(dx, "qct-acr2018")["verdict"] == "significant gain"


def test_same_levels_compared_when_a_level_is_excluded_now():
    prior = make_doc({"L1": 100.0, "L2": 100.0, "L3": 90.0})
    current = make_doc({"L1": 60.0, "L2": 95.0, "L3": 85.0})
    dx = build_diagnosis(current, prior=prior, exclusions=["L1=fracture:2:fragility"], patient=ADULT_MAN)
    s = summary(dx, "qct-acr2018")
    # current uses L2+L3 = 90; the prior is taken over L2+L3 too = 95 -> -5.263 %
    assert s["levels"] == ["L2", "L3"] and s["prior"] == pytest.approx(95.0) and s["current"] == pytest.approx(90.0)
    assert s["change_pct"] == pytest.approx(-500.0 / 95.0) and s["verdict"] == "stable"
    assert verdict(dx, "qct-acr2018")["category"] == "osteoporosis (fracture)"


def test_hu_follow_up_when_only_one_exam_is_calibrated():
    prior = make_doc({"L1": 150.0, "L2": 130.0}, quantity="hu")
    current = make_doc({"L1": 70.0, "L2": 70.0}, hu={"L1": 120.0, "L2": 104.0})
    dx = build_diagnosis(current, prior=prior, patient=ADULT_MAN)
    f = dx["followup"]
    assert {x["quantity"] for x in f["levels"]} == {"hu"}
    assert any("Only one exam has vBMD" in n for n in f["notes"])
    assert summary(dx, "qct-acr2018")["verdict"] is None
    s = summary(dx, "seed002-hu")  # L1+L2 HU: (150 + 130)/2 = 140 -> (120 + 104)/2 = 112: -20 %
    assert s["prior"] == pytest.approx(140.0) and s["current"] == pytest.approx(112.0)
    assert s["change_pct"] == pytest.approx(-20.0) and s["verdict"] == "significant loss"


def test_scanner_and_kvp_differences_are_warned():
    prior = make_doc({"L1": 95.0, "L2": 95.0}, dicom={"kvp": 120.0, "manufacturer": "GE", "model": "A",
                                                        "convolution_kernel": "STD", "study_date": "20230101"})
    same = dict(kvp=120.0, manufacturer="GE", model="A", convolution_kernel="STD", study_date="20240101")
    dx = build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}, dicom=same), prior=prior, patient=ADULT_MAN)
    assert dx["followup"]["warnings"] == [] and dx["followup"]["interval_days"] == 365
    other = dict(same, kvp=100.0, manufacturer="Siemens")
    dx = build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}, dicom=other), prior=prior, patient=ADULT_MAN)
    w = " ".join(dx["followup"]["warnings"])
    assert "kVp differs" in w and "manufacturer differs" in w
    dx = build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}, dicom={"kvp": 120.0}),
                         prior=make_doc({"L1": 1.0, "L2": 1.0}, dicom={"kvp": 120.0}), patient=ADULT_MAN)
    assert any("Cannot check" in n for n in dx["followup"]["notes"])


def test_nonpositive_prior_has_no_percent():
    dx = build_diagnosis(make_doc({"L1": 10.0, "L2": 20.0}, quantity="hu"),
                         prior=make_doc({"L1": -5.0, "L2": 5.0}, quantity="hu"), patient=ADULT_MAN)
    s = summary(dx, "seed002-hu")
    assert s["prior"] == 0.0 and s["change"] == 15.0 and s["change_pct"] is None and s["verdict"] is None
    assert "not positive" in s["note"]


def test_mixed_vbmd_units_refused_by_the_diagnosis_and_compared_as_hu_in_follow_up():
    # K2HPO4 and HA densities cannot be averaged (QCT_BRIEF §4): one exam in both units
    prior = make_doc({"L1": 100.0, "L2": 110.0})
    prior["rows"][1]["vbmd_unit"] = "mg/cm3 HA"
    with pytest.raises(InputError, match="different units"):
        build_diagnosis(prior, patient=ADULT_MAN)
    dx = build_diagnosis(make_doc({"L1": 90.0, "L2": 99.0}), prior=prior, patient=ADULT_MAN)
    f = dx["followup"]
    assert any("vBMD units differ" in w for w in f["warnings"])
    assert {x["quantity"] for x in f["levels"]} == {"hu"}
    assert summary(dx, "qct-acr2018")["note"] == "the prior exam has no comparable vBMD"


def test_rows_without_a_unit_take_the_calibration_unit_in_follow_up_as_in_the_diagnosis():
    prior = make_doc({"L1": 100.0, "L2": 110.0}, calibration={"unit": "mg/cm3 K2HPO4"})
    for row in prior["rows"]:
        del row["vbmd_unit"]
    assert verdict(build_diagnosis(prior, patient=ADULT_MAN), "qct-acr2018")["unit"] == "mg/cm3 K2HPO4"
    dx = build_diagnosis(make_doc({"L1": 90.0, "L2": 99.0}), prior=prior, patient=ADULT_MAN)
    # L1+L2: prior 105, current 94.5 (rows in mg/cm3 K2HPO4): -10 %
    assert summary(dx, "qct-acr2018")["change_pct"] == pytest.approx(-10.0)
    assert not dx["followup"]["warnings"]
