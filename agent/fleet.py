"""`ghost-agent fleet`: one report of how every site of the fleet fared.

fetch_all() reads each site's public ci-cd.json concurrently. Every answer is untrusted: each
fetch has a total deadline (a server that drips one byte at a time is cut off when it passes),
reads at most MAX_BYTES, follows at most MAX_REDIRECTS redirects, ignores proxy settings from
the environment, and keeps only JSON objects of the contract's shape. Whatever goes wrong is
one line in SiteAnswer.error; fetch_all never raises.

summarize() turns the answers into the fleet document (pure); render_txt(), render_html() and
slack_summary() present it; write_report() writes ci-cd.txt/.html/.json atomically, like the
per-site files of agent.publish.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agent.clock import parse_time
from agent.atomic import dumps_json, write_atomic
from agent.config import FleetConfig
from agent.errors import ConfigError
from agent.redact import redact
from agent.selection import parse_version, release_version

MAX_BYTES = 1_000_000
MAX_REDIRECTS = 3
KEEP_DEPLOYS = 50  # deploy records kept per answer (newest first); the report needs the newest
CI_CD_PATH = "/content/files/ci-cd.json"
FILES = ("ci-cd.txt", "ci-cd.html", "ci-cd.json")

# The states of a site, worst first (the order sites are listed in within a group).
STATES = ("failed", "rolled_back", "unreachable", "bad_answer", "old_version", "pending",
          "updated")
NEEDS_A_LOOK = ("failed", "rolled_back", "unreachable", "bad_answer", "old_version")
LABELS = {
    "updated": "updated",
    "rolled_back": "rolled back",
    "failed": "failed",
    "pending": "pending",
    "unreachable": "unreachable",
    "old_version": "on an old version",
    "bad_answer": "bad answer",
}
SHORT_LABELS = {**LABELS, "old_version": "old version"}

TEXT_MAX = 300  # characters kept of any free text a site sent (errors, reasons)
NAME_MAX = 120  # characters kept of a site's name, flag, version
SLACK_MAX_NAMED = 20  # sites named in the Slack summary; the rest are counted
SLACK_SECTION_CHARS = 3000

_USER_AGENT = "ghost-deploy-agent fleet"
_LINE_BREAKS_RE = re.compile(r"[\s\x00-\x1f\x7f\x85\u2028\u2029]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HEX40_RE = re.compile(r"[0-9a-fA-F]{40}")


# --------------------------------------------------------------------------- URLs


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


def _url_problem(url: str) -> str | None:
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
        path = Path(fleet.sites_file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError([f"{path}: [fleet] sites_file: cannot read it: {reason}"]) from None
        problems = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = re.split(r"\s#", raw, maxsplit=1)[0].strip()
            if not line or line.startswith("#"):
                continue
            problem = _url_problem(line)
            if problem:
                shown = json.dumps(redact(_cut(line, 80)), ensure_ascii=False)
                problems.append(f"{path}:{number}: {shown}: {problem}")
                continue
            urls.append(line)
        if problems:
            raise ConfigError(problems)
    seen: set[str] = set()
    kept = []
    for url in urls:
        key = url.rstrip("/")
        if key in seen:
            continue
        seen.add(key)
        kept.append(key)
    return kept


# --------------------------------------------------------------------------- fetching


@dataclass(frozen=True)
class SiteAnswer:
    url: str  # the site URL as configured
    doc: dict | None  # the parsed, shape-checked ci-cd.json, or None
    error: str | None  # one line, e.g. "unreachable: connection refused", "HTTP 404"
    ms: int


class _Watch:
    """The total deadline of one fetch: when it passes, its sockets are shut down, which
    ends any blocked read at once (a per-read timeout never fires on a server that drips)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.expired = False
        self._socks: list[Any] = []
        self._lock = threading.Lock()

    def add(self, sock: Any) -> None:
        if sock is None:
            return
        with self._lock:
            if not self.expired:
                self._socks.append(sock)
                return
        _shut(sock)

    def expire(self) -> None:
        with self._lock:
            if self.expired:
                return
            self.expired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            _shut(sock)


