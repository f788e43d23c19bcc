"""The fleet's site list: [fleet] sites and the lines of [fleet] sites_file, as URLs.

Used by `ghost-agent fleet` (agent.fleet_job) and, for each URL, by agent.fleet_fetch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import FleetConfig
from agent.errors import ConfigError
from agent.redact import redact
from agent.text import cut

CI_CD_PATH = "/content/files/ci-cd.json"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def ci_cd_json_url(site_url: str) -> str:
    """https://a.website.com -> https://a.website.com/content/files/ci-cd.json.

    A URL whose path ends in .json is used as it is.
    """
    url = site_url.strip()
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    if path.lower().endswith(".json"):
        return url
    return url.rstrip("/") + CI_CD_PATH


def url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) URL with a host, or None."""
    if not url or _CONTROL_RE.search(url) or " " in url:
        return "expected an http(s) URL without spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "expected an http(s) URL with a valid host and port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http(s) URL with a host, e.g. https://a.website.com"
    return None


def read_sites(fleet: FleetConfig) -> list[str]:
    """[fleet] sites, then the lines of [fleet] sites_file, de-duplicated, order kept.

    In the file, blank lines and # comments (whole lines, or after a URL and a space) are
    skipped. Raises ConfigError naming the file (and line) for an unreadable file or a line
    that is not an http(s) URL; every bad line is reported at once.
    """
    urls: list[str] = list(fleet.sites)
    if fleet.sites_file is not None:
        urls += _read_file(Path(fleet.sites_file))
    seen: set[str] = set()
    kept = []
    for url in urls:
        key = url.rstrip("/")
        if key not in seen:
            seen.add(key)
            kept.append(key)
    return kept


def _read_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([f"{path}: [fleet] sites_file: cannot read it: {reason}"]) from None
    urls, problems = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if not line or line.startswith("#"):
            continue
        problem = url_problem(line)
        if problem:
            shown = json.dumps(redact(cut(line, 80)), ensure_ascii=False)
            problems.append(f"{path}:{number}: {shown}: {problem}")
        else:
            urls.append(line)
    if problems:
        raise ConfigError(problems)
    return urls
