"""Placement from a vertebra segmentation (label map): one placement per level present.

The label says which vertebra (and bounds where it is); the vertebra's image decides the ROIs,
as for a click: the body label's centre on its mid slice is the seed of the same
click-independent 3-D estimate a click inside that body gives (``click.place_from_click``), so a
label and a click on the same vertebra give the same placement. The label then cross-checks that
estimate (``label_agreement``: the plane inside the label's slices, the outline against the label's
boundary, the trabecular region inside the label) and the agreement is recorded.

Where the image's estimate fails or disagrees with the label beyond the stated tolerances, the
placement falls back to a fit driven by the label, with a warning that says so and why: the
mid-vertebral slice is the image's axial slice nearest the middle of the label's extent along the
slice axis (only slices where the label covers at least half its largest cross-section count, so
a model's stray voxels do not move it); the outline on that slice is fitted to the image
(``contour.fit_centred``), restricted to a few mm around the label's boundary, so the ROIs exclude
the cortex even where a model's label includes it; where the image shows no clear shell the
label's own boundary is used, with a lower fit quality. ``estimate="label"`` asks for that fit.

Built-in label maps (QCT_BRIEF §7):

* ``total`` — TotalSegmentator v2 "total" task: T12 = 32, L1 = 31, L2 = 30, L3 = 29, L4 = 28;
* ``bodies`` — its vertebral-body map: L1 = 20, L2 = 21, L3 = 22, L4 = 23;
* a custom map ``"L1=31,L2=30,..."``.

A level whose label is absent is reported, never invented.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError, PlacementError
from ..io.caveats import Caveat, add_caveat
from ..io.volume import Volume
from ..roi.geometry import in_plane_frame
from ..roi.levels import normalise_level
from .canal import find_canal
from .contour import fit_centred
from .endplates import central_profile, plate_intervals
from .label_agreement import checked_image_placement
from .level_checks import check_label_height, check_label_image
from .landmarks import (FALLBACK_SCALE, LOW_QUALITY, METHOD_LABEL, MIN_BODY_HEIGHT_MM, PLANE_AXIAL, Canal, Contour,
                        Placement, conservative_scale)
from .outline_fit import outline_from_contour, outline_quality
from .sampling import CROP_HALF_AXIAL_MM, CROP_HALF_INPLANE_MM, FIT_HALF_SLAB_MM, MAX_RAY_MM, N_RAYS, RAY_STEP_MM, Box

BUILTIN_LABEL_MAPS: Dict[str, Dict[str, int]] = {
    "total": {"T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28},
    "bodies": {"L1": 20, "L2": 21, "L3": 22, "L4": 23},
}
#: A label must cover at least this fraction of its largest cross-section on a slice to count
#: towards the body's axial extent.
EXTENT_AREA_FRACTION = 0.5
#: A label longer than this front to back holds the posterior elements too (TotalSegmentator's
#: "total" vertebrae); only its front part, the body, then sets the axial extent and the seed.
WHOLE_VERTEBRA_DEPTH_MM = 60.0
#: The share of such a label's antero-posterior extent, from the front, taken as the body.
BODY_SHARE_OF_VERTEBRA = 0.4
#: Window (mm) around the label's boundary in which the image edge is searched (inside, outside).
PRIOR_WINDOW_MM = (5.0, 3.0)
#: Radius (mm) of the central disc whose mean HU profile shows the endplates.
PLATE_DISC_MM = 6.0


def parse_label_map(text) -> Tuple[str, Dict[str, int]]:
    """``"total"``, ``"bodies"`` or ``"L1=31,L2=30"`` → (description, {level: label value})."""
    if isinstance(text, Mapping):
        return "custom", {normalise_level(k): int(v) for k, v in text.items()}
    key = str(text or "").strip()
    if key.lower() in BUILTIN_LABEL_MAPS:
        return key.lower(), dict(BUILTIN_LABEL_MAPS[key.lower()])
    out: Dict[str, int] = {}
    for part in [p for p in key.replace(";", ",").split(",") if p.strip()]:
        if "=" not in part:
            raise InputError(f"Label map entry {part!r} is not LEVEL=VALUE.",
                             f"Use one of {', '.join(BUILTIN_LABEL_MAPS)} or e.g. --label-map L1=31,L2=30.")
        level, _, value = part.partition("=")
        try:
            number = int(value.strip())
        except ValueError:
            raise InputError(f"Label map entry {part!r} has no integer label value.",
                             "Write it as LEVEL=VALUE, e.g. L1=31.") from None
        level = normalise_level(level)
        if level in out:
            raise InputError(f"Level {level} appears twice in the label map.", "Give each level once.")
        out[level] = number
    if not out:
        raise InputError("The label map is empty.",
                         f"Use one of {', '.join(BUILTIN_LABEL_MAPS)} or e.g. --label-map L1=31,L2=30.")
    if len(set(out.values())) != len(out):
        raise InputError("Two levels share one label value in the label map.", "Give each level its own value.")
    return "custom", out


def read_labels(path: str, volume: Volume) -> Tuple[np.ndarray, List[str]]:
    """Read a label image and bring it onto the CT's voxel grid (nearest neighbour if needed)."""
    import SimpleITK as sitk

    if not os.path.isfile(path):
        raise InputError(f"No such label file: {path}.", "Check the path to the segmentation (e.g. total.nii.gz).")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Cannot read the label image {path} ({str(exc).strip().splitlines()[-1]}).",
                         "Give a label map readable by SimpleITK (NIfTI, NRRD, MHA).") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"The label image {path} is not a 3-D single-component image.",
                         "Give the segmentation's label map (one integer label per voxel).")
    labels = Volume.from_sitk(image, source=str(path))
    check_label_image(labels.array, str(path))
    notes: List[str] = []
    same = (tuple(labels.dimensions) == tuple(volume.dimensions)
            and np.allclose(labels.ijk_to_ras, volume.ijk_to_ras, atol=1e-3))
    if same:
        return np.array(labels.array), notes  # a copy: the view dies with the SimpleITK image
    # Onto the CT's grid as the Volume holds it (a DICOM volume's slice axis comes from the slice
    # positions, and an unevenly spaced series is resampled: the image it was read from no longer
    # describes it), without copying the CT's voxels.
    grid = volume.sitk_grid()
    resampled = sitk.Resample(image, grid["size"], sitk.Transform(), sitk.sitkNearestNeighbor, grid["origin"],
                              grid["spacing"], grid["direction"], 0, image.GetPixelID())
    on_ct = sitk.GetArrayViewFromImage(resampled)
    if not np.any(on_ct) and np.any(labels.array):
        # every labelled voxel lies outside the CT: a segmentation of another scan (or frame)
        raise InputError(f"The segmentation {path} does not overlap the CT: none of its labelled voxels lies "
                         "inside the CT's field of view (it has another voxel grid and position).",
                         "Give the segmentation made from this CT (e.g. TotalSegmentator's output for this file).")
    notes.append(f"The label image {os.path.basename(str(path))} has another voxel grid than the CT; it was resampled "
                 "onto the CT's grid (nearest neighbour).")
    add_caveat(volume.caveats, Caveat("labels_resampled", notes[-1]))
    return sitk.GetArrayFromImage(resampled), notes


