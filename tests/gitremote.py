"""Real git remotes for the tests: a bare repository reached by path, and the same served
over smart HTTP by ``git http-backend`` behind a small threaded server on 127.0.0.1.

Everything goes through the real git CLI, isolated from the user's and the system's git
configuration, with a timeout on every call.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from agent.demo.serving import BackgroundServer

GIT_TIMEOUT = 60.0
BACKEND_TIMEOUT = 60.0


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for git that ignores the caller's git config and never prompts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_AUTHOR_NAME": "Test Author",
            "GIT_AUTHOR_EMAIL": "author@example.invalid",
            "GIT_COMMITTER_NAME": "Test Committer",
            "GIT_COMMITTER_EMAIL": "committer@example.invalid",
            "LC_ALL": "C",
            "LANG": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


_BASE_CONFIG = [
    "-c",
    "init.defaultBranch=main",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "core.autocrlf=false",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "protocol.file.allow=always",
]


def run_git(
    args: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``git <args>`` isolated from user config; raise with stderr on failure if check."""
    argv = ["git", *_BASE_CONFIG, *args]
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=git_env(env),
        capture_output=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed ({proc.returncode}) in {cwd}:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


class GitRemote:
    """A bare repo plus a working clone used to push; all via the real git CLI.

    ``path`` (the bare repository) is the URL to give the agent. Commits get strictly
    increasing dates, so re-committing identical content after a reset still makes a new SHA.
    """

    def __init__(self, root: Path, name: str = "site", work_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.name = name
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f"{name}.git"
        if work_dir is None:
            work_dir = self.root / ("work" if name == "site" else f"{name}-work")
        self.work = Path(work_dir)
        self._last_date = 0
        run_git(["init", "--bare", "--quiet", str(self.path)])
        self.git_bare("config", "http.receivepack", "true")
        self.git_bare("config", "uploadpack.allowAnySHA1InWant", "true")
        self.work.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", str(self.work)])
        self.git("remote", "add", "origin", str(self.path))

    @property
    def url(self) -> str:
        return str(self.path)

    def git(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        """git in the working clone; returns stdout stripped."""
        return run_git(list(args), cwd=self.work, check=check, env=env).stdout.strip()

    def git_bare(self, *args: str, check: bool = True) -> str:
        """git in the bare repository; returns stdout stripped."""
        return run_git(["--git-dir", str(self.path), *args], check=check).stdout.strip()

    # -- local branch helpers ---------------------------------------------------------------
    def _local_exists(self, branch: str) -> bool:
        proc = run_git(
            ["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"],
            cwd=self.work,
            check=False,
        )
        return proc.returncode == 0

    def _has_commits(self) -> bool:
        return bool(self.git("for-each-ref", "--count=1", "refs/heads/"))

    def _next_date(self) -> str:
        now = int(time.time())
        self._last_date = max(now, self._last_date + 1)
        return f"@{self._last_date} +0000"

    def _checkout(self, branch: str, base: str | None = None) -> None:
        if base is not None:
            start = f"refs/heads/{base}" if self._local_exists(base) else base
            self.git("checkout", "--quiet", "--force", "-B", branch, start)
        elif self._local_exists(branch):
            self.git("checkout", "--quiet", "--force", branch)
        elif self.head(branch) is not None:  # exists on the remote only
            self.git("fetch", "--quiet", "origin", f"+refs/heads/{branch}:refs/heads/{branch}")
            self.git("checkout", "--quiet", "--force", branch)
        elif self._has_commits():
            head = self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
            if head:
                self.git("checkout", "--quiet", "--force", "-b", branch, head)
            else:
                self._orphan(branch)
        else:
            self._orphan(branch)

    def _orphan(self, branch: str) -> None:
        self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        self.git("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", ".")
        for child in self.work.iterdir():
            if child.name != ".git":
                _remove(child)

    # -- public API -------------------------------------------------------------------------
    def commit(
        self,
        branch: str,
        files: dict[str, str | bytes | None],
        message: str,
        base: str | None = None,
        links: dict[str, str] | None = None,
    ) -> str:
        """Commit ``files`` (path -> content, None deletes) and ``links`` (path -> symlink
        target) on ``branch``; return the SHA. A path may be a str with surrogate escapes
        (``"caf\udce9.css"``) for a file name that is not UTF-8.

        The branch is taken from its local head, else from the bare repo, else ``base``
        (a branch or SHA; it also forces a new start point), else created from the
        current checkout, else (empty repo) as an orphan. Does not push.
        """
        self._checkout(branch, base)
        for rel, content in files.items():
            target = self.work / rel
            if content is None:
                if target.exists() or target.is_symlink():
                    _remove(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        for rel, link_target in (links or {}).items():
            target = self.work / rel
            if target.exists() or target.is_symlink():
                _remove(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link_target, target)
        self.git("add", "--all")
        date = self._next_date()
        self.git(
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
            env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        )
        return self.git("rev-parse", "HEAD")

    def push(self, branch: str, force: bool = False) -> None:
        args = ["push", "--quiet", "origin", f"refs/heads/{branch}:refs/heads/{branch}"]
        if force:
            args.insert(2, "--force")
        self.git(*args)
        self._default_head(branch)

    def _default_head(self, branch: str) -> None:
        """Like a forge, the first branch pushed becomes the bare repo's default (HEAD)."""
        proc = run_git(
            ["--git-dir", str(self.path), "rev-parse", "--verify", "--quiet", "HEAD"], check=False
        )
        if proc.returncode != 0 and self.head(branch) is not None:
            self.git_bare("symbolic-ref", "HEAD", f"refs/heads/{branch}")

    def commit_and_push(
        self,
        branch: str,
        files: dict[str, str | bytes | None],
        message: str,
        force: bool = False,
        base: str | None = None,
        links: dict[str, str] | None = None,
    ) -> str:
        sha = self.commit(branch, files, message, base=base, links=links)
        self.push(branch, force=force)
        return sha

    def delete_branch(self, branch: str) -> None:
        """Delete the branch on the remote (push :branch) and in the working clone."""
        self.git("push", "--quiet", "origin", f":refs/heads/{branch}")
        if self._local_exists(branch):
            current = self.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
            if current == branch:
                self.git("checkout", "--quiet", "--detach")
            self.git("branch", "--quiet", "-D", branch)

    def reset_hard(self, branch: str, sha: str) -> None:
        """Point the local ``branch`` at ``sha`` (then ``push(branch, force=True)``)."""
        self._checkout(branch)
        self.git("reset", "--quiet", "--hard", sha)

    def head(self, branch: str) -> str | None:
        """The branch's head in the bare repo, or None."""
        proc = run_git(
            [
                "--git-dir",
                str(self.path),
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{branch}^{{commit}}",
            ],
            check=False,
        )
        out = proc.stdout.strip()
        return out if proc.returncode == 0 and out else None

    def branch_from(self, new_branch: str, base_branch: str, push: bool = False) -> None:
        """Create ``new_branch`` locally at ``base_branch``'s head (pushed only if asked)."""
        self._checkout(new_branch, base=base_branch)
        if push:
            self.push(new_branch)

    def branches(self) -> dict[str, str]:
        """Branch name -> SHA, as the bare repo has them."""
        out = self.git_bare(
            "for-each-ref", "--format=%(refname:strip=2) %(objectname)", "refs/heads/"
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# Smart HTTP
# ---------------------------------------------------------------------------------------------


def _backend_path() -> str:
    exec_path = run_git(["--exec-path"]).stdout.strip()
    return str(Path(exec_path) / "git-http-backend")


class _GitHandler(BaseHTTPRequestHandler):
    server_version = "GitSim/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _user(self) -> str | None:
        """The authenticated user, '' when no auth is required, None when auth fails."""
        owner = self.server.owner
        if owner.require_auth is None:
            return ""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        if (user, password) == owner.require_auth:
            return user
        return None

    def _handle(self) -> None:
        owner = self.server.owner
        owner.requests.append(f"{self.command} {self.path}")
        owner.request_headers.append(dict(self.headers.items()))
        body = self._read_body()
        if owner.fail_with is not None:
            self.close_connection = True
            self._plain(owner.fail_with, "Internal error (simulated)\n")
            return
        user = self._user()
        if user is None:
            self.close_connection = True
            self._plain(401, "Authentication required\n", {"WWW-Authenticate": 'Basic realm="git"'})
            return
        split = urlsplit(self.path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            {
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_PROJECT_ROOT": str(owner.project_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": unquote(split.path),
                "QUERY_STRING": split.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
                "REMOTE_USER": user or "anonymous",
            }
        )
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        try:
            proc = subprocess.run(
                [owner.backend],
                input=body,
                env=env,
                capture_output=True,
                timeout=BACKEND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.close_connection = True
            self._plain(500, f"git http-backend failed: {exc}\n")
            return
        status, headers, payload = _parse_cgi(proc.stdout)
        if proc.returncode != 0 and status == 200 and not headers:
            self.close_connection = True
            self._plain(500, f"git http-backend exited {proc.returncode}\n")
            return
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Split a CGI response into (status, headers, body)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = output.find(sep)
        if idx != -1:
            head, body = output[:idx], output[idx + len(sep) :]
            break
    else:
        return 200, [], output
    status = 200
    headers: list[tuple[str, str]] = []
    for raw in head.decode("latin-1").splitlines():
        if ":" not in raw:
            continue
        key, value = raw.split(":", 1)
        key, value = key.strip(), value.strip()
        if key.lower() == "status":
            status = int(value.split()[0])
        else:
            headers.append((key, value))
    return status, headers, body


class SmartHttpGitServer(BackgroundServer):
    """`git http-backend` as CGI behind a small threaded Python HTTP server on 127.0.0.1.

    ``fail_with = 500`` makes it answer that status to everything while set; ``stop()`` makes
    it refuse connections (``start()`` again comes back on the same port).
    """

    thread_name = "git-http"
    handler = _GitHandler

    def __init__(
        self, project_root: Path, require_auth: tuple[str, str] | None = None, port: int = 0
    ) -> None:
        super().__init__("127.0.0.1", port)
        self.project_root = Path(project_root)
        self.project_root.mkdir(parents=True, exist_ok=True)
        self.require_auth = require_auth
        self.requests: list[str] = []
        # Parallel to `requests`: each request's headers (e.g. Git-Protocol, Content-Encoding).
        self.request_headers: list[dict[str, str]] = []
        self.fail_with: int | None = None
        self.backend = _backend_path()

    def repo_url(self, repo_name: str, user: str | None = None, password: str | None = None) -> str:
        """e.g. http://127.0.0.1:PORT/site.git, optionally http://user:password@…/site.git."""
        cred = ""
        if user is not None:
            cred = quote(user, safe="")
            if password is not None:
                cred += ":" + quote(password, safe="")
            cred += "@"
        return f"http://{cred}127.0.0.1:{self.port}/{repo_name.lstrip('/')}"
