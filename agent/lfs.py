"""Git LFS: replace the pointer files of an exported tree with the objects they stand for.

A pointer (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md) is a small text blob:
    version https://git-lfs.github.com/spec/v1
    oid sha256:<64 hex>
    size <bytes>
The objects are fetched by `git lfs fetch` into the cache (<git dir>/lfs/objects/ab/cd/<oid>)
and copied over the pointers after their hash and size are checked. Without git-lfs, or
when an object cannot be fetched, the tree is refused: it would differ from the commit.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.trees import Entry, TreeError, shown, summarize

if TYPE_CHECKING:
    from agent.remote import RemoteCache

MAX_POINTER = 1024  # git-lfs never reads a bigger blob as a pointer
MIN_POINTER = 120  # version, oid and size lines take at least this many bytes
_VERSIONS = (b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1")
_OID = re.compile(rb"^sha256:([0-9a-f]{64})$")
_SIZE = re.compile(rb"^(0|[1-9][0-9]*)$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Pointer:
    path: bytes  # relative to the tree's root
    oid: str  # sha256, hex
    size: int  # bytes


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    """(oid, size) when data is an LFS pointer, else None."""
    if len(data) >= MAX_POINTER or not data.endswith(b"\n"):
        return None
    fields = {}
    for number, line in enumerate(data[:-1].split(b"\n")):
        key, _, value = line.partition(b" ")
        if number == 0 and (key != b"version" or value not in _VERSIONS):
            return None
        if not key or key in fields:
            return None
        fields[key] = value
    oid = _OID.match(fields.get(b"oid", b""))
    size = _SIZE.match(fields.get(b"size", b""))
    if not oid or not size:
        return None
    return oid.group(1).decode(), int(size.group(1))


def find_pointers(root: Path, entries: list[Entry]) -> list[Pointer]:
    """The regular files of the exported tree under root that are LFS pointers."""
    found = []
    for entry in entries:
        if entry.mode not in ("100644", "100755") \
                or not MIN_POINTER <= (entry.size or 0) < MAX_POINTER:
            continue
        with open(os.path.join(os.fsencode(root), entry.path), "rb") as handle:
            parsed = parse_pointer(handle.read(MAX_POINTER))
        if parsed:
            found.append(Pointer(entry.path, *parsed))
    return found


def fill(cache: RemoteCache, commit: str, root: Path, entries: list[Entry]) -> None:
    """Put the real content of every LFS file of `commit` (exported under root) in place.

    Raises TreeError naming the paths when git-lfs is missing or objects cannot be had;
    OSError when writing fails.
    """
    pointers = find_pointers(root, entries)
    if not pointers:
        return
    paths = [shown(p.path) for p in pointers]
    if not cache.lfs_available():
        raise TreeError("Git LFS files, but git-lfs is not installed on this host: "
                        + summarize(paths))
    objects = cache.lfs_objects_dir()
    problem = None
    if any(not _object(objects, p).is_file() for p in pointers):
        problem = cache.lfs_fetch(commit)
    missing = [p for p in pointers if not _install(_object(objects, p), root, p)]
    if missing:
        raise TreeError(f"Git LFS objects cannot be fetched ({problem or 'missing or damaged'}): "
                        + summarize(shown(p.path) for p in missing))


def _object(objects: Path, pointer: Pointer) -> Path:
    return objects / pointer.oid[:2] / pointer.oid[2:4] / pointer.oid


def _install(source: Path, root: Path, pointer: Pointer) -> bool:
    """Copy the object over its pointer file (keeping its mode) if its hash and size match."""
    target = os.path.join(os.fsencode(root), pointer.path)
    try:
        reader = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return False
    digest, size = hashlib.sha256(), 0
    fd, temporary = tempfile.mkstemp(prefix=b".lfs-", dir=os.path.dirname(target))
    try:
        with reader, os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
        if digest.hexdigest() != pointer.oid or size != pointer.size:
            os.unlink(temporary)
            return False
        os.chmod(temporary, os.stat(target).st_mode & 0o7777)
        os.replace(temporary, target)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return True