#: Where a label's placement comes from: the image's 3-D estimate checked against the label (default),
#: or the fit driven by the label's boundary.
ESTIMATES = ("image", "label")


def place_from_label(volume: Volume, labels: np.ndarray, value: int, level: str = "", *,
                     estimate: str = "image") -> Placement:
    """Placement of one level from its label (see module docstring)."""
    if labels.shape != volume.array.shape:
        raise InputError("The label array does not match the CT's size.", "Resample the labels onto the CT grid.")
    return _place_from_mask(volume, labels == value, value, level, _check_estimate(estimate))


def _check_estimate(estimate: str) -> str:
    if estimate not in ESTIMATES:
        raise InputError(f"Unknown placement estimate {estimate!r} for labels.", f"Use one of {', '.join(ESTIMATES)}.")
    return estimate


def _body_part(volume: Volume, in_label: np.ndarray) -> np.ndarray:
    """The vertebral body's part of a label: all of it for a body label; for a whole-vertebra label
    (deeper than ``WHOLE_VERTEBRA_DEPTH_MM``), its front ``BODY_SHARE_OF_VERTEBRA`` along the image's
    anterior direction, so the arch and spinous process do not shift the mid-height."""
    kji = np.argwhere(in_label)
    if kji.shape[0] < 10:
        return in_label
    anterior = volume.in_plane_anterior()
    ap = volume.ijk_to_ras_points(kji[:, ::-1].astype(float)) @ anterior
    front, back = float(ap.max()), float(ap.min())
    if front - back <= WHOLE_VERTEBRA_DEPTH_MM:
        return in_label
    keep = ap >= front - BODY_SHARE_OF_VERTEBRA * (front - back)
    body = np.zeros_like(in_label, dtype=bool)
    body[tuple(kji[keep].T)] = True
    return body


