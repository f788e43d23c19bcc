"""Slack messages: a DeployRecord, a pending target or a host's problem -> a Block Kit
payload with a plain-text fallback. Pure: no I/O, no clock; every string of a payload passes
through agent.redact last (_finish).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from agent.config import CardsConfig, SiteConfig
from agent.models import DeployRecord
from agent.redact import redact
from agent.text import cut

log = logging.getLogger("agent")

# --------------------------------------------------------------------------- message content

EMOJI = {
    "deployed": ":white_check_mark:",
    "rolled_back": ":leftwards_arrow_with_hook:",
    "failed": ":x:",
    "pending": ":hourglass_flowing_sand:",
}
LABEL = {"deployed": "deployed", "rolled_back": "rolled back", "failed": "failed",
         "pending": "pending"}
TRIGGER = {
    "manual": "manual deploy (ghost-agent deploy)",
    "rollback": "operator rollback (ghost-agent rollback)",
    "recovery": "recovery of an interrupted run",
}

JOURNAL_LINES = 15  # at most this many journal lines ...
JOURNAL_CHARS = 2500  # ... and this many characters in the code block
LINE_CHARS = 300  # one journal line is cut here
ERROR_CHARS = 1500
MAX_LISTED = 10  # checks and uncarded commits listed; the rest is counted
MAX_CARDS = 30

# Block Kit limits
HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000

_KNOWN_HOSTS = {
    "github.com": "github.com",
    "www.github.com": "github.com",
    "ssh.github.com": "github.com",  # ssh over port 443
    "gitlab.com": "gitlab.com",
    "www.gitlab.com": "gitlab.com",
    "altssh.gitlab.com": "gitlab.com",
    "bitbucket.org": "bitbucket.org",
    "www.bitbucket.org": "bitbucket.org",
    "altssh.bitbucket.org": "bitbucket.org",
}
_COMMIT_PATH = {"github.com": "commit", "gitlab.com": "-/commit", "bitbucket.org": "commits"}
_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")
_SCP = re.compile(r"^(?:[^@/:\s]+@)?(?P<host>[^@/:\s]+):(?P<path>[^\s]*)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\x1b\[[0-9;]*[A-Za-z]")


def commit_url(remote: str, commit: str) -> str | None:
    """The web page of `commit` when `remote` is on GitHub, GitLab or Bitbucket, else None.

    Accepts scp-like ssh (git@github.com:acme/site.git), ssh://, git:// and http(s) URLs, with
    or without .git; credentials and ports are dropped (the result only has host and path).
    """
    if not remote or not commit or not _HEX.fullmatch(commit):
        return None
    remote = remote.strip()
    if "://" in remote:
        try:
            parts = urlsplit(remote)
            host = (parts.hostname or "").lower()
        except ValueError:
            return None
        if parts.scheme.lower() not in ("ssh", "git+ssh", "ssh+git", "git", "http", "https"):
            return None
        path = parts.path
    else:
        match = _SCP.match(remote)
        if not match:
            return None
        host, path = match.group("host").lower(), match.group("path")
    canonical = _KNOWN_HOSTS.get(host)
    if canonical is None:
        return None
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    segments = path.split("/") if path else []
    if canonical == "gitlab.com":
        ok = len(segments) >= 2  # groups and subgroups
    else:
        ok = len(segments) == 2
    if not ok or not all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        return None
    return f"https://{canonical}/{'/'.join(segments)}/{_COMMIT_PATH[canonical]}/{commit.lower()}"


def card_url(board_url: str | None, card: str) -> str | None:
    """A card's link: board_url with "{card}" replaced (URL-quoted), else board_url itself."""
    if not board_url:
        return None
    if "{card}" in board_url:
        return board_url.replace("{card}", quote(card, safe=""))
    return board_url


def escape(text: Any) -> str:
    """Untrusted text for Slack mrkdwn: secrets masked, &, < and > escaped."""
    text = redact(_CONTROL.sub("", str(text)))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: Any) -> str:
    """Text for a plain_text element: secrets masked, control characters removed."""
    return redact(_CONTROL.sub("", str(text)))


def _link(url: str | None, label: str) -> str:
    """<url|label> (label already escaped); only the label when there is no URL."""
    if not url:
        return label
    safe = redact(url)
    for char, code in (("|", "%7C"), ("<", "%3C"), (">", "%3E"), (" ", "%20")):
        safe = safe.replace(char, code)
    return f"<{safe}|{label}>"


def short_sha(commit: str | None) -> str:
    """The 7-digit short form of a commit, or "none"."""
    return commit[:7] if commit else "none"


