"""Fetching every site's public ci-cd.json, for the fleet report and the canary check.

Every answer is untrusted. Each fetch has a total deadline, reads at most MAX_BYTES, follows
at most MAX_REDIRECTS redirects, ignores proxy settings from the environment, and keeps only
documents the report can read (agent.cicd_shape.shape_problem). Whatever goes wrong is one
line in SiteAnswer.error: fetch_all never raises. The URLs come from agent.fleet_sites.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from agent.cicd_head import read_head
from agent.cicd_shape import shape_problem
from agent.fleet_sites import ci_cd_json_url, url_problem
from agent.text import cut, one_line

MAX_BYTES = 1_000_000
MAX_REDIRECTS = 3
# Fetches under way at once: enough that sites slow to answer (up to the timeout) do not
# hold the others up; bounded, as each may hold a body of up to MAX_BYTES.
MAX_WORKERS = 64
PARSERS = 2  # documents parsed at once (the GIL runs one anyway; a parse is ~5x its body)
WATCH_SECONDS = 0.05  # how often the watchdog looks for fetches past their deadline
KEEP_DEPLOYS = 50  # deploy records kept per answer (newest first); the report needs the newest
ERROR_MAX = 300  # characters kept of an error line
T = TypeVar("T")


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class SiteAnswer:
    url: str  # the site URL as configured
    doc: dict | None  # the parsed, shape-checked ci-cd.json, or None
    error: str | None  # one line, e.g. "unreachable: connection refused", "HTTP 404"
    ms: int


def is_unreachable(error: str | None) -> bool:
    """A fetch error that means the site did not answer (as opposed to a bad answer)."""
    if not isinstance(error, str) or not error:
        return False
    return error.startswith(("unreachable", "timed out")) or bool(re.match(r"HTTP 5\d\d", error))


# --------------------------------------------------------------------------- the deadline
# requests' timeouts give each connect and each read the time left (a TLS handshake, too:
# Python's ssl takes the socket's timeout as a deadline for the whole handshake). But a
# server that drips one byte at a time never makes a single read wait long. So every socket
# a fetch uses is registered with the fetch's _Watch, and when its deadline passes
# fetch_all's loop shuts those sockets down, which ends any blocked read at once; the body is
# read in pieces and the deadline checked after each. The sockets are found through public
# hooks: connect() and request() of the connection class (ConnectionCls) of urllib3's pools.


class _Watch:
    """The total deadline of one fetch and the sockets to shut down when it passes."""

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

    def release(self) -> None:
        """The fetch has its body: its kept-alive sockets now serve other fetches, which its
        deadline must not cut short."""
        with self._lock:
            self._socks = []

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
        # the plain socket call, also for an SSLSocket: no TLS state is touched from this
        # thread, the reader just sees the connection end
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass


# urllib3 makes the connections deep inside requests: they find their fetch's _Watch here
_this_thread = threading.local()  # .watch: the _Watch of the fetch this thread is doing


def _watch_socket(sock: Any) -> None:
    watch = getattr(_this_thread, "watch", None)
    if watch is not None:
        watch.add(sock)


class _WatchedMixin:
    """Registers the connection's socket with the current fetch's _Watch: once connected,
    and again for each request (a kept-alive connection serves the next fetch too)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_socket(getattr(self, "sock", None))

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch_socket(getattr(self, "sock", None))  # None before the first connect()
        return super().request(*args, **kwargs)  # type: ignore[misc]


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
    # no cookies kept: a hostile site's Set-Cookie would fill the jar for the whole session
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    size = max(10, pool_size)
    for prefix in ("https://", "http://"):
        if not isinstance(session.get_adapter(prefix + "example.invalid/"), DeadlineAdapter):
            session.mount(prefix, DeadlineAdapter(pool_connections=size, pool_maxsize=size))


# --------------------------------------------------------------------------- fetching


class _Failed(Exception):
    """A fetch failed; the message is SiteAnswer.error."""


