"""Trello (optional): comment on each card a deploy carries, and optionally label it.

Cards are found by their ID (e.g. "B321") as a whole word in the card's title on the
configured board. Everything here is best effort: a Trello problem is one warning line on
the "agent" logger and never affects a deploy; deployed() never raises.

The key and token are Trello's query-string auth. They are never put into a log line or a
message: requests' exceptions carry the full URL with its query string, so their text is
never used; the warnings are built here from the operation and the status alone.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from agent.config import SiteConfig, TrelloConfig
from agent.models import DeployRecord
from agent.redact import redact, register_secret

log = logging.getLogger("agent")

MAX_CARDS = 50  # Trello cards updated per deploy, at most: keeps the time a deploy spends bounded
ERROR_CHARS = 200  # the error in a comment is cut to this many characters
_RELEASE_SEPARATORS = "-/_."

_WHY = {
    401: "unauthorized: check the [trello] key and token",
    403: "forbidden: the token has no access to this board",
    404: "not found: check the [trello] board",
    429: "rate limited by Trello",
}


class _Stop(Exception):
    """A Trello request failed: stop calling Trello for this record. Holds the warning text."""


class TrelloNotifier:
    """A Notifier (see agent.cycle) that reports deploys on the Trello cards they carry."""

    def __init__(self, trello: TrelloConfig, *, site: SiteConfig,
                 session: requests.Session | None = None) -> None:
        self.trello = trello
        self.site = site
        self.session = session if session is not None else requests.Session()
        self._base = trello.api_url.rstrip("/")
        self._host = urlsplit(self._base).hostname or "Trello"  # no userinfo, no query
        # config.py registers them too; a config built in code must be masked all the same.
        register_secret(trello.key)
        register_secret(trello.token)

    def __repr__(self) -> str:
        return f"TrelloNotifier(board={self.trello.board!r}, api_url={self._base!r})"

    # -- Notifier ------------------------------------------------------------------------
    def deployed(self, record: DeployRecord) -> None:
        """Comment on each card of the record (and label it when deployed). Never raises."""
        try:
            ids = _unique(record.cards)
            if ids:
                self._deployed(record, ids)
        except _Stop as stop:
            log.warning("trello: %s; no cards updated for this deploy", stop)
        except Exception as exc:  # noqa: BLE001 - a notifier never fails a deploy
            log.warning("trello: unexpected %s; cards not updated for this deploy",
                        type(exc).__name__)

    def pending(self, site: str, pending: dict) -> None:
        """Nothing goes to Trello while a deploy waits for its window."""

    # -- the work ------------------------------------------------------------------------
    def _deployed(self, record: DeployRecord, ids: list[str]) -> None:
        board = self.trello.board
        listed = self._call(
            "GET", f"/boards/{quote(board, safe='')}/cards", f"list the cards of board {board}",
            params={"fields": "id,name,idLabels", "filter": "open"}, want_json=True)
        cards = _parse_cards(listed, f"list the cards of board {board}")

        targets: dict[str, tuple[str, dict[str, Any]]] = {}  # trello id -> (card ID, card)
        missing: list[str] = []
        for card_id in ids:
            word = _whole_word(card_id)
            found = [card for card in cards if word.search(card["name"])]
            if not found:
                missing.append(card_id)
            for card in found:
                targets.setdefault(card["id"], (card_id, card))
        if missing:
            log.warning("trello: %s not found among the open cards of board %s",
                        _plural(missing, "card"), board)
        todo = list(targets.values())
        if len(todo) > MAX_CARDS:
            skipped = todo[MAX_CARDS:]
            log.warning("trello: %d cards match; updating the first %d only, skipping %s",
                        len(todo), MAX_CARDS, ", ".join(_card_names(skipped)))
            todo = todo[:MAX_CARDS]
        if not todo:
            return

        label_id = None
        if record.outcome == "deployed" and self.trello.label:
            label_id = self._label_id(self.trello.label)

        text = comment_text(record, record.site or self.site.name)
        done = 0
        for index, (card_id, card) in enumerate(todo):
            try:
                self._call("POST", f"/cards/{quote(card['id'], safe='')}/actions/comments",
                           f"comment on card {card_id}", data={"text": text})
                done += 1
                if label_id and label_id not in card["idLabels"]:
                    self._call("POST", f"/cards/{quote(card['id'], safe='')}/idLabels",
                               f"add label {self.trello.label!r} to card {card_id}",
                               data={"value": label_id})
            except _Stop as stop:
                rest = _card_names(todo[index + 1:])
                tail = f"; skipped {', '.join(rest)}" if rest else ""
                log.warning("trello: %s; stopped after %d of %d card(s)%s",
                            stop, done, len(todo), tail)
                return
        log.info("trello: commented on %s", ", ".join(_card_names(todo)))

    def _label_id(self, name: str) -> str | None:
        """The id of the board's label called `name` (exact, else ignoring case), or None."""
        board = self.trello.board
        operation = f"list the labels of board {board}"
        labels = self._call("GET", f"/boards/{quote(board, safe='')}/labels", operation,
                            params={"fields": "id,name", "limit": "1000"}, want_json=True)
        if not isinstance(labels, list):
            raise _Stop(f"{operation}: unexpected response")
        usable = [lb for lb in labels
                  if isinstance(lb, dict) and isinstance(lb.get("id"), str)
                  and isinstance(lb.get("name"), str)]
        for same in (lambda a: a == name, lambda a: a.casefold() == name.casefold()):
            for label in usable:
                if same(label["name"]):
                    return label["id"]
        log.warning("trello: no label %r on board %s; commenting without it", name, board)
        return None

    def _call(self, method: str, path: str, operation: str, *,
              params: dict[str, str] | None = None, data: dict[str, str] | None = None,
              want_json: bool = False) -> Any:
        """One request; raise _Stop with a message naming the operation, never the secrets."""
        query = {"key": self.trello.key, "token": self.trello.token, **(params or {})}
        timeout = self.trello.timeout_seconds
        try:
            response = self.session.request(method, self._base + path, params=query, data=data,
                                            timeout=timeout)
        except requests.Timeout:
            raise _Stop(f"{operation}: timed out after {timeout:g}s") from None
        except requests.ConnectionError:
            raise _Stop(f"{operation}: cannot connect to {self._host}") from None
        except requests.RequestException as exc:
            raise _Stop(f"{operation}: request failed ({type(exc).__name__})") from None
        status = response.status_code
        if not 200 <= status < 300:
            why = _WHY.get(status) or ("Trello server error" if status >= 500 else None)
            raise _Stop(f"{operation}: HTTP {status}" + (f" ({why})" if why else ""))
        if not want_json:
            return None
        try:
            return response.json()
        except ValueError:
            raise _Stop(f"{operation}: HTTP {status} but the body is not valid JSON") from None


