"""`ghost-agent run` keeps polling whatever the wall clock does (issue #9, class 5).

The autumn DST change (03:00 CEST becomes 02:00 CET) and any step of the system clock must
not stop the service's timers. Black-box tests run the real command under libfaketime, whose
offset is read from a file the test rewrites while the agent runs.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.daemon import Timers
from tests.agentsite import page, wait_for
from tests.faketime import library

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier

AUTUMN_CHANGE = datetime(2026, 10, 25, 1, 0, tzinfo=timezone.utc)  # Paris: 03:00 CEST -> 02:00 CET
STEP_SECONDS = 2.5  # enough for libfaketime (it reads the file again each second) and the loop


# --------------------------------------------------------------------------- the timer itself


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_timers_run_each_job_by_its_period_of_the_monotonic_clock():
    mono = FakeMonotonic()
    timers = Timers(mono)
    ran: list[str] = []
    timers.every(10, lambda: ran.append("poll"))
    timers.every(15, lambda: ran.append("watch"))
    assert timers.idle_seconds() == 10
    assert timers.run_due() == 0 and ran == []
    mono.now += 10
    assert timers.run_due() == 1 and ran == ["poll"]
    assert timers.idle_seconds() == 5  # watch is due 15 s after the start
    mono.now += 40  # a long stall: each overdue job runs once, most overdue first
    assert timers.late_seconds() == 35
    assert timers.run_due() == 2 and ran == ["poll", "watch", "poll"]
    assert timers.late_seconds() == 0 and timers.idle_seconds() == 10


def test_a_job_that_raises_still_waits_its_period():
    mono = FakeMonotonic()
    timers = Timers(mono)

    def broken() -> None:
        raise KeyError("x")

    timers.every(5, broken)
    mono.now += 5
    with pytest.raises(KeyError):
        timers.run_due()
    assert timers.idle_seconds() == 5  # not due again at once: no tight loop


def test_timers_never_read_the_wall_clock(monkeypatch):
    """With the default clock, wall time jumping by an hour either way changes nothing."""
    timers = Timers()
    timers.every(0.05, lambda: None)
    for step in (-3600.0, 3600.0):
        monkeypatch.setattr(time, "time", lambda step=step: 1_800_000_000.0 + step)
        assert 0 < timers.idle_seconds() <= 0.05
    time.sleep(0.06)
    assert timers.run_due() == 1


def test_jitter_adds_up_to_its_seconds():
    mono = FakeMonotonic()
    timers = Timers(mono)
    timers.every(10, lambda: None, jitter=1.0)
    assert 10 <= timers.idle_seconds() <= 11


# --------------------------------------------------------------------------- the real command


class FakeClock:
    """The wall clock of a process tree, as an offset from the real one (libfaketime reads it
    from a file; the monotonic clock stays real). Without FAKETIME in the environment, the
    file wins and is read again at most every second."""

    def __init__(self, path: Path, offset: float = 0.0, tz: str = "UTC"):
        self.path = path
        self.tz = tz
        self.set(offset)

    def set(self, offset: float) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+.3f}\n")
        tmp.replace(self.path)  # never a half-written offset

    def now(self) -> float:
        return time.time() + self.offset

    def env(self) -> dict[str, str]:
        return {"LD_PRELOAD": str(library()), "FAKETIME_TIMESTAMP_FILE": str(self.path),
                "FAKETIME_CACHE_DURATION": "0", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "TZ": self.tz}


def start_under(host, fake: FakeClock):
    env = host.env()
    env.pop("FAKETIME", None)  # it would take precedence over the file
    return host.start("run", env=env | fake.env())





def started_at(host, commit: str) -> datetime:
    """When the agent, on its own clock, started deploying `commit` (from ci-cd.json)."""
    for record in host.ci_cd()["deploys"]:
        if record["outcome"] == "deployed" and record["commit"] == commit:
            return datetime.fromisoformat(record["started_at"])
    raise AssertionError(f"no deploy of {commit}")


def test_polls_go_on_across_the_autumn_dst_change(host, git_remote, tmp_path):
    # The agent's clock starts 4 s before 03:00 CEST in Paris. Its first poll deploys B1 and
    # ends before the change; the next one is due 5 s later, after local time went back an
    # hour: `schedule` put it at 03:00:0x local, an hour away; a monotonic timer does not.
    host.write_config(poll_seconds=5)
    fake = FakeClock(tmp_path / "faketime", AUTUMN_CHANGE.timestamp() - time.time() - 4.0,
                     tz="Europe/Paris")
    first = git_remote.commit_and_push("dev1", {"index.html": page("B1 summer")}, "B101: summer")
    agent = start_under(host, fake)
    try:
        wait_for(lambda: host.get("/") == (200, page("B1 summer")), what="the first deploy")
        second = git_remote.commit_and_push("dev1", {"index.html": page("B2 winter")},
                                            "B102: winter")
        wait_for(lambda: host.get("/") == (200, page("B2 winter")), timeout=15,
                 what="the first poll after the clocks went back (poll_seconds is 5)")
    finally:
        stderr = host.stop(agent)
    first_record = next(r for r in host.ci_cd()["deploys"] if r["commit"] == first)
    assert datetime.fromisoformat(first_record["finished_at"]) < AUTUMN_CHANGE, \
        "the first poll must end before the change, or this test shows nothing"
    assert started_at(host, second) >= AUTUMN_CHANGE, stderr
    assert " 02:00:0" in stderr  # the log's local time did go back (CEST -> CET)


# Two steps back: a poll under way when the agent first sees a step would let `schedule`
# count from the stepped time. A no-op poll takes a few hundredths of each second here, so the
# old loop got through a single step back now and then, through two very rarely.
@pytest.mark.parametrize("steps", [(-3600.0, -3600.0, 10800.0)])
def test_polls_go_on_when_the_wall_clock_steps(host, git_remote, tmp_path, steps):
    host.write_config(poll_seconds=1)
    fake = FakeClock(tmp_path / "faketime")
    first = git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    agent = start_under(host, fake)
    commits = [first]
    try:
        wait_for(lambda: host.get("/") == (200, page("B1 one")), what="the first deploy")
        for number, step in enumerate(steps, start=2):
            fake.set(fake.offset + step)
            time.sleep(STEP_SECONDS)  # the agent lives on the stepped clock before the push
            headline = f"B{number} after a step of {step:+.0f}s"
            commits.append(git_remote.commit_and_push(
                "dev1", {"index.html": page(headline)}, f"B10{number}: step"))
            wait_for(lambda h=headline: host.get("/") == (200, page(h)), timeout=10,
                     what=f"a deploy after the wall clock stepped {step:+.0f}s")
    finally:
        host.stop(agent)
    # Each deploy really ran on the stepped clock.
    times = [started_at(host, commit) for commit in commits]
    for before, after, step in zip(times[:-1], times[1:], steps, strict=True):
        assert abs((after - before).total_seconds() - step) < 60, (before, after, step)