_NO_PROXIES = {"http": None, "https": None, "all": None}
_HEADERS = {
    "User-Agent": "ghost-deploy-agent fleet",
    "Accept": "application/json",
    "Accept-Encoding": "identity",
}


def fetch_all(
    urls: Sequence[str],
    timeout: float,
    *,
    max_workers: int | None = None,
    session: requests.Session | None = None,
    keep_deploys: int | None = KEEP_DEPLOYS,
) -> list[SiteAnswer]:
    """Fetch every site's ci-cd.json concurrently; answers in the order of `urls`.

    Each fetch has a total deadline of `timeout` seconds from its start (connect, redirects,
    headers and body together). Never raises: every failure is a SiteAnswer with an error.
    `max_workers`: fetches under way at once (default MAX_WORKERS).
    A session passed in is prepared like make_session()'s (its http/https adapters replaced by
    DeadlineAdapter, trust_env off) unless that was done already.

    Each document is shape-checked (agent.cicd_shape); its "deploys" is cut to the newest
    `keep_deploys` records (plus the newest record of the live commit, wherever it is);
    None keeps them all. For many sites, fetch_each() with a digest keeps far less.
    """
    return fetch_each(urls, timeout, lambda answer: _checked(answer, keep_deploys),
                      max_workers=max_workers, session=session)


def fetch_each(
    urls: Sequence[str],
    timeout: float,
    digest: Callable[[SiteAnswer], T],
    *,
    max_workers: int | None = None,
    session: requests.Session | None = None,
    head_only: bool = False,
) -> list[T]:
    """As fetch_all, but each answer goes through `digest` in the thread that fetched it,
    and only what that returns is kept: [digest(answer) for each URL], in the order of urls.

    The answer's doc is the parsed JSON, not shape-checked (that is the digest's job); with
    `head_only`, only its head is parsed: the keys before "deploys" and its first record
    (agent.cicd_head, what the fleet report reads). So
    memory stays flat however many sites there are: at most `max_workers` bodies (each up
    to MAX_BYTES) and PARSERS parsed documents exist at once. `digest` must not raise.
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
    workers = max(1, min(int(max_workers or MAX_WORKERS), len(urls)))
    own = session is None
    if session is None:
        session = make_session(workers)
    else:
        with contextlib.suppress(AttributeError, TypeError):  # an odd session: used as is
            _prepare(session, workers)

    active: set[_Watch] = set()  # the watches of the fetches under way
    lock = threading.Lock()
    parsing = threading.BoundedSemaphore(PARSERS)
    left = [len(urls)]
    all_done = threading.Event()

    def task(url: str) -> T:
        watch = _Watch(time.monotonic() + timeout)
        with lock:
            active.add(watch)
        try:
            return _fetch_one(session, url, timeout, watch, digest, parsing, head_only)
        finally:
            with lock:
                active.discard(watch)
                left[0] -= 1
                if not left[0]:
                    all_done.set()

    results: list[T] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-fetch") as pool:
            futures = [pool.submit(task, url) for url in urls]
            # the watchdog: expire every fetch past its deadline (it looks at the fetches
            # under way only: waiting on every future would cost O(sites) each time)
            while not all_done.wait(WATCH_SECONDS):
                now = time.monotonic()
                with lock:
                    overdue = [w for w in active if w.deadline <= now]
                for watch in overdue:
                    watch.expire()
            for url, future in zip(urls, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception as exc:  # noqa: BLE001 - never raise: report it per site
                    results.append(digest(SiteAnswer(
                        url, None, f"internal error: {type(exc).__name__}", 0)))
    finally:
        if own:
            session.close()
    return results


def _fetch_one(session: requests.Session, url: str, timeout: float, watch: _Watch,
               digest: Callable[[SiteAnswer], T], parsing: threading.BoundedSemaphore,
               head_only: bool) -> T:
    started = time.monotonic()
    _this_thread.watch = watch
    got: tuple[bytes, str] | None = None
    try:
        got = _get_body(session, url, timeout, watch)
        error = None
    except _Failed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile server provokes
        error = _describe(exc, timeout)
    finally:
        _this_thread.watch = None
        watch.release()
    if got is None and watch.expired:
        # a shut-down socket surfaces as whatever error the read was in: name the real cause
        error = _timed_out(timeout)
    ms = int((time.monotonic() - started) * 1000)
    # a parse holds the GIL, and a parsed document is several times its body: a few at once,
    # each digested (and dropped) before the next starts
    with parsing:
        if got is None:
            return digest(SiteAnswer(url, None, cut(one_line(error), ERROR_MAX), ms))
        try:
            doc = _parse(*got, head_only)
        except _Failed as exc:
            return digest(SiteAnswer(url, None, str(exc), ms))
        del got
        return digest(SiteAnswer(url, doc, None, ms))


def _checked(answer: SiteAnswer, keep: int | None) -> SiteAnswer:
    """fetch_all's digest: a document not of the contract's shape is an error; a long
    history is cut."""
    if answer.doc is None:
        return answer
    problem = shape_problem(answer.doc)
    if problem:
        return SiteAnswer(answer.url, None, cut(one_line(f"wrong schema: {problem}"),
                                                ERROR_MAX), answer.ms)
    return SiteAnswer(answer.url, _trim(answer.doc, keep), None, answer.ms)


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


def _get_body(session: requests.Session, url: str, timeout: float,
              watch: _Watch) -> tuple[bytes, str]:
    """(the body, its Content-Type) of the site's ci-cd.json; raises on any failure."""
    if not isinstance(url, str) or url_problem(url):
        raise _Failed("bad URL: expected an http(s) URL")
    target = ci_cd_json_url(url)
    # redirects are followed here, not by requests: each hop gets only the time left, and a
    # redirect to a non-http URL is refused
    for _hop in range(MAX_REDIRECTS + 1):
        remaining = watch.deadline - time.monotonic()
        if watch.expired or remaining <= 0:
            raise _Failed(_timed_out(timeout))
        # session.send, not .get: nothing of the session's or the environment's is merged
        # in (cookies, auth, proxies), and that merging was a fifth of a fetch's CPU
        request = requests.Request("GET", target, headers=_HEADERS).prepare()
        response = session.send(request, timeout=(remaining, remaining), stream=True,
                                allow_redirects=False, proxies=_NO_PROXIES)
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
            return body, response.headers.get("Content-Type", "")
    raise _Failed(f"too many redirects (more than {MAX_REDIRECTS})")


