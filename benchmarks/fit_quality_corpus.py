"""The fit-quality calibration's corpus: placed levels with their quality evidence and their TRUE errors.

Known truth (synthetic): the placement corpus's family (``placement_corpus``) plus degraded variants
where the fit should get worse — more noise, a thinner or fainter cortex, longer osteophytes, deeper
wedges, a bone island, stronger streaks, thicker slices, the body at the image's edge, more tilt.
Per level one click near the true centre; recorded: the quality, its deficits, the expected error,
and the true errors against the phantom's truth —

* ``outline_mean_mm`` / ``outline_max_mm``: mean |radial distance| and largest outward distance
  between the fitted trabecular outline (before any conservative shrink) and the true one, in the
  body's cross-section (the superellipse of ``LevelTruth``: semi-axes depth/2 − cortex, width/2 − cortex);
* ``ap_error_deg`` (the axes projected on the image plane), ``mid_height_error_mm`` (the chosen
  plane's centre against ``LevelTruth.central_mid_s``);
* ``outside_fraction``: share of the unshrunk ROIs' voxels the noise-free model does not put in
  trabecular bone; ``cortex_voxels`` their count; ``mean_error_hu``: |ROI mean − true HU|, worst ROI.

Real CTs (labels made by a model or by someone else: a second, independent reference) give
``label_mean_mm`` / ``label_max_mm``: distance from the fitted outer outline to the label's
boundary on the chosen slice.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Iterator, List, Optional

import numpy as np

import placement_corpus as pc
from OsteoROILib.errors import PlacementError
from OsteoROILib.placement.click import place_from_click
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.geometry import RoiShape, roi_voxels

NOISY = {"noise_sigma": 12.0, "supersample": 3, "seed": 5, "extent_ras": pc.SPINE_BOX}
#: Degradation ladders: each a list of (step name, phantom options), mildest first.
LADDERS: Dict[str, List[tuple]] = {
    "noise": [("σ 12 HU", {}), ("σ 40 HU", {"noise_sigma": 40.0}), ("σ 80 HU", {"noise_sigma": 80.0})],
    "faint cortex": [("cortex 800 HU", {}), ("cortex 500 HU", {"cortical_hu": 500.0}),
                     ("cortex 400 HU", {"cortical_hu": 400.0}), ("cortex 330 HU", {"cortical_hu": 330.0}),
                     ("cortex 280 HU", {"cortical_hu": 280.0}), ("cortex 250 HU", {"cortical_hu": 250.0})],
    "faint cortex, 5 mm slices": [("cortex 800 HU", {"spacing": (0.8, 0.8, 5.0)}),
                                  ("cortex 400 HU", {"spacing": (0.8, 0.8, 5.0), "cortical_hu": 400.0}),
                                  ("cortex 300 HU", {"spacing": (0.8, 0.8, 5.0), "cortical_hu": 300.0})],
    "osteophyte": [("none", {}), ("4 mm", {"_spur": 4.0}), ("8 mm", {"_spur": 8.0}), ("14 mm", {"_spur": 14.0})],
    "wedge": [("none", {}), ("6 mm", {"wedge_mm": 6.0}), ("12 mm", {"wedge_mm": 12.0})],
    "streaks": [("none", {}), ("−80 HU", {"_streak": -80.0}), ("−200 HU", {"_streak": -200.0})],
    "slice thickness": [("2.5 mm", {}), ("5 mm", {"spacing": (0.8, 0.8, 5.0)}),
                        ("7 mm", {"spacing": (0.8, 0.8, 7.0)})],
    "image edge": [("inside", {}), ("edge at 8 mm", {"_edge_mm": 8.0}), ("edge at 2 mm", {"_edge_mm": 2.0}),
                   ("edge at 0 mm", {"_edge_mm": 0.0}), ("edge 3 mm inside the body", {"_edge_mm": -3.0})],
    "image ends above mid-height": [("inside", {}), ("ends 8 mm above", {"_top_mm": 8.0}),
                                    ("ends 4 mm above", {"_top_mm": 4.0}), ("ends 1 mm above", {"_top_mm": 1.0})],
    "aorta against the body": [("none", {}), ("enhanced, 4 mm away", {"blood_hu": 300.0, "aorta_center_ras": (-14.0, 26.0)}),
                               ("enhanced, touching", {"blood_hu": 300.0, "aorta_center_ras": (-12.0, 22.0)}),
                               ("dense, touching", {"blood_hu": 450.0, "aorta_center_ras": (-11.0, 20.0)})],
    "bone island near the rim": [("none", {}), ("12 mm in", {"_island_mm": 3.0}), ("8 mm in", {"_island_mm": 7.0}),
                                 ("4 mm in", {"_island_mm": 10.0})],
    "small body": [("normal", {}), ("AP 22 mm", {"depth_mm": 22.0, "width_mm": 30.0}),
                   ("AP 16 mm", {"depth_mm": 16.0, "width_mm": 22.0})],
    "tilt": [("none", {}), ("sagittal 20°", {"spine_tilt_deg": (20.0, 0.0)}),
             ("sagittal 30°", {"spine_tilt_deg": (30.0, 0.0)})],
    "bone island": [("none", {}), ("4 mm island", {"bone_islands": [
        {"level": "L2", "offset_mm": (6.0, 0.0, 0.0), "radius_mm": 4.0}]})],
}
LEVELS = ("L1", "L2", "L3")


def ladder_options(step: dict) -> dict:
    """Phantom options of one ladder step (three levels, noisy, partial volume)."""
    opts = {**NOISY, "level_names": LEVELS, "trabecular_density": (140.0, 116.0, 96.0),
            "depth_mm": (30.0, 31.0, 32.0), "width_mm": (42.0, 44.0, 46.0)}
    step = dict(step)
    spur = step.pop("_spur", None)
    if spur:
        opts["osteophytes"] = [{"level": lv, "angle_deg": 0.0, "length_mm": spur, "width_mm": 12.0} for lv in LEVELS]
    streak = step.pop("_streak", None)
    if streak:
        opts["streaks"] = [{"angle_deg": 20.0, "hu": streak, "width_mm": 3.0},
                           {"angle_deg": 105.0, "hu": 0.6 * streak, "width_mm": 4.0}]
    island = step.pop("_island_mm", None)
    if island is not None:
        opts["bone_islands"] = [{"level": lv, "offset_mm": (island, 0.0, 0.0), "radius_mm": 3.0} for lv in LEVELS]
    top = step.pop("_top_mm", None)
    if top is not None:
        # the image ends this far above L1's mid-height (L1 at S = 35 mm: three 25 mm bodies, 10 mm discs)
        xr, yr, (z0, _) = pc.SPINE_BOX
        opts["extent_ras"] = (xr, yr, (z0, 35.0 + top))
    edge = step.pop("_edge_mm", None)
    if edge is not None:
        # the image's left edge (RAS +x) this far outside the bodies' widest point
        (x0, _), yr, zr = pc.SPINE_BOX
        opts["extent_ras"] = ((x0, 0.5 * 42.0 + edge), yr, zr)
    opts.update(step)
    return opts


def ladder_cases(names=None) -> Iterator[tuple]:
    """(ladder, step index, step name, Case) for every level of every step."""
    from OsteoROILib.digital_phantom import make_phantom
    from OsteoROILib.digital_phantom.spec import PhantomSpec

    for ladder, steps in LADDERS.items():
        if names is not None and ladder not in names:
            continue
        for i, (step, opts) in enumerate(steps):
            o = ladder_options(opts)
            volume, truth = make_phantom(**o)
            spec = PhantomSpec(**{**o, "noise_sigma": 0.0})
            for lv in truth.levels:
                yield ladder, i, step, pc.Case(f"{ladder}: {step}", lv.name, volume, truth=lv, spec=spec)


def unshrunk(placement):
    """The placement with its trabecular outline grown back to before the conservative shrink."""
    scale = float(placement.roi_scale)
    if scale >= 1.0:
        return placement
    o = placement.outline
    inner = np.asarray(o.inner_contour, dtype=float)
    ci = inner.mean(axis=0)
    grown = replace(o, inner_contour=ci + (inner - ci) / scale)
    grown.__dict__.pop("_tables", None)
    return replace(placement, outline=grown, roi_scale=1.0, fallback=False)


def true_outline_error(case, placement) -> Dict[str, float]:
    """Radial distance (mm) of the fitted trabecular outline from the true one, in the body's frame."""
    lv = case.truth
    o = placement.outline
    poly = np.asarray(o.inner_contour, dtype=float)
    pts = o.center + np.outer(poly[:, 0], o.ap_axis) + np.outer(poly[:, 1], o.left_axis)
    d = pts - np.asarray(lv.center_ras, dtype=float)
    x, y = d @ np.asarray(lv.ap_axis_ras), d @ np.asarray(lv.left_axis_ras)
    a, b, p = lv.depth_mm / 2 - lv.cortical_mm, lv.width_mm / 2 - lv.cortical_mm, lv.body_exponent
    th = np.arctan2(y, x)
    r_true = 1.0 / ((np.abs(np.cos(th)) / a) ** p + (np.abs(np.sin(th)) / b) ** p) ** (1.0 / p)
    err = np.hypot(x, y) - r_true
    return {"reach_mm": float(np.percentile(err, 90)), "outline_mean_mm": float(np.mean(np.abs(err))),
            "outline_max_mm": float(np.max(err))}


