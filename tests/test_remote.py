"""agent.remote: RemoteCache against real git remotes (a path and smart HTTP on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.errors import HostError, RemoteError
from agent.remote import RemoteCache
from agent.selection import heads_patterns
from tests.gitremote import GitRemote, SmartHttpGitServer, run_git

TIMEOUT = 20.0
AUTH = ("deploy", "s3cret-pass-CANARY")


def cache_for(tmp_path: Path, url: str, timeout: float = TIMEOUT) -> RemoteCache:
    return RemoteCache(tmp_path / "state" / "cache.git", url, timeout)


def cache_refs(cache: RemoteCache) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(cache.cache_dir), "for-each-ref", "--format=%(refname)"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    return out.stdout.split()


@pytest.fixture
def auth_git(tmp_path: Path) -> Iterator[tuple[SmartHttpGitServer, GitRemote]]:
    server = SmartHttpGitServer(tmp_path / "auth-root", require_auth=AUTH).start()
    try:
        yield server, GitRemote(server.project_root, work_dir=tmp_path / "auth-work")
    finally:
        server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


# -- heads --------------------------------------------------------------------------------------


def test_heads_over_a_path_remote(tmp_path, git_remote):
    dev1 = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    main = git_remote.commit_and_push("main", {"index.html": "main"}, "main")
    cache = cache_for(tmp_path, git_remote.url)
    assert cache.heads(heads_patterns("dev1")).heads == {"dev1": dev1}
    assert cache.heads(["refs/heads/*"]).heads == {"dev1": dev1, "main": main}
    assert not cache.cache_dir.exists()  # a poll needs no cache


def test_heads_for_release_flag_cover_every_separator(tmp_path, git_remote):
    shas = {
        b: git_remote.commit_and_push(b, {"v": b}, b, base=None)
        for b in ("staging1-1.3.9", "staging1/1.3.22", "staging1_2_0", "staging10-1.0", "main")
    }
    heads = cache_for(tmp_path, git_remote.url).heads(heads_patterns("staging1*")).heads
    assert heads == {b: shas[b] for b in shas if b != "main"}


def test_heads_of_a_missing_branch_is_empty(tmp_path, git_remote):
    git_remote.commit_and_push("main", {"a": "1"}, "main")
    assert cache_for(tmp_path, git_remote.url).heads(heads_patterns("dev1")).heads == {}


def test_heads_over_smart_http(tmp_path, http_git, http_git_remote):
    dev1 = http_git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, http_git.repo_url("site.git"))
    assert cache.heads(heads_patterns("dev1")).heads == {"dev1": dev1}
    assert any("info/refs" in r for r in http_git.requests)


# -- fetch and export ----------------------------------------------------------------------------


def test_fetch_brings_only_the_needed_branch(tmp_path, git_remote):
    dev1 = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    other = git_remote.commit_and_push("other", {"big.bin": "x" * 1000}, "other work",
                                       base=dev1)
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", dev1)
    assert cache.has_commit(dev1)
    assert not cache.has_commit(other)
    assert cache_refs(cache) == ["refs/remotes/origin/dev1"]
    assert cache.resolve("dev1") == dev1
    assert cache.resolve(dev1[:10]) == dev1


def test_fetch_over_smart_http_and_again_without_the_network(tmp_path, http_git,
                                                            http_git_remote):
    sha = http_git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, http_git.repo_url("site.git"))
    cache.fetch("dev1", sha)
    assert cache.has_commit(sha)
    http_git.stop()
    cache.fetch("dev1", sha)  # already there: no request, so no error


def git_commands(caplog) -> list[str]:
    """The git subcommands agent.proc ran, from its debug lines (`git -c … fetch …`)."""
    words = [r.getMessage().split("`")[1].split() for r in caplog.records
             if r.getMessage().startswith("`git ")]
    return [next(w for w in argv[1:] if not w.startswith("-") and "=" not in w)
            for argv in words]


def test_a_fetch_checks_its_branch_by_the_ref_file_not_by_another_git(tmp_path, git_remote,
                                                                      caplog):
    caplog.set_level("DEBUG", logger="agent")
    first = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", first)
    assert git_commands(caplog) == ["init", "cat-file", "fetch"]  # a new branch: git is asked
    caplog.clear()
    cache.fetch("dev1", first)  # the branch's ref already names it: nothing to run
    assert git_commands(caplog) == []
    second = git_remote.commit_and_push("dev1", {"index.html": "v2"}, "B101 second")
    cache.fetch("dev1", second)  # the ref names another commit: fetched straight away
    assert git_commands(caplog) == ["fetch"]
    # A cache whose refs were packed (git gc) has no loose ref file: git is asked instead.
    run_git(["--git-dir", str(cache.cache_dir), "pack-refs", "--all"])
    third = git_remote.commit_and_push("dev1", {"index.html": "v3"}, "B102 third")
    cache.fetch("dev1", third)
    cache.fetch("dev1", first)
    assert cache.has_commit(third) and cache.resolve("dev1") == third


def test_a_commit_in_the_cache_needs_no_remote_even_when_its_branch_moved_on(tmp_path,
                                                                           git_remote):
    old = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", old)
    new = git_remote.commit_and_push("dev1", {"index.html": "v2"}, "B101 second")
    cache.fetch("dev1", new)
    git_remote.path.rename(git_remote.path.with_name("gone.git"))  # the remote is down
    cache.fetch("dev1", old)  # restoring the live release of `old` works without it
    with pytest.raises(RemoteError):
        cache.fetch("dev1", "0123456789" * 4)


def test_fetch_of_a_commit_the_branch_no_longer_has(tmp_path, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": "v1"}, "first")
    cache = cache_for(tmp_path, git_remote.url)
    with pytest.raises(RemoteError, match="moved while fetching"):
        cache.fetch("dev1", "0123456789" * 4)


def test_export_writes_the_tree_without_git(tmp_path, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": "v1", "assets/css/a.css": "a",
                                        "old.txt": "old"}, "first")
    sha = git_remote.commit_and_push("dev1", {"index.html": "v2", "old.txt": None}, "second")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", sha)
    dest = tmp_path / "releases" / "r1"
    dest.parent.mkdir()
    cache.export(sha, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["assets/css/a.css", "index.html"]
    assert (dest / "index.html").read_text() == "v2"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["r1"]  # no index left beside


def test_export_keeps_the_executable_bit(tmp_path, git_remote):
    git_remote.commit("dev1", {"build.sh": "#!/bin/sh\necho hi\n"}, "script")
    (git_remote.work / "build.sh").chmod(0o755)
    git_remote.git("add", "build.sh")
    git_remote.git("commit", "--quiet", "-m", "B101 make it executable")
    git_remote.push("dev1")
    sha = git_remote.head("dev1")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", sha)
    cache.export(sha, tmp_path / "r1")
    assert os.stat(tmp_path / "r1" / "build.sh").st_mode & stat.S_IXUSR


# -- log --------------------------------------------------------------------------------------


def test_log_returns_commits_since_old_newest_first(tmp_path, git_remote):
    c1 = git_remote.commit_and_push("dev1", {"a": "1"}, "B100 first")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", c1)
    c2 = git_remote.commit("dev1", {"a": "2"}, "B200 second\n\nbody line")
    c3 = git_remote.commit_and_push("dev1", {"a": "3"}, "no card")
    cache.fetch("dev1", c3)
    commits, rewritten = cache.log(c3, c1)
    assert commits == [(c3, 1, "no card"), (c2, 1, "B200 second\n\nbody line")]
    assert rewritten is False
    everything, _ = cache.log(c3, None)
    assert [c[0] for c in everything] == [c3, c2, c1]
    assert everything[-1][1] == 0  # the root commit has no parent


def test_log_counts_merge_parents(tmp_path, git_remote):
    base = git_remote.commit_and_push("dev1", {"a": "1"}, "B100 base")
    feature = git_remote.commit("feature", {"b": "1"}, "B300 feature", base=base)
    git_remote.git("checkout", "--quiet", "dev1")
    git_remote.commit("dev1", {"c": "1"}, "B400 on dev1")
    git_remote.git("merge", "--quiet", "--no-ff", "-m", "Merge feature", "feature")
    git_remote.push("dev1")
    merge = git_remote.head("dev1")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", merge)
    commits, _ = cache.log(merge, base)
    by_sha = {sha: (parents, msg) for sha, parents, msg in commits}
    assert by_sha[merge] == (2, "Merge feature")
    assert by_sha[feature] == (1, "B300 feature")
    assert len(commits) == 3


def test_log_after_force_push_flags_rewrite_and_uses_merge_base(tmp_path, git_remote):
    c1 = git_remote.commit_and_push("dev1", {"a": "1"}, "B100 base")
    git_remote.commit("dev1", {"a": "2"}, "B200 dropped later")
    c3 = git_remote.commit_and_push("dev1", {"a": "3"}, "B300 dropped later")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", c3)  # this is what was live
    git_remote.reset_hard("dev1", c1)
    c4 = git_remote.commit("dev1", {"a": "4"}, "B400 rewritten")
    git_remote.push("dev1", force=True)
    assert cache.heads(heads_patterns("dev1")).heads == {"dev1": c4}
    cache.fetch("dev1", c4)
    commits, rewritten = cache.log(c4, c3)
    assert rewritten is True
    assert commits == [(c4, 1, "B400 rewritten")]


def test_log_with_an_old_commit_unknown_to_the_cache_is_a_rewrite(tmp_path, git_remote):
    c1 = git_remote.commit_and_push("dev1", {"a": "1"}, "B100 base")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", c1)
    commits, rewritten = cache.log(c1, "f" * 40)
    assert rewritten is True
    assert [c[0] for c in commits] == [c1]


# -- failures -------------------------------------------------------------------------------


def test_unreachable_remote_is_a_remote_error_with_credentials_redacted(tmp_path):
    url = "https://user:SECRETPW@127.0.0.1:1/x"
    cache = cache_for(tmp_path, url)
    started = time.monotonic()
    with pytest.raises(RemoteError) as heads_err:
        cache.heads(heads_patterns("dev1"))
    with pytest.raises(RemoteError) as fetch_err:
        cache.fetch("dev1", "a" * 40)
    assert time.monotonic() - started < TIMEOUT
    for err in (heads_err, fetch_err):
        message = str(err.value)
        assert "SECRETPW" not in message and "user:" not in message
        assert "https://***@127.0.0.1:1/x" in message
    assert heads_err.value.exit_code == 75


def test_missing_path_remote_is_a_remote_error(tmp_path):
    cache = cache_for(tmp_path, str(tmp_path / "nowhere.git"))
    with pytest.raises(RemoteError, match="cannot read the remote"):
        cache.heads(heads_patterns("dev1"))


def test_auth_required_without_credentials_fails_fast_without_prompting(tmp_path, auth_git,
                                                                       monkeypatch):
    server, remote = auth_git
    remote.commit_and_push("dev1", {"a": "1"}, "first")
    # an askpass helper on the host would be a prompt in disguise: it must not be asked
    asked = tmp_path / "askpass-was-called"
    helper = tmp_path / "askpass.sh"
    helper.write_text(f"#!/bin/sh\ntouch {asked}\necho {AUTH[1]}\n")
    helper.chmod(0o755)
    monkeypatch.setenv("GIT_ASKPASS", str(helper))
    monkeypatch.setenv("SSH_ASKPASS", str(helper))
    monkeypatch.delenv("GIT_TERMINAL_PROMPT", raising=False)
    cache = cache_for(tmp_path, server.repo_url("site.git"))
    started = time.monotonic()
    with pytest.raises(RemoteError):
        cache.heads(heads_patterns("dev1"))
    assert time.monotonic() - started < 10
    assert not asked.exists()
    assert server.requests, "git never reached the server"


def test_auth_required_with_credentials_in_the_url_works(tmp_path, auth_git, caplog):
    caplog.set_level("DEBUG", logger="agent")
    server, remote = auth_git
    sha = remote.commit_and_push("dev1", {"a": "1"}, "first")
    cache = cache_for(tmp_path, server.repo_url("site.git", *AUTH))
    assert cache.heads(heads_patterns("dev1")).heads == {"dev1": sha}
    cache.fetch("dev1", sha)
    assert cache.has_commit(sha)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ls-remote" in logged and "fetch" in logged
    assert AUTH[1] not in logged  # each git command is logged, its URL masked


def test_wrong_credentials_error_does_not_leak_them(tmp_path, auth_git):
    server, remote = auth_git
    remote.commit_and_push("dev1", {"a": "1"}, "first")
    cache = cache_for(tmp_path, server.repo_url("site.git", "deploy", "WRONG-PASSWORD"))
    with pytest.raises(RemoteError) as info:
        cache.heads(heads_patterns("dev1"))
    assert "WRONG-PASSWORD" not in str(info.value)


def git_processes_for(port: int) -> list[str]:
    """Live (non-zombie) processes whose command line names the port."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if f":{port}/" in cmdline and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "ssh"])
