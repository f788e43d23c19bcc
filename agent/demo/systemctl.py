"""A `systemctl` stand-in at the process boundary, for the demo and the tests.

An executable file named ``systemctl`` (see :func:`install_shim`) runs :func:`main`, so the
agent finds it on PATH exactly as it would find the real one. Environment:

- ``GHOST_AGENT_FAKE_SYSTEMCTL_LOG``: file to which every call appends one JSON line
  ``{"argv": [arguments after the program name], "time": <epoch float>}``.
- ``GHOST_AGENT_FAKE_SYSTEMCTL_FAIL``: while this file exists, ``start``/``restart`` fail
  the way systemd reports a failed job, and the unit shows as ``failed``. When the file
  holds a number N, only the next N starts/restarts fail, then the file is removed.
- ``GHOST_AGENT_FAKE_SYSTEMCTL_HANG``: while this file exists, ``start``/``restart`` wait
  (at most a minute), like a unit that is slow to come up.
- ``GHOST_AGENT_FAKE_SITE_URL``: base URL of the site stand-in (:mod:`agent.demo.sitesim`);
  ``start``/``restart`` POST ``<url>/__restart`` so the site boots again.

Standard library only: the shim starts a fresh interpreter on every call.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOG_ENV = "GHOST_AGENT_FAKE_SYSTEMCTL_LOG"
FAIL_ENV = "GHOST_AGENT_FAKE_SYSTEMCTL_FAIL"
SITE_URL_ENV = "GHOST_AGENT_FAKE_SITE_URL"
HANG_ENV = "GHOST_AGENT_FAKE_SYSTEMCTL_HANG"
HANG_LIMIT = 60.0
RESTART_TIMEOUT = 5.0

# Options that take the next argument as their value (when not written as --opt=value).
_OPTS_WITH_VALUE = {
    "-p",
    "--property",
    "-n",
    "--lines",
    "-o",
    "--output",
    "-t",
    "--type",
    "-H",
    "--host",
    "-M",
    "--machine",
    "-s",
    "--signal",
    "--state",
    "--kill-whom",
    "--job-mode",
    "--root",
}
_RESTART_VERBS = {"start", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart"}
_NOOP_VERBS = {
    "stop",
    "reload",
    "daemon-reload",
    "daemon-reexec",
    "enable",
    "disable",
    "reset-failed",
    "kill",
    "mask",
    "unmask",
}


def _log(argv: list[str]) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"argv": argv, "time": time.time()}) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError as exc:
        print(f"systemctl (fake): cannot write log {path}: {exc}", file=sys.stderr)


def _failing() -> bool:
    path = os.environ.get(FAIL_ENV)
    return bool(path) and os.path.exists(path)


def _restart_fails() -> bool:
    """Like _failing(), but a count in the file is used up by each failed restart."""
    if not _failing():
        return False
    path = os.environ[FAIL_ENV]
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return True
    if text.isdigit():
        left = int(text) - 1
        if left <= 0:
            os.unlink(path)
        else:
            Path(path).write_text(f"{left}\n")
        return int(text) > 0
    return True


def _hang() -> None:
    path = os.environ.get(HANG_ENV)
    deadline = time.monotonic() + HANG_LIMIT
    while path and os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


def _parse(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split argv into positional words and options (name -> values)."""
    words: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            words.extend(argv[i + 1 :])
            break
        if arg.startswith("-") and arg != "-":
            if "=" in arg and arg.startswith("--"):
                name, value = arg.split("=", 1)
                opts.setdefault(name, []).append(value)
            elif arg in _OPTS_WITH_VALUE and i + 1 < len(argv):
                opts.setdefault(arg, []).append(argv[i + 1])
                i += 1
            elif arg.startswith("-p") and len(arg) > 2:  # -pActiveState
                opts.setdefault("-p", []).append(arg[2:])
            else:
                opts.setdefault(arg, []).append("")
            i += 1
            continue
        words.append(arg)
        i += 1
    return words, opts


