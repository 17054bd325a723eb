"""The measurement table: a versioned JSON document and a CSV with the same row columns.

Writes are atomic: every output is first written to a temporary file beside its target and
renamed into place only when all outputs were written, so a failure leaves no half-written
file and changes no existing one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Mapping, Optional

from . import __version__
from .errors import OutputError
from .resources import resource_path
from .stats import STAT_KEYS

SCHEMA_ID = "osteoroi-measurement/1"
SCHEMA_FILE = ("Schemas", "osteoroi-measurement-1.schema.json")

#: Row columns, in table order (JSON rows also carry ``roi``, the ROI's geometry).
ROW_COLUMNS = ("level", "shape") + STAT_KEYS + (
    "nominal_area_mm2",
    "center_ras",
    "slice_index",
    "slab_mm",
    "placement",
    "plane",
    "fit_quality",
    "body_depth_mm",
    "body_width_mm",
    "ap_axis_ras",
    "high_hu_fraction",
    "vbmd_mg_cm3",
    "vbmd_unit",
    "vbmd_sd",
    "warnings",
)


def json_safe(value, digits: Optional[int] = None):
    """Plain JSON values: mappings and sequences (incl. numpy arrays) recursively, numpy scalars to
    Python, non-finite floats to None (never NaN in a file), floats rounded to ``digits`` if given."""
    kind = type(value)
    # Fast paths for the built-in types a document is made of (the same results as the general rules below).
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    if kind is dict:
        return {str(k): json_safe(v, digits) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [json_safe(v, digits) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [json_safe(v, digits) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    return value


def _clean(value):
    """The measurement document's values: JSON-safe, floats to 6 decimals."""
    return json_safe(value, 6)


def build_document(
    measurement: Mapping[str, object],
    volume_info: Mapping[str, object],
    command: str = "",
    extra: Optional[Mapping[str, object]] = None,
    timestamp: Optional[str] = None,
) -> Dict[str, object]:
    """The result document (validated by ``Resources/Schemas/osteoroi-measurement-1.schema.json``).

    ``timestamp`` is the only field that changes between identical runs.
    """
    doc: Dict[str, object] = {
        "schema": SCHEMA_ID,
        "osteoroi_version": __version__,
        "created": timestamp or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        "volume": dict(volume_info),
        "settings": {"shapes": list(measurement["shapes"]), "slab_mm": measurement["slab_mm"]},
        "levels": measurement["levels"],
        "rows": measurement["rows"],
        "warnings": list(measurement.get("warnings", [])),
    }
    if extra:
        doc.update(extra)
    return _clean(doc)


def load_schema() -> Dict[str, object]:
    with open(resource_path(*SCHEMA_FILE), encoding="utf-8") as f:
        return json.load(f)


def validate_document(doc: Mapping[str, object]) -> None:
    """Validate against the JSON schema (needs the ``jsonschema`` package)."""
    import jsonschema

    jsonschema.validate(instance=doc, schema=load_schema())


def to_json_text(doc: Mapping[str, object]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return " | ".join(value)
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv_text(rows: Iterable[Mapping[str, object]], columns=ROW_COLUMNS) -> str:
    """CSV of the rows; empty cell for a missing value (e.g. SD of a single voxel), never NaN."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def _same_file(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_output_paths(paths: Iterable[str], overwrite: bool = False, inputs: Iterable[str] = ()) -> List[str]:
    """Refuse, before any work, outputs that cannot be written or would replace a file.

    ``inputs``: the files the command reads (CT, points, labels, calibration, result, ...); an
    output that is one of them is refused even with ``overwrite`` (it would destroy the input)."""
    inputs = [p for p in inputs if p]
    out = []
    for path in paths:
        if not path:
            continue
        path = os.path.abspath(path)
        if path in out:
            raise OutputError(f"The same file {path} is given for two outputs.", "Give each output its own file name.")
        if any(_same_file(path, p) for p in inputs):
            raise OutputError(f"The output file {path} is also an input of this command; writing it would destroy "
                              "the input (--overwrite does not allow this).",
                              "Give the output another file name.")
        folder = os.path.dirname(path)
        if os.path.isdir(path):
            raise OutputError(f"The output {path} is a directory.", "Give a file name.")
        if not os.path.isdir(folder):
            raise OutputError(f"The output folder {folder} does not exist.", "Create it first or choose another path.")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"The output folder {folder} is not writable.", "Choose a folder you can write to.")
        if os.path.exists(path) and not overwrite:
            raise OutputError(f"The output file {path} already exists.",
                              "Choose another name, delete it, or pass --overwrite.")
        out.append(path)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(outputs: Mapping[str, str]) -> None:
    """Write ``{path: text}``: all to temporary files first, then rename each into place."""
    temps = []
    try:
        for path, text in outputs.items():
            folder = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".osteoroi-", suffix=".part", dir=folder)
            temps.append((tmp, path))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise OutputError(f"Could not write the results ({exc.strerror or exc}).",
                          "Check the output folder's free space and permissions.") from None
