"""Reading a user's JSON file (points, calibration, criteria, results) with errors that say what to do."""
from __future__ import annotations

import json

from ..errors import InputError


def read_json(path: str, what: str, remedy: str):
    """The parsed JSON of ``path``; a missing, unreadable or malformed file raises ``InputError``.

    ``what`` names the file in the message ("points file", "calibration file", ...); ``remedy``
    says how to get a good one (used for a missing or malformed file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"The {what} {path} does not exist.", remedy) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"The {what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}).", remedy) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the {what} {path} ({exc}).", "Check the path and the file's permissions.") from None
