"""The fleet report for people and scripts: ci-cd.txt, ci-cd.html, ci-cd.json and one Slack
message, all rendered from the document of agent.fleet.summarize.

write_report() writes the three files with the writer of the per-site files (agent.pages).
Everything a site sent is untrusted: it is shown as one redacted line, escaped for HTML and
Slack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.fleet import (COUNT_ORDER, LABELS, NAME_MAX, NEEDS_A_LOOK, SHORT_LABELS, STATES,
                         TEXT_MAX, iso_z, one_line)
from agent.fleet_sites import url_problem
from agent.pages import FILES, html_page, render_json, write_files
from agent.text import cut, short_commit
from agent.text import html_text as _e  # short: it wraps nearly every value in the page
from agent.redact import redact

SLACK_MAX_NAMED = 20  # sites named in the Slack summary; the rest are counted
SLACK_SECTION_CHARS = 3000


# --------------------------------------------------------------------------- counts


def _counts_text(counts: dict, labels: dict = SHORT_LABELS) -> str:
    parts = [f"{counts.get(s, 0)} {_plural(labels[s], counts.get(s, 0))}" for s in COUNT_ORDER
             if counts.get(s)]
    return ", ".join(parts) if parts else "no sites"


def _plural(label: str, n: Any) -> str:
    return label + "s" if label == "bad answer" and n != 1 else label


# --------------------------------------------------------------------------- ci-cd.txt


def _txt_site(site: dict) -> str:
    state = site.get("state") or "?"
    parts = [f"  {SHORT_LABELS.get(state, state).upper():<12}", one_line(site.get("url"), 500)]
    if site.get("site"):
        parts.append(f"({one_line(site.get('site'), NAME_MAX)})")
    if site.get("version") or site.get("commit"):
        version = one_line(site.get("version"), NAME_MAX)
        parts.append(f"live {version + ' ' if version else ''}{short_commit(site.get('commit'))}")
    if site.get("last_outcome"):
        parts.append("last: " + _last_text(site))
    if site.get("pending_reason"):
        parts.append(f"pending: {one_line(site.get('pending_reason'))}")
    if site.get("error"):
        parts.append(f"error: {one_line(site.get('error'))}")
    return " ".join(parts)


def _last_text(site: dict) -> str:
    """ "rolled back 1.3.22 at 2026-11-27T03:00:00Z" """
    text = one_line(site.get("last_outcome"), 40).replace("_", " ")
    if site.get("last_version"):
        text += f" {one_line(site.get('last_version'), NAME_MAX)}"
    if site.get("last_finished_at"):
        text += f" at {one_line(site.get('last_finished_at'), 40)}"
    return text


def render_txt(summary: dict) -> str:
    """ci-cd.txt of the fleet: the totals first, then a header and one line per site for
    each group (the sites that need a look first)."""
    totals = summary.get("totals") or {}
    when = iso_z(summary.get("updated_at")) or "?"
    lines = [
        f"# fleet report {when}: {totals.get('sites', 0)} sites in "
        f"{totals.get('groups', 0)} groups",
        f"# {_counts_text(totals, LABELS)}",
    ]
    look = totals.get("needs_a_look", 0)
    lines.append(f"# {look} need a look" if look else "# nothing needs a look")
    for group in summary.get("groups") or []:
        version = group.get("newest_version")
        lines.append("")
        lines.append(f"{one_line(group.get('flag'), NAME_MAX) or '?'}"
                     + (f" {one_line(version, NAME_MAX)}" if version else "")
                     + f": {_counts_text(group.get('counts') or {})}")
        lines.extend(_txt_site(site) for site in group.get("sites") or [])
    orphans = summary.get("unreachable") or []
    if orphans:
        lines.append("")
        lines.append(f"no answer, group unknown: {len(orphans)}")
        lines.extend(_txt_site(site) for site in orphans)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ci-cd.html


_CSS = """
.group h2{margin:0 0 .4rem}
.totals{display:flex;flex-wrap:wrap;gap:.4rem;margin:.6rem 0}
.group{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:.75rem;margin:1rem 0}
.site{border-top:1px solid var(--line);padding:.45rem 0;border-left:4px solid transparent;
padding-left:.5rem;overflow-wrap:anywhere}
.site .line{display:flex;flex-wrap:wrap;gap:.2rem .6rem;align-items:baseline}
.site p{margin:.15rem 0;font-size:.9rem}
.state-updated .badge,.badge.state-updated{background:var(--ok)}
.state-rolled_back .badge,.badge.state-rolled_back{background:var(--warn)}
.state-failed .badge,.badge.state-failed{background:var(--bad)}
.state-unreachable .badge,.badge.state-unreachable{background:var(--bad)}
.state-bad_answer .badge,.badge.state-bad_answer{background:var(--bad)}
.state-pending .badge,.badge.state-pending{background:var(--info)}
.state-old_version .badge,.badge.state-old_version{background:var(--old)}
.site.state-failed,.site.state-unreachable,.site.state-bad_answer{border-left-color:var(--bad)}
.site.state-rolled_back{border-left-color:var(--warn)}
.site.state-old_version{border-left-color:var(--old)}
"""


def _badge(state: str, text: str | None = None) -> str:
    label = text if text is not None else SHORT_LABELS.get(state, state)
    return f'<span class="badge state-{_e(state)}">{_e(label)}</span>'


def _html_link(url: Any) -> str:
    text = one_line(url, 500)
    if url_problem(text) is None:
        return f'<a href="{_e(text)}" rel="noopener noreferrer nofollow">{_e(text)}</a>'
    return _e(text)


def _html_site(site: dict) -> str:
    state = site.get("state") if site.get("state") in STATES else "bad_answer"
    line = [_badge(state), f"<strong>{_e(site.get('site') or '?')}</strong>",
            f'<span class="url">{_html_link(site.get("url"))}</span>']
    details = []
    if site.get("version") or site.get("commit"):
        version, commit = site.get("version"), site.get("commit")
        details.append(
            "live " + (f"<strong>{_e(version)}</strong> " if version else "")
            + f'<code title="{_e(commit)}">{_e(short_commit(commit))}</code>')
    if site.get("last_outcome"):
        when = site.get("last_finished_at")
        last_version = site.get("last_version")
        details.append(f"last {_e(str(site.get('last_outcome')).replace('_', ' '))}"
                       + (f" {_e(last_version)}" if last_version else "")
                       + (f' at <time datetime="{_e(when)}">{_e(when)}</time>' if when else ""))
    if site.get("ms") is not None:
        details.append(f"{_e(site.get('ms'))} ms")
    parts = [f'<div class="site state-{state}">',
             f'<div class="line">{" ".join(line)}</div>']
    if details:
        parts.append(f'<p class="meta">{" &middot; ".join(details)}</p>')
    if site.get("pending_reason"):
        parts.append(f'<p class="reason">pending: {_e(site.get("pending_reason"))}</p>')
    if site.get("error"):
        parts.append(f'<p class="error">{_e(site.get("error"))}</p>')
    parts.append("</div>")
    return "".join(parts)


def _html_counts(counts: dict) -> str:
    badges = [_badge(s, f"{counts.get(s, 0)} {_plural(SHORT_LABELS[s], counts.get(s, 0))}")
              for s in COUNT_ORDER if counts.get(s)]
    return " ".join(badges) if badges else '<span class="mute">no sites</span>'


def render_html(summary: dict) -> str:
    """The fleet's ci-cd.html: self-contained (inline CSS, no script, no external assets).
    Everything a site sent is escaped."""
    totals = summary.get("totals") or {}
    when = iso_z(summary.get("updated_at")) or "?"
    sections = []
    for n, group in enumerate(summary.get("groups") or []):
        version = group.get("newest_version")
        sites = "".join(_html_site(s) for s in group.get("sites") or [])
        sections.append(
            f'<section class="group" id="group-{n}">'
            f"<h2><code>{_e(group.get('flag') or '?')}</code>"
            + (f' <span class="version">{_e(version)}</span>' if version else "")
            + f'</h2><div class="totals">{_html_counts(group.get("counts") or {})}</div>'
            f"{sites}</section>"
        )
    orphans = summary.get("unreachable") or []
    if orphans:
        sections.append(
            '<section class="group" id="group-unknown"><h2>No answer, group unknown</h2>'
            + "".join(_html_site(s) for s in orphans) + "</section>"
        )
    look = totals.get("needs_a_look", 0)
    return html_page(
        f"fleet ci-cd {when}",
        f'<header><h1>Fleet ci-cd</h1><p class="meta">{_e(totals.get("sites", 0))} sites in '
        f'{_e(totals.get("groups", 0))} groups &middot; updated <time datetime="{_e(when)}">'
        f"{_e(when)}</time></p>"
        f'<div class="totals" id="totals">{_html_counts(totals)}</div>'
        f'<p id="look" class="{"error" if look else "mute"}">'
        f'{_e(look) + " need a look" if look else "nothing needs a look"}</p></header>\n'
        + "\n".join(sections),
        _CSS,
    )


def write_report(out_dir: Path, summary: dict) -> list[Path]:
    """Write the fleet's ci-cd.txt, ci-cd.html and ci-cd.json atomically (mode 0o644) into
    out_dir, creating it. Everything is rendered before the first file is written."""
    contents = dict(zip(FILES, (render_txt(summary), render_html(summary),
                                render_json(summary)), strict=True))
    return write_files(out_dir, contents, 0o644)


# --------------------------------------------------------------------------- Slack

EMOJI = {
    "updated": ":white_check_mark:",
    "rolled_back": ":leftwards_arrow_with_hook:",
    "failed": ":x:",
    "pending": ":hourglass_flowing_sand:",
    "unreachable": ":warning:",
    "bad_answer": ":warning:",
    "old_version": ":snail:",
}


def _md(value: Any, limit: int = TEXT_MAX) -> str:
    """Untrusted text for Slack mrkdwn: one line, secrets masked, &, < and > escaped."""
    text = one_line(value, limit)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_section(text: str) -> dict:
    return {"type": "section",
            "text": {"type": "mrkdwn", "text": cut(text, SLACK_SECTION_CHARS)}}


def _slack_site(site: dict) -> str:
    state = site.get("state") or "?"
    name = site.get("site")
    text = (f"{EMOJI.get(state, ':grey_question:')} *{_md(SHORT_LABELS.get(state, state))}* "
            f"{_md(site.get('url'), 200)}" + (f" ({_md(name, 60)})" if name else ""))
    if site.get("version"):
        text += f" · live {_md(site.get('version'), 40)}"
    if state in ("rolled_back", "failed") and site.get("last_version"):
        text += f" · tried {_md(site.get('last_version'), 40)}"
    detail = site.get("error") or site.get("pending_reason")
    if detail:
        text += f" — {_md(detail, 140)}"
    return text


def _every_site(summary: dict) -> list[dict]:
    """The sites of every group, then those of no known group."""
    sites = [site for group in summary.get("groups") or [] for site in group.get("sites") or []]
    return sites + list(summary.get("unreachable") or [])


def slack_summary(summary: dict, report_url: str | None = None) -> dict:
    """One Slack message {"text", "blocks"}: totals, counts per group, and the sites that
    need a look (at most SLACK_MAX_NAMED named, then "and N more")."""
    totals = summary.get("totals") or {}
    when = iso_z(summary.get("updated_at")) or "?"
    look = totals.get("needs_a_look", 0)
    headline = (f"{':white_check_mark:' if not look else ':warning:'} Fleet report: "
                f"{_md(totals.get('sites', 0))} sites — {_md(_counts_text(totals, LABELS))}")
    blocks: list[dict] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": cut(f"Fleet report {when[:10]}", 150)}},
        _slack_section(headline),
    ]
    group_lines = []
    for group in summary.get("groups") or []:
        version = group.get("newest_version")
        group_lines.append(f"`{_md(group.get('flag') or '?', 80)}`"
                           + (f" {_md(version, 40)}" if version else "")
                           + f": {_md(_counts_text(group.get('counts') or {}))}")
    if group_lines:
        shown, rest = group_lines[:30], len(group_lines) - 30
        blocks.append(_slack_section("*Groups*\n" + "\n".join(shown)
                                     + (f"\nand {rest} more groups" if rest > 0 else "")))
    flagged = [site for site in _every_site(summary) if site.get("state") in NEEDS_A_LOOK]
    flagged.sort(key=lambda s: STATES.index(s["state"]))
    if flagged:
        lines = [_slack_site(s) for s in flagged[:SLACK_MAX_NAMED]]
        more = len(flagged) - SLACK_MAX_NAMED
        # keep inside one section's 3000 characters: drop named lines into "more" if needed
        while lines and len("\n".join(lines)) > SLACK_SECTION_CHARS - 120:
            lines.pop()
            more += 1
        text = "*Needs a look*\n" + "\n".join(lines) + (f"\nand {more} more" if more > 0 else "")
        blocks.append(_slack_section(text))
    else:
        blocks.append(_slack_section("Nothing needs a look."))
    context = [{"type": "mrkdwn", "text": f"updated {_md(when, 40)}"}]
    if report_url and url_problem(report_url) is None:
        url = redact(report_url).replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
        context.insert(0, {"type": "mrkdwn", "text": f"<{url}|Full report>"})
    blocks.append({"type": "context", "elements": context})
    text = headline + (f"; {look} need a look" if look else "")
    return {"text": text, "blocks": blocks}
