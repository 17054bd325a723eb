"""Speed, memory and geometry-accuracy benchmarks of the OsteoROI core.

Every speed figure is reported together with a *baseline measured in the same run* on the same
data, and their ratio:

* **Per-ROI statistics** — ``stats.roi_statistics`` (only the ROI's bounding box is visited) vs
  the full-volume approach of Slicer's Segment Statistics: a full-size label image holding the
  ROI, then SimpleITK's ``LabelStatisticsImageFilter`` over the whole CT. The benchmark checks
  that both give the same count, mean, SD, min and max (``AssertionError`` otherwise).
* **Whole table** — ``measure.measure_levels`` for L1–L4 × five shapes, with the phantom's true
  outlines and with the default point placement, vs the full-volume statistics of the same
  20 ROIs.
* **Click → ROIs** — ``measure_levels`` for one level with whatever placement it does by default
  (no outline given), from a point that is off the body's centre and mid-plane.
* **Peak memory** of ``osteoroi measure`` beyond the volume, in a subprocess, vs a subprocess
  that only reads the volume (``read_volume``).
* **DICOM → table** wall time vs SimpleITK reading the same series alone.
* **Geometry accuracy** — voxelised areas vs analytic areas and voxel counts vs an independent
  brute-force voxel-centre count; mean HU vs the phantom's configured HU.

The data is the digital phantom (``OsteoROILib.digital_phantom.make_phantom``), cached under
``CACHE_DIR`` (``$OSTEOROI_BENCH_CACHE`` or ``/tmp/osteoroi-bench-cache``) because a
512×512×300 phantom takes ~20 s to generate; the cache key includes the phantom options and
a hash of ``phantom.py``.

Each ``bench_*`` function returns a list of *rows* (dicts; see :func:`make_row`). Nothing here
asserts a timing: targets are reported (``met``), never enforced.
"""
from __future__ import annotations

import cProfile
import gc
import hashlib
import io
import json
import os
import pickle
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODULE_DIR = os.path.join(ROOT, "OsteoROI")
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

import SimpleITK as sitk  # noqa: E402

from OsteoROILib import __version__  # noqa: E402
from OsteoROILib.placement.measure import measure_levels  # noqa: E402
from OsteoROILib.roi.family import SHAPE_NAMES, build_roi_family  # noqa: E402
from OsteoROILib.roi.geometry import RoiShape, roi_voxels  # noqa: E402
from OsteoROILib.roi.stats import roi_statistics  # noqa: E402
from OsteoROILib.io.dicom_read import READ_THREADS_ENV  # noqa: E402
from OsteoROILib.io.volume import Volume  # noqa: E402
from OsteoROILib.io.image_files import read_volume  # noqa: E402

CACHE_DIR = os.environ.get("OSTEOROI_BENCH_CACHE", os.path.join(tempfile.gettempdir(), "osteoroi-bench-cache"))

#: The target CT size: 512×512×300 voxels; 0.7 mm pixels and 1 mm slices cover the phantom's
#: 300 × 260 mm abdomen and the whole L1–L4 column (plus T12/L5) with room to spare.
FULL_PHANTOM = {"size": (512, 512, 300), "spacing": (0.7, 0.7, 1.0)}
#: --quick: the same anatomy at a quarter of the in-plane and half the slice resolution.
QUICK_PHANTOM = {"size": (256, 256, 150), "spacing": (1.4, 1.4, 2.0)}
#: Options every benchmark phantom shares: DICOM-like LPS int16 storage, some noise so SD ≠ 0.
PHANTOM_COMMON = {"orientation": "LPS", "dtype": "int16", "noise_sigma": 12.0, "seed": 7}

#: Untimed calls before timing; profiles of missed targets. (The smoke test turns both down.)
WARMUP = 1
PROFILE = True

TARGETS = {
    "roi_speedup": 100.0,  # × faster than the full-volume baseline
    "roi_ms": 2.0,  # ms for a single-slice ROI
    "table_ms": 30.0,  # L1–L4 × five shapes
    "click_ms": 100.0,  # one click → placed ROIs with statistics
    "memory_ratio": 0.5,  # peak memory beyond the volume / volume size
    "dicom_ratio": 1.2,  # DICOM → table / SimpleITK read alone
}


# ----------------------------------------------------------------------------------------------
# Rows and timing
# ----------------------------------------------------------------------------------------------
def make_row(
    key: str,
    name: str,
    figure: Optional[float],
    unit: str,
    baseline: Optional[float] = None,
    baseline_name: str = "",
    ratio: Optional[float] = None,
    ratio_kind: str = "speedup",
    target: str = "",
    met: Optional[bool] = None,
    notes: str = "",
    **extra: Any,
) -> Dict[str, Any]:
    """One result row. ``ratio_kind`` is "speedup" (baseline / figure: higher is better) or
    "ratio" (figure / baseline: the quantity the target bounds)."""
    row: Dict[str, Any] = {
        "key": key,
        "name": name,
        "figure": None if figure is None else float(figure),
        "unit": unit,
        "baseline": None if baseline is None else float(baseline),
        "baseline_name": baseline_name,
        ratio_kind: None if ratio is None else float(ratio),
        "ratio_kind": ratio_kind,
        "target": target,
        "met": None if met is None else bool(met),
        "notes": notes,
    }
    row.update(extra)
    return row


