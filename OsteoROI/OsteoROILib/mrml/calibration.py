"""Calibration HU -> vBMD in the scene: rods and reference tissues as markups, the fit summary in the state.

Part of OsteoROI's MRML logic (see ``mrmllogic``); every number comes from the Qt-free core:
``rods.measure_rods`` / ``rods.auto_rods`` + ``calibration.fit_phantom`` for a phantom,
``internalcal.measure_tissues`` + ``internalcal.fit_internal`` for an internal (phantomless)
calibration (Michalski et al. 2020), ``calibration.manual_calibration`` and
``calibration.load_calibration`` (QCT_BRIEF §4).

Sources ("modes") of the calibration, stored in the parameter node's state
(``calibration_source["mode"]``):

* ``none`` — HU only;
* ``phantom`` — a point list whose control points are labelled by rod name (e.g. R0 … R800 for
  qrm-bdc-6, A … E for the Mindways phantom; a rod's density as listed also works). Each point
  lies inside its rod; the rod ROI is refined around it (``rods.measure_rod``). "Auto-detect"
  (``autoDetectRods``) finds the rods (``rods.auto_rods``) and writes them into the module's own
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
from typing import Any, Dict, List, Mapping, Optional, Sequence


from ..errors import InputError, OsteoROIError
from ..io.markups_file import points_by_label
from .scene import placed_points
from ..io.outputs import json_safe

__all__ = [
    "CALIBRATION_MODES",
    "KEEP_CALIBRATION",
    "TISSUE_LABELS",
    "CalibrationMixin",
    "calibration_fit_summary",
    "format_calibration_summary",
    "labelled_points_from_node",
]

CALIBRATION_MODES = ("none", "saved", "manual", "phantom", "internal")
LIVE_MODES = ("phantom", "internal")
#: Reference tissues of an internal calibration, as labels of the tissue point list (internalcal).
TISSUE_LABELS = ("air", "adipose", "muscle", "blood", "cortical_bone")
#: Default tissue ROI radius (mm): a small uniform disc, as ``osteoroi calibrate --internal``.
TISSUE_RADIUS_MM = 4.0

ROLE_ROD_POINTS = "OsteoROI.rodPoints"  # the rod list in use (the user's or the module's)
ROLE_TISSUE_POINTS = "OsteoROI.tissuePoints"  # the tissue list in use
ROLE_OWN_RODS = "OsteoROI.ownRods"  # the module's own rod list ("Auto-detect", "Place rods")
ROLE_OWN_TISSUES = "OsteoROI.ownTissues"  # the module's own tissue list
ROLE_CAL_VOLUME = "OsteoROI.calibrationVolume"  # the CT the rods/tissues are measured in

ROD_COLOR = (0.2, 0.9, 0.9)
TISSUE_COLOR = (0.95, 0.6, 0.2)


class _Keep:
    """``run(..., calibration=KEEP_CALIBRATION)``: keep the scene's current calibration."""

    def __repr__(self) -> str:
        return "KEEP_CALIBRATION"


KEEP_CALIBRATION = _Keep()


#: Per-point keys the fit summary keeps (rods: density and HU residual; tissues: mu/rho residual).
_POINT_KEYS = ("name", "density", "water_density", "mean_hu", "sd_hu", "n_voxels", "predicted_hu", "residual_hu",
               "loo_residual_hu", "flagged", "mu_rho_cm2_g", "residual_mu_rho", "center_ras", "warnings")


def calibration_fit_summary(cal, extra_warnings: Sequence[str] = ()) -> Dict[str, Any]:
    """The fit summary of a ``calibration.Calibration``: what the widget shows and the state stores."""
    internal = cal.internal or {}
    warnings = list(cal.warnings)
    warnings += [w for w in extra_warnings if w not in warnings]
    return json_safe({
        "kind": cal.kind,
        "method": cal.method,
        **cal.fit_fields(),
        "see_hu": cal.see,
        "n_points": cal.n_points,
        "effective_energy_kev": internal.get("effective_energy_kev"),
        "phantom": (cal.phantom or {}).get("id"),
        "points": [{k: p[k] for k in _POINT_KEYS if k in p} for p in cal.points],
        "uncertainty": cal.uncertainty_note(),
        "warnings": warnings,
    })


