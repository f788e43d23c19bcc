"""Release directories under releases_dir and the live symlink that points at one of them.

A release is staged in a hidden directory, built there, then renamed to its final name:
a run killed while staging leaves only a `.staging-*` directory that the next prune removes.
The live path is switched by renaming a fresh symlink over it, so Ghost sees the old
release or the new one, never a mix of files.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from agent import proc
from agent.errors import DeployError

STAGING_PREFIX = ".staging-"
# Only names this module makes are ever pruned: 20261126T140003123456Z-<sha12 or "adopted">
_OURS = re.compile(r"^(\.staging-|\.index-\.staging-)?\d{8}T\d{12}Z-[0-9a-z]+$")


class Releases:
    def __init__(self, releases_dir: Path, live_path: Path):
        self.dir = releases_dir
        self.live_path = live_path

    # -- staging -------------------------------------------------------------------------
    def stage(self, commit: str, now: datetime, export: Callable[[Path], None]) -> Path:
        """Export a commit into a fresh staging directory; returns it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{commit[:12]}"
        staging = self.dir / f"{STAGING_PREFIX}{name}"
        export(staging)
        return staging

    def build(self, staging: Path, commands: Iterable[Iterable[str]], timeout: float) -> None:
        for argv in commands:
            proc.run(list(argv), timeout=timeout, cwd=staging)

    def finish(self, staging: Path) -> Path:
        """Give a staged, built release its final name."""
        final = self.dir / staging.name[len(STAGING_PREFIX):]
        os.rename(staging, final)
        return final

    def discard(self, path: Path) -> None:
        if path.exists() and path.resolve().parent == self.dir.resolve():
            shutil.rmtree(path, ignore_errors=True)

    # -- the live symlink ----------------------------------------------------------------
    def live(self) -> Path | None:
        """The release directory the live path points at, or None when there is no link."""
        if not self.live_path.is_symlink():
            return None
        return Path(os.path.realpath(self.live_path))

    def adopt_existing(self, now: datetime) -> Path | None:
        """A live path that is still a plain directory (a hand-installed theme) becomes the
        first release, so even the very first deploy has something to roll back to."""
        if self.live_path.is_symlink() or not self.live_path.is_dir():
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        adopted = self.dir / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-adopted"
        try:
            os.rename(self.live_path, adopted)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise DeployError(f"cannot move {self.live_path} into {self.dir}: "
                                  f"{exc.strerror}") from None
            # Another filesystem (e.g. the releases on /var/lib, the theme in /var/www):
            # copy it, then put the link where the directory was.
            self._adopt_by_copy(adopted)
            return adopted
        self.switch(adopted)
        return adopted

    def _adopt_by_copy(self, adopted: Path) -> None:
        staging = self.dir / f"{STAGING_PREFIX}{adopted.name}"
        try:
            shutil.copytree(self.live_path, staging, symlinks=True)
            os.rename(staging, adopted)
            aside = self.live_path.with_name(f".{self.live_path.name}.adopted-{os.getpid()}")
            os.rename(self.live_path, aside)  # same directory: atomic
            os.symlink(adopted, self.live_path)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DeployError(f"cannot copy {self.live_path} into {self.dir}: "
                              f"{exc.strerror or exc}") from None
        shutil.rmtree(aside, ignore_errors=True)

    def switch(self, target: Path | None) -> None:
        """Point the live path at target atomically (None removes the link)."""
        if target is None:
            if self.live_path.is_symlink():
                self.live_path.unlink()
            return
        if self.live_path.exists() and not self.live_path.is_symlink():
            raise DeployError(f"{self.live_path} is a real directory; refusing to replace it")
        self.live_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.live_path.with_name(f".{self.live_path.name}.switch-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.live_path)
        _fsync_dir(self.live_path.parent)

    # -- pruning ---------------------------------------------------------------------------
    def prune(self, keep: Iterable[Path]) -> list[Path]:
        """Remove every release directory not in keep, and staging leftovers. Never the live one."""
        if not self.dir.is_dir():
            return []
        protected = {Path(os.path.realpath(p)) for p in keep}
        live = self.live()
        if live:
            protected.add(live)
        removed = []
        for entry in self.dir.iterdir():
            if not _OURS.match(entry.name) or entry.is_symlink():
                continue  # only what this class made
            if entry.resolve() in protected or entry.name.endswith("-adopted"):
                continue  # the operator's own theme from before the agent is never deleted
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)  # an index left by a killed export
            removed.append(entry)
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
