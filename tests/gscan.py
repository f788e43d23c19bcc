"""Real gscan from the npm registry, installed once per machine into a cache (tests only).

gscan ships inside Ghost; the tests of agent/validate.py need only gscan itself, so they
install the version Ghost 5.130.4 ships (the end-to-end tier's Ghost) instead of building a
whole Ghost. About 50 s and 180 MB the first time; then found in the cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

GSCAN_VERSION = "4.49.7"  # node_modules/gscan of Ghost 5.130.4
INSTALL_TIMEOUT = 600


def cache_root() -> Path:
    """$GHOST_AGENT_TEST_CACHE, else /var/cache/ghost-agent-tests for root, else ~/.cache."""
    if os.environ.get("GHOST_AGENT_TEST_CACHE"):
        return Path(os.environ["GHOST_AGENT_TEST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/ghost-agent-tests")
    return Path.home() / ".cache" / "ghost-agent-tests"


def gscan_package() -> Path | str:
    """The package directory (…/node_modules/gscan), or a reason why there is none."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        return "gscan needs node and npm (tests/run installs them when run as root)"
    root = cache_root() / f"gscan-{GSCAN_VERSION}"
    package = root / "node_modules" / "gscan"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".gscan-{GSCAN_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one installs, the rest wait
        if (package / "package.json").is_file():
            return package
        work = Path(tempfile.mkdtemp(prefix=".gscan-", dir=root.parent))
        try:
            done = subprocess.run(
                [npm, "install", "--prefix", str(work), "--no-audit", "--no-fund",
                 "--omit=dev", "--loglevel=error", f"gscan@{GSCAN_VERSION}"],
                capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
            if done.returncode != 0:
                return f"npm install gscan@{GSCAN_VERSION} failed: {done.stderr[-300:]}"
            os.rename(work, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return package
