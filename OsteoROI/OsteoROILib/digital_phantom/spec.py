"""The digital phantom's options: ``PhantomSpec``, the calibration-rod presets, and reading the options.

Per-level options (one number, or one per level) are read by ``per_level``; lengths must be
positive (``positive_option``); the grid's ``orientation`` option becomes a RAS direction matrix
(``direction_matrix``). Every refusal is an :class:`~OsteoROILib.errors.InputError` naming the option.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..io.volume import LPS_TO_RAS

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

    Hard cases (all off by default — the defaults build exactly the plain phantom)
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
        follow it. The soft tissue, aorta and calibration phantom do not move. A tilt about A
        (coronal) bends the column sideways as a scoliotic segment does.
        ``streaks`` — beam-hardening streaks, an image artefact (the truth's anatomy and
        ``analytic_hu`` do not have them): a sequence of dicts, each a straight band across every
        axial plane, ``angle_deg`` (its direction: 0 = along R, 90 = along A), ``hu`` (its HU
        offset on the band's centre line, default −60: a dark streak), ``width_mm`` (its full width at
        half maximum, 3) and ``through_ras`` ((x, y) on its centre line, default the spine's centre).

    Body and tissues
        ``body_semi_axes_mm`` — (lateral, AP) semi-axes of the skin contour (150, 110);
        ``body_center_ras`` — its centre (x, y) (0, 25); ``fat_mm`` (15) subcutaneous fat;
        ``muscle_hu`` (40), ``fat_hu`` (−100), ``air_hu`` (−1000).
        ``aorta`` (True), ``aorta_center_ras`` (x, y) (−22, 35), ``aorta_radius_mm`` (11),
        ``blood_hu`` (50, unenhanced blood; e.g. 250 for a contrast-enhanced aorta);
        ``aorta_fat_mm`` (0): a rim of periaortic fat (``fat_hu``) this thick around the aorta.
        ``organs`` — other soft-tissue structures, a sequence of dicts (each an ellipse in every axial
        plane, inside the muscle): ``center_ras`` (x, y), ``semi_axes_mm`` (lateral, AP), ``hu``, and a
        ``name`` (e.g. an inferior vena cava, a kidney, a bowel loop with oral contrast).
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
    aorta_fat_mm: float = 0.0
    organs: Sequence[Dict[str, Any]] = ()
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
    streaks: Sequence[Dict[str, Any]] = ()

    def to_dict(self) -> Dict[str, Any]:
        d = jsonable(asdict(self))
        # options added for the hard cases appear only when used, so the plain phantom's
        # description is unchanged
        for key, default in _HARD_CASE_DEFAULTS.items():
            if key in d and d[key] == default:
                del d[key]
        return d


_HARD_CASE_DEFAULTS: Dict[str, Any] = {"wedge_mm": 0.0, "osteophytes": [], "bone_islands": [], "streaks": [],
                                       "spine_tilt_deg": [0.0, 0.0], "aorta_fat_mm": 0.0, "organs": []}


def jsonable(obj):
    """``obj`` with numpy values as Python numbers, tuples as lists and floats rounded to 6 decimals."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, float):
        return round(obj, 6)
    return obj


def per_level(value, n: int, name: str, allow_none: bool = False) -> Optional[List[float]]:
    """A per-level option as ``n`` finite numbers (one number is used for every level)."""
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


def positive_option(value, name: str) -> float:
    """The option as a positive finite number."""
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"Phantom option {name} must be a positive number, got {value!r}.", f"Give {name} > 0.")
    return v


def axis_rotation(axis: int, degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about RAS axis ``axis`` (0 = R, 1 = A, 2 = S), right-handed."""
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
            rot = axis_rotation(2, ang[2]) @ axis_rotation(1, ang[1]) @ axis_rotation(0, ang[0])
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
