"""agent.slack_messages: what a Slack message says (links, cards, errors, journal, limits);
pure, no clock, no delivery (that is tests/test_slack_outbox.py)."""

from __future__ import annotations

import pytest

from agent.config import CardsConfig, SiteConfig
from agent.slack_messages import (
    JOURNAL_CHARS,
    build_message,
    build_pending_message,
    card_url,
    commit_url,
)
from tests.slackcases import (
    CARDS,
    PREV,
    REMOTE,
    SHA,
    SITE,
    UNCARDED,
    all_text,
    blocks_text,
    make_record,
    mrkdwn_texts,
)


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("remote, expected", [
    ("git@github.com:acme/site.git", "https://github.com/acme/site/commit/{sha}"),
    ("git@github.com:acme/site", "https://github.com/acme/site/commit/{sha}"),
    ("ssh://git@github.com/acme/site.git", "https://github.com/acme/site/commit/{sha}"),
    ("ssh://git@ssh.github.com:443/acme/site.git", "https://github.com/acme/site/commit/{sha}"),
    ("https://github.com/acme/site.git", "https://github.com/acme/site/commit/{sha}"),
    ("https://github.com/acme/site", "https://github.com/acme/site/commit/{sha}"),
    ("https://github.com/acme/site/", "https://github.com/acme/site/commit/{sha}"),
    ("https://x-access-token:ghp_SECRET@github.com/acme/site.git",
     "https://github.com/acme/site/commit/{sha}"),
    ("https://deploy:pw@gitlab.com/acme/web/site.git",
     "https://gitlab.com/acme/web/site/-/commit/{sha}"),
    ("git@gitlab.com:acme/site.git", "https://gitlab.com/acme/site/-/commit/{sha}"),
    ("ssh://git@gitlab.com:2222/acme/site.git", "https://gitlab.com/acme/site/-/commit/{sha}"),
    ("git@bitbucket.org:acme/site.git", "https://bitbucket.org/acme/site/commits/{sha}"),
    ("https://user@bitbucket.org/acme/site.git", "https://bitbucket.org/acme/site/commits/{sha}"),
])
def test_commit_url_known_hosts(remote, expected):
    url = commit_url(remote, SHA)
    assert url == expected.format(sha=SHA)
    assert "SECRET" not in url and "pw" not in url.split("/")[2]


@pytest.mark.parametrize("remote", [
    "git@git.example.com:acme/site.git",
    "https://git.example.com/acme/site.git",
    "https://github.com.evil.example/acme/site.git",
    "/srv/git/site.git",
    "file:///srv/git/site.git",
    "https://github.com/acme",  # no repository
    "https://github.com/acme/site/extra",  # not a repository URL
    "",
])
def test_commit_url_unknown_is_none(remote):
    assert commit_url(remote, SHA) is None


def test_commit_url_needs_a_commit():
    assert commit_url(REMOTE, "not-a-sha") is None
    assert commit_url(REMOTE, "") is None


def test_card_url():
    assert card_url("https://trello.com/c/{card}", "B321") == "https://trello.com/c/B321"
    assert card_url("https://t.example/c/{card}", "B 3/2") == "https://t.example/c/B%203%2F2"
    assert card_url("https://trello.com/b/abc/board", "B321") == "https://trello.com/b/abc/board"
    assert card_url(None, "B321") is None


# --------------------------------------------------------------------------- message content