def _shut(sock: Any) -> None:
    try:
        if isinstance(sock, socket.socket):
            # the plain socket call, also for an SSLSocket: no TLS state is touched from
            # this thread, the reader just sees the connection end
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError, ValueError):
        pass


_current = threading.local()  # .watch: the _Watch of the fetch this thread is doing


def _watch_socket(sock: Any) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.add(sock)


class _WatchedMixin:
    """Registers the connection's socket with the current fetch's _Watch: when it is made
    (before any TLS handshake) and again for each request (a kept-alive connection)."""

    def _new_conn(self):  # type: ignore[no-untyped-def]
        sock = super()._new_conn()  # type: ignore[misc]
        _watch_socket(sock)
        return sock

    def getresponse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _watch_socket(getattr(self, "sock", None))
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections obey the total deadline of fetch_all's fetches."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool,
            "https": _WatchedHTTPSPool,
        }


def make_session(pool_size: int = 16) -> requests.Session:
    """A session for fetch_all: deadline-aware connections, no proxies from the environment."""
    session = requests.Session()
    _prepare(session, pool_size)
    return session


def _prepare(session: requests.Session, pool_size: int) -> None:
    session.trust_env = False  # no proxies, .netrc or CA bundles from the environment
    if not isinstance(session.get_adapter("https://example.invalid/"), DeadlineAdapter):
        size = max(10, pool_size)
        session.mount("https://", DeadlineAdapter(pool_connections=size, pool_maxsize=size))
    if not isinstance(session.get_adapter("http://example.invalid/"), DeadlineAdapter):
        size = max(10, pool_size)
        session.mount("http://", DeadlineAdapter(pool_connections=size, pool_maxsize=size))


class _Failed(Exception):
    """A fetch failed; the message is SiteAnswer.error."""


_NO_PROXIES = {"http": None, "https": None, "all": None}
_HEADERS = {
    "User-Agent": _USER_AGENT,
    "Accept": "application/json",
    "Accept-Encoding": "identity",
}


def fetch_all(
    urls: Sequence[str],
    timeout: float,
    *,
    max_workers: int = 16,
    session: requests.Session | None = None,
    keep_deploys: int | None = KEEP_DEPLOYS,
) -> list[SiteAnswer]:
    """Fetch every site's ci-cd.json concurrently; answers in the order of `urls`.

    Each fetch has a total deadline of `timeout` seconds from its start (connect, redirects,
    headers and body together). Never raises: every failure is a SiteAnswer with an error.
    A session passed in is prepared like make_session()'s (its http/https adapters replaced by
    DeadlineAdapter, trust_env off) unless that was done already.

    To keep the memory of a large fleet small, each answer's "deploys" is cut to the newest
    `keep_deploys` records (plus the newest record of the live commit, wherever it is);
    None keeps them all. The whole list was shape-checked before.
    """
    urls = list(urls)
    if not urls:
        return []
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        timeout = 10.0
    if not math.isfinite(timeout) or timeout <= 0:
        timeout = 10.0
    workers = max(1, min(int(max_workers or 1), len(urls)))
    own = session is None
    sess = make_session(workers) if own else session
    if not own:
        with contextlib.suppress(AttributeError, TypeError):  # an odd session: used as is
            _prepare(sess, workers)

    active: set[_Watch] = set()
    lock = threading.Lock()

    def task(url: str) -> SiteAnswer:
        watch = _Watch(time.monotonic() + timeout)
        with lock:
            active.add(watch)
        try:
            return _fetch_one(sess, url, timeout, watch, keep_deploys)
        finally:
            with lock:
                active.discard(watch)

    results: list[SiteAnswer | None] = [None] * len(urls)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-fetch") as pool:
            futures = [pool.submit(task, url) for url in urls]
            not_done = set(futures)
            while not_done:
                _, not_done = wait(not_done, timeout=0.05)
                now = time.monotonic()
                with lock:
                    overdue = [w for w in active if w.deadline <= now]
                for watch in overdue:
                    watch.expire()
            for index, future in enumerate(futures):
                try:
                    results[index] = future.result()
                except Exception as exc:  # noqa: BLE001 - never raise: report it per site
                    results[index] = SiteAnswer(urls[index], None,
                                                f"internal error: {type(exc).__name__}", 0)
    finally:
        if own:
            sess.close()
    return [r if r is not None else SiteAnswer(urls[i], None, "internal error", 0)
            for i, r in enumerate(results)]