def time_call(fn: Callable[[], Any], repeats: int, warmup: Optional[int] = None) -> Tuple[Dict[str, float], Any]:
    """Median / min wall time (s) of ``fn()`` over ``repeats`` calls (after ``warmup`` calls)."""
    result = None
    for _ in range(WARMUP if warmup is None else warmup):
        result = fn()
    times = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return {"median_s": statistics.median(times), "min_s": min(times), "n": len(times)}, result


def profile_call(fn: Callable[[], Any], top: int = 12, repeats: int = 1) -> str:
    """cProfile summary (cumulative time, top functions) of ``fn`` — attached to missed targets."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        fn()
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(top)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    # Keep the table part, with paths shortened to the repository.
    out = []
    for ln in lines:
        if ln.lstrip().startswith(("ncalls",)) or ":" in ln or "{" in ln:
            out.append(ln.replace(ROOT + os.sep, ""))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# The phantom CT (cached)
# ----------------------------------------------------------------------------------------------
def _phantom_key(options: Dict[str, Any]) -> str:
    folder = os.path.join(MODULE_DIR, "OsteoROILib", "digital_phantom")
    digest = hashlib.sha1()
    for name in sorted(os.listdir(folder)):  # the generator's code: a change regenerates the cache
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(f.read())
    code = digest.hexdigest()[:10]
    text = json.dumps({k: options[k] for k in sorted(options)}, sort_keys=True, default=list)
    return hashlib.sha1((text + code + __version__).encode()).hexdigest()[:12]


def phantom_ct(size: Sequence[int], spacing: Sequence[float], cache_dir: Optional[str] = CACHE_DIR,
               **options: Any) -> Tuple[Volume, Any, str]:
    """The benchmark CT: ``(volume read back from its NRRD file, truth, nrrd path)``.

    The phantom is generated once per option set and kept as an uncompressed NRRD plus a
    pickled truth in ``cache_dir`` (a temporary folder when ``cache_dir`` is None).
    """
    from OsteoROILib.digital_phantom import make_phantom

    opts = dict(PHANTOM_COMMON)
    opts.update(options)
    opts["size"] = tuple(int(s) for s in size)
    opts["spacing"] = tuple(float(s) for s in spacing)
    if cache_dir is None:
        cache_dir = tempfile.mkdtemp(prefix="osteoroi-bench-")
    os.makedirs(cache_dir, exist_ok=True)
    key = _phantom_key(opts)
    nrrd = os.path.join(cache_dir, f"phantom-{'x'.join(map(str, opts['size']))}-{key}.nrrd")
    truth_file = nrrd[:-5] + ".truth.pkl"
    if not (os.path.isfile(nrrd) and os.path.isfile(truth_file)):
        volume, truth = make_phantom(**opts)
        tmp = nrrd + ".part.nrrd"
        sitk.WriteImage(volume.to_sitk(), tmp, False)  # uncompressed: fast to read back
        os.replace(tmp, nrrd)
        with open(truth_file + ".part", "wb") as f:
            pickle.dump(truth, f)
        os.replace(truth_file + ".part", truth_file)
        del volume
    with open(truth_file, "rb") as f:
        truth = pickle.load(f)
    return read_volume(nrrd), truth, nrrd


def truth_points(truth) -> Dict[str, List[float]]:
    return {lv.name: [float(x) for x in lv.center_ras] for lv in truth.levels}


def truth_outlines(truth) -> Dict[str, Any]:
    outlines = {}
    for lv in truth.levels:
        o = lv.outline()
        o.meta.setdefault("source", "phantom truth")
        outlines[lv.name] = o
    return outlines


def family_shapes(volume: Volume, truth, level: Optional[str] = None) -> Dict[Tuple[str, str], RoiShape]:
    """The five seed-002 ROIs of each level (or one level), built from the phantom's true outline
    with the same partial-volume margin and one-slice slab as ``measure_levels`` uses."""
    from OsteoROILib.placement.measure import default_slab_mm, partial_volume_margin_mm

    out: Dict[Tuple[str, str], RoiShape] = {}
    for name, outline in truth_outlines(truth).items():
        if level is not None and name != level:
            continue
        fam = build_roi_family(outline, default_slab_mm(volume), SHAPE_NAMES, level=name,
                               edge_margin_mm=partial_volume_margin_mm(volume))
        for shape_name, shape in fam.shapes.items():
            out[(name, shape_name)] = shape
    return out


# ----------------------------------------------------------------------------------------------
# The full-volume baseline (Slicer Segment Statistics style)
# ----------------------------------------------------------------------------------------------
def sitk_ct(volume: Volume):
    """The CT as a SimpleITK image (the one read from file when available: no copy)."""
    owner = getattr(volume, "owner", None)
    if owner is not None and isinstance(owner, sitk.Image):
        return owner
    return volume.to_sitk()


def full_volume_statistics(ct_image, volume: Volume, shape: RoiShape) -> Dict[str, float]:
    """Statistics of one ROI the full-volume way: a full-size label image + LabelStatisticsImageFilter.

    The ROI's voxels are painted into a zero label image of the CT's full size (as a segment's
    binary labelmap in the CT's geometry), and SimpleITK's filter visits every voxel of the CT.
    """
    vs = roi_voxels(shape, volume.ijk_to_ras, volume.dimensions)
    label = np.zeros(volume.array.shape, dtype=np.uint8)
    label[vs.k, vs.j, vs.i] = 1
    label_image = sitk.GetImageFromArray(label)
    label_image.CopyInformation(ct_image)
    f = sitk.LabelStatisticsImageFilter()
    f.Execute(ct_image, label_image)
    if not f.HasLabel(1):
        return {"n_voxels": 0, "mean_hu": None, "sd_hu": None, "min_hu": None, "max_hu": None}
    return {
        "n_voxels": int(f.GetCount(1)),
        "mean_hu": float(f.GetMean(1)),
        "sd_hu": float(f.GetSigma(1)),
        "min_hu": float(f.GetMinimum(1)),
        "max_hu": float(f.GetMaximum(1)),
    }


def check_same_statistics(fast: Dict[str, Any], base: Dict[str, Any], what: str) -> None:
    """Raise AssertionError unless the fast path and the baseline agree (count exactly; HU to 1e-6 relative)."""
    assert fast["n_voxels"] == base["n_voxels"], f"{what}: voxel count {fast['n_voxels']} != {base['n_voxels']}"
    for key in ("mean_hu", "sd_hu", "min_hu", "max_hu"):
        a, b = fast[key], base[key]
        if a is None or b is None:
            assert a is None and b is None, f"{what}: {key} {a} vs {b}"
            continue
        assert abs(a - b) <= 1e-6 * max(1.0, abs(b)), f"{what}: {key} fast {a!r} != baseline {b!r}"


# ----------------------------------------------------------------------------------------------
# 1. Per-ROI statistics
# ----------------------------------------------------------------------------------------------
def bench_roi_statistics(volume: Volume, truth, repeats: int = 200, baseline_repeats: int = 3,
                         level: str = "L1", shape_name: str = "oval") -> List[Dict[str, Any]]:
    shape = family_shapes(volume, truth, level)[(level, shape_name)]
    ct = sitk_ct(volume)
    fast_t, fast = time_call(lambda: roi_statistics(volume, shape), repeats)
    base_t, base = time_call(lambda: full_volume_statistics(ct, volume, shape), baseline_repeats)
    check_same_statistics(fast, base, f"{level} {shape_name}")
    fast_ms, base_ms = 1e3 * fast_t["median_s"], 1e3 * base_t["median_s"]
    speedup = base_ms / fast_ms
    met = speedup >= TARGETS["roi_speedup"] and fast_ms < TARGETS["roi_ms"]
    nvox = int(np.prod(volume.array.shape))
    row = make_row(
        "roi_statistics", f"Per-ROI statistics ({level} {shape_name}, 1 slice, {fast['n_voxels']} voxels)",
        fast_ms, "ms", base_ms, "full-size label image + sitk.LabelStatisticsImageFilter", speedup, "speedup",
        f">= {TARGETS['roi_speedup']:g}x and < {TARGETS['roi_ms']:g} ms", met,
        f"CT {'x'.join(map(str, volume.dimensions))} ({nvox / 1e6:.1f} M voxels); same n/mean/SD/min/max "
        f"(mean {fast['mean_hu']:.3f}, SD {fast['sd_hu']:.3f} HU) in both",
        timing={"fast": fast_t, "baseline": base_t},
        check={"fast": {k: fast[k] for k in ("n_voxels", "mean_hu", "sd_hu", "min_hu", "max_hu")}, "baseline": base},
    )
    if not met and PROFILE:
        row["profile"] = profile_call(lambda: roi_statistics(volume, shape), repeats=50)
    return [row]


# ----------------------------------------------------------------------------------------------
# 2. The whole table, 3. click → ROIs
# ----------------------------------------------------------------------------------------------
def baseline_all_rois(volume: Volume, shapes: Dict[Tuple[str, str], RoiShape]) -> Tuple[float, Dict]:
    """Wall time (s) of the full-volume statistics of every ROI, one label image per ROI."""
    ct = sitk_ct(volume)
    out = {}
    t0 = time.perf_counter()
    for key, shape in shapes.items():
        out[key] = full_volume_statistics(ct, volume, shape)
    return time.perf_counter() - t0, out


def _rows_by_key(result) -> Dict[Tuple[str, str], Dict[str, Any]]:
    return {(r["level"], r["shape"]): r for r in result["rows"]}


def bench_table(volume: Volume, truth, repeats: int = 20) -> List[Dict[str, Any]]:
    points = truth_points(truth)
    outlines = truth_outlines(truth)
    shapes = family_shapes(volume, truth)
    base_s, base = baseline_all_rois(volume, shapes)
    rows = []
    t_truth, res_truth = time_call(lambda: measure_levels(volume, points, shapes=SHAPE_NAMES, outlines=outlines),
                                   repeats)
    got = _rows_by_key(res_truth)
    for key, b in base.items():
        check_same_statistics(got[key], b, f"{key[0]} {key[1]}")
    ms = 1e3 * t_truth["median_s"]
    met = ms < TARGETS["table_ms"]
    row = make_row(
        "table_truth_outlines", f"Whole table L1-L4 x 5 shapes, true outlines ({len(got)} ROIs)", ms, "ms",
        1e3 * base_s, "full-volume statistics of the same 20 ROIs", 1e3 * base_s / ms, "speedup",
        f"< {TARGETS['table_ms']:g} ms", met, "same n/mean/SD/min/max as the baseline for all 20 ROIs",
        timing=t_truth,
    )
    if not met and PROFILE:
        row["profile"] = profile_call(lambda: measure_levels(volume, points, shapes=SHAPE_NAMES, outlines=outlines))
    rows.append(row)

    # The same table from the four level points alone: four clicks' automatic placement (each
    # held to the click target of item 3) plus the table (item 2).
    t_def, res_def = time_call(lambda: measure_levels(volume, points, shapes=SHAPE_NAMES), max(1, repeats // 2))
    ms = 1e3 * t_def["median_s"]
    n_levels = len({r["level"] for r in res_def["rows"]})
    target_ms = n_levels * TARGETS["click_ms"]
    met = ms < target_ms
    placements = sorted({r["placement"] for r in res_def["rows"]})
    row = make_row(
        "table_default_placement", f"Whole table L1-L4 x 5 shapes from {n_levels} clicks, automatic placement "
        f"({len(res_def['rows'])} ROIs)",
        ms, "ms", 1e3 * base_s, "full-volume statistics of the 20 true-outline ROIs", 1e3 * base_s / ms, "speedup",
        f"< {n_levels} x {TARGETS['click_ms']:g} ms (one click each)", met,
        f"placement: {', '.join(placements)}; {ms / n_levels:.1f} ms per level", timing=t_def,
    )
    if not met and PROFILE:
        row["profile"] = profile_call(lambda: measure_levels(volume, points, shapes=SHAPE_NAMES))
    rows.append(row)
    return rows


def click_point(truth, level: str = "L1") -> List[float]:
    """A realistic click: inside the body, off its centre (2 mm right, 3 mm anterior) and 3 mm
    above the mid-vertebral plane, within the trabecular region of every default phantom level."""
    lv = truth.level(level)
    c = np.asarray(lv.center_ras, float)
    p = c + 3.0 * np.asarray(lv.ap_axis_ras) - 2.0 * np.asarray(lv.left_axis_ras) + 3.0 * np.asarray(lv.normal_ras)
    return [float(x) for x in p]


def bench_click(volume: Volume, truth, repeats: int = 10, level: str = "L1") -> List[Dict[str, Any]]:
    point = click_point(truth, level)
    run = lambda: measure_levels(volume, {level: point}, shapes=SHAPE_NAMES)  # noqa: E731
    t, res = time_call(run, repeats)
    # Baseline: the full-volume statistics of the ROIs the click produced.
    shapes = {}
    for r in res["rows"]:
        roi = r["roi"]
        shapes[(r["level"], r["shape"])] = RoiShape(roi["kind"], roi["center_ras"], roi["axis_u_ras"],
                                                    roi["axis_v_ras"], roi["half_u_mm"], roi["half_v_mm"],
                                                    roi["slab_mm"])
    base_s, _ = baseline_all_rois(volume, shapes)
    ms = 1e3 * t["median_s"]
    met = ms < TARGETS["click_ms"]
    lv = res["levels"][level]
    row = make_row(
        "click_to_rois", f"Click -> placed ROIs with statistics ({level}, {len(res['rows'])} ROIs)", ms, "ms",
        1e3 * base_s, "full-volume statistics of the same ROIs (placement excluded)", 1e3 * base_s / ms, "speedup",
        f"< {TARGETS['click_ms']:g} ms", met,
        f"measure_levels default placement: {lv.get('placement')}; slice {lv.get('slice_index')} "
        f"(true mid slice {truth.level(level).mid_slice_index})",
        timing=t,
    )
    if not met and PROFILE:
        row["profile"] = profile_call(run)
    return [row]


# ----------------------------------------------------------------------------------------------
# 4. Peak memory of `osteoroi measure`
# ----------------------------------------------------------------------------------------------
_MEMORY_SCRIPT = r"""
import json, resource, sys, tracemalloc
def peak_rss_kb():
    # VmHWM is this process image's own peak; ru_maxrss survives exec() on Linux and would
    # include the parent's RSS at fork time.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, sys.argv[1])
mode, path, out = sys.argv[2], sys.argv[3], sys.argv[4]
points = json.loads(sys.argv[5])
import numpy, SimpleITK
import OsteoROILib.cli.commands as cli
from OsteoROILib.io.image_files import read_volume
base_rss = peak_rss_kb()
tracemalloc.start()
if mode == "read":
    volume = read_volume(path)
    code = 0
    nbytes = int(volume.array.nbytes)
else:
    argv = ["measure", path, "--json", out]
    for level, p in points.items():
        argv += ["--point", level + "=" + ",".join(repr(float(x)) for x in p)]
    import io, contextlib
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    nbytes = None
current, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"code": code, "maxrss_kb": peak_rss_kb(), "imports_rss_kb": base_rss, "traced_peak": peak,
                  "volume_bytes": nbytes}))
