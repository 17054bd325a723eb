"""Calibration fits, QA rules, calibration objects, saving/applying, and internal calibration.

Oracles: numpy.polyfit / numpy.corrcoef (scipy.stats.linregress when installed) on the same numbers, closed-form two-point
lines, the Mindways formulas of QCT_BRIEF §4 written out here, NIST tables interpolated here.
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from OsteoROILib.calibration.apply import apply_calibration, calibration_summary, check_units
from OsteoROILib.calibration.model import fit_line, load_calibration, save_calibration
from OsteoROILib.calibration.phantom_fit import compare_scanner, fit_phantom, manual_calibration
from OsteoROILib.resources import resource_path
from OsteoROILib.calibration import internal as IC
from OsteoROILib.errors import InputError
from OsteoROILib.calibration.phantom_library import get_phantom, phantom_from_certificate



class _LinReg:
    """Oracle regression: numpy.polyfit for the line, numpy.corrcoef for r (scipy is optional)."""

    def __init__(self, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float)
        self.slope, self.intercept = np.polyfit(x, y, 1)
        self.rvalue = float(np.corrcoef(x, y)[0, 1])


try:  # scipy.stats.linregress when available, else the numpy oracle
    from scipy import stats as _st

    def linregress(x, y):
        return _st.linregress(x, y)
except ImportError:  # pragma: no cover - depends on the environment
    def linregress(x, y):
        return _LinReg(x, y)


def _rods(names, dens, hu, sd=None, n=None):
    out = []
    for i, (a, b, c) in enumerate(zip(names, dens, hu)):
        d = {"name": a, "density": b, "mean_hu": c}
        if sd is not None:
            d["sd_hu"] = sd[i]
            d["n_voxels"] = n[i] if n is not None else 200
        out.append(d)
    return out


def _linear_phantom(dens, unit="HA"):
    return phantom_from_certificate("test-ph", [(f"R{i}", d) for i, d in enumerate(dens)], unit)


# ----------------------------------------------------------------------------------------------
# OLS fit against independent oracles
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_line_matches_linregress(seed):
    rng = np.random.default_rng(seed)
    x = np.array([0, 100, 200, 400, 600, 800.0])
    y = -12 + 1.3 * x + rng.normal(0, 4, x.size)
    f = fit_line(x, y)
    lr = linregress(x, y)
    assert f.slope == pytest.approx(lr.slope, rel=1e-12)
    assert f.intercept == pytest.approx(lr.intercept, abs=1e-9)
    assert f.r2 == pytest.approx(lr.rvalue ** 2, rel=1e-12)
    p = np.polyfit(x, y, 1)
    res = y - np.polyval(p, x)
    assert np.allclose(f.residuals, res, atol=1e-9)
    assert f.see == pytest.approx(math.sqrt((res ** 2).sum() / (x.size - 2)), rel=1e-10)


def test_two_point_closed_form():
    ph = _linear_phantom([0.0, 200.0])
    cal = fit_phantom(_rods(["R0", "R1"], [0, 200], [-5.0, 245.0]), ph)
    assert cal.slope == pytest.approx((245.0 - -5.0) / 200.0)
    assert cal.intercept == pytest.approx(-5.0)
    assert cal.r2 == pytest.approx(1.0)
    assert cal.see is None
    assert cal.vbmd(120.0) == pytest.approx((120.0 + 5.0) / 1.25)
    assert cal.vbmd_sd(120.0) is None
    assert any("3 or more" in w for w in cal.warnings)


def test_phantom_fit_recovers_scanner_and_vbmd_sd_formula():
    dens = np.array([0, 100, 200, 400, 600, 800.0])
    rng = np.random.default_rng(5)
    hu = 20 + 0.95 * dens + rng.normal(0, 3, dens.size)
    ph = _linear_phantom(dens)
    cal = fit_phantom(_rods([r.name for r in ph.rods], dens, hu), ph)
    lr = linregress(dens, hu)
    assert cal.slope == pytest.approx(lr.slope) and cal.intercept == pytest.approx(lr.intercept)
    assert cal.unit == "HA" and cal.unit_label == "mg/cm3 HA"
    # inverse prediction SE, written out independently
    res = hu - (lr.intercept + lr.slope * dens)
    see = math.sqrt((res ** 2).sum() / (dens.size - 2))
    h0 = 150.0
    x0 = (h0 - lr.intercept) / lr.slope
    expected = see / lr.slope * math.sqrt(1 / dens.size + (x0 - dens.mean()) ** 2 / ((dens - dens.mean()) ** 2).sum())
    assert cal.vbmd(h0) == pytest.approx(x0)
    assert cal.vbmd_sd(h0) == pytest.approx(expected, rel=1e-9)
    for p, r in zip(cal.points, res):
        assert p["residual_hu"] == pytest.approx(r, abs=1e-9)


def test_qa_refusals():
    ph = _linear_phantom([0, 100, 200, 400])
    names = [r.name for r in ph.rods]
    with pytest.raises(InputError, match="not positive"):
        fit_phantom(_rods(names, [0, 100, 200, 400], [400, 300, 200, 0]), ph)
    with pytest.raises(InputError, match="too poor"):  # R² well below 0.90
        fit_phantom(_rods(names, [0, 100, 200, 400], [0, 300, 20, 250]), ph)
    with pytest.raises(InputError, match="distinct density"):
        fit_line([100, 100, 100], [1, 2, 3])
    with pytest.raises(InputError, match="more than one rod"):
        _linear_phantom([100, 100, 100])
    with pytest.raises(InputError):
        manual_calibration(-1.0, 0.0, "HA")


def test_r2_warning_band():
    # R² between 0.90 and 0.98: accepted with a warning (oracle: linregress R² of the same numbers)
    dens = np.array([0, 100, 200, 300, 400.0])
    hu = np.array([0, 160, 170, 330, 420.0])
    r2 = linregress(dens, hu).rvalue ** 2
    assert 0.90 < r2 < 0.98
    ph = _linear_phantom(dens)
    cal = fit_phantom(_rods([r.name for r in ph.rods], dens, hu), ph)
    assert cal.r2 == pytest.approx(r2)
    assert any("below 0.98" in w for w in cal.warnings)


def test_outlier_rod_is_flagged_and_others_not():
    dens = np.array([0, 100, 200, 400, 600, 800.0])
    rng = np.random.default_rng(11)
    hu = -10 + 1.2 * dens + rng.normal(0, 1.0, dens.size)
    hu_bad = hu.copy()
    hu_bad[2] += 25.0
    ph = _linear_phantom(dens)
    names = [r.name for r in ph.rods]
    sd = [15.0] * 6
    cal = fit_phantom(_rods(names, dens, hu_bad, sd=sd, n=[225] * 6), ph)
    # oracle: leave-one-out line through the other rods, by numpy.polyfit
    keep = np.arange(6) != 2
    p = np.polyfit(dens[keep], hu_bad[keep], 1)
    loo = hu_bad[2] - np.polyval(p, dens[2])
    assert cal.points[2]["loo_residual_hu"] == pytest.approx(loo, abs=1e-9)
    assert [pt["flagged"] for pt in cal.points] == [False, False, True, False, False, False]
    assert any("Rod R2" in w for w in cal.warnings)
    clean = fit_phantom(_rods(names, dens, hu, sd=sd, n=[225] * 6), ph)
    assert not any(pt["flagged"] for pt in clean.points)


def test_high_rod_sd_warns():
    dens = [0, 100, 200, 400]
    ph = _linear_phantom(dens)
    cal = fit_phantom(_rods([r.name for r in ph.rods], dens, [0, 100, 200, 400], sd=[10, 11, 60, 9]), ph)
    assert any("R2" in w and "SD is high" in w for w in cal.warnings)
    assert not any("R1" in w and "SD is high" in w for w in cal.warnings)


def test_mindways_two_component_recovers_sigma_beta():
    ph = get_phantom("mindways-example")
    sigma_ct, beta_ct = 1.18, -7.5
    # QCT_BRIEF §4 written out: HU - water = sigma_ref * K2HPO4 + beta_ref,
    # sigma_CT = sigma_ref - 0.2174, beta_CT = beta_ref + 999.6
    sigma_ref, beta_ref = sigma_ct + 0.2174, beta_ct - 999.6
    rods = [{"name": r.name, "mean_hu": r.water_density + sigma_ref * r.density + beta_ref} for r in ph.rods]
    cal = fit_phantom(rods, ph)
    assert cal.method == "mindways-two-component" and cal.unit == "K2HPO4"
    assert cal.slope == pytest.approx(sigma_ct, abs=1e-9)
    assert cal.intercept == pytest.approx(beta_ct, abs=1e-7)
    assert cal.reference_fit["slope"] == pytest.approx(sigma_ref)
    assert cal.vbmd(beta_ct + sigma_ct * 100.0) == pytest.approx(100.0)


def test_rod_keys_by_name_or_density():
    ph = get_phantom("mindways-example")
    assert ph.rod("c").name == "C"
    assert ph.rod("58.88").name == "C"
    with pytest.raises(InputError, match="no rod"):
        ph.rod("Z")


# ----------------------------------------------------------------------------------------------
# Units, manual, saving and applying
# ----------------------------------------------------------------------------------------------
def test_units_never_mixed():
    a = manual_calibration(1.0, 0.0, "mg/cm3 HA")
    b = manual_calibration(1.0, 0.0, "K₂HPO₄")
    assert (a.unit, b.unit) == ("HA", "K2HPO4")
    with pytest.raises(InputError, match="mix"):
        check_units([a, b])
    with pytest.raises(InputError, match="Unknown density unit"):
        manual_calibration(1.0, 0.0, "mg/cm3")
    with pytest.raises(InputError, match="one density unit"):
        from OsteoROILib.calibration.phantom_library import validate_phantom

        validate_phantom({"id": "x", "unit": "HA", "rods": [{"name": "a", "density": 0},
                                                            {"name": "b", "density": 100, "unit": "K2HPO4"}]})


def test_apply_calibration_rows_and_summary():
    dens = np.array([0, 100, 200, 400.0])
    hu = np.array([-10.0, 118.0, 237.0, 492.0])
    ph = _linear_phantom(dens)
    cal = fit_phantom(_rods([r.name for r in ph.rods], dens, hu), ph)
    p = np.polyfit(dens, hu, 1)
    rows = [{"level": "L1", "shape": "oval", "mean_hu": 150.0, "warnings": []},
            {"level": "L2", "shape": "oval", "mean_hu": None, "warnings": ["empty ROI"]},
            {"level": "L3", "shape": "oval", "mean_hu": 900.0, "warnings": []}]
    out = apply_calibration(rows, cal)
    assert rows[0].get("vbmd_mg_cm3") is None  # inputs untouched
    assert out[0]["vbmd_mg_cm3"] == pytest.approx((150.0 - p[1]) / p[0])
    assert out[0]["vbmd_unit"] == "mg/cm3 HA" and out[0]["vbmd_sd"] > 0
    assert out[1]["vbmd_mg_cm3"] is None and out[1]["vbmd_sd"] is None
    assert any("no mean HU" in w for w in out[1]["warnings"]) and "empty ROI" in out[1]["warnings"]
    assert any("extrapolated" in w for w in out[2]["warnings"])
    s = calibration_summary(cal)
    assert s["unit"] == "HA" and s["slope_hu_per_mg_cm3"] == pytest.approx(p[0], rel=1e-6)
    manual = apply_calibration(rows[:1], manual_calibration(2.0, 10.0, "K2HPO4"))
    assert manual[0]["vbmd_mg_cm3"] == pytest.approx(70.0) and manual[0]["vbmd_sd"] is None
    assert any("manual" in w for w in manual[0]["warnings"])


def test_save_load_roundtrip_schema_and_scanner_mismatch(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    dens = [0, 100, 200, 400, 600, 800]
    ph = get_phantom("qrm-bdc-6")
    facts = {"manufacturer": "SIEMENS", "model": "SOMATOM Force", "kvp": 120.0, "convolution_kernel": "Br40",
             "study_date": "20240102"}
    cal = fit_phantom(_rods([r.name for r in ph.rods], dens, [-8, 121, 244, 491, 742, 989]), ph, scanner=facts)
    path = str(tmp_path / "cal.json")
    save_calibration(cal, path)
    with pytest.raises(Exception, match="already exists"):
        save_calibration(cal, path)
    doc = json.load(open(path))
    with open(resource_path("Schemas", "osteoroi-calibration-1.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    back = load_calibration(path)
    assert back.origin == "saved" and back.unit == "HA"
    assert back.slope == pytest.approx(cal.slope, rel=1e-6) and back.vbmd(150) == pytest.approx(cal.vbmd(150), rel=1e-6)
    assert back.vbmd_sd(150) == pytest.approx(cal.vbmd_sd(150), rel=1e-4)
    assert compare_scanner(back, dict(facts)) == []
    other = dict(facts, kvp=100, convolution_kernel="Bf70", study_date="20240301")
    msgs = compare_scanner(back, other)
    assert any("kVp" in m for m in msgs) and any("kernel" in m for m in msgs) and any("date" in m for m in msgs)
    assert any("Cannot check" in m for m in compare_scanner(back, {}))
    # an edited file that breaks the schema is refused with a clear message
    doc["unit"] = "mg"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError):
        load_calibration(str(bad))


# ----------------------------------------------------------------------------------------------
# Internal (phantomless) calibration
# ----------------------------------------------------------------------------------------------
def _nist_oracle():
    path = os.path.join(os.path.dirname(__file__), "..", "Resources", "Data", "nist_mass_attenuation.csv")
    tab = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            tab.setdefault(r["material"], []).append((float(r["energy_keV"]), float(r["mass_attenuation_cm2_per_g"])))
    return {k: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for k, v in tab.items()}


def test_nist_copy_matches_shared_data():
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nist_mass_attenuation.csv")
    if not os.path.exists(shared):
        pytest.skip("../shared not available")
    mine = os.path.join(os.path.dirname(__file__), "..", "Resources", "Data", "nist_mass_attenuation.csv")
    assert open(mine).read() == open(shared).read()


@pytest.mark.parametrize("energy", [55.0, 62.5, 70.0, 84.5])
def test_internal_recovers_chosen_effective_energy(energy):
    tab = _nist_oracle()
    names = {"air": "air_table", "adipose": "adipose_table", "muscle": "muscle_table", "blood": "blood_table",
             "cortical_bone": "bone_table"}
    mu = {k: float(np.interp(energy, *tab[v])) for k, v in names.items()}
    # HU exactly linear in mu/rho at the chosen energy (air -1000, cortical bone +1200)
    a = 2200.0 / (mu["cortical_bone"] - mu["air"])
    hu = {k: -1000.0 + a * (m - mu["air"]) for k, m in mu.items()}
    cal = IC.fit_internal(hu)
    assert cal.internal["effective_energy_kev"] == pytest.approx(energy)
    assert cal.unit == "K2HPO4" and cal.kind == "internal"
    # vBMD oracle, written out from the method with linregress at that energy
    H = np.array(list(hu.values()))
    M = np.array([mu[k] for k in hu])
    mw = float(np.interp(energy, *tab["water_table"]))
    mk = float(np.interp(energy, *tab["k2hpo4_table"]))
    mt = float(np.interp(energy, *tab["triglyceride_table"]))
    l_mu = linregress(H, M)
    l_rho = linregress(H, mw * (1 + H / 1000.0) / M)
    for h in (50.0, 150.0, 300.0):
        expected = 1000 * (l_rho.intercept + l_rho.slope * h) * ((l_mu.intercept + l_mu.slope * h) - mt) / (mk - mt)
        assert cal.vbmd(h) == pytest.approx(expected, rel=1e-9)
        assert cal.vbmd_sd(h) == pytest.approx(0.0, abs=1e-6)  # exact line: no fit error


def test_internal_needs_three_tissues_and_sanity_warns():
    with pytest.raises(InputError, match="at least 3"):
        IC.fit_internal({"air": -1000, "muscle": 40})
    with pytest.raises(InputError, match="Unknown reference tissue"):
        IC.fit_internal({"air": -1000, "muscle": 40, "liver": 60})
    cal = IC.fit_internal({"air": -1000, "fat": -100, "muscle": 40, "aorta": 180})  # enhanced blood
    assert any("blood" in w and "typical range" in w for w in cal.warnings)
    assert not any("muscle" in w and "typical range" in w for w in cal.warnings)
    ok = IC.fit_internal({"air": -995, "adipose": -95, "muscle": 45, "blood": 40, "cortical_bone": 1250})
    assert not any("typical range" in w for w in ok.warnings)
    assert 1.0 <= ok.internal["effective_energy_kev"] <= 200.0
    assert ok.vbmd_sd(150.0) > 0
    # grid: 1 to 200 keV in 0.5 keV steps
    assert IC.ENERGIES_KEV[0] == 1.0 and IC.ENERGIES_KEV[-1] == 200.0 and np.allclose(np.diff(IC.ENERGIES_KEV), 0.5)