def _fetch_one(session: requests.Session, url: str, timeout: float, watch: _Watch,
               keep_deploys: int | None = None) -> SiteAnswer:
    started = time.monotonic()
    _current.watch = watch
    doc: dict | None = None
    try:
        doc = _trim(_get_doc(session, url, timeout, watch), keep_deploys)
        error = None
    except _Failed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile server provokes
        error = _describe(exc, timeout)
    finally:
        _current.watch = None
    if doc is None and watch.expired:
        error = _timed_out(timeout)
    ms = int((time.monotonic() - started) * 1000)
    return SiteAnswer(url, doc, _one_line(error) if error else None, ms)


def _trim(doc: dict, keep: int | None) -> dict:
    """Cut a shape-checked document's deploys to the newest `keep` (and the live commit's)."""
    deploys = doc["deploys"]
    if keep is None or len(deploys) <= max(0, keep):
        return doc
    kept = deploys[: max(0, keep)]
    current = doc.get("current")
    commit = current.get("commit") if isinstance(current, dict) else None
    if commit and not any(d.get("commit") == commit for d in kept):
        own = next((d for d in deploys if d.get("commit") == commit), None)
        if own is not None:
            kept.append(own)
    doc["deploys"] = kept
    return doc


def _timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s"


def _get_doc(session: requests.Session, url: str, timeout: float, watch: _Watch) -> dict:
    if not isinstance(url, str) or _url_problem(url):
        raise _Failed("bad URL: expected an http(s) URL")
    target = ci_cd_json_url(url)
    for _hop in range(MAX_REDIRECTS + 1):
        remaining = watch.deadline - time.monotonic()
        if watch.expired or remaining <= 0:
            raise _Failed(_timed_out(timeout))
        response = session.get(target, timeout=(remaining, remaining), stream=True,
                               allow_redirects=False, headers=_HEADERS, proxies=_NO_PROXIES)
        with response:
            if response.is_redirect:
                location = response.headers.get("Location", "")
                target = urljoin(response.url, location)
                if urlsplit(target).scheme not in ("http", "https"):
                    raise _Failed("bad answer: redirect to a non-http URL")
                continue
            if response.status_code != 200:
                raise _Failed(f"HTTP {response.status_code}")
            body = _read_limited(response, watch, timeout)
            content_type = response.headers.get("Content-Type", "")
        return _parse(body, content_type)
    raise _Failed(f"too many redirects (more than {MAX_REDIRECTS})")


def _read_limited(response: requests.Response, watch: _Watch, timeout: float) -> bytes:
    too_large = f"too large (> {MAX_BYTES} bytes)"
    length = response.headers.get("Content-Length", "")
    if length.strip().isdigit() and int(length) > MAX_BYTES:
        raise _Failed(too_large)
    body = bytearray()
    for chunk in response.iter_content(chunk_size=65536):
        body += chunk
        if len(body) > MAX_BYTES:
            raise _Failed(too_large)
        if watch.expired:
            raise _Failed(_timed_out(timeout))
    if watch.expired:
        raise _Failed(_timed_out(timeout))
    return bytes(body)


def _parse(body: bytes, content_type: str) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        kind = content_type.split(";")[0].strip().lower()
        if kind == "text/html" or body.lstrip()[:1] == b"<":
            raise _Failed("not JSON (an HTML page)") from None
        if not body.strip():
            raise _Failed("not JSON (an empty answer)") from None
        raise _Failed("not JSON") from None
    problem = shape_problem(doc)
    if problem:
        raise _Failed(f"wrong schema: {problem}")
    return doc


