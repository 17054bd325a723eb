"""What 3D Slicer's GUI layer does with a scripted module, as rules and as a stand-in to run it on.

3D Slicer cannot be installed here. The ``slicer-core`` wheel gives the real MRML scene, markups,
tables and plots, but not Qt, the parameter node wrapper or ``ScriptedLoadableModule``. This file
encodes, from Slicer's own source (read at the tags in :data:`SLICER_TAGS`, never copied), the
rules those parts follow, and builds just enough of them to import ``OsteoROI/OsteoROI.py`` and
drive its widget the way Slicer does (setup → enter → exit → scene close → cleanup) against a real
``vtkMRMLScene``.

Rules and where they come from (same at every tag unless a tag is named):

* ``Base/Python/slicer/parameterNodeWrapper/guiConnectors.py`` — ``createGuiConnector`` asks each
  registered connector's ``canRepresent(widget, datatype)`` (exact widget class, ``type(widget) ==``)
  and raises ``RuntimeError`` when none fits: :data:`CONNECTORS`. A ``QComboBox`` bound to a plain
  ``int/float/str/bool`` raises "requires the Choice annotation" and rebuilds the items from the
  ``Choice``; a ``QTextEdit`` holds a ``str`` as plain text (``QTextEditPlainTextToStrConnector``:
  ``textChanged()``, ``toPlainText``/``setPlainText``); ``QSlider``, ``ctkSliderWidget`` and
  ``qMRMLSliderWidget`` need a bounded number
  (``WithinRange``, or ``Minimum`` and ``Maximum``); ``WithinRange`` sets a spin box's range; a
  ``qMRMLNodeComboBox`` gets ``nodeTypes`` from the node type.
* ``Base/Python/slicer/parameterNodeWrapper/wrapper.py`` — ``connectParametersToGui(mapping)``
  returns the tag at every tag; ``connectGui(gui)`` returns it only from v5.10.0 (``None`` at
  v5.6.x and v5.8.x, where ``disconnectGui(None)`` then disconnects nothing):
  :data:`CONNECT_GUI_RETURNS_TAG`. ``connectGui`` collects the widgets with a
  ``SlicerParameterName`` dynamic property.
* ``Base/Python/slicer/ScriptedLoadableModule.py`` — ``resourcePath(f)`` is
  ``<folder of the module's .py>/Resources/f`` (module and widget); the module icon is set
  automatically only from ``<folder>/Resources/Icons/<ModuleName>.png``; the widget's
  ``onReload`` calls ``slicer.util.reloadScriptedModule(moduleName)``, which re-executes the
  module's file only (``Base/Python/slicer/util.py``).
* ``Modules/Loadable/Markups/MRML/vtkMRMLMarkupsNode.cxx`` and
  ``VTKWidgets/vtkSlicerMarkupsWidget.cxx`` — a click in place mode goes to the list's point in
  the *Preview* state if there is one, otherwise to the first undefined point from
  ``ControlPointPlacementStartIndex``; ``ResetNthControlPointPosition`` puts a point in Preview
  (and un-previews any other), ``UnsetNthControlPointPosition`` makes it undefined:
  :func:`markups_click` follows these rules on a real markups node.
* ``Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py`` (``load``) — a volume loaded from the
  DICOM database gets the node attribute ``DICOM.instanceUIDs``: its slices' SOP Instance UIDs,
  space-separated, in the order of the loaded files, "Unknown" for a file without one;
  ``slicer.dicomDatabase.fileForInstance(uid)`` (ctkDICOMDatabase, as ``DICOMUtils`` and
  ``DICOMBrowser`` call it) gives the file of a UID, "" when the database does not hold it:
  :class:`DicomDatabase`.
* ``Modules/Loadable/SubjectHierarchy/Widgets/qSlicerSubjectHierarchyPluginLogic.cxx`` (``onNodeAdded``)
  — in the application, every node added to the scene (not while importing, not hidden from editors)
  gets a subject-hierarchy item under the scene item through its plugin; the wheel has no plugins, so
  no item is made: :func:`subject_hierarchy_items_as_slicer_makes_them`. ``Libs/MRML/Core/
  vtkMRMLSubjectHierarchyNode.h``: ``CreateItem(parent, dataNode)`` reparents the node's existing item,
  ``CreateFolderItem``, ``SetItemAttribute``, ``GetItemChildren``, ``RemoveItem(item, removeDataNode,
  recursive)`` — same signatures at every tag.
* Markups used by ``mrml.placement_view`` (``Modules/Loadable/Markups/MRML/`` at v5.6.2 and v5.8.1,
  ``Libs/MRML/Core/`` at v5.10.0): ``vtkMRMLMarkupsNode`` ``SetLocked``, ``SetFixedNumberOfControlPoints``
  (a fixed node refuses ``AddControlPoint*`` and ``RemoveAllControlPoints`` with an error),
  ``SetControlPointPositionsWorld(vtkPoints)`` (adds or removes points to match), ``SetNthControlPointLabel``,
  ``SetNthControlPointVisibility``, ``GetNthControlPointPositionWorld``, and ``vtkMRMLNode``
  ``StartModify``/``EndModify``; ``vtkMRMLMarkupsCurveNode``
  ``SetCurveTypeToLinear``; ``vtkMRMLMarkupsLineNode`` holds at most two points;
  ``vtkMRMLMarkupsPlaneNode`` ``SetSizeMode(SizeModeAbsolute)``, ``SetOriginWorld``, ``SetAxesWorld``,
  ``SetSizeWorld`` and their getters; ``vtkMRMLMarkupsDisplayNode`` ``Set{PointLabels,PropertiesLabel}
  Visibility``, ``SetHandlesInteractive``: :data:`PLACEMENT_MARKUPS_API`.
* ``Base/Python/slicer/util.py`` — ``confirmYesNoDisplay(text, ...)`` shows a question and returns
  True for Yes; ``pip_install(requirements)`` takes one string of requirements (the stand-in
  records them: :attr:`StandIn.confirm_answers`, :attr:`StandIn.pip_installs`).
"""
from __future__ import annotations

