"""The digital phantom's vertebral column as an analytic function of RAS position.

:class:`VertebralColumn` holds the lumbar levels read from the options: the stacked bodies
(superellipse prisms with a cortical shell), discs, spinal canal and posterior elements, and the
hard cases (wedge fracture, osteophytes, bone islands, tilt of the whole column); it paints their
HU into the patient and gives each level's truth. The package docstring describes the anatomy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np

from ..errors import InputError
from .spec import PhantomSpec, axis_rotation, per_level, positive_option
from .truth import LevelTruth

_SPINE_NAMES = ["T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1"]


def _neighbour_name(name: str, step: int) -> str:
    if name in _SPINE_NAMES:
        k = _SPINE_NAMES.index(name) + step
        if 0 <= k < len(_SPINE_NAMES):
            return _SPINE_NAMES[k]
    return f"{name}{'-above' if step < 0 else '-below'}"


def level_names(spec: PhantomSpec) -> List[str]:
    """The requested level names (at least one, all distinct)."""
    names = [str(n) for n in spec.level_names]
    n = len(names)
    if n == 0:
        raise InputError("The phantom needs at least one vertebral level.", "Give level_names, e.g. L1–L4.")
    if len(set(names)) != n:
        raise InputError("Phantom level names must be unique.", "Give distinct names, e.g. L1, L2, L3, L4.")
    return names


def scanner_line(spec: PhantomSpec) -> Tuple[float, float]:
    """(slope HU per density unit, intercept HU) of the scanner model ``HU = intercept + slope × density``."""
    slope = float(spec.scanner_slope)
    intercept = float(spec.scanner_intercept)
    if not (math.isfinite(slope) and slope > 0 and math.isfinite(intercept)):
        raise InputError(
            "The phantom scanner slope must be positive and the intercept finite.",
            "Give scanner_slope > 0 (HU per mg/cm³), e.g. 1.25, and a finite scanner_intercept.",
        )
    return slope, intercept


def _level_options(spec: PhantomSpec, names: List[str], slope: float, intercept: float) -> Dict[str, List[float]]:
    """The per-level options of the bodies, one value per level, each checked."""
    n = len(names)
    hu = per_level(spec.trabecular_hu, n, "trabecular_hu", allow_none=True)
    if hu is None:
        dens = per_level(spec.trabecular_density, n, "trabecular_density")
        hu = [intercept + slope * d for d in dens]
    else:
        dens = [(h - intercept) / slope for h in hu]
    opts = dict(
        density=dens, hu=hu,
        cort_hu=per_level(spec.cortical_hu, n, "cortical_hu"),
        cort=per_level(spec.cortical_mm, n, "cortical_mm"),
        endp=per_level(spec.endplate_mm if spec.endplate_mm is not None else spec.cortical_mm, n, "endplate_mm"),
        depth=per_level(spec.depth_mm, n, "depth_mm"),
        width=per_level(spec.width_mm, n, "width_mm"),
        height=per_level(spec.height_mm, n, "height_mm"),
        rot=per_level(spec.rotation_deg, n, "rotation_deg"),
        p=per_level(spec.body_exponent, n, "body_exponent"),
        wedge=per_level(spec.wedge_mm, n, "wedge_mm"),
    )
    disc = float(spec.disc_mm)
    if not (math.isfinite(disc) and disc >= 0):
        raise InputError("disc_mm must be ≥ 0.", "Give the disc height in mm (e.g. 10).")
    for i, nm in enumerate(names):
        _check_level(nm, {key: values[i] for key, values in opts.items()})
    return opts


def _check_level(nm: str, o: Dict[str, float]) -> None:
    """Refuse a body that cannot be built: no trabecular bone left, odd shape, wedge or rotation."""
    for label, v in (("depth_mm", o["depth"]), ("width_mm", o["width"]), ("height_mm", o["height"])):
        positive_option(v, f"{label} of {nm}")
    if o["cort"] <= 0 or o["endp"] <= 0:
        raise InputError(
            f"The cortical shell of {nm} must be thicker than 0 mm.", "Give cortical_mm/endplate_mm > 0."
        )
    if min(o["depth"], o["width"]) / 2.0 - o["cort"] <= 0 or o["height"] / 2.0 - o["endp"] <= 0:
        raise InputError(
            f"The cortical shell of {nm} ({o['cort']:g} mm, endplates {o['endp']:g} mm) leaves no trabecular bone.",
            "Use a thinner shell or a larger body.",
        )
    if not 1.5 <= o["p"] <= 10.0:
        raise InputError(
            f"body_exponent of {nm} is {o['p']:g}; it must lie in [1.5, 10].",
            "Use 2 for an ellipse, 2.5–4 for a boxier body.",
        )
    if not 0.0 <= o["wedge"] <= o["height"] - 2.0 * o["endp"] - 1.0:
        raise InputError(
            f"wedge_mm of {nm} is {o['wedge']:g}; it must lie in [0, height − 2·endplate − 1 mm].",
            "Give the anterior height loss in mm, e.g. 8.",
        )
    if abs(o["rot"]) > 45.0:
        raise InputError(
            f"The axial rotation of {nm} is {o['rot']:g}°; the phantom allows at most ±45°.",
            "Give rotation_deg within ±45.",
        )


class VertebralColumn:
    """The lumbar column: bodies stacked top to bottom about S = 0 with discs between them, the
    spinal canal and posterior elements, the hard cases, and the tilt of the whole column."""

    def __init__(self, spec: PhantomSpec, names: List[str], slope: float, intercept: float):
        self.spec = spec
        self._stack_levels(spec, names, _level_options(spec, names, slope, intercept))
        self._level_arrays()
        self._posterior_elements(spec)
        self._setup_hard_cases(spec, self._asc_index)
        if self._spurs:
            self.spine_reach += max(o["length"] for o in self._spurs)

    def _stack_levels(self, spec: PhantomSpec, names: List[str], o: Dict[str, List[float]]) -> None:
        """The levels as dicts, top to bottom, centred on S = 0, with the context bodies above and below."""
        n = len(names)
        height, disc = o["height"], float(spec.disc_mm)
        total = sum(height) + disc * (n - 1)
        cz = []
        top = total / 2.0
        for h in height:
            cz.append(top - h / 2.0)
            top -= h + disc
        levels = [
            dict(name=names[i], density=o["density"][i], hu=o["hu"][i], cort_hu=o["cort_hu"][i], cort=o["cort"][i],
                 endp=o["endp"][i], depth=o["depth"][i], width=o["width"][i], height=height[i], rot=o["rot"][i],
                 p=o["p"][i], z=cz[i], context=False, wedge=o["wedge"][i])
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

    def _level_arrays(self) -> None:
        """Per-level arrays in ascending S, for looking a point's level up."""
        asc = sorted(self.levels, key=lambda d: d["z"])
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

    def _posterior_elements(self, spec: PhantomSpec) -> None:
        """Canal and posterior elements (sizes shared by all levels), and how far the column reaches."""
        self.rcs = positive_option(spec.canal_depth_mm, "canal_depth_mm") / 2.0
        self.rct = positive_option(spec.canal_width_mm, "canal_width_mm") / 2.0
        self.arch = positive_option(spec.arch_mm, "arch_mm")
        self.spinous = positive_option(spec.spinous_mm, "spinous_mm")
        self.transverse = positive_option(spec.transverse_mm, "transverse_mm")
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

    def _setup_hard_cases(self, spec: PhantomSpec, index: Dict[str, int]) -> None:
        """Osteophytes, bone islands and the column's tilt (PhantomSpec "Hard cases")."""
        tilt = [float(v) for v in spec.spine_tilt_deg]
        if len(tilt) != 2 or not all(math.isfinite(v) and abs(v) <= 45.0 for v in tilt):
            raise InputError("spine_tilt_deg needs two angles (about R, about A) within ±45°.",
                             "Give e.g. spine_tilt_deg=(12, 0).")
        self.tilt = None if tilt == [0.0, 0.0] else axis_rotation(1, tilt[1]) @ axis_rotation(0, tilt[0])
        self._spurs = [self._osteophyte(dict(o), index) for o in spec.osteophytes or ()]
        self._islands = [self._bone_island(dict(b), index) for b in spec.bone_islands or ()]

    def _osteophyte(self, o: Dict[str, Any], index: Dict[str, int]) -> Dict[str, Any]:
        name = str(o.get("level", ""))
        if name not in index or self.levels_by_name(name)["context"]:
            raise InputError(f"Osteophyte on unknown level {name!r}.",
                             "Give level as one of the phantom's level_names, e.g. 'L2'.")
        li = index[name]
        ang = math.radians(float(o.get("angle_deg", 0.0)))
        length = positive_option(o.get("length_mm", 6.0), "osteophyte length_mm")
        width = positive_option(o.get("width_mm", 10.0), "osteophyte width_mm")
        height = positive_option(o.get("height_mm", 2.0 * self._hh[li]), "osteophyte height_mm")
        # rim radius of the outer superellipse in that direction
        c, sn = math.cos(ang), math.sin(ang)
        p = self._p[li]
        rim = (abs(c / self._a[li]) ** p + abs(sn / self._b[li]) ** p) ** (-1.0 / p)
        return dict(li=li, c=c, s=sn, rim=rim, length=length, width=width,
                    z=float(o.get("z_mm", 0.0)), half_h=0.5 * height, hu=float(o.get("hu", 600.0)))

    def _bone_island(self, b: Dict[str, Any], index: Dict[str, int]) -> Dict[str, Any]:
        r = positive_option(b.get("radius_mm", 4.0), "bone island radius_mm")
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
        return dict(c=centre, r=r, hu=float(b.get("hu", 1000.0)))

    def largest_semi_axis(self) -> float:
        """The largest outer semi-axis (depth/2 or width/2, mm) of any body, context bodies included."""
        return float(np.max(np.maximum(self._a, self._b)))

    def levels_by_name(self, name: str) -> Dict[str, Any]:
        return next(d for d in self.levels if d["name"] == name)

    def tilted(self, p) -> np.ndarray:
        """A point of the column's own frame → RAS (the tilt about (x0, y0, 0))."""
        p = np.asarray(p, dtype=float)
        if self.tilt is None:
            return p
        o = np.array([self.x0, self.y0, 0.0])
        return o + self.tilt @ (p - o)

    def tilted_dir(self, d) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        return d if self.tilt is None else self.tilt @ d

    # -- evaluation ---------------------------------------------------------------------------
    def paint(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, patient: np.ndarray, out: np.ndarray) -> None:
        """Write the column's HU into ``out`` at the points inside the patient, then the bone islands."""
        rr = self.spine_reach
        if self.tilt is None:
            m = patient & (np.abs(x - self.x0) <= rr) & (np.abs(y - self.y0) <= rr)
            idx = np.nonzero(m)[0]
            if idx.size:
                out[idx] = self._spine(x[idx], y[idx], z[idx], out[idx])
        else:
            # the column's own frame: rotate the points back by the tilt about (x0, y0, 0)
            rt = self.tilt.T
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
    def level_truth(self, d: Dict[str, Any], unit: str) -> LevelTruth:
        th = math.radians(d["rot"])
        ap = np.array([-math.sin(th), math.cos(th), 0.0])
        left = np.array([-math.cos(th), -math.sin(th), 0.0])
        center = np.array([self.x0, self.y0, d["z"]])
        normal = np.array([0.0, 0.0, 1.0])
        sup, inf = d["z"] + d["height"] / 2.0, d["z"] - d["height"] / 2.0
        if self.tilt is not None:
            center, ap, left, normal = self.tilted(center), self.tilted_dir(ap), self.tilted_dir(left), \
                self.tilted_dir(normal)
            # S coordinates of the endplates' centres (on the vertebra's own axis)
            sup, inf = (float(center[2] + sgn * d["height"] / 2.0 * normal[2]) for sgn in (1.0, -1.0))
        return LevelTruth(
            name=d["name"], trabecular_density=d["density"], density_unit=unit, trabecular_hu=d["hu"],
            cortical_hu=d["cort_hu"], center_ras=center,
            superior_endplate_s=sup, inferior_endplate_s=inf,
            ap_axis_ras=ap, left_axis_ras=left, normal_ras=normal,
            depth_mm=d["depth"], width_mm=d["width"], height_mm=d["height"], cortical_mm=d["cort"],
            endplate_mm=d["endp"], rotation_deg=d["rot"], body_exponent=d["p"], wedge_mm=d.get("wedge", 0.0),
        )
