"""Site settings files a release carries beside its theme (#12): routes.yaml and the
redirects (.yaml or .json), uploaded to Ghost through its Admin API when they changed.

Ghost checks each file as it takes it, and a file it refuses leaves the one it had: so the
files go up before the theme is switched. The state remembers what Ghost last took (a digest
per kind), so whatever undoes a release (a refusal, a failed switch, a rollback, an
operator's rollback, the recovery after a kill) puts the live release's files back by
sending what differs from it.
"""

from __future__ import annotations

import hashlib
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


def sync(admin: GhostAdmin, files: list[SettingsFile], release: Path,
         sent: dict[str, str]) -> list[SettingsFile]:
    """Send Ghost each of the release's files that differs from what it last took (`sent`:
    kind -> sha256, updated after each file Ghost takes; a kind missing from it is sent).
    Returns the files sent. Raises DeployError naming a configured file the release lacks,
    ghost_admin.Rejected (Ghost refused it: the release's fault), or HostError (the key may
    not, or Ghost did not answer: tried again later)."""
    done = []
    for item in files:
        data = _read(release, item.name)
        if data is None:
            raise DeployError(f"[deploy] {item.kind} = {item.name!r}, but the release has no "
                              "such file")
        digest = hashlib.sha256(data).hexdigest()
        if sent.get(item.kind) == digest:
            continue
        try:
            if item.kind == "routes":
                admin.upload_routes("routes.yaml", data)
            else:
                suffix = ".json" if item.name.endswith(".json") else ".yaml"
                admin.upload_redirects(f"redirects{suffix}", data)
        except AdminError as exc:
            hint = (": routes and redirects need an Administrator's staff access token"
                    if exc.status == 403 else "")
            raise HostError(f"{exc.message}{hint}") from None
        sent[item.kind] = digest
        done.append(item)
    return done


def _read(release: Path, name: str) -> bytes | None:
    """The file's bytes, or None when it is missing or lies outside the release (a link a
    build made after the tree's links were checked)."""
    try:
        path = (release / name).resolve(strict=True)
        if not path.is_relative_to(release.resolve()) or not path.is_file():
            return None
        return path.read_bytes()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python 3.10
        return None
