"""SIGHUP (`systemctl reload ghost-agent`) re-reads the config of `ghost-agent run` (issue #10,
class 5). It used to kill the service at once, without a log line, and systemd counted that
as a clean stop: deploys stopped silently."""

from __future__ import annotations

import signal
import time

import pytest

from tests.agentsite import page, read_messages, wait_for
from tests.gitremote import GitRemote

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier


def start(host, notify_socket):
    env = host.env() | {"NOTIFY_SOCKET": str(notify_socket[0])}
    return host.start("run", env=env)





def reloading(messages: list[str]) -> int:
    """The index of the one RELOADING=1 message."""
    begins = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1\n")]
    assert len(begins) == 1, messages
    return begins[0]


def shows(host, headline: str):
    return lambda: host.get("/") == (200, page(headline))


def test_sighup_reloads_and_the_service_keeps_running(host, git_remote, notify_socket):
    _, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    agent = start(host, notify_socket)
    try:
        wait_for(shows(host, "B1 one"), what="the first deploy")
        read_messages(sock, 0.2)
        agent.send_signal(signal.SIGHUP)
        messages = read_messages(sock, 1.0)
        assert agent.poll() is None, "SIGHUP stopped the service"
        git_remote.commit_and_push("dev1", {"index.html": page("B2 two")}, "B102: two")
        wait_for(shows(host, "B2 two"), timeout=10, what="a deploy after the reload")
    finally:
        stderr = host.stop(agent)
    # sd_notify(3): RELOADING=1 with the monotonic time, then READY=1 when done.
    begins = reloading(messages)
    assert "\nMONOTONIC_USEC=" in messages[begins]
    assert "READY=1" in messages[begins:]
    assert f"SIGHUP received; reloading {host.config_path}" in stderr
    assert f"reloaded {host.config_path}" in stderr


def test_sighup_applies_a_changed_remote_and_poll_period_at_once(host, git_remote, tmp_path):
    git_remote.commit_and_push("dev1", {"index.html": page("B1 old remote")}, "B101: old")
    moved = GitRemote(tmp_path / "moved")
    moved.commit_and_push("dev1", {"index.html": page("B2 new remote")}, "B102: moved")
    agent = host.start("run")
    try:
        wait_for(shows(host, "B1 old remote"), what="the first deploy")
        host.write_config(remote=str(moved.path), poll_seconds=3600)
        agent.send_signal(signal.SIGHUP)
        # The reload polls at once: the new remote's head is deployed without waiting an hour.
        wait_for(shows(host, "B2 new remote"), timeout=10, what="a deploy from the new remote")
        # ... and the new period is the one in use: a push waits (it was 0.2 s) ...
        moved.commit_and_push("dev1", {"index.html": page("B3 waits")}, "B103: waits")
        time.sleep(2.0)
        assert host.get("/") == (200, page("B2 new remote"))
        # ... until the next SIGHUP, which polls again.
        agent.send_signal(signal.SIGHUP)
        wait_for(shows(host, "B3 waits"), timeout=10, what="the poll of the second SIGHUP")
        assert agent.poll() is None
    finally:
        stderr = host.stop(agent)
    assert "watching dev1 for dev1 every 3600s" in stderr


def test_sighup_with_an_invalid_config_keeps_the_old_one(host, git_remote, notify_socket):
    _, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    agent = start(host, notify_socket)
    try:
        wait_for(shows(host, "B1 one"), what="the first deploy")
        good = host.config_path.read_text()
        host.config_path.write_text(good.replace("poll_seconds = 0.2", "poll_seconds = \"soon\""))
        read_messages(sock, 0.2)
        agent.send_signal(signal.SIGHUP)
        messages = read_messages(sock, 1.0)
        assert agent.poll() is None, "SIGHUP with a bad config stopped the service"
        # The old config goes on: a push is deployed within a few 0.2 s polls.
        git_remote.commit_and_push("dev1", {"index.html": page("B2 two")}, "B102: two")
        wait_for(shows(host, "B2 two"), timeout=10, what="a deploy with the old config")
        messages += read_messages(sock, 0.5)
        # Fixed and reloaded: the status no longer speaks of the failed reload.
        host.config_path.write_text(good)
        agent.send_signal(signal.SIGHUP)
        after_fix = read_messages(sock, 1.0)
    finally:
        stderr = host.stop(agent)
    failed = [line for line in stderr.splitlines() if "reload failed" in line]
    assert len(failed) == 1, stderr
    assert "still using the config loaded before" in failed[0]
    assert "poll_seconds" in failed[0] and "soon" in failed[0]
    statuses = [m for m in messages[reloading(messages):] if m.startswith("STATUS=")]
    assert statuses and all("reload failed, old config in use" in m for m in statuses), statuses
    assert "READY=1" in messages[reloading(messages):]  # the reload is over all the same
    # (a poll under way when SIGHUP came may still say it, before RELOADING=1: polls are 0.2 s)
    fixed = after_fix[reloading(after_fix):]
    assert "READY=1" in fixed
    assert not any("reload failed" in m for m in fixed if m.startswith("STATUS=")), after_fix
    assert stderr.count("reloaded ") == 1
