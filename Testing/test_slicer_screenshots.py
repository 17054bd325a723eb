"""The extension's screenshots are rendered by ``render_screenshots.py`` with the module's own
offscreen slice view; the committed ones are what it draws (same size, ROI and rod colours)."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
vtk = pytest.importorskip("vtk")

from render_screenshots import SCREENSHOTS, render  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_png(path):
    from vtk.util.numpy_support import vtk_to_numpy

    reader = vtk.vtkPNGReader()
    reader.SetFileName(path)
    reader.Update()
    image = reader.GetOutput()
    w, h, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]


def test_screenshots_render_and_match_the_committed_ones(tmp_path):
    paths = render(str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [name for name, _ in SCREENSHOTS]
    for path in paths:
        fresh = _read_png(path)
        committed = _read_png(os.path.join(ROOT, "Resources", "Screenshots", os.path.basename(path)))
        assert fresh.shape == committed.shape
        # Not blank: grey CT plus coloured markups (a channel differs from the others somewhere).
        assert fresh.std() > 10 and np.any(np.ptp(fresh.astype(int), axis=2) > 60)
        # Same picture up to rendering details (antialiasing of markups glyphs).
        assert np.mean(np.abs(fresh.astype(int) - committed.astype(int)) > 40) < 0.02
