"""One pass of the agent: load state, look at the remote, decide, deploy or roll back, record.

This is the only module that composes the side-effect modules; they never import each other.
Every deploy ends in one DeployRecord that feeds the state, the ci-cd files and the notifier.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from agent import clock, publish, selection, window
from agent.cards import release_cards
from agent.checks import run_checks
from agent.config import Config
from agent.errors import AgentError, CommandError, DeployError, RemoteError
from agent.models import DeployRecord, Release, Target
from agent.notifiers import Fanout, Notifier
from agent.releases import Releases
from agent.remote import RemoteCache
from agent.service import GhostService
from agent.state import State, StateStore

log = logging.getLogger("agent")


PENDING_REASONS = ("waiting", "quarantined", "held", "canary")


def spread_offset(window_config) -> timedelta:
    """This host's delay inside the window: the same every night, different across hosts."""
    if window_config is None or not window_config.spread_minutes:
        return timedelta(0)
    digest = hashlib.sha256(socket.gethostname().encode()).digest()
    return timedelta(minutes=int.from_bytes(digest[:4], "big") % window_config.spread_minutes)


class Interrupted(AgentError):
    """A stop was requested before the live site was touched; nothing changed."""

    exit_code = 75


@dataclass
class Outcome:
    """What one cycle did, for the CLI's message and exit status."""

    message: str
    record: DeployRecord | None = None
    exit_code: int = 0


