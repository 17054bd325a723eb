"""Catalogue of confident wrong answers that must now be refused or flagged: calibration, criteria, patient.

Each case is one way a new user or an adversary obtained a wrong category; each asserts the refusal
(InputError with a remedy) or the flag (value shown, no category). Oracles: the NIST table read here
with the csv module and numpy.interp, the published numbers of the cited sources (seed 000, seed 002,
Goodsitt 1992, Bartenschlager 2023, Wang 2017), and lines written out by hand.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from OsteoROILib.calibration import internal as IC
from OsteoROILib.calibration import plausibility as PL
from OsteoROILib.calibration.apply import calibrate_measurement
from OsteoROILib.calibration.model import load_calibration, save_calibration
from OsteoROILib.calibration.phantom_fit import fit_phantom, manual_calibration
from OsteoROILib.calibration.phantom_library import get_phantom, phantom_from_certificate
from OsteoROILib.errors import InputError
from OsteoROILib.resources import resource_path

QRM6 = get_phantom("qrm-bdc-6")


def _rods(phantom, slope, intercept, swap=None):
    """Rod measurements lying exactly on HU = intercept + slope·density (two rods' HU swapped if asked)."""
    rods = [{"name": r.name, "mean_hu": intercept + slope * r.density} for r in phantom.rods]
    if swap:
        i, j = swap
        rods[i]["mean_hu"], rods[j]["mean_hu"] = rods[j]["mean_hu"], rods[i]["mean_hu"]
    return rods


def _nist(material, energy):
    """μ/ρ interpolated here from the CSV (the oracle of the slope window)."""
    e, m = [], []
    with open(resource_path("Data", "nist_mass_attenuation.csv"), newline="") as f:
        for r in csv.DictReader(f):
            if r["material"] == material:
                e.append(float(r["energy_keV"]))
                m.append(float(r["mass_attenuation_cm2_per_g"]))
    return float(np.interp(energy, e, m))


# ------------------------------------------------------------------------------------------------
# Physical calibration
# ------------------------------------------------------------------------------------------------
def test_slope_window_is_the_nist_ratio_at_the_clinical_energies():
    # 120 kVp: effective energy 40-84 keV; HA solid density 3.16 g/cm3; widened by a factor 2 each way.
    lo, hi = PL.slope_window("HA", 120)
    ratio_lo = _nist("cha_table", 84.0) / _nist("water_table", 84.0)
    ratio_hi = _nist("cha_table", 40.0) / _nist("water_table", 40.0)
    assert lo == pytest.approx((ratio_lo - 1 / 3.16) / 2, rel=1e-9)
    assert hi == pytest.approx(ratio_hi * 2, rel=1e-9)
    # A real-looking line (the digital phantom's 1.25 HU per mg/cm3 HA, -10 HU) is inside it.
    assert PL.line_problems(1.25, -10.0, "HA", 120) == []


def test_fat_taken_for_qrm_rods_is_refused():
    # 6 fat blobs: -120 HU + 0.055 HU per "mg/cm3": a line with R² = 1 but no physical meaning.
    with pytest.raises(InputError, match=r"no physical meaning.*slope 0\.055") as exc:
        fit_phantom(_rods(QRM6, 0.055, -120.0), QRM6)
    assert "--accept-implausible-calibration" in exc.value.remedy


def test_auto_rods_on_a_ct_without_phantom_says_nothing_phantom_like(totalseg_dir):
    from OsteoROILib.calibration.rods import auto_rods
    from OsteoROILib.io.image_files import read_volume

    volume = read_volume(os.path.join(totalseg_dir, "ct.nii.gz"))
    # this region holds six fatty discs (subcutaneous fat lobules), which the 6-rod search used to accept
    with pytest.raises(InputError, match="Nothing phantom-like was found"):
        auto_rods(volume, QRM6, region=[-120, 110, 50, 89])
    # a 2-rod phantom is never auto-detected without confirmation ...
    with pytest.raises(InputError, match="not found automatically without confirmation") as exc:
        auto_rods(volume, get_phantom("siemens-osteo"))
    assert "--confirm-rods" in exc.value.remedy
    # ... and with it, the two fat blobs (slope 0.017) are still refused
    with pytest.raises(InputError, match=r"Nothing phantom-like.*slope 0\.017"):
        auto_rods(volume, get_phantom("siemens-osteo"), confirm_few_rods=True)


def test_two_rod_fit_of_fat_is_refused_despite_r2_of_one():
    siemens = get_phantom("siemens-osteo")
    with pytest.raises(InputError, match=r"slope 0\.017"):
        fit_phantom(_rods(siemens, 0.017, -110.0), siemens)


@pytest.mark.parametrize("slope,intercept,what", [
    (0.05, -10.0, r"slope 0\.05 "),        # → 2102 mg/cm3 "normal"
    (1e6, -10.0, r"slope 1e\+06"),          # → 0 mg/cm3 "osteoporosis"
    (1.25, 5000.0, r"intercept 5000 HU"),   # → -4079 mg/cm3 "osteoporosis"
])
def test_manual_lines_without_physical_meaning_are_refused(slope, intercept, what):
    with pytest.raises(InputError, match=what):
        manual_calibration(slope, intercept, "HA")


def test_an_accepted_implausible_line_is_recorded_in_the_result():
    cal = manual_calibration(0.05, -10.0, "HA", accept_implausible=True)
    assert cal.overrides and "accepted by the user" in cal.overrides[0]
    measurement = {"rows": [{"level": "L1", "shape": "oval", "mean_hu": 95.0}], "warnings": []}
    out, extra = calibrate_measurement(measurement, cal)
    assert extra["calibration"]["overrides"] == cal.overrides
    assert any("accepted by the user" in w for w in extra["calibration"]["warnings"])
    assert out["rows"][0]["vbmd_mg_cm3"] == pytest.approx((95.0 + 10.0) / 0.05)


def test_rods_whose_hu_fall_with_density_are_refused():
    # rods 0 and 100 mg/cm3 swapped: the fit still has R² > 0.99, but the rods' HU fall with density.
    with pytest.raises(InputError, match=r"rod R?.*\(100 mg/cm3\) reads -10\.0 HU, less than"):
        fit_phantom(_rods(QRM6, 1.25, -10.0, swap=(0, 1)), QRM6)


def test_the_kvp_narrows_the_window():
    # 0.5 HU per mg/cm3 HA is possible at 140 kVp (window from 98 keV) but not at 80 kVp (from 56 keV)
    assert PL.line_problems(0.5, 0.0, "HA", 140) == []
    assert PL.line_problems(0.5, 0.0, "HA", 80)


def _saved(tmp_path, cal, edit):
    path = tmp_path / "cal.json"
    save_calibration(cal, str(path))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return str(path)


def test_saved_calibration_whose_own_fit_is_poor_is_refused(tmp_path):
    cal = fit_phantom(_rods(QRM6, 1.25, -10.0), QRM6)
    path = _saved(tmp_path, cal, lambda d: d["fit"].update(r2=0.12))
    with pytest.raises(InputError, match=r"R² = 0\.120 < 0\.9"):
        load_calibration(path)


def test_saved_calibration_with_an_edited_slope_is_refused(tmp_path):
    cal = fit_phantom(_rods(QRM6, 1.25, -10.0), QRM6)
    path = _saved(tmp_path, cal, lambda d: d.update(slope_hu_per_mg_cm3=2.5))
    with pytest.raises(InputError, match="the file was edited"):
        load_calibration(path)


def test_saved_calibration_with_a_slope_as_text_is_refused_not_a_crash(tmp_path):
    cal = manual_calibration(1.25, -10.0, "HA")
    path = _saved(tmp_path, cal, lambda d: d.update(slope_hu_per_mg_cm3="1.25"))
    with pytest.raises(InputError):
        load_calibration(path)


def test_saved_manual_calibration_is_checked_again_on_load(tmp_path):
    cal = manual_calibration(1.25, -10.0, "HA")
    path = _saved(tmp_path, cal, lambda d: d.update(intercept_hu=5000.0))
    with pytest.raises(InputError, match="intercept 5000"):
        load_calibration(path)
    # an override made when it was created stays accepted, and stays recorded
    accepted = manual_calibration(0.05, -10.0, "HA", accept_implausible=True)
    (tmp_path / "accepted").mkdir()
    path2 = _saved(tmp_path / "accepted", accepted, lambda d: None)
    loaded = load_calibration(path2)
    assert loaded.overrides == accepted.overrides


@pytest.mark.parametrize("density", [-5000.0, 50000.0])
def test_user_phantom_with_impossible_density_is_refused(density):
    with pytest.raises(InputError, match="outside what a calibration phantom holds") as exc:
        phantom_from_certificate("my-phantom", [("A", 0.0), ("B", density), ("C", 200.0)], "HA")
    assert "--rod" in exc.value.remedy


def _tissue_hu_at(energy):
    """Tissue HU exactly linear in μ/ρ at ``energy`` (air -1000, cortical bone +1200)."""
    tables = {"air": "air_table", "adipose": "adipose_table", "muscle": "muscle_table", "blood": "blood_table",
              "cortical_bone": "bone_table"}
    mu = {k: _nist(v, energy) for k, v in tables.items()}
    a = 2200.0 / (mu["cortical_bone"] - mu["air"])
    return {k: -1000.0 + a * (m - mu["air"]) for k, m in mu.items()}


def test_internal_calibration_at_an_energy_no_ct_produces_is_refused():
    with pytest.raises(InputError, match=r"effective energy 4\.5 keV is outside"):
        IC.fit_internal(_tissue_hu_at(4.5))
    ok = IC.fit_internal(_tissue_hu_at(62.5))
    assert ok.effective_energy_kev == pytest.approx(62.5)


def test_internal_calibration_states_its_method_error_and_screening_status():
    cal = IC.fit_internal(_tissue_hu_at(62.5))
    err = cal.internal["method_error"]
    assert (err["mean_mg_cm3"], err["sd_mg_cm3"]) == (12.6, 13.2)  # Bartenschlager 2023 JBMR
    assert cal.internal["screening_only"] is True
    assert any("screening estimate, not diagnostic QCT" in w for w in cal.warnings)


def test_internal_calibration_from_three_tissues_warns_with_the_subset_spread():
    hu = _tissue_hu_at(62.5)
    cal = IC.fit_internal({k: hu[k] for k in ("air", "adipose", "muscle")})
    assert any("Reduced tissue set (3 of 5" in w and "74 to 106" in w for w in cal.warnings)


# ------------------------------------------------------------------------------------------------
# The diagnosis: a minimal result document (rows of one ROI type), criteria files, patients
# ------------------------------------------------------------------------------------------------
from OsteoROILib.diagnosis.criteria import load_criterion  # noqa: E402
from OsteoROILib.diagnosis.document import validate_diagnosis  # noqa: E402
from OsteoROILib.diagnosis.verdict import build_diagnosis  # noqa: E402

ADULT_MAN = {"age": 67, "sex": "M"}


def result(vbmd=None, hu=None, unit="mg/cm3 K2HPO4", dicom=None, calibration=None):
    """Rows L1-L4 (oval) with the given vBMD {level: value} and/or HU {level: value}."""
    levels = sorted(set(vbmd or {}) | set(hu or {}))
    rows = []
    for lv in levels:
        row = {"level": lv, "shape": "oval", "mean_hu": (hu or {}).get(lv, 100.0), "sd_hu": 5.0, "n_voxels": 100,
               "warnings": []}
        if vbmd:
            row.update(vbmd_mg_cm3=vbmd[lv], vbmd_unit=unit, vbmd_sd=1.0)
        rows.append(row)
    doc = {"schema": "osteoroi-measurement/1", "created": "2024-01-01T00:00:00+00:00",
           "volume": {"file": "ct.nrrd", "size": [10, 10, 10], "spacing_mm": [1.0, 1.0, 1.0],
                      "ijk_to_ras": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                      "dicom": dict({"kvp": 120.0}, **(dicom or {}))},
           "rows": rows, "warnings": []}
    if calibration:
        doc["calibration"] = calibration
    return doc


def qct(dx):
    return next(v for v in dx["verdicts"] if v["criterion_id"] == "qct-acr2018")


def test_vbmd_from_an_implausible_calibration_is_shown_not_categorised():
    # slope 0.05 gave 2102 mg/cm3 "normal"; intercept 5000 gave -4079 "osteoporosis"
    for value in (2102.0, -4079.0):
        dx = build_diagnosis(result({"L1": value, "L2": value}), patient=ADULT_MAN)
        validate_diagnosis(dx)
        v = qct(dx)
        assert v["value"] == value and v["category"] is None and v["bmd_category"] is None
        assert "outside the plausible range" in v["not_categorised"]


def test_hydroxyapatite_vbmd_is_not_categorised_against_k2hpo4_cut_offs_without_opt_in():
    doc = result({"L1": 100.0, "L2": 100.0}, unit="mg/cm3 HA")
    v = qct(build_diagnosis(doc, patient=ADULT_MAN))
    assert v["category"] is None and "--convert-material" in v["not_categorised"]
    # with the opt-in: Goodsitt 1992 ratio at the scan's 120 kVp, interpolated between 0.86 (80) and 0.81 (140)
    dx = build_diagnosis(doc, patient=ADULT_MAN, convert_material=True)
    validate_diagnosis(dx)
    v = qct(dx)
    assert v["value"] == pytest.approx(100.0 * (0.86 - 0.05 * 40 / 60), abs=0.005)
    assert v["material_conversion"]["ratio_k2hpo4_per_ha"] == pytest.approx(0.8267, abs=1e-4)
    assert v["category_class"] == "low_bone_mass" and "Goodsitt 1992" in " ".join(v["notes"])


@pytest.mark.parametrize("kvp,ratio", [(80.0, 0.86), (140.0, 0.81)])
def test_the_conversion_reproduces_goodsitts_published_ratios(kvp, ratio):
    doc = result({"L1": 100.0, "L2": 100.0}, unit="mg/cm3 HA", dicom={"kvp": kvp})
    v = qct(build_diagnosis(doc, patient=ADULT_MAN, convert_material=True))
    assert v["value"] == pytest.approx(100.0 * ratio)


def test_the_qct_criterion_names_its_sources_and_its_unsettled_material():
    crit = load_criterion("qct-acr2018")
    assert "ISCD 2007" not in crit["title"] and "ACR 2018" in crit["title"] and "seed 000" in crit["title"]
    assert crit["reference_material"] == "K2HPO4" and crit["reference_material_settled"] is False
    assert "not settled" in crit["reference_material_note"]


@pytest.mark.parametrize("patient,why", [
    ({"age": 5, "sex": "F", "menopause": "post"}, "children"),
    ({"age": 12, "sex": "F", "menopause": "post"}, "children"),
    ({"sex": "M", "age": 67, "menopause": "post"}, "contradict"),
])
def test_patients_outside_the_population_get_values_without_categories(patient, why):
    dx = build_diagnosis(result({"L1": 60.0, "L2": 60.0}), patient=patient)
    for v in dx["verdicts"]:
        assert v["category"] is None and v["applicable"] is False
    assert qct(dx)["value"] == 60.0 and why in dx["patient"]["applicability_note"]


@pytest.mark.parametrize("dicom_age,why", [("999Y", "implausible"), ("012Y", "children")])
def test_dicom_ages_that_rule_out_the_categories(dicom_age, why):
    dx = build_diagnosis(result({"L1": 60.0, "L2": 60.0}, dicom={"patient_age": dicom_age, "patient_sex": "F"}),
                         patient={"menopause": "post"})
    assert qct(dx)["category"] is None and why in dx["patient"]["applicability_note"]
    validate_diagnosis(dx)


def _custom(tmp_path, name, edit, base="qct-acr2018.json"):
    doc = json.loads(open(resource_path("Criteria", base)).read())
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_criteria_with_reversed_bands_reusing_a_builtin_id_are_refused(tmp_path):
    def reverse(doc):
        doc["bands"] = [
            {"label": "normal", "class": "normal", "lower": None, "upper": 80, "upper_inclusive": False},
            {"label": "osteopenia", "class": "low_bone_mass", "lower": 80, "lower_inclusive": True, "upper": 120,
             "upper_inclusive": True},
            {"label": "osteoporosis", "class": "osteoporosis", "lower": 120, "upper": None}]
    with pytest.raises(InputError, match="worst category"):
        load_criterion(_custom(tmp_path, "rev.json", reverse))
    # the same content as the built-in under its id is fine; other content under its id is not
    assert load_criterion(_custom(tmp_path, "same.json", lambda d: None))["id"] == "qct-acr2018"
    with pytest.raises(InputError, match="built-in criterion's, with different content"):
        load_criterion(_custom(tmp_path, "other.json", lambda d: d["bands"][0].update(upper=70, lower=None) or
                               d["bands"][1].update(lower=70)))


def test_hu_cut_offs_relabelled_as_vbmd_are_refused(tmp_path):
    def relabel(doc):
        doc.update(id="my-vbmd", quantity="vbmd", unit="mg/cm3", reference_material="K2HPO4")
    with pytest.raises(InputError, match="cut-offs are those of the built-in HU criterion 'seed002-hu'"):
        load_criterion(_custom(tmp_path, "relabel.json", relabel, base="seed002-wang-hu.json"))


def test_a_vbmd_criterion_without_its_material_is_refused(tmp_path):
    with pytest.raises(InputError, match="reference_material"):
        load_criterion(_custom(tmp_path, "nomat.json", lambda d: d.update(id="site-qct") or d.pop("reference_material")))


def test_any_fragility_fracture_with_low_vbmd_is_severe_and_an_unstated_cause_is_unknown():
    low = result({"L1": 70.0, "L2": 75.0, "L3": 72.0})
    # a hip fragility fracture (non-vertebral) with vBMD < 80: severe osteoporosis (QCT_BRIEF §3)
    v = qct(build_diagnosis(low, patient=dict(ADULT_MAN, fragility_fracture="hip 2023")))
    assert v["category"] == "severe osteoporosis"
    # a vertebral fracture whose cause is not stated: the level is excluded, no fracture rule
    v = qct(build_diagnosis(low, exclusions=["L1=fracture:2"], patient=ADULT_MAN))
    assert v["levels_used"] == ["L2", "L3"] and v["category"] == "osteoporosis"
    assert any("unknown cause" in n for n in v["notes"])
    v = qct(build_diagnosis(low, exclusions=["L1=fracture:2:fragility"], patient=ADULT_MAN))
    assert v["category"] == "severe osteoporosis"


def test_seed002_on_fewer_than_four_levels_is_indicative_and_its_inconsistencies_are_recorded():
    dx = build_diagnosis(result(hu={"L1": 100.0, "L2": 100.0}), criteria=["seed002-hu"], patient=ADULT_MAN)
    v = dx["verdicts"][0]
    assert v["indicative"] is True and any("Indicative only" in n for n in v["notes"])
    full = build_diagnosis(result(hu={lv: 100.0 for lv in ("L1", "L2", "L3", "L4")}), criteria=["seed002-hu"],
                           patient=ADULT_MAN)["verdicts"][0]
    assert not full.get("indicative")
    crit = load_criterion("seed002-hu")
    text = " ".join(crit["source_inconsistencies"])
    assert "92.6 %" in text and "85.7 %" in text and "99-125 HU" in text and "97.13" in text
    # the table's numbers (seed 002 Table 3) are the ones used
    assert crit["performance_by_shape"]["right"]["osteoporosis"]["specificity_pct"] == 92.6
    assert crit["bands_by_shape"]["oval"][1]["upper"] == 97.13


def test_pickhardt_above_200_hu_is_osteoporosis_unlikely_and_tool_bands_are_marked():
    dx = build_diagnosis(result(hu={"L1": 210.0}), criteria=["pickhardt2013-l1"], patient=ADULT_MAN)
    v = dx["verdicts"][0]
    assert v["category"] == "osteoporosis unlikely (> 200 HU: NPV 99 %)"
    v = build_diagnosis(result(hu={"L1": 180.0}), criteria=["pickhardt2013-l1"], patient=ADULT_MAN)["verdicts"][0]
    assert v["category"] == "indeterminate" and any("this tool's construction" in n for n in v["notes"])


# ------------------------------------------------------------------------------------------------
# Follow-up identity
# ------------------------------------------------------------------------------------------------
def _exam(vbmd, hu_shift=0.0, **dicom):
    doc = result({"L1": vbmd, "L2": vbmd}, dicom=dicom)
    for r in doc["rows"]:
        r["mean_hu"] += hu_shift
    doc["settings"] = {"slab_mm": 10.0}
    return doc


PATIENT_A = {"patient_id": "A-1", "patient_birth_date": "19500101", "study_instance_uid": "1.2.3"}
PATIENT_B = {"patient_id": "B-2", "patient_birth_date": "19601231", "study_instance_uid": "1.2.9"}


def test_another_patients_result_is_refused_as_prior_unless_confirmed():
    cur = _exam(100.0, **PATIENT_A)
    prior = _exam(85.0, hu_shift=-15.0, **PATIENT_B)
    with pytest.raises(InputError, match="different patients") as exc:
        build_diagnosis(cur, prior=prior, patient=ADULT_MAN)
    assert "--confirm-same-patient" in exc.value.remedy
    dx = build_diagnosis(cur, prior=prior, patient=ADULT_MAN, confirm_same_patient=True)
    assert dx["followup"]["identity"]["confirmed_same_patient_by_user"] is True
    assert any("The user confirmed" in w for w in dx["followup"]["warnings"])
    validate_diagnosis(dx)


def test_patient_identity_is_stored_in_the_diagnosis():
    dx = build_diagnosis(_exam(100.0, patient_name="DOE^JANE", **PATIENT_A), patient=ADULT_MAN)
    assert dx["patient"]["patient_id"] == "A-1" and dx["patient"]["patient_birth_date"] == "19500101"
    assert dx["patient"]["patient_name"] == "DOE^JANE"


@pytest.mark.parametrize("make_prior,what", [
    (lambda cur: cur, "copy of the current measurement"),                         # the same file as its own prior
    (lambda cur: json.loads(json.dumps(cur)), "copy of the current measurement"),  # an identical copy
    (lambda cur: dict(_exam(90.0, hu_shift=-10.0), truth={}), "synthetic digital phantom"),
])
def test_a_prior_that_is_not_an_earlier_study_is_refused(make_prior, what):
    cur = _exam(100.0, patient_id="A-1")  # a header without Study Instance UID: the values show the copy
    with pytest.raises(InputError, match=what):
        build_diagnosis(cur, prior=make_prior(cur), patient=ADULT_MAN)


def test_a_prior_of_the_same_study_is_refused():
    cur = _exam(100.0, **PATIENT_A)
    with pytest.raises(InputError, match="same study"):
        build_diagnosis(cur, prior=_exam(90.0, hu_shift=-10.0, **PATIENT_A), patient=ADULT_MAN)


def test_a_prior_of_another_contrast_phase_or_slab_is_refused():
    cur = _exam(100.0, contrast_agent="NONE")
    with pytest.raises(InputError, match="contrast-enhanced"):
        build_diagnosis(cur, prior=_exam(90.0, hu_shift=-10.0, contrast_agent="IOHEXOL"), patient=ADULT_MAN)
    prior = _exam(90.0, hu_shift=-10.0, contrast_agent="NONE")
    prior["settings"]["slab_mm"] = 3.0
    with pytest.raises(InputError, match="slabs differ"):
        build_diagnosis(cur, prior=prior, patient=ADULT_MAN)


def test_a_prior_of_another_calibration_kind_compares_hu_only():
    cur = _exam(100.0)
    cur["calibration"] = {"kind": "phantom", "unit": "K2HPO4"}
    prior = _exam(90.0, hu_shift=-10.0)
    prior["calibration"] = {"kind": "internal", "unit": "K2HPO4"}
    f = build_diagnosis(cur, prior=prior, patient=ADULT_MAN)["followup"]
    assert {x["quantity"] for x in f["levels"]} == {"hu"}
    assert any("calibration kind differs" in w for w in f["warnings"])


# ------------------------------------------------------------------------------------------------
# Least significant change in absolute units for QCT (Wang 2017 Sci Rep 7:6284: 0.53-0.91 mg/cm3)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,change,verdict", [
    (0.53, 1.50, "significant gain"),   # LSC 2.77 x 0.53 = 1.468 mg/cm3 < 1.50
    (0.91, 1.50, "stable"),             # LSC 2.77 x 0.91 = 2.521 mg/cm3 > 1.50
    (0.91, -2.60, "significant loss"),
])
def test_vbmd_lsc_from_a_precision_in_mg_cm3(precision, change, verdict):
    cur = _exam(100.0 + change)
    prior = _exam(100.0, hu_shift=-3.0)
    f = build_diagnosis(cur, prior=prior, patient=ADULT_MAN, precision_mg_cm3=precision)["followup"]
    s = next(x for x in f["summary"] if x["criterion_id"] == "qct-acr2018")
    assert s["lsc_abs"] == pytest.approx(2.77 * precision, abs=1e-4)
    assert s["lsc_pct"] == pytest.approx(2.77 * precision / 100.0 * 100.0, abs=1e-4)  # derived at the prior 100
    assert s["verdict"] == verdict and f["lsc_mg_cm3"] == pytest.approx(2.77 * precision, abs=1e-4)


