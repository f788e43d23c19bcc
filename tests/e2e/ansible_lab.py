"""The Ansible role (packaging/ansible) against a real systemd guest, over real ssh.

A guest (tests/e2e/guest.py) is laid out like a Ghost-CLI server with two sites: Ghost's
user `ghost`, each site a real Ghost 5 laid out as Ghost-CLI does (tests/e2e/ghost.write_site,
/var/www/<site>, its own port and unit, the test theme installed by hand), a git daemon
serving the sites' repository, a Slack stand-in, and sshd on 127.0.0.1:2222 taking root with
a key this module makes. The controller is this machine's ansible-playbook (the test
virtualenv's ansible-core), run in the guest's network namespace only (nsenter --net): it
reads the checkout and the inventory from the host's file system and reaches the guest's sshd
on the guest's loopback; the guest's /usr/bin/python3 runs the modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.agent_host import GhostKit, own_content_as_ghost, push_theme
from tests.e2e.ghost import ghost_unit
from tests.e2e.guest import Guest
from tests.e2e.test_install import SLACK_STUB, wait_for  # noqa: F401 - wait_for: re-exported

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "packaging" / "ansible"
SSH_PORT = 2222
SSHD_UNIT = "e2e-ansible-sshd.service"
SSHD_DIR = "/etc/ghost-agent-e2e/ansible-sshd"
GIT_PORT = 9418
REMOTE = f"git://127.0.0.1:{GIT_PORT}/site.git"
REPO_DIR = "/srv/git/site.git"
SLACK_PORT = 8765
SLACK_LOG = "/var/log/slack-stub/posts.jsonl"
BRANCH = "dev1"


@dataclass(frozen=True)
class SiteSpec:
    """One Ghost site of the guest: its name (the agent's instance) and Ghost's port."""

    name: str
    port: int

    @property
    def content(self) -> str:
        return f"/var/www/{self.name}/content"

    @property
    def live(self) -> str:
        return f"{self.content}/themes/acme"

    @property
    def files(self) -> str:
        return f"{self.content}/files"

    @property
    def ghost_unit(self) -> str:
        return f"ghost_{self.name}.service"

    @property
    def agent_unit(self) -> str:
        return f"ghost-agent@{self.name}.service"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook(self) -> str:
        """Its Slack webhook, a secret: only in /etc/credstore/ghost-agent.<site>.*."""
        return f"http://127.0.0.1:{SLACK_PORT}/services/T000/B000/e2eSECRET{self.name}"


def sh(g: Guest, script: str, timeout: float = 120, input: str | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    return g.run(["/bin/sh", "-c", script], timeout=timeout, input=input, check=check)


# --------------------------------------------------------------------------- the server


#: What prepare_server made: "kit" (the GhostKit), "work" (the site repository's clone, on
#: the host: push_release writes the theme's files there).
_server: dict = {}


def prepare_server(g: Guest, sites: list[SiteSpec], host_dir: Path, kit: GhostKit) -> None:
    """Ghost-CLI-like: user/group ghost, each site's real Ghost (laid out on the host under
    host_dir/www, which the guest mounts on /var/www; content owned by ghost, dirs 775; its
    unit), the git daemon with the sites' repository (branch dev1), the Slack stand-in; `/`
    rshared (LoadCredential= needs it, see test_install.py) and no policy-rc.d. host_dir must
    be bound into the guest at the same path."""
    www, work = host_dir / "www", host_dir / "git-work"
    _server.update(kit=kit, work=work)
    for site in sites:
        kit.lay_out_site(www, site.name, url=site.url, port=site.port,
                         footer=f"{site.name}: installed by hand")
    sh(g, f"""set -e
        rm -f /usr/sbin/policy-rc.d
        mount --make-rshared /
        mkdir -p /var/www && mount --bind {www} /var/www
        useradd --system --user-group --home-dir /var/www --no-create-home \
            --shell /usr/sbin/nologin ghost
        useradd --system --user-group --home-dir /srv/git --no-create-home git
        mkdir -p /srv/git /opt/e2e /var/log/slack-stub
        git init -q --bare -b {BRANCH} {REPO_DIR}
        chown -R git:git {REPO_DIR}
        git init -q -b {BRANCH} {work}
        git -C {work} remote add origin {REMOTE}""")
    g.write_file("/opt/e2e/slack_stub.py", SLACK_STUB)
    for site in sites:
        own_content_as_ghost(g, site.content)
        g.install_unit(site.ghost_unit, ghost_unit(site.name, kit.ghost_dir,
                                                   Path(f"/var/www/{site.name}"), user="ghost"))
    g.install_unit("slack-stub.service", textwrap.dedent(f"""\
        [Service]
        ExecStart=/usr/bin/python3 /opt/e2e/slack_stub.py {SLACK_PORT} {SLACK_LOG}
        """))
    g.install_unit("git-daemon.service", textwrap.dedent(f"""\
        [Service]
        User=git
        ExecStart=/usr/bin/git daemon --reuseaddr --listen=127.0.0.1 --port={GIT_PORT} \\
            --base-path=/srv/git --export-all --enable=receive-pack /srv/git
        """))
    g.systemctl("start", "slack-stub.service", "git-daemon.service",
                *(s.ghost_unit for s in sites))
    wait_for(lambda: g.run(["git", "ls-remote", REMOTE], check=False).returncode == 0, 15,
             "the git daemon")
    for site in sites:
        wait_for(lambda site=site: "installed by hand" in g.run(
            ["curl", "-sS", "--max-time", "5", f"{site.url}/"], check=False).stdout, 120,
            f"{site.name}'s Ghost", on_timeout=lambda site=site: g.journal(site.ghost_unit, 40))


def push_release(g: Guest, text: str) -> str:
    """Commit the test theme whose footer says `text` on dev1, push it; return the commit."""
    return push_theme(g, _server["kit"], _server["work"], text, f"B321 {text}", BRANCH)


def start_sshd(g: Guest, keys: Path) -> Path:
    """Debian's sshd as a unit inside the guest on 127.0.0.1:2222, key-only, root allowed
    with the controller's key (made here). Returns the known_hosts file for the controller."""
    for name in ("host_key", "controller_key"):
        if not (keys / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                            f"ghost-agent-ansible-e2e {name}", "-f", str(keys / name)],
                           check=True, timeout=60)
    g.write_file(f"{SSHD_DIR}/ssh_host_ed25519_key", (keys / "host_key").read_text(), 0o600)
    g.write_file(f"{SSHD_DIR}/authorized_keys", (keys / "controller_key.pub").read_text(),
                 0o600)
    g.write_file(f"{SSHD_DIR}/sshd_config", textwrap.dedent(f"""\
        Port {SSH_PORT}
        ListenAddress 127.0.0.1
        HostKey {SSHD_DIR}/ssh_host_ed25519_key
        PidFile /run/e2e-ansible-sshd.pid
        AuthorizedKeysFile {SSHD_DIR}/authorized_keys
        AuthenticationMethods publickey
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        AllowUsers root
        UsePAM no
        StrictModes yes
        X11Forwarding no
        PrintMotd no
        Subsystem sftp /usr/lib/openssh/sftp-server
        """))
    g.install_unit(SSHD_UNIT, textwrap.dedent(f"""\
        [Unit]
        Description=sshd for the Ansible controller (127.0.0.1:{SSH_PORT}, key-only)

        [Service]
        ExecStartPre=/usr/sbin/sshd -t -f {SSHD_DIR}/sshd_config
        ExecStart=/usr/sbin/sshd -D -e -f {SSHD_DIR}/sshd_config
        RuntimeDirectory=sshd
        RuntimeDirectoryMode=0755
        """))
    g.systemctl("start", SSHD_UNIT)
    wait_for(lambda: g.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{SSH_PORT}"],
                           check=False).returncode == 0, 20, "sshd in the guest")
    host_pub = (keys / "host_key.pub").read_text().split()
    known = keys / "known_hosts"
    known.write_text(f"[127.0.0.1]:{SSH_PORT} {host_pub[0]} {host_pub[1]}\n")
    return known