import contextlib
import enum
import importlib.util
import inspect
import os
import sys
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Optional, Tuple

import slicer
import vtk

#: The Slicer releases whose sources the rules were read from.
SLICER_TAGS = ("v5.6.2", "v5.8.1", "v5.10.0")

#: The markups and subject-hierarchy methods ``mrml.placement_view`` calls, per class, as declared at
#: every tag in :data:`SLICER_TAGS` (read from the headers named in the module docstring).
PLACEMENT_MARKUPS_API = {
    "vtkMRMLMarkupsNode": ("SetLocked", "GetLocked", "SetFixedNumberOfControlPoints",
                           "GetFixedNumberOfControlPoints", "SetControlPointPositionsWorld", "SetNthControlPointLabel",
                           "SetNthControlPointVisibility", "GetNumberOfControlPoints",
                           "GetNthControlPointPositionWorld", "CreateDefaultDisplayNodes", "GetDisplayNode",
                           "StartModify", "EndModify", "SetAttribute"),
    "vtkMRMLMarkupsClosedCurveNode": ("SetCurveTypeToLinear",),
    "vtkMRMLMarkupsLineNode": (),
    "vtkMRMLMarkupsPlaneNode": ("SetSizeMode", "SetOriginWorld", "GetOriginWorld", "SetAxesWorld", "GetAxesWorld",
                                "SetSizeWorld", "GetSizeWorld", "GetNormalWorld"),
    "vtkMRMLMarkupsDisplayNode": ("SetPointLabelsVisibility", "SetPropertiesLabelVisibility",
                                  "SetHandlesInteractive", "SetFillVisibility", "SetColor", "SetSelectedColor"),
    "vtkMRMLSubjectHierarchyNode": ("GetSubjectHierarchyNode", "GetSceneItemID", "CreateFolderItem", "CreateItem",
                                    "SetItemAttribute", "GetItemAttribute", "GetItemChildren", "GetItemParent",
                                    "GetItemByDataNode", "GetItemDataNode", "GetItemName", "RemoveItem"),
}


