"""agent.slack_outbox: delivery through a real HTTP stand-in for Slack: the spool, its order
and bound, backoff and Retry-After, errors reported once, a hanging Slack, no secret in what
is sent or logged."""

from __future__ import annotations

import dataclasses
import json
import logging
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import SlackConfig
from agent.slack_messages import build_message
from agent.slack_outbox import SlackNotifier
from tests.slackcases import (
    CANARIES,
    CANARY_PATH,
    CANARY_TOKEN,
    CARDS,
    PREV,
    REMOTE,
    SHA,
    SITE,
    T0,
    UNCARDED,
    FakeClock,
    all_text,
    make_record,
    spooled,
    state_of,
)
from tests.slackstub import SlackStub


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



# --------------------------------------------------------------------------- what is sent


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


@pytest.mark.slow
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
