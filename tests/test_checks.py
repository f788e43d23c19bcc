"""agent.checks: HTTP checks, with `responses` for requests and real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import responses

from agent.checks import RETRY_PAUSE, SETTLED_ROUNDS, run_checks, site_headers
from agent.config import CheckConfig

LOCAL = "http://127.0.0.1:2368"
PUBLIC = "https://dev1.website.com"


def no_sleep(_seconds: float) -> None:
    pass


def check(url: str, **kw) -> CheckConfig:
    return CheckConfig(kw.pop("name", "home"), url, **kw)


# -- a scriptable server on 127.0.0.1 ---------------------------------------------------------


class Scripted:
    """Answers `statuses` in turn (the last one repeats), after `delay` seconds; records headers."""

    def __init__(self, statuses: list[int], body: bytes = b"<h1>Acme theme</h1>",
                 delay: float = 0.0) -> None:
        self.statuses = statuses
        self.body = body
        self.delay = delay
        self.received: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_GET(self):  # noqa: N802
                owner.received.append(dict(self.headers.items()))
                n = len(owner.received) - 1
                status = owner.statuses[min(n, len(owner.statuses) - 1)]
                time.sleep(owner.delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the client gave up (timeout): expected, keep quiet

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(statuses: list[int], **kw) -> Scripted:
        made.append(Scripted(statuses, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- with `responses` ----------------------------------------------------------------------


@responses.activate
def test_passes_when_status_and_text_match():
    responses.get(f"{LOCAL}/", body="<h1>Acme theme</h1>", status=200)
    [result] = run_checks([check(f"{LOCAL}/", contains="Acme theme")], LOCAL, PUBLIC, budget=0)
    assert result.ok
    assert result.status == 200 and result.error is None
    assert result.name == "home" and result.url == f"{LOCAL}/"


@responses.activate
def test_wrong_status_fails_with_a_clear_error():
    responses.get(f"{LOCAL}/", body="boom", status=500)
    [result] = run_checks([check(f"{LOCAL}/")], LOCAL, PUBLIC, budget=0)
    assert not result.ok
    assert result.status == 500
    assert result.error == "answered 500, expected 200"


@responses.activate
def test_expected_non_200_status_passes():
    responses.get(f"{PUBLIC}/gone", status=404)
    [result] = run_checks([check(f"{PUBLIC}/gone", status=404)], LOCAL, PUBLIC, budget=0)
    assert result.ok


@responses.activate
def test_missing_text_fails_naming_the_text():
    responses.get(f"{LOCAL}/", body="<h1>Other theme</h1>", status=200)
    [result] = run_checks([check(f"{LOCAL}/", contains="Acme theme")], LOCAL, PUBLIC, budget=0)
    assert not result.ok
    assert result.status == 200
    assert "does not contain 'Acme theme'" in result.error


@responses.activate
def test_redirect_is_not_followed_and_fails():
    responses.get(f"{LOCAL}/", status=301, headers={"Location": f"{PUBLIC}/"})
    followed = responses.get(f"{PUBLIC}/", body="ok", status=200)
    [result] = run_checks([check(f"{LOCAL}/")], LOCAL, PUBLIC, budget=0)
    assert not result.ok
    assert result.status == 301
    assert "redirect" in result.error and f"{PUBLIC}/" in result.error
    assert followed.call_count == 0


@responses.activate
def test_local_check_sends_public_host_and_scheme():
    responses.get(f"{LOCAL}/", status=200)
    responses.get(f"{PUBLIC}/", status=200)
    run_checks([check(f"{LOCAL}/", name="local"), check(f"{PUBLIC}/", name="public")],
               LOCAL, PUBLIC, budget=0)
    local_req, public_req = (call.request for call in responses.calls)
    assert local_req.headers["Host"] == "dev1.website.com"
    assert local_req.headers["X-Forwarded-Proto"] == "https"
    assert "X-Forwarded-Proto" not in public_req.headers
    assert public_req.headers.get("Host") in (None, "dev1.website.com")


@responses.activate
def test_passed_checks_are_not_asked_again():
    good = responses.get(f"{PUBLIC}/", status=200)
    responses.get(f"{LOCAL}/", status=503)
    responses.get(f"{LOCAL}/", status=503)
    responses.get(f"{LOCAL}/", status=200)
    results = run_checks([check(f"{PUBLIC}/", name="public"), check(f"{LOCAL}/", name="local")],
                         LOCAL, PUBLIC, budget=30, sleep=no_sleep)
    assert [r.ok for r in results] == [True, True]
    assert good.call_count == 1


def test_site_headers_only_for_the_local_url():
    assert site_headers(f"{LOCAL}/", LOCAL, PUBLIC)["Host"] == "dev1.website.com"
    assert "Host" not in site_headers(f"{PUBLIC}/", LOCAL, PUBLIC)
    assert "Host" not in site_headers("http://127.0.0.1:9999/", LOCAL, PUBLIC)


def test_site_headers_not_for_a_port_that_merely_starts_like_local():
    assert "Host" not in site_headers("http://127.0.0.1:23680/", LOCAL, PUBLIC)
    assert site_headers(LOCAL, LOCAL, PUBLIC)["Host"] == "dev1.website.com"
    assert site_headers(f"{LOCAL}/ghost/api", LOCAL, PUBLIC)["Host"] == "dev1.website.com"


# -- real servers ----------------------------------------------------------------------------


def test_local_check_against_sitesim_carries_host_and_proto(site_server, tmp_path: Path):
    theme = tmp_path / "releases" / "r1"
    theme.mkdir(parents=True)
    (theme / "index.html").write_text("<h1>Acme theme v1</h1>")
    live = tmp_path / "themes" / "acme"
    live.parent.mkdir()
    live.symlink_to(theme)
    site = site_server(live, public_url=PUBLIC)
    url = f"{site.url}/"
    [ok] = run_checks([check(url, contains="Acme theme v1")], site.url, PUBLIC, budget=0)
    assert ok.ok, ok.error
    # the same URL without the public Host/scheme: Ghost (sitesim) redirects, the check says so
    [bad] = run_checks([check(url)], "http://127.0.0.1:1", PUBLIC, budget=0)
    assert not bad.ok
    assert bad.status == 301
    assert "redirect" in bad.error and PUBLIC in bad.error


def test_local_check_headers_as_the_server_received_them(server):
    s = server([200])
    [result] = run_checks([check(f"{s.url}/")], s.url, "https://blog.example.org", budget=0)
    assert result.ok
    [headers] = s.received
    assert headers["Host"] == "blog.example.org"
    assert headers["X-Forwarded-Proto"] == "https"


def test_connection_refused_fails_with_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/"
    started = time.monotonic()
    [result] = run_checks([check(url)], LOCAL, PUBLIC, budget=0)
    assert not result.ok
    assert result.status is None
    assert result.error == "connection refused or reset"
    assert time.monotonic() - started < 5


def test_slow_server_times_out(server):
    s = server([200], delay=3.0)
    started = time.monotonic()
    [result] = run_checks([check(f"{s.url}/", timeout_seconds=0.5)], LOCAL, PUBLIC, budget=0)
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.error == "timed out"
    assert elapsed < 2.5
    assert result.ms >= 400


def test_retries_until_the_server_answers_200(server):
    s = server([503, 503, 503, 200])
    [result] = run_checks([check(f"{s.url}/", contains="Acme")], LOCAL, PUBLIC, budget=30,
                          sleep=lambda _: time.sleep(0.01))
    assert result.ok, result.error
    assert len(s.received) == 4


def test_gives_up_when_the_budget_runs_out(server):
    s = server([503])
    started = time.monotonic()
    [result] = run_checks([check(f"{s.url}/")], LOCAL, PUBLIC, budget=1.0,
                          sleep=lambda _: time.sleep(0.05))
    elapsed = time.monotonic() - started
    assert not result.ok
    assert result.error == "answered 503, expected 200"
    assert 1.0 <= elapsed < 5
    assert len(s.received) >= 2


# -- bodies that stall or are cut short ---------------------------------------------------


class _Stalling(BaseHTTPRequestHandler):
    """Sends the headers and part of the body, then stalls (or hangs up)."""

    hang_up = False

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"<h1>partial")
        self.wfile.flush()
        if not self.hang_up:
            time.sleep(3)
        self.close_connection = True


@pytest.fixture
def stalling() -> Iterator[Callable[[bool], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(hang_up: bool) -> str:
        handler = type("H", (_Stalling,), {"hang_up": hang_up})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.handle_error = lambda *a: None
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_body_that_stalls_is_a_failed_check_not_a_crash(stalling):
    url = stalling(False)
    started = time.monotonic()
    [result] = run_checks([check(url, contains="Acme", timeout_seconds=0.5)], LOCAL, PUBLIC,
                          budget=0)
    assert not result.ok
    assert result.error
    assert time.monotonic() - started < 2.5


def test_body_that_stalls_is_reported_as_a_timeout(stalling):
    url = stalling(False)
    [result] = run_checks([check(url, contains="Acme", timeout_seconds=0.5)], LOCAL, PUBLIC,
                          budget=0)
    assert result.error == "timed out"


def test_body_cut_short_is_a_failed_check_not_a_crash(stalling):
    url = stalling(True)
    [result] = run_checks([check(url, contains="Acme")], LOCAL, PUBLIC, budget=0)
    assert not result.ok
    assert result.error


def test_a_site_that_is_up_and_wrong_is_given_up_on_early(server):
    """A 500 that does not change is a verdict, not a boot: no need to wait out the budget."""
    s = server([500])
    pauses: list[float] = []
    started = time.monotonic()
    [result] = run_checks([check(f"{s.url}/")], s.url, PUBLIC, budget=30, sleep=pauses.append)
    assert not result.ok and result.status == 500
    assert time.monotonic() - started < 5
    assert len(s.received) == SETTLED_ROUNDS  # asked a few times, the same answer each time
    assert pauses == [RETRY_PAUSE] * (SETTLED_ROUNDS - 1)


def test_a_site_that_is_still_booting_is_waited_for(server):
    """503 (Ghost's maintenance page) then 200: the budget is used, the check passes."""
    s = server([503] * 8 + [200])
    pauses: list[float] = []
    [result] = run_checks([check(f"{s.url}/")], s.url, PUBLIC, budget=30, sleep=pauses.append)
    assert result.ok
    assert len(s.received) == 9
    assert pauses == [RETRY_PAUSE] * 8  # a pause between two asks, as long as it boots
