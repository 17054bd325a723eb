"""The report as PDF, read back with pypdf (another library): page size, the same content as the HTML
(impression, every header field, sign-off, method), no internal strings, and no near-empty page.

Printed by headless Chromium (``Testing/run_tests.sh`` installs Debian's); skips with a reason when
it is absent.
"""
from __future__ import annotations

import re
import shutil

import pytest

from OsteoROILib.diagnosis.verdict import build_diagnosis
from OsteoROILib.errors import OsteoROIError
from OsteoROILib.export.front_page import HEADER_FIELDS
from OsteoROILib.export.html_report import write_report
from OsteoROILib.export.impression import SignOff, build_impression
from OsteoROILib.export.pdf import with_page_size
from OsteoROILib.export.wording import INTERNAL_MARKERS

from test_export_report import _calibrated, measured

pypdf = pytest.importorskip("pypdf", reason="pypdf reads the PDF back (test extras: pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium/Chrome to print the PDF; run Testing/run_tests.sh "
                                                         "as root or apt-get install chromium")
#: Page sizes in PostScript points (ISO 216 A4 210 × 297 mm; US Letter 8.5 × 11 in).
A4_PT = (595.28, 841.89)
LETTER_PT = (612.0, 792.0)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pdf")
    volume, truth, doc = measured()
    doc = _calibrated(doc)
    doc["volume"]["dicom"] = {"patient_name": "DOE^JANE", "patient_id": "PID-0042", "study_date": "20240131",
                              "manufacturer": "ACME", "model": "Scan 64", "kvp": 120.0, "convolution_kernel": "B30f",
                              "slice_thickness_mm": 1.25, "contrast_agent": "NONE"}
    dx = build_diagnosis(doc, exclusions=["L3=fracture:1"], patient={"age": 66, "sex": "M"})
    sign = SignOff(reader="Dr. P. Reader", date="2024-02-01", comment="No change of management.")
    out = {}
    for size in ("A4", "Letter"):
        html, pdf = folder / f"{size}.html", folder / f"{size}.pdf"
        write_report(dx, doc, str(html), volume=volume, pdf_path=str(pdf), page_size=size, sign_off=sign)
        out[size] = pypdf.PdfReader(str(pdf))
    return {"pdf": out, "dx": dx, "sign": sign, "html": (folder / "A4.html").read_text(encoding="utf-8")}


@pytest.mark.parametrize("size, expect", [("A4", A4_PT), ("Letter", LETTER_PT)])
def test_pdf_page_size(printed, size, expect):
    reader = printed["pdf"][size]
    assert 1 <= len(reader.pages) <= 4
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(expect[0], abs=1.5)
        assert float(page.mediabox.height) == pytest.approx(expect[1], abs=1.5)


def test_pdf_has_the_report_content(printed):
    text = squash(" ".join(p.extract_text() for p in printed["pdf"]["A4"].pages))
    imp = build_impression(printed["dx"], printed["sign"])
    assert squash(imp["statement"]) in text
    for label, _ in HEADER_FIELDS:
        assert label in text, label
    for value in ("DOE, JANE", "PID-0042", "31 January 2024", "ACME Scan 64", "B30f", "Dr. P. Reader", "1 February 2024",
                  "No change of management.", "Method and references", "Per-level values", "Calibration"):
        assert value in text, value
    for marker in INTERNAL_MARKERS:
        assert marker.lower() not in text.lower()


def content_depth(page) -> float:
    """How far down the page its lowest line of text reaches (0 top, 1 bottom), from the text positions."""
    ys = []

    def visit(text, cm, tm, font, size):
        if text.strip():  # user-space y of the text origin: the text matrix times the current matrix
            ys.append(tm[4] * cm[1] + tm[5] * cm[3] + cm[5])

    page.extract_text(visitor_text=visit)
    return 1.0 - min(ys) / float(page.mediabox.height) if ys else 0.0


def test_pdf_has_no_near_empty_page(printed):
    for size, reader in printed["pdf"].items():
        depths = [content_depth(p) for p in reader.pages]
        # a near-empty page ends in its top third (a few lines carried over)
        assert min(depths) > 0.35, (size, depths)


def test_pdf_refuses_an_unknown_page_size_and_a_missing_browser(printed, tmp_path):
    with pytest.raises(OsteoROIError):
        with_page_size(printed["html"], "A5")
    dx = printed["dx"]
    with pytest.raises(OsteoROIError) as exc:
        write_report(dx, {"rows": [], "volume": {}}, str(tmp_path / "r.html"), pdf_path=str(tmp_path / "r.pdf"),
                     browser="/nonexistent/chromium")
    assert "--browser" in exc.value.remedy
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.pdf").exists()
