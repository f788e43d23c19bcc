"""The webhook inside `ghost-agent run`, through the real command: a signed call deploys a
push at once although the poll is an hour away, a burst makes one or two polls, the deploy
says `trigger: webhook`, `status` shows the call, and the secret reaches no output."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import signal
import socket
import time

import pytest

from agent.daemon import WEBHOOK_GAP
from tests.agentsite import page, wait_for

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier

SECRET = "whsec-RUN-CANARY-5150"
PATH = "/ghost-agent/webhook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port: int, body: bytes = b"{}", secret: str = SECRET) -> int:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", PATH, body=body,
                     headers={"X-Hub-Signature-256": f"sha256={signature}"})
        return conn.getresponse().status
    finally:
        conn.close()


def listening(port: int):
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    return check


def test_a_signed_call_deploys_a_push_at_once(host, git_remote, tmp_path):
    port = free_port()
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    host.extra_config = (f'\n[webhook]\nlisten = "127.0.0.1:{port}"\n'
                         f'secret_file = "{secret_file}"\n')
    host.write_config(poll_seconds=3600)
    first = git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    agent = host.start("run")
    try:
        wait_for(lambda: (host.content / "files" / "ci-cd.json").exists(), 30,
                 "the first poll's deploy")
        wait_for(listening(port), 10, "the webhook listener")
        second = git_remote.commit_and_push("dev1", {"index.html": page("B2 two")}, "B102: two")
        assert call(port, secret="wrong") == 401
        statuses = [call(port) for _ in range(50)]  # a burst: one or two polls
        assert set(statuses) <= {202, 429} and 202 in statuses
        wait_for(lambda: host.ci_cd()["deploys"][0]["commit"] == second, 15,
                 "the webhook's deploy")
        assert host.get("/") == (200, page("B2 two"))
        record = host.ci_cd()["deploys"][0]
        assert (record["commit"], record["trigger"]) == (second, "webhook")
        status = host.run("status", "--json")
        assert json.loads(status.stdout)["last_webhook_at"]
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr
    assert stderr.count("deploying dev1") == 2, stderr  # the first poll's, the burst's
    assert [d["commit"] for d in host.ci_cd()["deploys"]] == [second, first]
    everything = stderr + status.stdout + json.dumps(host.ci_cd()) + host.ci_cd_txt()
    assert SECRET not in everything


def test_a_burst_longer_than_a_poll_makes_one_or_two_polls(host, git_remote, tmp_path):
    """50 signed calls spread over 3 s (each poll takes a fraction of that): the first makes a
    poll at once, the others wait out the gap together and make one more."""
    port = free_port()
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET + "\n")
    host.extra_config = (f'\n[webhook]\nlisten = "127.0.0.1:{port}"\n'
                         f'secret_file = "{secret_file}"\n')
    host.write_config(poll_seconds=3600)
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    agent = host.start("--debug", "run")
    try:
        wait_for(lambda: (host.content / "files" / "ci-cd.json").exists(), 30,
                 "the first poll's deploy")
        wait_for(listening(port), 10, "the webhook listener")
        statuses = []
        for _ in range(50):
            statuses.append(call(port))
            time.sleep(0.06)
        time.sleep(WEBHOOK_GAP + 1.5)  # the poll after the gap has run
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    assert statuses == [202] * 50
    polls = [line for line in stderr.splitlines() if " ls-remote " in line]
    assert len(polls) == 3, "\n".join(polls)  # the first poll's, then one or two for the burst
