"""The stand-ins the agent is tested against behave as specified."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.demo.sitesim import SiteServer
from tests.gitremote import GitRemote, SmartHttpGitServer, run_git

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- helpers --------------------------------------------------------------------------------


def http_get(
    url: str, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed."""
    hostport = url.split("://", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def make_release(root: Path, name: str, index: str | None, **files: str) -> Path:
    release = root / "releases" / name
    release.mkdir(parents=True)
    if index is not None:
        (release / "index.html").write_text(index)
    for rel, content in files.items():
        target = release / rel.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return release


def point(live: Path, target: Path) -> None:
    """Atomically (re)point the live symlink, as the agent does."""
    tmp = live.with_name(live.name + ".new")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, live)


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return run_git(list(args), cwd=cwd, env=env, check=False)


def ls_remote(url: str, env: dict[str, str] | None = None) -> dict[str, str]:
    proc = git("ls-remote", "--heads", url, env=env)
    assert proc.returncode == 0, proc.stderr
    refs = {}
    for line in proc.stdout.splitlines():
        sha, ref = line.split("\t")
        refs[ref.removeprefix("refs/heads/")] = sha
    return refs


@pytest.fixture
def theme(tmp_path: Path):
    """live symlink -> release v1 (index says v1; style.css says v1)."""
    v1 = make_release(tmp_path, "v1", "<h1>release v1</h1>", **{"style.css": "v1 css"})
    live = tmp_path / "themes" / "acme"
    live.parent.mkdir()
    live.symlink_to(v1)
    return live


# -- site stand-in --------------------------------------------------------------------------


def test_site_serves_boot_index_until_restart(tmp_path, theme, site_server):
    site = site_server(theme)
    assert site.url == f"http://127.0.0.1:{site.port}" and site.port > 0
    assert site.boots == 1
    status, headers, body = http_get(site.url)
    assert status == 200 and b"release v1" in body
    assert headers["content-type"].startswith("text/html")

    v2 = make_release(tmp_path, "v2", "<h1>release v2</h1>", **{"style.css": "v2 css"})
    point(theme, v2)
    # Switched without a restart: the rendered page is old, static files are new.
    assert b"release v1" in http_get(site.url)[2]
    assert http_get(site.url, "/style.css")[2] == b"v2 css"

    status, _, body = http_get(site.url, "/__restart", method="POST")
    assert (status, body.strip()) == (200, b"restarted")
    assert site.boots == 2
    assert b"release v2" in http_get(site.url)[2]
    assert "POST /__restart" in site.requests


def test_site_boot_method_reloads(tmp_path, theme, site_server):
    site = site_server(theme)
    (tmp_path / "releases" / "v1" / "index.html").write_text("edited")
    assert b"release v1" in http_get(site.url)[2]
    site.boot()
    assert http_get(site.url)[2] == b"edited" and site.boots == 2


def test_site_missing_index_is_500(tmp_path, site_server):
    bad = make_release(tmp_path, "bad", None, **{"style.css": "x"})
    live = tmp_path / "acme"
    live.symlink_to(bad)
    status, _, body = http_get(site_server(live).url)
    assert status == 500
    assert b'The currently active theme "acme" has fatal errors' in body


def test_site_dangling_or_missing_theme_is_500(tmp_path, site_server):
    live = tmp_path / "acme"
    live.symlink_to(tmp_path / "nowhere")
    status, _, body = http_get(site_server(live).url)
    assert status == 500 and b'The currently active theme "acme" is missing' in body
    status, _, body = http_get(site_server(tmp_path / "absent").url)
    assert status == 500 and b"is missing" in body


def test_site_missing_at_boot_recovers_after_restart(tmp_path, site_server):
    live = tmp_path / "acme"
    site = site_server(live)
    assert http_get(site.url)[0] == 500
    point(live, make_release(tmp_path, "v1", "fixed"))
    assert http_get(site.url)[0] == 500  # still the boot-time state
    site.boot()
    assert http_get(site.url)[:1] == (200,)


def test_site_unclosed_if_is_400(tmp_path, site_server):
    broken = make_release(tmp_path, "broken", "<p>{{#if @site.title}}x</p>")
    live = tmp_path / "acme"
    live.symlink_to(broken)
    status, _, body = http_get(site_server(live).url)
    assert status == 400 and b"parse error" in body.lower()

    fine = make_release(tmp_path, "fine", "<p>{{#if a}}x{{/if}}</p>")
    live2 = tmp_path / "acme2"
    live2.symlink_to(fine)
    assert http_get(site_server(live2).url)[0] == 200


