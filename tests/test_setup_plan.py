"""The plan of `ghost-agent setup` (agent/setup/plan.py) is decided from the host's facts
(host.Host) alone: the same facts give the same plan whatever is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.setup.host import Host
from agent.setup.layout import SetupError
from agent.setup.plan import Options, make_plan
from tests.configs import MINIMAL_CONFIG


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL_CONFIG, encoding="utf-8")
    return path


def test_the_plan_follows_the_facts_not_the_disk(tmp_path: Path, config_file: Path) -> None:
    options = Options(root=tmp_path / "nothing-here")  # nothing under it is read
    themes = Path("/var/www/ghost/content/themes")
    facts = Host(packaged=True, nginx=True, exec_path=None, dirs=frozenset({themes}))
    named = Path("/etc/ghost-agent/agent.toml")  # as the plan is told; it is not read
    plan = make_plan(options, load_config(config_file), named, facts)
    assert [str(f.path) for f in plan.files] == [
        "/etc/sysusers.d/ghost-agent.conf",
        "/etc/systemd/system/ghost-agent.service.d/50-setup.conf",
        "/etc/polkit-1/rules.d/10-ghost-agent.rules",
        "/etc/nginx/snippets/ghost-agent-ci-cd.conf",
    ]
    assert plan.commands == [["systemd-sysusers", "/etc/sysusers.d/ghost-agent.conf"],
                             ["systemctl", "daemon-reload"]]
    assert plan.notes == ["warning: /var/www/ghost/content/files ([site] ci_cd_dir) does not "
                          "exist yet"]
    assert plan.readable == [named]
    assert [str(p) for p, _ in plan.writable] == [str(themes), "/var/www/ghost/content/files"]


def test_a_pip_install_without_a_ghost_agent_is_refused(tmp_path: Path,
                                                        config_file: Path) -> None:
    with pytest.raises(SetupError, match="cannot find the installed `ghost-agent`"):
        make_plan(Options(root=tmp_path), load_config(config_file), config_file,
                  Host(packaged=False, exec_path=None))


def test_unit_only_plans_the_pip_files_without_a_config(tmp_path: Path) -> None:
    exec_path = "/opt/ghost-agent/bin/ghost-agent"
    plan = make_plan(Options(root=tmp_path, unit_only=True, ghost_group=""), None, None,
                     Host(exec_path=exec_path))
    assert [(str(f.path), oct(f.mode)) for f in plan.files] == [
        ("/etc/systemd/system/ghost-agent.service", "0o644"),
        ("/usr/local/sbin/ghost-agentctl", "0o755"),
        ("/etc/sysusers.d/ghost-agent.conf", "0o644"),
    ]
    assert f"ExecStart={exec_path} run" in plan.files[0].text
    assert (plan.readable, plan.writable) == ([], [])
