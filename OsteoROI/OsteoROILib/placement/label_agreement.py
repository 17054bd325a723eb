"""How well an image-made placement agrees with the vertebra's segmentation label.

The label is an independent cross-check of the placement made from the image (the same 3-D
estimate as for a click), not its decider. On the placement's own slice it gives:

* whether that slice lies inside the label's axial extent;
* the radial distance (mm) from the label's boundary to the fitted cortex (zero anywhere between
  the outer outline and the trabecular boundary: a label may trace either), along rays
  from the outline's centre over the anterior and lateral rim (``SECTOR_DEG`` either side of
  anterior: behind, the pedicles join a whole-vertebra label to the body);
* the Dice overlap of the outline's area and the label's (the neural arch behind the body's
  posterior wall left out);
* the trabecular region's voxels that fall outside the label grown by one voxel in-plane (a
  model's boundary is ragged by about a voxel), and the five ROIs' voxels (one slice) that do:
  the ROIs are what is measured.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import PlacementError
from ..io.volume import Volume
from ..roi.family import SHAPE_NAMES, build_roi_family
from ..roi.geometry import roi_voxels
from ..roi.outline import radius_at
from .click import place_from_click
from .landmarks import Placement

#: Rays (angle from anterior, either side) over which the outline and the label's boundary are compared.
SECTOR_DEG = 135.0
N_AGREEMENT_RAYS = 72
#: Sampling step (mm) along each ray, and how far out the label's boundary is searched.
STEP_MM = 0.25
MAX_RADIUS_MM = 45.0
#: Label voxels further than this (mm) behind the outline's posterior wall are the neural arch.
ARCH_MARGIN_MM = 5.0

# Tolerances beyond which the image's estimate is not taken for a label (``checked_image_placement``).
# Measured on the real CTs' model-made body labels (totalseg_example L1–L4 at 3 mm and re-binned to
# 6 mm; TPTBox L3 at 1.5 mm, whose body label traces the endosteal boundary): mean distance to the
# fitted cortex 0.1–0.65 mm, no ROI voxel outside the grown label, the plane at most 3 mm from the
# label's middle (1/8 of its height). The same 3 mm labels grown, eroded or shifted by one voxel:
# 0.2–2.7 mm (still the body); eroded or shifted front to back by two voxels: 2.3–2.85 mm; grown by two,
# eroded or shifted sideways by three: 4.3–6.1 mm. The tolerances lie at least three times the worst
# agreeing case away (twice for the plane), so a small change of image or label does not flip the path
# taken. Dice is recorded, not used: it depends on which boundary the label traces (0.83–0.96 on the
# agreeing cases).
#: The chosen slice's distance from the middle of the label's slices, as a share of the label's height.
MID_OFFSET_SHARE = 0.25
#: Mean distance (mm) from the label's boundary to the fitted cortex over the anterior and lateral rim;
#: at least one in-plane voxel (a label is only as precise as its voxels).
MEAN_DISTANCE_TOL_MM = 2.0


def mean_distance_tolerance_mm(volume: Volume) -> float:
    """``MEAN_DISTANCE_TOL_MM``, or one in-plane voxel where the voxels are coarser."""
    in_plane = [float(volume.spacing[a]) for a in (0, 1, 2) if a != volume.slice_axis()]
    return max(MEAN_DISTANCE_TOL_MM, max(in_plane))
#: Share of the ROIs' voxels outside the label grown by one voxel.
ROI_OUTSIDE_MAX = 0.01


@dataclass
class LabelAgreement:
    """The placement against its label on the placement's slice (see the module docstring)."""

    slice_inside: bool
    label_slices: Tuple[int, int]
    mid_offset_mm: float
    mean_distance_mm: float
    max_distance_mm: float
    dice: float
    trabecular_outside_fraction: float
    roi_outside_fraction: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready (a distance that could not be measured, no label on the slice, is None)."""
        def num(x, nd):
            return round(float(x), nd) if np.isfinite(x) else None

        return {
            "slice_inside_label": bool(self.slice_inside),
            "label_slices": [int(self.label_slices[0]), int(self.label_slices[1])],
            "mid_offset_mm": num(self.mid_offset_mm, 3),
            "mean_distance_mm": num(self.mean_distance_mm, 3),
            "max_distance_mm": num(self.max_distance_mm, 3),
            "dice": num(self.dice, 4),
            "trabecular_outside_label_fraction": num(self.trabecular_outside_fraction, 4),
            "roi_voxels_outside_label_fraction": num(self.roi_outside_fraction, 4),
        }

    def disagreements(self, mean_tol_mm: float, outside_max: float, mid_share: float, slice_mm: float) -> List[str]:
        """The checks that fail the tolerances, in plain words (empty when the two agree)."""
        out: List[str] = []
        lo, hi = self.label_slices
        height = (hi - lo + 1) * slice_mm
        if not self.slice_inside:  # the rest compares the outline with a label that is not on its slice
            return [f"the image's mid-vertebral slice lies outside the label's slices {lo}–{hi}"]
        if not self.mid_offset_mm <= mid_share * height:
            out.append(f"the image's mid-vertebral slice lies {self.mid_offset_mm:.1f} mm from the middle of the label's "
                       f"slices {lo}–{hi} (more than {mid_share:.0%} of its {height:.0f} mm height)")
        if not self.mean_distance_mm <= mean_tol_mm:
            out.append(f"the label's boundary lies {self.mean_distance_mm:.1f} mm on average from the body's cortex "
                       f"found in the image (tolerance {mean_tol_mm:.1f} mm)")
        if not self.roi_outside_fraction <= outside_max:
            out.append(f"{self.roi_outside_fraction:.1%} of the ROIs' voxels lie outside the label (at most "
                       f"{outside_max:.0%} expected)")
        return out


def label_agreement(volume: Volume, in_label: np.ndarray, placement: Placement,
                    label_slices: Tuple[int, int]) -> LabelAgreement:
    """Compare ``placement`` (made from the image) with the label's voxels ``in_label`` (on the CT's
    grid, [k, j, i]); ``label_slices`` is the label's axial extent (image slice indices)."""
    k = int(placement.slice_index)
    lo, hi = int(label_slices[0]), int(label_slices[1])
    mid_off = abs(k - 0.5 * (lo + hi)) * volume.slice_spacing()
    axis = volume.slice_axis()
    on_slice = np.take(in_label, k, axis=2 - axis) if 0 <= k < in_label.shape[2 - axis] else None
    if on_slice is None or not on_slice.any():
        return LabelAgreement(lo <= k <= hi, (lo, hi), mid_off, np.inf, np.inf, 0.0, 1.0, 1.0)
    outline = placement.outline
    inner = _unscaled_inner(placement)
    r_out_fn = _radius_fn(inner, outline.cortical_mm)
    r_in_fn = _radius_fn(np.asarray(outline.inner_contour, dtype=float), 0.0)
    mean_d, max_d = _boundary_distances(volume, on_slice, k, placement, r_out_fn)
    dice, outside = _areas(volume, on_slice, k, placement, r_out_fn, r_in_fn)
    return LabelAgreement(lo <= k <= hi, (lo, hi), mid_off, mean_d, max_d, dice, outside,
                          _roi_outside(volume, in_label, placement))


