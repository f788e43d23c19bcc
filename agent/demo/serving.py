"""A threaded HTTP server on 127.0.0.1 served from a background thread: the base of every
stand-in (the Ghost stand-in here, the git and Slack stand-ins of the tests)."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


log = logging.getLogger("agent.demo")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # start() after stop() comes back on the same port
    owner: BackgroundServer  # handlers reach their stand-in as self.server.owner

    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-answer (the agent's deadline) is normal here; the
        # base class would print a traceback to sys.stderr, which an in-process test of the
        # agent captures as the agent's own output.
        log.debug("stand-in: a request from %s ended early", client_address, exc_info=True)


class BackgroundServer:
    """Subclasses set `handler` and may override `on_start()`; port 0 takes a free port."""

    handler: type[BaseHTTPRequestHandler]
    thread_name = "stand-in"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        """Called before the first request can arrive."""

    def start(self):
        if self._httpd is not None:
            return self
        httpd = _Server((self.host, self.port), self.handler)
        httpd.owner = self
        self.on_start()
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"{self.thread_name}-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
