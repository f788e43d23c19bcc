"""Submodules: fill the empty directory git leaves for each one with its recorded commit.

The URL comes from the commit's own .gitmodules (a relative URL is read against the
superproject's remote, as git does). Each submodule gets a bare cache of its own under the
cache dir, fetched with the same environment and timeout as the main remote. Nested
submodules are followed up to MAX_DEPTH levels. What cannot be filled is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import DeployError, HostError, RemoteError
from agent.redact import redact
from agent.trees import Entry, TreeError, shown, summarize

if TYPE_CHECKING:
    from agent.remote import RemoteCache

MAX_DEPTH = 3  # a theme inside a theme inside a theme is already unusual
GITLINK = "160000"


def fill(cache: RemoteCache, commit: str, root: Path, entries: list[Entry], depth: int) -> None:
    """Export every submodule of `commit` (whose tree is exported under root) in place.

    depth is how deep root itself is nested (0 for the release). Raises TreeError naming each
    submodule that cannot be filled and why; OSError when writing fails.
    """
    links = [entry for entry in entries if entry.mode == GITLINK]
    if not links:
        return
    urls = cache.submodule_urls(commit)
    problems = []
    for entry in links:
        why = _fill_one(cache, entry, urls.get(entry.path), root, depth)
        if why:
            problems.append(f"{shown(entry.path)} ({why})")
    if problems:
        raise TreeError("submodules cannot be deployed: " + summarize(problems))


def _fill_one(cache: RemoteCache, entry: Entry, url: str | None, root: Path,
              depth: int) -> str | None:
    """None when the submodule is in place, else why not."""
    if depth >= MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if not url:
        return "no URL for it in .gitmodules"
    resolved = resolve_url(url, cache.url)
    if resolved is None or resolved.startswith("-"):
        return f"URL {redact(url)!r} cannot be used"
    if _on_this_host(resolved) and not _on_this_host(cache.url):
        # A commit must not pull any repository this host can read into a public theme
        # (git's own submodule rule since 2.38.1: protocol.file.allow=user).
        return f"URL {redact(url)!r} is a path on this host, and the site's remote is not"
    where = os.path.join(os.fsencode(root), entry.path)
    if not stat.S_ISDIR(os.lstat(where).st_mode) or os.listdir(where):
        return "its directory is not the empty one git leaves"
    sub = cache.for_submodule(resolved)
    try:
        sub.fetch_commit(entry.oid)
        sub.write_tree(entry.oid, Path(os.fsdecode(where)), depth + 1)
    except HostError:
        raise  # the host's fault (a full disk), not the commit's: never a refusal
    except (DeployError, RemoteError) as exc:  # TreeError too: it names its own paths
        return exc.message
    return None


def resolve_url(url: str, base: str) -> str | None:
    """A .gitmodules URL as git reads it: "../theme.git" against "/srv/site.git" gives
    "/srv/theme.git"; "./x" against "git@host:acme/site.git" gives "git@host:acme/site.git/x".
    Absolute URLs come back unchanged; None when "../" climbs above the base."""
    if not url.startswith(("./", "../")):
        return url
    base = base.rstrip("/")
    rest = url
    while rest.startswith(("./", "../")):
        if rest.startswith("./"):
            rest = rest[2:]
            continue
        rest = rest[3:]
        base = _parent(base)
        if base is None:
            return None
    rest = rest.lstrip("/")
    if base.endswith(":") or not rest:
        return base + rest
    return f"{base}/{rest}"


def _parent(url: str) -> str | None:
    """url minus its last path component ("host:" for scp-like "host:path"); None at the top."""
    if "://" in url:
        floor = url.find("/", url.index("://") + 3)  # the path starts after the host
        cut = url.rfind("/")
        return url[:cut] if floor >= 0 and cut >= floor else None
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):  # scp-like git@host:acme/site.git
        cut = url.rfind("/")
        if cut > colon:
            return url[:cut]
        return url[: colon + 1] if colon + 1 < len(url) else None
    cut = url.rfind("/")
    return url[:cut] if cut >= 0 else None  # a path: "/srv" -> "" (the root)


def _on_this_host(url: str) -> bool:
    """A path or file:// URL (git reads "host:path" as ssh only when no "/" comes first)."""
    if url.startswith("file://"):
        return True
    if "://" in url:
        return False
    colon = url.find(":")
    return colon < 0 or "/" in url[:colon]
