"""A whole host for the agent in tmp_path: a git remote, a Ghost stand-in serving the live
path, a `systemctl` at the process boundary, a config file, and the real `ghost-agent` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

AGENT_TIMEOUT = 120
_REPO_ROOT = Path(__file__).resolve().parents[1]


def agent_argv() -> list[str]:
    """The installed console script when there is one (as users run it), else -m agent."""
    script = Path(sys.executable).parent / "ghost-agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


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
        self.settings: dict[str, Any] = {"verify_seconds": 2, "build": "[]", "keep": 3}
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
            """) + self.extra_config)

    # -- running the agent ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.systemctl.env(self.site.url))
        env["PYTHONPATH"] = str(_REPO_ROOT)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        return env

    def run(self, *args: str, timeout: float = AGENT_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([*agent_argv(), "--config", str(self.config_path), *args],
                              env=self.env(), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        """Start the agent in its own process group (so a test can SIGKILL all of it)."""
        return subprocess.Popen([*agent_argv(), "--config", str(self.config_path), *args],
                                env=kwargs.pop("env", None) or self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, **kwargs)

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