def label_outline_error(case, placement) -> Optional[Dict[str, float]]:
    """Distance (mm) from the fitted outer outline to the label's boundary on the chosen slice."""
    vol = case.volume
    axis = vol.slice_axis()
    body = np.moveaxis(case.body, 2 - axis, 0)[placement.slice_index]
    if not body.any():
        return None
    edge = body & ~(np.roll(body, 1, 0) & np.roll(body, -1, 0) & np.roll(body, 1, 1) & np.roll(body, -1, 1))
    idx = np.argwhere(edge)
    kji = np.insert(idx, 2 - axis, placement.slice_index, axis=1)
    edge_ras = vol.ijk_to_ras_points(kji[:, ::-1].astype(float))
    o = placement.outline
    poly = np.asarray(o.inner_contour, dtype=float)
    r = np.hypot(poly[:, 0], poly[:, 1])
    outer = poly * ((r + o.cortical_mm) / np.maximum(r, 1e-9))[:, None]
    pts = o.center + np.outer(outer[:, 0], o.ap_axis) + np.outer(outer[:, 1], o.left_axis)
    dist = np.min(np.linalg.norm(pts[:, None, :] - edge_ras[None, :, :], axis=2), axis=1)
    return {"label_mean_mm": float(np.mean(dist)), "label_max_mm": float(np.max(dist))}


