"""The per-level sagittal image: endplates where the digital phantom puts them, anterior on the left, the ROI plane
at mid-height, and the trabecular grey value of the truth HU.

Oracles: the phantom's configured endplate heights, body centre and trabecular HU; SimpleITK decodes the PNG.
"""
from __future__ import annotations

import numpy as np
import pytest

from OsteoROILib.export.images import IMAGE_PX, WINDOW_LEVEL, WINDOW_WIDTH
from OsteoROILib.export.sagittal import PLANE_COLOUR, render_sagittal_image
from OsteoROILib.export.style import SHAPE_COLOURS

from test_export_report import decode_png, measured


@pytest.fixture(scope="module")
def phantom():
    return measured()


def _pixels(img, colour):
    return np.argwhere(np.all(img == np.array(colour, dtype=np.uint8), axis=2))


@pytest.mark.parametrize("index", [0, 2])
def test_sagittal_shows_endplates_plane_and_anterior_left(phantom, tmp_path, index):
    volume, truth, doc = phantom
    lv = truth.levels[index]
    rows = [r for r in doc["rows"] if r["level"] == lv.name]
    png, meta = render_sagittal_image(volume, doc, lv.name, rows)
    img = decode_png(png, tmp_path)
    assert img.shape == (IMAGE_PX, IMAGE_PX, 3)
    px, mid = meta["pixel_mm"], (IMAGE_PX - 1) / 2.0
    centre_s = meta["centre_ras"][2]
    # the ROI plane: a yellow line on the row of the ROIs' height
    roi_s = np.mean([r["roi"]["center_ras"][2] for r in rows])
    yellow = _pixels(img, PLANE_COLOUR)
    assert np.ptp(yellow[:, 1]) * px > lv.depth_mm  # across the body
    assert np.median(yellow[:, 0]) == pytest.approx(mid - (roi_s - centre_s) / px, abs=1.0)
    # the plane lies between the endplates, near mid-height
    assert lv.inferior_endplate_s < roi_s < lv.superior_endplate_s
    # the endplates: the brightest rows above and below the centre, at the truth's heights
    col = int(round(mid + 3.0 / px))  # just posterior of the centre, clear of the oval's drawn segment
    grey = np.where(np.ptp(img[:, col, :].astype(int), axis=1) == 0, img[:, col, 0], 0).astype(float)  # the CT, not the lines
    sup_row = mid - (lv.superior_endplate_s - centre_s) / px
    inf_row = mid - (lv.inferior_endplate_s - centre_s) / px
    reach = int(0.75 * lv.height_mm / px)  # within the body's own height: the next vertebra's endplates stay out
    top = int(mid) - reach + int(np.argmax(grey[int(mid) - reach: int(mid) - 5]))
    bottom = int(mid) + 5 + int(np.argmax(grey[int(mid) + 5: int(mid) + reach]))
    assert top == pytest.approx(sup_row, abs=2.5 + lv.endplate_mm / px)
    assert bottom == pytest.approx(inf_row, abs=2.5 + lv.endplate_mm / px)
    # the oval (anterior two thirds) is drawn left of the body centre: anterior on the left
    oval = _pixels(img, SHAPE_COLOURS["oval"])
    assert len(oval) > 10 and oval[:, 1].mean() < mid - 2
    # trabecular bone between plane and endplate has the window mapping of the truth HU
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    expect = (lv.trabecular_hu - lo) / WINDOW_WIDTH * 255
    r0 = int(round((mid + sup_row) / 2)) + 1
    assert abs(float(img[r0, col, 0]) - expect) <= 2.0
