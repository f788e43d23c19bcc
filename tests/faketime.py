"""Moving the clock of a whole process tree, for black-box tests of the deploy window.

Debian 12's faketime package breaks Python 3.11 (sleeps and timed waits fail, see
shared/facts.md); the libfaketime built into the PyPI package `libfaketime` works.
"""

from __future__ import annotations

from pathlib import Path


def library() -> Path:
    import libfaketime

    return Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / \
        "libfaketime.so.1"


def faketime_env(when: str, tz: str = "Europe/Paris") -> dict[str, str]:
    """Environment that starts the clock of a process (and its children) at `when`,
    a local time in `tz` ("2026-11-27 03:35:00"); the clock then runs normally."""
    return {
        "LD_PRELOAD": str(library()),
        "FAKETIME": f"@{when}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "TZ": tz,
    }
