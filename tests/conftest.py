"""Shared fixtures: real git remotes, a Ghost stand-in, and a `systemctl` at the process boundary.

Every fixture keeps to its test's tmp_path and stops what it started, even when the test fails.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from agent.demo.sitesim import SiteServer  # noqa: E402
from agent.demo.systemctl import (  # noqa: E402
    FAIL_ENV,
    HANG_ENV,
    LOG_ENV,
    SITE_URL_ENV,
    install_shim,
)
from tests.gitremote import GitRemote, SmartHttpGitServer  # noqa: E402


@pytest.fixture(autouse=True)
def _empty_secret_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """agent.redact's registry is module global: each test starts with no secrets, and what
    a test registers (a canary) is gone after it."""
    import agent.redact

    monkeypatch.setattr(agent.redact, "_registered", set())


@pytest.fixture
def git_remote(tmp_path: Path) -> GitRemote:
    """A bare repo at tmp_path/remote/site.git (its path is the remote URL) and a clone to push."""
    return GitRemote(tmp_path / "remote")


@pytest.fixture
def http_git(tmp_path: Path) -> Iterator[SmartHttpGitServer]:
    """A started smart-HTTP git server serving tmp_path/http-root; stopped at teardown."""
    server = SmartHttpGitServer(tmp_path / "http-root")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_git_remote(http_git: SmartHttpGitServer, tmp_path: Path) -> GitRemote:
    """A GitRemote whose bare repo is served by `http_git`: use http_git.repo_url("site.git").

    Its working clone lives outside the served root (tmp_path/http-work).
    """
    return GitRemote(http_git.project_root, name="site", work_dir=tmp_path / "http-work")


@pytest.fixture
def site_server() -> Iterator[Callable[..., SiteServer]]:
    """Factory: make_site(live_path, content_dir=None, public_url=None, port=0) -> started
    SiteServer. Every server made is stopped at teardown."""
    made: list[SiteServer] = []

    def make_site(live_path: Path, **kw: Any) -> SiteServer:
        server = SiteServer(live_path, **kw)
        made.append(server)
        return server.start()

    try:
        yield make_site
    finally:
        for server in made:
            server.stop()


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


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemctl:
    """A `systemctl` shim in tmp_path/systemctl/bin; see FakeSystemctl."""
    return FakeSystemctl(tmp_path / "systemctl", monkeypatch)


@pytest.fixture
def make_host(tmp_path: Path, git_remote: GitRemote, site_server, fake_systemctl):
    """Factory: a whole host (tests/agentsite.py) following `flag` on `remote` (default: the
    git_remote fixture's path): a Ghost stand-in serving the live theme path, the systemctl
    stand-in, and a config for the real `ghost-agent` command. Several hosts need names."""
    from tests.agentsite import AgentSite

    def make(flag: str = "dev1", *, remote: str | None = None, name: str = "site"):
        content = tmp_path / name / "content"
        live = content / "themes" / "acme"
        live.parent.mkdir(parents=True)
        site = site_server(live, content_dir=content)
        return AgentSite(tmp_path / name / "host", remote or str(git_remote.path), site,
                         fake_systemctl, flag=flag)

    return make


@pytest.fixture
def host(make_host):
    """A dev1 host: see make_host."""
    return make_host()