def test_deployed_message():
    payload = build_message(make_record(uncarded_commits=[UNCARDED]), site=SITE, cards=CARDS,
                            remote=REMOTE)
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == ":white_check_mark: dev1: deployed"
    text = blocks_text(payload)
    assert "dev1 · flag `dev1`" in text
    assert f"<https://github.com/acme/site/commit/{SHA}|`a1b2c3d`>" in text
    assert f"(was <https://github.com/acme/site/commit/{PREV}|`0f1e2d3`>)" in text
    assert "<https://trello.example.com/c/B321|B321>, <https://trello.example.com/c/B322|B322>" \
        in text
    assert ":warning: 1 commit without a card: `ccccccc`" in text
    assert ":white_check_mark: `home` 200 · 12 ms · ok" in text
    assert "*Duration*\n12.3 s" in text
    assert "<https://dev1.example.com/content/files/ci-cd.html|ci-cd.html>" in text
    assert "<https://dev1.example.com/content/files/ci-cd.txt|ci-cd.txt>" in text
    assert "*Trigger*" not in text  # a poll is the normal case
    assert "*Error*" not in text and "```" not in text
    fallback = payload["text"]
    assert fallback.count("\n") <= 1
    assert fallback.startswith(":white_check_mark: dev1: deployed dev1 a1b2c3d in 12.3 s")
    assert "cards: B321, B322" in fallback and "1 uncarded commit" in fallback


def test_release_branch_version_trigger_and_no_cards():
    record = make_record(branch="staging1-1.3.22", version="1.3.22", cards=[], trigger="manual")
    payload = build_message(record, site=SITE, cards=CardsConfig(), remote=REMOTE)
    text = blocks_text(payload)
    assert "`staging1-1.3.22` · version 1.3.22" in text
    assert "*Cards* no cards" in text
    assert "*Trigger*\nmanual deploy" in text
    assert "staging1-1.3.22 1.3.22 a1b2c3d" in payload["text"]
    assert "no cards" in payload["text"]


def test_cards_without_a_board_url_are_plain_and_board_without_placeholder_links_board():
    plain = blocks_text(build_message(make_record(), site=SITE, cards=CardsConfig(),
                                      remote=REMOTE))
    assert "*Cards* B321, B322" in plain
    board = CardsConfig(board_url="https://trello.com/b/abc/site")
    linked = blocks_text(build_message(make_record(), site=SITE, cards=board, remote=REMOTE))
    assert "<https://trello.com/b/abc/site|B321>" in linked


def test_rolled_back_message_has_error_and_journal_tail():
    payload = build_message(make_record("rolled_back"), site=SITE, cards=CARDS, remote=REMOTE)
    assert payload["blocks"][0]["text"]["text"] == ":leftwards_arrow_with_hook: dev1: rolled back"
    text = blocks_text(payload)
    assert "*Error*\nchecks failed: home: expected 200, got 500" in text
    assert f"*Live now*\n<https://github.com/acme/site/commit/{PREV}|`0f1e2d3`>" in text
    assert "*Failed at*\nchecks" in text
    assert ":x: `home` 500 · 30 ms · *fail*: expected 200, got 500" in text
    journal = next(t for t in mrkdwn_texts(payload) if t.startswith("*Journal*"))
    assert journal.startswith("*Journal* (last 15 lines)\n```\n") and journal.endswith("\n```")
    lines = journal.split("```")[1].strip("\n").split("\n")
    assert lines == [f"Nov 26 14:00:{i:02d} ghost[42]: line {i}" for i in range(25, 40)]
    first, second = payload["text"].split("\n")
    assert first.startswith(":leftwards_arrow_with_hook: dev1: rolled back dev1 a1b2c3d")
    assert second == "checks failed: home: expected 200, got 500 (live now: 0f1e2d3)"


def test_failed_message():
    record = make_record("failed", error="build failed: npm ci exited 1", step="build", checks=[],
                         live_commit=PREV, journal_tail=[])
    payload = build_message(record, site=SITE, cards=CARDS, remote=REMOTE)
    assert payload["blocks"][0]["text"]["text"] == ":x: dev1: failed"
    text = blocks_text(payload)
    assert "*Error*\nbuild failed: npm ci exited 1" in text
    assert "*Failed at*\nbuild" in text
    assert "*Checks* none ran (the build failed)" in text
    assert payload["text"].startswith(":x: dev1: failed dev1 a1b2c3d")


