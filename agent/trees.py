"""What a release tree may hold before it goes live, and the error for a tree that may not.

A git tree can hold things a plain export reproduces wrongly or dangerously: symlinks that
lead out of the release (to /etc/passwd, or ../../.. past its root), submodules (an empty
directory), Git LFS pointer files (a few lines of text instead of the image). Submodules and
LFS are filled in by agent/submodules.py and agent/lfs.py; this module checks links and
parses `git ls-tree` output. File names are bytes throughout: git allows names that are not
UTF-8, and they must deploy.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DeployError

MAX_NAMED = 10  # paths named in one message; the rest are counted
MAX_HOPS = 40  # symlinks followed while resolving one path (Linux's own limit)


class TreeError(DeployError):
    """The commit's tree cannot go live as it is (a link out of the release, a submodule or
    an LFS file that cannot be filled in). The commit's fault: quarantined, never retried
    until its branch moves. The message names the offending paths."""


@dataclass(frozen=True)
class Entry:
    """One line of `git ls-tree -r -z -l`: mode ("100644", "120000", "160000"…), kind
    ("blob", "commit"), object id, size in bytes (None for a submodule), path as bytes."""

    mode: str
    kind: str
    oid: str
    size: int | None
    path: bytes


def shown(raw: bytes) -> str:
    """Bytes from git as text that is always valid UTF-8: b"caf\\xe9" -> "caf\\\\xe9"."""
    return raw.decode("utf-8", "backslashreplace")


def summarize(items: Iterable[str]) -> str:
    """"a, b, c" with at most MAX_NAMED items, then "and N more"."""
    items = list(items)
    text = ", ".join(items[:MAX_NAMED])
    if len(items) > MAX_NAMED:
        text += f" and {len(items) - MAX_NAMED} more"
    return text


def parse_ls_tree(out: bytes) -> list[Entry]:
    """Entries from `git ls-tree -r -z -l` output. ValueError on a line of another shape."""
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        head, tab, path = record.partition(b"\t")
        fields = head.split()
        if not tab or len(fields) != 4:
            raise ValueError(f"unexpected ls-tree line {shown(record[:100])!r}")
        mode, kind, oid, size = (field.decode("ascii") for field in fields)
        entries.append(Entry(mode, kind, oid, None if size == "-" else int(size), path))
    return entries


def may_need_filling(root: Path) -> bool:
    """Could the exported tree under root hold a submodule or a Git LFS file?

    git stores no empty directories, so an empty one is a submodule (checkout-index writes a
    gitlink as one); an LFS file needs a .gitattributes that says so, and without one git-lfs
    would leave its pointer as it is, too. One scandir per directory, stopping at the first
    sign; False means there is nothing to fill in.
    """
    pending = [os.fsencode(root)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            empty = True
            for entry in entries:
                empty = False
                if entry.name == b".gitattributes":
                    return True
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
            if empty:
                return True
    return False


def check_links(root: Path) -> None:
    """Refuse a tree with a symlink that resolves outside root.

    Absolute targets always lead out (the release's own path is unknown when the link is
    committed); relative ones are followed through the tree's own links, as the kernel would.
    Links that stay inside, even dangling ones, are fine. Raises TreeError naming them.
    """
    out = outside_links(root)
    if out:
        raise TreeError("symlinks lead outside the release: "
                        + summarize(f"{shown(path)} -> {shown(target)}" for path, target in out))


def outside_links(root: Path) -> list[tuple[bytes, bytes]]:
    """(path relative to root, link target) of every symlink that leads outside root."""
    base = os.fsencode(root)
    found = []
    pending = [base]
    while pending:  # never follows links; one scandir per directory, no lstat per file
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    rel = os.path.relpath(entry.path, base)
                    target = os.readlink(entry.path)
                    if _leads_out(base, rel.split(b"/")[:-1], target):
                        found.append((rel, target))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return sorted(found)


def _leads_out(root: bytes, start: list[bytes], target: bytes) -> bool:
    """Does `target`, read in directory `start` (components under root), leave root?

    Resolved one component at a time: a component that is a link inside root is replaced by
    its target; one that does not exist is taken literally. Nothing outside root is looked at.
    """
    if target.startswith(b"/"):
        return True
    stack = list(start)
    todo = target.split(b"/")[::-1]
    hops = 0
    while todo:
        part = todo.pop()
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        here = os.path.join(root, *stack)
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            continue  # missing: the rest is taken literally (a dangling link inside is fine)
        if stat.S_ISLNK(mode):
            hops += 1
            if hops > MAX_HOPS:
                return False  # a loop: the kernel refuses to resolve it at all (ELOOP)
            inner = os.readlink(here)
            if inner.startswith(b"/"):
                return True
            stack.pop()
            todo.extend(inner.split(b"/")[::-1])
    return False