def test_vbmd_lsc_from_a_percent_precision_is_stated_in_mg_cm3_too():
    f = build_diagnosis(_exam(101.5), prior=_exam(100.0, hu_shift=-3.0), patient=ADULT_MAN)["followup"]
    s = next(x for x in f["summary"] if x["criterion_id"] == "qct-acr2018")
    # default 3 %: LSC 8.31 % of the prior 100 mg/cm3 = 8.31 mg/cm3; +1.5 is stable
    assert s["lsc_abs"] == pytest.approx(8.31) and s["verdict"] == "stable"
    with pytest.raises(InputError, match="mg/cm3"):
        build_diagnosis(_exam(101.5), prior=_exam(100.0, hu_shift=-3.0), patient=ADULT_MAN, precision_mg_cm3=0)


def test_criteria_not_validated_on_contrast_say_so_on_an_enhanced_scan():
    dx = build_diagnosis(result({"L1": 100.0, "L2": 100.0}, dicom={"contrast_agent": "IOMEPROL"}), patient=ADULT_MAN)
    for v in dx["verdicts"]:
        if v["status"] == "ok":
            assert any("not validated on contrast-enhanced CT" in n for n in v["notes"]), v["criterion_id"]
    plain = build_diagnosis(result({"L1": 100.0, "L2": 100.0}, dicom={"contrast_agent": "NONE"}), patient=ADULT_MAN)
    assert not any("contrast-enhanced CT" in n for v in plain["verdicts"] for n in v["notes"])


