"""What every part of setup agrees on: the user and unit names, where each file goes, what
the service's sandbox hides, which directories a config makes the agent write; and
SetupError.

Paths are absolute as on the target system; under_root() places one under --root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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


def under_root(root: Path, path: Path) -> Path:
    """Absolute `path` of the target system, as it lies under --root `root`."""
    return root / path.relative_to("/")


def hidden_by(path: Path) -> Path | None:
    """The sandbox directory (ProtectHome=, PrivateTmp=) that hides path from the service."""
    for hidden in HIDDEN_DIRS:
        if path == hidden or path.is_relative_to(hidden):
            return hidden
    return None


def writable_paths(config: Config) -> list[tuple[Path, str]]:
    """(path, why) for every directory the agent writes outside its own state and cache
    directories, in a fixed order, without duplicates or paths inside another one."""
    wanted: list[tuple[Path, str]] = [
        (config.agent.state_dir, "[agent] state_dir"),
        (config.deploy.releases_dir, "[deploy] releases_dir"),
        (config.deploy.path.parent, "[deploy] path's directory (the live symlink is replaced)"),
        (config.site.ci_cd_dir, "[site] ci_cd_dir (ci-cd.txt, .html, .json)"),
    ]
    if config.fleet is not None and config.fleet.out_dir is not None:
        wanted.append((config.fleet.out_dir, "[fleet] out_dir"))
    covered = [STATE_DIR, CACHE_DIR]
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
