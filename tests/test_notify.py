"""Slack notifications: message content, and delivery through a real HTTP stand-in for Slack."""

from __future__ import annotations

import dataclasses

import json
import logging
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.config import CardsConfig, SiteConfig, SlackConfig
from agent.models import DeployRecord
from agent.slack_messages import (
    JOURNAL_CHARS,
    build_message,
    build_pending_message,
    card_url,
    commit_url,
)
from agent.slack_outbox import SlackNotifier
from tests.slackstub import SlackStub

SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
PREV = "0f1e2d3c4b5a69788796a5b4c3d2e1f009876543"
UNCARDED = "cccccccccccccccccccccccccccccccccccccccc"
REMOTE = "git@github.com:acme/site.git"
CANARY_PATH = "/services/T0/B0/CANARYWEBHOOK123"
CANARY_TOKEN = "xoxb-CANARYTOKEN456"
CANARIES = ("CANARYWEBHOOK123", "CANARYTOKEN456")
T0 = datetime(2026, 11, 26, 14, 0, 0, tzinfo=timezone.utc)

SITE = SiteConfig(
    name="dev1", flag="dev1", public_url="https://dev1.example.com",
    local_url="http://127.0.0.1:2368", content_dir=Path("/srv/content"),
    ci_cd_dir=Path("/srv/content/files"), ci_cd_url="https://dev1.example.com/content/files",
)
CARDS = CardsConfig(board_url="https://trello.example.com/c/{card}")


# --------------------------------------------------------------------------- helpers


class FakeClock:
    """An injectable `now`; its sleep() moves it forward instead of waiting."""

    def __init__(self, start: datetime = T0):
        self.moment = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def make_record(outcome: str = "deployed", **changes: Any) -> DeployRecord:
    values: dict[str, Any] = dict(
        trigger="poll", branch="dev1", version=None, commit=SHA, previous_commit=PREV,
        outcome=outcome, started_at="2026-11-26T14:00:00+00:00",
        finished_at="2026-11-26T14:00:12+00:00", cards=["B321", "B322"],
        uncarded_commits=[], site="dev1", live_commit=SHA if outcome == "deployed" else PREV,
        checks=[{"name": "home", "url": "http://127.0.0.1:2368/", "ok": True, "status": 200,
                 "ms": 12, "error": None}],
        duration_ms=12345,
    )
    if outcome != "deployed":
        values.update(
            error="checks failed: home: expected 200, got 500", step="checks",
            checks=[{"name": "home", "url": "http://127.0.0.1:2368/", "ok": False,
                     "status": 500, "ms": 30, "error": "expected 200, got 500"}],
            journal_tail=[f"Nov 26 14:00:{i:02d} ghost[42]: line {i}" for i in range(40)],
        )
    values.update(changes)
    return DeployRecord(**values)


def all_text(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False)


def mrkdwn_texts(payload: dict) -> list[str]:
    """Every text of the blocks, in order."""
    texts = []
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for item in block.get("fields", []) + block.get("elements", []):
            texts.append(item["text"])
    return texts


def blocks_text(payload: dict) -> str:
    return "\n".join(mrkdwn_texts(payload))


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("[0-9]*.json"))


def state_of(spool: Path) -> dict:
    path = spool / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def slack() -> Iterator[SlackStub]:
    with SlackStub() as stub:
        yield stub


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_notifier(slack: SlackStub, tmp_path: Path, clock: FakeClock):
    def make(*, token: bool = False, timeout: float = 2.0, webhook_path: str = CANARY_PATH,
             channel: str = "#ci-cd", spool: Path | None = None, **kwargs: Any) -> SlackNotifier:
        if token:
            config = SlackConfig(token=CANARY_TOKEN, channel=channel, timeout_seconds=timeout,
                                 api_url=slack.api_url)
        else:
            config = SlackConfig(webhook_url=slack.webhook_url(webhook_path),
                                 timeout_seconds=timeout)
        return SlackNotifier(config, site=SITE, cards=CARDS, remote=REMOTE,
                             spool_dir=spool or tmp_path / "state" / "slack-spool",
                             now=clock, sleep=clock.sleep, **kwargs)

    return make


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


