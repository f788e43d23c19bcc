"""The webhook: a small HTTP listener inside `ghost-agent run` that turns a signed push
notification into a poll at once.

The payload is never trusted: a valid call only wakes the poll, which reads the remote as
usual (as Flux's Receiver does). Signatures are compared in constant time (hmac.compare_digest):

  X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>   GitHub, Bitbucket
  X-Gitea-Signature / X-Forgejo-Signature: <hex HMAC-SHA256>    Gitea, Forgejo
  X-Gitlab-Token: <secret>                                      GitLab

Answers: 202 queued; 401 missing or bad signature (no hint which); 404 another path; 405 another
method; 411 no length; 413 a body over MAX_BODY (not read); 429 a signed call over the rate
limit (unsigned calls never use it up); 503 too many connections at once. A read that waits
`read_timeout` seconds, or a call still open after twice that, is cut off. Nothing a caller
sends stops the listener; the secret is never logged. The standard library's http.server is
enough here: one endpoint, small bodies, a bounded number of threads.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.redact import redact, register_secret

log = logging.getLogger("agent")

MAX_BODY = 1 << 20  # bytes; GitHub's push payloads are far smaller (its own cap is 25 MB)
MAX_CONNECTIONS = 32  # handled at once; more are answered 503 at once


class RateLimit:
    """A token bucket: `per_minute` calls a minute, bursts up to that many. Monotonic clock."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(max(1, per_minute))
        self.tokens = self.capacity
        self.rate = self.capacity / 60.0
        self.clock = clock
        self.last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


def signed_by(headers, body: bytes, secret: bytes) -> str | None:
    """The forge whose signature header is valid for `body` ("github", "gitea", "forgejo",
    "gitlab"), or None. Every comparison is constant-time."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    hub = headers.get("X-Hub-Signature-256")
    if hub is not None:
        return "github" if hmac.compare_digest(hub.strip().encode(),
                                               f"sha256={digest}".encode()) else None
    for header, forge in (("X-Gitea-Signature", "gitea"), ("X-Forgejo-Signature", "forgejo")):
        value = headers.get(header)
        if value is not None:
            return forge if hmac.compare_digest(value.strip().encode(), digest.encode()) \
                else None
    token = headers.get("X-Gitlab-Token")
    if token is not None:
        return "gitlab" if hmac.compare_digest(token.strip().encode(), secret) else None
    return None


class WebhookListener:
    """Serve `path` on host:port in background threads; `on_call(forge)` runs for each valid
    call (it must be quick: the service sets an event). `last_accepted` is
    {"at": epoch seconds, "forge": str} of the newest valid call, for `status`."""

    def __init__(self, host: str, port: int, path: str, secret: str,
                 on_call: Callable[[str], None], *, rate_per_minute: int = 60,
                 read_timeout: float = 5.0):
        self.path = path
        self.secret = secret.encode("utf-8")
        register_secret(secret)  # whatever prints a header or a URL, never this
        self.on_call = on_call
        self.rate = RateLimit(rate_per_minute)
        self.read_timeout = read_timeout
        self.last_accepted: dict | None = None
        self.answers: dict[int, int] = {}  # status -> count, for tests and benchmarks
        self._answers_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._server = _Server((host, port), _handler_for(self))
        self._server.listener = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> WebhookListener:
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="webhook", daemon=True)
        self._thread.start()
        log.info("webhook: listening on %s:%d%s", *self.address, self.path)
        return self

    def _serve(self) -> None:
        # Sleeps in select() until a call or stop(): no periodic wake-ups while idle
        # (serve_forever's poll_interval costs idle CPU, or a slow stop).
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self._stop_r in ready:
                    return
                self._server.handle_request()  # accepts the waiting call, a thread serves it

    def stop(self) -> None:
        if self._thread:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            os.close(self._stop_r)
            os.close(self._stop_w)
        self._server.server_close()

    def _count(self, status: int) -> None:
        with self._answers_lock:
            self.answers[status] = self.answers.get(status, 0) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    timeout = 0.5  # handle_request() waits no longer (the call select() saw may be gone)
    allow_reuse_address = True
    listener: WebhookListener

    def process_request(self, request, client_address):
        # A flood of connections must not become a flood of threads.
        if not self.listener._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.listener._count(503)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        # The read timeout bounds each read; this bounds the whole call, so a client that
        # drips a byte now and then cannot keep a slot: its socket is shut after the limit.
        limit = threading.Timer(self.listener.read_timeout * 2, _cut_off, (request,))
        limit.daemon = True
        limit.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            limit.cancel()
            self.listener._slots.release()

    def handle_error(self, request, client_address):
        # A client that misbehaves costs a debug line, never a traceback on stderr.
        log.debug("webhook: a call from %s ended in an error", client_address[0],
                  exc_info=True)


def _cut_off(request) -> None:
    try:
        request.shutdown(socket.SHUT_RDWR)  # the handler's next read sees the end
    except OSError:
        pass


def _handler_for(listener: WebhookListener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ghost-agent"
        sys_version = ""
        timeout = listener.read_timeout  # a slow client is cut off
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
            pass  # the base logs the request line, query string included: see log_request

        def log_request(self, code="-", size="-") -> None:
            path = str(getattr(self, "path", "") or "").split("?", 1)[0][:200]
            log.debug("webhook: %s %s %s -> %s", self.address_string(),
                      getattr(self, "command", None) or "-", redact(path), code)

        def _answer(self, status: int, text: str = "") -> None:
            body = (text + "\n").encode() if text else b""
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            listener._count(status)

        def _other_method(self) -> None:
            if self.path.split("?", 1)[0] != listener.path:
                self._answer(404, "not found")
            else:
                self._answer(405, "method not allowed: POST only")

        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other_method

        def do_POST(self) -> None:  # noqa: N802 - the base's naming
            if self.path.split("?", 1)[0] != listener.path:
                return self._answer(404, "not found")
            length = self.headers.get("Content-Length")
            if length is None or not (length.strip().isascii() and length.strip().isdigit()):
                return self._answer(411, "a Content-Length is needed")
            if len(length.strip()) > 12 or int(length) > MAX_BODY:
                return self._answer(413, f"the body is over {MAX_BODY} bytes")
            body = self.rfile.read(int(length))
            if len(body) != int(length):
                return self._answer(400, "the body ended early")
            forge = signed_by(self.headers, body, listener.secret)
            if forge is None:
                return self._answer(401, "unauthorized")
            # Only signed calls count against the limit: a flood of unsigned ones (bounded by
            # MAX_CONNECTIONS and the read timeout) cannot push the forge's calls out.
            if not listener.rate.allow():
                return self._answer(429, "too many calls; the regular poll goes on")
            listener.last_accepted = {"at": time.time(), "forge": forge}
            listener.on_call(forge)
            return self._answer(202, "a poll is queued")

    return Handler
