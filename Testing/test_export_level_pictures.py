"""What the report's level pictures draw, checked against the digital phantom's analytic geometry: the
body outline on the true outer cortex, the AP axis arrow along the true (rotated) AP axis with its head
anterior, the endplate lines inside the true endplates, the plane at the true mid-height and the slab
faces half a slab from it; and a level whose placement raised concerns is marked with its reasons.

Oracles: the phantom's model (``analytic_hu``), its configured endplate heights, rotation and depth;
the picture's pixel grid computed here from the field of view (radiological display by hand:
columns towards the patient's left, −R; rows towards posterior, −A); SimpleITK decodes the PNG.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.digital_phantom.render import analytic_hu
from OsteoROILib.digital_phantom.spec import PhantomSpec
from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.export.html_report import build_html
from OsteoROILib.export.images import IMAGE_PX, OVERLAY_COLOURS, render_level_image
from OsteoROILib.export.measurement import build_document
from OsteoROILib.export.sagittal import render_sagittal_image
from OsteoROILib.placement.measure import measure_levels

from test_export_report import decode_png

OPTIONS = dict(rotation_deg=(0.0, 20.0, 0.0, 0.0), spacing=(0.7, 0.7, 1.0), calibration_phantom=False, table=False,
               aorta=False)
MID = (IMAGE_PX - 1) / 2.0


@pytest.fixture(scope="module")
def clicked():
    """The phantom measured from clicks off the body centres, with the QCT slab."""
    volume, truth = make_phantom(**OPTIONS)
    points = {lv.name: lv.center_ras + np.array([2.0, -2.0, 3.0]) for lv in truth.levels}
    return volume, truth, build_document(measure_levels(volume, points, slab_mm="qct", aorta=False),
                                         volume.describe())


def _rows(doc, level):
    return [r for r in doc["rows"] if r["level"] == level]


def _pixels(img, colour):
    return np.argwhere(np.all(img == np.array(colour, dtype=np.uint8), axis=2))  # (row, column)


def _axial_frame():
    """The report's axial picture of an axial plane, by hand: columns → patient left, rows → posterior."""
    return np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])


@pytest.mark.parametrize("name", ["L2", "L3"])
def test_axial_outline_on_the_true_cortex_and_arrow_along_the_true_ap_axis(clicked, tmp_path, name):
    volume, truth, doc = clicked
    lv = truth.level(name)  # rotated 20° about the body's axis at L2, not at L3
    png, meta = render_level_image(volume, doc, name, _rows(doc, name))
    img = decode_png(png, tmp_path)
    px = meta["pixel_mm"]
    col_dir, row_dir = _axial_frame()
    origin = meta["overlays"].axial.origin
    assert abs(float((origin - lv.center_ras) @ lv.normal_ras)) <= 0.5 * volume.slice_spacing()

    def ras(pix):  # (row, column) pixels back to RAS on the plane
        return origin + np.outer(pix[:, 1] - MID, col_dir * px) + np.outer(pix[:, 0] - MID, row_dir * px)

    # body outline: every drawn pixel lies on the true outer cortex (within a pixel and the pen)
    outline = ras(_pixels(img, OVERLAY_COLOURS["body outline"]))
    assert len(outline) > 100
    d = outline - origin
    radius = np.linalg.norm(d, axis=1)
    spec = PhantomSpec(**OPTIONS)
    r = np.arange(0.0, 40.0, 0.05)
    samples = analytic_hu((origin + (d / radius[:, None])[:, None, :] * r[None, :, None]).reshape(-1, 3), spec)
    is_body = np.isin(samples.reshape(len(d), len(r)), [lv.trabecular_hu, lv.cortical_hu])
    true_r = r[np.argmin(is_body, axis=1) - 1]  # the last radius inside the body on each ray
    err = np.abs(radius - true_r)
    voxel = volume.spacing[0]  # the contour is found on the CT's voxels: within one (median), two at worst
    assert np.median(err) < voxel and np.percentile(err, 95) < 2 * voxel + px, (np.median(err), err.max())
    # AP axis: the blue arrow's shaft runs along the truth's AP axis and its head is anterior
    blue = _pixels(img, OVERLAY_COLOURS["AP axis"]).astype(float)
    ap_px = np.array([lv.ap_axis_ras @ col_dir, lv.ap_axis_ras @ row_dir])  # (column, row) per mm
    ap_px /= np.linalg.norm(ap_px)
    xy = blue[:, ::-1] - MID  # (column, row) from the picture's centre
    along = xy @ ap_px
    across = xy @ np.array([-ap_px[1], ap_px[0]])
    shaft = np.abs(along) < 0.3 * lv.depth_mm / px
    direction = np.linalg.svd(xy[shaft] - xy[shaft].mean(axis=0))[2][0]  # the shaft's principal direction
    assert np.degrees(np.arccos(min(1.0, abs(float(direction @ ap_px))))) < 3.0  # along the truth (placement: < 3°)
    assert abs(np.median(across[shaft])) * px < 1.0  # through the body's centre
    assert along.max() * px == pytest.approx(0.5 * lv.depth_mm, abs=1.5)
    head, tail = along > along.max() - 3.0 / px, along < along.min() + 3.0 / px
    assert np.ptp(across[head]) > np.ptp(across[tail]) + 5  # the arrowhead's wings at the anterior end
    if lv.rotation_deg:  # the rotation shows: the arrow leans by the truth's angle from the picture's vertical
        lean = np.degrees(np.arctan2(abs(ap_px[0]), -ap_px[1]))
        assert lean == pytest.approx(abs(lv.rotation_deg), abs=0.5)


