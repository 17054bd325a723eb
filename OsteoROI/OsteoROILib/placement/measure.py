"""Measure the seed-002 ROIs of each vertebral level: placement → ROI family → statistics.

``measure_levels`` is the one entry point the command line, the Slicer module's logic and
scripts share. It returns plain dicts (one row per level × ROI shape) ready for the table
writers in ``export.measurement``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError, PlacementError
from ..io.volume import Volume
from ..roi.family import RoiFamily, build_roi_family
from ..roi.levels import LEVEL_NAMES, normalise_level, parse_shapes
from ..roi.outline import BodyOutline
from ..roi.islands import measured_roi
from .aorta import find_aorta
from .click import place_from_click
from .level_checks import check_level_order, check_slab_within_body
from .row_flags import flag_rows
from .probe import default_outline, outline_from_probe, probe_shell
from .slab import centre_on_mid_height, check_slab, is_preset, level_slab
from .tilted import to_vertebra_plane

def check_points(volume: Volume, points: Mapping[str, Sequence[float]]) -> Dict[str, np.ndarray]:
    """Validate level labels and that every point lies inside the image."""
    if not points:
        raise InputError("No points were given.", "Give one point inside each vertebral body, e.g. --point L1=R,A,S.")
    out: Dict[str, np.ndarray] = {}
    for label, xyz in points.items():
        level = normalise_level(label)
        if level in out:
            raise InputError(f"Level {level} is given twice.", "Give one point per level.")
        p = np.asarray(xyz, dtype=float).reshape(-1)
        if p.size != 3 or not np.all(np.isfinite(p)):
            raise InputError(f"The point for {level} is not three finite RAS coordinates: {xyz!r}.",
                             "Give R,A,S in millimetres.")
        if not volume.contains_ras(p)[0]:
            ijk = volume.ras_to_ijk_points(p)[0]
            raise InputError(
                f"The point for {level} (RAS {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f} mm) is outside the image "
                f"(voxel {ijk[0]:.1f}, {ijk[1]:.1f}, {ijk[2]:.1f} of size {volume.dimensions}).",
                "Points are RAS millimetres as Slicer shows them; check the coordinates (LPS files need R and A negated).",
            )
        out[level] = p
    return out


def partial_volume_margin_mm(volume: Volume) -> float:
    """Half the in-plane voxel diagonal of the image's axial slices."""
    axis = volume.slice_axis()
    in_plane = [volume.spacing[a] for a in (0, 1, 2) if a != axis]
    return 0.5 * float(np.hypot(*in_plane))


PLANE_FOUNDATION = "image axial slice"


def default_slab_mm(volume: Volume) -> float:
    """One slice: the image's slice spacing."""
    return volume.slice_spacing()


PLANE_CHOICES = ("image", "vertebra")


def check_plane(plane) -> str:
    """``"image"`` (the image's axial slice nearest mid-height, as seed 002) or ``"vertebra"``
    (the plane perpendicular to the vertebra's own axis, for tilted spines)."""
    key = str(plane or "image").strip().lower()
    if key not in PLANE_CHOICES:
        raise InputError(f"Unknown ROI plane {plane!r}.", f"Choose one of {', '.join(PLANE_CHOICES)}.")
    return key


def _place(volume: Volume, level: str, point, outlines, placements, auto: bool, force: bool,
           plane: str = "image"):
    """(outline, source, margin, placement or None, warnings) for one level."""
    if plane == "vertebra":
        outline, source, margin, pl, warnings = _place(volume, level, point, outlines, placements, auto, force)
        if pl is None:
            return outline, source, margin, pl, warnings
        checked = pl.outline.meta.get("label_check")
        pl = to_vertebra_plane(volume, pl, level)
        if checked is not None:  # the label's check of the axial estimate the vertebra's plane was found from
            pl.outline.meta.setdefault("label_check", checked)
        return pl.outline, pl.method, margin, pl, list(pl.warnings)
    warnings: List[str] = []
    if level in outlines:
        outline = outlines[level]
        # A given outline is the true trabecular boundary: keep half a voxel diagonal off it
        # so no voxel that straddles the cortex is measured.
        source = str(outline.meta.get("source", "given outline"))
        return outline, source, partial_volume_margin_mm(volume), None, warnings
    if level in placements:
        pl = placements[level]
        return pl.outline, pl.method, partial_volume_margin_mm(volume), pl, list(pl.warnings)
    if auto:
        try:
            pl = place_from_click(volume, point, level)
        except PlacementError as exc:
            if not force:
                raise
            warnings.append(f"{exc.problem} Measured with a default-size outline because placement was forced.")
            return default_outline(volume, point), "default size (forced)", 0.0, None, warnings
        # The fitted trabecular boundary is kept half a voxel diagonal away, as a given outline.
        return pl.outline, pl.method, partial_volume_margin_mm(volume), pl, list(pl.warnings)
    # The foundation's shell-ray probe (its outline is already inset by its own margin).
    probe = probe_shell(volume, point)
    if probe.inside_body:
        return outline_from_probe(probe), "shell rays", 0.0, None, warnings
    if force:
        warnings.append(
            f"{level}: the point does not look inside a vertebral body ({'; '.join(probe.reasons)}); "
            "measured with a default-size outline because placement was forced.")
        return default_outline(volume, point), "default size (forced)", 0.0, None, warnings
    r = point
    raise PlacementError(
        f"{level}: the point (RAS {r[0]:.1f}, {r[1]:.1f}, {r[2]:.1f}) does not look inside a vertebral "
        f"body: {'; '.join(probe.reasons)}.",
        "Click inside the vertebral body on an axial slice near its mid-height, or force the placement "
        "(--force) if you are sure.",
    )


