"""The result rows: one per level and ROI type, measured from the ROI markups' geometry and annotated.

A row's statistics come from ``roi.islands.measured_roi`` on the shape the ROI node shows, so what
is measured is exactly what is shown; annotating adds the exclusion, the Genant grade and (with a
calibration) the vBMD, without measuring again. The rows are kept at full precision in the
state and shown in the results table and plot; the user's exclusions, Genant grades and
criterion are edits of the state that re-annotate them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..calibration.apply import apply_calibration
from ..errors import InputError
from ..io.volume import Volume
from ..placement.measure import normalise_level
from ..roi.geometry import RoiShape
from ..roi.islands import measured_roi
from .nodes import ROLE_TABLE, SHAPE_KINDS, roi_shape_from_node, shape_signature
from .parts import SceneParts
from .persistence import criterion_from, ordered_levels
from .results_plot import write_plot
from .results_table import results_table_node, write_table

__all__ = ["GENANT_GRADES", "SceneResults", "measure_row", "measure_rows", "annotate_rows", "summarise_rows"]

GENANT_GRADES = (0, 1, 2, 3)  # QCT_BRIEF §3: 0 normal, 1 mild, 2 moderate, 3 severe; >= 1 is a fracture

Key = Tuple[str, str]


def measure_row(volume: Volume, level: str, shape_name: str, shape: RoiShape,
                info: Mapping[str, Any]) -> Dict[str, Any]:
    """The statistics of one ROI, where it is and how it was placed ("edited" once moved by hand)."""
    # the same statistics as the placement's rows: bone islands left out, dense voxels flagged
    stats, stat_warnings, dense = measured_roi(volume, shape, level, shape_name)
    placed = info.get("placed", {}).get(shape_name)
    edited = placed is not None and not np.allclose(placed, shape_signature(shape), rtol=0, atol=1e-6)
    row: Dict[str, Any] = {"level": level, "shape": shape_name}
    row.update(stats)
    row.update({
        "nominal_area_mm2": shape.nominal_area_mm2,
        "center_ras": [float(x) for x in shape.center],
        "slice_index": volume.nearest_slice_index(shape.center),
        "slab_mm": shape.slab_mm,
        "placement": str(info.get("placement", "")) + (" (edited)" if edited else ""),
        "roi": {"kind": shape.kind, "center_ras": list(shape.center), "axis_u_ras": list(shape.axis_u),
                "axis_v_ras": list(shape.axis_v), "half_u_mm": shape.half_u, "half_v_mm": shape.half_v,
                "slab_mm": shape.slab_mm},
        "warnings": list(info.get("warnings", [])) + stat_warnings,
        **dense,
    })
    return row


def measure_rows(volume: Volume, state: Mapping[str, Any], roiNodes: Mapping[Key, Any],
                 only: Optional[set] = None) -> Tuple[List[Dict[str, Any]], Dict[Key, RoiShape]]:
    """Rows of the ROI nodes, in level then ROI-type order, and the shapes measured.

    With ``only``, the other (level, shape) pairs keep their row of ``state["rows"]`` if they have one.
    """
    old = {(r["level"], r["shape"]): r for r in state.get("rows", [])}
    rows: List[Dict[str, Any]] = []
    measured: Dict[Key, RoiShape] = {}
    for level in ordered_levels(state):
        info = state["levels"][level]
        for shape_name in state["shapes"]:
            key = (level, shape_name)
            node = roiNodes.get(key)
            if node is None:
                continue
            if only is not None and key not in only and key in old:
                rows.append(old[key])
                continue
            shape = roi_shape_from_node(node, SHAPE_KINDS[shape_name], shape_name)
            rows.append(measure_row(volume, level, shape_name, shape, info))
            measured[key] = shape
    return rows, measured


def annotate_rows(rows: List[Dict[str, Any]], state: Mapping[str, Any], cal=None) -> List[Dict[str, Any]]:
    """Exclusion, Genant grade and (with a calibration ``cal``) vBMD of each row."""
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k not in ("vbmd_mg_cm3", "vbmd_unit", "vbmd_sd", "excluded",
                                                     "exclusion_reason", "genant_grade")}
        base = [w for w in r.get("warnings", []) if not w.startswith(f"{r['level']}: excluded")
                and "vbmd" not in w.lower() and "vBMD" not in w]
        r["warnings"] = base
        level = r["level"]
        grade = state["genant"].get(level)
        reason = state["excluded"].get(level)
        if reason is None and grade is not None and int(grade) >= 1:
            reason = f"Genant grade {grade} fracture (QCT_BRIEF §3: a fractured vertebra is replaced)"
        r["genant_grade"] = None if grade is None else int(grade)
        r["excluded"] = reason is not None
        r["exclusion_reason"] = reason
        if reason is not None:
            r["warnings"].append(f"{level}: excluded from the summary: {reason}.")
        out.append(r)
    if cal is not None:
        out = apply_calibration(out, cal)
    return out


def summarise_rows(state: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per ROI type: mean of the level means over the included levels, and which levels."""
    out: Dict[str, Dict[str, Any]] = {}
    for shape in state["shapes"]:
        used = [r for r in state.get("rows", []) if r["shape"] == shape and not r.get("excluded")
                and r.get("mean_hu") is not None]
        out[shape] = {
            "levels": [r["level"] for r in used],
            "mean_hu": float(np.mean([r["mean_hu"] for r in used])) if used else None,
        }
    return out