def test_patient_identity_is_read_from_dicom_and_reaches_the_diagnosis(tmp_path):
    pytest.importorskip("pydicom")
    from test_dicom import stored_values, write_series  # the DICOM writer of the io tests

    from OsteoROILib.io import dicom_read

    write_series(tmp_path, stored_values(4, 8, 8), tags={"PatientID": "P-123", "PatientName": "DOE^JANE",
                                                         "PatientBirthDate": "19520304"})
    facts = dicom_read.read_dicom_directory(str(tmp_path)).facts
    assert (facts["patient_id"], facts["patient_name"], facts["patient_birth_date"]) == ("P-123", "DOE^JANE", "19520304")
    doc = result({"L1": 100.0, "L2": 100.0}, dicom={k: facts[k] for k in ("patient_id", "patient_birth_date")})
    assert build_diagnosis(doc, patient=ADULT_MAN)["patient"]["patient_id"] == "P-123"


def test_applicability_is_read_from_the_criterion_data(tmp_path):
    # a site criterion for men from 65: the same 60-year-old man is categorised by the built-in, not by it
    path = _custom(tmp_path, "men65.json", lambda d: d.update(id="site-qct-men65", applies_to={"men_min_age_years": 65}))
    dx = build_diagnosis(result({"L1": 100.0, "L2": 100.0}), criteria=["qct-acr2018", path],
                         patient={"age": 60, "sex": "M"})
    builtin, site = dx["verdicts"]
    assert builtin["category"] == "low bone mass (osteopenia)" and site["category"] is None
    assert any("65" in n for n in site["notes"])


