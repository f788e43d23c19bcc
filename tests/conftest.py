"""Shared fixtures: real git remotes, a Ghost stand-in, and a `systemctl` at the process boundary.

Every fixture keeps to its test's tmp_path and stops what it started, even when the test fails.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from agent.demo.sitesim import SiteServer  # noqa: E402
from tests.agentsite import FakeSystemctl  # noqa: E402
from tests.gitremote import GitRemote, SmartHttpGitServer  # noqa: E402


@pytest.fixture(autouse=True)
def _empty_secret_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """agent.redact's registry is module global: each test starts with no secrets, and what
    a test registers (a canary) is gone after it."""
    import agent.redact

    monkeypatch.setattr(agent.redact, "_registered", set())


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What a `ghost-agent` process sets up once and an in-process run (agent.cli.main, the
    service loop) leaves behind is put back after each test: the failpoints read from the
    environment, the root logger's handlers and level (cli.setup_logging replaces them), and
    the handlers of SIGTERM, SIGINT and SIGHUP (daemon.run_service installs its own)."""
    import agent.failpoints

    monkeypatch.setattr(agent.failpoints, "_armed", None)
    root = logging.getLogger()
    level, handlers = root.level, [h for h in root.handlers if not _pytest_handler(h)]
    signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                       signal.SIGHUP)}
    yield
    for sig, handler in signals.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
    root.setLevel(level)
    root.handlers[:] = [h for h in root.handlers if _pytest_handler(h)] + handlers


def _pytest_handler(handler: logging.Handler) -> bool:
    """pytest's own (caplog, live logs): pytest adds and removes them around each phase."""
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    """(path, socket): a bound datagram socket standing in for systemd's $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    yield path, sock
    sock.close()


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
