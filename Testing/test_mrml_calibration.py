"""Calibration in the MRML logic on the real ``slicer-core`` wheel: rods and tissues as markups.

Oracles: the digital phantom's configured truth (each rod's expected HU; the scanner's slope and
intercept, so that the vBMD of every level is its configured trabecular density), ordinary least
squares recomputed here with ``numpy.polyfit`` on the rods' (density, HU) pairs, the Mindways
constants of QCT_BRIEF §4 applied by hand, and ``internalcal.fit_internal`` on the phantom's
configured tissue HU (the internal calibration must be the one the core fits from those numbers).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
vtk = pytest.importorskip("vtk")

from OsteoROILib.calibration.apply import calibration_summary  # noqa: E402
from OsteoROILib.calibration.internal import fit_internal  # noqa: E402
from OsteoROILib.calibration.phantom_fit import fit_phantom  # noqa: E402
from OsteoROILib.calibration.phantom_library import get_phantom  # noqa: E402
from OsteoROILib.errors import InputError, OutputError  # noqa: E402
from OsteoROILib.mrml.calibration_state import calibration_fit_summary, format_calibration_summary  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.nodes import ROLE_ATTRIBUTE, ROLE_OWN_RODS  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, new_scene  # noqa: E402
from OsteoROILib.digital_phantom import make_phantom  # noqa: E402


@pytest.fixture(scope="module")
def qrm():
    return make_phantom()  # noise-free, QRM-BDC 6-rod phantom (HA), scanner 1.25 HU per mg/cm3, -10 HU


@pytest.fixture(scope="module")
def qrm_noisy():
    return make_phantom(noise_sigma=15.0, seed=7)


@pytest.fixture(scope="module")
def mindways():
    return make_phantom(calibration_preset="mindways-example")


class Scene:
    def __init__(self, phantom, scheduler=None):
        self.log = vtk.vtkStringOutputWindow()
        self.previous = vtk.vtkOutputWindow.GetInstance()
        vtk.vtkOutputWindow.SetInstance(self.log)
        self.volume, self.truth = phantom
        self.app = new_scene()
        self.scene = self.app.scene
        self.volumeNode = add_volume_from_array(self.scene, self.volume.array, self.volume.ijk_to_ras, "CT")
        self.levels = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
        for level in self.truth.levels:
            self.levels.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
        self.logic = OsteoROIMRMLLogic(self.scene, scheduler=scheduler)

    def rod_list(self, name="My rods", offset=(0.0, 0.0, 0.0)):
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        for rod in self.truth.rods:
            node.AddControlPoint(*[float(c + o) for c, o in zip(rod.center_ras, offset)], rod.name)
        return node

    def close(self):
        vtk.vtkOutputWindow.SetInstance(self.previous)
        errors = [b for b in self.log.GetOutput().split("\n\n") if "Error" in b or "ERR" in b]
        self.app.close()
        assert not errors, f"VTK/MRML logged errors: {errors}"


@pytest.fixture
def make_scene():
    made = []

    def factory(phantom, scheduler=None):
        s = Scene(phantom, scheduler)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.close()


def table_columns(tableNode):
    t = tableNode.GetTable()
    return {t.GetColumnName(c): [t.GetValue(r, c).ToString() for r in range(t.GetNumberOfRows())]
            for c in range(t.GetNumberOfColumns())}


def control_points(node):
    return [(node.GetNthControlPointLabel(i), tuple(node.GetNthControlPointPosition(i)))
            for i in range(node.GetNumberOfControlPoints())]


# ------------------------------------------------------------------------------------------------
def test_rod_points_give_the_scanner_line_and_the_configured_vbmd(make_scene, qrm):
    s = make_scene(qrm)
    truth = s.truth
    # Points 1.5 mm off the rods' centres: the rod ROI is refined around each point.
    rods = s.rod_list(offset=(1.5, -1.0, 0.0))
    before = control_points(rods)
    table = s.logic.run(s.volumeNode, s.levels, shapes=["oval", "front"])
    cal = s.logic.calibrateFromRods(rods, "qrm-bdc-6")
    assert cal.slope == pytest.approx(truth.scanner.slope, rel=1e-6)
    assert cal.intercept == pytest.approx(truth.scanner.intercept, abs=1e-4)
    fit = s.logic.state()["calibration_fit"]
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9) and fit["n_points"] == len(truth.rods) == 6
    expected = {r.name: r for r in truth.rods}
    assert [p["name"] for p in fit["points"]] == [r.name for r in truth.rods]
    for p in fit["points"]:
        assert p["mean_hu"] == pytest.approx(expected[p["name"]].expected_hu, abs=1e-3)
        assert p["density"] == expected[p["name"]].density
        assert abs(p["residual_hu"]) < 1e-3 and not p["flagged"]
    # vBMD of every level = its configured trabecular density (mg/cm3 HA).
    density = {lv.name: lv.trabecular_density for lv in truth.levels}
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx(density[row["level"]], rel=1e-6)
        assert row["vbmd_unit"] == "mg/cm3 HA" and row["vbmd_sd"] is not None
    cols = table_columns(table)
    assert [float(v) for v in cols["vBMD"]] == pytest.approx([density[lv] for lv in cols["Level"]], rel=1e-5)
    assert table.GetColumnUnitLabel("vBMD") == "mg/cm3 HA" == table.GetColumnUnitLabel("vBMD SD")
    assert all(v not in ("", "nan") for v in cols["vBMD SD"])
    text = s.logic.calibrationSummary()["text"]
    assert "R\u00b2 = 1.00000" in text and "qrm-bdc-6" in text and "R800" in text
    # The user's rod list is only read.
    assert control_points(rods) == before and rods.GetName() == "My rods"
    assert rods.GetAttribute(ROLE_ATTRIBUTE) is None


def test_noisy_rods_fit_summary_matches_least_squares(make_scene, qrm_noisy):
    s = make_scene(qrm_noisy)
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    s.logic.calibrateFromRods(s.rod_list(), "qrm-bdc-6")
    fit = s.logic.state()["calibration_fit"]
    x = np.array([p["density"] for p in fit["points"]])
    y = np.array([p["mean_hu"] for p in fit["points"]])
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (intercept + slope * x)
    assert fit["slope_hu_per_mg_cm3"] == pytest.approx(slope, rel=1e-9)
    assert fit["intercept_hu"] == pytest.approx(intercept, rel=1e-9, abs=1e-9)
    assert fit["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)
    assert fit["see_hu"] == pytest.approx(math.sqrt(residuals @ residuals / (len(x) - 2)), rel=1e-9)
    assert [p["residual_hu"] for p in fit["points"]] == pytest.approx(list(residuals), abs=1e-9)
    # Each rod's mean HU is within 4 standard errors of its configured HU.
    expected = {r.name: r.expected_hu for r in s.truth.rods}
    for p in fit["points"]:
        assert abs(p["mean_hu"] - expected[p["name"]]) < 4 * p["sd_hu"] / math.sqrt(p["n_voxels"])
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx((row["mean_hu"] - intercept) / slope, rel=1e-9)


def test_auto_detected_rods_are_an_editable_list_refitted_on_change(make_scene, mindways):
    pending = []
    s = make_scene(mindways, scheduler=pending.append)
    truth = s.truth
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    userRods = s.rod_list("Mindways rods I placed")
    s.logic.calibrateFromRods(userRods, "mindways-example")
    userBefore = control_points(userRods)
    nodes = s.scene.GetNumberOfNodes()
    node = s.logic.autoDetectRods("mindways-example")
    # A new, module-owned list: one point per rod, labelled A..E, at the rods' centres.
    assert node is not userRods and node.GetAttribute(ROLE_ATTRIBUTE) == ROLE_OWN_RODS
    assert control_points(userRods) == userBefore
    assert [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())] == list("ABCDE")
    for i, rod in enumerate(truth.rods):
        p = np.array(node.GetNthControlPointPosition(i))
        assert np.linalg.norm(p[:2] - rod.center_ras[:2]) < 0.5
    # Mindways two-component fit (QCT_BRIEF §4): sigma_CT, beta_CT are the scanner's slope/intercept.
    cal = s.logic.calibration()
    assert cal.method == "mindways-two-component" and cal.unit == "K2HPO4"
    assert cal.slope == pytest.approx(truth.scanner.slope, rel=1e-6)
    assert cal.intercept == pytest.approx(truth.scanner.intercept, abs=1e-3)
    ref = cal.reference_fit
    assert ref["slope"] - 0.2174 == pytest.approx(cal.slope)
    assert ref["intercept"] + 999.6 == pytest.approx(cal.intercept)
    density = {lv.name: lv.trabecular_density for lv in truth.levels}
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx(density[row["level"]], rel=1e-6)
    assert s.logic.calibrationSummary()["source"]["auto"] is True
    assert pending == []

    # Re-detecting reuses the module's list (no new node).
    count = s.scene.GetNumberOfNodes()
    assert s.logic.autoDetectRods("mindways-example") is node and s.scene.GetNumberOfNodes() == count
    assert count == nodes + 1 + 1  # the list and its display node

    # Drag rod C 10 mm onto the phantom block: throttled, then re-fitted; C now reads below rod B although
    # it is denser, so the fit has no physical meaning and is refused with the reason (HU must rise with density).
    i = 2
    p = list(node.GetNthControlPointPosition(i))
    updates = s.logic.updateCount
    for step in range(1, 6):
        node.SetNthControlPointPosition(i, p[0] + 2.0 * step, p[1], p[2])
    assert len(pending) == 1 and s.logic.calibration().slope == pytest.approx(truth.scanner.slope, rel=1e-6)
    pending.pop()()
    state = s.logic.state()
    assert state["calibration_fit"] is None and s.logic.calibration() is None
    assert "rod C (58.88 mg/cm3)" in state["calibration_error"] and "no physical meaning" in state["calibration_error"]
    assert s.logic.updateCount == updates  # the ROIs were not re-measured
    # Back into the rod: the original line again. Remove rod E: a 4-rod fit.
    node.SetNthControlPointPosition(i, *p)
    pending.pop()()
    assert s.logic.calibration().slope == pytest.approx(truth.scanner.slope, rel=1e-6)
    node.RemoveNthControlPoint(4)
    pending.pop()()
    fit = s.logic.state()["calibration_fit"]
    assert fit["n_points"] == 4 and [q["name"] for q in fit["points"]] == list("ABCD")


def test_a_failed_refit_clears_the_calibration_and_says_why(make_scene, qrm):
    s = make_scene(qrm)
    table = s.logic.run(s.volumeNode, s.levels, shapes=["round"])
    rods = s.rod_list()
    s.logic.calibrateFromRods(rods, "qrm-bdc-6")
    assert "vBMD" in table_columns(table)
    # Swap the labels of the densest and the lightest rod: HU no longer rise with density.
    rods.SetNthControlPointLabel(0, "R800")
    rods.SetNthControlPointLabel(5, "R0")
    state = s.logic.state()
    assert state["calibration"] is None and state["calibration_fit"] is None
    assert "slope" in state["calibration_error"] or "R²" in state["calibration_error"]
    assert "vBMD" not in table_columns(table) and all(r.get("vbmd_mg_cm3") is None for r in s.logic.rows())
    assert s.logic.calibrationSummary()["text"].startswith("Calibration (phantom) is not valid")
    rods.SetNthControlPointLabel(0, "R0")
    rods.SetNthControlPointLabel(5, "R800")
    assert s.logic.state()["calibration_error"] is None and "vBMD" in table_columns(table)


def test_internal_calibration_from_tissue_points(make_scene, qrm):
    s = make_scene(qrm)
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    tissues = s.logic.prepareTissuePoints()
    labels = [tissues.GetNthControlPointLabel(i) for i in range(tissues.GetNumberOfControlPoints())]
    assert labels == ["air", "adipose", "muscle", "blood", "cortical_bone"]
    assert all(tissues.GetNthControlPointPositionStatus(i) != tissues.PositionDefined for i in range(5))
    marks = s.truth.landmarks
    where = {"air": marks["air"], "adipose": marks["subcutaneous_fat"], "muscle": marks["paraspinal_muscle_right"],
             "blood": marks["aorta"]}
    for i, label in enumerate(labels):
        if label in where:  # cortical_bone stays unplaced: it is not used
            tissues.SetNthControlPointPosition(i, *where[label])
    cal = s.logic.calibrateFromTissues(tissues)
    configured = {"air": s.truth.tissues["air"], "adipose": s.truth.tissues["subcutaneous_fat"],
                  "muscle": s.truth.tissues["muscle"], "blood": s.truth.tissues["blood"]}
    oracle = fit_internal(configured)
    assert cal.kind == "internal" and cal.unit == "K2HPO4"
    fit = s.logic.state()["calibration_fit"]
    assert fit["effective_energy_kev"] == oracle.internal["effective_energy_kev"]
    assert {p["name"]: p["mean_hu"] for p in fit["points"]} == pytest.approx(configured, abs=1e-3)
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx(oracle.vbmd(row["mean_hu"]), rel=1e-6)
    assert "effective energy" in s.logic.calibrationSummary()["text"]
    # Fewer than three tissues: refused, the calibration in place is kept.
    two = s.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Two tissues")
    two.AddControlPoint(*where["air"], "air")
    two.AddControlPoint(*where["muscle"], "muscle")
    with pytest.raises(InputError, match="at least 3"):
        s.logic.calibrateFromTissues(two)
    assert s.logic.calibration().kind == "internal"


def test_manual_saved_none_and_keep(make_scene, qrm, tmp_path):
    s = make_scene(qrm)
    table = s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    s.logic.setManualCalibration(1.3, -5.0, "HA")
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx((row["mean_hu"] + 5.0) / 1.3, rel=1e-12)
    assert s.logic.calibrationSummary()["mode"] == "manual"
    assert table.GetColumnUnitLabel("vBMD") == "mg/cm3 HA"
    assert table_columns(table)["vBMD SD"] == [""] * 4  # no uncertainty without a fit: empty, not NaN
    path = str(tmp_path / "cal.json")
    assert s.logic.saveCalibration(path) == path
    with pytest.raises(OutputError, match="exists"):
        s.logic.saveCalibration(path)
    # Re-running keeps the calibration; None removes it; a file sets it ("saved").
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    assert s.logic.calibrationSummary()["mode"] == "manual"
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"], calibration=None)
    assert s.logic.calibration() is None and "vBMD" not in table_columns(table)
    assert s.logic.calibrationSummary()["text"] == "No calibration: the table shows HU only."
    s.logic.setCalibration(path)
    summary = s.logic.calibrationSummary()
    assert summary["mode"] == "saved" and summary["source"]["file"] == path
    assert s.logic.calibration().origin == "saved"
    for row in s.logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx((row["mean_hu"] + 5.0) / 1.3, rel=1e-12)
    assert s.logic.document()["calibration"]["file"] == path
    s.logic.setCalibration(None)
    assert s.logic.calibrationSummary()["mode"] == "none"


def test_bad_rod_labels_are_refused_with_the_rod_names(make_scene, qrm):
    s = make_scene(qrm)
    bad = s.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    bad.AddControlPoint(*[float(c) for c in s.truth.rods[0].center_ras], "F-1")
    with pytest.raises(InputError) as err:
        s.logic.calibrateFromRods(bad, "qrm-bdc-6", volumeNode=s.volumeNode)
    assert "R100" in err.value.remedy
    with pytest.raises(InputError, match="phantom"):
        s.logic.calibrateFromRods(bad, "no-such-phantom", volumeNode=s.volumeNode)
    with pytest.raises(InputError, match="CT"):
        s.logic.calibrateFromRods(bad, "qrm-bdc-6")  # nothing measured yet, no volume given
    assert s.logic.calibration() is None


def test_summary_text_without_calibration_and_after_an_error():
    assert format_calibration_summary({"mode": "none"}, None) == "No calibration: the table shows HU only."
    assert "not valid" in format_calibration_summary({"mode": "phantom"}, None, "R² too low")


def test_prepare_rod_points_adds_unplaced_named_points(make_scene, qrm):
    s = make_scene(qrm)
    node = s.logic.prepareRodPoints("qrm-bdc-3")
    assert [node.GetNthControlPointLabel(i) for i in range(3)] == ["R100", "R400", "R800"]
    assert all(node.GetNthControlPointPositionStatus(i) != node.PositionDefined for i in range(3))
    # Preparing again adds nothing; a user's list gets only the missing names.
    assert s.logic.prepareRodPoints("qrm-bdc-3") is node and node.GetNumberOfControlPoints() == 3
    user = s.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Mine")
    user.AddControlPoint(1.0, 2.0, 3.0, "R400")
    assert s.logic.prepareRodPoints("qrm-bdc-3", user) is user
    assert [user.GetNthControlPointLabel(i) for i in range(3)] == ["R400", "R100", "R800"]
    assert tuple(user.GetNthControlPointPosition(0)) == (1.0, 2.0, 3.0)


def test_the_fit_summary_states_the_fit_as_the_result_document_does():
    """The module's fit summary and the result document's calibration block state one fit with the
    same values (the summary's ``see_hu`` is the document's ``see``), for a phantom and for an
    internal calibration."""
    ph = get_phantom("qrm-bdc-6")
    rods = [{"name": r.name, "mean_hu": -8.0 + 1.24 * r.density + (0.5 if i % 2 else -0.5)}
            for i, r in enumerate(ph.rods)]
    internal = fit_internal({"air": -1000.0, "adipose": -95.0, "muscle": 45.0, "blood": 40.0})
    for cal in (fit_phantom(rods, ph), internal):
        fit, block = calibration_fit_summary(cal), calibration_summary(cal)
        shared = ("kind", "method", "unit", "vbmd_unit", "equation", "slope_hu_per_mg_cm3", "intercept_hu", "r2",
                  "n_points", "phantom", "warnings")
        assert {k: fit[k] for k in shared} == {k: block[k] for k in shared}
        assert fit["see_hu"] == block["see"]
        assert fit["effective_energy_kev"] == block.get("effective_energy_kev")
    assert fit["effective_energy_kev"] == internal.internal["effective_energy_kev"] is not None


def test_the_module_refuses_an_implausible_manual_line_unless_accepted(make_scene, qrm):
    # the core guard (calibration.plausibility) serves the MRML logic too; the override is recorded
    s = make_scene(qrm)
    s.logic.run(s.volumeNode, s.levels, shapes=["oval"])
    with pytest.raises(InputError, match=r"slope 0\.05 .*no physical meaning|no physical meaning.*slope 0\.05"):
        s.logic.setManualCalibration(0.05, -10.0, "HA")
    assert s.logic.calibration() is None
    s.logic.setManualCalibration(0.05, -10.0, "HA", acceptImplausible=True)
    assert any("accepted by the user" in w for w in s.logic.calibrationSummary()["fit"]["warnings"])
    assert s.logic.calibration().overrides
