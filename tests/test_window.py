"""agent.window: the deploy window, with `now` passed in, across midnight and DST days."""

from __future__ import annotations

import time as time_module
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from agent.config import WindowConfig
from agent.window import decide, next_opening, opening_on

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
WIN = WindowConfig(start=time(3, 30), minutes=60, timezone="Europe/Paris")


def paris(y, mo, d, h, mi) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=PARIS)


def utc(y, mo, d, h, mi) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def test_no_window_is_always_open():
    decision = decide(None, utc(2026, 6, 1, 12, 0))
    assert decision.open
    assert decision.reason is None


@pytest.mark.parametrize(
    ("now", "is_open"),
    [
        (paris(2026, 6, 1, 3, 29), False),
        (paris(2026, 6, 1, 3, 30), True),
        (paris(2026, 6, 1, 4, 29), True),
        (paris(2026, 6, 1, 4, 30), False),
        (paris(2026, 6, 1, 15, 0), False),
    ],
)
def test_inside_and_outside_the_window(now, is_open):
    assert decide(WIN, now).open is is_open


def test_open_window_reports_its_bounds():
    decision = decide(WIN, paris(2026, 6, 1, 4, 0))
    assert decision.opens_at == paris(2026, 6, 1, 3, 30)
    assert decision.closes_at == paris(2026, 6, 1, 4, 30)


def test_now_in_another_zone_is_compared_as_an_instant():
    # 01:45 UTC is 03:45 in Paris (summer time): open, although 01:45 is not 03:30..04:30
    assert decide(WIN, utc(2026, 6, 1, 1, 45)).open
    assert not decide(WIN, utc(2026, 6, 1, 3, 45)).open


def test_closed_window_says_why_and_when():
    decision = decide(WIN, paris(2026, 6, 1, 10, 0))
    assert not decision.open
    assert decision.opens_at == paris(2026, 6, 2, 3, 30)
    assert decision.reason is not None and "2026-06-02T03:30+02:00" in decision.reason


def test_window_opened_yesterday_still_open_after_midnight():
    late = WindowConfig(start=time(23, 30), minutes=120, timezone="Europe/Paris")
    decision = decide(late, paris(2026, 6, 2, 0, 30))
    assert decision.open
    assert decision.opens_at == paris(2026, 6, 1, 23, 30)
    assert decision.closes_at == paris(2026, 6, 2, 1, 30)
    assert not decide(late, paris(2026, 6, 2, 1, 30)).open
    assert decide(late, paris(2026, 6, 1, 23, 59)).open


def test_next_opening_after_todays_window_closed_is_tomorrow():
    assert next_opening(WIN, paris(2026, 6, 1, 4, 31)) == paris(2026, 6, 2, 3, 30)
    assert next_opening(WIN, paris(2026, 6, 1, 3, 0)) == paris(2026, 6, 1, 3, 30)


def test_offset_shifts_the_window():
    later = timedelta(minutes=20)
    assert not decide(WIN, paris(2026, 6, 1, 3, 40), later).open
    assert decide(WIN, paris(2026, 6, 1, 4, 40), later).open


# -- daylight saving ------------------------------------------------------------------------


def test_spring_forward_missing_start_opens_at_first_real_minute():
    # Europe/Paris 2026-03-29: 02:00 CET jumps to 03:00 CEST, 02:30 does not exist
    opens = opening_on(date(2026, 3, 29), time(2, 30), PARIS)
    assert opens == utc(2026, 3, 29, 1, 0)
    assert opens.astimezone(PARIS).strftime("%H:%M %Z") == "03:00 CEST"


