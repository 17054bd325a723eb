"""The level pictures' geometry from plain result data (``roi.overlays``), against analytic geometry:
a circle grown by a margin, the model ellipse of a body's outer size, the radiological display's
directions in RAS, and the concerns a placement raised, in its own words."""
import numpy as np
import pytest

from OsteoROILib.roi.overlays import axial_view, level_overlays, offset_outwards, placement_concerns


def _entry(**extra):
    entry = {"outline": {"center_ras": [10.0, 20.0, 30.0], "ap_axis_ras": [0.0, 1.0, 0.0],
                         "normal_ras": [0.0, 0.0, -1.0], "depth_mm": 30.0, "width_mm": 40.0, "cortical_mm": 2.0},
             "warnings": [], "auto": {"superior_endplate_mm": 42.0, "inferior_endplate_mm": 18.0, "roi_scale": 1.0}}
    entry.update(extra)
    return entry


def test_a_circle_grown_by_the_margin_is_the_larger_circle():
    a = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    for direction in (1, -1):  # either winding
        circle = 12.0 * np.column_stack([np.cos(direction * a), np.sin(direction * a)])
        assert np.allclose(np.linalg.norm(offset_outwards(circle, 2.5), axis=1), 14.5, atol=1e-2)


def test_without_a_trabecular_polygon_the_body_outline_is_the_outer_ellipse():
    ov = level_overlays(_entry(), [])
    d = ov.body_outline - np.array([10.0, 20.0, 30.0])
    # semi-axes 15 mm along A and 20 mm along R: (y/15)^2 + (x/20)^2 = 1, on the plane
    assert np.allclose((d[:, 1] / 15.0) ** 2 + (d[:, 0] / 20.0) ** 2, 1.0)
    assert np.allclose(d[:, 2], 0.0)
    assert ov.trabecular_outline is None and not ov.has_slab
    assert ov.endplates_mm == (42.0, 18.0) and np.allclose(ov.normal, [0, 0, 1])  # towards superior
    assert ov.fov_mm == pytest.approx(2.2 * 40.0)
    assert np.allclose(ov.ap_axis, [[10.0, 5.0, 30.0], [10.0, 35.0, 30.0]])


def test_with_a_trabecular_polygon_the_body_outline_is_it_grown_by_the_cortex():
    a = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    inner = np.column_stack([10.0 * np.cos(a), 15.0 * np.sin(a)])  # s anterior, t left
    ov = level_overlays(_entry(trabecular_outline_st_mm=inner.tolist()), [])
    c = np.array([10.0, 20.0, 30.0])
    # t runs towards the patient's left: -R in RAS
    assert np.allclose(ov.trabecular_outline[15] - c, [-15.0, 0.0, 0.0], atol=1e-9)
    assert np.allclose(ov.body_outline[0] - c, [0.0, 12.0, 0.0], atol=1e-2)  # anterior tip + 2 mm
    assert np.allclose(ov.body_outline[15] - c, [-17.0, 0.0, 0.0], atol=1e-2)


def test_radiological_display_puts_the_patients_right_on_the_left_and_anterior_up():
    view = axial_view(np.zeros(3), np.array([0.0, 0.0, 1.0]))
    px = view.to_pixels(np.array([[10.0, 0, 0], [-10.0, 0, 0], [0, 10.0, 0]]), 101, 1.0)
    assert px[0, 0] < 50 < px[1, 0]  # R (+x) left of the centre, L right of it
    assert px[2, 1] < 50  # anterior up
    tilted = axial_view(np.zeros(3), np.array([0.0, np.sin(0.3), np.cos(0.3)]))
    assert abs(tilted.col_dir @ [0.0, np.sin(0.3), np.cos(0.3)]) < 1e-12
    assert abs(tilted.row_dir @ [0.0, np.sin(0.3), np.cos(0.3)]) < 1e-12


def test_concerns_are_the_placements_words_once_each_and_a_silent_shrink_is_named():
    assert placement_concerns(_entry(), [{"warnings": []}]) == []
    warned = _entry(warnings=["L2: low fit quality (0.42: outline asymmetric)"])
    rows = [{"warnings": ["L2: low fit quality (0.42: outline asymmetric)", "dense voxels: bone island?"]}]
    assert placement_concerns(warned, rows) == ["L2: low fit quality (0.42: outline asymmetric)",
                                                "dense voxels: bone island?"]
    shrunk = _entry()
    shrunk["auto"]["roi_scale"] = 0.85
    assert placement_concerns(shrunk) == ["the ROIs were shrunk to 85 % (conservative fallback)"]
