"""agent.wakeup: the self-pipe that wakes the service loop from signal handlers and threads."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from agent.wakeup import ServiceFlags, Wakeup


@pytest.fixture
def wakeup():
    w = Wakeup()
    yield w
    w.close()


def test_wait_returns_at_once_after_a_set(wakeup):
    wakeup.set()
    started = time.monotonic()
    wakeup.wait(5)
    assert time.monotonic() - started < 1


def test_many_sets_make_one_wake_up_and_never_block(wakeup):
    for _ in range(200_000):  # far more than a pipe holds: the extra ones are dropped
        wakeup.set()
    wakeup.wait(5)
    started = time.monotonic()
    wakeup.wait(0.2)  # drained: this one times out
    assert time.monotonic() - started >= 0.15


def test_wait_times_out_without_a_set(wakeup):
    started = time.monotonic()
    wakeup.wait(0.2)
    assert 0.15 <= time.monotonic() - started < 2


def test_a_set_from_another_thread_ends_the_wait(wakeup):
    threading.Timer(0.1, wakeup.set).start()
    started = time.monotonic()
    wakeup.wait(5)
    assert time.monotonic() - started < 2


def test_a_set_from_a_signal_handler_ends_the_wait(wakeup):
    flags = ServiceFlags()

    def on_hup(signum, _frame):
        flags.reload = True
        wakeup.set()

    saved = signal.signal(signal.SIGHUP, on_hup)
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGHUP)).start()
        started = time.monotonic()
        wakeup.wait(5)
        assert time.monotonic() - started < 2
        assert flags.reload
    finally:
        signal.signal(signal.SIGHUP, saved)


def test_a_set_after_close_writes_nowhere(tmp_path):
    """A late signal after the loop ended must not write into whatever file took the
    pipe's descriptor number."""
    w = Wakeup()
    w.close()
    with open(tmp_path / "other", "wb"):  # likely gets a number the pipe had
        w.set()
    assert (tmp_path / "other").read_bytes() == b""
