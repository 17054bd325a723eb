"""Diagnosis table: criteria data, every threshold boundary, level rules, fractures, applicability, warnings.

Oracles: the numbers typed below from QCT_BRIEF §2/§3 (seed 002 Table 3, seed 000 Table 2,
Pickhardt 2013) — never read back from the criteria files under test — and means computed by hand.
"""
from __future__ import annotations

import json

import pytest

from OsteoROILib.diagnosis import criteria as C
from OsteoROILib.diagnosis.document import validate_diagnosis, verdict_rows
from OsteoROILib.diagnosis.exclusions import normalize_exclusions, parse_exclusion
from OsteoROILib.diagnosis.patient import resolve_patient
from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.errors import InputError

# Seed 002 Table 3 (QCT_BRIEF §2), typed by hand: ROI -> (osteoporosis if <=, sens, spec, normal if >, sens, spec, AUC)
TABLE3 = {
    "round": (87.75, 79.5, 81.5, 118.13, 84.8, 73.1, 0.852),
    "oval": (91.63, 76.7, 81.5, 97.13, 90.9, 76.1, 0.853),
    "right": (106.38, 69.9, 92.6, 107.63, 84.8, 65.7, 0.857),
    "left": (110.88, 69.9, 88.9, 125.00, 88.9, 89.1, 0.936),
    "front": (91.75, 79.5, 81.5, 121.25, 81.8, 74.6, 0.85),
}
LEVELS = ("L1", "L2", "L3", "L4")
ADULT_MAN = {"age": 67, "sex": "M"}


def make_doc(values, quantity="vbmd", shapes=("oval",), dicom=None, calibration=None, hu=None):
    """A minimal measurement result: ``values`` {level: value} for every shape (vBMD or HU)."""
    rows = []
    for lv, v in values.items():
        for s in shapes:
            row = {"level": lv, "shape": s, "mean_hu": (hu or {}).get(lv, v if quantity == "hu" else 100.0),
                   "sd_hu": 5.0, "median_hu": 0.0, "n_voxels": 100, "area_mm2": 100.0,
                   "center_ras": [0.0, 0.0, 0.0], "slice_index": 0, "warnings": []}
            if quantity == "vbmd":
                row.update(vbmd_mg_cm3=v, vbmd_unit="mg/cm3 K2HPO4", vbmd_sd=1.0)
            rows.append(row)
    doc = {"schema": "osteoroi-measurement/1", "osteoroi_version": "0", "created": "2024-01-01T00:00:00+00:00",
           "volume": {"file": "", "size": [10, 10, 10], "spacing_mm": [1.0, 1.0, 1.0],
                      "ijk_to_ras": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                      "dicom": dict({"kvp": 120.0}, **(dicom or {}))},
           "settings": {"shapes": list(shapes), "slab_mm": 1.0}, "levels": {}, "rows": rows, "warnings": []}
    if calibration is not None:
        doc["calibration"] = calibration
    return doc


def verdict(dx, cid, shape=None):
    vs = [v for v in dx["verdicts"] if v["criterion_id"] == cid and (shape is None or v["shape"] == shape)]
    assert len(vs) == 1, vs
    return vs[0]


# --- the criteria files against the published numbers ------------------------------------------
def test_seed002_criteria_file_holds_table3_numbers():
    crit = C.load_criterion("seed002-hu")
    assert crit["quantity"] == "hu" and crit["level_rule"]["method"] == "mean_of_valid"
    assert crit["level_rule"]["levels"] == list(LEVELS) and crit["shape_mode"] == "each"
    assert set(crit["bands_by_shape"]) == set(TABLE3)
    with open(crit["_file"], encoding="utf-8") as f:
        raw = json.load(f)
    for shape, (op, op_sens, op_spec, normal, n_sens, n_spec, auc) in TABLE3.items():
        bands = crit["bands_by_shape"][shape]
        assert [b["class"] for b in bands] == ["osteoporosis", "indeterminate", "normal"]
        assert bands[0]["upper"] == op and bands[0]["upper_inclusive"] is True      # osteoporosis if HU <= cut-off
        assert bands[1]["upper"] == normal and bands[1]["upper_inclusive"] is True  # normal only if HU > cut-off
        perf = raw["performance_by_shape"][shape]
        assert (perf["osteoporosis"]["sensitivity_pct"], perf["osteoporosis"]["specificity_pct"]) == (op_sens, op_spec)
        assert (perf["normal"]["sensitivity_pct"], perf["normal"]["specificity_pct"]) == (n_sens, n_spec)
        assert perf["auc_osteoporosis"] == auc
    # the oval row: the normal cut-off is only just above the osteoporosis one
    assert crit["bands_by_shape"]["oval"][1]["lower"] == 91.63 and crit["bands_by_shape"]["oval"][1]["upper"] == 97.13