def _place_from_mask(volume: Volume, in_label: np.ndarray, value: int, level: str = "",
                     estimate: str = "image") -> Placement:
    """``place_from_label`` given the label's voxels (``labels == value``, on the CT's grid): the
    body label's centre on its mid slice → the image's 3-D estimate from there, checked against the
    label; the label-driven fit where that estimate fails or disagrees (with a warning saying why)."""
    prefix = f"{level}: " if level else ""
    body = _body_part(volume, in_label)  # sets the axial extent and the seed; the contour prior uses the label
    extent = _axial_extent(volume, body, value, prefix)
    check_label_height(level or f"label {value}", (extent.hi - extent.lo + 1) * volume.slice_spacing())
    seed = _seed_on_slice(volume, body, extent.mid)
    if estimate == "label":
        placed = _fit_from_label(volume, in_label, value, level, extent, seed)
        placed.outline.meta["label_check"] = {"estimate": "label", "reasons": ["the label-driven fit was asked for"]}
        return placed
    image, agreement, why = checked_image_placement(volume, in_label, _image_seed(volume, body, extent, seed),
                                                    (extent.lo, extent.hi), level)
    check = {"estimate": "image" if not why else "label", "reasons": why,
             **({} if agreement is None else agreement.to_dict())}
    if not why:
        image.method = METHOD_LABEL
        image.outline.meta.update({"label": int(value), "label_check": check})
        return image
    placed = _fit_from_label(volume, in_label, value, level, extent, seed)
    placed.warnings.append(
        f"{prefix}placed by fitting to the label's boundary, not from the image's own 3-D estimate (the one a click "
        f"inside this body gives), because {'; '.join(why)}. The label may be shifted, cut or of another structure, "
        "or the image unclear: check the ROIs against the image.")
    placed.outline.meta["label_check"] = check
    return placed


