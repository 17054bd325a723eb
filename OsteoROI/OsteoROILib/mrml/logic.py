"""OsteoROI's scene-level logic: MRML nodes in, editable ROI markups, a results table and a plot out.

Qt-free: it needs MRML (3D Slicer, or the ``slicer-core`` wheel, see ``mrml.scene``) but no GUI, so
the Slicer module's widget, the Python console and headless scripts share it. It takes its scene
from the nodes it is given (never from the ``slicer.mrmlScene`` global) and only converts between
MRML and ``OsteoROILib``'s plain data; every number comes from the Qt-free core
(``placement.measure.measure_levels`` for placement, ``roi.islands.measured_roi`` for the statistics).

Workflow
--------
``OsteoROIMRMLLogic(scene).run(volumeNode, pointsNode)``:

1. the CT volume node becomes a :class:`~OsteoROILib.io.volume.Volume` (voxels copied, IJK→RAS
   including the node's parent transforms, which must be linear; ``mrml.nodes``);
2. the point list's control points labelled L1…L4 (world coordinates) place the five seed-002
   ROIs of each level (``measure_levels``; QCT_BRIEF §1);
3. each ROI becomes a ``vtkMRMLMarkupsROINode`` the user can move, resize and rotate
   (``mrml.roi_markups``, where the choice of markups type is explained);
4. the table rows are measured **from the markups' geometry** (``mrml.rows``), so what is
   measured is exactly what is shown;
5. observers re-measure when an ROI is edited and re-place a level when its point moves
   (throttled through ``scheduler``; ``mrml.live_update``); the table (``mrml.results_table``) and
   the plot (``mrml.results_plot``: per-level bars and the criterion's thresholds) follow.

HU → vBMD calibration in the scene is ``mrml.calibration``; the state and its persistence in the
parameter node (.mrml/.mrb scenes) is ``mrml.persistence``. This class composes those parts: each
method reads the state, calls the parts and writes the state back; no part calls back into it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import InputError, OsteoROIError
from ..io.volume import Volume
from .calibration import TISSUE_LABELS, TISSUE_RADIUS_MM
from .calibration_state import KEEP_CALIBRATION, calibration_from
from .exports import SceneExports, diagnosis_exclusions
from .levels import SceneLevels, moved_levels
from .nodes import ROLE_PLOT_CHART, ROLE_POINTS, ROLE_TABLE, ROLE_VOLUME, level_points_from_node, outline_role, \
    roi_role, volume_from_node
from .parts import SceneParts
from .persistence import criterion_from
from .results_plot import criterion_thresholds
from .rows import SceneResults, summarise_rows

__all__ = ["OsteoROIMRMLLogic", "KEEP_CALIBRATION", "level_points_from_node", "volume_from_node"]

Scheduler = Callable[[Callable[[], None]], None]


class OsteoROIMRMLLogic:
    """Scene-level OsteoROI logic (see the module docstring).

    ``scene`` — the MRML scene (in Slicer ``slicer.mrmlScene``); ``scheduler(callback)`` — how live
    updates are deferred: None runs them at once; the Slicer widget passes a single-shot Qt timer
    so that a drag re-measures at most once per timer period (throttling).
    ``onUpdate(logic)`` is called after every live update (e.g. to refresh a status line).
    """

    def __init__(self, scene, scheduler: Optional[Scheduler] = None, onUpdate: Optional[Callable] = None):
        if scene is None:
            raise InputError("No MRML scene was given.", "Pass the scene (slicer.mrmlScene in Slicer).")
        self.scene = scene
        self.scheduler = scheduler
        self.onUpdate = onUpdate
        self.lastError: Optional[str] = None
        self.updateCount = 0  # number of (re)measurements done; for tests and diagnostics
        parts = SceneParts.of(scene, self._wake)
        self._store, self._rois, self._volumes, self._live, self._cal = (parts.store, parts.rois, parts.volumes,
                                                                         parts.live, parts.cal)
        self._levels = SceneLevels(parts)
        self.placement = parts.view  # the placement shown after each measurement: .nodes(level) (placement_view)
        self._results = SceneResults(parts)
        self._exports = SceneExports(self._store, self._volumes, self._cal)

    # --- state and nodes ---------------------------------------------------------------------------
    @property
    def parameterNode(self):
        return self._store.parameterNode

    def state(self) -> Dict[str, Any]:
        """The module's state (a fresh default when the scene has no parameter node yet: reading
        the state never adds a node)."""
        return self._store.state()

    roiRole = staticmethod(roi_role)
    outlineRole = staticmethod(outline_role)
    #: A ``calibration.Calibration`` from one, its dict, or a saved calibration file; None stays None.
    loadCalibration = staticmethod(calibration_from)
    #: A validated criterion dict (``diagnosis.criteria.load_criterion``) or None.
    loadCriterion = staticmethod(criterion_from)

    def volumeNode(self):
        return self._store.ref(ROLE_VOLUME)

    def pointsNode(self):
        return self._store.ref(ROLE_POINTS)

    def tableNode(self):
        return self._store.ref(ROLE_TABLE)

    def plotChartNode(self):
        return self._store.ref(ROLE_PLOT_CHART)

    def roiNode(self, level: str, shape: str):
        return self._rois.roiNode(level, shape)

    def roiNodes(self) -> Dict[Tuple[str, str], Any]:
        """``{(level, shape): ROI node}`` of the current levels and shapes."""
        return self._rois.roiNodes(self.state())

    def volume(self) -> Volume:
        """The input volume as a ``Volume`` (cached until the node, its image or its transform change)."""
        return self._volumes.measured(self._store)

    # --- measuring ----------------------------------------------------------------------------------
    def run(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
            criteria=None, slabMm: Optional[float] = None, force: bool = False, tableNode=None,
            placements: Optional[Dict[str, Any]] = None, extraWarnings: Optional[Sequence[str]] = None):
        """Place the ROIs of every labelled level, measure them and fill the table and the plot.

        ``shapes`` — ROI types (default all five); ``slabMm`` — ROI thickness, None or 0 = one slice;
        ``calibration`` — a ``Calibration`` (or its dict / file) to add vBMD, None for HU only; by
        default the scene's current calibration is kept (e.g. one fitted with
        :meth:`calibrateFromRods`, :meth:`autoDetectRods` or :meth:`calibrateFromTissues`); ``criteria`` — a
        criterion id or dict (``diagnosis.criteria.load_criterion``) whose thresholds the plot shows;
        ``tableNode`` — a table to fill instead of the module's own; ``placements`` —
        ``Placement`` per level (from a segmentation) used instead of placing from the points.
        Returns the table node. Re-running reuses the module's nodes; the inputs are only read.
        """
        return self._start(self._levels.newRun(volumeNode, pointsNode, calibration, shapes, criteria, slabMm,
                                               force, tableNode, placements, extraWarnings))

    def runFromSegmentation(self, volumeNode, segmentationNode, calibration=KEEP_CALIBRATION,
                            shapes: Optional[Sequence[str]] = None, criteria=None, slabMm: Optional[float] = None,
                            force: bool = False):
        """Place every level that has a segment (named e.g. "L1", "vertebrae_L1", "L2 vertebra") and measure.

        The mid-vertebral slice and outline come from ``placement.labels.place_from_labels``; the
        levels' points go into the module's own point list "OsteoROI levels" (moving one later
        re-places that level from the click). Returns the table node.
        """
        pointsNode, placements, notes = self._levels.fromSegmentation(volumeNode, segmentationNode)
        return self.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                        slabMm=slabMm, force=force, placements=placements, extraWarnings=notes)

    def watch(self, volumeNode, pointsNode, calibration=KEEP_CALIBRATION, shapes: Optional[Sequence[str]] = None,
              criteria=None, slabMm: Optional[float] = None, force: bool = False):
        """Measure as points are placed: like :meth:`run`, but the point list may still be empty.

        Every level placed later (e.g. with the module's "Place L1" button) is measured as soon as
        its point is defined. Returns the table node (rows for the points already placed).
        """
        if self._levels.hasPlacedPoint(volumeNode, pointsNode):
            return self.run(volumeNode, pointsNode, calibration=calibration, shapes=shapes, criteria=criteria,
                            slabMm=slabMm, force=force)
        return self._start(self._levels.newWatch(volumeNode, pointsNode, calibration, shapes, criteria, slabMm,
                                                 force))

    def _start(self, state: Dict[str, Any]):
        """Store a (re-)run's state, measure it and observe the inputs; returns the table node."""
        self._store.setState(state)
        self.measure(state)
        self.attach()
        return self.tableNode()

    def measure(self, state: Optional[Dict[str, Any]] = None, only: Optional[set] = None) -> List[Dict[str, Any]]:
        """Measure the ROI nodes now (all, or the (level, shape) pairs in ``only``) of ``state`` (default
        the stored one); update the table and the plot and return the rows."""
        rows = self._results.measure(self.state() if state is None else state, only)
        self.updateCount += 1
        return rows

    # --- user edits of the state ---------------------------------------------------------------------
    def setExcluded(self, level: str, excluded: bool, reason: str = "excluded by the user") -> None:
        """Exclude a level from the summary (e.g. osteophytes, bone island, artefact) or include it again."""
        self._results.setExcluded(level, excluded, reason)

    def setGenantGrade(self, level: str, grade: Optional[int]) -> None:
        """Set the Genant fracture grade (0-3) of a level, or None for not graded. Grade >= 1 excludes it."""
        self._results.setGenantGrade(level, grade)

    def setCriteria(self, criteria) -> None:
        """Use a criterion (id or dict) for the plot's thresholds and the report; None for none."""
        self._results.setCriteria(criteria)

    def rows(self) -> List[Dict[str, Any]]:
        """The current result rows (one per level and ROI type), as stored in the parameter node."""
        return list(self.state().get("rows", []))

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Per ROI type: mean of the level means over the included levels, and which levels."""
        return summarise_rows(self.state())

    def thresholds(self, state: Optional[Dict[str, Any]] = None) -> List[Tuple[str, float]]:
        """``[(label, value)]`` band boundaries of the state's criterion for its first measured shape."""
        return criterion_thresholds(state or self.state())

    # --- live updates -----------------------------------------------------------------------------------
    def attach(self) -> None:
        """Observe the inputs and the ROI nodes; after loading a scene, also restore the table and plot."""
        self._reobserve()
        state = self.state()
        if state.get("rows"):  # restore the table and the plot from the stored rows (full precision)
            self._results.show(state["rows"], state)

    def detach(self) -> None:
        self._live.detach()

    def _reobserve(self) -> None:
        """(Re-)connect the observers of the inputs, the ROI nodes and a live calibration's points."""
        self.detach()
        self._live.observeLevels(self.roiNodes(), self.pointsNode(), self.volumeNode())
        self._cal.observe()

    def _wake(self) -> None:
        """An edit is pending: update now, or when the scheduler calls back."""
        if self.scheduler is None:
            self.processPendingUpdates()
        elif not self._live.scheduled:
            self._live.scheduled = True
            self.scheduler(self.processPendingUpdates)

    def processPendingUpdates(self) -> None:
        """Apply the edits observed since the last update (the scheduler calls this)."""
        pending = self._live.takePending()
        if not pending:
            return
        try:
            self.lastError = None
            if pending.calibration:
                self.refitCalibration()  # a failure clears the calibration and sets lastError
            if pending.points:
                self._replaceMovedLevels()
            elif pending.volume:
                self.measure(self.state())
            elif pending.rois:
                self.measure(self.state(), only=pending.rois)
            else:
                self._results.reannotate(self.state())
        except OsteoROIError as exc:
            self.lastError = str(exc)
            logging.warning("OsteoROI: %s", exc)
        if self.onUpdate is not None:
            self.onUpdate(self)

    def _replaceMovedLevels(self) -> None:
        """Re-place the levels whose point moved, was added or removed; keep the other levels' ROIs."""
        state = self.state()
        changed, removed = moved_levels(state, level_points_from_node(self.pointsNode()))
        if not changed and not removed:
            self.measure(state)
            return
        self.detach()
        try:
            self._levels.replace(state, changed, removed)
            self._store.setState(state)
            self.measure(state)
        finally:
            self.attach()

    # --- exports ------------------------------------------------------------------------------------------
    def document(self) -> Dict[str, Any]:
        """The result as an ``osteoroi-measurement/1`` document (``export.measurement.build_document``)."""
        return self._exports.document()

    def diagnosisExclusions(self) -> Dict[str, List[Dict[str, Any]]]:
        """The state's exclusions and Genant grades in ``diagnosis.normalize_exclusions`` form."""
        return diagnosis_exclusions(self.state())

    def exportReport(self, htmlPath: str, overwrite: bool = False) -> List[str]:
        """Write the self-contained HTML report (``export.html_report.write_report``) of the current results."""
        return self._exports.writeReport(htmlPath, overwrite=overwrite)

    def exportResults(self, jsonPath: Optional[str] = None, csvPath: Optional[str] = None,
                      overwrite: bool = False) -> List[str]:
        """Write the JSON document and/or the CSV table atomically; refuses to replace files unless asked."""
        return self._exports.writeResults(jsonPath, csvPath, overwrite=overwrite)

    # --- calibration (mrml.calibration) -------------------------------------------------------------------
    def calibration(self):
        """The current ``calibration.Calibration`` (None without one)."""
        return self._cal.fromState(self.state())

    def calibrationSummary(self) -> Dict[str, Any]:
        """``{"mode", "source", "fit", "error", "text"}``: the stored fit summary and its text."""
        return self._cal.summary()

    def setCalibration(self, calibration) -> None:
        """Use a ``Calibration``, its dict or a saved calibration file (path); None for HU only."""
        self._calibrated(None, self._cal.use(calibration))

    def setManualCalibration(self, slope: float, intercept: float, unit: str = "K2HPO4", note: str = "",
                             acceptImplausible: bool = False):
        """HU = intercept + slope × density, typed by the user (``calibration.model.manual_calibration``);
        ``acceptImplausible`` uses a line no phantom can give (recorded in the result and report)."""
        return self._calibrated(*self._cal.manual(slope, intercept, unit, note, acceptImplausible))

    def calibrateFromRods(self, rodPointsNode, phantom, volumeNode=None, slabMm: Optional[float] = None,
                          acceptImplausible: bool = False):
        """Fit a phantom calibration from a point list labelled by rod name; re-fits when a point moves.

        ``phantom`` — a phantom id of the library (``osteoroi phantoms``) or a PhantomDefinition;
        ``volumeNode`` — the CT with the phantom (default: the measured CT); ``slabMm`` — rod ROI
        thickness (default ``calibration.rods.ROD_SLAB_MM``); ``acceptImplausible`` — use a fit with no
        physical meaning anyway (``calibration.plausibility``; recorded). Returns the Calibration.
        """
        return self._calibrated(*self._cal.fitFromRods(rodPointsNode, phantom, volumeNode, slabMm, acceptImplausible))

    def autoDetectRods(self, phantom, volumeNode=None, region=None, slabMm: Optional[float] = None,
                       confirmFewRods: bool = False):
        """Find the phantom's rods (``calibration.rods.auto_rods``), put them in the module's point list
        "OsteoROI rods" (one point per rod, labelled by name, editable) and fit from it.

        ``region`` — RAS box (R0, R1, A0, A1[, S0, S1]) to search, default the row of rods below
        the patient. Returns the rod point list. Never touches a user's point list. A phantom of fewer than
        3 rods is found only with ``confirmFewRods`` (two discs of anything fit a line exactly).
        """
        return self._calibrated(*self._cal.detectRods(phantom, volumeNode, region, slabMm, confirmFewRods))

    def calibrateFromTissues(self, tissuePointsNode, volumeNode=None, radiusMm: float = TISSUE_RADIUS_MM,
                             slabMm: Optional[float] = None):
        """Internal calibration (Michalski 2020) from a point list labelled air, adipose, muscle,
        blood, cortical_bone (at least 3); re-fits when a point moves. Returns the Calibration."""
        return self._calibrated(*self._cal.fitFromTissues(tissuePointsNode, volumeNode, radiusMm, slabMm))

    def saveCalibration(self, path: str, overwrite: bool = False) -> str:
        """Write the current calibration as JSON (atomic; refuses to replace a file unless asked)."""
        return self._cal.save(path, overwrite=overwrite)

    def prepareRodPoints(self, phantom, pointsNode=None):
        """A rod list with one control point per rod of ``phantom`` (labelled by name), the missing
        ones unplaced, so that clicks in place mode place them in order. Default: the module's list."""
        return self._cal.prepareRodPoints(phantom, pointsNode)

    def prepareTissuePoints(self, pointsNode=None, tissues: Sequence[str] = TISSUE_LABELS):
        """A tissue list with one (unplaced if missing) control point per reference tissue."""
        return self._cal.prepareTissuePoints(pointsNode, tissues)

    def refitCalibration(self) -> None:
        """Re-fit a live calibration from its point list now; a failure clears it and sets ``lastError``."""
        error = self._cal.refit()
        if error is not None:
            self.lastError = error

    def _calibrated(self, result, state: Dict[str, Any]):
        """A calibration was stored in ``state``: observe its points, re-annotate the rows; returns ``result``."""
        self._reobserve()
        self._results.reannotate(state)
        return result
