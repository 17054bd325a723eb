"""Calibration rods in the image: measuring one point per rod, or finding and naming the phantom's rods.

Rods are cylinders along the table (the scanner's z axis), so they are measured on the image's
axial slices: a **circular ROI inset from the rod wall** (radius ``min(0.7·R, R − 1.5 pixels)``
of the rod radius R) over a **slab of several slices** (default ``ROD_SLAB_MM`` = 10 mm, at least
3 slices), with the project's exact ROI membership (:mod:`..roi.disc`, :mod:`..roi.stats`).
Rods are found by the disc detector of :mod:`.rod_finder`.

* :func:`measure_rod` — one point per rod: the rod around the point is refined (the point need
  not be central); a rod too faint to see (e.g. a water-equivalent 0 mg/cm³ rod) is measured
  around the point itself with the given radius, with a warning.
* :func:`auto_rods` — the chosen phantom's rods: by default the most posterior row of similar
  discs ("below the patient"), or every disc in a given region; the count must equal the
  phantom's; the rods are ordered by HU and matched to the phantom's rods in the order their
  HU must rise (for Mindways rods, every order a positive slope can produce is tried and the
  best fit kept); a wrong count or a match whose fit fails the QA rules is refused with a report
  of what was found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from ..roi.disc import rod_roi
from ..roi.stats import roi_statistics
from .model import Calibration
from .phantom_fit import fit_phantom, scanner_facts
from .phantom_library import METHOD_MINDWAYS, PhantomDefinition
from .rod_finder import FIND_SLAB_MM, MIN_SLAB_SLICES, ROI_WALL_PIXELS, SEARCH_RADII_MM, RodCandidate, find_rods

#: Default rod slab thickness (mm; at least ``MIN_SLAB_SLICES`` slices).
ROD_SLAB_MM = 10.0
#: Phantoms with fewer rods are auto-detected only with confirmation (a 2-point line always fits).
MIN_AUTO_RODS = 3
CONFIRM_OPTION = "--confirm-rods"
#: ROI radius = min(ROI_FRACTION·R, R − ROI_WALL_PIXELS·pixel).
ROI_FRACTION = 0.7


@dataclass
class RodMeasurement:
    """A measured rod: its ROI (circle ``roi_radius_mm`` around ``center_ras`` in the axial plane,
    ``slab_mm`` thick) and the ROI's mean/SD/voxel count."""

    name: str
    center_ras: List[float]
    rod_radius_mm: float
    roi_radius_mm: float
    slab_mm: float
    mean_hu: Optional[float]
    sd_hu: Optional[float]
    n_voxels: int
    found_by: str
    point_ras: Optional[List[float]] = None
    radius_source: str = "fitted"
    warnings: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "center_ras": [round(float(v), 3) for v in self.center_ras],
            "point_ras": None if self.point_ras is None else [round(float(v), 3) for v in self.point_ras],
            "rod_radius_mm": round(float(self.rod_radius_mm), 3),
            "radius_source": self.radius_source,
            "roi_radius_mm": round(float(self.roi_radius_mm), 3),
            "slab_mm": round(float(self.slab_mm), 3),
            "mean_hu": self.mean_hu,
            "sd_hu": self.sd_hu,
            "n_voxels": self.n_voxels,
            "found_by": self.found_by,
            "warnings": list(self.warnings),
        }


# ----------------------------------------------------------------------------------------------
# Measuring a rod
# ----------------------------------------------------------------------------------------------
def default_slab_mm(volume: Volume) -> float:
    return max(ROD_SLAB_MM, MIN_SLAB_SLICES * volume.slice_spacing())


def roi_radius_for(rod_radius_mm: float, volume: Volume) -> float:
    """The ROI radius inset from the rod wall: min(0.7·R, R − 1.5 in-plane pixels), ≥ 1 pixel."""
    ax = volume.slice_axis()
    pixel = max(float(volume.spacing[a]) for a in (0, 1, 2) if a != ax)
    return max(min(ROI_FRACTION * rod_radius_mm, rod_radius_mm - ROI_WALL_PIXELS * pixel), pixel)



