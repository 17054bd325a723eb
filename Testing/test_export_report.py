"""HTML/CSV/JSON exports: PNG encoding, level images (orientation, ROI positions, grey values), HTML
content, atomic writes, and the ``osteoroi report`` command.

Oracles: SimpleITK's PNG decoder, the digital phantom's configured truth (trabecular HU, body
centre, axes), the radiological display convention, and hand-made documents.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from OsteoROILib import cli
from OsteoROILib.diagnosis.document import validate_diagnosis
from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.errors import OsteoROIError
from OsteoROILib.placement.measure import measure_levels
from OsteoROILib.digital_phantom import make_phantom
from OsteoROILib.export.html_report import build_html, write_report
from OsteoROILib.export.images import IMAGE_PX, WINDOW_LEVEL, WINDOW_WIDTH, png_bytes, render_level_image
from OsteoROILib.export.measurement import build_document
from OsteoROILib.export.style import SHAPE_COLOURS
from OsteoROILib.roi.family import SHAPE_NAMES
from OsteoROILib.io.image_files import write_volume


def read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def decode_png(data: bytes, tmp_path, name="x.png") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def measured(orientation="RAS", **options):
    """The digital phantom measured at its true points and outlines (no rods/table/aorta: faster)."""
    options = dict(dict(calibration_phantom=False, table=False, aorta=False), **options)
    volume, truth = make_phantom(orientation=orientation, **options)
    points = {lv.name: list(lv.center_ras) for lv in truth.levels}
    outlines = {lv.name: lv.outline() for lv in truth.levels}
    m = measure_levels(volume, points, shapes=SHAPE_NAMES, outlines=outlines)
    return volume, truth, build_document(m, volume.describe())


@pytest.fixture(scope="module")
def phantom_doc():
    return measured()


def test_png_encoder_roundtrip_through_simpleitk(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(rgb), tmp_path), rgb)
    grey = rng.integers(0, 256, size=(5, 9), dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(grey), tmp_path, "g.png"), grey)


def _colour_pixels(img, shape):
    return np.argwhere(np.all(img == np.array(SHAPE_COLOURS[shape], dtype=np.uint8), axis=2))


def test_level_image_orientation_rois_and_grey_values(phantom_doc, tmp_path):
    volume, truth, doc = phantom_doc
    lv = truth.levels[0]
    rows = [r for r in doc["rows"] if r["level"] == lv.name]
    png, meta = render_level_image(volume, doc, lv.name, rows)
    img = decode_png(png, tmp_path)
    n = IMAGE_PX
    assert img.shape == (n, n, 3) and meta["shapes"] == list(SHAPE_NAMES)
    px = meta["pixel_mm"]
    assert meta["fov_mm"] == pytest.approx(n * px)
    c = (n - 1) / 2.0
    centre = np.asarray(lv.center_ras)
    for shape in SHAPE_NAMES:
        assert len(_colour_pixels(img, shape)) > 20, shape
    # radiological view: the patient's left ROI on the screen's right, the right ROI on the left
    assert _colour_pixels(img, "left")[:, 1].mean() > c + 5
    assert _colour_pixels(img, "right")[:, 1].mean() < c - 5
    # anterior up: the oval (anterior two thirds) lies above the body centre, where the truth puts it
    oval = next(r["roi"] for r in rows if r["shape"] == "oval")
    d = np.asarray(oval["center_ras"]) - centre
    ant = float(d @ np.asarray(lv.ap_axis_ras))
    pts = _colour_pixels(img, "oval")
    assert ant > 0 and pts[:, 0].mean() == pytest.approx(c - ant / px, abs=1.5)
    assert pts[:, 1].mean() == pytest.approx(c, abs=1.5)
    # outline extent along AP equals the ellipse's half-size (within a pixel and the pen width);
    # drawn alone, since the other ROIs' outlines touch the oval's tips and overdraw them
    alone = decode_png(render_level_image(volume, doc, lv.name, [r for r in rows if r["shape"] == "oval"])[0],
                       tmp_path, "oval.png")
    pts = _colour_pixels(alone, "oval")
    assert (pts[:, 0].max() - pts[:, 0].min()) * px == pytest.approx(2 * oval["half_u_mm"], abs=3 * px)
    # grey value inside the trabecular bone = window mapping of the truth HU
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    expect = (lv.trabecular_hu - lo) / WINDOW_WIDTH * 255
    r0 = int(round(c - (ant + 0.35 * oval["half_u_mm"]) / px))
    c0 = int(round(c + 3.0 / px))  # beside the AP axis drawn through the centre
    assert abs(float(img[r0, c0, 0]) - expect) <= 1.0
    assert img[r0, c0, 0] == img[r0, c0, 1] == img[r0, c0, 2]


def test_level_image_independent_of_storage_orientation(phantom_doc, tmp_path):
    volume, truth, doc = phantom_doc
    v2, t2, doc2 = measured(orientation="LPS")
    lv = truth.levels[1].name
    a, _ = render_level_image(volume, doc, lv, [r for r in doc["rows"] if r["level"] == lv])
    b, _ = render_level_image(v2, doc2, lv, [r for r in doc2["rows"] if r["level"] == lv])
    ia, ib = decode_png(a, tmp_path, "a.png").astype(int), decode_png(b, tmp_path, "b.png").astype(int)
    assert np.mean(np.abs(ia - ib) > 2) < 0.01


def _earlier_exam(doc, hu_shift=8.0):
    """The same phantom as an earlier study: every ROI 8 HU higher (a prior that is not a copy)."""
    doc = json.loads(json.dumps(doc))
    for r in doc["rows"]:
        r["mean_hu"] += hu_shift
    return doc


def _calibrated(doc, slope=1.25, intercept=-10.0):
    doc = json.loads(json.dumps(doc))
    for r in doc["rows"]:
        r["vbmd_mg_cm3"] = (r["mean_hu"] - intercept) / slope
        r["vbmd_unit"] = "mg/cm3 HA"
    doc["calibration"] = {"method": "phantom", "unit": "HA", "vbmd_unit": "mg/cm3 HA", "slope_hu_per_mg_cm3": slope,
                          "intercept_hu": intercept, "fit": {"r2": 0.999}, "warnings": ["R² check: example"],
                          "points": [{"name": f"R{d}", "density": d, "mean_hu": intercept + slope * d}
                                     for d in (0, 100, 200, 400)]}
    return doc


def test_html_is_self_contained_with_one_image_per_level(phantom_doc):
    volume, truth, doc = phantom_doc
    cal = _calibrated(doc)
    dx = build_diagnosis(cal, exclusions=["L2=fracture:2"], patient={"age": 70, "sex": "F"}, prior=_earlier_exam(doc))
    text = build_html(dx, cal, volume=volume)
    imgs = re.findall(r"<img class='roi-image' data-level='(L\d)'[^>]*src='data:image/png;base64,([^']+)'", text)
    assert [lv for lv, _ in imgs] == [lv.name for lv in truth.levels]
    for _, b64 in imgs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing fetched from elsewhere
    assert not re.search(r"""(src|href)=['"](?!data:)""", text)
    assert "@media print" in text and "@page" in text
    # the table names every criterion, the excluded level keeps its row with the reason
    for title in ("QCT vBMD", "L1-L4 HU (Wang et al.)", "L1 HU (Pickhardt)"):
        assert title in text
    assert "fracture, Genant 2 (moderate)" in text and "class='excluded'" in text
    assert "Calibration: rod mean HU vs density" in text and "<circle" in text
    assert text.count("<svg") == 2 and "Follow-up" in text and "LSC = 2.77" in text
    assert "severe osteoporosis" not in text or dx["verdicts"][0]["bmd_class"] == "osteoporosis"


def test_report_without_a_readable_volume_says_so(phantom_doc):
    _, _, doc = phantom_doc
    doc = dict(doc, volume=dict(doc["volume"], file="/nonexistent/ct.nrrd"))
    dx = build_diagnosis(doc)
    text = build_html(dx, doc)
    assert "roi-image" not in text and "Level images skipped" in text and "--volume" in text


def test_write_report_all_outputs_atomic_and_refusing_overwrite(phantom_doc, tmp_path):
    volume, truth, doc = phantom_doc
    dx = build_diagnosis(doc, exclusions=["L3=artefact"], patient={"age": 70, "sex": "M"})
    out = {k: str(tmp_path / f"r.{k}") for k in ("html", "csv", "json", "tsv")}
    written = write_report(dx, doc, out["html"], volume=volume, csv_path=out["csv"], json_path=out["json"],
                           levels_csv_path=out["tsv"])
    assert sorted(written) == sorted(out.values())
    back = json.loads(read(out["json"]))
    validate_diagnosis(back)
    assert back["verdicts"] == json.loads(json.dumps(dx["verdicts"]))
    table = list(csv.DictReader(read(out["csv"]).splitlines()))
    assert [(r["criterion_id"], r["shape"]) for r in table] == [(v["criterion_id"], v["shape"]) for v in dx["verdicts"]]
    assert "nan" not in read(out["csv"]).lower()
    levels = list(csv.DictReader(read(out["tsv"]).splitlines(), delimiter="\t"))
    assert len(levels) == len(doc["rows"])
    assert {r["excluded"] for r in levels if r["level"] == "L3"} == {"yes"}
    # an existing file is not replaced, and nothing else is written either
    os.remove(out["csv"])
    before = read(out["html"])
    with pytest.raises(OsteoROIError):
        write_report(dx, doc, out["html"], volume=volume, csv_path=out["csv"])
    assert read(out["html"]) == before and not os.path.exists(out["csv"])
    with pytest.raises(OsteoROIError):
        write_report(dx, doc, out["html"], csv_path=out["html"], overwrite=True)


# --- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_files(tmp_path_factory, phantom_doc):
    volume, truth, doc = phantom_doc
    folder = tmp_path_factory.mktemp("rep")
    ct = str(folder / "ct.nrrd")
    write_volume(volume, ct)
    doc = dict(doc, volume=dict(doc["volume"], file=ct))
    path = folder / "result.json"
    path.write_text(json.dumps(doc))
    cal = folder / "cal.json"
    cal.write_text(json.dumps(_calibrated(doc)))
    prior = folder / "prior.json"
    prior.write_text(json.dumps(_earlier_exam(doc)))
    return {"folder": folder, "result": str(path), "cal": str(cal), "ct": ct, "truth": truth, "prior": str(prior)}


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_writes_everything(demo_files, capsys, tmp_path):
    html_path, csv_path, json_path = tmp_path / "r.html", tmp_path / "r.csv", tmp_path / "r.json"
    code, out, err = run(["report", demo_files["cal"], "--prior", demo_files["prior"], "--exclude", "L1=fracture:1:fragility",
                          "--age", "72", "--sex", "F", "--precision-pct", "2.5", "--html", html_path, "--csv", csv_path,
                          "--json", json_path, "--convert-material"], capsys)
    assert code == 0, err
    dx = json.loads(json_path.read_text())
    validate_diagnosis(dx)
    assert dx["followup"]["lsc_pct"] == pytest.approx(2.77 * 2.5)
    qct = dx["verdicts"][0]
    assert qct["criterion_id"] == "qct-acr2018" and qct["levels_used"] == ["L2", "L3"]
    # truth: L2 116, L3 96 mg/cm3 HA -> mean 106 HA; the QCT cut-offs are K2HPO4, so with --convert-material
    # x 0.8267 (Goodsitt 1992: 0.86 at 80 kVp, 0.81 at 140 kVp, linear; kVp unknown -> 120) = 87.6: low bone
    # mass, with a fragility fracture -> osteoporosis (fracture)
    dens = {lv.name: lv.trabecular_density for lv in demo_files["truth"].levels}
    ratio = 0.86 + (0.81 - 0.86) * (120 - 80) / (140 - 80)
    assert qct["value"] == pytest.approx((dens["L2"] + dens["L3"]) / 2 * ratio, abs=0.01)
    assert qct["material_conversion"]["from"] == "HA" and qct["material_conversion"]["to"] == "K2HPO4"
    assert qct["bmd_class"] == "low_bone_mass" and qct["category"] == "osteoporosis (fracture)"
    assert html_path.read_text().count("class='roi-image'") == 4
    assert "osteoporosis (fracture)" in out and f"wrote {html_path}" in out
    assert "Calibration: R² check: example" in err


def test_cli_report_bad_inputs_write_nothing(demo_files, capsys, tmp_path):
    html_path = tmp_path / "r.html"
    cases = [
        ["report", tmp_path / "missing.json", "--html", html_path],
        ["report", demo_files["result"], "--exclude", "L2=fracture", "--html", html_path],
        ["report", demo_files["result"], "--criteria", "nonsense", "--html", html_path],
        ["report", demo_files["result"], "--sex", "Q", "--html", html_path],
        ["report", demo_files["result"], "--precision-pct", "0", "--prior", demo_files["result"], "--html", html_path],
        ["report", demo_files["result"], "--volume", tmp_path / "nope.nrrd", "--html", html_path],
        ["report", demo_files["ct"], "--html", html_path],
    ]
    for argv in cases:
        code, out, err = run(argv, capsys)
        assert code == 1, argv
        assert "osteoroi: error:" in err and len(err.strip()) > 40, err
        assert not html_path.exists()
    html_path.write_text("keep")
    code, out, err = run(["report", demo_files["result"], "--html", html_path], capsys)
    assert code == 1 and "--overwrite" in err and html_path.read_text() == "keep"
    code, out, err = run(["report", demo_files["result"], "--html", html_path, "--overwrite"], capsys)
    assert code == 0 and html_path.read_text() != "keep"
