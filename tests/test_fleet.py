"""`ghost-agent fleet`: fetching every site's ci-cd.json from real local HTTP servers (good,
missing, refused, hostile, slow), summarizing, rendering and writing the fleet report.

The good sites serve documents built by agent.publish.build_document (the writer every agent
uses) or, in test_report_of_a_real_agent_run, the ci-cd.json a real `ghost-agent once` wrote.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from agent import fleet, fleet_fetch, fleet_render
from agent.cicd_shape import shape_problem
from agent.fleet import summarize
from agent.fleet_fetch import SiteAnswer, fetch_all
from agent.publish import build_document
from tests.contract_schema import validate_ci_cd

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
HOSTILE = '<script>alert("x")</script>'


# --------------------------------------------------------------------------- a local web


def sha(n: int) -> str:
    return f"{n:040x}"


def record(version: str | None, commit: str, outcome: str = "deployed", *,
           branch: str | None = None, finished: datetime = NOW - timedelta(hours=2),
           previous: str | None = None, error: str | None = None) -> dict:
    """A deploy record shaped like DeployRecord.to_dict()."""
    started = finished - timedelta(seconds=40)
    return {
        "trigger": "poll", "branch": branch or (f"prod-asterix-{version}" if version else "dev1"),
        "version": version, "commit": commit, "previous_commit": previous,
        "outcome": outcome, "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "cards": ["B321"], "uncarded_commits": [],
        "checks": [{"name": "home", "url": "http://127.0.0.1:2368/", "ok": outcome == "deployed",
                    "status": 200 if outcome == "deployed" else 500, "ms": 12,
                    "error": None}],
        "error": error, "step": None if outcome == "deployed" else "checks",
        "live_commit": previous if outcome != "deployed" else None,
    }


def site_doc(name: str, version: str | None, *, flag: str = "prod-asterix*",
             outcome: str = "deployed", pending: dict | None = None,
             tried: str | None = None, since: datetime = NOW - timedelta(hours=2),
             error: str | None = None) -> dict:
    """The ci-cd.json of a site live on `version`; `tried`/`outcome` add a newest deploy of
    another version that did not succeed (rolled_back/failed)."""
    live = sha(hash((name, version)) & 0xFFFFFFFF)
    deploys = [record(version, live, finished=since, branch=None if version else "dev1")]
    if outcome != "deployed":
        bad = sha((hash((name, tried)) & 0xFFFFFFFF) + 1)
        deploys.insert(0, record(tried, bad, outcome, previous=live, error=error))
    current = {"branch": f"prod-asterix-{version}" if version else "dev1", "commit": live,
               "version": version, "since": since.isoformat(timespec="seconds")}
    return build_document(site=name, flag=flag, current=current, pending=pending,
                          deploys=deploys, now=NOW)


Route = Callable[[BaseHTTPRequestHandler], None]


class LocalWeb:
    """One threaded HTTP server on 127.0.0.1 answering per path (see the route helpers)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.stopping = threading.Event()
        self.hits: dict[str, int] = {}
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                web.hits[path] = web.hits.get(path, 0) + 1
                route = web.routes.get(path)
                try:
                    if route is None:
                        send(self, 404, b"Not found\n")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> LocalWeb:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- routes: each returns the site URL to configure
    def site(self, name: str, route: Route) -> str:
        """A site at BASE/<name>: its ci-cd.json is at BASE/<name>/content/files/ci-cd.json."""
        self.routes[f"/{name}/content/files/ci-cd.json"] = route
        return f"{self.base}/{name}"

    def json_site(self, name: str, doc: Any) -> str:
        body = json.dumps(doc).encode()
        return self.site(name, lambda h: send(h, 200, body, "application/json"))


