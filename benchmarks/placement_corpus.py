"""The placement benchmark's corpus: real CTs with a label-made reference body, and a family of
synthetic vertebrae with known truth (``digital_phantom``), plus the clicks a user would make.

Real CTs are read from ``../shared/data`` (never copied into the project) and left out when absent:

* ``totalseg_example`` — 3 mm, model-made body labels (T12 = 19 … L4 = 23; QCT_BRIEF §7);
* the same CT with pairs of slices averaged (6 mm, ``thick_cases``): a stress case;
* ``tptbox_sample`` — a 1.5 mm crop of L2–L4, vertebra labels 21–23 and subregion 50 = body (its
  README); L2 and L4 are cut by the crop (``partial``: their mid-height is not in the image).

The synthetic family spans the cases the issue lists that the phantom can build: slice thickness
0.6–5 mm, mid-height on and between slices, osteoporotic with low cortical contrast, a
contrast-enhanced aorta against the body, axial rotation up to 30°, sagittal tilt ±20°, a wedge
fracture, osteophytes, a bone island, a scoliotic (coronally tilted) column and beam-hardening streaks
through the bodies (an image artefact: the noise-free model, the voxel oracle, does not hold them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import numpy as np

import bench_core as bc

SHARED = os.path.normpath(os.path.join(bc.ROOT, "..", "shared", "data"))
TOTALSEG = os.path.join(SHARED, "totalseg_example")
TPTBOX = os.path.join(SHARED, "tptbox_sample")
#: Clicks: ±IN_PLANE_MM about the body's centre, anywhere in the middle HEIGHT_SHARE of its height.
IN_PLANE_MM = 3.0
#: TotalSegmentator's "total" map (``total.nii.gz``): the whole vertebrae L1–L4 (the CLI's built-in map).
TOTAL_LABELS = {"L1": 31, "L2": 30, "L3": 29, "L4": 28}
HEIGHT_SHARE = 0.6
SPINE_BOX = ((-75.0, 75.0), (-75.0, 60.0), (-85.0, 85.0))


@dataclass
class Case:
    """One vertebra of one CT: the image, the reference body, and what the reference says."""

    ct: str
    level: str
    volume: object
    body: Optional[np.ndarray] = None  # label mask [k, j, i] (real CTs)
    truth: object = None  # LevelTruth (synthetic)
    spec: object = None  # PhantomSpec (synthetic: the noise-free model is the voxel oracle)
    partial: bool = False
    extra: Dict[str, object] = field(default_factory=dict)
    whole: Optional[np.ndarray] = None  # the whole vertebra's label mask [k, j, i] (real CTs that have one)

    def centre_and_height(self):
        """(centre RAS, lowest and highest height along the slice normal) of the reference body."""
        nrm = self.volume.slice_normal_ras()
        if self.truth is not None:
            c = np.asarray(self.truth.center_ras, dtype=float)
            h = 0.5 * self.truth.height_mm
            return c, float(c @ nrm - h), float(c @ nrm + h)
        ras = self.volume.ijk_to_ras_points(np.argwhere(self.body)[:, ::-1].astype(float))
        h = ras @ nrm
        return ras.mean(axis=0), float(h.min()), float(h.max())

    def clicks(self, n: int, seed: int) -> List[np.ndarray]:
        """``n`` clicks a user could make inside the body (see the module docstring)."""
        rng = np.random.default_rng(seed)
        nrm = self.volume.slice_normal_ras()
        u = self.volume.in_plane_anterior()
        v = np.cross(nrm, u)
        c, lo, hi = self.centre_and_height()
        margin = 0.5 * (1.0 - HEIGHT_SHARE)
        out = []
        for _ in range(n):
            z = lo + (hi - lo) * rng.uniform(margin, 1.0 - margin)
            du, dv = rng.uniform(-IN_PLANE_MM, IN_PLANE_MM, size=2)
            out.append(c + du * u + dv * v + (z - c @ nrm) * nrm)
        return out

    def reference_ap_axis(self) -> np.ndarray:
        """The body's AP direction in the image's axial plane: the truth's (synthetic), or the minor
        principal axis of the label's voxels over the middle of its height (real), signed anterior."""
        vol = self.volume
        nrm = vol.slice_normal_ras()
        u0 = vol.in_plane_anterior()
        if self.truth is not None:
            a = np.asarray(self.truth.ap_axis_ras, dtype=float)
        else:
            ras = vol.ijk_to_ras_points(np.argwhere(self.body)[:, ::-1].astype(float))
            _, lo, hi = self.centre_and_height()
            h = ras @ nrm
            mid = ras[(h >= lo + 0.2 * (hi - lo)) & (h <= hi - 0.2 * (hi - lo))]
            d = mid - mid.mean(axis=0)
            d = d - np.outer(d @ nrm, nrm)
            w, vec = np.linalg.eigh(d.T @ d)
            in_plane = [vec[:, i] for i in np.argsort(w) if abs(vec[:, i] @ nrm) < 0.5]
            a = in_plane[0]
        a = a - nrm * (a @ nrm)
        a = a / np.linalg.norm(a)
        return a if a @ u0 >= 0 else -a

    def posterior_ap_axis(self) -> Optional[np.ndarray]:
        """A second, anatomical reference for the AP direction of a real vertebra (None without a
        whole-vertebra label): from the centroid of its posterior elements (the whole vertebra's label
        minus the body's, over the body's height — pedicles, laminae, processes, bilaterally
        symmetric) to the body's centroid, in the axial plane. The label's principal axes and this
        direction are independent readings of the same axis; where they disagree, neither is exact."""
        if self.whole is None or self.body is None:
            return None
        vol = self.volume
        nrm = vol.slice_normal_ras()
        body = vol.ijk_to_ras_points(np.argwhere(self.body)[:, ::-1].astype(float))
        post = vol.ijk_to_ras_points(np.argwhere(self.whole & ~self.body)[:, ::-1].astype(float))
        _, lo, hi = self.centre_and_height()
        h = post @ nrm
        post = post[(h >= lo) & (h <= hi)]
        if post.shape[0] < 10:
            return None
        a = body.mean(axis=0) - post.mean(axis=0)
        a = a - nrm * (a @ nrm)
        return a / np.linalg.norm(a)

    def non_trabecular_voxels(self, voxels) -> int:
        """ROI voxels that are not trabecular bone of this body: for a synthetic case, voxels whose
        centre the noise-free model puts in cortex, disc, canal or a lesion; for a real CT, voxels
        outside the body label."""
        if self.truth is not None:
            from OsteoROILib.digital_phantom.render import analytic_hu

            ijk = np.column_stack([voxels.i, voxels.j, voxels.k]).astype(float)
            hu = analytic_hu(self.volume.ijk_to_ras_points(ijk), self.spec)
            return int(np.count_nonzero(np.abs(hu - self.truth.trabecular_hu) > 1e-3))
        return int(np.count_nonzero(~self.body[voxels.k, voxels.j, voxels.i]))


