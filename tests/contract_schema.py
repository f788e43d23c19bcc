"""The ci-cd.json shape of contract.md as a plain-Python validator (no dependency).

`validate_ci_cd(doc)` returns every deviation it finds, one readable line each
("deploys[1].outcome: 'ok' is not one of deployed, rolled_back, failed"); an empty
list means the document keeps to the contract. Keys the contract does not name are
allowed: the contract lets the agent extend the document.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

OUTCOMES = ("deployed", "rolled_back", "failed")
# Commit ids as git spells them: 40 lowercase hex digits.
_SHA_RE = re.compile(r"[0-9a-f]{40}")


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 time with a UTC offset ("Z" allowed), else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        return None
    return dt


def _require(obj: dict, key: str, where: str, problems: _Problems) -> bool:
    if key not in obj:
        problems.add(f"{where}{key}", "missing")
        return False
    return True


def _check_str(value: Any, where: str, problems: _Problems, *, nullable: bool = False,
               nonempty: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        want = "a string or null" if nullable else "a string"
        problems.add(where, f"{value!r} is not {want}")
    elif nonempty and not value:
        problems.add(where, "is empty")


def _check_sha(value: Any, where: str, problems: _Problems, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not (isinstance(value, str) and _SHA_RE.fullmatch(value)):
        want = "a 40-hex commit id or null" if nullable else "a 40-hex commit id"
        problems.add(where, f"{value!r} is not {want}")


def _check_time(value: Any, where: str, problems: _Problems) -> datetime | None:
    dt = parse_iso(value)
    if dt is None:
        problems.add(where, f"{value!r} is not an ISO time with a UTC offset")
    return dt


def _check_object(value: Any, where: str, problems: _Problems) -> bool:
    if not isinstance(value, dict):
        problems.add(where, f"{type(value).__name__} is not an object")
        return False
    return True


def _check_current(current: Any, problems: _Problems) -> None:
    if current is None or not _check_object(current, "current", problems):
        return
    if _require(current, "branch", "current.", problems):
        _check_str(current["branch"], "current.branch", problems, nonempty=True)
    if _require(current, "commit", "current.", problems):
        _check_sha(current["commit"], "current.commit", problems)
    if _require(current, "version", "current.", problems):
        _check_str(current["version"], "current.version", problems, nullable=True)
    if _require(current, "since", "current.", problems):
        _check_time(current["since"], "current.since", problems)


def _check_pending(pending: Any, problems: _Problems) -> None:
    if pending is None or not _check_object(pending, "pending", problems):
        return
    if _require(pending, "branch", "pending.", problems):
        _check_str(pending["branch"], "pending.branch", problems, nonempty=True)
    if _require(pending, "commit", "pending.", problems):
        _check_sha(pending["commit"], "pending.commit", problems)
    if _require(pending, "reason", "pending.", problems):
        _check_str(pending["reason"], "pending.reason", problems, nonempty=True)


def _check_check(check: Any, where: str, problems: _Problems) -> None:
    if not _check_object(check, where, problems):
        return
    if _require(check, "name", f"{where}.", problems):
        _check_str(check["name"], f"{where}.name", problems, nonempty=True)
    if _require(check, "url", f"{where}.", problems):
        _check_str(check["url"], f"{where}.url", problems, nonempty=True)
    if _require(check, "ok", f"{where}.", problems) and not isinstance(check["ok"], bool):
        problems.add(f"{where}.ok", f"{check['ok']!r} is not true or false")
    if _require(check, "status", f"{where}.", problems):
        status = check["status"]
        if status is not None and not _is_int(status):
            problems.add(f"{where}.status", f"{status!r} is not an integer or null")
    if _require(check, "ms", f"{where}.", problems):
        ms = check["ms"]
        if not _is_int(ms):
            problems.add(f"{where}.ms", f"{ms!r} is not an integer")
        elif ms < 0:
            problems.add(f"{where}.ms", f"{ms!r} is negative")


def _check_deploy(rec: Any, where: str, problems: _Problems) -> datetime | None:
    """Check one deploy record; return its finished_at (for the order check) when readable."""
    if not _check_object(rec, where, problems):
        return None
    p = f"{where}."
    if _require(rec, "trigger", p, problems):
        _check_str(rec["trigger"], f"{p}trigger", problems, nonempty=True)
    if _require(rec, "branch", p, problems):
        _check_str(rec["branch"], f"{p}branch", problems, nonempty=True)
    if _require(rec, "version", p, problems):
        _check_str(rec["version"], f"{p}version", problems, nullable=True)
    if _require(rec, "commit", p, problems):
        _check_sha(rec["commit"], f"{p}commit", problems)
    if _require(rec, "previous_commit", p, problems):
        _check_sha(rec["previous_commit"], f"{p}previous_commit", problems, nullable=True)
    outcome = rec.get("outcome")
    if _require(rec, "outcome", p, problems) and outcome not in OUTCOMES:
        problems.add(f"{p}outcome", f"{outcome!r} is not one of {', '.join(OUTCOMES)}")
    started = finished = None
    if _require(rec, "started_at", p, problems):
        started = _check_time(rec["started_at"], f"{p}started_at", problems)
    if _require(rec, "finished_at", p, problems):
        finished = _check_time(rec["finished_at"], f"{p}finished_at", problems)
    if started is not None and finished is not None and started > finished:
        problems.add(f"{p}started_at",
                     f"{rec['started_at']!r} is after finished_at {rec['finished_at']!r}")
    if _require(rec, "cards", p, problems):
        cards = rec["cards"]
        if not isinstance(cards, list):
            problems.add(f"{p}cards", f"{cards!r} is not a list")
        else:
            for i, card in enumerate(cards):
                _check_str(card, f"{p}cards[{i}]", problems, nonempty=True)
    if _require(rec, "uncarded_commits", p, problems):
        uncarded = rec["uncarded_commits"]
        if not isinstance(uncarded, list):
            problems.add(f"{p}uncarded_commits", f"{uncarded!r} is not a list")
        else:
            for i, sha in enumerate(uncarded):
                _check_sha(sha, f"{p}uncarded_commits[{i}]", problems)
    if _require(rec, "checks", p, problems):
        checks = rec["checks"]
        if not isinstance(checks, list):
            problems.add(f"{p}checks", f"{checks!r} is not a list")
        else:
            for i, check in enumerate(checks):
                _check_check(check, f"{p}checks[{i}]", problems)
    if _require(rec, "error", p, problems):
        error = rec["error"]
        _check_str(error, f"{p}error", problems, nullable=True)
        if outcome in OUTCOMES and outcome != "deployed" and (error is None or error == ""):
            problems.add(f"{p}error", f"is empty although the outcome is {outcome!r}")
    return finished


def validate_ci_cd(doc: Any) -> list[str]:
    """Every deviation of a ci-cd.json document from contract.md; [] when it keeps to it."""
    problems = _Problems()
    if not isinstance(doc, dict):
        problems.add("document", f"{type(doc).__name__} is not an object")
        return problems.items
    if _require(doc, "schema", "", problems):
        schema = doc["schema"]
        if not (_is_int(schema) and schema == 1):
            problems.add("schema", f"{schema!r} is not 1")
    for key in ("site", "flag"):
        if _require(doc, key, "", problems):
            _check_str(doc[key], key, problems, nonempty=True)
    if _require(doc, "updated_at", "", problems):
        _check_time(doc["updated_at"], "updated_at", problems)
    if _require(doc, "current", "", problems):
        _check_current(doc["current"], problems)
    if _require(doc, "pending", "", problems):
        _check_pending(doc["pending"], problems)
    if not _require(doc, "deploys", "", problems):
        return problems.items
    deploys = doc["deploys"]
    if not isinstance(deploys, list):
        problems.add("deploys", f"{type(deploys).__name__} is not a list")
        return problems.items
    newer: tuple[int, datetime] | None = None  # the previous (newer) record's finished_at
    for i, rec in enumerate(deploys):
        finished = _check_deploy(rec, f"deploys[{i}]", problems)
        if finished is None:
            continue
        if newer is not None and finished > newer[1]:
            problems.add(f"deploys[{i}].finished_at",
                         f"{rec['finished_at']!r} is newer than deploys[{newer[0]}] "
                         "(deploys must be newest first)")
        newer = (i, finished)
    return problems.items
