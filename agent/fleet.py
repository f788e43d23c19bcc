"""The fleet's verdict: how every site fared, as one document (see summarize).

The answers come from agent.fleet_fetch; agent.fleet_render turns the document into
ci-cd.txt/.html/.json and the Slack summary; agent.fleet_job runs the whole report.
summarize() is pure and never trusts a document it is handed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent import text
from agent.cicd_head import first_record_only
from agent.cicd_shape import shape_problem
from agent.clock import aware, parse_time
from agent.fleet_fetch import MAX_BYTES, SiteAnswer, is_unreachable
from agent.selection import parse_version, release_version

NAME_MAX = 120  # characters kept of a site's name, flag, version
TEXT_MAX = 300  # characters kept of any free text a site sent (errors, reasons)

# The states of a site, worst first (the order sites are listed in within a group).
STATES = ("failed", "rolled_back", "unreachable", "bad_answer", "old_version", "pending",
          "updated")
NEEDS_A_LOOK = ("failed", "rolled_back", "unreachable", "bad_answer", "old_version")
# The order of a counts dict, and the order counts are told in: the good news first, as the
# owner reads them.
COUNT_ORDER = ("updated", "rolled_back", "failed", "pending", "unreachable", "old_version",
               "bad_answer")
LABELS = {
    "updated": "updated",
    "rolled_back": "rolled back",
    "failed": "failed",
    "pending": "pending",
    "unreachable": "unreachable",
    "old_version": "on an old version",
    "bad_answer": "bad answer",
}
SHORT_LABELS = {**LABELS, "old_version": "old version"}


def one_line(value: Any, limit: int = TEXT_MAX) -> str:
    """Untrusted text as one redacted line of at most `limit` characters ("" for None)."""
    return text.cut(text.one_line(value), limit)


def iso_z(value: Any) -> str | None:
    """A time as 2026-11-27T03:00:00Z; an unreadable one as a short line of text, or None."""
    dt = parse_time(value)
    if dt is None:
        return _text(value, 40)
    try:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):  # 0001-01-01T00:00+01:00 has no UTC time
        return _text(value, 40)


def _text(value: Any, limit: int = TEXT_MAX) -> str | None:
    """A string value from a site's answer as one safe line, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return one_line(value, limit)


def load_previous(out_dir: Path | None) -> dict | None:
    """The fleet document written last time into out_dir, or None (never raises)."""
    if out_dir is None:
        return None
    try:
        with open(Path(out_dir) / "ci-cd.json", "rb") as fh:
            data = fh.read(20 * MAX_BYTES)
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "fleet" else None


@dataclass(frozen=True)
class SiteSummary:
    """What the report keeps of one site's answer: a few small values, whatever it sent.

    flag: the group (None when the answer is unusable: the group is then last time's, or
    none); versions: the (as written, parsed) versions the site names, for its group's
    newest; entry: the report's line, its "state" None until the group is known; inputs:
    what the state is judged from (None when entry is final).
    """

    url: str
    flag: str | None
    versions: tuple[tuple[str, tuple[int, ...]], ...]
    entry: dict
    inputs: tuple | None


def summarize_site(answer: SiteAnswer) -> SiteSummary:
    """One site's answer reduced to a SiteSummary (never raises; the document is judged
    here, so a fetch can drop it at once). summarize() gives the same report from these as
    from the answers."""
    doc = answer.doc if isinstance(answer.doc, dict) else None
    if doc is not None and answer.error is None:
        # the newest record is the only one the report reads: an odd record further back
        # is no news, and checking a long history costs ~0.3 ms a site
        doc = first_record_only(doc)
        problem = shape_problem(doc)
        if problem is None:
            flag = one_line(doc.get("flag"), NAME_MAX)
            versions: tuple = ()
            try:
                versions = _site_versions(flag, doc)
                entry, inputs = _site_entry(answer, doc)
            except Exception as exc:  # noqa: BLE001 - an answer nobody foresaw: report it
                odd = SiteAnswer(answer.url, None, f"bad answer: {type(exc).__name__}",
                                 answer.ms)
                entry, inputs = _failed_entry(odd, {"site": doc.get("site")}), None
            return SiteSummary(answer.url, flag, versions, entry, inputs)
        answer = SiteAnswer(answer.url, None, f"wrong schema: {problem}", answer.ms)
    return SiteSummary(answer.url, None, (), _failed_entry(answer, None), None)