def test_site_public_https_url_redirects_like_ghost(theme, site_server):
    site = site_server(theme, public_url="https://dev1.website.com")
    status, headers, _ = http_get(site.url, "/style.css?x=1")
    assert status == 301
    assert headers["location"] == "https://dev1.website.com/style.css?x=1"
    # Right Host, but no X-Forwarded-Proto: still redirected to https.
    status, _, _ = http_get(site.url, "/", {"Host": "dev1.website.com"})
    assert status == 301
    # Right proto, wrong Host.
    wrong_host = {"Host": "other.example", "X-Forwarded-Proto": "https"}
    status, headers, _ = http_get(site.url, "/", wrong_host)
    assert status == 301 and headers["location"] == "https://dev1.website.com/"
    # As nginx forwards it.
    status, _, body = http_get(
        site.url, "/", {"Host": "dev1.website.com", "X-Forwarded-Proto": "https"}
    )
    assert status == 200 and b"release v1" in body


def test_site_public_http_url_checks_host_only(theme, site_server):
    site = site_server(theme, public_url=f"http://127.0.0.1:{_free_port()}")
    assert http_get(site.url)[0] == 301
    host = site.public_url.split("://", 1)[1]
    assert http_get(site.url, "/", {"Host": host})[0] == 200


def test_site_without_public_url_accepts_any_host(theme, site_server):
    site = site_server(theme)
    assert http_get(site.url, "/", {"Host": "whatever.example"})[0] == 200


