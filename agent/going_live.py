"""Going live: what stands between a staged release and its readers.

Before the switch, gscan checks the release (agent/validate.py) and the site settings files
it carries go to Ghost (agent/site_settings.py); after it, Ghost serves the release by a
theme activation where it can, else a restart (agent/activation.py), and the checks run.
A theme Ghost refuses at activation is switched back and recorded like a failed validation.

GoingLive is mixed into agent.cycle.Agent, whose parts it uses: config, ghost, golive,
admin, releases, store, sleep, and the steps _record, _quarantine, _problem and _passed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path

from agent import failpoints, site_settings, validate
from agent.activation import GoLive
from agent.checks import run_checks
from agent.errors import DeployError, HostError
from agent.ghost_admin import AdminError, Rejected
from agent.models import Attempt, DeployRecord
from agent.state import State
from agent.validate import ValidationFailed, Validator

log = logging.getLogger("agent")


class GoingLive:
    def validator(self) -> tuple[Validator | None, str]:
        """(gscan's validator or None, one line saying which and where, or why it is off).
        Found once, on first use: a poll with nothing to deploy never looks."""
        if self._validator is None:
            cfg = self.config.ghost
            self._validator = validate.discover(cfg.install_dir, cfg.validate, cfg.unit,
                                                self.ghost.working_directory, self.ghost.node,
                                                self.config.agent.state_dir / "tmp")
        return self._validator

    def _validate(self, staging: Path, attempt: Attempt) -> Attempt:
        """gscan on the staged release, before anything goes live: its findings go into the
        attempt. Raises ValidationFailed (fatal errors: the commit's fault) or HostError
        (validate = true and gscan cannot run: tried again later)."""
        validator, why = self.validator()
        if validator is None:
            if self.config.ghost.validate:
                raise HostError(f"cannot validate: {why}")
            return attempt
        try:
            validation = validator.check(staging)
        except HostError as exc:
            if self.config.ghost.validate:
                raise
            # validate unset means "when gscan is there": one that cannot run is skipped, or
            # every release would wait on it
            log.warning("%s; deploying without validation ([ghost] validate = true would "
                        "wait for it instead)", exc.message)
            return attempt
        if not validation.ok:
            raise ValidationFailed(validation)
        return replace(attempt, validation=validation.to_dict())

    def _upload_settings(self, state: State, release: Path, attempt: Attempt) -> Attempt:
        """routes.yaml and redirects that differ from what Ghost holds go to it, before the
        switch (Ghost keeps its files when it refuses new ones). Raises Rejected,
        DeployError (a configured file is missing) or HostError (see site_settings)."""
        files = site_settings.configured(self.config.deploy.routes, self.config.deploy.redirects)
        if not files or self.admin is None:
            return attempt
        try:
            sent = site_settings.sync(self.admin, files, release, state.settings_sent)
        finally:
            if state.settings_sent:  # what Ghost took, even when a later file was refused
                self.store.save(state)
        return replace(attempt, settings=[f.name for f in sent])

    def _restore_settings(self, state: State, release: Path | None) -> str | None:
        """Undoing a release puts `release`'s routes and redirects back where Ghost took
        others since; why that failed, or None."""
        files = site_settings.configured(self.config.deploy.routes, self.config.deploy.redirects)
        if not files or self.admin is None or release is None:
            return None
        try:
            site_settings.sync(self.admin, files, release, state.settings_sent)
        except (DeployError, HostError) as exc:
            log.error("cannot put the previous routes or redirects back: %s", exc.message)
            return exc.message
        except OSError as exc:
            log.error("cannot put the previous routes or redirects back: %s", exc)
            return str(exc)
        return None

    def _undo_settings(self, state: State, sent_before: dict[str, str]) -> None:
        """A release that stops before its switch gives Ghost back the live release's files,
        if it sent any."""
        if state.settings_sent != sent_before:
            self._restore_settings(state, self.releases.live())

    def _refused(self, state: State, attempt: Attempt, exc: Rejected) -> DeployRecord:
        """Ghost refused to activate the new theme: it still serves the previous one, so the
        live link goes back to it and nothing is restarted; the commit is quarantined."""
        inflight = state.in_flight()
        previous = Path(inflight.previous_dir) if inflight.previous_dir else None
        self.releases.switch(previous)
        self._restore_settings(state, previous)
        if self.admin is not None and previous is not None:
            # Ghost read the refused files while it checked them: have it read the old again
            with contextlib.suppress(AdminError):
                self.admin.activate_theme(self.releases.live_path.name)
        self.releases.discard(Path(inflight.dir))
        state.inflight = None
        error = f"validate failed: {exc.message}"
        self._quarantine(state, attempt.target, error)
        return self._record(state, attempt, outcome="failed", step="validate", error=error,
                            live_commit=attempt.previous_commit)

    def _admin_said(self, state: State) -> None:
        """What the Admin API key could do, the last time it was tried, in `status`."""
        if self.golive is None or self.golive.admin is None:
            return
        if self.golive.admin_error:
            self._problem(state, "admin", f"{self.golive.admin_error}: Ghost was restarted "
                                          "instead of activating the theme")
        elif self.golive.activated:
            self._passed(state, "admin")

    def _go_live(self, before: Path | None) -> str:
        """Make Ghost serve the release the live link points at (`before`: what it served):
        "activate" or "restart". Raises Rejected or DeployError (see activation.GoLive)."""
        golive = self.golive or GoLive(self.ghost, None, self.releases.live_path.name)
        return golive.go(self.releases.live(), before)

    def _restart_and_verify(self, before: Path | None = None
                            ) -> tuple[bool, list[dict], str | None, list[str]]:
        """Make Ghost serve the live link's release and run the checks: (ok, check results,
        error, journal tail). A theme Ghost refuses is a failure like a failed restart."""
        try:
            self._go_live(before)
        except DeployError as exc:
            return False, [], exc.message, self.ghost.journal_tail()
        return self._verify()

    def _verify(self) -> tuple[bool, list[dict], str | None, list[str]]:
        cfg = self.config
        results = run_checks(cfg.checks, cfg.site.local_url, cfg.site.public_url,
                             cfg.ghost.verify_seconds, sleep=self.sleep)
        failpoints.hit("during-checks")
        checks = [r.to_dict() for r in results]
        failed = [r for r in results if not r.ok]
        if not failed:
            return True, checks, None, []
        error = "checks failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed)
        return False, checks, error, self.ghost.journal_tail()
