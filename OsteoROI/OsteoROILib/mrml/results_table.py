"""The results table: one row per level and ROI type in a ``vtkMRMLTableNode``, with column units.

Undefined values (no NaN in a table). A value that can be undefined — every HU statistic of an
ROI that holds no voxel centre, the SD of a single voxel, vBMD without a mean, the vBMD SD of
a manual or two-rod calibration — is of type "optional": a ``vtkStringArray`` column whose
cell is EMPTY when the value is undefined (the Warnings column says why) and otherwise the
number exactly as Slicer shows a double column (``vtkVariant(value).ToString()``, six
significant digits). Why not a ``vtkDoubleArray``: a double cell can only hold NaN for
"undefined", and Slicer writes NaN as the text "nan" everywhere the user meets the table —
the table view (``qMRMLTableModel`` sets every cell's text from ``vtkVariant::ToString``),
the saved .tsv/.csv and copy-paste; it gains nothing in return, because the view sorts
cells by that text in either case. An empty cell is also what the CSV export and Slicer's
own table reader use for a missing value (column property ``nullValue`` = ""). Always-defined
values (voxel count, area, volume, slab) keep numeric columns. Full-precision values are in
``OsteoROIMRMLLogic.rows`` (None when undefined) and in the JSON/CSV exports; in Python,
test a table cell with ``.ToString() == ""`` — ``vtkVariant("").ToDouble()`` is 0.0.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, Tuple

import vtk

from .nodes import ROLE_TABLE
from .persistence import SceneState

__all__ = ["TABLE_COLUMNS", "CALIBRATION_COLUMNS", "format_optional", "set_column_title", "results_table_node",
           "write_table"]

#: Results table columns: (row key, column name, unit, description, type). Units use the
#: ``vtkMRMLTableNode`` column properties (shown by Slicer's table view); "optional" columns
#: are empty where the value is undefined (see the module docstring).
TABLE_COLUMNS: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("level", "Level", "", "Vertebral level (label of the control point).", "string"),
    ("shape", "ROI", "", "ROI type: oval, round, front, left or right (seed 002).", "string"),
    ("mean_hu", "Mean", "HU", "Mean attenuation of the voxels whose centre is inside the ROI; empty if none.",
     "optional"),
    ("sd_hu", "SD", "HU", "Sample standard deviation (ddof = 1); empty for a single voxel (undefined).", "optional"),
    ("median_hu", "Median", "HU", "Median attenuation; empty if the ROI holds no voxel.", "optional"),
    ("min_hu", "Min", "HU", "Lowest voxel value; empty if the ROI holds no voxel.", "optional"),
    ("max_hu", "Max", "HU", "Highest voxel value; empty if the ROI holds no voxel.", "optional"),
    ("p05_hu", "P5", "HU", "5th percentile; empty if the ROI holds no voxel.", "optional"),
    ("p95_hu", "P95", "HU", "95th percentile; empty if the ROI holds no voxel.", "optional"),
    ("n_voxels", "Voxels", "", "Number of voxels whose centre lies in the ROI.", "int"),
    ("area_mm2", "Area", "mm2", "Voxelised in-plane area (volume / slab thickness).", "double"),
    ("volume_mm3", "Volume", "mm3", "Number of voxels times the voxel volume.", "double"),
    ("slab_mm", "Slab", "mm", "ROI thickness along the slice normal.", "double"),
    ("vbmd_mg_cm3", "vBMD", "mg/cm3", "Volumetric BMD from the calibration; empty without a mean HU.", "optional"),
    ("vbmd_sd", "vBMD SD", "mg/cm3", "Standard error of the calibration at this HU; empty where the calibration "
     "has none (manual, two rods).", "optional"),
    ("excluded", "Excluded", "", "Level excluded from the summary (user choice or fracture).", "string"),
    ("genant_grade", "Genant", "", "Genant fracture grade of the level: 0-3, empty if not graded.", "string"),
    ("placement", "Placement", "", "How the ROI was placed; 'edited' when moved or resized by hand.", "string"),
    ("warnings", "Warnings", "", "Why a value is empty, and everything to check before using it.", "string"),
)

#: Columns shown only with a calibration.
CALIBRATION_COLUMNS = ("vbmd_mg_cm3", "vbmd_sd")


def format_optional(value) -> str:
    """The text of an "optional" table cell: empty when undefined, else as Slicer shows a double."""
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return ""
    return vtk.vtkVariant(value).ToString()


def set_column_title(tableNode, column: str, title: str) -> None:
    """Column title (``SetColumnTitle`` since Slicer 5.8; ``SetColumnLongName`` before)."""
    setter = getattr(tableNode, "SetColumnTitle", None) or tableNode.SetColumnLongName
    setter(column, title)


def results_table_node(store: SceneState):
    """The table that receives the results: one the user chose, else the module's own."""
    node = store.ref(ROLE_TABLE)
    if node is not None and node.IsA("vtkMRMLTableNode"):
        return node  # the module's own table, or one the user chose to receive the results
    return store.ownNode(ROLE_TABLE, "vtkMRMLTableNode", "OsteoROI results")


def _column(key: str, name: str, kind: str, rows: Sequence[Mapping[str, Any]]):
    """One table column: the rows' values of ``key`` as cells of the column's type."""
    column = {"string": vtk.vtkStringArray, "optional": vtk.vtkStringArray,
              "int": vtk.vtkIntArray}.get(kind, vtk.vtkDoubleArray)()
    column.SetName(name)
    for row in rows:
        value = row.get(key)
        if key == "excluded":
            value = "yes" if value else ""
        if key == "warnings":
            value = " | ".join(value or [])
        if kind == "string":
            column.InsertNextValue("" if value is None else str(value))
        elif kind == "optional":  # empty when undefined: see TABLE_COLUMNS
            column.InsertNextValue(format_optional(value))
        elif kind == "int":
            column.InsertNextValue(int(value))
        else:
            column.InsertNextValue(float(value))
    return column


def write_table(tableNode, rows: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> None:
    """Replace the table's columns with the rows (vBMD columns only with a calibration)."""
    calibrated = bool(state.get("calibration"))
    unit = rows[0].get("vbmd_unit", "mg/cm3") if rows and calibrated else "mg/cm3"
    wasModifying = tableNode.StartModify()
    try:
        tableNode.RemoveAllColumns()
        for key, name, colUnit, description, kind in TABLE_COLUMNS:
            if key in CALIBRATION_COLUMNS:
                if not calibrated:
                    continue
                colUnit = unit
            tableNode.AddColumn(_column(key, name, kind, rows))
            tableNode.SetColumnUnitLabel(name, colUnit)
            tableNode.SetColumnDescription(name, description)
            if kind == "optional":
                tableNode.SetColumnNullValue(name, "")
            set_column_title(tableNode, name, f"{name} ({colUnit})" if colUnit else name)
    finally:
        tableNode.EndModify(wasModifying)
