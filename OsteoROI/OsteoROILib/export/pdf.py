"""The report as PDF: the HTML report printed by a headless Chromium-family browser (same content, same CSS).

Printing the HTML itself keeps one layout for screen, paper and PDF: the print CSS (A4 or Letter,
no table or figure split, colours kept; :mod:`style`) is what the browser applies. The browser is
found on PATH (Chromium, Google Chrome, Microsoft Edge) or given explicitly; without one, the
error says how to get a PDF. The PDF is written atomically: printed to a temporary file in the
target folder, then moved into place.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Optional

from ..errors import InputError, OutputError

#: Executable names of browsers that print to PDF headless, in order of preference.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "msedge")
PAGE_SIZES = ("A4", "Letter")
PRINT_TIMEOUT_S = 120


def find_browser(browser: Optional[str] = None) -> str:
    """The browser to print with: ``browser`` when given, else the first of :data:`BROWSERS` on PATH."""
    if browser:
        path = shutil.which(browser) or (browser if os.path.isfile(browser) else None)
        if not path:
            raise InputError(f"The browser {browser} was not found.", "Give the path of Chromium or Chrome with --browser.")
        return path
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise OutputError("No browser that prints to PDF was found (Chromium, Google Chrome or Microsoft Edge).",
                      "Install Chromium (Debian/Ubuntu: apt-get install chromium) or pass --browser PATH; or open the "
                      "HTML report in any browser and print it to PDF.")


def with_page_size(html_text: str, page_size: str) -> str:
    """The report's HTML printing on ``page_size`` (A4 or Letter) instead of A4."""
    if page_size not in PAGE_SIZES:
        raise InputError(f"Page size {page_size!r} is not supported.", f"Give --page-size {' or '.join(PAGE_SIZES)}.")
    return html_text.replace("@page { size: A4;", f"@page {{ size: {page_size};")


def _print_command(browser: str, html_path: str, pdf_path: str, profile: str) -> list:
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--no-pdf-header-footer",
            f"--user-data-dir={profile}", f"--print-to-pdf={pdf_path}", "file://" + os.path.abspath(html_path)]


def write_pdf(html_text: str, pdf_path: str, *, page_size: str = "A4", browser: Optional[str] = None,
              overwrite: bool = False) -> str:
    """Print the report's HTML to ``pdf_path``; return the path written."""
    if os.path.exists(pdf_path) and not overwrite:
        raise OutputError(f"{pdf_path} already exists.", "Pass --overwrite to replace it, or choose another name.")
    exe = find_browser(browser)
    html_text = with_page_size(html_text, page_size)
    folder = os.path.dirname(os.path.abspath(pdf_path))
    work = tempfile.mkdtemp(prefix=".osteoroi-pdf-", dir=folder)
    try:
        html_file = os.path.join(work, "report.html")
        with open(html_file, "w", encoding="utf-8") as f:
            f.write(html_text)
        tmp_pdf = os.path.join(work, "report.pdf")
        proc = subprocess.run(_print_command(exe, html_file, tmp_pdf, os.path.join(work, "profile")),
                              capture_output=True, text=True, timeout=PRINT_TIMEOUT_S)
        if not os.path.exists(tmp_pdf) or os.path.getsize(tmp_pdf) == 0:
            raise OutputError(f"The browser {exe} wrote no PDF (exit code {proc.returncode}: "
                              f"{proc.stderr.strip()[-300:]}).",
                              "Check that the browser runs headless here, or print the HTML report to PDF by hand.")
        os.replace(tmp_pdf, pdf_path)
    except subprocess.TimeoutExpired:
        raise OutputError(f"The browser {exe} did not finish printing within {PRINT_TIMEOUT_S} s.",
                          "Print the HTML report to PDF by hand, or try again on a less busy machine.") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return pdf_path
