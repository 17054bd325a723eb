"""Writing output files safely: JSON-safe values, output-path checks and all-or-nothing writes.

Writes are atomic: every output is first written to a temporary file beside its target and
renamed into place only when all outputs were written, so a failure leaves no half-written
file and changes no existing one. A new file is created exclusively (a concurrent run cannot
both "write" it), and a symbolic link is never replaced.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Iterable, List, Mapping, Optional

from ..errors import OutputError


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
        refuse_symlink(path)
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


def refuse_symlink(path: str) -> None:
    """A symbolic link (even a dangling one) is never replaced nor written through."""
    if os.path.islink(path):
        raise OutputError(f"The output {path} is a symbolic link (to {os.readlink(path)}); OsteoROI does not replace "
                          "or write through links.", "Give the path of a regular file (or remove the link).")


def write_atomically(outputs: Mapping[str, str], overwrite: bool = False) -> None:
    """Write ``{path: text}`` all or nothing: every text to a temporary file beside its target first,
    then each moved into place. Without ``overwrite`` each target name is claimed by exclusive create
    before anything is moved, so a file that exists (or that a concurrent run has just written) is
    refused and nothing is written. With ``overwrite`` the files replaced are kept until every output
    is in place and restored if one fails. Symbolic links are refused either way."""
    for path in outputs:
        refuse_symlink(path)
    temps: List[tuple] = []
    try:
        for path, text in outputs.items():
            temps.append((_write_temp(path, text), os.path.abspath(path)))
        _publish(temps, overwrite)
    except OSError as exc:
        raise OutputError(f"Could not write the results ({exc.strerror or exc}).",
                          "Check the output folder's free space and permissions.") from None
    finally:
        for tmp, _ in temps:
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _write_temp(path: str, text: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".osteoroi-", suffix=".part", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _publish(temps: List[tuple], overwrite: bool) -> None:
    """Move the temporary files into place, all or none (see ``write_atomically``)."""
    claimed: List[str] = []
    backups: List[tuple] = []
    try:
        for _, path in temps:
            if overwrite and os.path.lexists(path):
                refuse_symlink(path)
                backup = path + f".osteoroi-{os.getpid()}.bak"
                os.link(path, backup)
                backups.append((backup, path))
                continue
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                raise OutputError(f"The output file {path} already exists (another run may have just written it); "
                                  "nothing was written.", "Choose another name, delete it, or pass --overwrite.") \
                    from None
            claimed.append(path)
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for path in claimed:
            if os.path.lexists(path):
                os.unlink(path)
        for backup, path in backups:
            if os.path.lexists(path) and os.path.samefile(backup, path):
                os.unlink(backup)  # never replaced; rename() between links to one file would do nothing
            else:
                os.replace(backup, path)
        raise
    for backup, _ in backups:
        os.unlink(backup)
