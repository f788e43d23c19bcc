"""The one Ghost unit: restart it with systemctl and read its journal. systemctl comes from PATH."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from agent import failpoints, proc
from agent.errors import CommandError, DeployError


def node_of(exec_start: str) -> str | None:
    """The node program of a unit's ExecStart as `systemctl show -p ExecStart --value` prints
    it ("{ path=/usr/bin/node ; argv[]=/usr/bin/node …/ghost run ; … }"), or None when the
    program is not node: gscan then runs on the very node Ghost runs on."""
    found = re.search(r"\bpath=(/\S+)", exec_start)
    if found and Path(found[1]).name.startswith("node"):
        return found[1]
    return None


class GhostService:
    def __init__(self, unit: str, restart_timeout: float, journal_lines: int = 30):
        self.unit = unit
        self.restart_timeout = restart_timeout
        self.journal_lines = journal_lines

    def restart(self) -> None:
        """`systemctl restart UNIT`; raises DeployError naming the unit and systemctl's words."""
        systemctl = shutil.which("systemctl")
        if not systemctl:
            raise DeployError("systemctl not found on PATH")
        try:
            proc.run([systemctl, "restart", self.unit], timeout=self.restart_timeout)
        except CommandError as exc:
            raise DeployError(f"restart of {self.unit} failed: {exc.message}") from None
        failpoints.hit("during-restart")
        # A unit can "restart" and die at once (bad config, port held): ask again.
        status = proc.run([systemctl, "is-active", self.unit], timeout=15, check=False)
        state = status.stdout.strip() or status.stderr.strip()
        if status.returncode != 0 and state not in ("active", "activating", "reloading"):
            raise DeployError(f"{self.unit} is {state or 'not active'} after restart")

    def working_directory(self) -> Path | None:
        """The unit's WorkingDirectory (Ghost-CLI's site root, /var/www/<site>), or None."""
        text = self._show("WorkingDirectory")
        return Path(text) if text.startswith("/") else None

    def node(self) -> str | None:
        """The node program the unit runs Ghost with, or None (see node_of)."""
        return node_of(self._show("ExecStart"))

    def _show(self, prop: str) -> str:
        """`systemctl show -p PROP --value UNIT`, or "" when it cannot say."""
        systemctl = shutil.which("systemctl")
        if not systemctl:
            return ""
        try:
            out = proc.run([systemctl, "show", "-p", prop, "--value", self.unit], timeout=15)
        except CommandError:
            return ""
        return out.stdout.strip()

    def journal_tail(self) -> list[str]:
        """The unit's last journal lines, or [] where journalctl does not work."""
        journalctl = shutil.which("journalctl")
        if not journalctl:
            return []
        try:
            out = proc.run(
                [journalctl, "--unit", self.unit, "--lines", str(self.journal_lines),
                 "--no-pager", "--output", "short-iso", "--quiet"],
                timeout=10,
            )
        except CommandError:
            return []
        return [line for line in out.stdout.splitlines() if line.strip()][-self.journal_lines:]
