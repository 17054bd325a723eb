"""The digital CT phantom: L1–L4 of known density on a calibration phantom, with its truth.

A sample generator for the demo, the self-test, tests and benchmarks. The measuring pipeline never
imports it, so ground truth cannot leak into a measurement.
"""
from ..import_paths import stage_getattr

__all__ = ["make_phantom", "PhantomSpec", "PhantomTruth", "analytic_hu"]
__getattr__ = stage_getattr(__name__, {
    "make_phantom": "phantom", "PhantomSpec": "phantom", "PhantomTruth": "phantom", "analytic_hu": "phantom",
})
