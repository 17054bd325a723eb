"""Where the PDF's browser is found off PATH: the vendors' default install folders on Windows and macOS.

Oracles: the install locations Microsoft and Google document for Edge and Chrome (written out here
by hand), and a made-up file system (``exists``) that holds only the files a test names.
"""
from __future__ import annotations

from OsteoROILib.export.browser_locations import browser_candidates, installed_browser

WINDOWS_ENV = {"ProgramFiles": r"C:\Program Files", "ProgramFiles(x86)": r"C:\Program Files (x86)",
               "LocalAppData": r"C:\Users\ana\AppData\Local"}
EDGE = r"C:\Program Files (x86)\Microsoft\Edge\Application\msedge.exe"
CHROME = r"C:\Program Files\Google\Chrome\Application\chrome.exe"
USER_CHROME = r"C:\Users\ana\AppData\Local\Google\Chrome\Application\chrome.exe"


def test_edge_is_found_on_a_plain_windows():
    assert installed_browser("win32", WINDOWS_ENV, exists={EDGE}.__contains__) == EDGE


def test_chrome_is_preferred_to_edge_and_a_per_user_install_is_found():
    assert installed_browser("win32", WINDOWS_ENV, exists={EDGE, CHROME}.__contains__) == CHROME
    assert installed_browser("win32", WINDOWS_ENV, exists={EDGE, USER_CHROME}.__contains__) == USER_CHROME


def test_an_unset_variable_drops_its_locations_instead_of_trying_a_literal_path():
    env = {"ProgramFiles": r"C:\Program Files"}
    candidates = browser_candidates("win32", env)
    assert candidates and all("%" not in c for c in candidates)
    assert CHROME in candidates and EDGE not in candidates


def test_macos_applications_folders():
    chrome = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
    user_chrome = "/Users/ana/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
    edge = "/Applications/Microsoft Edge.app/Contents/MacOS/Microsoft Edge"
    assert installed_browser("darwin", {}, "/Users/ana", exists={edge}.__contains__) == edge
    assert installed_browser("darwin", {}, "/Users/ana", exists={edge, user_chrome}.__contains__) == user_chrome
    assert installed_browser("darwin", {}, "/Users/ana", exists={edge, chrome}.__contains__) == chrome


def test_nothing_installed_or_an_unknown_platform_gives_none():
    assert installed_browser("win32", WINDOWS_ENV, exists=lambda p: False) is None
    assert browser_candidates("sunos5", WINDOWS_ENV) == []
