"""agent/service.py: what the agent asks systemd about Ghost's unit, through a `systemctl`
at the process boundary that answers as systemd 252 does."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.service import GhostService

EXEC_START = ("{ path=/opt/node-22/bin/node ; argv[]=/opt/node-22/bin/node "
              "/var/www/ghost/current/index.js ; ignore_errors=no ; start_time=[n/a] ; "
              "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }")
GHOST_CLI_EXEC = ("{ path=/usr/bin/node ; argv[]=/usr/bin/node /usr/lib/node_modules/ghost-cli"
                  "/bin/ghost run ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; "
                  "pid=0 ; code=(null) ; status=0/0 }")


def systemctl_saying(tmp_path: Path, monkeypatch, props: dict[str, str]) -> None:
    """A `systemctl` on PATH whose `show -p NAME --value UNIT` prints props[NAME]."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    lines = "\n".join(f'  {name}) echo "{value}" ;;' for name, value in props.items())
    script.write_text(f'#!/bin/sh\n[ "$1" = show ] || exit 1\ncase "$3" in\n{lines}\n'
                      "  *) echo ;;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("exec_start, node", [
    (EXEC_START, "/opt/node-22/bin/node"),
    (GHOST_CLI_EXEC, "/usr/bin/node"),  # Ghost-CLI's unit: node runs `ghost run`
    ("{ path=/usr/local/bin/ghost-wrapper ; argv[]=/usr/local/bin/ghost-wrapper ; }", None),
    ("", None),
])
def test_the_node_ghost_runs_on_is_read_from_the_unit(tmp_path, monkeypatch, exec_start, node):
    systemctl_saying(tmp_path, monkeypatch, {"ExecStart": exec_start,
                                             "WorkingDirectory": "/var/www/ghost"})
    ghost = GhostService("ghost_dev1.service", 10)
    assert ghost.node() == node
    assert ghost.working_directory() == Path("/var/www/ghost")


def test_a_unit_without_a_working_directory_says_none(tmp_path, monkeypatch):
    systemctl_saying(tmp_path, monkeypatch, {"WorkingDirectory": ""})
    assert GhostService("ghost_dev1.service", 10).working_directory() is None
