"""Conformance of the module to Slicer's documented rules, at every supported Slicer version.

The rules are in ``slicer_standin`` with the Slicer source file and tag each was read from
(v5.6.2, v5.8.1, v5.10.0). Here they are applied to the module as written: every widget bound to
a parameter in the .ui against the parameter node's annotations (what ``connectGui`` /
``connectParametersToGui`` would accept or raise), the list of supported connectors against
known-bad bindings (a combo box on a plain ``str`` must be refused), and the markups placement
rule on a real markups node.
"""
from __future__ import annotations

import enum
import os
import typing
import xml.etree.ElementTree as ET

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from OsteoROILib.mrml.scene import new_scene  # noqa: E402
from slicer_standin import (  # noqa: E402
    CONNECT_GUI_RETURNS_TAG,
    SLICER_TAGS,
    Choice,
    StandIn,
    WithinRange,
    connector_problem,
    node_class_names,
    split_annotations,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_FILE = os.path.join(ROOT, "Resources", "UI", "OsteoROI.ui")


@pytest.fixture
def module(monkeypatch):
    headless = new_scene()
    yield StandIn(monkeypatch, headless).load_module()
    headless.close()


def _bound_widgets():
    """``{parameter: (widget name, class, Designer items, nodeTypes, minimum, maximum)}`` of the .ui."""
    out = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        props = {p.get("name"): p for p in w.findall("property")}
        param = props.get("SlicerParameterName")
        if param is None:
            continue
        items = [i.findtext("property/string") for i in w.findall("item")]
        types = [s.text for s in props["nodeTypes"].iter("string")] if "nodeTypes" in props else []
        lo = float(props["minimum"].findtext("double")) if "minimum" in props else None
        hi = float(props["maximum"].findtext("double")) if "maximum" in props else None
        out[param.findtext("string")] = (w.get("name"), w.get("class"), items, types, lo, hi)
    return out


@pytest.mark.parametrize("tag", SLICER_TAGS)
def test_every_binding_is_one_slicer_can_connect(module, tag):
    """guiConnectors.py canRepresent: combo box => Choice or Enum; check box => bool; spin box => a
    number with a range; node combo box => the node type."""
    hints = module.OsteoROIParameterNode.allParameters  # the class's annotations, extras included
    bound = _bound_widgets()
    assert bound, "no widget carries a SlicerParameterName"
    for param, (name, cls, items, node_types, lo, hi) in bound.items():
        assert param in hints, f"{name}: SlicerParameterName {param!r} is not a parameter"
        datatype = hints[param]
        problem = connector_problem(tag, cls, datatype)
        assert problem is None, f"Slicer {tag} raises when connecting {name}: {problem}"
        base, extras = split_annotations(datatype)
        if cls == "QComboBox":
            choice = next((e for e in extras if isinstance(e, Choice)), None)
            assert choice is not None or (isinstance(base, type) and issubclass(base, enum.Enum))
            if choice is not None:  # the connector rebuilds the items from the Choice
                assert items == [str(c) for c in choice.choices], f"{name}: .ui items differ from the Choice"
        elif cls == "QCheckBox":
            assert base is bool, f"{name}: a check box needs a bool"
        elif cls in ("QDoubleSpinBox", "QSpinBox", "ctkSliderWidget"):
            rng = next((e for e in extras if isinstance(e, WithinRange)), None)
            assert rng is not None, f"{name}: give {param} a WithinRange (the connector sets the widget's range)"
            assert (lo, hi) == (rng.minimum, rng.maximum), f"{name}: .ui range differs from WithinRange"
        elif cls == "qMRMLNodeComboBox":
            assert node_types == list(node_class_names(base)), f"{name}: nodeTypes differ from the parameter type"


@pytest.mark.parametrize("tag", SLICER_TAGS)
def test_the_rules_refuse_what_slicer_refuses(tag):
    """Known-bad bindings are refused at every tag (the rules would have caught them)."""
    assert connector_problem(tag, "QComboBox", str) is not None
    assert "Choice" in connector_problem(tag, "QComboBox", typing.Annotated[str, WithinRange(0, 1)])
    assert connector_problem(tag, "QComboBox", typing.Annotated[str, Choice(["a", "b"])]) is None
    assert connector_problem(tag, "QCheckBox", str) is not None
    assert connector_problem(tag, "ctkSliderWidget", float) is not None
    assert connector_problem(tag, "QDoubleSpinBox", float) is None
    assert connector_problem(tag, "QSpinBox", float) is not None
    assert connector_problem(tag, "qMRMLNodeComboBox", slicer.vtkMRMLSegmentationNode) is None
    assert connector_problem(tag, "qMRMLNodeComboBox", str) is not None


def test_connect_gui_returns_a_tag_only_from_5_10():
    """wrapper.py: connectGui returns None at v5.6.x and v5.8.x; connectParametersToGui always returns it."""
    assert CONNECT_GUI_RETURNS_TAG == {"v5.6.2": False, "v5.8.1": False, "v5.10.0": True}


def test_module_never_relies_on_connect_gui_returning_a_tag():
    import ast

    tree = ast.parse(open(os.path.join(ROOT, "OsteoROI", "OsteoROI.py"), encoding="utf-8").read())
    calls = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert "connectGui" not in calls and "connectParametersToGui" in calls


def test_markups_preview_and_undefined_points():
    """vtkMRMLMarkupsNode: Reset -> Preview (and un-previews any other point); Unset -> Undefined.
    A list whose points are all Undefined is filled from the placement start index, in order."""
    headless = new_scene()
    try:
        node = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "rods")
        for label in ("A", "B", "C"):
            node.ResetNthControlPointPosition(node.AddControlPoint(0.0, 0.0, 0.0, label))
        states = [node.GetNthControlPointPositionStatus(i) for i in range(3)]
        assert states == [node.PositionUndefined, node.PositionUndefined, node.PositionPreview]
        for i in range(3):
            node.UnsetNthControlPointPosition(i)
        assert {node.GetNthControlPointPositionStatus(i) for i in range(3)} == {node.PositionUndefined}
    finally:
        headless.close()


def test_resource_paths_resolve_in_both_layouts(module, tmp_path):
    """moduleResourcePath finds the UI and the icon in the source tree; an installed copy (Resources/
    beside OsteoROI.py) is checked in test_slicer_widget_lifecycle."""
    for rel in ("UI/OsteoROI.ui", "Icons/OsteoROI.png"):
        path = module.moduleResourcePath(rel)
        assert os.path.isfile(path) and path.startswith(os.path.join(ROOT, "Resources"))
