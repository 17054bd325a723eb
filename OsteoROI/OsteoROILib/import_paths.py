"""Import paths: each stage's public names loaded on first use, and the old flat module paths.

A stage package (``OsteoROILib.calibration``, ``OsteoROILib.placement`` ...) names its public API in
``__all__`` and maps each name to the module that defines it; the module is imported only when the
name is first used, so ``import OsteoROILib.io`` stays cheap and no package needs another at import
time. Before version 0.2 the package was one flat folder (``OsteoROILib.autoplace``,
``OsteoROILib.results`` ...). Those paths keep working for one release: importing one gives a module
that looks each name up in the modules that now hold it, with a ``DeprecationWarning`` that names the
new path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Callable, Dict, Sequence

PACKAGE = __name__.rsplit(".", 1)[0]

#: Old flat module -> the modules that now hold its names (searched in order).
MOVED: Dict[str, Sequence[str]] = {
    "volume": ("io.volume", "io.image_files"),
    "dicom": ("io.dicom_read", "io.dicom_series", "io.dicom_facts"),
    "jsonfile": ("io.jsonfile",),
    "markups": ("io.markups_file",),
    "results": ("export.measurement", "io.outputs"),
    "geometry": ("roi.geometry",),
    "stats": ("roi.stats",),
    "roifamily": ("roi.family", "roi.outline", "roi.inscribed"),
    "autoplace": ("placement.click", "placement.landmarks", "placement.sampling", "placement.canal",
                  "placement.contour", "placement.endplates", "placement.outline_fit", "placement.tilted"),
    "segplacement": ("placement.labels",),
    "measure": ("placement.measure", "roi.levels"),
    "phantoms": ("calibration.phantom_library",),
    "internalcal": ("calibration.internal", "calibration.model"),
    "rods": ("calibration.rods", "calibration.rod_finder", "roi.disc"),
    "criteria": ("diagnosis.criteria",),
    "followup": ("diagnosis.followup", "diagnosis.values"),
    "report": ("export.html_report", "export.images", "export.charts", "export.style"),
    "phantom": ("digital_phantom", "digital_phantom.spec", "digital_phantom.truth", "digital_phantom.column",
                "digital_phantom.anatomy", "digital_phantom.render"),
    "mrmlscene": ("mrml.scene",),
    "mrmlview": ("mrml.offscreen_view",),
    "mrmlcalibration": ("mrml.calibration", "mrml.calibration_state", "mrml.nodes", "mrml.persistence"),
    "mrmllogic": ("mrml.logic", "mrml.nodes", "mrml.persistence", "mrml.results_table", "mrml.rows",
                  "mrml.roi_markups", "mrml.calibration", "mrml.calibration_state"),
    "cli_calibration": ("cli.calibrate",),
    "cli_report": ("cli.report",),
}

#: Old flat modules whose name is now a stage package: the package answers their names.
MOVED_INTO_PACKAGE: Dict[str, Sequence[str]] = {
    "calibration": ("calibration.model", "calibration.phantom_fit", "calibration.apply"),
    "diagnosis": ("diagnosis.verdict", "diagnosis.values", "diagnosis.exclusions", "diagnosis.patient",
                  "diagnosis.document"),
    "placement": ("placement.probe",),
    "cli": ("cli.commands",),
}


_MISSING = object()


def _find(name: str, modules: Sequence[str], old: str):
    for mod in modules:
        try:
            module = importlib.import_module(f"{PACKAGE}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(PACKAGE):
                continue  # that stage module does not exist in this version
            raise
        value = getattr(module, name, _MISSING)
        if value is not _MISSING:
            warnings.warn(f"{PACKAGE}.{old}.{name} has moved to {module.__name__}.{name}; "
                          f"the old path will be removed in the next release.", DeprecationWarning, stacklevel=3)
            return value
    raise AttributeError(f"module {PACKAGE}.{old!r} has no attribute {name!r}")


def stage_getattr(package: str, exports: Dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for a stage package: ``exports`` maps a public name to its module
    (relative to the package); names of a flat module the package replaced are answered with a
    deprecation warning."""
    stage = package.rsplit(".", 1)[-1]

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        if name.startswith("__") or stage not in MOVED_INTO_PACKAGE:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            raise AttributeError(name)  # a submodule not imported yet: let the import system load it
        return _find(name, MOVED_INTO_PACKAGE[stage], stage)

    return __getattr__


class _LegacyModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import OsteoROILib.<old flat module>`` with a module that forwards to the new ones."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, old = fullname.rpartition(".")
        if prefix != PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        old = spec.name.rpartition(".")[2]
        module = types.ModuleType(spec.name, f"Deprecated path: use {PACKAGE}.{MOVED[old][0]}.")
        def forward(name: str):
            if name.startswith("__"):  # module machinery (inspect, pickle, ...) asks for __file__ and the like
                raise AttributeError(name)
            return _find(name, MOVED[old], old)

        module.__getattr__ = forward
        return module

    def exec_module(self, module):
        old = module.__name__.rpartition(".")[2]
        warnings.warn(f"{module.__name__} has moved to {PACKAGE}.{MOVED[old][0]}; "
                      "the old path will be removed in the next release.", DeprecationWarning, stacklevel=2)


def install_legacy_finder() -> None:
    """Install the finder once; a module Reload in Slicer re-imports this module, so a finder of an
    earlier import (another class object of the same name) is replaced, not doubled."""
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__qualname__ != _LegacyModuleFinder.__qualname__
                        or type(f).__module__ != __name__]
    sys.meta_path.append(_LegacyModuleFinder())
