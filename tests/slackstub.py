"""A stand-in for Slack: a real HTTP server on 127.0.0.1 that answers like Slack does.

- POST /services/...          (incoming webhook)  -> 200 "ok"
- POST /api/chat.postMessage  (Web API)           -> 200 {"ok": true, "channel": ..., "ts": ...}

Every request is recorded (method, path, headers, body parsed as JSON or form, and the status
that was answered). A test changes the answers with fail_with(), hang() and recover().
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from agent.demo.serving import BackgroundServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # dict for JSON and forms, else the raw text
    raw: bytes
    at: float  # time.monotonic() when it arrived
    status: int | None = None  # what the stub answered (None while it hangs)


@dataclass
class _Failure:
    status: int
    body: Any
    retry_after: float | int | str | None = None
    times: int | None = None  # None: until recover()


@dataclass
class _Mode:
    failure: _Failure | None = None
    hang: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._answer(405, {"ok": False, "error": "method_not_allowed"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = Request("POST", self.path, dict(self.headers.items()), _parse(raw, self.headers),
                          raw, time.monotonic())
        failure, hang, released = self.server.owner._record(request)
        if hang > 0:
            released.wait(hang)
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            request.status = failure.status
            self._answer(failure.status, failure.body, headers)
        elif self.path.startswith("/services/"):
            request.status = 200
            self._answer(200, "ok")
        elif self.path.rstrip("/") == "/api/chat.postMessage":
            request.status = 200
            body = request.body if isinstance(request.body, dict) else {}
            self._answer(200, {"ok": True, "channel": "C0CHANNEL", "ts": f"{time.time():.6f}",
                               "message": {"text": body.get("text"), "type": "message"}})
        else:
            request.status = 404
            self._answer(404, {"ok": False, "error": "unknown_method"})

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, (dict, list)):
            data, kind = json.dumps(body).encode(), "application/json; charset=utf-8"
        else:
            data, kind = str(body).encode(), "text/html"
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test): nothing to answer


class SlackStub(BackgroundServer):
    """Start with `with SlackStub() as slack:` or start()/stop()."""

    thread_name = "slack-stub"
    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._mode = _Mode()

    def stop(self) -> None:
        self._mode.released.set()  # let hanging handlers go
        super().stop()

    # -- addresses -----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self.running, "start the stub first"
        return self.url

    def webhook_url(self, path: str = "/services/T0/B0/XXXXXXXX") -> str:
        return self.base_url + path

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    # -- modes ---------------------------------------------------------------------------
    def fail_with(self, status: int, body: Any = "", retry_after: float | int | str | None = None,
                  times: int | None = None) -> None:
        """Answer the next `times` requests (all, when None) with `status` and `body`.

        body: a dict is sent as JSON (the Web API's {"ok": false, "error": ...}), a string as
        text (the webhook's "no_service"). retry_after adds a Retry-After header.
        """
        with self._lock:
            self._mode.failure = _Failure(status, body, retry_after, times)

    def hang(self, seconds: float) -> None:
        """Accept each request, then wait `seconds` before answering (until recover())."""
        with self._lock:
            self._mode.hang = seconds

    def recover(self) -> None:
        """Answer normally again; requests that are hanging are released."""
        with self._lock:
            self._mode.released.set()
            self._mode = _Mode()

    # -- inspection ----------------------------------------------------------------------
    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def answered(self, status: int = 200) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.status == status]

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until at least `count` requests arrived."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
            return True

    # -- called by the handler -----------------------------------------------------------
    def _record(self, request: Request) -> tuple[_Failure | None, float, threading.Event]:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
            mode = self._mode
            failure = mode.failure
            if failure is not None and failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    mode.failure = None
            return failure, mode.hang, mode.released


def _parse(raw: bytes, headers: Any) -> Any:
    text = raw.decode("utf-8", "replace")
    kind = (headers.get("Content-Type") or "").lower()
    if "json" in kind:
        try:
            return json.loads(text)
        except ValueError:
            return text
    if "x-www-form-urlencoded" in kind:
        return dict(parse_qsl(text, keep_blank_values=True))
    return text