def test_the_severe_rule_keeps_its_minimum_genant_grade(tmp_path):
    path = _custom(tmp_path, "sev2.json", lambda d: d.update(id="site-qct-sev2") or d["severe"].update(min_fracture_grade=2))
    low = result({"L1": 70.0, "L2": 75.0, "L3": 72.0})
    mild = build_diagnosis(low, criteria=[path], exclusions=["L1=fracture:1:fragility"], patient=ADULT_MAN)["verdicts"][0]
    assert mild["category"] == "osteoporosis (fracture)"
    moderate = build_diagnosis(low, criteria=[path], exclusions=["L1=fracture:2:fragility"], patient=ADULT_MAN)
    assert moderate["verdicts"][0]["category"] == "severe osteoporosis"


def test_an_enhanced_aorta_marks_the_scan_contrast_enhanced_without_the_dicom_tag():
    hu = _tissue_hu_at(62.5)
    # enhanced blood spoils the μ/ρ line with cortical bone; without it the fit passes (R² > 0.9)
    cal = IC.fit_internal({"air": -1000.0, "adipose": -100.0, "muscle": 40.0, "blood": 180.0})
    assert cal.internal["contrast_from_aorta_hu"] == 180.0
    assert any("contrast-enhanced" in w and "180 HU" in w for w in cal.warnings)
    plain = IC.fit_internal(hu)
    assert plain.internal["contrast_from_aorta_hu"] is None
    # the diagnosis of a result calibrated with it says so, though the DICOM tag is absent
    _, extra = calibrate_measurement({"rows": [{"level": "L1", "shape": "oval", "mean_hu": 150.0}], "warnings": []}, cal)
    dx = build_diagnosis(result({"L1": 100.0, "L2": 100.0}, calibration=extra["calibration"]), patient=ADULT_MAN)
    assert any("aorta reads 180 HU" in w for w in dx["warnings"])
    assert any("not validated on contrast-enhanced CT" in n for n in qct(dx)["notes"])