def test_site_content_files(tmp_path, theme, site_server):
    content = tmp_path / "content"
    (content / "files").mkdir(parents=True)
    (content / "files" / "ci-cd.txt").write_text("deployed abc1234\n")
    (content / "files" / "ci-cd.json").write_text('{"schema": 1}')
    (content / "files" / "ci-cd.html").write_text("<p>hi</p>")
    site = site_server(theme, content_dir=content)

    status, headers, body = http_get(site.url, "/content/files/ci-cd.txt")
    assert status == 200 and body == b"deployed abc1234\n"
    assert headers["content-type"].startswith("text/plain")
    status, headers, _ = http_get(site.url, "/content/files/ci-cd.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    status, headers, _ = http_get(site.url, "/content/files/ci-cd.html")
    assert status == 200 and headers["content-type"].startswith("text/html")
    # Written after boot: served at once, no restart needed.
    (content / "files" / "later.txt").write_text("later")
    assert http_get(site.url, "/content/files/later.txt")[2] == b"later"
    assert http_get(site.url, "/content/files/absent.txt")[0] == 404

    no_content = site_server(theme)
    assert http_get(no_content.url, "/content/files/ci-cd.txt")[0] == 404


def test_site_refuses_traversal_and_git_files(tmp_path, theme, site_server):
    (tmp_path / "releases" / "secret.txt").write_text("secret")
    v1 = tmp_path / "releases" / "v1"
    (v1 / ".git").mkdir()
    (v1 / ".git" / "config").write_text("[core]")
    (v1 / ".gitignore").write_text("node_modules")
    (v1 / "default.hbs").write_text("{{body}}")
    (v1 / "assets").mkdir()
    (v1 / "assets" / "app.js").write_text("js")
    (v1 / "escape.txt").symlink_to(tmp_path / "releases" / "secret.txt")
    content = tmp_path / "content"
    (content / "files").mkdir(parents=True)
    site = site_server(theme, content_dir=content)

    assert http_get(site.url, "/assets/app.js")[:1] == (200,)
    for path in (
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/../../secret.txt",
        "/.git/config",
        "/.gitignore",
        "/%2Egit/config",
        "/default.hbs",
        "/escape.txt",
        "/assets",
        "/content/files/../../releases/secret.txt",
        "/content/files/%2e%2e/x",
        "/nope.css",
    ):
        status, _, body = http_get(site.url, path)
        assert status == 404, path
        assert b"secret" not in body and b"[core]" not in body


def test_site_stop_is_idempotent_and_restartable(theme):
    with SiteServer(theme) as site:
        url = site.url
        assert http_get(url)[0] == 200
    site.stop()
    with pytest.raises(ConnectionRefusedError):
        http_get(url)
    site.start()
    try:
        assert site.url == url and http_get(url)[0] == 200 and site.boots == 2
    finally:
        site.stop()


def test_site_fail_with(theme, site_server):
    site = site_server(theme)
    site.fail_with = 503
    assert http_get(site.url)[0] == 503
    site.fail_with = None
    assert http_get(site.url)[0] == 200


def test_sitesim_main_foreground(tmp_path, theme):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.demo.sitesim",
            "--live",
            str(theme),
            "--port-file",
            str(port_file),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        port = int(port_file.read_text())
        status, _, body = http_get(f"http://127.0.0.1:{port}")
        assert status == 200 and b"release v1" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- systemctl stand-in ---------------------------------------------------------------------


def run_systemctl(fake, *args: str, site_url: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(fake.env(site_url))
    exe = shutil.which("systemctl", path=env["PATH"])
    assert exe == str(fake.shim)
    return subprocess.run(
        ["systemctl", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_systemctl_restart_records_argv_and_restarts_site(
    tmp_path, theme, site_server, fake_systemctl
):
    site = site_server(theme)
    point(theme, make_release(tmp_path, "v2", "<h1>release v2</h1>"))
    assert b"release v1" in http_get(site.url)[2]
    before = time.time()
    proc = run_systemctl(fake_systemctl, "restart", "ghost_dev1.service", site_url=site.url)
    assert proc.returncode == 0, proc.stderr
    calls = fake_systemctl.calls()
    assert [c["argv"] for c in calls] == [["restart", "ghost_dev1.service"]]
    assert before <= calls[0]["time"] <= time.time()
    assert site.boots == 2
    assert b"release v2" in http_get(site.url)[2]


def test_systemctl_fails_when_told(theme, site_server, fake_systemctl):
    site = site_server(theme)
    fake_systemctl.fail(True)
    proc = run_systemctl(fake_systemctl, "restart", "ghost.service", site_url=site.url)
    assert proc.returncode == 1
    assert (
        "Job for ghost.service failed because the control process exited with error code."
        in proc.stderr
    )
    assert site.boots == 1
    proc = run_systemctl(fake_systemctl, "is-active", "ghost.service")
    assert (proc.returncode, proc.stdout.strip()) == (3, "failed")
    assert run_systemctl(fake_systemctl, "start", "ghost.service").returncode == 1

    fake_systemctl.fail(False)
    proc = run_systemctl(fake_systemctl, "start", "ghost.service", site_url=site.url)
    assert proc.returncode == 0, proc.stderr
    assert site.boots == 2
    assert len(fake_systemctl.calls()) == 4


def test_systemctl_other_verbs(fake_systemctl):
    proc = run_systemctl(fake_systemctl, "is-active", "ghost.service")
    assert (proc.returncode, proc.stdout.strip()) == (0, "active")
    proc = run_systemctl(fake_systemctl, "status", "--no-pager", "ghost.service")
    assert proc.returncode == 0 and "ghost.service" in proc.stdout and "active" in proc.stdout
    proc = run_systemctl(fake_systemctl, "show", "-p", "ActiveState", "--value", "ghost.service")
    assert (proc.returncode, proc.stdout.strip()) == (0, "active")
    proc = run_systemctl(fake_systemctl, "frobnicate", "ghost.service")
    assert proc.returncode == 1 and "frobnicate" in proc.stderr
    assert fake_systemctl.argvs()[-1] == ["frobnicate", "ghost.service"]


def test_systemctl_restart_fails_when_site_unreachable(fake_systemctl):
    url = f"http://127.0.0.1:{_free_port()}"
    proc = run_systemctl(fake_systemctl, "restart", "ghost.service", site_url=url)
    assert proc.returncode == 1 and "failed" in proc.stderr


def test_systemctl_install_sets_process_env(fake_systemctl, theme, site_server):
    site = site_server(theme)
    fake_systemctl.install(site.url)
    assert os.environ["PATH"].split(os.pathsep)[0] == str(fake_systemctl.bin_dir)
    proc = subprocess.run(
        ["systemctl", "restart", "u.service"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert site.boots == 2


# -- git remotes ----------------------------------------------------------------------------


def test_git_remote_commit_push_visible(git_remote: GitRemote):
    assert git_remote.path.is_dir() and git_remote.path.name == "site.git"
    sha = git_remote.commit("dev1", {"index.html": "one"}, "B321 first")
    assert len(sha) == 40 and int(sha, 16) >= 0
    assert git_remote.head("dev1") is None  # not pushed yet
    assert ls_remote(str(git_remote.path)) == {}
    git_remote.push("dev1")
    assert git_remote.head("dev1") == sha
    assert ls_remote(str(git_remote.path)) == {"dev1": sha}
    sha2 = git_remote.commit_and_push("dev1", {"index.html": "two", "a/b.txt": "x"}, "second")
    assert ls_remote(str(git_remote.path)) == {"dev1": sha2}
    tree = git("ls-tree", "-r", "--name-only", sha2, cwd=git_remote.path).stdout.split()
    assert sorted(tree) == ["a/b.txt", "index.html"]
    parent = git("rev-parse", f"{sha2}^", cwd=git_remote.path).stdout.strip()
    assert parent == sha
    msg = git("log", "-1", "--format=%s|%an", sha, cwd=git_remote.path).stdout.strip()
    assert msg == "B321 first|Test Author"


def test_git_remote_delete_file_and_branches(git_remote: GitRemote):
    base = git_remote.commit_and_push("main", {"keep.txt": "k", "gone.txt": "g"}, "base")
    sha = git_remote.commit_and_push("main", {"gone.txt": None}, "remove")
    tree = git("ls-tree", "--name-only", sha, cwd=git_remote.path).stdout.split()
    assert tree == ["keep.txt"]

    git_remote.branch_from("staging1-1.3.9", "main", push=True)
    assert git_remote.head("staging1-1.3.9") == sha
    rel = git_remote.commit_and_push("staging1-1.3.22", {"v": "22"}, "release", base="main")
    assert git("rev-parse", f"{rel}^", cwd=git_remote.path).stdout.strip() == sha
    old = git_remote.commit_and_push("old", {"o": "o"}, "from base sha", base=base)
    assert git("rev-parse", f"{old}^", cwd=git_remote.path).stdout.strip() == base
    assert set(git_remote.branches()) == {"main", "staging1-1.3.9", "staging1-1.3.22", "old"}

    git_remote.delete_branch("staging1-1.3.22")
    assert git_remote.head("staging1-1.3.22") is None
    assert "staging1-1.3.22" not in ls_remote(str(git_remote.path))
    # The name can be used again afterwards.
    again = git_remote.commit_and_push("staging1-1.3.22", {"v": "again"}, "again", base="main")
    assert git_remote.head("staging1-1.3.22") == again


def test_git_remote_force_push(git_remote: GitRemote):
    first = git_remote.commit_and_push("dev1", {"index.html": "1"}, "one")
    second = git_remote.commit_and_push("dev1", {"index.html": "2"}, "two")
    git_remote.reset_hard("dev1", first)
    rewritten = git_remote.commit("dev1", {"index.html": "2"}, "two")
    assert rewritten != second  # same content and message, new SHA
    with pytest.raises(RuntimeError):
        git_remote.push("dev1")  # not a fast-forward
    assert git_remote.head("dev1") == second
    git_remote.push("dev1", force=True)
    assert ls_remote(str(git_remote.path)) == {"dev1": rewritten}
    # The old head is no longer reachable from any branch.
    proc = git("branch", "--contains", second, cwd=git_remote.path)
    assert proc.stdout.strip() == ""


def test_git_remote_orphan_branches(tmp_path):
    remote = GitRemote(tmp_path / "r", name="other")
    assert remote.path == tmp_path / "r" / "other.git"
    a = remote.commit_and_push("a", {"x": "1"}, "a")
    b = remote.commit_and_push("b", {"y": "2"}, "b")  # from current HEAD (a)
    assert git("rev-parse", f"{b}^", cwd=remote.path).stdout.strip() == a


def test_git_remote_ignores_user_config(tmp_path, monkeypatch):
    bogus = tmp_path / "gitconfig"
    bogus.write_text("[user]\n\tname = Wrong\n[commit]\n\tgpgsign = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(bogus))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    remote = GitRemote(tmp_path / "r")
    sha = remote.commit_and_push("main", {"f": "x"}, "m")
    assert remote.head("main") == sha


# -- smart HTTP -----------------------------------------------------------------------------


def test_http_git_ls_remote_clone_fetch(http_git: SmartHttpGitServer, http_git_remote, tmp_path):
    remote = http_git_remote
    assert remote.path == http_git.project_root / "site.git"
    assert not remote.work.is_relative_to(http_git.project_root)
    sha = remote.commit_and_push("dev1", {"index.html": "one"}, "one")
    url = http_git.repo_url("site.git")
    assert url == f"http://127.0.0.1:{http_git.port}/site.git"
    assert url.startswith(http_git.url)

    assert ls_remote(url) == {"dev1": sha}
    assert any(r.startswith("GET /site.git/info/refs") for r in http_git.requests)

    clone = tmp_path / "clone"
    proc = git("clone", "--quiet", url, str(clone))
    assert proc.returncode == 0, proc.stderr
    assert (clone / "index.html").read_text() == "one"

    sha2 = remote.commit_and_push("dev1", {"index.html": "two"}, "two")
    proc = git("fetch", "--quiet", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    assert git("rev-parse", "origin/dev1", cwd=clone).stdout.strip() == sha2
    assert any(r.startswith("POST /site.git/git-upload-pack") for r in http_git.requests)


def test_http_git_protocol_v2_and_v0(http_git, http_git_remote):
    for i in range(3):
        http_git_remote.commit_and_push(f"staging1-1.0.{i}", {"v": str(i)}, f"r{i}")
    http_git_remote.commit_and_push("dev1", {"v": "d"}, "d")
    url = http_git.repo_url("site.git")
    proc = git(
        "-c",
        "protocol.version=2",
        "ls-remote",
        url,
        "refs/heads/staging1*",
        env={"GIT_TRACE_PACKET": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "version 2" in proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    proc = git("-c", "protocol.version=0", "ls-remote", "--heads", url)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 4


def test_http_git_push_through_http(http_git, http_git_remote, tmp_path):
    http_git_remote.commit_and_push("main", {"a": "1"}, "init")
    url = http_git.repo_url("site.git")
    clone = tmp_path / "pusher"
    assert git("clone", "--quiet", url, str(clone)).returncode == 0
    (clone / "b").write_text("2")
    git("add", "b", cwd=clone)
    assert git("commit", "-q", "-m", "via http", cwd=clone).returncode == 0
    proc = git("push", "--quiet", "origin", "HEAD:refs/heads/from-http", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    assert http_git_remote.head("from-http") == git("rev-parse", "HEAD", cwd=clone).stdout.strip()


def test_http_git_large_fetch_gzip_and_chunked(http_git, http_git_remote, tmp_path):
    """Many refs make git send a gzip'd negotiation body, or a chunked one past postBuffer."""
    remote = http_git_remote
    remote.commit_and_push("main", {"f": "x"}, "base")
    for i in range(300):
        remote.git("branch", f"b{i}")
    remote.git("push", "--quiet", "origin", "refs/heads/*:refs/heads/*")
    url = http_git.repo_url("site.git")
    for name, opts in (
        ("gzip", ["-c", "protocol.version=2"]),
        ("chunked", ["-c", "protocol.version=0", "-c", "http.postBuffer=1024"]),
    ):
        clone = tmp_path / name
        proc = git(*opts, "clone", "--quiet", "--mirror", url, str(clone))
        assert proc.returncode == 0, proc.stderr
        assert len(git("for-each-ref", "refs/heads/", cwd=clone).stdout.splitlines()) == 301
    posts = [h for h in http_git.request_headers if "Content-Type" in h]
    assert any(h.get("Content-Encoding") == "gzip" for h in posts)
    assert any(h.get("Transfer-Encoding") == "chunked" for h in posts)
    assert any(h.get("Git-Protocol") == "version=2" for h in http_git.request_headers)


def test_http_git_auth(tmp_path):
    root = tmp_path / "auth-root"
    remote = GitRemote(root, work_dir=tmp_path / "auth-work")
    sha = remote.commit_and_push("dev1", {"f": "x"}, "m")
    with SmartHttpGitServer(root, require_auth=("deploy", "s3cr3t/+@")) as server:
        proc = git("ls-remote", server.repo_url("site.git"))
        assert proc.returncode != 0
        assert (
            "401" in proc.stderr
            or "Authentication failed" in proc.stderr
            or "could not read Username" in proc.stderr
        )
        bad = git("ls-remote", server.repo_url("site.git", "deploy", "wrong"))
        assert bad.returncode != 0
        good_url = server.repo_url("site.git", "deploy", "s3cr3t/+@")
        assert good_url.startswith(f"http://deploy:s3cr3t%2F%2B%40@127.0.0.1:{server.port}/")
        assert ls_remote(good_url) == {"dev1": sha}
        clone = tmp_path / "authed-clone"
        assert git("clone", "--quiet", good_url, str(clone)).returncode == 0
    with pytest.raises(ConnectionRefusedError):
        http_get(server.url, "/site.git/info/refs?service=git-upload-pack")


def test_http_git_failure_modes(http_git, http_git_remote):
    http_git_remote.commit_and_push("dev1", {"f": "x"}, "m")
    url = http_git.repo_url("site.git")
    http_git.fail_with = 500
    proc = git("ls-remote", url)
    assert proc.returncode != 0 and "500" in proc.stderr
    http_git.fail_with = None
    assert "dev1" in ls_remote(url)

    http_git.stop()
    proc = git("ls-remote", url)
    assert proc.returncode != 0
    assert "refused" in proc.stderr.lower() or "connect" in proc.stderr.lower()
    http_git.start()  # back on the same port
    assert "dev1" in ls_remote(url)
