"""Errors that reach a user.

Every error OsteoROI raises for bad input is an :class:`OsteoROIError` whose message says
what is wrong *and* what to do about it. The command line prints the message and exits
non-zero; the Slicer module shows it in an error dialog.
"""
from __future__ import annotations


class OsteoROIError(Exception):
    """A problem with the user's input, stated with a remedy.

    ``problem`` names what is wrong, ``remedy`` what the user can do.
    """

    def __init__(self, problem: str, remedy: str = ""):
        self.problem = problem
        self.remedy = remedy
        text = problem if not remedy else f"{problem} {remedy}"
        super().__init__(text)


class InputError(OsteoROIError):
    """The input image, points or options cannot be used."""


class PlacementError(OsteoROIError):
    """An ROI cannot be placed where it was asked for."""


class OutputError(OsteoROIError):
    """A result cannot be written."""
