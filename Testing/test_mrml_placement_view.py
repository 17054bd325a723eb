"""The placement shown in the Slicer views (``mrml.placement_view``) on the real ``slicer-core`` wheel:
per level, locked markups of the outline, AP axis, plane, endplates and slab faces in one
subject-hierarchy folder, updated in place on re-measure, removed with their level, never touching
the user's nodes; and the markups calls it makes exist at every supported Slicer version.

Oracles: ``roi.overlays.level_overlays`` of the logic's own result document (the one geometry the
report draws too), the digital phantom's truth (AP axis, axial normal, mid-height), the calls as
Slicer's headers declare them (``slicer_standin.PLACEMENT_MARKUPS_API``) and Slicer's own behaviour
of giving every new node a subject-hierarchy item (``subject_hierarchy_items_as_slicer_makes_them``).
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
vtk = pytest.importorskip("vtk")

from OsteoROILib.digital_phantom import make_phantom  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, load_scene, save_scene  # noqa: E402
from OsteoROILib.mrml.placement_view import CONCERN_COLOR, CONCERNS_ATTRIBUTE, FOLDER_NAME, PLACEMENT_PARTS  # noqa: E402
from OsteoROILib.roi.overlays import level_overlays  # noqa: E402
from slicer_standin import PLACEMENT_MARKUPS_API, subject_hierarchy_items_as_slicer_makes_them  # noqa: E402
import test_mrml_logic  # noqa: E402

LEVELS = ("L1", "L2", "L3", "L4")
# the MRML logic tests' fixtures: the rotated, noisy phantom, and a scene holding it whose VTK errors fail the test
phantom, headless = test_mrml_logic.phantom, test_mrml_logic.headless


def _points(node):
    return np.array([list(node.GetNthControlPointPositionWorld(i)) for i in range(node.GetNumberOfControlPoints())])


def _measured(headless, volume, truth, name):
    """The logic run on ``volume`` added to the scene, one point per true body centre."""
    volumeNode = add_volume_from_array(headless.scene, volume.array, volume.ijk_to_ras, name)
    points = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"Levels of {name}")
    for level in truth.levels:
        points.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(volumeNode, points)
    return logic


def _overlays(logic, level):
    doc = logic.document()
    return level_overlays(doc["levels"][level], [r for r in doc["rows"] if r["level"] == level])


def _sh(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def test_every_placement_call_exists_on_the_wheel():
    """The calls read from Slicer's headers at 5.6.2, 5.8.1 and 5.10.0 are there on the wheel too."""
    for cls, methods in PLACEMENT_MARKUPS_API.items():
        for method in methods:
            assert hasattr(getattr(slicer, cls), method), f"{cls}.{method}"


def test_each_level_shows_its_placement_as_the_report_draws_it_locked(headless):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, slabMm=10.0)
    sh = _sh(headless.scene)
    for level in LEVELS:
        nodes = logic.placement.nodes(level)
        assert set(nodes) == {part for part, _ in PLACEMENT_PARTS} - {"trabecular outline", "bone island left out"} | (
            {"trabecular outline"} if "trabecular outline" in nodes else set())
        ov = _overlays(logic, level)
        truth = headless.truth.level(level)
        for part, node in nodes.items():
            assert node.GetName() == f"{level} {part}"
            assert node.GetLocked() and node.GetFixedNumberOfControlPoints()
            assert sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(node))) == FOLDER_NAME
        # control points = the overlay geometry the report draws
        assert np.allclose(_points(nodes["outline"]), ov.body_outline, atol=1e-6)
        assert np.allclose(_points(nodes["AP axis"]), ov.ap_axis, atol=1e-6)
        sup, inf = ov.endplates_mm
        for part, position in (("superior endplate", sup), ("inferior endplate", inf),
                               ("slab superior face", ov.slab_mm[1]), ("slab inferior face", ov.slab_mm[0])):
            assert np.allclose(_points(nodes[part]) @ ov.normal, position, atol=1e-6), part
        # against the truth: the AP axis along the body's (rotated) one, the plane axial at mid-height
        ap = np.diff(_points(nodes["AP axis"]), axis=0)[0]
        assert np.degrees(np.arccos(ap @ truth.ap_axis_ras / np.linalg.norm(ap))) < 3.0
        plane = nodes["plane"]
        assert np.degrees(np.arccos(abs(np.dot(plane.GetNormalWorld(), truth.normal_ras)))) < 1.0
        mid = 0.5 * (truth.superior_endplate_s + truth.inferior_endplate_s)
        assert abs(np.dot(plane.GetOriginWorld(), truth.normal_ras) - mid) <= 0.5 * headless.volume.slice_spacing()
        assert plane.GetSizeWorld()[0] == pytest.approx(truth.depth_mm, abs=2.0)
        assert plane.GetSizeWorld()[1] == pytest.approx(truth.width_mm, abs=2.0)
        # locked: an edit is refused, the geometry stays
        before = _points(nodes["outline"])
        refused = vtk.vtkStringOutputWindow()
        vtk.vtkOutputWindow.SetInstance(refused)  # the refusal is expected: kept out of the fixture's log
        try:
            nodes["outline"].AddControlPointWorld(0.0, 0.0, 0.0)
        finally:
            vtk.vtkOutputWindow.SetInstance(headless.log)
        assert "locked" in refused.GetOutput()
        assert np.array_equal(_points(nodes["outline"]), before)


