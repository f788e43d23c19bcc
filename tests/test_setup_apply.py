"""Applying a plan (agent/setup/apply.py) on the live root: every command goes through
agent.proc.run as an argv list with a timeout, a failure stops setup with the command's
output, and a command that hangs is stopped. No file is written: the plans here have none,
and proc.run is replaced except where a harmless process is the point."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from agent import proc
from agent.errors import CommandError, ExitCode
from agent.setup import apply as setup_apply
from agent.setup.layout import SetupError
from agent.setup.plan import Options, Plan

COMMANDS = [["systemd-sysusers", "/etc/sysusers.d/ghost-agent.conf"],
            ["systemctl", "daemon-reload"]]
LIVE = Options(root=Path("/"))


@pytest.fixture
def live(monkeypatch, tmp_path: Path) -> None:
    """As root on a host where systemd runs (the tests' own marker directory)."""
    monkeypatch.setattr(setup_apply.os, "geteuid", lambda: 0)
    monkeypatch.setattr(setup_apply, "SYSTEMD_RUNNING", tmp_path)
    monkeypatch.setattr(setup_apply.shutil, "which", lambda name: f"/usr/bin/{name}")


def recorder(calls: list, codes: dict[str, int] | None = None):
    def run(argv, *, timeout, check=True, **_):
        calls.append((list(argv), timeout, check))
        code = (codes or {}).get(" ".join(argv), 0)
        return proc.Completed(tuple(argv), code, "", "boom\n" if code else "")
    return run


def test_commands_run_through_proc_with_a_timeout(live, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setattr(proc, "run", recorder(
        calls, {"systemctl is-active --quiet ghost-agent.service": 3}))
    out = io.StringIO()
    assert setup_apply.apply(Plan(commands=COMMANDS), LIVE, out) == ExitCode.OK
    assert [argv for argv, _, _ in calls] == [
        *COMMANDS, ["systemctl", "is-active", "--quiet", "ghost-agent.service"]]
    assert all(0 < timeout <= 120 for _, timeout, _ in calls)
    assert out.getvalue() == (
        "ran: systemd-sysusers /etc/sysusers.d/ghost-agent.conf\n"
        "ran: systemctl daemon-reload\n"
        "next: `systemctl enable --now ghost-agent.service`, then "
        "`journalctl -u ghost-agent.service -f`\n")


def test_a_running_agent_is_told_to_restart(live, monkeypatch) -> None:
    monkeypatch.setattr(proc, "run", recorder([]))
    out = io.StringIO()
    setup_apply.apply(Plan(commands=COMMANDS), LIVE, out)
    assert out.getvalue().endswith("ghost-agent is running: `systemctl restart "
                                   "ghost-agent.service` to apply the changes\n")


def test_without_systemd_systemctl_is_skipped(live, monkeypatch, tmp_path: Path) -> None:
    calls: list = []
    monkeypatch.setattr(proc, "run", recorder(calls))
    monkeypatch.setattr(setup_apply, "SYSTEMD_RUNNING", tmp_path / "absent")
    out = io.StringIO()
    setup_apply.apply(Plan(commands=COMMANDS), Options(root=Path("/"), unit_only=True), out)
    assert [argv for argv, _, _ in calls] == [COMMANDS[0]]
    assert "skipped (systemd is not running): systemctl daemon-reload\n" in out.getvalue()


def test_a_failing_command_stops_setup_with_its_output(live, monkeypatch) -> None:
    monkeypatch.setattr(proc, "run", recorder([], {" ".join(COMMANDS[0]): 1}))
    with pytest.raises(SetupError) as caught:
        setup_apply.apply(Plan(commands=COMMANDS), LIVE, io.StringIO())
    assert str(caught.value) == ("`systemd-sysusers /etc/sysusers.d/ghost-agent.conf` exited "
                                 "with 1: boom")
    assert caught.value.exit_code == ExitCode.FAILED


def test_a_hung_command_is_stopped_at_its_timeout(live, monkeypatch) -> None:
    monkeypatch.setattr(setup_apply, "COMMAND_TIMEOUT", 0.2)
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(CommandError, match="timed out") as caught:
        setup_apply.apply(Plan(commands=[hang]), Options(root=Path("/"), unit_only=True),
                          io.StringIO())
    assert caught.value.exit_code == ExitCode.FAILED