def send(h: BaseHTTPRequestHandler, status: int, body: bytes,
         ctype: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.end_headers()
    h.wfile.write(body)


def huge(with_length: bool) -> Route:
    """A 10 MB JSON-looking body, sent in 64 KB pieces."""
    size = 10 * 1024 * 1024

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if with_length:
            h.send_header("Content-Length", str(size))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        piece = b" " * 65536
        h.wfile.write(b'{"schema": 1, "pad": "')
        for _ in range(size // len(piece)):
            h.wfile.write(piece)
    return route


def drip(web: LocalWeb, *, interval: float = 0.5, in_headers: bool = False) -> Route:
    """One byte every `interval` seconds: of the body, or already of the headers."""
    body = json.dumps(site_doc("slow", "1.3.22")).encode()

    def route(h: BaseHTTPRequestHandler) -> None:
        if in_headers:
            h.wfile.write(b"HTTP/1.1 200 OK\r\n")
            data = b"X-Slow: " + b"a" * 1000 + b"\r\n\r\n"
        else:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode())
            data = body
        for i in range(len(data)):
            if web.stopping.wait(interval):
                return
            h.wfile.write(data[i:i + 1])
    return route


def redirect(to: str, status: int = 302) -> Route:
    return lambda h: send(h, status, b"moved\n", headers={"Location": to})


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def web() -> Iterator[LocalWeb]:
    server = LocalWeb().start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- fetching


def test_good_sites_in_order_with_their_documents(web):
    docs = {f"s{n}": site_doc(f"asterix-{n}", "1.3.22") for n in range(5)}
    urls = [web.json_site(name, doc) for name, doc in docs.items()]
    # a .json URL is read as it is
    web.routes["/elsewhere/report.json"] = lambda h: send(
        h, 200, json.dumps(docs["s0"]).encode(), "application/json")
    urls.append(f"{web.base}/elsewhere/report.json")
    answers = fetch_all(urls, timeout=5)
    assert [a.url for a in answers] == urls
    assert [a.error for a in answers] == [None] * 6
    assert [a.doc for a in answers] == [*docs.values(), docs["s0"]]
    assert all(isinstance(a.ms, int) and a.ms >= 0 for a in answers)


def test_every_bad_answer_is_reported_per_site_and_nothing_raises(web):
    good = web.json_site("good", site_doc("good", "1.3.22"))
    doc = site_doc("x", "1.3.22")
    schema2 = {**doc, "schema": 2}
    deploys_not_list = {**doc, "deploys": {"0": doc["deploys"][0]}}
    version_number = {**doc, "current": {**doc["current"], "version": 1.3}}
    deploy_not_dict = {**doc, "deploys": [*doc["deploys"], "oops"]}
    schema_true = {**doc, "schema": True}
    cases = {
        "missing": (web.base + "/missing", "HTTP 404"),
        "server-error": (web.site("e500", lambda h: send(h, 500, b"oops")), "HTTP 500"),
        "refused": (closed_port_url(), "unreachable: connection refused"),
        "text": (web.site("text", lambda h: send(h, 200, b"hello, world\n")), "not JSON"),
        "html": (web.site("html", lambda h: send(h, 200, b"<!DOCTYPE html><html>Ghost</html>",
                                                 "text/html; charset=utf-8")),
                 "not JSON (an HTML page)"),
        "empty": (web.site("empty", lambda h: send(h, 200, b"")), "not JSON (an empty answer)"),
        "deep": (web.site("deep", lambda h: send(h, 200, b"[" * 200_000 + b"]" * 200_000)),
                 "not JSON"),
        "huge": (web.site("huge", huge(with_length=True)), "too large (> 1000000 bytes)"),
        "huge-stream": (web.site("huge2", huge(with_length=False)),
                        "too large (> 1000000 bytes)"),
        "array": (web.json_site("array", [doc]),
                  "wrong schema: the document is an array (expected an object)"),
        "schema2": (web.json_site("schema2", schema2), "wrong schema: schema is 2 (expected 1)"),
        "schema-true": (web.json_site("schema-true", schema_true),
                        "wrong schema: schema is true (expected 1)"),
        "deploys": (web.json_site("deploys", deploys_not_list),
                    "wrong schema: deploys is an object (expected an array)"),
        "version": (web.json_site("version", version_number),
                    "wrong schema: current.version is a number (expected a string or null)"),
        "deploy-item": (web.json_site("deploy-item", deploy_not_dict),
                        "wrong schema: deploys[1] is a string (expected an object)"),
        "loop": (web.site("loop", redirect("/loop/content/files/ci-cd.json")),
                 "too many redirects (more than 3)"),
        "bad-url": ("not a url", "bad URL: expected an http(s) URL"),
        "ftp": ("ftp://127.0.0.1/x", "bad URL: expected an http(s) URL"),
    }
    urls = [good] + [url for url, _ in cases.values()]
    started = time.monotonic()
    answers = fetch_all(urls, timeout=5)
    assert time.monotonic() - started < 5
    assert answers[0].error is None and answers[0].doc["site"] == "good"
    got = {name: a.error for name, a in zip(cases, answers[1:], strict=True)}
    assert got == {name: want for name, (_, want) in cases.items()}
    assert all(a.doc is None for a in answers[1:])
    assert all("\n" not in a.error for a in answers[1:])
    # the redirect loop was followed 3 times, then given up
    assert web.hits["/loop/content/files/ci-cd.json"] == 4


def test_huge_body_is_not_read_to_the_end(web):
    url = web.site("huge", huge(with_length=False))
    started = time.monotonic()
    [answer] = fetch_all([url], timeout=10)
    assert answer.error == "too large (> 1000000 bytes)"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_slow_drip_is_cut_off_at_the_total_deadline(web, in_headers):
    slow = web.site("slow", drip(web, interval=0.5, in_headers=in_headers))
    good = web.json_site("good", site_doc("good", "1.3.22"))
    started = time.monotonic()
    answers = fetch_all([slow, good], timeout=1)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert answers[0].doc is None
    assert answers[0].error == "timed out after 1s"
    assert 900 <= answers[0].ms < 1500
    assert answers[1].error is None


def test_a_tls_handshake_that_drips_is_cut_off_at_the_total_deadline():
    """An https site whose server answers the TLS hello one byte at a time (a record header
    announcing 16 KB, then a byte every 0.2 s): no single read ever waits long."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)  # the ClientHello
                data = b"\x16\x03\x03\x40\x00" + b"\x02" * 16384
                for i in range(len(data)):
                    if stop.wait(0.2):
                        return
                    conn.sendall(data[i:i + 1])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        [answer] = fetch_all([f"https://127.0.0.1:{listener.getsockname()[1]}"], timeout=1)
        assert time.monotonic() - started < 1.5
        assert answer.error == "timed out after 1s"
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_server_that_never_answers_times_out(web):
    gate = threading.Event()
    silent = web.site("silent", lambda h: gate.wait(5))
    started = time.monotonic()
    [answer] = fetch_all([silent], timeout=0.5)
    gate.set()
    assert answer.error == "timed out after 0.5s"
    assert time.monotonic() - started < 1.5


def test_a_listener_that_never_accepts_times_out():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)  # connects may complete into the backlog, nobody ever reads
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        answers = fetch_all([url, url, url], timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert {a.error for a in answers} == {"timed out after 0.5s"}
    finally:
        sock.close()


def test_redirects_are_followed_up_to_three(web):
    doc = site_doc("moved", "1.3.22")
    web.routes["/final.json"] = lambda h: send(h, 200, json.dumps(doc).encode(),
                                               "application/json")
    web.routes["/r3"] = redirect("/final.json", 301)
    web.routes["/r2"] = redirect(f"{web.base}/r3", 307)
    three = web.site("three", redirect("/r2", 308))
    web.routes["/r0"] = redirect(three + "/content/files/ci-cd.json")
    four = f"{web.base}/r0.json"
    web.routes["/r0.json"] = redirect("/r0")
    elsewhere = web.site("file", redirect("file:///etc/passwd"))
    answers = fetch_all([three, four, elsewhere], timeout=5)
    assert answers[0].error is None and answers[0].doc == doc
    assert answers[1].error == "too many redirects (more than 3)"
    assert answers[2].error == "bad answer: redirect to a non-http URL"


def test_fetches_run_concurrently(web):
    def slow_ok(h: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        send(h, 200, json.dumps(site_doc("s", "1.3.22")).encode(), "application/json")
    urls = [web.site(f"s{n}", slow_ok) for n in range(16)]
    started = time.monotonic()
    answers = fetch_all(urls, timeout=5, max_workers=16)
    assert all(a.error is None for a in answers)
    assert time.monotonic() - started < 3.0  # one after the other: 6.4 s


def test_proxies_from_the_environment_are_ignored(web, monkeypatch):
    dead_proxy = closed_port_url()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = web.json_site("a", site_doc("a", "1.3.22"))
    [answer] = fetch_all([url], timeout=5)
    assert answer.error is None
    # and a session passed in is prepared the same way
    session = requests.Session()
    [answer] = fetch_all([url], timeout=5, session=session)
    assert answer.error is None
    assert session.trust_env is False
    assert isinstance(session.get_adapter(url), fleet_fetch.DeadlineAdapter)
    session.close()


def test_cookies_a_site_sets_are_neither_kept_nor_sent(web):
    """A hostile site's Set-Cookie would otherwise fill the session's jar for every fetch
    after it (and be sent back to it)."""
    body = json.dumps(site_doc("a", "1.3.22")).encode()
    seen = []

    def cookie_site(h):
        seen.append(h.headers.get("Cookie"))
        send(h, 200, body, "application/json",
             {"Set-Cookie": f"big={'x' * 3000}; Path=/; Max-Age=3600"})

    url = web.site("cookies", cookie_site)
    session = requests.Session()
    answers = fetch_all([url, url, url], timeout=5, max_workers=1, session=session)
    assert [a.error for a in answers] == [None, None, None]
    assert len(session.cookies) == 0
    assert seen == [None, None, None]
    session.close()


def test_drip_through_a_passed_session_is_cut_off_too(web):
    slow = web.site("slow", drip(web, interval=0.2))
    with requests.Session() as session:
        started = time.monotonic()
        [answer] = fetch_all([slow], timeout=0.6, session=session)
        assert time.monotonic() - started < 1.1
    assert answer.error == "timed out after 0.6s"


def test_long_histories_are_cut_but_the_live_commits_record_is_kept(web):
    doc = site_doc("long", "1.3.22")
    live = doc["deploys"][0]
    older = [record("1.3.21", sha(1000 + n), finished=NOW - timedelta(days=n + 1))
             for n in range(70)]
    # the live commit was redeployed long ago; 60 records of failed tries came since
    tries = [record("1.3.23", sha(2000 + n), "rolled_back", previous=live["commit"])
             for n in range(60)]
    doc["deploys"] = [*tries, live, *older]
    url = web.json_site("long", doc)
    [cut] = fetch_all([url], timeout=5)
    assert len(cut.doc["deploys"]) == fleet_fetch.KEEP_DEPLOYS + 1
    assert cut.doc["deploys"][:fleet_fetch.KEEP_DEPLOYS] == tries[:fleet_fetch.KEEP_DEPLOYS]
    assert cut.doc["deploys"][-1] == live
    [whole] = fetch_all([url], timeout=5, keep_deploys=None)
    assert whole.doc == doc


def test_no_urls_no_answers():
    assert fetch_all([], timeout=1) == []


# --------------------------------------------------------------------------- summary


def fleet_of_every_state(web: LocalWeb) -> tuple[list[str], dict[str, str]]:
    """Sites in every state (and a hostile one); returns (urls, url -> expected state)."""
    pending = {"branch": "prod-asterix-1.3.22", "commit": sha(99),
               "reason": "waiting for the window (opens 03:30)"}
    sites = {
        "a-updated": (site_doc("asterix-a", "1.3.22"), "updated"),
        "b-updated-dashes": (site_doc("asterix-b", "1-3-22"), "updated"),
        "c-rolled-back": (site_doc("asterix-c", "1.3.21", outcome="rolled_back", tried="1.3.22",
                                   error="check home: HTTP 500"), "rolled_back"),
        "d-failed": (site_doc("asterix-d", "1.3.21", outcome="failed", tried="1-3-22",
                              error="restart of ghost.service failed"), "failed"),
        "e-pending": (site_doc("asterix-e", "1.3.21", pending=pending), "pending"),
        "f-old": (site_doc("asterix-f", "1.3.9"), "old_version"),
        # an old rollback (of 1.3.20) on a site still on 1.3.19: it is behind, that is all
        "g-old-rollback": (site_doc("asterix-g", "1.3.19", outcome="rolled_back",
                                    tried="1.3.20"), "old_version"),
        "h-dev1": (site_doc("dev1", None, flag="dev1"), "updated"),
        "i-hostile": (site_doc(HOSTILE, "2.0.0", flag=f"{HOSTILE}*", outcome="failed",
                               tried="2.0.1", error=f"{HOSTILE}\nline two & more"), "failed"),
    }
    urls, want = [], {}
    for name, (doc, state) in sites.items():
        url = web.json_site(name, doc)
        urls.append(url)
        want[url] = state
    for url, state in [(closed_port_url(), "unreachable"),
                       (web.site("html", lambda h: send(h, 200, b"<html></html>",
                                                        "text/html")), "bad_answer"),
                       (web.base + "/gone", "bad_answer")]:
        urls.append(url)
        want[url] = state
    return urls, want


def all_sites(summary: dict) -> dict[str, dict]:
    out = {s["url"]: s for g in summary["groups"] for s in g["sites"]}
    out.update({s["url"]: s for s in summary["unreachable"]})
    return out


def test_summary_states_counts_and_groups(web):
    urls, want = fleet_of_every_state(web)
    summary = summarize(fetch_all(urls, timeout=5), NOW)
    assert summary["schema"] == 1 and summary["kind"] == "fleet"
    assert summary["updated_at"] == "2026-11-27T05:00:00+00:00"
    sites = all_sites(summary)
    assert {url: s["state"] for url, s in sites.items()} == want
    groups = {g["flag"]: g for g in summary["groups"]}
    assert set(groups) == {"prod-asterix*", "dev1", f"{HOSTILE}*"}
    asterix = groups["prod-asterix*"]
    assert asterix["newest_version"] == "1.3.22"
    assert asterix["counts"] == {"updated": 2, "rolled_back": 1, "failed": 1, "pending": 1,
                                 "unreachable": 0, "old_version": 2, "bad_answer": 0}
    # the sites that need a look come first
    assert [s["state"] for s in asterix["sites"]] == [
        "failed", "rolled_back", "old_version", "old_version", "pending", "updated", "updated"]
    assert groups["dev1"]["newest_version"] is None
    assert groups["dev1"]["counts"]["updated"] == 1
    # sites that did not answer: group unknown
    assert sorted(s["state"] for s in summary["unreachable"]) == [
        "bad_answer", "bad_answer", "unreachable"]
    assert summary["totals"] == {
        "sites": 12, "groups": 3, "updated": 3, "rolled_back": 1, "failed": 2, "pending": 1,
        "unreachable": 1, "old_version": 2, "bad_answer": 2, "needs_a_look": 8}
    rolled = next(s for s in asterix["sites"] if s["state"] == "rolled_back")
    assert rolled["site"] == "asterix-c"
    assert (rolled["version"], rolled["last_outcome"], rolled["last_version"]) == (
        "1.3.21", "rolled_back", "1.3.22")
    assert rolled["error"] == "check home: HTTP 500"
    assert rolled["last_finished_at"] == "2026-11-27T03:00:00Z"
    assert len(rolled["commit"]) == 40
    pend = next(s for s in asterix["sites"] if s["state"] == "pending")
    assert pend["pending_reason"] == "waiting for the window (opens 03:30)"
    hostile = groups[f"{HOSTILE}*"]["sites"][0]
    assert hostile["error"] == f"{HOSTILE} line two & more"  # one line
    json.dumps(summary)  # serialisable


def test_summary_places_a_silent_site_in_its_group_of_last_time(web):
    up = web.json_site("up", site_doc("asterix-a", "1.3.22"))
    down = closed_port_url()
    first = summarize([SiteAnswer(up, site_doc("asterix-a", "1.3.22"), None, 5),
                       SiteAnswer(down, site_doc("asterix-z", "1.3.22"), None, 5)], NOW)
    summary = summarize(fetch_all([up, down], timeout=5), NOW, previous=first)
    [group] = summary["groups"]
    assert group["counts"]["unreachable"] == 1 and group["counts"]["updated"] == 1
    silent = next(s for s in group["sites"] if s["url"] == down)
    assert (silent["site"], silent["state"]) == ("asterix-z", "unreachable")
    assert summary["unreachable"] == []


def test_summary_never_trusts_a_document_it_is_handed():
    odd = [
        SiteAnswer("https://a", {"schema": 1, "site": "a", "flag": "x*", "current": {
            "commit": sha(1), "version": 7, "since": "yesterday"}, "deploys": []}, None, 1),
        SiteAnswer("https://b", {"schema": 1, "site": "b", "flag": "x*", "current": None,
                                 "deploys": [1, 2]}, None, 1),
        SiteAnswer("https://c", ["not", "a", "dict"], None, 1),  # type: ignore[arg-type]
        SiteAnswer("https://d", {"schema": 1, "site": "d", "flag": "x*",
                                 "current": {"commit": sha(2), "version": "1.0",
                                             "since": "not a time"},
                                 "pending": None, "deploys": []}, None, 1),
    ]
    summary = summarize(odd, NOW)
    states = {s["url"]: s["state"] for s in all_sites(summary).values()}
    assert states == {"https://a": "bad_answer", "https://b": "bad_answer",
                      "https://c": "bad_answer", "https://d": "updated"}
    assert all_sites(summary)["https://a"]["error"].startswith("wrong schema: current.version")


ODD_VALUES = [None, True, False, 0, -1, 1.5, 1e308, 10**40, "", " ", "x" * 5000, HOSTILE,
              "1.3.22", "1-3-23", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+01:00",
              "rolled_back", "failed", "deployed", "\n\x00\u2028", [], {}, [1, "a", None],
              {"a": {"b": []}}, [{"outcome": "failed"}]]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


def fuzzed_docs(count: int, seed: int = 20261127) -> Iterator[dict]:
    """Contract documents with one to three values replaced by odd ones (or removed)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    pending = {"branch": "prod-asterix-1.3.23", "commit": sha(5), "reason": "waiting"}
    bases = [site_doc("a", "1.3.22"), site_doc("b", "1.3.21", outcome="rolled_back",
                                               tried="1.3.22"),
             site_doc("c", "1.3.22", pending=pending)]
    for _ in range(count):
        doc = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(_paths(doc))
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict) and rng.random() < 0.2:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
            if not _paths(doc):
                break
        yield doc


