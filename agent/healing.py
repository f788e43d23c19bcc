"""Healing: what the host says wins over what the agent remembers.

At the start of a cycle (and of every operator's command) the agent makes its memory agree
with the host again: state.json lost (take over the live release), the live release removed
by hand (export it again), records a killed run saved but did not publish or announce (catch
up), a deploy killed between switch and verdict (recover).

Healing is mixed into agent.cycle.Agent, whose parts it uses: config, store, releases,
remote, notifier and now(), and the steps _record, _problem, _passed, _save_quietly,
_discard, _restart_and_verify, _restore_settings, _verify_or_roll_back, _roll_back, _quarantine
and _publish.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from agent import selection
from agent.errors import AgentError
from agent.models import Attempt, DeployRecord, Release, Target
from agent.state import State

log = logging.getLogger("agent")


class Healing:
    def _load(self) -> State:
        """The state, or, when state.json is missing, what the disk says: see _take_over."""
        state = self.store.load()
        if state.current is None and state.inflight is None and not state.history:
            self._take_over(state)
        return state

    def _take_over(self, state: State) -> None:
        """state.json was moved aside: take over the release the live link points at (no
        redeploy, no restart) and rebuild the releases and the history from the release
        directories and the published ci-cd.json, so that rollback keeps working."""
        live = self.releases.live()
        if live is None or not live.is_dir():
            return
        doc = self._published()
        deploys = [d for d in doc.get("deploys") or [] if isinstance(d, dict)]
        current = doc.get("current") if isinstance(doc.get("current"), dict) else {}
        known = {d.get("commit"): d for d in reversed(deploys) if d.get("outcome") == "deployed"}
        if current.get("commit"):
            known[current["commit"]] = {**known.get(current["commit"], {}), **current}
        dirs = {}
        for entry in self.releases.finished():
            commit = next((c for c in known if isinstance(c, str)
                           and entry.name.endswith(f"-{c[:12]}")), None)
            if commit:
                dirs[entry.resolve()] = commit
        if live not in dirs:
            return  # a release no record names: the normal cycle deploys over it
        # The live one first, then the others newest first (their names start with the time).
        order = [live, *sorted((d for d in dirs if d != live), key=lambda d: d.name,
                               reverse=True)]
        state.releases = [
            Release(dirs[d], str(known[dirs[d]].get("branch") or "?"),
                    known[dirs[d]].get("version"), str(d),
                    str(known[dirs[d]].get("since") or known[dirs[d]].get("finished_at") or ""))
            for d in order]
        state.history = deploys[:self.config.agent.history]
        log.warning("%s was missing: took over the live release %s (%s) and rebuilt %d "
                    "release(s) and %d history record(s) from the disk and ci-cd.json",
                    self.store.path, state.releases[0].commit[:7], live.name,
                    len(state.releases), len(state.history))
        self.store.save(state)

    def _published(self) -> dict:
        """The ci-cd.json this host published last, or {} when it cannot be read."""
        try:
            doc = json.loads((self.config.site.ci_cd_dir / "ci-cd.json").read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _heal_live(self, state: State) -> None:
        """The live link must lead to a release directory that exists: when the live release
        was removed by hand, export the live commit again and put the site back."""
        current = state.current
        if current is None or state.inflight is not None:
            return
        live = self.releases.live()
        if live is not None and live.is_dir():
            return
        if live is None and self.releases.live_path.exists():
            return  # a plain directory or file: the deploy's own checks deal with it
        if live is not None and live.parent != self.releases.dir.resolve() \
                and Path(current.dir).resolve() != live:
            return  # a link the operator pointed elsewhere: live_path_problem names it
        log.warning("the live release %s is gone from %s; restoring %s %s", live or "",
                    self.releases.dir, current.branch, current.commit[:7])
        attempt = Attempt("repair", Target(current.branch, current.commit, current.version),
                          current.commit, self.now())
        restored = None
        try:
            if not Path(current.dir).is_dir():
                self.remote.fetch(current.branch, current.commit)
                restored = self.releases.stage(current.commit, attempt.started,
                                               lambda d: self.remote.export(current.commit, d))
                self.releases.build(restored, self.config.deploy.build,
                                    self.config.deploy.build_timeout_seconds)
                restored = self.releases.finish(restored)
                state.releases[0] = Release(current.commit, current.branch, current.version,
                                            str(restored), current.since)
            self.releases.switch(Path(state.releases[0].dir))
        except (AgentError, OSError) as exc:
            self._discard(restored)
            message = getattr(exc, "message", None) or str(exc)
            log.error("cannot restore the live release: %s", message)
            self._problem(state, "live", f"the live release of {current.commit[:7]} is gone "
                                         f"and cannot be restored: {message}")
            self._save_quietly(state)
            return
        ok, checks, error, journal = self._restart_and_verify(Path(state.releases[0].dir))
        self._passed(state, "live")
        self._record(state, attempt, outcome="deployed" if ok else "failed", checks=checks,
                     error=None if ok else f"restored the missing live release: {error}",
                     step=None if ok else "checks", journal=journal,
                     live_commit=current.commit)

    def _catch_up(self, state: State) -> None:
        """Finish what a killed run left undone after its record: the ci-cd files and the
        messages of records not yet announced."""
        if state.unpublished:
            self._publish(state)
            self._save_quietly(state)
        if state.unannounced:
            for data in list(state.history):
                record = DeployRecord.from_dict(data)
                if record.key in state.unannounced:
                    self.notifier.deployed(record)
            state.unannounced = []
            self._save_quietly(state)

    def _recover(self, state: State) -> DeployRecord | None:
        """Finish a deploy that a killed run left between switch and verdict."""
        inflight = state.inflight
        if not inflight:
            return None
        live = self.releases.live()
        target = Target(inflight.branch, inflight.commit, inflight.version,
                        selection.parse_version(inflight.version) if inflight.version else None)
        attempt = Attempt("recovery", target, inflight.previous_commit,
                          datetime.fromisoformat(inflight.started_at), inflight.cards,
                          inflight.uncarded_commits)
        new_dir = Path(inflight.dir)
        log.warning("a run was interrupted while deploying %s; recovering", target.commit[:7])
        if inflight.phase == "verifying" and live == new_dir.resolve():
            return self._verify_or_roll_back(state, attempt)
        if inflight.phase == "rolling_back":
            outcome, live_commit, error = self._roll_back(state, "interrupted while rolling back")
            self._quarantine(state, target, error)
            self.releases.discard(new_dir)
            state.inflight = None
            return self._record(state, attempt, outcome=outcome, error=error, step="checks",
                                live_commit=live_commit)
        # Killed before the switch took effect: the old release is still live (and gets its
        # routes and redirects back, if Ghost took the new ones). Nothing to record; the
        # normal cycle deploys the target again.
        self._restore_settings(state, self.releases.live())
        self.releases.discard(new_dir)
        if inflight.staging:
            self.releases.discard(Path(inflight.staging))
        state.inflight = None
        self.store.save(state)
        return None