def measure_levels(
    volume: Volume,
    points: Optional[Mapping[str, Sequence[float]]],
    shapes=None,
    slab_mm: Optional[float] = None,
    outlines: Optional[Mapping[str, BodyOutline]] = None,
    force: bool = False,
    auto: bool = True,
    placements: Optional[Mapping[str, object]] = None,
    warnings: Optional[Sequence[str]] = None,
    plane: str = "image",
    aorta: bool = True,
) -> Dict[str, object]:
    """Place and measure the ROIs of every level.

    ``points`` maps level labels (L1…) to RAS points inside the vertebral bodies. Per level:

    * an entry in ``outlines`` is used as given (e.g. the digital phantom's truth);
    * an entry in ``placements`` (``landmarks.Placement``, e.g. from ``labels.place_from_labels``) is used
      as placed (its point is the level's point when ``points`` lacks it);
    * otherwise, with ``auto`` (default), ``click.place_from_click`` finds the body in 3-D,
      the mid-vertebral slice and the outline; without ``auto`` the foundation's shell probe
      (``probe.probe_shell``) outlines the body on the point's own slice.

    ``plane="vertebra"`` re-fits every automatic placement (click or label) on the plane
    perpendicular to the vertebra's own axis (``tilted.to_vertebra_plane``); the ROIs then lie
    in that plane with their slab along the axis. It needs automatic placement.

    A point with no vertebral body around it is refused (``PlacementError``) unless ``force``
    is true; then a default-size outline is used and the rows carry a warning. ``warnings`` are
    added to the result (e.g. levels missing from a segmentation).

    With ``aorta`` (default) the aorta is searched once beside L1–L2 (``aorta.find_aorta``) and its
    HU recorded under ``"aorta"`` (``hu`` None with a ``reason`` when not found); the Slicer logic
    re-places single levels without it and searches once per result document instead.

    Returns ``{"rows": [...], "levels": {level: {...}}, "warnings": [...], "aorta": {...}}``.
    """
    shape_names = parse_shapes(shapes)
    plane_choice = check_plane(plane)
    if plane_choice == "vertebra" and not auto and not placements:
        raise InputError("The vertebra's own plane needs automatic placement.",
                         "Leave out --no-auto, or use --plane image.")
    placements = dict(placements or {})
    merged = {k: v for k, v in (points or {}).items()}
    for level, pl in placements.items():
        merged.setdefault(level, pl.point_ras)
    pts = check_points(volume, merged)
    placements = {normalise_level(k): v for k, v in placements.items()}
    bound_slab = is_preset(slab_mm)
    slab_mm = _check_slab(volume, slab_mm)
    outlines = {normalise_level(k): v for k, v in (outlines or {}).items()}
    rows: List[Dict[str, object]] = []
    levels: Dict[str, Dict[str, object]] = {}
    all_warnings: List[str] = list(warnings or [])
    centres: Dict[str, np.ndarray] = {}
    for level in sorted(pts, key=LEVEL_NAMES.index):
        point = pts[level]
        outline, source, margin, placed, level_warnings = _place(volume, level, point, outlines, placements,
                                                                 auto, force, plane_choice)
        slab = level_slab(volume, placed, slab_mm, level, bound=bound_slab)
        check_slab_within_body(level, slab.slab_mm, None if placed is None else placed.height_mm)
        family = build_roi_family(outline, slab.slab_mm, shape_names, level=level, edge_margin_mm=margin)
        if placed is not None:
            family = centre_on_mid_height(volume, family, placed, slab)
        level_warnings.extend(family.warnings + ([slab.warning] if slab.warning else []))
        levels[level] = _level_entry(volume, point, outline, source, placed, level_warnings)
        levels[level].update(slab.to_row())
        centres[level] = outline.center
        all_warnings.extend(w for w in level_warnings if w not in all_warnings)
        for row in _level_rows(volume, level, family, source, levels[level], slab.slab_mm):
            all_warnings.extend(w for w in row["warnings"] if w not in all_warnings)
            rows.append(row)
    check_level_order(centres, "labels" if placements else "points")
    flag_rows(volume, rows, all_warnings)
    out = {"rows": rows, "levels": levels, "warnings": all_warnings, "shapes": shape_names, "slab_mm": slab_mm}
    if aorta:
        out["aorta"] = find_aorta(volume, levels).to_dict()
    return out