def _with_aorta(doc, hu):
    """A result whose aorta search (placement.aorta) measured ``hu`` beside L1-L2 (None: not found)."""
    doc["aorta"] = {"hu": hu, "confidence": 1.0 if hu is not None else 0.0,
                    "reason": None if hu is not None else "Aorta not found: L1: no round, uniform region."}
    return doc


def test_an_enhanced_aorta_beside_l1_l2_marks_the_scan_contrast_enhanced_whatever_the_tag_says():
    # the DICOM tag says no contrast; the aorta reads 250 HU (unenhanced blood 20 ± 40 HU, QCT_BRIEF §4)
    dx = build_diagnosis(_with_aorta(result({"L1": 100.0, "L2": 100.0}, dicom={"contrast_agent": "NONE"}), 250.0),
                         patient=ADULT_MAN)
    validate_diagnosis(dx)
    assert any("aorta reads 250 HU" in w and "beside L1-L2" in w for w in dx["warnings"])
    assert any("not validated on contrast-enhanced CT" in n for n in qct(dx)["notes"])
    assert dx["study"]["aorta_hu"] == 250.0 and dx["study"]["contrast_enhanced"] is True
    # the category is still given (flagged, not withheld): the value is the same
    assert qct(dx)["category"] == "low bone mass (osteopenia)"