def _post_restart(unit: str) -> int:
    base = os.environ.get(SITE_URL_ENV, "").strip()
    if not base:
        return 0  # no site to restart: the job "succeeds"
    url = base.rstrip("/") + "/__restart"
    if not url.startswith(("http://", "https://")):
        print(f"systemctl (fake): {SITE_URL_ENV} is not an http(s) URL: {base}", file=sys.stderr)
        return 1
    req = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(req, timeout=RESTART_TIMEOUT) as resp:  # noqa: S310
            resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(
            f"Job for {unit} failed because the control process exited with error code.\n"
            f"(fake systemctl: restarting the site at {base} failed: {exc})",
            file=sys.stderr,
        )
        return 1
    return 0


def _status(unit: str, failed: bool) -> int:
    since = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime())
    state = "failed (Result: exit-code)" if failed else "active (running)"
    print(f"\u25cf {unit} - Ghost site (fake unit)")
    print(f"     Loaded: loaded (/etc/systemd/system/{unit}; enabled; preset: enabled)")
    print(f"     Active: {state} since {since}")
    if not failed:
        print(f"   Main PID: {os.getpid()} (node)")
    return 3 if failed else 0


def _show(units: list[str], opts: dict[str, list[str]], failed: bool) -> int:
    wanted: list[str] = []
    for key in ("-p", "--property"):
        for value in opts.get(key, []):
            wanted.extend(v for v in value.split(",") if v)
    value_only = "--value" in opts
    blocks = []
    for unit in units or ["ghost.service"]:
        props = {
            "Id": unit,
            "Names": unit,
            "LoadState": "loaded",
            "ActiveState": "failed" if failed else "active",
            "SubState": "failed" if failed else "running",
            "Result": "exit-code" if failed else "success",
            "MainPID": "0" if failed else str(os.getpid()),
            "NRestarts": "0",
            "Type": "simple",
        }
        keys = wanted or list(props)
        lines = []
        for key in keys:
            val = props.get(key, "")
            lines.append(val if value_only else f"{key}={val}")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _log(args)
    words, opts = _parse(args)
    if "--version" in opts:
        print("systemd 252 (252) (ghost-deploy-agent fake systemctl)")
        return 0
    if not words:
        print("ghost.service loaded active running Ghost site (fake unit)")
        return 0
    verb, units = words[0], words[1:]
    quiet = "-q" in opts or "--quiet" in opts
    failed = _failing()

    if verb in _RESTART_VERBS:
        if not units:
            print("Too few arguments.", file=sys.stderr)
            return 1
        _hang()
        if _restart_fails():
            for unit in units:
                print(
                    f"Job for {unit} failed because the control process exited with error code.\n"
                    f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.',
                    file=sys.stderr,
                )
            return 1
        for unit in units:
            rc = _post_restart(unit)
            if rc:
                return rc
        return 0
    if verb == "is-active":
        if not quiet:
            for _ in units or [""]:
                print("failed" if failed else "active")
        return 3 if failed else 0
    if verb == "is-failed":
        if not quiet:
            for _ in units or [""]:
                print("failed" if failed else "active")
        return 0 if failed else 1
    if verb == "status":
        rc = 0
        for unit in units or ["ghost.service"]:
            rc = max(rc, _status(unit, failed))
        return rc
    if verb == "show":
        return _show(units, opts, failed)
    if verb in _NOOP_VERBS:
        return 0
    print(f"Unknown command verb '{verb}'. (ghost-deploy-agent fake systemctl)", file=sys.stderr)
    return 1


_SHIM = """#!{python}
# systemctl stand-in written by agent.demo.systemctl.install_shim (ghost-deploy-agent).
import sys
sys.path.insert(0, {root!r})
from agent.demo.systemctl import main
raise SystemExit(main())
"""


def install_shim(bin_dir: Path) -> Path:
    """Write an executable ``bin_dir/systemctl`` that runs :func:`main`; return its path."""
    import agent  # the package this module belongs to, wherever it is imported from

    root = str(Path(agent.__file__).resolve().parent.parent)
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "systemctl"
    shim.write_text(_SHIM.format(python=sys.executable, root=root), encoding="utf-8")
    mode = shim.stat().st_mode
    shim.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
    return shim


if __name__ == "__main__":
    raise SystemExit(main())