def test_secrets_are_masked_in_messages(slack, make_notifier):
    make_notifier()  # registers the webhook URL with agent.redact, as the config loader does
    make_notifier(token=True)
    record = make_record("failed", error=f"POST {slack.webhook_url(CANARY_PATH)} said no; "
                                         f"token {CANARY_TOKEN}; https://u:pw123@x.example/r",
                         journal_tail=[f"Authorization: Bearer {CANARY_TOKEN}"],
                         branch=f"x-{CANARY_TOKEN}")
    payload = build_message(record, site=SITE, cards=CARDS, remote=REMOTE)
    dumped = all_text(payload)
    for canary in CANARIES + ("pw123",):
        assert canary not in dumped
    assert "***" in dumped


# --------------------------------------------------------------------------- delivery


def test_webhook_delivery(slack, make_notifier, tmp_path):
    notifier = make_notifier()
    notifier.deployed(make_record())
    assert len(slack.requests) == 1
    request = slack.requests[0]
    assert request.method == "POST" and request.path == CANARY_PATH
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.status == 200
    body = request.body
    assert body["text"].startswith(":white_check_mark: dev1: deployed")
    assert body["blocks"][0]["text"]["text"] == ":white_check_mark: dev1: deployed"
    assert body["unfurl_links"] is False
    assert spooled(tmp_path / "state" / "slack-spool") == []
    assert notifier.problem() is None


def test_token_delivery(slack, make_notifier, tmp_path):
    notifier = make_notifier(token=True)
    notifier.deployed(make_record("rolled_back"))
    notifier.pending("dev1", {"branch": "dev1", "commit": PREV, "reason": "waiting for the window"})
    assert [r.path for r in slack.requests] == ["/api/chat.postMessage"] * 2
    first = slack.requests[0]
    assert first.headers["Authorization"] == f"Bearer {CANARY_TOKEN}"
    assert first.body["channel"] == "#ci-cd"
    assert first.body["text"].startswith(":leftwards_arrow_with_hook: dev1: rolled back")
    assert first.body["blocks"][0]["type"] == "header"
    assert slack.requests[1].body["text"].startswith(":hourglass_flowing_sand: dev1: pending")
    assert spooled(tmp_path / "state" / "slack-spool") == []


def test_outage_spools_and_delivers_in_order(slack, make_notifier, clock, tmp_path):
    spool = tmp_path / "state" / "slack-spool"
    notifier = make_notifier()
    slack.fail_with(500, "internal_error", times=3)
    first, second = make_record(commit=PREV, previous_commit=None), make_record()
    started = time.monotonic()
    notifier.deployed(first)  # attempt 1: 500
    notifier.deployed(second)  # backoff: not before T0 + 5 s
    notifier.pending("dev1", {"branch": "dev1", "commit": UNCARDED, "reason": "waiting"})
    assert time.monotonic() - started < 2
    assert len(slack.requests) == 1
    assert len(spooled(spool)) == 3
    assert state_of(spool)["attempts"] == 1

    clock.advance(5)
    assert notifier.deliver() == 0  # attempt 2: 500
    clock.advance(9.9)
    assert notifier.deliver() == 0  # backoff 10 s: too early, nothing sent
    assert len(slack.requests) == 2
    clock.advance(0.1)
    assert notifier.deliver() == 0  # attempt 3: 500
    assert state_of(spool)["attempts"] == 3
    assert datetime.fromisoformat(state_of(spool)["next_attempt_at"]) == T0 + timedelta(
        seconds=5 + 10 + 20)

    clock.advance(20)
    assert notifier.deliver() == 3
    delivered = [r.body["text"].split("\n")[0] for r in slack.answered(200)]
    assert delivered == [
        ":white_check_mark: dev1: deployed dev1 0f1e2d3 in 12.3 s",
        ":white_check_mark: dev1: deployed dev1 a1b2c3d in 12.3 s",
        ":hourglass_flowing_sand: dev1: pending dev1 ccccccc",
    ]
    assert spooled(spool) == []
    assert state_of(spool).get("attempts", 0) == 0
    assert notifier.deliver() == 0 and len(slack.requests) == 6


