"""Site settings files a release carries beside its theme (#12): routes.yaml and the
redirects (.yaml or .json), uploaded to Ghost through its Admin API when they changed.

Ghost checks each file as it takes it, and a file it refuses leaves the one it had: so the
files go up before the theme is switched, and a release whose files Ghost refuses changes
nothing. On a rollback the previous release's files go up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import DeployError, HostError
from agent.ghost_admin import AdminError, GhostAdmin


@dataclass(frozen=True)
class SettingsFile:
    kind: str  # "routes" or "redirects"
    name: str  # its path inside a release, from [deploy] routes / redirects


def configured(routes: str | None, redirects: str | None) -> list[SettingsFile]:
    return [SettingsFile(kind, name) for kind, name in (("routes", routes),
                                                        ("redirects", redirects)) if name]


def changed(files: list[SettingsFile], release: Path, before: Path | None) -> list[SettingsFile]:
    """The files whose bytes differ between the two releases (all of them without `before`).
    Raises DeployError naming a configured file the release does not have."""
    found = []
    for item in files:
        new = _read(release, item.name)
        if new is None:
            raise DeployError(f"[deploy] {item.kind} = {item.name!r}, but the release has no "
                              "such file")
        if before is None or _read(before, item.name) != new:
            found.append(item)
    return found


def upload(admin: GhostAdmin, files: list[SettingsFile], release: Path) -> None:
    """Send each file to Ghost. Raises ghost_admin.Rejected (Ghost refused it: the release's
    fault) or HostError (the key may not, or Ghost did not answer: tried again later)."""
    for item in files:
        path = release / item.name
        try:
            if item.kind == "routes":
                admin.upload_routes(path)
            else:
                admin.upload_redirects(path)
        except AdminError as exc:
            hint = (": routes and redirects need an Administrator's staff access token"
                    if exc.status == 403 else "")
            raise HostError(f"{exc.message}{hint}") from None


def _read(release: Path, name: str) -> bytes | None:
    path = release / name
    try:
        # A link out of the release was refused when it was staged (trees.check_links)
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None