def subject_hierarchy_items_as_slicer_makes_them(scene) -> int:
    """Give every node added to ``scene`` a subject-hierarchy item under the scene item, as the
    application's plugin logic does (``onNodeAdded``); returns the observer tag."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

    def added(caller, event, node=None):
        if node is None or scene.IsImporting() or node.GetHideFromEditors() or node.IsA("vtkMRMLSubjectHierarchyNode"):
            return
        if node.IsA("vtkMRMLMarkupsNode") and not sh.GetItemByDataNode(node):
            sh.CreateItem(sh.GetSceneItemID(), node)

    added.CallDataType = vtk.VTK_OBJECT
    return scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, added)


#: wrapper.py ``_connectGui``: ``return _connectParametersToGui(...)`` only from v5.10.0.
CONNECT_GUI_RETURNS_TAG = {"v5.6.2": False, "v5.8.1": False, "v5.10.0": True}

_PATHS = ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")

#: guiConnectors.py ``canRepresent``, per tag: (value kind, widget classes, requirement).
#: Value kinds: "bool", "int", "float", "stringable" (int/float/str/bool), "enum", "str", "path",
#: "node", "FloatRange". Requirements: "choice" (a Choice annotation), "bounded" (WithinRange, or
#: Minimum and Maximum), "" (none).
_CONNECTORS_5_6 = (
    ("bool", ("QCheckBox",), ""),
    ("bool", ("QPushButton",), ""),
    ("int", ("QSpinBox",), ""),
    ("int", ("QSlider",), "bounded"),
    ("float", ("QDoubleSpinBox",), ""),
    ("float", ("ctkSliderWidget", "qMRMLSliderWidget"), "bounded"),
    ("stringable", ("QComboBox",), "choice"),
    ("enum", ("QComboBox",), ""),
    ("str", ("QLineEdit", "QTextEdit"), ""),
    ("FloatRange", ("ctkRangeWidget",), ""),
    ("path", ("ctkPathLineEdit", "ctkDirectoryButton"), ""),
    ("node", ("qMRMLNodeComboBox",), ""),
)
_CONNECTORS_5_8 = (
    ("bool", ("QCheckBox", "ctkCheckBox"), ""),
    ("bool", ("QPushButton",), ""),
    ("int", ("QSpinBox",), ""),
    ("int", ("QSlider",), "bounded"),
    ("float", ("QDoubleSpinBox", "ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"), ""),
    ("float", ("ctkSliderWidget", "qMRMLSliderWidget"), "bounded"),
    ("stringable", ("QComboBox", "ctkComboBox"), "choice"),
    ("enum", ("QComboBox", "ctkComboBox"), ""),
    ("str", ("QLineEdit", "QLabel", "QTextEdit"), ""),
    ("FloatRange", ("ctkRangeWidget", "ctkDoubleRangeSlider", "qMRMLRangeWidget"), ""),
    ("path", ("ctkPathLineEdit", "ctkDirectoryButton"), ""),
    ("node", ("qMRMLNodeComboBox",), ""),
)
CONNECTORS = {
    "v5.6.2": _CONNECTORS_5_6,
    "v5.8.1": _CONNECTORS_5_8,
    # v5.10.0 adds ctkCheckablePushButton for bool and lets the float widgets hold an int too.
    "v5.10.0": _CONNECTORS_5_8 + (
        ("bool", ("ctkCheckablePushButton",), ""),
        ("int", ("QDoubleSpinBox", "ctkDoubleSlider", "ctkDoubleSpinBox", "qMRMLSpinBox"), ""),
        ("int", ("ctkSliderWidget", "qMRMLSliderWidget"), "bounded"),
    ),
}

#: Qt/CTK/Slicer signals the stand-in widgets emit, per class and its bases (Qt 5 class
#: documentation; ctkCollapsibleButton.h; qMRMLNodeComboBox.h).
SIGNALS = {
    "QWidget": {"destroyed()"},
    "QAbstractButton": {"clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()"},
    "QCheckBox": {"stateChanged(int)"},
    "QDoubleSpinBox": {"valueChanged(double)", "editingFinished()"},
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
    "QLineEdit": {"textChanged(QString)", "editingFinished()"},
    "QTextEdit": {"textChanged()"},
    "qMRMLNodeComboBox": {"currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)",
                          "currentNodeIDChanged(QString)"},
}
BASES = {
    "QAbstractButton": "QWidget", "QPushButton": "QAbstractButton", "QCheckBox": "QAbstractButton",
    "ctkCollapsibleButton": "QAbstractButton", "QDoubleSpinBox": "QWidget", "QComboBox": "QWidget",
    "QLineEdit": "QWidget", "QTextEdit": "QWidget", "QLabel": "QWidget", "qMRMLNodeComboBox": "QWidget",
    "qMRMLTableView": "QWidget",
    "qMRMLWidget": "QWidget",
}


def ancestry(cls: str) -> List[str]:
    chain = []
    while cls:
        chain.append(cls)
        cls = BASES.get(cls, "QWidget" if cls != "QWidget" else None)
    return chain


# ------------------------------------------------------------------------------------------------
# Value kinds and connector rules
# ------------------------------------------------------------------------------------------------
class WithinRange:
    """parameterNodeWrapper.validators.WithinRange."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Choice:
    """parameterNodeWrapper.validators.Choice."""

    def __init__(self, choices):
        self.choices = choices

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


def split_annotations(datatype) -> Tuple[Any, list]:
    if typing.get_origin(datatype) is typing.Annotated:
        base, *extras = typing.get_args(datatype)
        return base, list(extras)
    return datatype, []


def node_class_names(base) -> Tuple[str, ...]:
    """The MRML class names of a node type or of a Union/Optional of node types; () otherwise."""
    args = typing.get_args(base) if typing.get_origin(base) is typing.Union else (base,)
    names = tuple(a.__name__ for a in args if isinstance(a, type) and issubclass(a, slicer.vtkMRMLNode))
    others = [a for a in args if a is not type(None) and not (isinstance(a, type) and issubclass(a, slicer.vtkMRMLNode))]
    return () if others else names


def value_kinds(datatype) -> set:
    base, _ = split_annotations(datatype)
    kinds = set()
    if node_class_names(base):
        kinds.add("node")
    if isinstance(base, type):
        if base in (int, float, str, bool):
            kinds |= {base.__name__, "stringable"}
        if issubclass(base, enum.Enum):
            kinds.add("enum")
        if base.__name__ in _PATHS:
            kinds.add("path")
        if base.__name__ == "FloatRange":
            kinds.add("FloatRange")
    return kinds


