"""Diagnosis: criteria kept as data (QCT vBMD, HU cut-offs), level rules, exclusions, applicability,
follow-up against the least significant change, and the diagnosis document (QCT_BRIEF §2–3).

Modules, each importing only those above it: ``criteria`` (the criteria files) and ``values`` (a
result document read into per-level values); ``exclusions`` (per-level flags) and ``patient`` (who
the categories apply to, the scan technique); ``document`` (the document's tables and schema);
``followup`` (change against a prior exam); ``verdict`` (the criteria applied, the document built).
Diagnosis reads documents, never images: it imports only ``io`` outside itself.
"""
from ..import_paths import stage_getattr

__all__ = ["build_diagnosis", "load_criteria", "load_criterion", "compare"]
__getattr__ = stage_getattr(__name__, {
    "build_diagnosis": "verdict", "load_criteria": "criteria", "load_criterion": "criteria", "compare": "followup",
})
