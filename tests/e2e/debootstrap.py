"""Debian root file systems for the e2e tier, made once with debootstrap and cached.

    root = debian_rootfs("trixie")   # /var/cache/ghost-agent-e2e/rootfs/debian-trixie-<key>
    Guest(scratch, root=root)        # boots that Debian's systemd over a throwaway overlay

A rootfs is `debootstrap --variant=minbase SUITE` from Debian's package registry plus, with
apt inside it, what the agent's .deb depends on and what the tests run there (ROOTFS_PACKAGES):
systemd, dbus, polkitd, git, python3, python3-venv, python3-psutil... so that
`apt install ./ghost-deploy-agent_*.deb` inside it needs no network. Only the build needs
the registry; the tests only read the cached tree (a guest boots an overlay of it whose writes
stay in memory).

The cache (GHOST_AGENT_E2E_CACHE, default /var/cache/ghost-agent-e2e) is keyed by suite and by
a digest of the recipe (packages, mirror, RECIPE): another list of packages makes another
rootfs. A build runs under an flock of its own (parallel test workers wait for one build),
in `<key>.tmp`, and is renamed into place only when complete, so a killed build leaves no
half rootfs that looks finished; the next build removes the leftover. `<key>.json` records
how long the build took.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["SUITES", "ROOTFS_PACKAGES", "cache_dir", "debian_rootfs", "debootstrap_supported"]

#: The suites the tier knows: Debian release and its python3.
SUITES: dict[str, dict[str, str]] = {
    "bookworm": {"debian": "12", "python": "3.11"},
    "trixie": {"debian": "13", "python": "3.13"},
}

#: Installed with apt into the minbase system: the .deb's dependencies (so its install is
#: offline) and what the tests use inside (git daemon, python3 for the Ghost stand-in).
ROOTFS_PACKAGES: tuple[str, ...] = (
    "systemd", "dbus", "polkitd", "util-linux", "procps",
    "git", "git-lfs", "openssh-client",
    "python3", "python3-venv", "python3-pip-whl", "python3-psutil",
)

#: Bump to rebuild every cached rootfs after a change of how they are made.
RECIPE = 1

DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT = 1800  # seconds, each of debootstrap and apt-get


def cache_dir() -> Path:
    return Path(os.environ.get("GHOST_AGENT_E2E_CACHE", "/var/cache/ghost-agent-e2e"))


def debootstrap_supported() -> tuple[bool, str]:
    """Can this machine build (or use) a cached rootfs? (ok, reason-when-not)."""
    if os.geteuid() != 0:
        return False, "needs root (debootstrap, chroot)"
    for tool in ("debootstrap", "chroot", "unshare"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` not found (tests/run installs debootstrap)"
    return True, ""


def _key(suite: str, mirror: str, packages: tuple[str, ...]) -> str:
    recipe = json.dumps([RECIPE, suite, mirror, sorted(packages)]).encode()
    return f"debian-{suite}-{hashlib.sha256(recipe).hexdigest()[:10]}"


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n".encode())
        fh.flush()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                              timeout=BUILD_TIMEOUT, check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                   "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}); log {log}:\n{tail}")


#: Runs inside `unshare --mount`: proc for the maintainer scripts, no service started, the
#: host's resolver for the registry; all of it gone (or undone) afterwards.
_APT_IN_CHROOT = r"""set -eu
root=$1; shift
mount -t proc proc "$root/proc"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" apt-get update -qq
chroot "$root" apt-get install -y -q --no-install-recommends "$@"
chroot "$root" apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"
"""


def debian_rootfs(suite: str, mirror: str | None = None,
                  packages: tuple[str, ...] = ROOTFS_PACKAGES) -> Path:
    """The cached rootfs of `suite`, built now if missing (minutes, needs the registry)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    mirror = mirror or os.environ.get("GHOST_AGENT_DEBIAN_MIRROR", DEFAULT_MIRROR)
    base = cache_dir() / "rootfs"
    key = _key(suite, mirror, packages)
    final = base / key
    if final.is_dir():
        return final
    ok, reason = debootstrap_supported()
    if not ok:
        raise RuntimeError(f"cannot build the {suite} rootfs: {reason}")
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():  # built by another worker while we waited
            return final
        tmp = base / f"{key}.tmp"
        log = base / f"{key}.log"
        if tmp.exists():  # a build that was killed
            shutil.rmtree(tmp)
        log.write_text("")
        t0 = time.monotonic()
        try:
            _run(["debootstrap", "--variant=minbase", suite, str(tmp), mirror], log,
                 f"debootstrap {suite}")
            t1 = time.monotonic()
            _run(["unshare", "--mount", "--propagation", "private", "--fork", "--",
                  "/bin/sh", "-c", _APT_IN_CHROOT, "apt-in-chroot", str(tmp), *packages],
                 log, f"apt-get install in the {suite} rootfs")
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
            raise
        t2 = time.monotonic()
        meta = {"suite": suite, "mirror": mirror, "packages": list(packages),
                "debootstrap_seconds": round(t1 - t0, 1), "apt_seconds": round(t2 - t1, 1),
                "total_seconds": round(t2 - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (base / f"{key}.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.rename(tmp, final)
    return final


def build_info(root: Path) -> dict:
    """What `<key>.json` says about a cached rootfs (empty when unknown)."""
    try:
        return json.loads(root.with_name(root.name + ".json").read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":  # build (or find) the cached rootfs of the suites named
    import sys

    for name in sys.argv[1:] or list(SUITES):
        path = debian_rootfs(name)
        print(path, json.dumps(build_info(path)))
