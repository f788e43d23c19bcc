"""What every part of setup agrees on: the user and unit names, where each file goes, what
the service's sandbox hides, which directories a config makes the agent write; and
SetupError.

Service names one installed service: the single-site ghost-agent.service (Service()) or an
instance ghost-agent@<site>.service of the template unit (Service.instance(site)), each
with its own user, state, cache, credentials, polkit rule, drop-in and sysusers file.

Paths are absolute as on the target system; under_root() places one under --root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import DEFAULT_CONFIG_PATH
from agent.errors import AgentError, ExitCode

if TYPE_CHECKING:
    from agent.config import Config

USER = "ghost-agent"
UNIT = "ghost-agent.service"
STATE_DIR = Path("/var/lib/ghost-agent")  # StateDirectory=ghost-agent (also the user's home)
CACHE_DIR = Path("/var/cache/ghost-agent")  # CacheDirectory=ghost-agent
PACKAGED_EXEC = "/usr/bin/ghost-agent"
DEFAULT_GHOST_GROUP = "ghost"  # Ghost-CLI's user and group
JOURNAL_GROUP = "systemd-journal"

#: The systemd credentials the agent reads from $CREDENTIALS_DIRECTORY (agent/config.py).
CREDENTIALS = ("slack-webhook-url", "slack-token", "trello-key", "trello-token",
               "git-credentials", "webhook-secret", "ghost-admin-api-key")
#: Where they live on disk: systemd's credential store, /etc/credstore/ghost-agent.<name>.
#: (LoadCredential=NAME:ghost-agent.NAME searches /etc/credstore, /run/credstore and
#: /usr/lib/credstore, and is harmless when the file is absent; an absolute path would fail
#: the unit with 243/CREDENTIALS when the file is missing.)
CREDSTORE = Path("/etc/credstore")
CREDENTIAL_PREFIX = "ghost-agent."

# Where each file goes (relative to --root).
UNIT_PATHS = (Path("/lib/systemd/system") / UNIT, Path("/usr/lib/systemd/system") / UNIT)
PIP_UNIT_PATH = Path("/etc/systemd/system") / UNIT
DROPIN_PATH = Path("/etc/systemd/system") / f"{UNIT}.d" / "50-setup.conf"
POLKIT_PATH = Path("/etc/polkit-1/rules.d/10-ghost-agent.rules")
SYSUSERS_PATH = Path("/etc/sysusers.d/ghost-agent.conf")
NGINX_DIR = Path("/etc/nginx")
NGINX_PATH = NGINX_DIR / "snippets" / "ghost-agent-ci-cd.conf"
PIP_CTL_PATH = Path("/usr/local/sbin/ghost-agentctl")

#: Directories the unit hides or replaces: a path there is invisible to the service.
HIDDEN_DIRS = (Path("/home"), Path("/root"), Path("/run/user"),
               Path("/tmp"), Path("/var/tmp"))  # noqa: S108 - names, not files we use


class SetupError(AgentError):
    """setup cannot go on: the message says why and what to do instead."""

    exit_code = ExitCode.FAILED


#: The template unit's file, whose instances are ghost-agent@<site>.service.
TEMPLATE_UNIT = "ghost-agent@.service"
#: A site's name as an instance: a systemd instance name and, as ghost-agent-<site>, a user
#: name (at most 31 characters: systemd-sysusers refuses longer ones, utmp's limit): lowercase
#: letters, digits and inner dashes, 1 to 19 of them.
_SITE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,17}[a-z0-9])?")
#: Names an instance cannot take: the single-site agent's config (agent.toml) and what it
#: keeps in /var/lib/ghost-agent, which holds the instances' state directories; and fleet,
#: whose user ghost-agent-fleet runs the morning report (packaging/ansible).
RESERVED_SITES = frozenset({"agent", "cache", "fleet", "fleet-last-run", "releases",
                            "slack-spool", "tmp"})


@dataclass(frozen=True)
class Service:
    """The names and paths of one service: site None is the single-site ghost-agent.service;
    a site is the instance ghost-agent@<site>.service (see instance())."""

    site: str | None = None

    @classmethod
    def instance(cls, site: str) -> Service:
        """The instance for `site`; SetupError (one line) when it cannot be an instance name."""
        if not _SITE.fullmatch(site):
            raise SetupError(f"--instance {site!r}: expected 1 to 19 lowercase letters, digits "
                             "or dashes, not starting or ending with a dash (a systemd instance "
                             f"name, and the user {USER}-<site>)")
        if site in RESERVED_SITES:
            raise SetupError(f"--instance {site}: reserved (the single-site agent's config or "
                             "state, or the fleet report's user, uses that name)")
        return cls(site)

    @property
    def user(self) -> str:
        """The system user it runs as: ghost-agent, ghost-agent-<site>."""
        return USER if self.site is None else f"{USER}-{self.site}"

    @property
    def unit(self) -> str:
        """ghost-agent.service, ghost-agent@<site>.service."""
        return UNIT if self.site is None else f"ghost-agent@{self.site}.service"

    @property
    def unit_file(self) -> str:
        """The file that defines the unit: ghost-agent.service or the template's."""
        return UNIT if self.site is None else TEMPLATE_UNIT

    @property
    def packaged_unit_paths(self) -> tuple[Path, ...]:
        """Where the Debian package installs unit_file."""
        return tuple(Path(d) / self.unit_file for d in ("/lib/systemd/system",
                                                        "/usr/lib/systemd/system"))

    @property
    def pip_unit_path(self) -> Path:
        """Where setup writes unit_file for a pip install (/etc/systemd/system)."""
        return Path("/etc/systemd/system") / self.unit_file

    @property
    def dropin_path(self) -> Path:
        """setup's drop-in: the paths it may write, the config it reads."""
        return Path("/etc/systemd/system") / f"{self.unit}.d" / "50-setup.conf"

    @property
    def polkit_path(self) -> Path:
        """The rule that lets its user restart its Ghost unit and nothing else."""
        return Path("/etc/polkit-1/rules.d") / f"10-{self.user}.rules"

    @property
    def sysusers_path(self) -> Path:
        """Its user and the user's groups (systemd-sysusers)."""
        return Path("/etc/sysusers.d") / f"{self.user}.conf"

    @property
    def nginx_path(self) -> Path:
        """The nginx snippet serving its ci-cd files uncached (and its webhook)."""
        name = "ghost-agent" if self.site is None else f"ghost-agent-{self.site}"
        return NGINX_DIR / "snippets" / f"{name}-ci-cd.conf"

    @property
    def state_dir(self) -> Path:
        """StateDirectory= (also the user's home): /var/lib/ghost-agent[/<site>]."""
        return STATE_DIR if self.site is None else STATE_DIR / self.site

    @property
    def cache_dir(self) -> Path:
        """CacheDirectory=: /var/cache/ghost-agent[/<site>]."""
        return CACHE_DIR if self.site is None else CACHE_DIR / self.site

    @property
    def credential_prefix(self) -> str:
        """/etc/credstore/<prefix><name>: ghost-agent.<name>, ghost-agent.<site>.<name>."""
        return CREDENTIAL_PREFIX if self.site is None else f"{CREDENTIAL_PREFIX}{self.site}."

    @property
    def default_config(self) -> Path:
        """/etc/ghost-agent/agent.toml, /etc/ghost-agent/<site>.toml."""
        return DEFAULT_CONFIG_PATH if self.site is None else \
            DEFAULT_CONFIG_PATH.with_name(f"{self.site}.toml")


