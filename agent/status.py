"""`ghost-agent status`: what is live, what is pending and why, the window, the last outcome."""

from __future__ import annotations

import socket
from typing import Any

from agent import clock, notifiers, validate, window
from agent.config import Config
from agent.service import GhostService
from agent.state import State, StateStore


def status_dict(config: Config, now=None) -> dict[str, Any]:
    now = now or clock.now()
    offset = window.spread_offset(config.window, socket.gethostname())
    state = StateStore(config.agent.state_dir).load()  # read-only: no lock needed
    current = state.current
    last = state.history[0] if state.history else None
    decision = window.decide(config.window, now, offset)
    return {
        "site": config.site.name,
        "flag": config.site.flag,
        "live": current.to_dict() if current else None,
        "previous": state.previous.to_dict() if state.previous else None,
        "seen": _stored(state.seen),
        "pending": _stored(state.pending),
        "window": None if config.window is None else {
            "open": decision.open,
            "next_opening": clock.iso(decision.opens_at) if not decision.open
            else clock.iso(window.next_opening(config.window, now,
                                               offset)),
        },
        "last": None if last is None else {
            k: last.get(k) for k in ("outcome", "branch", "commit", "finished_at", "error",
                                     "trigger")},
        "quarantine": {commit: why.to_dict() for commit, why in state.quarantine.items()},
        "interrupted_deploy": _stored(state.inflight),
        "hold": _stored(state.hold),
        "unreadable_branches": state.unreadable,
        "problem": state.last_problem,
        "problem_kind": state.problem_kind,
        "problems": state.problems,
        "retry": _stored(state.retry),
        "last_webhook_at": state.last_webhook_at,
        "notify_problem": notifiers.from_config(config).problem(),
        "validate": _validate_line(config),
        "reload": reload_line(config, state),
    }


def _validate_line(config: Config) -> str:
    ghost = GhostService(config.ghost.unit, 15)
    return validate.discover(config.ghost.install_dir, config.ghost.validate, config.ghost.unit,
                             ghost.working_directory, ghost.node,
                             config.agent.state_dir / "tmp")[1]


def reload_line(config: Config, state: State | None = None) -> str:
    """How a release reaches readers, in one line; with the state, what the Admin API key
    did the last time it was tried."""
    if config.ghost.reload == "restart":
        return "restart ([ghost] reload = \"restart\")"
    if not config.ghost.admin_api_key:
        return "restart (no Admin API key: set [ghost] admin_api_key_file for activation)"
    line = "activate the theme through the Admin API; restart when package.json's config changes"
    if state is None:
        return line
    if "admin" in state.problems:
        return f"{line}; the key FAILED: {state.problems['admin']}"
    activated = next((r.get("finished_at") for r in state.history
                      if r.get("reload") == "activate"), None)
    return f"{line}; " + (f"the key activated a theme at {activated}" if activated
                          else "the key has not been tried yet")


def _stored(value: Any) -> dict[str, Any] | None:
    return value.to_dict() if value is not None else None


def render_status(info: dict[str, Any]) -> str:
    lines = [f"site:     {info['site']} (flag {info['flag']})"]
    live = info["live"]
    lines.append(f"live:     {live['branch']} {live['commit'][:7]} since {live['since']}"
                 if live else "live:     nothing deployed yet")
    pending = info["pending"]
    lines.append(f"pending:  {pending['branch']} {pending['commit'][:7]}: {pending['reason']}"
                 if pending else "pending:  nothing")
    win = info["window"]
    if win is None:
        lines.append("window:   none (changes deploy as soon as they are seen)")
    else:
        lines.append(f"window:   {'open' if win['open'] else 'closed'}; "
                     f"next opening {win['next_opening']}")
    last = info["last"]
    if last:
        text = f"{last['outcome']} {last['branch']} {last['commit'][:7]} at {last['finished_at']}"
        if last.get("error"):
            text += f": {last['error']}"
        lines.append(f"last:     {text}")
    if info["hold"]:
        hold = info["hold"]
        lines.append(f"HOLD:     automatic deploys paused since {hold['at']}"
                     + (f" by {hold['by']}" if hold.get("by") else "")
                     + (f": {hold['reason']}" if hold.get("reason") else ""))
    for commit, why in info["quarantine"].items():
        lines.append(f"held back: {commit[:7]} ({why.get('branch')}): {why.get('reason')}")
    if info["unreadable_branches"]:
        lines.append("ignored:  " + ", ".join(info["unreadable_branches"])
                     + " (their version cannot be read)")
    if info["interrupted_deploy"]:
        lines.append(f"interrupted: {info['interrupted_deploy']['commit'][:7]} "
                     "(the next run finishes it)")
    problems = list((info.get("problems") or {}).values())
    if not problems and info["problem"]:  # a state file from before `problems`
        problems = [info["problem"]]
    for text in problems:
        lines.append(f"problem:  {text}")
    if info.get("retry"):
        retry = info["retry"]
        lines.append(f"retry:    {retry['commit'][:7]} again at {retry.get('next_at')} "
                     f"(attempt {retry.get('attempts')} met a host fault)")
    if info.get("last_webhook_at"):
        lines.append(f"webhook:  last accepted call at {info['last_webhook_at']}")
    lines.append(f"validate: {info['validate']}")
    lines.append(f"reload:   {info['reload']}")
    if info["notify_problem"]:
        lines.append(f"notify:   {info['notify_problem']}")
    return "\n".join(lines)