def test_backoff_doubles_up_to_ten_minutes(slack, make_notifier, clock, tmp_path):
    spool = tmp_path / "state" / "slack-spool"
    notifier = make_notifier()
    slack.fail_with(503, "service unavailable")
    notifier.deployed(make_record())
    delays = []
    for _ in range(9):
        state = state_of(spool)
        due = datetime.fromisoformat(state["next_attempt_at"])
        delays.append((due - clock()).total_seconds())
        before = len(slack.requests)
        clock.moment = due - timedelta(milliseconds=1)
        notifier.deliver()
        assert len(slack.requests) == before  # never before the next-attempt time
        clock.moment = due
        notifier.deliver()
        assert len(slack.requests) == before + 1
    assert delays == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert notifier.problem() is None  # temporary trouble is not a permanent problem


@pytest.mark.parametrize("token", [False, True], ids=["webhook", "token"])
def test_429_retry_after_is_respected(slack, make_notifier, clock, token, tmp_path):
    notifier = make_notifier(token=token)
    body = {"ok": False, "error": "ratelimited"} if token else "rate_limited"
    slack.fail_with(429, body, retry_after=30, times=1)
    notifier.deployed(make_record())
    assert [r.status for r in slack.requests] == [429]
    state = state_of(tmp_path / "state" / "slack-spool")
    assert datetime.fromisoformat(state["next_attempt_at"]) == T0 + timedelta(seconds=30)
    clock.advance(29)
    assert notifier.deliver() == 0 and len(slack.requests) == 1
    clock.advance(1)
    assert notifier.deliver() == 1
    assert [r.status for r in slack.requests] == [429, 200]


def test_short_retry_after_is_waited_out_within_the_call(slack, make_notifier, clock):
    notifier = make_notifier()
    slack.fail_with(429, "rate_limited", retry_after=1, times=1)
    notifier.deployed(make_record())
    assert [r.status for r in slack.requests] == [429, 200]
    assert clock.slept == [1.0]


@pytest.mark.parametrize("token, status, body, words", [
    (False, 404, "no_service", "no_service"),
    (False, 403, "invalid_token", "invalid_token"),
    (False, 404, "channel_not_found", "channel_not_found"),
    (True, 200, {"ok": False, "error": "invalid_auth"}, "invalid_auth"),
    (True, 200, {"ok": False, "error": "channel_not_found"}, "channel_not_found"),
    (True, 200, {"ok": False, "error": "not_in_channel"}, "invite the app"),
], ids=["no_service", "invalid_token", "webhook_channel", "invalid_auth", "api_channel",
        "not_in_channel"])