def test_odd_documents_never_crash_the_report():
    good = SiteAnswer("https://good", site_doc("good", "1.3.22"), None, 1)
    for n, doc in enumerate(fuzzed_docs(600)):
        answers = [good, SiteAnswer(f"https://odd{n}", doc, None, 1)]
        summary = summarize(answers, NOW)
        assert summary["totals"]["sites"] == 2
        json.dumps(summary)
        fleet_render.render_txt(summary)
        page = fleet_render.render_html(summary)
        assert "<script" not in page
        assert "<script" not in json.dumps(fleet_render.slack_summary(summary))


def test_every_document_that_keeps_to_the_contract_is_readable():
    """The reader's check walks the contract's own schema (agent.cicd_shape): whatever keeps to
    the contract is read, and the check never raises on what does not."""
    kept = 0
    for doc in fuzzed_docs(600, seed=11):
        problem = shape_problem(doc)
        if not validate_ci_cd(doc):
            kept += 1
            assert problem is None, (problem, doc)
    assert kept > 20  # the fuzzing left some documents whole enough to matter
    assert shape_problem(site_doc("a", "1.3.22")) is None


def test_a_site_with_nothing_live_in_a_release_group_is_behind():
    doc = site_doc("new", "1.3.22")
    fresh = {**site_doc("fresh", "1.3.22"), "current": None, "deploys": []}
    summary = summarize([SiteAnswer("https://a", doc, None, 1),
                         SiteAnswer("https://b", fresh, None, 1)], NOW)
    assert {s["url"]: s["state"] for s in summary["groups"][0]["sites"]} == {
        "https://a": "updated", "https://b": "old_version"}


