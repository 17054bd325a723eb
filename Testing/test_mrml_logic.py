"""OsteoROI's MRML logic on the real ``slicer-core`` wheel (MRML scene, markups, tables, plots; no Qt).

Oracles: the digital phantom's configured trabecular HU (truth), a brute-force voxel-membership
computation written here from the ROI definition (independent of ``geometry.roi_voxels``), the
published seed-002 cut-offs (QCT_BRIEF §2) and the calibration equation applied by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
vtk = pytest.importorskip("vtk")

from OsteoROILib.errors import InputError, OsteoROIError  # noqa: E402
from OsteoROILib.placement.measure import measure_levels  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.nodes import roi_shape_from_node, set_roi_node_geometry, volume_from_node  # noqa: E402
from OsteoROILib.mrml.persistence import get_parameter_node  # noqa: E402
from OsteoROILib.mrml.results_table import CALIBRATION_COLUMNS, TABLE_COLUMNS  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, new_scene  # noqa: E402
from OsteoROILib.digital_phantom import make_phantom  # noqa: E402

ROTATIONS = [0.0, 9.0, -7.0, 4.0]


@pytest.fixture(scope="module")
def phantom():
    # Noise makes every statistic depend on exactly which voxels are inside; rotated bodies give
    # ROIs oblique to the voxel grid.
    return make_phantom(noise_sigma=25.0, seed=11, rotation_deg=ROTATIONS)


class Headless:
    """A scene with application and markups logic; captures VTK's error output."""

    def __init__(self, phantom):
        self.log = vtk.vtkStringOutputWindow()
        self.previous = vtk.vtkOutputWindow.GetInstance()
        vtk.vtkOutputWindow.SetInstance(self.log)
        self.app = new_scene()
        self.scene = self.app.scene
        volume, truth = phantom
        self.volume, self.truth = volume, truth
        self.volumeNode = add_volume_from_array(self.scene, volume.array, volume.ijk_to_ras, "CT")
        self.pointsNode = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
        for level in truth.levels:
            self.pointsNode.AddControlPoint(*[float(x) for x in level.center_ras], level.name)

    def errors(self):
        text = self.log.GetOutput()
        return [block for block in text.split("\n\n") if "Error" in block or "ERR" in block]

    def close(self):
        vtk.vtkOutputWindow.SetInstance(self.previous)
        self.app.close()


@pytest.fixture
def headless(phantom):
    h = Headless(phantom)
    yield h
    errors = h.errors()
    h.close()
    assert not errors, f"VTK/MRML logged errors: {errors}"


def table_rows(tableNode):
    table = tableNode.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{n: table.GetValueByName(r, n) for n in names} for r in range(table.GetNumberOfRows())]


