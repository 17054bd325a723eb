"""The digital phantom's anatomy as an analytic function of RAS position (noise-free, no partial volume).

:class:`PhantomModel` puts the vertebral column (:mod:`.column`) in the patient (skin,
subcutaneous fat, muscle, aorta) on the calibration phantom (a block of rods of known density,
QCT_BRIEF §4) and the table, and gives ``hu(x, y, z)`` for any RAS points. The package docstring
describes the anatomy.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .column import VertebralColumn, level_names, scanner_line
from .spec import (
    CALIBRATION_PRESETS,
    MINDWAYS_INTERCEPT_OFFSET,
    MINDWAYS_SLOPE_OFFSET,
    PhantomSpec,
    positive_option,
)
from .truth import LevelTruth


def _rod_set(spec: PhantomSpec) -> Tuple[List[float], Optional[Sequence[float]], List[str], str]:
    """(densities, water densities or None, names, unit) of the calibration rods: the preset's,
    or those given (``rod_densities`` with their own names and, if given, water densities)."""
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
    if len(dens_r) == 0 or len(rnames) != len(dens_r) or (water is not None and len(water) != len(dens_r)):
        raise InputError(
            "The calibration rods' densities, names and water densities differ in number (or are empty).",
            "Give one name (and one water density, if any) per rod density.",
        )
    return dens_r, water, rnames, preset["unit"]


class PhantomModel:
    """The analytic phantom: ``hu(x, y, z)`` for RAS points (noise-free, no partial volume).

    The vertebral column (``column``) inside the patient's body contour (skin, subcutaneous fat,
    muscle, aorta), on a calibration phantom (a block of rods) and a table, below the patient
    (more posterior = smaller y).
    """

    def __init__(self, spec: PhantomSpec):
        self.spec = spec
        names = level_names(spec)
        self.slope, self.intercept = scanner_line(spec)
        self.column = VertebralColumn(spec, names, self.slope, self.intercept)
        self.levels = self.column.levels
        self._body_contour(spec)
        self.rods: List[Dict[str, Any]] = []
        self.block = None
        self.unit = spec.density_unit
        y_cursor = self.posterior_skin - 1.0
        if spec.calibration_phantom:
            y_cursor = self._calibration_phantom(spec, y_cursor)
        if self.unit is None:
            self.unit = "mg/cm3"
        self.table = None
        if spec.table:
            tmm = positive_option(spec.table_mm, "table_mm")
            self.table = dict(y0=y_cursor - tmm, y1=y_cursor, x0=self.bx - self.rx - 40.0, x1=self.bx + self.rx + 40.0,
                              hu=float(spec.table_hu))
            y_cursor -= tmm
        self.lowest_y = y_cursor

    def _body_contour(self, spec: PhantomSpec) -> None:
        """The skin contour, the fat layer and the aorta; the vertebral bodies must lie in the muscle."""
        col = self.column
        rx, ry = (float(v) for v in spec.body_semi_axes_mm)
        self.rx, self.ry = positive_option(rx, "body_semi_axes_mm[0]"), positive_option(ry, "body_semi_axes_mm[1]")
        self.bx, self.by = (float(v) for v in spec.body_center_ras)
        self.fat = float(spec.fat_mm)
        if not (0 <= self.fat < min(self.rx, self.ry)):
            raise InputError("fat_mm must be ≥ 0 and smaller than the body's semi-axes.", "Give e.g. fat_mm=15.")
        # The vertebral bodies (not necessarily the tips of the processes, which are clipped to
        # the skin contour) must lie in the muscle region.
        core = col.largest_semi_axis()
        inner_x, inner_y = self.rx - self.fat, self.ry - self.fat
        if (abs(col.x0 - self.bx) + core) / inner_x > 1 or (abs(col.y0 - self.by) + core) / inner_y > 1:
            raise InputError(
                "The vertebral bodies do not fit inside the body contour's muscle region.",
                "Enlarge body_semi_axes_mm, reduce fat_mm, or move spine_center_ras / body_center_ras.",
            )
        self.ax_, self.ay_ = (float(v) for v in spec.aorta_center_ras)
        self.ar = positive_option(spec.aorta_radius_mm, "aorta_radius_mm")
        self.posterior_skin = self.by - self.ry

    def _calibration_phantom(self, spec: PhantomSpec, y_cursor: float) -> float:
        """The block of rods just below ``y_cursor`` (rods side by side along x, the first at patient
        right); returns the y below it. A Mindways-style rod's HU follows the two-component model
        (QCT_BRIEF §4)."""
        dens_r, water, rnames, preset_unit = _rod_set(spec)
        if self.unit is None:
            self.unit = preset_unit
        r = positive_option(spec.rod_radius_mm, "rod_radius_mm")
        pitch = positive_option(spec.rod_pitch_mm, "rod_pitch_mm")
        bh = positive_option(spec.block_height_mm, "block_height_mm")
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
        return y_bot - 1.0

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
        for organ in sp.organs:
            (ox, oy), (sx, sy) = organ["center_ras"], organ["semi_axes_mm"]
            ex, ey = (x - float(ox)) / float(sx), (y - float(oy)) / float(sy)
            out[muscle & (ex * ex + ey * ey <= 1.0)] = float(organ["hu"])
        if sp.aorta:
            dx, dy = x - self.ax_, y - self.ay_
            rim = self.ar + float(sp.aorta_fat_mm)
            out[muscle & (dx * dx + dy * dy <= rim * rim)] = float(sp.fat_hu)
            out[muscle & (dx * dx + dy * dy <= self.ar * self.ar)] = float(sp.blood_hu)
        self.column.paint(x, y, z, patient, out)
        return out

    # -- truth --------------------------------------------------------------------------------
    def default_extent(self) -> np.ndarray:
        """The RAS box the grid covers by default: the patient, the calibration phantom and table,
        and the column from the disc above the first level to the disc below the last, plus a margin."""
        zs = [d["z"] for d in self.levels if not d["context"]]
        top = max(zs) + max(d["height"] for d in self.levels) / 2.0 + float(self.spec.disc_mm) + 5.0
        bot = min(zs) - max(d["height"] for d in self.levels) / 2.0 - float(self.spec.disc_mm) - 5.0
        return np.array([
            [self.bx - self.rx - 10.0, self.bx + self.rx + 10.0],
            [self.lowest_y - 5.0, self.by + self.ry + 10.0],
            [bot, top],
        ])

    def level_truth(self, d: Dict[str, Any]) -> LevelTruth:
        return self.column.level_truth(d, self.unit)
