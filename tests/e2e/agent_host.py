"""The agent as a real service next to a real Ghost, inside a real systemd: fixtures and helpers
for the end-to-end scenarios (tests/e2e/test_e2e_*.py) and the figures (tests/e2e/bench_e2e.py).

Layout of one *lab* (one guest, booted once per test module):

* a guest (tests/e2e/guest.py): systemd as PID 1 of fresh namespaces, a private network with
  only `lo`; the lab's root directory and the agent's virtualenv are bound in at the same paths;
* the agent installed from this checkout into a virtualenv (/usr/bin/python3 -m venv, then
  `pip install <checkout>`), run by the project's own unit file systemd/ghost-agent.service
  with a drop-in for ExecStart=, the config path and test-speed knobs (install_agent(): the
  ONE place that installs the agent into a guest). When that unit runs as its own user
  (User=ghost-agent, sandboxed), install_agent() first runs `ghost-agent setup` as an operator
  would (user, polkit rule, ReadWritePaths= drop-in) and gives the agent its files;
* Ghost's own user `ghost` (Ghost-CLI's), owning each site's content/ (775/664), as the agent's
  group; run directories live under LABS_ROOT (/srv/ghost-agent-e2e), not /tmp, which the
  hardened unit cannot see;
* inside the guest's network namespace, served from this process (their listening sockets are
  made by a thread that joined that namespace): a Slack stand-in (tests/slackstub.py) and a
  smart-HTTP git server (tests/gitremote.py); and, as a unit inside the guest, Debian's sshd on
  127.0.0.1:2222, key-only, for ssh remotes with a deploy key.

Each test gets a fresh *site* (Lab.new_site): a Ghost 5.130.4 site laid out like Ghost-CLI's
(content outside the code, SQLite), run as ghost_<name>.service on 127.0.0.1:2368 of the guest's
network; its theme repository (Casper with a footer line, tests/e2e/ghost.make_theme) in a bare
git repository; the theme `acme` installed by hand and activated once (settings table, then
Ghost started) before the agent takes over. By default content/themes/acme is a plain directory
that the agent adopts as its first release (and rolls back to if the first release fails).
With adopt=False it is a symlink to a directory outside releases_dir
(<site>/acme-hand-installed), which the agent refuses to replace: it names the link instead.

Everything the tests assert is read through what Ghost serves (the home page, the ci-cd files
under /content/files/), systemd (systemctl show/status, the journal) and the Slack stand-in.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.ghost import (  # noqa: E402
    HTTPS_HEADERS,
    GhostProcess,
    PrivateNet,
    Response,
    activate_theme,
    add_custom_integration,
    add_staff_token,
    call_in_netns,
    ensure_ghost_build,
    ghost_unit,
    http_get,
    make_theme,
    write_site,
)
from tests.e2e.ghost_cli import (  # noqa: E402
    GhostCliKit,
    RegistryStandIn,
    add_operator,
    ensure_ghost_cli_kit,
    ensure_guest_sudo,
    guest_binds,
    install_with_ghost_cli,
)
from tests.e2e.guest import Guest, guest_supported  # noqa: E402
from tests.gitremote import GitRemote, SmartHttpGitServer  # noqa: E402
from tests.slackstub import SlackStub  # noqa: E402

REPO_ROOT = _REPO_ROOT
UNIT_FILE = REPO_ROOT / "systemd" / "ghost-agent.service"
AGENT_UNIT = "ghost-agent.service"
DROPIN_DIR = "/etc/systemd/system/ghost-agent.service.d"
DROPIN = f"{DROPIN_DIR}/e2e.conf"
SYSTEM_PYTHON = Path("/usr/bin/python3")
GHOST_PORT = 2368
LOCAL_URL = f"http://127.0.0.1:{GHOST_PORT}"
SSH_PORT = 2222
SSHD_UNIT = "e2e-sshd.service"
SSHD_DIR = "/etc/ghost-agent-e2e/sshd"  # inside the guest: root-owned, 0755 parents
#: The Slack webhook for the hardened unit, as docs/operators.md says: a systemd credential.
CREDSTORE_WEBHOOK = "/etc/credstore/ghost-agent.slack-webhook-url"
CREDSTORE_ADMIN_KEY = "/etc/credstore/ghost-agent.ghost-admin-api-key"
FOOTER_PLACEHOLDER = "@@E2E-FOOTER@@"
FOOTER_MARK = 'class="e2e-footer"'  # rendered by every release of the test theme
THEME = "acme"

#: Knobs of the agent's config for test speed (the defaults are in agent.toml.example).
POLL_SECONDS = 2
VERIFY_SECONDS = 15

#: Ghost's user and group, as Ghost-CLI makes them (Ghost runs as it; content is ghost:ghost).
GHOST_USER = "ghost"

#: Where the runs' directories go. Not under /tmp, /var/tmp, /root or /home: a hardened unit
#: (PrivateTmp=, ProtectHome=) could not see the venv, the config or the site there. Every
#: directory on the way is world-traversable, so Ghost and the agent can run as their own users.
LABS_ROOT = Path(os.environ.get("GHOST_AGENT_E2E_LABS", "/srv/ghost-agent-e2e"))
STALE_RUN_SECONDS = 6 * 3600  # older run directories are removed when a new run starts


def log(msg: str) -> None:
    print(f"[agent-e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- network namespace

def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll check() until it returns something truthy; AssertionError naming `what` if not."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(step)


# --------------------------------------------------------------------------- run directories


def new_run_dir(prefix: str = "run-") -> Path:
    """A fresh directory under LABS_ROOT for one run's venv and labs (0755). Run directories
    left by runs more than STALE_RUN_SECONDS ago are removed first."""
    LABS_ROOT.mkdir(parents=True, exist_ok=True)
    LABS_ROOT.chmod(0o755)
    now = time.time()
    for old in LABS_ROOT.iterdir():
        with contextlib.suppress(OSError):
            if old.is_dir() and now - old.stat().st_mtime > STALE_RUN_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
    run = Path(tempfile.mkdtemp(prefix=f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-",
                                dir=LABS_ROOT))
    run.chmod(0o755)
    return run


# --------------------------------------------------------------------------- the agent's venv


@dataclass(frozen=True)
class AgentVenv:
    path: Path
    seconds: float

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    @property
    def ghost_agent(self) -> Path:
        return self.bin / "ghost-agent"


def build_agent_venv(dest: Path) -> AgentVenv:
    """A virtualenv made by the system's Python with the agent installed from this checkout,
    as an operator would (`python3 -m venv` then `pip install <checkout>`); pip may use PyPI."""
    started = time.monotonic()
    python = SYSTEM_PYTHON if SYSTEM_PYTHON.exists() else Path(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV"))}
    subprocess.run([str(python), "-m", "venv", str(dest)], check=True, timeout=300, env=env,
                   capture_output=True)
    proc = subprocess.run(
        [str(dest / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         str(REPO_ROOT)],
        timeout=900, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {REPO_ROOT} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    venv = AgentVenv(dest, time.monotonic() - started)
    if not venv.ghost_agent.exists():
        raise RuntimeError(f"no {venv.ghost_agent} after pip install")
    log(f"agent venv {dest} ready in {venv.seconds:.1f} s")
    return venv


# --------------------------------------------------------------------------- installing the agent


def unit_user(unit_text: str) -> str | None:
    """The User= of a unit file's [Service] section, None when it runs as root."""
    users = re.findall(r"^\s*User=(\S+)\s*$", unit_text, re.M)
    return users[-1] if users and users[-1] not in ("root", "0") else None