def _read_limited(response: requests.Response, watch: _Watch, timeout: float) -> bytes:
    too_large = f"too large (> {MAX_BYTES} bytes)"
    length = response.headers.get("Content-Length", "").strip()
    # (a length of thousands of digits is too large, and int() would refuse it)
    if length.isdigit() and (len(length) > 15 or int(length) > MAX_BYTES):
        raise _Failed(too_large)
    # one read of at most MAX_BYTES + 1 (a read per piece costs a GIL hand-over per piece);
    # a drip that never ends is ended by the watchdog shutting the socket down
    body = response.raw.read(MAX_BYTES + 1, decode_content=True)
    if watch.expired:
        raise _Failed(_timed_out(timeout))
    if len(body) > MAX_BYTES:
        raise _Failed(too_large)
    return body


def _parse(body: bytes, content_type: str, head_only: bool = False) -> Any:
    try:
        doc = read_head(body) if head_only else json.loads(body)
    except (ValueError, RecursionError):
        kind = content_type.split(";")[0].strip().lower()
        if kind == "text/html" or body.lstrip()[:1] == b"<":
            raise _Failed("not JSON (an HTML page)") from None
        if not body.strip():
            raise _Failed("not JSON (an empty answer)") from None
        raise _Failed("not JSON") from None
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
    """The exception and everything it wraps (urllib3 buries the real cause deep)."""
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