def _unscaled_inner(placement: Placement) -> np.ndarray:
    """The trabecular polygon before a conservative shrink (about its centroid, ``roi_scale``)."""
    inner = np.asarray(placement.outline.inner_contour, dtype=float)
    scale = float(placement.roi_scale or 1.0)
    if scale == 1.0:
        return inner
    c = inner.mean(axis=0)
    return c + (inner - c) / scale


def _radius_fn(poly: np.ndarray, grow_mm: float):
    """``r(angle)``: the polygon's radius (mm, from the outline's centre) at angle ``angle`` (from
    anterior towards the left), grown by ``grow_mm``."""
    return lambda angle: radius_at(poly, angle, grow_mm)


def _slice_lookup(volume: Volume, on_slice: np.ndarray, k: int, ras: np.ndarray) -> np.ndarray:
    """Whether each RAS point (on slice ``k``) falls in a labelled voxel of ``on_slice``."""
    axis = volume.slice_axis()
    ijk = np.floor(volume.ras_to_ijk_points(ras) + 0.5).astype(int)
    in_axes = [a for a in (0, 1, 2) if a != axis]  # IJK axes in the slice, in order (i before j)
    # on_slice is indexed in C order of the array: [the later IJK axis, the earlier one]
    a0, a1 = in_axes[1], in_axes[0]
    ok = ((ijk[:, a0] >= 0) & (ijk[:, a0] < on_slice.shape[0]) & (ijk[:, a1] >= 0) & (ijk[:, a1] < on_slice.shape[1]))
    out = np.zeros(len(ras), dtype=bool)
    out[ok] = on_slice[ijk[ok, a0], ijk[ok, a1]]
    return out


