"""The results plot: per-level bars of each ROI type and the criterion's thresholds as dashed lines.

A ``vtkMRMLPlotChartNode`` over two of the module's tables: the plot data (one column per ROI
type, one row per included level) and the thresholds (the band boundaries of the state's
criterion, QCT_BRIEF §2). The bars show vBMD when the criterion classifies vBMD and a calibration
exists, else the mean HU.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple

import vtk

from ..roi.family import SHAPE_NAMES
from .nodes import ROLE_PLOT_CHART, ROLE_PLOT_TABLE, ROLE_THRESHOLD_TABLE, SHAPE_COLORS
from .persistence import SceneState, ordered_levels
from .results_table import set_column_title

__all__ = ["criterion_thresholds", "write_plot"]

#: Threshold series the module may have made (a criterion has fewer band boundaries).
MAX_THRESHOLD_SERIES = 8


def criterion_thresholds(state: Mapping[str, Any]) -> List[Tuple[str, float]]:
    """``[(label, value)]`` band boundaries of the state's criterion for its first measured shape."""
    crit = state.get("criterion")
    if not crit:
        return []
    by_shape = crit.get("bands_by_shape", {})
    shape = next((s for s in state["shapes"] if s in by_shape), None)
    if shape is None:
        return []
    out = []
    unit = crit.get("unit", "")
    for band in by_shape[shape]:
        upper = band.get("upper")
        if upper is not None:
            sign = "\u2264" if band.get("upper_inclusive") else "<"
            label = (f"{crit.get('short_title', crit['id'])} ({shape}): "
                     f"{band.get('label', band.get('class', ''))} {sign} {float(upper):g} {unit}").strip()
            out.append((label, float(upper)))
    return out


def _write_plot_table(plotTable, rows: Sequence[Mapping[str, Any]], shapes: Sequence[str], levels: Sequence[str],
                      key: str) -> None:
    """Columns Level, Index and one per ROI type (NaN where a level has no value)."""
    wasModifying = plotTable.StartModify()
    try:
        plotTable.RemoveAllColumns()
        names = vtk.vtkStringArray()
        names.SetName("Level")
        index = vtk.vtkDoubleArray()
        index.SetName("Index")
        for i, lv in enumerate(levels):
            names.InsertNextValue(lv)
            index.InsertNextValue(float(i))
        plotTable.AddColumn(names)
        plotTable.AddColumn(index)
        for shape in shapes:
            col = vtk.vtkDoubleArray()
            col.SetName(shape)
            for lv in levels:
                value = next((r.get(key) for r in rows if r["level"] == lv and r["shape"] == shape), None)
                col.InsertNextValue(float("nan") if value is None else float(value))
            plotTable.AddColumn(col)
    finally:
        plotTable.EndModify(wasModifying)


def _write_threshold_table(thresholdTable, thresholds: Sequence[Tuple[str, float]], n_levels: int) -> None:
    """A horizontal line across all bars for each threshold."""
    wasModifying = thresholdTable.StartModify()
    try:
        thresholdTable.RemoveAllColumns()
        x = vtk.vtkDoubleArray()
        x.SetName("Index")
        for v in (-0.5, max(n_levels, 1) - 0.5):
            x.InsertNextValue(v)
        thresholdTable.AddColumn(x)
        for i, (label, value) in enumerate(thresholds):
            col = vtk.vtkDoubleArray()
            col.SetName(f"threshold{i}")
            col.InsertNextValue(value)
            col.InsertNextValue(value)
            thresholdTable.AddColumn(col)
            set_column_title(thresholdTable, f"threshold{i}", label)
    finally:
        thresholdTable.EndModify(wasModifying)


def _series(store: SceneState, shapes: Sequence[str], thresholds: Sequence[Tuple[str, float]], plotTable,
            thresholdTable) -> list:
    """The bar series of each ROI type and the dashed line of each threshold; unused ones removed."""
    wanted = []
    for shape in shapes:
        series = store.ownNode(f"OsteoROI.plotSeries.{shape}", "vtkMRMLPlotSeriesNode", f"OsteoROI {shape}")
        series.SetAndObserveTableNodeID(plotTable.GetID())
        series.SetPlotType(series.PlotTypeBar)
        series.SetXColumnName("Index")
        series.SetYColumnName(shape)
        series.SetLabelColumnName("Level")
        series.SetColor(*SHAPE_COLORS[shape])
        wanted.append(series)
    for i, (label, _value) in enumerate(thresholds):
        series = store.ownNode(f"OsteoROI.plotSeries.threshold{i}", "vtkMRMLPlotSeriesNode", "OsteoROI threshold")
        if series.GetName() != label:
            series.SetName(label)  # the module's own node: its name is the threshold's label
        series.SetAndObserveTableNodeID(thresholdTable.GetID())
        series.SetPlotType(series.PlotTypeLine)
        series.SetXColumnName("Index")
        series.SetYColumnName(f"threshold{i}")
        series.SetLineStyle(series.LineStyleDash)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(0.8, 0.1, 0.1)
        wanted.append(series)
    for shape in SHAPE_NAMES:
        if shape not in shapes:
            store.removeOwnNode(f"OsteoROI.plotSeries.{shape}")
    for i in range(len(thresholds), MAX_THRESHOLD_SERIES):
        store.removeOwnNode(f"OsteoROI.plotSeries.threshold{i}")
    return wanted


def write_plot(store: SceneState, rows: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
    """Fill the module's plot tables and chart from the rows (excluded levels are left out)."""
    crit = state.get("criterion") or {}
    useVbmd = crit.get("quantity") == "vbmd" and bool(state.get("calibration"))
    key = "vbmd_mg_cm3" if useVbmd else "mean_hu"
    yTitle = f"vBMD ({rows[0].get('vbmd_unit', 'mg/cm3')})" if useVbmd and rows else "Mean (HU)"
    levels = [lv for lv in ordered_levels(state)
              if not any(r["level"] == lv and r.get("excluded") for r in rows)]
    plotTable = store.ownNode(ROLE_PLOT_TABLE, "vtkMRMLTableNode", "OsteoROI plot data")
    _write_plot_table(plotTable, rows, state["shapes"], levels, key)
    thresholds = criterion_thresholds(state) if (crit.get("quantity") == "vbmd") == useVbmd else []
    thresholdTable = store.ownNode(ROLE_THRESHOLD_TABLE, "vtkMRMLTableNode", "OsteoROI thresholds")
    _write_threshold_table(thresholdTable, thresholds, len(levels))

    chart = store.ownNode(ROLE_PLOT_CHART, "vtkMRMLPlotChartNode", "OsteoROI chart")
    chart.SetTitle("OsteoROI: " + ("vBMD" if useVbmd else "trabecular attenuation") + " per level")
    chart.SetXAxisTitle("Vertebral level (" + ", ".join(levels) + ")")
    chart.SetYAxisTitle(yTitle)
    wantedIds = [s.GetID() for s in _series(store, state["shapes"], thresholds, plotTable, thresholdTable)]
    if [chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())] != wantedIds:
        chart.RemoveAllPlotSeriesNodeIDs()
        for sid in wantedIds:
            chart.AddAndObservePlotSeriesNodeID(sid)
