"""A prod host: release branches, the 03:30 window under a moved clock, hold and release."""

from __future__ import annotations

import json

import pytest

from tests.agentsite import AgentSite, page
from tests.faketime import faketime_env

WINDOW = '\n[window]\nstart = "03:30"\nminutes = 60\ntimezone = "Europe/Paris"\n'


@pytest.fixture
def prod(make_host) -> AgentSite:
    host = make_host("prod-asterix*")
    host.settings["name"] = "prod-a1"
    host.extra_config = WINDOW
    host.write_config()
    return host


def run_at(host: AgentSite, when: str, *args: str):
    env = host.env() | faketime_env(when)
    import subprocess

    from tests.agentsite import agent_argv

    return subprocess.run([*agent_argv(), "--config", str(host.config_path), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_outside_the_window_the_target_waits_then_deploys_at_0330(prod, git_remote):
    sha = git_remote.commit_and_push("prod-asterix-1.3.22", {"index.html": page("B1 v1.3.22")},
                                     "B101: release 1.3.22")
    day = run_at(prod, "2026-11-27 14:00:00", "once")
    assert day.returncode == 0, day.stderr
    assert "pending: waiting for the deploy window at 2026-11-28T03:30+01:00" in day.stdout
    assert prod.restarts() == 0
    doc = prod.ci_cd()
    assert doc["pending"]["commit"] == sha
    assert doc["deploys"] == []
    assert "waiting for the deploy window" in prod.ci_cd_txt()

    status = json.loads(run_at(prod, "2026-11-27 14:05:00", "status", "--json").stdout)
    assert status["window"] == {"open": False, "next_opening": "2026-11-28T02:30:00+00:00"}

    night = run_at(prod, "2026-11-28 03:35:00", "once")
    assert night.returncode == 0, night.stderr
    assert prod.get("/") == (200, page("B1 v1.3.22"))
    doc = prod.ci_cd()
    assert doc["pending"] is None
    assert doc["current"]["version"] == "1.3.22"
    assert doc["deploys"][0]["finished_at"].startswith("2026-11-28T02:3")


def test_after_the_window_closed_it_waits_for_the_next_night(prod, git_remote):
    git_remote.commit_and_push("prod-asterix-1.0", {"index.html": page("B1")}, "B101: 1.0")
    late = run_at(prod, "2026-11-28 04:31:00", "once")
    assert late.returncode == 0
    assert "2026-11-29T03:30+01:00" in late.stdout
    assert prod.restarts() == 0


def test_newer_release_seen_before_the_window_replaces_the_pending_one(prod, git_remote):
    git_remote.commit_and_push("prod-asterix-1.3.9", {"index.html": page("B1 old")}, "B101: a")
    run_at(prod, "2026-11-27 14:00:00", "once")
    git_remote.branch_from("prod-asterix-1.3.22", "prod-asterix-1.3.9")
    newest = git_remote.commit_and_push("prod-asterix-1.3.22", {"index.html": page("B2 new")},
                                        "B102: b")
    run_at(prod, "2026-11-27 15:00:00", "once")
    assert prod.ci_cd()["pending"]["commit"] == newest
    assert run_at(prod, "2026-11-28 03:31:00", "once").returncode == 0
    assert prod.get("/") == (200, page("B2 new"))
    assert len(prod.ci_cd()["deploys"]) == 1  # only the newest was deployed


def test_deploy_ref_overrides_the_window_and_is_recorded_manual(prod, git_remote):
    git_remote.commit_and_push("prod-asterix-2.0", {"index.html": page("B1 hotfix")}, "B101: x")
    result = run_at(prod, "2026-11-27 14:00:00", "deploy", "--ref", "prod-asterix-2.0")
    assert result.returncode == 0, result.stderr
    record = prod.ci_cd()["deploys"][0]
    assert (record["trigger"], record["version"], record["outcome"]) == ("manual", "2.0",
                                                                        "deployed")


def test_hold_pauses_automatic_deploys_visibly_and_release_resumes(prod, git_remote):
    git_remote.commit_and_push("prod-asterix-1.0", {"index.html": page("B1 one")}, "B101: one")
    held = run_at(prod, "2026-11-27 14:00:00", "hold", "--reason", "migration tonight")
    assert held.returncode == 0
    night = run_at(prod, "2026-11-28 03:35:00", "once")
    assert night.returncode == 0
    assert prod.restarts() == 0
    assert "held" in prod.ci_cd()["pending"]["reason"]
    assert prod.ci_cd()["hold"]["reason"] == "migration tonight"
    assert "HOLD: automatic deploys paused" in prod.ci_cd_txt()
    assert "migration tonight" in (prod.content / "files" / "ci-cd.html").read_text()
    assert "HOLD:" in run_at(prod, "2026-11-28 03:36:00", "status").stdout
    assert run_at(prod, "2026-11-28 03:37:00", "release").returncode == 0
    assert run_at(prod, "2026-11-28 03:38:00", "once").returncode == 0
    assert prod.get("/") == (200, page("B1 one"))
    assert "hold" not in prod.ci_cd()


def test_an_older_release_does_not_replace_a_newer_live_one(prod, git_remote):
    git_remote.commit_and_push("prod-asterix-1.2", {"index.html": page("B1 1.2")}, "B101: 1.2")
    git_remote.branch_from("prod-asterix-1.3", "prod-asterix-1.2")
    git_remote.commit_and_push("prod-asterix-1.3", {"index.html": page("B2 1.3")}, "B102: 1.3")
    assert run_at(prod, "2026-11-28 03:35:00", "once").returncode == 0
    git_remote.git_bare("symbolic-ref", "HEAD", "refs/heads/prod-asterix-1.2")
    git_remote.delete_branch("prod-asterix-1.3")
    result = run_at(prod, "2026-11-28 03:40:00", "once")
    assert result.returncode == 0
    assert "older than live" in result.stdout
    assert prod.get("/") == (200, page("B2 1.3"))


def test_spread_offset_is_stable_per_host_and_spreads_a_fleet():
    from datetime import time, timedelta

    from agent.config import WindowConfig
    from agent.window import spread_offset

    window = WindowConfig(time(3, 30), 60, "Europe/Paris", spread_minutes=30)
    offsets = set()
    for n in range(40):
        host = f"prod-bento-{n:03d}"
        first, again = spread_offset(window, host), spread_offset(window, host)
        assert first == again
        assert timedelta(0) <= first < timedelta(minutes=30)
        offsets.add(first)
    assert len(offsets) > 10
    assert spread_offset(WindowConfig(time(3, 30), 60, None), "prod-bento-001") == timedelta(0)


@pytest.mark.slow
def test_the_service_deploys_when_the_window_opens_even_with_a_slow_poll(prod, git_remote):
    import signal

    from tests.agentsite import wait_for

    prod.write_config(poll_seconds=3600)  # only the window watch can catch the opening
    git_remote.commit_and_push("prod-asterix-3.0", {"index.html": page("B3 3.0")}, "B301: 3.0")
    agent = prod.start("run", env=prod.env() | faketime_env("2026-11-28 03:29:57"))
    try:
        wait_for(lambda: prod.get("/") == (200, page("B3 3.0")), timeout=40,
                 what="the deploy at 03:30")
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            prod.kill(agent)
    record = prod.ci_cd()["deploys"][0]
    assert record["started_at"] >= "2026-11-28T02:30:00+00:00"
