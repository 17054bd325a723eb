"""The report's level pictures on a real CT (../shared/data/tptbox_sample: a 1.5 mm crop of L2–L4 with
vertebra and subregion labels made by someone else; body = subregion 50). Skipped without the data.

Oracles: the labels (the body's superior and inferior extent at its centre, along the body's axis) and
the crop itself (L2 and L4 are cut by it, L3 is whole: the README and the label maps).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.export.html_report import build_html
from OsteoROILib.export.images import IMAGE_PX, OVERLAY_COLOURS
from OsteoROILib.export.measurement import build_document
from OsteoROILib.export.sagittal import render_sagittal_image
from OsteoROILib.placement.measure import measure_levels

from conftest import read_tptbox
from test_export_report import decode_png

VERTEBRA_LABELS = {"L2": 21, "L3": 22, "L4": 23}  # TPTBox numbering (its README)
BODY_SUBREGION = 50


@pytest.fixture(scope="module")
def real():
    volume, vert, sub = read_tptbox()
    bodies = {lv: (vert == value) & (sub == BODY_SUBREGION) for lv, value in VERTEBRA_LABELS.items()}
    # a click at each body label's centre; L2 lies mostly outside the crop: placed by force, as a user would
    points = {lv: volume.ijk_to_ras_points(np.argwhere(b).mean(axis=0)[::-1])[0] for lv, b in bodies.items()}
    doc = build_document(measure_levels(volume, points, aorta=False, force=True), volume.describe())
    return volume, bodies, doc


def test_sagittal_endplate_lines_at_the_labelled_body_extent(real, tmp_path):
    """L3 (whole in the crop): the drawn endplate lines lie at the body label's superior and inferior
    extent at its centre, within a voxel and a half (the label's and the CT's voxels) and a pixel."""
    volume, bodies, doc = real
    rows = [r for r in doc["rows"] if r["level"] == "L3"]
    png, meta = render_sagittal_image(volume, doc, "L3", rows)
    img = decode_png(png, tmp_path)
    ov, px = meta["overlays"], meta["pixel_mm"]
    body = volume.ijk_to_ras_points(np.argwhere(bodies["L3"])[:, ::-1].astype(float))
    s = (body - ov.sagittal.origin) @ ov.normal
    core = np.linalg.norm(body - ov.sagittal.origin - np.outer(s, ov.normal), axis=1) < 5.0  # near the centre
    half_voxel = 0.5 * volume.slice_spacing()
    top, bottom = s[core].max() + half_voxel, s[core].min() - half_voxel  # the label's outer faces
    rows_px = np.argwhere(np.all(img == np.array(OVERLAY_COLOURS["endplates"], dtype=np.uint8), axis=2))[:, 0]
    mid = (IMAGE_PX - 1) / 2.0
    drawn_top = (mid - np.median(rows_px[rows_px < mid])) * px  # mm above the centre (superior up)
    drawn_bottom = (mid - np.median(rows_px[rows_px > mid])) * px
    tolerance = 1.5 * volume.slice_spacing() + px
    assert drawn_top == pytest.approx(top, abs=tolerance)
    assert drawn_bottom == pytest.approx(bottom, abs=tolerance)


def test_the_levels_cut_by_the_crop_are_framed_with_their_reasons(real):
    volume, bodies, doc = real
    html = build_html(build_diagnosis(doc), doc, volume=volume)
    figures = dict(re.findall(r"<figure class='level-figure[^']*' data-level='(L\d)'(.*?)</figure>", html, re.S))
    for level in ("L2", "L4"):
        assert "placement-check" in figures[level] and "partly outside the image" in figures[level], level
