"""Where deploy records go besides the state and the ci-cd files: Slack, Trello, the console.

A notifier never fails a deploy nor hides its real error: every call is guarded here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.models import DeployRecord

log = logging.getLogger("agent")


class Notifier:
    """The interface; the base class does nothing."""

    def deployed(self, record: DeployRecord) -> None:
        """One call per release and outcome."""

    def pending(self, site: str, pending: dict) -> None:
        """One call per target that waits (e.g. for the window)."""

    def alert(self, site: str, kind: str, text: str) -> None:
        """A problem of the host an operator should know of; the caller says it once per kind."""

    def send(self, message: dict, summary: str) -> None:
        """Any other message ({"text", "blocks"}), e.g. the fleet summary; Slack only."""

    def deliver(self, budget: float | None = None) -> int:
        """Send what waits in a spool; returns how many were sent."""
        return 0

    def problem(self) -> str | None:
        """A lasting problem an operator must fix (shown by `status`)."""
        return None


class Fanout(Notifier):
    def __init__(self, notifiers: Iterable[Notifier] = ()):
        self.notifiers = list(notifiers)

    def deployed(self, record: DeployRecord) -> None:
        self._each("deployed", record)

    def pending(self, site: str, pending: dict) -> None:
        self._each("pending", site, pending)

    def alert(self, site: str, kind: str, text: str) -> None:
        self._each("alert", site, kind, text)

    def send(self, message: dict, summary: str) -> None:
        self._each("send", message, summary)

    def deliver(self, budget: float | None = None) -> int:
        return sum(self._each("deliver", budget) or [0])

    def problem(self) -> str | None:
        problems = [p for p in (self._each("problem") or []) if p]
        return "; ".join(problems) or None

    def _each(self, method: str, *args) -> list:
        results = []
        for notifier in self.notifiers:
            call = getattr(notifier, method, None)
            if call is None:
                continue  # e.g. Trello has no spool and no summaries
            try:
                results.append(call(*args))
            except Exception as exc:  # noqa: BLE001 - a notifier must never break a deploy
                log.warning("%s.%s failed: %s", type(notifier).__name__, method,
                            type(exc).__name__)
        return [r for r in results if r is not None]


def from_config(config) -> Notifier:
    """The notifiers the config asks for."""
    notifiers: list[Notifier] = []
    if config.slack:
        from agent.slack_outbox import SlackNotifier

        notifiers.append(SlackNotifier(config.slack, site=config.site, cards=config.cards,
                                       remote=config.git.remote,
                                       spool_dir=config.agent.state_dir / "slack-spool"))
    if config.trello:
        from agent.trello import TrelloNotifier

        notifiers.append(TrelloNotifier(config.trello, site=config.site))
    return Fanout(notifiers)
