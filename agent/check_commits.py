"""`ghost-agent check-commits RANGE`: the card rule, for the site repository's own CI.

Every commit must name a card (e.g. B321); merge commits are exempt, the work they bring is
in the commits they merge.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent import proc
from agent.cards import release_cards
from agent.errors import AgentError, ExitCode

MAX_COMMITS = 10_000


class RangeError(AgentError):
    exit_code = ExitCode.USAGE  # a usage error: the range or the repository is wrong


def commits_in(repo: Path, rev_range: str) -> list[tuple[str, int, str]]:
    """(sha, parent count, message) for each commit of the range, newest first."""
    if rev_range.startswith("-"):
        raise RangeError(f"{rev_range!r} is not a revision range")
    try:
        out = proc.run(["git", "-C", str(repo), "log", f"--max-count={MAX_COMMITS}",
                        "--format=%H %P%x00%B%x1e", rev_range, "--"], timeout=120).stdout
    except proc.CommandError as exc:
        raise RangeError(f"cannot read {rev_range!r} in {repo}: {exc.message}") from None
    commits = []
    for entry in out.split("\x1e"):
        entry = entry.strip("\n")
        if entry:
            head, _, message = entry.partition("\x00")
            sha, *parents = head.split()
            commits.append((sha, len(parents), message.strip()))
    return commits


def check(repo: Path, rev_range: str, pattern: str) -> tuple[list[str], list[str]]:
    """Lines to print and the uncarded commit shas."""
    commits = commits_in(repo, rev_range)
    _, uncarded = release_cards(commits, re.compile(pattern))
    subjects = {sha: message.splitlines()[0] if message else "" for sha, _, message in commits}
    lines = [f"{sha[:10]} {subjects[sha][:72]!r}: no card ID (pattern {pattern})"
             for sha in uncarded]
    return lines, uncarded
