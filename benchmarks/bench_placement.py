"""Automatic placement benchmarks: accuracy, jitter precision, speed, peer comparison.

    .venv/bin/python benchmarks/bench_placement.py [--quick]

prints one table and writes ``benchmarks/results/placement.json``. Nothing here asserts a
timing; targets are reported (``met``).

* **Accuracy** (noise-free phantoms, no partial volume, so every trabecular voxel reads exactly
  the configured HU): per level, a click 3 mm/2 mm off-centre and 4 mm off the mid-plane →
  ``measure_levels``: voxels in any ROI that are not trabecular (cortex, disc, canal: target 0);
  the oval's area / the largest ellipse in the TRUE anterior-2/3 trabecular region (≥ 0.8);
  |mean − truth| (≤ 2 HU); the chosen slice vs the true mid slice.
* **Precision**: the click jittered uniformly ±3 mm in-plane and ±1 slice, ≥ 20 repeats per level;
  coefficient of variation of each level's mean HU per ROI shape (target < 1 %), on a noisy
  phantom and on the real 3 mm CT (``../shared/data/totalseg_example``; clicks around the
  vertebral-body label centroids).
* **Speed**: click → five ROIs with statistics on the 512×512×300 benchmark CT
  (``bench_core.phantom_ct``), vs a full-volume baseline measured in the same run: one
  SimpleITK recursive-Gaussian smoothing of the whole CT (the first step of any whole-volume
  segmentation approach); the foundation's single-slice shell probe (``--no-auto``) is shown too.
* **Peer**: the real CT's L1–L4 from the segmentation (``--labels vertebral_bodies``) and from
  clicks, side by side with ``spine_report.json`` (that tool's whole-body mean/median HU and
  middle height). The peer averages the *whole* body incl. cortex and endplates, so its mean is
  expected above our trabecular ROIs; its median is closer.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_core as bc  # noqa: E402

from OsteoROILib.placement.click import place_from_click  # noqa: E402
from OsteoROILib.placement.tilted import to_vertebra_plane  # noqa: E402
from OsteoROILib.roi.geometry import RoiShape, VoxelSet, roi_voxels  # noqa: E402
from OsteoROILib.roi.islands import outside_spheres, voxel_ras  # noqa: E402
from OsteoROILib.placement.measure import measure_levels  # noqa: E402
from OsteoROILib.digital_phantom import make_phantom  # noqa: E402
from OsteoROILib.roi.family import build_roi_family  # noqa: E402

TOTALSEG = os.path.normpath(os.path.join(bc.ROOT, "..", "shared", "data", "totalseg_example"))
OUT = os.path.join(HERE, "results", "placement.json")
OFFSET = np.array([3.0, 2.0, 4.0])
SPINE_BOX = ((-75.0, 75.0), (-75.0, 60.0), (-85.0, 85.0))


def _roi_values(volume, row):
    r = row["roi"]
    shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"], r["half_v_mm"],
                     r["slab_mm"])
    return roi_voxels(shape, volume.ijk_to_ras, volume.dimensions).values(volume.array)


def bench_accuracy(quick: bool) -> List[Dict[str, Any]]:
    cases = {
        "default": {},
        "osteoporotic": {"trabecular_hu": (45, 40, 35, 30)},
        "rotated": {"rotation_deg": (15, -10, 20, 0)},
        "oblique": {"orientation": "oblique"},
        "boxy body (p=3)": {"body_exponent": 3.0},
        "0.6 mm slices": {"spacing": (0.7, 0.7, 0.6), "extent_ras": SPINE_BOX},
        "osteophytes (anterior 8 mm on L2, left 6 mm on L3)": {"osteophytes": [
            {"level": "L2", "angle_deg": 0.0, "length_mm": 8.0, "width_mm": 12.0},
            {"level": "L3", "angle_deg": 90.0, "length_mm": 6.0, "width_mm": 12.0}]},
        "tilted spine (12°, −8°), vertebra plane": {"spine_tilt_deg": (12.0, -8.0), "extent_ras": SPINE_BOX},
    }
    if quick:
        cases = {k: cases[k] for k in ("default", "rotated")}
    rows = []
    for name, opts in cases.items():
        plane = "vertebra" if "vertebra plane" in name else "image"
        volume, truth = make_phantom(**opts)
        points = {lv.name: lv.center_ras + OFFSET for lv in truth.levels}
        res = measure_levels(volume, points, plane=plane)
        bad = 0
        worst_err = 0.0
        for row in res["rows"]:
            vals = _roi_values(volume, row)
            hu = np.float32(truth.level(row["level"]).trabecular_hu)
            bad += int(np.count_nonzero(vals != hu))
            worst_err = max(worst_err, abs(row["mean_hu"] - float(hu)))
        ratios, slice_ok = [], 0
        for lv in truth.levels:
            o = res["levels"][lv.name]
            slice_ok += int(o["slice_index"] == lv.mid_slice_index)
            pl = place_from_click(volume, points[lv.name], lv.name)
            if plane == "vertebra":
                pl = to_vertebra_plane(volume, pl, lv.name)
            auto = build_roi_family(pl.outline, volume.slice_spacing(), ["oval"]).shapes["oval"]
            best = build_roi_family(lv.outline(), volume.slice_spacing(), ["oval"]).shapes["oval"]
            ratios.append(auto.nominal_area_mm2 / best.nominal_area_mm2)
        ok = bad == 0 and min(ratios) >= 0.8 and worst_err <= 2.0 and slice_ok == len(truth.levels)
        rows.append(bc.make_row(
            f"placement_accuracy_{name.split()[0]}", f"accuracy: {name}", float(bad), "non-trabecular voxels",
            target="0 cortical voxels, oval ≥ 0.8 of best, |mean−truth| ≤ 2 HU, true mid slice", met=ok,
            notes=f"oval/best min {min(ratios):.3f}; max |mean−truth| {worst_err:.3f} HU; mid slice right "
                  f"{slice_ok}/{len(truth.levels)}",
            oval_area_ratio_min=min(ratios), mean_error_max_hu=worst_err, mid_slice_correct=slice_ok))
    return rows


def _jitter_points(volume, centre, rng, n):
    u = volume.in_plane_anterior()
    nrm = volume.slice_normal_ras()
    v = np.cross(nrm, u)
    out = []
    for _ in range(n):
        du, dv = rng.uniform(-3, 3, size=2)
        dk = rng.integers(-1, 2)
        out.append(centre + du * u + dv * v + dk * volume.slice_spacing() * nrm)
    return out


def _cv_rows(volume, centres: Dict[str, np.ndarray], repeats: int, label: str, key: str) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(11)
    means: Dict[tuple, List[float]] = {}
    failures = 0
    for level, c in centres.items():
        for p in _jitter_points(volume, c, rng, repeats):
            try:
                res = measure_levels(volume, {level: p})
            except Exception:  # a refused click counts as a failure, reported
                failures += 1
                continue
            for row in res["rows"]:
                means.setdefault((level, row["shape"]), []).append(row["mean_hu"])
    cvs = {k: float(np.std(v, ddof=1) / np.mean(v) * 100) for k, v in means.items() if len(v) > 1}
    worst = max(cvs.values()) if cvs else float("nan")
    per_level = {lv: max(cv for (l2, _), cv in cvs.items() if l2 == lv) for lv in centres if
                 any(l2 == lv for (l2, _) in cvs)}
    oval = {lv: cvs.get((lv, "oval")) for lv in centres}
    return [bc.make_row(key, f"precision (jitter ±3 mm, ±1 slice, {repeats}×): {label}", worst,
                        "% CV (worst level×shape)",
                        target="< 1 %", met=bool(worst < 1.0 and failures == 0),
                        notes="oval CV " + ", ".join(f"{k} {v:.2f}%" for k, v in oval.items() if v is not None)
                              + "; worst per level " + ", ".join(f"{k} {v:.2f}%" for k, v in per_level.items())
                              + f"; refused clicks {failures}",
                        cv_percent=cvs and {f"{a}/{b}": v for (a, b), v in cvs.items()}, refused=failures)]


def bench_precision(quick: bool) -> List[Dict[str, Any]]:
    repeats = 20
    rows = []
    volume, truth = make_phantom(noise_sigma=12.0, supersample=3, seed=5)
    centres = {lv.name: lv.center_ras for lv in truth.levels}
    if quick:
        centres = {"L1": centres["L1"]}
    rows += _cv_rows(volume, centres, repeats, "noisy phantom (σ 12 HU, partial volume)", "placement_cv_phantom")
    if os.path.isfile(os.path.join(TOTALSEG, "ct.nii.gz")):
        import SimpleITK as sitk

        from OsteoROILib.io.image_files import read_volume

        ct = read_volume(os.path.join(TOTALSEG, "ct.nii.gz"))
        lab = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TOTALSEG, "vertebral_bodies.nii.gz")))
        cent = {}
        for level, value in {"L1": 20, "L2": 21, "L3": 22, "L4": 23}.items():
            cent[level] = ct.ijk_to_ras_points(np.argwhere(lab == value).mean(axis=0)[::-1])[0]
        if quick:
            cent = {"L1": cent["L1"]}
        rows += _cv_rows(ct, cent, repeats, "real 3 mm CT (clicks around label centroids)", "placement_cv_realct")
    return rows


def measured_voxels(volume, shape, row):
    """The voxels a row was measured on: the ROI's mask without the bone islands it records."""
    voxels = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    spheres = [(f["center_ras"], f["radius_mm"]) for f in row.get("bone_islands_excluded") or ()]
    if not spheres:
        return voxels
    keep = outside_spheres(voxel_ras(voxels, volume.ijk_to_ras), spheres)
    return VoxelSet(voxels.k[keep], voxels.j[keep], voxels.i[keep], voxels.n_outside)


