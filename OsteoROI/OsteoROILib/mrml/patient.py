"""Patient and study facts of a CT volume node that Slicer loaded from its DICOM database.

Slicer's DICOM scalar volume plugin records the SOP instance UIDs of the slices it loaded in the
node attribute ``DICOM.instanceUIDs`` (``DICOMScalarVolumePlugin.py``, Slicer 5.6-5.10); the
database (``slicer.dicomDatabase``, a ``ctkDICOMDatabase``) maps a UID to its file
(``fileForInstance``) and reads a tag of that file (``fileValue(path, "gggg,eeee")``). The facts
are those the command line reads from a DICOM folder (``io.dicom_facts.FACT_TAGS``, QCT_BRIEF §6):
kVp, contrast agent, manufacturer, kernel, slice thickness, patient age and sex, study date.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import slicer

from ..errors import OutputError
from ..io.dicom_facts import FACT_TAGS, facts_from_header

__all__ = ["DICOM_UIDS_ATTRIBUTE", "dicom_facts_from_node", "dicom_patient_id", "describe_facts", "dicom_source_files"]

#: Node attribute in which Slicer's DICOM plugins list the loaded instances' UIDs (space-separated).
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
TAG_PATIENT_ID = "0010,0020"


def _first_file(volumeNode, database) -> Optional[str]:
    uids = (volumeNode.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split() if volumeNode is not None else []
    if database is None:
        database = getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return None
    return database.fileForInstance(uids[0]) or None


def dicom_facts_from_node(volumeNode, database=None) -> Dict[str, object]:
    """The DICOM facts (keys of ``FACT_TAGS``) of the volume's first slice; {} when the volume did
    not come from Slicer's DICOM database (file loads, arrays) or the database is not open."""
    database = database if database is not None else getattr(slicer, "dicomDatabase", None)
    path = _first_file(volumeNode, database)
    if path is None:
        return {}
    header = {tag: database.fileValue(path, tag.replace("|", ",")) or "" for tag, _kind in FACT_TAGS.values()}
    return facts_from_header(header)


def dicom_patient_id(volumeNode, database=None) -> str:
    """DICOM PatientID of the volume ("" when unknown); shown in the panel, never exported."""
    database = database if database is not None else getattr(slicer, "dicomDatabase", None)
    path = _first_file(volumeNode, database)
    return (database.fileValue(path, TAG_PATIENT_ID) or "").strip() if path else ""


def describe_facts(facts: Dict[str, object], patient_id: str = "") -> str:
    """One line per group of facts for the panel; says so when there are none."""
    if not facts:
        return "No DICOM facts (the volume was not loaded from the DICOM database): enter age and sex below."
    def get(key, fmt="{}"):
        value = facts.get(key)
        return fmt.format(value) if value not in (None, "") else "?"
    lines = [f"Patient {patient_id or '?'}: age {get('patient_age')}, sex {get('patient_sex')}; "
             f"study date {get('study_date')}",
             f"{get('kvp', '{:g} kV')}, contrast {get('contrast_agent') if facts.get('contrast_agent') else 'none'}, "
             f"{get('manufacturer')} {facts.get('model') or ''}".rstrip() + f", kernel {get('convolution_kernel')}, "
             f"slice {get('slice_thickness_mm', '{:g} mm')}"]
    return "\n".join(lines)


def dicom_source_files(volumeNode, database=None) -> List[str]:
    """The files of the DICOM slices the volume was loaded from, in the plugin's slice order; [] when the
    volume did not come from Slicer's DICOM database (file loads, arrays) or the database is not open.

    Slicer's DICOM scalar volume plugin writes "Unknown" for a slice without a SOP Instance UID
    (``DICOMScalarVolumePlugin.load``, Slicer 5.6-5.10); ``fileForInstance`` answers "" for a UID
    the database does not hold. Either makes the list incomplete, and an incomplete list is
    refused: an SR region drawn on the nearest slice that happens to be left would be on the wrong image.
    """
    uids = (volumeNode.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split() if volumeNode is not None else []
    database = database if database is not None else getattr(slicer, "dicomDatabase", None)
    if not uids or database is None:
        return []
    files = [database.fileForInstance(uid) if uid != "Unknown" else "" for uid in uids]
    missing = [uid for uid, path in zip(uids, files) if not path or not os.path.isfile(path)]
    if missing:
        raise OutputError(f"{len(missing)} of the {len(uids)} DICOM slices of {volumeNode.GetName()} are not in "
                          f"Slicer's DICOM database (first: {missing[0]}).",
                          "Import the series again with the DICOM module (Add DICOM data), load it from there, "
                          "measure and export again.")
    return files
