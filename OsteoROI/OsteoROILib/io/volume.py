"""CT volumes: a voxel array plus its IJK→RAS geometry, and the checks that it can be a CT.

Conventions (the same as Slicer's ``slicer.util.arrayFromVolume`` and
``vtkMRMLScalarVolumeNode.GetIJKToRASMatrix``):

* ``Volume.array`` is indexed ``[k, j, i]`` (slice, row, column).
* ``Volume.ijk_to_ras`` is a 4×4 matrix taking a voxel *centre* ``(i, j, k, 1)`` to RAS millimetres.
  Its 3×3 part is ``direction @ diag(spacing)``; direction cosines may be oblique.
* Files and DICOM are in LPS (ITK/SimpleITK convention); RAS = diag(−1, −1, 1) · LPS
  (QCT_BRIEF §6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import InputError
from .caveats import Caveat, add_caveat
from .hu_scale import check_hu_scale

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: A CT of a body always contains air (about −1000 HU); an image with no voxel below this is
#: not a CT in Hounsfield units (QCT_BRIEF §6: HU = stored × slope + intercept).
CT_MIN_HU_REQUIRED = -500.0


@dataclass
class Volume:
    """A 3-D scalar image in Hounsfield units with its geometry.

    ``facts`` holds DICOM facts (QCT_BRIEF §6) when the source had them; ``notes`` holds
    messages about how the volume was read (e.g. which DICOM series was chosen).
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    source: str = ""
    facts: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    #: Notes that can change a number (``caveats.Caveat``): printed, reported, flagging the rows they affect.
    caveats: List[Caveat] = field(default_factory=list)
    #: Keeps a SimpleITK image alive when ``array`` is a view of its buffer (no copy).
    owner: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.array = np.asarray(self.array)
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=float)
        if self.array.ndim != 3:
            raise InputError(
                f"The image has {self.array.ndim} dimensions; OsteoROI needs a 3-D CT volume.",
                "Load a 3-D CT series (not a single slice, not a time series or multi-channel image).",
            )
        if self.ijk_to_ras.shape != (4, 4):
            raise InputError("The IJK-to-RAS matrix must be 4×4.", "Pass the volume's 4×4 IJKToRAS matrix.")
        check_geometry(self.ijk_to_ras[:3, :3])

    # --- geometry -------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple:
        """Size as (ni, nj, nk) — columns, rows, slices (ITK/Slicer order)."""
        nk, nj, ni = self.array.shape
        return (ni, nj, nk)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing (mm) along i, j, k."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines in RAS: column c is the RAS direction of IJK axis c."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    @property
    def voxel_volume_mm3(self) -> float:
        key = self.ijk_to_ras.tobytes()  # computed once per matrix (asked for once per ROI)
        cached = self.__dict__.get("_voxel_volume_cache")
        if cached is None or cached[0] != key:
            cached = (key, float(abs(np.linalg.det(self.ijk_to_ras[:3, :3]))))
            self.__dict__["_voxel_volume_cache"] = cached
        return cached[1]

    @property
    def ras_to_ijk(self) -> np.ndarray:
        return self._inverse().copy()

    def _derived(self) -> Dict[str, Any]:
        """Quantities derived from ``ijk_to_ras`` (its inverse, the slice axis), computed once per
        matrix and recomputed whenever the matrix changes (the cache is keyed on its bytes)."""
        key = self.ijk_to_ras.tobytes()
        cached = self.__dict__.get("_derived_cache")
        if cached is None or cached[0] != key:
            direction = self.ijk_to_ras[:3, :3] / np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)
            cached = (key, {"inverse": np.linalg.inv(self.ijk_to_ras),
                            "slice_axis": int(np.argmax(np.abs(direction[2, :])))})
            self.__dict__["_derived_cache"] = cached
        return cached[1]

    def _inverse(self) -> np.ndarray:
        """The inverse of ``ijk_to_ras`` (cached; do not modify)."""
        return self._derived()["inverse"]

    def ijk_to_ras_points(self, ijk) -> np.ndarray:
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_ijk_points(self, ras) -> np.ndarray:
        """Continuous IJK coordinates of RAS points (voxel centres are at integers)."""
        ras = np.atleast_2d(np.asarray(ras, dtype=float))
        inv = self._inverse()
        return ras @ inv[:3, :3].T + inv[:3, 3]

    def contains_ras(self, ras) -> np.ndarray:
        """True for RAS points that lie within the image's voxel grid (incl. half a voxel margin)."""
        ijk = self.ras_to_ijk_points(ras)
        upper = np.asarray(self.dimensions, dtype=float) - 0.5
        return np.all((ijk >= -0.5) & (ijk <= upper), axis=1)

    def slice_axis(self) -> int:
        """The IJK axis (0, 1 or 2) most nearly along S: the image's axial slice stacking axis."""
        return self._derived()["slice_axis"]

    def slice_normal_ras(self) -> np.ndarray:
        """Unit normal of the image's axial slices, pointing superior."""
        n = self.direction[:, self.slice_axis()].copy()
        return n if n[2] >= 0 else -n

    def slice_spacing(self) -> float:
        return float(self.spacing[self.slice_axis()])

    def in_plane_anterior(self) -> np.ndarray:
        """RAS anterior (0, 1, 0) projected into the image's axial slice plane, normalised."""
        n = self.slice_normal_ras()
        a = np.array([0.0, 1.0, 0.0])
        a = a - n * float(a @ n)
        norm = np.linalg.norm(a)
        if norm < 1e-6:  # slices are coronal: no anterior direction in plane
            raise InputError(
                "The image's slices are not axial enough to define an anterior direction.",
                "Reformat the CT to axial slices.",
            )
        return a / norm

    def nearest_slice_index(self, ras) -> int:
        """Index along the slice axis of the slice nearest to a RAS point."""
        return int(np.round(self.ras_to_ijk_points(ras)[0][self.slice_axis()]))

    # --- SimpleITK ------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image, source: str = "", facts=None, notes=None) -> "Volume":
        import SimpleITK as sitk

        dim = image.GetDimension()
        if dim != 3:
            raise InputError(
                f"The image has {dim} dimensions; OsteoROI needs a 3-D CT volume.",
                "Load a 3-D CT series (not a single slice, not a time series).",
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"The image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
                "(colour or vector image); a CT has one.",
                "Load the original grey-scale CT.",
            )
        spacing = np.asarray(image.GetSpacing(), dtype=float)
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise InputError(
                f"The image's voxel spacing {tuple(spacing)} is not positive.",
                "Fix the file's header (spacing must be > 0 mm on every axis).",
            )
        direction_lps = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        origin_lps = np.asarray(image.GetOrigin(), dtype=float)
        m = np.eye(4)
        m[:3, :3] = LPS_TO_RAS @ direction_lps @ np.diag(spacing)
        m[:3, 3] = LPS_TO_RAS @ origin_lps
        # A read-only view of the image's buffer: no second copy of a large CT in memory.
        array = sitk.GetArrayViewFromImage(image)
        return cls(array=array, ijk_to_ras=m, source=source, facts=dict(facts or {}), notes=list(notes or []),
                   owner=image)

    def sitk_grid(self) -> Dict[str, list]:
        """The voxel grid in SimpleITK's terms (LPS): ``size``, ``origin``, ``spacing``, ``direction``
        -- from this volume's own geometry (which DICOM slice positions may have corrected after
        reading), never from the image it was read from."""
        return {
            "size": [int(d) for d in self.dimensions],
            "origin": [float(o) for o in (LPS_TO_RAS @ self.ijk_to_ras[:3, 3])],
            "spacing": [float(s) for s in self.spacing],
            "direction": [float(d) for d in (LPS_TO_RAS @ self.direction).ravel()],
        }

    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array)
        grid = self.sitk_grid()
        image.SetSpacing(grid["spacing"])
        image.SetDirection(grid["direction"])
        image.SetOrigin(grid["origin"])
        return image

    def describe(self) -> Dict[str, Any]:
        """The `volume` block of a result: file, size, spacing, geometry and DICOM facts."""
        info: Dict[str, Any] = {
            "file": self.source,
            "size": [int(d) for d in self.dimensions],
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "ijk_to_ras": [[round(float(x), 6) for x in row] for row in self.ijk_to_ras],
        }
        if self.facts:
            info["dicom"] = dict(self.facts)
        if self.notes:
            info["notes"] = list(self.notes)
        if self.caveats:
            info["caveats"] = [c.to_dict() for c in self.caveats]
        return info


