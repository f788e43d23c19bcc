"""A deploy killed at each failpoint leaves a consistent site once a fresh `once` has run
(issue #9, class 8), through the real `ghost-agent` command.

For every point: deploy a first commit cleanly, push a second one, run `once` with
GHOST_AGENT_FAILPOINTS="<point>=kill" and require that the process died by SIGKILL (the point
was really reached), then run `once` without failpoints and check:

- a verified release is live: the Ghost stand-in serves the expected page (the new commit's
  when the deploy was finished or recovered, the old one's when it was rolled back), and
  ci-cd.json's current.commit names the release the live symlink points at;
- no stale lock (a third `once` does not exit 75), no `.staging-*` / `.index-*` leftovers and
  no release directory besides the state's releases and the live one;
- Slack heard of every deploy record in ci-cd.json exactly once, and of nothing else.

`during-switch-back` kills a deploy whose new release fails its checks (no index.html: the
Ghost stand-in answers 500), while it rolls back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from agent.failpoints import ENV as FAILPOINTS_ENV
from agent.failpoints import POINTS
from tests.agentsite import AGENT_TIMEOUT, AgentSite, agent_argv, page
from tests.hostile_cases import consistency_problems
from tests.slackstub import SlackStub

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier

# Points on the deploy path that a deploy which verifies goes through.
DEPLOY_POINTS = [p for p in POINTS if p != "during-switch-back"]


@pytest.fixture
def slack():
    with SlackStub() as stub:
        yield stub


@pytest.fixture
def site(host: AgentSite, slack: SlackStub) -> AgentSite:
    """The dev1 host with Slack, a build step (so `during-build` has a build to be killed in)
    and a short verify budget (a failing release costs about a second)."""
    host.extra_config = (f'\n[slack]\nwebhook_url = "{slack.webhook_url()}"\n'
                         "timeout_seconds = 3\n")
    build = [[sys.executable, "-c", "open('built.txt', 'w').write('built')"]]
    host.write_config(verify_seconds=1, keep=3, build=json.dumps(build))
    return host


def run_agent(host: AgentSite, *args: str, failpoints: str | None = None,
              ) -> subprocess.CompletedProcess:
    env = host.env()
    env.pop(FAILPOINTS_ENV, None)
    if failpoints:
        env[FAILPOINTS_ENV] = failpoints
    return subprocess.run([*agent_argv(), "--config", str(host.config_path), *args], env=env,
                          capture_output=True, text=True, timeout=AGENT_TIMEOUT, check=False)


def assert_consistent(host: AgentSite, slack: SlackStub, live_commit: str, headline: str) -> None:
    """See tests/hostile_cases.consistency_problems (shared with tests/hostile_report.py)."""
    def again() -> tuple[int, str]:
        result = run_agent(host, "once")
        return result.returncode, result.stderr

    problems = consistency_problems(host, slack, live_commit, headline, again)
    assert not problems, "\n".join(problems)


def deploy_first(host: AgentSite, git_remote) -> str:
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B101 first")}, "B101: first")
    result = run_agent(host, "once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B101 first"))
    return sha


def kill_at(host: AgentSite, point: str) -> subprocess.CompletedProcess:
    killed = run_agent(host, "once", failpoints=f"{point}=kill")
    assert killed.returncode == -signal.SIGKILL, (
        f"failpoint {point} was never hit: `once` exited {killed.returncode}\n"
        f"stdout: {killed.stdout}\nstderr: {killed.stderr}")
    assert "Traceback" not in killed.stderr
    return killed


@pytest.mark.parametrize("point", DEPLOY_POINTS)
def test_a_deploy_killed_at_a_failpoint_is_finished_by_the_next_run(site, git_remote, slack,
                                                                     point):
    deploy_first(site, git_remote)
    second = git_remote.commit_and_push("dev1", {"index.html": page("B102 second")},
                                        "B102: second")
    kill_at(site, point)
    recovery = run_agent(site, "once")
    assert recovery.returncode == 0, (recovery.stdout, recovery.stderr)
    assert "Traceback" not in recovery.stderr
    assert_consistent(site, slack, second, "B102 second")
    assert site.get("/built.txt") == (200, "built")
    assert site.ci_cd()["deploys"][0]["outcome"] == "deployed"


def test_a_rollback_killed_while_switching_back_is_finished_by_the_next_run(site, git_remote,
                                                                            slack):
    first = deploy_first(site, git_remote)
    bad = git_remote.commit_and_push("dev1", {"index.html": None}, "B500: drop the index")
    kill_at(site, "during-switch-back")
    recovery = run_agent(site, "once")
    # The recovery finishes the rollback (exit 1: a deploy did not succeed) ...
    assert recovery.returncode in (0, 1), (recovery.stdout, recovery.stderr)
    assert "Traceback" not in recovery.stderr
    assert_consistent(site, slack, first, "B101 first")
    latest = site.ci_cd()["deploys"][0]
    assert (latest["commit"], latest["outcome"]) == (bad, "rolled_back")
    # ... and the bad commit is quarantined: not tried again.
    assert bad in site.state()["quarantine"]


def test_every_failpoint_is_covered():
    assert set(DEPLOY_POINTS) | {"during-switch-back"} == set(POINTS)
    assert os.environ.get(FAILPOINTS_ENV) is None