def _describe(exc: BaseException, timeout: float) -> str:
    """One line for a requests/urllib3 failure; never the exception's own text (it may
    carry a URL with credentials, or a server's words)."""
    exc_ = requests.exceptions
    if isinstance(exc, exc_.Timeout):
        return _timed_out(timeout)
    if isinstance(exc, exc_.TooManyRedirects):
        return f"too many redirects (more than {MAX_REDIRECTS})"
    if isinstance(exc, (exc_.InvalidURL, exc_.MissingSchema, exc_.InvalidSchema,
                        exc_.URLRequired)):
        return "bad URL: expected an http(s) URL"
    if isinstance(exc, exc_.SSLError):
        return "unreachable: TLS error"
    if isinstance(exc, exc_.ChunkedEncodingError):
        return "unreachable: the connection broke off mid-answer"
    if isinstance(exc, exc_.ContentDecodingError):
        return "not JSON (an undecodable body)"
    if isinstance(exc, exc_.ConnectionError):
        causes = _causes(exc)
        names = {type(c).__name__ for c in causes}
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return "unreachable: connection refused"
        if any(isinstance(c, socket.gaierror) for c in causes) or "NameResolutionError" in names:
            return "unreachable: host name not found"
        if any(isinstance(c, TimeoutError) for c in causes) or "ConnectTimeoutError" in names:
            return _timed_out(timeout)
        if any(isinstance(c, ConnectionResetError) for c in causes):
            return "unreachable: connection reset"
        if "RemoteDisconnected" in names or "ProtocolError" in names:
            return "unreachable: the connection closed without an answer"
        return "unreachable: connection failed"
    if isinstance(exc, exc_.RequestException):
        return f"unreachable: {type(exc).__name__}"
    return f"error: {type(exc).__name__}"


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[Any] = [exc]
    while todo and len(seen) < 50:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None),
                     *item.args])
    return seen


# --------------------------------------------------------------------------- shape


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _want(where: str, value: Any, types: tuple[type, ...], expected: str) -> str | None:
    if isinstance(value, bool) and bool not in types:
        return f"{where} is {_json_type(value)} (expected {expected})"
    if value is None and type(None) in types:
        return None
    if not isinstance(value, types):
        return f"{where} is {_json_type(value)} (expected {expected})"
    return None


_STR_OR_NULL = (str, type(None))


def shape_problem(doc: Any) -> str | None:
    """What makes `doc` not a ci-cd.json of the contract (schema 1), or None.

    Checked: enough that the fleet report and the canary check can read it without
    surprises; keys the contract does not name are left alone.
    """
    if not isinstance(doc, dict):
        return f"the document is {_json_type(doc)} (expected an object)"
    schema = doc.get("schema")
    if type(schema) is not int or schema != 1:
        shown = _cut(json.dumps(schema), 20) if schema is not None else "missing"
        return f"schema is {shown} (expected 1)"
    for key in ("site", "flag"):
        if key not in doc:
            return f"{key} is missing"
        problem = _want(key, doc[key], (str,), "a string")
        if problem:
            return problem
    problem = _want("updated_at", doc.get("updated_at"), _STR_OR_NULL, "a string")
    if problem:
        return problem
    current = doc.get("current")
    problem = _want("current", current, (dict, type(None)), "an object or null")
    if problem:
        return problem
    if isinstance(current, dict):
        for key in ("branch", "commit", "version", "since"):
            problem = _want(f"current.{key}", current.get(key), _STR_OR_NULL,
                            "a string or null")
            if problem:
                return problem
    pending = doc.get("pending")
    problem = _want("pending", pending, (dict, type(None)), "an object or null")
    if problem:
        return problem
    if isinstance(pending, dict):
        for key in ("branch", "commit", "version", "reason"):
            problem = _want(f"pending.{key}", pending.get(key), _STR_OR_NULL,
                            "a string or null")
            if problem:
                return problem
    if "deploys" not in doc:
        return "deploys is missing"
    deploys = doc["deploys"]
    problem = _want("deploys", deploys, (list,), "an array")
    if problem:
        return problem
    for index, rec in enumerate(deploys):
        problem = _want(f"deploys[{index}]", rec, (dict,), "an object")
        if problem:
            return problem
        for key in ("branch", "version", "commit", "outcome", "started_at", "finished_at",
                    "trigger"):
            problem = _want(f"deploys[{index}].{key}", rec.get(key), _STR_OR_NULL,
                            "a string or null")
            if problem:
                return problem
    return None


# --------------------------------------------------------------------------- summary


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _one_line(value: Any, limit: int = TEXT_MAX) -> str:
    if value is None:
        return ""
    return _cut(_LINE_BREAKS_RE.sub(" ", redact(str(value))).strip(), limit)