def test_permanent_error_reported_once_and_not_retried(slack, make_notifier, clock, caplog,
                                                       tmp_path, token, status, body, words):
    caplog.set_level(logging.DEBUG)
    spool = tmp_path / "state" / "slack-spool"
    notifier = make_notifier(token=token)
    slack.fail_with(status, body)
    notifier.deployed(make_record(commit=PREV, previous_commit=None))
    notifier.deployed(make_record())
    for _ in range(3):
        clock.advance(3600)
        assert notifier.deliver() == 0
    assert len(slack.requests) == 1
    warnings = [r for r in caplog.records if r.name == "agent" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert words in warnings[0].getMessage()
    problem = notifier.problem()
    assert problem is not None and words in problem and "2 messages wait" in problem
    assert len(spooled(spool)) == 2  # kept, for when the settings are fixed
    # A restart with the same settings does not retry either.
    assert make_notifier(token=token).deliver() == 0 and len(slack.requests) == 1


def test_changed_settings_clear_the_problem_and_deliver_in_order(slack, make_notifier, clock,
                                                                 tmp_path):
    spool = tmp_path / "state" / "slack-spool"
    slack.fail_with(404, "no_service")
    broken = make_notifier()
    broken.deployed(make_record(commit=PREV, previous_commit=None))
    broken.deployed(make_record())
    assert broken.problem() is not None
    slack.recover()
    fixed = make_notifier(webhook_path="/services/T0/B0/NEWHOOK789")
    assert fixed.problem() is None
    assert fixed.deliver() == 2
    sent = slack.answered(200)
    assert [r.path for r in sent] == ["/services/T0/B0/NEWHOOK789"] * 2
    assert [r.body["text"].split("\n")[0].split()[-4] for r in sent] == ["0f1e2d3", "a1b2c3d"]
    assert spooled(spool) == [] and broken.problem() is None


@pytest.mark.parametrize("token", [False, True], ids=["webhook", "token"])
def test_invalid_payload_is_dropped_once(slack, make_notifier, caplog, tmp_path, token):
    caplog.set_level(logging.INFO)
    notifier = make_notifier(token=token)
    if token:
        slack.fail_with(200, {"ok": False, "error": "invalid_blocks"}, times=1)
    else:
        slack.fail_with(400, "invalid_payload", times=1)
    notifier.deployed(make_record(commit=PREV, previous_commit=None))
    notifier.deployed(make_record())
    assert [r.status for r in slack.requests] == [400 if not token else 200, 200]
    assert "a1b2c3d" in slack.requests[1].body["text"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "dropped" in warnings[0]
    assert ("invalid_blocks" if token else "invalid_payload") in warnings[0]
    assert spooled(tmp_path / "state" / "slack-spool") == []
    assert notifier.problem() is None


def test_hanging_slack_does_not_delay_the_deploy(slack, make_notifier, clock, tmp_path):
    spool = tmp_path / "state" / "slack-spool"
    notifier = make_notifier(timeout=1.0)
    slack.hang(10)
    started = time.monotonic()
    notifier.deployed(make_record())
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 0.5, elapsed
    assert slack.wait_for(1)
    assert len(spooled(spool)) == 1  # kept for later

    clock.advance(5)  # the backoff is over: pending() tries again, and hangs again
    started = time.monotonic()
    notifier.pending("dev1", {"branch": "dev1", "commit": PREV, "reason": "waiting"})
    assert time.monotonic() - started < 1.0 + 0.5
    assert slack.wait_for(2)
    assert len(spooled(spool)) == 2

    slack.recover()
    clock.advance(600)
    assert notifier.deliver(budget=5) == 2
    assert spooled(spool) == []
    # The hung request was answered when the stub recovered, to a client long gone; the
    # message was sent again (at least once, never lost).
    assert len(slack.requests) == 4
    texts = [r.body["text"] for r in slack.requests[-2:]]
    assert [r.status for r in slack.requests[-2:]] == [200, 200]
    assert "deployed" in texts[0] and "pending" in texts[1]


def test_spool_files_are_private_and_named_in_order(slack, make_notifier, tmp_path):
    spool = tmp_path / "state" / "slack-spool"
    slack.fail_with(500, "oops")
    notifier = make_notifier()
    for commit in (PREV, SHA, UNCARDED):
        notifier.deployed(make_record(commit=commit))
    files = spooled(spool)
    assert [f.name[:9] for f in files] == ["000000001", "000000002", "000000003"]
    assert [json.loads(f.read_text())["summary"] for f in files] == [
        "deployed dev1 0f1e2d3", "deployed dev1 a1b2c3d", "deployed dev1 ccccccc"]
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    for path in files + [spool / "state.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in spool.iterdir() if ".tmp-" in p.name]


def test_spool_is_bounded_oldest_dropped(slack, make_notifier, clock, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    spool = tmp_path / "state" / "slack-spool"
    slack.fail_with(500, "oops")
    notifier = make_notifier(max_spool=3)
    commits = [f"{n:040x}" for n in range(1, 6)]
    for commit in commits:
        notifier.deployed(make_record(commit=commit))
    assert len(spooled(spool)) == 3
    assert any("dropped the 1 oldest" in r.getMessage() for r in caplog.records)
    slack.recover()
    clock.advance(3600)
    assert notifier.deliver() == 3
    assert [r.body["text"].split("\n")[0].split()[-4] for r in slack.answered(200)] == [
        c[:7] for c in commits[2:]]


def test_never_raises(slack, make_notifier, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    notifier = make_notifier(spool=blocker / "spool")
    notifier.deployed(make_record())  # cannot spool: sent once, unspooled
    assert [r.status for r in slack.requests] == [200]
    assert notifier.deliver() == 0
    assert notifier.problem() is None
    notifier.deployed(make_record(checks=["not a dict"]))  # a broken record
    notifier.pending("dev1", None)  # type: ignore[arg-type]
    assert any("cannot spool" in r.getMessage() for r in caplog.records)

    working = make_notifier(spool=tmp_path / "spool2")
    slack.stop()  # nothing listens any more: connection refused
    working.deployed(make_record())
    assert len(spooled(tmp_path / "spool2")) == 1


def test_canary_secrets_never_leak(slack, make_notifier, clock, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict) + ["slack_sdk", "urllib3", "agent"]:
        caplog.set_level(logging.DEBUG, logger=name)
    spools = []
    for token in (False, True):
        # Each configuration's own secret turns up in the error and the journal. (A process
        # knows the secrets of its own config: the loader registers them, and so does the
        # notifier.)
        secret = CANARY_TOKEN if token else slack.webhook_url(CANARY_PATH)
        leaky = make_record("rolled_back", error=f"while posting with {secret} (see {secret[7:]})",
                            journal_tail=[f"secret={secret}", CANARY_PATH.lstrip("/"), secret])
        spool = tmp_path / f"spool-{token}"
        spools.append(spool)
        notifier = make_notifier(token=token, timeout=0.5, spool=spool)
        notifier.deployed(leaky)  # delivered
        slack.fail_with(500, {"ok": False, "error": "internal_error"} if token else "boom",
                        times=1)
        # Each call another attempt: one record is announced only once.
        leaky = dataclasses.replace(leaky, started_at="2026-11-26T14:01:00+00:00")
        notifier.deployed(leaky)  # temporary failure
        clock.advance(600)
        slack.fail_with(400 if not token else 200,
                        {"ok": False, "error": "invalid_blocks"} if token else "invalid_payload",
                        times=1)
        notifier.deliver()  # dropped
        slack.hang(5)
        leaky = dataclasses.replace(leaky, started_at="2026-11-26T14:02:00+00:00")
        notifier.deployed(leaky)  # timeout
        slack.recover()
        clock.advance(600)
        slack.fail_with(200 if token else 403,
                        {"ok": False, "error": "invalid_auth"} if token else "invalid_token")
        notifier.deliver()  # permanent
        problem = notifier.problem()
        assert problem
        for canary in CANARIES:
            assert canary not in problem
        slack.recover()

    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "slack:" in logged  # the notifier did log
    bodies = "\n".join(json.dumps(r.body) for r in slack.requests)
    assert "rolled back" in bodies
    files = "\n".join(p.read_text() for spool in spools for p in spool.iterdir() if p.is_file())
    for canary in CANARIES:
        assert canary not in logged
        assert canary not in bodies
        assert canary not in files
    # The webhook path and the token only ever travel where they belong.
    assert any(r.path == CANARY_PATH for r in slack.requests)
    assert any(r.headers.get("Authorization") == f"Bearer {CANARY_TOKEN}"
               for r in slack.requests)
    assert logging.getLogger("slack_sdk").getEffectiveLevel() <= logging.DEBUG  # test did lower


def test_a_record_is_announced_once_even_when_announced_again(slack, make_notifier, clock):
    """A kill between the spool write and the state save makes the next run announce the
    record again: the spool knows its key, whether it still waits or was sent already."""
    notifier = make_notifier()
    record = make_record("deployed")
    slack.fail_with(500, "boom", times=1)
    notifier.deployed(record)  # waits in the spool
    notifier.deployed(record)  # announced again by a run that caught up
    assert len(list(notifier.spool_dir.glob("[0-9]*.json"))) == 1
    clock.advance(600)
    notifier.deliver()
    notifier.deployed(record)  # and again, after it was sent
    notifier.deliver()
    assert len(slack.answered(200)) == 1
    assert len(slack.requests) == 2  # the refused attempt, then the one delivery
