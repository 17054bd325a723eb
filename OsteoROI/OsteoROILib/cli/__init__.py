"""The ``osteoroi`` command line: demo, measure, phantoms, calibrate, report."""
from .commands import build_parser, main

__all__ = ["build_parser", "main"]
