"""Slack delivery: one message per release and outcome, through a spool.

SlackNotifier writes each message (built by agent.slack_messages) to a spool in the state
directory first and then tries to deliver the spool, oldest first, within
slack.timeout_seconds: a Slack outage never slows or fails a deploy. Messages that could not be
sent wait for the next deliver() (the service calls it every poll), with exponential backoff,
Retry-After for a 429, and no retries at all after a permanent refusal (bad token, unknown
channel, removed webhook) until the [slack] settings change. A deploy message carries its
record's key: a record announced again after a kill is not sent twice.

Secrets (the webhook URL, the token) are registered with agent.redact and never logged: every
line written here goes through redact(), and slack_sdk gets a private logger that nothing can
lower below CRITICAL (at DEBUG it logs the full webhook URL).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import clock, failpoints
from agent.clock import parse_time
from agent.atomic import write_json_atomic
from agent.config import CardsConfig, SiteConfig, SlackConfig
from agent.models import DeployRecord
from agent.redact import redact, register_secret
from agent.slack_messages import (build_alert_message, build_message, build_pending_message,
                                  short_sha)
from agent.text import cut

log = logging.getLogger("agent")


# --------------------------------------------------------------------------- delivery results

BACKOFF_FIRST = 5.0
BACKOFF_MAX = 600.0
RETRY_AFTER_MAX = 3600.0  # a Retry-After beyond an hour is treated as an hour
SHORT_RETRY_AFTER = 2.0  # a 429 asking for at most this is waited out within the budget
MAX_SPOOL = 500
SENT_KEYS = 200  # keys of sent deploy messages remembered, so a record is announced once


def _key_of(path: Path) -> str | None:
    """The record key in a spool file's name (…-deployed-<16 hex>.json), or None."""
    match = re.search(r"-([0-9a-f]{16})\.json$", path.name)
    return match[1] if match else None


# Webhook answers: https://api.slack.com/messaging/webhooks#handling_errors
_WEBHOOK_PERMANENT = {
    "invalid_token", "no_service", "no_service_id", "no_team", "team_disabled",
    "channel_not_found", "channel_is_archived", "action_prohibited", "user_not_found",
    "posting_to_general_channel_denied", "invalid_auth", "not_authed", "token_revoked",
}
_API_PERMANENT = {
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "missing_scope", "channel_not_found", "not_in_channel", "is_archived",
    "restricted_action", "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel",
    "team_access_not_granted", "ekm_access_denied", "access_denied", "org_login_required",
    "two_factor_setup_required", "enterprise_is_restricted", "invalid_arg_name",
}
_API_TEMPORARY = {
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "team_added_to_org",
}
_HINTS = {
    "invalid_token": "the webhook's token is wrong or was revoked",
    "no_service": "the webhook was removed or its URL is wrong",
    "no_team": "the webhook's workspace no longer exists",
    "team_disabled": "the workspace is disabled",
    "channel_not_found": "the channel does not exist or the app cannot see it",
    "channel_is_archived": "the channel is archived",
    "is_archived": "the channel is archived",
    "action_prohibited": "an admin restricted posting to this channel",
    "invalid_auth": "the token is wrong",
    "not_authed": "no token was sent",
    "account_inactive": "the token's user or app was deactivated",
    "token_revoked": "the token was revoked",
    "token_expired": "the token expired",
    "not_in_channel": "invite the app to the channel (/invite)",
    "missing_scope": "the token lacks the chat:write scope",
}