def _click_stats(case, clicks):
    """Per click: the ROI means by shape, the AP-axis error (degrees) against the reference, the
    non-trabecular voxels in the ROIs, the chosen slice and the time; refused clicks counted."""
    from OsteoROILib.errors import PlacementError

    ref = case.reference_ap_axis()
    ref_post = case.posterior_ap_axis()  # real CTs with a whole-vertebra label: a second reference
    means: Dict[str, List[float]] = {}
    case.extra["ap_error_posterior_deg"] = []
    ap_err, bad, slices, times, refused = [], [], [], [], 0
    apart = set()  # the endplates' distance in slice spacings (below 4: the thick-slice caveat)
    for p in clicks:
        t0 = time.perf_counter()
        try:
            res = measure_levels(case.volume, {case.level: p})
        except PlacementError:
            refused += 1
            continue
        times.append(time.perf_counter() - t0)
        entry = res["levels"][case.level]
        a = np.asarray(entry["outline"]["ap_axis_ras"], dtype=float)
        nrm = case.volume.slice_normal_ras()
        a = a - nrm * (a @ nrm)
        ap_err.append(float(np.degrees(np.arccos(np.clip(abs(a @ ref) / np.linalg.norm(a), -1, 1)))))
        if ref_post is not None:
            case.extra["ap_error_posterior_deg"].append(
                float(np.degrees(np.arccos(np.clip(abs(a @ ref_post) / np.linalg.norm(a), -1, 1)))))
        slices.append(entry["slice_index"])
        apart.add(res["rows"][0].get("slices_between_endplates"))
        n_bad = 0
        for row in res["rows"]:
            if row["mean_hu"] is None:  # an ROI without voxels: reported as a refusal of that click
                refused += 1
                continue
            means.setdefault(row["shape"], []).append(row["mean_hu"])
            r = row["roi"]
            shape = RoiShape(r["kind"], r["center_ras"], r["axis_u_ras"], r["axis_v_ras"], r["half_u_mm"],
                             r["half_v_mm"], r["slab_mm"])
            n_bad += case.non_trabecular_voxels(measured_voxels(case.volume, shape, row))
        bad.append(n_bad)
    case.extra["slices_between_endplates"] = sorted(a for a in apart if a is not None)
    return means, ap_err, bad, slices, times, refused