"""


def _memory_subprocess(mode: str, path: str, points: Dict[str, List[float]], out: str) -> Dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, MODULE_DIR, mode, path, out, json.dumps(points)],
        capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess ({mode}) failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(nrrd_path: str, points: Dict[str, List[float]], repeats: int = 1) -> List[Dict[str, Any]]:
    """Peak RSS of ``osteoroi measure`` minus the peak RSS of a process that only reads the volume."""
    with tempfile.TemporaryDirectory(prefix="osteoroi-mem-") as tmp:
        reads, measures = [], []
        for n in range(max(1, repeats)):
            reads.append(_memory_subprocess("read", nrrd_path, points, ""))
            m = _memory_subprocess("measure", nrrd_path, points, os.path.join(tmp, f"m{n}.json"))
            if m["code"] != 0:
                raise RuntimeError(f"osteoroi measure exited with {m['code']}")
            measures.append(m)
    read = min(reads, key=lambda r: r["maxrss_kb"])
    meas = min(measures, key=lambda r: r["maxrss_kb"])
    vol_bytes = read["volume_bytes"]
    rss_extra = (meas["maxrss_kb"] - read["maxrss_kb"]) * 1024.0
    traced_extra = float(meas["traced_peak"] - read["traced_peak"])
    # ΔRSS is 0 when measuring stays below the reader's own transient peak; the traced Python/numpy
    # allocations of the measurement are then the better (never smaller) figure.
    extra = max(rss_extra, traced_extra, 0.0)
    ratio = extra / vol_bytes
    met = ratio < TARGETS["memory_ratio"]
    read_growth = (read["maxrss_kb"] - read["imports_rss_kb"]) * 1024.0
    return [make_row(
        "measure_peak_memory", "Peak memory of `osteoroi measure` beyond the volume", extra / 1e6, "MB",
        vol_bytes / 1e6, "the volume's size (MB)", ratio, "ratio", f"< {TARGETS['memory_ratio']:g}x the volume",
        met,
        f"max(peak-RSS difference {rss_extra / 1e6:.1f} MB, traced Python/numpy peak difference "
        f"{traced_extra / 1e6:.1f} MB); peak RSS measure {meas['maxrss_kb'] / 1024:.0f} MB vs read-only "
        f"{read['maxrss_kb'] / 1024:.0f} MB; reading alone raises the peak RSS by {read_growth / 1e6:.0f} MB "
        f"({read_growth / vol_bytes:.2f}x the volume) over the imports",
        subprocesses={"read": read, "measure": meas},
    )]


# ----------------------------------------------------------------------------------------------
# 5. DICOM series → table
# ----------------------------------------------------------------------------------------------
def write_dicom_series(volume: Volume, folder: str) -> str:
    """Write ``volume`` (an axial grid) as a CT series of int16 slices, stored = HU + 1024.

    Uses pydicom when installed, else SimpleITK's GDCM writer. Returns ``folder``.
    """
    os.makedirs(folder, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0])
    m = volume.ijk_to_ras
    spacing = volume.spacing
    dir_lps = lps @ volume.direction
    origin_lps = lps @ m[:3, 3]
    arr = np.asarray(volume.array)
    stored_all = np.clip(np.round(arr.astype(np.float64) + 1024.0), -32768, 32767).astype(np.int16)
    nk, nj, ni = arr.shape
    iop = [float(x) for x in np.concatenate([dir_lps[:, 0], dir_lps[:, 1]])]
    try:
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:  # pragma: no cover - the test extras include pydicom
        pydicom = None
    study, series, frame = ("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                            "1.2.826.0.1.3680043.8.498.3")
    for k in range(nk):
        ipp = origin_lps + k * spacing[2] * dir_lps[:, 2]
        path = os.path.join(folder, f"IM{k:04d}.dcm")
        if pydicom is not None:
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            sop = generate_uid(entropy_srcs=[series, str(k)])
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = meta.MediaStorageSOPClassUID
            ds.SOPInstanceUID = sop
            ds.Modality = "CT"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
            ds.SeriesDescription = "OsteoROI benchmark phantom"
            ds.PatientName, ds.PatientID = "Phantom^Benchmark", "BENCH"
            ds.KVP, ds.SliceThickness = "120", f"{spacing[2]:g}"
            ds.ImageOrientationPatient = [f"{x:.6f}" for x in iop]
            ds.ImagePositionPatient = [f"{x:.4f}" for x in ipp]
            ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
            ds.Rows, ds.Columns = nj, ni
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
            ds.PixelData = np.ascontiguousarray(stored_all[k]).tobytes()
            try:
                ds.save_as(path, enforce_file_format=True)
            except TypeError:  # pydicom < 3
                ds.is_little_endian, ds.is_implicit_VR = True, False
                ds.save_as(path, write_like_original=False)
        else:  # pragma: no cover
            img = sitk.GetImageFromArray(stored_all[k][None])
            img.SetSpacing([float(spacing[0]), float(spacing[1]), float(spacing[2])])
            img.SetOrigin([float(x) for x in ipp])
            img.SetDirection([float(x) for x in dir_lps.ravel()])
            for tag, value in (("0008|0060", "CT"), ("0020|000d", study), ("0020|000e", series),
                               ("0020|0013", str(k + 1)), ("0028|1053", "1"), ("0028|1052", "-1024"),
                               ("0020|0037", "\\".join(f"{x:.6f}" for x in iop)),
                               ("0020|0032", "\\".join(f"{x:.4f}" for x in ipp))):
                img.SetMetaData(tag, value)
            w = sitk.ImageFileWriter()
            w.KeepOriginalImageUIDOn()
            w.SetFileName(path)
            w.Execute(img)
    return folder


def dicom_series_cached(volume: Volume, nrrd_path: str) -> str:
    """The DICOM series of the cached phantom (written once, beside its NRRD)."""
    folder = nrrd_path[:-5] + "-dicom"
    done = os.path.join(folder, ".complete")
    if not os.path.isfile(done):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
        write_dicom_series(volume, folder)
        with open(done, "w") as f:
            f.write("ok\n")
    return folder


def sitk_read_series(folder: str):
    """SimpleITK alone: find the series' files and read them (HU via rescale)."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def bench_dicom(volume: Volume, truth, nrrd_path: str, repeats: int = 3,
                folder: Optional[str] = None, levels: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    from OsteoROILib import cli

    folder = folder or dicom_series_cached(volume, nrrd_path)
    points = {k: p for k, p in truth_points(truth).items() if levels is None or k in levels}
    argv_points = []
    for level, p in points.items():
        argv_points += ["--point", f"{level}=" + ",".join(repr(float(x)) for x in p)]
    with tempfile.TemporaryDirectory(prefix="osteoroi-dcm-") as tmp:
        count = [0]

        def table():
            count[0] += 1
            out = os.path.join(tmp, f"t{count[0]}.json")
            err = io.StringIO()
            old_out, old_err = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = io.StringIO(), err
            try:
                code = cli.main(["measure", folder, *argv_points, "--json", out])
            finally:
                sys.stdout, sys.stderr = old_out, old_err
            if code != 0:
                raise RuntimeError(f"osteoroi measure on the DICOM series exited with {code}: {err.getvalue()[-500:]}")
            return out

        # Alternate the two so that both see the same (warm) file cache; both warmed up once
        # (first use of the reader threads, lazy imports).
        sitk_read_series(folder)
        table()
        t_tab, t_itk, t_read, t_tab1 = [], [], [], []
        old_threads = os.environ.get(READ_THREADS_ENV)
        out = None
        for _ in range(max(1, repeats)):
            # All timings include releasing the image: `osteoroi measure` frees its volume before
            # it returns (~20-30 ms for 150 MB), so the baselines must free theirs inside the timer too.
            t0 = time.perf_counter()
            img = sitk_read_series(folder)
            del img
            t_itk.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = table()
            t_tab.append(time.perf_counter() - t0)
            # OsteoROI's own read alone (header checks included; several reader threads where the
            # machine has the cores), so that a faster read cannot hide the work done after it.
            t0 = time.perf_counter()
            vol = read_volume(folder)
            del vol
            t_read.append(time.perf_counter() - t0)
            # and the whole table with one reader thread, as on a single-core machine
            os.environ[READ_THREADS_ENV] = "1"
            try:
                t0 = time.perf_counter()
                table()
                t_tab1.append(time.perf_counter() - t0)
            finally:
                if old_threads is None:
                    os.environ.pop(READ_THREADS_ENV, None)
                else:
                    os.environ[READ_THREADS_ENV] = old_threads
        with open(out, encoding="utf-8") as f:
            doc = json.load(f)
        tab, itk, own = statistics.median(t_tab), statistics.median(t_itk), statistics.median(t_read)
        tab1 = statistics.median(t_tab1)
        ratio = tab / itk
        beyond_ms = 1e3 * (tab - own)
        met = ratio < TARGETS["dicom_ratio"]
        profile = None if met or not PROFILE else profile_call(table, top=16)
    # The DICOM table must equal the table of the same points on the NRRD volume.
    direct = _rows_by_key(measure_levels(volume, points, shapes=SHAPE_NAMES))
    for r in doc["rows"]:
        d = direct[(r["level"], r["shape"])]
        assert r["n_voxels"] == d["n_voxels"], f"DICOM vs NRRD voxel count differs for {r['level']} {r['shape']}"
        assert abs(r["mean_hu"] - d["mean_hu"]) < 1e-3, f"DICOM vs NRRD mean differs for {r['level']} {r['shape']}"
    row = make_row(
        "dicom_to_table", f"DICOM series ({len(os.listdir(folder)) - 1} files) -> table (osteoroi measure)",
        tab, "s", itk, "SimpleITK ImageSeriesReader alone", ratio, "ratio",
        f"< {TARGETS['dicom_ratio']:g}x", met,
        f"{len(doc['rows'])} rows, equal to the NRRD table; OsteoROI's read alone {own:.3f} s "
        f"({own / itk:.2f}x SimpleITK's); placement + table + JSON beyond that read {beyond_ms:.0f} ms "
        f"({(tab - own) / itk:.2f}x SimpleITK's read); with one reader thread the table takes {tab1:.3f} s "
        f"({tab1 / itk:.2f}x)",
        timing={"table_s": t_tab, "sitk_s": t_itk, "osteoroi_read_s": t_read, "table_one_thread_s": t_tab1},
    )
    row["osteoroi_read_s"] = own
    row["one_thread_ratio"] = tab1 / itk
    row["beyond_read_ms"] = beyond_ms
    if profile:
        row["profile"] = profile
    return [row]


