"""agent.cards: card IDs found in the commits a release brings."""

from __future__ import annotations

import re

from agent.cards import cards_in, release_cards

DEFAULT = re.compile("[A-Z][0-9]{3,}")


def sha(n: int) -> str:
    return f"{n:040x}"


def test_cards_in_one_message_keep_order_without_repeats():
    assert cards_in("B321 fix, see A100 and B321 again; C12 is too short", DEFAULT) == [
        "B321", "A100",
    ]  # fmt: skip


def test_cards_come_oldest_commit_first():
    commits = [  # newest first, as git log gives them
        (sha(3), 1, "C300 newest"),
        (sha(2), 1, "B200 middle"),
        (sha(1), 1, "A100 oldest"),
    ]
    cards, uncarded = release_cards(commits, DEFAULT)
    assert cards == ["A100", "B200", "C300"]
    assert uncarded == []


def test_duplicate_cards_across_commits_listed_once():
    commits = [(sha(3), 1, "B321 more"), (sha(2), 1, "A100 and B321"), (sha(1), 1, "B321 start")]
    cards, _ = release_cards(commits, DEFAULT)
    assert cards == ["B321", "A100"]


def test_uncarded_commits_listed_newest_first():
    commits = [
        (sha(4), 1, "typo"), (sha(3), 1, "B321 work"), (sha(2), 1, "wip"), (sha(1), 0, "init"),
    ]  # fmt: skip
    cards, uncarded = release_cards(commits, DEFAULT)
    assert cards == ["B321"]
    assert uncarded == [sha(4), sha(2), sha(1)]


def test_merge_commits_never_count_as_uncarded():
    commits = [
        (sha(3), 2, "Merge branch 'feature'"),
        (sha(2), 3, "Octopus merge"),
        (sha(1), 1, "B321 the work"),
    ]
    cards, uncarded = release_cards(commits, DEFAULT)
    assert cards == ["B321"]
    assert uncarded == []


def test_merge_commit_cards_still_count():
    cards, uncarded = release_cards([(sha(1), 2, "Merge pull request: D444")], DEFAULT)
    assert cards == ["D444"]
    assert uncarded == []


def test_custom_pattern():
    jira = re.compile(r"\bPROJ-\d+\b")
    commits = [(sha(2), 1, "PROJ-12 and B321"), (sha(1), 1, "B999 only")]
    cards, uncarded = release_cards(commits, jira)
    assert cards == ["PROJ-12"]
    assert uncarded == [sha(1)]


def test_no_commits():
    assert release_cards([], DEFAULT) == ([], [])