SINGLE = Service()


def under_root(root: Path, path: Path) -> Path:
    """Absolute `path` of the target system, as it lies under --root `root`."""
    return root / path.relative_to("/")


def hidden_by(path: Path) -> Path | None:
    """The sandbox directory (ProtectHome=, PrivateTmp=) that hides path from the service."""
    for hidden in HIDDEN_DIRS:
        if path == hidden or path.is_relative_to(hidden):
            return hidden
    return None


def writable_paths(config: Config, service: Service = SINGLE) -> list[tuple[Path, str]]:
    """(path, why) for every directory the agent writes outside the service's own state and
    cache directories, in a fixed order, without duplicates or paths inside another one."""
    wanted: list[tuple[Path, str]] = [
        (config.agent.state_dir, "[agent] state_dir"),
        (config.deploy.releases_dir, "[deploy] releases_dir"),
        (config.deploy.path.parent, "[deploy] path's directory (the live symlink is replaced)"),
        (config.site.ci_cd_dir, "[site] ci_cd_dir (ci-cd.txt, .html, .json)"),
    ]
    if config.fleet is not None and config.fleet.out_dir is not None:
        wanted.append((config.fleet.out_dir, "[fleet] out_dir"))
    covered = [service.state_dir, service.cache_dir]
    chosen: list[tuple[Path, str]] = []
    for path, why in wanted:
        path = Path(os.path.normpath(path))
        if any(path == c or path.is_relative_to(c) for c in covered):
            continue
        chosen.append((path, why))
        covered.append(path)
    # a later path may contain an earlier one: keep the outer one only
    return [(p, w) for p, w in chosen
            if not any(p != q and p.is_relative_to(q) for q, _ in chosen)]


def held_by(config: Config) -> dict[str, str | None]:
    """What an instance must not share with another on the host, by config key (None: not
    used): two agents would restart one Ghost, write one theme, check the other's site, or
    one webhook listener would never bind."""
    hook = config.webhook
    return {"[ghost] unit": config.ghost.unit, "[deploy] path": str(config.deploy.path),
            "[site] local_url": config.site.local_url,
            "[webhook] listen": f"{hook.listen_host}:{hook.listen_port}" if hook else None}
