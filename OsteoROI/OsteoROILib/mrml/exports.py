"""The scene's results written out: the measurement document, the JSON/CSV files and the HTML report.

Every file comes from the core (``export.measurement``, ``export.html_report``,
``diagnosis.verdict``); this module only gathers what the scene's state holds.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..calibration.apply import calibration_summary
from ..diagnosis.verdict import build_diagnosis
from ..errors import OutputError
from ..export.html_report import write_report
from ..export.measurement import ROW_COLUMNS, build_document, to_csv_text, to_json_text
from ..io.outputs import check_output_paths, write_atomically
from ..io.volume import Volume
from ..placement.aorta import find_aorta
from .calibration import SceneCalibration
from .live_update import VolumeCache
from .persistence import SceneState

__all__ = ["SceneExports", "scene_document", "diagnosis_exclusions"]

#: Who wrote the document (its ``command`` field).
COMMAND = "3D Slicer OsteoROI module"


def scene_document(state: Mapping[str, Any], volume: Volume, cal=None) -> Dict[str, Any]:
    """The state's results (it has rows) as an ``osteoroi-measurement/1`` document (``build_document``)."""
    levels = {lv: {k: v for k, v in info.items() if k != "placed"} for lv, info in state["levels"].items()}
    slab = state["slab_mm"] if state["slab_mm"] else volume.slice_spacing()
    warnings = list(state.get("notes", []))
    warnings += sorted({w for r in state["rows"] for w in r.get("warnings", [])} - set(warnings))
    measurement = {"rows": state["rows"], "levels": levels, "shapes": state["shapes"], "slab_mm": slab,
                   "warnings": warnings, "aorta": find_aorta(volume, levels).to_dict()}  # once per document
    extra: Dict[str, Any] = {}
    if cal is not None:
        extra["calibration"] = calibration_summary(cal)
        for w in (state.get("calibration_fit") or {}).get("warnings", []):
            if w not in warnings:
                warnings.append(w)
    return build_document(measurement, volume.describe(), command=COMMAND, extra=extra)


def diagnosis_exclusions(state: Mapping[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """The state's exclusions and Genant grades in ``diagnosis.normalize_exclusions`` form."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for level, grade in state.get("genant", {}).items():
        if grade is not None and int(grade) >= 1:
            out.setdefault(level, []).append({"reason": "fracture", "grade": int(grade)})
    for level, reason in state.get("excluded", {}).items():
        out.setdefault(level, []).append({"reason": "manual", "note": str(reason)})
    return out


class SceneExports:
    """The results of one scene written out (the rows, levels and calibration its state holds)."""

    def __init__(self, store: SceneState, volumes: VolumeCache, cal: SceneCalibration):
        self.store = store
        self.volumes = volumes
        self.cal = cal

    def document(self) -> Dict[str, Any]:
        """The result as an ``osteoroi-measurement/1`` document; refuses before anything is measured."""
        state = self.store.state()
        if not state.get("rows"):
            raise OutputError("There are no results to export.", "Measure first.")
        return scene_document(state, self.volumes.measured(self.store), self.cal.fromState(state))

    def writeReport(self, htmlPath: str, overwrite: bool = False) -> List[str]:
        """Write the self-contained HTML report, with the state's criterion and exclusions."""
        doc = self.document()
        state = self.store.state()
        criteria = [state["criterion"]] if state.get("criterion") else None
        diagnosis = build_diagnosis(doc, criteria=criteria, exclusions=diagnosis_exclusions(state))
        return write_report(diagnosis, doc, html_path=htmlPath, volume=self.volumes.measured(self.store),
                            overwrite=overwrite)

    def writeResults(self, jsonPath: Optional[str] = None, csvPath: Optional[str] = None,
                     overwrite: bool = False) -> List[str]:
        """Write the JSON document and/or the CSV table atomically; refuses to replace files unless asked."""
        paths = check_output_paths([p for p in (jsonPath, csvPath) if p], overwrite=overwrite)
        doc = self.document()
        outputs = {}
        if jsonPath:
            outputs[paths[0]] = to_json_text(doc)
        if csvPath:
            columns = ROW_COLUMNS + (("excluded", "genant_grade")
                                     + (("vbmd_mg_cm3", "vbmd_sd", "vbmd_unit") if doc.get("calibration") else ()))
            outputs[paths[-1]] = to_csv_text(doc["rows"], columns=columns)
        write_atomically(outputs, overwrite=overwrite)
        return list(outputs)
