"""Carrying out a plan: print it (--dry-run), or write its files and, on the live root
only, run its commands through agent.proc; then tell the operator what is left to do.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TextIO

from agent import proc
from agent.errors import CommandError, ExitCode
from agent.setup.layout import SetupError, under_root
from agent.setup.plan import Options, Plan
from agent.setup.templates import packaged_files

# systemd-sysusers and daemon-reload take a second on a healthy host; a wedged systemd or
# D-Bus must not hang setup for good.
COMMAND_TIMEOUT = 120.0
# `systemctl is-active` only chooses the closing hint: not worth a long wait.
QUERY_TIMEOUT = 10.0
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(): systemd is PID 1


def apply(plan: Plan, options: Options, out: TextIO) -> int:
    """Print (--dry-run) or apply the plan, reporting each step on `out`; returns
    ExitCode.OK. Raises SetupError (not root on the live root, a command that failed),
    CommandError (a command that timed out or could not start), OSError (a write)."""
    root = options.root
    live = root == Path("/")
    if options.dry_run:
        for f in plan.files:
            out.write(f"--- would write {under_root(root, f.path)} (mode {f.mode:o}): "
                      f"{f.why}\n{f.text}")
        for command in plan.commands:
            out.write(f"--- would run: {shlex.join(command)}\n" if live else
                      f"--- would skip (--root): {shlex.join(command)}\n")
        for note in plan.notes:
            out.write(f"{note}\n")
        return ExitCode.OK
    if live and os.geteuid() != 0:
        raise SetupError("setup writes to /etc and runs systemd-sysusers: run it as root "
                         "(sudo ghost-agent setup), or use --dry-run or --root DIR")
    for f in plan.files:
        target = under_root(root, f.path)
        changed = _write(target, f.text, f.mode)
        out.write(f"{'wrote' if changed else 'unchanged'} {target}: {f.why}\n")
    notes = list(plan.notes)
    if live:  # --root is for packaging and tests: its commands would act on this host
        for command in plan.commands:
            _run(command, out)
        notes += _access_notes(plan, options.service.user)
    for note in notes:
        out.write(f"{note}\n")
    if live and not options.unit_only:
        out.write(_next_step(options.service.unit))
    return ExitCode.OK


def _run(command: list[str], out: TextIO) -> None:
    if command[0] == "systemctl" and not SYSTEMD_RUNNING.is_dir():
        out.write(f"skipped (systemd is not running): {shlex.join(command)}\n")
        return
    done = proc.run(command, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0:
        raise SetupError(f"`{shlex.join(command)}` exited with {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-500:]}")
    out.write(f"ran: {shlex.join(command)}\n")


def _write(target: Path, text: str, mode: int) -> bool:
    """Write atomically; False when the file already holds exactly this."""
    try:
        if target.read_text(encoding="utf-8") == text and stat.S_IMODE(
                target.stat().st_mode) == mode:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_packaged_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Write templates.packaged_files() under directory (the repository, or a build tree);
    returns the paths written."""
    written = []
    for relative, (text, mode) in packaged_files().items():
        target = Path(directory) / relative
        _write(target, text, mode)
        written.append(target)
    return written


def _user_access(path: Path, want: int, name: str) -> bool | None:
    """Would the user `name`, with its groups, get `want` (os.R_OK or os.W_OK) on path?
    None: unknown (no such user or path). Mode bits only (no ACLs): a hint for the operator,
    not a gate."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}

    def allowed(st: os.stat_result, need: int) -> bool:  # need: rwx bits, e.g. 0o3
        if st.st_uid == user.pw_uid:
            bits = st.st_mode >> 6
        elif st.st_gid in gids:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & need == need

    try:
        for parent in reversed(path.parents):  # every directory on the way needs x
            if not allowed(parent.stat(), 0o1):
                return False
        st = path.stat()
    except OSError:
        return None
    if want == os.W_OK:
        return allowed(st, 0o3 if stat.S_ISDIR(st.st_mode) else 0o2)
    return allowed(st, 0o5 if stat.S_ISDIR(st.st_mode) else 0o4)


def _access_notes(plan: Plan, user: str) -> list[str]:
    notes = []
    for path in plan.readable:
        if _user_access(path, os.R_OK, user) is False:
            notes.append(f"warning: {user} cannot read {path}: chgrp {user} {path} "
                         f"&& chmod 640 {path}")
    for path, why in plan.writable:
        if _user_access(path, os.W_OK, user) is False:
            notes.append(f"warning: {user} cannot write {path} ({why.split(' (')[0]}): give "
                         "Ghost's group write access (chmod g+w) or use --ghost-group")
    return notes


def _next_step(unit: str) -> str:
    """The closing hint: restart a running agent, else enable it."""
    active = False
    if shutil.which("systemctl") and SYSTEMD_RUNNING.is_dir():
        try:
            active = proc.run(["systemctl", "is-active", "--quiet", unit],
                              timeout=QUERY_TIMEOUT, check=False).returncode == 0
        except CommandError:  # timed out: the hint falls back to enabling it
            active = False
    if active:
        return (f"{unit.removesuffix('.service')} is running: `systemctl restart {unit}` to "
                "apply the changes\n")
    return f"next: `systemctl enable --now {unit}`, then `journalctl -u {unit} -f`\n"