def connector_problem(tag: str, widget_class: str, datatype) -> Optional[str]:
    """None if Slicer ``tag`` connects ``widget_class`` to ``datatype``; else the reason it raises."""
    _, extras = split_annotations(datatype)
    kinds = value_kinds(datatype)
    bounded = any(isinstance(e, WithinRange) for e in extras)
    has_choice = any(isinstance(e, Choice) for e in extras)
    for kind, classes, requirement in CONNECTORS[tag]:
        if kind in kinds and widget_class in classes:  # the first connector that can represent it is used
            if requirement == "choice" and not has_choice:
                return f"{widget_class} for {datatype}: ComboBoxToStringableConnector requires the Choice annotation"
            if requirement == "bounded" and not bounded:
                return f"{widget_class} for {datatype}: a slider needs a bounded number (WithinRange)"
            return None
    return f"Unable to create GUI connector from datatype {datatype!r} to widget type {widget_class!r}"


# ------------------------------------------------------------------------------------------------
# Widgets built from the .ui file
# ------------------------------------------------------------------------------------------------
class FakeWidget:
    """One widget of the .ui: its class, Designer properties, dynamic properties and signals."""

    def __init__(self, element: ET.Element, parent: Optional["FakeWidget"]):
        self.className = element.get("class")
        self.objectName = element.get("name")
        self.parentWidget = parent
        self.children: List[FakeWidget] = []
        self._slots: Dict[str, List[Callable]] = {}
        self._blocked = False
        self._dynamic: Dict[str, str] = {}
        self.enabled, self.toolTip, self.text, self.checked = True, "", "", False
        self.items: List[str] = []
        self._index = -1
        self.value, self.minimum, self.maximum = 0.0, 0.0, 99.99
        self.nodeTypes: List[str] = []
        self._node = None
        self.tableNode = None
        for prop in element.findall("property"):
            name = prop.get("name")
            if prop.get("stdset") == "0":
                self._dynamic[name] = prop.findtext("string") or ""
            elif name in ("text", "toolTip"):
                setattr(self, name, prop.findtext("string") or "")
            elif name in ("value", "minimum", "maximum"):
                setattr(self, name, float(prop.findtext("double") or prop.findtext("number") or 0))
            elif name == "checked":
                self.checked = prop.findtext("bool") == "true"
            elif name == "nodeTypes":
                self.nodeTypes = [s.text for s in prop.iter("string")]
        for item in element.findall("item"):
            self.items.append(item.findtext("property/string") or "")
        if self.items:
            self._index = 0

    # --- Qt object API used by the module ----------------------------------------------------------
    def connect(self, signal: str, slot: Callable) -> None:
        known = set().union(*(SIGNALS.get(c, set()) for c in ancestry(self.className)))
        if signal not in known:
            raise AttributeError(f"{self.objectName} ({self.className}) has no signal {signal}")
        self._slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args) -> None:
        if self._blocked:
            return
        for slot in list(self._slots.get(signal, [])):
            slot(*args[:_accepted_arguments(slot, len(args))])  # PythonQt drops the extra arguments

    def blockSignals(self, block: bool) -> bool:
        previous, self._blocked = self._blocked, bool(block)
        return previous

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    # QComboBox
    @property
    def currentIndex(self) -> int:
        return self._index

    def setCurrentIndex(self, index: int) -> None:
        if index != self._index:
            self._index = index
            self.emit("currentIndexChanged(int)", index)
            self.emit("currentTextChanged(QString)", self.currentText)

    @property
    def currentText(self) -> str:
        return self.items[self._index] if 0 <= self._index < len(self.items) else ""

    def findText(self, text: str) -> int:
        return self.items.index(text) if text in self.items else -1

    def addItem(self, text: str) -> None:
        self.items.append(text)
        if self._index < 0:
            self.setCurrentIndex(0)

    def clear(self) -> None:
        self.items, self._index = [], -1

    def count(self) -> int:
        return len(self.items)

    # qMRMLNodeComboBox, qMRMLTableView
    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)
            self.emit("currentNodeChanged(bool)", node is not None)

    def setMRMLTableNode(self, node) -> None:
        self.tableNode = node

    def property(self, name):  # after the @property members: this name shadows the builtin below
        return self._dynamic.get(name)

    # --- what a user does ---------------------------------------------------------------------------
    def click(self) -> None:
        assert self.enabled, f"{self.objectName} is disabled: a user cannot click it"
        self.emit("clicked()")
        self.emit("clicked(bool)", False)

    def setUserChecked(self, checked: bool) -> None:
        assert self.enabled, f"{self.objectName} is disabled"
        if bool(checked) != self.checked:
            self.checked = bool(checked)
            self.emit("toggled(bool)", self.checked)
            self.emit("stateChanged(int)", 2 if self.checked else 0)

    def setUserValue(self, value: float) -> None:
        self.value = value
        self.emit("valueChanged(double)", value)

    def setUserText(self, text: str) -> None:
        self.text = text
        self.emit("textChanged()" if self.className == "QTextEdit" else "textChanged(QString)", text)

    # QTextEdit (plain text)
    def toPlainText(self) -> str:
        return self.text

    def setPlainText(self, text: str) -> None:
        self.text = text