# --------------------------------------------------------------------------- rendering


def test_txt_report_reads_well(web):
    urls, want = fleet_of_every_state(web)
    text = fleet_render.render_txt(summarize(fetch_all(urls, timeout=5), NOW))
    lines = text.splitlines()
    assert lines[0] == "# fleet report 2026-11-27T05:00:00Z: 12 sites in 3 groups"
    assert lines[1] == ("# 3 updated, 1 rolled back, 2 failed, 1 pending, 1 unreachable, "
                        "2 on an old version, 2 bad answers")
    assert lines[2] == "# 8 need a look"
    assert ("prod-asterix* 1.3.22: 2 updated, 1 rolled back, 1 failed, 1 pending, "
            "2 old version") in lines
    assert "dev1: 1 updated" in lines
    assert "no answer, group unknown: 3" in lines
    rolled = next(line for line in lines if "asterix-c" in line)
    assert rolled.startswith("  ROLLED BACK  http://127.0.0.1:")
    assert "live 1.3.21" in rolled
    assert "last: rolled back 1.3.22 at 2026-11-27T03:00:00Z" in rolled
    assert 'error: check home: HTTP 500' in rolled
    assert "pending: waiting for the window (opens 03:30)" in text
    # one line per site: 12 sites + 3 lines of totals + 4 group headers + 4 blank lines
    assert len(lines) == 12 + 3 + 4 + 4
    assert "refused" in text


