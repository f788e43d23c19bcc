"""The one subprocess wrapper: argv lists, a timeout, never a shell, secrets masked in errors."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import CommandError
from agent.redact import redact

TAIL_LINES = 20


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Completed:
    """Run argv and wait at most `timeout` seconds.

    A non-zero exit (when check) or a timeout raises CommandError whose one-line-ish
    message names the program and carries the redacted tail of its output.
    """
    argv = [os.fspath(a) for a in argv]
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    shown = redact(" ".join(argv))
    try:
        # A session of its own: a signal to the agent does not hit the child mid-step,
        # and on timeout the whole group (e.g. npm and its children) is killed.
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(f"`{shown}` could not start: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        out = stderr or stdout
        raise CommandError(
            f"`{shown}` timed out after {timeout:g}s" + (f": {redact(tail(out, 5))}" if out else "")
        ) from None
    except BaseException:
        _kill_group(proc)  # e.g. KeyboardInterrupt: leave no orphan behind
        proc.wait()
        raise
    done = Completed(tuple(argv), proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        out = tail(stderr) or tail(stdout)
        raise CommandError(
            f"`{shown}` exited with {proc.returncode}" + (f": {redact(out)}" if out else "")
        )
    return done


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
