"""`--instance SITE` on the commands of one site (status, check-config, once, deploy,
rollback, hold, release): the operator names the instance ghost-agent@SITE and the command
reads what that service reads: /etc/ghost-agent/SITE.toml unless --config names another
file, and the instance's state directory /var/lib/ghost-agent/SITE as the default
[agent] state_dir (outside the unit there is no $STATE_DIRECTORY)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cli import _load_as_the_service_would, build_parser, main
from tests.configs import MINIMAL_CONFIG


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "dev1.toml"
    path.write_text(MINIMAL_CONFIG, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["status", "check-config", "once", "rollback", "hold"])
def test_an_instance_command_reads_the_instance_state_directory(config_file, command,
                                                                monkeypatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # as the instance's user (ghost-agentctl)
    args = build_parser().parse_args([command, "--instance", "dev1", "--config",
                                      str(config_file)])
    path, config = _load_as_the_service_would(args)
    assert path == config_file
    assert config.agent.state_dir == Path("/var/lib/ghost-agent/dev1")
    assert config.deploy.releases_dir == Path("/var/lib/ghost-agent/dev1/releases")
    assert "STATE_DIRECTORY" not in os.environ  # put back as it was


def test_without_instance_the_same_file_is_the_single_site_agent(config_file) -> None:
    args = build_parser().parse_args(["status", "--config", str(config_file)])
    assert _load_as_the_service_would(args)[1].agent.state_dir == Path("/var/lib/ghost-agent")


def test_an_instance_without_config_reads_its_own_file(config_file, capsys,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("GHOST_AGENT_CONFIG", str(config_file))  # one site's: not an instance's
    assert main(["status", "--instance", "blog-7"]) == 78
    err = capsys.readouterr().err
    assert err.startswith("/etc/ghost-agent/blog-7.toml: cannot read config"), err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", ["Dev1", "-dev1", "dev_1", "a" * 20, "releases"])
def test_a_name_that_cannot_be_an_instance_is_a_usage_error(config_file, capsys, bad) -> None:
    """2, as any bad command line (1 would tell a cron job that a deploy failed)."""
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", f"--instance={bad}", "--config", str(config_file)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ghost-agent check-config: error: argument --instance: "), err


def test_inside_a_service_an_instance_is_refused(config_file, capsys, monkeypatch) -> None:
    """ghost-agentctl runs the command inside a service with its site's credentials: another
    site's config must not be read with them."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(config_file.parent))
    assert main(["status", "--instance", "dev2", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "--instance dev2: not inside a service" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["once", "deploy", "rollback", "hold", "release"])
def test_root_does_not_change_an_instance_state(config_file, capsys, monkeypatch,
                                                command) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert main([command, "--instance", "dev1", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert f"sudo ghost-agentctl --instance dev1 {command}" in err and err.count("\n") == 1


def test_commands_of_no_single_site_take_no_instance(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["fleet", "--instance", "dev1"])
    assert exit_.value.code == 2