@dataclass
class _Result:
    kind: str  # sent | temporary | permanent | drop
    detail: str = ""
    retry_after: float | None = None


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not headers:
        return None
    value = None
    for key, item in dict(headers).items():
        if str(key).lower() == "retry-after":
            value = item[0] if isinstance(item, (list, tuple)) and item else item
            break
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, 1.0), RETRY_AFTER_MAX)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport error."""
    reason = getattr(exc, "reason", None)
    if reason is not None and not isinstance(reason, str):
        exc = reason  # urllib's URLError wraps the socket error
        reason = None
    text = reason or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) or "timed out" in str(text):
        text = "timed out"
    return cut(redact(str(text)), 200)


def _classify_webhook(status: int, body: str, headers: Any) -> _Result:
    body = (body or "").strip()
    detail = f"{status} {cut(redact(body), 100)}".strip()
    if 200 <= status < 300:
        return _Result("sent", detail)
    if status == 429:
        return _Result("temporary", detail, _retry_after(headers))
    if status >= 500 or status == 408:
        return _Result("temporary", detail)
    if body in _WEBHOOK_PERMANENT or status in (401, 403, 404, 410):
        hint = _HINTS.get(body)
        return _Result("permanent", detail + (f" ({hint})" if hint else ""))
    return _Result("drop", detail)


def _classify_api(status: int, data: Any, headers: Any) -> _Result:
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    if status == 200 and isinstance(data, dict) and data.get("ok"):
        return _Result("sent", "ok")
    detail = f"{status} {cut(redact(error), 100)}".strip()
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return _Result("temporary", detail, _retry_after(headers))
    if status >= 500 or status == 408 or error in _API_TEMPORARY:
        return _Result("temporary", detail)
    if error in _API_PERMANENT or status in (401, 403, 404, 410):
        hint = _HINTS.get(error)
        return _Result("permanent", detail + (f" ({hint})" if hint else ""))
    return _Result("drop", detail)


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = redact(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken log call must not leak its arguments
            record.msg = "(slack_sdk log line withheld)"
        record.args = None
        return True


def _sdk_logger() -> logging.Logger:
    """The logger handed to slack_sdk's clients.

    slack_sdk logs the full webhook URL (a secret) whenever its logger's own level is DEBUG
    or NOTSET, and an ERROR line for every failed attempt that our own lines already report.
    This logger is not registered with logging.getLogger(), so no configuration can lower it;
    it stays at CRITICAL, redacts what it lets through and hands it on to "agent".
    """
    logger = logging.Logger("agent.slack_sdk", logging.CRITICAL)
    logger.parent = logging.getLogger("agent")
    logger.addFilter(_Redacting())
    return logger


# --------------------------------------------------------------------------- the notifier


class SlackNotifier:
    """Spool every message in spool_dir, then deliver the spool in order within a time budget."""

    STATE = "state.json"
    SENT = "sent.json"

    def __init__(self, slack: SlackConfig, *, site: SiteConfig, cards: CardsConfig, remote: str,
                 spool_dir: Path, now: Callable[[], datetime] = clock.now,
                 sleep: Callable[[float], None] = time.sleep, max_spool: int = MAX_SPOOL):
        self.slack = slack
        self.site = site
        self.cards = cards
        self.remote = remote
        self.spool_dir = Path(spool_dir)
        self.now = now
        self.sleep = sleep
        self.max_spool = max(1, int(max_spool))
        for secret in (slack.webhook_url, slack.token):
            register_secret(secret)
        if slack.webhook_url:
            # The path (/services/T…/B…/<secret>) and its last part are as secret as the URL.
            path = urlsplit(slack.webhook_url).path.strip("/")
            last = path.rsplit("/", 1)[-1]
            for part in (path, last):
                register_secret(part if len(part) >= 12 else None)
        material = "\0".join([slack.webhook_url or "", slack.token or "", slack.channel or ""])
        self.fingerprint = hashlib.sha256(material.encode("utf-8")).hexdigest()
        self._sdk_log = _sdk_logger()
        self._delivering = threading.Lock()  # one delivery at a time, in order
        self._spooling = threading.Lock()  # sequence numbers and the spool bound

    # -- the Notifier interface -----------------------------------------------------------
    def deployed(self, record: DeployRecord) -> None:
        """Spool the message for `record`, then deliver within slack.timeout_seconds."""
        try:
            message = build_message(record, site=self.site, cards=self.cards, remote=self.remote)
            summary = f"{record.outcome} {record.branch} {short_sha(record.commit)}"
        except Exception as exc:  # noqa: BLE001 - a notifier never raises into a deploy
            log.warning("slack: cannot build the message for %s: %s", short_sha(
                getattr(record, "commit", None)), redact(f"{type(exc).__name__}: {exc}"))
            return
        self._enqueue("deployed", message, summary, key=record.key)

    def alert(self, site: str, kind: str, text: str) -> None:
        """Spool a message about a problem of this host (a full disk, an internal error)."""
        try:
            message = build_alert_message(self.site, text)
        except Exception as exc:  # noqa: BLE001
            log.warning("slack: cannot build the alert: %s", redact(f"{type(exc).__name__}: {exc}"))
            return
        self._enqueue("alert", message, f"problem {kind}")

    def pending(self, site: str, pending: dict) -> None:
        """Spool the message for a pending target, then deliver within slack.timeout_seconds."""
        try:
            site_config = self.site if site == self.site.name else replace(self.site, name=site)
            message = build_pending_message(site_config, pending, remote=self.remote)
            summary = f"pending {pending.get('branch')} {short_sha(pending.get('commit'))}"
        except Exception as exc:  # noqa: BLE001
            log.warning("slack: cannot build the pending message: %s",
                        redact(f"{type(exc).__name__}: {exc}"))
            return
        self._enqueue("pending", message, summary)

    def send(self, message: dict, summary: str) -> None:
        """Spool any other message (e.g. the fleet report's summary) and deliver it."""
        self._enqueue("report", message, summary)

    # -- delivery ------------------------------------------------------------------------
    def deliver(self, budget: float | None = None) -> int:
        """Send spooled messages oldest first; stop at the first that fails. Never raises.

        budget bounds the whole call in seconds (None: no bound besides each request's
        slack.timeout_seconds). Returns how many messages Slack accepted.
        """
        started = time.monotonic()
        deadline = started + budget if budget is not None else math.inf
        wait = max(0.0, budget) if budget is not None else self.slack.timeout_seconds + 1.0
        try:
            if not self._delivering.acquire(timeout=wait):
                return 0  # another delivery (perhaps stuck on a slow Slack) is under way
        except Exception:  # noqa: BLE001
            return 0
        try:
            return self._deliver(deadline)
        except Exception as exc:  # noqa: BLE001 - never into a deploy
            log.warning("slack: delivery stopped: %s", redact(f"{type(exc).__name__}: {exc}"))
            return 0
        finally:
            self._delivering.release()

    def problem(self) -> str | None:
        """The permanent problem that stopped delivery (for `ghost-agent status`), or None."""
        try:
            state = self._load_state()
            if not state.get("problem") or state.get("fingerprint") != self.fingerprint:
                return None
            count = len(self._spooled())
            noun = "message waits" if count == 1 else "messages wait"
            return redact(f"{state['problem']}; {count} {noun} in {self.spool_dir}")
        except Exception:  # noqa: BLE001
            return None

    # -- internals -----------------------------------------------------------------------
    def _enqueue(self, kind: str, message: dict, summary: str, key: str | None = None) -> None:
        direct = None
        try:
            if key and self._known(key):
                return  # spooled or sent before a kill: a record is announced once
            self._spool(kind, message, summary, key)
        except Exception as exc:  # noqa: BLE001
            log.warning("slack: cannot spool the message in %s (%s); sending it once, unspooled",
                        self.spool_dir, redact(getattr(exc, "strerror", None) or str(exc)))
            direct = {"payload": message, "summary": summary}
        try:
            self._deliver_bounded(direct)
        except Exception as exc:  # noqa: BLE001
            log.warning("slack: %s", redact(f"{type(exc).__name__}: {exc}"))

    def _deliver_bounded(self, direct: dict | None) -> None:
        """Deliver in a worker thread and wait at most the budget: a hung Slack costs no more."""
        budget = float(self.slack.timeout_seconds)
        target = self.deliver if direct is None else self._send_direct
        args = (budget,) if direct is None else (direct, budget)
        worker = threading.Thread(target=target, args=args, name="slack-delivery", daemon=True)
        worker.start()
        worker.join(budget + 0.25)
        if worker.is_alive():
            log.info("slack: no answer within %gs; the message waits in the spool", budget)

    def _send_direct(self, message: dict, budget: float) -> None:
        try:
            result = self._send(message["payload"], budget)
            if result.kind != "sent":
                log.warning("slack: %s not delivered (%s)", message["summary"], result.detail)
        except Exception as exc:  # noqa: BLE001
            log.warning("slack: %s not delivered: %s", message["summary"],
                        redact(f"{type(exc).__name__}: {exc}"))

    def _known(self, key: str) -> bool:
        """Whether the message with this key waits in the spool or was sent already."""
        return key in self._sent_keys() or any(self.spool_dir.glob(f"[0-9]*-{key}.json"))

    def _sent_keys(self) -> list[str]:
        try:
            keys = json.loads((self.spool_dir / self.SENT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def _remember_sent(self, path: Path) -> None:
        """Note the key of a sent message before its file goes: a kill in between must not
        send it twice."""
        key = _key_of(path)
        if key:
            keys = self._sent_keys()
            keys.append(key)
            write_json_atomic(self.spool_dir / self.SENT, keys[-SENT_KEYS:], mode=0o600)

    def _spool(self, kind: str, message: dict, summary: str, key: str | None = None) -> Path:
        with self._spooling:
            self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.spool_dir.stat().st_mode & 0o077:
                os.chmod(self.spool_dir, 0o700)
            files = self._spooled()
            sequence = 1
            if files:
                try:
                    sequence = int(files[-1].name.split("-", 1)[0]) + 1
                except ValueError:
                    sequence = len(files) + 1
            moment = self._now()
            name = f"{sequence:09d}-{moment:%Y%m%dT%H%M%SZ}-{kind}" + (f"-{key}" if key else "")
            path = self.spool_dir / f"{name}.json"
            failpoints.hit("during-spool-write")
            write_json_atomic(path, {"kind": kind, "created_at": clock.iso(moment),
                                     "summary": summary, "payload": message}, mode=0o600)
            files.append(path)
            excess = len(files) - self.max_spool
            if excess > 0:
                for old in files[:excess]:
                    old.unlink(missing_ok=True)
                log.warning("slack: the spool holds more than %d messages; dropped the %d oldest",
                            self.max_spool, excess)
            return path

    def _now(self) -> datetime:
        moment = self.now()
        if moment.tzinfo is None:  # a naive clock is taken as UTC
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)

    def _spooled(self) -> list[Path]:
        try:
            return sorted(p for p in self.spool_dir.glob("[0-9]*.json") if p.is_file())
        except OSError:
            return []

    def _load_state(self) -> dict:
        try:
            data = json.loads((self.spool_dir / self.STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, state: dict) -> None:
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json_atomic(self.spool_dir / self.STATE, state, mode=0o600)

    def _deliver(self, deadline: float) -> int:
        state = self._load_state()
        if state.get("problem"):
            if state.get("fingerprint") == self.fingerprint:
                return 0  # reported once already; waits for the [slack] settings to change
            log.info("slack: the [slack] settings changed; retrying the spooled messages")
            state = {}
            self._save_state(state)
        was_failing = int(state.get("attempts") or 0) > 0
        sent = 0
        waited = False
        files = self._spooled()
        while files:
            path = files.pop(0)
            now = self._now()
            next_at = parse_time(state.get("next_attempt_at"))
            if next_at is not None and now < next_at:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            message = self._read(path)
            if message is None:
                continue
            if _key_of(path) in self._sent_keys():
                path.unlink(missing_ok=True)  # sent just before a kill
                continue
            result = self._send(message["payload"], min(self.slack.timeout_seconds, remaining))
            summary = str(message.get("summary") or path.name)
            if result.kind in ("sent", "drop"):
                self._remember_sent(path)
                path.unlink(missing_ok=True)
                if result.kind == "sent":
                    sent += 1
                    log.debug("slack: sent %s", summary)
                else:
                    log.warning("slack: Slack refused the message %s (%s); dropped it",
                                summary, result.detail)
                if state.get("attempts") or state.get("next_attempt_at"):
                    state = {}
                    self._save_state(state)
                if not files:
                    files = self._spooled()  # messages spooled meanwhile
                continue
            if result.kind == "permanent":
                where = ("the webhook" if self.slack.webhook_url
                         else f"chat.postMessage to {self.slack.channel}")
                problem = (f"Slack refused {where}: {result.detail}; not retrying until "
                           "[slack] changes")
                state = {"problem": redact(problem), "fingerprint": self.fingerprint,
                         "since": clock.iso(now), "attempts": 0, "next_attempt_at": None}
                self._save_state(state)
                log.warning("slack: %s", redact(problem))
                break
            attempts = int(state.get("attempts") or 0) + 1
            delay = min(BACKOFF_FIRST * 2 ** (attempts - 1), BACKOFF_MAX)
            if result.retry_after is not None:
                delay = result.retry_after
            next_at = now + timedelta(seconds=delay)
            state = {"attempts": attempts,
                     "next_attempt_at": next_at.astimezone(timezone.utc).isoformat(),
                     "last_error": result.detail, "retry_after": result.retry_after}
            self._save_state(state)
            short = (result.retry_after is not None and result.retry_after <= SHORT_RETRY_AFTER
                     and result.retry_after < deadline - time.monotonic() - 0.5)
            if short and not waited:
                # A short 429 pause fits in the budget: wait it out and try the same message.
                log.info("slack: rate limited; retrying in %gs", delay)
                self.sleep(delay)
                waited = True
                files.insert(0, path)
                continue
            queued = len(self._spooled())
            level = logging.WARNING if attempts == 1 else logging.INFO
            log.log(level, "slack: not delivered (%s); %d message(s) wait in the spool, next "
                    "attempt in %gs", result.detail, queued, delay)
            break
        if sent and was_failing:
            log.info("slack: Slack answers again; %d spooled message(s) delivered", sent)
        return sent

    def _read(self, path: Path) -> dict | None:
        try:
            message = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(message, dict) or not isinstance(message.get("payload"), dict):
                raise ValueError("not a spooled message")
            return message
        except FileNotFoundError:
            return None  # dropped by the spool bound meanwhile
        except (OSError, ValueError) as exc:
            log.warning("slack: unreadable spool file %s (%s); set aside", path.name,
                        redact(str(exc))[:200])
            try:
                path.rename(path.with_name(path.name + ".corrupt"))
            except OSError:
                path.unlink(missing_ok=True)
            return None

    def _send(self, payload: dict, timeout: float) -> _Result:
        """One request to Slack; never raises."""
        timeout = max(0.1, float(timeout))
        text = payload.get("text") or ""
        blocks = payload.get("blocks") or None
        try:
            if self.slack.webhook_url:
                from slack_sdk.webhook import WebhookClient

                client = WebhookClient(self.slack.webhook_url, timeout=timeout,  # type: ignore
                                       logger=self._sdk_log, retry_handlers=[])
                body = {"text": text, "unfurl_links": False, "unfurl_media": False}
                if blocks:
                    body["blocks"] = blocks
                response = client.send_dict(body)
                return _classify_webhook(int(response.status_code), str(response.body or ""),
                                         response.headers)
            from slack_sdk import WebClient
            from slack_sdk.errors import SlackApiError

            web = WebClient(token=self.slack.token, base_url=self.slack.api_url,
                            timeout=timeout, logger=self._sdk_log,  # type: ignore
                            retry_handlers=[])
            try:
                web.chat_postMessage(channel=self.slack.channel, text=text, blocks=blocks,
                                     unfurl_links=False, unfurl_media=False)
            except SlackApiError as exc:
                response = exc.response
                return _classify_api(int(response.status_code), response.data, response.headers)
            return _Result("sent", "ok")
        except Exception as exc:  # noqa: BLE001 - network errors, timeouts, anything: retry later
            return _Result("temporary", _describe(exc))