def _text(value: Any, limit: int = TEXT_MAX) -> str | None:
    """A string value from a site's answer as one safe line, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return _one_line(value, limit)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _iso_z(value: Any) -> str | None:
    dt = parse_time(value)
    if dt is None:
        return _text(value, 40)
    try:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):  # 0001-01-01T00:00+01:00 has no UTC time
        return _text(value, 40)


def _version_key(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    return parse_version(value.strip())


def _pending_version(pending: dict, flag: str) -> str | None:
    version = pending.get("version")
    if isinstance(version, str) and _version_key(version):
        return version
    branch = pending.get("branch")
    if flag.endswith("*") and isinstance(branch, str) and len(branch) < 256:
        version, _ = release_version(branch, flag[:-1])
        return version
    return None


def _deploys(doc: dict) -> list[dict]:
    deploys = doc.get("deploys")
    if not isinstance(deploys, list):
        return []
    return [d for d in deploys if isinstance(d, dict)]


def is_unreachable(error: str | None) -> bool:
    """A fetch error that means the site did not answer (as opposed to a bad answer)."""
    if not isinstance(error, str) or not error:
        return False
    return error.startswith(("unreachable", "timed out")) or bool(re.match(r"HTTP 5\d\d", error))


def _failed_entry(answer: SiteAnswer, known: dict | None) -> dict:
    known = known or {}
    return {
        "url": _one_line(answer.url, 500),
        "site": _text(known.get("site"), NAME_MAX),
        "state": "unreachable" if is_unreachable(answer.error) else "bad_answer",
        "version": None,
        "commit": None,
        "last_outcome": None,
        "last_version": None,
        "last_finished_at": None,
        "error": _one_line(answer.error) or "no answer",
        "pending_reason": None,
        "ms": answer.ms,
    }


def _previous_groups(previous: dict | None) -> dict[str, dict]:
    """url -> {"flag", "site"} from an earlier fleet document (to place sites that do not
    answer today in the group they were in)."""
    known: dict[str, dict] = {}
    if not isinstance(previous, dict) or not isinstance(previous.get("groups"), list):
        return known
    for group in previous["groups"]:
        if not isinstance(group, dict) or not isinstance(group.get("flag"), str):
            continue
        for site in group.get("sites") or []:
            if isinstance(site, dict) and isinstance(site.get("url"), str):
                name = site.get("site") if isinstance(site.get("site"), str) else None
                known[site["url"]] = {"flag": group["flag"], "site": name}
    return known


def load_previous(out_dir: Path | None) -> dict | None:
    """The fleet document written last time into out_dir, or None (never raises)."""
    if out_dir is None:
        return None
    try:
        with open(Path(out_dir) / "ci-cd.json", "rb") as fh:
            data = fh.read(20 * MAX_BYTES)
        doc = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "fleet" else None


def summarize(answers: list[SiteAnswer], now: datetime, *, previous: dict | None = None) -> dict:
    """The fleet document: per group (a site's flag) and version, each site's state.

    `previous` (optional) is an earlier fleet document: a site that does not answer now is
    listed in the group it was in then; without it (or unknown there) it is listed in the
    top-level "unreachable" list.
    """
    known = _previous_groups(previous)
    groups: dict[str, list[tuple[SiteAnswer, dict | None]]] = {}
    orphans: list[dict] = []
    for answer in answers:
        doc = answer.doc if isinstance(answer.doc, dict) else None
        if doc is not None and answer.error is None and shape_problem(doc) is None:
            flag = _one_line(doc.get("flag"), NAME_MAX)
            groups.setdefault(flag, []).append((answer, doc))
            continue
        if doc is not None and answer.error is None:
            answer = SiteAnswer(answer.url, None, f"wrong schema: {shape_problem(doc)}",
                                answer.ms)
        previous_site = known.get(_one_line(answer.url, 500))
        if previous_site:
            groups.setdefault(_one_line(previous_site["flag"], NAME_MAX), []).append(
                (answer, None))
        else:
            orphans.append(_failed_entry(answer, None))

    out_groups = []
    for flag in sorted(groups):
        members = groups[flag]
        newest = _group_newest(flag, [doc for _, doc in members if doc is not None])
        sites = []
        for answer, doc in members:
            if doc is None:
                sites.append(_failed_entry(answer, known.get(_one_line(answer.url, 500))))
                continue
            try:
                sites.append(_site_entry(answer, doc, flag, newest))
            except Exception as exc:  # noqa: BLE001 - an answer nobody foresaw: report it
                odd = SiteAnswer(answer.url, None, f"bad answer: {type(exc).__name__}",
                                 answer.ms)
                sites.append(_failed_entry(odd, {"site": doc.get("site")}))
        sites.sort(key=lambda s: (STATES.index(s["state"]), s["url"]))
        counts = {state: 0 for state in _COUNT_KEYS}
        for site in sites:
            counts[site["state"]] += 1
        out_groups.append({
            "flag": flag,
            "newest_version": newest[0] if newest else None,
            "counts": counts,
            "sites": sites,
        })

    totals = {"sites": len(answers), "groups": len(out_groups)}
    totals.update({state: 0 for state in _COUNT_KEYS})
    for group in out_groups:
        for state, n in group["counts"].items():
            totals[state] += n
    for site in orphans:
        totals[site["state"]] += 1
    totals["needs_a_look"] = sum(totals[s] for s in NEEDS_A_LOOK)
    orphans.sort(key=lambda s: (STATES.index(s["state"]), s["url"]))
    return {
        "schema": 1,
        "kind": "fleet",
        "updated_at": _aware(now).isoformat(timespec="seconds"),
        "groups": out_groups,
        "unreachable": orphans,
        "totals": totals,
    }


_COUNT_KEYS = ("updated", "rolled_back", "failed", "pending", "unreachable", "old_version",
               "bad_answer")


def _group_newest(flag: str, docs: list[dict]) -> tuple[str, tuple[int, ...]] | None:
    """The newest version among the group's live versions, pending targets and newest
    deploy records: (as written, parsed)."""
    best: tuple[str, tuple[int, ...]] | None = None

    def consider(version: Any) -> None:
        nonlocal best
        key = _version_key(version)
        if key is not None and (best is None or key > best[1]):
            best = (_one_line(version, NAME_MAX), key)

    for doc in docs:
        current = doc.get("current")
        if isinstance(current, dict):
            consider(current.get("version"))
        pending = doc.get("pending")
        if isinstance(pending, dict):
            consider(_pending_version(pending, flag))
        deploys = _deploys(doc)
        if deploys:
            consider(deploys[0].get("version"))
    return best


def _site_entry(answer: SiteAnswer, doc: dict, flag: str,
                newest: tuple[str, tuple[int, ...]] | None) -> dict:
    current = doc.get("current") if isinstance(doc.get("current"), dict) else None
    pending = doc.get("pending") if isinstance(doc.get("pending"), dict) else None
    deploys = _deploys(doc)
    last = deploys[0] if deploys else None
    live_version = current.get("version") if current else None
    live_key = _version_key(live_version)
    last_outcome = last.get("outcome") if last else None

    state = "updated"
    if last_outcome in ("rolled_back", "failed"):
        rec_key = _version_key(last.get("version"))
        if newest is None or rec_key is None or rec_key >= newest[1]:
            state = last_outcome
    if state == "updated":
        if pending is not None:
            state = "pending"
        elif current is None or not current.get("commit"):
            state = "old_version" if newest is not None else "updated"
            if last_outcome in ("rolled_back", "failed"):
                state = last_outcome
        elif newest is not None and (live_key is None or live_key < newest[1]):
            state = "old_version"

    error = None
    if last is not None and last_outcome != "deployed":
        error = _text(last.get("error"))
    return {
        "url": _one_line(answer.url, 500),
        "site": _text(doc.get("site"), NAME_MAX),
        "state": state,
        "version": _text(live_version, NAME_MAX),
        "commit": _text(current.get("commit"), 64) if current else None,
        "last_outcome": _text(last_outcome, 40),
        "last_version": _text(last.get("version"), NAME_MAX) if last else None,
        "last_finished_at": _iso_z(last.get("finished_at") or last.get("started_at"))
        if last else None,
        "error": error,
        "pending_reason": _text(pending.get("reason")) if pending else None,
        "ms": answer.ms,
    }


# --------------------------------------------------------------------------- ci-cd.txt


def _all_sites(summary: dict) -> list[tuple[str | None, dict]]:
    rows = []
    for group in summary.get("groups") or []:
        for site in group.get("sites") or []:
            rows.append((group.get("flag"), site))
    for site in summary.get("unreachable") or []:
        rows.append((None, site))
    return rows


def _counts_text(counts: dict, labels: dict = SHORT_LABELS) -> str:
    parts = [f"{counts.get(s, 0)} {_plural(labels[s], counts.get(s, 0))}" for s in _COUNT_ORDER
             if counts.get(s)]
    return ", ".join(parts) if parts else "no sites"


def _plural(label: str, n: Any) -> str:
    return label + "s" if label == "bad answer" and n != 1 else label


# the order counts are told in: the good news first, as the owner reads them
_COUNT_ORDER = ("updated", "rolled_back", "failed", "pending", "unreachable", "old_version",
                "bad_answer")


def _short(commit: Any) -> str:
    return str(commit)[:7] if commit else "-------"


def _txt_site(site: dict) -> str:
    state = site.get("state") or "?"
    parts = [f"  {SHORT_LABELS.get(state, state).upper():<12}", _one_line(site.get("url"), 500)]
    if site.get("site"):
        parts.append(f"({_one_line(site.get('site'), NAME_MAX)})")
    if site.get("version") or site.get("commit"):
        version = _one_line(site.get("version"), NAME_MAX)
        parts.append(f"live {version + ' ' if version else ''}{_short(site.get('commit'))}")
    if site.get("last_outcome"):
        parts.append("last: " + _last_text(site))
    if site.get("pending_reason"):
        parts.append(f"pending: {_one_line(site.get('pending_reason'))}")
    if site.get("error"):
        parts.append(f"error: {_one_line(site.get('error'))}")
    return " ".join(parts)


def _last_text(site: dict) -> str:
    """ "rolled back 1.3.22 at 2026-11-27T03:00:00Z" """
    text = _one_line(site.get("last_outcome"), 40).replace("_", " ")
    if site.get("last_version"):
        text += f" {_one_line(site.get('last_version'), NAME_MAX)}"
    if site.get("last_finished_at"):
        text += f" at {_one_line(site.get('last_finished_at'), 40)}"
    return text


def render_txt(summary: dict) -> str:
    """ci-cd.txt of the fleet: the totals first, then a header and one line per site for
    each group (the sites that need a look first)."""
    totals = summary.get("totals") or {}
    when = _iso_z(summary.get("updated_at")) or "?"
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
        lines.append(f"{_one_line(group.get('flag'), NAME_MAX) or '?'}"
                     + (f" {_one_line(version, NAME_MAX)}" if version else "")
                     + f": {_counts_text(group.get('counts') or {})}")
        lines.extend(_txt_site(site) for site in group.get("sites") or [])
    orphans = summary.get("unreachable") or []
    if orphans:
        lines.append("")
        lines.append(f"no answer, group unknown: {len(orphans)}")
        lines.extend(_txt_site(site) for site in orphans)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ci-cd.html


def _e(value: Any) -> str:
    if value is None:
        return ""
    return html.escape(redact(str(value)), quote=True)


_CSS = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1d232a;--mute:#5f6b76;--line:#dde3e8;
--card:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--old:#8250df}
@media (prefers-color-scheme:dark){:root{--bg:#0f1419;--fg:#e6edf3;--mute:#9aa7b3;
--line:#2d3640;--card:#161c22;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff;
--old:#a371f7}}
*{box-sizing:border-box}
body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:60rem;margin:0 auto}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:0 0 .4rem}
.meta,.mute{color:var(--mute);font-size:.9rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
.totals{display:flex;flex-wrap:wrap;gap:.4rem;margin:.6rem 0}
.group{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:.75rem;margin:1rem 0}
.site{border-top:1px solid var(--line);padding:.45rem 0;border-left:4px solid transparent;
padding-left:.5rem;overflow-wrap:anywhere}
.site .line{display:flex;flex-wrap:wrap;gap:.2rem .6rem;align-items:baseline}
.site p{margin:.15rem 0;font-size:.9rem}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;color:#fff;
font-size:.8rem;font-weight:600;background:var(--mute);white-space:nowrap}
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
.error{color:var(--bad)}
a{color:var(--info)}
"""


def _badge(state: str, text: str | None = None) -> str:
    label = text if text is not None else SHORT_LABELS.get(state, state)
    return f'<span class="badge state-{_e(state)}">{_e(label)}</span>'


def _html_link(url: Any) -> str:
    text = _one_line(url, 500)
    if _url_problem(text) is None:
        return f'<a href="{_e(text)}" rel="noopener noreferrer nofollow">{_e(text)}</a>'
    return _e(text)


def _html_site(site: dict) -> str:
    state = site.get("state") if site.get("state") in STATES else "bad_answer"
    line = [_badge(state), f"<strong>{_e(site.get('site') or '?')}</strong>",
            f'<span class="url">{_html_link(site.get("url"))}</span>']
    details = []
    if site.get("version") or site.get("commit"):
        version = site.get("version")
        details.append(
            "live " + (f"<strong>{_e(version)}</strong> " if version else "")
            + f'<code title="{_e(site.get("commit"))}">{_e(_short(site.get("commit")))}</code>')
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
              for s in _COUNT_ORDER if counts.get(s)]
    return " ".join(badges) if badges else '<span class="mute">no sites</span>'