def cortical_voxels(case, voxels) -> int:
    """ROI voxels whose centre the noise-free model puts in this body's cortex or endplates."""
    from OsteoROILib.digital_phantom.render import analytic_hu

    ijk = np.column_stack([voxels.i, voxels.j, voxels.k]).astype(float)
    hu = analytic_hu(case.volume.ijk_to_ras_points(ijk), case.spec)
    return int(np.count_nonzero(np.abs(hu - case.truth.cortical_hu) < 1e-3))


def rows_truth(case, res) -> Dict[str, float]:
    """Over a measurement's ROIs: non-trabecular and cortical voxels, their share, the worst |mean − truth|."""
    bad = total = cortex = 0
    worst = 0.0
    for row in res["rows"]:
        r = row["roi"]
        shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"],
                         r["half_v_mm"], r["slab_mm"])
        vox = roi_voxels(shape, case.volume.ijk_to_ras, case.volume.dimensions)
        bad += case.non_trabecular_voxels(vox)
        cortex += cortical_voxels(case, vox)
        total += len(vox.i)
        if row["mean_hu"] is not None:
            worst = max(worst, abs(row["mean_hu"] - case.truth.trabecular_hu))
    return {"cortex_voxels": int(cortex), "non_trabecular_voxels": int(bad), "outside_fraction": bad / max(total, 1),
            "mean_error_hu": worst}


