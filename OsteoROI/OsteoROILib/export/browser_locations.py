"""Where a Chromium-family browser is installed when it is not on PATH: the printer of the PDF report on Windows and macOS.

``export.pdf.find_browser`` looks on PATH, where Linux packages put Chromium. On Windows and
macOS the installers do not: Microsoft Edge (on every Windows 10/11) and Google Chrome live in
their vendors' default install folders, listed here. The Slicer panel looks here when PATH has
none, so most radiologists' machines can print the PDF without setting anything up.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, List, Mapping, Optional

__all__ = ["INSTALL_PATHS", "browser_candidates", "installed_browser"]

#: Default install locations per ``sys.platform`` prefix, in order of preference; ``%NAME%`` is an
#: environment variable (Windows), ``~`` the user's home folder.
INSTALL_PATHS = {
    "win32": (
        r"%ProgramFiles%\Google\Chrome\Application\chrome.exe",
        r"%ProgramFiles(x86)%\Google\Chrome\Application\chrome.exe",
        r"%LocalAppData%\Google\Chrome\Application\chrome.exe",
        r"%LocalAppData%\Chromium\Application\chrome.exe",
        r"%ProgramFiles(x86)%\Microsoft\Edge\Application\msedge.exe",
        r"%ProgramFiles%\Microsoft\Edge\Application\msedge.exe",
    ),
    "darwin": (
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        "~/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
        "/Applications/Chromium.app/Contents/MacOS/Chromium",
        "/Applications/Microsoft Edge.app/Contents/MacOS/Microsoft Edge",
    ),
    "linux": (
        "/snap/bin/chromium",
        "/usr/lib/chromium/chromium",
        "/opt/google/chrome/chrome",
    ),
}


def _expand(template: str, environ: Mapping[str, str], home: str) -> Optional[str]:
    """The path with its ``%NAME%`` variables and ``~`` filled in; None when a variable is not set."""
    parts = template.split("%")
    for i in range(1, len(parts), 2):
        value = environ.get(parts[i]) or environ.get(parts[i].upper())
        if not value:
            return None
        parts[i] = value
    path = "".join(parts)
    return home + path[1:] if path.startswith("~") else path


def browser_candidates(platform: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                       home: Optional[str] = None) -> List[str]:
    """The install locations to try on ``platform`` (default: this one), variables filled in."""
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    home = os.path.expanduser("~") if home is None else home
    templates = next((paths for prefix, paths in INSTALL_PATHS.items() if platform.startswith(prefix)), ())
    return [p for p in (_expand(t, environ, home) for t in templates) if p]


def installed_browser(platform: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                      home: Optional[str] = None, exists: Callable[[str], bool] = os.path.isfile) -> Optional[str]:
    """The first installed browser of :func:`browser_candidates`, or None."""
    return next((p for p in browser_candidates(platform, environ, home) if exists(p)), None)
