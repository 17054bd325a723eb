"""The Slicer logic's result document carries the same aorta as the core's measure_levels (one
implementation: placement.aorta), searched once per document, not per placed level."""
from __future__ import annotations

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from OsteoROILib.digital_phantom import make_phantom  # noqa: E402
from OsteoROILib.diagnosis.verdict import build_diagnosis  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, new_scene  # noqa: E402
from OsteoROILib.placement.measure import measure_levels  # noqa: E402


def test_the_scene_document_has_the_cores_aorta_and_the_diagnosis_warns():
    volume, truth = make_phantom(blood_hu=240.0, noise_sigma=10.0, seed=2, level_names=("L1", "L2"),
                                 trabecular_density=(140.0, 116.0), depth_mm=(30.0, 31.0), width_mm=(42.0, 44.0))
    app = new_scene()
    try:
        node = add_volume_from_array(app.scene, volume.array, volume.ijk_to_ras, "CT")
        points = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
        for level in truth.levels:
            points.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
        logic = OsteoROIMRMLLogic(app.scene)
        logic.run(node, points)
        doc = logic.document()
    finally:
        app.close()
    core = measure_levels(volume, {lv.name: lv.center_ras for lv in truth.levels})["aorta"]
    assert doc["aorta"]["hu"] == pytest.approx(240.0, abs=6.0)
    assert doc["aorta"]["hu"] == pytest.approx(core["hu"], abs=0.01)
    assert doc["aorta"]["center_ras"] == pytest.approx(core["center_ras"], abs=0.01)
    dx = build_diagnosis(doc, patient={"age": 67, "sex": "M"})
    assert any(f"aorta reads {doc['aorta']['hu']:.0f} HU" in w and "contrast-enhanced" in w for w in dx["warnings"])
