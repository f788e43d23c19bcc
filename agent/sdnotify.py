"""systemd's notify protocol (READY=1, STATUS=, WATCHDOG=1) without extra dependencies."""

from __future__ import annotations

import os
import socket
import threading
import time


SEND_TIMEOUT = 1.0  # seconds; a reader that stopped reading must not stall the service


def notify(message: str) -> bool:
    """Send one datagram to $NOTIFY_SOCKET; False when not under systemd or on failure
    (including a socket whose queue stays full for SEND_TIMEOUT seconds)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    deadline = time.monotonic() + SEND_TIMEOUT
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Non-blocking, with our own deadline: a socket timeout does not bound a send to
            # a full datagram queue on every Python we support (3.10 waited forever).
            sock.setblocking(False)
            sock.connect(address)
            while True:
                try:
                    sock.send(message.encode())
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(0.005)
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of WatchdogSec, when systemd asked this process for pings."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


class Heartbeat:
    """Pings the watchdog from a thread, but only while the main loop keeps promising progress.

    The main loop calls expect(seconds) before each step: if it hangs past that, the pings
    stop and systemd restarts the service.
    """

    def __init__(self, interval: float | None):
        self.interval = interval
        self._deadline = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def expect(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def start(self) -> Heartbeat:
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = self.interval or 1.0
        while not self._stop.wait(interval):
            if time.monotonic() < self._deadline:
                notify("WATCHDOG=1")
