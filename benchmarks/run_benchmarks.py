#!/usr/bin/env python3
"""Run every OsteoROI benchmark, print one table and write ``benchmarks/results/latest.json``.

    python benchmarks/run_benchmarks.py            # a 512x512x300 CT (~2-4 min, ~3 GB RAM)
    python benchmarks/run_benchmarks.py --quick    # 256x256x150 and fewer repeats (~30 s)

Each row holds its figure, the baseline measured in the same run and their ``speedup`` (baseline /
figure) or ``ratio`` (figure / baseline), the target and whether it was met. A missed target comes
with a cProfile summary of where the time goes (``profile``). Benchmarks defined by other modules
are picked up when their files exist: ``benchmarks/bench_calibration.py`` and
``benchmarks/bench_placement.py`` — each module's ``run(quick=...)`` (or ``run()``, or ``main()``)
is called and may return a list of rows (dicts, see ``bench_core.make_row``) or ``{"rows": [...]}``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import inspect
import json
import os
import platform
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core  # noqa: E402

RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_OUT = os.path.join(RESULTS_DIR, "latest.json")
#: Benchmark modules written alongside this one; each is optional.
PLUGIN_MODULES = ("bench_calibration", "bench_placement", "bench_guards", "bench_aorta")
SCHEMA = "osteoroi-benchmarks/1"


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _error_row(key: str, name: str, exc: BaseException) -> Dict[str, Any]:
    return bench_core.make_row(key, name, None, "", target="", met=False,
                               notes=f"ERROR {type(exc).__name__}: {exc}",
                               traceback=traceback.format_exc(limit=6))


def _load_plugin(name: str, folder: str = HERE):
    path = os.path.join(folder, name + ".py")
    if not os.path.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location(f"osteoroi_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _call_plugin(module, quick: bool):
    fn = getattr(module, "run", None) or getattr(module, "main", None)
    if fn is None:
        raise RuntimeError(f"{module.__name__} has neither run() nor main()")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "quick" in params:
        return fn(quick=quick)
    if fn.__name__ == "main" and "argv" in params:
        return fn(["--quick"] if quick else [])
    return fn()


def _plugin_rows(name: str, result: Any) -> List[Dict[str, Any]]:
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        result = result["rows"]
    elif isinstance(result, dict):
        result = [result]
    if not isinstance(result, list):
        note = "ran (no rows returned)" if result in (None, 0) else f"returned {type(result).__name__}"
        return [bench_core.make_row(name, f"{name}: {note}", None, "", notes="see its own output")]
    rows = []
    for n, r in enumerate(result):
        if not isinstance(r, dict):
            continue
        row = dict(r)
        row.setdefault("key", f"{name}_{n + 1}")
        row.setdefault("name", row["key"])
        row.setdefault("source", name + ".py")
        rows.append(row)
    return rows


def run_all(
    quick: bool = False,
    phantom: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[str] = bench_core.CACHE_DIR,
    repeats: Optional[Dict[str, int]] = None,
    plugins: Sequence[str] = PLUGIN_MODULES,
    plugin_dir: str = HERE,
    only: Optional[Sequence[str]] = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> Dict[str, Any]:
    """Run the benchmarks and return the results document (nothing is written here).

    ``phantom`` overrides the CT (``{"size": ..., "spacing": ...}``); ``repeats`` the repeat counts
    (keys roi, roi_baseline, table, click, memory, dicom); ``only`` limits to groups of
    ("roi", "table", "click", "memory", "dicom", "accuracy", "plugins").
    """
    ct_opts = dict(phantom or (bench_core.QUICK_PHANTOM if quick else bench_core.FULL_PHANTOM))
    reps = {"roi": 50 if quick else 200, "roi_baseline": 2 if quick else 3, "table": 5 if quick else 20,
            "click": 5 if quick else 10, "memory": 1, "dicom": 2 if quick else 7}
    reps.update(repeats or {})
    groups = set(only or ("roi", "table", "click", "memory", "dicom", "accuracy", "plugins"))
    started = time.time()
    load_before = _loadavg()
    log(f"phantom CT {ct_opts} (cache: {cache_dir}) ...")
    t0 = time.perf_counter()
    volume, truth, nrrd = bench_core.phantom_ct(cache_dir=cache_dir, **ct_opts)
    log(f"  ready in {time.perf_counter() - t0:.1f} s: {volume.dimensions}, {volume.array.dtype}, "
        f"{volume.array.nbytes / 1e6:.0f} MB")
    rows: List[Dict[str, Any]] = []

    def step(group: str, label: str, fn: Callable[[], List[Dict[str, Any]]]):
        if group not in groups:
            return
        log(f"{label} ...")
        t = time.perf_counter()
        try:
            rows.extend(fn())
        except Exception as exc:  # a broken benchmark is reported, the others still run
            rows.append(_error_row(group, label, exc))
        log(f"  {time.perf_counter() - t:.1f} s")

    step("roi", "1. per-ROI statistics", lambda: bench_core.bench_roi_statistics(
        volume, truth, reps["roi"], reps["roi_baseline"]))
    step("table", "2. whole table", lambda: bench_core.bench_table(volume, truth, reps["table"]))
    step("click", "3. click -> ROIs", lambda: bench_core.bench_click(volume, truth, reps["click"]))
    step("memory", "4. peak memory", lambda: bench_core.bench_memory(nrrd, bench_core.truth_points(truth),
                                                                      reps["memory"]))
    step("dicom", "5. DICOM -> table", lambda: bench_core.bench_dicom(volume, truth, nrrd, reps["dicom"]))
    step("accuracy", "6. accuracy", lambda: bench_core.bench_geometry_accuracy()
         + bench_core.bench_hu_accuracy(volume, truth))
    if "plugins" in groups:
        for name in plugins:
            try:
                module = _load_plugin(name, plugin_dir)
            except Exception as exc:
                rows.append(_error_row(name, f"{name}.py (import)", exc))
                continue
            if module is None:
                log(f"{name}.py: not present, skipped")
                continue
            log(f"{name}.py ...")
            try:
                # A plugin's own printout goes to stderr: stdout keeps the one table.
                with contextlib.redirect_stdout(sys.stderr):
                    result = _call_plugin(module, quick)
                rows.extend(_plugin_rows(name, result))
            except Exception as exc:
                rows.append(_error_row(name, f"{name}.py", exc))
    import numpy
    import SimpleITK

    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "command": "python benchmarks/run_benchmarks.py" + (" --quick" if quick else ""),
        "quick": bool(quick),
        "osteoroi_version": bench_core.__version__,
        "machine": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "SimpleITK": SimpleITK.Version_VersionString(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            # Other processes inflate absolute times (ratios less so): the 1-minute load average.
            "load_average_before_after": [load_before, _loadavg()],
        },
        "ct": {"size": list(volume.dimensions), "spacing_mm": [round(float(s), 4) for s in volume.spacing],
               "dtype": str(volume.array.dtype), "bytes": int(volume.array.nbytes),
               "phantom_options": {k: (list(v) if isinstance(v, tuple) else v)
                                   for k, v in {**bench_core.PHANTOM_COMMON, **ct_opts}.items()}},
        "targets": dict(bench_core.TARGETS),
        "duration_s": round(time.time() - started, 1),
        "rows": rows,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    v = float(value)
    if unit == "ms" or unit == "s":
        text = f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    elif abs(v) >= 1000:
        text = f"{v:.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    else:
        text = f"{v:.3g}"
    return f"{text} {unit}".strip()


def format_table(doc: Dict[str, Any]) -> str:
    header = ("benchmark", "figure", "baseline", "speedup/ratio", "target", "met")
    lines = []
    for r in doc["rows"]:
        kind = r.get("ratio_kind", "speedup")
        ratio = r.get(kind)
        ratio_text = "-" if ratio is None else (f"{ratio:.1f}x" if kind == "speedup" and ratio >= 10
                                                else f"{ratio:.3g}x" if kind == "speedup" else f"{ratio:.3g}")
        unit = r.get("unit", "")
        base_unit = unit if r.get("baseline_name", "").startswith(("full", "SimpleITK", "analytic")) else ""
        if r.get("key") == "measure_peak_memory":
            base_unit = "MB"
        met = r.get("met")
        lines.append((str(r.get("name", r.get("key")))[:66], _fmt(r.get("figure"), unit),
                      _fmt(r.get("baseline"), base_unit), ratio_text, str(r.get("target", ""))[:44],
                      "yes" if met is True else "NO" if met is False else "-"))
    widths = [max(len(h), *(len(line[c]) for line in lines)) if lines else len(h) for c, h in enumerate(header)]
    out = [f"OsteoROI benchmarks{' (quick)' if doc.get('quick') else ''}: CT {'x'.join(map(str, doc['ct']['size']))} "
           f"({doc['ct']['dtype']}, spacing {doc['ct']['spacing_mm']} mm), {doc['machine']['cpu_count']} CPUs, "
           f"Python {doc['machine']['python']}, load average {doc['machine'].get('load_average_before_after')}"]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    notes = [f"- {r.get('name')}: {r['notes']}" for r in doc["rows"] if r.get("notes")]
    if notes:
        out.append("")
        out.append("Notes (baselines are measured in the same run):")
        out.extend(notes)
    for r in doc["rows"]:
        if r.get("profile"):
            out.append("")
            out.append(f"Profile of a missed target - {r.get('name')}:")
            out.append(r["profile"])
    return "\n".join(out)


def write_results(doc: Dict[str, Any], path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".part"
    from OsteoROILib.io.outputs import json_safe

    # A figure that could not be measured (every click of a level refused) is NaN: null in the file.
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(json_safe(doc), f, indent=2, allow_nan=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller CT (256x256x150) and fewer repeats")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results JSON (default: benchmarks/results/latest.json)")
    parser.add_argument("--cache", default=bench_core.CACHE_DIR, help="folder for the cached phantom CT and DICOM")
    parser.add_argument("--only", help="comma-separated groups: roi,table,click,memory,dicom,accuracy,plugins")
    args = parser.parse_args(argv)
    only = [g.strip() for g in args.only.split(",")] if args.only else None
    doc = run_all(quick=args.quick, cache_dir=args.cache, only=only)
    print(format_table(doc))
    write_results(doc, args.out)
    print(f"\nwrote {os.path.relpath(args.out)}")
    errors = [r for r in doc["rows"] if str(r.get("notes", "")).startswith("ERROR")]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