def _check_slab(volume: Volume, slab_mm) -> float:
    """The ROIs' slab thickness (mm): one slice when not given, ``"qct"`` for the QCT-style slab
    (``slab.check_slab``); refused unless positive."""
    return check_slab(volume, slab_mm)


def _level_entry(volume: Volume, point: np.ndarray, outline: BodyOutline, source: str, placed,
                 level_warnings: List[str]) -> Dict[str, object]:
    """The result's entry for one level: its point, outline, how it was placed and its warnings."""
    slice_index = placed.slice_index if placed is not None else volume.nearest_slice_index(outline.center)
    plane = placed.plane if placed is not None else PLANE_FOUNDATION
    fit_quality = None if placed is None else round(float(placed.fit_quality), 3)
    if placed is None and source == "shell rays":
        fit_quality = outline.meta.get("hit_fraction")
    entry: Dict[str, object] = {
        "point_ras": [round(float(x), 4) for x in point],
        "outline": outline.to_dict(),
        "placement": source,
        "slice_index": slice_index,
        "plane": plane,
        "fit_quality": fit_quality,
        "warnings": list(level_warnings),
    }
    if placed is not None:
        entry["auto"] = placed.to_dict()
    if "label_check" in outline.meta:  # a label's placement: which estimate was used and how it agreed
        entry["label_check"] = dict(outline.meta["label_check"])
    if outline.inner_contour is not None:
        # the trabecular boundary (s anterior, t left, mm from the outline's centre) for the level's pictures
        entry["trabecular_outline_st_mm"] = [[round(float(a), 2), round(float(b), 2)] for a, b in outline.inner_contour]
    return entry


def _level_rows(volume: Volume, level: str, family: RoiFamily, source: str, entry: Dict[str, object],
                slab_mm: float) -> List[Dict[str, object]]:
    """One row per ROI of the level: its HU statistics, where it lies, and its warnings (the
    level's, the statistics', and a dense-voxel check: bone island, sclerosis, cortex)."""
    outline = family.outline
    common = {
        "fit_quality": entry["fit_quality"],
        "body_depth_mm": round(float(outline.depth_mm), 3),
        "body_width_mm": round(float(outline.width_mm), 3),
        "ap_axis_ras": [round(float(x), 6) for x in outline.ap_axis],
        "plane": entry["plane"],
        "slab_centre": entry["slab_centre"],
        "slab_endplate_clearance_mm": entry["slab_endplate_clearance_mm"],
        # how the mid-vertebral slice was chosen (mid-height between two slices: which one, and why)
        "mid_slice_rule": (entry.get("auto") or {}).get("mid_slice_rule"),
        "roi_scale": (entry.get("auto") or {}).get("roi_scale", 1.0),
        # the endplates' distance in slice spacings (thick slices: fewer than 4 carry a caveat)
        "slices_between_endplates": outline.meta.get("slices_between_endplates"),
    }
    if "label_check" in entry:  # placed from a label: the image's estimate or the label-driven fit, and why
        common["label_estimate"] = entry["label_check"]["estimate"]
        common["label_agreement_mm"] = entry["label_check"].get("mean_distance_mm")
    rows = []
    for name, shape in family.shapes.items():
        # one voxel search per ROI; a bone island in it is left out with a margin (QCT_BRIEF §1)
        stats, stat_warnings, dense = measured_roi(volume, shape, level, name)
        row_warnings = list(entry["warnings"]) + stat_warnings
        row: Dict[str, object] = {"level": level, "shape": name}
        row.update(stats)
        row.update(
            {
                "center_ras": [round(float(x), 4) for x in shape.center],
                "slice_index": volume.nearest_slice_index(shape.center),
                "slab_mm": round(slab_mm, 4),
                "nominal_area_mm2": round(shape.nominal_area_mm2, 4),
                "placement": source,
                **dense,
            }
        )
        row.update(common)
        row["roi"] = shape.to_dict()
        row["warnings"] = row_warnings
        rows.append(row)
    return rows