# --------------------------------------------------------------------------- the packages


def build_wheelhouse(dest: Path) -> Path:
    """This checkout as a wheel, with its dependencies' wheels (the guest has no network):
    what ghost_agent_pip_wheels copies to the host."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(tempfile.mkdtemp(prefix="ghost-agent-wheel-src.")) / "src"
    try:
        shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests",
            "packaging"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                               "--disable-pip-version-check", "--wheel-dir", str(dest),
                               str(src)], capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(src.parent, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed: {done.stderr[-2000:]}")
    return dest


# --------------------------------------------------------------------------- the controller


@dataclass
class PlaybookRun:
    """One ansible-playbook run: its output, exit status, time, and what it changed."""

    argv: list[str]
    rc: int
    output: str
    seconds: float
    #: per host: ok, changed, unreachable, failed, skipped, rescued, ignored
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (task name, the changed line) for every `changed:` line
    changed: list[tuple[str, str]] = field(default_factory=list)

    def changed_tasks(self) -> list[str]:
        return [f"{task}: {line}" for task, line in self.changed]

    def total(self, what: str) -> int:
        return sum(host.get(what, 0) for host in self.recap.values())

    def explain(self) -> str:
        return f"$ {' '.join(self.argv)}\n(rc {self.rc}, {self.seconds:.1f}s)\n" + \
            self.output[-12000:]


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")
_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \**$")


def parse_output(text: str) -> tuple[dict[str, dict[str, int]], list[tuple[str, str]]]:
    recap: dict[str, dict[str, int]] = {}
    changed: list[tuple[str, str]] = []
    task = ""
    in_recap = False
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        m = _TASK.match(line)
        if m:
            task = m.group(1)
            continue
        if line.startswith("changed: ["):
            changed.append((task, line))
        if in_recap:
            m = _RECAP.match(line.strip())
            if m:
                recap[m.group(1)] = {k: int(v) for k, v in
                                     (kv.split("=") for kv in m.group(2).split())}
    return recap, changed


class Controller:
    """ansible-playbook of the test's virtualenv, in the guest's network namespace."""

    def __init__(self, guest: Guest, workdir: Path) -> None:
        self.g = guest
        self.workdir = workdir
        self.keys = workdir / "ssh"
        self.keys.mkdir(parents=True, exist_ok=True)
        self.known_hosts = start_sshd(guest, self.keys)
        # ssh's ControlPath must stay under 108 bytes: a short directory of its own
        self.cp_dir = Path(tempfile.mkdtemp(prefix="ga-cp."))
        self.home = workdir / "ansible-home"
        self.home.mkdir(exist_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.cp_dir, ignore_errors=True)

    @staticmethod
    def executable() -> Path | None:
        exe = Path(sys.executable).parent / "ansible-playbook"
        return exe if exe.exists() else None

    def host_vars(self) -> dict[str, Any]:
        """How Ansible reaches the guest: real ssh to its sshd, with the test's key, checking
        the guest's host key; the guest's system python3 runs the modules."""
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": SSH_PORT,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.keys / "controller_key"),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} "
                                       "-o StrictHostKeyChecking=yes -o BatchMode=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
        }

    def playbook(self, playbook: Path, inventory: Path, *args: str,
                 timeout: float = 900) -> PlaybookRun:
        exe = self.executable()
        assert exe is not None, "ansible-core is not installed (pip install -e '.[test]')"
        argv = [str(exe), "-i", str(inventory), str(playbook), *args]
        env = {
            "PATH": f"{exe.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "ANSIBLE_HOME": str(self.home),
            "ANSIBLE_LOCAL_TEMP": str(self.home / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.cp_dir),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PIPELINING": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        started = time.monotonic()
        done = subprocess.run(
            ["nsenter", f"--net=/proc/{self.g.pid()}/ns/net", "--", *argv],
            capture_output=True, text=True, timeout=timeout, env=env, cwd=str(self.workdir))
        seconds = time.monotonic() - started
        output = done.stdout + ("\n--- stderr ---\n" + done.stderr if done.stderr else "")
        recap, changed = parse_output(done.stdout)
        return PlaybookRun(argv, done.returncode, output, seconds, recap, changed)


def env_without_ansible_config() -> dict[str, str]:
    """For the fast checks: an environment where no ansible.cfg of the caller applies."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