@pytest.mark.parametrize("name", ["L1", "L2"])
def test_sagittal_endplates_plane_and_slab_where_the_phantom_puts_them(clicked, tmp_path, name):
    volume, truth, doc = clicked
    lv = truth.level(name)
    png, meta = render_sagittal_image(volume, doc, name, _rows(doc, name))
    img = decode_png(png, tmp_path)
    px = meta["pixel_mm"]
    centre_s = float(np.asarray(meta["centre_ras"]) @ lv.normal_ras)

    def rows_of(colour):
        pts = _pixels(img, colour)
        return pts[:, 0], pts[:, 1]

    def row_of(s):  # superior up: a height s (mm along the body's axis) on the picture
        return MID - (s - centre_s) / px

    ds, ep = volume.slice_spacing(), lv.endplate_mm
    rows, cols = rows_of(OVERLAY_COLOURS["endplates"])
    top, bottom = rows[rows < MID], rows[rows > MID]
    assert len(top) > 40 and len(bottom) > 40
    # each endplate line lies in the true endplate (outer surface to inner side), within a slice and a pixel
    slack = ds / px + 1.0
    assert row_of(lv.superior_endplate_s) - slack <= np.median(top) <= row_of(lv.superior_endplate_s - ep) + slack
    assert row_of(lv.inferior_endplate_s + ep) - slack <= np.median(bottom) <= row_of(lv.inferior_endplate_s) + slack
    # the lines span the body's AP depth, centred on it
    assert np.ptp(cols) * px > lv.depth_mm
    # the plane at the true mid-height; the slab's faces half its thickness from it, clear of the endplates
    plane_rows, _ = rows_of(OVERLAY_COLOURS["plane"])
    mid_s = 0.5 * (lv.superior_endplate_s + lv.inferior_endplate_s)
    assert np.median(plane_rows) == pytest.approx(row_of(mid_s), abs=0.5 * ds / px + 1)
    slab = _rows(doc, name)[0]["roi"]["slab_mm"]
    assert slab == pytest.approx(10.0)
    face_rows, _ = rows_of(OVERLAY_COLOURS["slab"])
    upper, lower = face_rows[face_rows < np.median(plane_rows)], face_rows[face_rows > np.median(plane_rows)]
    assert np.median(lower) - np.median(upper) == pytest.approx(slab / px, abs=1.0)
    assert row_of(lv.superior_endplate_s - ep) < np.median(upper) and np.median(lower) < row_of(lv.inferior_endplate_s + ep)