def brute_force(volume, center, u, v, half_u, half_v, slab, kind):
    """Voxel values inside the ROI, straight from the definition (voxel centre inside; slab half-open)."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    n = np.cross(u, v)
    c_ijk = volume.ras_to_ijk_points(center)[0]
    reach = (max(half_u, half_v) + slab) / volume.spacing.min() + 3
    lo = np.maximum(np.floor(c_ijk - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c_ijk + reach).astype(int), np.array(volume.dimensions) - 1)
    ii, jj, kk = np.meshgrid(*[np.arange(lo[a], hi[a] + 1) for a in range(3)], indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
    d = volume.ijk_to_ras_points(ijk) - np.asarray(center, float)
    su, sv, sn = d @ u, d @ v, d @ n
    if kind == "ellipse":
        plane = (su / half_u) ** 2 + (sv / half_v) ** 2 <= 1.0
    else:
        plane = (np.abs(su) <= half_u) & (np.abs(sv) <= half_v)
    inside = plane & (sn >= -slab / 2) & (sn < slab / 2)
    idx = ijk[inside].astype(int)
    return volume.array[idx[:, 2], idx[:, 1], idx[:, 0]].astype(np.float64)


def row_of(logic, level, shape):
    return next(r for r in logic.rows() if r["level"] == level and r["shape"] == shape)


# ------------------------------------------------------------------------------------------------
def test_scene_has_application_singletons(headless):
    assert headless.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is not None
    assert headless.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton") is not None
    assert headless.app.app_logic.GetModuleLogic("Markups") is headless.app.markups_logic


def test_run_fills_table_with_units_and_truth(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    tableNode = logic.run(headless.volumeNode, headless.pointsNode)
    truth = {lv.name: lv.trabecular_hu for lv in headless.truth.levels}
    rows = table_rows(tableNode)
    assert len(rows) == 4 * 5
    assert [(r["Level"].ToString(), r["ROI"].ToString()) for r in rows] == [
        (lv, s) for lv in ("L1", "L2", "L3", "L4") for s in ("oval", "round", "front", "left", "right")]
    names = [tableNode.GetTable().GetColumnName(c) for c in range(tableNode.GetNumberOfColumns())]
    assert names == [c[1] for c in TABLE_COLUMNS if c[0] not in CALIBRATION_COLUMNS]
    assert "vBMD" not in names and "vBMD SD" not in names  # no calibration, no vBMD columns
    for _key, name, unit, _description, _kind in TABLE_COLUMNS:
        if name in names:
            assert tableNode.GetColumnUnitLabel(name) == unit
    assert tableNode.GetColumnUnitLabel("Mean") == "HU" and tableNode.GetColumnUnitLabel("Area") == "mm2"
    sigma = 25.0
    for r in rows:
        n = r["Voxels"].ToInt()
        assert n > 20
        # Mean within 4 standard errors of the configured trabecular HU (noise is the only error:
        # every ROI lies inside the uniform trabecular region).
        assert abs(r["Mean"].ToDouble() - truth[r["Level"].ToString()]) < 4 * sigma / math.sqrt(n)
        assert abs(r["SD"].ToDouble() - sigma) < 0.35 * sigma
    assert all(r["SD"].ToString() not in ("", "nan") for r in rows)
    # The Warnings column carries each row's warnings (the core's, e.g. a round ROI on a narrow body).
    assert [r["Warnings"].ToString() for r in rows] == [" | ".join(r["warnings"]) for r in logic.rows()]


def test_roi_nodes_show_the_core_placement_and_measure_it_exactly(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode)
    points = {lv.name: lv.center_ras for lv in headless.truth.levels}
    core = measure_levels(headless.volume, points)
    for crow in core["rows"]:
        node = logic.roiNode(crow["level"], crow["shape"])
        assert node is not None and node.IsA("vtkMRMLMarkupsROINode")
        roi = crow["roi"]
        shape = roi_shape_from_node(node)
        assert shape.kind == roi["kind"]
        np.testing.assert_allclose(shape.center, roi["center_ras"], atol=1e-4)
        np.testing.assert_allclose(shape.axis_u, roi["axis_u_ras"], atol=1e-5)
        np.testing.assert_allclose(shape.axis_v, roi["axis_v_ras"], atol=1e-5)
        np.testing.assert_allclose([shape.half_u, shape.half_v, shape.slab_mm],
                                   [roi["half_u_mm"], roi["half_v_mm"], roi["slab_mm"]], atol=1e-4)
        mrow = row_of(logic, crow["level"], crow["shape"])
        assert mrow["n_voxels"] == crow["n_voxels"]
        assert mrow["mean_hu"] == pytest.approx(crow["mean_hu"], rel=1e-12)
        # The ellipse ROIs have a derived outline model; rectangles do not.
        outline = logic.parameterNode.GetNodeReference(logic.outlineRole(crow["level"], crow["shape"]))
        assert (outline is not None) == (roi["kind"] == "ellipse")


@pytest.mark.parametrize("shape_name", ["oval", "front"])
def test_moved_resized_rotated_roi_is_measured_exactly(headless, shape_name):
    logic = OsteoROIMRMLLogic(headless.scene)
    tableNode = logic.run(headless.volumeNode, headless.pointsNode)
    node = logic.roiNode("L2", shape_name)
    before = row_of(logic, "L2", shape_name)
    roi = before["roi"]
    # New geometry, chosen here: shifted 1.37 mm anterior-left, rotated 11 degrees in plane,
    # resized and 2.5 slices thick.
    u0, v0 = np.array(roi["axis_u_ras"]), np.array(roi["axis_v_ras"])
    n0 = np.cross(u0, v0)
    a = math.radians(11.0)
    u1 = math.cos(a) * u0 + math.sin(a) * v0
    v1 = -math.sin(a) * u0 + math.cos(a) * v0
    center = np.array(roi["center_ras"]) + 1.37 * u0 + 0.61 * v0
    half_u, half_v, slab = 4.3, 6.9, 6.1
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = u1, v1, n0, center
    node.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(m))
    node.SetCenter(*center)
    node.SetSize(2 * half_u, 2 * half_v, slab)

    after = row_of(logic, "L2", shape_name)
    values = brute_force(headless.volume, center, u1, v1, half_u, half_v, slab, roi["kind"])
    assert values.size > 50 and after["n_voxels"] == values.size != before["n_voxels"]
    assert after["mean_hu"] == pytest.approx(values.mean(), rel=1e-9)
    assert after["sd_hu"] == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert after["median_hu"] == pytest.approx(np.median(values), rel=1e-9)
    assert after["placement"].endswith("(edited)")
    # The table follows.
    trow = next(r for r in table_rows(tableNode) if r["Level"].ToString() == "L2"
                and r["ROI"].ToString() == shape_name)
    assert trow["Voxels"].ToInt() == values.size
    # The table shows six significant digits, as Slicer shows a double (full precision: logic.rows()).
    assert trow["Mean"].ToDouble() == pytest.approx(values.mean(), rel=5e-6)
    assert trow["Mean"].ToString() == vtk.vtkVariant(float(values.mean())).ToString()
    # Other ROIs are untouched.
    other = row_of(logic, "L3", shape_name)
    assert not other["placement"].endswith("(edited)")


def test_live_updates_are_throttled(headless):
    pending = []
    logic = OsteoROIMRMLLogic(headless.scene, scheduler=pending.append)
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["round"])
    count = logic.updateCount
    node = logic.roiNode("L1", "round")
    c = [0.0, 0.0, 0.0]
    node.GetCenter(c)
    for step in range(1, 6):  # a drag: five moves before the timer fires
        node.SetCenter(c[0] + 0.4 * step, c[1], c[2])
    assert len(pending) == 1 and logic.updateCount == count
    node.GetDisplayNode().SetSelectedColor(0.1, 0.2, 0.3)  # display changes do not re-measure
    pending.pop()()
    assert logic.updateCount == count + 1
    r = row_of(logic, "L1", "round")
    np.testing.assert_allclose(r["center_ras"], [c[0] + 2.0, c[1], c[2]], atol=1e-4)
    node.GetDisplayNode().SetSelectedColor(0.3, 0.2, 0.1)
    assert pending == []


def test_moving_a_point_replaces_only_its_level(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval", "front"])
    ids = {k: n.GetID() for k, n in logic.roiNodes().items()}
    l3 = roi_shape_from_node(logic.roiNode("L3", "oval"))
    l2 = roi_shape_from_node(logic.roiNode("L2", "oval"))
    # Move L2's point 2 mm to the patient's left inside the body.
    i = next(i for i in range(4) if headless.pointsNode.GetNthControlPointLabel(i) == "L2")
    p = [0.0, 0.0, 0.0]
    headless.pointsNode.GetNthControlPointPosition(i, p)
    headless.pointsNode.SetNthControlPointPosition(i, p[0] - 2.0, p[1], p[2])
    assert {k: n.GetID() for k, n in logic.roiNodes().items()} == ids  # nodes reused
    assert roi_shape_from_node(logic.roiNode("L3", "oval")) == l3
    assert logic.state()["levels"]["L2"]["point_ras"][0] == pytest.approx(p[0] - 2.0, abs=1e-3)
    assert roi_shape_from_node(logic.roiNode("L2", "oval")) is not None
    assert logic.roiNode("L2", "oval") is not None and l2 is not None
    # Removing a point removes that level's ROIs (the module's own nodes) and rows.
    headless.pointsNode.RemoveNthControlPoint(i)
    assert logic.roiNode("L2", "oval") is None
    assert headless.scene.GetNodeByID(ids[("L2", "oval")]) is None
    assert {r["level"] for r in logic.rows()} == {"L1", "L3", "L4"}


def test_rerun_reuses_own_nodes_and_never_touches_user_nodes(headless):
    scene = headless.scene
    userTable = scene.AddNewNodeByClass("vtkMRMLTableNode", "OsteoROI results")  # same name, user's
    logic = OsteoROIMRMLLogic(scene)
    table = logic.run(headless.volumeNode, headless.pointsNode)
    assert table is not userTable
    nodes = scene.GetNumberOfNodes()
    roi = logic.roiNode("L1", "oval")
    roi.SetName("my favourite ROI")  # the user renames a module node: it stays renamed
    table2 = logic.run(headless.volumeNode, headless.pointsNode)
    assert table2 is table and scene.GetNumberOfNodes() == nodes
    assert logic.roiNode("L1", "oval") is roi and roi.GetName() == "my favourite ROI"
    assert headless.volumeNode.GetName() == "CT" and headless.pointsNode.GetName() == "Levels"
    assert headless.pointsNode.GetNumberOfControlPoints() == 4
    assert userTable.GetNumberOfColumns() == 0 and userTable.GetName() == "OsteoROI results"
    # Fewer shapes: the module removes its own ROIs of the dropped shapes, nothing else.
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["round"])
    assert logic.roiNode("L1", "oval") is None and scene.GetNodeByID(roi.GetID()) is None
    assert scene.GetNodeByID(userTable.GetID()) is userTable
    assert table.GetNumberOfRows() == 4
    # A second logic object on the same scene finds the same parameter node and nodes.
    other = OsteoROIMRMLLogic(scene)
    assert other.parameterNode is get_parameter_node(scene) is logic.parameterNode
    assert other.tableNode() is table


def test_transformed_volume_and_points(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval"])
    before = logic.rows()
    transform = headless.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    # A rotation: the volume's world geometry is the transform times its IJK-to-RAS matrix.
    m = np.eye(4)
    a = math.radians(5.0)
    m[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = [12.0, -7.0, 3.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(m))
    headless.volumeNode.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volume_from_node(headless.volumeNode).ijk_to_ras, m @ headless.volume.ijk_to_ras,
                               atol=1e-9)
    # A translation of volume and points together: the same voxels are measured (placement
    # depends on the patient's anterior direction, so a rotation would legitimately change it).
    m = np.eye(4)
    m[:3, 3] = [12.0, -7.0, 3.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(m))
    headless.pointsNode.SetAndObserveTransformNodeID(transform.GetID())
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval"])
    after = logic.rows()
    for a_, b_ in zip(after, before):
        assert a_["n_voxels"] == b_["n_voxels"]
        assert a_["mean_hu"] == pytest.approx(b_["mean_hu"], rel=1e-9)
        np.testing.assert_allclose(a_["center_ras"], m[:3, :3] @ b_["center_ras"] + m[:3, 3], atol=1e-3)


def test_bad_input_leaves_the_scene_unchanged(headless):
    scene = headless.scene
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Empty")
    wrong = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Wrong")
    wrong.AddControlPoint(0.0, 0.0, 0.0, "X9")
    muscle = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Muscle")
    muscle.AddControlPoint(*headless.truth.landmarks["paraspinal_muscle_right"], "L1")
    logic = OsteoROIMRMLLogic(scene)
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError) as err:
        logic.run(headless.volumeNode, empty)
    assert "L1" in str(err.value)
    with pytest.raises(InputError):
        logic.run(None, headless.pointsNode)
    with pytest.raises(InputError, match="level"):
        logic.run(headless.volumeNode, wrong)
    with pytest.raises(OsteoROIError):
        logic.run(headless.volumeNode, muscle)
    with pytest.raises(InputError, match="calibration"):
        logic.run(headless.volumeNode, headless.pointsNode, criteria="qct-acr2018")
    assert scene.GetNumberOfNodes() == nodes  # nothing was added
    assert logic.tableNode() is None


def test_exclusion_and_genant_grade(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    table = logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval"])
    means = {r["level"]: r["mean_hu"] for r in logic.rows()}
    logic.setGenantGrade("L2", 2)
    logic.setExcluded("L4", True, "osteophyte")
    rows = {r["Level"].ToString(): r for r in table_rows(table)}
    assert rows["L2"]["Genant"].ToString() == "2" and rows["L2"]["Excluded"].ToString() == "yes"
    assert rows["L4"]["Excluded"].ToString() == "yes" and "osteophyte" in rows["L4"]["Warnings"].ToString()
    assert rows["L1"]["Excluded"].ToString() == ""
    summary = logic.summary()["oval"]
    assert summary["levels"] == ["L1", "L3"]
    assert summary["mean_hu"] == pytest.approx((means["L1"] + means["L3"]) / 2, rel=1e-12)
    logic.setGenantGrade("L2", 0)
    logic.setExcluded("L4", False)
    assert logic.summary()["oval"]["levels"] == ["L1", "L2", "L3", "L4"]
    with pytest.raises(InputError):
        logic.setGenantGrade("L1", 4)
    with pytest.raises(InputError):
        logic.setGenantGrade("L1", True)


def test_plot_has_level_bars_and_published_thresholds(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval", "round"], criteria="seed002")
    chart = logic.plotChartNode()
    assert chart is not None and chart.IsA("vtkMRMLPlotChartNode")
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    bars = [s for s in series if s.GetPlotType() == s.PlotTypeBar]
    lines = [s for s in series if s.GetPlotType() == s.PlotTypeLine]
    assert [s.GetYColumnName() for s in bars] == ["oval", "round"]
    means = {(r["level"], r["shape"]): r["mean_hu"] for r in logic.rows()}
    for s in bars:
        t = s.GetTableNode().GetTable()
        got = {t.GetValueByName(i, "Level").ToString(): t.GetValueByName(i, s.GetYColumnName()).ToDouble()
               for i in range(t.GetNumberOfRows())}
        assert got == {lv: pytest.approx(means[(lv, s.GetYColumnName())]) for lv in ("L1", "L2", "L3", "L4")}
    # Seed 002 Table 3 (QCT_BRIEF §2), oval ROI: osteoporosis <= 91.63 HU, normal > 97.13 HU.
    values = sorted(s.GetTableNode().GetTable().GetValueByName(0, s.GetYColumnName()).ToDouble() for s in lines)
    assert values == [91.63, 97.13]
    # Excluding a level removes its bar.
    logic.setExcluded("L3", True)
    t = bars[0].GetTableNode().GetTable()
    assert [t.GetValueByName(i, "Level").ToString() for i in range(t.GetNumberOfRows())] == ["L1", "L2", "L4"]


def test_calibration_adds_vbmd(headless):
    from OsteoROILib.calibration.phantom_fit import manual_calibration

    slope, intercept = 1.21, -3.5  # HU = intercept + slope * density
    cal = manual_calibration(slope, intercept, "K2HPO4")
    logic = OsteoROIMRMLLogic(headless.scene)
    table = logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval"], calibration=cal,
                      criteria="qct-acr2018")
    for r in table_rows(table):
        assert r["vBMD"].ToDouble() == pytest.approx((r["Mean"].ToDouble() - intercept) / slope, rel=2e-5)
        assert r["vBMD SD"].ToString() == ""  # a manual calibration has no fit uncertainty: empty, not NaN
    for row in logic.rows():
        assert row["vbmd_mg_cm3"] == pytest.approx((row["mean_hu"] - intercept) / slope, rel=1e-12)
        assert row["vbmd_sd"] is None and any("vbmd_sd empty" in w for w in row["warnings"])
    assert table.GetColumnUnitLabel("vBMD").startswith("mg/cm")
    chart = logic.plotChartNode()
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    lines = [s for s in series if s.GetPlotType() == s.PlotTypeLine]
    values = sorted(s.GetTableNode().GetTable().GetValueByName(0, s.GetYColumnName()).ToDouble() for s in lines)
    assert values == [80.0, 120.0]  # ACR 2018 / ISCD (QCT_BRIEF §3)
    assert "vBMD" in chart.GetYAxisTitle()


def test_exports_are_atomic_and_refuse_to_overwrite(headless, tmp_path):
    import csv
    import json

    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, shapes=["round"])
    jpath, cpath = tmp_path / "r.json", tmp_path / "r.csv"
    logic.exportResults(str(jpath), str(cpath))
    doc = json.loads(jpath.read_text())
    assert [r["level"] for r in doc["rows"]] == ["L1", "L2", "L3", "L4"]
    with open(cpath, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["mean_hu"]) for r in rows] == pytest.approx([r["mean_hu"] for r in logic.rows()], rel=1e-6)
    from OsteoROILib.export.measurement import validate_document

    validate_document(doc)
    with pytest.raises(OsteoROIError, match="exists"):
        logic.exportResults(str(jpath))
    logic.setGenantGrade("L2", 2)
    hpath = tmp_path / "r.html"
    logic.exportReport(str(hpath))
    html = hpath.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and all(lv in html for lv in ("L1", "L2", "L3", "L4"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.html", "r.json"]


def test_place_from_segmentation(headless):
    """Segments named like TotalSegmentator's (vertebrae_L1, ...) place their levels; the rest is reported."""
    scene, volume = headless.scene, headless.volume
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "TotalSegmentator")
    segmentation.CreateDefaultDisplayNodes()
    for lv in headless.truth.levels[:3]:  # L1-L3 segmented, L4 missing
        c = volume.ras_to_ijk_points(lv.center_ras)[0]
        reach = 40.0 / volume.spacing  # voxels covering 40 mm around the centre
        lo = np.maximum(np.floor(c - reach), 0).astype(int)
        hi = np.minimum(np.ceil(c + reach), np.array(volume.dimensions) - 1).astype(int)
        ijk = np.stack(np.meshgrid(*[np.arange(lo[a], hi[a] + 1) for a in range(3)], indexing="ij"),
                       axis=-1).reshape(-1, 3)
        d = volume.ijk_to_ras_points(ijk) - np.asarray(lv.center_ras)
        s, t, z = d @ lv.ap_axis_ras, d @ lv.left_axis_ras, d @ lv.normal_ras
        p = lv.body_exponent
        body = (np.abs(s / (lv.depth_mm / 2)) ** p + np.abs(t / (lv.width_mm / 2)) ** p <= 1) & \
            (np.abs(z) <= lv.height_mm / 2)
        mask = np.zeros(volume.array.shape, np.uint8)
        i, j, k = ijk[body].T
        mask[k, j, i] = 1
        labelmap = add_volume_from_array(scene, mask, volume.ijk_to_ras, "mask")
        labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "mask")
        labelmapNode.CopyOrientation(labelmap)
        labelmapNode.SetAndObserveImageData(labelmap.GetImageData())
        before = segmentation.GetSegmentation().GetNumberOfSegments()
        assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentation)
        seg = segmentation.GetSegmentation().GetNthSegment(before)
        seg.SetName(f"vertebrae_{lv.name}")
        scene.RemoveNode(labelmapNode)
        scene.RemoveNode(labelmap)
    logic = OsteoROIMRMLLogic(scene)
    nodes_before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    table = logic.runFromSegmentation(headless.volumeNode, segmentation, shapes=["oval"])
    rows = logic.rows()
    assert [r["level"] for r in rows] == ["L1", "L2", "L3"]
    truth = {lv.name: lv for lv in headless.truth.levels}
    for r in rows:
        lv = truth[r["level"]]
        assert abs(r["mean_hu"] - lv.trabecular_hu) < 4 * 25.0 / math.sqrt(r["n_voxels"])
        # The ROI lies on the body's mid-vertebral plane (within half a slice).
        assert abs((np.asarray(r["center_ras"]) - lv.center_ras) @ lv.normal_ras) <= volume.slice_spacing() / 2
    assert any("L4" in w for w in logic.document()["warnings"])
    assert table.GetNumberOfRows() == 3
    points = logic.pointsNode()
    assert points.GetName() == "OsteoROI levels" and points.GetNumberOfControlPoints() == 3
    # No temporary label map is left behind.
    added = {scene.GetNthNode(i).GetClassName() for i in range(scene.GetNumberOfNodes())
             if scene.GetNthNode(i).GetID() not in nodes_before}
    assert "vtkMRMLLabelMapVolumeNode" not in added
    assert "vtkMRMLColorTableNode" not in added, "the temporary label map's colour table is left in the scene"
    with pytest.raises(InputError, match="named"):
        empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Unnamed")
        logic.runFromSegmentation(headless.volumeNode, empty)


