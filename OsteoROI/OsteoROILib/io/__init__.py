"""Reading and writing files: CT volumes (NRRD, NIfTI, MHA, DICOM), point lists, JSON, outputs.

The ``Volume`` (voxels in HU with their IJK→RAS geometry) is what every later stage measures.
"""
from ..import_paths import stage_getattr

__all__ = ["Volume", "read_volume", "write_volume", "read_point_list", "check_output_paths", "write_atomically"]
__getattr__ = stage_getattr(__name__, {
    "Volume": "volume", "read_volume": "image_files", "write_volume": "image_files",
    "read_point_list": "markups_file", "check_output_paths": "outputs", "write_atomically": "outputs",
})