def _corpus_row(case, clicks) -> Dict[str, Any]:
    means, ap_err, bad, slices, times, refused = _click_stats(case, clicks)
    cv = {k: float(np.std(v, ddof=1) / abs(np.mean(v)) * 100) if len(v) > 1 else 0.0 for k, v in means.items()}
    spread = {k: float(np.ptp(v)) for k, v in means.items()}
    worst = max(cv.values()) if cv else float("nan")
    synthetic = case.truth is not None
    met = bool(cv and worst < 1.0 and refused == 0)
    if case.partial:  # a vertebra cut by the image: refusing every click is right too
        met = met or refused == len(clicks)
    if synthetic:
        met = met and max(ap_err) < 3.0 and max(bad) == 0
    key = "".join(ch if ch.isalnum() else "_" for ch in f"{case.ct}_{case.level}").strip("_")
    return bc.make_row(
        f"click_corpus_{key}", f"click corpus: {case.ct} {case.level}" + (" (partial: cut by the crop)"
                                                                          if case.partial else ""),
        worst, "% CV (worst ROI type)",
        target="CV < 1 % every ROI type, no refusal; synthetic also AP error < 3°, 0 non-trabecular voxels",
        met=met,
        notes=("CV " + ", ".join(f"{k} {v:.2f}%" for k, v in cv.items())
               + "; max−min " + ", ".join(f"{k} {v:.1f}" for k, v in spread.items())
               + f" HU; AP error max {max(ap_err, default=float('nan')):.1f}° ("
               + ("truth" if synthetic else "label principal axes")
               + (f"; {max(case.extra['ap_error_posterior_deg']):.1f}° against posterior elements → body"
                  if case.extra["ap_error_posterior_deg"] else "")
               + f"); non-trabecular voxels max {max(bad, default=0)} ("
               + ("noise-free model" if synthetic else "outside the label")
               + f"); slices {sorted(set(slices))}; endplates {case.extra['slices_between_endplates']} slices apart"
               + ("; thick-slice caveat (< 4)" if any(a < 4 for a in case.extra["slices_between_endplates"]) else "")
               + f"; refused {refused}/{len(clicks)}; "
               f"{np.median(times) * 1000 if times else float('nan'):.0f} ms/click"),
        ct=case.ct, level=case.level, partial=case.partial, cv_percent=cv, max_minus_min_hu=spread,
        ap_error_max_deg=max(ap_err, default=None),
        ap_error_posterior_max_deg=max(case.extra["ap_error_posterior_deg"], default=None),
        non_trabecular_voxels_max=max(bad, default=None),
        slices=sorted(set(slices)), slices_between_endplates=case.extra["slices_between_endplates"],
        refused=refused, clicks=len(clicks),
        ms_per_click=float(np.median(times) * 1000) if times else None)