# ----------------------------------------------------------------------------------------------
# 6. Accuracy: geometry vs analytic, HU vs phantom truth
# ----------------------------------------------------------------------------------------------
def brute_force_count(shape: RoiShape, ijk_to_ras: np.ndarray, dims: Sequence[int]) -> int:
    """Voxel centres inside ``shape`` counted by visiting every voxel of the grid (independent code)."""
    m = np.asarray(ijk_to_ras, float)
    ni, nj, nk = dims
    total = 0
    u, v = np.asarray(shape.axis_u), np.asarray(shape.axis_v)
    n = np.cross(u, v)
    c = np.asarray(shape.center)
    ii, jj = np.meshgrid(np.arange(ni), np.arange(nj), indexing="ij")
    for k in range(nk):
        ras = (m[:3, 0][None, None] * ii[..., None] + m[:3, 1][None, None] * jj[..., None]
               + m[:3, 2] * k + m[:3, 3] - c)
        su, sv, sn = ras @ u, ras @ v, ras @ n
        h = shape.slab_mm / 2.0
        slab = (sn >= -h) & (sn < h)
        if shape.kind == "ellipse":
            plane = (su / shape.half_u) ** 2 + (sv / shape.half_v) ** 2 <= 1.0
        else:
            plane = (np.abs(su) <= shape.half_u) & (np.abs(sv) <= shape.half_v)
        total += int(np.count_nonzero(slab & plane))
    return total


