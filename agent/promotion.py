"""Canary promotion: deploy version V only once the canary sites have run V healthily for the
bake time.

evaluate() is pure: it judges the canary sites' answers (agent.fleet_fetch.SiteAnswer) at `now`.
check_promotion() fetches the answers first. The reason is always returned; when the answer
is "not yet" it becomes the pending reason of the target (ci-cd.json, status, Slack), so it
names every site that is missing and how long is left.

A canary site is healthy for V when its ci-cd.json could be read, its live version is V
(compared as numbers: 1.3.22 = 1-3-22), the newest deploy record of the live commit says
"deployed", the site's newest deploy record overall is not rolled_back/failed, and V has been
live for at least the bake time. Everything a site answers is untrusted: anything odd makes
that site not healthy, with a reason, and never raises.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from agent.config import PromotionConfig
from agent.clock import parse_time
from agent.fleet_fetch import SiteAnswer, fetch_all, is_unreachable
from agent.redact import redact
from agent.selection import parse_version

WHY_MAX = 160  # characters of one site's part of the reason
SITES_LISTED = 10  # sites named in the reason; the rest are counted


_BREAKS_RE = re.compile(r"[\s\x00-\x1f\x7f\x85\u2028\u2029]+")


def _line(value: Any, limit: int = WHY_MAX) -> str:
    """One line of redacted text (newlines and control characters become spaces), cut."""
    text = _BREAKS_RE.sub(" ", redact(str(value))).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _version_key(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    return parse_version(value.strip())


def _minutes_left(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def site_health(version: str, want: tuple[int, ...], answer: SiteAnswer, *,
                bake: timedelta, now: datetime) -> str | None:
    """None when the site is healthy on `version` at `now`, else why not (a short phrase)."""
    if answer.error is not None or not isinstance(answer.doc, dict):
        error = _line(answer.error or "no answer")
        if is_unreachable(answer.error):
            if error.startswith("unreachable: "):
                error = error[len("unreachable: "):]
            return f"unreachable: {error}"
        return f"bad answer: {error}"
    doc = answer.doc
    current = doc.get("current")
    if not isinstance(current, dict) or not isinstance(current.get("commit"), str) \
            or not current.get("commit"):
        return "nothing live"
    deploys = doc.get("deploys")
    if not isinstance(deploys, list):
        return "bad answer: deploys is not a list"
    records = [d for d in deploys if isinstance(d, dict)]
    if len(records) != len(deploys):
        return "bad answer: a deploy record is not an object"
    if records:
        newest_outcome = records[0].get("outcome")
        if newest_outcome in ("rolled_back", "failed"):
            what = str(newest_outcome).replace("_", " ")
            rec_version = records[0].get("version")
            shown = f" ({_line(rec_version, 40)})" if isinstance(rec_version, str) else ""
            return f"last deploy {what}{shown}"
    live = current.get("version")
    live_key = _version_key(live)
    if live_key != want:
        if live is None:
            shown = "no version"
        elif isinstance(live, str):
            shown = _line(live, 40) if live_key else f"unreadable version {_line(live, 40)!r}"
        else:
            shown = "an unreadable version"
        return f"not on {version} (live {shown})"
    commit = current["commit"]
    own = next((d for d in records if d.get("commit") == commit), None)
    if own is None:
        return "no deploy record for the live commit"
    if own.get("outcome") != "deployed":
        return f"live commit's last deploy is {_line(own.get('outcome'), 30)}, not deployed"
    since = parse_time(current.get("since"))
    if since is None:
        return "live since an unreadable time"
    left = since + bake - _aware(now)
    if left > timedelta(0):
        return f"baking ({_minutes_left(left.total_seconds())} min left)"
    return None


def evaluate(version: str, answers: list[SiteAnswer], *, bake_minutes: int,
             healthy_share: float, now: datetime) -> tuple[bool, str]:
    """(True, why) when at least ceil(healthy_share * len(answers)) canary sites are healthy
    on `version`; else (False, the pending reason naming the sites missing)."""
    shown_version = _line(version, 40)
    want = _version_key(version)
    if want is None:
        return False, f"canary: cannot read the version {shown_version!r}"
    total = len(answers)
    if total == 0:
        return False, "canary: no canary sites configured"
    try:
        share = float(healthy_share)
    except (TypeError, ValueError):
        share = 1.0
    if not math.isfinite(share) or share <= 0 or share > 1:
        share = 1.0
    # round first: 0.7 * 10 is 7.000000000000001, which must need 7 sites, not 8
    need = min(total, max(1, math.ceil(round(share * total, 9))))
    try:
        bake = timedelta(minutes=max(0, int(bake_minutes)))
    except (TypeError, ValueError, OverflowError):
        bake = timedelta(0)

    healthy = 0
    missing: list[str] = []
    for answer in answers:
        try:
            why = site_health(shown_version, want, answer, bake=bake, now=now)
        except Exception as exc:  # noqa: BLE001 - an answer nobody foresaw: not healthy
            why = f"bad answer ({type(exc).__name__})"
        if why is None:
            healthy += 1
        else:
            missing.append(f"{_line(answer.url, 200)} {why}")

    head = f"canary: {healthy} of {total} sites healthy on {shown_version} (need {need})"
    if healthy >= need:
        bake_text = f" for {bake_minutes} min" if bake else ""
        head = (f"canary: {healthy} of {total} sites healthy on {shown_version}{bake_text} "
                f"(need {need})")
    if not missing:
        return healthy >= need, head
    listed = missing[:SITES_LISTED]
    rest = len(missing) - len(listed)
    tail = "; ".join(listed) + (f"; and {rest} more" if rest > 0 else "")
    return healthy >= need, f"{head}: {tail}"


def check_promotion(promotion: PromotionConfig, version: str, now: datetime, *,
                    session: requests.Session | None = None) -> tuple[bool, str]:
    """Fetch the canary sites' ci-cd.json and evaluate them for `version` at `now`."""
    answers = fetch_all(list(promotion.canary_urls), promotion.timeout_seconds, session=session)
    return evaluate(version, answers, bake_minutes=promotion.bake_minutes,
                    healthy_share=promotion.healthy_share, now=now)