def check_geometry(matrix3) -> None:
    """Refuse zero/negative spacing and singular or non-finite direction matrices."""
    m = np.asarray(matrix3, dtype=float)
    if not np.all(np.isfinite(m)):
        raise InputError("The image geometry contains NaN or infinite values.", "Fix the file's header.")
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise InputError(
            f"The image's voxel spacing {tuple(np.round(spacing, 6))} is not positive.",
            "Fix the file's header (spacing must be > 0 mm on every axis).",
        )
    direction = m / spacing
    if abs(np.linalg.det(direction)) < 1e-3:
        raise InputError(
            "The image's direction matrix is singular (its axes are parallel).",
            "Fix the file's header: the three direction cosines must be independent.",
        )


#: The values a CT can hold: 16-bit signed storage with slope 1 (extended-scale CT reaches about
#: +30 000 HU for metal). A voxel outside is corrupt data, not tissue.
CT_STORAGE_RANGE_HU = (-32768.0, 32767.0)


def check_ct(volume: Volume) -> None:
    """Refuse images that cannot be a CT in Hounsfield units: empty, non-finite or out-of-range voxels,
    another modality, no air, or anatomy that says the HU scale is off (``hu_scale.check_hu_scale``).
    Adds a note of what was checked, and a caveat for what could not be checked (no air in a crop)."""
    a = volume.array
    if a.size == 0:
        raise InputError("The image is empty (0 voxels).", "Load a CT volume with data.")
    modality = volume.facts.get("modality")
    if modality and modality != "CT":
        raise InputError(
            f"The DICOM modality is {modality}, not CT.",
            "OsteoROI measures Hounsfield units; load a CT series.",
        )
    _check_finite_and_range(a)
    if a.dtype.kind in "biu" and a.ndim >= 1:
        lowest = _lowest_unless_below(a, CT_MIN_HU_REQUIRED)
    else:
        lowest = float(a.min())  # one pass, no temporary the size of the volume
    scale = _hu_scale_or_no_air(a, lowest)
    summary = scale.summary()
    if summary not in volume.notes:
        volume.notes.append(summary)
    text = scale.caveat_text()
    if text:
        add_caveat(volume.caveats, Caveat("hu_scale_partly_checked", text))


