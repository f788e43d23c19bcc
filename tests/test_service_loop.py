"""`ghost-agent run` speaks systemd's notify protocol, and `ghost-agent demo` works."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from tests.agentsite import agent_argv, page, wait_for


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def read_messages(sock, seconds: float) -> list[str]:
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_run_reports_ready_status_and_pings_the_watchdog(host, git_remote, notify_socket):
    path, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 x")}, "B101: x")
    env = host.env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    agent = host.start("run", env=env)
    try:
        messages = read_messages(sock, 3.0)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    messages += read_messages(sock, 0.5)
    assert agent.returncode == 0
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=deployed dev1") for m in messages)
    assert messages.count("WATCHDOG=1") >= 5
    assert "STOPPING=1" in messages


def test_watchdog_pings_stop_when_the_loop_hangs(host, git_remote, notify_socket):
    path, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 x")}, "B101: x")
    env = host.env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    agent = host.start("run", env=env)
    try:
        wait_for(lambda: host.get("/")[0] == 200, what="the deploy")
        agent.send_signal(signal.SIGSTOP)  # a hung process: no thread runs
        read_messages(sock, 0.5)  # drain what was sent before the stop
        assert "WATCHDOG=1" not in read_messages(sock, 1.5)
    finally:
        host.kill(agent)


def test_sigterm_during_a_deploy_finishes_it(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    host.systemctl.hang(True)
    agent = host.start("run")
    try:
        wait_for(lambda: host.restarts() == 1, what="the restart to begin")
        agent.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert agent.poll() is None  # still finishing the deploy
        host.systemctl.hang(False)
        _, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            host.kill(agent)
    assert agent.returncode == 0, stderr
    assert host.ci_cd()["deploys"][0]["outcome"] == "deployed"
    assert host.get("/") == (200, page("B1 one"))


def test_demo_runs_the_whole_story_in_under_a_minute():
    started = time.monotonic()
    result = subprocess.run([*agent_argv(), "demo"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    out = result.stdout
    assert "deployed dev1" in out
    assert "rolled_back dev1" in out
    assert "(the previous release is live again)" in out
    assert "GET / -> 200 '<html><body><h1>New headline for B102" in out
    assert "ci-cd.txt" in out and "served at" in out
