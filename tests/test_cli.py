"""agent.cli: the one main, in this process (host.call): the command line, and the map from
errors to one line and an exit status. The same through the real process is in
tests/test_cycle.py (75, 78, the lock, --debug), tests/test_cli_unexpected.py (70) and
tests/test_healing.py (a closed pipe); here, that an in-process call is a fair stand-in for
the real process."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

import agent.failpoints
import agent.redact
from agent import __version__
from agent.errors import ExitCode, HostError
from tests.agentsite import page


def deploy(host, git_remote, headline: str = "B101 one") -> str:
    sha = git_remote.commit_and_push("dev1", {"index.html": page(headline)}, f"{headline}: x")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    return sha


# -- an in-process call is what the real process does ---------------------------------------

def test_a_call_answers_as_the_real_process_does(host, git_remote):
    deploy(host, git_remote)
    for args in (
        ("--version",),
        ("check-config",),
        ("status", "--json"),
        ("once",),  # up to date: nothing to do
        ("rollback",),  # no previous release: one line, exit 1
        ("deploy", "--ref", "no-such-branch"),
        ("nonsense",),  # argparse: usage, exit 2
    ):
        called = host.call(*args)
        ran = host.run(*args)
        assert (called.returncode, called.stdout, called.stderr) == (
            ran.returncode, ran.stdout, ran.stderr), args


def test_a_bad_config_is_78_and_every_problem_in_a_call_as_in_the_process(host):
    host.config_path.write_text(host.config_path.read_text()
                                .replace("keep = 3", "keep = 'three'") + "\n[bogus]\nx = 1\n")
    called = host.call("once")
    assert called.returncode == ExitCode.CONFIG
    assert len(called.stderr.splitlines()) == 2
    ran = host.run("once")
    assert (called.returncode, called.stdout, called.stderr) == (
        ran.returncode, ran.stdout, ran.stderr)


def test_a_call_leaves_this_process_as_it_was(host, git_remote, monkeypatch):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    environ = dict(os.environ)
    cwd = os.getcwd()
    agent.redact.register_secret("TESTS-OWN-SECRET")
    registered = set(agent.redact._registered)
    monkeypatch.setenv("GHOST_AGENT_FAILPOINTS", "after-ls-remote=kill")  # never in a call
    git_remote.commit_and_push("dev1", {"index.html": page("B1")}, "B101: x")
    assert host.call("once", "--debug").returncode == 0
    assert (list(root.handlers), root.level) == (handlers, level)
    assert dict(os.environ) == {**environ, "GHOST_AGENT_FAILPOINTS": "after-ls-remote=kill"}
    assert os.getcwd() == cwd
    assert agent.redact._registered == registered
    assert agent.failpoints._armed is None


def test_a_call_starts_with_no_secret_registered(host):
    """As a fresh process would: what this process registered does not mask the call's
    output (so it could not hide a leak either)."""
    host.write_config(remote=str(host.root / "gone-REMOTEWORD.git"))
    agent.redact.register_secret("REMOTEWORD")
    result = host.call("once")
    assert result.returncode == ExitCode.TEMPFAIL
    assert "gone-REMOTEWORD.git" in result.stderr  # the error line is redacted, but not of this
    assert agent.redact.redact("REMOTEWORD") == "***"  # still registered here


# -- the exit-code map -------------------------------------------------------------------------

def test_version_and_help_exit_0(host):
    assert host.call("--version") == (0, f"ghost-agent {__version__}\n", "")
    helped = host.call("--help")
    assert helped.returncode == 0 and "usage: ghost-agent" in helped.stdout


def test_a_bad_command_line_is_2(host):
    result = host.call("once", "--no-such-option")
    assert result.returncode == ExitCode.USAGE
    assert "unrecognized arguments: --no-such-option" in result.stderr


def test_a_known_error_is_one_line_naming_the_command(host, git_remote):
    deploy(host, git_remote)
    result = host.call("rollback")
    assert result.returncode == ExitCode.FAILED
    assert result.stderr == ("ghost-agent rollback: no previous release on disk to roll "
                             "back to\n")


def test_an_unexpected_error_is_one_line_and_70_the_traceback_with_debug(host, git_remote,
                                                                         monkeypatch):
    from agent.cycle import Agent

    def broken(self, *args, **kwargs):
        raise KeyError("https://deploy:TOKEN1234@example.org/x")

    monkeypatch.setattr(Agent, "once", broken)
    result = host.call("once")
    assert result.returncode == ExitCode.SOFTWARE
    assert result.stderr.splitlines() == [
        "ghost-agent once: unexpected error (KeyError: 'https://***@example.org/x'); rerun "
        "with --debug for the traceback"]
    debug = host.call("once", "--debug")
    assert debug.returncode == ExitCode.SOFTWARE
    assert "Traceback" in debug.stderr and "TOKEN1234" not in debug.stderr.splitlines()[-1]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_a_host_fault_anywhere_is_temporary(host, monkeypatch, code):
    from agent.cycle import Agent

    def full(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(host.state_dir / "x"))

    monkeypatch.setattr(Agent, "once", full)
    result = host.call("once")
    assert result.returncode == ExitCode.TEMPFAIL
    [line] = result.stderr.splitlines()
    assert line.startswith("ghost-agent once: ") and os.strerror(code) in line
    assert "unexpected" not in line


def test_a_host_error_carries_its_own_code(host, monkeypatch):
    from agent.cycle import Agent

    def refused(self, *args, **kwargs):
        raise HostError("no space left under /var/lib/ghost-agent")

    monkeypatch.setattr(Agent, "once", refused)
    assert host.call("once") == (ExitCode.TEMPFAIL, "",
                                 "ghost-agent once: no space left under /var/lib/ghost-agent\n")


def test_hold_and_release_name_who(host, git_remote, monkeypatch):
    deploy(host, git_remote)
    monkeypatch.setenv("SUDO_USER", "alice")
    held = host.call("hold", "--reason", "freeze for the launch")
    assert held.returncode == 0, held.stderr
    info = json.loads(host.call("status", "--json").stdout)
    assert info["hold"]["reason"] == "freeze for the launch"
    assert info["hold"]["by"] == "alice"
    assert host.call("release").returncode == 0
    assert json.loads(host.call("status", "--json").stdout)["hold"] is None
