"""``osteoroi report`` on the console and in batch: the vBMD table and the impression printed, the sign-off
options in the report, exit code 2 for wrong usage, and the cohort table (one row per exam).

Oracles: hand-made result documents whose categories follow by hand from the published cut-offs
(QCT 80/120 mg/cm³, seed-002 oval ≤ 91.63 HU, Pickhardt L1 > 200 HU; QCT_BRIEF §2-3) and the least
significant change 2.77 × 3 % (QCT_BRIEF §5).
"""
from __future__ import annotations

import csv
import json

import pytest

from OsteoROILib import cli

from test_cli import phantom_files, point_args  # noqa: F401 - the digital phantom CT and its points (a fixture)
from test_export_impression import make_doc

AGE_SEX = {"patient_age": "070Y", "patient_sex": "F", "patient_id": "P-7", "study_date": "20250102"}


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exams(tmp_path_factory):
    """Three exams: disagreeing (QCT 100 low bone mass, oval 82.5 HU osteoporosis, L1 210 HU normal),
    borderline (QCT 86, 6 from the 80 cut-off ≤ 6.648), and uncalibrated (HU only, oval 80 HU)."""
    folder = tmp_path_factory.mktemp("cohort")
    docs = {
        "disagree": make_doc(vbmd={"L1": 100.0, "L2": 100.0, "L3": 100.0, "L4": 100.0},
                             hu={"L1": 210.0, "L2": 40.0, "L3": 40.0, "L4": 40.0}, dicom=AGE_SEX),
        "borderline": make_doc(vbmd={"L1": 86.0, "L2": 86.0}, hu={"L1": 150.0, "L2": 150.0}, vbmd_sd=0.0,
                               dicom=dict(AGE_SEX, patient_id="P-8")),
        "hu_only": make_doc(hu={"L1": 80.0, "L2": 80.0, "L3": 80.0, "L4": 80.0}, dicom=dict(AGE_SEX, patient_id="P-9")),
    }
    paths = {}
    for name, doc in docs.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    return paths


def test_report_prints_the_vbmd_table_and_the_impression(exams, capsys, tmp_path):
    html = tmp_path / "r.html"
    code, out, err = run(["report", exams["disagree"], "--html", html, "--reader", "Dr. Q. Reader",
                          "--signed-date", "2025-01-03", "--comment", "Suggest DXA of the hip."], capsys)
    assert code == 0, err
    lines = out.splitlines()
    i = lines.index("vBMD per ROI (mg/cm3 K2HPO4):")
    assert lines[i + 2].split() == ["L1", "100.0"] and lines[i + 5].split() == ["L4", "100.0"]
    j = lines.index("Impression:")
    assert lines[j + 1].strip().startswith("QCT vBMD") and "low bone mass (osteopenia)." in lines[j + 1]
    assert any(ln.strip().startswith("Disagreeing:") and "Pickhardt" in ln for ln in lines[j:])
    assert "  Signed: Dr. Q. Reader, 3 January 2025" in lines
    assert "seed 002" not in out and "QCT_BRIEF" not in out
    text = html.read_text()
    assert "Dr. Q. Reader" in text and "Suggest DXA of the hip." in text and "P-7" in text


def test_report_of_an_uncalibrated_result_prints_no_vbmd_table(exams, capsys):
    code, out, err = run(["report", exams["hu_only"], "--criteria", "seed002"], capsys)
    assert code == 0, err
    assert "vBMD per ROI" not in out and "Impression:" in out
    assert "L1-L4 HU (Wang et al.) (HU of L1, L2, L3, L4, oval ROI) 80.0 HU: osteoporosis." in out


def test_cohort_table_has_one_row_per_exam(exams, capsys, tmp_path):
    table = tmp_path / "cohort.csv"
    code, out, err = run(["report", exams["disagree"], exams["borderline"], exams["hu_only"], "--cohort-csv", table],
                         capsys)
    assert code == 0, err
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [r["patient_id"] for r in rows] == ["P-7", "P-8", "P-9"]
    d, b, h = rows
    assert (d["lead_criterion"], d["value"], d["category"], d["borderline"]) == \
        ("qct-acr2018", "100.0", "low bone mass (osteopenia)", "no")
    assert set(d["disagreeing"].split(" | ")) == {"seed002-hu:oval", "pickhardt2013-l1:oval"}
    assert (b["value"], b["category"], b["borderline"], b["borderline_cutoff"]) == \
        ("86.0", "low bone mass (osteopenia)", "yes", "80.0")
    # without vBMD the HU criteria lead: seed 002 oval mean 80 ≤ 91.63
    assert (h["lead_criterion"], h["quantity"], h["category"]) == ("seed002-hu", "hu", "osteoporosis")
    assert [h[f"{lv}_value"] for lv in ("L1", "L2", "L3", "L4")] == ["80.0"] * 4
    assert d["study_date"] == "20250102" and d["age_years"] == "70.0" and d["sex"] == "F"
    assert f"wrote {table} (3 exams)" in out


@pytest.mark.parametrize("extra", [["--age", "70"], ["--html", "x.html"], ["--prior", "p.json"], []])
def test_several_results_with_per_exam_options_are_wrong_usage(exams, capsys, tmp_path, extra):
    argv = ["report", exams["disagree"], exams["borderline"]] + extra
    if extra:
        argv += ["--cohort-csv", tmp_path / "c.csv"]
    code, out, err = run(argv, capsys)
    assert code == 2 and "osteoroi report: error:" in err
    assert ("--cohort-csv" in err) and not (tmp_path / "c.csv").exists()


def test_unknown_option_is_wrong_usage(exams, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", str(exams["disagree"]), "--no-such-option"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_measure_prints_the_vbmd_table_and_with_report_the_impression(phantom_files, capsys, tmp_path):  # noqa: F811
    cal = tmp_path / "cal.json"
    code, _, err = run(["calibrate", "--manual", "--slope", "1.25", "--intercept", "-10", "--unit", "HA", "--out", cal],
                       capsys)
    assert code == 0, err
    code, out, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]), "--shapes", "oval",
                          "--calibration", cal, "--report", tmp_path / "r.html"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    i = lines.index("vBMD per ROI (mg/cm3 HA):")
    for k, lv in enumerate(phantom_files["truth"].levels):
        name, value = lines[i + 2 + k].split()
        # vBMD = (HU - intercept) / slope of the phantom's configured trabecular HU
        assert name == lv.name and float(value) == pytest.approx((lv.trabecular_hu + 10.0) / 1.25, abs=1.0)
    assert "Impression:" in out and lines[lines.index("Impression:") + 1].strip().startswith("QCT vBMD")
    code, out, err = run(["measure", phantom_files["ct"], *point_args(phantom_files["points"]), "--shapes", "oval"],
                         capsys)
    assert code == 0 and "vBMD per ROI" not in out and "Impression:" not in out
