"""The HTML report in a real browser: headless Chromium renders it; the screenshot must show the
diagnosis table and one non-blank CT image with coloured ROI outlines per measured level.

Layout comes from the browser itself: a copy of the report with a small script appended at the
end (so nothing above it moves) is loaded with ``--dump-dom``; the script writes the bounding
boxes of the table and of every ``img.roi-image``. The original report is then screenshot at the
same window width and the pixels inside those boxes are checked. Skips when Debian's
``chromium`` is not installed (``Testing/run_tests.sh`` installs it).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.export.html_report import write_report
from OsteoROILib.export.style import SHAPE_COLOURS

from test_export_report import _calibrated, measured

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
WIDTH = 1200

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium (/usr/bin/chromium) is not installed; "
                                                         "run Testing/run_tests.sh as root or apt-get install chromium")

LAYOUT_SCRIPT = """<pre id="osteoroi-layout"></pre><script>
(function () {
  function box(e) { var r = e.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, w: r.width, h: r.height}; }
  var out = {images: [], table: null, height: document.documentElement.scrollHeight};
  document.querySelectorAll('img.roi-image').forEach(function (e) {
    var b = box(e); b.level = e.getAttribute('data-level'); b.complete = e.complete && e.naturalWidth > 0;
    out.images.push(b); });
  var t = document.querySelector('table.diagnosis'); if (t) { out.table = box(t); }
  document.getElementById('osteoroi-layout').textContent = JSON.stringify(out);
})();
</script>"""


def chromium(args, timeout=90):
    profile = tempfile.mkdtemp(prefix="osteoroi-chromium-")
    try:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={profile}"] + args
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    volume, truth, doc = measured()
    doc = _calibrated(doc)
    dx = build_diagnosis(doc, exclusions=["L3=fracture:1"], patient={"age": 66, "sex": "M"})
    html_path = folder / "report.html"
    write_report(dx, doc, str(html_path), volume=volume)
    text = html_path.read_text(encoding="utf-8")
    probe = folder / "probe.html"
    probe.write_text(text.replace("</body>", LAYOUT_SCRIPT + "</body>"), encoding="utf-8")
    res = chromium(["--dump-dom", f"--window-size={WIDTH},2400", probe.as_uri()])
    m = re.search(r'<pre id="osteoroi-layout">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium did not return the layout: {res.stderr[-2000:]}"
    layout = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    height = int(max(2400, min(8000, layout["height"] + 10)))
    shot = folder / "shot.png"
    res = chromium([f"--screenshot={shot}", f"--window-size={WIDTH},{height}", html_path.as_uri()])
    assert shot.exists(), f"chromium wrote no screenshot: {res.stderr[-2000:]}"
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(shot)))[..., :3]
    return {"text": text, "layout": layout, "pixels": pixels, "truth": truth, "shot": shot}


def _crop(pixels, b, inset=3):
    x0, y0 = int(b["x"]) + inset, int(b["y"]) + inset
    x1, y1 = int(b["x"] + b["w"]) - inset, int(b["y"] + b["h"]) - inset
    assert x1 > x0 and y1 > y0 and y1 <= pixels.shape[0] and x1 <= pixels.shape[1], (b, pixels.shape)
    return pixels[y0:y1, x0:x1].astype(int)


def test_screenshot_shows_one_non_blank_image_per_level(rendered):
    layout, pixels = rendered["layout"], rendered["pixels"]
    levels = [lv.name for lv in rendered["truth"].levels]
    assert rendered["text"].count("class='roi-image'") == len(levels)
    assert [b["level"] for b in layout["images"]] == levels
    for b in layout["images"]:
        assert b["complete"], f"{b['level']}: the embedded PNG did not decode in the browser"
        assert b["w"] >= 150 and abs(b["w"] - b["h"]) <= 2, b
        crop = _crop(pixels, b)
        grey = crop.mean(axis=2)
        assert grey.std() > 25, f"{b['level']}: image region is blank"
        assert (grey < 120).mean() > 0.3 and (grey > 200).mean() > 0.005  # soft tissue grey, cortex white
        # the ROI outlines are visible in colour (oval red, left green)
        for shape in ("oval", "left"):
            r, g, bl = SHAPE_COLOURS[shape]
            near = np.all(np.abs(crop - np.array([r, g, bl])) < 45, axis=2)
            assert near.sum() > 15, f"{b['level']}: no {shape} outline pixels"
    # images do not overlap and stay within the page width
    xs = sorted((b["x"], b["x"] + b["w"]) for b in layout["images"])
    assert all(a[1] <= c[0] for a, c in zip(xs, xs[1:])) and xs[-1][1] <= WIDTH


def test_screenshot_shows_the_diagnosis_table(rendered):
    layout, pixels = rendered["layout"], rendered["pixels"]
    assert layout["table"] is not None
    crop = _crop(pixels, layout["table"], inset=1)
    grey = crop.mean(axis=2)
    assert (grey < 100).mean() > 0.01  # text
    assert (grey > 230).mean() > 0.3   # a readable, mostly light table
    # the category cells are tinted (osteoporosis / low bone mass bands)
    tinted = (np.abs(crop[..., 0] - crop[..., 2]) > 25).mean()
    assert tinted > 0.005
    assert layout["table"]["y"] < layout["images"][0]["y"]  # the table comes before the images
