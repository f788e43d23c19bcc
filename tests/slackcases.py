"""What the Slack tests share (tests/test_slack_messages.py, tests/test_slack_outbox.py): a
record, a site, a clock that does not wait, and readers of a payload and of the spool."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agent.config import CardsConfig, SiteConfig
from agent.models import DeployRecord

SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
PREV = "0f1e2d3c4b5a69788796a5b4c3d2e1f009876543"
UNCARDED = "cccccccccccccccccccccccccccccccccccccccc"
REMOTE = "git@github.com:acme/site.git"
CANARY_PATH = "/services/T0/B0/CANARYWEBHOOK123"
CANARY_TOKEN = "xoxb-CANARYTOKEN456"
CANARIES = ("CANARYWEBHOOK123", "CANARYTOKEN456")
T0 = datetime(2026, 11, 26, 14, 0, 0, tzinfo=timezone.utc)

SITE = SiteConfig(
    name="dev1", flag="dev1", public_url="https://dev1.example.com",
    local_url="http://127.0.0.1:2368", content_dir=Path("/srv/content"),
    ci_cd_dir=Path("/srv/content/files"), ci_cd_url="https://dev1.example.com/content/files",
)
CARDS = CardsConfig(board_url="https://trello.example.com/c/{card}")


class FakeClock:
    """An injectable `now`; its sleep() moves it forward instead of waiting."""

    def __init__(self, start: datetime = T0):
        self.moment = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def make_record(outcome: str = "deployed", **changes: Any) -> DeployRecord:
    values: dict[str, Any] = dict(
        trigger="poll", branch="dev1", version=None, commit=SHA, previous_commit=PREV,
        outcome=outcome, started_at="2026-11-26T14:00:00+00:00",
        finished_at="2026-11-26T14:00:12+00:00", cards=["B321", "B322"],
        uncarded_commits=[], site="dev1", live_commit=SHA if outcome == "deployed" else PREV,
        checks=[{"name": "home", "url": "http://127.0.0.1:2368/", "ok": True, "status": 200,
                 "ms": 12, "error": None}],
        duration_ms=12345,
    )
    if outcome != "deployed":
        values.update(
            error="checks failed: home: expected 200, got 500", step="checks",
            checks=[{"name": "home", "url": "http://127.0.0.1:2368/", "ok": False,
                     "status": 500, "ms": 30, "error": "expected 200, got 500"}],
            journal_tail=[f"Nov 26 14:00:{i:02d} ghost[42]: line {i}" for i in range(40)],
        )
    values.update(changes)
    return DeployRecord(**values)


def all_text(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False)


def mrkdwn_texts(payload: dict) -> list[str]:
    """Every text of the blocks, in order."""
    texts = []
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for item in block.get("fields", []) + block.get("elements", []):
            texts.append(item["text"])
    return texts


def blocks_text(payload: dict) -> str:
    return "\n".join(mrkdwn_texts(payload))


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("[0-9]*.json"))


def state_of(spool: Path) -> dict:
    path = spool / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}