@dataclass
class Agent:
    config: Config
    store: StateStore
    remote: RemoteCache
    releases: Releases
    ghost: GhostService
    notifier: Notifier = field(default_factory=Fanout)
    now: Callable[[], datetime] = clock.now
    stop_requested: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = time.sleep
    _canary_cache: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config, **kwargs) -> Agent:
        state_dir = config.agent.state_dir
        if "notifier" not in kwargs:
            from agent import notifiers

            kwargs["notifier"] = notifiers.from_config(config)
        return cls(
            config=config,
            store=StateStore(state_dir),
            remote=RemoteCache(state_dir / "cache" / "remote.git", config.git.remote,
                               config.git.timeout_seconds, config.git.ssh_key),
            releases=Releases(config.deploy.releases_dir, config.deploy.path),
            ghost=GhostService(config.ghost.unit, config.ghost.restart_timeout_seconds,
                               config.ghost.journal_lines),
            **kwargs,
        )

    # -- the commands --------------------------------------------------------------------
    def once(self, trigger: str = "poll") -> Outcome:
        """Look at the remote and deploy if a target is due."""
        with self.store:
            state = self.store.load()
            loaded = state.to_dict()
            recovered = self._recover(state)
            try:
                snapshot = self.remote.heads(selection.heads_patterns(self.config.site.flag))
            except RemoteError as exc:
                if state.last_problem != exc.message:
                    state.last_problem = exc.message
                    self.store.save(state)
                raise
            state.last_problem = None
            picked = selection.select(snapshot, self.config.site.flag)
            for branch in sorted(set(picked.unreadable) - set(state.unreadable)):
                log.warning("branch %s: its version cannot be read; it is never deployed", branch)
            state.unreadable = list(picked.unreadable)
            target = picked.target
            if target and (not state.seen or state.seen.get("commit") != target.commit):
                # "at" is when this head was first seen: how long a target has waited.
                state.seen = {"branch": target.branch, "commit": target.commit,
                              "at": clock.iso(self.now())}
            reason = self._why_not(state, target)
            if reason is not None:
                return self._settle(state, target, reason, recovered,
                                    changed=state.to_dict() != loaded)
            if self.stop_requested():
                raise Interrupted("stop requested; nothing deployed")
            record = self._deploy(state, target, trigger)
            return _outcome_of(record)

    def deploy_ref(self, ref: str | None) -> Outcome:
        """Deploy now, outside the window and despite quarantine (an operator's override)."""
        with self.store:
            state = self.store.load()
            self._recover(state)
            target = self._resolve_ref(ref)
            state.quarantine.pop(target.commit, None)
            record = self._deploy(state, target, "manual")
            return _outcome_of(record)

    def rollback(self) -> Outcome:
        """Make the previous verified release live again: switch, restart, verify."""
        with self.store:
            state = self.store.load()
            self._recover(state)
            current, previous = state.current, state.previous
            if current is None or previous is None or not Path(previous.dir).is_dir():
                raise DeployError("no previous release on disk to roll back to")
            started = self.now()
            self.releases.switch(Path(previous.dir))
            ok, checks, error, journal = self._restart_and_verify()
            if ok:
                state.releases.pop(0)
                # The branch head would come straight back on the next poll otherwise.
                state.quarantine[current.commit] = {
                    "branch": current.branch, "at": clock.iso(self.now()),
                    "reason": "rolled back by an operator"}
                outcome, live = "rolled_back", previous
            else:
                self.releases.switch(Path(current.dir))
                ok_again, _, _, _ = self._restart_and_verify()
                error = f"previous release {previous.commit[:7]} did not verify ({error}); " + (
                    f"{current.commit[:7]} is live again" if ok_again
                    else f"{current.commit[:7]} is live again but does not verify either")
                outcome, live = "failed", current
            record = self._record(
                state, trigger="rollback", target=Target(previous.branch, previous.commit,
                                                         previous.version),
                previous_commit=current.commit, outcome=outcome, started=started,
                checks=checks, error=None if ok else error, live_commit=live.commit,
                journal=journal if not ok else [], step=None if ok else "checks")
            if ok:
                return Outcome(f"rolled back to {previous.branch} {previous.commit[:7]}", record)
            return _outcome_of(record)

    def hold(self, reason: str | None, by: str | None) -> Outcome:
        """Pause automatic deploys on this host (deploy --ref still works)."""
        with self.store:
            state = self.store.load()
            state.hold = {"at": clock.iso(self.now()), "by": by, "reason": reason}
            state.notified_pending = None
            self.store.save(state)
            self._publish(state)
            self._announce(state, "automatic deploys held by an operator"
                           + (f": {reason}" if reason else ""))
            return Outcome("automatic deploys held")

    def release(self) -> Outcome:
        """Resume automatic deploys; the next cycle deploys what is due."""
        with self.store:
            state = self.store.load()
            if state.hold is None:
                return Outcome("automatic deploys were not held")
            state.hold = None
            state.notified_pending = None
            if state.pending and state.pending["reason"].startswith("held"):
                state.pending = None
            self.store.save(state)
            self._publish(state)
            self._announce(state, "automatic deploys resumed by an operator")
            return Outcome("automatic deploys resumed")

    def _announce(self, state: State, reason: str) -> None:
        """Tell Slack about a change of this host's mode, naming the target it last saw."""
        seen = state.seen or {}
        self.notifier.pending(self.config.site.name, {
            "branch": seen.get("branch", "-"), "commit": seen.get("commit", ""),
            "reason": reason})

    # -- deciding ------------------------------------------------------------------------
    def _why_not(self, state: State, target: Target | None) -> str | None:
        """None when the target should be deployed now, else why not (for status/pending)."""
        current = state.current
        if target is None:
            return "no branch matches the flag"
        if current and current.commit == target.commit:
            return "up to date"
        if target.commit in state.quarantine:
            why = state.quarantine[target.commit]
            return f"quarantined: {target.commit[:7]} failed ({why.get('reason', '')})"
        if target.version_key and current and current.version:
            current_key = selection.parse_version(current.version)
            if current_key and target.version_key < current_key:
                # The newest release branch was deleted: a deleted branch changes nothing live.
                return f"newest branch {target.branch} is older than live {current.branch}"
        if state.hold:
            return f"held: automatic deploys paused since {state.hold['at']}" + (
                f" ({state.hold['reason']})" if state.hold.get("reason") else "")
        decision = window.decide(self.config.window, self.now(), spread_offset(self.config.window))
        if not decision.open:
            return decision.reason
        if self.config.promotion and target.version:
            healthy, why = self._canary_verdict(target.version)
            if not healthy:
                return why
            log.info("%s", why)
        return None

    def _canary_verdict(self, version: str) -> tuple[bool, str]:
        """Ask the canary sites (only inside the window), at most once a minute per version."""
        from agent.promotion import check_promotion

        now = self.now()
        cached = self._canary_cache
        if cached and cached[0] == version and (now - cached[1]).total_seconds() < 60:
            return cached[2]
        verdict = check_promotion(self.config.promotion, version, now)
        self._canary_cache = (version, now, verdict)
        return verdict

    def _settle(self, state: State, target: Target | None, reason: str,
                recovered: DeployRecord | None, changed: bool) -> Outcome:
        """Nothing to deploy: keep `pending` current and publish only when it changed."""
        pending = None
        if target and reason.startswith(PENDING_REASONS):
            pending = {"branch": target.branch, "commit": target.commit, "reason": reason}
        pending_changed = pending != state.pending
        state.pending = pending
        # One Slack message per waiting target, however often its reason is re-worded.
        announce = pending is not None and reason.startswith(("waiting", "held")) \
            and state.notified_pending != target.commit
        if announce:
            state.notified_pending = target.commit
        if changed or pending_changed or announce:  # a no-op poll writes nothing
            self.store.save(state)
        if pending_changed or recovered:
            self._publish(state)
        if announce:
            self.notifier.pending(self.config.site.name, pending)
        if recovered:
            return _outcome_of(recovered)
        if pending:
            return Outcome(f"pending: {reason}")
        if target and reason == "up to date":
            return Outcome(f"up to date: {target.branch} {target.commit[:7]}")
        return Outcome(reason)

    def _resolve_ref(self, ref: str | None) -> Target:
        flag = self.config.site.flag
        if ref is None:
            picked = selection.select(self.remote.heads(selection.heads_patterns(flag)), flag)
            if picked.target is None:
                raise DeployError(f"no branch on the remote matches the flag {flag!r}")
            return picked.target
        heads = self.remote.heads([f"refs/heads/{ref}"]).heads
        if ref in heads:
            return _target_for(ref, heads[ref], flag)
        if not re.fullmatch(r"[0-9a-fA-F]{4,40}", ref):
            raise DeployError(f"--ref {ref!r} is neither a branch on the remote nor a commit")
        self.remote.fetch_all()
        commit = self.remote.resolve(ref.lower())
        if commit is None:
            raise DeployError(f"--ref {ref!r}: no such commit on the remote")
        return Target(f"(commit {commit[:7]})", commit)

    # -- deploying -----------------------------------------------------------------------
    def _deploy(self, state: State, target: Target, trigger: str) -> DeployRecord:
        cfg = self.config
        started = self.now()
        current = state.current
        previous_commit = current.commit if current else None
        log.info("deploying %s %s (trigger %s)", target.branch, target.commit[:7], trigger)

        self.remote.fetch(target.branch, target.commit)  # RemoteError: temporary, no record
        commits, rewritten = self.remote.log(target.commit, previous_commit)
        cards, uncarded = release_cards(commits, re.compile(cfg.cards.pattern))
        base = dict(state=state, trigger=trigger, target=target, previous_commit=previous_commit,
                    started=started, cards=cards, uncarded=uncarded, rewritten=rewritten)
        if cfg.cards.require and uncarded and trigger != "manual":
            shas = ", ".join(sha[:7] for sha in uncarded[:10])
            error = f"{len(uncarded)} commit(s) without a card ID ({shas}); [cards] require = true"
            self._quarantine(state, target, error)
            return self._record(**base, outcome="failed", step="cards", error=error,
                                live_commit=previous_commit)

        staging = None
        try:
            staging = self.releases.stage(target.commit, started,
                                          lambda d: self.remote.export(target.commit, d))
            self.releases.build(staging, cfg.deploy.build, cfg.deploy.build_timeout_seconds)
        except (DeployError, CommandError, OSError) as exc:
            if staging:
                self.releases.discard(staging)
            message = getattr(exc, "message", None) or f"{exc}"
            self._quarantine(state, target, f"build failed: {message}")
            return self._record(**base, outcome="failed", step="build",
                                error=f"build failed: {message}", live_commit=previous_commit)
        if self.stop_requested():
            self.releases.discard(staging)
            raise Interrupted("stop requested before the switch; the live site is untouched")

        release_dir = self.releases.finish(staging)
        try:
            live_before = self.releases.live() or self.releases.adopt_existing(started)
        except DeployError as exc:
            self.releases.discard(release_dir)
            self._quarantine(state, target, exc.message)
            return self._record(**base, outcome="failed", step="switch", error=exc.message,
                                live_commit=previous_commit)
        state.inflight = {
            "branch": target.branch, "commit": target.commit, "version": target.version,
            "dir": str(release_dir), "previous_dir": str(live_before) if live_before else None,
            "previous_commit": previous_commit, "trigger": trigger,
            "started_at": clock.iso(started), "cards": cards, "uncarded_commits": uncarded,
            "phase": "verifying",
        }
        self.store.save(state)  # before the switch: a kill from here on is recovered
        self.releases.switch(release_dir)
        del base["state"]
        return self._verify_or_roll_back(state, **base)

    def _verify_or_roll_back(self, state: State, *, trigger: str, target: Target,
                             previous_commit: str | None, started: datetime, cards: list[str],
                             uncarded: list[str], rewritten: bool) -> DeployRecord:
        inflight = _inflight(state)
        base = dict(state=state, trigger=trigger, target=target, previous_commit=previous_commit,
                    started=started, cards=cards, uncarded=uncarded, rewritten=rewritten)
        ok, checks, error, journal = self._restart_and_verify()
        if ok:
            state.releases.insert(0, Release(target.commit, target.branch, target.version,
                                             inflight["dir"], clock.iso(self.now())))
            state.quarantine.pop(target.commit, None)
            state.inflight = None
            record = self._record(**base, outcome="deployed", checks=checks,
                                  live_commit=target.commit)
            self._prune(state)
            return record

        log.warning("%s %s failed (%s); rolling back", target.branch, target.commit[:7], error)
        inflight["phase"] = "rolling_back"
        self.store.save(state)
        outcome, live_commit, error = self._roll_back(state, error)
        self._quarantine(state, target, error)
        self.releases.discard(Path(inflight["dir"]))
        state.inflight = None
        step = "restart" if error.startswith("restart") else "checks"
        return self._record(**base, outcome=outcome, checks=checks, error=error, step=step,
                            journal=journal, live_commit=live_commit)

    def _roll_back(self, state: State, error: str) -> tuple[str, str | None, str]:
        """Put back what was live before the deploy; (outcome, live commit, error)."""
        inflight = _inflight(state)
        previous_dir = inflight["previous_dir"]
        self.releases.switch(Path(previous_dir) if previous_dir else None)
        if previous_dir is None:
            return "failed", None, f"{error}; nothing to roll back to"
        ok, _, rollback_error, _ = self._restart_and_verify()
        if ok:
            return "rolled_back", inflight["previous_commit"], error
        return ("failed", inflight["previous_commit"],
                f"{error}; the previous release does not verify either ({rollback_error})")

    def _restart_and_verify(self) -> tuple[bool, list[dict], str | None, list[str]]:
        """Restart Ghost and run the checks: (ok, check results, error, journal tail)."""
        cfg = self.config
        try:
            self.ghost.restart()
        except DeployError as exc:
            return False, [], exc.message, self.ghost.journal_tail()
        results = run_checks(cfg.checks, cfg.site.local_url, cfg.site.public_url,
                             cfg.ghost.verify_seconds, sleep=self.sleep)
        checks = [r.to_dict() for r in results]
        failed = [r for r in results if not r.ok]
        if not failed:
            return True, checks, None, []
        error = "checks failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed)
        return False, checks, error, self.ghost.journal_tail()

    def _recover(self, state: State) -> DeployRecord | None:
        """Finish a deploy that a killed run left between switch and verdict."""
        inflight = state.inflight
        if not inflight:
            return None
        live = self.releases.live()
        target = Target(inflight["branch"], inflight["commit"], inflight.get("version"),
                        selection.parse_version(inflight["version"])
                        if inflight.get("version") else None)
        started = datetime.fromisoformat(inflight["started_at"])
        base = dict(trigger="recovery", target=target,
                    previous_commit=inflight.get("previous_commit"), started=started,
                    cards=inflight.get("cards", []), uncarded=inflight.get("uncarded_commits", []),
                    rewritten=False)
        new_dir = Path(inflight["dir"])
        log.warning("a run was interrupted while deploying %s; recovering", target.commit[:7])
        if inflight.get("phase") == "verifying" and live == new_dir.resolve():
            return self._verify_or_roll_back(state, **base)
        if inflight.get("phase") == "rolling_back":
            outcome, live_commit, error = self._roll_back(state, "interrupted while rolling back")
            self._quarantine(state, target, error)
            self.releases.discard(new_dir)
            state.inflight = None
            return self._record(state, **base, outcome=outcome, error=error, step="checks",
                                live_commit=live_commit)
        # Killed before the switch took effect: the old release is still live. Nothing to record;
        # the normal cycle deploys the target again.
        self.releases.discard(new_dir)
        state.inflight = None
        self.store.save(state)
        return None

    # -- recording -----------------------------------------------------------------------
    def _record(self, state: State, *, trigger: str, target: Target,
                previous_commit: str | None, outcome: str, started: datetime,
                cards: list[str] | None = None, uncarded: list[str] | None = None,
                rewritten: bool = False, checks: list[dict] | None = None,
                error: str | None = None, step: str | None = None,
                journal: list[str] | None = None, live_commit: str | None = None) -> DeployRecord:
        finished = self.now()
        record = DeployRecord(
            trigger=trigger, branch=target.branch, version=target.version,
            commit=target.commit, previous_commit=previous_commit, outcome=outcome,
            started_at=clock.iso(started), finished_at=clock.iso(finished),
            cards=cards or [], uncarded_commits=uncarded or [], checks=checks or [],
            error=error, site=self.config.site.name, live_commit=live_commit, step=step,
            journal_tail=journal or [], history_rewritten=rewritten,
            duration_ms=int((finished - started).total_seconds() * 1000),
        )
        state.add_record(record, self.config.agent.history)
        if state.pending and state.pending.get("commit") == target.commit:
            state.pending = None
        self.store.save(state)
        log.log(logging.INFO if outcome == "deployed" else logging.ERROR,
                "%s %s %s%s", outcome, target.branch, target.commit[:7],
                f": {error}" if error else "")
        self._publish(state)
        self.notifier.deployed(record)
        return record

    def _quarantine(self, state: State, target: Target, reason: str) -> None:
        state.quarantine[target.commit] = {"branch": target.branch, "reason": reason[:500],
                                           "at": clock.iso(self.now())}

    def _prune(self, state: State) -> None:
        keep = self.config.deploy.keep
        del state.releases[keep:]
        self.store.save(state)
        self.releases.prune(Path(r.dir) for r in state.releases)

    def _publish(self, state: State) -> None:
        """Write the ci-cd files. A failure here is logged, never fails the deploy."""
        site = self.config.site
        current = state.current
        doc = publish.build_document(
            site=site.name, flag=site.flag, now=self.now(), public_url=site.public_url,
            current=({"branch": current.branch, "commit": current.commit,
                      "version": current.version, "since": current.since} if current else None),
            pending=state.pending, deploys=state.history,
            extra={"hold": state.hold} if state.hold else None,
        )
        try:
            publish.publish(site.ci_cd_dir, doc)
        except OSError as exc:
            log.error("cannot write the ci-cd files in %s: %s", site.ci_cd_dir, exc.strerror)


def _inflight(state: State) -> dict:
    if state.inflight is None:  # pragma: no cover - a programming error
        raise RuntimeError("no deploy in flight")
    return state.inflight


def _target_for(branch: str, commit: str, flag: str) -> Target:
    if selection.is_release_flag(flag):
        version, _ = selection.release_version(branch, flag[:-1])
        if version:
            return Target(branch, commit, version, selection.parse_version(version))
    return Target(branch, commit)


def _outcome_of(record: DeployRecord) -> Outcome:
    short = record.commit[:7]
    if record.outcome == "deployed":
        return Outcome(f"deployed {record.branch} {short}", record, 0)
    return Outcome(f"{record.outcome} {record.branch} {short}: {record.error}", record, 1)
