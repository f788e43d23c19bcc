"""Failpoints: named places where a fault test can make the agent SIGKILL itself (or raise
an unexpected error).

`GHOST_AGENT_FAILPOINTS="during-build=kill,after-switch=kill"` arms points for one process
(read once, at the first `hit`). Unset, `hit` is one dict lookup on an empty dict.
Modelled on etcd's gofail: tests kill at an exact step instead of racing a timer.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "GHOST_AGENT_FAILPOINTS"
POINTS = (
    "after-ls-remote", "during-fetch", "during-export", "during-build", "after-rename",
    "after-inflight-record", "after-switch", "during-restart", "during-checks",
    "during-switch-back", "during-publish", "during-spool-write",
)
ACTIONS = ("kill", "raise")  # raise: an unexpected RuntimeError, for the catch-all's tests

_armed: dict[str, str] | None = None


def parse(text: str) -> dict[str, str]:
    """"a=kill,b=kill" -> {"a": "kill", "b": "kill"}; unknown points or actions are ignored
    with a line on stderr (a fault test with a typo must not pass silently)."""
    armed: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, action = item.partition("=")
        if point in POINTS and action in ACTIONS:
            armed[point] = action
        else:
            sys.stderr.write(f"ghost-agent: {ENV}: ignored {item!r} (points: "
                             f"{', '.join(POINTS)}; actions: {', '.join(ACTIONS)})\n")
    return armed


def hit(point: str) -> None:
    """Called at each named place; kills this process there when the point is armed."""
    global _armed
    if _armed is None:
        _armed = parse(os.environ.get(ENV, ""))
    action = _armed.get(point) if _armed else None
    if action == "kill":
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise RuntimeError(f"failpoint {point}")