def summarize(answers: Sequence[SiteAnswer | SiteSummary], now: datetime, *,
              previous: dict | None = None) -> dict:
    """The fleet document: per group (a site's flag) and version, each site's state.

    `answers`: fetch answers, or their summarize_site() (the same report, without keeping
    documents). `previous` (optional) is an earlier fleet document: a site that does not
    answer now is listed in the group it was in then; without it (or unknown there) it is
    listed in the top-level "unreachable" list.
    """
    known = _previous_groups(previous)
    groups: dict[str, list[SiteSummary]] = {}
    orphans: list[dict] = []
    for item in answers:
        site = item if isinstance(item, SiteSummary) else summarize_site(item)
        if site.flag is not None:
            groups.setdefault(site.flag, []).append(site)
            continue
        previous_site = known.get(site.entry["url"])
        if previous_site:
            entry = {**site.entry, "site": _text(previous_site.get("site"), NAME_MAX)}
            groups.setdefault(one_line(previous_site["flag"], NAME_MAX), []).append(
                SiteSummary(site.url, None, (), entry, None))
        else:
            orphans.append(site.entry)

    out_groups = []
    for flag in sorted(groups):
        members = groups[flag]
        newest = _group_newest(members)
        sites = [m.entry if m.inputs is None else {**m.entry, "state": _state(m.inputs, newest)}
                 for m in members]
        sites.sort(key=lambda s: (STATES.index(s["state"]), s["url"]))
        counts = {state: 0 for state in COUNT_ORDER}
        for site in sites:
            counts[site["state"]] += 1
        out_groups.append({
            "flag": flag,
            "newest_version": newest[0] if newest else None,
            "counts": counts,
            "sites": sites,
        })

    totals = {"sites": len(answers), "groups": len(out_groups)}
    totals.update({state: 0 for state in COUNT_ORDER})
    for group in out_groups:
        for state, n in group["counts"].items():
            totals[state] += n
    for site in orphans:
        totals[site["state"]] += 1
    totals["needs_a_look"] = sum(totals[s] for s in NEEDS_A_LOOK)
    orphans.sort(key=lambda s: (STATES.index(s["state"]), s["url"]))
    return {
        "schema": 1,
        "kind": "fleet",
        "updated_at": aware(now).isoformat(timespec="seconds"),
        "groups": out_groups,
        "unreachable": orphans,
        "totals": totals,
    }


