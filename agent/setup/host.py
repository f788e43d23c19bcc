"""What setup reads from the host before it decides, and nothing else: it writes nothing.

look() gathers the facts plan.make_plan decides on, so the plan itself stays pure; the
group helpers serve the command line's --ghost-group default and check.
"""

from __future__ import annotations

import grp
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.setup.layout import (JOURNAL_GROUP, NGINX_DIR, SINGLE, Service, held_by,
                                under_root, writable_paths)

if TYPE_CHECKING:
    from agent.config import Config


@dataclass(frozen=True)
class Host:
    """The facts of one host (under --root) that the plan depends on."""

    packaged: bool = False  # the Debian package's unit is installed
    pip_unit: bool = False  # a unit in /etc/systemd/system (an earlier pip install's)
    nginx: bool = False  # /etc/nginx exists
    exec_path: str | None = None  # --exec, else the ghost-agent found; None: none found
    interpreters: tuple[Path, ...] = ()  # exec_path's #! interpreter, and where it leads
    dirs: frozenset[Path] = frozenset()  # those of the config's writable paths that exist
    single_site: bool = False  # ghost-agent.service's drop-in exists (setup ran for it)
    #: (site, config file, layout.held_by of its config) of the other instances set up here
    others: tuple[tuple[str, Path, dict], ...] = ()


def look(root: Path, exec_path: str | None, config: Config | None,
         service: Service = SINGLE) -> Host:
    """Read the facts for `service` under root; exec_path is --exec (None: find it). Never
    raises for what it cannot find: the plan decides whether that matters."""
    exec_path = exec_path or find_exec()
    wanted = writable_paths(config, service) if config is not None else []
    dirs = frozenset(path for path, _ in wanted if under_root(root, path).is_dir())
    return Host(packaged=any(under_root(root, p).exists() for p in service.packaged_unit_paths),
                pip_unit=under_root(root, service.pip_unit_path).exists(),
                nginx=under_root(root, NGINX_DIR).is_dir(),
                exec_path=exec_path,
                interpreters=_interpreters(exec_path, root) if exec_path else (),
                dirs=dirs,
                single_site=under_root(root, SINGLE.dropin_path).exists(),
                others=_others_held(root, service) if service.site is not None else ())


def find_exec() -> str | None:
    """The `ghost-agent` this setup belongs to, as an absolute path (symlinks kept)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    candidates: list[Path] = []
    if argv0 is not None and argv0.name == "ghost-agent":
        candidates.append(argv0 if argv0.is_absolute() else Path.cwd() / argv0)
    candidates.append(Path(sys.executable).parent / "ghost-agent")
    found = shutil.which("ghost-agent")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return os.path.normpath(candidate.absolute())
    return None


def _interpreters(exec_path: str, root: Path) -> tuple[Path, ...]:
    """The #! interpreter of exec_path and, on the live root, where that link leads: a venv
    made with a Python under /root runs from there, which the sandbox hides."""
    path = Path(exec_path)
    if not path.is_absolute():
        return ()  # the plan refuses it
    try:
        with under_root(root, path).open("rb") as fh:
            first = fh.readline(256)
    except OSError:
        return ()
    words = first[2:].decode("utf-8", "replace").split() if first.startswith(b"#!") else []
    if not words:
        return ()
    if root == Path("/"):
        return Path(words[0]), Path(words[0]).resolve()
    return (Path(words[0]),)


def group_from_sysusers(root: Path, service: Service = SINGLE) -> str | None:
    """Ghost's group named in the sysusers file of an earlier setup of `service`, if any."""
    try:
        text = under_root(root, service.sysusers_path).read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[:2] == ["m", service.user] and words[2] != JOURNAL_GROUP:
            return words[2]
    return None


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _others_held(root: Path, service: Service) -> tuple[tuple[str, Path, dict], ...]:
    """What the other instances' configs hold (layout.held_by), each read as its own setup
    reads it; one that cannot be read is left out (its own setup and status say why)."""
    from agent.config import load_config
    from agent.errors import AgentError
    from agent.setup.credstore import service_view

    held = []
    for site, path in other_instances(root, service):
        try:
            with service_view(Service.instance(site), root):
                held.append((site, path, held_by(load_config(path))))
        except AgentError:
            continue
    return tuple(held)


def other_instances(root: Path, service: Service) -> list[tuple[str, Path]]:
    """(site, its config file) of every instance set up on the host (a drop-in of
    ghost-agent@<site>.service under root) but `service`'s. The config is the drop-in's
    GHOST_AGENT_CONFIG when it names one, else /etc/ghost-agent/<site>.toml."""
    found = []
    for dropin in sorted(under_root(root, Path("/etc/systemd/system")).glob(
            "ghost-agent@*.service.d/50-setup.conf")):
        site = dropin.parent.name.removeprefix("ghost-agent@").removesuffix(".service.d")
        if site == service.site:
            continue
        config = Service(site).default_config
        try:
            for line in dropin.read_text(encoding="utf-8").splitlines():
                if line.startswith("Environment=GHOST_AGENT_CONFIG="):
                    config = Path(line.split("=", 2)[2].strip())
        except (OSError, UnicodeDecodeError):
            continue
        found.append((site, config))
    return found
