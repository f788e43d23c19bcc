"""Building blocks of tests/bench/run.py: a host for the real `ghost-agent run`, the agent as a
process whose stderr lines are timestamped (monotonic) as they are read, git helpers that
build big trees fast, signed webhook calls, and CPU/RSS readings.

The same real parts as the tests: the Ghost stand-in (agent/demo/sitesim.py) in this process,
the systemctl stand-in on PATH (agent/demo/systemctl.py), path remotes, 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from agent.demo.sitesim import SiteServer  # noqa: E402
from agent.remote import git_env as agent_git_env  # noqa: E402
from tests.agentsite import AgentSite  # noqa: E402
from tests.gitremote import git_env  # noqa: E402

SECRET = "bench-webhook-secret-5d1c0a77"  # a throwaway, for a listener on 127.0.0.1
HOOK_PATH = "/ghost-agent/webhook"
AGENT_STOP_SECONDS = 30.0

# The agent's log lines (agent/cycle.py, agent/proc.py), as written without a journal.
DEPLOYING = re.compile(r" INFO deploying (?P<branch>\S+) (?P<sha>[0-9a-f]{7}) "
                       r"\(trigger (?P<trigger>\w+)\)")
DEPLOYED = re.compile(r" INFO deployed (?P<branch>\S+) (?P<sha>[0-9a-f]{7})")
COMMAND = re.compile(r" DEBUG `(?P<cmd>.*)` (?:exited with -?\d+|timed out|could not start|"
                     r"was interrupted) in (?P<wall>\d+(?:\.\d+)?)s$")
LS_REMOTE = re.compile(r" DEBUG `git .* ls-remote .*` exited with")


class BenchError(RuntimeError):
    """A figure could not be measured (the message says why)."""


def say(message: str) -> None:
    """Progress, on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: list[float]) -> float:
    return percentile(values, 0.5)


def page(headline: str) -> str:
    return f"<html><body><h1>{headline}</h1></body></html>\n"


# -- git --------------------------------------------------------------------------------------
def git(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,  # noqa: A002
        timeout: float = 300) -> str:
    """git isolated from the user's config; returns stdout; raises BenchError on failure."""
    done = subprocess.run(["git", *args], input=input, env=env or git_env(),
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args[:3])} failed: "
                         f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout.decode(errors="replace").strip()


def raw_git_env() -> dict[str, str]:
    """The environment the agent gives git (no user or system config, no prompts), for the
    raw floor: the same git, configured the same way."""
    env = dict(os.environ)
    env.update(agent_git_env(60))
    return env


def bare_repo(path: Path) -> Path:
    git("init", "--bare", "--quiet", str(path))
    return path


def import_commit(repo: Path, branch: str, files: dict[str, bytes], message: str) -> str:
    """Write a root commit holding exactly `files` onto `branch` of the bare `repo` (forced),
    through git fast-import: 10,000 files in well under a second, no work tree."""
    when = int(time.time())
    ref = f"refs/heads/{branch}"
    out = bytearray(f"reset {ref}\ncommit {ref}\n".encode())
    out += f"committer Bench <bench@example.invalid> {when} +0000\n".encode()
    text = message.encode()
    out += b"data %d\n%s\n" % (len(text), text)
    for name, data in files.items():
        out += b"M 100644 inline %s\ndata %d\n%s\n" % (name.encode(), len(data), data)
    out += b"\n"
    git("--git-dir", str(repo), "fast-import", "--quiet", "--force", input=bytes(out))
    return git("--git-dir", str(repo), "rev-parse", ref)


def theme_files(count: int, tag: str) -> dict[str, bytes]:
    """A theme of `count` files, 100 to a folder, every one new for each `tag`."""
    files = {"index.html": page(f"B100 {tag}").encode()}
    for i in range(count - 1):
        files[f"assets/d{i // 100:03d}/f{i:05d}.css"] = (
            f"/* {tag} file {i} */\n.c{i} {{ color: #{i % 4096:03x}; margin: {i % 7}px; }}\n"
        ).encode()
    return files


def add_branches(repo: Path, sha: str, names: list[str]) -> None:
    """Create many branches at once (`git update-ref --stdin`)."""
    lines = "".join(f"create refs/heads/{name} {sha}\n" for name in names)
    git("--git-dir", str(repo), "update-ref", "--stdin", input=lines.encode())


