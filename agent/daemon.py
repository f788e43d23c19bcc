"""`ghost-agent run`: the service loop. Poll on timers, deploy, keep systemd informed.

Timers count seconds of the monotonic clock, which neither a DST change nor a step of the
wall clock moves. What depends on the time of day (the window, the fleet report's hour) is
decided on aware UTC time from agent.clock.now().
"""

from __future__ import annotations

import functools
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import clock, window
from agent.config import Config, load_config
from agent.cycle import Agent, Interrupted
from agent.errors import AgentError, TemporaryError
from agent.sdnotify import Heartbeat, notify, watchdog_interval
from agent.text import cut, one_line
from agent.wakeup import ServiceFlags, Wakeup

log = logging.getLogger("agent")
TICK = 1.0  # seconds: the loop wakes at least this often to answer signals and feed the watchdog
LATE_GRACE = TICK * 3  # seconds a job may be overdue before the loop counts as stuck
SPOOL_SECONDS = 5  # how often waiting notifications are offered to Slack again
SPOOL_BUDGET = 20.0  # the longest one delivery round may take, in seconds
WATCH_SECONDS = 15  # how often the window opening and the fleet report's time are looked at
RELOAD_BUDGET = 60.0  # seconds to read the config again and build the new agent
# Webhook polls start at least this far apart: the calls that come in between (a burst, a
# forge's retries) make one more poll when the gap is over, so any burst up to that long makes
# one or two polls.
WEBHOOK_GAP = 5.0  # seconds


def cycle_budget(config: Config) -> float:
    """The longest one cycle may take, in seconds, before the watchdog should give up on it."""
    git = config.git.timeout_seconds * 4  # ls-remote, fetch, log, export
    restart = (config.ghost.restart_timeout_seconds + config.ghost.verify_seconds) * 2
    return git + config.deploy.build_timeout_seconds * max(1, len(config.deploy.build)) \
        + restart + 60


@dataclass
class _Job:
    period: float  # seconds between the end of one run and the start of the next
    jitter: float  # up to this many seconds more, drawn afresh each time
    run: Callable[[], None]
    due: float  # monotonic seconds


