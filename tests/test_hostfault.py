"""Host faults are temporary, not the commit's fault (issue #9, class 3): a full disk under
the releases fails the attempt with exit 75, leaves nothing behind, is said once in `status`
and in Slack, and the same commit deploys once there is room again. Needs root (a real,
small tmpfs); the e2e tier's CI runs as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.agentsite import page
from tests.slackstub import SlackStub

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs: needs root")


def host_fault_named(text: str) -> bool:
    return "space" in text.lower() or " free" in text


@pytest.fixture
def small_disk(host):
    """releases_dir on a 2 MiB tmpfs; unmounted at teardown."""
    releases = host.state_dir / "releases"
    releases.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(releases)],
                   check=True)
    try:
        yield releases
    finally:
        subprocess.run(["umount", "-l", str(releases)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_temporary_and_the_commit_is_retried(host, git_remote, small_disk):
    with SlackStub() as slack:
        host.extra_config = (f'\n[slack]\nwebhook_url = "{slack.webhook_url("/services/T/B/x")}"'
                             "\ntimeout_seconds = 2\n")
        host.write_config(poll_seconds=1)
        git_remote.commit_and_push("dev1", {"index.html": page("B900 small")}, "B900: small")
        assert host.call("once").returncode == 0
        big = git_remote.commit_and_push(
            "dev1", {"index.html": page("B901 big"), "assets/big.bin": os.urandom(3 << 20)},
            "B901: a 3 MB asset")
        restarts = host.restarts()
        for _ in range(2):  # said once, however often it happens
            result = host.call("once")
            assert result.returncode == 75, result.stderr
            assert host_fault_named(result.stderr)
            assert "Traceback" not in result.stderr
            time.sleep(1.1)  # past the first backoff
        assert host.restarts() == restarts  # the live site was not touched
        assert host.get("/") == (200, page("B900 small"))
        assert not [p.name for p in small_disk.iterdir() if p.name.startswith(".")]
        state = host.state()
        assert big not in state["quarantine"]
        info = json.loads(host.call("status", "--json").stdout)
        assert host_fault_named(info["problems"]["host"])
        alerts = [b for b in slack.bodies() if host_fault_named(str(b.get("text", "")))]
        assert len(alerts) == 1, slack.bodies()
        # Room again: the same commit deploys on a later poll, and the problem clears.
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = host.call("once")
            if "deployed" in result.stdout:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stderr + result.stdout
        assert host.ci_cd()["current"]["commit"] == big
        info = json.loads(host.call("status", "--json").stdout)
        assert "host" not in info["problems"]


def test_a_state_file_that_cannot_be_written_keeps_the_history(host, git_remote, tmp_path):
    git_remote.commit_and_push("dev1", {"index.html": page("B910 one")}, "B910: one")
    assert host.call("once").returncode == 0
    # The state directory moves onto a tiny disk that is then filled up.
    saved = tmp_path / "state-copy"
    shutil.copytree(host.state_dir, saved, symlinks=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(host.state_dir)],
                   check=True)
    try:
        shutil.copytree(saved, host.state_dir, symlinks=True, dirs_exist_ok=True)
        before = (host.state_dir / "state.json").read_text()
        with open(host.state_dir / "filler", "wb") as out:
            try:
                out.write(b"\0" * (8 << 20))
            except OSError:
                pass
        git_remote.commit_and_push("dev1", {"index.html": page("B911 two")}, "B911: two")
        result = host.call("once")
        assert result.returncode == 75, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "No space left on device" in result.stderr
        assert (host.state_dir / "state.json").read_text() == before  # the history is whole
        assert json.loads(before)["history"]
    finally:
        subprocess.run(["umount", "-l", str(host.state_dir)], check=False)