def install_agent(guest: Guest, venv: AgentVenv, config_path: Path,
                  service_lines: list[str] | tuple[str, ...] = (),
                  owned: list[Path] | tuple[Path, ...] = (),
                  readable: list[Path] | tuple[Path, ...] = ()) -> str:
    """Install the agent's service into the guest as an operator would after a pip install;
    return the user it runs as ("root" or the unit's User=). The unit is not started.

    * The project's own unit file (systemd/ghost-agent.service), verbatim.
    * When that unit runs as its own user (User=ghost-agent): `ghost-agent setup` first (the
      user through systemd-sysusers, the polkit rule that lets it restart the Ghost unit, the
      drop-in 50-setup.conf with ReadWritePaths= and the config path). Then `owned` paths
      (e.g. the state directory) are given to that user and `readable` ones (the config, a
      deploy key) made readable by it, as the operator would.
    * A drop-in, e2e.conf, that only points ExecStart= at the venv's `ghost-agent run`, sets
      the config path and adds test-speed knobs (RestartSec=1 and `service_lines`, e.g.
      WatchdogSec=3 or the libfaketime environment).

    This is the one place that knows how the agent is installed.
    """
    unit_text = UNIT_FILE.read_text()
    user = unit_user(unit_text)
    if user:
        setup = [str(venv.ghost_agent), "setup"]
        if guest.run([*setup, "--help"], check=False).returncode != 0:
            setup = [str(venv.python), "-m", "agent.setup"]  # before the CLI has `setup`
        done = guest.run([*setup, "--config", str(config_path), "--exec",
                          str(venv.ghost_agent), "--ghost-group", GHOST_USER])
        log(f"{' '.join(setup[-2:])}:\n{done.stdout.strip()}\n{done.stderr.strip()}".rstrip())
        for path in owned:
            guest.run(["chown", "-R", f"{user}:{user}", str(path)])
        for path in readable:
            if path == config_path:  # root's file, the agent's group may read it
                guest.run(["chgrp", user, str(path)])
                guest.run(["chmod", "640", str(path)])
            else:  # a secret the agent reads itself: its own, 0600
                guest.run(["chown", f"{user}:{user}", str(path)])
    # After setup, which writes its own copy of the unit for a pip install: the checkout's.
    guest.write_file(f"/etc/systemd/system/{AGENT_UNIT}", unit_text)
    lines = [
        "[Service]",
        "ExecStart=",
        f"ExecStart={venv.ghost_agent} run",
        f"Environment=GHOST_AGENT_CONFIG={config_path}",
        "RestartSec=1",
        *service_lines,
    ]
    guest.write_file(DROPIN, "\n".join(lines) + "\n")
    guest.systemctl("daemon-reload")
    return user or "root"


# --------------------------------------------------------------------------- Ghost and its theme