# -- CPU and memory ---------------------------------------------------------------------------
def children_cpu(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """CPU seconds (user + system, its own children included) of one run of argv, averaged
    over `repeat` runs: RUSAGE_CHILDREN deltas of this process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(repeat):
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / repeat


def bare_interpreter_rss() -> int:
    """RSS in bytes of an idle bare interpreter (this venv's python, no imports)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10)"])
    try:
        time.sleep(1.0)
        return int(psutil.Process(child.pid).memory_info().rss)
    finally:
        child.kill()
        child.wait(timeout=10)


# -- a host and the agent -------------------------------------------------------------------
class _Systemctl:
    """The systemctl stand-in (tests/conftest.py's FakeSystemctl) without pytest's monkeypatch."""

    def __init__(self, root: Path):
        from tests.conftest import FakeSystemctl

        self._fake = FakeSystemctl(root, monkeypatch=None)

    def __getattr__(self, name):
        return getattr(self._fake, name)


class Site:
    """One host under root: the Ghost stand-in serving the live theme path, the systemctl
    stand-in, an agent.toml following `flag` on `remote_url`, optionally with [webhook]."""

    def __init__(self, root: Path, remote_url: str, *, flag: str = "dev1", poll: float = 10.0,
                 webhook: bool = False):
        content = root / "site" / "content"
        (content / "themes").mkdir(parents=True)
        self.server = SiteServer(content / "themes" / "acme", content_dir=content).start()
        self.host = AgentSite(root / "host", remote_url, self.server, _Systemctl(root / "sc"),
                              flag=flag)
        self.port: int | None = None
        if webhook:
            self.port = free_port()
            secret_file = root / "webhook-secret"
            secret_file.write_text(SECRET + "\n")
            secret_file.chmod(0o600)
            self.host.extra_config = (f'\n[webhook]\nlisten = "127.0.0.1:{self.port}"\n'
                                      f'secret_file = "{secret_file}"\n')
        self.host.write_config(poll_seconds=poll)

    def record(self, sha: str, timeout: float = 30.0) -> dict:
        """The ci-cd.json record of the deploy of `sha`, once published."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for record in self.host.ci_cd().get("deploys") or []:
                    if record.get("commit") == sha:
                        return record
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise BenchError(f"ci-cd.json names no deploy of {sha[:7]} after {timeout:g}s")

    def close(self) -> None:
        self.server.stop()

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Line:
    t: float  # time.monotonic() when the line was read
    text: str


class AgentRun:
    """`ghost-agent run` (the installed command) on a Site. Every stderr line is kept with the
    monotonic time it was read; stop() ends it with SIGTERM (SIGKILL to its group after
    AGENT_STOP_SECONDS)."""

    def __init__(self, site: Site, debug: bool = False):
        self.site = site
        self.lines: list[Line] = []
        self._cond = threading.Condition()
        self._open = 2
        self.proc = site.host.start(*(["--debug"] if debug else []), "run")
        self.ps = psutil.Process(self.proc.pid)
        self._readers = [threading.Thread(target=self._read, args=(stream, keep), daemon=True)
                         for stream, keep in ((self.proc.stderr, True), (self.proc.stdout, False))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, keep: bool) -> None:
        try:
            for text in stream:
                t = time.monotonic()
                if keep:
                    with self._cond:
                        self.lines.append(Line(t, text.rstrip("\n")))
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    def __enter__(self) -> AgentRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: re.Pattern[str], start: int = 0,
                 timeout: float = 60.0) -> tuple[int, Line, re.Match[str]]:
        """The first line from index `start` on that matches: (index, line, match)."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    found = pattern.search(self.lines[i].text)
                    if found:
                        return i, self.lines[i], found
                    i += 1
                if self._open == 0 or self.proc.poll() is not None:
                    raise BenchError(f"the agent exited ({self.proc.poll()}) before "
                                     f"{pattern.pattern!r}; last lines: {self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"no {pattern.pattern!r} within {timeout:g}s; "
                                     f"last lines: {self.tail()}")
                self._cond.wait(min(left, 0.5))

    def wait_count(self, pattern: re.Pattern[str], start: int, count: int,
                   timeout: float = 60.0) -> tuple[int, Line]:
        """The `count`-th line from `start` on that matches."""
        index, line = start - 1, None
        for _ in range(count):
            index, line, _ = self.wait_for(pattern, index + 1, timeout)
        assert line is not None
        return index, line

    def count(self, pattern: re.Pattern[str], start: int, end: int | None = None) -> int:
        with self._cond:
            return sum(1 for line in self.lines[start:end] if pattern.search(line.text))

    def snapshot(self, start: int, end: int) -> list[Line]:
        with self._cond:
            return self.lines[start:end]

    def tail(self, n: int = 3) -> str:
        return " | ".join(line.text[-200:] for line in self.lines[-n:])

    def cpu(self) -> float:
        """CPU seconds of the agent so far: user + system, its reaped children (git, the
        systemctl stand-in) included."""
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def wait_quiet(self, timeout: float = 60.0, still: float = 0.3) -> None:
        """Until the agent has no child and spent no CPU over `still` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            busy = bool(self.ps.children())
            now = self.cpu()
            if not busy and last is not None and now == last:
                return
            last = None if busy else now
            time.sleep(still)
        raise BenchError(f"the agent was still busy after {timeout:g}s")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=AGENT_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode


@dataclass(frozen=True)
class Command:
    index: int  # of its line in the list given to commands()
    t: float  # when its line was read: when it ended
    cmd: str
    wall: float  # seconds, as proc.run measured it


def commands(lines: list[Line]) -> list[Command]:
    """The commands proc.run logged at DEBUG, in order."""
    found = []
    for index, line in enumerate(lines):
        match = COMMAND.search(line.text)
        if match:
            found.append(Command(index, line.t, match["cmd"], float(match["wall"])))
    return found


# -- the webhook ------------------------------------------------------------------------------
def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hook_call(port: int, *, method: str = "POST", path: str = HOOK_PATH,
              body: bytes = b'{"ref": "refs/heads/dev1"}', headers: dict[str, str] | None = None,
              send_body: bool = True, timeout: float = 10.0) -> int:
    """One call to the listener; returns the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path)
        every = {"Content-Type": "application/json", "X-GitHub-Event": "push",
                 **(headers or {})}
        if method == "POST" and "Content-Length" not in every:
            every["Content-Length"] = str(len(body))
        for key, value in every.items():
            conn.putheader(key, value)
        conn.endheaders()
        if method == "POST" and send_body:
            conn.send(body)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def signed_call(port: int, body: bytes = b'{"ref": "refs/heads/dev1"}') -> int:
    return hook_call(port, body=body, headers={"X-Hub-Signature-256": signature(body)})