def test_html_report_is_self_contained_escaped_and_tagged(web):
    urls, want = fleet_of_every_state(web)
    summary = summarize(fetch_all(urls, timeout=5), NOW)
    page = fleet_render.render_html(summary)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "line two &amp; more" in page
    assert 'src=' not in page and "@import" not in page and "<link" not in page
    assert '<meta name="viewport"' in page
    for state in fleet.STATES:
        assert f'class="site state-{state}"' in page, state
    assert page.count('class="site state-') == 12
    for n in range(3):
        assert f'id="group-{n}"' in page
    assert 'id="group-unknown"' in page
    # every site URL is shown
    for url in urls:
        assert url.replace("&", "&amp;") in page


def test_hostile_answers_cannot_break_out_of_attributes():
    doc = site_doc('x" onmouseover="alert(1)', "1.3.22",
                   flag="'><img src=x onerror=alert(1)>*")
    doc["current"]["commit"] = '"><script>alert(1)</script>'
    summary = summarize([SiteAnswer("https://a.website.com", doc, None, 3)], NOW)
    page = fleet_render.render_html(summary)
    assert "<script" not in page.lower() and "<img" not in page
    assert 'onmouseover="' not in page


def test_write_report_writes_three_files_atomically(tmp_path, web):
    urls, _ = fleet_of_every_state(web)
    summary = summarize(fetch_all(urls, timeout=5), NOW)
    out = tmp_path / "www" / "fleet"
    old_umask = os.umask(0o077)
    try:
        paths = fleet_render.write_report(out, summary)
    finally:
        os.umask(old_umask)
    assert [p.name for p in paths] == ["ci-cd.txt", "ci-cd.html", "ci-cd.json"]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads((out / "ci-cd.json").read_text()) == summary
    assert (out / "ci-cd.txt").read_text() == fleet_render.render_txt(summary)
    assert sorted(p.name for p in out.iterdir()) == ["ci-cd.html", "ci-cd.json", "ci-cd.txt"]
    # a second report replaces the files (a new inode: readers never see a torn file)
    inode = (out / "ci-cd.json").stat().st_ino
    later = summarize([], NOW + timedelta(days=1))
    fleet_render.write_report(out, later)
    assert (out / "ci-cd.json").stat().st_ino != inode
    assert json.loads((out / "ci-cd.json").read_text())["updated_at"].startswith("2026-11-28")
    assert fleet.load_previous(out) == later
    assert fleet.load_previous(tmp_path / "nothing") is None