def test_operator_rollback_and_recovery_triggers():
    for trigger, words in (("rollback", "operator rollback"), ("recovery", "recovery")):
        text = blocks_text(build_message(make_record("rolled_back", trigger=trigger), site=SITE,
                                         cards=CARDS, remote=REMOTE))
        assert f"*Trigger*\n{words}" in text


def test_pending_message():
    pending = {"branch": "dev1", "commit": SHA,
               "reason": "waiting for the window (03:30, 60 min, Europe/Paris)"}
    payload = build_pending_message(SITE, pending, remote=REMOTE)
    assert payload["blocks"][0]["text"]["text"] == ":hourglass_flowing_sand: dev1: pending"
    text = blocks_text(payload)
    assert f"<https://github.com/acme/site/commit/{SHA}|`a1b2c3d`>" in text
    assert "*Why*\nwaiting for the window (03:30, 60 min, Europe/Paris)" in text
    assert "ci-cd.html" in text and "ci-cd.txt" in text
    assert payload["text"] == (":hourglass_flowing_sand: dev1: pending dev1 a1b2c3d\n"
                               "waiting for the window (03:30, 60 min, Europe/Paris)")
    # The API's two-argument form works too (no commit link without a remote).
    assert "`a1b2c3d`" in blocks_text(build_pending_message(SITE, pending))


def test_unknown_host_commit_is_not_linked_and_no_ci_cd_url():
    site = SiteConfig(**{**SITE.__dict__, "ci_cd_url": None})
    payload = build_message(make_record(), site=site, cards=CARDS, remote="/srv/git/site.git")
    text = blocks_text(payload)
    assert "*Commit*\n`a1b2c3d` (was `0f1e2d3`)" in text
    assert "ci-cd.html" not in text and "http" not in text.split("*Cards*")[0]


def test_untrusted_text_is_escaped():
    record = make_record(
        "rolled_back", branch="feat/<b>&x", error="<script>alert(1)</script> & <!channel>",
        journal_tail=["<tag> & ```boom```", "\x1b[31mred\x1b[0m"],
        checks=[{"name": "<home>", "ok": False, "status": None, "ms": 5000,
                 "error": "timed out <after> 5s"}],
    )
    payload = build_message(record, site=SITE, cards=CARDS, remote=REMOTE)
    dumped = all_text(payload)
    assert "<script>" not in dumped and "<!channel>" not in dumped and "<b>" not in dumped
    text = blocks_text(payload)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt;" in text
    assert "`feat/&lt;b&gt;&amp;x`" in text
    assert ":x: `&lt;home&gt;` no answer · 5000 ms · *fail*: timed out &lt;after&gt; 5s" in text
    journal = next(t for t in mrkdwn_texts(payload) if t.startswith("*Journal*"))
    assert journal.count("```") == 2  # a ``` inside the journal cannot close the block
    assert "\x1b" not in journal and "red" in journal
    assert "&lt;script&gt;" in payload["text"]


def test_long_content_stays_within_block_kit_limits():
    record = make_record(
        "rolled_back", branch="b" * 300, error="E" * 10_000,
        cards=[f"B{n}" for n in range(100, 200)],
        uncarded_commits=[f"{n:040x}" for n in range(40)],
        checks=[{"name": f"c{n}", "ok": False, "status": 500, "ms": 1, "error": "x" * 500}
                for n in range(30)],
        journal_tail=["J" * 1000] * 50, history_rewritten=True,
    )
    payload = build_message(record, site=SITE, cards=CARDS, remote=REMOTE)
    assert len(payload["blocks"]) <= 50
    assert len(payload["text"]) <= 4000
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if "text" in block and block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        assert len(block.get("fields", [])) <= 10
        assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        assert len(block.get("elements", [])) <= 10
    journal = next(t for t in mrkdwn_texts(payload) if t.startswith("*Journal*"))
    assert len(journal.split("```")[1]) <= JOURNAL_CHARS + 2
    text = blocks_text(payload)
    assert ":warning: 40 commits without a card:" in text and "and 30 more" in text
    assert "history was rewritten" in text