def _accepted_arguments(slot: Callable, given: int) -> int:
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return given
    return min(given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params))


def load_ui(path: str) -> FakeWidget:
    """slicer.util.loadUI: the top widget of the form, its children below it."""
    if not os.path.isfile(path):
        raise RuntimeError(f"Could not load UI file {path}")  # as qSlicerUtils/QUiLoader fail

    def build(element, parent):
        widget = FakeWidget(element, parent)
        for child in element.iter("widget"):
            if child is element:
                continue
            # only direct widget descendants (through layouts and items)
            owner = _owner_widget(element, child)
            if owner is element:
                widget.children.append(build(child, widget))
        return widget

    root = ET.parse(path).getroot().find("widget")
    return build(root, None)


def _owner_widget(top: ET.Element, target: ET.Element) -> Optional[ET.Element]:
    parents = {c: p for p in top.iter() for c in p}
    node = parents.get(target)
    while node is not None and node.tag != "widget":
        node = parents.get(node)
    return node


def all_widgets(top: FakeWidget) -> List[FakeWidget]:
    out = [top]
    for child in top.children:
        out += all_widgets(child)
    return out


def child_widget_variables(top: FakeWidget):
    """slicer.util.childWidgetVariables: every named child as an attribute."""
    return types.SimpleNamespace(**{w.objectName: w for w in all_widgets(top)[1:]})


# ------------------------------------------------------------------------------------------------
# Parameter node wrapper
# ------------------------------------------------------------------------------------------------
class _Connector:
    def __init__(self, wrapper, name: str, widget: FakeWidget, datatype):
        self.wrapper, self.name, self.widget, self.datatype = wrapper, name, widget, datatype
        base, extras = split_annotations(datatype)
        self.choices = next((e.choices for e in extras if isinstance(e, Choice)), None)
        rng = next((e for e in extras if isinstance(e, WithinRange)), None)
        if self.choices is not None:  # QComboBoxToStringableConnector.__init__ rebuilds the items
            widget.clear()
            for c in self.choices:
                widget.items.append(str(c))
        if rng is not None:
            widget.minimum, widget.maximum = rng.minimum, rng.maximum
        names = node_class_names(base)
        if names:
            widget.nodeTypes = list(names)
        self.connected = True
        for signal in self._signals():
            widget._slots.setdefault(signal, []).append(self._changed)

    def _signals(self):
        return {"QCheckBox": ["stateChanged(int)"], "QPushButton": ["toggled(bool)"],
                "QDoubleSpinBox": ["valueChanged(double)"], "QComboBox": ["currentIndexChanged(int)"],
                "QLineEdit": ["textChanged(QString)"], "QTextEdit": ["textChanged()"],
                "qMRMLNodeComboBox": ["currentNodeChanged(vtkMRMLNode*)"]}.get(self.widget.className, [])

    def _changed(self, *args) -> None:
        if self.connected and not self.wrapper._updatingGui:
            self.wrapper.setValue(self.name, self.read())

    def disconnect(self) -> None:
        self.connected = False
        for signal in self._signals():
            self.widget._slots[signal].remove(self._changed)

    def read(self):
        w = self.widget
        if self.choices is not None:
            return self.choices[w.currentIndex]
        return {"QCheckBox": lambda: w.checked, "QPushButton": lambda: w.checked,
                "QDoubleSpinBox": lambda: w.value, "QLineEdit": lambda: w.text, "QTextEdit": w.toPlainText,
                "qMRMLNodeComboBox": w.currentNode}[w.className]()

    def write(self, value) -> None:
        w = self.widget
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"Unable to find value {value} in choices {self.choices}")
            w.setCurrentIndex(list(self.choices).index(value))
        elif w.className in ("QCheckBox", "QPushButton"):
            w.checked = bool(value)
        elif w.className == "QDoubleSpinBox":
            w.value = value
        elif w.className == "QLineEdit":
            w.text = value
        elif w.className == "QTextEdit":
            w.setPlainText(value)
        elif w.className == "qMRMLNodeComboBox":
            w.setCurrentNode(value)


