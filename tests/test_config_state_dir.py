"""[agent] state_dir left out: the service's own directory when systemd names one
($STATE_DIRECTORY from StateDirectory=), so an instance ghost-agent@<site> keeps its lock,
state and releases in /var/lib/ghost-agent/<site>; else /var/lib/ghost-agent. A state_dir
in the file always wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from tests.configs import MINIMAL_CONFIG


@pytest.fixture
def config(tmp_path: Path):
    def write(extra: str = "") -> Path:
        path = tmp_path / "agent.toml"
        path.write_text(MINIMAL_CONFIG + extra, encoding="utf-8")
        return path
    return write


def test_without_systemd_the_default_is_var_lib_ghost_agent(config, monkeypatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    loaded = load_config(config())
    assert loaded.agent.state_dir == Path("/var/lib/ghost-agent")
    assert loaded.deploy.releases_dir == Path("/var/lib/ghost-agent/releases")


def test_an_instance_takes_its_state_directory(config, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/ghost-agent/dev1")
    loaded = load_config(config())
    assert loaded.agent.state_dir == Path("/var/lib/ghost-agent/dev1")
    assert loaded.deploy.releases_dir == Path("/var/lib/ghost-agent/dev1/releases")


def test_the_first_of_several_state_directories_is_taken(config, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/ghost-agent/dev1/:/var/lib/other")
    assert load_config(config()).agent.state_dir == Path("/var/lib/ghost-agent/dev1")


@pytest.mark.parametrize("value", ["", "relative/dir", "/var/lib/backup-job",
                                   "/var/lib/ghost-agent-other"])
def test_one_not_of_ghost_agent_is_ignored(config, monkeypatch, value: str) -> None:
    """Empty, relative, or another unit's (a command started by a backup job's unit must
    keep the service's state and lock)."""
    monkeypatch.setenv("STATE_DIRECTORY", value)
    assert load_config(config()).agent.state_dir == Path("/var/lib/ghost-agent")


def test_the_file_wins(config, monkeypatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/ghost-agent/dev1")
    loaded = load_config(config('\n[agent]\nstate_dir = "/srv/agent"\n'))
    assert loaded.agent.state_dir == Path("/srv/agent")
    assert loaded.deploy.releases_dir == Path("/srv/agent/releases")
