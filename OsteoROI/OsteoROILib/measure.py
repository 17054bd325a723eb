"""Measure the seed-002 ROIs of each vertebral level: placement → ROI family → statistics.

``measure_levels`` is the one entry point the command line, the Slicer module's logic and
scripts share. It returns plain dicts (one row per level × ROI shape) ready for the table
writers in ``results``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .errors import InputError, PlacementError
from .placement import default_outline, outline_from_probe, probe_shell
from .roifamily import SHAPE_NAMES, BodyOutline, build_roi_family
from .stats import roi_statistics
from .volume import Volume

#: Levels a point may be labelled with. The product targets L1–L4 (QCT_BRIEF §1, §3);
#: T12 and L5 are accepted so that an unsuitable level can be replaced by a neighbour.
LEVEL_NAMES = ("T11", "T12", "L1", "L2", "L3", "L4", "L5")


def normalise_level(label: str) -> str:
    name = str(label).strip().upper()
    if name not in LEVEL_NAMES:
        raise InputError(
            f"Unknown vertebral level label {label!r}.",
            f"Label each point with one of {', '.join(LEVEL_NAMES)} (e.g. L1).",
        )
    return name


def parse_shapes(shapes) -> List[str]:
    if shapes is None:
        return list(SHAPE_NAMES)
    if isinstance(shapes, str):
        shapes = [s for s in shapes.split(",")]
    out = []
    for s in shapes:
        name = str(s).strip().lower()
        if not name:
            continue
        if name not in SHAPE_NAMES:
            raise InputError(f"Unknown ROI shape {s!r}.", f"Choose from {', '.join(SHAPE_NAMES)}.")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("No ROI shape was chosen.", f"Choose one or more of {', '.join(SHAPE_NAMES)}.")
    return out


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


def default_slab_mm(volume: Volume) -> float:
    """One slice: the image's slice spacing."""
    return volume.slice_spacing()


def measure_levels(
    volume: Volume,
    points: Mapping[str, Sequence[float]],
    shapes=None,
    slab_mm: Optional[float] = None,
    outlines: Optional[Mapping[str, BodyOutline]] = None,
    force: bool = False,
) -> Dict[str, object]:
    """Place and measure the ROIs of every level.

    ``points`` maps level labels (L1…) to RAS points inside the vertebral bodies. For a level
    with an entry in ``outlines`` that outline is used as given (e.g. from the digital
    phantom's truth or a segmentation); otherwise the body is found around the point by
    ``placement.probe_shell``. A point without a cortical shell around it is refused
    (``PlacementError``) unless ``force`` is true, in which case a default-size outline is
    used and the rows carry a warning.

    Returns ``{"rows": [...], "levels": {level: {...}}, "warnings": [...]}``.
    """
    shape_names = parse_shapes(shapes)
    pts = check_points(volume, points)
    if slab_mm is None:
        slab_mm = default_slab_mm(volume)
    slab_mm = float(slab_mm)
    if not np.isfinite(slab_mm) or slab_mm <= 0:
        raise InputError(f"The slab thickness must be a positive number of mm, got {slab_mm:g}.",
                         "Give e.g. --slab-mm 3, or leave it out for one slice.")
    outlines = dict(outlines or {})
    rows: List[Dict[str, object]] = []
    levels: Dict[str, Dict[str, object]] = {}
    all_warnings: List[str] = []
    order = sorted(pts, key=LEVEL_NAMES.index)
    for level in order:
        point = pts[level]
        level_warnings: List[str] = []
        margin = 0.0
        if level in outlines:
            outline = outlines[level]
            source = str(outline.meta.get("source", "given outline"))
            # A given outline is the true trabecular boundary: keep half a voxel diagonal off it
            # so no voxel that straddles the cortex is measured. (The shell probe's outline is
            # already inset by its own partial-volume margin.)
            margin = partial_volume_margin_mm(volume)
        else:
            probe = probe_shell(volume, point)
            if probe.inside_body:
                outline = outline_from_probe(probe)
                source = "shell rays"
            elif force:
                outline = default_outline(volume, point)
                source = "default size (forced)"
                level_warnings.append(
                    f"{level}: the point does not look inside a vertebral body ({'; '.join(probe.reasons)}); "
                    "measured with a default-size outline because placement was forced."
                )
            else:
                r = point
                raise PlacementError(
                    f"{level}: the point (RAS {r[0]:.1f}, {r[1]:.1f}, {r[2]:.1f}) does not look inside a vertebral "
                    f"body: {'; '.join(probe.reasons)}.",
                    "Click inside the vertebral body on an axial slice near its mid-height, or force the placement "
                    "(--force) if you are sure.",
                )
        family = build_roi_family(outline, slab_mm, shape_names, level=level, edge_margin_mm=margin)
        level_warnings.extend(family.warnings)
        slice_index = volume.nearest_slice_index(outline.center)
        levels[level] = {
            "point_ras": [round(float(x), 4) for x in point],
            "outline": outline.to_dict(),
            "placement": source,
            "slice_index": slice_index,
            "warnings": list(level_warnings),
        }
        all_warnings.extend(level_warnings)
        for name, shape in family.shapes.items():
            stats = roi_statistics(volume, shape)
            row_warnings = list(level_warnings) + [f"{level}: {w}" for w in stats.pop("warnings")]
            row: Dict[str, object] = {"level": level, "shape": name}
            row.update(stats)
            row.update(
                {
                    "center_ras": [round(float(x), 4) for x in shape.center],
                    "slice_index": volume.nearest_slice_index(shape.center),
                    "slab_mm": round(slab_mm, 4),
                    "nominal_area_mm2": round(shape.nominal_area_mm2, 4),
                    "placement": source,
                    "roi": shape.to_dict(),
                    "warnings": row_warnings,
                }
            )
            all_warnings.extend(w for w in row_warnings if w not in all_warnings)
            rows.append(row)
    return {"rows": rows, "levels": levels, "warnings": all_warnings, "shapes": shape_names, "slab_mm": slab_mm}
