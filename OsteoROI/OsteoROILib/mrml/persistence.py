"""The module's state in the scene: the parameter node, its JSON state and its references to nodes.

All state is in the module's parameter node (``vtkMRMLScriptedModuleNode`` singleton tagged
"OsteoROI", the node ``ScriptedLoadableModuleLogic.getParameterNode()`` uses): node references to
the inputs and to the module's own nodes (ROIs, outlines, table, plot), and the JSON parameter
``OsteoROI.state`` (settings, per-level placement, exclusions, Genant grades, criterion,
calibration and the last measured rows at full precision). A scene saved as .mrml or .mrb and
loaded into a fresh scene gives the same points, ROIs and results: ``OsteoROIMRMLLogic.attach``
re-connects the observers and rewrites the table from the stored rows (the table file itself
keeps only six significant digits).

Node ownership: the module creates and later reuses its own nodes (marked with the attribute
``OsteoROI.Role``); it never renames or removes a node it did not create.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import slicer

from ..diagnosis.criteria import load_criterion
from ..errors import InputError
from ..roi.levels import LEVEL_NAMES
from ..roi.family import SHAPE_NAMES
from .nodes import MODULE_NAME, ROLE_ATTRIBUTE

__all__ = ["STATE_PARAMETER", "STATE_VERSION", "LIVE_MODES", "SceneState", "criterion_from", "get_parameter_node",
           "ordered_levels", "run_state", "slab_from"]

STATE_PARAMETER = "OsteoROI.state"
STATE_VERSION = 1
#: Calibration sources that re-fit when their points move (``calibration_source["mode"]``).
LIVE_MODES = ("phantom", "internal")


def get_parameter_node(scene, create: bool = True):
    """The module's parameter node: the ``vtkMRMLScriptedModuleNode`` singleton tagged "OsteoROI"."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None and create:
        node = slicer.vtkMRMLScriptedModuleNode()
        # As ScriptedLoadableModuleLogic.createParameterNode does, so that both find the same node.
        node.SetName(scene.GenerateUniqueName(MODULE_NAME))
        node.SetSingletonTag(MODULE_NAME)
        node.SetAttribute("ModuleName", MODULE_NAME)
        node = scene.AddNode(node)
    return node


def ordered_levels(state: Mapping[str, Any]) -> List[str]:
    """The state's levels from cranial to caudal (T11 ... L5)."""
    return sorted(state["levels"], key=LEVEL_NAMES.index)


def criterion_from(criteria) -> Optional[Dict[str, Any]]:
    """A validated criterion dict (``diagnosis.criteria.load_criterion``) or None."""
    if criteria is None or criteria == "":
        return None
    return load_criterion(criteria)


def slab_from(slabMm: Optional[float]) -> Optional[float]:
    """The ROI slab thickness in mm; None (one slice) for None or 0."""
    return None if slabMm is None or float(slabMm) == 0.0 else float(slabMm)


def run_state(shapes: Sequence[str], slab_mm: Optional[float], crit: Optional[Mapping[str, Any]], force: bool, *,
              excluded: Mapping[str, Any], genant: Mapping[str, Any], notes: Sequence[str]) -> Dict[str, Any]:
    """The state a (re-)run starts from: its settings and criterion, no levels and no rows yet."""
    return {
        "version": STATE_VERSION,
        "shapes": list(shapes),
        "slab_mm": slab_mm,
        "levels": {},
        "excluded": dict(excluded),
        "genant": dict(genant),
        "criteria": None if crit is None else crit["id"],
        "criterion": None if crit is None else {k: v for k, v in crit.items() if k != "_validated"},
        "rows": [],
        "force": bool(force),
        "notes": list(notes),
    }


class SceneState:
    """The parameter node of one scene: the JSON state, node references and the module's own nodes."""

    def __init__(self, scene):
        self.scene = scene

    @property
    def parameterNode(self):
        return get_parameter_node(self.scene)

    def state(self) -> Dict[str, Any]:
        """The module's state (a fresh default when the scene has no parameter node yet: reading
        the state never adds a node)."""
        node = get_parameter_node(self.scene, create=False)
        text = node.GetParameter(STATE_PARAMETER) if node is not None else ""
        if not text:
            return {"version": STATE_VERSION, "shapes": list(SHAPE_NAMES), "slab_mm": None, "levels": {},
                    "excluded": {}, "genant": {}, "criteria": None, "calibration": None, "rows": [],
                    "force": False, "calibration_source": {"mode": "none"}, "calibration_fit": None,
                    "calibration_error": None}
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise InputError(f"The scene's OsteoROI state has version {state.get('version')!r}, not {STATE_VERSION}.",
                             "Update OsteoROI to open this scene.")
        return state

    def setState(self, state: Mapping[str, Any]) -> None:
        # repr-exact floats: json writes the shortest repr that round-trips.
        self.parameterNode.SetParameter(STATE_PARAMETER, json.dumps(state, allow_nan=False, sort_keys=True))

    def ref(self, role: str):
        return self.parameterNode.GetNodeReference(role)

    def setRef(self, role: str, node) -> None:
        self.parameterNode.SetNodeReferenceID(role, node.GetID() if node is not None else None)

    def ownNode(self, role: str, className: str, name: str):
        """The module's node for ``role``: the referenced one if it is still ours, else a new one."""
        node = self.ref(role)
        if node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == role and node.IsA(className):
            return node
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        self.setRef(role, node)
        return node

    def removeOwnNode(self, role: str) -> None:
        """Forget the node of ``role``; remove it from the scene only if the module created it."""
        node = self.ref(role)
        self.setRef(role, None)
        if node is not None and node.GetAttribute(ROLE_ATTRIBUTE) == role:
            self.scene.RemoveNode(node)
