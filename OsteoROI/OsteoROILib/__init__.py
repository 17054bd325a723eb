"""OsteoROI's library, one subpackage per pipeline stage (see ARCHITECTURE.md):

io → roi → placement | calibration | diagnosis → export; digital_phantom (samples); mrml | cli on top.

The core imports only numpy, SimpleITK and vtk; ``mrml`` imports ``slicer`` (Slicer itself or the
``slicer-core`` wheel), and only ``OsteoROI.py`` imports Qt.
"""
__version__ = "0.2.0"

from .import_paths import install_legacy_finder as _install_legacy_finder

_install_legacy_finder()