def test_a_remeasure_updates_the_same_nodes_and_a_removed_level_loses_them(headless):
    user = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", "L2 outline")  # the user's own
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode)
    first = {part: node.GetID() for part, node in logic.placement.nodes("L2").items()}
    assert first["outline"] != user.GetID()
    count = headless.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsClosedCurveNode")
    # the L2 point moves 3 mm: the level is re-placed, its nodes updated in place
    i = next(i for i in range(headless.pointsNode.GetNumberOfControlPoints())
             if headless.pointsNode.GetNthControlPointLabel(i) == "L2")
    p = np.array(headless.pointsNode.GetNthControlPointPositionWorld(i)) + [3.0, 0.0, 0.0]
    headless.pointsNode.SetNthControlPointPositionWorld(i, *p)
    logic.processPendingUpdates()
    assert {part: node.GetID() for part, node in logic.placement.nodes("L2").items()} == first
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsClosedCurveNode") == count
    assert np.allclose(_points(logic.placement.nodes("L2")["outline"]), _overlays(logic, "L2").body_outline)
    # a second run replaces, never duplicates
    logic.run(headless.volumeNode, headless.pointsNode)
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsClosedCurveNode") == count
    # L2's point is removed: its placement nodes go, the others and the user's node stay
    headless.pointsNode.RemoveNthControlPoint(i)
    logic.processPendingUpdates()
    assert logic.placement.nodes("L2") == {}
    assert all(headless.scene.GetNodeByID(node_id) is None for node_id in first.values())
    assert headless.scene.GetNodeByID(user.GetID()) is user and user.GetName() == "L2 outline"
    assert set(logic.placement.nodes("L1")) >= {"outline", "AP axis", "plane"}


def test_nodes_go_to_the_case_folder_also_when_slicer_gave_them_an_item(headless):
    sh = _sh(headless.scene)
    sh.CreateItem(sh.GetSceneItemID(), headless.pointsNode)  # added before the observer: its item by hand
    tag = subject_hierarchy_items_as_slicer_makes_them(headless.scene)
    try:
        logic = OsteoROIMRMLLogic(headless.scene)
        logic.run(headless.volumeNode, headless.pointsNode)
    finally:
        headless.scene.RemoveObserver(tag)
    folders = {sh.GetItemParent(sh.GetItemByDataNode(n)) for lv in LEVELS for n in logic.placement.nodes(lv).values()}
    assert len(folders) == 1 and sh.GetItemName(folders.pop()) == FOLDER_NAME
    # the user's points stay where Slicer put them
    assert sh.GetItemParent(sh.GetItemByDataNode(headless.pointsNode)) == sh.GetSceneItemID()


def test_a_level_with_concerns_shows_its_outline_red_with_the_reasons(headless):
    """A bone island in L3 only (the phantom's truth): L3's outline is red and holds the placement's
    own warning; the clean L1 keeps the usual colour and no reason."""
    volume, truth = make_phantom(calibration_phantom=False, table=False, aorta=False,
                                 bone_islands=[{"level": "L3", "offset_mm": (6.0, 0.0, 0.0), "radius_mm": 4}])
    logic = _measured(headless, volume, truth, "CT with a bone island")
    l3, l1 = logic.placement.nodes("L3")["outline"], logic.placement.nodes("L1")["outline"]
    assert l3.GetDisplayNode().GetColor() == pytest.approx(CONCERN_COLOR)
    assert "denser than the rest" in l3.GetAttribute(CONCERNS_ATTRIBUTE)
    assert l1.GetDisplayNode().GetColor() != pytest.approx(CONCERN_COLOR) and not l1.GetAttribute(CONCERNS_ATTRIBUTE)