def test_write_report_leaves_the_old_files_when_rendering_fails(tmp_path):
    out = tmp_path / "fleet"
    fleet_render.write_report(out, summarize([], NOW))
    before = (out / "ci-cd.json").read_text()
    with pytest.raises(TypeError):
        fleet_render.write_report(out, {**summarize([], NOW), "bad": object()})
    assert (out / "ci-cd.json").read_text() == before


# --------------------------------------------------------------------------- Slack


def test_slack_summary_names_the_sites_that_need_a_look(web):
    urls, _ = fleet_of_every_state(web)
    summary = summarize(fetch_all(urls, timeout=5), NOW)
    message = fleet_render.slack_summary(summary, "https://website.com/ci-cd.html")
    assert set(message) == {"text", "blocks"}
    assert "12 sites" in message["text"] and "8 need a look" in message["text"]
    blob = json.dumps(message["blocks"])
    assert "<script" not in blob
    assert "&lt;script&gt;" in blob
    assert "prod-asterix* 1.3.22: 2 updated, 1 rolled back" in blob.replace("`", "")
    assert "<https://website.com/ci-cd.html|Full report>" in blob
    look = next(b for b in message["blocks"] if b["type"] == "section"
                and b["text"]["text"].startswith("*Needs a look*"))["text"]["text"]
    assert look.count("\n") == 8  # title + 8 sites
    assert "asterix-c" in look and "asterix-f" in look and "refused" in look
    assert "asterix-a" not in look  # updated: nothing to look at
    assert message["blocks"][0]["type"] == "header"


