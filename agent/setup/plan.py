"""The plan: from the options, the config and the host's facts (host.Host), the files to
write, the commands to run and what the operator should hear.

Pure: it reads and writes nothing, so --dry-run prints exactly what a real run would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.setup.host import Host
from agent.setup.layout import (DEFAULT_GHOST_GROUP, DROPIN_PATH, NGINX_DIR, NGINX_PATH,
                                PIP_CTL_PATH, PIP_UNIT_PATH, POLKIT_PATH, SYSUSERS_PATH, SetupError,
                                hidden_by, writable_paths)
from agent.setup.templates import (render_ctl, render_dropin, render_nginx_snippet,
                                   render_polkit_rule, render_sysusers, render_unit)

if TYPE_CHECKING:
    from agent.config import Config


@dataclass(frozen=True)
class Options:
    """The command line's choices, checked (command.run_setup)."""

    root: Path = Path("/")
    dry_run: bool = False
    ghost_group: str | None = DEFAULT_GHOST_GROUP
    unit_only: bool = False
    layout: str = "auto"  # "auto", "deb" (the package ships unit/sysusers/ctl) or "pip"


@dataclass(frozen=True)
class PlannedFile:
    """One file to write: what, where, its mode, and the line that says why."""

    path: Path  # absolute, as on the target system (without --root)
    text: str
    mode: int = 0o644
    why: str = ""


@dataclass
class Plan:
    """Everything one run of setup does, in order."""

    files: list[PlannedFile] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)  # argv lists, run in order
    notes: list[str] = field(default_factory=list)  # things the operator should hear
    # Checked once the commands ran (systemd-sysusers makes the user): may USER read these,
    # and write those ((path, why) as in writable_paths)?
    readable: list[Path] = field(default_factory=list)
    writable: list[tuple[Path, str]] = field(default_factory=list)


def make_plan(options: Options, config: Config | None, config_file: Path | None,
              host: Host) -> Plan:
    """The plan for these options. config and config_file are None with --unit-only only.
    Raises SetupError: no usable `ghost-agent` for a pip install, no config, a value that
    cannot go into a file."""
    plan = Plan()
    layout = options.layout
    if layout == "auto":
        layout = "deb" if host.packaged else "pip"
    group = options.ghost_group or None

    if layout == "pip":
        if host.exec_path is None:
            raise SetupError("cannot find the installed `ghost-agent` command; pass --exec PATH")
        _check_exec(host.exec_path, host.interpreters)
        plan.files.append(PlannedFile(PIP_UNIT_PATH, render_unit(host.exec_path),
                                      why="the service (pip install)"))
        plan.files.append(PlannedFile(PIP_CTL_PATH, render_ctl(host.exec_path), 0o755,
                                      why="manual commands as the service runs them"))
    elif host.pip_unit:
        plan.notes.append(f"warning: {PIP_UNIT_PATH} (an earlier pip install?) hides the "
                          "package's unit: remove it, then `systemctl daemon-reload`")
    # /etc/sysusers.d/ghost-agent.conf replaces the package's /usr/lib/sysusers.d one of the
    # same name: the same user, plus Ghost's group.
    plan.files.append(PlannedFile(SYSUSERS_PATH, render_sysusers(group, config_file),
                                  why="the user and its groups"))

    if not options.unit_only:
        if config is None or config_file is None:
            raise SetupError("a config is needed (or --unit-only)")
        plan.files.append(PlannedFile(DROPIN_PATH, render_dropin(config, config_file),
                                      why="the paths the agent may write"))
        plan.files.append(PlannedFile(POLKIT_PATH, render_polkit_rule(config.ghost.unit,
                                                                      config_file),
                                      why=f"restart of {config.ghost.unit}, nothing else"))
        if host.nginx:
            plan.files.append(PlannedFile(NGINX_PATH,
                                          render_nginx_snippet(
                                              config.site.ci_cd_dir, config_file,
                                              getattr(config, "webhook", None)),
                                          why="nginx: the ci-cd files, uncached"))
        else:
            plan.notes.append(f"no {NGINX_DIR}: the nginx snippet was not written (see "
                              "docs/operators.md to serve the ci-cd files uncached)")
        plan.notes += _config_notes(config, config_file, host)
        plan.readable.append(config_file)
        plan.writable += writable_paths(config)

    plan.commands.append(["systemd-sysusers", str(SYSUSERS_PATH)])
    plan.commands.append(["systemctl", "daemon-reload"])
    return plan


def _check_exec(exec_path: str, interpreters: tuple[Path, ...]) -> None:
    """The service must be able to run it: not under /home, /root or /tmp, nor its Python."""
    path = Path(exec_path)
    if not path.is_absolute():
        raise SetupError(f"--exec {exec_path}: expected an absolute path")
    for candidate in (path, *interpreters):
        hidden = hidden_by(candidate)
        if hidden is not None:
            what = f"{exec_path} is" if candidate == path else f"{exec_path} runs {candidate},"
            raise SetupError(
                f"{what} under {hidden}, which the service cannot see "
                "(ProtectHome=, PrivateTmp=): install the agent into a virtualenv under /opt, "
                "made with the system's Python: /usr/bin/python3 -m venv /opt/ghost-agent && "
                "/opt/ghost-agent/bin/pip install ghost-deploy-agent")


def _config_notes(config: Config, config_file: Path, host: Host) -> list[str]:
    """Warnings about paths of the config the service cannot see or that do not exist."""
    notes = []
    for path, why in writable_paths(config):
        hidden = hidden_by(path)
        if hidden is not None:
            notes.append(f"warning: {path} ({why.split(' (')[0]}) is under {hidden}, which the "
                         "service cannot see (ProtectHome=, PrivateTmp=): move it")
        elif path not in host.dirs:
            notes.append(f"warning: {path} ({why.split(' (')[0]}) does not exist yet")
    for path, what in ((config_file, "the config"), (config.git.ssh_key, "[git] ssh_key")):
        if path is not None and hidden_by(path) is not None:
            notes.append(f"warning: {what} {path} is under {hidden_by(path)}, which the service "
                         "cannot see: move it to /etc/ghost-agent/")
    remote = config.git.remote
    if remote.startswith("/") and hidden_by(Path(remote)) is not None:
        notes.append(f"warning: [git] remote {remote} is under {hidden_by(Path(remote))}, which "
                     "the service cannot see")
    return notes