ONSET_STEPS_MM = tuple(np.arange(0.0, 3.01, 0.25))


def cortex_onset(spacing, steps_mm=ONSET_STEPS_MM) -> Dict[str, object]:
    """How far (mm) the trabecular outline may reach beyond the true one before the ROIs take in
    cortex: the phantom's true outlines grown by each step (depth and width + 2 × step, the cortex
    kept), measured, cortical voxels counted (noise-free model). Returns the steps, the counts per
    step (all levels) and the first step with cortex."""
    from OsteoROILib.digital_phantom import make_phantom
    from OsteoROILib.digital_phantom.spec import PhantomSpec

    opts = {"spacing": tuple(spacing), "extent_ras": pc.SPINE_BOX, "level_names": LEVELS,
            "trabecular_density": (140.0, 116.0, 96.0), "depth_mm": (30.0, 31.0, 32.0), "width_mm": (42.0, 44.0, 46.0)}
    volume, truth = make_phantom(**opts)
    spec = PhantomSpec(**opts)
    counts = []
    for step in steps_mm:
        outlines = {}
        for lv in truth.levels:
            o = lv.outline()
            outlines[lv.name] = replace(o, depth_mm=o.depth_mm + 2 * step, width_mm=o.width_mm + 2 * step)
        res = measure_levels(volume, {lv.name: lv.center_ras for lv in truth.levels}, outlines=outlines, aorta=False)
        n = 0
        for lv in truth.levels:
            case = pc.Case("onset", lv.name, volume, truth=lv, spec=spec)
            n += rows_truth(case, {"rows": [r for r in res["rows"] if r["level"] == lv.name]})["cortex_voxels"]
        counts.append(n)
    first = next((float(s) for s, n in zip(steps_mm, counts) if n > 0), None)
    return {"spacing_mm": list(map(float, spacing)), "steps_mm": [float(s) for s in steps_mm], "cortex_voxels": counts,
            "onset_mm": first}


def roi_truth(case, placement) -> Dict[str, float]:
    """The unshrunk ROIs of a placement against the noise-free model (``rows_truth``)."""
    placement = replace(placement, point_ras=np.asarray(placement.outline.center, dtype=float))
    return rows_truth(case, measure_levels(case.volume, None, placements={case.level: placement}, aorta=False))


def record(case, offset=(1.5, -1.0, 2.0)) -> Dict[str, object]:
    """One placed level: its quality evidence and, against the reference, its true errors."""
    c, _, _ = case.centre_and_height()
    out: Dict[str, object] = {"case": case.ct, "level": case.level}
    click = c + np.asarray(offset)
    if not bool(np.all(case.volume.contains_ras(click))):
        out["skipped"] = "the click is outside the image"
        return out
    try:
        pl = place_from_click(case.volume, click, case.level)
    except PlacementError as exc:
        out["refused"] = str(exc)
        return out
    reasons = pl.reasons
    out.update(quality=float(pl.fit_quality), reasons=list(reasons), roi_scale=float(pl.roi_scale),
               deficits=dict(getattr(reasons, "deficits", {})), measures=dict(getattr(reasons, "measures", {})),
               expected_reach_mm=getattr(reasons, "expected_reach_mm", None),
               expected_height_error_mm=getattr(reasons, "expected_height_error_mm", None))
    full = unshrunk(pl)
    a = np.asarray(pl.outline.ap_axis, dtype=float)
    nrm = case.volume.slice_normal_ras()
    a = a - nrm * (a @ nrm)
    out["ap_error_deg"] = float(np.degrees(np.arccos(np.clip(abs(a @ case.reference_ap_axis()) / np.linalg.norm(a),
                                                              -1, 1))))
    if case.truth is not None:
        lv = case.truth
        out.update(true_outline_error(case, full))
        out["mid_height_error_mm"] = float(abs(np.asarray(pl.outline.center) @ np.asarray(lv.normal_ras)
                                               - lv.central_mid_s))
        out.update(roi_truth(case, full))
    else:
        out.update(label_outline_error(case, full) or {})
    return out
