"""Value types shared by the modules. No I/O here."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

OUTCOMES = ("deployed", "rolled_back", "failed")


@dataclass(frozen=True)
class Snapshot:
    """The remote's branch heads that matter to this host, as read by one ls-remote."""

    heads: dict[str, str]  # branch name -> 40-hex commit
    # Branch names that are not UTF-8, shown with \xNN escapes; never deployed.
    undecodable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """What this host should run: a branch head."""

    branch: str
    commit: str
    version: str | None = None  # e.g. "1.3.22" for release branches, None for an exact flag
    version_key: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Selection:
    """The outcome of branch selection: the target (or None) and branches that were skipped."""

    target: Target | None
    unreadable: tuple[str, ...] = ()  # release-looking branches whose version cannot be read


@dataclass(frozen=True)
class Attempt:
    """One deploy attempt as the cycle carries it from the fetch to its record."""

    trigger: str  # poll | webhook | manual | recovery
    target: Target
    previous_commit: str | None
    started: datetime  # aware UTC
    cards: list[str] = field(default_factory=list)
    uncarded: list[str] = field(default_factory=list)
    rewritten: bool = False  # the live commit is no longer an ancestor (force-push)
    validation: dict[str, Any] | None = None  # gscan's findings (validate.Validation.to_dict)
    reload: str | None = None  # how Ghost came to serve it: "activate" or "restart"
    settings: list[str] = field(default_factory=list)  # routes/redirects files uploaded


@dataclass(frozen=True)
class CheckResult:
    name: str
    url: str
    ok: bool
    status: int | None
    ms: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Release:
    """A verified release kept on disk for rollback."""

    commit: str
    branch: str
    version: str | None
    dir: str
    since: str  # ISO time it went live

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        return cls(
            commit=data["commit"],
            branch=data["branch"],
            version=data.get("version"),
            dir=data["dir"],
            since=data["since"],
        )


@dataclass
class DeployRecord:
    """One deploy attempt: the single result that feeds state, the ci-cd files and Slack."""

    trigger: str  # poll | manual | rollback | recovery
    branch: str
    version: str | None
    commit: str
    previous_commit: str | None
    outcome: str  # one of OUTCOMES
    started_at: str
    finished_at: str
    cards: list[str] = field(default_factory=list)
    uncarded_commits: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # Extensions to the contract's schema:
    site: str | None = None
    live_commit: str | None = None  # what is live once this record was written
    step: str | None = None  # where a failure happened: build, restart, checks
    journal_tail: list[str] = field(default_factory=list)
    history_rewritten: bool = False
    duration_ms: int | None = None
    validation: dict[str, Any] | None = None  # gscan: {"validator", "checked_version", "fatal",
    #                                           "warnings": [{"code", "rule", "files"}]}
    reload: str | None = None  # "activate" (Admin API, no restart) or "restart"
    settings: list[str] = field(default_factory=list)  # routes/redirects files uploaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> str:
        """16 hex digits naming this record (site, commit, outcome, start, trigger): a record
        is announced once, even when a kill makes the next run announce it again."""
        text = "|".join(str(x) for x in (self.site, self.commit, self.outcome,
                                         self.started_at, self.trigger))
        return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- what state.json remembers besides the releases and the history --------------------------

class _Stored:
    """A dataclass kept in state.json: to_dict() for the file, from_dict() tolerant of keys
    a newer or older agent wrote (unknown ones are dropped, missing optional ones default)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None):
        if not data:
            return None
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Seen(_Stored):
    """The target last seen on the remote, and when it was first seen (how long it waited)."""

    branch: str
    commit: str
    at: str  # ISO time


@dataclass
class Pending(_Stored):
    """A target that waits, and why (the window, a hold, quarantine, the canaries)."""

    branch: str
    commit: str
    reason: str


@dataclass
class Quarantined(_Stored):
    """Why a commit is held back until its branch moves (or an operator deploys it)."""

    branch: str
    reason: str
    at: str  # ISO time
    live_path: str | None = None  # the live path's signature when it was the cause

    @property
    def held_back(self) -> bool:
        """Held back by an operator's choice (rollback, deploy --ref), not by a failure."""
        return self.reason.startswith("held back") or self.reason.startswith("rolled back by")


@dataclass
class Inflight(_Stored):
    """A deploy between its record in flight and its verdict: the next run finishes it."""

    branch: str
    commit: str
    version: str | None
    dir: str  # the release directory (it may not exist yet: recorded before the rename)
    previous_dir: str | None
    previous_commit: str | None
    trigger: str
    started_at: str  # ISO time
    cards: list[str] = field(default_factory=list)
    uncarded_commits: list[str] = field(default_factory=list)
    phase: str = "verifying"  # verifying | rolling_back
    staging: str | None = None  # the staging directory it is renamed from


@dataclass
class Hold(_Stored):
    """Automatic deploys paused by an operator."""

    at: str  # ISO time
    by: str | None = None
    reason: str | None = None


@dataclass
class Retry(_Stored):
    """A commit that met a host fault, and when it is tried again."""

    commit: str
    attempts: int
    cause: str
    next_at: str  # ISO time
