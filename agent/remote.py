"""The git remote, seen through a bare cache under state_dir.

A poll costs one `ls-remote`; a deploy fetches only the one branch (new objects only)
and exports the commit's tree into a fresh directory, submodules and LFS files filled in.
Never pull, never merge. All git runs through agent.proc with a timeout, never prompts, and
every message is redacted. git's output is read as bytes and decoded here, deliberately:
names git allows need not be UTF-8, and every string the agent keeps must be.

The cache is disposable: when git says it is broken (garbage in HEAD or config, objects
gone), it is set aside as `<name>.broken-<time>`, made again and refilled, once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import cast

from agent import failpoints, hostfault, lfs, proc, submodules
from agent.errors import AgentError, DeployError, HostError, RemoteError
from agent.models import Snapshot
from agent.redact import redact
from agent.trees import Entry, may_need_filling, parse_ls_tree, shown

log = logging.getLogger("agent")

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHA_BYTES = re.compile(rb"^[0-9a-f]{40}$")
_HEADS = b"refs/heads/"
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
        # git's words in English, whatever the host's locale: they are parsed ("fatal:", a
        # full disk's "No space left on device")
        "LC_ALL": "C",
        "LANGUAGE": "C",
    }


# Options for every command: protocol v2 (ref prefixes for fetch), no credential helpers,
# and an HTTP transfer that stalls is cut off.
_OPTIONS = ["-c", "protocol.version=2", "-c", "credential.helper=",
            "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=30"]


class RemoteCache:
    """One remote (any URL git accepts) and its bare cache at cache_dir.

    Raises RemoteError when the remote cannot be read (temporary), DeployError when the cache
    cannot give what was fetched, HostError when git's trouble is the host's (a full disk),
    TreeError (from export) when a tree cannot go live as committed.
    """

    def __init__(self, cache_dir: Path, url: str, timeout: float, ssh_key: Path | None = None):
        self.cache_dir = cache_dir
        self.url = url
        self.timeout = timeout
        self.ssh_key = ssh_key
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
        self._refill: list[str] | None = None  # the last fetch, to refill a re-made cache

    # -- reading the remote -------------------------------------------------------------
    def heads(self, patterns: list[str]) -> Snapshot:
        """Branch heads matching the patterns, from one `git ls-remote`.

        Branch names that are not UTF-8 go to Snapshot.undecodable, never to heads.
        Raises RemoteError when the remote cannot be read or answers something else.
        """
        # Outside the cache: a broken cache must not stop the poll that may heal it.
        out = self._run(["ls-remote", "--heads", "--", self.url, *patterns], RemoteError,
                        "cannot read the remote", heal=False, in_cache=False)
        return parse_heads(out, self.url)

    def fetch(self, branch: str, commit: str) -> None:
        """Fetch one branch into the cache and make sure `commit` arrived (RemoteError if not)."""
        ref = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
        self._refill = ["fetch", "--no-tags", "--no-write-fetch-head", "--", self.url, ref]
        self._ensure_cache()
        fetched = self._fetched(branch)
        # A branch whose ref names another commit has moved on: fetch without asking git first
        # (a commit already here from elsewhere costs one needless fetch, nothing more).
        if fetched == commit or (fetched is None and self.has_commit(commit)):
            return
        try:
            self._run(self._refill, RemoteError, f"cannot fetch {branch}")
        except RemoteError:
            if fetched is not None and self.has_commit(commit):
                return  # the remote is down, but the commit is here (a live release restored)
            raise
        failpoints.hit("during-fetch")
        if self._fetched(branch) != commit and not self.has_commit(commit):
            raise RemoteError(f"{branch} moved while fetching (wanted {commit[:7]}); "
                              "the next poll picks up the new head")

    def fetch_all(self) -> None:
        """Fetch every branch (for `deploy --ref <sha>`). Raises RemoteError."""
        self._refill = ["fetch", "--no-tags", "--prune", "--no-write-fetch-head", "--", self.url,
                        "+refs/heads/*:refs/remotes/origin/*"]
        self._ensure_cache()
        self._run(self._refill, RemoteError, "cannot fetch")
        failpoints.hit("during-fetch")

    def fetch_commit(self, commit: str) -> None:
        """Make sure `commit` is in the cache, whichever branch or tag holds it (a submodule's
        recorded commit). Raises RemoteError when the remote does not have it."""
        if self.cache_dir.exists() and self.has_commit(commit):
            return
        self._refill = ["fetch", "--no-tags", "--no-write-fetch-head", "--", self.url,
                        "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        self._ensure_cache()
        self._run(self._refill, RemoteError, "cannot fetch")
        if not self.has_commit(commit):  # not on a branch or tag: ask for it by name
            self._exec(["fetch", "--no-tags", "--no-write-fetch-head", "--", self.url, commit])
        if not self.has_commit(commit):
            raise RemoteError(f"commit {commit[:7]} is not on {redact(self.url)}")

    # -- reading the cache ---------------------------------------------------------------
    def _fetched(self, branch: str) -> str | None:
        """The commit a fetch of `branch` left in the cache, read from its loose ref file
        without starting git (a deploy's commonest question); None when that file is not
        there or holds no sha: then has_commit() asks git."""
        try:
            text = (self.cache_dir / "refs" / "remotes" / "origin" / branch).read_bytes()
        except (OSError, ValueError):
            return None
        text = text.strip()
        return text.decode() if _SHA_BYTES.match(text) else None

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
            text = out.decode("ascii", "replace").strip()
            if status == 0 and _SHA.match(text):
                return text
        return None

    def log(self, new: str, old: str | None) -> tuple[list[tuple[str, int, str]], bool]:
        """Commits a release brings: [(sha, parent count, message)], newest first.

        Returns (commits, rewritten): rewritten is True when `old` is no longer an ancestor
        (force-push); then the commits since the merge base are used. Bounded by MAX_LOG.
        Messages that are not UTF-8 are decoded with U+FFFD in place of the bad bytes.
        Raises DeployError when the cache cannot give the log.
        """
        rewritten = False
        rev_range = [new]
        if old:
            # One merge-base answers all three questions: is `old` here (else it fails), is it
            # an ancestor (the base is `old` itself), and where the histories part if not.
            status, out, _ = self._exec(["merge-base", old, new])
            base = out.decode("ascii", "replace").strip()
            if status == 0 and _SHA.match(base):
                rewritten = not base.startswith(old.lower())  # `old` may be abbreviated
                rev_range = [f"{base}..{new}"]
            else:
                rewritten = True
        out = self._run(["log", f"--max-count={MAX_LOG}", "--format=%H %P%x00%B%x1e",
                         *rev_range, "--"], DeployError, "cannot read the commit log")
        commits = []
        for entry in out.decode("utf-8", "replace").split("\x1e"):
            entry = entry.strip("\n")
            if not entry:
                continue
            head, _, message = entry.partition("\x00")
            sha, *parents = head.split()
            commits.append((sha, len(parents), message.strip()))
        return commits, rewritten

    def tree(self, commit: str) -> list[Entry]:
        """Every file, link and submodule of the commit's tree (`git ls-tree -r`)."""
        out = self._run(["ls-tree", "-r", "-z", "-l", "--full-tree", commit], DeployError,
                        "cannot list the release tree")
        try:
            return parse_ls_tree(out)
        except ValueError as exc:
            raise DeployError(f"cannot list the release tree: {exc}") from None

    def submodule_urls(self, commit: str) -> dict[bytes, str]:
        """Submodule path -> URL as written in the commit's .gitmodules ({} without one)."""
        status, out, _ = self._exec(["config", "--blob", f"{commit}:.gitmodules", "-z",
                                     "--get-regexp", r"^submodule\..*\.(path|url)$"])
        if status != 0:
            return {}
        found: dict[bytes, dict[str, bytes]] = {}
        for item in out.split(b"\0"):
            key, _, value = item.partition(b"\n")
            name, dot, field = key.rpartition(b".")
            if dot and name.startswith(b"submodule.") and field in (b"path", b"url"):
                found.setdefault(name, {})[field.decode()] = value
        return {v["path"]: v["url"].decode("utf-8", "replace") for v in found.values()
                if "path" in v and "url" in v}

    # -- writing a tree --------------------------------------------------------------------
    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's tree into dest (which must not exist yet). No .git inside.

        Submodules and Git LFS files get their real content. Raises TreeError when the tree
        cannot be reproduced faithfully (paths named), DeployError/HostError when git fails,
        OSError when writing fails.
        """
        # A throwaway index beside dest: the cache has no work tree of its own to disturb.
        dest.mkdir()
        self._checkout(commit, dest, dest.parent / f".index-{dest.name}", failpoint=True)
        self._fill(commit, dest, depth=0)

    def write_tree(self, commit: str, dest: Path, depth: int) -> None:
        """export() into an existing empty directory that is a submodule `depth` levels down."""
        self._checkout(commit, dest, self.cache_dir / "export.index")
        self._fill(commit, dest, depth)

    def for_submodule(self, url: str) -> RemoteCache:
        """The cache of a submodule's remote: its own bare repository under the cache dir."""
        digest = hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()[:16]
        return RemoteCache(self.cache_dir.parent / "submodules" / digest / "remote.git", url,
                           self.timeout, self.ssh_key)

    def _checkout(self, commit: str, dest: Path, index: Path, failpoint: bool = False) -> None:
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(dest)}
        try:
            self._run(["read-tree", commit], DeployError, "cannot read the release tree", env)
            if failpoint:
                failpoints.hit("during-export")
            self._run(["checkout-index", "--all", "--force"], DeployError,
                      "cannot write the release tree", env)
        finally:
            index.unlink(missing_ok=True)

    def _fill(self, commit: str, dest: Path, depth: int) -> None:
        if not may_need_filling(dest):
            return  # spares `git ls-tree` of the whole tree, the export's costliest part
        entries = self.tree(commit)
        lfs.fill(self, commit, dest, entries)
        submodules.fill(self, commit, dest, entries, depth)

    # -- Git LFS ---------------------------------------------------------------------------
    def lfs_available(self) -> bool:
        """Is git-lfs installed (as git finds it: its exec path, then PATH)?"""
        status, _, _ = self._exec(["lfs", "version"], in_cache=False)
        return status == 0

    def lfs_objects_dir(self) -> Path:
        return self.cache_dir / "lfs" / "objects"

    def lfs_fetch(self, commit: str) -> str | None:
        """Fetch the commit's LFS objects from the remote into the cache; None when git-lfs
        says it got them all, else its (redacted) last word."""
        # git-lfs finds its server from a remote's URL (https, ssh, or a path through its
        # standalone file transfer); the cache has no remote, so one is named for the call.
        status, _, err = self._exec(["-c", f"remote.origin.url={self.url}", "lfs", "fetch",
                                     "origin", commit])
        if status == 0:
            return None
        phrase = _host_phrase(err)
        if phrase:
            raise HostError(f"cannot fetch Git LFS objects: {phrase}")
        return redact(_last_line(err) or f"git lfs exited with {status}")

    # -- plumbing ------------------------------------------------------------------------
    def _ensure_cache(self) -> None:
        if not (self.cache_dir / "HEAD").exists():
            if self.cache_dir.is_dir() and any(self.cache_dir.iterdir()):
                self._discard_broken("it has no HEAD")  # every repository has one
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if hostfault.is_host_errno(exc):
                    raise hostfault.host_error("cannot create the git cache", exc) from None
                raise RemoteError(f"cannot create the git cache {self.cache_dir}: "
                                  f"{exc.strerror or exc}") from None
            self._run(["init", "--bare", "--quiet", str(self.cache_dir)], RemoteError,
                      "cannot create the git cache", heal=False)

    def _exec(self, args: list[str], env: dict[str, str] | None = None,
              in_cache: bool = True) -> tuple[int, bytes, str]:
        """Run git (in the cache when it exists and in_cache); (status, stdout as bytes,
        stderr as text with U+FFFD for bad bytes). A timeout is status -9 with stderr
        "Timeout: …"; git that cannot start is 127, or HostError for a host fault."""
        if self._global_config:
            self._write_global_config()
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        if in_cache and (self.cache_dir / "HEAD").exists():
            full_env["GIT_DIR"] = str(self.cache_dir)
        try:
            # Commands name the repository through GIT_DIR; "/" is a cwd that always exists.
            done = proc.run(["git", *_OPTIONS, *args], timeout=self.timeout, cwd="/",
                            env=full_env, check=False, text=False)
        except proc.CommandTimeout:
            return -9, b"", f"Timeout: git {_command(args)} did not complete in {self.timeout:g}s"
        except proc.CommandNotStarted as exc:  # e.g. too many open files: no pipe for the child
            if hostfault.is_host_errno(exc.error):
                raise hostfault.host_error("cannot run git", exc.error) from None
            return 127, b"", f"git could not start: {exc.error.strerror or exc.error}"
        return done.returncode, cast(bytes, done.stdout), done.stderr

    def _write_global_config(self) -> None:
        path = Path(self.env["GIT_CONFIG_GLOBAL"])
        try:
            if path.read_text() == self._global_config:
                return
        except OSError:
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._global_config)
        except OSError as exc:
            if hostfault.is_host_errno(exc):
                raise hostfault.host_error("cannot write the agent's git config", exc) from None
            raise

    def _run(self, args: list[str], error: type[AgentError], what: str,
             env: dict[str, str] | None = None, heal: bool = True,
             in_cache: bool = True) -> bytes:
        """Run git and return its stdout; raise `error` (or HostError) when it fails.

        With heal, a failure against a cache that git calls broken sets the cache aside,
        makes and refills it, and runs the command once more.
        """
        status, out, err = self._exec(args, env, in_cache)
        if status != 0 and heal and self._heal(err, refill=args is not self._refill):
            status, out, err = self._exec(args, env, in_cache)
        if status != 0:
            detail = redact(_last_line(err) or f"git exited with {status}")
            phrase = _host_phrase(err)
            if phrase:
                if phrase not in detail:
                    detail = f"{phrase}: {detail}"
                raise HostError(f"{what} ({redact(self.url)}): {detail}")
            raise error(f"{what} ({redact(self.url)}): {detail}")
        return out

    # -- a broken cache ----------------------------------------------------------------------
    def _heal(self, err: str, refill: bool) -> bool:
        """After a failed command: when the cache itself is broken, set it aside, make it
        again and refill it; True when that was done. A healthy cache (e.g. the remote is
        down) and a host fault are left alone."""
        if _host_phrase(err) or not self.cache_dir.exists():
            return False
        why = self._broken()
        if why is None:
            return False
        self._discard_broken(why)
        self._ensure_cache()
        if refill and self._refill:  # (a failed fetch refills it by running again)
            self._run(self._refill, RemoteError, "cannot refill the git cache", heal=False)
        return True

    def _broken(self) -> str | None:
        """Why git cannot use the cache, or None when it can (checked only after a failure)."""
        for check in (["rev-parse", "--git-dir"],
                      ["fsck", "--connectivity-only", "--no-dangling", "--no-progress"]):
            status, _, err = self._exec(check)
            if status != 0:
                if _host_phrase(err) or err.startswith("Timeout:"):
                    return None  # the host's trouble, or too slow to tell: keep it
                return redact(_last_line(err) or f"git {check[0]} exited with {status}")
        return None

    def _discard_broken(self, why: str) -> None:
        aside = self._set_aside()
        log.warning("the git cache %s is broken (%s); set aside as %s, made again and refilled",
                    self.cache_dir, why, aside.name)

    def _set_aside(self) -> Path:
        """Rename the cache to <name>.broken-<UTC time>; only the newest such copy is kept."""
        prefix = f"{self.cache_dir.name}.broken-"
        for old in self.cache_dir.parent.glob(f"{prefix}*"):
            shutil.rmtree(old, ignore_errors=True)
        aside = self.cache_dir.with_name(prefix + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        try:
            os.rename(self.cache_dir, aside)
        except OSError as exc:
            if hostfault.is_host_errno(exc):
                raise hostfault.host_error("cannot set the broken git cache aside", exc) from None
            raise RemoteError(f"the git cache {self.cache_dir} is broken and cannot be set "
                              f"aside: {exc.strerror or exc}") from None
        return aside


def parse_heads(out: bytes, url: str) -> Snapshot:
    """`git ls-remote --heads` output -> Snapshot. Raises RemoteError on any other line."""
    heads: dict[str, str] = {}
    undecodable = []
    for line in out.split(b"\n"):
        if not line.strip():
            continue
        sha, tab, ref = line.partition(b"\t")
        if not (tab and _SHA_BYTES.match(sha) and ref.startswith(_HEADS) and ref != _HEADS):
            raise RemoteError(f"unexpected answer from the remote {redact(url)}: "
                              f"{redact(shown(line[:100]))!r}")
        name = ref[len(_HEADS):]
        try:
            heads[name.decode("utf-8")] = sha.decode("ascii")
        except UnicodeDecodeError:
            undecodable.append(shown(name))
    return Snapshot(heads, tuple(sorted(undecodable)))


def _command(args: list[str]) -> str:
    """The git command of args: "lfs" for ["-c", "k=v", "lfs", "fetch"]."""
    while args[:1] == ["-c"]:
        args = args[2:]
    return args[0] if args else ""


def _local_path(url: str) -> str | None:
    """The directory of a path or file:// remote, else None."""
    if url.startswith("file://"):
        return url[len("file://"):].rstrip("/") or None
    if url.startswith("/"):
        return url.rstrip("/")
    return None


def _host_phrase(err: str) -> str | None:
    """The host-fault wording in git's stderr, whatever the case (git-lfs, in Go, says "no
    space left on device"), leaving out lines the remote sent ("remote: …"): its disk is
    not ours."""
    return hostfault.phrase_in("\n".join(line for line in err.splitlines()
                                         if not line.lstrip().startswith("remote:")))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # git's own "fatal:" line names the cause; prefer it to progress chatter
    for line in reversed(lines):
        if line.startswith(("fatal:", "error:", "Timeout:")):
            return line
    return lines[-1] if lines else ""
