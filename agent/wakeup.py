"""Waking the service loop from signal handlers and other threads, without deadlocks.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock: inside threading.Event.wait(), say. A handler that takes the same lock
(Event.set()) then waits for itself forever, and `run` never stops. So the handlers of `run`
take no lock: they set plain flags (ServiceFlags) and write one byte to a non-blocking pipe
(Wakeup.set), and the loop sleeps in poll() on that pipe (Wakeup.wait).
"""

from __future__ import annotations

import math
import os
import select
from dataclasses import dataclass


@dataclass
class ServiceFlags:
    """What the signal handlers tell the loop. Plain attributes: setting one takes no lock."""

    stop: str | None = None  # the name of the signal that asked to stop (SIGTERM, SIGINT)
    reload: bool = False  # SIGHUP came: read the config again


class Wakeup:
    """A self-pipe: set() may be called from a signal handler or any thread; wait(seconds)
    returns as soon as set() was called (since the last wait) or after `seconds`."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)

    def set(self) -> None:
        if self._write < 0:  # closed: its number may belong to another file by now
            return
        try:
            os.write(self._write, b"\0")
        except OSError:  # the pipe is full: a wake-up is pending already
            pass

    def wait(self, seconds: float) -> None:
        # milliseconds, rounded up: rounded down, the loop would spin through the last one
        self._poll.poll(max(0, math.ceil(seconds * 1000)))  # (retried after a signal)
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    @property
    def fd(self) -> int:
        """The pipe's write end, for signal.set_wakeup_fd (-1 once closed)."""
        return self._write

    def close(self) -> None:
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            os.close(fd)