@dataclass
class GhostKit:
    """What every lab needs from Ghost: the build, a database made by a first boot (so a new
    site skips Ghost's migrations), and the theme's files with a footer placeholder."""

    ghost_dir: Path
    template_db: Path
    theme_files: dict[str, bytes]
    template_seconds: float = 0.0

    def theme(self, footer: str) -> dict[str, bytes]:
        """Every file of the test theme, with `footer` as the footer line."""
        files = dict(self.theme_files)
        files["default.hbs"] = files["default.hbs"].replace(FOOTER_PLACEHOLDER.encode(),
                                                             footer.encode())
        return files

    def theme_text(self, footer: str) -> dict[str, str | bytes | None]:
        return dict(self.theme(footer))

    def broken_unclosed_if(self, footer: str) -> dict[str, str | bytes | None]:
        """default.hbs with an unclosed {{#if}}: Ghost answers GET / with 400."""
        files: dict[str, str | bytes | None] = dict(self.theme(footer))
        html = self.theme(footer)["default.hbs"].decode()  # the unclosed block wraps the footer
        needle = '<p class="e2e-footer">'
        html = html.replace(needle, "{{#if @site.title}}<span>never closed</span>\n" + needle, 1)
        files["default.hbs"] = html
        return files

    def broken_no_index(self, footer: str) -> dict[str, str | bytes | None]:
        """index.hbs removed: Ghost answers GET / with 500."""
        files: dict[str, str | bytes | None] = dict(self.theme(footer))
        files["index.hbs"] = None
        return files

    def write_theme(self, dest: Path, footer: str) -> None:
        for rel, data in self.theme(footer).items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    def lay_out_site(self, www: Path, name: str, *, url: str, port: int, footer: str) -> None:
        """Site `name` laid out as Ghost-CLI does, on the host at www/<name>, for a guest that
        mounts `www` on /var/www (its config names /var/www paths): the database of the
        first boot, the test theme installed by hand (with `footer`) and active."""
        laid = write_site(www / name, self.ghost_dir, url=url, port=port, theme_name=THEME)
        laid["config"].write_text(laid["config"].read_text().replace(str(www), "/var/www"))
        shutil.copy2(self.template_db, laid["db"])
        self.write_theme(laid["theme_dir"], footer)
        activate_theme(laid["db"], THEME)


def own_content_as_ghost(guest: Guest, content: str) -> None:
    """Ghost-CLI's ownership of a site's content: ghost:ghost, directories 775, files 664."""
    guest.run(["chown", "-R", f"{GHOST_USER}:{GHOST_USER}", content])
    guest.run(["find", content, "-type", "d", "-exec", "chmod", "775", "{}", "+"])
    guest.run(["find", content, "-type", "f", "-exec", "chmod", "664", "{}", "+"])


def push_theme(guest: Guest, kit: GhostKit, work: Path, footer: str, message: str,
               branch: str) -> str:
    """Commit the test theme with `footer` in the clone `work` (a host path the guest sees at
    the same path) and push it to its origin's `branch` from inside the guest (the remote is
    on the guest's network); returns the commit."""
    kit.write_theme(work, footer)
    git = ["git", "-C", str(work)]
    guest.run([*git, "add", "-A"])
    guest.run([*git, "-c", "user.name=ops", "-c", "user.email=ops@example.com", "commit", "-q",
               "-m", message])
    guest.run([*git, "push", "-q", "origin", f"HEAD:{branch}"])
    return guest.run([*git, "rev-parse", "HEAD"]).stdout.strip()


def make_ghost_kit(workdir: Path, major: str = "5") -> GhostKit:
    """Build (or reuse) Ghost `major`, boot it once outside systemd in a private network to
    create a database, and read the test theme's files."""
    ghost_dir = ensure_ghost_build(major=major)
    workdir.mkdir(parents=True, exist_ok=True)
    theme_dir = make_theme(ghost_dir, workdir / "theme-template", footer_text=FOOTER_PLACEHOLDER,
                           name=THEME)
    files = {str(p.relative_to(theme_dir)): p.read_bytes()
             for p in sorted(theme_dir.rglob("*")) if p.is_file()}
    started = time.monotonic()
    site = write_site(workdir / "template-site", ghost_dir, url="https://template.example.com")
    with PrivateNet() as net:
        ghost = GhostProcess(ghost_dir, site, net=net)
        try:
            ghost.start()
            ghost.wait_ready(timeout=240)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"Ghost's first boot failed: {exc}\n{ghost.log_tail()}") from exc
        finally:
            ghost.stop()
    seconds = time.monotonic() - started
    log(f"Ghost template database made in {seconds:.1f} s")
    return GhostKit(ghost_dir, site["db"], files, seconds)


def ghost_unit_name(site_name: str) -> str:
    return f"ghost_{site_name}-example-com.service"


# --------------------------------------------------------------------------- the journal


@dataclass(frozen=True)
class JournalEntry:
    at: float  # seconds since the epoch (journald's receive time, CLOCK_REALTIME)
    message: str
    unit: str


def journal_entries(guest: Guest, unit: str, since: float | None = None) -> list[JournalEntry]:
    """The unit's journal (its own output and systemd's lines about it), oldest first."""
    argv = ["journalctl", "--no-pager", "-q", "-o", "json", "-u", unit]
    if since is not None:
        argv += ["--since", f"@{since:.6f}"]
    out = guest.run(argv, check=False, timeout=60).stdout
    entries = []
    for line in out.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        message = data.get("MESSAGE", "")
        if isinstance(message, list):  # non-UTF-8: an array of bytes
            message = bytes(message).decode("utf-8", "replace")
        entries.append(JournalEntry(int(data["__REALTIME_TIMESTAMP"]) / 1e6, str(message), unit))
    return entries


def first_entry(entries: list[JournalEntry], pattern: str, after: float = 0.0
                ) -> JournalEntry | None:
    rx = re.compile(pattern)
    for e in entries:
        if e.at >= after and rx.search(e.message):
            return e
    return None


# --------------------------------------------------------------------------- the lab


