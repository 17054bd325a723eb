"""Interaction in a real, offscreen Slicer slice view (slicer-core wheel; VTK renders with EGL/OSMesa).

The view has Slicer's own markups displayable manager and slice-view interactor style; events go
through the interactor exactly as mouse events do in Slicer. A click in place mode places the L1
point; OsteoROI then places the ROIs and fills the table; dragging an ROI's handle moves the ROI
and the table follows. The view is saved as a PNG in the test's temporary folder.
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
vtk = pytest.importorskip("vtk")

from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.nodes import roi_shape_from_node  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, new_scene  # noqa: E402
from OsteoROILib.mrml.offscreen_view import OffscreenSliceView  # noqa: E402
from OsteoROILib.digital_phantom import make_phantom  # noqa: E402


def _offscreen_rendering_works() -> bool:
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(8, 8)
    try:
        window.Render()
        return bool(window.SupportsOpenGL())
    finally:
        window.Finalize()


@pytest.fixture
def view_setup():
    if not _offscreen_rendering_works():
        pytest.skip("no offscreen OpenGL (neither EGL nor OSMesa) is available")
    volume, truth = make_phantom(noise_sigma=15.0, seed=2)
    headless = new_scene()
    volumeNode = add_volume_from_array(headless.scene, volume.array, volume.ijk_to_ras, "CT")
    pointsNode = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
    view = OffscreenSliceView(headless, size=(400, 400))
    l1 = truth.level("L1")
    view.show_volume(volumeNode, center_ras=l1.center_ras, field_of_view_mm=90.0)
    yield headless, view, volumeNode, pointsNode, truth
    view.close()
    headless.close()


def _table_l1(tableNode):
    t = tableNode.GetTable()
    return {t.GetValueByName(r, "ROI").ToString(): (t.GetValueByName(r, "Mean").ToDouble(),
                                                     t.GetValueByName(r, "Voxels").ToInt())
            for r in range(t.GetNumberOfRows()) if t.GetValueByName(r, "Level").ToString() == "L1"}


def test_click_places_l1_and_drag_moves_an_roi(view_setup, tmp_path):
    headless, view, volumeNode, pointsNode, truth = view_setup
    scene = headless.scene
    l1 = truth.level("L1")
    logic = OsteoROIMRMLLogic(scene)
    table = logic.watch(volumeNode, pointsNode, shapes=["oval", "left"])
    assert table.GetNumberOfRows() == 0

    # "Place L1": place mode on the level list, the next point is labelled L1, then one click.
    pointsNode.SetControlPointLabelFormat("L1")
    headless.markups_logic.SetActiveList(pointsNode)
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    interaction.SetPlaceModePersistence(0)
    interaction.SetCurrentInteractionMode(interaction.Place)
    view.click(l1.center_ras)
    assert pointsNode.GetNumberOfControlPoints() == 1 and pointsNode.GetNthControlPointLabel(0) == "L1"
    placed = slicer.util.arrayFromMarkupsControlPoints(pointsNode)[0]
    mm_per_pixel = 90.0 / 400
    np.testing.assert_allclose(placed, l1.center_ras, atol=mm_per_pixel)  # within a pixel of the click
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform  # single placement ends

    # The ROIs appeared and the table has L1's rows.
    rows = _table_l1(table)
    assert set(rows) == {"oval", "left"}
    for mean, n in rows.values():
        assert n > 50 and abs(mean - l1.trabecular_hu) < 4 * 15.0 / np.sqrt(n)
    oval = logic.roiNode("L1", "oval")
    assert oval is not None and oval.GetDisplayNode().GetVisibility2D()
    before_png = view.save_png(tmp_path / "l1_placed.png")

    # Drag the oval ROI's centre handle 6 mm towards the patient's right (screen left in an axial view).
    shape = roi_shape_from_node(oval)
    start = np.asarray(shape.center)
    target = start + np.array([6.0, 0.0, 0.0])
    view.drag(start, target)
    moved = roi_shape_from_node(oval)
    assert np.linalg.norm(np.asarray(moved.center) - target) < 2 * mm_per_pixel
    assert (moved.half_u, moved.half_v, moved.slab_mm) == pytest.approx((shape.half_u, shape.half_v, shape.slab_mm))
    after = _table_l1(table)
    assert after["oval"] != rows["oval"]  # the table followed the drag
    assert after["left"] == rows["left"]  # the other ROI is untouched
    row = next(r for r in logic.rows() if (r["level"], r["shape"]) == ("L1", "oval"))
    assert row["placement"].endswith("(edited)")
    np.testing.assert_allclose(row["center_ras"], moved.center, atol=1e-9)

    # The view is not blank: it shows the CT (many grey levels) and coloured markups.
    png = tmp_path / "l1_dragged.png"
    rgb = view.save_png(png)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50
    grey = (rgb[:, :, 0] == rgb[:, :, 1]) & (rgb[:, :, 1] == rgb[:, :, 2])
    assert (~grey).sum() > 100, "no coloured (markups) pixels"
    assert np.any(rgb != before_png), "the drag did not change the view"


def test_clicks_place_the_prepared_rods_and_dragging_a_rod_refits(tmp_path):
    """'Place rods': a list of unplaced points named by rod; each click in place mode places the next
    one; the fit follows the phantom's scanner line; dragging a rod point off its rod re-fits."""
    if not _offscreen_rendering_works():
        pytest.skip("no offscreen OpenGL (neither EGL nor OSMesa) is available")
    volume, truth = make_phantom(calibration_preset="qrm-bdc-3")  # noise-free: exact line
    headless = new_scene()
    view = OffscreenSliceView(headless, size=(400, 400))
    try:
        volumeNode = add_volume_from_array(headless.scene, volume.array, volume.ijk_to_ras, "CT")
        mid = np.mean([r.center_ras for r in truth.rods], axis=0)
        view.show_volume(volumeNode, center_ras=mid, field_of_view_mm=100.0)
        logic = OsteoROIMRMLLogic(headless.scene)
        rods = logic.prepareRodPoints("qrm-bdc-3")
        headless.markups_logic.SetActiveList(rods)
        interaction = headless.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        interaction.SetPlaceModePersistence(1)
        interaction.SetCurrentInteractionMode(interaction.Place)
        byName = {rod.name: rod for rod in truth.rods}
        for _ in truth.rods:
            # In place mode the point under the mouse previews the next unplaced point with its label
            # (Slicer shows it); the user clicks the rod of that name.
            view._event(view.xy_of(mid), vtk.vtkCommand.MouseMoveEvent)
            preview = [i for i in range(rods.GetNumberOfControlPoints())
                       if rods.GetNthControlPointPositionStatus(i) == rods.PositionPreview]
            assert len(preview) == 1
            view.click(byName[rods.GetNthControlPointLabel(preview[0])].center_ras)
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        assert rods.GetNumberOfControlPoints() == 3
        mm_per_pixel = 100.0 / 400
        for i, rod in enumerate(truth.rods):
            assert rods.GetNthControlPointLabel(i) == rod.name
            assert rods.GetNthControlPointPositionStatus(i) == rods.PositionDefined
            np.testing.assert_allclose(rods.GetNthControlPointPosition(i)[:2], rod.center_ras[:2], atol=mm_per_pixel)
        cal = logic.calibrateFromRods(rods, "qrm-bdc-3", volumeNode=volumeNode)
        assert cal.slope == pytest.approx(truth.scanner.slope, rel=1e-6)
        assert cal.intercept == pytest.approx(truth.scanner.intercept, abs=1e-4)
        # Drag the densest rod's point 14 mm anterior, off the rod onto the phantom block.
        start = np.array(rods.GetNthControlPointPosition(2))
        view.drag(start, start + np.array([0.0, 14.0, 0.0]))
        moved = np.array(rods.GetNthControlPointPosition(2))
        assert np.linalg.norm(moved - start - [0.0, 14.0, 0.0]) < 2 * mm_per_pixel
        state = logic.state()
        assert state["calibration_error"] is not None or state["calibration_fit"]["slope_hu_per_mg_cm3"] < 0.5
        rgb = view.save_png(tmp_path / "rods.png")
        assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20
    finally:
        view.close()
        headless.close()