def _commit_md(remote: str, commit: str | None) -> str:
    if not commit:
        return "none"
    url = commit_url(remote, commit)
    label = f"`{escape(short_sha(commit))}`"
    return _link(url, label) if url else label


def _duration(record: DeployRecord) -> str | None:
    ms = record.duration_ms
    if ms is None:
        try:
            started = datetime.fromisoformat(record.started_at)
            finished = datetime.fromisoformat(record.finished_at)
            ms = int((finished - started).total_seconds() * 1000)
        except (TypeError, ValueError):
            return None
    if ms < 0:
        return None
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def _code_block(lines: list[str]) -> str:
    """The last journal lines in a ``` block: at most JOURNAL_LINES lines / JOURNAL_CHARS."""
    kept = [cut(escape(line.rstrip()), LINE_CHARS) for line in lines[-JOURNAL_LINES:]]
    kept = [line.replace("```", "`\u200b`\u200b`") for line in kept]
    while kept and sum(len(line) + 1 for line in kept) > JOURNAL_CHARS:
        kept.pop(0)
    return "```\n" + "\n".join(kept) + "\n```"


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_CHARS)}}


def _header(text: str) -> dict:
    return {"type": "header",
            "text": {"type": "plain_text", "text": cut(text, HEADER_CHARS), "emoji": True}}


def _fields(fields: list[str]) -> dict:
    return {"type": "section",
            "fields": [{"type": "mrkdwn", "text": cut(f, FIELD_CHARS)} for f in fields[:10]]}


def _ci_cd_context(site: SiteConfig, extra: list[str]) -> dict:
    elements = []
    base = (site.ci_cd_url or "").rstrip("/")
    if base:
        links = " · ".join(_link(f"{base}/{name}", name) for name in ("ci-cd.html", "ci-cd.txt"))
        elements.append({"type": "mrkdwn", "text": f"History: {links}"})
    elements += [{"type": "mrkdwn", "text": cut(e, FIELD_CHARS)} for e in extra]
    if not elements:
        elements.append({"type": "mrkdwn", "text": escape(site.name)})
    return {"type": "context", "elements": elements[:10]}


def build_message(record: DeployRecord, *, site: SiteConfig, cards: CardsConfig,
                  remote: str) -> dict:
    """The Slack payload for one deploy record: {"text": fallback, "blocks": [...]}."""
    outcome = record.outcome
    emoji = EMOJI.get(outcome, ":grey_question:")
    label = LABEL.get(outcome, outcome)
    site_name = record.site or site.name
    short = short_sha(record.commit)
    duration = _duration(record)
    failed = outcome != "deployed"

    branch = f"`{escape(record.branch)}`"
    if record.version:
        branch += f" · version {escape(record.version)}"
    commit = _commit_md(remote, record.commit)
    commit += (f" (was {_commit_md(remote, record.previous_commit)})"
               if record.previous_commit else " (first deploy)")
    fields = [
        f"*Site*\n{escape(site_name)} · flag `{escape(site.flag)}`",
        f"*Branch*\n{branch}",
        f"*Commit*\n{commit}",
        f"*Duration*\n{duration or 'unknown'}",
    ]
    if failed:
        fields.append(f"*Live now*\n{_commit_md(remote, record.live_commit)}")
        if record.step:
            fields.append(f"*Failed at*\n{escape(record.step)}")
    if record.trigger and record.trigger != "poll":
        fields.append(f"*Trigger*\n{escape(TRIGGER.get(record.trigger, record.trigger))}")

    blocks: list[dict] = [_header(_plain(f"{emoji} {site_name}: {label}")), _fields(fields)]

    if record.error:
        blocks.append(_section(f"*Error*\n{cut(escape(record.error), ERROR_CHARS)}"))

    if record.cards:
        linked = [_link(card_url(cards.board_url, c), escape(c)) for c in record.cards[:MAX_CARDS]]
        more = len(record.cards) - MAX_CARDS
        text = ", ".join(linked) + (f" and {more} more" if more > 0 else "")
        blocks.append(_section(f"*Cards* {text}"))
    else:
        blocks.append(_section("*Cards* no cards"))

    if record.uncarded_commits:
        count = len(record.uncarded_commits)
        shas = ", ".join(f"`{escape(short_sha(c))}`" for c in record.uncarded_commits[:MAX_LISTED])
        more = count - MAX_LISTED
        noun = "commit" if count == 1 else "commits"
        blocks.append(_section(f":warning: {count} {noun} without a card: {shas}"
                               + (f" and {more} more" if more > 0 else "")))
    if record.history_rewritten:
        blocks.append(_section(":warning: the branch history was rewritten (force-push) since "
                               f"{_commit_md(remote, record.previous_commit)}"))

    if record.checks:
        lines = [_check_line(c) for c in record.checks[:MAX_LISTED]]
        more = len(record.checks) - MAX_LISTED
        if more > 0:
            lines.append(f"… and {more} more")
        blocks.append(_section("*Checks*\n" + "\n".join(lines)))
    elif record.step == "build":
        blocks.append(_section("*Checks* none ran (the build failed)"))

    validation = record.validation or {}
    warnings = [f for f in validation.get("warnings") or [] if isinstance(f, dict)]
    if warnings:
        codes = ", ".join(f"`{escape(str(f.get('code')))}`" for f in warnings[:MAX_LISTED])
        more = len(warnings) - MAX_LISTED
        blocks.append(_section(f"*gscan* {len(warnings)} warning(s): {codes}"
                               + (f" and {more} more" if more > 0 else "")))
    if record.journal_tail:
        shown = min(len(record.journal_tail), JOURNAL_LINES)
        blocks.append(_section(f"*Journal* (last {shown} lines)\n"
                               + _code_block(list(record.journal_tail))))

    finished = f"finished {escape(record.finished_at)}" if record.finished_at else None
    blocks.append(_ci_cd_context(site, [finished] if finished else []))

    # Plain-text fallback (notifications, screen readers): one or two lines.
    version = f" {escape(record.version)}" if record.version else ""
    line1 = (f"{emoji} {escape(site_name)}: {label} {escape(record.branch)}{version} "
             f"{escape(short)}" + (f" in {duration}" if duration else ""))
    if failed:
        line2 = cut(escape(record.error or "no error recorded"), 300)
        line2 += f" (live now: {escape(short_sha(record.live_commit))})"
    else:
        line2 = ("cards: " + escape(", ".join(record.cards[:MAX_CARDS]))) if record.cards \
            else "no cards"
        if record.uncarded_commits:
            line2 += f"; :warning: {len(record.uncarded_commits)} uncarded commit(s)"
    return _finish({"text": f"{line1}\n{line2}", "blocks": blocks})