def _image_seed(volume: Volume, body: np.ndarray, extent: _Extent, seed: np.ndarray) -> np.ndarray:
    """Where the image's estimate starts: the voxel centre nearest the body label's centre on the
    slice nearest mid-height (the endplates' midpoint where the image shows them inside the label's
    extent). Any point inside the body gives the same placement; a voxel centre that is already the
    body's own centre spares the estimate its second pass (``click.place_from_click``)."""
    box = Box(volume, seed, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    mid = _mid_between_endplates(box, box.to_box(seed)[0][:2], extent)
    on_mid = mid != extent.mid and np.take(body, mid, axis=2 - volume.slice_axis()).any()
    centre = volume.ras_to_ijk_points(_seed_on_slice(volume, body, mid) if on_mid else seed)[0]
    return volume.ijk_to_ras_points(np.array([np.floor(centre + 0.5)], dtype=float))[0]


def _fit_from_label(volume: Volume, in_label: np.ndarray, value: int, level: str, extent: _Extent,
                    seed: np.ndarray) -> Placement:
    """The label-driven fit: the label's axial extent → the mid-vertebral slice (moved to the
    endplates' midpoint where the image shows them) → the outline fitted near the label's boundary
    → its fit quality."""
    prefix = f"{level}: " if level else ""
    axis = volume.slice_axis()
    warnings: List[str] = [f"{prefix}{r}; the mid-vertebral slice is estimated from the visible part."
                           for r in extent.reasons]
    box = Box(volume, seed, CROP_HALF_INPLANE_MM, CROP_HALF_AXIAL_MM)
    seed_xy = box.to_box(seed)[0][:2]
    mid = _mid_between_endplates(box, seed_xy, extent)
    s_mid = mid - int(box.lo[axis])
    label_radii = _label_radii_on(box, _box_slice_of(box, in_label, s_mid))
    plane = box.plane(s_mid, min(FIT_HALF_SLAB_MM, 0.2 * (extent.hi - extent.lo + 1) * box.ds))
    contour, canal, ring = _fit_near_label(box, plane, s_mid, seed_xy, label_radii)
    reasons = list(extent.reasons)
    plates_q = extent.plates_q
    if ring:
        reasons.append(f"the image shows no clear cortical shell ({'; '.join(ring)}); the label's boundary is used")
        plates_q = min(plates_q, LOW_QUALITY)
    outline, metrics = outline_from_contour(box, contour, METHOD_LABEL, cortical_min_mm=1.5, canal=canal)
    quality, q_reasons = outline_quality(contour, metrics, plates_q, None, outline.depth_mm, outline.width_mm)
    q_reasons = reasons + [r for r in q_reasons if r not in reasons]
    if ring:
        quality = min(quality, LOW_QUALITY)
    # no shell in the image: the label's boundary, shrunk fully (decided by the image, not a score)
    scale = FALLBACK_SCALE if ring else conservative_scale(quality)
    fallback = scale < 1.0
    if fallback:
        outline, metrics = outline_from_contour(box, contour, METHOD_LABEL + ", conservative",
                                                cortical_min_mm=2.0, scale=scale, canal=canal)
        warnings.append(f"{prefix}low fit quality ({quality:.2f}: {'; '.join(q_reasons)}); the ROIs were shrunk to "
                        f"{scale:.0%} of the trabecular region — check them.")
    elif q_reasons:
        warnings.append(f"{prefix}fit quality {quality:.2f}: {'; '.join(q_reasons)}.")
    outline.meta.update({"fit_quality": round(quality, 3), "label": int(value)})
    ends = [float(volume.ijk_to_ras_points(np.where(np.arange(3) == axis, q, 0.0))[0] @ box.normal)
            for q in (extent.lo - 0.5, extent.hi + 0.5)]
    return Placement(outline=outline, method=METHOD_LABEL, plane=PLANE_AXIAL, slice_index=mid,
                     fit_quality=quality, point_ras=seed, reasons=q_reasons, warnings=warnings,
                     endplates_s=(max(ends), min(ends)), fallback=fallback, roi_scale=scale)


@dataclass
class _Extent:
    """The body's axial extent from its label: first and last counted slice (image slice indices),
    the slice midway, and the endplate quality and reasons when the label reaches the image's end."""

    lo: int
    hi: int
    mid: int
    plates_q: float
    reasons: List[str]


def _axial_extent(volume: Volume, body: np.ndarray, value: int, prefix: str) -> _Extent:
    """The slices where the body's label covers at least ``EXTENT_AREA_FRACTION`` of its largest
    cross-section. The label's voxels are counted per slice (one pass over the mask), not listed:
    a full-size label map holds millions of voxels."""
    arr_axis = 2 - volume.slice_axis()
    per_slice = np.array([np.count_nonzero(q) for q in np.moveaxis(body, arr_axis, 0)], dtype=np.intp)
    if not per_slice.any():
        raise PlacementError(f"{prefix}label {value} is not present in the segmentation.",
                             "Check the label map (--label-map).")
    slices = np.flatnonzero(per_slice)
    counts = per_slice[slices]
    keep = slices[counts >= EXTENT_AREA_FRACTION * counts.max()]
    lo, hi = int(keep.min()), int(keep.max())
    mid = int(np.floor(0.5 * (lo + hi) + 0.5))
    if slices.min() == 0 or slices.max() == volume.array.shape[arr_axis] - 1:
        return _Extent(lo, hi, mid, 0.6,
                       ["the vertebra is partly outside the image: its label reaches the first or last slice"])
    return _Extent(lo, hi, mid, 1.0, [])


def _seed_on_slice(volume: Volume, body: np.ndarray, mid: int) -> np.ndarray:
    """RAS of the body label's centre on image slice ``mid``."""
    arr_axis = 2 - volume.slice_axis()
    in_arr = [a for a in (0, 1, 2) if a != arr_axis]
    on_mid = np.argwhere(np.take(body, mid, axis=arr_axis))  # in-plane indices, in C order
    centre_kji = np.zeros(3)
    centre_kji[arr_axis] = mid
    centre_kji[in_arr] = on_mid.mean(axis=0)
    return volume.ijk_to_ras_points(centre_kji[::-1])[0]


def _mid_between_endplates(box: Box, seed_xy, extent: _Extent) -> int:
    """The mid-vertebral image slice: a model's label often holds the endplates unevenly; where the
    image shows both endplates inside the label's extent, their midpoint is the mid-height."""
    axis = box.axis
    mid = extent.mid
    lo_b, hi_b = extent.lo - int(box.lo[axis]), extent.hi - int(box.lo[axis])
    prof = central_profile(box, seed_xy, PLATE_DISC_MM)
    for iv in plate_intervals(box, prof):
        if (iv.lo is not None and iv.hi is not None and lo_b - 1 <= iv.lo <= iv.hi <= hi_b + 1
                and MIN_BODY_HEIGHT_MM <= (iv.hi - iv.lo) * box.ds and iv.lo <= mid - box.lo[axis] <= iv.hi):
            return int(np.floor(0.5 * (iv.lo + iv.hi) + 0.5)) + int(box.lo[axis])
    return mid


def _box_slice_of(box: Box, in_label: np.ndarray, s: int) -> np.ndarray:
    """The label's mask on box slice ``s``, as [y, x]."""
    sl = [slice(None)] * 3
    for a in range(3):
        sl[2 - a] = slice(int(box.lo[a]), int(box.hi[a]) + 1)
    sub = in_label[tuple(sl)]
    order = [2 - box.axis, 2 - box.in_axes[1], 2 - box.in_axes[0]]
    return np.transpose(sub, order)[s]


def _label_radii_on(box: Box, mask: np.ndarray) -> Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]:
    """``radii(center_xy, u)``: per contour ray, the distance (mm) to the label's boundary on ``mask``."""
    def label_radii(center_xy, u):
        uu, vv, _ = in_plane_frame(box.normal, box.u0 if u is None else u)
        angles = np.linspace(0.0, 2.0 * np.pi, N_RAYS, endpoint=False)
        radii = np.arange(0.0, MAX_RAY_MM + 1e-9, RAY_STEP_MM)
        dirs = np.outer(np.cos(angles), uu) + np.outer(np.sin(angles), vv)
        dxy = box.direction_xy(dirs)
        x = np.rint(center_xy[0] + radii[None, :] * dxy[:, 0:1]).astype(int)
        y = np.rint(center_xy[1] + radii[None, :] * dxy[:, 1:2]).astype(int)
        ok = (x >= 0) & (x < mask.shape[1]) & (y >= 0) & (y < mask.shape[0])
        inside = np.zeros(x.shape, dtype=bool)
        inside[ok] = mask[y[ok], x[ok]]
        first_out = np.argmax(~inside, axis=1)
        first_out[inside.all(axis=1)] = radii.size - 1
        half_voxel = 0.5 * max(box.dx, box.dy)
        return radii[np.maximum(first_out - 1, 0)] + half_voxel

    return label_radii


