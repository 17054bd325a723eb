"""Diagnosis: criteria kept as data (QCT vBMD, HU cut-offs), level rules, exclusions, applicability,
follow-up against the least significant change, and the diagnosis document (QCT_BRIEF §2–3)."""
from ..import_paths import stage_getattr

__all__ = ["build_diagnosis", "load_criteria", "load_criterion", "compare"]
__getattr__ = stage_getattr(__name__, {
    "build_diagnosis": "verdict", "load_criteria": "criteria", "load_criterion": "criteria", "compare": "followup",
})
