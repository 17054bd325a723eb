"""A digital abdomen CT phantom with ground truth: lumbar vertebrae L1–L4 and a calibration phantom.

Used by ``osteoroi demo``, by the tests and by the benchmarks. Everything is defined
analytically in physical **RAS millimetres** (x → patient right, y → anterior, z → superior),
independently of the voxel grid; the image *samples* that anatomy on a grid of any spacing and
orientation (RAS, LPS or oblique direction cosines).

Quick use::

    from OsteoROILib.phantom import make_phantom
    volume, truth = make_phantom()                     # small, noise-free, < 1 s
    volume, truth = make_phantom(noise_sigma=15, seed=3, supersample=3, orientation="LPS")
    l1 = truth.level("L1")
    outline = l1.outline()                             # roifamily.BodyOutline of L1's mid plane
    truth.to_dict()                                    # JSON-friendly ground truth

Anatomy (all sizes settable, see :class:`PhantomSpec`)
------------------------------------------------------
* **Vertebral bodies** L1–L4 (top to bottom), stacked along S with intervertebral **discs**
  (``disc_hu``) between them; the column shares one axis at ``spine_center_ras`` (x, y).
  Each body is a prism along S whose axial cross-section is a superellipse
  ``|s/a|^p + |t/b|^p ≤ 1`` (``p = body_exponent``; 2 = ellipse, larger = boxier) with
  ``a = depth/2`` along the body's AP axis ``s`` (towards anterior) and ``b = width/2`` along
  ``t`` (towards the patient's left). The body spans ``|z − z_c| ≤ height/2``.
* **Cortical shell**: the **trabecular** interior is the superellipse with semi-axes
  ``a − cortical_mm`` and ``b − cortical_mm`` (exactly the inner boundary that
  :class:`~OsteoROILib.roifamily.BodyOutline` assumes), between the endplates shrunk by
  ``endplate_mm``; the rest of the body is cortex (``cortical_hu``).
* **Axial rotation** ``rotation_deg`` per level, about +S (right-hand rule, seen from the head):
  a positive angle turns the anterior direction from +A towards the patient's **left** (−R);
  the AP axis is ``(−sin θ, cos θ, 0)``. Body, disc, canal and posterior elements rotate together.
* **Spinal canal** (``canal_hu``, fluid): an elliptic tube directly posterior to the body
  (touching its posterior surface), continuous through all levels and discs.
* **Posterior elements** (``posterior_hu``, dense bone): a neural arch (pedicles and laminae)
  around the canal, a spinous process pointing posteriorly and two transverse processes,
  each over the central 80 % of the body's height.
* **Context vertebrae** (``context_vertebrae``): one more body above (T12) and below (L5), copies
  of the first/last level, so that a large field of view shows a continuing spine; beyond
  them the column continues as disc material. They are in ``truth.context_levels``, not in
  ``truth.levels``.
* **Soft tissue**: an elliptic body contour (``body_semi_axes_mm``, centre ``body_center_ras``)
  of subcutaneous fat (``fat_hu``) ``fat_mm`` thick (at the ends of the axes; the inner contour is
  the ellipse with semi-axes reduced by ``fat_mm``) around muscle/soft tissue (``muscle_hu``),
  an aorta (``blood_hu``) anterior-left of the spine; air (``air_hu``) outside.
* **Calibration phantom** (``calibration_phantom``): a water-equivalent block (``block_hu``)
  under the patient (posterior, towards P) holding rods (cylinders along S) of known mineral
  density; and a patient **table** (``table_hu``) under it.

Scanner model
-------------
Mineral densities map to HU linearly, ``HU = intercept + slope × density`` (``scanner_slope``
HU per mg/cm³, ``scanner_intercept`` HU), for the trabecular bone of each level and for the
rods; the density unit is ``density_unit`` (e.g. "mg/cm3 HA" or "mg/cm3 K2HPO4"). The truth gives
both ``trabecular_density`` and ``trabecular_hu`` for each level and ``density`` and
``expected_hu`` for each rod. If ``rod_water_densities`` are given (Mindways-style two-component
rods, QCT_BRIEF §4), a rod's HU is instead
``(ρ_water − 999.6) + (slope + 0.2174)·ρ_K2HPO4 + intercept``, i.e. the rods follow the Mindways
model whose σ_CT, β_CT are exactly ``scanner_slope``/``scanner_intercept``. All other tissues are
given directly in HU. Optional additive Gaussian noise (``noise_sigma`` HU, ``seed``) is added to
every voxel; it is deterministic: voxel slice ``k`` uses ``numpy.random.default_rng([seed, k])``.

Sampling
--------
``supersample = f`` averages f×f×f sub-samples per voxel (partial-volume edges). Only voxels
whose 3×3×3 neighbourhood of voxel-centre values is not uniform are supersampled (a boundary
crossing a voxel always separates two of those 27 centres, unless a feature thinner than a voxel
separates identical materials, which this anatomy does not have at sensible spacings); all other
voxels take the value at their centre. Hence noise-free **interior voxels equal the configured
HU exactly** (in the stored dtype: ``numpy.float32(hu)``, or ``round(hu)`` for int16). With
``supersample = 1`` every voxel is its centre's value. The volume is built slab by slab
(a few slices at a time, optionally on several threads); no full-size float64 array is made.

Grid
----
``spacing`` (i, j, k) mm; ``orientation`` "RAS" (i→R, j→A, k→S), "LPS" (i→L, j→P, k→S, the usual
DICOM axial layout), "oblique" (LPS rotated by ``oblique_degrees`` about R, A and S) or an explicit
3×3 direction matrix (columns: RAS directions of i, j, k). By default the grid covers the
anatomy's bounding box (``extent_ras``) and is shifted (by less than a voxel) so that the first
level's centre is a voxel centre (``snap_to_level``); with the default 25 mm bodies and 10 mm discs
the levels are 35 mm apart, a multiple of the default 2.5 mm slices, so every mid-vertebral
plane of the default phantom is a voxel-centre slice. The truth gives each level's nearest slice
(``mid_slice_index``) and how far the mid plane is from it (``mid_slice_offset_mm``) for any grid.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..roi.outline import BodyOutline
from ..io.volume import LPS_TO_RAS, Volume

__all__ = [
    "PhantomSpec",
    "PhantomTruth",
    "LevelTruth",
    "RodTruth",
    "ScannerTruth",
    "CALIBRATION_PRESETS",
    "generate",
    "make_phantom",
    "analytic_hu",
]

#: Rod sets of common calibration phantoms (QCT_BRIEF §4). Certificate values differ per serial;
#: these are defaults and examples.
CALIBRATION_PRESETS: Dict[str, Dict[str, Any]] = {
    "qrm-bdc-6": {
        "unit": "mg/cm3 HA",
        "names": ("R0", "R100", "R200", "R400", "R600", "R800"),
        "densities": (0.0, 100.0, 200.0, 400.0, 600.0, 800.0),
        "water": None,
    },
    "qrm-bdc-3": {
        "unit": "mg/cm3 HA",
        "names": ("R100", "R400", "R800"),
        "densities": (100.0, 400.0, 800.0),
        "water": None,
    },
    "b-mas-200": {
        "unit": "mg/cm3 HA",
        "names": ("R0", "R50", "R100", "R150", "R200"),
        "densities": (0.0, 50.0, 100.0, 150.0, 200.0),
        "water": None,
    },
    "mindways-example": {
        "unit": "mg/cm3 K2HPO4",
        "names": ("A", "B", "C", "D", "E"),
        "densities": (-51.83, -53.40, 58.88, 157.05, 375.83),
        "water": (1012.25, 1056.95, 1103.57, 1119.52, 923.20),
    },
}

#: Mindways Model 3 constants (QCT_BRIEF §4): σ_CT = σ_ref − 0.2174, β_CT = β_ref + 999.6.
MINDWAYS_SLOPE_OFFSET = 0.2174
MINDWAYS_INTERCEPT_OFFSET = 999.6

_SPINE_NAMES = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]


def _neighbour_name(name: str, step: int) -> str:
    if name in _SPINE_NAMES:
        k = _SPINE_NAMES.index(name) + step
        if 0 <= k < len(_SPINE_NAMES):
            return _SPINE_NAMES[k]
    return f"{name}{'-above' if step < 0 else '-below'}"


# ----------------------------------------------------------------------------------------------
# Specification
# ----------------------------------------------------------------------------------------------
@dataclass
class PhantomSpec:
    """Every option of the phantom, with defaults that build a small, quick, noise-free phantom.

    Per-level options accept one number (used for every level) or one number per level, in the
    order of ``level_names`` (top to bottom). Lengths are mm, angles degrees, values HU unless
    said otherwise.

    Grid
        ``spacing`` — voxel size (i, j, k) in mm (default 1.0 × 1.0 × 2.5).
        ``orientation`` — "RAS", "LPS", "oblique" or a 3×3 direction matrix (columns = RAS
        directions of the i, j, k axes; must be orthonormal).
        ``oblique_degrees`` — rotations (about R, A, S, applied in that order) of the LPS
        direction matrix for ``orientation="oblique"``.
        ``size`` — (ni, nj, nk); default: enough voxels to cover ``extent_ras``.
        ``extent_ras`` — ((xmin, xmax), (ymin, ymax), (zmin, zmax)) RAS mm the grid must cover;
        default: the patient contour, the calibration phantom and table, and the column from
        the disc above the first level to the disc below the last, plus 5–10 mm.
        ``center_ras`` — the grid's centre; default the centre of ``extent_ras``.
        ``snap_to_level`` — shift the grid by < 1 voxel so that the first level's centre is a
        voxel centre (default True).

    Vertebrae
        ``level_names`` — names, top to bottom (default L1–L4).
        ``trabecular_density`` — trabecular mineral density per level in ``density_unit``
        (default 140, 116, 96, 72 → 165, 135, 110, 80 HU with the default scanner: normal to
        osteoporotic); ``trabecular_hu`` — if given, sets the trabecular HU per level directly
        and the density is derived, ``(HU − intercept)/slope``.
        ``cortical_hu`` (800), ``cortical_mm`` (shell thickness, 1.5), ``endplate_mm``
        (endplate thickness, default = ``cortical_mm``).
        ``depth_mm`` (AP, default 30, 31, 32, 33), ``width_mm`` (lateral, 42, 44, 46, 48),
        ``height_mm`` (25), ``disc_mm`` (disc height between bodies, 10), ``disc_hu`` (80).
        ``rotation_deg`` — axial rotation per level about +S (0); positive turns anterior
        towards the patient's left.
        ``body_exponent`` — superellipse exponent p of the body's cross-section (2 = ellipse).
        ``spine_center_ras`` — (x, y) of the column's axis (the bodies' centres) (0, 0).
        ``context_vertebrae`` — add the neighbouring bodies above and below (default True).
        ``canal_depth_mm`` (16) / ``canal_width_mm`` (22) / ``canal_hu`` (10): spinal canal.
        ``posterior_hu`` (500): pedicles, laminae, spinous and transverse processes;
        ``arch_mm`` (6) arch thickness, ``spinous_mm`` (28) spinous process length,
        ``transverse_mm`` (22) transverse process length.

    Hard cases (issue #3; all off by default — the defaults build exactly the plain phantom)
        ``wedge_mm`` — anterior height loss per level (mm, default 0): a wedge fracture. The
        superior endplate tilts about the body's posterior edge: at AP coordinate ``s`` the body
        ends at ``height/2 − wedge·(s + depth/2)/depth`` above its centre (full height posteriorly,
        ``height − wedge`` anteriorly); disc fills the space above it; the endplate keeps its
        thickness. ``LevelTruth.central_mid_s`` gives the mid-height on the body's AP centre line.
        ``osteophytes`` — bony spurs on the outer rim, a sequence of dicts: ``level`` (name),
        ``angle_deg`` (direction in the body's frame: 0 = anterior, +90 = patient left, −90 =
        right), ``length_mm`` (how far it sticks out beyond the rim, 6), ``width_mm`` (its base
        along the rim, 10; it tapers to a point), ``z_mm`` (centre, mm from the body's centre along
        its axis, 0) and ``height_mm`` (axial extent, default the body's height), ``hu`` (600).
        ``bone_islands`` — dense spheres, a sequence of dicts: ``radius_mm`` (4), ``hu`` (1000) and
        either ``center_ras`` or ``level`` with ``offset_mm`` = (anterior, left, axial) mm in the
        body's frame from its centre (default (0, 0, 0)).
        ``spine_tilt_deg`` — (about R, about A) degrees, default (0, 0): the whole column (bodies,
        discs, canal, posterior elements) is rotated about the point (``spine_center_ras``, S = 0),
        first about R (sagittal tilt, a positive angle turns the column's top towards anterior),
        then about A; the truth's centres and axes (``normal_ras`` = the vertebra's own axis)
        follow it. The soft tissue, aorta and calibration phantom do not move.

    Body and tissues
        ``body_semi_axes_mm`` — (lateral, AP) semi-axes of the skin contour (150, 110);
        ``body_center_ras`` — its centre (x, y) (0, 25); ``fat_mm`` (15) subcutaneous fat;
        ``muscle_hu`` (40), ``fat_hu`` (−100), ``air_hu`` (−1000).
        ``aorta`` (True), ``aorta_center_ras`` (x, y) (−22, 35), ``aorta_radius_mm`` (11),
        ``blood_hu`` (50, unenhanced blood).
        ``table`` (True), ``table_hu`` (−200), ``table_mm`` (thickness 10).

    Calibration phantom
        ``calibration_phantom`` (True); ``calibration_preset`` — a key of
        :data:`CALIBRATION_PRESETS` ("qrm-bdc-6" default, "qrm-bdc-3", "b-mas-200",
        "mindways-example"); ``rod_densities`` / ``rod_names`` / ``rod_water_densities``
        override the preset; ``density_unit`` — default the preset's unit.
        ``rod_radius_mm`` (6), ``rod_pitch_mm`` (centre distance, 20), ``block_hu`` (0),
        ``block_height_mm`` (30). Rods lie side by side along x, the first at patient right.

    Scanner and sampling
        ``scanner_slope`` (1.25 HU per mg/cm³), ``scanner_intercept`` (−10 HU),
        ``noise_sigma`` (0 = noise-free), ``seed`` (0), ``supersample`` (1 = no partial volume;
        f → f³ sub-samples per edge voxel), ``dtype`` ("float32" or "int16"),
        ``workers`` (threads; default min(2, CPUs)).
    """

    # grid
    spacing: Sequence[float] = (1.0, 1.0, 2.5)
    orientation: Any = "RAS"
    oblique_degrees: Sequence[float] = (6.0, -4.0, 8.0)
    size: Optional[Sequence[int]] = None
    extent_ras: Optional[Sequence[Sequence[float]]] = None
    center_ras: Optional[Sequence[float]] = None
    snap_to_level: bool = True
    # vertebrae
    level_names: Sequence[str] = ("L1", "L2", "L3", "L4")
    trabecular_density: Any = (140.0, 116.0, 96.0, 72.0)
    trabecular_hu: Any = None
    cortical_hu: Any = 800.0
    cortical_mm: Any = 1.5
    endplate_mm: Any = None
    depth_mm: Any = (30.0, 31.0, 32.0, 33.0)
    width_mm: Any = (42.0, 44.0, 46.0, 48.0)
    height_mm: Any = 25.0
    rotation_deg: Any = 0.0
    body_exponent: Any = 2.0
    disc_mm: float = 10.0
    disc_hu: float = 80.0
    spine_center_ras: Sequence[float] = (0.0, 0.0)
    context_vertebrae: bool = True
    canal_depth_mm: float = 16.0
    canal_width_mm: float = 22.0
    canal_hu: float = 10.0
    posterior_hu: float = 500.0
    arch_mm: float = 6.0
    spinous_mm: float = 28.0
    transverse_mm: float = 22.0
    # body and tissues
    body_semi_axes_mm: Sequence[float] = (150.0, 110.0)
    body_center_ras: Sequence[float] = (0.0, 25.0)
    fat_mm: float = 15.0
    muscle_hu: float = 40.0
    fat_hu: float = -100.0
    air_hu: float = -1000.0
    aorta: bool = True
    aorta_center_ras: Sequence[float] = (-22.0, 35.0)
    aorta_radius_mm: float = 11.0
    blood_hu: float = 50.0
    table: bool = True
    table_hu: float = -200.0
    table_mm: float = 10.0
    # calibration phantom
    calibration_phantom: bool = True
    calibration_preset: str = "qrm-bdc-6"
    rod_densities: Optional[Sequence[float]] = None
    rod_names: Optional[Sequence[str]] = None
    rod_water_densities: Optional[Sequence[float]] = None
    density_unit: Optional[str] = None
    rod_radius_mm: float = 6.0
    rod_pitch_mm: float = 20.0
    block_hu: float = 0.0
    block_height_mm: float = 30.0
    # scanner and sampling
    scanner_slope: float = 1.25
    scanner_intercept: float = -10.0
    noise_sigma: float = 0.0
    seed: int = 0
    supersample: int = 1
    dtype: str = "float32"
    workers: Optional[int] = None
    # hard cases (defaults: none; see _HARD_CASE_DEFAULTS)
    wedge_mm: Any = 0.0
    osteophytes: Sequence[Dict[str, Any]] = ()
    bone_islands: Sequence[Dict[str, Any]] = ()
    spine_tilt_deg: Sequence[float] = (0.0, 0.0)

    def to_dict(self) -> Dict[str, Any]:
        d = _jsonable(asdict(self))
        # options added for the hard cases appear only when used, so the plain phantom's
        # description is unchanged
        for key, default in _HARD_CASE_DEFAULTS.items():
            if key in d and d[key] == default:
                del d[key]
        return d


_HARD_CASE_DEFAULTS: Dict[str, Any] = {"wedge_mm": 0.0, "osteophytes": [], "bone_islands": [],
                                       "spine_tilt_deg": [0.0, 0.0]}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


# ----------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------
@dataclass
class LevelTruth:
    """Ground truth of one vertebral level (all positions RAS mm, axes unit RAS vectors).

    ``center_ras`` is the body's centre at mid-height (middle of the outer outline);
    ``superior_endplate_s``/``inferior_endplate_s`` are the S coordinates of the outer endplate
    surfaces; ``ap_axis_ras`` points anterior, ``left_axis_ras`` to the patient's left,
    ``normal_ras`` superior. ``depth_mm``/``width_mm`` are outer sizes; the trabecular region is
    the superellipse (exponent ``body_exponent``) with semi-axes ``depth/2 − cortical_mm`` and
    ``width/2 − cortical_mm`` within ``|S − centre_S| ≤ height/2 − endplate_mm``.
    ``mid_slice_index``/``mid_slice_offset_mm``: the image slice (index along the image's slice
    axis) nearest the mid plane and the signed distance (mm, along +S) from that slice's plane to
    the mid plane (0 when the mid plane is a voxel-centre slice). ``center_ijk``: the voxel
    nearest the centre (i, j, k).
    """

    name: str
    trabecular_density: float
    density_unit: str
    trabecular_hu: float
    cortical_hu: float
    center_ras: np.ndarray
    superior_endplate_s: float
    inferior_endplate_s: float
    ap_axis_ras: np.ndarray
    left_axis_ras: np.ndarray
    normal_ras: np.ndarray
    depth_mm: float
    width_mm: float
    height_mm: float
    cortical_mm: float
    endplate_mm: float
    rotation_deg: float
    body_exponent: float
    mid_slice_index: Optional[int] = None
    mid_slice_offset_mm: Optional[float] = None
    center_ijk: Optional[Tuple[int, int, int]] = None
    wedge_mm: float = 0.0

    @property
    def central_mid_s(self) -> float:
        """Mid-height on the body's AP centre line, along ``normal_ras`` from the origin: the
        centre's, lowered by a quarter of the wedge's anterior height loss (``wedge_mm``)."""
        return float(np.dot(self.center_ras, self.normal_ras)) - self.wedge_mm / 4.0

    def inner_contour(self, n_points: int = 360) -> Optional[np.ndarray]:
        """Trabecular boundary as an N×2 polygon (columns s = anterior, t = left, mm), or None
        for an elliptic body (whose inner boundary is BodyOutline's default ellipse).

        Vertices lie on the (convex) boundary, so the polygon is inside the true region.
        """
        if self.body_exponent == 2.0:
            return None
        a = self.depth_mm / 2.0 - self.cortical_mm
        b = self.width_mm / 2.0 - self.cortical_mm
        return superellipse_polygon(a, b, self.body_exponent, n_points)

    @property
    def density_mg_cm3(self) -> float:
        """Alias of ``trabecular_density`` (its unit is ``density_unit``)."""
        return float(self.trabecular_density)

    def outline(self) -> BodyOutline:
        """The body's outline on its mid-vertebral axial plane, for :func:`roifamily.build_roi_family`."""
        return BodyOutline(
            center=np.array(self.center_ras, dtype=float),
            ap_axis=np.array(self.ap_axis_ras, dtype=float),
            normal=np.array(self.normal_ras, dtype=float),
            depth_mm=float(self.depth_mm),
            width_mm=float(self.width_mm),
            cortical_mm=float(self.cortical_mm),
            inner_contour=self.inner_contour(),
            meta={"level": self.name, "source": "phantom truth"},
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "trabecular_density": round(float(self.trabecular_density), 6),
            "density_unit": self.density_unit,
            "trabecular_hu": round(float(self.trabecular_hu), 6),
            "cortical_hu": round(float(self.cortical_hu), 6),
            "center_ras": [round(float(x), 6) for x in self.center_ras],
            "superior_endplate_s": round(float(self.superior_endplate_s), 6),
            "inferior_endplate_s": round(float(self.inferior_endplate_s), 6),
            "ap_axis_ras": [round(float(x), 9) for x in self.ap_axis_ras],
            "left_axis_ras": [round(float(x), 9) for x in self.left_axis_ras],
            "normal_ras": [round(float(x), 9) for x in self.normal_ras],
            "depth_mm": float(self.depth_mm),
            "width_mm": float(self.width_mm),
            "height_mm": float(self.height_mm),
            "cortical_mm": float(self.cortical_mm),
            "endplate_mm": float(self.endplate_mm),
            "rotation_deg": float(self.rotation_deg),
            "body_exponent": float(self.body_exponent),
            "mid_slice_index": self.mid_slice_index,
            "mid_slice_offset_mm": None if self.mid_slice_offset_mm is None else round(self.mid_slice_offset_mm, 6),
            "center_ijk": None if self.center_ijk is None else [int(x) for x in self.center_ijk],
            **({"wedge_mm": float(self.wedge_mm)} if self.wedge_mm else {}),
        }


@dataclass
class RodTruth:
    """One calibration rod: a cylinder of ``radius_mm`` around the line through ``center_ras``
    along ``direction_ras`` (superior), of mineral ``density`` (``unit``), imaged at
    ``expected_hu``. ``water_density`` (mg/cm³) is set for Mindways-style rods."""

    name: str
    density: float
    unit: str
    expected_hu: float
    radius_mm: float
    center_ras: np.ndarray
    direction_ras: np.ndarray
    water_density: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "name": self.name,
            "density": float(self.density),
            "unit": self.unit,
            "expected_hu": round(float(self.expected_hu), 6),
            "radius_mm": float(self.radius_mm),
            "center_ras": [round(float(x), 6) for x in self.center_ras],
            "direction_ras": [round(float(x), 9) for x in self.direction_ras],
        }
        if self.water_density is not None:
            d["water_density"] = float(self.water_density)
        return d


@dataclass
class ScannerTruth:
    """The scanner model: ``HU = intercept + slope × density`` (density in ``density_unit``),
    additive Gaussian noise of ``noise_sigma`` HU seeded by ``seed``, ``supersample`` sub-samples
    per axis on edge voxels."""

    slope: float
    intercept: float
    density_unit: str
    noise_sigma: float
    seed: int
    supersample: int
    model: str = "HU = intercept + slope * density"

    def hu_of_density(self, density):
        return self.intercept + self.slope * np.asarray(density, dtype=float)

    def to_dict(self) -> Dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass
class PhantomTruth:
    """Ground truth of a generated phantom.

    ``levels`` — :class:`LevelTruth` of each requested level, top to bottom;
    ``context_levels`` — the extra bodies above/below (if any);
    ``rods`` — :class:`RodTruth` per calibration rod (empty without a calibration phantom);
    ``scanner`` — :class:`ScannerTruth`;
    ``tissues`` — HU of every material (air, fat, muscle, blood, disc, canal, posterior, table, block);
    ``landmarks`` — RAS points inside uniform tissue at the first level's mid plane ("air",
    "subcutaneous_fat", "paraspinal_muscle_right/left", "aorta" centre, "spinal_canal"), e.g.
    for internal (phantomless) calibration;
    ``body`` / ``calibration_block`` — contour and block geometry; ``spec`` — the options used.
    """

    levels: List[LevelTruth]
    context_levels: List[LevelTruth]
    rods: List[RodTruth]
    scanner: ScannerTruth
    tissues: Dict[str, float]
    landmarks: Dict[str, List[float]]
    body: Dict[str, Any]
    calibration_block: Optional[Dict[str, Any]]
    spec: PhantomSpec

    def level(self, name: str) -> LevelTruth:
        for lv in self.levels + self.context_levels:
            if lv.name == name:
                return lv
        raise InputError(
            f"The phantom has no level {name!r}.",
            f"Choose one of {', '.join(lv.name for lv in self.levels)}.",
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "levels": [lv.to_dict() for lv in self.levels],
            "context_levels": [lv.to_dict() for lv in self.context_levels],
            "rods": [r.to_dict() for r in self.rods],
            "scanner": self.scanner.to_dict(),
            "tissues": _jsonable(dict(self.tissues)),
            "landmarks": _jsonable(dict(self.landmarks)),
            "body": _jsonable(dict(self.body)),
            "calibration_block": _jsonable(self.calibration_block),
            "spec": self.spec.to_dict(),
        }


def superellipse_polygon(a: float, b: float, p: float, n_points: int = 720) -> np.ndarray:
    """N×2 polygon (columns s, t) with vertices on ``|s/a|^p + |t/b|^p = 1``."""
    phi = np.linspace(0.0, 2.0 * np.pi, int(n_points), endpoint=False)
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / float(p)
    return np.column_stack([a * np.sign(c) * np.abs(c) ** e, b * np.sign(s) * np.abs(s) ** e])


# ----------------------------------------------------------------------------------------------
# Analytic model
# ----------------------------------------------------------------------------------------------
def _per_level(value, n: int, name: str, allow_none: bool = False) -> Optional[List[float]]:
    if value is None:
        if allow_none:
            return None
        raise InputError(f"Phantom option {name} is missing.", f"Give {name} as a number or {n} numbers.")
    if np.ndim(value) == 0:
        out = [float(value)] * n
    else:
        out = [float(v) for v in value]
        if len(out) != n:
            raise InputError(
                f"Phantom option {name} has {len(out)} values but there are {n} levels.",
                f"Give one number or exactly {n} numbers (one per level, top to bottom).",
            )
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"Phantom option {name} contains a non-finite value.", "Give finite numbers.")
    return out


def _positive(value, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"Phantom option {name} must be a positive number, got {value!r}.", f"Give {name} > 0.")
    return v


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    r = np.eye(3)
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def direction_matrix(orientation, oblique_degrees=(6.0, -4.0, 8.0)) -> np.ndarray:
    """RAS direction matrix (columns = directions of i, j, k) for an ``orientation`` option."""
    if isinstance(orientation, str):
        key = orientation.strip().upper()
        if key == "RAS":
            return np.eye(3)
        if key == "LPS":
            return LPS_TO_RAS.copy()
        if key == "OBLIQUE":
            ang = [float(x) for x in oblique_degrees]
            if len(ang) != 3:
                raise InputError("oblique_degrees needs three angles.", "Give (about R, about A, about S) in degrees.")
            rot = _rotation(2, ang[2]) @ _rotation(1, ang[1]) @ _rotation(0, ang[0])
            return rot @ LPS_TO_RAS
        raise InputError(
            f"Unknown phantom orientation {orientation!r}.",
            'Use "RAS", "LPS", "oblique" or a 3×3 direction matrix.',
        )
    d = np.asarray(orientation, dtype=float)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise InputError("The phantom's direction matrix must be 3×3 and finite.", "Give a 3×3 rotation matrix.")
    d = d / np.linalg.norm(d, axis=0)
    if np.max(np.abs(d.T @ d - np.eye(3))) > 1e-4:
        raise InputError(
            "The phantom's direction matrix is not orthogonal.",
            "Give orthonormal direction cosines (columns = RAS directions of i, j, k).",
        )
    return d


class _Model:
    """The analytic phantom: ``hu(x, y, z)`` for RAS points (noise-free, no partial volume)."""

    def __init__(self, spec: PhantomSpec):
        self.spec = spec
        names = [str(n) for n in spec.level_names]
        n = len(names)
        if n == 0:
            raise InputError("The phantom needs at least one vertebral level.", "Give level_names, e.g. L1–L4.")
        if len(set(names)) != n:
            raise InputError("Phantom level names must be unique.", "Give distinct names, e.g. L1, L2, L3, L4.")
        self.slope = float(spec.scanner_slope)
        self.intercept = float(spec.scanner_intercept)
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise InputError(
                "The phantom scanner slope must be positive and the intercept finite.",
                "Give scanner_slope > 0 (HU per mg/cm³), e.g. 1.25, and a finite scanner_intercept.",
            )
        hu = _per_level(spec.trabecular_hu, n, "trabecular_hu", allow_none=True)
        if hu is None:
            dens = _per_level(spec.trabecular_density, n, "trabecular_density")
            hu = [self.intercept + self.slope * d for d in dens]
        else:
            dens = [(h - self.intercept) / self.slope for h in hu]
        cort_hu = _per_level(spec.cortical_hu, n, "cortical_hu")
        cort = _per_level(spec.cortical_mm, n, "cortical_mm")
        endp = _per_level(spec.endplate_mm if spec.endplate_mm is not None else spec.cortical_mm, n, "endplate_mm")
        depth = _per_level(spec.depth_mm, n, "depth_mm")
        width = _per_level(spec.width_mm, n, "width_mm")
        height = _per_level(spec.height_mm, n, "height_mm")
        rot = _per_level(spec.rotation_deg, n, "rotation_deg")
        expo = _per_level(spec.body_exponent, n, "body_exponent")
        wedge = _per_level(spec.wedge_mm, n, "wedge_mm")
        disc = float(spec.disc_mm)
        if not (math.isfinite(disc) and disc >= 0):
            raise InputError("disc_mm must be ≥ 0.", "Give the disc height in mm (e.g. 10).")
        for i, nm in enumerate(names):
            for label, v in (("depth_mm", depth[i]), ("width_mm", width[i]), ("height_mm", height[i])):
                _positive(v, f"{label} of {nm}")
            if cort[i] <= 0 or endp[i] <= 0:
                raise InputError(
                    f"The cortical shell of {nm} must be thicker than 0 mm.", "Give cortical_mm/endplate_mm > 0."
                )
            if min(depth[i], width[i]) / 2.0 - cort[i] <= 0 or height[i] / 2.0 - endp[i] <= 0:
                raise InputError(
                    f"The cortical shell of {nm} ({cort[i]:g} mm, endplates {endp[i]:g} mm) leaves no trabecular bone.",
                    "Use a thinner shell or a larger body.",
                )
            if not 1.5 <= expo[i] <= 10.0:
                raise InputError(
                    f"body_exponent of {nm} is {expo[i]:g}; it must lie in [1.5, 10].",
                    "Use 2 for an ellipse, 2.5–4 for a boxier body.",
                )
            if not 0.0 <= wedge[i] <= height[i] - 2.0 * endp[i] - 1.0:
                raise InputError(
                    f"wedge_mm of {nm} is {wedge[i]:g}; it must lie in [0, height − 2·endplate − 1 mm].",
                    "Give the anterior height loss in mm, e.g. 8.",
                )
            if abs(rot[i]) > 45.0:
                raise InputError(
                    f"The axial rotation of {nm} is {rot[i]:g}°; the phantom allows at most ±45°.",
                    "Give rotation_deg within ±45.",
                )
        # Stack top to bottom, centred on S = 0.
        total = sum(height) + disc * (n - 1)
        cz = []
        top = total / 2.0
        for h in height:
            cz.append(top - h / 2.0)
            top -= h + disc
        levels = [
            dict(name=names[i], density=dens[i], hu=hu[i], cort_hu=cort_hu[i], cort=cort[i], endp=endp[i],
                 depth=depth[i], width=width[i], height=height[i], rot=rot[i], p=expo[i], z=cz[i], context=False,
                 wedge=wedge[i])
            for i in range(n)
        ]
        if spec.context_vertebrae:
            above = dict(levels[0], name=_neighbour_name(names[0], -1), context=True,
                         z=cz[0] + height[0] / 2.0 + disc + height[0] / 2.0, wedge=0.0)
            below = dict(levels[-1], name=_neighbour_name(names[-1], +1), context=True,
                         z=cz[-1] - height[-1] / 2.0 - disc - height[-1] / 2.0, wedge=0.0)
            levels = [above] + levels + [below]
        self.levels = levels
        self.n_main = n
        self.column_top = cz[0] + height[0] / 2.0 + disc
        self.column_bottom = cz[-1] - height[-1] / 2.0 - disc

        # Per-level arrays in ascending z for lookup.
        asc = sorted(levels, key=lambda d: d["z"])
        zs = np.array([d["z"] for d in asc])
        self._mids = 0.5 * (zs[1:] + zs[:-1])
        th = np.radians([d["rot"] for d in asc])
        self._cz = zs
        self._ax, self._ay = -np.sin(th), np.cos(th)  # AP axis (x, y)
        self._lx, self._ly = -np.cos(th), -np.sin(th)  # left axis = S × AP
        self._a = np.array([d["depth"] / 2.0 for d in asc])
        self._b = np.array([d["width"] / 2.0 for d in asc])
        self._ai = np.array([d["depth"] / 2.0 - d["cort"] for d in asc])
        self._bi = np.array([d["width"] / 2.0 - d["cort"] for d in asc])
        self._hh = np.array([d["height"] / 2.0 for d in asc])
        self._hi = np.array([d["height"] / 2.0 - d["endp"] for d in asc])
        self._p = np.array([d["p"] for d in asc])
        self._all_ellipse = bool(np.all(self._p == 2.0))
        self._trab = np.array([d["hu"] for d in asc])
        self._cort = np.array([d["cort_hu"] for d in asc])
        self._wedge = np.array([d["wedge"] for d in asc])
        self._any_wedge = bool(np.any(self._wedge != 0.0))
        self._asc_index = {d["name"]: i for i, d in enumerate(asc)}

        # Posterior elements and canal (shared sizes).
        self.rcs = _positive(spec.canal_depth_mm, "canal_depth_mm") / 2.0
        self.rct = _positive(spec.canal_width_mm, "canal_width_mm") / 2.0
        self.arch = _positive(spec.arch_mm, "arch_mm")
        self.spinous = _positive(spec.spinous_mm, "spinous_mm")
        self.transverse = _positive(spec.transverse_mm, "transverse_mm")
        self._sc = -self._a - self.rcs  # canal centre on the AP axis
        self._peh = 0.8 * self._hh
        sx, sy = (float(v) for v in spec.spine_center_ras)
        self.x0, self.y0 = sx, sy
        reach = np.max(np.concatenate([
            self._a, self._b,
            self._a + 2 * self.rcs + self.arch + self.spinous,
            np.hypot(self._a + self.rcs + 4.0, self.rct + self.arch + self.transverse + 4.0),
        ]))
        self.spine_reach = float(reach) + 2.0
        self._setup_hard_cases(spec, self._asc_index)
        if self._spurs:
            self.spine_reach += max(o["length"] for o in self._spurs)

        # Body contour.
        rx, ry = (float(v) for v in spec.body_semi_axes_mm)
        self.rx, self.ry = _positive(rx, "body_semi_axes_mm[0]"), _positive(ry, "body_semi_axes_mm[1]")
        self.bx, self.by = (float(v) for v in spec.body_center_ras)
        self.fat = float(spec.fat_mm)
        if not (0 <= self.fat < min(self.rx, self.ry)):
            raise InputError("fat_mm must be ≥ 0 and smaller than the body's semi-axes.", "Give e.g. fat_mm=15.")
        # The vertebral bodies (not necessarily the tips of the processes, which are clipped to
        # the skin contour) must lie in the muscle region.
        core = float(np.max(np.maximum(self._a, self._b)))
        inner_x, inner_y = self.rx - self.fat, self.ry - self.fat
        if (abs(sx - self.bx) + core) / inner_x > 1 or (abs(sy - self.by) + core) / inner_y > 1:
            raise InputError(
                "The vertebral bodies do not fit inside the body contour's muscle region.",
                "Enlarge body_semi_axes_mm, reduce fat_mm, or move spine_center_ras / body_center_ras.",
            )
        self.ax_, self.ay_ = (float(v) for v in spec.aorta_center_ras)
        self.ar = _positive(spec.aorta_radius_mm, "aorta_radius_mm")
        self.posterior_skin = self.by - self.ry

        # Calibration phantom and table (below = more posterior = smaller y).
        self.rods: List[Dict[str, Any]] = []
        y_cursor = self.posterior_skin - 1.0
        self.block = None
        self.unit = spec.density_unit
        if spec.calibration_phantom:
            if spec.calibration_preset not in CALIBRATION_PRESETS:
                raise InputError(
                    f"Unknown calibration_preset {spec.calibration_preset!r}.",
                    f"Choose one of {', '.join(CALIBRATION_PRESETS)} or give rod_densities.",
                )
            preset = CALIBRATION_PRESETS[spec.calibration_preset]
            dens_r = list(spec.rod_densities) if spec.rod_densities is not None else list(preset["densities"])
            if spec.rod_densities is not None and spec.rod_water_densities is None:
                water = None
            else:
                water = spec.rod_water_densities if spec.rod_water_densities is not None else preset["water"]
            if spec.rod_names is not None:
                rnames = [str(x) for x in spec.rod_names]
            elif spec.rod_densities is None:
                rnames = list(preset["names"])
            else:
                rnames = [f"R{i + 1}" for i in range(len(dens_r))]
            if self.unit is None:
                self.unit = preset["unit"]
            if len(dens_r) == 0 or len(rnames) != len(dens_r) or (water is not None and len(water) != len(dens_r)):
                raise InputError(
                    "The calibration rods' densities, names and water densities differ in number (or are empty).",
                    "Give one name (and one water density, if any) per rod density.",
                )
            r = _positive(spec.rod_radius_mm, "rod_radius_mm")
            pitch = _positive(spec.rod_pitch_mm, "rod_pitch_mm")
            bh = _positive(spec.block_height_mm, "block_height_mm")
            if pitch < 2 * r + 1.0 or bh < 2 * r + 2.0:
                raise InputError(
                    "The calibration rods overlap each other or do not fit in the block.",
                    "Use rod_pitch_mm ≥ 2·rod_radius_mm + 1 and block_height_mm ≥ 2·rod_radius_mm + 2.",
                )
            m = len(dens_r)
            half = (m - 1) / 2.0 * pitch + r + 10.0
            y_top, y_bot = y_cursor, y_cursor - bh
            yc = 0.5 * (y_top + y_bot)
            for i, d in enumerate(dens_r):
                xc = self.bx + ((m - 1) / 2.0 - i) * pitch
                if water is None:
                    h = self.intercept + self.slope * float(d)
                    w = None
                else:
                    w = float(water[i])
                    h = (w - MINDWAYS_INTERCEPT_OFFSET) + (self.slope + MINDWAYS_SLOPE_OFFSET) * float(d)
                    h += self.intercept
                self.rods.append(dict(name=rnames[i], density=float(d), hu=h, x=xc, y=yc, r=r, water=w))
            self.block = dict(x0=self.bx - half, x1=self.bx + half, y0=y_bot, y1=y_top, hu=float(spec.block_hu))
            y_cursor = y_bot - 1.0
        if self.unit is None:
            self.unit = "mg/cm3"
        self.table = None
        if spec.table:
            tmm = _positive(spec.table_mm, "table_mm")
            self.table = dict(y0=y_cursor - tmm, y1=y_cursor, x0=self.bx - self.rx - 40.0, x1=self.bx + self.rx + 40.0,
                              hu=float(spec.table_hu))
            y_cursor -= tmm
        self.lowest_y = y_cursor

    # -- evaluation ---------------------------------------------------------------------------
    def hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Noise-free HU at RAS points (1-D float arrays of equal length)."""
        sp = self.spec
        out = np.full(x.shape, float(sp.air_hu))
        if self.table is not None:
            t = self.table
            m = (y >= t["y0"]) & (y <= t["y1"]) & (x >= t["x0"]) & (x <= t["x1"])
            out[m] = t["hu"]
        if self.block is not None:
            b = self.block
            m = (y >= b["y0"]) & (y <= b["y1"]) & (x >= b["x0"]) & (x <= b["x1"])
            idx = np.nonzero(m)[0]
            if idx.size:
                xb, yb = x[idx], y[idx]
                vals = np.full(idx.shape, b["hu"])
                for rod in self.rods:
                    dx, dy = xb - rod["x"], yb - rod["y"]
                    vals[dx * dx + dy * dy <= rod["r"] * rod["r"]] = rod["hu"]
                out[idx] = vals
        ex, ey = (x - self.bx) / self.rx, (y - self.by) / self.ry
        patient = ex * ex + ey * ey <= 1.0
        out[patient] = float(sp.fat_hu)
        ex, ey = (x - self.bx) / (self.rx - self.fat), (y - self.by) / (self.ry - self.fat)
        muscle = ex * ex + ey * ey <= 1.0
        out[muscle] = float(sp.muscle_hu)
        if sp.aorta:
            dx, dy = x - self.ax_, y - self.ay_
            out[muscle & (dx * dx + dy * dy <= self.ar * self.ar)] = float(sp.blood_hu)
        rr = self.spine_reach
        if self._tilt is None:
            m = patient & (np.abs(x - self.x0) <= rr) & (np.abs(y - self.y0) <= rr)
            idx = np.nonzero(m)[0]
            if idx.size:
                out[idx] = self._spine(x[idx], y[idx], z[idx], out[idx])
        else:
            # the column's own frame: rotate the points back by the tilt about (x0, y0, 0)
            rt = self._tilt.T
            dx, dy = x - self.x0, y - self.y0
            xs = rt[0, 0] * dx + rt[0, 1] * dy + rt[0, 2] * z + self.x0
            ys = rt[1, 0] * dx + rt[1, 1] * dy + rt[1, 2] * z + self.y0
            zs = rt[2, 0] * dx + rt[2, 1] * dy + rt[2, 2] * z
            m = patient & (np.abs(xs - self.x0) <= rr) & (np.abs(ys - self.y0) <= rr)
            idx = np.nonzero(m)[0]
            if idx.size:
                out[idx] = self._spine(xs[idx], ys[idx], zs[idx], out[idx])
        for b in self._islands:
            c, r = b["c"], b["r"]
            dx, dy, dz = x - c[0], y - c[1], z - c[2]
            out[dx * dx + dy * dy + dz * dz <= r * r] = b["hu"]
        return out

    def _setup_hard_cases(self, spec: PhantomSpec, index: Dict[str, int]) -> None:
        """Osteophytes, bone islands and the column's tilt (PhantomSpec "Hard cases")."""
        tilt = [float(v) for v in spec.spine_tilt_deg]
        if len(tilt) != 2 or not all(math.isfinite(v) and abs(v) <= 45.0 for v in tilt):
            raise InputError("spine_tilt_deg needs two angles (about R, about A) within ±45°.",
                             "Give e.g. spine_tilt_deg=(12, 0).")
        self._tilt = None if tilt == [0.0, 0.0] else _rotation(1, tilt[1]) @ _rotation(0, tilt[0])
        self._spurs = []
        for o in spec.osteophytes or ():
            o = dict(o)
            name = str(o.get("level", ""))
            if name not in index or self.levels_by_name(name)["context"]:
                raise InputError(f"Osteophyte on unknown level {name!r}.",
                                 "Give level as one of the phantom's level_names, e.g. 'L2'.")
            li = index[name]
            ang = math.radians(float(o.get("angle_deg", 0.0)))
            length = _positive(o.get("length_mm", 6.0), "osteophyte length_mm")
            width = _positive(o.get("width_mm", 10.0), "osteophyte width_mm")
            height = _positive(o.get("height_mm", 2.0 * self._hh[li]), "osteophyte height_mm")
            # rim radius of the outer superellipse in that direction
            c, sn = math.cos(ang), math.sin(ang)
            p = self._p[li]
            rim = (abs(c / self._a[li]) ** p + abs(sn / self._b[li]) ** p) ** (-1.0 / p)
            self._spurs.append(dict(li=li, c=c, s=sn, rim=rim, length=length, width=width,
                                    z=float(o.get("z_mm", 0.0)), half_h=0.5 * height, hu=float(o.get("hu", 600.0))))
        self._islands = []
        for b in spec.bone_islands or ():
            b = dict(b)
            r = _positive(b.get("radius_mm", 4.0), "bone island radius_mm")
            if "center_ras" in b:
                centre = np.asarray(b["center_ras"], dtype=float).reshape(3)
            else:
                name = str(b.get("level", ""))
                if name not in index:
                    raise InputError(f"Bone island on unknown level {name!r}.",
                                     "Give center_ras, or level (e.g. 'L2') with offset_mm.")
                li = index[name]
                off = [float(v) for v in b.get("offset_mm", (0.0, 0.0, 0.0))]
                centre = np.array([self.x0 + off[0] * self._ax[li] + off[1] * self._lx[li],
                                   self.y0 + off[0] * self._ay[li] + off[1] * self._ly[li],
                                   self._cz[li] + off[2]])
                centre = self.tilted(centre)
            self._islands.append(dict(c=centre, r=r, hu=float(b.get("hu", 1000.0))))

    def levels_by_name(self, name: str) -> Dict[str, Any]:
        return next(d for d in self.levels if d["name"] == name)

    def tilted(self, p) -> np.ndarray:
        """A point of the column's own frame → RAS (the tilt about (x0, y0, 0))."""
        p = np.asarray(p, dtype=float)
        if self._tilt is None:
            return p
        o = np.array([self.x0, self.y0, 0.0])
        return o + self._tilt @ (p - o)

    def tilted_dir(self, d) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        return d if self._tilt is None else self._tilt @ d

    def _superellipse(self, s, t, a, b, p):
        if self._all_ellipse:
            u, v = s / a, t / b
            return u * u + v * v
        return np.abs(s / a) ** p + np.abs(t / b) ** p

    def _spine(self, x, y, z, base):
        sp = self.spec
        li = np.searchsorted(self._mids, z)
        dx, dy = x - self.x0, y - self.y0
        s = dx * self._ax[li] + dy * self._ay[li]
        t = dx * self._lx[li] + dy * self._ly[li]
        adz = np.abs(z - self._cz[li])
        res = base
        # posterior elements
        sc = self._sc[li]
        u = s - sc
        at = np.abs(t)
        pe = adz <= self._peh[li]
        ra, rb = self.rcs + self.arch, self.rct + self.arch
        ring = (u / ra) ** 2 + (t / rb) ** 2 <= 1.0
        spin = (u <= -self.rcs + 1.0) & (u >= -self.rcs - self.arch - self.spinous) & (at <= 3.0)
        trans = (np.abs(u) <= 4.0) & (at <= self.rct + self.arch + self.transverse)
        res[pe & (ring | spin | trans)] = float(sp.posterior_hu)
        res[(u / self.rcs) ** 2 + (t / self.rct) ** 2 <= 1.0] = float(sp.canal_hu)
        # body, disc
        outer = self._superellipse(s, t, self._a[li], self._b[li], self._p[li]) <= 1.0
        if self._any_wedge:
            zr = z - self._cz[li]
            a = self._a[li]
            top = self._hh[li] - self._wedge[li] * (np.clip(s, -a, a) + a) / (2.0 * a)
            in_h = (zr >= -self._hh[li]) & (zr <= top)
            core_h = (zr >= -self._hi[li]) & (zr <= top - (self._hh[li] - self._hi[li]))
        else:
            in_h = adz <= self._hh[li]
            core_h = adz <= self._hi[li]
        res[outer & ~in_h] = float(sp.disc_hu)
        body = outer & in_h
        res[body] = self._cort[li][body]
        trab = body & core_h & (
            self._superellipse(s, t, self._ai[li], self._bi[li], self._p[li]) <= 1.0
        )
        res[trab] = self._trab[li][trab]
        for o in self._spurs:
            on = li == o["li"]
            if not np.any(on):
                continue
            along = s * o["c"] + t * o["s"] - o["rim"]
            across = np.abs(-s * o["s"] + t * o["c"])
            taper = 0.5 * o["width"] * (1.0 - np.clip(along, 0.0, None) / o["length"])
            spur = (on & (along >= -1.0) & (along <= o["length"]) & (across <= taper)
                    & (np.abs(z - self._cz[li] - o["z"]) <= o["half_h"]) & ~body)
            res[spur] = o["hu"]
        return res

    # -- truth --------------------------------------------------------------------------------
    def default_extent(self) -> np.ndarray:
        zs = [d["z"] for d in self.levels if not d["context"]]
        top = max(zs) + max(d["height"] for d in self.levels) / 2.0 + float(self.spec.disc_mm) + 5.0
        bot = min(zs) - max(d["height"] for d in self.levels) / 2.0 - float(self.spec.disc_mm) - 5.0
        return np.array([
            [self.bx - self.rx - 10.0, self.bx + self.rx + 10.0],
            [self.lowest_y - 5.0, self.by + self.ry + 10.0],
            [bot, top],
        ])

    def level_truth(self, d: Dict[str, Any]) -> LevelTruth:
        th = math.radians(d["rot"])
        ap = np.array([-math.sin(th), math.cos(th), 0.0])
        left = np.array([-math.cos(th), -math.sin(th), 0.0])
        center = np.array([self.x0, self.y0, d["z"]])
        normal = np.array([0.0, 0.0, 1.0])
        sup, inf = d["z"] + d["height"] / 2.0, d["z"] - d["height"] / 2.0
        if self._tilt is not None:
            center, ap, left, normal = self.tilted(center), self.tilted_dir(ap), self.tilted_dir(left), \
                self.tilted_dir(normal)
            # S coordinates of the endplates' centres (on the vertebra's own axis)
            sup, inf = (float(center[2] + sgn * d["height"] / 2.0 * normal[2]) for sgn in (1.0, -1.0))
        return LevelTruth(
            name=d["name"], trabecular_density=d["density"], density_unit=self.unit, trabecular_hu=d["hu"],
            cortical_hu=d["cort_hu"], center_ras=center,
            superior_endplate_s=sup, inferior_endplate_s=inf,
            ap_axis_ras=ap, left_axis_ras=left, normal_ras=normal,
            depth_mm=d["depth"], width_mm=d["width"], height_mm=d["height"], cortical_mm=d["cort"],
            endplate_mm=d["endp"], rotation_deg=d["rot"], body_exponent=d["p"], wedge_mm=d.get("wedge", 0.0),
        )


def analytic_hu(points_ras, spec: Optional[PhantomSpec] = None, **options) -> np.ndarray:
    """Noise-free HU of the phantom's anatomy at RAS points (N×3), without partial volume."""
    spec = spec if spec is not None else PhantomSpec(**options)
    p = np.atleast_2d(np.asarray(points_ras, dtype=float))
    return _Model(spec).hu(p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy())


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------
def _grid(spec: PhantomSpec, model: _Model) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    spacing = np.array([_positive(v, "spacing") for v in spec.spacing], dtype=float)
    if spacing.size != 3:
        raise InputError("spacing needs three values (i, j, k) in mm.", "Give e.g. spacing=(1.0, 1.0, 2.5).")
    d = direction_matrix(spec.orientation, spec.oblique_degrees)
    m3 = d @ np.diag(spacing)
    inv3 = np.linalg.inv(m3)
    if spec.extent_ras is not None:
        ext = np.asarray(spec.extent_ras, dtype=float)
        if ext.shape != (3, 2) or not np.all(ext[:, 1] > ext[:, 0]):
            raise InputError(
                "extent_ras must be ((xmin, xmax), (ymin, ymax), (zmin, zmax)) with min < max.",
                "Give the RAS box (mm) the image must cover.",
            )
    else:
        ext = model.default_extent()
    center = np.asarray(spec.center_ras, dtype=float) if spec.center_ras is not None else ext.mean(axis=1)
    if spec.size is not None:
        size = np.array([int(v) for v in spec.size])
        if size.size != 3 or np.any(size < 1):
            raise InputError("size must be three positive integers (ni, nj, nk).", "Give e.g. size=(256, 256, 100).")
    else:
        corners = np.array([[ext[0, a], ext[1, b], ext[2, c]] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        u = (corners - center) @ inv3.T
        half = np.max(np.abs(u), axis=0)
        size = np.ceil(2.0 * half - 1e-9).astype(int) + 1
        if spec.snap_to_level:
            size = size + 1  # room for the < 1 voxel shift
    origin = center - m3 @ ((size - 1) / 2.0)
    if spec.snap_to_level:
        ref = np.array([model.x0, model.y0, model.levels[1 if spec.context_vertebrae else 0]["z"]])
        ref = model.tilted(ref)
        ijk = inv3 @ (ref - origin)
        frac = ijk - np.round(ijk)
        origin = origin + m3 @ frac
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = m3
    ijk_to_ras[:3, 3] = origin
    n_vox = int(np.prod(size.astype(np.int64)))
    if n_vox > 2_000_000_000:
        raise InputError(f"The phantom grid would have {n_vox} voxels.", "Use a coarser spacing or a smaller size.")
    return ijk_to_ras, (int(size[0]), int(size[1]), int(size[2]))


def _subsample_offsets(f: int) -> np.ndarray:
    g = (np.arange(f) + 0.5) / f - 0.5
    kk, jj, ii = np.meshgrid(g, g, g, indexing="ij")
    return np.column_stack([ii.ravel(), jj.ravel(), kk.ravel()])


def _neighbourhood_nonuniform(stack: np.ndarray) -> np.ndarray:
    """For a (≤3, nj, ni) stack of centre values: True where the 3×3×3 neighbourhood of the
    middle slice's voxel is not uniform (neighbours beyond the volume are ignored)."""
    mx = stack.max(axis=0)
    mn = stack.min(axis=0)

    def filt(a, op):  # separable 3×3 max/min; the copies keep the shifts independent
        b = a.copy()
        op(b[1:, :], a[:-1, :], out=b[1:, :])
        op(b[:-1, :], a[1:, :], out=b[:-1, :])
        c = b.copy()
        op(c[:, 1:], b[:, :-1], out=c[:, 1:])
        op(c[:, :-1], b[:, 1:], out=c[:, :-1])
        return c

    return filt(mx, np.maximum) != filt(mn, np.minimum)


def generate(spec: Optional[PhantomSpec] = None) -> Tuple[Volume, PhantomTruth]:
    """Build the phantom image and its ground truth from a :class:`PhantomSpec`."""
    spec = spec if spec is not None else PhantomSpec()
    model = _Model(spec)
    f = int(spec.supersample)
    if f != spec.supersample or f < 1 or f > 8:
        raise InputError(f"supersample must be an integer from 1 to 8, got {spec.supersample!r}.",
                         "Use 1 (no partial volume) or e.g. 3.")
    sigma = float(spec.noise_sigma)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InputError("noise_sigma must be ≥ 0.", "Give the noise SD in HU (0 = noise-free).")
    seed = int(spec.seed)
    if seed < 0:
        raise InputError("seed must be a non-negative integer.", "Give e.g. seed=0.")
    dtype_name = str(spec.dtype).lower()
    if dtype_name not in ("float32", "int16"):
        raise InputError(f"Unknown phantom dtype {spec.dtype!r}.", 'Use "float32" or "int16".')
    ijk_to_ras, (ni, nj, nk) = _grid(spec, model)
    m3, origin = ijk_to_ras[:3, :3], ijk_to_ras[:3, 3]
    out = np.empty((nk, nj, ni), dtype=np.float32 if dtype_name == "float32" else np.int16)

    jj, ii = np.meshgrid(np.arange(nj, dtype=float), np.arange(ni, dtype=float), indexing="ij")
    plane = [m3[r, 0] * ii + m3[r, 1] * jj for r in range(3)]  # (nj, ni) each
    del jj, ii
    offsets_ras = _subsample_offsets(f) @ m3.T if f > 1 else None

    def centre_slice(k: int) -> np.ndarray:
        x = (plane[0] + (origin[0] + m3[0, 2] * k)).ravel()
        y = (plane[1] + (origin[1] + m3[1, 2] * k)).ravel()
        z = (plane[2] + (origin[2] + m3[2, 2] * k)).ravel()
        return model.hu(x, y, z).reshape(nj, ni)

    def supersampled(k: int, values: np.ndarray, edge: np.ndarray) -> None:
        je, ie = np.nonzero(edge)
        if je.size == 0:
            return
        per = offsets_ras.shape[0]
        chunk = max(1, 500_000 // per)
        for a in range(0, je.size, chunk):
            jb, ib = je[a:a + chunk], ie[a:a + chunk]
            coords = []
            for r in range(3):  # RAS of the voxel centres, then of their sub-samples
                c = plane[r][jb, ib] + (origin[r] + m3[r, 2] * k)
                coords.append((c[:, None] + offsets_ras[None, :, r]).ravel())
            vals = model.hu(*coords).reshape(-1, per)
            values[jb, ib] = vals.mean(axis=1)

    def finish(k: int, values: np.ndarray) -> None:
        if sigma > 0:
            rng = np.random.default_rng([seed, k])
            values = values + sigma * rng.standard_normal((nj, ni))
        if dtype_name == "int16":
            out[k] = np.clip(np.rint(values), -32768, 32767).astype(np.int16)
        else:
            out[k] = values.astype(np.float32)

    def run_chunk(k0: int, k1: int) -> None:
        if f == 1:
            for k in range(k0, k1):
                finish(k, centre_slice(k))
            return
        lo, hi = max(0, k0 - 1), min(nk, k1 + 1)
        cache = {k: centre_slice(k) for k in range(lo, min(hi, k0 + 2))}
        for k in range(k0, k1):
            if k + 1 < hi and (k + 1) not in cache:
                cache[k + 1] = centre_slice(k + 1)
            stack = np.stack([cache[q] for q in (k - 1, k, k + 1) if q in cache])
            values = cache[k].copy()
            supersampled(k, values, _neighbourhood_nonuniform(stack))
            finish(k, values)
            cache.pop(k - 1, None)

    workers = spec.workers if spec.workers is not None else min(2, os.cpu_count() or 1)
    workers = max(1, int(workers))
    chunk = max(1, min(16, -(-nk // (workers * 2))))
    bounds = [(k, min(nk, k + chunk)) for k in range(0, nk, chunk)]
    if workers == 1 or len(bounds) == 1:
        for k0, k1 in bounds:
            run_chunk(k0, k1)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for fut in [pool.submit(run_chunk, k0, k1) for k0, k1 in bounds]:
                fut.result()

    volume = Volume(
        array=out,
        ijk_to_ras=ijk_to_ras,
        source="osteoroi-phantom",
        facts={"modality": "CT"},
        notes=["Digital phantom generated by OsteoROILib.phantom (synthetic, not patient data)."],
    )
    truth = _truth(spec, model, volume)
    return volume, truth


def _truth(spec: PhantomSpec, model: _Model, volume: Volume) -> PhantomTruth:
    def with_slice(lv: LevelTruth) -> LevelTruth:
        ijk = volume.ras_to_ijk_points(lv.center_ras)[0]
        ax = volume.slice_axis()
        k = int(np.round(ijk[ax]))
        sign = 1.0 if volume.direction[2, ax] >= 0 else -1.0
        lv.mid_slice_index = k
        lv.mid_slice_offset_mm = float((ijk[ax] - k) * volume.spacing[ax] * sign)
        lv.center_ijk = tuple(int(v) for v in np.round(ijk))
        return lv

    main = [with_slice(model.level_truth(d)) for d in model.levels if not d["context"]]
    main.sort(key=lambda lv: -lv.center_ras[2])
    context = [with_slice(model.level_truth(d)) for d in model.levels if d["context"]]
    up = np.array([0.0, 0.0, 1.0])
    z_mid = float(main[0].center_ras[2])
    rods = [
        RodTruth(name=r["name"], density=r["density"], unit=model.unit, expected_hu=r["hu"], radius_mm=r["r"],
                 center_ras=np.array([r["x"], r["y"], z_mid]), direction_ras=up.copy(), water_density=r["water"])
        for r in model.rods
    ]
    scanner = ScannerTruth(slope=model.slope, intercept=model.intercept, density_unit=model.unit,
                           noise_sigma=float(spec.noise_sigma), seed=int(spec.seed), supersample=int(spec.supersample))
    if any(r.water_density is not None for r in rods):
        scanner.model = ("HU = intercept + slope * density (bone); rods: HU = (water_density - 999.6) + "
                         "(slope + 0.2174) * density + intercept (Mindways two-component)")
    tissues = {
        "air": float(spec.air_hu), "subcutaneous_fat": float(spec.fat_hu), "muscle": float(spec.muscle_hu),
        "blood": float(spec.blood_hu), "disc": float(spec.disc_hu), "spinal_canal": float(spec.canal_hu),
        "posterior_elements": float(spec.posterior_hu),
    }
    if model.table is not None:
        tissues["table"] = model.table["hu"]
    if model.block is not None:
        tissues["calibration_block"] = model.block["hu"]
    fat_y = model.by + model.ry - model.fat / 2.0  # anterior subcutaneous fat
    mus_x = model.x0 + model.rct + model.arch + model.transverse + 15.0
    landmarks = {
        "air": [model.bx, model.by + model.ry + 5.0, z_mid],
        "subcutaneous_fat": [model.bx, fat_y, z_mid],
        "paraspinal_muscle_right": [mus_x, model.y0 - model.rcs * 2 - 20.0, z_mid],
        "paraspinal_muscle_left": [-mus_x + 2 * model.x0, model.y0 - model.rcs * 2 - 20.0, z_mid],
        "spinal_canal": [model.x0, model.y0 - main[0].depth_mm / 2.0 - model.rcs, z_mid],
    }
    if model._tilt is not None:
        first = model.levels[1 if spec.context_vertebrae else 0]
        landmarks["spinal_canal"] = [float(v) for v in model.tilted(
            [model.x0 + (main[0].depth_mm / 2.0 + model.rcs) * math.sin(math.radians(first["rot"])),
             model.y0 - (main[0].depth_mm / 2.0 + model.rcs) * math.cos(math.radians(first["rot"])), first["z"]])]
    if spec.aorta:
        landmarks["aorta"] = [model.ax_, model.ay_, z_mid]
    body = {
        "center_ras": [model.bx, model.by], "semi_axes_mm": [model.rx, model.ry], "fat_mm": model.fat,
        "aorta_center_ras": [model.ax_, model.ay_] if spec.aorta else None,
        "aorta_radius_mm": model.ar if spec.aorta else None,
    }
    block = None
    if model.block is not None:
        b = model.block
        block = {"x_range": [b["x0"], b["x1"]], "y_range": [b["y0"], b["y1"]], "hu": b["hu"]}
    return PhantomTruth(levels=main, context_levels=context, rods=rods, scanner=scanner, tissues=tissues,
                        landmarks=landmarks, body=body, calibration_block=block, spec=spec)


def make_phantom(**options) -> Tuple[Volume, PhantomTruth]:
    """Build a phantom: ``make_phantom(**options)`` = ``generate(PhantomSpec(**options))``.

    See :class:`PhantomSpec` for every option. Returns ``(volume, truth)``.
    """
    try:
        spec = PhantomSpec(**options)
    except TypeError as exc:
        known = ", ".join(sorted(PhantomSpec.__dataclass_fields__))
        raise InputError(f"Unknown phantom option ({exc}).", f"Known options: {known}.") from None
    return generate(spec)
