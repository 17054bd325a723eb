"""What a picture of one level shows, as geometry in RAS: the body outline, the AP axis and the ROIs on
the measured plane, and a sagittal strip with the endplates, the plane and the slab.

Read from a result document's level entry and rows (plain data), so the report, the Slicer view and a
script draw the same thing; drawing (pixels, colours, PNG, markups) is the caller's. A radiologist checks
at a glance that the plane lies between the endplates, clear of them, and that the AP axis and the ROIs
sit in the anterior two thirds of the body (QCT_BRIEF §1). ``placement_concerns`` lists, in the
placement's own words, why a level's placement deserves that look (low fit quality, shrunk ROIs,
snapped point, warnings), so that a doubtful placement is shown rather than silently altered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .geometry import RoiShape
from .outline import outward_normals

#: A picture's field of view: this many times the body's larger outer size, within these bounds (mm):
#: the body, its cortex and some of its surroundings (psoas, canal, aorta) in view.
FIELD_PER_BODY_SIZE = 2.2
FIELD_MIN_MM, FIELD_MAX_MM = 50.0, 200.0
#: Points of the drawn outer outline when the result holds no trabecular polygon (the model ellipse).
ELLIPSE_POINTS = 72


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
    body_outline: Optional[np.ndarray] = None  # N×3 outer (periosteal) outline on the plane
    fov_mm: float = 100.0  # the pictures' field of view
    depth_mm: float = 0.0  # the body's outer AP depth
    #: where a bone island was left out of the ROIs (``roi.islands``): each excluded sphere's circle on
    #: the measured plane (N×3), one per island however many ROIs it touched
    excluded: List[np.ndarray] = field(default_factory=list)

    def sagittal_line(self, position_mm: float, half_length_mm: float) -> np.ndarray:
        """A 2×3 segment on the sagittal strip across the body's AP axis at ``position_mm`` along the
        normal (an endplate, the plane or a slab face)."""
        c = self.axial.origin + (position_mm - float(self.axial.origin @ self.normal)) * self.normal
        u = self.sagittal.col_dir
        return np.array([c - half_length_mm * u, c + half_length_mm * u])

    @property
    def has_slab(self) -> bool:
        """Whether the ROIs are extruded over a slab thicker than nothing."""
        return float(self.slab_mm[1] - self.slab_mm[0]) > 0.0


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _rows_shapes(rows: Sequence[Mapping[str, object]]) -> Dict[str, RoiShape]:
    out = {}
    for row in rows:
        r = row.get("roi")
        if r:
            out[str(row["shape"])] = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"],
                                              r["half_u_mm"], r["half_v_mm"], r["slab_mm"])
    return out


def offset_outwards(poly_st: np.ndarray, distance_mm: float) -> np.ndarray:
    """Each vertex of a closed polygon (N×2) moved outwards by ``distance_mm`` along its vertex normal:
    the inverse of the inward offset that made the trabecular boundary from the outer contour
    (the cortical margin, ``placement.outline_fit``)."""
    p = np.asarray(poly_st, dtype=float)
    return p + float(distance_mm) * outward_normals(p)


def _outline_st(o: Mapping[str, object], inner: Optional[np.ndarray]) -> np.ndarray:
    """The outer outline (s anterior, t left, mm): the trabecular polygon grown by the cortical
    margin, else the model ellipse of the outer depth and width (``roi.outline.BodyOutline``)."""
    if inner is not None:
        return offset_outwards(inner, float(o.get("cortical_mm") or 0.0))
    a = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_POINTS, endpoint=False)
    return np.column_stack([0.5 * float(o["depth_mm"]) * np.cos(a), 0.5 * float(o["width_mm"]) * np.sin(a)])


def field_of_view_mm(o: Mapping[str, object]) -> float:
    """The pictures' field of view for a body of this outer size (``FIELD_PER_BODY_SIZE``)."""
    sizes = [float(o[k]) for k in ("width_mm", "depth_mm") if isinstance(o.get(k), (int, float)) and o[k] > 0]
    fov = FIELD_PER_BODY_SIZE * max(sizes) if sizes else 100.0
    return float(min(max(fov, FIELD_MIN_MM), FIELD_MAX_MM))


def axial_view(origin: np.ndarray, normal: np.ndarray) -> ViewPlane:
    """Radiological display of a plane: the patient's right on the picture's left (columns run
    towards the patient's left, −R), anterior up (rows run towards posterior), in the patient's
    axes so that a rotated body shows rotated."""
    col = np.array([-1.0, 0.0, 0.0])
    col = _unit(col - normal * float(col @ normal))
    return ViewPlane(origin, col, _unit(np.cross(normal, col)))