class ParameterNodeWrapper:
    """What ``@parameterNodeWrapper`` makes of a class: typed members stored in a scripted module node."""

    tag = SLICER_TAGS[0]
    allParameters: Dict[str, Any] = {}
    defaults: Dict[str, Any] = {}

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self._guis: Dict[int, Dict[str, _Connector]] = {}
        self._nextTag = 0
        self._updatingGui = False
        self._observer = None
        for name, value in self.defaults.items():
            if not parameterNode.GetParameter(name):
                self.setValue(name, value)

    @classmethod
    def dataType(cls, name):
        return cls.allParameters[name]

    def getValue(self, name):
        base, _ = split_annotations(self.allParameters[name])
        if node_class_names(base):
            return self.parameterNode.GetNodeReference(name)
        text = self.parameterNode.GetParameter(name)
        return {bool: lambda t: t == "True", float: float, int: int, str: str}[base](text)

    def setValue(self, name, value):
        base, extras = split_annotations(self.allParameters[name])
        if node_class_names(base):
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            return
        for e in extras:
            e.validate(value)
        self.parameterNode.SetParameter(name, repr(value) if base is float else str(value))

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, lambda caller, ev: callback(self, ev), priority)

    def RemoveObserver(self, observerTag):
        self.parameterNode.RemoveObserver(observerTag)

    def connectParametersToGui(self, mapping):
        connectors = {}
        for name, widget in mapping.items():
            if name not in self.allParameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            problem = connector_problem(self.tag, widget.className, self.allParameters[name])
            if problem:
                raise RuntimeError(problem)
            connectors[name] = _Connector(self, name, widget, self.allParameters[name])
        guiTag = self._nextTag
        self._nextTag += 1
        self._guis[guiTag] = connectors
        self._writeGui(connectors)
        if self._observer is None:
            self._observer = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda c, e: self._updateGuis())
        return guiTag

    def connectGui(self, gui):
        widgets = all_widgets(gui) if isinstance(gui, FakeWidget) else list(vars(gui).values())
        mapping = {w.property("SlicerParameterName"): w for w in widgets if w.property("SlicerParameterName")}
        guiTag = self.connectParametersToGui(mapping)
        return guiTag if CONNECT_GUI_RETURNS_TAG[self.tag] else None

    def disconnectGui(self, guiTag):
        if guiTag in self._guis:
            for connector in self._guis.pop(guiTag).values():
                connector.disconnect()

    def connectedGuiCount(self) -> int:
        return len(self._guis)

    def _writeGui(self, connectors):
        self._updatingGui = True
        try:
            for name, connector in connectors.items():
                connector.write(self.getValue(name))
        finally:
            self._updatingGui = False

    def _updateGuis(self):
        if not self._updatingGui:
            for connectors in list(self._guis.values()):
                self._writeGui(connectors)


