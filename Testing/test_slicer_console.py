"""The README's recipes run as written: the Slicer Python console (the panel's logic from
``slicer.util.getModuleLogic``) and the headless script on the slicer-core wheel.

The code blocks are read from README.md (sections "In Slicer's Python console" and "Headless
scripts"), so the documentation cannot drift from the code. Oracle: the digital phantom's
trabecular HU per level.
"""
from __future__ import annotations

import os
import re

import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

from slicer_standin import StandIn, add_phantom_case, headless_scene, phantom_case  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

phantom = pytest.fixture(scope="module")(phantom_case)
headless = pytest.fixture(headless_scene)


def readme_blocks(heading: str):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = re.split(r"\n##+ ", text.split(f"### {heading}", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under '{heading}'"
    return blocks


def test_console_recipe_runs_as_written(monkeypatch, headless, phantom, tmp_path, capsys):
    standin = StandIn(monkeypatch, headless)
    module = standin.load_module()
    widget = standin.make_widget(module)
    monkeypatch.setattr(slicer.util, "getModuleLogic", lambda name: {"OsteoROI": widget.logic}[name])
    volumeNode, pointsNode = add_phantom_case(headless.scene, phantom)
    monkeypatch.chdir(tmp_path)
    namespace = {"slicer": slicer, "volumeNode": volumeNode, "pointsNode": pointsNode}
    for block in readme_blocks("In Slicer's Python console"):
        exec(compile(block, "README.md", "exec"), namespace)
    truth = {lv.name: lv.trabecular_hu for lv in phantom[1].levels}
    rows = namespace["rows"]
    assert len(rows) == 4 * 5 and all(abs(r["mean_hu"] - truth[r["level"]]) < 10 for r in rows)
    assert namespace["diagnosis"]["lead"]["criterion_id"] == "seed002-hu"
    assert {"r.json", "r.csv", "r.html", "signed.html"} <= set(os.listdir(tmp_path))
    signed = (tmp_path / "signed.html").read_text(encoding="utf-8")
    assert "Compare with the DXA of March." in signed and "1 February 2024" in signed
    assert "R²" in capsys.readouterr().out


def test_headless_script_runs_as_written(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in readme_blocks("Headless scripts (no Slicer)"):
        exec(compile(block, "README.md", "exec"), namespace)
    try:
        lines = capsys.readouterr().out.split("\n")
        assert sum(1 for line in lines if line.startswith("L")) == 8
        assert os.path.getsize(tmp_path / "case.mrb") > 0
    finally:
        namespace["headless"].close()