def excluded_circles(rows: Sequence[Mapping[str, object]], origin: np.ndarray, normal: np.ndarray,
                     n_points: int = 48) -> List[np.ndarray]:
    """The circles where the bone-island spheres the rows left out (``bone_islands_excluded``: centre,
    radius) cut the plane through ``origin`` normal to ``normal``; an island recorded by several ROIs
    is drawn once, a sphere that does not reach the plane not at all."""
    seen, out = set(), []
    u = _unit(np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0]))
    v = np.cross(normal, u)
    a = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    for row in rows:
        for isl in row.get("bone_islands_excluded") or []:
            c = np.asarray(isl["center_ras"], dtype=float)
            key = tuple(np.round(c, 3)) + (round(float(isl["radius_mm"]), 3),)
            d = float((c - origin) @ normal)
            if key in seen or abs(d) >= float(isl["radius_mm"]):
                continue
            seen.add(key)
            r = float(np.sqrt(float(isl["radius_mm"]) ** 2 - d * d))
            on_plane = c - d * normal
            out.append(on_plane + r * (np.outer(np.cos(a), u) + np.outer(np.sin(a), v)))
    return out


def level_overlays(entry: Mapping[str, object], rows: Sequence[Mapping[str, object]]) -> LevelOverlays:
    """The pictures' geometry of one level from its result entry (``result["levels"][level]``) and its
    rows. Axial view: radiological display (:func:`axial_view`) centred on the body's centre on the
    measured plane; sagittal strip through the body's centre along its AP axis: anterior on the
    left, superior up (as a sagittal slice is read)."""
    o = entry["outline"]
    centre = np.asarray(o["center_ras"], dtype=float)
    ap = _unit(o["ap_axis_ras"])
    n = _unit(o["normal_ras"])
    if n[2] < 0:
        n = -n  # positions along the normal increase towards superior, as the endplates are given
    ap = _unit(ap - n * float(ap @ n))
    left = np.cross(n, ap)
    shapes = _rows_shapes(rows)
    plane_c = np.mean([s.center for s in shapes.values()], axis=0) if shapes else centre
    plane_mm = float(plane_c @ n)
    origin = centre + (plane_mm - float(centre @ n)) * n  # the body's centre on the measured plane
    slab = max((s.slab_mm for s in shapes.values()), default=0.0)
    auto = entry.get("auto") or {}
    inner = entry.get("trabecular_outline_st_mm")
    inner_st = np.asarray(inner, dtype=float) if inner else None

    def on_plane(st: np.ndarray) -> np.ndarray:
        return origin + np.outer(st[:, 0], ap) + np.outer(st[:, 1], left)

    half = 0.5 * float(o["depth_mm"])
    return LevelOverlays(axial=axial_view(origin, n), sagittal=ViewPlane(origin, -ap, -n),
                         ap_axis=np.array([origin - half * ap, origin + half * ap]),
                         rois={k: s.outline() for k, s in shapes.items()},
                         trabecular_outline=None if inner_st is None else on_plane(inner_st), normal=n,
                         plane_mm=plane_mm, slab_mm=(plane_mm - 0.5 * slab, plane_mm + 0.5 * slab),
                         endplates_mm=(auto.get("superior_endplate_mm"), auto.get("inferior_endplate_mm")),
                         body_outline=on_plane(_outline_st(o, inner_st)), fov_mm=field_of_view_mm(o),
                         depth_mm=2.0 * half, excluded=excluded_circles(rows, origin, n))


def placement_concerns(entry: Mapping[str, object], rows: Sequence[Mapping[str, object]] = ()) -> List[str]:
    """Why a level's placement needs a look, in the placement's plain words: its warnings (low fit
    quality and its reasons, a snapped point, ...), the rows' warnings, and ROIs shrunk by the
    conservative fallback. Empty for a placement that raised nothing."""
    out: List[str] = []

    def add(text: str) -> None:
        if text and text not in out:
            out.append(text)

    for w in entry.get("warnings") or []:
        add(str(w))
    auto = entry.get("auto") or {}
    scale = auto.get("roi_scale")
    if auto.get("conservative_fallback") or (isinstance(scale, (int, float)) and scale < 1.0):
        if not any("shrunk" in w for w in out):
            size = f" to {100.0 * float(scale):.0f} %" if isinstance(scale, (int, float)) and scale < 1.0 else ""
            add(f"the ROIs were shrunk{size} (conservative fallback)")
    for row in rows:
        for w in row.get("warnings") or []:
            add(str(w))
    return out