def test_qct_and_pickhardt_files_hold_the_published_thresholds():
    q = C.load_criterion("qct-acr2018")
    assert q["quantity"] == "vbmd" and q["level_rule"] == dict(q["level_rule"], method="first_valid", count=2,
                                                                   levels=list(LEVELS))
    b = q["bands_by_shape"]["oval"]
    assert [(x["lower"], x["upper"]) for x in b] == [(None, 80), (80, 120), (120, None)]
    assert b[0]["upper_inclusive"] is False and b[1]["lower_inclusive"] is True and b[1]["upper_inclusive"] is True
    assert q["severe"]["when_class"] == "osteoporosis" and q["severe"]["min_fracture_grade"] == 1
    p = C.load_criterion("pickhardt2013-l1")
    pb = p["bands_by_shape"]["oval"]
    assert [(x["upper"], x["upper_inclusive"]) for x in pb] == [(110, True), (160, True), (200, True), (None, False)]
    assert p["level_rule"]["count"] == 1 and p["level_rule"]["levels"][0] == "L1"
    for cid in C.builtin_ids():
        assert C.load_criterion(cid)["source"]["citation"].strip()


# --- every boundary ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (79.99, "osteoporosis"), (80.0, "low_bone_mass"), (80.01, "low_bone_mass"),
    (119.99, "low_bone_mass"), (120.0, "low_bone_mass"), (120.01, "normal"),
])
def test_qct_boundaries(value, expected):
    dx = build_diagnosis(make_doc({"L1": value, "L2": value}), patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["value"] == value and v["category_class"] == expected and v["lead"] is True


def _seed002_cases():
    for shape, row in TABLE3.items():
        op, normal = row[0], row[3]
        for value, cls in ((op - 0.01, "osteoporosis"), (op, "osteoporosis"), (op + 0.01, "indeterminate"),
                           (normal - 0.01, "indeterminate"), (normal, "indeterminate"), (normal + 0.01, "normal")):
            yield shape, round(value, 2), cls


@pytest.mark.parametrize("shape, value, expected", list(_seed002_cases()))
def test_seed002_boundaries_on_the_l1_l4_mean(shape, value, expected):
    dx = build_diagnosis(make_doc({lv: value for lv in LEVELS}, quantity="hu", shapes=(shape,)),
                         criteria=["seed002-hu"], patient=ADULT_MAN)
    v = verdict(dx, "seed002-hu", shape)
    assert v["value"] == value and v["n_levels"] == 4 and v["category_class"] == expected


@pytest.mark.parametrize("value, expected", [
    (109.99, "osteoporosis"), (110.0, "osteoporosis"), (110.01, "possible_osteoporosis"), (160.0, "possible_osteoporosis"),
    (160.01, "indeterminate"), (200.0, "indeterminate"), (200.01, "normal"),
])
def test_pickhardt_boundaries(value, expected):
    dx = build_diagnosis(make_doc({"L1": value, "L2": 0.0}, quantity="hu"), criteria=["pickhardt"], patient=ADULT_MAN)
    v = verdict(dx, "pickhardt2013-l1")
    assert v["levels_used"] == ["L1"] and v["category_class"] == expected


def test_category_follows_the_printed_value_not_float_noise():
    # (87.75 + 87.75 + 87.75 + 87.76) / 4 = 87.7525 -> printed 87.75 -> osteoporosis for the round ROI
    dx = build_diagnosis(make_doc({"L1": 87.75, "L2": 87.75, "L3": 87.75, "L4": 87.76}, quantity="hu",
                                  shapes=("round",)), criteria=["seed002-hu"], patient=ADULT_MAN)
    v = verdict(dx, "seed002-hu", "round")
    assert v["value"] == 87.75 and v["category_class"] == "osteoporosis"


# --- level rules ---------------------------------------------------------------------------------
VALUES = {"L1": 70.0, "L2": 90.0, "L3": 110.0, "L4": 130.0}


@pytest.mark.parametrize("excl, used, mean", [
    ([], ["L1", "L2"], 80.0),
    (["L1=fracture:2"], ["L2", "L3"], 100.0),
    (["L2=artefact"], ["L1", "L3"], 90.0),
    (["L1=focal_lesion", "L2=manual:osteophyte"], ["L3", "L4"], 120.0),
    (["L3=artefact"], ["L1", "L2"], 80.0),
])
def test_qct_pair_with_replacement(excl, used, mean):
    dx = build_diagnosis(make_doc(VALUES), exclusions=excl, patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["levels_used"] == used and v["value"] == mean and v["status"] == "ok"
    if used != ["L1", "L2"]:
        assert any("replaced by" in n for n in v["notes"])
    # excluded rows stay in the table with their reason
    for e in excl:
        lv = e.split("=")[0]
        rows = [r for r in dx["rows"] if r["level"] == lv]
        assert rows and all(r["excluded"] and r["flags"] and not r["used_by"] for r in rows)


def test_unmeasured_level_is_replaced_too():
    dx = build_diagnosis(make_doc({"L1": 70.0, "L3": 110.0, "L4": 130.0}), patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["levels_used"] == ["L1", "L3"] and v["value"] == 90.0
    assert any("L2 not measured" in n for n in v["notes"])


def test_qct_insufficient_with_reason():
    dx = build_diagnosis(make_doc(VALUES), exclusions=["L1=fracture:3:fragility", "L2=artefact", "L3=focal_lesion"],
                         patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["status"] == "insufficient" and v["value"] is None and v["levels_used"] == []
    for text in ("needs 2 valid levels", "L1 (fracture, Genant 3", "L2 (artefact)", "L3 (focal lesion)"):
        assert text in v["rule"]
    # the fracture still gives a category: osteoporosis whatever the BMD
    assert v["category"] == "osteoporosis (fracture)"


def test_seed002_mean_of_valid_levels_with_count():
    hu = {"L1": 100.0, "L2": 120.0, "L3": 95.0, "L4": 80.0}
    dx = build_diagnosis(make_doc(hu, quantity="hu", shapes=("oval", "left")), criteria=["seed002-hu"],
                         exclusions=["L3=artefact"], patient=ADULT_MAN)
    for shape in ("oval", "left"):
        v = verdict(dx, "seed002-hu", shape)
        assert v["levels_used"] == ["L1", "L2", "L4"] and v["n_levels"] == 3
        assert v["value"] == 100.0  # (100 + 120 + 80) / 3
        assert any("3 of 4" in n and "L3 (artefact)" in n for n in v["notes"])
    assert verdict(dx, "seed002-hu", "oval")["category_class"] == "normal"        # 100 > 97.13
    assert verdict(dx, "seed002-hu", "left")["category_class"] == "osteoporosis"  # 100 <= 110.88
    dx = build_diagnosis(make_doc(hu, quantity="hu"), criteria=["seed002-hu"], exclusions=[f"{lv}=manual" for lv in LEVELS],
                         patient=ADULT_MAN)
    assert verdict(dx, "seed002-hu")["status"] == "insufficient"


def test_pickhardt_falls_back_from_l1_with_a_note():
    dx = build_diagnosis(make_doc({"L1": 50.0, "L2": 150.0, "L3": 250.0}, quantity="hu"), criteria=["pickhardt"],
                         exclusions=["L1=artefact"], patient=ADULT_MAN)
    v = verdict(dx, "pickhardt2013-l1")
    assert v["levels_used"] == ["L2"] and v["value"] == 150.0
    assert any("L1 artefact: replaced by L2" in n for n in v["notes"])
    assert any("derived at L1" in n for n in v["notes"])


def test_shape_preference_and_default_criteria():
    hu_doc = make_doc({"L1": 100.0, "L2": 100.0}, quantity="hu", shapes=("round", "front"))
    dx = build_diagnosis(hu_doc, patient=ADULT_MAN)
    assert [v["criterion_id"] for v in dx["verdicts"]] == ["seed002-hu", "seed002-hu", "pickhardt2013-l1"]
    assert verdict(dx, "pickhardt2013-l1")["shape"] == "round"  # oval absent: next in the file's order
    assert any("No calibration" in n for n in dx["notes"]) and dx["quantity"] == "hu"
    dx = build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}), patient=ADULT_MAN)
    assert dx["verdicts"][0]["criterion_id"] == "qct-acr2018" and dx["lead"]["criterion_id"] == "qct-acr2018"
    assert dx["quantity"] == "vbmd" and {v["criterion_id"] for v in dx["verdicts"][1:]} == {"seed002-hu",
                                                                                             "pickhardt2013-l1"}
    # a vBMD criterion asked for without a calibration is unavailable, not a wrong number
    dx = build_diagnosis(hu_doc, criteria=["qct"], patient=ADULT_MAN)
    assert verdict(dx, "qct-acr2018")["status"] == "unavailable" and "calibrat" in verdict(dx, "qct-acr2018")["rule"]


# --- fractures -----------------------------------------------------------------------------------
def test_severe_needs_fracture_and_vbmd_below_80():
    dx = build_diagnosis(make_doc({"L1": 60.0, "L2": 75.0, "L3": 78.0}), exclusions=["L1=fracture:1:fragility"],
                         patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["value"] == 76.5 and v["bmd_class"] == "osteoporosis" and v["category"] == "severe osteoporosis"
    assert "L1 (Genant 1)" in v["rule"]


def test_fracture_means_osteoporosis_whatever_the_bmd():
    dx = build_diagnosis(make_doc({"L1": 150.0, "L2": 140.0, "L3": 130.0}), exclusions=["L3=fracture:2:fragility"],
                         patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["bmd_category"] == "normal" and v["category"] == "osteoporosis (fracture)"
    assert "whatever the vBMD" in v["rule"] and v["levels_used"] == ["L1", "L2"]
    assert dx["fractures"] == [{"level": "L3", "grade": 2, "cause": "fragility", "fragility": True}]
    for v in dx["verdicts"][1:]:  # HU criteria too
        assert v["category"] == "osteoporosis (fracture)"


def test_genant_0_is_not_a_fracture_and_traumatic_is_not_fragility():
    dx = build_diagnosis(make_doc({"L1": 150.0, "L2": 140.0}), exclusions=["L1=fracture:0"], patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["levels_used"] == ["L1", "L2"] and v["category"] == "normal" and dx["fractures"] == []
    dx = build_diagnosis(make_doc({"L1": 150.0, "L2": 140.0, "L3": 130.0}), exclusions=["L1=fracture:3:traumatic"],
                         patient=ADULT_MAN)
    v = verdict(dx, "qct-acr2018")
    assert v["levels_used"] == ["L2", "L3"] and v["category"] == "normal"
    assert any("Traumatic" in n for n in v["notes"])
    dx = build_diagnosis(make_doc({"L1": 150.0, "L2": 140.0}), patient=dict(ADULT_MAN, fragility_fracture="hip 2022"))
    assert verdict(dx, "qct-acr2018")["category"] == "osteoporosis (fracture)"


@pytest.mark.parametrize("text", ["L2=fracture", "L2=fracture:4", "L2=fracture:x", "L9=artefact", "L2=smudge",
                                  "fracture:2", "L2=fracture:2:odd"])
def test_bad_exclusions_are_refused(text):
    with pytest.raises(InputError) as e:
        normalize_exclusions([text])
    assert e.value.remedy


def test_exclusion_forms():
    # the cause of a fracture is the reader's call: unknown unless stated (QCT_BRIEF §3)
    assert parse_exclusion("l2=Fracture:2") == ("L2", {"reason": "fracture", "note": "", "grade": 2, "cause": "unknown",
                                                     "fragility": None})
    assert parse_exclusion("L2=fracture:2:fragility")[1]["cause"] == "fragility"
    a = normalize_exclusions({"L2": {"reason": "fracture", "grade": 2}, "L3": "artifact"})
    assert a["L2"][0]["grade"] == 2 and a["L3"][0]["reason"] == "artefact"
    assert normalize_exclusions(["L1=lesion:bone island"])["L1"][0] == {"reason": "focal_lesion", "note": "bone island"}


# --- applicability ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dicom, user, applicable", [
    ({"patient_age": "067Y", "patient_sex": "M"}, {}, True),
    ({"patient_age": "050Y", "patient_sex": "M"}, {}, True),
    ({"patient_age": "049Y", "patient_sex": "M"}, {}, False),
    ({"patient_age": "055Y", "patient_sex": "F"}, {}, True),           # presumed post-menopausal
    ({"patient_age": "055Y", "patient_sex": "F"}, {"menopause": "pre"}, False),
    ({"patient_age": "045Y", "patient_sex": "F"}, {}, False),
    ({"patient_age": "045Y", "patient_sex": "F"}, {"menopause": "post"}, True),
    ({}, {}, False),
    ({"patient_sex": "M"}, {}, False),                                  # age unknown
    ({"patient_age": "040Y", "patient_sex": "M"}, {"age": 60}, True),   # user input overrides DICOM
    ({"patient_age": "070Y", "patient_sex": "F"}, {"sex": "M"}, True),
    ({"patient_age": "010Y", "patient_sex": "F"}, {}, False),
])
def test_applicability(dicom, user, applicable):
    doc = make_doc({"L1": 70.0, "L2": 70.0}, dicom=dicom)
    pat = resolve_patient(doc, user)
    assert pat["applicable"] is applicable
    dx = build_diagnosis(doc, patient=user)
    v = verdict(dx, "qct-acr2018")
    assert v["value"] == 70.0 and v["bmd_category"] == "osteoporosis"  # the value is always shown
    if applicable:
        assert v["category"] == "osteoporosis"
        assert v["rule"].endswith("→ osteoporosis")
    else:
        assert v["category"] is None and any("Not categorised" in n for n in v["notes"])
        # the printed rule must not end in a category the table does not give
        assert v["rule"].startswith("mean vBMD of L1+L2") and "not categorised" in v["rule"]
        assert not v["rule"].endswith("→ osteoporosis") and v["decision"].startswith("not categorised")


def test_dicom_age_string_and_disagreement_note():
    pat = resolve_patient(make_doc({}, dicom={"patient_age": "067Y", "patient_sex": "F"}), {"age": "60"})
    assert pat["age_years"] == 60 and any("differs" in n for n in pat["notes"])
    pat = resolve_patient(make_doc({}, dicom={"patient_age": "840M", "patient_sex": "M"}))
    assert pat["age_years"] == 70 and pat["applicable"]
    with pytest.raises(InputError):
        resolve_patient(make_doc({}), {"sex": "X"})


# --- warnings ---------------------------------------------------------------------------------------
def test_technique_warnings():
    def warns(**dicom):
        return build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}, dicom=dicom), patient=ADULT_MAN)["warnings"]

    assert warns() == []
    assert any("100 kV" in w for w in warns(kvp=100.0))
    assert any("Contrast" in w for w in warns(contrast_agent="IOPAMIDOL"))
    assert warns(contrast_agent="NONE") == []
    assert any("3.5 mm" in w for w in warns(slice_thickness_mm=3.5))
    assert warns(slice_thickness_mm=3.0) == []
    cal = {"method": "phantom", "warnings": ["R² 0.95 < 0.98"]}
    dx = build_diagnosis(make_doc({"L1": 100.0, "L2": 100.0}, calibration=cal), patient=ADULT_MAN)
    assert "Calibration: R² 0.95 < 0.98" in dx["warnings"] and dx["calibration"]["method"] == "phantom"