def _check_line(check: dict) -> str:
    ok = bool(check.get("ok"))
    name = escape(check.get("name") or "check")
    status = check.get("status")
    status_text = escape(status) if status is not None else "no answer"
    ms = check.get("ms")
    timing = f" · {escape(ms)} ms" if ms is not None else ""
    if ok:
        return f":white_check_mark: `{name}` {status_text}{timing} · ok"
    error = check.get("error")
    reason = f": {cut(escape(error), 300)}" if error else ""
    return f":x: `{name}` {status_text}{timing} · *fail*{reason}"


def build_pending_message(site: SiteConfig, pending: dict, *, remote: str = "") -> dict:
    """The Slack payload for a target that waits (for the window, or in quarantine)."""
    emoji = EMOJI["pending"]
    branch = str(pending.get("branch") or "?")
    commit = pending.get("commit")
    reason = str(pending.get("reason") or "waiting")
    version = pending.get("version")
    branch_md = f"`{escape(branch)}`" + (f" · version {escape(version)}" if version else "")
    fields = [
        f"*Site*\n{escape(site.name)} · flag `{escape(site.flag)}`",
        f"*Branch*\n{branch_md}",
        f"*Commit*\n{_commit_md(remote, commit)}",
        f"*Why*\n{cut(escape(reason), 500)}",
    ]
    blocks = [_header(_plain(f"{emoji} {site.name}: pending")), _fields(fields),
              _ci_cd_context(site, [])]
    text = (f"{emoji} {escape(site.name)}: pending {escape(branch)} {escape(short_sha(commit))}\n"
            f"{cut(escape(reason), 300)}")
    return _finish({"text": text, "blocks": blocks})


def _finish(payload: Any) -> Any:
    """A last pass over every string of the payload: nothing registered as secret survives."""
    if isinstance(payload, str):
        return redact(payload)
    if isinstance(payload, dict):
        return {k: _finish(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [_finish(v) for v in payload]
    return payload


def build_alert_message(site: SiteConfig, text: str) -> dict:
    """The Slack payload for a problem of the host that needs an operator's eye."""
    body = cut(escape(text), 500)
    blocks = [_header(_plain(f":warning: {site.name}: problem")), _section(body),
              _ci_cd_context(site, [])]
    return _finish({"text": f":warning: {escape(site.name)}: {body}", "blocks": blocks})
