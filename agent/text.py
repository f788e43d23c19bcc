"""Text for people: how every ci-cd file, report and message shows untrusted values.

Everything passes through agent.redact first, so no secret can slip into an output.
"""

from __future__ import annotations

import html
import re
from typing import Any

from agent.redact import redact

_LINE_BREAKS = re.compile(r"[\s\x00-\x1f\x7f\x85\u2028\u2029]+")


def one_line(value: Any) -> str:
    """Redacted text on one line: newlines, control characters and whitespace runs become
    single spaces (so one event stays one line of ci-cd.txt)."""
    if value is None:
        return ""
    return _LINE_BREAKS.sub(" ", redact(str(value))).strip()


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def short_commit(commit: Any) -> str:
    return str(commit)[:7] if commit else "-------"


def html_text(value: Any) -> str:
    """Redacted, HTML-escaped text (quotes too, so it is safe in attributes)."""
    if value is None:
        return ""
    return html.escape(redact(str(value)), quote=True)
