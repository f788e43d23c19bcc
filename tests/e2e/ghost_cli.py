"""Ghost installed the way users do, with Ghost-CLI, inside a guest (#12).

Ghost-CLI (`ghost-cli` from npm) refuses root and calls sudo; for Ghost 6 it installs the
dependencies with `pnpm install --prod --store-dir=<site>/.pnpm-store`, which needs the npm
registry. The guest (tests/e2e/guest.py) has no network, so the registry part happens on the
host, once, into a *kit* cached under GHOST_AGENT_E2E_CACHE (/var/cache/ghost-agent-e2e):

* node 22 (ghost.ensure_node), ghost-cli and pnpm (`npm install --prefix <kit>/tools`);
* the Ghost release archive (`npm pack ghost@<v>`), for `ghost install --archive`;
* a pnpm store holding every package of the release's lockfile, filled by a `pnpm install
  --prod` of that release on the host (so the store also carries the side-effects cache of the
  native builds, better-sqlite3 and re2, for this node);
* the registry's metadata documents for `ghost` and `ghost-cli`, which Ghost-CLI reads even
  with --archive (version resolution, its update check): served inside the guest by
  RegistryStandIn, the operator's ~/.npmrc pointing at it as at a registry mirror;
* Debian's sudo package (`apt-get download sudo`) when the machine has no sudo: it is
  installed inside the guest only (dpkg -i on the guest's throwaway overlay).

Inside the guest (install_with_ghost_cli): an operator user with passwordless sudo, the
site directory /var/www/<site> owned by it (a host directory bind-mounted on /var/www, not the
guest's tmpfs), the store copied to <site>/.pnpm-store, then, as that user,
`ghost install --archive ... --process systemd --db sqlite3 --no-setup-nginx --no-setup-ssl
--no-setup-mysql` with pnpm told to work offline. Ghost-CLI itself then creates the `ghost`
user, writes /lib/systemd/system/ghost_<name>.service, runs `sudo systemctl daemon-reload`
and starts Ghost through systemd.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.ghost import (
    DEFAULT_CACHE_ROOT,
    GHOST_BUILDS,
    NPM_INSTALL_TIMEOUT,
    NPM_PACK_TIMEOUT,
    GhostBuildError,
    _file_lock,
    _node_headers_dir,
    _run_logged,
    _tail,
    call_in_netns,
    ensure_node,
    log,
    missing_build_packages,
)
from tests.e2e.guest import GUEST_PATH, Guest

GHOST_CLI_VERSION = "1.32.5"
PNPM_VERSION = "12.4.2"  # what Ghost 6.65 pins in packageManager (Ghost-CLI wants >= 11.10)
KIT_MARKER = ".ghost-agent-e2e-kit-complete"
OPERATOR = "deployer"  # the user who runs Ghost-CLI inside the guest (sudo, no password)
INSTALL_TIMEOUT = 1200
NPM_REGISTRY = "https://registry.npmjs.org/"
#: What Ghost-CLI's package-json asks for (abbreviated metadata).
NPM_ACCEPT = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
REGISTRY_DOCS = ("ghost", "ghost-cli")
REGISTRY_PORT = 4873  # the stand-in's port inside the guest (verdaccio's usual one)


@dataclass(frozen=True)
class GhostCliKit:
    """What `ghost install` needs from the registry, fetched on the host."""

    root: Path
    ghost_version: str
    node: Path  # bin/node of node 22

    @property
    def archive(self) -> Path:
        return self.root / f"ghost-{self.ghost_version}.tgz"

    @property
    def store(self) -> Path:
        return self.root / "pnpm-store"

    @property
    def tools_bin(self) -> Path:
        """node_modules/.bin with `ghost` and `pnpm`."""
        return self.root / "tools" / "node_modules" / ".bin"

    @property
    def sudo_debs(self) -> list[Path]:
        return sorted(self.root.glob("sudo_*.deb"))

    @property
    def path(self) -> str:
        """PATH for Ghost-CLI: node 22, then ghost and pnpm, then the system's."""
        return f"{self.node.parent}:{self.tools_bin}:{GUEST_PATH}"

    def info(self) -> dict:
        return json.loads((self.root / KIT_MARKER).read_text())


