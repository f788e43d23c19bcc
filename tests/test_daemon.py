"""`ghost-agent run` speaks systemd's notify protocol, and `ghost-agent demo` works."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from tests.agentsite import agent_argv, page, read_messages, wait_for

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier


def test_run_reports_ready_status_and_pings_the_watchdog(host, git_remote, notify_socket):
    path, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 x")}, "B101: x")
    env = host.env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    agent = host.start("run", env=env)
    try:
        messages = read_messages(sock, 3.0)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    messages += read_messages(sock, 0.5)
    assert agent.returncode == 0
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=deployed dev1") for m in messages)
    assert messages.count("WATCHDOG=1") >= 5
    assert "STOPPING=1" in messages


def test_watchdog_pings_stop_when_the_loop_hangs(host, git_remote, notify_socket):
    path, sock = notify_socket
    git_remote.commit_and_push("dev1", {"index.html": page("B1 x")}, "B101: x")
    env = host.env() | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    agent = host.start("run", env=env)
    try:
        wait_for(lambda: host.get("/")[0] == 200, what="the deploy")
        agent.send_signal(signal.SIGSTOP)  # a hung process: no thread runs
        read_messages(sock, 0.5)  # drain what was sent before the stop
        assert "WATCHDOG=1" not in read_messages(sock, 1.5)
    finally:
        host.kill(agent)


def test_sigterm_during_a_deploy_finishes_it(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    host.systemctl.hang(True)
    agent = host.start("run")
    try:
        wait_for(lambda: host.restarts() == 1, what="the restart to begin")
        agent.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert agent.poll() is None  # still finishing the deploy
        host.systemctl.hang(False)
        _, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            host.kill(agent)
    assert agent.returncode == 0, stderr
    assert host.ci_cd()["deploys"][0]["outcome"] == "deployed"
    assert host.get("/") == (200, page("B1 one"))


def test_demo_runs_the_whole_story_in_under_a_minute():
    started = time.monotonic()
    result = subprocess.run([*agent_argv(), "demo"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    out = result.stdout
    assert "deployed dev1" in out
    assert "rolled_back dev1" in out
    assert "(the previous release is live again)" in out
    assert "GET / -> 200 '<html><body><h1>New headline for B102" in out
    assert "ci-cd.txt" in out and "served at" in out


# --------------------------------------------------------------------------- in process
# run_service(config, agent=...) with a stand-in Agent: its once() decides what a cycle does.


@pytest.fixture
def service_config(tmp_path, monkeypatch):
    """A valid config polling every 0.1 s; the signal handlers run_service installs are put
    back afterwards, and a SIGTERM after 30 s ends a test that would otherwise never stop."""
    from agent.config import load_config
    from tests.configs import MINIMAL_CONFIG

    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL_CONFIG.replace(
        "[git]\n", "[agent]\nstate_dir = \"" + str(tmp_path / "state") + "\"\n\n"
        "[git]\npoll_seconds = 0.1\n"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    guard = threading.Timer(30, os.kill, (os.getpid(), signal.SIGTERM))
    guard.start()
    try:
        yield load_config(path)
    finally:
        guard.cancel()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class StandInAgent:
    """What run_service uses of an Agent. `cycles` maps a call number (1, 2, ...) of once()
    to a function that does that cycle; the others are no-ops."""

    def __init__(self, cycles):
        self.cycles = cycles
        self.calls = 0
        self.problems: list[tuple[str, str]] = []
        self.notifier = SimpleNamespace(deliver=lambda budget=None: 0)

    def once(self, trigger: str = "poll"):
        from agent.cycle import Outcome

        self.calls += 1
        self.cycles.get(self.calls, lambda: None)()
        return Outcome(f"up to date (cycle {self.calls})")

    def report_problem(self, kind: str, message: str) -> None:
        self.problems.append((kind, message))

    def window_offset(self):
        from datetime import timedelta

        return timedelta(0)


def stop_the_service() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # run_service's own handler: stop after this step


def test_an_unexpected_error_in_a_cycle_is_reported_and_polling_goes_on(service_config,
                                                                         caplog):
    from agent.daemon import run_service

    def broken() -> None:
        raise ValueError("no such \n thing")

    fake = StandInAgent({1: broken, 4: stop_the_service})
    caplog.set_level(logging.DEBUG, logger="agent")
    assert run_service(service_config, agent=fake) == 0
    assert fake.calls == 4  # the loop went on after the error
    assert fake.problems == [("internal:ValueError", "poll: ValueError: no such thing")]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "unexpected error in poll (the service goes on): poll: ValueError: no such thing"]
    assert errors[0].exc_info is None  # one line at ERROR ...
    tracebacks = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].exc_info[0] is ValueError  # ... the rest


def test_known_errors_stay_one_line_and_are_not_reported_as_internal(service_config, caplog):
    from agent.daemon import run_service
    from agent.errors import DeployError, RemoteError

    def unreachable() -> None:
        raise RemoteError("git ls-remote: the remote hung up")

    def failed() -> None:
        raise DeployError("the build failed")

    fake = StandInAgent({1: unreachable, 2: failed, 3: stop_the_service})
    assert run_service(service_config, agent=fake) == 0
    assert fake.problems == []
    assert "git ls-remote: the remote hung up" in caplog.text
    assert "the build failed" in caplog.text
    assert "unexpected" not in caplog.text


def test_an_agent_without_report_problem_still_survives_an_unexpected_error(service_config,
                                                                           caplog):
    from agent.daemon import run_service

    def broken() -> None:
        raise KeyError("x")

    fake = StandInAgent({1: broken, 2: stop_the_service})
    fake.report_problem = None  # an Agent from before report_problem existed
    assert run_service(service_config, agent=fake) == 0
    assert fake.calls == 2
    assert "unexpected error in poll" in caplog.text


def test_watchdog_pings_stop_when_a_cycle_runs_past_its_budget(service_config, notify_socket,
                                                                monkeypatch):
    import agent.daemon

    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s while credited
    monkeypatch.setattr(agent.daemon, "cycle_budget", lambda config: 0.5)
    seen: dict[str, list[str]] = {}

    def hang() -> None:  # the main thread is stuck in this cycle for 1.5 s
        seen["within"] = read_messages(sock, 0.4)
        read_messages(sock, 0.3)  # the budget runs out
        seen["beyond"] = read_messages(sock, 0.8)

    fake = StandInAgent({2: hang, 3: stop_the_service})
    assert agent.daemon.run_service(service_config, agent=fake) == 0
    assert "WATCHDOG=1" in seen["within"]
    assert "WATCHDOG=1" not in seen["beyond"]


@pytest.mark.parametrize("stuck", [False, True], ids=["timers-run", "timers-stuck"])
def test_watchdog_pings_only_while_the_loop_runs_its_timers(service_config, notify_socket,
                                                            monkeypatch, stuck):
    """A loop that still wakes but no longer runs its jobs (as with `schedule` after the
    clock went back) must not keep the watchdog quiet: its pings stop."""
    import agent.daemon

    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setattr(agent.daemon, "TICK", 0.1)  # the same rule, ten times faster
    monkeypatch.setattr(agent.daemon, "LATE_GRACE", 0.3)
    if stuck:
        monkeypatch.setattr(agent.daemon.Timers, "run_due", lambda self: 0)
    timeline: list[tuple[float, str]] = []
    started = time.monotonic()

    def listen() -> None:
        while time.monotonic() - started < 2.0:
            timeline.extend((time.monotonic() - started, m) for m in read_messages(sock, 0.1))

    listener = threading.Thread(target=listen)
    listener.start()
    threading.Timer(2.0, stop_the_service).start()
    fake = StandInAgent({})
    assert agent.daemon.run_service(service_config, agent=fake) == 0
    listener.join()
    pings = [at for at, m in timeline if m == "WATCHDOG=1"]
    assert pings and pings[0] < 0.5
    if stuck:
        assert fake.calls == 1  # only the first poll, which runs before the loop
        assert max(pings) < 1.2  # due at 0.1 s, late by 0.3 s, then 0.3 s of credit left
    else:
        assert fake.calls >= 10
        assert max(pings) > 1.8


def test_notify_gives_up_on_a_socket_nobody_reads(notify_socket, monkeypatch):
    """A full notify queue must not stall the service: notify() gives up after SEND_TIMEOUT."""
    from agent.sdnotify import SEND_TIMEOUT, notify

    path, _ = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    started = time.monotonic()
    sent = 0
    while notify(f"STATUS=message {sent}") and sent < 100_000:
        sent += 1
    assert 0 < sent < 100_000  # the queue did fill up, and the last send gave up
    assert time.monotonic() - started < SEND_TIMEOUT + 5


def start_all(timers: list[threading.Timer]) -> None:
    for timer in timers:
        timer.start()


@pytest.mark.timeout(60)
def test_sigterm_at_any_instant_stops_the_loop(service_config, monkeypatch):
    """SIGTERM and SIGHUP land at random instants of a loop that never sleeps (its timers are
    stuck, so it waits 0 s each turn): every time, run_service ends. A handler that took a
    lock the interrupted main thread held (threading.Event.set inside Event.wait) waited for
    itself forever, about once in ten runs."""
    import random

    import agent.daemon

    monkeypatch.setattr(agent.daemon.Timers, "run_due", lambda self: 0)
    monkeypatch.setattr(agent.daemon.Timers, "idle_seconds", lambda self: -1.0)  # overdue
    monkeypatch.setattr(agent.daemon, "_reload", lambda service, path, stop: service)
    rng = random.Random(5150)  # noqa: S311 - not security
    for _ in range(150):
        timers = [threading.Timer(rng.uniform(0, 0.01), os.kill, (os.getpid(), signal.SIGHUP)),
                  threading.Timer(rng.uniform(0.005, 0.02), stop_the_service)]

        # from the first poll on: the handlers are in place
        fake = StandInAgent({1: functools.partial(start_all, timers)})
        assert agent.daemon.run_service(service_config, agent=fake) == 0
        for timer in timers:
            timer.join()


def test_run_service_puts_back_what_it_took_from_the_process(service_config):
    """After the loop: SIGTERM and SIGINT act as before (a second one during a slow shutdown
    is not swallowed) and no wake-up descriptor is left registered with the interpreter."""
    import agent.daemon

    def before(signum, frame):  # pragma: no cover - only compared
        pass

    signal.signal(signal.SIGTERM, before)
    signal.signal(signal.SIGINT, before)
    fake = StandInAgent({2: stop_the_service_through_the_loop})
    assert agent.daemon.run_service(service_config, agent=fake) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1


def stop_the_service_through_the_loop() -> None:
    handler = signal.getsignal(signal.SIGTERM)
    handler(signal.SIGTERM, None)  # run_service's own on_stop, as if the signal came