# --- custom criteria and validation -------------------------------------------------------------------
def _custom(**changes):
    doc = {"format": "osteoroi-criteria/1", "id": "site-hu", "title": "Site HU", "quantity": "hu", "unit": "HU",
           "level_rule": {"method": "mean_of_valid", "levels": ["L1", "L2"], "min_count": 2},
           "shapes": ["oval"], "source": {"citation": "local audit 2024"},
           "bands": [{"label": "low", "class": "osteoporosis", "lower": None, "upper": 100, "upper_inclusive": False},
                     {"label": "ok", "class": "normal", "lower": 100, "lower_inclusive": True, "upper": None}]}
    doc.update(changes)
    return doc


def test_custom_criteria_file(tmp_path):
    path = tmp_path / "site.json"
    path.write_text(json.dumps(_custom()))
    dx = build_diagnosis(make_doc({"L1": 99.0, "L2": 101.0, "L3": 0.0}, quantity="hu"), criteria=[str(path)],
                         patient=ADULT_MAN)
    v = verdict(dx, "site-hu")
    assert v["value"] == 100.0 and v["category"] == "ok" and dx["criteria"][0]["citation"] == "local audit 2024"
    dx = build_diagnosis(make_doc({"L1": 99.0, "L2": 101.0}, quantity="hu"), criteria=[str(path)],
                         exclusions=["L2=manual"], patient=ADULT_MAN)
    assert verdict(dx, "site-hu")["status"] == "insufficient"