def _measure_at(volume: Volume, name: str, center, rod_radius: float, slab_mm: float, found_by: str,
                point=None, radius_source: str = "fitted", warnings=None) -> RodMeasurement:
    roi_r = roi_radius_for(rod_radius, volume)
    stats = roi_statistics(volume, rod_roi(volume, center, roi_r, slab_mm, name=f"rod {name}"))
    w = list(warnings or []) + [f"rod {name}: {x}" for x in stats["warnings"]]
    return RodMeasurement(name=name, center_ras=[float(x) for x in center], rod_radius_mm=float(rod_radius),
                          roi_radius_mm=float(roi_r), slab_mm=float(slab_mm), mean_hu=stats["mean_hu"],
                          sd_hu=stats["sd_hu"], n_voxels=int(stats["n_voxels"]), found_by=found_by,
                          point_ras=None if point is None else [float(x) for x in point],
                          radius_source=radius_source, warnings=w)


def measure_rod(volume: Volume, point_ras: Sequence[float], name: str = "rod", rod_radius_mm: Optional[float] = None,
                slab_mm: Optional[float] = None, fallback_radius_mm: Optional[float] = None) -> RodMeasurement:
    """Measure the rod around ``point_ras``: refine its centre (and radius unless given), then
    measure a circular ROI inset from the wall over a slab of several slices.

    A rod that cannot be seen around the point (too faint) is measured around the point with
    ``rod_radius_mm`` or ``fallback_radius_mm`` (else refused), with a warning.
    """
    p = np.asarray(point_ras, dtype=float).reshape(-1)
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise InputError(f"The point of rod {name} is not three finite RAS coordinates.", "Give R,A,S in mm.")
    if not volume.contains_ras(p)[0]:
        raise InputError(f"The point of rod {name} (RAS {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) is outside the image.",
                         "Give RAS millimetres as Slicer shows them, inside the phantom's rod.")
    slab_mm = float(slab_mm) if slab_mm is not None else default_slab_mm(volume)
    reach = (rod_radius_mm or max(SEARCH_RADII_MM)) * 1.6 + 4.0
    box = np.array([[p[0] - reach, p[0] + reach], [p[1] - reach, p[1] + reach], [p[2], p[2]]])
    try:
        cands = find_rods(volume, region=box, center_s=p[2], slab_mm=max(slab_mm, FIND_SLAB_MM),
                          radius_mm=rod_radius_mm)
    except InputError:
        cands = []
    hit = None
    for cnd in cands:
        if np.linalg.norm(cnd.center_ras[:2] - p[:2]) <= cnd.radius_mm:
            if hit is None or cnd.score > hit.score:
                hit = cnd
    if hit is not None:
        # Keep the in-plane refined centre, at the point's own S (rods run along S).
        center = _in_plane_at(volume, hit.center_ras, p)
        radius = float(rod_radius_mm) if rod_radius_mm else hit.radius_mm
        src = "phantom definition" if rod_radius_mm else "fitted"
        warnings = []
        shift = float(np.linalg.norm(center - p))
        if shift > 0.5 * radius:
            warnings.append(f"rod {name}: the point was {shift:.1f} mm from the rod's centre; the ROI was centred on the rod.")
        return _measure_at(volume, name, center, radius, slab_mm, "point (refined)", p, src, warnings)
    radius = rod_radius_mm or fallback_radius_mm
    if not radius:
        raise InputError(
            f"No rod was found around the point of rod {name} (RAS {p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}), and its radius "
            "is unknown.",
            "Place the point inside the rod, or give the rods' radius (phantom definition rod_radius_mm).",
        )
    warning = (f"rod {name}: no rod edge is visible around the point (too little contrast to its surroundings); "
               f"measured a circle around the point itself with rod radius {radius:.1f} mm — make sure the point is "
               "at the rod's centre.")
    return _measure_at(volume, name, p, float(radius), slab_mm, "point (as given)", p,
                       "phantom definition" if rod_radius_mm else "other rods", [warning])


def _in_plane_at(volume: Volume, center_ras, point_ras) -> np.ndarray:
    """``center_ras`` moved along the slice normal to the point's slice plane."""
    n = volume.slice_normal_ras()
    c = np.asarray(center_ras, dtype=float)
    return c + n * float((np.asarray(point_ras, dtype=float) - c) @ n)