class Lab:
    """One guest with the shared servers; sites are made with new_site(). A context manager.

    cli_kit: when given, each site's Ghost is installed inside the guest by Ghost-CLI
    (tests/e2e/ghost_cli.py) at /var/www/<site>, with Ghost-CLI's own unit, layout and `ghost`
    user; otherwise the site is laid out as Ghost-CLI would (ghost.write_site), which is
    quicker and what most tests need."""

    def __init__(self, root: Path, venv: AgentVenv, kit: GhostKit,
                 cli_kit: GhostCliKit | None = None) -> None:
        self.root = Path(root)
        self.venv = venv
        self.kit = kit
        self.cli_kit = cli_kit
        self.www = self.root / "www"  # the guest's /var/www (cli_kit only)
        self.registry: RegistryStandIn | None = None
        self.guest: Guest | None = None
        self.slack = SlackStub()
        self.http_root = self.root / "git-http"
        self.git_http = SmartHttpGitServer(self.http_root)
        self.faketime_lib: Path | None = None
        self.deploy_key: Path | None = None
        self._sites = 0
        self._sshd = False
        #: the user the agent's unit runs as (systemd/ghost-agent.service's User=)
        self.agent_user = unit_user(UNIT_FILE.read_text()) or "root"

    # -- life cycle
    def start(self) -> Lab:
        self.root.mkdir(parents=True, exist_ok=True)
        binds = [self.root, self.venv.path]
        if self.cli_kit is not None:
            self.www.mkdir(exist_ok=True)
            self.www.chmod(0o755)  # Ghost-CLI wants the directories above a site readable
            binds += guest_binds(self.cli_kit)
        self.guest = Guest(self.root / "guest", binds=binds)
        self.guest.boot()
        log(f"guest booted in {self.guest.boot_seconds:.2f} s (pid {self.guest.pid()})")
        # systemd leaves / private when it runs in a container (it only makes it rshared when
        # the kernel starts it); LoadCredential= then delivers nothing, not even to root units
        # (its mount is made in a helper's namespace and must propagate back). systemd-nspawn
        # and a real host have a shared /. The guest's mounts are private copies of the host's,
        # so this changes nothing outside the guest.
        self.guest.run(["mount", "--make-rshared", "/"])
        if self.cli_kit is not None:
            # Ghost-CLI refuses root: an operator with sudo runs it (and makes the ghost user).
            ensure_guest_sudo(self.guest, self.cli_kit)
            add_operator(self.guest)
            self.registry = RegistryStandIn(self.cli_kit, self.netns).start()
        else:  # Ghost's own user, as Ghost-CLI makes it.
            self.guest.run(["systemd-sysusers", "--inline",
                            f'u {GHOST_USER} - "Ghost" /var/www/{GHOST_USER} /usr/sbin/nologin'])
        call_in_netns(self.netns, self.slack.start)
        call_in_netns(self.netns, self.git_http.start)
        return self

    def close(self) -> None:
        if self.registry is not None:
            self.registry.stop()
        with contextlib.suppress(Exception):
            self.slack.stop()
        with contextlib.suppress(Exception):
            self.git_http.stop()
        if self.guest is not None:
            self.guest.shutdown()

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def g(self) -> Guest:
        assert self.guest is not None, "lab not started"
        return self.guest

    @property
    def netns(self) -> Path:
        return Path(f"/proc/{self.g.pid()}/ns/net")

    # -- HTTP inside the guest
    def get(self, path: str, timeout: float = 10) -> Response:
        """GET from Ghost on 127.0.0.1:2368 of the guest, as the public https site."""
        return http_get(LOCAL_URL + path, headers=dict(HTTPS_HEADERS), timeout=timeout,
                        netns=self.netns)

    def port_open(self, port: int) -> bool:
        return bool(call_in_netns(self.netns, _port_open, port))

    # -- sshd inside the guest
    def start_sshd(self) -> None:
        """Debian's sshd as a unit inside the guest on 127.0.0.1:2222: key-only, its own host
        key, one authorized key (the deploy key) limited to git commands by git-shell."""
        if self._sshd:
            return
        if not Path("/usr/sbin/sshd").exists():
            _apt_install("openssh-server")
        keys = self.root / "ssh"
        keys.mkdir(exist_ok=True)
        for name in ("host_key", "deploy_key"):
            if not (keys / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                f"ghost-agent-e2e {name}", "-f", str(keys / name)],
                               check=True, timeout=60)
        self.deploy_key = keys / "deploy_key"
        g = self.g
        g.write_file(f"{SSHD_DIR}/ssh_host_ed25519_key", (keys / "host_key").read_text(), 0o600)
        g.write_file(f"{SSHD_DIR}/ssh_host_ed25519_key.pub",
                     (keys / "host_key.pub").read_text())
        pub = (keys / "deploy_key.pub").read_text().strip()
        g.write_file(f"{SSHD_DIR}/authorized_keys",
                     'restrict,command="/usr/bin/git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" '
                     f"{pub}\n", 0o600)
        g.write_file(f"{SSHD_DIR}/sshd_config", textwrap.dedent(f"""\
            Port {SSH_PORT}
            ListenAddress 127.0.0.1
            HostKey {SSHD_DIR}/ssh_host_ed25519_key
            PidFile /run/e2e-sshd.pid
            AuthorizedKeysFile {SSHD_DIR}/authorized_keys
            AuthenticationMethods publickey
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            AllowUsers root
            UsePAM no
            StrictModes yes
            X11Forwarding no
            AllowTcpForwarding no
            PrintMotd no
            LogLevel VERBOSE
            """))
        g.install_unit(SSHD_UNIT, textwrap.dedent(f"""\
            [Unit]
            Description=sshd for the e2e git remote (127.0.0.1:{SSH_PORT}, key-only)

            [Service]
            ExecStartPre=/usr/sbin/sshd -t -f {SSHD_DIR}/sshd_config
            ExecStart=/usr/sbin/sshd -D -e -f {SSHD_DIR}/sshd_config
            RuntimeDirectory=sshd
            RuntimeDirectoryMode=0755
            """))
        g.systemctl("start", SSHD_UNIT)
        wait_for(lambda: self.port_open(SSH_PORT), 20, f"sshd on 127.0.0.1:{SSH_PORT}")
        self._sshd = True

    # -- libfaketime for the agent's unit
    def faketime_library(self) -> Path:
        """libfaketime.so.1 of the PyPI package `libfaketime` (tests/faketime.py), copied into
        the lab so the unit does not depend on where the test's Python lives."""
        if self.faketime_lib is None:
            from tests.faketime import library

            dest = self.root / "lib" / "libfaketime.so.1"
            dest.parent.mkdir(exist_ok=True)
            shutil.copy2(library(), dest)
            self.faketime_lib = dest
        return self.faketime_lib

    # -- sites
    def new_site(self, name: str = "dev1", *, flag: str | None = None, transport: str = "http",
                 **settings: Any) -> Site:
        """A fresh Ghost site with its theme repo; Ghost started and serving footer v0; the agent
        installed (not started). settings: see Site.config_text."""
        site = self.site(name, flag=flag, transport=transport, **settings)
        site.setup()
        return site

    def site(self, name: str = "dev1", *, flag: str | None = None, transport: str = "http",
             **settings: Any) -> Site:
        """A Site not set up yet (call setup(); stop_all() stops what it started)."""
        self._sites += 1
        return Site(self, f"{name}-{self._sites}", name, flag or name, transport, settings)


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                   check=True, timeout=900, env=env, capture_output=True)


