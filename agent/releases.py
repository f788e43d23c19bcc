"""Release directories under releases_dir and the live symlink that points at one of them.

A release is staged in a hidden directory, built there, then renamed to its final name:
a run killed while staging leaves only a `.staging-*` directory that the next prune removes.
The live path is switched by renaming a fresh symlink over it, so Ghost sees the old
release or the new one, never a mix of files.

A failed stage or build leaves nothing behind. A failure that is the host's (a full disk, a
read-only or failing file system, too many open files) is a HostError, so the cycle tries the
same commit again later instead of quarantining it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from agent import failpoints, hostfault, proc, trees
from agent.errors import AgentError, DeployError, HostError

STAGING_PREFIX = ".staging-"
# Only names this module makes are ever pruned: 20261126T140003123456Z-<sha12 or "adopted">
_FINISHED = re.compile(r"^\d{8}T\d{12}Z-[0-9a-z]+$")  # stage() names them so
_OURS = re.compile(r"^(\.staging-|\.index-\.staging-)?\d{8}T\d{12}Z-[0-9a-z]+$")
# Below this much free space a failed export or build is taken for a full disk: git's own
# message for it ("unable to write file") does not say so.
LOW_SPACE_BYTES = 1 << 20


class Releases:
    def __init__(self, releases_dir: Path, live_path: Path):
        self.dir = releases_dir
        self.live_path = live_path

    # -- staging -------------------------------------------------------------------------
    def stage(self, commit: str, now: datetime, export: Callable[[Path], None]) -> Path:
        """Export a commit into a fresh staging directory and check its tree; returns it.

        Raises TreeError when the tree must not go live (e.g. a symlink out of the release),
        HostError on a host fault, else what export raised; the staging directory and its
        index are removed first.
        """
        name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{commit[:12]}"
        staging = self.dir / f"{STAGING_PREFIX}{name}"
        with self._cleaning(staging, "cannot stage the release"):
            self.dir.mkdir(parents=True, exist_ok=True)
            export(staging)
            trees.check_links(staging)
        return staging

    def build(self, staging: Path, commands: Iterable[Iterable[str]], timeout: float) -> None:
        """Run each argv in the staging directory (no shell, `timeout` seconds each).

        Raises CommandError for the first command that fails, HostError when the failure is
        the host's; either way the staging directory is removed first.
        """
        failpoints.hit("during-build")
        with self._cleaning(staging, "build failed"):
            for argv in commands:
                proc.run(list(argv), timeout=timeout, cwd=staging)

    def final_name(self, staging: Path) -> Path:
        """The directory `finish` renames a staging directory to."""
        return self.dir / staging.name[len(STAGING_PREFIX):]

    def finish(self, staging: Path) -> Path:
        """Give a staged, built release its final name. Raises HostError or DeployError
        (the staging directory is removed)."""
        final = self.final_name(staging)
        with self._cleaning(staging, "cannot name the release"):
            try:
                os.rename(staging, final)
            except OSError as exc:
                if hostfault.is_host_errno(exc):
                    raise
                raise DeployError(f"cannot rename {staging} to {final.name}: "
                                  f"{exc.strerror or exc}") from None
        return final

    @contextmanager
    def _cleaning(self, staging: Path, what: str) -> Iterator[None]:
        """On any failure inside, remove the staging directory (and its index), and raise a
        HostError instead when the failure is the host's: judged before the removal, while
        a full disk is still full."""
        try:
            yield
        except BaseException as exc:
            fault = self._host_fault(exc, what)
            self._remove_staging(staging)
            if fault is not None and fault is not exc:
                raise fault from None
            raise

    def _host_fault(self, exc: BaseException, what: str) -> HostError | None:
        """The HostError a failure stands for, or None when it is the commit's own."""
        if isinstance(exc, HostError):
            return exc
        if isinstance(exc, OSError) and hostfault.is_host_errno(exc):
            return hostfault.host_error(what, exc)
        if not isinstance(exc, (OSError, AgentError)) or isinstance(exc, trees.TreeError):
            return None
        message = getattr(exc, "message", None) or str(exc)
        phrase = hostfault.phrase_in(message)
        if phrase:
            return HostError(f"{what}: {phrase}: {_one_line(message)}")
        full = self._nearly_full()
        if full:
            return HostError(f"{what} while {self.dir} has {full}: {_one_line(message)}")
        return None

    def _nearly_full(self) -> str | None:
        """"12 KiB free" / "no free inodes" when the releases file system is (almost) full."""
        try:
            fs = os.statvfs(self.dir)
        except OSError:
            return None
        free = fs.f_bavail * fs.f_frsize
        if free < LOW_SPACE_BYTES:
            return f"{free // 1024} KiB free"
        if fs.f_files and fs.f_favail == 0:
            return "no free inodes"
        return None

    def _remove_staging(self, staging: Path) -> None:
        """Remove a staging directory and the index a killed export may have left beside it
        (what cannot be removed now, the next prune removes)."""
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (staging.parent / f".index-{staging.name}").unlink(missing_ok=True)
        except OSError:
            pass

    def discard(self, path: Path) -> None:
        if path.exists() and path.resolve().parent == self.dir.resolve():
            shutil.rmtree(path, ignore_errors=True)

    # -- the live symlink ----------------------------------------------------------------
    def finished(self) -> list[Path]:
        """The finished release directories (not staging ones, not links), in name order,
        which is the order they were made in; [] when the directory cannot be read."""
        try:
            return sorted(d for d in self.dir.iterdir()
                          if _FINISHED.match(d.name) and d.is_dir() and not d.is_symlink())
        except OSError:
            return []

    def live(self) -> Path | None:
        """The release directory the live path points at, or None when there is no link."""
        if not self.live_path.is_symlink():
            return None
        return Path(os.path.realpath(self.live_path))

    def live_path_problem(self) -> str | None:
        """Why the live path cannot be switched, in one line; None when it can: absent, a
        plain directory (adopted as the first release), or a symlink into releases_dir (even
        a dangling one). E.g. "<path> is a plain file", "<path> is a symlink to <target>,
        outside <releases_dir>", "<path> is a symlink to <target>, which does not exist"."""
        path = self.live_path
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot look at {path}: {exc.strerror or exc}"
        if stat.S_ISDIR(mode):
            return None
        if not stat.S_ISLNK(mode):
            return f"{path} is {_kind(mode)}"
        try:
            target = os.readlink(path)
        except OSError as exc:
            return f"cannot read the symlink {path}: {exc.strerror or exc}"
        shown = _shown(target)
        where = Path(os.path.realpath(path))
        releases = Path(os.path.realpath(self.dir))
        if releases in where.parents:
            return None
        if where == releases:
            return f"{path} is a symlink to {shown}, which is {self.dir} itself, not a release"
        if not os.path.exists(path):
            return f"{path} is a symlink to {shown}, which does not exist"
        return f"{path} is a symlink to {shown}, outside {self.dir}"

    def live_path_signature(self) -> str:
        """What the live path is now, as one string ("l:<target>:<inode>:<mtime ns>",
        "d:…" as `ls -l` marks the type, or "absent"): it changes when an operator fixes
        the path."""
        try:
            st = os.lstat(self.live_path)
        except OSError as exc:
            return "absent" if exc.errno == errno.ENOENT else f"unreadable:{exc.errno}"
        target = _shown(os.readlink(self.live_path)) if stat.S_ISLNK(st.st_mode) else ""
        return f"{stat.filemode(st.st_mode)[0]}:{target}:{st.st_ino}:{st.st_mtime_ns}"

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
            if hostfault.is_host_errno(exc):
                raise hostfault.host_error(f"cannot move {self.live_path} into {self.dir}",
                                           exc) from None
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
            if hostfault.is_host_errno(exc):
                raise hostfault.host_error(f"cannot copy {self.live_path} into {self.dir}",
                                           exc) from None
            raise DeployError(f"cannot copy {self.live_path} into {self.dir}: "
                              f"{exc.strerror or exc}") from None
        shutil.rmtree(aside, ignore_errors=True)

    def switch(self, target: Path | None) -> None:
        """Point the live path at target atomically (None removes the link).

        Raises DeployError when the live path is a real directory, HostError on a host fault
        (the live link is then unchanged), OSError otherwise.
        """
        if target is None:
            if self.live_path.is_symlink():
                self.live_path.unlink()
            return
        if self.live_path.exists() and not self.live_path.is_symlink():
            raise DeployError(f"{self.live_path} is a real directory; refusing to replace it")
        tmp = self.live_path.with_name(f".{self.live_path.name}.switch-{os.getpid()}")
        try:
            self.live_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, self.live_path)
            _fsync_dir(self.live_path.parent)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # the same fault again: the next switch removes it first
            if hostfault.is_host_errno(exc):
                raise hostfault.host_error(f"cannot point {self.live_path} at {target}",
                                           exc) from None
            raise

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


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a plain file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def _shown(path: str) -> str:
    """A path as valid UTF-8 text (bytes that are not UTF-8 as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