def _fit_near_label(box: Box, plane: np.ndarray, s: int, seed_xy, label_radii
                    ) -> Tuple[Contour, Optional[Canal], List[str]]:
    """The body's contour fitted to the image within a few mm of the label's boundary; the spinal
    canal behind the body fixes the posterior wall (invisible at the basivertebral foramen on thick
    slices) and the AP axis, as for a click. Where the image shows no clear shell the label's
    boundary itself is the contour (the ring's reasons are returned)."""
    contour = fit_centred(box, plane, s, seed_xy, iterations=2, prior_fn=lambda c, u: label_radii(c, u))
    canal = find_canal(box, plane, contour)
    if canal is not None:
        contour = fit_centred(box, plane, s, contour.center_xy, iterations=2,
                              prior_fn=lambda c, u: label_radii(c, u), canal=canal)
    ring = contour.ring_reasons()
    if ring:
        r_lab = label_radii(contour.center_xy, None)
        contour = Contour(contour.center_xy, contour.s, contour.angles, r_lab, np.full(r_lab.size, np.nan),
                          np.zeros(r_lab.size, dtype=bool), contour.interior_hu, np.zeros(r_lab.size),
                          np.zeros(r_lab.size, dtype=bool), contour.u, contour.v)
    return contour, canal, ring


def place_from_labels(volume: Volume, labels: np.ndarray, label_map: Mapping[str, int], *,
                      estimate: str = "image") -> Tuple[Dict[str, Placement], List[str]]:
    """Placements for every level of ``label_map`` present in ``labels``; and the missing levels.
    ``estimate``: ``"image"`` (the image's 3-D estimate, checked against the label) or ``"label"``
    (the fit driven by the label's boundary)."""
    estimate = _check_estimate(estimate)
    placements: Dict[str, Placement] = {}
    missing: List[str] = []
    if not np.issubdtype(labels.dtype, np.integer):
        # float label images: "present" as an integer label value, as read
        present = set(int(v) for v in np.unique(labels))
        for level, value in label_map.items():
            if int(value) not in present:
                missing.append(level)
                continue
            placements[level] = place_from_label(volume, labels, int(value), level, estimate=estimate)
        return placements, missing
    for level, value in label_map.items():
        in_label = labels == int(value)  # one pass per level (no sort of the whole label map)
        if not in_label.any():
            missing.append(level)
            continue
        if labels.shape != volume.array.shape:
            raise InputError("The label array does not match the CT's size.", "Resample the labels onto the CT grid.")
        placements[level] = _place_from_mask(volume, in_label, int(value), level, estimate)
    return placements, missing


def describe_missing(missing, label_map: Mapping[str, int], source: Optional[str] = None) -> List[str]:
    where = f" in {source}" if source else ""
    return [f"{level}: label {label_map[level]} is not present{where}; this level was not measured."
            for level in missing]
