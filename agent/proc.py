"""The one subprocess wrapper: argv lists, a timeout, never a shell, secrets masked in errors
and in the debug log of every command with its wall time."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.errors import CommandError
from agent.redact import redact

TAIL_LINES = 20
DRAIN_SECONDS = 5.0  # reading what a killed command left in its pipes
MARK = "GHOST_AGENT_RUN"  # environment variable naming one run's processes

log = logging.getLogger("agent")


class CommandTimeout(CommandError):
    """The command ran past its timeout; it and every process it started were killed."""


class CommandNotStarted(CommandError):
    """The program could not be started; `error` is the OSError (errno, filename)."""

    def __init__(self, message: str, error: OSError):
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Completed:
    """A finished command. stdout is str, or bytes from run(text=False); stderr is always
    str (bytes that are not UTF-8 replaced by U+FFFD)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str | bytes
    stderr: str


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    text: bool = True,
) -> Completed:
    """Run argv (no shell, no stdin) and wait at most `timeout` seconds.

    env adds to (or overrides) this process's environment. With text=False stdout comes
    back as raw bytes (for output that need not be UTF-8, such as git's ref names).
    Raises CommandTimeout after killing the command's whole process tree,
    CommandNotStarted when it cannot start, and CommandError for a non-zero exit (when
    check); each message names the program and carries the redacted tail of its output.
    Each command is logged at DEBUG on logger "agent", redacted, with its wall time.
    """
    argv = [os.fspath(a) for a in argv]
    full_env = dict(os.environ)
    full_env.update(env or {})
    # Inherited by every descendant: how a timeout finds those that left the process tree.
    full_env[MARK] = os.urandom(8).hex()
    shown = redact(" ".join(argv))
    started = time.monotonic()
    outcome = "was interrupted"
    try:
        done = _communicate(argv, shown, timeout, cwd, full_env, text)
        outcome = f"exited with {done.returncode}"
    except CommandTimeout:
        outcome = "timed out"
        raise
    except CommandNotStarted:
        outcome = "could not start"
        raise
    finally:
        log.debug("`%s` %s in %.3fs", shown, outcome, time.monotonic() - started)
    if check and done.returncode != 0:
        out = tail(done.stderr) or tail(_text(done.stdout))
        raise CommandError(
            f"`{shown}` exited with {done.returncode}" + (f": {redact(out)}" if out else "")
        )
    return done


def _communicate(argv: list[str], shown: str, timeout: float,
                 cwd: str | os.PathLike[str] | None, env: dict[str, str],
                 text: bool) -> Completed:
    try:
        # A session of its own: a signal to the agent does not hit the child mid-step.
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            text=text, errors="replace" if text else None,
        )
    except OSError as exc:
        raise CommandNotStarted(f"`{shown}` could not start: {exc.strerror or exc}",
                                exc) from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc, env[MARK])
        stdout, stderr = _drain(proc)
        out = _text(stderr) or _text(stdout)
        raise CommandTimeout(
            f"`{shown}` timed out after {timeout:g}s" + (f": {redact(tail(out, 5))}" if out else "")
        ) from None
    except BaseException:
        _kill_tree(proc, env[MARK])  # e.g. KeyboardInterrupt: leave no orphan behind
        proc.wait()
        raise
    return Completed(tuple(argv), proc.returncode, stdout, _text(stderr))


def _kill_tree(proc: subprocess.Popen, mark: str | None = None) -> None:
    """SIGKILL the child, its process group and every descendant: those found through their
    parents (also when they started a session of their own, e.g. with setsid), and, given
    `mark`, those whose environment carries MARK=mark (a daemon whose parent exited, handed
    to init). A descendant that both left the tree and cleared its environment escapes.
    """
    import psutil  # only on a timeout: not worth its import on every run

    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(proc.pid)  # not reaped yet, so the pid is still the child's
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.Error:
        pass
    if mark:
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.pid not in found and process.environ().get(MARK) == mark:
                    found[process.pid] = process
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for process in found.values():
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks that the pid was not reused meanwhile


def _drain(proc: subprocess.Popen) -> tuple[str | bytes, str | bytes]:
    """What a killed command wrote; gives up when a process out of reach keeps a pipe open."""
    try:
        return proc.communicate(timeout=DRAIN_SECONDS)
    except subprocess.TimeoutExpired as exc:
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        proc.wait()
        return exc.stdout or b"", exc.stderr or b""


def _text(out: str | bytes | None) -> str:
    if isinstance(out, bytes):
        return out.decode("utf-8", "replace")
    return out or ""
