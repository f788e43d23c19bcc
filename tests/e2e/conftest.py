"""Fixtures for the end-to-end tier: a real systemd in a throwaway guest (see guest.py).

* `guest`        - function-scoped, booted with the test's tmp_path bound in; always shut down.
* `shared_guest` - module-scoped (one boot per module), with its own tmp dir bound in.
* `guest_factory`- function-scoped factory for other binds/network settings:
                   make_guest(binds=[...], network=True, name=...) -> booted Guest.

Every test under tests/e2e is marked `e2e`. Tests skip, with the reason, when the machine
cannot boot a guest (not root, no systemd, no cgroup v2, ...).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.guest import Guest, guest_supported

_E2E_DIR = Path(__file__).resolve().parent
E2E_TIMEOUT = 1800  # seconds, per test (the fast tier's is in pyproject.toml)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            # the first test to need Ghost builds it (about 5 minutes cold, more under load)
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not Guest.timings:
        return
    boots = [t[1] for t in Guest.timings]
    downs = [t[2] for t in Guest.timings]
    terminalreporter.write_line(
        f"e2e guests: {len(boots)} booted; boot s min/median/max "
        f"{min(boots):.2f}/{statistics.median(boots):.2f}/{max(boots):.2f}; "
        f"shutdown s {min(downs):.2f}/{statistics.median(downs):.2f}/{max(downs):.2f}"
    )


def _require_guest() -> None:
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(f"no systemd guest on this machine: {reason}")


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Guest]:
    """A booted guest; tmp_path is bound read-write at the same path inside."""
    _require_guest()
    g = Guest(tmp_path / "guest", binds=[tmp_path])
    try:
        g.boot()
        yield g
    finally:
        g.shutdown()


@pytest.fixture(scope="module")
def shared_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """One booted guest for a whole module (tests must not depend on each other's units);
    its tmp dir (shared_guest.binds[0]) is bound read-write inside."""
    _require_guest()
    root = tmp_path_factory.mktemp("shared-guest")
    g = Guest(root / "guest", binds=[root])
    try:
        g.boot()
        yield g
    finally:
        g.shutdown()


@pytest.fixture
def guest_factory(tmp_path: Path) -> Iterator[Callable[..., Guest]]:
    """make_guest(binds=(), network=True, name="ghostagent-e2e") -> a booted Guest whose
    scratch is under tmp_path; every guest made is shut down at teardown."""
    _require_guest()
    made: list[Guest] = []

    def make_guest(binds: list[Path] | tuple[Path, ...] = (), network: bool = True,
                   name: str = "ghostagent-e2e") -> Guest:
        g = Guest(tmp_path / f"guest{len(made)}", binds=list(binds), name=name,
                  network=network)
        made.append(g)
        return g.boot()

    try:
        yield make_guest
    finally:
        errors = []
        for g in made:
            try:
                g.shutdown()
            except Exception as exc:  # noqa: BLE001 - shut every guest down, then report
                errors.append(exc)
        if errors:
            raise errors[0]
