"""The case's report in the forms a radiologist sends: signed, printed to PDF, and as DICOM SR + Encapsulated PDF.

The reader's free-text comment and sign-off (reader, date) are an ``export.impression.SignOff``;
they go into the impression of every form. The PDF is the HTML report printed by a
Chromium-family browser (``export.pdf``), on PATH or in its default install folder (Microsoft Edge
on Windows, Chrome on macOS: ``export.browser_locations``): Slicer bundles none, so when none is
found the error says so and points to the HTML report. The DICOM objects (``export.dicom_sr``) reference the
source CT slices, which in Slicer are the files of the volume's DICOM instances
(``mrml.patient.dicom_source_files``); a volume not loaded from the DICOM database has none, and
the error says why no SR is written. highdicom is an optional extra that Slicer does not bundle:
:func:`ensure_sr_packages` installs it after the user agrees.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from typing import Callable, List, Optional

from ..errors import OsteoROIError, OutputError
from ..export.browser_locations import installed_browser
from ..export.dicom_sr import missing_sr_packages, write_dicom_exports
from ..export.html_report import write_report
from ..export.impression import SignOff
from ..export.pdf import find_browser
from ..io.outputs import check_output_paths
from .case import case_diagnosis
from .patient import dicom_source_files

__all__ = ["sign_off", "pdf_browser", "encapsulated_pdf_path", "ensure_sr_packages", "export_case_pdf",
           "export_case_dicom"]

NO_BROWSER = "No browser that prints to PDF was found (Chromium, Google Chrome or Microsoft Edge)."
NO_BROWSER_REMEDY = ("Click 'HTML report' and print the report to PDF from any browser, or install Chromium or "
                     "Google Chrome and click 'PDF report' again.")


def sign_off(reader: str = "", date: str = "", comment: str = "") -> SignOff:
    """The reader's sign-off and comment as the panel holds them (empty fields: an empty sign-off block)."""
    return SignOff(reader=reader or "", date=date or "", comment=comment or "")


def pdf_browser(browser: Optional[str] = None) -> Optional[str]:
    """The browser the PDF would be printed with (``browser``, else one on PATH, else one in its
    default install folder: ``export.browser_locations``), or None when none is found."""
    try:
        return find_browser(browser)
    except OsteoROIError:
        return None if browser else installed_browser()


def _require_browser(browser: Optional[str]) -> str:
    path = pdf_browser(browser)
    if path is None:
        raise OutputError(NO_BROWSER, NO_BROWSER_REMEDY)
    return path


def encapsulated_pdf_path(srPath: str) -> str:
    """Where the Encapsulated PDF goes beside the SR: ``report.dcm`` -> ``report-pdf.dcm``."""
    stem, ext = os.path.splitext(srPath)
    return f"{stem}-pdf{ext or '.dcm'}"


def ensure_sr_packages(ask: Callable[[str], bool], install: Callable[[str], None]) -> bool:
    """True when the DICOM export's packages are importable; missing ones are installed with
    ``install(requirements)`` (Slicer: ``slicer.util.pip_install``) only if ``ask(question)`` agrees."""
    missing = missing_sr_packages()
    if not missing:
        return True
    if not ask(f"The DICOM export needs the Python package(s) {', '.join(missing)}, which are not installed. "
               "Install them now (pip, needs the internet)?"):
        return False
    install(" ".join(missing))
    importlib.invalidate_caches()  # the new package is found by this session
    return not missing_sr_packages()


def export_case_pdf(mrmlLogic, pdfPath: str, *, patient=None, prior=None, priorName: str = "",
                    signOff: Optional[SignOff] = None, overwrite: bool = False,
                    browser: Optional[str] = None) -> List[str]:
    """Print the case's report (with the sign-off) to ``pdfPath``; refuses before writing without a browser."""
    exe = _require_browser(browser)
    diagnosis = case_diagnosis(mrmlLogic, patient=patient, prior=prior, priorName=priorName)
    return write_report(diagnosis, mrmlLogic.document(), volume=mrmlLogic.volume(), pdf_path=pdfPath,
                        sign_off=signOff, browser=exe, overwrite=overwrite)


def _source_files(mrmlLogic, database) -> List[str]:
    volumeNode = mrmlLogic.volumeNode()
    files = dicom_source_files(volumeNode, database)
    if not files:
        name = volumeNode.GetName() if volumeNode is not None else "the CT"
        raise OutputError(f"No DICOM SR written: the CT {name} was not loaded from Slicer's DICOM database, so there "
                          "are no source images for the SR to reference.",
                          "Load the CT series with the DICOM module (Add DICOM data, then Load), measure it, and "
                          "click 'DICOM SR + PDF' again; the HTML and PDF reports need no DICOM.")
    return files


def export_case_dicom(mrmlLogic, srPath: str, *, pdfDicomPath: Optional[str] = None, patient=None, prior=None,
                      priorName: str = "", signOff: Optional[SignOff] = None, overwrite: bool = False,
                      database=None, browser: Optional[str] = None,
                      ask: Optional[Callable[[str], bool]] = None,
                      install: Optional[Callable[[str], None]] = None) -> List[str]:
    """Write the case's DICOM SR (TID 1500) and, with ``pdfDicomPath``, the report PDF as Encapsulated PDF,
    both in the source study; return the paths written. ``database``: Slicer's DICOM database by default.

    The source slices are checked first (without them there is nothing to install highdicom for);
    then missing packages are installed through ``ask``/``install`` (:func:`ensure_sr_packages`) when given.
    """
    files = _source_files(mrmlLogic, database)
    if missing_sr_packages() and not (ask and install and ensure_sr_packages(ask, install)):
        missing = missing_sr_packages()
        raise OutputError(f"No DICOM SR written: it needs the Python package(s) {', '.join(missing)}, which are "
                          "not installed.", "Click 'DICOM SR + PDF' again and accept installing them, or run "
                          f"slicer.util.pip_install('{' '.join(missing)}') in the Python console.")
    check_output_paths([p for p in (srPath, pdfDicomPath) if p], overwrite=overwrite)
    exe = _require_browser(browser) if pdfDicomPath else None
    diagnosis = case_diagnosis(mrmlLogic, patient=patient, prior=prior, priorName=priorName)
    doc = mrmlLogic.document()
    work = tempfile.mkdtemp(prefix="osteoroi-report-")
    try:
        pdfPath = None
        if pdfDicomPath:
            pdfPath = os.path.join(work, "report.pdf")
            write_report(diagnosis, doc, volume=mrmlLogic.volume(), pdf_path=pdfPath, sign_off=signOff, browser=exe)
        return write_dicom_exports(diagnosis, doc, source=files, sr_path=srPath, pdf_dicom_path=pdfDicomPath,
                                   pdf_path=pdfPath, sign_off=signOff, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
