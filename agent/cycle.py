"""One pass of the agent: load state, look at the remote, decide, deploy or roll back, record.

This is the only module that composes the side-effect modules; they never import each other.
Every deploy ends in one DeployRecord that feeds the state, the ci-cd files and the notifier.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from agent import clock, failpoints, publish, selection, window
from agent.activation import GoLive
from agent.cards import release_cards
from agent.config import Config
from agent.errors import CommandError, DeployError, HostError, RemoteError, TemporaryError
from agent.ghost_admin import GhostAdmin, Rejected
from agent.going_live import GoingLive
from agent.healing import Healing
from agent.models import (Attempt, DeployRecord, Hold, Inflight, Pending, Quarantined, Release,
                          Retry, Seen, Target)
from agent.notifiers import Fanout, Notifier
from agent.releases import Releases
from agent.remote import RemoteCache
from agent.service import GhostService
from agent.state import State, StateStore
from agent.validate import ValidationFailed, Validator

log = logging.getLogger("agent")


PENDING_REASONS = ("waiting", "quarantined", "held", "canary", "retrying")
# Problems Slack is told of (once per kind until they clear); a remote that is down for a
# poll or two is only shown in `status`.
ALERTED_KINDS = ("host", "internal", "publish", "live")
ADMIN_TIMEOUT = 30.0  # seconds for one Admin API call (an activation takes 0.1-0.5 s)
# An operator's command (deploy --ref, rollback, hold, release) waits this long for the step the
# service is in (a poll, a deploy) to finish, instead of failing at once with exit 75.
OPERATOR_LOCK_WAIT = 300  # seconds
RETRY_MAX_SECONDS = 900  # the longest wait before a commit that met a host fault is retried


class Interrupted(TemporaryError):
    """A stop was requested before the live site was touched; nothing changed."""


@dataclass
class Outcome:
    """What one cycle did, for the CLI's message and exit status."""

    message: str
    record: DeployRecord | None = None
    exit_code: int = 0


