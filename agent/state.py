"""The agent's memory in state_dir: what is live, what was seen, what failed, the history.

Written atomically (temporary file, fsync, rename), so a kill at any moment leaves the old
state or the new one. The lock is an flock on an open file: the kernel drops it when the
process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.atomic import write_json_atomic
from agent.errors import AgentError, ExitCode, LockBusy
from agent.hostfault import host_error
from agent.models import (DeployRecord, Hold, Inflight, Pending, Quarantined, Release, Retry,
                          Seen)

log = logging.getLogger("agent")

STATE_FILE = "state.json"
LOCK_FILE = "agent.lock"
SCHEMA = 2  # 2: typed records (models.Seen, Pending, ...); migrate() reads 1


class StateError(AgentError):
    exit_code = ExitCode.CONFIG  # needs a person: the file was edited or damaged by hand


@dataclass
class State:
    """Everything the agent remembers between runs; state.json holds to_dict() of it."""

    releases: list[Release] = field(default_factory=list)  # verified, newest first; [0] is live
    seen: Seen | None = None  # the target last seen on the remote
    pending: Pending | None = None  # the target that waits, and why
    quarantine: dict[str, Quarantined] = field(default_factory=dict)  # commit -> why
    inflight: Inflight | None = None  # a deploy between its in-flight record and its verdict
    history: list[dict[str, Any]] = field(default_factory=list)  # DeployRecord dicts, newest first
    last_problem: str | None = None  # the newest open problem, for `status`
    hold: Hold | None = None  # automatic deploys paused by an operator
    notified_pending: str | None = None  # the commit whose pending message was sent
    unreadable: list[str] = field(default_factory=list)  # release branches with no version
    problem_kind: str | None = None  # what last_problem is: remote, fetch, host, internal:...
    problems: dict[str, str] = field(default_factory=dict)  # every open problem: kind -> text
    alerted: list[str] = field(default_factory=list)  # problem kinds Slack was told of
    retry: Retry | None = None  # a commit that met a host fault
    unpublished: bool = False  # the ci-cd files lag behind the history (a kill, a full disk)
    unannounced: list[str] = field(default_factory=list)  # keys of records not yet notified
    last_webhook_at: str | None = None  # the newest accepted webhook call (ISO time)
    # routes/redirects -> sha256 of the file Ghost last took from the agent (site_settings)
    settings_sent: dict[str, str] = field(default_factory=dict)

    @property
    def current(self) -> Release | None:
        return self.releases[0] if self.releases else None

    @property
    def previous(self) -> Release | None:
        return self.releases[1] if len(self.releases) > 1 else None

    def in_flight(self) -> Inflight:
        """The deploy under way (between its in-flight record and its verdict)."""
        if self.inflight is None:  # pragma: no cover - a programming error
            raise RuntimeError("no deploy in flight")
        return self.inflight

    def add_record(self, record: DeployRecord, limit: int) -> None:
        self.history.insert(0, record.to_dict())
        del self.history[limit:]

    def to_dict(self) -> dict[str, Any]:
        def stored(value: Any) -> Any:
            return value.to_dict() if value is not None else None

        return {
            "schema": SCHEMA,
            "releases": [r.to_dict() for r in self.releases],
            "seen": stored(self.seen),
            "pending": stored(self.pending),
            "quarantine": {commit: q.to_dict() for commit, q in self.quarantine.items()},
            "inflight": stored(self.inflight),
            "history": self.history,
            "last_problem": self.last_problem,
            "hold": stored(self.hold),
            "notified_pending": self.notified_pending,
            "unreadable": self.unreadable,
            "problem_kind": self.problem_kind,
            "problems": self.problems,
            "alerted": self.alerted,
            "retry": stored(self.retry),
            "unpublished": self.unpublished,
            "unannounced": self.unannounced,
            "last_webhook_at": self.last_webhook_at,
            "settings_sent": self.settings_sent,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        """A State from to_dict()'s shape (schema 2). Raises KeyError/TypeError/ValueError
        for a document that does not have it."""
        return cls(
            releases=[Release.from_dict(r) for r in data.get("releases", [])],
            seen=Seen.from_dict(data.get("seen")),
            pending=Pending.from_dict(data.get("pending")),
            quarantine={commit: Quarantined.from_dict(why)
                        for commit, why in (data.get("quarantine") or {}).items()},
            inflight=Inflight.from_dict(data.get("inflight")),
            history=list(data.get("history") or []),
            last_problem=data.get("last_problem"),
            hold=Hold.from_dict(data.get("hold")),
            notified_pending=data.get("notified_pending"),
            unreadable=list(data.get("unreadable") or []),
            problem_kind=data.get("problem_kind"),
            problems=dict(data.get("problems") or {}),
            alerted=list(data.get("alerted") or []),
            retry=Retry.from_dict(data.get("retry")),
            unpublished=bool(data.get("unpublished")),
            unannounced=list(data.get("unannounced") or []),
            last_webhook_at=data.get("last_webhook_at"),
            settings_sent={str(k): str(v) for k, v in (data.get("settings_sent") or {}).items()},
        )


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a state document of an older schema to SCHEMA. Raises ValueError for a schema
    this agent does not know (e.g. written by a newer one)."""
    schema = data.get("schema")
    if schema == 1:
        # 1 -> 2: quarantine entries got "branch" and "at" as required fields; "seen" got
        # "at"; the one last_problem became one of `problems`.
        for why in (data.get("quarantine") or {}).values():
            why.setdefault("branch", "?")
            why.setdefault("reason", "")
            why.setdefault("at", "")
        if data.get("seen"):
            data["seen"].setdefault("at", "")
        if data.get("hold"):
            data["hold"].setdefault("at", "")
        if data.get("last_problem") and not data.get("problems"):
            data["problems"] = {data.get("problem_kind") or "remote": data["last_problem"]}
        data["schema"] = schema = 2
    if schema != SCHEMA:
        raise ValueError(f"schema {schema!r}, expected {SCHEMA}")
    return data