def test_git_never_hangs_on_a_silent_server(tmp_path, silent_port, scheme):
    url = (f"http://user:HANGPW-CANARY@127.0.0.1:{silent_port}/site.git" if scheme == "http"
           else f"ssh://git@127.0.0.1:{silent_port}/site.git")
    cache = cache_for(tmp_path, url, timeout=2)
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        cache.heads(heads_patterns("dev1"))
    assert time.monotonic() - started < 2 + 8
    message = str(info.value)
    assert "HANGPW-CANARY" not in message
    timed_out = "Timeout: git ls-remote did not complete in 2s" in message
    if scheme == "ssh":  # ssh's own ConnectTimeout is the same 2 s: either may end it first
        assert timed_out or "Could not read from remote repository" in message, message
    else:
        assert timed_out, message
    time.sleep(0.3)
    assert git_processes_for(silent_port) == []  # nothing left running against the server


@pytest.mark.slow
def test_fetch_never_hangs_on_a_silent_server(tmp_path, silent_port):
    cache = cache_for(tmp_path, f"http://127.0.0.1:{silent_port}/site.git", timeout=2)
    started = time.monotonic()
    with pytest.raises(RemoteError):
        cache.fetch("dev1", "a" * 40)
    assert time.monotonic() - started < 2 + 8


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the remote to another user")
def test_a_path_remote_owned_by_another_user_is_trusted(tmp_path, git_remote):
    """git refuses a repository of another owner ("dubious ownership") unless a global
    config trusts it; the agent trusts exactly its own remote, not the host user's config."""
    sha = git_remote.commit_and_push("dev1", {"index.html": "x"}, "B101: x")
    for path in [git_remote.path, *git_remote.path.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    plain = subprocess.run(["git", "ls-remote", str(git_remote.path)], capture_output=True,
                           text=True, timeout=30, check=False,
                           env=dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null"))
    assert "dubious ownership" in plain.stderr  # the situation is real
    cache = cache_for(tmp_path, str(git_remote.path))
    assert cache.heads(heads_patterns("dev1")).heads == {"dev1": sha}
    cache.fetch("dev1", sha)
    assert cache.has_commit(sha)


# -- failpoints and host faults (#9) ------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def killed_at(point: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` (argv after -c: args) with the failpoint armed to kill."""
    env = dict(os.environ, PYTHONPATH=str(REPO), GHOST_AGENT_FAILPOINTS=f"{point}=kill")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_during_fetch_failpoint_is_right_after_the_fetch(tmp_path, git_remote):
    sha = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache_dir = tmp_path / "state" / "cache.git"
    code = ("import sys; from pathlib import Path; from agent.remote import RemoteCache; "
            "RemoteCache(Path(sys.argv[1]), sys.argv[2], 20).fetch('dev1', sys.argv[3])")
    done = killed_at("during-fetch", code, str(cache_dir), git_remote.url, sha)
    assert done.returncode == -9, done.stderr
    assert RemoteCache(cache_dir, git_remote.url, 20).has_commit(sha)  # the fetch had run


def test_the_during_export_failpoint_is_between_read_tree_and_checkout(tmp_path, git_remote):
    sha = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", sha)
    dest = tmp_path / "releases" / ".staging-r1"
    dest.parent.mkdir()
    code = ("import sys; from pathlib import Path; from agent.remote import RemoteCache; "
            "RemoteCache(Path(sys.argv[1]), sys.argv[2], 20)"
            ".export(sys.argv[3], Path(sys.argv[4]))")
    done = killed_at("during-export", code, str(cache.cache_dir), git_remote.url, sha, str(dest))
    assert done.returncode == -9, done.stderr
    assert (dest.parent / ".index-.staging-r1").is_file()  # read-tree wrote the index
    assert os.listdir(dest) == []  # checkout-index never ran


def test_a_full_disk_under_the_cache_is_a_host_error_and_keeps_the_cache(tmp_path, git_remote):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        sha = git_remote.commit_and_push("dev1", {"video.bin": os.urandom(3 << 20)}, "B1 big")
        cache = RemoteCache(small / "cache" / "remote.git", git_remote.url, TIMEOUT)
        with pytest.raises(HostError, match="No space left on device"):
            cache.fetch("dev1", sha)
        assert cache.cache_dir.is_dir()
        assert list(cache.cache_dir.parent.glob("*.broken-*")) == []  # not taken for broken
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30,
                       check=False)


def test_a_broken_cache_heals_under_log_and_export_too(tmp_path, git_remote):
    sha = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    cache = cache_for(tmp_path, git_remote.url)
    cache.fetch("dev1", sha)
    (cache.cache_dir / "config").write_bytes(b"[[[ garbage\n")
    commits, _ = cache.log(sha, None)  # the fetch above is what refills it
    assert [c[0] for c in commits] == [sha]
    (cache.cache_dir / "HEAD").write_text("garbage\n")
    cache.export(sha, tmp_path / "r1")
    assert (tmp_path / "r1" / "index.html").read_text() == "v1"
    assert len(list(cache.cache_dir.parent.glob("cache.git.broken-*"))) == 1


# -- one process runner, lazy imports (#11) ---------------------------------------------------


def test_git_runs_through_proc_and_is_logged(tmp_path, git_remote, caplog):
    caplog.set_level("DEBUG", logger="agent")
    git_remote.commit_and_push("dev1", {"a": "1"}, "first")
    cache_for(tmp_path, git_remote.url).heads(heads_patterns("dev1"))
    [line] = [r.getMessage() for r in caplog.records if "ls-remote" in r.getMessage()]
    assert line.startswith("`git -c protocol.version=2") and " exited with 0 in " in line


def test_git_cannot_start_without_git_on_path(tmp_path, git_remote, monkeypatch):
    git_remote.commit_and_push("dev1", {"a": "1"}, "first")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RemoteError, match="git could not start: No such file or directory"):
        cache_for(tmp_path, git_remote.url).heads(heads_patterns("dev1"))


def test_a_no_op_once_imports_neither_gitpython_nor_slack_sdk_nor_psutil(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B101: first")
    assert host.call("once").returncode == 0
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent", "--config", str(host.config_path),
         "once"], env=host.env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert "agent.cycle" in imported  # the measure is of the real path
    assert not imported & {"git", "slack_sdk", "psutil"}
