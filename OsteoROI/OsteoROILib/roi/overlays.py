"""What a picture of one level shows, as geometry in RAS: the body outline, the AP axis and the ROIs on
the measured plane, and a sagittal strip with the endplates, the plane and the slab.

Read from a result document's level entry and rows (plain data), so the report, the Slicer view and a
script draw the same thing; drawing (pixels, colours, PNG) is the caller's. A radiologist checks at a
glance that the plane lies between the endplates, clear of them, and that the AP axis and the ROIs
sit in the anterior two thirds of the body (QCT_BRIEF §1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .geometry import RoiShape


@dataclass
class ViewPlane:
    """A picture's plane: its centre and the RAS directions of its columns (→) and rows (↓), mm."""

    origin: np.ndarray
    col_dir: np.ndarray
    row_dir: np.ndarray

    def to_pixels(self, ras: np.ndarray, n_px: int, pixel_mm: float) -> np.ndarray:
        """RAS points (N×3) → (column, row) pixel coordinates of an ``n_px``-wide picture centred on
        ``origin`` (the grid of ``export.images.sample_plane``)."""
        d = np.atleast_2d(np.asarray(ras, dtype=float)) - self.origin
        half = (n_px - 1) / 2.0
        return np.column_stack([d @ self.col_dir / pixel_mm + half, d @ self.row_dir / pixel_mm + half])


@dataclass
class LevelOverlays:
    """The geometry of one level's pictures (RAS mm; positions along ``normal`` in mm)."""

    axial: ViewPlane
    sagittal: ViewPlane
    ap_axis: np.ndarray  # 2×3: posterior and anterior ends of the body's AP axis through its centre
    rois: Dict[str, np.ndarray] = field(default_factory=dict)  # shape → polygon (N×3) on the plane
    trabecular_outline: Optional[np.ndarray] = None  # N×3 on the plane, when the result holds it
    normal: Optional[np.ndarray] = None
    plane_mm: float = 0.0  # the measured plane (the ROIs' centre) along ``normal``
    slab_mm: Sequence[float] = (0.0, 0.0)  # the slab's inferior and superior faces along ``normal``
    endplates_mm: Sequence[Optional[float]] = (None, None)  # superior, inferior along ``normal``

    def sagittal_line(self, position_mm: float, half_length_mm: float) -> np.ndarray:
        """A 2×3 segment on the sagittal strip across the body's AP axis at ``position_mm`` along the
        normal (an endplate, the plane or a slab face)."""
        c = self.axial.origin + (position_mm - float(self.axial.origin @ self.normal)) * self.normal
        u = self.sagittal.col_dir
        return np.array([c - half_length_mm * u, c + half_length_mm * u])


def _rows_shapes(rows: Sequence[Mapping[str, object]]) -> Dict[str, RoiShape]:
    out = {}
    for row in rows:
        r = row.get("roi")
        if r:
            out[str(row["shape"])] = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"],
                                              r["half_u_mm"], r["half_v_mm"], r["slab_mm"])
    return out


def level_overlays(entry: Mapping[str, object], rows: Sequence[Mapping[str, object]]) -> LevelOverlays:
    """The pictures' geometry of one level from its result entry (``result["levels"][level]``) and its
    rows. Axial view: radiological display (patient's right on the left, anterior up); sagittal strip:
    anterior to the right, superior up, through the body's centre along its AP axis."""
    o = entry["outline"]
    centre = np.asarray(o["center_ras"], dtype=float)
    ap = np.asarray(o["ap_axis_ras"], dtype=float)
    n = np.asarray(o["normal_ras"], dtype=float)
    if n[2] < 0:
        n = -n  # positions along the normal increase towards superior, as the endplates are given
    left = np.cross(n, ap)
    shapes = _rows_shapes(rows)
    plane_c = np.mean([s.center for s in shapes.values()], axis=0) if shapes else centre
    plane_mm = float(plane_c @ n)
    slab = max((s.slab_mm for s in shapes.values()), default=0.0)
    auto = entry.get("auto") or {}
    sup, inf = auto.get("superior_endplate_mm"), auto.get("inferior_endplate_mm")
    axial = ViewPlane(plane_c, -left, -ap)  # right of the patient on the picture's left, anterior up
    sagittal = ViewPlane(plane_c, ap, -n)
    half = 0.5 * float(o["depth_mm"])
    inner = entry.get("trabecular_outline_st_mm")
    poly = None
    if inner:
        st = np.asarray(inner, dtype=float)
        poly = centre + np.outer(st[:, 0], ap) + np.outer(st[:, 1], left)
    return LevelOverlays(axial=axial, sagittal=sagittal, ap_axis=np.array([centre - half * ap, centre + half * ap]),
                         rois={k: s.outline() for k, s in shapes.items()}, trabecular_outline=poly, normal=n,
                         plane_mm=plane_mm, slab_mm=(plane_mm - 0.5 * slab, plane_mm + 0.5 * slab),
                         endplates_mm=(sup, inf))
