"""The deploy window: (window config, now) -> open or not, and when it next opens. Pure.

All arithmetic is in aware datetimes. On a daylight-saving day a start time that does not
exist opens at the first minute that does; a start time that happens twice opens once
(the first time).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@dataclass(frozen=True)
class WindowDecision:
    open: bool
    reason: str | None  # why not, for `pending`
    opens_at: datetime | None  # the current window's opening if open, else the next one
    closes_at: datetime | None


def host_zone() -> tzinfo:
    """The host's IANA zone (TZ, /etc/timezone, /etc/localtime), else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return timezone.utc


def zone_of(window) -> tzinfo:
    """The window's zone: resolved when the config loaded (WindowConfig.zone)."""
    return window.zone


def opening_on(day: date, start: time, zone: tzinfo) -> datetime:
    """When the window opens on a local day, in UTC: arithmetic and comparisons on aware
    datetimes that share a zoneinfo tzinfo use wall time, which is wrong across DST."""
    wall = datetime.combine(day, start)
    for shift in range(0, 24 * 60):
        candidate = (wall + timedelta(minutes=shift)).replace(tzinfo=zone, fold=0)
        # A wall time that does not exist does not survive the round trip through UTC.
        back = candidate.astimezone(timezone.utc).astimezone(zone)
        if back.replace(tzinfo=None) == candidate.replace(tzinfo=None):
            return back.astimezone(timezone.utc)
    raise ValueError(f"no valid time after {wall} in {zone}")  # pragma: no cover


def decide(window, now: datetime, offset: timedelta = timedelta(0)) -> WindowDecision:
    """Is the window open at `now`? `offset` shifts this host's start (fleet spreading)."""
    if window is None:
        return WindowDecision(True, None, None, None)
    zone = zone_of(window)
    local_today = now.astimezone(zone).date()
    length = timedelta(minutes=window.minutes)
    for delta in (-1, 0):  # a window may have opened yesterday and still be open
        opens = opening_on(local_today + timedelta(days=delta), window.start, zone) + offset
        if opens <= now < opens + length:
            return WindowDecision(True, None, opens, opens + length)
    upcoming = next_opening(window, now, offset)
    local = upcoming.astimezone(zone).isoformat(timespec="minutes")
    reason = f"waiting for the deploy window at {local}"
    return WindowDecision(False, reason, upcoming, upcoming + length)


def next_opening(window, now: datetime, offset: timedelta = timedelta(0)) -> datetime:
    zone = zone_of(window)
    local_today = now.astimezone(zone).date()
    for delta in range(0, 3):
        opens = opening_on(local_today + timedelta(days=delta), window.start, zone) + offset
        if opens > now:
            return opens
    raise ValueError("no window opening in the next days")  # pragma: no cover


def spread_offset(window, hostname: str) -> timedelta:
    """This host's delay inside the window, from 0 to spread_minutes: the same every night
    for one hostname, different across a fleet (a hash of the name, not a random draw)."""
    if window is None or not window.spread_minutes:
        return timedelta(0)
    digest = hashlib.sha256(hostname.encode("utf-8", "replace")).digest()
    return timedelta(minutes=int.from_bytes(digest[:4], "big") % window.spread_minutes)
