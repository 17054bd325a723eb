"""Slicer markups point-list files (``.mrk.json``): read labelled points, write them back.

Slicer writes control point positions in the file's ``coordinateSystem`` ("LPS" by default
since Slicer 4.11, or "RAS"); OsteoROI works in RAS (QCT_BRIEF §6), so LPS positions are
converted (R and A negated). Control points whose ``positionStatus`` is not "defined" (being
placed, or cleared) are skipped.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

from ..errors import InputError
from .jsonfile import read_json

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)


def parse_named_point(text: str, option: str, name: str = "name", example: str = "A=10.5,-101,20"):
    """``NAME=R,A,S`` (RAS mm, as typed on the command line) → ``(NAME, [R, A, S])``.

    ``option`` and ``name`` word the error (e.g. "--point", "level label"); ``example`` shows the form.
    """
    form = "LEVEL" if "level" in name else "NAME"
    remedy = f"Write it as {form}=R,A,S in RAS millimetres, e.g. {option} {example}."
    if "=" not in text:
        raise InputError(f"{option} {text!r} has no {name}.", remedy)
    key, _, coords = text.partition("=")
    parts = [p for p in coords.replace(";", ",").split(",") if p.strip()]
    try:
        xyz = [float(p) for p in parts]
    except ValueError:
        xyz = []
    if not key.strip():
        raise InputError(f"{option} {text!r} has no {name} before '='.", remedy)
    if len(xyz) != 3:
        raise InputError(f"{option} {text!r} does not have three numbers after '='.", remedy)
    return key.strip(), xyz


def read_point_list(path: str) -> List[Dict[str, object]]:
    """All defined control points of all point lists in the file: ``[{"label", "ras"}]``."""
    doc = read_json(path, "points file",
                    "Check the path, or save the point list from Slicer again (File > Save, .mrk.json).")
    markups = doc.get("markups") if isinstance(doc, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(
            f"The points file {path} has no 'markups' list: it is not a Slicer markups file.",
            "Export the point list from Slicer as .mrk.json.",
        )
    out: List[Dict[str, object]] = []
    for m in markups:
        if not isinstance(m, dict):
            raise InputError(f"The points file {path} has a malformed markup entry.", "Fix or re-export the file.")
        system = str(m.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"Unknown coordinateSystem {system!r} in {path}.", "Use LPS or RAS.")
        units = str(m.get("coordinateUnits", "mm"))
        if units != "mm":
            raise InputError(f"The points in {path} are in {units!r}, not mm.", "Save the points in millimetres.")
        for cp in m.get("controlPoints", []) or []:
            if not isinstance(cp, dict):
                raise InputError(f"The points file {path} has a malformed control point.", "Fix or re-export the file.")
            if cp.get("positionStatus", "defined") != "defined":
                continue
            pos = cp.get("position")
            try:
                xyz = [float(v) for v in pos]
            except (TypeError, ValueError):
                xyz = []
            if len(xyz) != 3:
                raise InputError(
                    f"Control point {cp.get('label', '?')!r} in {path} has no valid 3-D position.",
                    "Fix or re-export the file.",
                )
            if system == "LPS":
                xyz = [-xyz[0], -xyz[1], xyz[2]]
            out.append({"label": str(cp.get("label", "")).strip(), "ras": xyz})
    if not out:
        raise InputError(f"The points file {path} has no defined control points.", "Place points in Slicer and save again.")
    return out


def points_by_label(points: Sequence[Mapping[str, object]], source: str = "") -> Dict[str, List[float]]:
    """``{label: ras}``; duplicate labels are an error (one point per level)."""
    out: Dict[str, List[float]] = {}
    where = f" in {source}" if source else ""
    for p in points:
        label = str(p["label"]).strip().upper()
        if not label:
            raise InputError(f"A control point{where} has no label.", "Label each point with its level (L1…L4).")
        if label in out:
            raise InputError(f"Level {label} is given more than once{where}.", "Give one point per level.")
        out[label] = list(p["ras"])  # type: ignore[arg-type]
    return out


def point_list_document(points: Mapping[str, Sequence[float]], name: str = "OsteoROI levels") -> Dict[str, object]:
    """A Slicer point-list document (LPS, as Slicer writes it) for ``{label: ras}``."""
    cps = []
    for n, (label, ras) in enumerate(points.items(), start=1):
        cps.append(
            {
                "id": str(n),
                "label": label,
                "description": "",
                "associatedNodeID": "",
                "position": [-float(ras[0]), -float(ras[1]), float(ras[2])],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
        )
    return {
        "@schema": MARKUPS_SCHEMA,
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": len(cps),
                "name": name,
                "controlPoints": cps,
                "measurements": [],
            }
        ],
    }