def real_cases() -> Iterator[Case]:
    """The vertebrae L1–L4 of the real CTs that are present."""
    import SimpleITK as sitk

    from OsteoROILib.io.image_files import read_volume

    if os.path.isfile(os.path.join(TOTALSEG, "ct.nii.gz")):
        ct = read_volume(os.path.join(TOTALSEG, "ct.nii.gz"))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TOTALSEG, "vertebral_bodies.nii.gz")))
        total = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TOTALSEG, "total.nii.gz")))
        for level, value in {"L1": 20, "L2": 21, "L3": 22, "L4": 23}.items():
            yield Case("totalseg 3 mm (real)", level, ct, body=lab == value, whole=total == TOTAL_LABELS[level])
        yield from thick_cases(ct, lab, total)
    if os.path.isfile(os.path.join(TPTBOX, "sub-ct_label-22_ct.nii.gz")):
        ct = read_volume(os.path.join(TPTBOX, "sub-ct_label-22_ct.nii.gz"))
        vert = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TPTBOX, "sub-ct_seg-vert_label-22_msk.nii.gz")))
        sub = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TPTBOX, "sub-ct_seg-subreg_label-22_msk.nii.gz")))
        axis = 2 - ct.slice_axis()
        for level, value in {"L2": 21, "L3": 22, "L4": 23}.items():
            body = (vert == value) & (sub == 50)
            ks = np.flatnonzero(np.any(np.moveaxis(body, axis, 0), axis=(1, 2)))
            partial = bool(ks.min() == 0 or ks.max() == body.shape[axis] - 1)
            yield Case("tptbox 1.5 mm (real)", level, ct, body=body, partial=partial, whole=vert == value)


