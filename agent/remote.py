"""The git remote, seen through a bare cache under state_dir.

A poll costs one `ls-remote`; a deploy fetches only the one branch (new objects only)
and exports the commit's tree into a fresh directory. Never pull, never merge.
All git runs through GitPython with a timeout, never prompts, and every message is redacted.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import git

from agent.errors import DeployError, RemoteError
from agent.models import Snapshot
from agent.redact import redact

_SHA = re.compile(r"^[0-9a-f]{40}$")
MAX_LOG = 200  # commits read for one release's cards


def git_env(timeout: float, ssh_key: Path | None = None) -> dict[str, str]:
    """Environment that makes git fail fast instead of waiting on a person."""
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}",
           "-o", "StrictHostKeyChecking=accept-new"]
    if ssh_key:
        ssh += ["-i", str(ssh_key), "-o", "IdentitiesOnly=yes"]
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",  # also stops credential prompts through askpass
        "SSH_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": shlex.join(ssh),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,  # the host user's git config must not change behaviour
    }


# Options for every command: protocol v2 (ref prefixes for fetch), no credential helpers,
# and an HTTP transfer that stalls is cut off.
_OPTIONS = ["-c", "protocol.version=2", "-c", "credential.helper=",
            "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=30"]


class RemoteCache:
    def __init__(self, cache_dir: Path, url: str, timeout: float, ssh_key: Path | None = None):
        self.cache_dir = cache_dir
        self.url = url
        self.timeout = timeout
        self.env = git_env(timeout, ssh_key)
        local = _local_path(url)
        if local:
            # A repository on this host is often owned by another user (e.g. the developers'
            # bare repo). git only trusts it through a global config (it drops `-c` for the
            # local upload-pack), so the agent keeps its own, instead of the host user's.
            self.env["GIT_CONFIG_GLOBAL"] = str(cache_dir.parent / "gitconfig")
            self._global_config = f"[safe]\n\tdirectory = {local}\n"
        else:
            self._global_config = None
        # Commands name the repository through GIT_DIR; "/" is just a cwd that always exists.
        self._git = git.Git("/")

    # -- reading the remote -------------------------------------------------------------
    def heads(self, patterns: list[str]) -> Snapshot:
        """Branch heads matching the patterns, from one `git ls-remote`."""
        out = self._run(["ls-remote", "--heads", "--", self.url, *patterns], RemoteError,
                        "cannot read the remote")
        heads: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if _SHA.match(sha) and ref.startswith("refs/heads/"):
                heads[ref[len("refs/heads/"):]] = sha
            elif line.strip():
                raise RemoteError(f"unexpected answer from the remote {redact(self.url)}: "
                                  f"{redact(line[:100])!r}")
        return Snapshot(heads)

    def fetch(self, branch: str, commit: str) -> None:
        """Fetch one branch into the cache and make sure `commit` arrived."""
        self._ensure_cache()
        if self.has_commit(commit):
            return
        ref = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        self._run(["fetch", "--no-tags", "--no-write-fetch-head", "--", self.url, ref],
                  RemoteError, f"cannot fetch {branch}")
        if not self.has_commit(commit):
            raise RemoteError(f"{branch} moved while fetching (wanted {commit[:7]}); "
                              "the next poll picks up the new head")

    def fetch_all(self) -> None:
        """Fetch every branch (for `deploy --ref <sha>`)."""
        self._ensure_cache()
        self._run(["fetch", "--no-tags", "--prune", "--no-write-fetch-head", "--", self.url,
                   "+refs/heads/*:refs/remotes/origin/*"], RemoteError, "cannot fetch")

    # -- reading the cache ---------------------------------------------------------------
    def has_commit(self, commit: str) -> bool:
        if not self.cache_dir.exists():
            return False
        status, _, _ = self._exec(["cat-file", "-e", f"{commit}^{{commit}}"])
        return status == 0

    def resolve(self, name: str) -> str | None:
        """A full sha for a sha prefix or a fetched branch name."""
        for candidate in (name, f"refs/remotes/origin/{name}"):
            status, out, _ = self._exec(["rev-parse", "--verify", "--quiet",
                                         f"{candidate}^{{commit}}"])
            if status == 0 and _SHA.match(out.strip()):
                return out.strip()
        return None

    def is_ancestor(self, old: str, new: str) -> bool:
        status, _, _ = self._exec(["merge-base", "--is-ancestor", old, new])
        return status == 0

    def log(self, new: str, old: str | None) -> tuple[list[tuple[str, int, str]], bool]:
        """Commits a release brings: [(sha, parent count, message)], newest first.

        Returns (commits, rewritten): rewritten is True when `old` is no longer an ancestor
        (force-push); then the commits since the merge base are used. Bounded by MAX_LOG.
        """
        rewritten = False
        rev_range = [new]
        if old and self.has_commit(old):
            if self.is_ancestor(old, new):
                rev_range = [f"{old}..{new}"]
            else:
                rewritten = True
                status, base, _ = self._exec(["merge-base", old, new])
                if status == 0 and base.strip():
                    rev_range = [f"{base.strip()}..{new}"]
        elif old:
            rewritten = True
        out = self._run(["log", f"--max-count={MAX_LOG}", "--format=%H %P%x00%B%x1e",
                         *rev_range, "--"], DeployError, "cannot read the commit log")
        commits = []
        for entry in out.split("\x1e"):
            entry = entry.strip("\n")
            if not entry:
                continue
            head, _, message = entry.partition("\x00")
            sha, *parents = head.split()
            commits.append((sha, len(parents), message.strip()))
        return commits, rewritten

    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's tree into dest (which must not exist yet). No .git inside."""
        # A throwaway index beside dest: the cache has no work tree of its own to disturb.
        index = dest.parent / f".index-{dest.name}"
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(dest)}
        dest.mkdir()
        try:
            self._run(["read-tree", commit], DeployError, "cannot read the release tree", env)
            self._run(["checkout-index", "--all", "--force"], DeployError,
                      "cannot write the release tree", env)
        finally:
            index.unlink(missing_ok=True)

    # -- plumbing ------------------------------------------------------------------------
    def _ensure_cache(self) -> None:
        if not (self.cache_dir / "HEAD").exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._run(["init", "--bare", "--quiet", str(self.cache_dir)], RemoteError,
                      "cannot create the git cache")

    def _exec(self, args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        if self._global_config:
            self._write_global_config()
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        if (self.cache_dir / "HEAD").exists():
            full_env["GIT_DIR"] = str(self.cache_dir)
        status, out, err = self._git.execute(
            ["git", *_OPTIONS, *args],
            with_extended_output=True,
            with_exceptions=False,
            kill_after_timeout=self.timeout,
            env=full_env,
        )
        return status, out, err

    def _write_global_config(self) -> None:
        path = Path(self.env["GIT_CONFIG_GLOBAL"])
        try:
            if path.read_text() == self._global_config:
                return
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._global_config)

    def _run(self, args: list[str], error: type[Exception], what: str,
             env: dict[str, str] | None = None) -> str:
        status, out, err = self._exec(args, env)
        if status != 0:
            detail = redact(_last_line(err) or f"git exited with {status}")
            raise error(f"{what} ({redact(self.url)}): {detail}")
        return out


def _local_path(url: str) -> str | None:
    """The directory of a path or file:// remote, else None."""
    if url.startswith("file://"):
        return url[len("file://"):].rstrip("/") or None
    if url.startswith("/"):
        return url.rstrip("/")
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # git's own "fatal:" line names the cause; prefer it to progress chatter
    for line in reversed(lines):
        if line.startswith(("fatal:", "error:", "Timeout:")):
            return line
    return lines[-1] if lines else ""
