"""The plan: from the options, the config and the host's facts (host.Host), the files to
write, the commands to run and what the operator should hear.

Pure: it reads and writes nothing, so --dry-run prints exactly what a real run would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.setup.host import Host
from agent.setup.layout import (DEFAULT_GHOST_GROUP, NGINX_DIR, PIP_CTL_PATH, RESERVED_SITES,
                                SINGLE, STATE_DIR, Service, SetupError, held_by, hidden_by,
                                writable_paths)
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
    service: Service = SINGLE  # ghost-agent.service, or --instance's ghost-agent@<site>


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
    cannot go into a file, an instance's config whose state is another service's."""
    plan = Plan()
    service = options.service
    layout = options.layout
    if layout == "auto":
        layout = "deb" if host.packaged else "pip"
    group = options.ghost_group or None

    if layout == "pip":
        if host.exec_path is None:
            raise SetupError("cannot find the installed `ghost-agent` command; pass --exec PATH")
        _check_exec(host.exec_path, host.interpreters)
        plan.files.append(PlannedFile(service.pip_unit_path,
                                      render_unit(host.exec_path, service.site is not None),
                                      why="the service (pip install)"))
        plan.files.append(PlannedFile(PIP_CTL_PATH, render_ctl(host.exec_path), 0o755,
                                      why="manual commands as the service runs them"))
    elif host.pip_unit:
        plan.notes.append(f"warning: {service.pip_unit_path} (an earlier pip install?) hides "
                          "the package's unit: remove it, then `systemctl daemon-reload`")
    # /etc/sysusers.d/ghost-agent.conf replaces the package's /usr/lib/sysusers.d one of the
    # same name: the same user, plus Ghost's group. An instance's user is setup's alone.
    plan.files.append(PlannedFile(service.sysusers_path,
                                  render_sysusers(group, config_file, service),
                                  why="the user and its groups"))

    if not options.unit_only:
        if config is None or config_file is None:
            raise SetupError("a config is needed (or --unit-only)")
        if service.site is not None:
            _check_instance_paths(config, config_file, service)
            _check_not_held_by_others(config, service, host.others)
            if host.single_site:
                plan.notes.append(
                    f"warning: {SINGLE.unit} is set up on this host too; its state directory "
                    f"{STATE_DIR} holds the instances' ones, and starting it makes them its "
                    f"user's: run every site as an instance (`ghost-agent setup --instance "
                    f"SITE`) and `systemctl disable --now {SINGLE.unit}`")
        plan.files.append(PlannedFile(service.dropin_path,
                                      render_dropin(config, config_file, service),
                                      why="the paths the agent may write"))
        plan.files.append(PlannedFile(service.polkit_path,
                                      render_polkit_rule(config.ghost.unit, config_file,
                                                         service),
                                      why=f"{service.user} may restart {config.ghost.unit}, "
                                          "nothing else"))
        if host.nginx:
            plan.files.append(PlannedFile(service.nginx_path,
                                          render_nginx_snippet(
                                              config.site.ci_cd_dir, config_file,
                                              getattr(config, "webhook", None), service),
                                          why="nginx: the ci-cd files, uncached"))
        else:
            plan.notes.append(f"no {NGINX_DIR}: the nginx snippet was not written (see "
                              "docs/operators.md to serve the ci-cd files uncached)")
        plan.notes += _config_notes(config, config_file, host, service)
        plan.readable.append(config_file)
        plan.writable += writable_paths(config, service)

    plan.commands.append(["systemd-sysusers", str(service.sysusers_path)])
    plan.commands.append(["systemctl", "daemon-reload"])
    return plan


def _check_instance_paths(config: Config, config_file: Path, service: Service) -> None:
    """An instance keeps its state in its own /var/lib/ghost-agent/<site> (the default: the
    config loaded with $STATE_DIRECTORY set, see command.py): a state_dir or releases_dir
    elsewhere under /var/lib/ghost-agent is another service's (lock, history, releases)."""
    for value, key in ((config.agent.state_dir, "[agent] state_dir"),
                       (config.deploy.releases_dir, "[deploy] releases_dir")):
        if not value.is_relative_to(STATE_DIR) or value.is_relative_to(service.state_dir):
            continue
        parts = value.relative_to(STATE_DIR).parts
        owner = (f"instance {parts[0]}'s" if parts and parts[0] not in RESERVED_SITES
                 else f"the single-site {SINGLE.unit}'s")
        raise SetupError(f"{config_file}: {key} = {value} is in {owner} state; instance "
                         f"{service.site} keeps its own in {service.state_dir}: leave "
                         f"{key.split()[1]} out (or put it outside {STATE_DIR})")


def _check_not_held_by_others(config: Config, service: Service,
                              others: tuple[tuple[str, Path, dict], ...]) -> None:
    """SetupError (one line) when another instance on the host holds the same Ghost unit,
    theme path, Ghost listener or webhook listener (layout.held_by)."""
    for what, value in held_by(config).items():
        for site, path, theirs in others:
            if value is not None and theirs.get(what) == value:
                raise SetupError(f"--instance {service.site}: {what} {value} is instance "
                                 f"{site}'s too ({path}): give each site its own")


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


def _config_notes(config: Config, config_file: Path, host: Host,
                  service: Service = SINGLE) -> list[str]:
    """Warnings about paths of the config the service cannot see or that do not exist."""
    notes = []
    for path, why in writable_paths(config, service):
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