@dataclass
class Agent(GoingLive, Healing):
    config: Config
    store: StateStore
    remote: RemoteCache
    releases: Releases
    ghost: GhostService
    notifier: Notifier = field(default_factory=Fanout)
    now: Callable[[], datetime] = clock.now
    stop_requested: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = time.sleep
    hostname: str = field(default_factory=socket.gethostname)  # spreads a fleet in the window
    golive: GoLive | None = None  # None: restart Ghost (from_config sets the Admin API up)
    admin: GhostAdmin | None = None  # Ghost's Admin API, with [ghost] admin_api_key
    _canary_cache: tuple | None = field(default=None, repr=False)
    _validator: tuple[Validator | None, str] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config, **kwargs) -> Agent:
        state_dir = config.agent.state_dir
        if "notifier" not in kwargs:
            from agent import notifiers

            kwargs["notifier"] = notifiers.from_config(config)
        ghost = GhostService(config.ghost.unit, config.ghost.restart_timeout_seconds,
                             config.ghost.journal_lines)
        key = config.ghost.admin_api_key
        admin = GhostAdmin(config.site.local_url, config.site.public_url, key,
                           ADMIN_TIMEOUT) if key else None
        return cls(
            config=config,
            store=StateStore(state_dir),
            remote=RemoteCache(state_dir / "cache" / "remote.git", config.git.remote,
                               config.git.timeout_seconds, config.git.ssh_key),
            releases=Releases(config.deploy.releases_dir, config.deploy.path),
            ghost=ghost,
            golive=GoLive(ghost, admin, config.deploy.path.name, config.ghost.reload),
            admin=admin,
            **kwargs,
        )

    # -- the commands --------------------------------------------------------------------
    def once(self, trigger: str = "poll") -> Outcome:
        """Look at the remote and deploy if a target is due.

        Raises RemoteError/HostError (temporary, exit 75), LockBusy (75), StateError (78).
        """
        with self.store:
            state = self._load()
            loaded = state.to_dict()
            if trigger == "webhook":
                state.last_webhook_at = clock.iso(self.now())  # shown by `status`
            recovered = self._recover(state)
            self._catch_up(state)
            self._heal_live(state)
            try:
                snapshot = self.remote.heads(selection.heads_patterns(self.config.site.flag))
            except RemoteError as exc:
                self._problem(state, "remote", exc.message)
                self._save_quietly(state)
                raise
            failpoints.hit("after-ls-remote")
            self._passed(state, "remote")
            picked = selection.select(snapshot, self.config.site.flag)
            unreadable = [*picked.unreadable, *snapshot.undecodable]
            for branch in sorted(set(unreadable) - set(state.unreadable)):
                log.warning("branch %s: its version cannot be read; it is never deployed", branch)
            state.unreadable = unreadable
            target = picked.target
            if target and (not state.seen or state.seen.commit != target.commit):
                # "at" is when this head was first seen: how long a target has waited.
                state.seen = Seen(target.branch, target.commit, clock.iso(self.now()))
            if state.retry and (target is None or state.retry.commit != target.commit):
                state.retry = None  # the branch moved on: the new head starts afresh
            reason = self._why_not(state, target) or self._canaries_say(target)
            if reason is not None:
                return self._settle(state, target, reason, recovered,
                                    changed=state.to_dict() != loaded)
            if self.stop_requested():
                raise Interrupted("stop requested; nothing deployed")
            record = self._deploy(state, target, trigger)
            return _outcome_of(record)

    def report_problem(self, kind: str, message: str) -> None:
        """Record a problem met outside a cycle's own handling (e.g. an unexpected error in
        `run`) for `status`, and tell Slack once per kind. Never raises."""
        try:
            with self.store:
                state = self.store.load()
                self._problem(state, kind, message)
                self.store.save(state)
        except Exception as exc:  # noqa: BLE001 - reporting must not become a second failure
            log.warning("cannot record the problem %s: %s", kind, exc)

    def deploy_ref(self, ref: str | None) -> Outcome:
        """Deploy now, outside the window and despite quarantine (an operator's override).

        When the commit is not the head the flag follows, that head is held back (like after
        a rollback) until its branch moves, so the next poll does not undo the operator."""
        with self.store.waiting(OPERATOR_LOCK_WAIT):
            state = self._load()
            self._recover(state)
            self._catch_up(state)
            target = self._resolve_ref(ref)
            state.quarantine.pop(target.commit, None)
            state.retry = None
            record = self._deploy(state, target, "manual")
            if record.outcome == "deployed":
                self._hold_back_head(state, target)
            return _outcome_of(record)

    def _hold_back_head(self, state: State, deployed: Target) -> None:
        flag = self.config.site.flag
        try:
            head = selection.select(self.remote.heads(selection.heads_patterns(flag)), flag).target
        except RemoteError:
            return
        if head and head.commit != deployed.commit:
            state.quarantine[head.commit] = Quarantined(
                head.branch, f"held back: {deployed.commit[:7]} was deployed by hand; "
                             f"{head.branch} deploys again when it moves", clock.iso(self.now()))
            self.store.save(state)

    def rollback(self) -> Outcome:
        """Make the previous verified release live again: switch, restart, verify."""
        with self.store.waiting(OPERATOR_LOCK_WAIT):
            state = self._load()
            self._recover(state)
            self._catch_up(state)
            current, previous = state.current, state.previous
            if current is None or previous is None or not Path(previous.dir).is_dir():
                raise DeployError("no previous release on disk to roll back to")
            started = self.now()
            self.releases.switch(Path(previous.dir))
            self._restore_settings(state, Path(previous.dir))
            ok, checks, error, journal = self._restart_and_verify(Path(current.dir))
            if ok:
                state.releases.pop(0)
                # The branch head would come straight back on the next poll otherwise.
                state.quarantine[current.commit] = Quarantined(
                    current.branch, "rolled back by an operator", clock.iso(self.now()))
                outcome, live = "rolled_back", previous
            else:
                self.releases.switch(Path(current.dir))
                self._restore_settings(state, Path(current.dir))
                ok_again, _, _, _ = self._restart_and_verify(Path(previous.dir))
                error = f"previous release {previous.commit[:7]} did not verify ({error}); " + (
                    f"{current.commit[:7]} is live again" if ok_again
                    else f"{current.commit[:7]} is live again but does not verify either")
                outcome, live = "failed", current
            attempt = Attempt("rollback", Target(previous.branch, previous.commit,
                                                 previous.version), current.commit, started)
            record = self._record(
                state, attempt, outcome=outcome, checks=checks, error=None if ok else error,
                live_commit=live.commit, journal=journal if not ok else [],
                step=None if ok else "checks")
            if ok:
                return Outcome(f"rolled back to {previous.branch} {previous.commit[:7]}", record)
            return _outcome_of(record)

    def hold(self, reason: str | None, by: str | None) -> Outcome:
        """Pause automatic deploys on this host (deploy --ref still works)."""
        with self.store.waiting(OPERATOR_LOCK_WAIT):
            state = self.store.load()
            state.hold = Hold(clock.iso(self.now()), by, reason)
            state.notified_pending = None
            self.store.save(state)
            self._publish(state)
            self._announce(state, "automatic deploys held by an operator"
                           + (f": {reason}" if reason else ""))
            return Outcome("automatic deploys held")

    def release(self) -> Outcome:
        """Resume automatic deploys; the next cycle deploys what is due."""
        with self.store.waiting(OPERATOR_LOCK_WAIT):
            state = self.store.load()
            if state.hold is None:
                return Outcome("automatic deploys were not held")
            state.hold = None
            state.notified_pending = None
            if state.pending and state.pending.reason.startswith("held"):
                state.pending = None
            self.store.save(state)
            self._publish(state)
            self._announce(state, "automatic deploys resumed by an operator")
            return Outcome("automatic deploys resumed")

    def _announce(self, state: State, reason: str) -> None:
        """Tell Slack about a change of this host's mode, naming the target it last saw."""
        seen = state.seen
        self.notifier.pending(self.config.site.name, {
            "branch": seen.branch if seen else "-", "commit": seen.commit if seen else "",
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
            if why.live_path and why.live_path != self.releases.live_path_signature():
                state.quarantine.pop(target.commit)  # the operator changed the live path
            elif why.reason.startswith("held back"):
                return f"held back: {target.commit[:7]}: {why.reason}"
            else:
                return f"quarantined: {target.commit[:7]} failed ({why.reason})"
        if state.retry and state.retry.commit == target.commit:
            next_at = clock.parse_time(state.retry.next_at)
            if next_at and self.now() < next_at:
                return (f"retrying {target.commit[:7]} at {clock.iso(next_at)} after a host "
                        f"fault: {state.retry.cause}")
        if target.version_key and current and current.version and self._same_flag(current):
            current_key = selection.parse_version(current.version)
            if current_key and target.version_key < current_key:
                # The newest release branch was deleted: a deleted branch changes nothing live.
                return f"newest branch {target.branch} is older than live {current.branch}"
        if state.hold:
            return f"held: automatic deploys paused since {state.hold.at}" + (
                f" ({state.hold.reason})" if state.hold.reason else "")
        decision = window.decide(self.config.window, self.now(), self.window_offset())
        if not decision.open:
            return decision.reason
        return None

    def _same_flag(self, release: Release) -> bool:
        """Whether the live release came from a branch of this host's flag: after the flag was
        changed (staging1* -> prod-asterix*), the new flag's versions are not compared with
        the old one's."""
        flag = self.config.site.flag
        return selection.is_release_flag(flag) and \
            selection.release_version(release.branch, flag[:-1])[0] is not None

    def window_offset(self) -> timedelta:
        """This host's delay inside the window (see window.spread_offset)."""
        return window.spread_offset(self.config.window, self.hostname)

    def _canaries_say(self, target: Target) -> str | None:
        """None when the canary sites have run the target's version long enough (or there is
        no [promotion]); else why not. The answers are looked at here, at most once a minute
        per version and only for a target otherwise due; the verdict is promotion.evaluate's,
        a pure function of them."""
        promotion = self.config.promotion
        if not promotion or not target.version:
            return None
        from agent.promotion import evaluate, fetch_all

        now = self.now()
        cached = self._canary_cache
        if cached and cached[0] == target.version and (now - cached[1]).total_seconds() < 60:
            answers = cached[2]
        else:
            answers = fetch_all(list(promotion.canary_urls), promotion.timeout_seconds)
            self._canary_cache = (target.version, now, answers)
        healthy, why = evaluate(target.version, answers, bake_minutes=promotion.bake_minutes,
                                healthy_share=promotion.healthy_share, now=now)
        if healthy:
            log.info("%s", why)
            return None
        return why

    def _settle(self, state: State, target: Target | None, reason: str,
                recovered: DeployRecord | None, changed: bool) -> Outcome:
        """Nothing to deploy: keep `pending` current and publish only when it changed."""
        pending = None
        if target and reason.startswith(PENDING_REASONS):
            pending = Pending(target.branch, target.commit, reason)
        pending_changed = pending != state.pending
        state.pending = pending
        # One Slack message per waiting target, however often its reason is re-worded.
        announce = pending is not None and reason.startswith(("waiting", "held")) \
            and state.notified_pending != target.commit
        if announce:
            state.notified_pending = target.commit
        published = True
        if pending_changed or recovered:
            published = self._publish(state)
        if changed or pending_changed or announce or not published:  # a no-op poll writes nothing
            self.store.save(state)
        if announce:
            self.notifier.pending(self.config.site.name, pending.to_dict())
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
        current = state.current
        attempt = Attempt(trigger, target, current.commit if current else None, self.now())
        log.info("deploying %s %s (trigger %s)", target.branch, target.commit[:7], trigger)

        odd = self.releases.live_path_problem()
        if odd:  # before staging: nothing is staged again until the path or the commit changes
            self._quarantine(state, target, odd, live_path=self.releases.live_path_signature())
            return self._record(state, attempt, outcome="failed", step="switch", error=odd,
                                live_commit=attempt.previous_commit)
        attempt = self._fetch(state, attempt)
        sent_before = dict(state.settings_sent)  # what Ghost holds before this release
        if cfg.cards.require and attempt.uncarded and trigger != "manual":
            shas = ", ".join(sha[:7] for sha in attempt.uncarded[:10])
            error = (f"{len(attempt.uncarded)} commit(s) without a card ID ({shas}); "
                     "[cards] require = true")
            self._quarantine(state, target, error)
            return self._record(state, attempt, outcome="failed", step="cards", error=error,
                                live_commit=attempt.previous_commit)

        staging = None
        step = "stage"
        try:
            staging = self.releases.stage(target.commit, attempt.started,
                                          lambda d: self.remote.export(target.commit, d))
            step = "build"
            self.releases.build(staging, cfg.deploy.build, cfg.deploy.build_timeout_seconds)
            step = "validate"
            attempt = self._validate(staging, attempt)
            step = "settings"
            attempt = self._upload_settings(state, staging, attempt)
        except HostError as exc:
            self._discard(staging)
            self._undo_settings(state, sent_before)
            self._host_fault(state, target, exc)
        except (DeployError, CommandError) as exc:
            self._discard(staging)
            self._undo_settings(state, sent_before)  # a file Ghost took before the failure
            if isinstance(exc, ValidationFailed):
                attempt = replace(attempt, validation=exc.validation.to_dict())
            error = f"{step} failed: {exc.message}"
            self._quarantine(state, target, error)
            self._passed(state, "host")
            return self._record(state, attempt, outcome="failed", step=step, error=error,
                                live_commit=attempt.previous_commit)
        except OSError as exc:
            self._discard(staging)
            self._host_fault(state, target, HostError(f"{step} failed: {exc}"))
        state.retry = None
        self._passed(state, "host")
        if self.stop_requested():
            self._discard(staging)
            self._undo_settings(state, sent_before)
            raise Interrupted("stop requested before the switch; the live site is untouched")

        release_dir = self.releases.final_name(staging)
        try:
            live_before = self.releases.live() or self.releases.adopt_existing(attempt.started)
            # Recorded before the rename: a run killed from here on leaves a directory that
            # the next run knows of, and finishes or removes.
            state.inflight = Inflight(
                target.branch, target.commit, target.version, str(release_dir),
                str(live_before) if live_before else None, attempt.previous_commit, trigger,
                clock.iso(attempt.started), attempt.cards, attempt.uncarded,
                staging=str(staging))
            self.store.save(state)
            failpoints.hit("after-inflight-record")
            self.releases.finish(staging)
            failpoints.hit("after-rename")
        except DeployError as exc:  # e.g. a hand-installed theme that cannot be adopted
            self._discard(staging)
            self._discard(release_dir)
            state.inflight = None
            self._undo_settings(state, sent_before)
            self._quarantine(state, target, exc.message)
            return self._record(state, attempt, outcome="failed", step="switch",
                                error=exc.message, live_commit=attempt.previous_commit)
        except BaseException:
            self._discard(staging)  # nothing may pile up in releases_dir
            self._discard(release_dir)
            state.inflight = None
            self._save_quietly(state)
            raise
        try:
            self.releases.switch(release_dir)
        except (OSError, DeployError) as exc:  # the old link is still in place
            self._discard(release_dir)
            state.inflight = None
            self._save_quietly(state)
            if isinstance(exc, OSError):
                self._host_fault(state, target, HostError(f"switch failed: {exc}"))
            raise
        failpoints.hit("after-switch")
        return self._verify_or_roll_back(state, attempt)

    def _fetch(self, state: State, attempt: Attempt) -> Attempt:
        """Fetch the target and read its commits' cards. A failure here is a problem shown in
        `status` naming the commit that waits; it clears when the fetch passes."""
        target = attempt.target
        try:
            self.remote.fetch(target.branch, target.commit)
            commits, rewritten = self.remote.log(target.commit, attempt.previous_commit)
        except (RemoteError, DeployError) as exc:
            message = f"{exc.message}; {target.branch} {target.commit[:7]} waits"
            self._problem(state, "fetch", message)
            self._save_quietly(state)
            raise exc if isinstance(exc, TemporaryError) else RemoteError(exc.message) from None
        self._passed(state, "fetch")
        cards, uncarded = release_cards(commits, re.compile(self.config.cards.pattern))
        return Attempt(attempt.trigger, target, attempt.previous_commit, attempt.started,
                       cards, uncarded, rewritten)

    def _host_fault(self, state: State, target: Target, exc: HostError) -> None:
        """Not the commit's fault: no quarantine; the same commit is tried again later, the
        wait doubling from poll_seconds up to RETRY_MAX_SECONDS. Always raises exc."""
        same = state.retry is not None and state.retry.commit == target.commit
        attempts = (state.retry.attempts if same else 0) + 1
        delay = min(max(self.config.git.poll_seconds, 1.0) * 2 ** (attempts - 1),
                    RETRY_MAX_SECONDS)
        state.retry = Retry(target.commit, attempts, exc.message,
                            clock.iso(self.now() + timedelta(seconds=delay)))
        self._problem(state, "host", f"{exc.message} ({target.branch} {target.commit[:7]} is "
                                     f"tried again in {delay:g}s)")
        self._save_quietly(state)
        raise exc

    def _verify_or_roll_back(self, state: State, attempt: Attempt) -> DeployRecord:
        inflight = state.in_flight()
        target = attempt.target
        try:
            how = self._go_live(Path(inflight.previous_dir) if inflight.previous_dir else None)
        except Rejected as exc:
            return self._refused(state, attempt, exc)
        except DeployError as exc:
            ok, checks, error, journal = False, [], exc.message, self.ghost.journal_tail()
        else:
            attempt = replace(attempt, reload=how)
            self._admin_said(state)
            ok, checks, error, journal = self._verify()
        if ok:
            state.releases.insert(0, Release(target.commit, target.branch, target.version,
                                             inflight.dir, clock.iso(self.now())))
            state.quarantine.pop(target.commit, None)
            state.inflight = None
            record = self._record(state, attempt, outcome="deployed", checks=checks,
                                  live_commit=target.commit)
            self._prune(state)
            return record

        log.warning("%s %s failed (%s); rolling back", target.branch, target.commit[:7], error)
        inflight.phase = "rolling_back"
        self.store.save(state)
        outcome, live_commit, error = self._roll_back(state, error)
        self._quarantine(state, target, error)
        self.releases.discard(Path(inflight.dir))
        state.inflight = None
        step = "restart" if error.startswith("restart") else "checks"
        return self._record(state, attempt, outcome=outcome, checks=checks, error=error,
                            step=step, journal=journal, live_commit=live_commit)

    def _roll_back(self, state: State, error: str) -> tuple[str, str | None, str]:
        """Put back what was live before the deploy; (outcome, live commit, error)."""
        inflight = state.in_flight()
        previous_dir = inflight.previous_dir
        self.releases.switch(Path(previous_dir) if previous_dir else None)
        failpoints.hit("during-switch-back")
        if previous_dir is None:
            return "failed", None, f"{error}; nothing to roll back to"
        unrestored = self._restore_settings(state, Path(previous_dir))
        if unrestored:
            error = f"{error}; the previous settings files are not back: {unrestored}"
        ok, _, rollback_error, _ = self._restart_and_verify(Path(inflight.dir))
        if ok:
            return "rolled_back", inflight.previous_commit, error
        return ("failed", inflight.previous_commit,
                f"{error}; the previous release does not verify either ({rollback_error})")

    # -- problems ------------------------------------------------------------------------
    def _problem(self, state: State, kind: str, message: str) -> None:
        """Show a problem in `status`; Slack hears of each alerted kind once until it clears.
        (The log line is the caller's: most raise, and the CLI or the service loop says it.)"""
        state.problems.pop(kind, None)
        state.problems[kind] = message  # the newest last
        state.problem_kind, state.last_problem = kind, message
        if kind.startswith(ALERTED_KINDS) and kind not in state.alerted:
            state.alerted.append(kind)
            self.notifier.alert(self.config.site.name, kind, message)

    def _passed(self, state: State, *kinds: str) -> None:
        """The step behind these kinds of problem worked: clear them."""
        for kind in kinds:
            state.problems.pop(kind, None)
        state.alerted = [k for k in state.alerted if k not in kinds]
        if state.problem_kind in kinds or (state.problem_kind and not state.problems):
            state.problem_kind, state.last_problem = next(
                reversed(state.problems.items()), (None, None))

    def _save_quietly(self, state: State) -> None:
        """Save when a failure is already on its way up: a full disk must not hide it."""
        try:
            self.store.save(state)
        except HostError as exc:
            log.warning("%s", exc.message)

    def _discard(self, path: Path | None) -> None:
        if path is not None:
            self.releases.discard(path)

    # -- recording -----------------------------------------------------------------------
    def _record(self, state: State, attempt: Attempt, *, outcome: str,
                checks: list[dict] | None = None, error: str | None = None,
                step: str | None = None, journal: list[str] | None = None,
                live_commit: str | None = None) -> DeployRecord:
        """The one result of an attempt: saved with the state first, then published and
        announced; what a kill interrupts after the save is caught up by the next run."""
        finished = self.now()
        target = attempt.target
        record = DeployRecord(
            trigger=attempt.trigger, branch=target.branch, version=target.version,
            commit=target.commit, previous_commit=attempt.previous_commit, outcome=outcome,
            started_at=clock.iso(attempt.started), finished_at=clock.iso(finished),
            cards=attempt.cards, uncarded_commits=attempt.uncarded, checks=checks or [],
            error=error, site=self.config.site.name, live_commit=live_commit, step=step,
            journal_tail=journal or [], history_rewritten=attempt.rewritten,
            validation=attempt.validation, reload=attempt.reload, settings=attempt.settings,
            duration_ms=int((finished - attempt.started).total_seconds() * 1000),
        )
        state.add_record(record, self.config.agent.history)
        if state.pending and state.pending.commit == target.commit:
            state.pending = None
        state.unpublished = True
        state.unannounced.append(record.key)
        self.store.save(state)
        log.log(logging.INFO if outcome == "deployed" else logging.ERROR,
                "%s %s %s%s", outcome, target.branch, target.commit[:7],
                f": {error}" if error else "")
        self._publish(state)
        self.notifier.deployed(record)
        state.unannounced.remove(record.key)
        self._save_quietly(state)
        return record

    def _quarantine(self, state: State, target: Target, reason: str,
                    live_path: str | None = None) -> None:
        # With live_path, lifted when the operator changes the live path.
        state.quarantine[target.commit] = Quarantined(target.branch, reason[:500],
                                                      clock.iso(self.now()), live_path)

    def _prune(self, state: State) -> None:
        keep = self.config.deploy.keep
        del state.releases[keep:]
        self.store.save(state)
        # Besides what the state keeps: the newest release directory before the live one is
        # the previous release by the disk's account (a state file lost or edited by hand).
        dirs = self.releases.finished()
        self.releases.prune([*(Path(r.dir) for r in state.releases), *dirs[-2:]])

    def _publish(self, state: State) -> bool:
        """Write the ci-cd files; True when they were written. A failure here never fails the
        deploy: it is a problem shown in `status` and the next cycle writes them again."""
        site = self.config.site
        current = state.current
        doc = publish.build_document(
            site=site.name, flag=site.flag, now=self.now(), public_url=site.public_url,
            current=({"branch": current.branch, "commit": current.commit,
                      "version": current.version, "since": current.since} if current else None),
            pending=state.pending.to_dict() if state.pending else None,
            deploys=publish.public_deploys(state.history, self.config.publish.journal_tail),
            extra={"hold": state.hold.to_dict()} if state.hold else None,
        )
        try:
            publish.publish(site.ci_cd_dir, doc)
        except OSError as exc:
            log.error("cannot write the ci-cd files in %s: %s", site.ci_cd_dir,
                      exc.strerror or exc)
            self._problem(state, "publish", f"cannot write the ci-cd files in {site.ci_cd_dir}: "
                                            f"{exc.strerror or exc}")
            state.unpublished = True
            return False
        state.unpublished = False
        self._passed(state, "publish")
        return True


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
