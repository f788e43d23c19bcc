"""agent.fleet_job.DailyReport: `[fleet] at` on the days daylight saving time changes.

Europe/Paris in 2026: on 29 March 02:00-02:59 does not exist (CET -> CEST at 01:00 UTC); on
25 October 02:00-02:59 happens twice (CEST 00:00-00:59 UTC, then CET 01:00-01:59 UTC). The
report runs as the deploy window opens (agent.window.opening_on): at the first minute that
exists, and at the first of two, with its hour of lateness counted in real time.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest

from agent import fleet_job
from agent.config import FleetConfig
from agent.fleet_job import DailyReport

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
