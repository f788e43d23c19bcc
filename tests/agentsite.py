"""A whole host for the agent in tmp_path: a git remote, a Ghost stand-in serving the live
path, a `systemctl` at the process boundary, a config file, and the `ghost-agent` command.

Two ways to run the command:
- `host.call(...)` runs `agent.cli.main` in this process, as a fresh process would (the
  systemctl stand-in's environment, no secrets registered, no failpoints, logging to the
  captured stderr and put back afterwards). For tests about what the agent decides and does.
- `host.run(...)` / `host.start(...)` run the real `ghost-agent` command as a subprocess. For
  what only a process shows: exit statuses through sys.exit, signals, SIGKILL, the lock held
  by another process, faketime, failpoints, a closed stdout.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import pytest

from agent.demo.systemctl import FAIL_ENV, HANG_ENV, LOG_ENV, SITE_URL_ENV, install_shim

AGENT_TIMEOUT = 120
_REPO_ROOT = Path(__file__).resolve().parents[1]


def agent_argv() -> list[str]:
    """The installed console script when there is one (as users run it), else -m agent."""
    script = Path(sys.executable).parent / "ghost-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def read_messages(sock, seconds: float) -> list[str]:
    """Every datagram `sock` (a notify socket with a short timeout) receives for `seconds`."""
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


class Called(NamedTuple):
    """What an in-process `ghost-agent` call gave: like a CompletedProcess (returncode,
    stdout, stderr), and a tuple (code, stdout, stderr)."""

    returncode: int
    stdout: str
    stderr: str


# Not passed on to the command: systemd's (as env() does), and the failpoints, which in this
# process would SIGKILL the test run itself.
_NOT_FOR_THE_AGENT = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID",
                      "GHOST_AGENT_FAILPOINTS")


# The names of the threads the agent starts (slack_outbox, fleet_fetch, sdnotify, webhook).
_AGENT_THREADS = ("slack-delivery", "fleet-fetch", "watchdog", "webhook")


def _command(argv: list[str]) -> str | None:
    """The COMMAND word of a ghost-agent argv (skipping --config PATH and other options)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def call_main(argv: list[str], env: dict[str, str]) -> Called:
    """`agent.cli.main(argv)` in this process, as a fresh `ghost-agent` process would run it:
    `env` added to the environment (and _NOT_FOR_THE_AGENT removed) for the call only; the
    secret registry empty and the failpoints unarmed; stdout and stderr captured; the root
    logger's handlers and level as they were afterwards. A thread the call leaves running
    (a Slack delivery that did not finish) fails the test: a process would have ended it,
    so such a test must use the real process (`run`)."""
    if _command(argv) == "run":
        raise AssertionError("`run` installs signal handlers and never returns: use start()")
    import pytest  # here: the benches use this module without pytest

    import agent.failpoints
    import agent.redact
    from agent import cli

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    threads_before = set(threading.enumerate())
    cwd = os.getcwd()
    (out_encoding, out_errors), (err_encoding, err_errors) = _process_streams(
        *(os.environ.get(name, "") for name in _STREAM_ENV))
    out = io.TextIOWrapper(io.BytesIO(), encoding=out_encoding, errors=out_errors)
    err = io.TextIOWrapper(io.BytesIO(), encoding=err_encoding, errors=err_errors)
    with pytest.MonkeyPatch.context() as patch:
        for name in _NOT_FOR_THE_AGENT:
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(agent.redact, "_registered", set())
        patch.setattr(agent.failpoints, "_armed", None)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(argv)
                except SystemExit as exc:  # argparse: --help, --version, a usage error
                    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
    assert os.getcwd() == cwd, "the command changed the working directory"
    left = [t for t in threading.enumerate()
            if t not in threads_before and t.name.startswith(_AGENT_THREADS)]
    for thread in left:
        thread.join(0.2)
    running = [t.name for t in left if t.is_alive()]
    assert not running, f"the call left agent threads running: {running}; use host.run()"
    return Called(int(code), _as_run_reads_it(out), _as_run_reads_it(err))


# What decides how a process encodes its stdout and stderr.
_STREAM_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING", "PYTHONUTF8")