def measure_rods(volume: Volume, points: Mapping[str, Sequence[float]], phantom: PhantomDefinition,
                 slab_mm: Optional[float] = None) -> List[RodMeasurement]:
    """Measure one point per rod; keys are the phantom's rod names or densities as listed."""
    if not points:
        raise InputError("No rod points were given.", "Give --rod NAME=R,A,S for each rod (at least two).")
    resolved = []
    names = set()
    for key, xyz in points.items():
        rod = phantom.rod(key)
        if rod.name in names:
            raise InputError(f"Rod {rod.name} is given twice.", "Give one point per rod.")
        names.add(rod.name)
        resolved.append((rod.name, xyz))
    radius = phantom.rod_radius_mm
    out: Dict[str, RodMeasurement] = {}
    pending = []
    for name, xyz in resolved:
        try:
            out[name] = measure_rod(volume, xyz, name=name, rod_radius_mm=radius, slab_mm=slab_mm)
        except InputError as exc:
            if radius is None and "No rod was found" in str(exc):
                pending.append((name, xyz))
            else:
                raise
    if pending:
        fitted = [m.rod_radius_mm for m in out.values() if m.radius_source == "fitted"]
        if not fitted:
            raise InputError(
                f"No rod could be seen around the points of {', '.join(n for n, _ in pending)}, and the phantom does "
                "not give its rod radius.",
                "Check the points (RAS mm, inside the rods) or use a phantom definition with rod_radius_mm.",
            )
        fb = float(np.median(fitted))
        for name, xyz in pending:
            out[name] = measure_rod(volume, xyz, name=name, slab_mm=slab_mm, fallback_radius_mm=fb)
    return [out[n] for n, _ in resolved]


# ----------------------------------------------------------------------------------------------
# Automatic finding and matching
# ----------------------------------------------------------------------------------------------
def _rows_by_a(cands: List[RodCandidate]) -> List[List[RodCandidate]]:
    """Group candidates into rows of similar A (anterior) coordinate and similar radius."""
    if not cands:
        return []
    med_r = float(np.median([c.radius_mm for c in cands]))
    tol = max(5.0, 0.75 * med_r)
    order = sorted(cands, key=lambda c: c.center_ras[1])
    rows: List[List[RodCandidate]] = [[order[0]]]
    for c in order[1:]:
        if c.center_ras[1] - rows[-1][-1].center_ras[1] <= tol:
            rows[-1].append(c)
        else:
            rows.append([c])
    out = []
    for row in rows:
        rmed = float(np.median([c.radius_mm for c in row]))
        out.append([c for c in row if abs(c.radius_mm - rmed) <= 0.35 * rmed])
    return out


def expected_orders(phantom: PhantomDefinition) -> List[List[int]]:
    """Rod index orders (ascending expected HU) a positive-slope scanner can produce.

    Linear phantoms: ascending density. Mindways rods: HU ≈ (ρ_water − 999.6) + σ_ref·ρ + const,
    whose order depends on σ_ref; every order for σ_ref from 0.3 to 3 HU per mg/cm³ is returned.
    """
    dens = np.array([r.density for r in phantom.rods])
    if phantom.method != METHOD_MINDWAYS:
        return [list(np.argsort(dens, kind="stable"))]
    water = np.array([r.water_density for r in phantom.rods])
    orders: List[List[int]] = []
    for s in np.linspace(0.3, 3.0, 271):
        o = list(np.argsort(water + s * dens, kind="stable"))
        if o not in orders:
            orders.append(o)
    return orders


@dataclass
class AutoRodsResult:
    rods: List[RodMeasurement]
    candidates: List[RodCandidate]
    chosen: List[RodCandidate]
    report: List[str]


def _discs_found(cands: Sequence[RodCandidate], region) -> List[str]:
    """The report's opening lines: how many discs were found and each one's place, size and HU."""
    report = [f"found {len(cands)} rod-like disc(s)" + (" in the region" if region is not None else "")]
    for c in cands:
        cr = c.center_ras
        report.append(f"  disc at RAS ({cr[0]:.1f}, {cr[1]:.1f}, {cr[2]:.1f}) radius {c.radius_mm:.1f} mm, "
                      f"{c.mean_hu:.1f} HU (background {c.background_hu:.1f})")
    return report