def render_html(summary: dict) -> str:
    """The fleet's ci-cd.html: self-contained (inline CSS, no script, no external assets).
    Everything a site sent is escaped."""
    totals = summary.get("totals") or {}
    when = _iso_z(summary.get("updated_at")) or "?"
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
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>fleet ci-cd {_e(when)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        "<main>\n"
        f'<header><h1>Fleet ci-cd</h1><p class="meta">{_e(totals.get("sites", 0))} sites in '
        f'{_e(totals.get("groups", 0))} groups &middot; updated <time datetime="{_e(when)}">'
        f"{_e(when)}</time></p>"
        f'<div class="totals" id="totals">{_html_counts(totals)}</div>'
        f'<p id="look" class="{"error" if look else "mute"}">'
        f'{_e(look) + " need a look" if look else "nothing needs a look"}</p></header>\n'
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- writing


def render_json(summary: dict) -> str:
    return dumps_json(summary)


def write_report(out_dir: Path, summary: dict) -> list[Path]:
    """Write the fleet's ci-cd.txt, ci-cd.html and ci-cd.json atomically (mode 0o644) into
    out_dir, creating it. Everything is rendered before the first file is written."""
    out_dir = Path(out_dir)
    contents = {
        "ci-cd.txt": render_txt(summary),
        "ci-cd.html": render_html(summary),
        "ci-cd.json": render_json(summary),
    }
    out_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    written = []
    for name in FILES:
        path = out_dir / name
        write_atomic(path, contents[name], 0o644)
        written.append(path)
    return written


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
    text = _one_line(value, limit)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_section(text: str) -> dict:
    return {"type": "section",
            "text": {"type": "mrkdwn", "text": _cut(text, SLACK_SECTION_CHARS)}}


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


def slack_summary(summary: dict, report_url: str | None = None) -> dict:
    """One Slack message {"text", "blocks"}: totals, counts per group, and the sites that
    need a look (at most SLACK_MAX_NAMED named, then "and N more")."""
    totals = summary.get("totals") or {}
    when = _iso_z(summary.get("updated_at")) or "?"
    look = totals.get("needs_a_look", 0)
    headline = (f"{':white_check_mark:' if not look else ':warning:'} Fleet report: "
                f"{_md(totals.get('sites', 0))} sites — {_md(_counts_text(totals, LABELS))}")
    blocks: list[dict] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _cut(f"Fleet report {when[:10]}", 150)}},
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
    flagged = [site for _, site in _all_sites(summary) if site.get("state") in NEEDS_A_LOOK]
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
    if report_url and _url_problem(report_url) is None:
        url = redact(report_url).replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
        context.insert(0, {"type": "mrkdwn", "text": f"<{url}|Full report>"})
    blocks.append({"type": "context", "elements": context})
    text = headline + (f"; {look} need a look" if look else "")
    return {"text": text, "blocks": blocks}