@pytest.mark.parametrize("change, text", [
    ({"bands": [{"label": "a", "class": "osteoporosis", "lower": None, "upper": 100, "upper_inclusive": True},
                {"label": "b", "class": "normal", "lower": 100, "lower_inclusive": True, "upper": None}]}, "exactly one"),
    ({"bands": [{"label": "a", "class": "osteoporosis", "lower": None, "upper": 90, "upper_inclusive": True},
                {"label": "b", "class": "normal", "lower": 100, "lower_inclusive": False, "upper": None}]}, "do not meet"),
    ({"bands": [{"label": "a", "class": "osteoporosis", "lower": None, "upper": 100, "upper_inclusive": True},
                {"label": "b", "class": "normal", "lower": 100, "lower_inclusive": False, "upper": 90},
                {"label": "c", "class": "normal", "lower": 90, "lower_inclusive": False, "upper": None}]}, "below upper"),
    ({"source": {}}, "citation"),
    ({"quantity": "t-score"}, "quantity"),
    ({"shapes": ["hexagon"]}, "shapes"),
    ({"format": "other/1"}, "format"),
])
def test_invalid_criteria_are_refused(change, text):
    with pytest.raises(InputError) as e:
        C.validate_criterion(_custom(**change))
    assert text in str(e.value)


def test_unknown_criterion_name():
    with pytest.raises(InputError) as e:
        build_diagnosis(make_doc({"L1": 1.0}), criteria=["whoknows"])
    assert "qct-acr2018" in e.value.remedy


# --- document ------------------------------------------------------------------------------------------
def test_document_validates_and_table_rows():
    prior = make_doc({"L1": 100.0, "L2": 100.0, "L3": 100.0})
    dx = build_diagnosis(make_doc(VALUES, dicom={"patient_age": "070Y", "patient_sex": "F"}),
                         exclusions=["L1=fracture:2"], prior=prior)
    validate_diagnosis(dx)
    json.dumps(dx, allow_nan=False)
    rows = verdict_rows(dx)
    assert rows[0]["criterion_id"] == "qct-acr2018" and rows[0]["followup_verdict"] is not None
