"""Cost of the image guards: the anatomy HU-scale check and the voxel checks (``io.volume.check_ct``)
against reading the same CT (``read_volume``), measured in the same run.

    python benchmarks/bench_guards.py [--quick]

Row ``guards_check_ct``: median time of ``check_ct`` on the benchmark CT; baseline: median time of
``read_volume`` of its NRRD (which includes one ``check_ct``); target: the check costs at most a
quarter of the read, so no user waits for the guards.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_core  # noqa: E402
from OsteoROILib.io.image_files import read_volume  # noqa: E402
from OsteoROILib.io.volume import check_ct  # noqa: E402

#: The guards may cost at most this fraction of reading the CT.
MAX_CHECK_TO_READ = 0.25


def run(quick: bool = False, phantom: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[str] = bench_core.CACHE_DIR) -> List[Dict[str, Any]]:
    opts = dict(phantom or (bench_core.QUICK_PHANTOM if quick else bench_core.FULL_PHANTOM))
    volume, _, nrrd = bench_core.phantom_ct(cache_dir=cache_dir, **opts)
    repeats = 3 if quick else 7
    check, _ = bench_core.time_call(lambda: check_ct(volume), repeats)
    read, _ = bench_core.time_call(lambda: read_volume(nrrd), repeats)
    ratio = check["median_s"] / read["median_s"]
    return [bench_core.make_row(
        "guards_check_ct", "image guards (HU scale on anatomy, non-finite, range) on the benchmark CT",
        check["median_s"] * 1e3, "ms", baseline=read["median_s"] * 1e3, baseline_name="read_volume of the same CT",
        ratio=ratio, ratio_kind="ratio", target=f"<= {MAX_CHECK_TO_READ:g}x the read",
        met=ratio <= MAX_CHECK_TO_READ, notes=f"{volume.dimensions}, {volume.array.dtype}")]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in run(quick=parser.parse_args(argv).quick):
        print(f"{row['name']}: {row['figure']:.1f} ms vs {row['baseline']:.1f} ms ({row['ratio']:.3f}x; "
              f"target {row['target']}, met: {row['met']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