# --------------------------------------------------------------------------- one site


@dataclass
class Pushed:
    sha: str
    footer: str
    at: float  # time.time() when the push returned


@dataclass
class Site:
    lab: Lab
    slug: str  # unique in the lab: dev1-3
    name: str  # [site] name
    flag: str
    transport: str  # "http" (smart HTTP) or "ssh" (deploy key)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = self.lab.root / self.slug
        self.public_url = f"https://{self.name}.example.com"
        self.ghost_unit = ghost_unit_name(self.name)
        if self.lab.cli_kit is not None:  # one Ghost-CLI instance per site: its own name
            self.public_url = f"https://{self.slug}.example.com"
            self.ghost_unit = ghost_unit_name(self.slug)
        self.state_dir = self.dir / "state"
        self.releases_dir = self.state_dir / "releases"
        self.config_path = self.dir / "agent.toml"
        self.webhook_path = f"/services/T0E2E/B{self.slug.upper().replace('-', '')}/" \
                            "s3cr3tWebhookPart0123"
        self.remote = GitRemote(self.lab.http_root, name=self.slug, work_dir=self.dir / "work")
        self.pushes: list[Pushed] = []
        self.started_at = time.time()

    # -- paths and URLs
    @property
    def remote_url(self) -> str:
        if self.transport == "ssh":
            return f"ssh://root@127.0.0.1:{SSH_PORT}{self.remote.path}"
        return self.lab.git_http.repo_url(f"{self.slug}.git")

    @property
    def theme_dir(self) -> Path:
        """[deploy] path: content/themes/acme."""
        return self.site["theme_dir"]

    @property
    def hand_installed(self) -> Path:
        """The theme installed by hand: content/themes/acme itself (adopt, the default), or the
        directory outside content/ that the live symlink points at (adopt=False)."""
        if self.settings.get("adopt", True):
            return self.theme_dir
        return self.dir / "site" / f"{THEME}-hand-installed"

    @property
    def g(self) -> Guest:
        return self.lab.g

    # -- set up
    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.transport == "ssh":
            self.lab.start_sshd()
        if self.lab.cli_kit is not None:
            self._install_ghost_with_cli()
        else:
            self._lay_out_ghost()
        self.g.systemctl("start", self.ghost_unit)
        self.wait_footer(self.footer(0), timeout=120)
        self.state_dir.mkdir(mode=0o755)
        # The Slack webhook, a secret: where the hardened unit takes it from, the systemd
        # credential store (LoadCredential=); for a unit that runs as root, a 0600 file.
        webhook = self.lab.slack.webhook_url(self.webhook_path) + "\n"
        if self.lab.agent_user != "root":
            self.webhook_file = Path(CREDSTORE_WEBHOOK)
            self.g.write_file(CREDSTORE_WEBHOOK, webhook, 0o600)
        else:
            self.webhook_file = self.dir / "slack-webhook-url"
            self.webhook_file.write_text(webhook)
            self.webhook_file.chmod(0o600)
        if self.settings.get("admin_key"):  # the agent's credential, as an operator gives it
            if self.lab.agent_user != "root":
                self.admin_key_file = Path(CREDSTORE_ADMIN_KEY)
                self.g.write_file(CREDSTORE_ADMIN_KEY, self.admin_key + "\n", 0o600)
            else:
                self.admin_key_file = self.dir / "ghost-admin-api-key"
                self.admin_key_file.write_text(self.admin_key + "\n")
                self.admin_key_file.chmod(0o600)
        self.write_config()
        self.install()

    def _lay_out_ghost(self) -> None:
        """Ghost's site as Ghost-CLI lays it out (write_site), with a database made once per
        session, the theme installed by hand and the unit written here."""
        kit = self.lab.kit
        self.site = write_site(self.dir / "site", kit.ghost_dir, url=self.public_url,
                               port=GHOST_PORT, theme_name=THEME)
        shutil.copy2(kit.template_db, self.site["db"])
        self._prepare_content(self.site)
        self.g.install_unit(self.ghost_unit, ghost_unit(f"{self.name}-example-com",
                                                        kit.ghost_dir, self.site["root"],
                                                        user=GHOST_USER))

    def _install_ghost_with_cli(self) -> None:
        """`ghost install` by Ghost-CLI inside the guest at /var/www/<slug>; then, with Ghost
        stopped, the theme installed by hand as on a real site. self.site holds the guest's
        paths (what the agent's config names); the host reaches them under lab.www."""
        lab = self.lab
        assert lab.cli_kit is not None
        inst = install_with_ghost_cli(self.g, lab.cli_kit, lab.www, site=self.slug,
                                      url=self.public_url)
        log(f"{self.slug}: ghost install {inst.seconds:.1f} s (store copy "
            f"{inst.copy_seconds:.1f} s), unit {inst.unit}")
        assert inst.unit == self.ghost_unit, inst.unit
        self.g.systemctl("stop", self.ghost_unit, timeout=60)
        root = Path(inst.site_dir)
        content = root / "content"
        self.site = {"root": root, "content": content, "theme_dir": content / "themes" / THEME,
                     "db": content / "data" / "ghost.db", "url": self.public_url}
        on_host = {key: lab.www / value.relative_to("/var/www") if isinstance(value, Path)
                   else value for key, value in self.site.items()}
        self._prepare_content(on_host)

    def _prepare_content(self, paths: dict) -> None:
        """The theme installed by hand and activated once before the agent takes over, the
        Admin API key (settings admin_key), and Ghost-CLI's ownership of content/.
        paths: the site's paths as this process reaches them."""
        kit = self.lab.kit
        if self.settings.get("adopt", True):
            kit.write_theme(paths["theme_dir"], self.footer(0))
        else:  # the live symlink points outside content/ (the guest sees the same path)
            kit.write_theme(self.hand_installed, self.footer(0))
            paths["theme_dir"].symlink_to(self.hand_installed)
        activate_theme(paths["db"], THEME)
        if self.settings.get("admin_key") == "staff":
            self.admin_key = add_staff_token(paths["db"])
        elif self.settings.get("admin_key"):
            self.admin_key = add_custom_integration(paths["db"], "ghost-deploy-agent")
        own_content_as_ghost(self.g, str(self.site["content"]))

    def footer(self, n: int | str) -> str:
        return f"{self.name} footer {n}"

    def config_text(self, **over: Any) -> str:
        s = {"poll_seconds": POLL_SECONDS, "verify_seconds": VERIFY_SECONDS, "build": "[]",
             "keep": 5, "window": "", "extra": "", "slack": True, "adopt": True,
             **self.settings, **over}
        ssh_key = f'ssh_key = "{self.lab.deploy_key}"\n' if self.transport == "ssh" else ""
        from_file = "" if self.lab.agent_user != "root" else \
            f'webhook_url_file = "{self.webhook_file}"\n'
        if s.get("admin_key") and self.lab.agent_user == "root":
            s["ghost_extra"] = (f'admin_api_key_file = "{self.admin_key_file}"\n'
                                + s.get("ghost_extra", ""))
        slack = ("[slack]\n" + from_file + "timeout_seconds = 5\n") if s["slack"] else ""
        return textwrap.dedent(f"""\
            [site]
            name = "{self.name}"
            flag = "{self.flag}"
            public_url = "{self.public_url}"
            local_url = "{LOCAL_URL}"
            content_dir = "{self.site['content']}"

            [agent]
            state_dir = "{self.state_dir}"

            [git]
            remote = "{self.remote_url}"
            poll_seconds = {s['poll_seconds']}
            timeout_seconds = 30
            """) + ssh_key + textwrap.dedent(f"""
            [deploy]
            path = "{self.theme_dir}"
            releases_dir = "{self.releases_dir}"
            keep = {s['keep']}
            build = {s['build']}
            build_timeout_seconds = 120
            {s.get('deploy_extra', '')}

            [ghost]
            unit = "{self.ghost_unit}"
            restart_timeout_seconds = 60
            verify_seconds = {s['verify_seconds']}
            journal_lines = 30
            {s.get('ghost_extra', '')}

            [[checks]]
            name = "home"
            url = "{{local_url}}/"
            status = 200
            contains = '{FOOTER_MARK}'
            timeout_seconds = 5
            """) + s["window"] + slack + s["extra"]

    def write_config(self, text: str | None = None, **over: Any) -> None:
        self.config_path.write_text(text if text is not None else self.config_text(**over))
        self.config_path.chmod(0o640)  # group: the agent's (install_agent)

    def install(self, service_lines: list[str] | tuple[str, ...] = ()) -> None:
        readable = [self.config_path]
        if self.lab.agent_user == "root":
            readable.append(self.webhook_file)
        if self.transport == "ssh" and self.lab.deploy_key is not None:
            readable.append(self.lab.deploy_key)
        install_agent(self.g, self.lab.venv, self.config_path, service_lines,
                      owned=[self.state_dir], readable=readable)

    def agent_home(self) -> str:
        """The home directory of the agent's user inside the guest (ssh's known_hosts)."""
        entry = self.g.run(["getent", "passwd", self.lab.agent_user]).stdout.strip()
        return entry.split(":")[5]

    # -- the agent's unit
    def start_agent(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`systemctl start ghost-agent` (Type=notify: returns once the agent said READY=1)."""
        result = self.g.systemctl("start", AGENT_UNIT, check=False, timeout=90)
        if check and result.returncode != 0:
            status = self.g.systemctl("status", AGENT_UNIT, "-n", "40", check=False).stdout
            raise AssertionError(f"systemctl start {AGENT_UNIT} failed ({result.returncode}): "
                                 f"{result.stderr}\n{status}")
        return result

    def prop(self, name: str, unit: str = AGENT_UNIT) -> str:
        return self.g.systemctl("show", "-p", name, "--value", unit).stdout.strip()

    def main_pid(self) -> int:
        return int(self.prop("MainPID") or 0)

    def main_pid_of(self, unit: str) -> int:
        return int(self.prop("MainPID", unit) or 0)

    def agent_command(self, *args: str) -> str:
        """`ghost-agent --config <this site's config> ARGS` as root in the guest: stdout."""
        return self.g.run([str(self.lab.venv.ghost_agent), "--config", str(self.config_path),
                           *args]).stdout

    def n_restarts(self) -> int:
        return int(self.prop("NRestarts") or 0)

    def stop_all(self) -> None:
        """Stop the agent and Ghost; leave the files for a post-mortem."""
        g = self.g
        for unit in (AGENT_UNIT, self.ghost_unit):
            r = g.systemctl("stop", unit, check=False, timeout=60)
            if r.returncode != 0:
                g.systemctl("kill", "--signal=SIGKILL", unit, check=False)
            g.systemctl("reset-failed", unit, check=False)

    # -- git
    def push(self, branch: str, footer: str, message: str,
             files: dict[str, str | bytes | None] | None = None, base: str | None = None
             ) -> Pushed:
        """Commit the theme with `footer` (or `files`) on branch and push it to the remote."""
        content = files if files is not None else self.lab.kit.theme_text(footer)
        sha = self.remote.commit(branch, content, message, base=base)
        self.remote.push(branch)
        pushed = Pushed(sha, footer, time.time())
        self.pushes.append(pushed)
        return pushed

    # -- what Ghost serves
    def get(self, path: str) -> Response:
        return self.lab.get(path)

    def home(self) -> Response:
        return self.get("/")

    def footer_shown(self) -> str | None:
        """The footer line Ghost renders on the home page, or None when GET / is not 200."""
        r = self.home()
        if r.status != 200:
            return None
        m = re.search(r'<p class="e2e-footer">([^<]*)</p>', r.text)
        return m.group(1) if m else None

    def wait_footer(self, footer: str, timeout: float = 60, step: float = 0.1) -> float:
        """Wait until the home page shows `footer`; returns time.time() when it was seen."""
        def seen() -> float | None:
            return time.time() if self.footer_shown() == footer else None

        return wait_for(seen, timeout, f"{self.name}: home page footer {footer!r}", step)

    def ci_cd(self) -> dict:
        r = self.get("/content/files/ci-cd.json")
        assert r.status == 200, f"ci-cd.json: {r.status} {r.text[:300]}"
        return r.json()

    def ci_cd_or_none(self) -> dict | None:
        try:
            r = self.get("/content/files/ci-cd.json")
        except (OSError, http.client.HTTPException):
            return None
        if r.status != 200:
            return None
        try:
            return r.json()
        except ValueError:
            return None

    def record_for(self, commit: str, outcomes: tuple[str, ...] = ("deployed", "rolled_back",
                                                                    "failed")) -> dict | None:
        doc = self.ci_cd_or_none()
        for rec in (doc or {}).get("deploys", []):
            if rec.get("commit") == commit and rec.get("outcome") in outcomes:
                return rec
        return None

    def wait_record(self, commit: str, timeout: float = 90,
                    outcomes: tuple[str, ...] = ("deployed", "rolled_back", "failed")) -> dict:
        """Wait until ci-cd.json, as Ghost serves it, records an outcome for `commit`."""
        return wait_for(lambda: self.record_for(commit, outcomes), timeout,
                        f"{self.name}: a deploy record for {commit[:7]} in ci-cd.json", 0.25)

    def state(self) -> dict:
        path = self.state_dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def slack_texts(self) -> list[str]:
        """The text of every message the Slack stand-in got for this site's webhook."""
        texts = []
        for req in list(self.lab.slack.requests):
            if req.path == self.webhook_path and isinstance(req.body, dict):
                texts.append(json.dumps(req.body))
        return texts

    def journal(self, unit: str | None = None, since: float | None = None) -> list[JournalEntry]:
        return journal_entries(self.g, unit or AGENT_UNIT,
                               self.started_at if since is None else since)


# --------------------------------------------------------------------------- push-to-live timing


@dataclass
class ReaderProbe:
    """A reader: GET / every `every` seconds in a thread, counting the answers and keeping
    every one that was not a 200 (a refused connection counts as one). A context manager."""

    def __init__(self, site: Site, every: float = 0.02):
        self.site = site
        self.every = every
        self.answers = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status: int | str = self.site.get("/").status
            except Exception as exc:  # noqa: BLE001 - a refused connection is an answer too
                status = type(exc).__name__
            self.answers += 1
            if status != 200:
                self.failed.append(str(status))
            time.sleep(self.every)

    def __enter__(self) -> ReaderProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class PushTiming:
    """One push measured from the outside: the host's clock for the push and the first view of
    the new footer; journald's receive times of the agent's, systemd's and Ghost's lines for the
    steps in between (one clock: the guest shares the host's CLOCK_REALTIME)."""

    sha: str
    pushed: float
    detected: float  # the agent logs "deploying <branch> <sha7>"
    restart_begin: float  # systemd logs "Stopping <Ghost unit>"
    restart_end: float  # systemd logs "Started <Ghost unit>" (Type=simple: process started)
    booted: float  # Ghost logs "Ghost booted in ..."
    verified: float  # the agent logs "deployed <branch> <sha7>"
    seen: float  # the home page served by Ghost first shows the new footer (50 ms probe)
    checks_ms: list[int]

    def split(self) -> dict[str, float]:
        return {
            "detection": self.detected - self.pushed,
            "staging": self.restart_begin - self.detected,
            "restart": self.restart_end - self.restart_begin,
            "ghost_boot": self.booted - self.restart_end,
            "checks": self.verified - self.booted,
            "push_to_verified": self.verified - self.pushed,
            "push_to_live": self.seen - self.pushed,
        }


def timed_push(site: Site, branch: str, footer: str, message: str,
               files: dict[str, str | bytes | None] | None = None,
               timeout: float = 120) -> PushTiming:
    """Push, wait until Ghost serves the new footer and the record says deployed; time it."""
    pushed = site.push(branch, footer, message, files=files)
    seen = site.wait_footer(footer, timeout=timeout, step=0.05)
    record = site.wait_record(pushed.sha, timeout=timeout)
    assert record["outcome"] == "deployed", record
    short = pushed.sha[:7]
    agent = journal_entries(site.g, AGENT_UNIT, pushed.at - 1)
    ghost = journal_entries(site.g, site.ghost_unit, pushed.at - 1)
    detected = first_entry(agent, rf"^deploying {re.escape(branch)} {short}\b")
    verified = first_entry(agent, rf"^deployed {re.escape(branch)} {short}\b")
    assert detected and verified, [e.message for e in agent]
    stopping = first_entry(ghost, r"^Stopping ", detected.at)
    started = first_entry(ghost, r"^Started ", detected.at)
    booted = first_entry(ghost, r"Ghost booted in", detected.at)
    assert stopping and started and booted, [e.message for e in ghost][-40:]
    return PushTiming(pushed.sha, pushed.at, detected.at, stopping.at, started.at, booted.at,
                      verified.at, seen, [c.get("ms", 0) for c in record.get("checks", [])])


def rss_kib(guest: Guest, venv: AgentVenv, pid: int) -> int:
    """Resident set size of a guest process, read with psutil inside the guest (guest pid)."""
    out = guest.run([str(venv.python), "-c",
                     "import psutil, sys; "
                     "print(psutil.Process(int(sys.argv[1])).memory_info().rss // 1024)",
                     str(pid)]).stdout
    return int(out.strip())


# --------------------------------------------------------------------------- pytest fixtures


def require_lab() -> None:
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(f"no systemd guest on this machine: {reason}")
    if not shutil.which("node"):
        pytest.skip("node is not installed (Ghost needs it)")


@dataclass(frozen=True)
class Session:
    """What every lab of this process shares: the run directory, the agent's venv, and a
    Ghost kit per Ghost major (each made on first use)."""

    run_dir: Path
    venv: AgentVenv
    kits: dict[str, GhostKit] = field(default_factory=dict)

    @property
    def kit(self) -> GhostKit:
        return self.kit_for("5")

    def kit_for(self, major: str) -> GhostKit:
        if major not in self.kits:
            suffix = "" if major == "5" else f"-{major}"
            self.kits[major] = make_ghost_kit(self.run_dir / f"ghost-kit{suffix}", major)
        return self.kits[major]


_session: list[Session] = []


def session() -> Session:
    """Made once per process (pytest session or bench), on first use."""
    if not _session:
        run_dir = new_run_dir()
        venv = build_agent_venv(run_dir / "venv")
        _session.append(Session(run_dir, venv))
    return _session[0]


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """One guest per test module, with the Slack stand-in and the smart-HTTP git server;
    the agent's venv and Ghost's build are made once per session. Import this fixture and
    make_site into a test module to use them."""
    require_lab()
    shared = session()
    root = shared.run_dir / f"lab-{request.module.__name__.rsplit('.', 1)[-1]}"
    major = getattr(request.module, "GHOST_MAJOR", "5")  # a module may ask for Ghost 6
    # ... and for Ghost installed by Ghost-CLI inside the guest, as users install it.
    by_cli = getattr(request.module, "GHOST_INSTALL", "layout") == "ghost-cli"
    cli_kit = ensure_ghost_cli_kit(major=major) if by_cli else None
    with Lab(root, shared.venv, shared.kit_for(major), cli_kit) as the_lab:
        yield the_lab


@pytest.fixture
def make_site(lab: Lab) -> Iterator[Callable[..., Site]]:
    """make_site(name="dev1", flag=None, transport="http", **settings) -> Site; each site's
    agent and Ghost are stopped at teardown (their files stay for a post-mortem)."""
    made: list[Site] = []

    def factory(name: str = "dev1", **kwargs: Any) -> Site:
        site = lab.site(name, **kwargs)
        made.append(site)
        site.setup()
        return site

    try:
        yield factory
    finally:
        for site in made:
            with contextlib.suppress(Exception):
                # Shown by pytest only when the test failed: what the agent said.
                lines = [f"{time.strftime('%H:%M:%S', time.localtime(e.at))}"
                         f".{int(e.at * 1000) % 1000:03d} {e.message}" for e in site.journal()]
                log(f"--- {site.slug}: journal of {AGENT_UNIT} ---\n" + "\n".join(lines[-80:]))
            with contextlib.suppress(Exception):
                site.stop_all()
