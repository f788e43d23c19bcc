"""Card IDs in commit messages. Pure."""

from __future__ import annotations

import re


def cards_in(message: str, pattern: re.Pattern[str]) -> list[str]:
    """Card IDs in one message, in order of appearance, without repeats."""
    seen: dict[str, None] = {}
    for match in pattern.finditer(message):
        seen.setdefault(match.group(0), None)
    return list(seen)


def release_cards(
    commits: list[tuple[str, int, str]], pattern: re.Pattern[str]
) -> tuple[list[str], list[str]]:
    """(cards, uncarded commit shas) for commits given as (sha, parent count, message).

    Cards come oldest commit first. Merge commits never count as uncarded: the work
    they bring is in the commits they merge.
    """
    cards: dict[str, None] = {}
    uncarded: list[str] = []
    for sha, parents, message in reversed(commits):
        found = cards_in(message, pattern)
        for card in found:
            cards.setdefault(card, None)
        if not found and parents < 2:
            uncarded.append(sha)
    return list(cards), list(reversed(uncarded))
