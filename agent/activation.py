"""How a switched release reaches readers: a theme activation through Ghost's Admin API
where it can, else a restart of Ghost's unit (#12).

A restart costs readers about 3 s of refused connections and 503 pages; an activation
(`PUT themes/<name>/activate/`, 0.1-0.5 s) serves the new theme from the next request on,
with no failed one. Activation cannot do everything: Ghost reads the theme's package.json
`config` (posts_per_page, image_sizes, custom settings) only when it boots, so a release
that changes it is restarted, as is every release without an Admin API key or with
`[ghost] reload = "restart"`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from agent.ghost_admin import AdminError, GhostAdmin
from agent.service import GhostService

log = logging.getLogger("agent")

ACTIVATED = "activate"
RESTARTED = "restart"


def package_config(release: Path | None) -> Any:
    """The `config` object of the release's package.json; None without one. A file that
    cannot be read gives a value no other release has, so that a restart follows."""
    if release is None:
        return None
    try:
        data = json.loads((release / "package.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return object()
    return data.get("config") if isinstance(data, dict) else object()


def restart_needed(release: Path | None, before: Path | None) -> bool:
    """Does going from `before` to `release` need Ghost to boot (see the module doc)?"""
    return before is None or release is None or package_config(release) != package_config(
        before)


class GoLive:
    """Makes Ghost serve what the live link points at: go() says how it was done.

    admin: the Admin API client, or None (no key: always restart); theme: the theme's
    folder name under content/themes (the live link's name, which never changes: Ghost
    cannot activate a name that appeared after it booted).
    """

    def __init__(self, ghost: GhostService, admin: GhostAdmin | None, theme: str,
                 mode: str = "auto"):
        self.ghost = ghost
        self.admin = admin if mode == "auto" else None
        self.theme = theme
        self.admin_error: str | None = None  # why the last activation fell back to a restart
        self.activated = False  # an activation has worked since this process started

    def go(self, release: Path | None, before: Path | None) -> str:
        """ACTIVATED or RESTARTED. Raises ghost_admin.Rejected when Ghost refuses the theme
        (nothing changed for readers: the old theme still serves), DeployError when the
        restart fails."""
        if self.admin is not None and not restart_needed(release, before):
            try:
                self.admin.activate_theme(self.theme)
                self.admin_error, self.activated = None, True
                return ACTIVATED
            except AdminError as exc:  # not the release's fault: a restart still works
                log.warning("%s; restarting Ghost instead", exc.message)
                self.admin_error = exc.message
        self.ghost.restart()
        return RESTARTED
