"""Placement: from a click or a vertebra label to the vertebral body's mid-plane, outline and AP axis,
and from there to the measured ROI table (``measure_levels``)."""
from ..import_paths import stage_getattr

__all__ = ["measure_levels", "place_from_click", "place_from_labels", "to_vertebra_plane", "probe_shell"]
__getattr__ = stage_getattr(__name__, {
    "measure_levels": "measure", "place_from_click": "click", "place_from_labels": "labels",
    "to_vertebra_plane": "click", "probe_shell": "probe",
})