GEOMETRY_CASES = (
    # (label, kind, half_u, half_v, in-plane spacing (dx, dy), angle of u about S (deg), grid tilt (deg))
    ("circle r=10 mm, 0.7 mm pixels", "ellipse", 10.0, 10.0, (0.7, 0.7), 0.0, 0.0),
    ("ellipse 12x7 mm, rotated 33 deg", "ellipse", 12.0, 7.0, (0.7, 0.7), 33.0, 0.0),
    ("ellipse 12x7 mm, 0.5x0.9 mm pixels", "ellipse", 12.0, 7.0, (0.5, 0.9), 17.0, 0.0),
    ("rectangle 18x11 mm, 0.7 mm pixels", "rectangle", 9.0, 5.5, (0.7, 0.7), 0.0, 0.0),
    ("rectangle 18x11 mm, rotated 21 deg", "rectangle", 9.0, 5.5, (0.7, 0.7), 21.0, 0.0),
    ("ellipse 12x7 mm, oblique grid (8 deg)", "ellipse", 12.0, 7.0, (0.7, 0.7), 10.0, 8.0),
)


def _axial_grid(dx: float, dy: float, dz: float, tilt_deg: float, dims) -> np.ndarray:
    """LPS-stored axial grid in RAS, optionally tilted about R by ``tilt_deg``."""
    a = np.radians(tilt_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([-1.0, -1.0, 1.0]) @ np.diag([dx, dy, dz])
    m[:3, 3] = -(m[:3, :3] @ (np.asarray(dims, float) - 1) / 2.0) + np.array([0.37, -0.21, 0.0])
    return m


def bench_geometry_accuracy() -> List[Dict[str, Any]]:
    """Voxelised area vs the analytic area, and voxel count vs a brute-force count, per case.

    The area bound is the one a centre-sampled shape obeys: |area − exact| ≤ P·r + π·r² with
    r = half the pixel diagonal and P the perimeter (a strict bound, not a statistical one).
    """
    rows = []
    for label, kind, hu, hv, (dx, dy), angle, tilt in GEOMETRY_CASES:
        dims = (int(2 * 20 / dx) + 3, int(2 * 20 / dy) + 3, 3)
        dz = 1.0
        m = _axial_grid(dx, dy, dz, tilt, dims)
        normal = m[:3, 2] / np.linalg.norm(m[:3, 2])
        a = np.radians(angle)
        u = np.array([np.sin(a), np.cos(a), 0.0])
        u = u - normal * (u @ normal)
        u /= np.linalg.norm(u)
        v = np.cross(normal, u)
        center = m[:3, :3] @ (np.asarray(dims, float) - 1) / 2.0 + m[:3, 3] + 0.13 * u - 0.29 * v
        shape = RoiShape(kind, tuple(center), tuple(u), tuple(v), hu, hv, dz)
        vs = roi_voxels(shape, m, dims)
        oracle = brute_force_count(shape, m, dims)
        area = vs.count * dx * dy  # one layer: the in-plane pixel area (the slab is one slice thick)
        exact = shape.nominal_area_mm2
        r = 0.5 * np.hypot(dx, dy)
        perimeter = np.pi * np.sqrt(2 * (hu ** 2 + hv ** 2)) if kind == "ellipse" else 4 * (hu + hv)
        bound = (perimeter * r + np.pi * r * r) / exact
        rel = area / exact - 1.0
        rows.append(make_row(
            f"geometry_{len(rows) + 1}", f"Geometry: {label}", area, "mm2", exact, "analytic area (mm2)",
            area / exact, "ratio", f"|ratio-1| <= {bound:.3f} (centre-sampling bound); count = brute force",
            bool(abs(rel) <= bound and vs.count == oracle),
            f"area error {100 * rel:+.2f} %; {vs.count} voxels, brute-force count {oracle}",
            n_voxels=vs.count, brute_force_count=oracle,
        ))
    return rows


def bench_hu_accuracy(volume: Volume, truth) -> List[Dict[str, Any]]:
    """Mean HU of the 20 table ROIs vs the phantom's configured trabecular HU (noise SE as the bound)."""
    res = measure_levels(volume, truth_points(truth), shapes=SHAPE_NAMES, outlines=truth_outlines(truth))
    sigma = float(truth.scanner.noise_sigma)
    worst, worst_z, worst_key = 0.0, 0.0, ""
    for r in res["rows"]:
        err = r["mean_hu"] - truth.level(r["level"]).trabecular_hu
        se = sigma / np.sqrt(r["n_voxels"]) if sigma > 0 else 0.0
        # int16 storage rounds each voxel: at most 0.5 HU.
        z = abs(err) / max(se, 1e-9) if se else 0.0
        if abs(err) >= abs(worst):
            worst, worst_key = err, f"{r['level']} {r['shape']}"
        worst_z = max(worst_z, z)
    met = worst_z < 5.0 if sigma > 0 else abs(worst) <= 0.5
    return [make_row(
        "hu_accuracy", "Accuracy: mean HU of 20 ROIs vs phantom truth (worst)", worst, "HU", None,
        "configured trabecular HU", None, "ratio",
        "|error| < 5 standard errors of the noise" if sigma > 0 else "|error| <= 0.5 HU", met,
        f"worst {worst_key}; max |error|/SE = {worst_z:.2f} (noise {sigma:g} HU)",
    )]
