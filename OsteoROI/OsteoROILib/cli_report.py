"""``osteoroi report``: the diagnosis table and HTML report from a result JSON."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add this module's sub-commands to the ``osteoroi`` parser (none yet)."""
