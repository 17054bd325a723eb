"""The module's widget driven as Slicer drives it, on a real MRML scene (slicer-core wheel).

``slicer_standin`` builds Slicer's GUI layer from the rules read in Slicer's source at v5.6.2,
v5.8.1 and v5.10.0 (parameter node GUI connectors, ``connectGui``'s return value,
``resourcePath``, reload, markups placement). Each test runs the widget's lifecycle — setup →
enter → user actions → exit → scene close → cleanup — and checks what a radiologist would see.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from slicer_standin import (  # noqa: E402
    SLICER_TAGS,
    StandIn,
    add_phantom_case,
    all_widgets,
    headless_scene,
    markups_click,
    phantom_case,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


phantom = pytest.fixture(scope="module")(phantom_case)
headless = pytest.fixture(headless_scene)


def _standin(monkeypatch, headless, tag=SLICER_TAGS[0], module_path=None):
    standin = StandIn(monkeypatch, headless, tag=tag, module_path=module_path)
    return standin, standin.load_module()


def _add_phantom(standin, phantom):
    return add_phantom_case(standin.headless.scene, phantom)


def test_panel_opens_from_the_source_tree_and_from_an_install(monkeypatch, headless, tmp_path):
    """The .ui and the icon resolve from the source tree (Resources/ at the top level) and from the
    installed layout (Resources/ beside OsteoROI.py)."""
    standin, module = _standin(monkeypatch, headless)
    widget = standin.make_widget(module)
    assert widget.ui.applyButton.objectName == "applyButton"
    assert standin.icons and all(os.path.isfile(p) for p in standin.icons)
    assert not standin.errors
    # The installed extension: <module lib dir>/OsteoROI.py, OsteoROILib/, Resources/.
    installed = tmp_path / "qt-scripted-modules"
    installed.mkdir()
    shutil.copy(os.path.join(ROOT, "OsteoROI", "OsteoROI.py"), installed / "OsteoROI.py")
    shutil.copytree(os.path.join(ROOT, "Resources"), installed / "Resources")
    standin.module_path = str(installed / "OsteoROI.py")
    standin.icons.clear()
    widget = standin.make_widget(standin.load_module())
    assert widget.ui.applyButton.objectName == "applyButton"
    assert standin.icons and all(p.startswith(str(installed)) and os.path.isfile(p) for p in standin.icons)


@pytest.mark.parametrize("tag", SLICER_TAGS)
def test_every_binding_connects_and_exit_disconnects(monkeypatch, headless, phantom, tag):
    """enter() connects every bound widget (Slicer raises for a combo box without a Choice); exit()
    really disconnects them, on every Slicer version (connectGui returns no tag before 5.10)."""
    standin, module = _standin(monkeypatch, headless, tag)
    volumeNode, pointsNode = _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    assert not standin.errors
    p = widget._parameterNode
    assert p.inputVolume is volumeNode
    ui = widget.ui
    ui.calibrationModeComboBox.setCurrentIndex(ui.calibrationModeComboBox.findText("manual"))
    assert p.calibrationMode == "manual"
    assert ui.manualSlopeSpinBox.enabled
    ui.manualUnitComboBox.setCurrentIndex(ui.manualUnitComboBox.findText("HA"))
    assert p.manualUnit == "HA"
    ui.criteriaComboBox.setCurrentIndex(ui.criteriaComboBox.findText("pickhardt2013-l1"))
    assert p.criteria == "pickhardt2013-l1"
    # The phantom list is kept in sync by hand (user phantoms are added at run time).
    ui.phantomComboBox.setCurrentIndex(ui.phantomComboBox.findText("mindways-example"))
    assert p.calibrationPhantom == "mindways-example"
    p.calibrationPhantom = "qrm-bdc-3"
    assert ui.phantomComboBox.currentText == "qrm-bdc-3"
    standin.exit(widget)
    assert p.connectedGuiCount() == 0
    ui.ovalCheckBox.setUserChecked(not ui.ovalCheckBox.checked)
    ui.phantomComboBox.setCurrentIndex(ui.phantomComboBox.findText("esp"))
    assert p.shapeOval is True and p.calibrationPhantom == "qrm-bdc-3", "a widget still writes after exit()"
    standin.enter(widget)
    assert widget._parameterNode.connectedGuiCount() == 1
    widget.cleanup()


def test_place_from_segmentation_is_enabled_by_choosing_a_segmentation(monkeypatch, headless, phantom):
    standin, module = _standin(monkeypatch, headless)
    _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    assert not widget.ui.placeFromSegmentationButton.enabled
    segmentation = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Vertebrae")
    widget.ui.segmentationSelector.setCurrentNode(segmentation)
    assert widget._parameterNode.inputSegmentation is segmentation
    assert widget.ui.placeFromSegmentationButton.enabled
    widget.ui.placeFromSegmentationButton.click()  # no segment named by level: an error that says so
    assert len(standin.errors) == 1 and "named" in standin.errors[0]


def test_rods_are_placed_in_the_order_listed(monkeypatch, headless, phantom):
    """Place rods: each click lands on the next rod of the list, first to last."""
    standin, module = _standin(monkeypatch, headless)
    volumeNode, _ = _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    ui = widget.ui
    ui.calibrationModeComboBox.setCurrentIndex(ui.calibrationModeComboBox.findText("phantom"))
    ui.phantomComboBox.setCurrentIndex(ui.phantomComboBox.findText("qrm-bdc-6"))
    ui.placeRodsButton.click()
    assert not standin.errors
    rods = widget._parameterNode.rodPoints
    truth = phantom[1]
    interaction = headless.app_logic.GetInteractionNode()
    assert interaction.GetPlaceModePersistence()
    for rod in truth.rods:
        index = markups_click(headless.app_logic, [float(x) for x in rod.center_ras])
        assert rods.GetNthControlPointLabel(index) == rod.name
    standin.run_timers()
    # All placed: place mode ends and the calibration is fitted.
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    assert widget.logic.mrml.calibration() is not None, standin.errors


def test_place_level_click_lands_on_that_level(monkeypatch, headless, phantom):
    standin, module = _standin(monkeypatch, headless)
    _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    l2 = [float(x) for x in phantom[1].levels[1].center_ras]
    widget.ui.placeL2Button.click()
    points = widget._parameterNode.inputPoints  # a new list "OsteoROI levels"
    interaction = headless.app_logic.GetInteractionNode()
    index = markups_click(headless.app_logic, [l2[0] + 1.0, l2[1], l2[2]])
    assert points.GetNthControlPointLabel(index) == "L2"
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_leaving_the_module_ends_persistent_placement(monkeypatch, headless, phantom):
    standin, module = _standin(monkeypatch, headless)
    _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    ui = widget.ui
    ui.calibrationModeComboBox.setCurrentIndex(ui.calibrationModeComboBox.findText("internal"))
    ui.placeTissuesButton.click()
    interaction = headless.app_logic.GetInteractionNode()
    assert interaction.GetPlaceModePersistence()
    standin.exit(widget)
    assert not interaction.GetPlaceModePersistence()
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform


def test_scene_close_drops_the_cached_volume_and_reopens_clean(monkeypatch, headless, phantom):
    standin, module = _standin(monkeypatch, headless)
    volumeNode, pointsNode = _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    widget.ui.inputPointsSelector.setCurrentNode(pointsNode)
    widget.ui.applyButton.click()
    assert not standin.errors
    before = widget.logic.mrml
    assert before.rows() and before.volume() is not None
    standin.close_scene()
    assert widget.logic.mrml is not before, "the MRML logic (and its volume cache) outlives the scene"
    assert widget._parameterNode is not None and widget._parameterNode.inputVolume is None
    assert not widget.ui.applyButton.enabled
    # A new case in the same session.
    _, pointsNode = _add_phantom(standin, phantom)
    standin.exit(widget)
    standin.enter(widget)
    widget.ui.inputPointsSelector.setCurrentNode(pointsNode)
    assert widget.ui.applyButton.enabled
    widget.cleanup()


def test_reload_reloads_the_library(monkeypatch, headless):
    """Reload re-executes OsteoROI.py only; the widget first drops OsteoROILib so it is re-imported."""
    standin, module = _standin(monkeypatch, headless)
    widget = standin.make_widget(module)
    saved = {n: m for n, m in sys.modules.items() if n == "OsteoROILib" or n.startswith("OsteoROILib.")}
    try:
        widget.onReload()
    finally:
        sys.modules.update(saved)
    assert standin.reloaded == [("OsteoROI", [])]


def test_every_button_can_become_enabled(monkeypatch, headless, phantom):
    """Every control a case needs is reachable: after measuring and calibrating, no button is left
    disabled that the user needs."""
    standin, module = _standin(monkeypatch, headless)
    _, pointsNode = _add_phantom(standin, phantom)
    widget = standin.make_widget(module)
    standin.enter(widget)
    ui = widget.ui
    ui.inputPointsSelector.setCurrentNode(pointsNode)
    seen = {w.objectName for w in all_widgets(widget.layout.widgets[0]) if w.enabled}
    ui.applyButton.click()
    seen |= {w.objectName for w in all_widgets(widget.layout.widgets[0]) if w.enabled}
    for mode in ("phantom", "internal", "saved", "manual"):
        ui.calibrationModeComboBox.setCurrentIndex(ui.calibrationModeComboBox.findText(mode))
        seen |= {w.objectName for w in all_widgets(widget.layout.widgets[0]) if w.enabled}
    ui.applyCalibrationButton.click()
    seen |= {w.objectName for w in all_widgets(widget.layout.widgets[0]) if w.enabled}
    segmentation = headless.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Vertebrae")
    ui.segmentationSelector.setCurrentNode(segmentation)
    seen |= {w.objectName for w in all_widgets(widget.layout.widgets[0]) if w.enabled}
    assert not standin.errors
    never = {w.objectName for w in all_widgets(widget.layout.widgets[0])
             if w.className in ("QPushButton", "QCheckBox", "QComboBox", "QDoubleSpinBox", "QLineEdit",
                                "qMRMLNodeComboBox")} - seen
    assert not never, f"never enabled: {sorted(never)}"


@pytest.mark.parametrize("name", ["test_OsteoROI_phantom", "test_OsteoROI_calibration",
                                  "test_OsteoROI_edit_and_persist", "test_OsteoROI_errors",
                                  "test_OsteoROI_signed_report"])
def test_self_test_steps_run(monkeypatch, headless, name):
    """The Slicer self-test's steps (OsteoROITest, registered with ctest) on the slicer-core scene."""
    standin, module = _standin(monkeypatch, headless)
    case = module.OsteoROITest(name)
    case.setUp()
    getattr(case, name)()