class Timers:
    """Jobs that run every so many seconds of a monotonic clock (time.monotonic by default).

    Not the `schedule` package: it reads naive local wall time (datetime.now()) and takes no
    other clock, so when local time went back (the autumn DST change, a step of the system
    clock) no job ran until the wall clock had caught up again.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._clock = monotonic
        self._jobs: list[_Job] = []

    def every(self, seconds: float, job: Callable[[], None], jitter: float = 0.0) -> None:
        """Run job() every `seconds` (plus up to `jitter`); the first run is one period away."""
        self._jobs.append(_Job(seconds, jitter, job, self._next(seconds, jitter)))

    def run_due(self) -> int:
        """Run each job that is due, once, most overdue first; returns how many ran."""
        ran = 0
        for job in sorted(self._jobs, key=lambda j: j.due):
            if self._clock() >= job.due:
                try:
                    job.run()
                finally:  # even a job that raised waits its period: no tight loop
                    job.due = self._next(job.period, job.jitter)
                ran += 1
        return ran

    def idle_seconds(self) -> float:
        """Seconds until the next job is due: negative when one is overdue, inf without jobs."""
        return min((job.due for job in self._jobs), default=math.inf) - self._clock()

    def late_seconds(self) -> float:
        """How long the most overdue job has been due, in seconds (0 when none is)."""
        return max(0.0, -self.idle_seconds())

    def _next(self, period: float, jitter: float) -> float:
        return self._clock() + period + random.uniform(0, jitter)  # noqa: S311 - not security


class _Service:
    """What one config runs: its agent, its timers, its watchdog budgets. A reload builds a
    new one from the new config."""

    def __init__(self, config: Config, agent: Agent, heartbeat: Heartbeat):
        self.config = config
        self.agent = agent
        self.heartbeat = heartbeat
        self.budget = cycle_budget(config)
        self.status_note = ""  # a lasting remark added to every STATUS= (a failed reload)
        self.timers = Timers()
        # A little jitter so a fleet started together does not poll the remote in step.
        self.timers.every(config.git.poll_seconds, self.poll,
                          jitter=min(1.0, config.git.poll_seconds * 0.1))
        # Messages that waited for Slack to come back; their own backoff decides what is due.
        self.timers.every(SPOOL_SECONDS, functools.partial(
            self.guarded, "slack spool", self._deliver_spool, SPOOL_BUDGET + 30))
        if config.window:
            self._window_was_open = self._window_is_open()
            self.timers.every(WATCH_SECONDS, functools.partial(
                self.guarded, "window watch", self._watch_window, TICK * 3))
        if config.fleet and config.fleet.at:
            from agent.fleet_job import DailyReport

            # a long site list may take longer than the budget below: the report tells the
            # watchdog how long it may take, once it knows how many sites there are
            self._daily = DailyReport(config.fleet, config.agent.state_dir, agent.notifier,
                                      config.fleet.report_url, expect=heartbeat.expect)
            self.timers.every(WATCH_SECONDS, functools.partial(
                self.guarded, "fleet report", self._fleet_report,
                config.fleet.timeout_seconds * 2 + 60))

    def announce(self) -> None:
        self.status(f"watching {self.config.site.flag} every {self.config.git.poll_seconds:g}s")
        log.info("watching %s for %s every %gs", self.config.site.name, self.config.site.flag,
                 self.config.git.poll_seconds)

    def status(self, text: str) -> None:
        notify(f"STATUS={text}{self.status_note}")

    def poll(self, trigger: str = "poll") -> None:
        self.guarded("poll", functools.partial(self._poll, trigger), self.budget)

    def guarded(self, name: str, job: Callable[[], None], budget: float) -> None:
        """Run one job within `budget` seconds of watchdog credit. An exception that is not a
        known AgentError is a bug: report it and go on, so one bad cycle never stops deploys."""
        self.heartbeat.expect(budget)
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            kind = f"internal:{type(exc).__name__}"
            message = cut(one_line(f"{name}: {type(exc).__name__}: {exc}"), 300)
            log.error("unexpected error in %s (the service goes on): %s", name, message)
            log.debug("the traceback of that error", exc_info=True)
            self.status(f"error: {message}")
            # Agent.report_problem records it for `status` and tells Slack once per kind.
            report = getattr(self.agent, "report_problem", None)
            try:
                if report is not None:
                    report(kind, message)
            except Exception as again:  # noqa: BLE001 - the report must not stop us either
                log.warning("could not record that error: %s", one_line(again))

    def _poll(self, trigger: str = "poll") -> None:
        try:
            # it logs what it did; "webhook": a deploy it leads to says so
            outcome = self.agent.once(trigger) if trigger != "poll" else self.agent.once()
            self.status(outcome.message)
        except Interrupted as exc:
            log.info("%s", exc.message)
        except TemporaryError as exc:
            log.warning("%s", exc.message)
            self.status(f"waiting: {exc.message}")
        except AgentError as exc:
            log.error("%s", exc.message)
            self.status(f"error: {exc.message}")

    def _deliver_spool(self) -> None:
        self.agent.notifier.deliver(SPOOL_BUDGET)

    def _window_is_open(self) -> bool:
        return window.decide(self.config.window, clock.now(), self.agent.window_offset()).open

    def _watch_window(self) -> None:
        """Poll the moment the window opens, not up to poll_seconds later."""
        is_open = self._window_is_open()
        if is_open and not self._window_was_open:
            log.info("the deploy window is open")
            self.poll()
        self._window_was_open = is_open

    def _fleet_report(self) -> None:
        try:
            self._daily.run_if_due(clock.now())
        except AgentError as exc:
            log.error("fleet report: %s", exc.message)


def _reload(service: _Service, path: Path, stop_requested: Callable[[], bool]) -> _Service:
    """SIGHUP: read the config at `path` again and poll at once. A config that has become
    invalid keeps the one in use, and says so in the log and in every STATUS= until fixed."""
    # As sd_notify(3) asks of a reload: RELOADING=1 with the monotonic time, then READY=1.
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    service.heartbeat.expect(RELOAD_BUDGET)
    log.info("SIGHUP received; reloading %s", path)
    try:
        config = load_config(path)
        new = _Service(config, Agent.from_config(config, stop_requested=stop_requested),
                       service.heartbeat)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong, keep deploying with the old
        problem = cut(one_line(exc.message if isinstance(exc, AgentError) else
                               f"{type(exc).__name__}: {exc}"), 300)
        log.error("reload failed, still using the config loaded before: %s", problem)
        service.status_note = f" (reload failed, old config in use: {cut(problem, 120)})"
        notify("READY=1")
        service.status(f"watching {service.config.site.flag}")
        service.poll()
        return service
    for warning in config.warnings:
        log.warning("%s", warning)
    log.info("reloaded %s", path)
    notify("READY=1")
    new.announce()
    new.poll()
    return new


def run_service(config: Config, agent: Agent | None = None,
                config_path: Path | str | None = None) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status (0).

    SIGHUP reads the config again from `config_path` (default: the file `config` came from)
    and polls at once. `agent` replaces the one built from `config` (tests).
    """
    # The handlers take no lock (see agent/wakeup.py): flags and a byte in a pipe.
    flags, wakeup = ServiceFlags(), Wakeup()
    pushed = threading.Event()  # a valid webhook call came in: poll at once (coalesced)

    def on_push(_forge: str) -> None:  # in the webhook's threads
        pushed.set()
        wakeup.set()

    def on_stop(signum: int, _frame: object) -> None:
        flags.stop = signal.Signals(signum).name
        wakeup.set()

    def on_hup(_signum: int, _frame: object) -> None:
        flags.reload = True  # handled by the loop, after the step under way
        wakeup.set()

    def stop_requested() -> bool:
        return flags.stop is not None

    # Put back at the end: a second SIGTERM or SIGINT during a slow shutdown acts as it did
    # before `run`. (SIGHUP keeps on_hup, which is harmless then: a late reload does nothing.)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    # A signal the kernel hands to another thread (the webhook's, the watchdog's) runs its
    # handler only when the main thread wakes: the interpreter also writes to the pipe at once.
    saved_fd = signal.set_wakeup_fd(wakeup.fd, warn_on_full_buffer=False)
    path = Path(config_path) if config_path else config.path
    heartbeat = Heartbeat(watchdog_interval())
    hook = None
    try:
        heartbeat.start()
        service = _Service(config, agent or Agent.from_config(
            config, stop_requested=stop_requested), heartbeat)
        hook = _start_webhook(config, on_push)
        notify("READY=1")
        service.announce()
        service.poll()
        next_webhook_poll = 0.0  # monotonic seconds: WEBHOOK_GAP after the last webhook poll
        while not stop_requested():
            # Credit the watchdog only while the timers keep up: a loop that still wakes but
            # no longer runs its jobs must be restarted, not kept alive by its own pings.
            if service.timers.late_seconds() <= LATE_GRACE:
                heartbeat.expect(TICK * 3)
            sleep = min(TICK, service.timers.idle_seconds())
            if pushed.is_set():
                sleep = min(sleep, next_webhook_poll - time.monotonic())
            wakeup.wait(max(0.0, sleep))
            if stop_requested():
                break
            if flags.reload:
                flags.reload = False
                service = _reload(service, path, stop_requested)
                if _webhook_settings(service.config) != _webhook_settings(config):
                    _stop_webhook(hook)
                    config, hook = service.config, _start_webhook(service.config, on_push)
            if pushed.is_set() and time.monotonic() >= next_webhook_poll:
                pushed.clear()  # calls from now on make one more poll, after the gap
                next_webhook_poll = time.monotonic() + WEBHOOK_GAP
                service.poll("webhook")
            service.timers.run_due()
        log.info("%s received; stopping", flags.stop)
    finally:
        _stop_webhook(hook)
        notify("STOPPING=1")
        heartbeat.stop()
        signal.set_wakeup_fd(saved_fd)
        for sig, handler in saved.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)
        wakeup.close()
    log.info("stopped")
    return 0


def _webhook_settings(config: Config) -> tuple | None:
    hook = getattr(config, "webhook", None)
    return None if hook is None else (hook.listen_host, hook.listen_port, hook.path,
                                      hook.secret, hook.rate_per_minute)


def _start_webhook(config: Config, on_push: Callable[[str], None]):
    """The [webhook] listener, or None. A port that cannot be had is logged and the service
    goes on polling: the webhook only makes deploys sooner."""
    hook = getattr(config, "webhook", None)
    if hook is None:
        return None
    from agent.webhook import WebhookListener

    try:
        return WebhookListener(hook.listen_host, hook.listen_port, hook.path, hook.secret,
                               on_push, rate_per_minute=hook.rate_per_minute).start()
    except OSError as exc:
        log.error("webhook: cannot listen on %s:%d (%s); polling goes on every %gs",
                  hook.listen_host, hook.listen_port, exc.strerror or exc,
                  config.git.poll_seconds)
        return None


def _stop_webhook(hook) -> None:
    if hook is not None:
        hook.stop()
