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