def _fmt(value, spec: str, none: str = "—") -> str:
    return none if value is None else format(float(value), spec)


def format_calibration_summary(source: Optional[Mapping[str, Any]], fit: Optional[Mapping[str, Any]],
                               error: Optional[str] = None) -> str:
    """Plain-text fit summary (one fact per line) for the widget's calibration panel and logs."""
    mode = (source or {}).get("mode") or "none"
    if error:
        return f"Calibration ({mode}) is not valid: {error}\nNo vBMD is shown until it is fixed."
    if fit is None:
        if mode == "none":
            return "No calibration: the table shows HU only."
        return f"Calibration ({mode}): not fitted yet."
    lines = [f"Calibration: {mode}" + (f", phantom {fit['phantom']}" if fit.get("phantom") else "")
             + f" ({fit['method']}), vBMD in {fit['vbmd_unit']}", fit["equation"]]
    if fit.get("slope_hu_per_mg_cm3") is not None:
        lines.append(f"slope {_fmt(fit['slope_hu_per_mg_cm3'], '.5g')} HU per mg/cm3, "
                     f"intercept {_fmt(fit['intercept_hu'], '.4g')} HU")
    if fit.get("r2") is not None:
        lines.append(f"R\u00b2 = {_fmt(fit['r2'], '.5f')}, SEE = {_fmt(fit.get('see_hu'), '.3g')} HU, "
                     f"n = {fit['n_points']}")
    if fit.get("effective_energy_kev") is not None:
        lines.append(f"effective energy {_fmt(fit['effective_energy_kev'], 'g')} keV")
    for p in fit.get("points", []):
        if "residual_hu" in p:
            lines.append(f"  {p['name']}: {_fmt(p.get('density'), 'g')} mg/cm3, {_fmt(p['mean_hu'], '.1f')} HU "
                         f"(SD {_fmt(p.get('sd_hu'), '.1f')}), residual {_fmt(p['residual_hu'], '+.2f')} HU"
                         + ("  FLAGGED" if p.get("flagged") else ""))
        else:
            lines.append(f"  {p['name']}: {_fmt(p['mean_hu'], '.1f')} HU (SD {_fmt(p.get('sd_hu'), '.1f')})")
    if fit.get("uncertainty"):
        lines.append(f"Note: {fit['uncertainty']}")
    lines += [f"\u26a0 {w}" for w in fit.get("warnings", [])]
    return "\n".join(lines)


def labelled_points_from_node(pointsNode, what: str) -> Dict[str, List[float]]:
    """``{label: [R, A, S]}`` (world) of the placed control points; unplaced ones are skipped."""
    if pointsNode is None:
        raise InputError(f"No {what} point list is selected.",
                         f"Place one point per {what} (or auto-detect the rods) and label each point.")
    points = placed_points(pointsNode)
    if not points:
        raise InputError(f"The {what} point list {pointsNode.GetName()!r} has no placed points.",
                         f"Place one point inside each {what} and label it.")
    return {k: [float(x) for x in v] for k, v in
            points_by_label(points, source=f"{what} point list {pointsNode.GetName()!r}").items()}


def _phantom_definition(phantom):
    from ..calibration.phantom_library import PhantomDefinition, get_phantom

    if isinstance(phantom, PhantomDefinition):
        return phantom
    if not phantom:
        raise InputError("No calibration phantom is chosen.", "Choose the phantom in the scan (e.g. qrm-bdc-6).")
    return get_phantom(str(phantom))


