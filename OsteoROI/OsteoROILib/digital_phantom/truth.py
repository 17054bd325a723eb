"""The digital phantom's ground truth: each level, rod and the scanner model, as a generated phantom has them.

The truth is what a measurement is checked against: every level's geometry, density and HU
(:class:`LevelTruth`), every calibration rod (:class:`RodTruth`), the density → HU line
(:class:`ScannerTruth`), gathered with tissues and landmarks in :class:`PhantomTruth`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..roi.outline import BodyOutline
from .spec import PhantomSpec, jsonable

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
        """The body's outline on its mid-vertebral axial plane, for :func:`~OsteoROILib.roi.family.build_roi_family`."""
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
        return jsonable(asdict(self))


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
            "tissues": jsonable(dict(self.tissues)),
            "landmarks": jsonable(dict(self.landmarks)),
            "body": jsonable(dict(self.body)),
            "calibration_block": jsonable(self.calibration_block),
            "spec": self.spec.to_dict(),
        }


def superellipse_polygon(a: float, b: float, p: float, n_points: int = 720) -> np.ndarray:
    """N×2 polygon (columns s, t) with vertices on ``|s/a|^p + |t/b|^p = 1``."""
    phi = np.linspace(0.0, 2.0 * np.pi, int(n_points), endpoint=False)
    c, s = np.cos(phi), np.sin(phi)
    e = 2.0 / float(p)
    return np.column_stack([a * np.sign(c) * np.abs(c) ** e, b * np.sign(s) * np.abs(s) ** e])
