"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every stage output of soco_d2 (results, converted weights, proposal caches, reports) is written
this way, so an interrupted run leaves either nothing or a complete file behind, and a resumed
run can trust any file it finds.

``atomic_write(path)`` writes to a temporary file in the destination's folder (same file
system, so the final rename is atomic), flushes and fsyncs it, then ``os.replace``\\ s it onto
``path``. On any error the temporary file is removed and ``path`` is left as it was. Temporary
names are ``<path>.tmp<pid>-<random>``, so a cleanup glob ``*.tmp*`` finds leftovers of a
killed process.
"""
import contextlib
import json
import math
import os
import shutil
import tempfile
import uuid
from typing import IO, Any, Iterator, Mapping, Optional

import numpy as np

__all__ = ["atomic_directory", "atomic_write", "strict_json", "write_json_atomic"]

_MODES = ("w", "wt", "wb")


def _fsync_dir(dirname: str) -> None:
    """Persist a rename in ``dirname`` (best effort: some file systems refuse a dir fsync)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Missing parent folders are created. The file gets the permissions ``open()`` would give it
    (``0o666`` minus the umask), unlike ``tempfile.mkstemp``'s ``0o600``.

    Args:
        path: destination file.
        mode: ``"w"`` / ``"wt"`` (text) or ``"wb"`` (binary). The file is opened for writing
            and may be seeked and truncated.
        encoding: text encoding (text modes only; default ``"utf-8"``).

    Yields:
        the open temporary file.

    Raises:
        ValueError: on any other ``mode``.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write mode must be one of {_MODES}, got {mode!r}")
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # O_EXCL: never write through a file (or link) someone else created under this name.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)


@contextlib.contextmanager
def atomic_directory(path: str, prefix: str = ".tmp-") -> Iterator[str]:
    """Build a whole folder, then put it at ``path`` in one rename.

    Yields a temporary folder beside ``path``; when the block ends without an error, whatever
    was at ``path`` is removed and the temporary folder renamed to it. On an error (or an
    interruption) the temporary folder is removed and ``path`` is left as it was.

    Args:
        path: the final folder.
        prefix: name prefix of the temporary folder (it shows which writer left one behind).
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield tmp
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with NaN/inf replaced by None and numpy scalars by Python ones, recursively.

    ``json.dump`` would write NaN as the non-standard token ``NaN``, which strict parsers
    (browsers, ``jq``) reject.

    Args:
        obj: nested dicts / lists / tuples of JSON-able values.

    Returns:
        the same structure (tuples become lists, mapping keys become strings).
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    return obj


def write_json_atomic(obj: Any, path: str, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as strict JSON (see ``strict_json``) to ``path``, atomically.

    Args:
        obj: nested dicts / lists of JSON-able values (NaN/inf are written as null).
        path: destination file; parent folders are created.
        indent: ``json.dump`` indent.
    """
    with atomic_write(path, "w") as f:
        json.dump(strict_json(obj), f, indent=indent, allow_nan=False)
