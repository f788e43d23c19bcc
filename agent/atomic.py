"""Atomic file writes: readers see the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable. Some platforms/filesystems cannot fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically.

    The data goes to `.<name>.tmp-<random>` in the same directory, is fsynced and
    chmod'ed to `mode` (whatever the umask), then renamed over `path`; finally the
    directory is fsynced. On any error the temporary file is removed and the old
    `path`, if any, is left untouched. Parent directories are not created.
    """
    path = Path(path)
    # "backslashreplace": a stray surrogate (undecodable bytes let through somewhere) must
    # never make a state or ci-cd file unwritable.
    payload = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else bytes(data)
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.tmp-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def dumps_json(obj: Any) -> str:
    """The JSON text the agent writes: indented, key order kept, UTF-8, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, obj: Any, mode: int = 0o644) -> None:
    """Serialise `obj` (before touching the disk) and write it atomically."""
    write_atomic(path, dumps_json(obj), mode)
