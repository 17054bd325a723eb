"""Render the extension's screenshots (Resources/Screenshots/) offscreen, on the digital phantom.

    .venv/bin/python Testing/render_screenshots.py [output folder]

Uses the module's own MRML logic and slice-view rendering (``OsteoROILib.mrml.offscreen_view``:
Slicer's slice logic and markups displayable manager on the slicer-core wheel), so the pictures
show what the module places in Slicer: the five ROI types at L1 and the calibration rods.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "OsteoROI"))

from OsteoROILib.digital_phantom import make_phantom  # noqa: E402
from OsteoROILib.mrml.logic import OsteoROIMRMLLogic  # noqa: E402
from OsteoROILib.mrml.offscreen_view import OffscreenSliceView  # noqa: E402
from OsteoROILib.mrml.scene import add_volume_from_array, new_scene  # noqa: E402

#: (file name, what it shows) of each screenshot, in the order the extension metadata lists them.
SCREENSHOTS = (
    ("OsteoROI-1.png", "L1 of the digital phantom with the five ROI types (oval, round, front, left, right)"),
    ("OsteoROI-2.png", "the calibration rods found automatically under the spine"),
)


def render(folder: str, size=(640, 640)) -> list:
    """Write the screenshots into ``folder``; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    headless = new_scene()
    volume, truth = make_phantom(noise_sigma=10.0, seed=1)
    volumeNode = add_volume_from_array(headless.scene, volume.array, volume.ijk_to_ras, "OsteoROI phantom")
    points = headless.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Levels")
    for level in truth.levels:
        points.AddControlPoint(*[float(x) for x in level.center_ras], level.name)
    logic = OsteoROIMRMLLogic(headless.scene)
    rods = logic.autoDetectRods("qrm-bdc-6", volumeNode=volumeNode)
    logic.run(volumeNode, points, criteria="qct-acr2018")
    view = OffscreenSliceView(headless, size=size)
    paths = []
    try:
        l1 = truth.levels[0]
        view.show_volume(volumeNode, center_ras=l1.center_ras, field_of_view_mm=90.0)
        paths.append(os.path.join(folder, SCREENSHOTS[0][0]))
        view.save_png(paths[-1])
        p = [0.0, 0.0, 0.0]
        rods.GetNthControlPointPositionWorld(0, p)
        view.show_volume(volumeNode, center_ras=[0.0, p[1] + 20.0, p[2]], field_of_view_mm=260.0)
        paths.append(os.path.join(folder, SCREENSHOTS[1][0]))
        view.save_png(paths[-1])
    finally:
        view.close()
        headless.close()
    return paths


if __name__ == "__main__":
    for path in render(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Resources", "Screenshots")):
        print(path)