class SceneResults:
    """The rows of one scene: measured, annotated, kept in the state and shown in the table and the plot."""

    def __init__(self, parts: SceneParts):
        self.store, self.rois, self.volumes, self.live, self.cal = (parts.store, parts.rois, parts.volumes,
                                                                    parts.live, parts.cal)

    def measure(self, state: Dict[str, Any], only: Optional[set] = None) -> List[Dict[str, Any]]:
        """Measure the ROI nodes (all, or the (level, shape) pairs in ``only``); update table and plot."""
        rows, measured = measure_rows(self.volumes.measured(self.store), state, self.rois.roiNodes(state), only)
        for key, shape in measured.items():
            self.live.remember(key, shape)
        rows = annotate_rows(rows, state, self.cal.fromState(state))
        self.publish(rows, state)
        return rows

    def reannotate(self, state: Dict[str, Any]) -> None:
        """Annotate the stored rows again (exclusions, grades, calibration changed; nothing re-measured)."""
        rows = annotate_rows(state.get("rows", []), state, self.cal.fromState(state))
        self.publish(rows, state, show=bool(rows) or self.store.ref(ROLE_TABLE) is not None)

    def publish(self, rows: List[Dict[str, Any]], state: Dict[str, Any], show: bool = True) -> None:
        """Store the rows in the state and (with ``show``) in the table and the plot."""
        state["rows"] = rows
        self.store.setState(state)
        if show:
            self.show(rows, state)

    def show(self, rows: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
        write_table(results_table_node(self.store), rows, state)
        write_plot(self.store, rows, state)

    # --- user edits of the state ---------------------------------------------------------------------
    def setExcluded(self, level: str, excluded: bool, reason: str) -> None:
        level = normalise_level(level)
        state = self.store.state()
        if excluded:
            state["excluded"][level] = reason or "excluded by the user"
        else:
            state["excluded"].pop(level, None)
        self.store.setState(state)
        self.reannotate(state)

    def setGenantGrade(self, level: str, grade: Optional[int]) -> None:
        level = normalise_level(level)
        if grade is not None and (isinstance(grade, bool) or int(grade) not in GENANT_GRADES or int(grade) != grade):
            raise InputError(f"The Genant grade must be 0, 1, 2 or 3, got {grade!r}.",
                             "0 normal, 1 mild, 2 moderate, 3 severe (QCT_BRIEF §3); None for not graded.")
        state = self.store.state()
        if grade is None:
            state["genant"].pop(level, None)
        else:
            state["genant"][level] = int(grade)
        self.store.setState(state)
        self.reannotate(state)

    def setCriteria(self, criteria) -> None:
        crit = criterion_from(criteria)
        state = self.store.state()
        state["criteria"] = None if crit is None else crit["id"]
        state["criterion"] = None if crit is None else {k: v for k, v in crit.items() if k != "_validated"}
        self.store.setState(state)
        self.reannotate(state)