def _hu_scale_or_no_air(a: np.ndarray, lowest: float):
    """The anatomy check; an image with nothing below ``CT_MIN_HU_REQUIRED`` passes only when fat and soft
    tissue are both where a CT in HU puts them (a tight crop without air)."""
    if lowest < CT_MIN_HU_REQUIRED:
        return check_hu_scale(a)
    try:
        scale = check_hu_scale(a)
    except InputError as exc:
        if "Probable cause" in exc.problem:
            raise
        scale = None
    if scale is None or len(scale.found) < 2:
        raise InputError(
            f"This does not look like a CT in Hounsfield units: its lowest value is {lowest:g}, "
            f"but a body CT contains air near -1000 HU (nothing here is below {CT_MIN_HU_REQUIRED:g}).",
            "Load a CT volume (not MR, not a mask), with rescale slope/intercept applied.",
        )
    return scale


def _check_finite_and_range(a: np.ndarray) -> None:
    """Refuse NaN/infinite voxels and values no CT storage holds (``CT_STORAGE_RANGE_HU``)."""
    if a.dtype.kind in "biu" and a.dtype.itemsize <= 2:
        return  # 8/16-bit integers: always finite; unsigned 16-bit storage is judged on anatomy
    lo, hi = float(a.min()), float(a.max())
    if a.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        # min/max propagate NaN and reach ±inf: only a bad image pays for the full count.
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise InputError(
            f"The image contains {bad} NaN or infinite voxels.",
            "Re-export the CT without missing values (or fill them) and try again.",
        )
    if lo < CT_STORAGE_RANGE_HU[0] or hi > CT_STORAGE_RANGE_HU[1]:
        bad = int(np.count_nonzero((a < CT_STORAGE_RANGE_HU[0]) | (a > CT_STORAGE_RANGE_HU[1])))
        raise InputError(
            f"The image holds {bad} voxel(s) outside the range a CT can store ({lo:.4g} to {hi:.4g}; a CT "
            f"holds {CT_STORAGE_RANGE_HU[0]:g} to {CT_STORAGE_RANGE_HU[1]:g} HU): the data are corrupt.",
            "Re-export the CT from the scanner or PACS; do not measure a corrupt file.",
        )


#: Voxels per block that ``_lowest_unless_below`` scans at once (4 slices of 512×512).
_SCAN_BLOCK_VOXELS = 1 << 20


def _lowest_unless_below(a: np.ndarray, threshold: float) -> float:
    """The minimum of an integer array, or the minimum of its first blocks (along axis 0) once that is
    below ``threshold``.

    ``check_ct`` only needs to know whether some voxel is below ``threshold`` (and the true minimum
    for the message when none is): both answers are the same as ``a.min()`` gives. Integer voxels
    cannot be NaN, and a CT holds air in its first slices, so the scan of a whole volume (~15 ms for
    512×512×300) usually stops after one block.
    """
    step = max(1, _SCAN_BLOCK_VOXELS // max(1, a[0].size))
    lowest = None
    for start in range(0, a.shape[0], step):
        low = a[start:start + step].min()
        if lowest is None or low < lowest:
            lowest = low
        if lowest < threshold:
            break
    return float(lowest)


def optional_float(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
