"""OsteoROI's Qt-free core: volumes, ROI geometry, measurement, calibration, diagnosis, export.

Imports only numpy, SimpleITK and vtk (and, for MRML code, the ``slicer`` package of the
``slicer-core`` wheel or of Slicer itself). Data flows one way:
image + placement → geometry → measurement → calibration → diagnosis → export.
"""
__version__ = "0.1.0"
