"""Building blocks for the fault tests and the hostile-input report (issue #9), outside pytest.

- Sandbox: a whole throwaway host in one directory: a git remote served over smart HTTP with
  credentials in its URL (a canary secret), a Ghost stand-in, the systemctl stand-in, the
  Slack stand-in behind a webhook URL that carries a canary secret, and a config for the real
  `ghost-agent` command. Sandbox.run() runs the command (under strace when it is installed)
  and keeps what it printed; Sandbox.leaks() greps everything the agent wrote for the secrets.
- consistency_problems(): what is wrong with a site after a killed deploy and a fresh run
  (used by tests/test_failpoints.py and tests/hostile_report.py).
- CASES: the hostile inputs, by category, each a function that sets its sandbox up and runs
  the command against it.

Everything listens on 127.0.0.1 only; nothing reaches the network.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from agent.demo.serving import BackgroundServer  # noqa: E402
from agent.demo.sitesim import SiteServer  # noqa: E402
from agent.demo.systemctl import (FAIL_ENV, HANG_ENV, LOG_ENV, SITE_URL_ENV,  # noqa: E402
                                  install_shim)
from agent.failpoints import ENV as FAILPOINTS_ENV  # noqa: E402
from tests.agentsite import AgentSite, agent_argv, page  # noqa: E402
from tests.gitremote import GitRemote, SmartHttpGitServer, run_git  # noqa: E402
from tests.slackstub import SlackStub  # noqa: E402

CONTRACT_EXITS = {0, 1, 2, 70, 75, 78}
EX_TEMPFAIL = 75
SHELLS = {"/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/sh", "/usr/bin/bash", "/usr/bin/dash"}
RUN_TIMEOUT = 90.0
STRACE = shutil.which("strace")
LABELS = {"deployed": "deployed", "rolled back": "rolled_back", "failed": "failed"}
# The Slack fallback text's first line: "<emoji> <site>: <label> <branch>[ <version>] <short>"
_MESSAGE = re.compile(r"^:[a-z_]+: (?P<site>\S+): (?P<label>deployed|rolled back|failed) "
                      r"(?P<branch>\S+)(?: \S+)? (?P<short>[0-9a-f]{7})\b")
_EXECVE = re.compile(r'^(?P<pid>\d+)\s+execve\("(?P<path>[^"]*)", (?P<argv>\[.*?\])'
                     r'.*\) = (?P<ret>-?\d+)')


# --------------------------------------------------------------------------- consistency


def deploy_messages(slack: SlackStub) -> Counter:
    """(short commit, outcome) -> how many deploy messages Slack accepted."""
    counts: Counter = Counter()
    for request in slack.answered(200):
        body = request.body
        text = body.get("text") if isinstance(body, dict) else None
        match = _MESSAGE.match(text or "")
        if match:
            counts[(match["short"], LABELS[match["label"]])] += 1
    return counts


def _get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)


def consistency_problems(host: AgentSite, slack: SlackStub, live_commit: str, headline: str,
                         run_once: Callable[[], tuple[int, str]]) -> list[str]:
    """What is inconsistent on `host` after a recovery run; [] when nothing is.

    - the Ghost stand-in serves page(headline) (a verified release is live), ci-cd.json's
      current.commit is live_commit and the live link's directory ends with its 12 hex
      digits; state.json has no deploy in flight and names the live release first;
    - one more `once` (run_once: () -> (exit status, stderr)) does not exit 75 (no stale
      lock) and exits 0 without a traceback;
    - releases_dir holds no `.staging-*` / `.index-*` leftover and no release directory
      besides the state's releases (at most `keep`) and the live one; no switch leftover
      beside the live path;
    - the Slack spool is empty and every deploy record in ci-cd.json was announced exactly
      once, and nothing else was.
    """
    problems: list[str] = []
    status, body = _get(host.site.url + "/")
    if (status, body) != (200, page(headline)):
        problems.append(f"Ghost serves {status} {body.strip()[:120]!r}, not {headline!r}")
    live = host.live_target()
    if live is None or not live.is_dir():
        problems.append(f"the live path is not a link to a release directory ({live})")
    try:
        doc = host.ci_cd()
    except (OSError, ValueError) as exc:
        doc = {}
        problems.append(f"ci-cd.json unreadable: {exc}")
    current = (doc.get("current") or {}).get("commit")
    if current != live_commit:
        problems.append(f"ci-cd.json current.commit is {current}, not {live_commit}")
    if live is not None and current and not live.name.endswith(current[:12]):
        problems.append(f"the live link points at {live.name}, ci-cd.json names {current[:12]}")
    try:
        state = host.state()
    except (OSError, ValueError) as exc:
        state = {}
        problems.append(f"state.json unreadable: {exc}")
    if state.get("inflight") is not None:
        problems.append(f"state.json still has a deploy in flight: {state['inflight']}")
    releases = state.get("releases") or []
    if not releases or releases[0].get("commit") != live_commit:
        problems.append(f"state.json's live release is {releases[:1]}, not {live_commit[:12]}")
    elif live is not None and Path(releases[0]["dir"]).resolve() != live:
        problems.append(f"state.json's live release dir {releases[0]['dir']} is not the live "
                        f"link's {live}")

    code, stderr = run_once()
    if code == EX_TEMPFAIL:
        problems.append(f"a further `once` exits 75 (a stale lock?): {stderr.strip()[-300:]}")
    elif code != 0:
        problems.append(f"a further `once` exits {code}: {stderr.strip()[-300:]}")
    if "Traceback" in stderr:
        problems.append("a further `once` prints a traceback")

    releases_dir = host.state_dir / "releases"
    entries = list(releases_dir.iterdir()) if releases_dir.is_dir() else []
    leftovers = sorted(p.name for p in entries if p.name.startswith((".staging-", ".index-")))
    if leftovers:
        problems.append(f"leftovers in releases_dir: {leftovers}")
    try:
        state = host.state()
    except (OSError, ValueError):
        state = {}
    kept = state.get("releases") or []
    if len(kept) > host.settings["keep"]:
        problems.append(f"state keeps {len(kept)} releases, more than keep={host.settings['keep']}")
    known = {Path(r["dir"]).resolve() for r in kept if r.get("dir")}
    if host.live_target() is not None:
        known.add(host.live_target())
    orphans = sorted(p.name for p in entries if p.is_dir() and not p.is_symlink()
                     and not p.name.startswith(".") and p.resolve() not in known)
    if orphans:
        problems.append(f"release directories the state does not name: {orphans} "
                        f"(state: {[Path(r['dir']).name for r in kept]})")
    switch_leftovers = sorted(p.name for p in host.live.parent.iterdir() if ".switch-" in p.name)
    if switch_leftovers:
        problems.append(f"switch leftovers beside the live path: {switch_leftovers}")

    spool = host.state_dir / "slack-spool"
    waiting = sorted(p.name for p in spool.glob("[0-9]*.json")) if spool.is_dir() else []
    if waiting:
        problems.append(f"messages still wait in the spool: {waiting}")
    try:
        records = Counter((d["commit"][:7], d["outcome"]) for d in host.ci_cd()["deploys"])
    except (OSError, ValueError, KeyError, TypeError):
        records = Counter()
    sent = deploy_messages(slack)
    if sent != records:
        lost = records - sent
        doubled = sent - records
        problems.append(f"Slack deploy messages differ from ci-cd.json's records: "
                        f"lost {dict(lost)}, extra {dict(doubled)}")
    return problems


# --------------------------------------------------------------------------- the sandbox


class Systemctl:
    """The systemctl stand-in on PATH (like tests/conftest.py's FakeSystemctl, without pytest)."""

    def __init__(self, root: Path) -> None:
        self.bin_dir = root / "bin"
        install_shim(self.bin_dir)
        self.log_path = root / "systemctl-calls.jsonl"
        self.fail_path = root / "systemctl-fail"
        self.hang_path = root / "systemctl-hang"

    def env(self, site_url: str | None = None) -> dict[str, str]:
        env = {"PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)]),
               LOG_ENV: str(self.log_path), FAIL_ENV: str(self.fail_path),
               HANG_ENV: str(self.hang_path)}
        if site_url is not None:
            env[SITE_URL_ENV] = site_url
        return env

    def argvs(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines()
                if line.strip()]


@dataclass
class Run:
    label: str
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float
    timed_out: bool = False
    kill_intended: bool = False
    shells: list[str] | None = None  # None: not measured

    @property
    def crashed(self) -> bool:
        if self.timed_out:
            return True
        if self.returncode < 0:
            return not (self.kill_intended and self.returncode == -signal.SIGKILL)
        return self.returncode not in CONTRACT_EXITS

    @property
    def traceback(self) -> bool:
        return b"Traceback" in self.stderr or b"Traceback" in self.stdout

    def text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class Sandbox:
    """A throwaway host under `root`; close() stops its servers."""

    def __init__(self, root: Path, flag: str = "dev1", *, trace: bool = True) -> None:
        self.root = root
        self.trace = trace and STRACE is not None
        self.slack_token = "SLACKCANARY" + secrets.token_hex(8)
        self.git_token = "GITCANARY" + secrets.token_hex(8)
        self.marker = root / "PWNED"
        self.runs: list[Run] = []
        self.notes: list[str] = []  # what a case wants said in the report
        self.servers: list[Any] = []
        self.slack = self._serve(SlackStub())
        self.http = self._serve(SmartHttpGitServer(root / "http-root",
                                                   require_auth=("deploy", self.git_token)))
        self.git = GitRemote(self.http.project_root, work_dir=root / "http-work")
        self.remote_url = self.http.repo_url("site.git", user="deploy", password=self.git_token)
        content = root / "site" / "content"
        live = content / "themes" / "acme"
        live.parent.mkdir(parents=True)
        self.site = self._serve(SiteServer(live, content_dir=content))
        self.systemctl = Systemctl(root / "systemctl")
        self.host = AgentSite(root / "host", self.remote_url, self.site, self.systemctl,
                              flag=flag)
        self.slack_section = (f'\n[slack]\nwebhook_url = "{self.webhook_url}"\n'
                              "timeout_seconds = 3\n")
        self.host.extra_config = self.slack_section
        self.host.write_config(verify_seconds=1, git_timeout=3, restart_timeout=10)

    @property
    def webhook_url(self) -> str:
        return self.slack.webhook_url(f"/services/T0/B0/{self.slack_token}")

    def _serve(self, server):
        server.start()
        self.servers.append(server)
        return server

    def serve(self, server):
        """Start another server that close() stops."""
        return self._serve(server)

    def close(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                self.notes.append(f"stopping {type(server).__name__}: {exc}")

    # -- running the agent ------------------------------------------------------------------
    def env(self, failpoints: str | None = None) -> dict[str, str]:
        env = self.host.env()
        env.pop(FAILPOINTS_ENV, None)
        if failpoints:
            env[FAILPOINTS_ENV] = failpoints
        return env

    def run(self, *args: str | bytes, failpoints: str | None = None, config: Path | None = None,
            timeout: float = RUN_TIMEOUT) -> Run:
        argv: list[str | bytes] = [*agent_argv(), "--config", str(config or self.host.config_path),
                                   *args]
        trace_file = None
        if self.trace:
            trace_file = self.root / f"strace-{len(self.runs)}.txt"
            argv = [STRACE, "-f", "-qq", "-e", "trace=execve", "-s", "200", "-o", str(trace_file),
                    *argv]
        label = " ".join(a.decode("utf-8", "backslashreplace") if isinstance(a, bytes) else a
                         for a in args)
        started = time.monotonic()
        process = subprocess.Popen(argv, env=self.env(failpoints), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        timed_out = False
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stdout, stderr = process.communicate(timeout=30)
        run = Run(label, process.returncode, stdout, stderr, time.monotonic() - started,
                  timed_out, kill_intended=bool(failpoints))
        if trace_file is not None:
            run.shells = shell_execs(trace_file)
        self.runs.append(run)
        return run

    def once(self, **kw: Any) -> Run:
        return self.run("once", **kw)

    # -- what the agent wrote ---------------------------------------------------------------
    def secrets(self) -> dict[str, bytes]:
        basic = base64.b64encode(f"deploy:{self.git_token}".encode())
        return {"slack webhook token": self.slack_token.encode(),
                "git password": self.git_token.encode(),
                "git basic-auth header": basic}

    def leaks(self) -> list[str]:
        """Where a canary secret was found: stdout/stderr of every run, every file under
        state_dir (the cache, the releases, the spool), the ci-cd files, and the bodies Slack
        received."""
        places: list[tuple[str, bytes]] = []
        for number, run in enumerate(self.runs):
            places.append((f"run {number} ({run.label}) stdout", run.stdout))
            places.append((f"run {number} ({run.label}) stderr", run.stderr))
        for base in (self.host.state_dir, self.host.content / "files"):
            for path in _files(base):
                try:
                    places.append((str(path.relative_to(self.root)), path.read_bytes()))
                except OSError:
                    pass
        for number, request in enumerate(self.slack.requests):
            places.append((f"Slack request {number} body", request.raw))
        found = []
        for what, needle in self.secrets().items():
            for where, data in places:
                if needle in data:
                    found.append(f"{what} in {where}")
        return found


def _files(base: Path):
    """Regular files under base, without following symlinks (hostile trees hold some)."""
    if not base.is_dir():
        return
    for dirpath, _dirs, files in os.walk(base, followlinks=False):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def shell_execs(trace_file: Path) -> list[str]:
    """The successful execve of a shell in an strace -f -e trace=execve log."""
    found = []
    try:
        lines = trace_file.read_text("utf-8", "replace").splitlines()
    except OSError:
        return []
    for line in lines:
        match = _EXECVE.match(line)
        if match and match["path"] in SHELLS and match["ret"] == "0":
            found.append(f"{match['path']} {match['argv'][:160]}")
    return found


# --------------------------------------------------------------------------- helpers


def sha_of(remote: GitRemote, rev: str) -> str:
    return remote.git_bare("rev-parse", rev)


def add_packed_ref(bare: Path, name: bytes, sha: str) -> None:
    """A ref of any bytes git would never create itself, written into packed-refs."""
    path = bare / "packed-refs"
    data = path.read_bytes() if path.exists() else b"# pack-refs with: peeled \n"
    data = data.replace(b" sorted", b"")
    path.write_bytes(data + sha.encode() + b" " + name + b"\n")


def commit_tree_entries(remote: GitRemote, branch: str, message: str,
                        entries: list[tuple[str, bytes, str]], base_files: dict[str, str]) -> str:
    """Commit (and push) the files in base_files plus raw index entries (mode, path bytes,
    object sha), e.g. gitlinks or symlinks, on `branch`."""
    remote.commit(branch, base_files, message + " (files)")
    for mode, path, sha in entries:
        subprocess.run([b"git", b"-C", str(remote.work).encode(), b"update-index", b"--add",
                        b"--cacheinfo", f"{mode},{sha},".encode() + path], check=True,
                       capture_output=True, timeout=60)
    remote.git("commit", "--quiet", "--no-verify", "--allow-empty", "-m", message)
    remote.push(branch)
    return remote.git("rev-parse", "HEAD")


def hash_blob(remote: GitRemote, data: bytes) -> str:
    proc = subprocess.run(["git", "-C", str(remote.work), "hash-object", "-w", "--stdin"],
                          input=data, capture_output=True, check=True, timeout=60)
    return proc.stdout.decode().strip()


def loose_object(bare: Path, sha: str) -> Path:
    return bare / "objects" / sha[:2] / sha[2:]


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word; with
    `headers`, it sends them first (an HTTP answer that then stalls)."""

    def __init__(self, headers: bytes = b"") -> None:
        self.headers = headers
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> SilentServer:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            if self.headers:
                try:
                    conn.sendall(self.headers)
                except OSError:
                    pass
            self.held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.listener.close()


class _CannedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.server.owner.answer(self)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.owner.answer(self)


class CannedServer(BackgroundServer):
    """Answers every request with `respond(handler)`: a canary or a remote that is not git."""

    thread_name = "canned"
    handler = _CannedHandler

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
        super().__init__()
        self.respond = respond
        self.requests: list[str] = []

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append(f"{handler.command} {handler.path}")
        try:
            self.respond(handler)
        except OSError:
            pass  # the client gave up


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def canned(status: int, body: bytes, content_type: str = "application/json",
           headers: dict[str, str] | None = None) -> Callable[[BaseHTTPRequestHandler], None]:
    return lambda handler: send(handler, status, body, content_type, headers)


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    category: str
    name: str
    setup: Callable[[Sandbox], None]
    flag: str = "dev1"
    notes: list[str] = field(default_factory=list)


CASES: list[Case] = []
REFS, TREES, CONFIGS, REMOTES, CANARIES = (
    "branch names and refs", "trees", "configs", "remote answers", "canary answers")


def case(category: str, name: str, flag: str = "dev1"):
    def register(function: Callable[[Sandbox], None]) -> Callable[[Sandbox], None]:
        CASES.append(Case(category, name, function, flag))
        return function
    return register


def good_commit(sb: Sandbox, branch: str = "dev1", headline: str = "B101 good",
                extra: dict | None = None) -> str:
    return sb.git.commit_and_push(branch, {"index.html": page(headline), **(extra or {})},
                                  f"B101: {headline}")


def poll(sb: Sandbox) -> None:
    """The usual look at a hostile setup: one cycle, the status, one more cycle."""
    sb.once()
    sb.run("status", "--json")
    sb.once()


# -- branch names and refs ----------------------------------------------------------------------

@case(REFS, "non-UTF-8 bytes in release branch names", flag="staging1*")
def _(sb: Sandbox) -> None:
    sha = good_commit(sb, "staging1-1.0")
    for name in (b"staging1-1.1\xff", b"staging1-\xe9\xff.2", b"staging1/2.0-\xc3\x28",
                 b"staging1_\xf0\x9f\x98.3"):
        add_packed_ref(sb.git.path, b"refs/heads/" + name, sha)
    poll(sb)


@case(REFS, "non-UTF-8 bytes beside an exact flag")
def _(sb: Sandbox) -> None:
    sha = good_commit(sb)
    for name in (b"dev1\xff", b"dev1/\xc3\x28", b"\xfe\xffdev1"):
        add_packed_ref(sb.git.path, b"refs/heads/" + name, sha)
    poll(sb)
    sb.run("deploy", "--ref", b"dev1\xff")


@case(REFS, "very long branch names and versions", flag="staging1*")
def _(sb: Sandbox) -> None:
    sha = good_commit(sb, "staging1-1.0")
    names = [b"staging1-1." + b"9" * 5000, b"staging1-" + b"1." * 3000 + b"1",
             b"staging1-2.0-" + b"x" * 20000, b"staging1/" + b"/".join([b"d" * 200] * 60)]
    for name in names:
        add_packed_ref(sb.git.path, b"refs/heads/" + name, sha)
    poll(sb)


@case(REFS, "very long exact branch name")
def _(sb: Sandbox) -> None:
    long = "dev1-" + "y" * 240
    sb.host.flag = long
    sb.host.write_config()
    good_commit(sb, long)
    poll(sb)


@case(REFS, "shell and markup characters in branch names", flag="staging1*")
def _(sb: Sandbox) -> None:
    sha = good_commit(sb, "staging1-1.0")
    touch = f"touch {sb.marker}".replace(" ", "${IFS}").encode()
    for name in (b"staging1-1.1;$(" + touch + b")", b"staging1-1.2`" + touch + b"`",
                 b"staging1-1.3'\"<script>alert(1)</script>", b"staging1-1.4|" + touch,
                 "staging1-1.5\u202egnp.exe".encode(), b"staging1-1.6%0a%0d",
                 b"staging1-9.9--upload-pack=" + touch, b"staging1-1.7&&" + touch):
        add_packed_ref(sb.git.path, b"refs/heads/" + name, sha)
    poll(sb)


@case(REFS, "hostile --ref values for deploy")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    sb.once()
    touch = f"touch {sb.marker}"
    for ref in (f"x;{touch}", f"$({touch})", f"--upload-pack={touch}", "-", "../../../etc/passwd",
                "HEAD", "refs/heads/dev1", "0" * 40, "@{-1}", "dev1^{tree}", "x" * 5000):
        sb.run("deploy", f"--ref={ref}")
    sb.run("deploy", "--ref", b"\xff\xfe")


@case(REFS, "a branch that points at a blob, not a commit")
def _(sb: Sandbox) -> None:
    good_commit(sb, "main")
    blob = hash_blob(sb.git, page("a blob").encode())
    sb.git.git("push", "--quiet", "origin", f"{blob}:refs/blobs/one")  # the object is there
    add_packed_ref(sb.git.path, b"refs/heads/dev1", blob)
    poll(sb)


@case(REFS, "a tag and other refs named like the flag, no branch")
def _(sb: Sandbox) -> None:
    sha = good_commit(sb, "main")
    sb.git.git("tag", "-a", "-m", "annotated", "dev1", sha)
    sb.git.git("push", "--quiet", "origin", "refs/tags/dev1")
    add_packed_ref(sb.git.path, b"refs/pull/1/head", sha)
    add_packed_ref(sb.git.path, b"refs/remotes/origin/dev1", sha)
    poll(sb)
    sb.run("deploy", "--ref", "dev1")
    sb.run("deploy", "--ref", "refs/tags/dev1")
    sb.run("deploy", "--ref", "refs/pull/1/head")


# -- trees -------------------------------------------------------------------------------------

@case(TREES, "symlinks out of the release (absolute)")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    entries = []
    for path, target in ((b"passwd", b"/etc/passwd"), (b"root", b"/"),
                         (b"assets/state", str(sb.host.state_dir).encode())):
        entries.append(("120000", path, hash_blob(sb.git, target)))
    commit_tree_entries(sb.git, "dev1", "B102: absolute links", entries,
                        {"index.html": page("B102 links")})
    poll(sb)


@case(TREES, "symlinks out of the release (relative)")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    entries = [("120000", b"up", hash_blob(sb.git, b"../../../../../../../../etc/passwd")),
               ("120000", b"deep/er/up", hash_blob(sb.git, b"../../../..")),
               ("120000", b"loop", hash_blob(sb.git, b"loop"))]
    commit_tree_entries(sb.git, "dev1", "B103: relative links", entries,
                        {"index.html": page("B103 links")})
    poll(sb)


@case(TREES, "index.html is a symlink out of the release")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    sb.git.commit("dev1", {"index.html": None}, "B104: drop the index")
    entries = [("120000", b"index.html", hash_blob(sb.git, b"/etc/hostname"))]
    commit_tree_entries(sb.git, "dev1", "B104: index is a link", entries, {})
    poll(sb)


@case(TREES, "submodule with a relative URL on the same authenticated remote")
def _(sb: Sandbox) -> None:
    sub = GitRemote(sb.http.project_root, name="sub", work_dir=sb.root / "sub-work")
    sub_sha = sub.commit_and_push("main", {"sub.css": "body{}"}, "sub")
    gitmodules = '[submodule "vendor/sub"]\n\tpath = vendor/sub\n\turl = ../sub.git\n'
    commit_tree_entries(sb.git, "dev1", "B105: a submodule", [("160000", b"vendor/sub", sub_sha)],
                        {"index.html": page("B105 sub"), ".gitmodules": gitmodules})
    poll(sb)


@case(TREES, "submodules with command-injection URLs and an escaping path")
def _(sb: Sandbox) -> None:
    touch = f"touch {sb.marker}"
    gitmodules = (f'[submodule "a"]\n\tpath = a\n\turl = ext::sh -c {touch.replace(" ", "% ")}\n'
                  f'[submodule "b"]\n\tpath = b\n\turl = --upload-pack={touch}\n'
                  f'[submodule "c"]\n\tpath = ../../escape\n\turl = ../sub.git\n'
                  f'[submodule "d"]\n\tpath = d\n\turl = -u./payload\n')
    fake = "1" * 40
    commit_tree_entries(sb.git, "dev1", "B106: hostile submodules",
                        [("160000", b"a", fake), ("160000", b"b", fake), ("160000", b"d", fake)],
                        {"index.html": page("B106"), ".gitmodules": gitmodules})
    poll(sb)


@case(TREES, "submodule on a remote that hangs")
def _(sb: Sandbox) -> None:
    silent = sb.serve(SilentServer())
    gitmodules = (f'[submodule "s"]\n\tpath = s\n'
                  f'\turl = http://deploy:{sb.git_token}@127.0.0.1:{silent.port}/sub.git\n')
    commit_tree_entries(sb.git, "dev1", "B107: slow submodule", [("160000", b"s", "2" * 40)],
                        {"index.html": page("B107"), ".gitmodules": gitmodules})
    poll(sb)


@case(TREES, "LFS pointer whose object the remote does not have")
def _(sb: Sandbox) -> None:
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               f"oid sha256:{'ab' * 32}\nsize 12345\n")
    good_commit(sb, extra={"big.bin": pointer,
                           ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n"})
    poll(sb)


@case(TREES, "LFS near-pointers, a huge size and an .lfsconfig to a hanging server")
def _(sb: Sandbox) -> None:
    silent = sb.serve(SilentServer())
    files = {
        "near.bin": "version https://git-lfs.github.com/spec/v1\noid sha256:xyz\nsize 1\n",
        "huge.bin": ("version https://git-lfs.github.com/spec/v1\n"
                     f"oid sha256:{'cd' * 32}\nsize 99999999999999999999\n"),
        "real.bin": ("version https://git-lfs.github.com/spec/v1\n"
                     f"oid sha256:{'ef' * 32}\nsize 10\n"),
        ".lfsconfig": f"[lfs]\n\turl = http://deploy:{sb.git_token}@127.0.0.1:{silent.port}/lfs\n",
    }
    good_commit(sb, extra=files)
    poll(sb)


@case(TREES, "non-UTF-8, newline, very long and deep file names")
def _(sb: Sandbox) -> None:
    work = bytes(sb.git.work)
    good_commit(sb, "dev1", headline="B108 names")
    deep = b"/".join([b"d"] * 120)
    for rel in (b"caf\xe9.css", b"\xff\xfe.txt", b"new\nline.txt", b"tab\there.txt",
                b"n" * 250 + b".txt", deep + b"/leaf.txt", b"-rf", b"--help"):
        path = os.path.join(work, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"x\n")
    sb.git.commit("dev1", {}, "B108: odd names")
    sb.git.push("dev1")
    poll(sb)


@case(TREES, "tree entries git refuses to check out (.git, ..)")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    hook = hash_blob(sb.git, f"[core]\n\tfsmonitor = touch {sb.marker}\n".encode())
    index = hash_blob(sb.git, page("B109 dotgit").encode())
    inner = subprocess.run(["git", "-C", str(sb.git.work), "mktree", "--missing"],
                           input=f"100644 blob {hook}\tconfig\n".encode(),
                           capture_output=True, check=True, timeout=60).stdout.decode().strip()
    lines = [f"100644 blob {index}\tindex.html", f"040000 tree {inner}\t.git",
             f"040000 tree {inner}\t.GIT", f"040000 tree {inner}\t..",
             f"100644 blob {hook}\t.gitmodules"]
    tree = subprocess.run(["git", "-C", str(sb.git.work), "mktree", "--missing"],
                          input="\n".join(lines).encode() + b"\n", capture_output=True,
                          timeout=60)
    if tree.returncode != 0:
        raise RuntimeError(f"mktree refused: {tree.stderr.decode()}")
    parent = sb.git.git("rev-parse", "HEAD")
    commit = sb.git.git("commit-tree", tree.stdout.decode().strip(), "-p", parent, "-m",
                        "B109: hostile tree")
    push = run_git(["push", "--quiet", "origin", f"{commit}:refs/heads/dev1"], cwd=sb.git.work,
                   check=False)
    if push.returncode != 0:  # receive.fsckObjects is off by default; note it if it refuses
        raise RuntimeError(f"the remote refused the tree: {push.stderr.strip()}")
    poll(sb)


# -- configs ------------------------------------------------------------------------------------

def config_text(sb: Sandbox) -> str:
    return sb.host.config_path.read_text()


def write_raw_config(sb: Sandbox, data: bytes) -> None:
    sb.host.config_path.write_bytes(data)


def config_runs(sb: Sandbox) -> None:
    sb.run("check-config")
    sb.once()
    sb.run("status")


def replace_key(text: str, key: str, value: str) -> str:
    pattern = re.compile(rf"^{re.escape(key)} = .*$", re.M)
    if not pattern.search(text):
        raise KeyError(key)
    return pattern.sub(lambda _m: f"{key} = {value}", text, count=1)


@case(CONFIGS, "a UTF-8 byte-order mark")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    write_raw_config(sb, b"\xef\xbb\xbf" + config_text(sb).encode())
    config_runs(sb)


@case(CONFIGS, "non-UTF-8 bytes in a value and in a comment")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    text = config_text(sb).encode().replace(b'name = "dev1"', b'name = "d\xe9v1"')
    write_raw_config(sb, b"# caf\xe9 \xff\n" + text)
    config_runs(sb)


@case(CONFIGS, "UTF-16 config")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    write_raw_config(sb, config_text(sb).encode("utf-16"))
    config_runs(sb)


@case(CONFIGS, "bad URLs, one of them carrying the Slack secret")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    text = config_text(sb)
    text = replace_key(text, "public_url", '"not a url"')
    text = replace_key(text, "local_url", '"file:///etc/passwd"')
    text = replace_key(text, "webhook_url",
                       f'"http://127.0.0.1:1/services/T0/B0/{sb.slack_token} oops"')
    write_raw_config(sb, text.encode())
    config_runs(sb)


@case(CONFIGS, "an unparseable remote URL carrying the git password")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    text = replace_key(config_text(sb), "remote",
                       f'"http://deploy:{sb.git_token}@[::1:{sb.http.port}/site.git"')
    write_raw_config(sb, text.encode())
    config_runs(sb)


@case(CONFIGS, "remote URLs that are commands (ext::, --upload-pack)")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    for remote in (f"ext::sh -c touch% {sb.marker}", f"--upload-pack=touch {sb.marker}",
                   f"-oProxyCommand=touch {sb.marker}"):
        write_raw_config(sb, replace_key(base, "remote", json.dumps(remote)).encode())
        config_runs(sb)


@case(CONFIGS, "wrong types for every kind of key")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    for key, value in (("keep", '"three"'), ("verify_seconds", "[1]"), ("flag", "5"),
                       ("poll_seconds", "-1"), ("keep", "1" + "0" * 30), ("timeout_seconds", "nan"),
                       ("build_timeout_seconds", "inf"), ("state_dir", "1979-05-27T07:32:00Z"),
                       ("build", '"touch ' + str(sb.marker) + '"'), ("unit", "{a = 1}"),
                       ("content_dir", '""'), ("name", '"' + "n" * 100000 + '"')):
        write_raw_config(sb, replace_key(base, key, value).encode())
        sb.run("check-config")
        sb.once()


@case(CONFIGS, "secrets given with the wrong type")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    for value in (f'["{sb.webhook_url}"]', f'{{url = "{sb.webhook_url}"}}',
                  f'"{sb.webhook_url}\\u0000"', f'"{sb.webhook_url}\\n[x]"'):
        write_raw_config(sb, replace_key(base, "webhook_url", value).encode())
        config_runs(sb)
    write_raw_config(sb, (base + f'\n[trello]\nkey = ["{sb.git_token}"]\ntoken = 5\n').encode())
    config_runs(sb)
    text = replace_key(base, "remote", f'["{sb.remote_url}"]')
    write_raw_config(sb, text.encode())
    config_runs(sb)


@case(CONFIGS, "tables and arrays where keys are expected; unknown sections")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    for extra in ("\n[[checks]]\nname = 5\nurl = []\n", "\nchecks = \"all\"\n",
                  "\n[window]\nstart = \"25:99\"\nminutes = -5\ntimezone = \"Mars/Olympus\"\n",
                  "\n[promotion]\ncanary_urls = \"http://127.0.0.1:1\"\n",
                  "\n[cards]\npattern = \"(((\"\n", "\n[cards]\npattern = \"(a+)+$\"\n",
                  "\n[surprise]\nx = 1\n"):
        write_raw_config(sb, (base + extra).encode())
        sb.run("check-config")
        sb.once()
    write_raw_config(sb, base.replace("[slack]", "[[slack]]").encode())
    config_runs(sb)


@case(CONFIGS, "deeply nested arrays and inline tables")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    write_raw_config(sb, (base + "\n[x]\ny = " + "[" * 100000 + "]" * 100000 + "\n").encode())
    config_runs(sb)
    write_raw_config(sb, (base + "\n[x]\ny = " + "{a = " * 5000 + "1" + "}" * 5000
                          + "\n").encode())
    config_runs(sb)


@case(CONFIGS, "empty, binary, huge and directory configs")
def _(sb: Sandbox) -> None:
    good_commit(sb)
    base = config_text(sb)
    write_raw_config(sb, b"")
    config_runs(sb)
    write_raw_config(sb, bytes(range(256)) * 64)
    config_runs(sb)
    write_raw_config(sb, base.encode() + b"# padding\n" * 2_000_000)
    config_runs(sb)
    directory = sb.root / "config-dir"
    directory.mkdir()
    sb.run("check-config", config=directory)
    sb.run("once", config=directory)
    sb.run("once", config=sb.root / "missing.toml")


# -- remote answers -----------------------------------------------------------------------------

def use_remote(sb: Sandbox, url: str) -> None:
    sb.host.write_config(remote=url)


@case(REMOTES, "a path that is an empty directory, and one that is a file")
def _(sb: Sandbox) -> None:
    empty = sb.root / "empty.git"
    empty.mkdir()
    use_remote(sb, str(empty))
    poll(sb)
    plain = sb.root / "plain-file"
    plain.write_text(f"deploy:{sb.git_token}\n")
    use_remote(sb, str(plain))
    poll(sb)


@case(REMOTES, "an HTTP server that answers HTML, not git")
def _(sb: Sandbox) -> None:
    html = sb.serve(CannedServer(canned(200, b"<html><body>Welcome to nginx!</body></html>",
                                        "text/html")))
    use_remote(sb, f"http://deploy:{sb.git_token}@127.0.0.1:{html.port}/site.git")
    poll(sb)


@case(REMOTES, "an HTTP server that answers garbage pkt-lines")
def _(sb: Sandbox) -> None:
    junk = (b"001e# service=git-upload-pack\n0000" + b"zzzz\xff\xfe garbage" * 100)
    server = sb.serve(CannedServer(canned(
        200, junk, "application/x-git-upload-pack-advertisement")))
    use_remote(sb, f"http://deploy:{sb.git_token}@127.0.0.1:{server.port}/site.git")
    poll(sb)


@case(REMOTES, "a git server that answers 500 (and echoes the request)")
def _(sb: Sandbox) -> None:
    def echo(handler):
        auth = handler.headers.get("Authorization", "")
        send(handler, 500, f"error for {handler.path} {auth}\n".encode(), "text/plain")
    server = sb.serve(CannedServer(echo))
    use_remote(sb, f"http://deploy:{sb.git_token}@127.0.0.1:{server.port}/site.git")
    poll(sb)


@case(REMOTES, "a remote that accepts and never answers")
def _(sb: Sandbox) -> None:
    silent = sb.serve(SilentServer())
    use_remote(sb, f"http://deploy:{sb.git_token}@127.0.0.1:{silent.port}/site.git")
    run = sb.once()
    sb.notes.append(f"`once` took {run.seconds:.1f}s (git timeout_seconds = 3)")
    sb.run("status", "--json")
    sb.run("deploy")


@case(REMOTES, "a remote that sends HTTP headers and then stalls")
def _(sb: Sandbox) -> None:
    silent = sb.serve(SilentServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/"
                                   b"x-git-upload-pack-advertisement\r\n"
                                   b"Content-Length: 100000\r\n\r\n001e# service"))
    use_remote(sb, f"http://deploy:{sb.git_token}@127.0.0.1:{silent.port}/site.git")
    run = sb.once()
    sb.notes.append(f"`once` took {run.seconds:.1f}s (git timeout_seconds = 3)")
    sb.run("status", "--json")


@case(REMOTES, "a branch whose head commit object is lost")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    sha = good_commit(sb, headline="B102 lost")
    loose_object(sb.git.path, sha).unlink()
    poll(sb)


@case(REMOTES, "a commit whose blob is lost")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    content = "unique blob " + secrets.token_hex(8)
    good_commit(sb, headline="B103 lost blob", extra={"lost.txt": content})
    blob = hash_blob(sb.git, content.encode())
    loose_object(sb.git.path, blob).unlink()
    poll(sb)


@case(REMOTES, "a branch that points at an object that does not exist")
def _(sb: Sandbox) -> None:
    good_commit(sb, "main")
    add_packed_ref(sb.git.path, b"refs/heads/dev1", "deadbeef" * 5)
    poll(sb)


@case(REMOTES, "a remote that loses the live commit's history after a deploy")
def _(sb: Sandbox) -> None:
    good_commit(sb, headline="B101 before")
    sb.once()
    fresh = sb.root / "fresh"
    shutil.rmtree(sb.git.path)
    replacement = GitRemote(sb.http.project_root, work_dir=fresh)
    replacement.commit_and_push("dev1", {"index.html": page("B110 orphan")}, "B110: unrelated")
    poll(sb)


# -- canary answers -----------------------------------------------------------------------------

def canary_setup(sb: Sandbox, *respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
    urls = []
    for answer in respond:
        server = sb.serve(CannedServer(answer))
        urls.append(f"http://127.0.0.1:{server.port}/")
    sb.host.extra_config = sb.slack_section + (
        f"\n[promotion]\ncanary_urls = {json.dumps(urls)}\nbake_minutes = 0\n"
        "timeout_seconds = 2\n")
    sb.host.write_config()
    good_commit(sb, "prod-bento-1.0", headline="B200 bento")
    poll(sb)


def canary_doc(version: str = "1.0", **changes: Any) -> dict:
    sha = "a" * 40
    doc = {"schema": 1, "site": "asterix", "flag": "prod-asterix*",
           "updated_at": "2026-11-26T14:00:00+00:00",
           "current": {"branch": f"prod-asterix-{version}", "commit": sha, "version": version,
                       "since": "2026-11-26T03:40:00+00:00"},
           "pending": None,
           "deploys": [{"trigger": "poll", "branch": f"prod-asterix-{version}",
                        "version": version, "commit": sha, "previous_commit": None,
                        "outcome": "deployed", "started_at": "2026-11-26T03:39:00+00:00",
                        "finished_at": "2026-11-26T03:40:00+00:00", "cards": [],
                        "uncarded_commits": [], "checks": [], "error": None}]}
    doc.update(changes)
    return doc


def as_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@case(CANARIES, "a healthy canary (the setup works)", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    canary_setup(sb, canned(200, as_json(canary_doc())))


@case(CANARIES, "not JSON: HTML, truncated JSON, invalid UTF-8, NaN", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    canary_setup(sb, canned(200, b"<html>503 Service Unavailable</html>", "text/html"),
                 canned(200, as_json(canary_doc())[:-20]),
                 canned(200, as_json(canary_doc()).replace(b'"asterix"', b'"\xff\xfe"')),
                 canned(200, b'{"schema": NaN, "current": Infinity, "deploys": -Infinity}'))


@case(CANARIES, "huge answers: 30 MB, endless, a gzip bomb", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    big = b'{"schema": 1, "pad": "' + b"x" * 30_000_000 + b'"}'

    def endless(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(b'{"pad": "')
        deadline = time.monotonic() + 20
        chunk = b"y" * 65536
        while time.monotonic() < deadline:
            handler.wfile.write(chunk)

    bomb = gzip.compress(b'{"pad": "' + b" " * 100_000_000 + b'"}', compresslevel=9)
    canary_setup(sb, canned(200, big), endless,
                 canned(200, bomb, headers={"Content-Encoding": "gzip"}))


@case(CANARIES, "wrong schema: a list, wrong types, a 100k-digit version", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    canary_setup(sb, canned(200, b"[1, 2, 3]"),
                 canned(200, as_json(canary_doc(current=5, deploys="none"))),
                 canned(200, as_json(canary_doc(version="1." + "9" * 100000))),
                 canned(200, as_json(canary_doc(deploys=[None, 1, "x", {"outcome": []}]))),
                 canned(200, as_json({"current": {"commit": {"x": 1}, "version": ["1.0"],
                                                  "since": 12}, "deploys": [{}]})))


@case(CANARIES, "deeply nested JSON", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    canary_setup(sb, canned(200, b"[" * 200000 + b"]" * 200000),
                 canned(200, b'{"current": ' + b'{"a": ' * 100000 + b"1" + b"}" * 100001))


@case(CANARIES, "canaries that redirect in a loop, answer 500, or lie about their length",
      flag="prod-bento*")
def _(sb: Sandbox) -> None:
    def loop(handler):
        send(handler, 302, b"", headers={"Location": handler.path + "x"})

    def short(handler):
        body = as_json(canary_doc())
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body) + 100000))
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    canary_setup(sb, loop, canned(500, b"oops", "text/plain"), short)


@case(CANARIES, "a canary that accepts and never answers", flag="prod-bento*")
def _(sb: Sandbox) -> None:
    silent = sb.serve(SilentServer())
    sb.host.extra_config = sb.slack_section + (
        f'\n[promotion]\ncanary_urls = ["http://127.0.0.1:{silent.port}/"]\nbake_minutes = 0\n'
        "timeout_seconds = 2\n")
    sb.host.write_config()
    good_commit(sb, "prod-bento-1.0", headline="B200 bento")
    run = sb.once()
    sb.notes.append(f"`once` took {run.seconds:.1f}s ([promotion] timeout_seconds = 2)")
    sb.run("status", "--json")


@case(CANARIES, "hostile text in a canary's answer (markup, control characters)",
      flag="prod-bento*")
def _(sb: Sandbox) -> None:
    evil = "<script>alert(1)</script>\x1b[31m\u202e@channel <!everyone> `$(id)`"
    canary_setup(sb, canned(200, as_json(canary_doc(
        version=evil, deploys=[{"outcome": "failed", "version": evil, "commit": evil,
                                "error": evil * 100}]))))


# --------------------------------------------------------------------------- kill points


def kill_point_case(sb: Sandbox, point: str) -> tuple[bool, list[str]]:
    """Deploy A, push B, kill `once` at `point`, run `once` again: (point hit, problems).
    during-switch-back: B fails its checks, so the kill comes while rolling back."""
    build = [[sys.executable, "-c", "open('built.txt', 'w').write('built')"]]
    sb.host.write_config(build=json.dumps(build), keep=3)
    first = good_commit(sb, headline="B101 first")
    run = sb.once()
    if run.returncode != 0:
        return False, [f"the first deploy failed: {run.returncode} {run.text()[-300:]}"]
    if point == "during-switch-back":
        sb.git.commit_and_push("dev1", {"index.html": None}, "B500: drop the index")
        expected, headline = first, "B101 first"
    else:
        expected, headline = good_commit(sb, headline="B102 second"), "B102 second"
    killed = sb.once(failpoints=f"{point}=kill")
    if killed.returncode != -signal.SIGKILL:
        return False, [f"never hit: `once` exited {killed.returncode}"]
    recovery = sb.once()
    problems = []
    if recovery.returncode not in (0, 1) or (point != "during-switch-back"
                                             and recovery.returncode != 0):
        problems.append(f"the recovery run exited {recovery.returncode}: "
                        f"{recovery.text().strip()[-300:]}")

    def again() -> tuple[int, str]:
        run = sb.once()
        return run.returncode, run.text()

    problems += consistency_problems(sb.host, sb.slack, expected, headline, again)
    return True, problems


def new_sandbox(flag: str = "dev1", trace: bool = True) -> Sandbox:
    root = Path(tempfile.mkdtemp(prefix="ghost-hostile-"))
    try:
        return Sandbox(root, flag, trace=trace)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