def _kit_env(node: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "npm_config_nodedir": str(_node_headers_dir(node)),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_loglevel": "warn",
        **(extra or {}),
    }


def ensure_ghost_cli_kit(cache_root: Path = DEFAULT_CACHE_ROOT, major: str = "6") -> GhostCliKit:
    """The kit for Ghost `major` (GHOST_BUILDS), built once under a lock, renamed into place
    when complete (marker file inside)."""
    version, node_wanted, _native = GHOST_BUILDS[major]
    if node_wanted is None:
        raise ValueError("the Ghost-CLI kit is for Ghost builds with a node from the registry")
    cache_root = Path(cache_root)
    node = ensure_node(node_wanted, cache_root)
    key = f"ghost-cli-{GHOST_CLI_VERSION}-ghost-{version}-node{node_wanted.split('.')[0]}"
    final = cache_root / key
    kit = GhostCliKit(final, version, node)
    if (final / KIT_MARKER).is_file():
        if not all((final / "registry" / f"{n}.json").is_file() for n in REGISTRY_DOCS):
            _fetch_registry_docs(final / "registry")  # a kit made before the stand-in
        return kit
    missing = missing_build_packages(node)
    if missing:
        raise GhostBuildError(f"the Ghost-CLI kit needs: apt-get install -y {' '.join(missing)}")
    with _file_lock(cache_root / f".{key}.lock", 2 * NPM_INSTALL_TIMEOUT):
        if (final / KIT_MARKER).is_file():
            return kit
        if final.exists():
            shutil.rmtree(final)
        for stale in cache_root.glob(f".kit-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".kit-{key}-", dir=cache_root))
        try:
            _build_kit(work, node, version)
            work.chmod(0o755)
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return kit


def _fetch_registry_docs(dest: Path) -> None:
    dest.mkdir(exist_ok=True)
    for name in REGISTRY_DOCS:
        req = urllib.request.Request(f"{NPM_REGISTRY}{name}", headers={"accept": NPM_ACCEPT})
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - fixed https URL
            body = resp.read()
        tmp = dest / f".{name}.json.tmp"
        tmp.write_bytes(body)
        tmp.rename(dest / f"{name}.json")


def _build_kit(work: Path, node: Path, version: str) -> None:
    started = time.monotonic()
    logfile = work / "kit.log"
    npm = shutil.which("npm")
    if not npm:
        raise GhostBuildError("npm is not installed")
    env = _kit_env(node)
    log(f"Ghost-CLI kit for Ghost {version} in {work}")
    _run_logged([npm, "install", "--prefix", str(work / "tools"), "--no-audit", "--no-fund",
                 f"ghost-cli@{GHOST_CLI_VERSION}", f"pnpm@{PNPM_VERSION}"],
                cwd=work, logfile=logfile, timeout=NPM_INSTALL_TIMEOUT, env=env)
    bin_dir = work / "tools" / "node_modules" / ".bin"
    _run_logged([npm, "pack", f"ghost@{version}"], cwd=work, logfile=logfile,
                timeout=NPM_PACK_TIMEOUT, env=env)
    if not (work / f"ghost-{version}.tgz").is_file():
        raise GhostBuildError(f"npm pack did not produce ghost-{version}.tgz: {_tail(logfile)}")
    # Fill the store the way Ghost-CLI will use it: the same pnpm command in the release.
    populate = work / "populate"
    populate.mkdir()
    _run_logged(["tar", "-xzf", str(work / f"ghost-{version}.tgz"), "--no-same-owner"],
                cwd=populate, logfile=logfile, timeout=300)
    pnpm_env = _kit_env(node, {"PATH": f"{node.parent}:{bin_dir}:{os.environ.get('PATH', '')}",
                               "NODE_ENV": "production", "COREPACK_DEFAULT_TO_LATEST": "0"})
    _run_logged([str(bin_dir / "pnpm"), "install", "--prod", f"--store-dir={work / 'pnpm-store'}",
                 "--reporter=append-only"],
                cwd=populate / "package", logfile=logfile, timeout=NPM_INSTALL_TIMEOUT,
                env=pnpm_env)
    # Ghost's own native module must load (pnpm does not hoist re2: it is Ghost's deps' dep).
    _run_logged([str(node), "-e", "require('better-sqlite3')"], cwd=populate / "package",
                logfile=logfile, timeout=60, env=pnpm_env)
    shutil.rmtree(populate)
    # Ghost-CLI asks the registry for the list of Ghost versions even with --archive, and for
    # its own latest version: keep both documents for the guest's registry stand-in.
    _fetch_registry_docs(work / "registry")
    if not shutil.which("sudo"):
        # Installed inside the guest only; the machine itself stays without sudo.
        _run_logged(["apt-get", "download", "sudo"], cwd=work, logfile=logfile, timeout=300)
    seconds = round(time.monotonic() - started, 1)
    (work / KIT_MARKER).write_text(json.dumps({
        "ghost": version, "ghost_cli": GHOST_CLI_VERSION, "pnpm": PNPM_VERSION,
        "node": str(node), "kit_seconds": seconds,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }) + "\n")
    log(f"Ghost-CLI kit complete in {seconds} s")


# --------------------------------------------------------------------------- inside the guest


def guest_binds(kit: GhostCliKit) -> list[Path]:
    """Host directories the guest needs for install_with_ghost_cli (besides the www dir)."""
    return [kit.root, kit.node.parent.parent]


def ensure_guest_sudo(guest: Guest, kit: GhostCliKit) -> str:
    """sudo inside the guest: the machine's, or Debian's package installed in the guest's
    overlay. Returns how."""
    if guest.run(["sh", "-c", "command -v sudo"], check=False).returncode == 0:
        return "present"
    debs = kit.sudo_debs
    if not debs:
        raise GhostBuildError("no sudo in the guest and no sudo .deb in the kit")
    guest.run(["dpkg", "-i", *map(str, debs)], timeout=300,
              env={"DEBIAN_FRONTEND": "noninteractive"})
    return "dpkg -i " + " ".join(d.name for d in debs)


def add_operator(guest: Guest, user: str = OPERATOR) -> None:
    """A login user with passwordless sudo, as Ghost's install guide asks for."""
    guest.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
    guest.write_file(f"/etc/sudoers.d/{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", mode=0o440)
    guest.run(["visudo", "-c"])


def as_user(guest: Guest, user: str, argv: list[str], *, cwd: str, env: dict[str, str],
            timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """argv as `user` in `cwd`, with exactly env (plus HOME/USER/LOGNAME/LANG)."""
    home = f"/home/{user}"
    full = {"HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", "TERM": "dumb",
            "PATH": GUEST_PATH, **env}
    script = f"cd {shlex.quote(cwd)} && exec " + " ".join(map(shlex.quote, argv))
    return guest.run(["runuser", "-u", user, "--", "env", "-i",
                      *(f"{k}={v}" for k, v in full.items()), "/bin/sh", "-c", script],
                     timeout=timeout, check=check)


@dataclass
class CliInstall:
    site_dir: str
    name: str  # Ghost-CLI's instance name: the url's host with dashes
    unit: str
    output: str
    seconds: float  # `ghost install` itself
    copy_seconds: float  # copying the kit's pnpm store into <site>/.pnpm-store


def install_with_ghost_cli(guest: Guest, kit: GhostCliKit, www: Path, *, site: str = "dev1",
                           url: str = "https://dev1.example.com", user: str = OPERATOR,
                           timeout: float = INSTALL_TIMEOUT) -> CliInstall:
    """`ghost install` of kit's release at /var/www/<site> inside the guest, as `user`, with
    systemd and sqlite3 and nothing else (no nginx, ssl, mysql); Ghost is started by it.

    www: a host directory (world-traversable, bound into the guest) mounted on /var/www.
    """
    # The registry Ghost-CLI asks for metadata: the stand-in (RegistryStandIn), as a site
    # behind a registry mirror would configure it.
    as_user(guest, user, ["sh", "-c", f"echo registry=http://127.0.0.1:{REGISTRY_PORT}/ "
                          ">> ~/.npmrc"], cwd="/", env={}, timeout=30)
    guest.run(["mkdir", "-p", "/var/www"])
    guest.run(["mount", "--bind", str(www), "/var/www"])
    site_dir = f"/var/www/{site}"
    guest.run(["install", "-d", "-o", user, "-g", user, "-m", "0775", site_dir])
    # The registry's part, done on the host: the store goes where Ghost-CLI points pnpm.
    t_copy = time.monotonic()
    as_user(guest, user, ["cp", "-r", str(kit.store), f"{site_dir}/.pnpm-store"],
            cwd=site_dir, env={}, timeout=600)
    copy_seconds = time.monotonic() - t_copy
    env = {
        "PATH": kit.path,
        # No registry inside the guest: pnpm installs from the store only, native modules
        # included (the store's side-effects cache holds their builds for this node). pnpm
        # reads npm_config_* / pnpm_config_* variables; Ghost-CLI passes the environment on.
        "npm_config_offline": "true",
        "pnpm_config_offline": "true",
        "npm_config_update_notifier": "false",
    }
    argv = ["ghost", "install", "--archive", str(kit.archive), "--no-prompt", "--no-color",
            "--no-stack", "--url", url, "--db", "sqlite3",
            "--dbpath", f"{site_dir}/content/data/ghost.db", "--process", "systemd",
            "--no-setup-nginx", "--no-setup-ssl", "--no-setup-mysql", "--start"]
    t0 = time.monotonic()
    r = as_user(guest, user, argv, cwd=site_dir, env=env, timeout=timeout, check=False)
    seconds = time.monotonic() - t0
    output = r.stdout + r.stderr
    if r.returncode != 0:
        debug = as_user(guest, user, ["sh", "-c", "cat ghost-cli-debug-*.log 2>/dev/null | "
                                      "tail -c 6000"], cwd=site_dir, env={}, timeout=30,
                        check=False).stdout
        raise GhostBuildError(f"ghost install failed (exit {r.returncode}) after {seconds:.0f} s:"
                              f"\n{output[-8000:]}\n--- debug log ---\n{debug}")
    name = url.split("://", 1)[1].split("/")[0].split(":")[0].replace(".", "-")
    return CliInstall(site_dir, name, f"ghost_{name}.service", output, seconds, copy_seconds)


class RegistryStandIn:
    """The registry's metadata documents Ghost-CLI reads (REGISTRY_DOCS), served on
    127.0.0.1:REGISTRY_PORT inside the guest's network by a thread of this process, the way
    a site behind a registry mirror is configured (`registry=` in the operator's ~/.npmrc).
    Packages themselves never come from it: pnpm installs offline from the store."""

    def __init__(self, kit: GhostCliKit, netns: Path) -> None:
        self.kit = kit
        self.netns = netns
        self.requests: list[str] = []
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{REGISTRY_PORT}/"

    def start(self) -> RegistryStandIn:
        docs = self.kit.root / "registry"
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                name = self.path.lstrip("/").split("?", 1)[0]
                doc = docs / f"{name}.json"
                if name not in REGISTRY_DOCS or not doc.is_file():
                    self.send_error(404)
                    return
                body = doc.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        def serve() -> http.server.ThreadingHTTPServer:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", REGISTRY_PORT), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server

        self.server = call_in_netns(self.netns, serve)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> RegistryStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