def bench_click_corpus(quick: bool) -> List[Dict[str, Any]]:
    """Per CT and level: ≥ 20 clicks jittered ±3 mm in-plane and anywhere in the middle 60 % of the
    body's height (``placement_corpus``); CV and max − min of each ROI type's mean HU, AP-axis error,
    non-trabecular voxels in the ROIs, refusals and time per click."""
    import placement_corpus as pc

    n = 8 if quick else 20
    rows = []
    for i, case in enumerate(list(pc.real_cases()) + list(pc.synthetic_cases(quick))):
        if quick and case.level not in ("L1", "L3"):
            continue
        rows.append(_corpus_row(case, case.clicks(n, seed=100 + i)))
    return rows


def bench_label_vs_click(quick: bool) -> List[Dict[str, Any]]:
    """The same vertebra placed from its segmentation label and from a click at the label's centre:
    each ROI type's mean HU from the two, relative difference (target within 1 %); which estimate
    the label's placement took (the image's, or the label-driven fit and why) and how the image's
    outline agreed with the label; and the time of four levels from a real label file."""
    import placement_corpus as pc
    from OsteoROILib.placement.labels import place_from_labels

    rows = []
    for case in pc.real_cases():
        if case.partial or (quick and case.level not in ("L1", "L3")):
            continue
        labels = case.body.astype(np.int16)
        placements, _ = place_from_labels(case.volume, labels, {case.level: 1})
        by_label = measure_levels(case.volume, None, placements=placements)
        click = case.centre_and_height()[0]
        by_click = measure_levels(case.volume, {case.level: click})
        lab = {r["shape"]: r["mean_hu"] for r in by_label["rows"]}
        clk = {r["shape"]: r["mean_hu"] for r in by_click["rows"]}
        diff = {k: abs(clk[k] - lab[k]) / abs(lab[k]) * 100 for k in lab}
        worst = max(diff.values())
        check = by_label["levels"][case.level]["label_check"]
        key = "".join(ch if ch.isalnum() else "_" for ch in f"{case.ct}_{case.level}").strip("_")
        rows.append(bc.make_row(
            f"label_vs_click_{key}", f"label vs click: {case.ct} {case.level}", worst, "% |click − label| (worst type)",
            target="< 1 %", met=bool(worst < 1.0),
            notes=", ".join(f"{k} {lab[k]:.1f}/{clk[k]:.1f} HU ({diff[k]:.2f}%)" for k in lab)
                  + f"; slices label {by_label['levels'][case.level]['slice_index']} / click "
                    f"{by_click['levels'][case.level]['slice_index']}; estimate: {check['estimate']}"
                  + (f" (fallback: {'; '.join(check['reasons'])})" if check["estimate"] != "image" else "")
                  + "; image outline vs label: " + _agreement_text(check),
            percent_difference=diff, label_estimate=check["estimate"], label_check=check))
    rows.append(_label_summary_row(rows))
    rows.append(_label_timing_row(quick))
    return rows


