"""Calibration HU -> vBMD in the scene: rods and reference tissues as markups, the fit summary in the state.

Part of OsteoROI's MRML logic (``mrml.logic`` composes it); every number comes from the Qt-free core:
``calibration.rods.measure_rods`` / ``auto_rods`` + ``calibration.model.fit_phantom`` for a phantom,
``calibration.internal.measure_tissues`` + ``fit_internal`` for an internal (phantomless)
calibration (Michalski et al. 2020), ``calibration.model.manual_calibration`` and
``load_calibration`` (QCT_BRIEF §4).

Sources ("modes") of the calibration, stored in the parameter node's state
(``calibration_source["mode"]``):

* ``none`` — HU only;
* ``phantom`` — a point list whose control points are labelled by rod name (e.g. R0 … R800 for
  qrm-bdc-6, A … E for the Mindways phantom; a rod's density as listed also works). Each point
  lies inside its rod; the rod ROI is refined around it (``calibration.rods.measure_rod``). "Auto-detect"
  (``autoDetectRods``) finds the rods (``calibration.rods.auto_rods``) and writes them into the module's own
  point list "OsteoROI rods", which the user can then edit;
* ``internal`` — a point list labelled air / adipose / muscle / blood / cortical_bone (at least 3);
* ``manual`` — a slope and an intercept typed by the user;
* ``saved`` — a calibration file (``osteoroi calibrate … --out cal.json`` or ``saveCalibration``).

Phantom and internal calibrations are *live*: moving, adding or removing a rod/tissue point
re-fits (throttled through the logic's scheduler, like the ROIs) and the vBMD columns follow.
A re-fit that fails the QA rules (e.g. a rod point dragged out of its rod) clears the
calibration — no vBMD is shown from a line that no longer matches the points — and the error is
kept in the state (``calibration_error``) and shown in the summary.

The state keeps: ``calibration`` (``Calibration.to_dict()``, full precision), ``calibration_source``
(mode, phantom id, file, ROI sizes, auto-detection report) and ``calibration_fit`` — the fit
summary shown in the widget: slope, intercept, R², SEE, number of points, every rod's/tissue's
mean HU, residual and flag, and the warnings.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import slicer

from ..calibration.internal import fit_internal, measure_tissues
from ..calibration.model import Calibration, save_calibration
from ..calibration.phantom_fit import compare_scanner, fit_phantom, manual_calibration, scanner_facts
from ..calibration.phantom_library import PhantomDefinition, get_phantom
from ..calibration.rods import auto_rods, measure_rods
from ..errors import InputError, OsteoROIError
from .calibration_state import (
    CALIBRATION_MODES,
    KEEP_CALIBRATION,
    calibration_fit_summary,
    calibration_from,
    format_calibration_summary,
    source_of,
    store_calibration,
)
from .live_update import POINT_LIST_EVENTS, VOLUME_EVENTS, LiveUpdates, VolumeCache
from .nodes import (
    ROLE_CAL_VOLUME,
    ROLE_OWN_RODS,
    ROLE_OWN_TISSUES,
    ROLE_ROD_POINTS,
    ROLE_TISSUE_POINTS,
    ROLE_VOLUME,
    labelled_points_from_node,
)
from .persistence import LIVE_MODES, SceneState

__all__ = [
    "CALIBRATION_MODES",
    "KEEP_CALIBRATION",
    "TISSUE_LABELS",
    "SceneCalibration",
    "calibration_fit_summary",
    "calibration_from",
    "format_calibration_summary",
    "labelled_points_from_node",
    "source_of",
    "store_calibration",
]

#: Reference tissues of an internal calibration, as labels of the tissue point list (``calibration.internal``).
TISSUE_LABELS = ("air", "adipose", "muscle", "blood", "cortical_bone")
#: Default tissue ROI radius (mm): a small uniform disc, as ``osteoroi calibrate --internal``.
TISSUE_RADIUS_MM = 4.0

ROD_COLOR = (0.2, 0.9, 0.9)
TISSUE_COLOR = (0.95, 0.6, 0.2)
#: Who fitted the calibration (its ``command`` field).
COMMAND = "3D Slicer OsteoROI module"
#: A calibration point list also re-fits when a point is unplaced.
CALIBRATION_POINT_EVENTS = POINT_LIST_EVENTS + (slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent,)


def _phantom_definition(phantom):
    if isinstance(phantom, PhantomDefinition):
        return phantom
    if not phantom:
        raise InputError("No calibration phantom is chosen.", "Choose the phantom in the scan (e.g. qrm-bdc-6).")
    return get_phantom(str(phantom))


class SceneCalibration:
    """The calibration of one scene: its sources (point lists, manual, file), the fit, and the state.

    Each ``fit``/``use`` method refuses bad input before it changes anything, then stores the
    calibration in the state and returns that state; the caller re-annotates the rows.
    """

    def __init__(self, store: SceneState, volumes: VolumeCache, live: LiveUpdates):
        self.store = store
        self.volumes = volumes
        self.live = live
        self._cache: Optional[Tuple[str, Any]] = None

    # --- state ------------------------------------------------------------------------------------
    def fromState(self, state: Mapping[str, Any]):
        """The state's ``Calibration`` (None without one), cached while the state's calibration is the same."""
        data = state.get("calibration")
        if not data:
            return None
        source = state.get("calibration_source") or {}
        key = json.dumps([data, source], sort_keys=True)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        cal = Calibration.from_dict(data)
        # from_dict marks every calibration "saved"; say where this one really comes from.
        cal.origin = "saved" if source.get("mode") == "saved" else "this-scan"
        cal.origin_path = source.get("file") if source.get("mode") == "saved" else None
        self._cache = (key, cal)
        return cal

    def summary(self) -> Dict[str, Any]:
        """``{"mode", "source", "fit", "error", "text"}``: the stored fit summary and its text."""
        state = self.store.state()
        source = state.get("calibration_source") or {"mode": "none"}
        fit = state.get("calibration_fit")
        error = state.get("calibration_error")
        return {"mode": source.get("mode", "none"), "source": source, "fit": fit, "error": error,
                "text": format_calibration_summary(source, fit, error)}

    def apply(self, cal, source: Mapping[str, Any], extraWarnings: Sequence[str] = ()) -> Dict[str, Any]:
        """Store a calibration and its source in the scene's state; returns that state."""
        state = self.store.state()
        store_calibration(state, cal, source, extraWarnings)
        self.store.setState(state)
        return state

    def carry(self, state: Dict[str, Any], previous: Mapping[str, Any], given, cal) -> None:
        """Put the calibration of a (re-)run in ``state``: the previous one kept, or the given one."""
        if given is KEEP_CALIBRATION:
            for key in ("calibration", "calibration_source", "calibration_fit", "calibration_error"):
                state[key] = previous.get(key)
            state.setdefault("calibration_source", {"mode": "none"})
            if state["calibration_source"] is None:
                state["calibration_source"] = {"mode": "none"}
        else:
            path = given if isinstance(given, str) else None
            store_calibration(state, cal, source_of(cal, path),
                              self.scannerWarnings(cal) if path and cal is not None else ())

    # --- the sources --------------------------------------------------------------------------------
    def use(self, calibration) -> Dict[str, Any]:
        """Use a ``Calibration``, its dict or a saved calibration file (path); None for HU only."""
        cal = calibration_from(calibration)
        extra: List[str] = []
        if cal is not None and isinstance(calibration, str):
            extra = self.scannerWarnings(cal)
        return self.apply(cal, source_of(cal, calibration if isinstance(calibration, str) else None), extra)

    def manual(self, slope: float, intercept: float, unit: str, note: str, acceptImplausible: bool = False):
        """HU = intercept + slope × density, typed by the user; returns (Calibration, state). A line no
        phantom can give is refused unless ``acceptImplausible`` (recorded; calibration.plausibility)."""
        cal = manual_calibration(slope, intercept, unit, note=note or "entered in the OsteoROI module",
                                 accept_implausible=acceptImplausible)
        return cal, self.apply(cal, {"mode": "manual"})

    def fitFromRods(self, rodPointsNode, phantom, volumeNode=None, slabMm: Optional[float] = None,
                    acceptImplausible: bool = False):
        """A phantom calibration from a point list labelled by rod name; returns (Calibration, state)."""
        definition = _phantom_definition(phantom)
        volumeNode = self._volumeNode(volumeNode)
        source = {"mode": "phantom", "phantom": definition.id, "slab_mm": slabMm, "live": True,
                  "accept_implausible": bool(acceptImplausible)}
        cal = self._fitRods(rodPointsNode, definition, volumeNode, slabMm, acceptImplausible)  # refuses first
        self.store.setRef(ROLE_CAL_VOLUME, volumeNode)
        self.store.setRef(ROLE_ROD_POINTS, rodPointsNode)
        return cal, self.apply(cal, source)

    def detectRods(self, phantom, volumeNode=None, region=None, slabMm: Optional[float] = None,
                   confirmFewRods: bool = False):
        """Find the phantom's rods (``auto_rods``) into the module's rod list and fit from it;
        returns (rod point list, state). A phantom of fewer than 3 rods needs ``confirmFewRods``."""
        definition = _phantom_definition(phantom)
        volumeNode = self._volumeNode(volumeNode)
        found = auto_rods(self.volumes.of(volumeNode), definition, region=region, slab_mm=slabMm,
                          confirm_few_rods=confirmFewRods)
        node = self._ownPointList(ROLE_OWN_RODS, "OsteoROI rods", ROD_COLOR)
        with self.live.mute():
            node.RemoveAllControlPoints()  # the module's own list, refilled
            for rod in found.rods:
                node.AddControlPoint(*[float(x) for x in rod.center_ras], rod.name)
        cal = self._fitRods(node, definition, volumeNode, slabMm)
        self.store.setRef(ROLE_CAL_VOLUME, volumeNode)
        self.store.setRef(ROLE_ROD_POINTS, node)
        return node, self.apply(cal, {"mode": "phantom", "phantom": definition.id, "slab_mm": slabMm, "live": True,
                                      "auto": True, "report": list(found.report)})

    def fitFromTissues(self, tissuePointsNode, volumeNode=None, radiusMm: float = TISSUE_RADIUS_MM,
                       slabMm: Optional[float] = None):
        """An internal calibration (Michalski 2020) from a labelled tissue list; returns (Calibration, state)."""
        volumeNode = self._volumeNode(volumeNode)
        cal = self._fitTissues(tissuePointsNode, volumeNode, radiusMm, slabMm)
        self.store.setRef(ROLE_CAL_VOLUME, volumeNode)
        self.store.setRef(ROLE_TISSUE_POINTS, tissuePointsNode)
        return cal, self.apply(cal, {"mode": "internal", "radius_mm": float(radiusMm), "slab_mm": slabMm,
                                     "live": True})

    def save(self, path: str, overwrite: bool = False) -> str:
        """Write the current calibration as JSON (atomic; refuses to replace a file unless asked)."""
        cal = self.fromState(self.store.state())
        if cal is None:
            raise InputError("There is no calibration to save.", "Fit or enter a calibration first.")
        return save_calibration(cal, path, overwrite=overwrite)

    # --- point lists ----------------------------------------------------------------------------------
    def prepareRodPoints(self, phantom, pointsNode=None):
        """A rod list with one control point per rod of ``phantom`` (labelled by name), the missing
        ones unplaced, so that clicks in place mode place them in order. Default: the module's list."""
        definition = _phantom_definition(phantom)
        node = pointsNode or self._ownPointList(ROLE_OWN_RODS, "OsteoROI rods", ROD_COLOR)
        self._addUnplaced(node, [r.name for r in definition.rods])
        return node

    def prepareTissuePoints(self, pointsNode=None, tissues: Sequence[str] = TISSUE_LABELS):
        """A tissue list with one (unplaced if missing) control point per reference tissue."""
        node = pointsNode or self._ownPointList(ROLE_OWN_TISSUES, "OsteoROI tissues", TISSUE_COLOR)
        self._addUnplaced(node, list(tissues))
        return node

    def _addUnplaced(self, node, labels: Sequence[str]) -> None:
        present = {node.GetNthControlPointLabel(i).strip().lower() for i in range(node.GetNumberOfControlPoints())}
        with self.live.mute():
            for label in labels:
                if label.lower() not in present:
                    index = node.AddControlPoint(0.0, 0.0, 0.0, label)
                    # Undefined, not Preview: a click goes to the list's Preview point first, so
                    # Preview points would be filled last-first (Slicer markups widget).
                    node.UnsetNthControlPointPosition(index)
            # Slicer fills the unplaced points from the placement start index on (Slicer 5.x
            # markups); the point under the mouse previews the next one with its label, so the user
            # sees which rod/tissue to click. Start with the first of the list.
            node.SetControlPointPlacementStartIndex(0)

    def _ownPointList(self, role: str, name: str, color):
        node = self.store.ownNode(role, "vtkMRMLMarkupsFiducialNode", name)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(*color)
                display.SetColor(*color)
        return node

    # --- fitting ---------------------------------------------------------------------------------------
    def _volumeNode(self, volumeNode=None):
        node = volumeNode or self.store.ref(ROLE_CAL_VOLUME) or self.store.ref(ROLE_VOLUME)
        if node is None:
            raise InputError("No CT volume is selected for the calibration.",
                             "Select the CT that shows the phantom's rods (or the reference tissues).")
        return node

    def _fitRods(self, pointsNode, definition, volumeNode, slabMm, acceptImplausible: bool = False):
        volume = self.volumes.of(volumeNode)
        points = labelled_points_from_node(pointsNode, "rod")
        rods = measure_rods(volume, points, definition, slab_mm=slabMm)
        return fit_phantom([m.to_dict() for m in rods], definition, scanner=scanner_facts(volume),
                           source_volume=volume.source, command=COMMAND, accept_implausible=acceptImplausible)

    def _fitTissues(self, pointsNode, volumeNode, radiusMm, slabMm):
        volume = self.volumes.of(volumeNode)
        points = labelled_points_from_node(pointsNode, "reference tissue")
        measured = measure_tissues(volume, points, radius_mm=float(radiusMm), slab_mm=slabMm)
        extra = {k: {kk: vv for kk, vv in v.items() if kk not in ("mean_hu", "sd_hu")} for k, v in measured.items()}
        return fit_internal({k: v["mean_hu"] for k, v in measured.items()},
                            tissue_sd={k: v["sd_hu"] for k, v in measured.items()}, scanner=scanner_facts(volume),
                            source_volume=volume.source, command=COMMAND, points_extra=extra)

    def scannerWarnings(self, cal) -> List[str]:
        """A saved calibration applied to this CT: where the scanners differ or cannot be compared."""
        node = self.store.ref(ROLE_VOLUME)
        if node is None:
            return []
        try:
            return compare_scanner(cal, scanner_facts(self.volumes.of(node)))
        except OsteoROIError:
            return []

    def refit(self) -> Optional[str]:
        """Re-fit a live calibration from its point list (after an edit); a failure clears it and is returned."""
        state = self.store.state()
        source = state.get("calibration_source") or {}
        mode = source.get("mode")
        if mode not in LIVE_MODES or not source.get("live"):
            return None
        try:
            volumeNode = self._volumeNode()
            if mode == "phantom":
                cal = self._fitRods(self.store.ref(ROLE_ROD_POINTS), _phantom_definition(source.get("phantom")),
                                    volumeNode, source.get("slab_mm"), bool(source.get("accept_implausible")))
            else:
                cal = self._fitTissues(self.store.ref(ROLE_TISSUE_POINTS), volumeNode,
                                       source.get("radius_mm") or TISSUE_RADIUS_MM, source.get("slab_mm"))
        except OsteoROIError as exc:
            state["calibration"] = None
            state["calibration_fit"] = None
            state["calibration_error"] = str(exc)
            self.store.setState(state)
            return str(exc)
        source = dict(source)
        source.pop("report", None)  # the auto-detection report describes the points before the edit
        store_calibration(state, cal, source)
        self.store.setState(state)
        return None

    # --- observers -----------------------------------------------------------------------------------
    def observe(self) -> None:
        """Observe a live calibration's point list, and its CT when that is not the measured one."""
        source = self.store.state().get("calibration_source") or {}
        mode = source.get("mode")
        if mode not in LIVE_MODES or not source.get("live"):
            return
        node = self.store.ref(ROLE_ROD_POINTS if mode == "phantom" else ROLE_TISSUE_POINTS)
        if node is not None:
            self.live.observe(node, CALIBRATION_POINT_EVENTS, self.live.markCalibration)
        volumeNode = self.store.ref(ROLE_CAL_VOLUME)
        if volumeNode is not None and volumeNode is not self.store.ref(ROLE_VOLUME):
            self.live.observe(volumeNode, VOLUME_EVENTS, self.live.markCalibration)