class CalibrationMixin:
    """Calibration methods of ``mrmllogic.OsteoROIMRMLLogic`` (see the module docstring)."""

    # --- state ------------------------------------------------------------------------------------
    def calibration(self):
        """The current ``calibration.Calibration`` (None without one)."""
        return self._calibrationFromState(self.state())

    def calibrationSummary(self) -> Dict[str, Any]:
        """``{"mode", "source", "fit", "error", "text"}``: the stored fit summary and its text."""
        state = self.state()
        source = state.get("calibration_source") or {"mode": "none"}
        fit = state.get("calibration_fit")
        error = state.get("calibration_error")
        return {"mode": source.get("mode", "none"), "source": source, "fit": fit, "error": error,
                "text": format_calibration_summary(source, fit, error)}

    def _calibrationFromState(self, state):
        data = state.get("calibration")
        if not data:
            return None
        source = state.get("calibration_source") or {}
        key = json.dumps([data, source], sort_keys=True)
        cache = getattr(self, "_calibrationCache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        from ..calibration.model import Calibration

        cal = Calibration.from_dict(data)
        # from_dict marks every calibration "saved"; say where this one really comes from.
        cal.origin = "saved" if source.get("mode") == "saved" else "this-scan"
        cal.origin_path = source.get("file") if source.get("mode") == "saved" else None
        self._calibrationCache = (key, cal)
        return cal

    @staticmethod
    def _storeCalibration(state: Dict[str, Any], cal, source: Mapping[str, Any],
                          extraWarnings: Sequence[str] = ()) -> None:
        state["calibration"] = None if cal is None else cal.to_dict()
        state["calibration_source"] = json_safe(dict(source))
        state["calibration_fit"] = None if cal is None else calibration_fit_summary(cal, extraWarnings)
        state["calibration_error"] = None

    def _applyCalibration(self, cal, source: Mapping[str, Any], extraWarnings: Sequence[str] = ()) -> None:
        state = self.state()
        self._storeCalibration(state, cal, source, extraWarnings)
        self._setState(state)
        self._reobserve()
        self._reannotate(state)

    @staticmethod
    def _sourceOf(cal, path: Optional[str] = None) -> Dict[str, Any]:
        """The source of a calibration given directly (not live: no point list behind it)."""
        if cal is None:
            return {"mode": "none"}
        if path or cal.origin == "saved":
            return {"mode": "saved", "file": path or cal.origin_path}
        return {"mode": cal.kind, "live": False}

    # --- the sources --------------------------------------------------------------------------------
    def setCalibration(self, calibration) -> None:
        """Use a ``Calibration``, its dict or a saved calibration file (path); None for HU only."""
        cal = self.loadCalibration(calibration)
        extra: List[str] = []
        if cal is not None and isinstance(calibration, str):
            extra = self._scannerWarnings(cal)
        self._applyCalibration(cal, self._sourceOf(cal, calibration if isinstance(calibration, str) else None),
                               extra)

    def setManualCalibration(self, slope: float, intercept: float, unit: str = "K2HPO4", note: str = ""):
        """HU = intercept + slope × density, typed by the user (``calibration.manual_calibration``)."""
        from ..calibration.model import manual_calibration

        cal = manual_calibration(slope, intercept, unit, note=note or "entered in the OsteoROI module")
        self._applyCalibration(cal, {"mode": "manual"})
        return cal

    def calibrateFromRods(self, rodPointsNode, phantom, volumeNode=None, slabMm: Optional[float] = None):
        """Fit a phantom calibration from a point list labelled by rod name; re-fits when a point moves.

        ``phantom`` — a phantom id of the library (``osteoroi phantoms``) or a PhantomDefinition;
        ``volumeNode`` — the CT with the phantom (default: the measured CT); ``slabMm`` — rod ROI
        thickness (default ``rods.ROD_SLAB_MM``). Returns the Calibration.
        """
        definition = _phantom_definition(phantom)
        volumeNode = self._calibrationVolumeNode(volumeNode)
        source = {"mode": "phantom", "phantom": definition.id, "slab_mm": slabMm, "live": True}
        cal = self._fitRods(rodPointsNode, definition, volumeNode, slabMm)  # refuses before any change
        self._setRef(ROLE_CAL_VOLUME, volumeNode)
        self._setRef(ROLE_ROD_POINTS, rodPointsNode)
        self._applyCalibration(cal, source)
        return cal

    def autoDetectRods(self, phantom, volumeNode=None, region=None, slabMm: Optional[float] = None):
        """Find the phantom's rods (``rods.auto_rods``), put them in the module's point list
        "OsteoROI rods" (one point per rod, labelled by name, editable) and fit from it.

        ``region`` — RAS box (R0, R1, A0, A1[, S0, S1]) to search, default the row of rods below
        the patient. Returns the rod point list. Never touches a user's point list.
        """
        from ..calibration.rods import auto_rods

        definition = _phantom_definition(phantom)
        volumeNode = self._calibrationVolumeNode(volumeNode)
        found = auto_rods(self._volumeOf(volumeNode), definition, region=region, slab_mm=slabMm)
        node = self._ownPointList(ROLE_OWN_RODS, "OsteoROI rods", ROD_COLOR)
        self._muted += 1
        try:
            node.RemoveAllControlPoints()  # the module's own list, refilled
            for rod in found.rods:
                node.AddControlPoint(*[float(x) for x in rod.center_ras], rod.name)
        finally:
            self._muted -= 1
        cal = self._fitRods(node, definition, volumeNode, slabMm)
        self._setRef(ROLE_CAL_VOLUME, volumeNode)
        self._setRef(ROLE_ROD_POINTS, node)
        self._applyCalibration(cal, {"mode": "phantom", "phantom": definition.id, "slab_mm": slabMm, "live": True,
                                     "auto": True, "report": list(found.report)})
        return node

    def calibrateFromTissues(self, tissuePointsNode, volumeNode=None, radiusMm: float = TISSUE_RADIUS_MM,
                             slabMm: Optional[float] = None):
        """Internal calibration (Michalski 2020) from a point list labelled air, adipose, muscle,
        blood, cortical_bone (at least 3); re-fits when a point moves. Returns the Calibration."""
        volumeNode = self._calibrationVolumeNode(volumeNode)
        cal = self._fitTissues(tissuePointsNode, volumeNode, radiusMm, slabMm)
        self._setRef(ROLE_CAL_VOLUME, volumeNode)
        self._setRef(ROLE_TISSUE_POINTS, tissuePointsNode)
        self._applyCalibration(cal, {"mode": "internal", "radius_mm": float(radiusMm), "slab_mm": slabMm,
                                     "live": True})
        return cal

    def saveCalibration(self, path: str, overwrite: bool = False) -> str:
        """Write the current calibration as JSON (atomic; refuses to replace a file unless asked)."""
        from ..calibration.model import save_calibration

        cal = self.calibration()
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
        self._muted += 1
        try:
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
        finally:
            self._muted -= 1

    def _ownPointList(self, role: str, name: str, color):
        node = self._ownNode(role, "vtkMRMLMarkupsFiducialNode", name)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
            if display is not None:
                display.SetSelectedColor(*color)
                display.SetColor(*color)
        return node

    # --- fitting ---------------------------------------------------------------------------------------
    def _calibrationVolumeNode(self, volumeNode=None):
        node = volumeNode or self._ref(ROLE_CAL_VOLUME) or self.volumeNode()
        if node is None:
            raise InputError("No CT volume is selected for the calibration.",
                             "Select the CT that shows the phantom's rods (or the reference tissues).")
        return node

    def _fitRods(self, pointsNode, definition, volumeNode, slabMm):
        from ..calibration.model import fit_phantom, scanner_facts
        from ..calibration.rods import measure_rods

        volume = self._volumeOf(volumeNode)
        points = labelled_points_from_node(pointsNode, "rod")
        rods = measure_rods(volume, points, definition, slab_mm=slabMm)
        return fit_phantom([m.to_dict() for m in rods], definition, scanner=scanner_facts(volume),
                           source_volume=volume.source, command="3D Slicer OsteoROI module")

    def _fitTissues(self, pointsNode, volumeNode, radiusMm, slabMm):
        from ..calibration.model import scanner_facts
        from ..calibration.internal import fit_internal, measure_tissues

        volume = self._volumeOf(volumeNode)
        points = labelled_points_from_node(pointsNode, "reference tissue")
        measured = measure_tissues(volume, points, radius_mm=float(radiusMm), slab_mm=slabMm)
        extra = {k: {kk: vv for kk, vv in v.items() if kk not in ("mean_hu", "sd_hu")} for k, v in measured.items()}
        return fit_internal({k: v["mean_hu"] for k, v in measured.items()},
                            tissue_sd={k: v["sd_hu"] for k, v in measured.items()}, scanner=scanner_facts(volume),
                            source_volume=volume.source, command="3D Slicer OsteoROI module", points_extra=extra)

    def _scannerWarnings(self, cal) -> List[str]:
        """A saved calibration applied to this CT: where the scanners differ or cannot be compared."""
        from ..calibration.model import compare_scanner, scanner_facts

        node = self.volumeNode()
        if node is None:
            return []
        try:
            return compare_scanner(cal, scanner_facts(self._volumeOf(node)))
        except OsteoROIError:
            return []

    def _refitCalibration(self) -> None:
        """Re-fit a live calibration from its point list (after an edit); a failure clears it."""
        state = self.state()
        source = state.get("calibration_source") or {}
        mode = source.get("mode")
        if mode not in LIVE_MODES or not source.get("live"):
            return
        try:
            volumeNode = self._calibrationVolumeNode()
            if mode == "phantom":
                cal = self._fitRods(self._ref(ROLE_ROD_POINTS), _phantom_definition(source.get("phantom")),
                                    volumeNode, source.get("slab_mm"))
            else:
                cal = self._fitTissues(self._ref(ROLE_TISSUE_POINTS), volumeNode,
                                       source.get("radius_mm") or TISSUE_RADIUS_MM, source.get("slab_mm"))
        except OsteoROIError as exc:
            state["calibration"] = None
            state["calibration_fit"] = None
            state["calibration_error"] = str(exc)
            self.lastError = str(exc)
            self._setState(state)
            return
        source = dict(source)
        source.pop("report", None)  # the auto-detection report describes the points before the edit
        self._storeCalibration(state, cal, source)
        self._setState(state)

    # --- observers -----------------------------------------------------------------------------------
    def _observeCalibration(self) -> None:
        import slicer

        source = self.state().get("calibration_source") or {}
        mode = source.get("mode")
        if mode not in LIVE_MODES or not source.get("live"):
            return
        node = self._ref(ROLE_ROD_POINTS if mode == "phantom" else ROLE_TISSUE_POINTS)
        if node is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                          slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
                          slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                          slicer.vtkMRMLMarkupsNode.PointPositionUndefinedEvent,
                          slicer.vtkMRMLTransformableNode.TransformModifiedEvent):
                self._observe(node, event, lambda caller, event: self._onCalibrationInputModified())
        volumeNode = self._ref(ROLE_CAL_VOLUME)
        if volumeNode is not None and volumeNode is not self.volumeNode():
            for event in (slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent,
                          slicer.vtkMRMLTransformableNode.TransformModifiedEvent):
                self._observe(volumeNode, event, lambda caller, event: self._onCalibrationInputModified())

    def _onCalibrationInputModified(self) -> None:
        if self._muted:
            return
        self._calibrationDirty = True
        self._schedule()
