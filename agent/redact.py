"""Masking of secrets in any text that may reach a log, a ci-cd file or Slack."""

from __future__ import annotations

import re

MASK = "***"

# user:password@ or token@ in URLs (https://user:tok@host, https://tok@host)
# (up to the last "@" before the path: a raw "@" inside a password must not cut it in two).
# A scheme starts only where a run of scheme characters starts: without the lookbehind a
# long run of letters is tried from each of its positions, in quadratic time.
_URL_CREDENTIALS = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/\s]+)@"
)

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that redact() masks it wherever it shows up."""
    if value and len(value) >= 4:
        _registered.add(value)


def redact_url(url: str) -> str:
    """https://user:token@host/x -> https://***@host/x ; paths and ssh scp-style URLs stay."""
    return _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", url)


def redact(text: str) -> str:
    """Mask credentials in URLs and every registered secret (linear in len(text))."""
    if not text:
        return text
    for secret in sorted(_registered, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_url(text)