@pytest.mark.parametrize("hu, enhanced, note", [(45.0, False, False), (80.0, None, True), (None, None, False)])
def test_unenhanced_or_unknown_aorta_blood_is_not_called_contrast(hu, enhanced, note):
    # 45 HU: unenhanced blood; 80 HU: above its range (20 + 40) but not above 100 HU, a note only;
    # not found: nothing is claimed
    dx = build_diagnosis(_with_aorta(result({"L1": 100.0, "L2": 100.0}), hu), patient=ADULT_MAN)
    validate_diagnosis(dx)
    assert not any("aorta" in w for w in dx["warnings"])
    assert not any("contrast-enhanced CT" in n for n in qct(dx)["notes"])
    assert dx["study"]["contrast_enhanced"] is enhanced
    assert any("late contrast phase" in n for n in dx["notes"]) is note


def test_a_prior_whose_aorta_is_enhanced_is_refused_against_an_unenhanced_exam():
    # no DICOM contrast tag on either exam: the aorta's blood HU tells the phases apart
    cur = _with_aorta(_exam(100.0, **PATIENT_A), 45.0)
    prior = _with_aorta(_exam(100.0, hu_shift=-5.0, **dict(PATIENT_A, study_instance_uid="1.2.4")), 260.0)
    with pytest.raises(InputError, match="contrast-enhanced and the other not.*aorta prior 260 HU, current 45 HU"):
        build_diagnosis(cur, prior=prior, patient=ADULT_MAN)


def test_an_enhanced_region_seen_beside_one_level_only_asks_the_reader_to_check_it():
    doc = _with_aorta(result({"L1": 100.0, "L2": 100.0}), 250.0)
    doc["aorta"]["levels"] = {"L1": {"hu": 250.0}}
    dx = build_diagnosis(doc, patient=ADULT_MAN)
    assert any("aorta reads 250 HU" in w and "found beside L1 only" in w for w in dx["warnings"])
    doc["aorta"]["levels"] = {"L1": {"hu": 250.0}, "L2": {"hu": 250.0}}
    assert not any("only" in w for w in build_diagnosis(doc, patient=ADULT_MAN)["warnings"] if "aorta" in w)