def test_spring_forward_decide_and_next_opening():
    night = WindowConfig(start=time(2, 30), minutes=60, timezone="Europe/Paris")
    assert next_opening(night, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert decide(night, utc(2026, 3, 29, 1, 30)).open  # 03:30 CEST
    assert not decide(night, utc(2026, 3, 29, 2, 0)).open  # 04:00 CEST: one hour later


def test_fall_back_repeated_start_opens_once_first_occurrence():
    # Europe/Paris 2026-10-25: 03:00 CEST falls back to 02:00 CET, 02:30 happens twice
    night = WindowConfig(start=time(2, 30), minutes=60, timezone="Europe/Paris")
    opens = opening_on(date(2026, 10, 25), time(2, 30), PARIS)
    assert opens == utc(2026, 10, 25, 0, 30)
    assert opens.astimezone(PARIS).strftime("%H:%M %Z") == "02:30 CEST"
    assert decide(night, utc(2026, 10, 25, 0, 45)).open
    assert decide(night, utc(2026, 10, 25, 1, 15)).open  # 02:15 CET, within the hour
    second = utc(2026, 10, 25, 1, 30)  # 02:30 CET, the second 02:30
    decision = decide(night, second)
    assert not decision.open
    assert decision.opens_at == utc(2026, 10, 26, 1, 30)  # tomorrow 02:30 CET


def test_new_york_spring_forward():
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT
    assert opening_on(date(2026, 3, 8), time(2, 30), NEW_YORK) == utc(2026, 3, 8, 7, 0)
    assert opening_on(date(2026, 3, 8), time(3, 30), NEW_YORK) == utc(2026, 3, 8, 7, 30)


def test_new_york_fall_back():
    # 2026-11-01: 02:00 EDT falls back to 01:00 EST, 01:30 happens twice
    assert opening_on(date(2026, 11, 1), time(1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)
    win = WindowConfig(start=time(1, 30), minutes=30, timezone="America/New_York")
    assert decide(win, utc(2026, 11, 1, 5, 45)).open
    assert not decide(win, utc(2026, 11, 1, 6, 45)).open  # the second 01:45
    assert next_opening(win, utc(2026, 11, 1, 6, 0)) == utc(2026, 11, 2, 6, 30)


def test_window_length_counts_real_minutes_across_dst():
    # opens 01:30 EDT on the fall-back day; 120 real minutes later it is 02:30 EST
    win = WindowConfig(start=time(1, 30), minutes=120, timezone="America/New_York")
    decision = decide(win, utc(2026, 11, 1, 6, 0))
    assert decision.open
    assert decision.closes_at - decision.opens_at == timedelta(minutes=120)
    assert decision.closes_at == utc(2026, 11, 1, 7, 30)


# -- host zone -------------------------------------------------------------------------------


@pytest.fixture
def tz_env(monkeypatch):
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time_module.tzset()

    yield set_tz
    monkeypatch.undo()
    time_module.tzset()


def test_no_timezone_uses_the_host_zone(tz_env):
    tz_env("Asia/Tokyo")  # 03:30 in Tokyo is 18:30 UTC the day before
    hostwin = WindowConfig(start=time(3, 30), minutes=60, timezone=None)
    assert decide(hostwin, utc(2026, 6, 1, 18, 45)).open
    assert not decide(hostwin, utc(2026, 6, 2, 1, 45)).open
    tz_env("America/New_York")  # 03:30 EDT is 07:30 UTC
    # The zone is resolved once, when the config loads: a config loaded now follows New York.
    assert decide(hostwin, utc(2026, 6, 1, 18, 45)).open
    hostwin = WindowConfig(start=time(3, 30), minutes=60, timezone=None)
    assert decide(hostwin, utc(2026, 6, 2, 7, 45)).open
    assert not decide(hostwin, utc(2026, 6, 1, 18, 45)).open


def test_the_zone_files_are_read_once_when_the_config_loads(monkeypatch):
    import agent.window

    window = WindowConfig(start=time(3, 30), minutes=60, timezone="Europe/Paris")
    monkeypatch.setattr(agent.window, "ZoneInfo", None)  # any lookup now would fail
    monkeypatch.setattr(agent.window, "host_zone", None)
    for hour in range(24):
        decide(window, utc(2026, 10, 25, hour, 0))
