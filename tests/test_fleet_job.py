"""agent.fleet_job.DailyReport: `[fleet] at` on the days daylight saving time changes.

Europe/Paris in 2026: on 29 March 02:00-02:59 does not exist (CET -> CEST at 01:00 UTC); on
25 October 02:00-02:59 happens twice (CEST 00:00-00:59 UTC, then CET 01:00-01:59 UTC). The
report runs as the deploy window opens (agent.window.opening_on): at the first minute that
exists, and at the first of two, with its hour of lateness counted in real time.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import pytest

from agent import fleet_job
from agent.config import FleetConfig
from agent.fleet_job import DailyReport
from tests.configs import MINIMAL_CONFIG
from tests.test_fleet import web  # noqa: F401, F811 - a fixture

UTC = timezone.utc


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def runs(tmp_path, monkeypatch, at: time, start: datetime, end: datetime) -> list[datetime]:
    """When the report ran, for a service that looks every minute from `start` to `end`."""
    ran: list[datetime] = []
    monkeypatch.setattr(fleet_job, "run_report",
                        lambda config, *, now, **_: ran.append(now) or {})
    report = DailyReport(FleetConfig(sites=("http://127.0.0.1:9",), at=at,
                                     timezone="Europe/Paris"), tmp_path / "state",
                         notifier=None)  # type: ignore[arg-type]
    now = start
    while now < end:
        report.run_if_due(now)
        now += timedelta(minutes=1)
    return ran


@pytest.mark.parametrize(("at", "start", "want"), [
    # 02:00 does not exist: 03:00 CEST is the first minute that does
    (time(2, 0), utc(3, 28, 22), [utc(3, 29, 1)]),
    (time(2, 30), utc(3, 28, 22), [utc(3, 29, 1)]),
    # an agent started 40 minutes after that still runs it: the hour is real time
    (time(2, 30), utc(3, 29, 1, 40), [utc(3, 29, 1, 40)]),
    # and one started more than an hour after it waits for tomorrow
    (time(2, 0), utc(3, 29, 2, 1), []),
], ids=["02:00", "02:30", "02:30-started-late", "02:00-too-late"])
def test_spring_forward_runs_once_at_the_first_minute_that_exists(tmp_path, monkeypatch, at,
                                                                   start, want):
    assert runs(tmp_path, monkeypatch, at, start, utc(3, 29, 22)) == want


@pytest.mark.parametrize(("start", "want"), [
    # the first 02:30 (CEST), and not again at the second (CET)
    (utc(10, 24, 22), [utc(10, 25, 0, 30)]),
    # started at 02:00 CET, half an hour after the first 02:30: it runs at once
    (utc(10, 25, 1), [utc(10, 25, 1)]),
    # started at 02:45 CET, 75 minutes after the first 02:30: too late, tomorrow
    (utc(10, 25, 1, 45), []),
], ids=["whole-day", "started-in-the-repeat", "too-late"])
def test_autumn_repeat_runs_once_from_the_first_occurrence(tmp_path, monkeypatch, start, want):
    assert runs(tmp_path, monkeypatch, time(2, 30), start, utc(10, 25, 22)) == want


def test_the_next_day_runs_again_at_its_own_time(tmp_path, monkeypatch):
    ran = runs(tmp_path, monkeypatch, time(2, 0), utc(3, 28, 0), utc(3, 31, 0))
    assert ran == [utc(3, 28, 1), utc(3, 29, 1), utc(3, 30, 0)]  # CET, the gap, CEST


# --------------------------------------------------------------------------- fetch order


def test_last_times_slowest_sites_are_fetched_first():
    """A slow site's deadline starts when a worker takes it up: started last, it would hold
    the report for its whole timeout after the rest. New sites may be slow too."""
    def line(url: str, ms: object) -> dict:
        return {"url": url, "state": "updated", "ms": ms}

    previous = {"kind": "fleet", "groups": [
        {"flag": "prod*", "sites": [line("https://a", 40), line("https://b", 2900),
                                    line("https://c", 40), "odd", line("https://d", "x")]},
        "odd"], "unreachable": [line("https://e", 3000), line("https://f", float("nan"))]}
    urls = ["https://a", "https://b", "https://c", "https://new", "https://e", "https://f"]
    order = fleet_job.slowest_first(urls, previous)
    assert [urls[i] for i in order] == ["https://new", "https://f", "https://e", "https://b",
                                        "https://a", "https://c"]
    # the first report keeps the list's order
    assert fleet_job.slowest_first(urls, None) == list(range(6))


def test_the_report_keeps_the_lists_order_whatever_the_fetch_order(tmp_path, monkeypatch):
    """Equal versions written two ways ("1.3.22", "1-3-22"): the group's newest is shown as
    the first site of the list writes it, whichever was fetched first."""
    from agent import fleet
    from agent.fleet_fetch import SiteAnswer
    from tests.test_fleet import NOW, site_doc

    docs = {"https://a": site_doc("a", "1-3-22"), "https://b": site_doc("b", "1.3.22")}
    fetched: list[list[str]] = []

    def fetch_sharded(urls, timeout, digest, *, processes, head_only):
        fetched.append(list(urls))
        return [digest(SiteAnswer(url, docs[url], None, 5)) for url in urls]

    monkeypatch.setattr(fleet_job, "fetch_sharded", fetch_sharded)
    out = tmp_path / "out"
    out.mkdir()
    previous = fleet.summarize([SiteAnswer("https://a", docs["https://a"], None, 5),
                                SiteAnswer("https://b", docs["https://b"], None, 900)], NOW)
    (out / "ci-cd.json").write_text(json.dumps(previous))
    config = FleetConfig(sites=("https://a", "https://b"), out_dir=out)
    summary = fleet_job.run_report(config, now=NOW)
    assert fetched == [["https://b", "https://a"]]
    assert summary["groups"][0]["newest_version"] == "1-3-22"


def test_fleet_leaves_a_host_agent_toml_it_cannot_read_alone(tmp_path, monkeypatch, web):  # noqa: F811
    """The report's user on a control host where the .deb installed /etc/ghost-agent/
    agent.toml (root:ghost-agent 640): not named, unreadable, it is not the fleet's config.
    (Readability is the one thing made up here: the tests may run as root, who reads all.)"""
    from agent import cli
    from tests.test_fleet import site_doc

    host_config = tmp_path / "agent.toml"
    host_config.write_text("this is the host's agent, not the fleet's [")
    monkeypatch.delenv("GHOST_AGENT_CONFIG", raising=False)
    monkeypatch.setattr(cli, "config_path", lambda named: Path(named) if named else host_config)
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if Path(path) == host_config
                        else real_access(path, mode))
    sites = tmp_path / "sites"
    sites.write_text(web.json_site("a", site_doc("a", "1.3.22")) + "\n")
    assert cli.main(["fleet", "--sites", str(sites), "--out", str(tmp_path / "out")]) in (0, 1)
    assert (tmp_path / "out" / "ci-cd.json").is_file()
    # named, the same file is read (and its error said)
    assert cli.main(["fleet", "--config", str(host_config), "--sites", str(sites)]) == 78


def test_the_service_s_watchdog_is_told_how_long_a_long_report_may_take(tmp_path):
    """A list of 3,000 sites may take far longer than the fleet job's first budget
    (timeout * 2 + 60 s): once the list is read, the report tells the service's watchdog
    its upper bound (agent.fleet_shards.worst_seconds), before it fetches anything."""
    from types import SimpleNamespace

    from agent import daemon
    from agent.config import load_config
    from agent.fleet_shards import process_count, worst_seconds
    from tests.test_daemon import StandInAgent
    from tests.test_fleet import closed_port_url

    sites = tmp_path / "sites"
    closed = closed_port_url()
    sites.write_text("".join(f"{closed}/s{n}\n" for n in range(3000)))
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL_CONFIG.replace("[git]\n", f'[agent]\nstate_dir = "{tmp_path}/s"\n\n'
                                           "[git]\n")
                    + f'\n[fleet]\nsites_file = "{sites}"\nout_dir = "{tmp_path}/out"\n'
                      'at = "05:00"\ntimezone = "UTC"\ntimeout_seconds = 1\nprocesses = 1\n')
    told: list[float] = []
    service = daemon._Service(load_config(path), StandInAgent({}),
                              SimpleNamespace(expect=told.append))
    summary = service._daily.run_if_due(utc(11, 30, 5, 1))
    assert summary["totals"]["unreachable"] == 3000
    bound = worst_seconds(3000, process_count(3000, 1), 1)
    assert told == [bound + fleet_job.WRITE_SECONDS]
    assert told[0] > 1 * 2 + 60  # more than the job's first budget