def rebinned_pairs(ct, lab):
    """``ct`` with each pair of slices averaged (twice the slice thickness, with its partial volume)
    and the labels ``lab`` merged the same way (a voxel holds a label when either slice did)."""
    from OsteoROILib.io.volume import Volume

    axis = 2 - ct.slice_axis()
    arr = np.moveaxis(ct.array, axis, 0).astype(np.float32)
    n = arr.shape[0] // 2 * 2
    thick = np.moveaxis(0.5 * (arr[0:n:2] + arr[1:n:2]), 0, axis)
    m = ct.ijk_to_ras.copy()
    a = ct.slice_axis()
    m[:3, 3] += 0.5 * m[:3, a]
    m[:3, a] *= 2.0
    pairs = np.moveaxis(lab, axis, 0)
    merged = np.moveaxis(np.maximum(pairs[0:n:2], pairs[1:n:2]), 0, axis)
    return Volume(array=np.ascontiguousarray(thick), ijk_to_ras=m), merged


def thick_cases(ct, lab, total=None) -> Iterator[Case]:
    """The real 3 mm CT with each pair of slices averaged: 6 mm slices with their partial volume (a
    stress case thicker than the 4.25 mm CT the precision target was first missed on)."""
    vol, merged = rebinned_pairs(ct, lab)
    whole = rebinned_pairs(ct, total)[1] if total is not None else None
    for level, value in {"L1": 20, "L2": 21, "L3": 22, "L4": 23}.items():
        yield Case("totalseg, 6 mm (pairs of slices averaged)", level, vol, body=merged == value,
                   whole=None if whole is None else whole == TOTAL_LABELS[level])


def _family(quick: bool) -> Dict[str, dict]:
    noisy = {"noise_sigma": 12.0, "supersample": 3, "seed": 5, "extent_ras": SPINE_BOX}
    fam = {
        "2.5 mm, mid-height on a slice": {},
        "2.5 mm, mid-height between slices": {"_half_slice": True},
        "0.6 mm slices": {"spacing": (0.7, 0.7, 0.6)},
        "5 mm slices": {"spacing": (0.8, 0.8, 5.0)},
        "osteoporotic, low cortical contrast": {"trabecular_hu": (45, 40, 35, 30), "cortical_hu": 300.0},
        "contrast-enhanced aorta against the body": {"blood_hu": 300.0, "aorta_center_ras": (-20.0, 24.0)},
        "axial rotation 0-30°": {"rotation_deg": (0.0, 10.0, 20.0, 30.0)},
        "sagittal tilt +20°": {"spine_tilt_deg": (20.0, 0.0)},
        "sagittal tilt -20°": {"spine_tilt_deg": (-20.0, 0.0)},
        "wedge fracture (L2, 8 mm)": {"wedge_mm": (0.0, 8.0, 0.0, 0.0)},
        "osteophytes (L2 anterior, L3 left)": {"osteophytes": [
            {"level": "L2", "angle_deg": 0.0, "length_mm": 8.0, "width_mm": 12.0},
            {"level": "L3", "angle_deg": 90.0, "length_mm": 6.0, "width_mm": 12.0}]},
        "bone island (L3, 4 mm)": {"bone_islands": [{"level": "L3", "offset_mm": (6.0, 0.0, 4.0), "radius_mm": 4.0}]},
        "scoliotic (coronal tilt 15°)": {"spine_tilt_deg": (0.0, 15.0)},
        "beam-hardening streaks through the bodies": {"streaks": [
            {"angle_deg": 20.0, "hu": -60.0, "width_mm": 3.0}, {"angle_deg": 105.0, "hu": -40.0, "width_mm": 4.0}]},
    }
    if quick:
        fam = {k: fam[k] for k in list(fam)[:2]}
    return {k: {**noisy, **v} for k, v in fam.items()}


def synthetic_cases(quick: bool = False) -> Iterator[Case]:
    """Every level of every member of the synthetic family."""
    from OsteoROILib.digital_phantom import make_phantom
    from OsteoROILib.digital_phantom.spec import PhantomSpec

    for name, opts in _family(quick).items():
        opts = dict(opts)
        if opts.pop("_half_slice", False):
            # the grid moved half a slice along its slice axis: every mid-height falls half way
            base, _ = make_phantom(**{**opts, "noise_sigma": 0.0, "supersample": 1})
            centre = base.ijk_to_ras_points((np.asarray(base.dimensions, dtype=float) - 1) / 2)[0]
            opts.update(snap_to_level=False, center_ras=tuple(centre + 0.5 * base.slice_spacing()
                                                              * base.slice_normal_ras()))
        volume, truth = make_phantom(**opts)
        spec = PhantomSpec(**{**opts, "noise_sigma": 0.0})
        for lv in truth.levels:
            yield Case(f"synthetic: {name}", lv.name, volume, truth=lv, spec=spec)