def test_undefined_values_are_empty_cells_never_nan(headless, tmp_path):
    """A single-voxel ROI has no SD, an ROI outside the image has no HU statistics at all, a manual
    calibration has no vBMD SD: the table cell is empty (Warnings says why), never 'nan', in the
    table, in Slicer's saved table file and in the CSV export."""
    from OsteoROILib.calibration.phantom_fit import manual_calibration
    from OsteoROILib.roi.geometry import RoiShape

    logic = OsteoROIMRMLLogic(headless.scene)
    table = logic.run(headless.volumeNode, headless.pointsNode, shapes=["oval"],
                      calibration=manual_calibration(1.25, -10.0, "HA"))
    volume = headless.volume
    # L1: a box around one voxel centre (half-sizes < half a voxel, slab one slice) -> one voxel.
    ijk = np.round(volume.ras_to_ijk_points(headless.truth.level("L1").center_ras)[0])
    centre = volume.ijk_to_ras_points(ijk)[0]
    one = RoiShape("ellipse", tuple(centre), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), 0.3, 0.3, volume.slice_spacing())
    set_roi_node_geometry(logic.roiNode("L1", "oval"), one)
    # L2: moved far outside the image -> no voxel.
    far = RoiShape("ellipse", (900.0, 900.0, 900.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), 5.0, 5.0, 2.5)
    set_roi_node_geometry(logic.roiNode("L2", "oval"), far)
    rows = {r["level"]: r for r in logic.rows()}
    assert rows["L1"]["n_voxels"] == 1 and rows["L1"]["sd_hu"] is None
    assert rows["L1"]["mean_hu"] == float(volume.array[int(ijk[2]), int(ijk[1]), int(ijk[0])])
    assert rows["L2"]["n_voxels"] == 0 and rows["L2"]["mean_hu"] is None and rows["L2"]["vbmd_mg_cm3"] is None
    cols = {r["Level"].ToString(): r for r in table_rows(table)}
    assert cols["L1"]["SD"].ToString() == "" and cols["L1"]["Mean"].ToString() != ""
    assert "single voxel" in cols["L1"]["Warnings"].ToString()
    for name in ("Mean", "SD", "Median", "Min", "Max", "P5", "P95", "vBMD", "vBMD SD"):
        assert cols["L2"][name].ToString() == "", name
    assert cols["L2"]["Voxels"].ToInt() == 0 and cols["L2"]["Area"].ToDouble() == 0.0
    assert "no voxel" in cols["L2"]["Warnings"].ToString() and "no vBMD" in cols["L2"]["Warnings"].ToString()
    assert cols["L3"]["vBMD SD"].ToString() == ""  # manual calibration: no fit uncertainty
    t = table.GetTable()
    for c in range(t.GetNumberOfColumns()):
        assert all(t.GetValue(r, c).ToString().lower() != "nan" for r in range(t.GetNumberOfRows()))
        if t.GetColumnName(c) in ("Mean", "SD", "vBMD", "vBMD SD"):
            assert t.GetColumn(c).IsA("vtkStringArray") and table.GetColumnNullValue(t.GetColumnName(c)) == ""
    # Slicer's own table file (.tsv written by the table storage node): empty cells, no "nan".
    storage = table.CreateDefaultStorageNode()
    headless.scene.AddNode(storage)
    storage.UnRegister(None)
    table.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "results.tsv"))
    assert storage.WriteData(table)
    text = (tmp_path / "results.tsv").read_text()
    assert not [cell for line in text.splitlines() for cell in line.split("\t") if cell.strip().lower() == "nan"]
    header = text.splitlines()[0].split("\t")
    l2 = next(line.split("\t") for line in text.splitlines() if line.startswith("L2\t"))
    assert l2[header.index("SD")] == "" and l2[header.index("Mean")] == ""
    logic.exportResults(csvPath=str(tmp_path / "r.csv"))
    import csv

    with open(tmp_path / "r.csv", newline="") as f:
        assert not [c for line in csv.reader(f) for c in line if c.strip().lower() == "nan"]
