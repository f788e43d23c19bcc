"""Visible work through the command: Slack gets one message per release and outcome, never on
a no-op poll (in this process); a hanging Slack does not hold a deploy, and secrets reach no
output (the real process, whose exit ends a delivery that hangs)."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.agentsite import agent_argv
from tests.agentsite import page
from tests.faketime import faketime_env
from tests.slackstub import SlackStub

WEBHOOK_SECRET = "/services/T0/B0/CANARYHOOK987"
TOKEN_SECRET = "xoxb-CANARYTOKEN654"
GIT_SECRET = "GITCANARY321"


@pytest.fixture
def slack():
    with SlackStub() as stub:
        yield stub


def with_slack(host, slack, timeout: float = 2.0, extra: str = "") -> None:
    host.extra_config = (f'\n[slack]\nwebhook_url = "{slack.webhook_url(WEBHOOK_SECRET)}"\n'
                         f"timeout_seconds = {timeout}\n" + extra)
    host.write_config()


def texts(slack) -> list[str]:
    return [b["text"] for b in slack.bodies() if isinstance(b, dict) and "text" in b]


def test_one_message_per_release_and_none_on_a_no_op_poll(host, git_remote, slack):
    with_slack(host, slack)
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B1")}, "B321: footer")
    assert host.call("once").returncode == 0
    assert host.call("once").returncode == 0  # no-op
    assert host.call("once").returncode == 0  # no-op
    [message] = [b for b in slack.bodies() if isinstance(b, dict)]
    assert "deployed" in message["text"] and sha[:7] in message["text"]
    assert "B321" in str(message["blocks"])
    assert "ci-cd.html" in str(message["blocks"])


def test_rollback_message_carries_the_error_and_the_cards(host, git_remote, slack):
    with_slack(host, slack)
    git_remote.commit_and_push("dev1", {"index.html": page("B1")}, "B101: one")
    host.call("once")
    git_remote.commit_and_push("dev1", {"index.html": None}, "B555: drop the index")
    assert host.call("once").returncode == 1
    last = slack.bodies()[-1]
    assert "rolled back" in last["text"]
    assert "B555" in str(last["blocks"])
    assert "500" in str(last["blocks"])


@pytest.mark.slow
def test_a_hanging_slack_does_not_hold_the_deploy(host, git_remote, slack):
    with_slack(host, slack, timeout=1.0)
    slack.hang(30)
    git_remote.commit_and_push("dev1", {"index.html": page("B1 hang")}, "B101: x")
    started = time.monotonic()
    result = host.run("once")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert host.get("/") == (200, page("B1 hang"))
    assert elapsed < 6, elapsed  # the deploy itself is ~1 s; Slack may cost its 1 s timeout
    assert list((host.state_dir / "slack-spool").glob("0*.json"))  # it waits for later
    slack.recover()
    # The spool's backoff (5 s after the first miss) must have passed: move the clock.
    later = (datetime.now(ZoneInfo("Europe/Paris")) + timedelta(seconds=30))
    result = subprocess.run([*agent_argv(), "--config", str(host.config_path), "once"],
                            env=host.env() | faketime_env(later.strftime("%Y-%m-%d %H:%M:%S")),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0
    assert any("deployed" in t for t in texts(slack))
    assert not list((host.state_dir / "slack-spool").glob("0*.json"))


def test_pending_is_announced_once_per_target(host, git_remote, slack):
    host.flag = "prod-asterix*"
    with_slack(host, slack, extra='\n[window]\nstart = "03:30"\nminutes = 60\n'
                                  'timezone = "Europe/Paris"\n')
    git_remote.commit_and_push("prod-asterix-1.0", {"index.html": page("B1")}, "B101: x")
    def once_at(when: str):
        return subprocess.run([*agent_argv(), "--config", str(host.config_path), "once"],
                              env=host.env() | faketime_env(when), capture_output=True,
                              text=True, timeout=120, check=False)

    once_at("2026-11-27 14:00:00")
    once_at("2026-11-27 18:00:00")
    once_at("2026-11-28 01:00:00")
    pending = [t for t in texts(slack) if "pending" in t.lower()]
    assert len(pending) == 1
    git_remote.commit_and_push("prod-asterix-1.0", {"index.html": page("B2")}, "B102: y")
    once_at("2026-11-28 02:00:00")
    assert len([t for t in texts(slack) if "pending" in t.lower()]) == 2


def test_no_secret_reaches_stderr_the_ci_cd_files_or_slack(host, git_remote, slack, http_git,
                                                           http_git_remote):
    http_git.require_auth = ("deploy", GIT_SECRET)
    remote = http_git.repo_url("site.git", user="deploy", password=GIT_SECRET)
    host.write_config(remote=remote)
    with_slack(host, slack)
    host.write_config(remote=remote)
    http_git_remote.commit_and_push("dev1", {"index.html": page("B1")}, "B101: one")
    assert host.run("once", "--debug").returncode == 0, "deploy over authenticated HTTP"
    http_git_remote.commit_and_push("dev1", {"index.html": None}, "B102: broken")
    bad = host.run("once", "--debug")
    assert bad.returncode == 1
    http_git.stop()  # unreachable now: the error names the remote
    down = host.run("once", "--debug")
    assert down.returncode == 75
    outputs = [bad.stdout, bad.stderr, down.stdout, down.stderr, host.run("status").stdout,
               host.run("status", "--json").stdout]
    files = [p.read_bytes().decode() for p in (host.content / "files").iterdir()]
    spool = [p.read_text() for p in (host.state_dir / "slack-spool").glob("*.json")]
    state = (host.state_dir / "state.json").read_text()
    everything = "\n".join(outputs + files + [str(b) for b in slack.bodies()] + spool + [state])
    for secret in (GIT_SECRET, "CANARYHOOK987", TOKEN_SECRET):
        assert secret not in everything
    assert "rolled back" in str(slack.bodies()[-1])