def _boundary_distances(volume: Volume, on_slice: np.ndarray, k: int, placement: Placement, r_out_fn
                        ) -> Tuple[float, float]:
    """Mean and largest distance (mm) from the label's boundary to the fitted cortex (between the
    outer outline and the trabecular boundary) over the anterior and lateral rays."""
    o = placement.outline
    half = np.radians(SECTOR_DEG)
    angles = np.linspace(-half, half, N_AGREEMENT_RAYS)
    radii = np.arange(0.0, MAX_RADIUS_MM + 1e-9, STEP_MM)
    dirs = np.outer(np.cos(angles), o.ap_axis) + np.outer(np.sin(angles), o.left_axis)
    pts = np.asarray(o.center, dtype=float)[None, None, :] + radii[None, :, None] * dirs[:, None, :]
    inside = _slice_lookup(volume, on_slice, k, pts.reshape(-1, 3)).reshape(len(angles), len(radii))
    first_out = np.argmax(~inside, axis=1)
    first_out[inside.all(axis=1)] = radii.size - 1
    r_label = radii[first_out]
    r_out = r_out_fn(angles)
    # a label may trace the outer cortex (TotalSegmentator) or the endosteal boundary (TPTBox's
    # body subregion): a boundary anywhere across the fitted cortex agrees
    d = np.maximum(0.0, np.maximum(r_label - r_out, r_out - o.cortical_mm - r_label))
    return float(np.mean(d)), float(np.max(d))


def _areas(volume: Volume, on_slice: np.ndarray, k: int, placement: Placement, r_out_fn, r_in_fn
           ) -> Tuple[float, float]:
    """Dice of the outline's and the label's areas (arch left out), and the share of the
    trabecular region outside the label dilated by one voxel; on the slice's voxel grid."""
    o = placement.outline
    axis = volume.slice_axis()
    in_axes = [a for a in (0, 1, 2) if a != axis]
    c = volume.ras_to_ijk_points(np.asarray(o.center, dtype=float))[0]
    win = [(max(0, int(c[a] - MAX_RADIUS_MM / volume.spacing[a])),
            min(on_slice.shape[n], int(c[a] + MAX_RADIUS_MM / volume.spacing[a]) + 2))
           for n, a in ((0, in_axes[1]), (1, in_axes[0]))]
    on_slice = on_slice[win[0][0]:win[0][1], win[1][0]:win[1][1]]
    rows, cols = np.indices(on_slice.shape)
    ijk = np.zeros((rows.size, 3))
    ijk[:, in_axes[1]] = rows.ravel() + win[0][0]
    ijk[:, in_axes[0]] = cols.ravel() + win[1][0]
    ijk[:, axis] = k
    d = volume.ijk_to_ras_points(ijk) - np.asarray(o.center, dtype=float)
    s, t = d @ o.ap_axis, d @ o.left_axis
    ang, rad = np.arctan2(t, s), np.hypot(s, t)
    outer = rad < r_out_fn(ang)
    trabecular = rad < r_in_fn(ang)
    label = on_slice.ravel().astype(bool) & (s >= -0.5 * o.depth_mm - ARCH_MARGIN_MM)
    denom = outer.sum() + label.sum()
    dice = 2.0 * np.count_nonzero(outer & label) / denom if denom else 0.0
    grown = _dilate(on_slice.astype(bool)).ravel()
    n_trab = np.count_nonzero(trabecular)
    outside = np.count_nonzero(trabecular & ~grown) / n_trab if n_trab else 1.0
    return float(dice), float(outside)