def _previous_groups(previous: dict | None) -> dict[str, dict]:
    """url -> {"flag", "site"} from an earlier fleet document (to place sites that do not
    answer today in the group they were in)."""
    known: dict[str, dict] = {}
    if not isinstance(previous, dict) or not isinstance(previous.get("groups"), list):
        return known
    for group in previous["groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("flag"), str):
            continue
        for site in group.get("sites") or []:
            if isinstance(site, dict) and isinstance(site.get("url"), str):
                name = site.get("site") if isinstance(site.get("site"), str) else None
                known[site["url"]] = {"flag": group["flag"], "site": name}
    return known


def _site_versions(flag: str, doc: dict) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The versions a site names, for its group's newest: its live version, its pending
    target's and its newest deploy record's, as (as written, parsed)."""
    found = []

    def consider(version: Any) -> None:
        key = _version_key(version)
        if key is not None:
            found.append((one_line(version, NAME_MAX), key))

    current = doc.get("current")
    if isinstance(current, dict):
        consider(current.get("version"))
    pending = doc.get("pending")
    if isinstance(pending, dict):
        consider(_pending_version(pending, flag))
    deploys = _deploys(doc)
    if deploys:
        consider(deploys[0].get("version"))
    return tuple(found)


def _group_newest(members: list[SiteSummary]) -> tuple[str, tuple[int, ...]] | None:
    """The newest version the group's sites name: (as written, parsed); the first named wins
    a tie."""
    best: tuple[str, tuple[int, ...]] | None = None
    for member in members:
        for shown, key in member.versions:
            if best is None or key > best[1]:
                best = (shown, key)
    return best


def _version_key(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    return parse_version(value.strip())


def _pending_version(pending: dict, flag: str) -> str | None:
    """The version a pending target would bring: its own, or read from its release branch."""
    version = pending.get("version")
    if isinstance(version, str) and _version_key(version):
        return version
    branch = pending.get("branch")
    if flag.endswith("*") and isinstance(branch, str) and len(branch) < 256:
        version, _ = release_version(branch, flag[:-1])
        return version
    return None


def _deploys(doc: dict) -> list[dict]:
    deploys = doc.get("deploys")
    if not isinstance(deploys, list):
        return []
    return [d for d in deploys if isinstance(d, dict)]


def _site_entry(answer: SiteAnswer, doc: dict) -> tuple[dict, tuple]:
    """The report's line of a site that answered, its state left to _state(), and what
    _state() judges it from."""
    current = doc.get("current") if isinstance(doc.get("current"), dict) else None
    pending = doc.get("pending") if isinstance(doc.get("pending"), dict) else None
    deploys = _deploys(doc)
    last = deploys[0] if deploys else None
    live_version = current.get("version") if current else None
    last_outcome = last.get("outcome") if last else None
    tried = last_outcome if last_outcome in ("rolled_back", "failed") else None
    inputs = (tried, _version_key(last.get("version")) if tried else None,
              pending is not None, bool(current is not None and current.get("commit")),
              _version_key(live_version))
    error = None
    if last is not None and last_outcome != "deployed":
        error = _text(last.get("error"))
    entry = {
        "url": one_line(answer.url, 500),
        "site": _text(doc.get("site"), NAME_MAX),
        "state": None,
        "version": _text(live_version, NAME_MAX),
        "commit": _text(current.get("commit"), 64) if current else None,
        "last_outcome": _text(last_outcome, 40),
        "last_version": _text(last.get("version"), NAME_MAX) if last else None,
        "last_finished_at": iso_z(last.get("finished_at") or last.get("started_at"))
        if last else None,
        "error": error,
        "pending_reason": _text(pending.get("reason")) if pending else None,
        "ms": answer.ms,
    }
    return entry, inputs


def _state(inputs: tuple, newest: tuple[str, tuple[int, ...]] | None) -> str:
    """A site's state in its group (`newest`: the group's newest version)."""
    tried, tried_key, pending, live, live_key = inputs
    state = "updated"
    # a failed try of an older version than the group's newest is history, not news
    if tried is not None and (newest is None or tried_key is None or tried_key >= newest[1]):
        state = tried
    if state == "updated":
        if pending:
            state = "pending"
        elif not live:
            state = "old_version" if newest is not None else "updated"
            if tried is not None:
                state = tried
        elif newest is not None and (live_key is None or live_key < newest[1]):
            state = "old_version"
    return state


def _failed_entry(answer: SiteAnswer, known: dict | None) -> dict:
    """The report's line of a site without a usable answer (`known`: its name, if known)."""
    known = known or {}
    return {
        "url": one_line(answer.url, 500),
        "site": _text(known.get("site"), NAME_MAX),
        "state": "unreachable" if is_unreachable(answer.error) else "bad_answer",
        "version": None,
        "commit": None,
        "last_outcome": None,
        "last_version": None,
        "last_finished_at": None,
        "error": one_line(answer.error) or "no answer",
        "pending_reason": None,
        "ms": answer.ms,
    }