def test_slack_summary_counts_the_rest_after_twenty():
    answers = [SiteAnswer(f"https://s{n}.website.com", None, "unreachable: connection refused",
                          3) for n in range(35)]
    message = fleet_render.slack_summary(summarize(answers, NOW))
    look = message["blocks"][-2]["text"]["text"]
    assert look.count("s1") >= 1 and "and 15 more" in look
    assert look.count(":warning:") == 20
    assert all(len(b["text"]["text"]) <= 3000 for b in message["blocks"] if "text" in b)


def test_slack_summary_of_a_healthy_fleet():
    answers = [SiteAnswer("https://a", site_doc("a", "1.3.22"), None, 2)]
    message = fleet_render.slack_summary(summarize(answers, NOW))
    assert ":white_check_mark:" in message["text"]
    assert "Nothing needs a look." in json.dumps(message)
    assert "Full report" not in json.dumps(message)


# --------------------------------------------------------------------------- a real run


def test_report_of_a_real_agent_run(host, git_remote, tmp_path):
    from tests.agentsite import page
    commit = git_remote.commit_and_push("dev1", {"index.html": page("B101 hi")}, "B101: hi")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    answers = fetch_all([host.site.url, closed_port_url()], timeout=5)
    assert answers[0].error is None
    assert answers[0].doc == host.ci_cd()
    summary = summarize(answers, datetime.now(timezone.utc))
    [group] = summary["groups"]
    assert group["flag"] == "dev1"
    [site] = group["sites"]
    assert (site["state"], site["commit"], site["last_outcome"]) == ("updated", commit,
                                                                      "deployed")
    paths = fleet_render.write_report(tmp_path / "fleet", summary)
    assert f"UPDATED      {host.site.url} (dev1) live {commit[:7]}" in paths[0].read_text()

