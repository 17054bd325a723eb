"""The geometry of a level's pictures (``roi.overlays.level_overlays``): outline, AP axis and ROIs on
the measured plane, endplates, plane and slab on a sagittal strip — checked against the digital
phantom's truth (its endplates, mid-height, AP axis and noise-free model)."""
import numpy as np
import pytest

from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.digital_phantom.render import analytic_hu
from OsteoROILib.digital_phantom.spec import PhantomSpec
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.roi.overlays import level_overlays

OPTIONS = {"rotation_deg": (0.0, 20.0, 0.0, 0.0)}


@pytest.fixture(scope="module")
def measured():
    volume, truth = make_phantom(**OPTIONS)
    points = {lv.name: lv.center_ras + np.array([2.0, -2.0, 3.0]) for lv in truth.levels}
    return volume, truth, measure_levels(volume, points, slab_mm="qct")


def _level(measured, name):
    volume, truth, res = measured
    rows = [r for r in res["rows"] if r["level"] == name]
    return volume, truth.level(name), level_overlays(res["levels"][name], rows)


def test_sagittal_strip_shows_the_endplates_and_a_slab_between_them(measured):
    volume, lv, ov = _level(measured, "L2")
    sup, inf = ov.endplates_mm
    ds = volume.slice_spacing()
    # the endplates found lie within a slice of the true outer endplate surfaces' inner side
    assert lv.inferior_endplate_s - ds <= inf <= lv.inferior_endplate_s + lv.endplate_mm + ds
    assert lv.superior_endplate_s - lv.endplate_mm - ds <= sup <= lv.superior_endplate_s + ds
    assert abs(ov.plane_mm - float(lv.center_ras @ ov.normal)) <= 0.5 * ds
    lo, hi = ov.slab_mm
    assert inf < lo < hi < sup
    seg = ov.sagittal_line(ov.plane_mm, 10.0)
    assert np.allclose(seg @ ov.normal, ov.plane_mm)


def test_axial_picture_shows_the_rotated_ap_axis_and_the_trabecular_outline(measured):
    volume, lv, ov = _level(measured, "L2")  # rotated 20°
    d = ov.ap_axis[1] - ov.ap_axis[0]
    d = d / np.linalg.norm(d)
    assert np.degrees(np.arccos(np.clip(d @ lv.ap_axis_ras, -1, 1))) < 3.0
    # every point of the drawn trabecular outline lies in the body: trabecular bone or its cortex
    hu = analytic_hu(ov.trabecular_outline, PhantomSpec(**OPTIONS))
    assert np.all(np.isin(hu, [lv.trabecular_hu, lv.cortical_hu])), np.unique(hu)
    # radiological display: anterior up, the picture's centre on the plane's origin
    px = ov.axial.to_pixels(ov.ap_axis, 321, 0.5)
    assert px[1, 1] < px[0, 1]
    assert np.allclose(ov.axial.to_pixels(ov.axial.origin, 321, 0.5), [[160.0, 160.0]])
    assert set(ov.rois) == {"oval", "round", "front", "left", "right"}
    for poly in ov.rois.values():
        assert np.allclose(poly @ ov.normal, ov.plane_mm, atol=1e-6)