def make_parameter_node_wrapper(tag: str, created: List[Any]):
    """``parameterNodeWrapper`` for Slicer ``tag``."""

    def parameterNodeWrapper(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        members = {"tag": tag, "allParameters": hints, "__doc__": cls.__doc__,
                   "defaults": {name: getattr(cls, name) for name in hints if hasattr(cls, name)}}
        for name in hints:
            members[name] = property(lambda self, n=name: self.getValue(n),
                                     lambda self, value, n=name: self.setValue(n, value))
        wrapper = type(cls.__name__, (ParameterNodeWrapper,), members)
        created.append(wrapper)
        return wrapper

    return parameterNodeWrapper


# ------------------------------------------------------------------------------------------------
# Markups placement (a click in place mode)
# ------------------------------------------------------------------------------------------------
def markups_click(appLogic, position) -> Optional[int]:
    """A click in a slice view in place mode, as vtkSlicerMarkupsWidget places it into the active
    list (the selection node's active place node); returns the index of the point placed."""
    interaction = appLogic.GetInteractionNode()
    if interaction.GetCurrentInteractionMode() != interaction.Place:
        return None
    node = appLogic.GetMRMLScene().GetNodeByID(appLogic.GetSelectionNode().GetActivePlaceNodeID())
    index = next((i for i in range(node.GetNumberOfControlPoints())
                  if node.GetNthControlPointPositionStatus(i) == node.PositionPreview), -1)
    if index < 0:
        start = max(node.GetControlPointPlacementStartIndex(), 0)
        index = next((i for i in range(start, node.GetNumberOfControlPoints())
                      if node.GetNthControlPointPositionStatus(i) != node.PositionDefined), -1)
    if index < 0:
        index = node.AddControlPoint(vtk.vtkVector3d(*position))
    else:
        node.SetNthControlPointPositionWorld(index, *position)
    if not interaction.GetPlaceModePersistence():
        interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    return index


# ------------------------------------------------------------------------------------------------
# ScriptedLoadableModule (Base/Python/slicer/ScriptedLoadableModule.py)
# ------------------------------------------------------------------------------------------------
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__
        iconPath = os.path.join(os.path.dirname(parent.path), "Resources/Icons", self.moduleName + ".png")
        if os.path.isfile(iconPath):  # the icon is found only beside the module's .py
            parent.icon = sys.modules["qt"].QIcon(iconPath)

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__[:-len("Widget")]
        self.layout = types.SimpleNamespace(widgets=[], addWidget=lambda w: self.layout.widgets.append(w),
                                            addStretch=lambda *a: None)

    def setup(self):
        pass

    def cleanup(self):
        pass

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def onReload(self):
        slicer.util.reloadScriptedModule(self.moduleName)  # re-executes the module's file only


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[:-len("Logic")]

    def getParameterNode(self):
        """The scene's singleton scripted module node tagged with the module name (created if missing)."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass


# ------------------------------------------------------------------------------------------------
# The stand-in Slicer: modules, app, scene
# ------------------------------------------------------------------------------------------------
class StandIn:
    """Slicer ``tag``'s GUI layer over a headless slicer-core scene; :meth:`load_module` imports OsteoROI.py."""

    def __init__(self, monkeypatch, headless, tag: str = SLICER_TAGS[0], module_path: Optional[str] = None):
        self.tag, self.headless, self.monkeypatch = tag, headless, monkeypatch
        self.errors: List[str] = []
        self.timers: List[Callable] = []
        self.file_dialog_answers: List[str] = []
        self.confirm_answers: List[bool] = []  # answers to confirmYesNoDisplay, in order (none left: No)
        self.questions: List[str] = []
        self.pip_installs: List[str] = []
        self.reloaded: List[Tuple[str, List[str]]] = []
        self.icons: List[str] = []
        self.wrappers: List[Any] = []
        here = os.path.dirname(os.path.abspath(__file__))
        self.module_path = module_path or os.path.join(os.path.dirname(here), "OsteoROI", "OsteoROI.py")
        self._install()

    # --- modules -----------------------------------------------------------------------------------
    def _install(self) -> None:
        mp = self.monkeypatch
        mp.setitem(sys.modules, "qt", self._qt())
        mp.setitem(sys.modules, "slicer.i18n", self._i18n())
        pnw = types.ModuleType("slicer.parameterNodeWrapper")
        pnw.parameterNodeWrapper = make_parameter_node_wrapper(self.tag, self.wrappers)
        pnw.WithinRange, pnw.Choice = WithinRange, Choice
        mp.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)
        mp.setitem(sys.modules, "slicer.ScriptedLoadableModule", self._scripted_loadable_module())
        mp.setattr(slicer, "mrmlScene", self.headless.scene, raising=False)
        markups, plots = self.headless.markups_logic, self.headless.plots_logic
        mp.setattr(slicer, "modules", types.SimpleNamespace(
            markups=types.SimpleNamespace(logic=lambda: markups),
            plots=types.SimpleNamespace(logic=lambda: plots)), raising=False)
        app_logic = self.headless.app_logic
        mp.setattr(slicer, "app", types.SimpleNamespace(applicationLogic=lambda: app_logic), raising=False)
        util = slicer.util
        mp.setattr(util, "loadUI", load_ui)
        mp.setattr(util, "childWidgetVariables", child_widget_variables)
        mp.setattr(util, "tryWithErrorDisplay", self._try_with_error_display)
        mp.setattr(util, "confirmYesNoDisplay", self._confirm_yes_no, raising=False)
        mp.setattr(util, "pip_install", self.pip_installs.append, raising=False)
        mp.setattr(util, "modulePath", lambda name: self.module_path)
        mp.setattr(util, "reloadScriptedModule",
                   lambda name: self.reloaded.append((name, sorted(n for n in sys.modules if n.startswith("OsteoROILib")))))
        from OsteoROILib.mrml.scene import add_volume_from_array, save_scene

        mp.setattr(util, "addVolumeFromArray",
                   lambda array, ijkToRAS=None, name="Volume", nodeClassName=None:
                   add_volume_from_array(self.headless.scene, array, ijkToRAS, name))
        mp.setattr(util, "saveScene", lambda path: save_scene(self.headless.scene, path) or True)
        mp.setattr(util, "loadScene", lambda path: self.headless.scene.ReadFromMRB(os.path.abspath(path)))

    def _qt(self):
        qt = types.ModuleType("qt")
        standin = self

        class QTimer:
            @staticmethod
            def singleShot(msec, callback):
                standin.timers.append(callback)

        class QFileDialog:
            @staticmethod
            def getOpenFileName(*args):
                return standin.file_dialog_answers.pop(0) if standin.file_dialog_answers else ""

            getSaveFileName = getOpenFileName

        class QIcon:
            def __init__(self, path=""):
                standin.icons.append(path)
                self.path = path

        qt.QTimer, qt.QFileDialog, qt.QIcon = QTimer, QFileDialog, QIcon
        return qt

    def _confirm_yes_no(self, text, windowTitle=None, parent=None, **kwargs) -> bool:
        self.questions.append(text)
        return self.confirm_answers.pop(0) if self.confirm_answers else False

    @staticmethod
    def _i18n():
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: text
        i18n.translate = lambda context, text: text
        return i18n

    @contextlib.contextmanager
    def _try_with_error_display(self, message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:  # Slicer shows a dialog and swallows the exception; record it
            self.errors.append(f"{message}: {exc}")

    @staticmethod
    def _scripted_loadable_module():
        slm = types.ModuleType("slicer.ScriptedLoadableModule")
        slm.ScriptedLoadableModule = ScriptedLoadableModule
        slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
        slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
        slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
        return slm

    # --- the module ----------------------------------------------------------------------------------
    def load_module(self):
        """Import OsteoROI.py as Slicer does (module name = file name) under this stand-in."""
        spec = importlib.util.spec_from_file_location("OsteoROI", self.module_path)
        module = importlib.util.module_from_spec(spec)
        self.monkeypatch.setitem(sys.modules, "OsteoROI", module)
        spec.loader.exec_module(module)
        return module

    def make_widget(self, module):
        """Module + widget with a parent as qSlicerScriptedLoadableModule(Widget) gives them; setup() called."""
        parent = types.SimpleNamespace(path=self.module_path, isEntered=False, icon=None)
        module.OsteoROI(parent)
        self.module_parent = parent
        widget = module.OsteoROIWidget(types.SimpleNamespace(isEntered=False))
        widget.setup()
        if hasattr(self.headless, "widgets"):
            self.headless.widgets.append(widget)  # cleaned up by headless_scene
        return widget

    def enter(self, widget) -> None:
        widget.parent.isEntered = True
        widget.enter()

    def exit(self, widget) -> None:
        widget.exit()
        widget.parent.isEntered = False

    def close_scene(self) -> None:
        """File > Close scene: Clear fires StartCloseEvent and EndCloseEvent."""
        self.headless.scene.Clear(False)

    def run_timers(self) -> None:
        while self.timers:
            self.timers.pop(0)()


# ------------------------------------------------------------------------------------------------
# Slicer's DICOM database (ctkDICOMDatabase, the calls the module makes)
# ------------------------------------------------------------------------------------------------
class DicomDatabase:
    """``slicer.dicomDatabase`` holding the files given: ``fileForInstance(uid)`` ("" for a UID it
    does not hold) and ``fileValue(path, "gggg,eeee")`` read from the file ("" when absent)."""

    def __init__(self, files):
        import pydicom

        self.files = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.files[str(ds.SOPInstanceUID)] = path

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")

    def fileValue(self, path: str, tag: str) -> str:
        import pydicom

        group, element = (int(part, 16) for part in tag.split(","))
        elem = pydicom.dcmread(path, stop_before_pixels=True).get((group, element))
        if elem is None or elem.value is None:
            return ""
        value = elem.value
        return "\\".join(str(v) for v in value) if isinstance(value, (list, pydicom.multival.MultiValue)) else str(value)


def add_dicom_volume(scene, folder: str, name: str = "CT from DICOM"):
    """The CT series in ``folder`` as Slicer's DICOM plugin loads it: the volume node (read by the
    core's DICOM reader) with ``DICOM.instanceUIDs`` listing its slices, and a database holding them."""
    import pydicom

    from OsteoROILib.io.image_files import read_volume
    from OsteoROILib.mrml.patient import DICOM_UIDS_ATTRIBUTE
    from OsteoROILib.mrml.scene import add_volume_from_array

    volume = read_volume(folder)
    node = add_volume_from_array(scene, volume.array, volume.ijk_to_ras, name)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    node.SetAttribute(DICOM_UIDS_ATTRIBUTE, " ".join(uids))
    return node, DicomDatabase(files)


# ------------------------------------------------------------------------------------------------
# A case: the digital phantom in the scene
# ------------------------------------------------------------------------------------------------
def add_phantom_case(scene, phantom, name: str = "CT"):
    """The phantom's CT as a volume node and its level centres as a point list labelled L1..L4."""
    from OsteoROILib.mrml.scene import add_volume_from_array

    volume, truth = phantom
    volumeNode = add_volume_from_array(scene, volume.array, volume.ijk_to_ras, name)
    pointsNode = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
    for level in truth.levels:
        pointsNode.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
    return volumeNode, pointsNode


def phantom_case():
    """The digital phantom of the module's self-test (10 HU noise, seed 1): ``(volume, truth)``."""
    from OsteoROILib.digital_phantom import make_phantom

    return make_phantom(noise_sigma=10.0, seed=1)


def headless_scene():
    """A headless scene for one test (a generator for ``pytest.fixture``)."""
    from OsteoROILib.mrml.scene import new_scene

    headless = new_scene()
    headless.widgets = []
    yield headless
    for widget in headless.widgets:  # as Slicer does when the module is unloaded
        widget.cleanup()
    headless.close()