def test_a_saved_scene_keeps_its_placement_nodes_and_a_remeasure_reuses_them(headless, tmp_path):
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode)
    path = str(tmp_path / "scene.mrb")
    save_scene(headless.scene, path)
    app = load_scene(path)
    try:
        loaded = OsteoROIMRMLLogic(app.scene)
        loaded.attach()
        before = {part: node.GetID() for part, node in loaded.placement.nodes("L1").items()}
        assert set(before) >= {"outline", "AP axis", "plane", "superior endplate", "inferior endplate"}
        assert all(node.GetLocked() for node in loaded.placement.nodes("L1").values())
        count = app.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode")
        loaded.run(loaded.volumeNode(), loaded.pointsNode())
        assert {part: node.GetID() for part, node in loaded.placement.nodes("L1").items()} == before
        assert app.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == count
        sh = _sh(app.scene)
        folders = {sh.GetItemParent(sh.GetItemByDataNode(n)) for n in loaded.placement.nodes("L1").values()}
        assert len(folders) == 1 and sh.GetItemName(folders.pop()) == FOLDER_NAME
        children = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), children, False)
        names = [sh.GetItemName(children.GetId(i)) for i in range(children.GetNumberOfIds())]
        assert names.count(FOLDER_NAME) == 1  # the saved folder found again, not a second one
    finally:
        app.close()


def test_a_part_with_nothing_to_show_loses_its_node(headless):
    """Placed again from an outline without endplates (e.g. a manual outline): the endplate nodes of
    the earlier placement go, the outline stays the same node."""
    logic = OsteoROIMRMLLogic(headless.scene)
    logic.run(headless.volumeNode, headless.pointsNode, slabMm=10.0)
    doc = logic.document()
    entry = dict(doc["levels"]["L2"])
    outline = logic.placement.nodes("L2")["outline"]
    entry.pop("auto")
    logic.placement.showLevel("L2", entry, [r for r in doc["rows"] if r["level"] == "L2"])
    nodes = logic.placement.nodes("L2")
    assert not {"superior endplate", "inferior endplate"} & set(nodes) and "slab superior face" in nodes
    assert nodes["outline"] is outline
    assert headless.scene.GetFirstNodeByName("L2 superior endplate") is None


def test_slicer_rows_leave_a_bone_island_out_as_the_command_line_does(headless):
    """One rule for bone islands on every surface: the Slicer logic's rows (measured from the ROI
    nodes) leave the island of L3 out of the ROI that holds it, as ``measure_levels`` does, and the
    mean is the phantom's true trabecular HU (noise-free phantom: every trabecular voxel reads it)."""
    from OsteoROILib.placement.measure import measure_levels

    options = dict(calibration_phantom=False, table=False, aorta=False)
    clean, truth = make_phantom(**options)
    oval = next(r for r in measure_levels(clean, {"L3": truth.level("L3").center_ras})["rows"] if r["shape"] == "oval")
    volume_island = np.array(oval["center_ras"])
    volume, truth = make_phantom(**options, bone_islands=[{"center_ras": volume_island,
                                                           "radius_mm": 3.0, "hu": 1000.0}])
    logic = _measured(headless, volume, truth, "CT with an island in the oval")
    slicer_rows = {(r["level"], r["shape"]): r for r in logic.rows()}
    cli_rows = {(r["level"], r["shape"]): r
                for r in measure_levels(volume, {lv.name: lv.center_ras for lv in truth.levels})["rows"]}
    with_island = [k for k, r in cli_rows.items() if r["bone_islands_excluded"]]
    assert with_island and all(k[0] == "L3" for k in with_island)
    for key in with_island:
        s, c = slicer_rows[key], cli_rows[key]
        assert s["bone_islands_excluded"] == c["bone_islands_excluded"]
        assert s["n_voxels"] == c["n_voxels"]
        assert s["mean_hu"] == pytest.approx(truth.level("L3").trabecular_hu, abs=1e-6)
        assert any("bone island" in w for w in s["warnings"])
    # shown in the view: a locked closed curve around the true island, only at L3
    curve = logic.placement.nodes("L3")["bone island left out"]
    pts = _points(curve)
    assert curve.GetLocked()
    n = truth.level("L3").normal_ras
    island = volume_island - float((volume_island - pts.mean(axis=0)) @ n) * n
    assert np.linalg.norm(pts.mean(axis=0) - island) < 1.0 and np.linalg.norm(pts - island, axis=1).min() >= 3.0 - 0.5
    assert "bone island left out" not in logic.placement.nodes("L1")