def test_a_level_with_placement_concerns_is_marked_with_its_reasons(clicked):
    volume, truth, doc = clicked
    doc = copy.deepcopy(doc)
    reason = "L3: low fit quality (0.42: the outline is asymmetric); the ROIs were shrunk to 88 %"
    doc["levels"]["L3"]["warnings"] = [reason]
    doc["levels"]["L3"]["auto"].update(roi_scale=0.88, conservative_fallback=True)
    html = build_html(build_diagnosis(doc), doc, volume=volume)
    figures = dict(re.findall(r"<figure class='level-figure[^']*' data-level='(L\d)'(.*?)</figure>", html, re.S))
    assert set(figures) == {lv.name for lv in truth.levels}
    marked = [lv for lv, body in figures.items() if "placement-check" in body]
    assert marked == ["L3"]
    assert re.search(r"<figure class='level-figure check' data-level='L3'", html)
    assert "outline is asymmetric" in figures["L3"] and "shrunk to 88 %" in figures["L3"]
    # the legend names everything drawn, in plain words
    legend = re.search(r"<div class='legend note'>(.*?)</div>", html, re.S).group(1)
    for what in ("body outline", "AP axis", "endplates", "measured plane", "slab"):
        assert what in legend


def test_the_level_holding_a_bone_island_is_framed_and_the_clean_ones_are_not():
    """The phantom puts a bone island in L3 only: the placement's own warning frames L3's pictures."""
    options = dict(calibration_phantom=False, table=False, aorta=False,
                   bone_islands=[{"level": "L3", "offset_mm": (6.0, 0.0, 0.0), "radius_mm": 4}])
    volume, truth = make_phantom(**options)
    points = {lv.name: lv.center_ras for lv in truth.levels}
    doc = build_document(measure_levels(volume, points, aorta=False), volume.describe())
    html = build_html(build_diagnosis(doc), doc, volume=volume)
    figures = dict(re.findall(r"<figure class='level-figure[^']*' data-level='(L\d)'(.*?)</figure>", html, re.S))
    assert "placement-check" in figures["L3"] and "denser than the rest" in figures["L3"]
    assert "placement-check" not in figures["L1"] and "placement-check" not in figures["L4"]


def test_a_bone_island_left_out_is_drawn_around_the_true_island(tmp_path):
    """A bone island (radius 3 mm, 1000 HU) put at the oval's centre on the measured plane: the axial
    picture draws the excluded circle (cyan) centred on the island's true centre and enclosing the true
    island; the legend names it. Oracle: the phantom's island, not the row's record of it."""
    options = dict(calibration_phantom=False, table=False, aorta=False)
    clean, truth = make_phantom(**options)
    lv = truth.level("L2")
    oval = next(r for r in measure_levels(clean, {"L2": lv.center_ras}, aorta=False)["rows"] if r["shape"] == "oval")
    island = np.array(oval["center_ras"])
    volume, truth = make_phantom(**options, bone_islands=[{"center_ras": island, "radius_mm": 3.0, "hu": 1000.0}])
    doc = build_document(measure_levels(volume, {"L2": lv.center_ras}, aorta=False), volume.describe())
    png, meta = render_level_image(volume, doc, "L2", _rows(doc, "L2"))
    img = decode_png(png, tmp_path)
    px = meta["pixel_mm"]
    col_dir, row_dir = _axial_frame()
    origin = meta["overlays"].axial.origin
    cyan = _pixels(img, OVERLAY_COLOURS["bone island left out"])
    assert len(cyan) > 20
    ras = origin + np.outer(cyan[:, 1] - MID, col_dir * px) + np.outer(cyan[:, 0] - MID, row_dir * px)
    on_plane = island - float((island - origin) @ lv.normal_ras) * lv.normal_ras
    radii = np.linalg.norm(ras - on_plane, axis=1)
    assert np.linalg.norm(ras.mean(axis=0) - on_plane) < px + volume.spacing[0]
    assert radii.min() >= 3.0 - px  # encloses the true island on the plane
    html = build_html(build_diagnosis(doc), doc, volume=volume)
    assert "bone island left out of the ROIs" in html
    clean_doc = build_document(measure_levels(clean, {"L2": lv.center_ras}, aorta=False), clean.describe())
    assert "bone island left out of the ROIs" not in build_html(build_diagnosis(clean_doc), clean_doc, volume=clean)
