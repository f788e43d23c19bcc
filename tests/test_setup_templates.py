"""The texts of `ghost-agent setup` (agent/setup/templates.py): the polkit rule and drop-in
escape what they are given, the repository's packaged copies match, and the unit keeps the
service contract, passes `systemd-analyze verify` and rates 2.0 or lower in
`systemd-analyze security`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import setup as agent_setup
from agent.config import DEFAULT_CONFIG_PATH
from tests.configs import MINIMAL_CONFIG

REPO = Path(__file__).resolve().parents[1]
SECURITY_LIMIT = 2.0


def test_polkit_rule_escapes_what_is_not_a_unit_name_character() -> None:
    rule = agent_setup.render_polkit_rule('a"b\\c.service', None)
    assert '"a\\u0022b\\u005cc.service"' in rule


def test_default_config_path_is_not_repeated_and_odd_paths_are_quoted(tmp_path: Path) -> None:
    from agent.config import load_config

    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL_CONFIG.replace("/var/www/ghost/content", "/srv/my site/100%/content"))
    dropin = agent_setup.render_dropin(load_config(path), DEFAULT_CONFIG_PATH)
    assert "GHOST_AGENT_CONFIG" not in dropin
    assert 'ReadWritePaths="-/srv/my site/100%%/content/files"' in dropin


def test_repository_copies_match_what_setup_renders() -> None:
    stale = [str(rel) for rel, (text, mode) in agent_setup.packaged_files().items()
             if not (REPO / rel).is_file() or (REPO / rel).read_text() != text
             or os.stat(REPO / rel).st_mode & 0o777 != mode]
    assert not stale, (f"{stale} differ from agent/setup/templates.py; refresh them with "
                       "python3 -c 'import agent.setup as s; s.write_packaged_files(\".\")'")


def test_unit_keeps_the_service_contract() -> None:
    unit = agent_setup.render_unit()
    for line in ("Type=notify", "WatchdogSec=60", "Restart=on-failure",
                 "RestartPreventExitStatus=78", "User=ghost-agent", "KillMode=mixed",
                 "TimeoutStopSec=300", "StateDirectory=ghost-agent",
                 "CacheDirectory=ghost-agent", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert f"\n{line}\n" in unit, line
    for name in agent_setup.CREDENTIALS:
        assert f"\nLoadCredential={name}:ghost-agent.{name}\n" in unit
    assert "User=root" not in unit and "\nUser=\n" not in unit


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = tmp_path / "ghost-agent.service"
    unit.write_text(agent_setup.render_unit(shutil.which("true") or "/bin/true"))
    done = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ghost-agent.service" not in done.stderr, done.stderr  # no warnings about it


def security_score(tool: str, unit: Path) -> float:
    done = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=unit.parent)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_unit_rates_2_or_lower_in_systemd_analyze_security(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    unit = tmp_path / "ghost-agent.service"
    unit.write_text(agent_setup.render_unit())
    score = security_score(tool, unit)
    print(f"systemd-analyze security: {score}", file=sys.stderr)
    assert score <= SECURITY_LIMIT
    # and the check does fail above the limit: the old unit rated far worse
    loose = tmp_path / "loose.service"
    loose.write_text("[Service]\nType=notify\nExecStart=/usr/bin/ghost-agent run\n")
    assert security_score(tool, loose) > SECURITY_LIMIT