@functools.cache
def _process_streams(*_env: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(encoding, errors) of stdout and of stderr in a `ghost-agent` process whose output goes
    to a pipe, in this environment: an in-process call writes through the same, so that text a
    real process could not write fails here too."""
    code = ("import sys; print(sys.stdout.encoding, sys.stdout.errors, sys.stderr.encoding, "
            "sys.stderr.errors)")
    words = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=60).stdout.split()
    return (words[0], words[1]), (words[2], words[3])


def _as_run_reads_it(stream: io.TextIOWrapper) -> str:
    """What subprocess.run(text=True) makes of what was written: decoded in the locale's
    encoding (strict), universal newlines."""
    import locale

    stream.flush()
    text = stream.buffer.getvalue().decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class FakeSystemctl:
    """The `systemctl` shim in bin_dir plus its call log and failure switch."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.bin_dir = root / "bin"
        self.shim = install_shim(self.bin_dir)
        self.log_path = root / "systemctl-calls.jsonl"
        self.fail_path = root / "systemctl-fail"
        self.hang_path = root / "systemctl-hang"
        self._monkeypatch = monkeypatch

    def calls(self) -> list[dict[str, Any]]:
        """Parsed log lines: [{"argv": [...args after `systemctl`], "time": float}, ...]."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]

    def fail(self, on: bool = True) -> None:
        """While on, start/restart exit 1 like a failed systemd job, is-active says failed."""
        if on:
            self.fail_path.write_text("fail\n")
        elif self.fail_path.exists():
            self.fail_path.unlink()

    def fail_next(self, count: int) -> None:
        """Only the next `count` starts/restarts fail."""
        self.fail_path.write_text(f"{count}\n")

    def hang(self, on: bool = True) -> None:
        """While on, start/restart block (at most a minute) as if the unit were slow."""
        if on:
            self.hang_path.write_text("hang\n")
        elif self.hang_path.exists():
            self.hang_path.unlink()

    def env(self, site_url: str | None = None) -> dict[str, str]:
        """Variables to add to a subprocess's environment (PATH has bin_dir first)."""
        env = {
            "PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", os.defpath)]),
            LOG_ENV: str(self.log_path),
            FAIL_ENV: str(self.fail_path),
            HANG_ENV: str(self.hang_path),
        }
        if site_url is not None:
            env[SITE_URL_ENV] = site_url
        return env

    def install(self, site_url: str | None = None) -> None:
        """Put env(site_url) into this process's os.environ (undone at teardown)."""
        for key, value in self.env(site_url).items():
            self._monkeypatch.setenv(key, value)
        if site_url is None:
            self._monkeypatch.delenv(SITE_URL_ENV, raising=False)


class AgentSite:
    def __init__(self, root: Path, remote_url: str, site, systemctl, flag: str = "dev1"):
        self.root = root
        self.remote_url = remote_url
        self.site = site
        self.systemctl = systemctl
        self.flag = flag
        self.content = site.content_dir
        self.live = site.live_path
        self.state_dir = root / "state"
        self.config_path = root / "agent.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.extra_config = ""
        self.settings: dict[str, Any] = {"verify_seconds": 0.5, "build": "[]", "keep": 3}
        self.write_config()

    # -- configuration -------------------------------------------------------------------
    def write_config(self, **settings: Any) -> None:
        self.settings.update(settings)
        s = self.settings
        self.config_path.write_text(textwrap.dedent(f"""\
            [site]
            name = "{s.get('name', 'dev1')}"
            flag = "{self.flag}"
            public_url = "{s.get('public_url', self.site.url)}"
            local_url = "{self.site.url}"
            content_dir = "{self.content}"

            [agent]
            state_dir = "{self.state_dir}"

            [git]
            remote = "{s.get('remote', self.remote_url)}"
            poll_seconds = {s.get('poll_seconds', 0.2)}
            timeout_seconds = {s.get('git_timeout', 20)}

            [deploy]
            path = "{self.live}"
            keep = {s['keep']}
            build = {s['build']}
            build_timeout_seconds = {s.get('build_timeout', 30)}

            [ghost]
            unit = "ghost_dev1.service"
            verify_seconds = {s['verify_seconds']}
            restart_timeout_seconds = {s.get('restart_timeout', 20)}
            {s.get('ghost_extra', '')}
            """) + self.extra_config)

    # -- running the agent ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.systemctl.env(self.site.url))
        env["PYTHONPATH"] = str(_REPO_ROOT)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        return env

    def call(self, *args: str) -> Called:
        """`ghost-agent --config <this host's config> ARGS` in this process (see call_main)."""
        return call_main(["--config", str(self.config_path), *args], self.call_env())

    def call_env(self) -> dict[str, str]:
        """What env() adds to the environment for this host (the systemctl stand-in)."""
        return {**self.systemctl.env(self.site.url), "PYTHONPATH": str(_REPO_ROOT)}

    def run(self, *args: str, timeout: float = AGENT_TIMEOUT) -> subprocess.CompletedProcess:
        """The real `ghost-agent` command as a subprocess."""
        return subprocess.run([*agent_argv(), "--config", str(self.config_path), *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        """Start the agent in its own process group (so a test can SIGKILL all of it)."""
        return subprocess.Popen([*agent_argv(), "--config", str(self.config_path), *args],
                                env=kwargs.pop("env", None) or self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, **kwargs)

    def stop(self, process: subprocess.Popen) -> str:
        """SIGTERM a started agent; it must end cleanly (exit 0). Returns its log (stderr)."""
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                self.kill(process)
        assert process.returncode == 0, stderr
        return stderr

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate(timeout=30)

    # -- what the site shows ---------------------------------------------------------------
    def get(self, path: str = "/") -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.site.url + path, timeout=5) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def ci_cd(self) -> dict[str, Any]:
        return json.loads((self.content / "files" / "ci-cd.json").read_text())

    def ci_cd_txt(self) -> str:
        return (self.content / "files" / "ci-cd.txt").read_text()

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text())

    def restarts(self) -> int:
        return sum(1 for argv in self.systemctl.argvs() if argv[:1] == ["restart"])

    def live_target(self) -> Path | None:
        return Path(os.path.realpath(self.live)) if self.live.is_symlink() else None


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def page(headline: str) -> str:
    return f"<html><body><h1>{headline}</h1></body></html>\n"