# --------------------------------------------------------------------------- pure helpers


def comment_text(record: DeployRecord, site: str) -> str:
    """ "Deployed to staging1 1.3.22 (abc1234): deployed", "… rolled back: <short error>"."""
    where = [site]
    branch, version = record.branch, record.version
    if branch and not branch.startswith("("):  # "(commit abc1234)" for a deploy of a bare sha
        # a release branch named after the site says nothing the version does not
        bare = branch.replace(version, "").rstrip(_RELEASE_SEPARATORS) if version else None
        if bare != site:
            where.append(branch)
    if version and version not in where[-1]:
        where.append(version)
    meta = record.commit[:7] + (", manual" if record.trigger == "manual" else "")
    head = f"Deployed to {' '.join(where)} ({meta})"
    if record.outcome == "deployed":
        return f"{head}: deployed"
    words = record.outcome.replace("_", " ")
    error = short_error(record.error)
    return f"{head}: {words}: {error}" if error else f"{head}: {words}"


def short_error(error: str | None) -> str:
    """The first line of an error, secrets masked, whitespace collapsed, cut to ERROR_CHARS."""
    if not error:
        return ""
    line = next((ln for ln in error.splitlines() if ln.strip()), "")
    line = " ".join(redact(line).split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


def _whole_word(card_id: str) -> re.Pattern[str]:
    """B321 in "[B321] fix" and "B321: x", not in "B3210" or "AB321". Case-sensitive."""
    return re.compile(r"(?<![0-9A-Za-z_])" + re.escape(card_id) + r"(?![0-9A-Za-z_])")


def _parse_cards(listed: Any, operation: str) -> list[dict[str, Any]]:
    if not isinstance(listed, list):
        raise _Stop(f"{operation}: unexpected response")
    cards = []
    for card in listed:
        if isinstance(card, dict) and isinstance(card.get("id"), str) \
                and isinstance(card.get("name"), str):
            labels = card.get("idLabels")
            cards.append({"id": card["id"], "name": card["name"],
                          "idLabels": labels if isinstance(labels, list) else []})
    return cards


def _unique(cards: list[str]) -> list[str]:
    return list(dict.fromkeys(c for c in cards if isinstance(c, str) and c.strip()))


def _card_names(todo: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return list(dict.fromkeys(card_id for card_id, _ in todo))


def _plural(items: list[str], noun: str) -> str:
    return f"{noun}{'s' if len(items) != 1 else ''} {', '.join(items)}"