class StateStore:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self._lock_fd: int | None = None

    def load(self) -> State:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return State.from_dict(migrate(data))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{self.path} is damaged ({exc}); move it aside to start afresh") \
                from None

    def save(self, state: State) -> None:
        """Write state.json atomically; the old file stays whole when this fails.

        Raises HostError (exit 75) when the host refuses the write (full disk, read-only)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, state.to_dict(), mode=0o640)
        except OSError as exc:
            raise host_error(f"cannot write {self.path}", exc) from None

    # -- the lock ------------------------------------------------------------------------
    def lock(self, wait: float = 0.0) -> StateStore:
        """Take the lock. When another run holds it, try again every 0.1 s for up to `wait`
        seconds (0: not at all), then raise LockBusy (exit 75) naming the holder's pid.
        Use as a context manager, or through waiting()."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            self._take(fd, wait)
        except BaseException:  # busy, Ctrl-C while waiting, ENOLCK: never keep the fd
            os.close(fd)
            raise
        try:  # the pid only tells who holds it: a full disk must not keep the lock taken
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._lock_fd = fd
        return self

    def _take(self, fd: int, wait: float) -> None:
        deadline, told = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = _read_pid(fd)
                by = f" (pid {holder})" if holder else ""
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another ghost-agent run holds {self.dir / LOCK_FILE}{by}"
                                   + (f"; waited {wait:g}s" if wait else "")) from None
                if not told:
                    log.info("waiting up to %gs for the ghost-agent run%s that holds the lock "
                             "to finish its step", wait, by)
                    told = True
                time.sleep(0.1)

    @contextlib.contextmanager
    def waiting(self, seconds: float) -> Iterator[StateStore]:
        """`with store.waiting(s):` holds the lock, waiting up to `s` seconds for it."""
        self.lock(seconds)
        try:
            yield self
        finally:
            self.unlock()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def __enter__(self) -> StateStore:
        return self.lock()

    def __exit__(self, *exc: object) -> None:
        self.unlock()


def _read_pid(fd: int) -> str | None:
    try:
        data = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return None
    return data if data.isdigit() else None
