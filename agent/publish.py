"""The ci-cd files: ci-cd.json (for scripts), ci-cd.txt and ci-cd.html (for people).

All three are rendered from one document (see build_document) and written
atomically into `<content_dir>/files/` (agent.pages: the writer, CSS and page shell shared
with the fleet report). Every free-text value is passed through
agent.redact before it is written, whoever built the document.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.clock import aware, parse_time
from agent.pages import FILES, html_page, render_json, write_files
from agent.redact import redact
from agent.text import cut, one_line, short_commit
from agent.text import html_text as _e  # short: it wraps nearly every value in the page

SCHEMA = 1

ERROR_MAX = 300  # characters of an error kept on a ci-cd.txt line

_CORE_KEYS = ("schema", "site", "flag", "updated_at", "current", "pending", "deploys")
_SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
# Whitespace runs, and everything str.splitlines() would break on, plus control characters.
_OUTCOME_CLASS_RE = re.compile(r"[^a-z0-9_-]+")


# --------------------------------------------------------------------------- document


def redact_doc(obj: Any) -> Any:
    """A copy of `obj` with every string redacted (40-hex commit ids are kept as they are)."""
    if isinstance(obj, str):
        if _SHA_RE.fullmatch(obj):
            return obj
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_doc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_doc(v) for v in obj]
    return obj


def build_document(
    *,
    site: str,
    flag: str,
    current: dict | None,
    pending: dict | None,
    deploys: list[dict],
    now: datetime,
    public_url: str | None = None,
    extra: dict | None = None,
) -> dict:
    """The ci-cd.json document of the contract.

    `deploys` are DeployRecord.to_dict() dicts, newest first (kept in the given
    order). `extra` keys (e.g. "hold", "quarantine") are merged in; they cannot
    replace the contract's own keys. `now` without a zone is taken as UTC.
    The returned document is a redacted copy: the inputs are not modified.
    The keys' order is kept in the file and matters: the fleet report decodes a document
    only up to its first deploys record (agent.cicd_head), so what it reads comes first.
    """
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "site": site,
        "flag": flag,
        "updated_at": aware(now).isoformat(timespec="seconds"),
        "current": current,
        "pending": pending,
        "deploys": list(deploys),
    }
    if public_url:
        doc["public_url"] = public_url
    for key, value in (extra or {}).items():
        if key not in _CORE_KEYS:
            doc[key] = value
    return redact_doc(doc)


# --------------------------------------------------------------------------- helpers


def _utc(value: Any) -> str:
    """ISO time in UTC with a Z, e.g. 2026-11-26T14:00:03Z; unreadable times are shown as given."""
    dt = parse_time(value)
    if dt is None:
        return one_line(value) or "-"
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_ms(rec: dict) -> int | None:
    ms = rec.get("duration_ms")
    if isinstance(ms, (int, float)) and not isinstance(ms, bool):
        return int(ms)
    start, end = parse_time(rec.get("started_at")), parse_time(rec.get("finished_at"))
    if start and end and end >= start:
        return int((end - start).total_seconds() * 1000)
    return None


def _fmt_duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _branch_label(branch: Any, version: Any) -> str:
    label = one_line(branch) or "?"
    if version:
        label += f" ({one_line(version)})"
    return label


def _checks(rec: dict) -> list[dict]:
    checks = rec.get("checks") or []
    return [c for c in checks if isinstance(c, dict)]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _when(rec: dict) -> Any:
    return rec.get("finished_at") or rec.get("started_at")


def _deploys(doc: dict) -> list[dict]:
    return [d for d in (doc.get("deploys") or []) if isinstance(d, dict)]


# --------------------------------------------------------------------------- ci-cd.txt


def _validation(rec: dict) -> dict | None:
    """The record's gscan findings as {"fatal": [...], "warnings": [...]} of dicts, or None
    (a record from before validation, or from another agent, may hold anything)."""
    value = rec.get("validation")
    if not isinstance(value, dict):
        return None
    return {kind: [f for f in value.get(kind) or [] if isinstance(f, dict)]
            if isinstance(value.get(kind), list) else [] for kind in ("fatal", "warnings")}


def _txt_line(rec: dict, site: str) -> str:
    parts = [
        _utc(_when(rec)),
        one_line(rec.get("site")) or site or "?",
        _branch_label(rec.get("branch"), rec.get("version")),
        one_line(short_commit(rec.get("commit"))),
        one_line(rec.get("outcome")) or "?",
    ]
    cards = [one_line(c) for c in rec.get("cards") or []]
    parts.append("cards=" + (",".join(c for c in cards if c) or "none"))
    uncarded = rec.get("uncarded_commits") or []
    if uncarded:
        parts.append(f"uncarded={len(uncarded)}")
    checks = _checks(rec)
    if checks:
        passed = sum(1 for c in checks if c.get("ok"))
        parts.append(f"checks={passed}/{len(checks)}")
    else:
        parts.append("checks=none")
    duration = _fmt_duration(_duration_ms(rec))
    if duration:
        parts.append(duration)
    trigger = one_line(rec.get("trigger"))
    if trigger and trigger != "poll":
        parts.append(f"trigger={trigger}")
    if rec.get("history_rewritten"):
        parts.append("history=rewritten")
    if rec.get("reload"):
        parts.append(f"reload={one_line(rec.get('reload'))}")
    settings = [one_line(x) for x in rec.get("settings") or [] if isinstance(x, str)]
    if settings:
        parts.append("settings=" + ",".join(settings))
    validation = _validation(rec)
    if validation:
        parts.append(f"gscan={len(validation['fatal'])}fatal/{len(validation['warnings'])}warn")
    if rec.get("outcome") != "deployed" and rec.get("step"):
        parts.append(f"step={one_line(rec.get('step'))}")
    error = one_line(rec.get("error"))
    if error:
        parts.append("error=" + _quote(cut(error, ERROR_MAX)))
    return " ".join(p for p in parts if p)


def render_txt(doc: dict) -> str:
    """ci-cd.txt: a short '#' header, then one line per event, oldest first."""
    site = one_line(doc.get("site"))
    lines = [f"# ci-cd {site or '?'} (flag {one_line(doc.get('flag')) or '?'}) "
             f"updated {_utc(doc.get('updated_at'))}"]
    current = doc.get("current")
    if isinstance(current, dict) and current.get("commit"):
        lines.append(
            f"# live: {_branch_label(current.get('branch'), current.get('version'))} "
            f"{one_line(short_commit(current.get('commit')))} since {_utc(current.get('since'))}"
        )
    else:
        lines.append("# live: nothing deployed by the agent yet")
    pending = doc.get("pending")
    if isinstance(pending, dict) and pending:
        reason = one_line(pending.get("reason"))
        lines.append(
            f"# pending: {one_line(pending.get('branch')) or '?'} "
            f"{one_line(short_commit(pending.get('commit')))}" + (f" ({reason})" if reason else "")
        )
    else:
        lines.append("# pending: nothing")
    hold = doc.get("hold")
    if isinstance(hold, dict) and hold:
        lines.append(f"# HOLD: automatic deploys paused since {_utc(hold.get('at'))}"
                     + (f" by {one_line(hold.get('by'))}" if hold.get("by") else "")
                     + (f": {one_line(hold.get('reason'))}" if hold.get("reason") else ""))
    for rec in reversed(_deploys(doc)):
        lines.append(_txt_line(rec, site))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ci-cd.html


def _outcome_class(outcome: Any) -> str:
    cls = _OUTCOME_CLASS_RE.sub("", str(outcome or "unknown").lower())
    return cls or "unknown"


def _badge(outcome: Any) -> str:
    text = str(outcome or "unknown").replace("_", " ")
    return f'<span class="badge outcome-{_outcome_class(outcome)}">{_e(text)}</span>'


def _time(value: Any) -> str:
    if not value:
        return "-"
    return f'<time datetime="{_e(value)}">{_e(_utc(value))}</time>'


def _sha(commit: Any) -> str:
    if not commit:
        return "-"
    return f'<code class="sha" title="{_e(commit)}">{_e(short_commit(commit))}</code>'


def _safe_link(url: Any) -> str:
    text = redact(str(url or ""))
    if re.match(r"https?://", text, re.IGNORECASE):
        return f'<a href="{_e(text)}" rel="noopener noreferrer">{_e(text)}</a>'
    return _e(text)


_CSS = """
pre{white-space:pre-wrap;word-break:break-word;background:var(--card);padding:.5rem;
border-radius:6px;overflow-x:auto}
.glance{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr))}
.card,.deploy{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:.75rem}
.card h2{margin:0 0 .35rem;font-size:.8rem;text-transform:uppercase;letter-spacing:.05em;
color:var(--mute)}
.deploy{margin:.6rem 0;border-left-width:5px}
.deploy.outcome-deployed{border-left-color:var(--ok)}
.deploy.outcome-rolled_back{border-left-color:var(--warn)}
.deploy.outcome-failed{border-left-color:var(--bad)}
.deploy header{display:flex;flex-wrap:wrap;gap:.4rem .75rem;align-items:baseline}
.badge.outcome-deployed{background:var(--ok)}
.badge.outcome-rolled_back{background:var(--warn)}
.badge.outcome-failed{background:var(--bad)}
p.error{white-space:pre-wrap;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.9rem;margin:.4rem 0}
td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid var(--line)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .75rem;margin:.4rem 0}
dt{color:var(--mute)}dd{margin:0;overflow-wrap:anywhere}
summary{cursor:pointer}
"""


def _html_live(doc: dict) -> str:
    current = doc.get("current")
    if not isinstance(current, dict) or not current.get("commit"):
        body = '<p class="mute">nothing deployed by the agent yet</p>'
    else:
        version = current.get("version")
        body = (
            f'<p><strong>{_e(current.get("branch"))}</strong>'
            + (f' <span class="mute">v{_e(version)}</span>' if version else "")
            + f" {_sha(current.get('commit'))}</p>"
            f'<p class="meta">since {_time(current.get("since"))}</p>'
        )
    return f'<section id="live" class="card"><h2>Live</h2>{body}</section>'


def _html_pending(doc: dict) -> str:
    pending = doc.get("pending")
    if isinstance(pending, dict) and pending:
        reason = pending.get("reason")
        body = (
            f'<p><strong>{_e(pending.get("branch"))}</strong> {_sha(pending.get("commit"))}</p>'
            + (f'<p class="reason">{_e(reason)}</p>' if reason else "")
        )
    else:
        body = '<p class="mute">nothing pending</p>'
    hold = doc.get("hold")
    if isinstance(hold, dict) and hold:
        body += (f'<p id="hold" class="reason"><strong>Automatic deploys on hold</strong> since '
                 f'{_e(_utc(hold.get("at")))}'
                 + (f' by {_e(hold.get("by"))}' if hold.get("by") else "")
                 + (f': {_e(hold.get("reason"))}' if hold.get("reason") else "") + "</p>")
    return f'<section id="pending" class="card"><h2>Pending</h2>{body}</section>'


def _html_last(doc: dict) -> str:
    deploys = _deploys(doc)
    if not deploys:
        body = '<p class="mute">no deploys yet</p>'
    else:
        last = deploys[0]
        body = (
            f"<p>{_badge(last.get('outcome'))} {_e(last.get('branch'))} "
            f"{_sha(last.get('commit'))}</p>"
            f'<p class="meta">{_time(_when(last))}</p>'
        )
        if last.get("error"):  # why it failed, above the fold on a phone
            body += f'<p class="error">{_e(cut(one_line(last.get("error")), ERROR_MAX))}</p>'
    return f'<section id="last" class="card"><h2>Last outcome</h2>{body}</section>'



def _html_checks(checks: list[dict]) -> str:
    rows = []
    for c in checks:
        ok = bool(c.get("ok"))
        status = c.get("status")
        ms = c.get("ms")
        err = c.get("error")
        rows.append(
            f'<tr class="check {"ok" if ok else "bad"}">'
            f'<td title="{_e(c.get("url"))}">{_e(c.get("name"))}</td>'
            f"<td>{_e(status) if status is not None else '-'}</td>"
            f"<td>{_e(ms) + ' ms' if ms is not None else '-'}</td>"
            f"<td>{'ok' if ok else 'failed'}"
            + (f': <span class="error">{_e(err)}</span>' if err else "")
            + "</td></tr>"
        )
    return (
        '<table class="checks"><thead><tr><th>check</th><th>status</th><th>time</th>'
        f"<th>result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _html_deploy(rec: dict, index: int) -> str:
    outcome = rec.get("outcome")
    version = rec.get("version")
    checks = _checks(rec)
    passed = sum(1 for c in checks if c.get("ok"))
    duration = _fmt_duration(_duration_ms(rec))
    cards = [c for c in rec.get("cards") or [] if c]
    uncarded = [u for u in rec.get("uncarded_commits") or [] if u]

    items = [
        ("trigger", _e(rec.get("trigger") or "-")),
        ("branch", _e(rec.get("branch")) + (f" (v{_e(version)})" if version else "")),
        ("commit", _sha(rec.get("commit"))
         + (f' <span class="mute">was</span> {_sha(rec.get("previous_commit"))}'
            if rec.get("previous_commit") else "")),
        ("cards", ", ".join(_e(c) for c in cards) if cards else '<span class="mute">none</span>'),
    ]
    if uncarded:
        items.append((
            "uncarded",
            '<span class="warn">&#9888; '
            + f"{len(uncarded)} commit{'s' if len(uncarded) != 1 else ''} without a card: "
            + " ".join(_sha(u) for u in uncarded) + "</span>",
        ))
    items.append(("checks", f"{passed}/{len(checks)} passed" if checks else "none"))
    if duration:
        items.append(("duration", _e(duration)))
    if rec.get("history_rewritten"):
        items.append(("history", '<span class="warn">rewritten (force-push)</span>'))
    if rec.get("reload"):
        items.append(("went live by", _e(rec.get("reload"))))
    settings = [x for x in rec.get("settings") or [] if isinstance(x, str)]
    if settings:
        items.append(("settings uploaded", _e(", ".join(settings))))
    validation = _validation(rec)
    if validation:
        items.append(("gscan", f"{len(validation['fatal'])} fatal, "
                               f"{len(validation['warnings'])} warnings"))
    if outcome != "deployed" and rec.get("step"):
        items.append(("step", _e(rec.get("step"))))
    if rec.get("live_commit"):
        items.append(("live after", _sha(rec.get("live_commit"))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)

    parts = [
        f'<article class="deploy outcome-{_outcome_class(outcome)}" id="deploy-{index}">',
        f"<header>{_badge(outcome)} <strong>{_e(rec.get('branch'))}</strong> "
        f"{_sha(rec.get('commit'))} <span class=\"meta\">{_time(_when(rec))}</span></header>",
        f"<dl>{dl}</dl>",
    ]
    if checks:
        parts.append(_html_checks(checks))
    if rec.get("error"):
        parts.append(f'<p class="error">{_e(rec.get("error"))}</p>')
    if validation and (validation["fatal"] or validation["warnings"]):
        findings = [f"{kind}: {f.get('code')} {f.get('rule')} "
                    f"({', '.join(map(str, f.get('files') or []))})"
                    for kind in ("fatal", "warnings") for f in validation[kind]]
        parts.append("<details><summary>gscan findings</summary>"
                     f"<pre>{_e(chr(10).join(findings))}</pre></details>")
    journal = [line for line in rec.get("journal_tail") or [] if line is not None]
    if journal:
        parts.append(
            "<details><summary>journal tail</summary>"
            f"<pre>{_e(chr(10).join(str(line) for line in journal))}</pre></details>"
        )
    parts.append("</article>")
    return "".join(parts)


def render_html(doc: dict) -> str:
    """ci-cd.html: one self-contained page (inline CSS, no script, no external assets)."""
    site = doc.get("site") or "?"
    deploys = _deploys(doc)
    public_url = doc.get("public_url")
    history = (
        "".join(_html_deploy(rec, i) for i, rec in enumerate(deploys))
        if deploys else '<p class="mute">no deploys yet</p>'
    )
    return html_page(
        f"ci-cd {site}",
        f'<header><h1>ci-cd <span id="site">{_e(site)}</span></h1>'
        f'<p class="meta">flag <code id="flag">{_e(doc.get("flag"))}</code>'
        + (f" &middot; {_safe_link(public_url)}" if public_url else "")
        + f' &middot; updated {_time(doc.get("updated_at"))}</p></header>\n'
        f'<div class="glance">{_html_live(doc)}{_html_pending(doc)}{_html_last(doc)}</div>\n'
        f'<section id="history"><h2>History</h2>\n{history}\n</section>',
        _CSS,
    )


# --------------------------------------------------------------------------- writing


def publish(directory: Path, doc: dict, mode: int = 0o644) -> list[Path]:
    """Write ci-cd.txt, ci-cd.html and ci-cd.json (in that order) atomically into `directory`.

    `directory` (and missing parents) are created with mode 0o755. The document is
    redacted again here and every file is rendered before the first one is written.
    Returns the paths written.
    """
    safe = redact_doc(doc)
    contents = dict(zip(FILES, (render_txt(safe), render_html(safe), render_json(safe)),
                        strict=True))
    return write_files(directory, contents, mode, failpoint="during-publish")


_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_IPV4_RE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])")


def mask_personal(text: str) -> str:
    """Mask e-mail and IP addresses (readers' data in Ghost's log lines): "x@y.z" -> "<email>",
    "203.0.113.9" or "2001:db8::1" -> "<ip>"."""
    text = _EMAIL_RE.sub("<email>", text)
    text = _IPV4_RE.sub("<ip>", text)
    # A clock time ("12:30:01") has the shape too: an IPv6 address has "::" or 7 colons.
    return _IPV6_RE.sub(lambda m: "<ip>" if "::" in m[0] or m[0].count(":") == 7 else m[0],
                        text)


def public_deploys(history: list[dict], journal_tail: bool = False) -> list[dict]:
    """The deploy records as the public may see them: Ghost's journal tail (request paths,
    stack traces, members' addresses) is left out, unless the operator opted in with
    `[publish] journal_tail = true`; even then e-mail and IP addresses are masked."""
    public = []
    for record in history:
        record = dict(record)
        tail = record.get("journal_tail") or []
        record["journal_tail"] = [mask_personal(str(line)) for line in tail] if journal_tail \
            else []
        public.append(record)
    return public