def _choose_discs(cands: List[RodCandidate], phantom: PhantomDefinition, region,
                  report: Sequence[str]) -> List[RodCandidate]:
    """The discs that are the phantom's rods: every disc in the region, or else the most posterior
    row of as many similar discs as the phantom has rods; refuses any other count."""
    n = len(phantom.rods)
    if region is not None:
        if len(cands) != n:
            raise InputError(
                f"Found {len(cands)} rod-like disc(s) in the region but phantom {phantom.id} has {n} rods.\n"
                + "\n".join(report),
                "Adjust the region to hold exactly the phantom's rods, check the phantom choice, or place one point "
                "per rod with --rod NAME=R,A,S.",
            )
        return list(cands)
    rows = [r for r in _rows_by_a(cands) if len(r) >= 2]
    exact = [r for r in rows if len(r) == n]
    if not exact:
        sizes = ", ".join(f"{len(r)} at A≈{np.mean([c.center_ras[1] for c in r]):.0f} mm" for r in rows) or "none"
        raise InputError(
            f"No row of {n} similar rods (phantom {phantom.id}) was found below the patient; rows found: {sizes}.\n"
            + "\n".join(report),
            "Give a region around the phantom with --region R0,R1,A0,A1, check the phantom choice, or place one "
            "point per rod with --rod NAME=R,A,S.",
        )
    return exact[0]  # the most posterior row: "below the patient" (supine)


def _best_match(volume: Volume, phantom: PhantomDefinition, chosen: Sequence[RodCandidate], slab_mm: float,
                report: Sequence[str]) -> Tuple[List[RodMeasurement], Calibration]:
    """The discs, ordered by HU, named after the phantom's rods in each order their HU can rise in
    (``expected_orders``) and measured; the naming whose fit passes the QA rules with the highest R²."""
    by_hu = sorted(chosen, key=lambda c: c.mean_hu)
    radius_def = phantom.rod_radius_mm
    measured = []
    for c in by_hu:
        r = float(radius_def) if radius_def else c.radius_mm
        measured.append((c, r))
    best = None
    errors = []
    for order in expected_orders(phantom):
        rods = []
        for (c, r), idx in zip(measured, order):
            name = phantom.rods[idx].name
            center = c.center_ras.copy()
            rods.append(_measure_at(volume, name, center, r, slab_mm, "auto", None,
                                    "phantom definition" if radius_def else "fitted"))
        try:
            cal = fit_phantom([m.to_dict() for m in rods], phantom, scanner=scanner_facts(volume))
        except InputError as exc:
            errors.append(str(exc.problem))
            continue
        if best is None or cal.r2 > best[1].r2:
            best = (rods, cal)
    if best is None:
        raise InputError(
            f"Nothing phantom-like was found: the {len(phantom.rods)} discs found do not match phantom {phantom.id}; "
            f"ordered by HU, no assignment to its rods gives a physical, acceptable fit "
            f"({errors[0] if errors else ''}).\n" + "\n".join(report),
            "Check the phantom choice and its certificate values, or place one point per rod with --rod NAME=R,A,S.",
        )
    return best


def auto_rods(volume: Volume, phantom: PhantomDefinition, region=None, center_s: Optional[float] = None,
              slab_mm: Optional[float] = None, *, confirm_few_rods: bool = False) -> AutoRodsResult:
    """Find the phantom's rods, match them to its rods by HU order and measure them.

    Refuses (InputError, saying what was found) when the count differs from the phantom's or
    when no order consistent with HU rising with density gives a physical, acceptable fit
    (:mod:`.plausibility`). A phantom of fewer than ``MIN_AUTO_RODS`` rods is never found
    without ``confirm_few_rods``: two blobs of anything fit a line exactly (R² = 1).
    """
    if len(phantom.rods) < MIN_AUTO_RODS and not confirm_few_rods:
        raise InputError(
            f"Phantom {phantom.id} has {len(phantom.rods)} rods: two discs of anything (fat, contrast) fit a line "
            "exactly, so its rods are not found automatically without confirmation.",
            f"Place one point per rod with --rod NAME=R,A,S, or confirm with {CONFIRM_OPTION} after checking "
            "that the discs found are the phantom's rods.")
    if phantom.layout != "rods":
        raise InputError(f"Phantom {phantom.id} has {phantom.layout}, not rods: automatic rod finding does not apply.",
                         "Place one point per insert with --rod NAME=R,A,S.")
    cands = find_rods(volume, region=region, center_s=center_s, phantom=phantom)
    report = _discs_found(cands, region)
    chosen = _choose_discs(cands, phantom, region, report)
    slab_mm = float(slab_mm) if slab_mm is not None else default_slab_mm(volume)
    rods, _ = _best_match(volume, phantom, chosen, slab_mm, report)
    order_names = " < ".join(f"{m.name} ({m.mean_hu:.1f} HU)" for m in rods)
    report.append(f"matched by HU order: {order_names}")
    by_name = {m.name: m for m in rods}
    ordered = [by_name[r.name] for r in phantom.rods]
    return AutoRodsResult(rods=ordered, candidates=cands, chosen=chosen, report=report)