def _roi_outside(volume: Volume, in_label: np.ndarray, placement: Placement) -> float:
    """The share of the five ROIs' voxels (one slice) with no label voxel in their in-plane 3×3
    neighbourhood. The ROIs are built without the partial-volume margin ``measure_levels`` keeps
    (so slightly larger than measured: a stricter test)."""
    family = build_roi_family(placement.outline, volume.slice_spacing(), SHAPE_NAMES)
    axis = 2 - volume.slice_axis()
    in_arr = [a for a in (0, 1, 2) if a != axis]
    total = outside = 0
    for shape in family.shapes.values():
        vs = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
        idx = np.stack([vs.k, vs.j, vs.i])
        hit = np.zeros(vs.count, dtype=bool)
        for d0 in (-1, 0, 1):
            for d1 in (-1, 0, 1):
                q = idx.copy()
                q[in_arr[0]] = np.clip(q[in_arr[0]] + d0, 0, in_label.shape[in_arr[0]] - 1)
                q[in_arr[1]] = np.clip(q[in_arr[1]] + d1, 0, in_label.shape[in_arr[1]] - 1)
                hit |= in_label[q[0], q[1], q[2]]
        total += vs.count
        outside += int(np.count_nonzero(~hit))
    return outside / total if total else 1.0


def _dilate(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by one voxel (3×3 neighbourhood)."""
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def checked_image_placement(volume: Volume, in_label: np.ndarray, seed_ras, label_slices: Tuple[int, int],
                            level: str = "") -> Tuple[Optional[Placement], Optional[LabelAgreement], List[str]]:
    """The image's 3-D estimate of the vertebra a label marks, made from the label body's centre
    (``seed_ras``) exactly as for a click inside that body, and checked against the label:
    (placement, agreement, reasons it is not to be used). The placement is None when the image
    alone finds no body there; the reasons are empty when the two agree within the tolerances.
    Raises ``PlacementError`` when the body the image finds lies wholly outside the label's slices
    (a label of a disc, or one shifted a level along the spine): no placement is made from it."""
    try:
        placement = place_from_click(volume, seed_ras, level)
    except PlacementError as exc:
        return None, None, [f"the image alone finds no vertebral body at the label's centre ({exc.problem})"]
    agreement = label_agreement(volume, in_label, placement, label_slices)
    if not agreement.slice_inside and not _overlaps(volume, placement, label_slices):
        # a disc is never a body: the label's slices hold no body of their own
        lo, hi = label_slices
        raise PlacementError(
            f"{level + ': ' if level else ''}the label marks no vertebral body: the body the image shows at the label's "
            f"centre lies wholly outside the label's slices {lo}–{hi} (does the label mark an intervertebral disc, "
            "or is it shifted along the spine?).",
            "Check the segmentation and the label map (--label-map) for this level, or click inside the vertebral "
            "body instead (--point).")
    reasons = agreement.disagreements(mean_distance_tolerance_mm(volume), ROI_OUTSIDE_MAX, MID_OFFSET_SHARE,
                                      volume.slice_spacing())
    return placement, agreement, reasons


def _overlaps(volume: Volume, placement: Placement, label_slices: Tuple[int, int]) -> bool:
    """Whether the placed body's endplates (when found) overlap the label's slices."""
    sup, inf = placement.endplates_s
    if sup is None or inf is None:
        return True
    axis = volume.slice_axis()
    n = volume.slice_normal_ras()
    ends = []
    for q in (label_slices[0] - 0.5, label_slices[1] + 0.5):
        ijk = np.zeros(3)
        ijk[axis] = q
        ends.append(float(volume.ijk_to_ras_points(ijk)[0] @ n))
    return not (inf > max(ends) or sup < min(ends))
