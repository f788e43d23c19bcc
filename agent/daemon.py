"""`ghost-agent run`: the service loop. Poll on a schedule, deploy, keep systemd informed."""

from __future__ import annotations

import logging
import random
import signal
import threading

import schedule

from agent import clock, window
from agent.config import Config
from agent.cycle import Agent, Interrupted, spread_offset
from agent.errors import AgentError, TemporaryError
from agent.sdnotify import Heartbeat, notify, watchdog_interval

log = logging.getLogger("agent")
TICK = 1.0  # the loop wakes at least this often to answer signals and ping the watchdog
SPOOL_SECONDS = 5  # how often waiting notifications are offered to Slack again
SPOOL_BUDGET = 20.0  # the longest one delivery round may take
WATCH_SECONDS = 15  # how often the window opening and the fleet report's time are looked at


def cycle_budget(config: Config) -> float:
    """The longest one cycle may take before the watchdog should give up on it."""
    git = config.git.timeout_seconds * 4  # ls-remote, fetch, log, export
    restart = (config.ghost.restart_timeout_seconds + config.ghost.verify_seconds) * 2
    return git + config.deploy.build_timeout_seconds * max(1, len(config.deploy.build)) \
        + restart + 60


def run_service(config: Config, agent: Agent | None = None) -> int:
    stop = threading.Event()
    agent = agent or Agent.from_config(config, stop_requested=stop.is_set)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received; stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    heartbeat = Heartbeat(watchdog_interval()).start()
    budget = cycle_budget(config)

    def poll() -> None:
        if stop.is_set():
            return
        heartbeat.expect(budget)
        try:
            outcome = agent.once()  # it logs what it did
            notify(f"STATUS={outcome.message}")
        except Interrupted as exc:
            log.info("%s", exc.message)
        except TemporaryError as exc:
            log.warning("%s", exc.message)
            notify(f"STATUS=waiting: {exc.message}")
        except AgentError as exc:
            log.error("%s", exc.message)
            notify(f"STATUS=error: {exc.message}")

    def deliver_spool() -> None:
        heartbeat.expect(SPOOL_BUDGET + 30)
        agent.notifier.deliver(SPOOL_BUDGET)

    window_was_open = [window.decide(config.window, clock.now(),
                                      spread_offset(config.window)).open]

    def watch_window() -> None:
        """Poll the moment the window opens, not up to poll_seconds later."""
        is_open = window.decide(config.window, clock.now(), spread_offset(config.window)).open
        if is_open and not window_was_open[0]:
            log.info("the deploy window is open")
            poll()
        window_was_open[0] = is_open

    def fleet_report() -> None:
        heartbeat.expect(config.fleet.timeout_seconds * 2 + 60)
        try:
            daily.run_if_due(clock.now())
        except AgentError as exc:
            log.error("fleet report: %s", exc.message)

    scheduler = schedule.Scheduler()
    scheduler.every(config.git.poll_seconds).seconds.do(poll)
    # Messages that waited for Slack to come back; their own backoff decides what is due.
    scheduler.every(SPOOL_SECONDS).seconds.do(deliver_spool)
    if config.window:
        scheduler.every(WATCH_SECONDS).seconds.do(watch_window)
    if config.fleet and config.fleet.at:
        from agent.fleet_job import DailyReport

        daily = DailyReport(config.fleet, config.agent.state_dir, agent.notifier,
                            config.fleet.report_url)
        scheduler.every(WATCH_SECONDS).seconds.do(fleet_report)
    notify("READY=1")
    notify(f"STATUS=watching {config.site.flag} every {config.git.poll_seconds:g}s")
    log.info("watching %s for %s every %gs", config.site.name, config.site.flag,
             config.git.poll_seconds)
    poll()
    # A little jitter so a fleet started together does not poll the remote in step.
    jitter = min(1.0, config.git.poll_seconds * 0.1)
    while not stop.is_set():
        heartbeat.expect(TICK * 3 + jitter)
        wait = scheduler.idle_seconds
        stop.wait(max(0.0, min(TICK, (wait or 0) + random.uniform(0, jitter))))  # noqa: S311
        if not stop.is_set():
            scheduler.run_pending()
    notify("STOPPING=1")
    heartbeat.stop()
    log.info("stopped")
    return 0
