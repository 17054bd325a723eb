"""Cost and accuracy of the aorta search (``placement.aorta.find_aorta``) against a click, in the same run.

    python benchmarks/bench_aorta.py [--quick]

Row ``aorta_search``: median time of ``find_aorta`` beside L1 and L2 on the benchmark CT with an
enhanced aorta (``blood_hu`` 250 HU); baseline: median time of one click → ROIs
(``measure_levels`` for L1 without the aorta search). Target: the search, made once per measurement,
costs at most one click, so measuring L1–L4 stays within its four-click budget. The notes give the
HU found against the phantom's ``blood_hu`` and the centre's distance to its ``aorta_center_ras``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core  # noqa: E402
from OsteoROILib.placement.aorta import find_aorta  # noqa: E402
from OsteoROILib.placement.measure import measure_levels  # noqa: E402

#: The search may cost at most this many clicks.
MAX_SEARCH_TO_CLICK = 1.0
BLOOD_HU = 250.0


def run(quick: bool = False, phantom: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[str] = bench_core.CACHE_DIR) -> List[Dict[str, Any]]:
    opts = dict(phantom or (bench_core.QUICK_PHANTOM if quick else bench_core.FULL_PHANTOM))
    opts["blood_hu"] = BLOOD_HU
    volume, truth, _ = bench_core.phantom_ct(cache_dir=cache_dir, **opts)
    repeats = 3 if quick else 7
    point = bench_core.click_point(truth, "L1")
    click, _ = bench_core.time_call(lambda: measure_levels(volume, {"L1": point}, aorta=False), repeats)
    levels = measure_levels(volume, {lv: bench_core.click_point(truth, lv) for lv in ("L1", "L2")},
                            aorta=False)["levels"]
    def search_once():
        volume.__dict__.pop("_aorta_cache", None)  # time the search itself, not the reuse of its finding
        return find_aorta(volume, levels)

    search, found = bench_core.time_call(search_once, repeats)
    ratio = search["median_s"] / click["median_s"]
    (ax, ay) = truth.spec.aorta_center_ras
    off = None if found.center_ras is None else float(np.hypot(found.center_ras[0] - ax, found.center_ras[1] - ay))
    notes = (f"{volume.dimensions}; found {found.hu if found.hu is None else round(found.hu, 1)} HU "
             f"(phantom {BLOOD_HU:g}), centre {off if off is None else round(off, 2)} mm from the truth, "
             f"confidence {found.confidence:.2f}" + (f"; {found.reason}" if found.reason else ""))
    return [bench_core.make_row(
        "aorta_search", "aorta search beside L1-L2 (once per measurement)", search["median_s"] * 1e3, "ms",
        baseline=click["median_s"] * 1e3, baseline_name="one click -> ROIs (L1, no aorta search)",
        ratio=ratio, ratio_kind="ratio", target=f"<= {MAX_SEARCH_TO_CLICK:g}x one click",
        met=ratio <= MAX_SEARCH_TO_CLICK and found.hu is not None, notes=notes)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in run(quick=parser.parse_args(argv).quick):
        print(f"{row['name']}: {row['figure']:.1f} ms vs {row['baseline']:.1f} ms ({row['ratio']:.3f}x; "
              f"target {row['target']}, met: {row['met']}) {row['notes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
