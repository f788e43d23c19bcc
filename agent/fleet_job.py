"""The fleet report as a job: read the site list, fetch, summarize, write, tell Slack.

Used by `ghost-agent fleet` and, with [fleet] at = "05:00", by the service loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.config import FleetConfig
from agent.fleet import NEEDS_A_LOOK, load_previous, summarize, summarize_site
from agent.fleet_shards import fetch_sharded, process_count, worst_seconds
from agent.fleet_render import slack_summary, write_report
from agent.fleet_sites import read_sites
from agent.notifiers import Notifier
from agent.window import host_zone, opening_on

log = logging.getLogger("agent")
LATE_LIMIT = timedelta(hours=1)  # an agent started later than this after `at` waits a day
WRITE_SECONDS = 60  # the report's allowance besides reading: summary, files, Slack


def run_report(config: FleetConfig, *, now: datetime, notifier: Notifier | None = None,
               report_url: str | None = None,
               expect: Callable[[float], None] | None = None) -> dict:
    """Make the report; returns the summary. What a site answers never makes it raise.
    `expect`, if given, is told the seconds the report may take at most, once the site list
    is read (the service's watchdog: sdnotify.Heartbeat.expect)."""
    urls = read_sites(config)
    processes = process_count(len(urls), config.processes)
    if expect is not None:
        expect(worst_seconds(len(urls), processes, config.timeout_seconds) + WRITE_SECONDS)
    previous = load_previous(config.out_dir)
    # a slow site's deadline starts when a worker takes it up: started last, it would hold
    # the report for its whole timeout after the rest, so last time's slowest go first
    order = slowest_first(urls, previous)
    # each document is reduced to its line of the report as soon as it is read
    # (of each document only its head: the keys before "deploys" and its newest record)
    fetched = fetch_sharded([urls[i] for i in order], config.timeout_seconds, summarize_site,
                            processes=processes, head_only=True)
    sites: list = [None] * len(urls)
    for i, site in zip(order, fetched, strict=True):
        sites[i] = site  # back in the list's order: the report does not depend on timing
    summary = summarize(sites, now, previous=previous)
    if config.out_dir:
        write_report(config.out_dir, summary)
    if config.slack and notifier is not None:
        notifier.send(slack_summary(summary, report_url), "fleet report")
    totals = summary.get("totals", {})
    log.info("fleet report: %d sites, read by %d process%s; %s", len(urls), processes,
             "" if processes == 1 else "es",
             ", ".join(f"{k} {v}" for k, v in totals.items() if v) or "nothing to say")
    return summary


def slowest_first(urls: list[str], previous: dict | None) -> list[int]:
    """Indices of `urls`, in the order to fetch them: sites new since the `previous` report
    first, then by the time they took then (its "ms"), slowest first; ties keep list order."""
    took: dict[str, float] = {}
    if isinstance(previous, dict):
        groups = previous.get("groups") if isinstance(previous.get("groups"), list) else []
        entries = [s for g in groups if isinstance(g, dict) and isinstance(g.get("sites"), list)
                   for s in g["sites"]]
        if isinstance(previous.get("unreachable"), list):
            entries += previous["unreachable"]
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("url"), str) \
                    and isinstance(entry.get("ms"), (int, float)) \
                    and math.isfinite(entry["ms"]):
                took[entry["url"]] = float(entry["ms"])
    return sorted(range(len(urls)), key=lambda i: -took.get(urls[i], math.inf))


def needs_a_look(summary: dict) -> bool:
    totals = summary.get("totals", {})
    return any(totals.get(state) for state in NEEDS_A_LOOK)


class DailyReport:
    """Runs the report once a day at [fleet] at, local time of [fleet] timezone.

    As the deploy window does (agent.window.opening_on): on the day a daylight-saving change
    skips that time, the report runs at the first minute that exists; on the day the time
    happens twice, the first time; LATE_LIMIT is real time from then. The day of the last
    run is kept in state_dir, so a restart does not send it twice.
    """

    def __init__(self, config: FleetConfig, state_dir: Path, notifier: Notifier,
                 report_url: str | None = None,
                 expect: Callable[[float], None] | None = None):
        self.config = config
        self.expect = expect  # told how long the report may take (run_report's `expect`)
        self.marker = state_dir / "fleet-last-run"
        self.notifier = notifier
        self.report_url = report_url
        self.zone = ZoneInfo(config.timezone) if config.timezone else host_zone()

    def due(self, now: datetime) -> bool:
        if self.config.at is None:
            return False
        day = now.astimezone(self.zone).date()
        start = opening_on(day, self.config.at, self.zone)
        if not start <= now < start + LATE_LIMIT:
            return False
        try:
            return self.marker.read_text().strip() != day.isoformat()
        except OSError:
            return True

    def run_if_due(self, now: datetime) -> dict | None:
        if not self.due(now):
            return None
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(now.astimezone(self.zone).date().isoformat() + "\n")
        return run_report(self.config, now=now, notifier=self.notifier,
                          report_url=self.report_url, expect=self.expect)
