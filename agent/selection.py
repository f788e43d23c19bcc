"""Branch selection: (remote heads, flag) -> the target this host should run. Pure."""

from __future__ import annotations

import re

from agent.models import Selection, Snapshot, Target

SEPARATORS = "-/_."
# A version is numbers joined by one kind of separator: 1.3.22, 1-3-22, 1_3_22 (not 1.3-22).
# At most 18 digits a part (any 64-bit number) and 20 parts: a longer "version" is not one
# (and Python refuses to turn 4,300 digits into an int).
_VERSION = re.compile(r"^(\d{1,18})(?:([.\-_])\d{1,18}(?:\2\d{1,18}){0,18})?$")


def is_release_flag(flag: str) -> bool:
    return flag.endswith("*")


def parse_version(text: str) -> tuple[int, ...] | None:
    """'1.3.22' or '1-3-22' -> (1, 3, 22); None when it is not a version."""
    if not _VERSION.match(text):
        return None
    return tuple(int(part) for part in re.split(r"[.\-_]", text))


def release_version(branch: str, name: str) -> tuple[str | None, bool]:
    """Split a branch of release NAME: ('1.3.22', True) for 'staging1-1.3.22'.

    Returns (None, False) when the branch is not NAME's at all ('staging10-1.0'),
    and (None, True) when it is NAME's but its version cannot be read.
    """
    if not branch.startswith(name) or len(branch) <= len(name) + 1:
        return None, False
    sep, rest = branch[len(name)], branch[len(name) + 1 :]
    if sep not in SEPARATORS:
        return None, False  # staging10-1.0 is not staging1's
    if parse_version(rest) is None:
        return None, True
    return rest, True


def select(snapshot: Snapshot, flag: str) -> Selection:
    """Pick the branch this host follows.

    An exact flag follows that branch. NAME* follows the newest release branch of NAME,
    compared as numbers; branches whose version cannot be read are reported, never picked.
    """
    if not is_release_flag(flag):
        commit = snapshot.heads.get(flag)
        return Selection(Target(flag, commit) if commit else None)

    name = flag[:-1]
    best: Target | None = None
    unreadable: list[str] = []
    for branch in sorted(snapshot.heads):
        version, belongs = release_version(branch, name)
        if not belongs:
            continue
        if version is None:
            unreadable.append(branch)
            continue
        candidate = Target(branch, snapshot.heads[branch], version, parse_version(version))
        if best is None or _newer(candidate, best):
            best = candidate
    return Selection(best, tuple(unreadable))


def _newer(a: Target, b: Target) -> bool:
    """Numbers decide; on a tie (1.3.22 vs 1-3-22) the name decides, so the pick is stable."""
    a_key, b_key = a.version_key or (), b.version_key or ()
    if a_key != b_key:
        return a_key > b_key
    return a.branch < b.branch


def heads_patterns(flag: str) -> list[str]:
    """ls-remote patterns that cover every branch the flag may follow."""
    if is_release_flag(flag):
        return [f"refs/heads/{flag[:-1]}*"]
    return [f"refs/heads/{flag}"]