def _label_summary_row(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Over the real levels: how many are within 1 %, and which took the label-driven fit and why."""
    met = sum(bool(r["met"]) for r in rows)
    fell = [r for r in rows if r["label_estimate"] != "image"]
    return bc.make_row(
        "label_vs_click_summary", "label vs click: real levels within 1 %", float(met), f"of {len(rows)} levels",
        target=f"{len(rows)} of {len(rows)}", met=met == len(rows),
        notes=f"{len(fell)} level(s) took the label-driven fit"
              + "".join(f"; {r['name'].split(': ', 1)[1]}: {'; '.join(r['label_check']['reasons'])}" for r in fell),
        label_fallbacks=len(fell))


def _agreement_text(check: Dict[str, Any]) -> str:
    if check.get("mean_distance_mm") is None:
        return "not measured"
    return (f"label boundary to the fitted cortex mean {check['mean_distance_mm']:.2f} mm / max "
            f"{check['max_distance_mm']:.2f} mm, Dice {check['dice']:.3f}, trabecular region outside the label "
            f"{check['trabecular_outside_label_fraction']:.1%}, ROI voxels outside the label grown by a voxel "
            f"{check['roi_voxels_outside_label_fraction']:.1%}, plane {check['mid_offset_mm']:.1f} mm from the "
            "label's middle")


def _label_timing_row(quick: bool) -> Dict[str, Any]:
    """Four levels (L1–L4) from the real CT's body-label file: the image's estimate checked against
    the label vs the label-driven fit alone (the placement before the image's estimate was used), in
    the same run."""
    from OsteoROILib.io.image_files import read_volume
    from OsteoROILib.placement.labels import BUILTIN_LABEL_MAPS, place_from_labels, read_labels

    path = os.path.join(TOTALSEG, "vertebral_bodies.nii.gz")
    if not os.path.isfile(path):
        return bc.make_row("label_placement_time", "labels → four placements", None, "ms",
                           notes="../shared/data/totalseg_example is absent")
    ct = read_volume(os.path.join(TOTALSEG, "ct.nii.gz"))
    labels, _ = read_labels(path, ct)
    m = BUILTIN_LABEL_MAPS["bodies"]
    reps = 3 if quick else 7
    new, placed = bc.time_call(lambda: place_from_labels(ct, labels, m), repeats=reps)
    old, _ = bc.time_call(lambda: place_from_labels(ct, labels, m, estimate="label"), repeats=reps)
    ratio = new["median_s"] / old["median_s"]
    fallbacks = sum(pl.outline.meta["label_check"]["estimate"] != "image" for pl in placed[0].values())
    return bc.make_row(
        "label_placement_time", "labels → four placements (real 3 mm CT, L1–L4): image estimate + label check",
        new["median_s"] * 1000, "ms", baseline=old["median_s"] * 1000,
        baseline_name="the label-driven fit alone (estimate='label'), same run", ratio=ratio, ratio_kind="ratio",
        target="≤ 2× the label-driven fit", met=bool(ratio <= 2.0),
        notes=f"{fallbacks} of {len(placed[0])} levels took the label-driven fit")


def corpus_table(rows: List[Dict[str, Any]]) -> str:
    """The per-CT table of the click corpus (one line per CT and level) as text: CV % per ROI type,
    AP-axis error (°, worst click) against the truth (synthetic) or the label's principal axes (real),
    and against the posterior elements → body direction (APpe, real CTs with a whole-vertebra label),
    non-trabecular voxels, refused clicks, ms per click."""
    lines = [f"{'CT':<46} {'lvl':<4} {'oval':>6} {'round':>6} {'front':>6} {'left':>6} {'right':>6} "
             f"{'AP°':>5} {'APpe°':>5} {'ctx':>4} {'ref':>5} {'ms':>5} met"]
    for r in rows:
        if not r["key"].startswith("click_corpus_") or r.get("cv_percent") is None:
            continue
        cv = r["cv_percent"]
        cells = " ".join(f"{cv[k]:6.2f}" if k in cv else f"{'—':>6}" for k in ("oval", "round", "front", "left", "right"))
        ap = r.get("ap_error_max_deg")
        ape = r.get("ap_error_posterior_max_deg")
        ms = r.get("ms_per_click")
        lines.append(f"{r['ct'][:46]:<46} {r['level']:<4} {cells} {'—' if ap is None else f'{ap:5.1f}':>5} "
                     f"{'—' if ape is None else f'{ape:5.1f}':>5} "
                     f"{r.get('non_trabecular_voxels_max') or 0:>4} {r['refused']:>2}/{r['clicks']:<2} "
                     f"{'—' if ms is None else f'{ms:5.0f}':>5} {r['met']}")
    return "\n".join(lines)


def bench_speed(quick: bool) -> List[Dict[str, Any]]:
    import SimpleITK as sitk

    geom = bc.QUICK_PHANTOM if quick else bc.FULL_PHANTOM
    volume, truth, _ = bc.phantom_ct(geom["size"], geom["spacing"])
    lv = truth.level("L2")
    point = lv.center_ras + OFFSET
    auto, _ = bc.time_call(lambda: measure_levels(volume, {"L2": point}), repeats=7 if quick else 15)
    foundation, _ = bc.time_call(lambda: measure_levels(volume, {"L2": lv.center_ras}, auto=False),
                                 repeats=7 if quick else 15)
    image = volume.to_sitk()
    base, _ = bc.time_call(lambda: sitk.SmoothingRecursiveGaussian(image, 1.0), repeats=3, warmup=1)
    ms = auto["median_s"] * 1000
    return [bc.make_row(
        "click_to_rois_auto",
        f"speed: click → 3-D placement → 5 ROIs + stats ({'×'.join(map(str, volume.dimensions))})",
        ms, "ms", baseline=base["median_s"] * 1000,
        baseline_name="full-volume SimpleITK recursive Gaussian (σ 1 mm) of the whole CT",
        ratio=base["median_s"] / auto["median_s"], target="< 100 ms", met=ms < 100.0,
        notes=f"foundation single-slice probe (--no-auto): {foundation['median_s'] * 1000:.1f} ms")]


def bench_peer(quick: bool) -> List[Dict[str, Any]]:
    if not os.path.isfile(os.path.join(TOTALSEG, "spine_report.json")):
        return []
    import SimpleITK as sitk

    from OsteoROILib.placement.labels import BUILTIN_LABEL_MAPS, place_from_labels, read_labels
    from OsteoROILib.io.image_files import read_volume

    ct = read_volume(os.path.join(TOTALSEG, "ct.nii.gz"))
    with open(os.path.join(TOTALSEG, "spine_report.json")) as f:
        peer = json.load(f)["results"]
    labels, _ = read_labels(os.path.join(TOTALSEG, "vertebral_bodies.nii.gz"), ct)
    placements, _ = place_from_labels(ct, labels, BUILTIN_LABEL_MAPS["bodies"])
    from_labels = measure_levels(ct, None, placements=placements)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(TOTALSEG, "vertebral_bodies.nii.gz")))
    clicks = {lv: ct.ijk_to_ras_points(np.argwhere(lab == v).mean(axis=0)[::-1])[0]
              for lv, v in BUILTIN_LABEL_MAPS["bodies"].items()}
    from_clicks = measure_levels(ct, clicks)
    rows = []
    for level in ("L1", "L2", "L3", "L4"):
        def mean_of(res, shape, level=level):
            return next(r["mean_hu"] for r in res["rows"] if r["level"] == level and r["shape"] == shape)

        pm, pmed = peer[f"vertebrae_{level}_intensity"], peer[f"vertebrae_{level}_intensity_median"]
        lab_oval, clk_oval = mean_of(from_labels, "oval"), mean_of(from_clicks, "oval")
        h = placements[level].height_mm
        # the click outline's size vs the label's extent on the same slice, along the same axes
        clk = from_clicks["levels"][level]
        ap_axis = np.asarray(clk["outline"]["ap_axis_ras"])
        left = np.cross(np.asarray(clk["outline"]["normal_ras"]), ap_axis)
        kji = np.argwhere(lab == BUILTIN_LABEL_MAPS["bodies"][level])
        on = kji[kji[:, 0] == clk["slice_index"]]
        ras = ct.ijk_to_ras_points(on[:, ::-1].astype(float))
        lab_depth = float(np.ptp(ras @ ap_axis) + ct.spacing[1])
        lab_width = float(np.ptp(ras @ left) + ct.spacing[0])
        k_lab = (int(kji[:, 0].min()), int(kji[:, 0].max()))
        rows.append(bc.make_row(
            f"peer_{level}", f"peer side by side: {level} oval mean HU (labels)", lab_oval, "HU",
            baseline=pm, baseline_name="spine_report whole-body mean", ratio=lab_oval / pm, ratio_kind="ratio",
            notes=f"labels: oval {lab_oval:.1f}, round {mean_of(from_labels, 'round'):.1f}, left "
                  f"{mean_of(from_labels, 'left'):.1f}; clicks: oval {clk_oval:.1f} (fit "
                  f"{from_clicks['levels'][level]['fit_quality']}); peer mean {pm:.1f}, median {pmed:.1f}; "
                  f"endplates {h:.1f} mm apart (label placement) vs peer middle height "
                  f"{peer[f'vertebrae_{level}_height_middle_mm']:.1f} mm; "
                  f"clicks: slice {clk['slice_index']} (label slices {k_lab[0]}–{k_lab[1]}), depth "
                  f"{clk['outline']['depth_mm']:.1f} mm / width {clk['outline']['width_mm']:.1f} mm vs label "
                  f"{lab_depth:.1f} / {lab_width:.1f} mm on that slice",
            peer_mean=pm, peer_median=pmed, labels_oval=lab_oval, clicks_oval=clk_oval,
            clicks_slice=clk["slice_index"], label_slices=list(k_lab),
            clicks_depth_mm=clk["outline"]["depth_mm"], clicks_width_mm=clk["outline"]["width_mm"],
            label_depth_mm=lab_depth, label_width_mm=lab_width,
            labels_fit_quality=round(float(placements[level].fit_quality), 3),
            labels_fallback=bool(placements[level].fallback)))
    return rows


def run(quick: bool = False) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    for fn in (bench_accuracy, bench_precision, bench_click_corpus, bench_label_vs_click, bench_speed, bench_peer):
        t0 = time.perf_counter()
        try:
            rows += fn(quick)
        except Exception as exc:  # keep the other benchmarks running
            rows.append(bc.make_row(fn.__name__, f"ERROR in {fn.__name__}", None, "", notes=repr(exc)))
        print(f"  {fn.__name__}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller CT, fewer cases")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    rows = run(quick=args.quick)
    print(f"{'row':<58} {'figure':>12} {'unit':<28} {'baseline':>10} {'ratio':>8} met")
    for r in rows:
        fig = "—" if r["figure"] is None else f"{r['figure']:.3f}"
        base = "—" if r["baseline"] is None else f"{r['baseline']:.1f}"
        ratio = r.get(r["ratio_kind"])
        ratio = "—" if ratio is None else f"{ratio:.2f}"
        print(f"{r['name'][:58]:<58} {fig:>12} {r['unit'][:28]:<28} {base:>10} {ratio:>8} {r['met']}")
        if r["notes"]:
            print(f"    {r['notes']}")
    table = corpus_table(rows)
    print("\nclick corpus: CV % of each ROI type's mean HU, AP-axis error, non-trabecular voxels (ctx), refused")
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    doc = {"schema": "osteoroi-benchmarks/1", "benchmark": "placement", "quick": args.quick, "rows": rows,
           "click_corpus_table": table.splitlines()}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
