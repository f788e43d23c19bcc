"""One .deb on every Debian the agent supports: installed with apt into a real Debian 12
(bookworm, python3.11) and Debian 13 (trixie, python3.13) root file system, booted with that
Debian's own systemd, and the agent run there.

Each rootfs is `debootstrap --variant=minbase` plus the package's dependencies, built once
from Debian's package registry and cached (tests/e2e/debootstrap.py); a guest
(tests/e2e/guest.py, `root=`) boots it over a throwaway overlay, in a network namespace with
only `lo`: the package's install, which builds the agent's virtualenv from the wheels it
ships, is offline. The .deb is packaging/build-deb's (or $GHOST_AGENT_DEB).

Per suite, in order on one guest: the install (the virtualenv is that Debian's python3, the
agent not started), `ghost-agent check-config` and a deploying `ghost-agentctl once` (a git
daemon remote, a stand-in for Ghost's unit restarted as ghost-agent through that Debian's
polkit), `systemctl start ghost-agent` reaching active with its STATUS line and deploying the
next push, the python3 trigger rebuilding a virtualenv of another Python, then purge.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.debootstrap import SUITES, debian_rootfs, debootstrap_supported
from tests.e2e.guest import Guest, guest_supported
from tests.e2e.test_install import (
    AGENT,
    CONTENT,
    GHOST_UNIT,
    LIVE,
    PORT,
    REMOTE,
    REPO,
    build_deb,
    deployed,
    prepare_server,
    prop,
    push_release,
    sh,
    wait_for,
)

pytestmark = pytest.mark.e2e

LIB = "/usr/lib/ghost-deploy-agent"
VENV = f"{LIB}/venv"

#: dev1's agent.toml, as in test_install.py, without a theme build (no node in a minbase
#: Debian) and without Slack.
CONFIG = f"""\
[site]
name = "dev1"
flag = "dev1"
public_url = "https://dev1.website.com"
local_url = "http://127.0.0.1:{PORT}"
content_dir = "{CONTENT}"

[git]
remote = "{REMOTE}"
poll_seconds = 1

[deploy]
path = "{LIVE}"
keep = 3

[ghost]
unit = "{GHOST_UNIT}"
restart_timeout_seconds = 30
verify_seconds = 20

[[checks]]
name = "home"
url = "{{local_url}}/"
contains = "e2e-release"
"""

#: The home page as Ghost's stand-in serves it (no curl in a minbase Debian).
HOME = ("import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:{PORT}/', timeout=5).read().decode())")


@dataclass
class Distro:
    suite: str
    python: str  # the suite's python3, major.minor
    guest: Guest
    rootfs: Path
    state: dict


def home(g: Guest) -> str:
    return g.run(["python3", "-c", HOME], check=False).stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package: $GHOST_AGENT_DEB, else packaging/build-deb's (as test_install.py's)."""
    return build_deb(tmp_path_factory)


@pytest.fixture(scope="module", params=sorted(SUITES),
                ids=lambda s: f"debian{SUITES[s]['debian']}-{s}")
def distro(request: pytest.FixtureRequest, deb: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distro]:
    """A booted guest of the suite's cached rootfs (built on first use), the .deb bound in."""
    for ok, reason in (guest_supported(), debootstrap_supported()):
        if not ok:
            pytest.skip(f"no Debian rootfs guest on this machine: {reason}")
    suite = request.param
    started = time.monotonic()
    rootfs = debian_rootfs(suite)
    took = time.monotonic() - started
    if took > 5:
        print(f"\n[deb-distros] {suite} rootfs built in {took:.0f}s: {rootfs}")
    scratch = tmp_path_factory.mktemp(f"deb-{suite}")
    g = Guest(scratch / "guest", binds=[deb.parent], root=rootfs, name=f"deb-{suite}")
    try:
        g.boot()
        yield Distro(suite, SUITES[suite]["python"], g, rootfs, {})
    finally:
        g.shutdown()


def test_apt_installs_it_offline_into_that_debians_python(distro: Distro, deb: Path) -> None:
    g = distro.guest
    release = g.run(["cat", "/etc/debian_version"]).stdout.strip()
    assert release.startswith(SUITES[distro.suite]["debian"]) or distro.suite in release
    # offline: the guest's only interface is lo, without a route anywhere
    assert g.run(["cat", "/proc/net/route"]).stdout.strip().count("\n") == 0
    done = g.run(["apt-get", "install", "-y", "-q", str(deb)],
                 env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert f"make-venv: {VENV} -> venv-{distro.python}-" in done.stdout
    assert "ghost-agent setup" in done.stdout  # the next steps are printed
    assert g.run(["ghost-agent", "--version"]).stdout.startswith("ghost-agent ")
    # the virtualenv is that Debian's python3, the agent's libraries its own, psutil Debian's
    system = g.run(["/usr/bin/python3", "-c", "import sys; print(sys.version)"]).stdout
    assert system.startswith(distro.python + ".")
    probe = ("import sys, psutil, requests, git; print(sys.version); print(sys.prefix); "
             "print(psutil.__file__); print(requests.__file__); print(git.__file__)")
    real = g.run(["readlink", "-f", VENV]).stdout.strip()
    assert real.startswith(f"{LIB}/venv-{distro.python}-")
    version, prefix, psutil_file, requests_file, git_file = g.run(
        [f"{real}/bin/python3", "-c", probe]).stdout.splitlines()
    assert version == system.strip()
    assert prefix == real
    assert psutil_file.startswith("/usr/lib/python3/dist-packages/")
    assert requests_file.startswith(f"{prefix}/lib/python{distro.python}/site-packages/")
    assert git_file.startswith(f"{prefix}/lib/python{distro.python}/site-packages/")
    cfg = g.run(["cat", f"{VENV}/pyvenv.cfg"]).stdout
    assert "home = /usr/bin\n" in cfg and "include-system-site-packages = true" in cfg
    assert g.run(["readlink", "-f", "/usr/bin/ghost-agent"]).stdout.strip() == \
        f"{prefix}/bin/ghost-agent"
    # no pip in it, only the agent's command
    assert g.run([f"{VENV}/bin/python3", "-c", "import pip"], check=False).returncode != 0
    assert sorted(g.run(["ls", f"{VENV}/bin"]).stdout.split()) == sorted(
        ["activate", "activate.csh", "activate.fish", "ghost-agent", "python", "python3",
         f"python{distro.python}"])
    # every unit of systemd/ is installed, none enabled or started
    for unit in sorted(p.name for p in (REPO / "systemd").glob("*.service")):
        assert g.run(["test", "-f", f"/lib/systemd/system/{unit}"], check=False).returncode == 0
    assert g.systemctl("is-enabled", AGENT, check=False).stdout.strip() == "disabled"
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() == "inactive"
    assert g.run(["getent", "passwd", "ghost-agent"]).stdout.split(":")[5] == \
        "/var/lib/ghost-agent"
    # configuring again changes nothing
    assert "is up to date" in g.run([f"{LIB}/make-venv"]).stdout
    distro.state["venv"] = prefix


def test_check_config_and_a_deploying_once(distro: Distro) -> None:
    g = distro.guest
    prepare_server(g)
    sh(g, "cat > /etc/ghost-agent/agent.toml", input=CONFIG)
    r = g.run(["ghost-agent", "check-config"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # a config the agent refuses: exit 78, naming the key
    bad = CONFIG.replace('flag = "dev1"', 'flag = ""')
    sh(g, "cat > /tmp/bad.toml", input=bad)
    r = g.run(["ghost-agent", "--config", "/tmp/bad.toml", "check-config"], check=False)
    assert r.returncode == 78 and "flag" in r.stdout + r.stderr, r.stdout + r.stderr

    out = g.run(["ghost-agent", "setup"]).stdout
    assert "wrote /etc/polkit-1/rules.d/10-ghost-agent.rules" in out, out
    commit = push_release(g, "release one")
    before = prop(g, GHOST_UNIT, "InvocationID")
    r = g.run(["ghost-agentctl", "once"], check=False, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr + g.journal(GHOST_UNIT, 20)
    assert deployed(g, commit)
    assert "release one" in home(g)
    # Ghost's stand-in was restarted by the user ghost-agent, through this Debian's polkit
    assert prop(g, GHOST_UNIT, "InvocationID") != before
    target = g.run(["readlink", LIVE]).stdout.strip()
    assert target.startswith("/var/lib/ghost-agent/releases/")
    assert g.run(["stat", "-c", "%U", target]).stdout.strip() == "ghost-agent"
    polkit = g.run(["dpkg-query", "-W", "-f", "${Version}", "polkitd"]).stdout
    print(f"\n[deb-distros] {distro.suite}: deployed by `ghost-agentctl once`, Ghost restarted "
          f"through polkitd {polkit}")


def test_the_service_starts_with_its_status_and_deploys(distro: Distro) -> None:
    g = distro.guest
    g.systemctl("start", AGENT)  # Type=notify: returns once the agent said READY
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() == "active"
    status = wait_for(lambda: prop(g, AGENT, "StatusText"), 30, "the STATUS= line")
    assert "dev1" in status or "live" in status or "up to date" in status, status
    pid = prop(g, AGENT, "MainPID")
    assert g.run(["ps", "-o", "user=", "-p", pid]).stdout.strip() == "ghost-agent"
    commit = push_release(g, "release two")
    wait_for(lambda: deployed(g, commit), 60, "release two deployed by the service",
             on_timeout=lambda: g.journal(AGENT, 60))
    assert "release two" in home(g)
    print(f"\n[deb-distros] {distro.suite}: {AGENT} active, STATUS={status!r}")


def test_the_python3_trigger_rebuilds_a_virtualenv_of_another_python(distro: Distro) -> None:
    """What a release upgrade (python3.11 -> python3.13) does: /usr/bin/python3 is installed
    anew, dpkg runs the package's trigger, make-venv finds the virtualenv made for another
    Python, builds one for this one, restarts the running agent on it and removes the old."""
    g = distro.guest
    old = _venv_of_an_older_python(distro)
    before = prop(g, AGENT, "InvocationID")
    g.run(["dpkg-trigger", "--no-await", "/usr/bin/python3"])
    done = g.run(["dpkg", "--triggers-only", "--pending"], timeout=300)
    _assert_rebuilt_and_restarted(distro, done.stdout, old, before)
    commit = push_release(g, "release three")
    wait_for(lambda: deployed(g, commit), 60, "release three deployed",
             on_timeout=lambda: g.journal(AGENT, 60))


def test_a_failed_rebuild_keeps_the_agent_and_says_how_to_recover(distro: Distro) -> None:
    """The trigger's rebuild fails (here: Debian's pip wheel is missing): dpkg reports the
    error with the one command that recovers, the agent keeps running on its virtualenv, and
    that command rebuilds it once the cause is gone."""
    g = distro.guest
    old = _venv_of_an_older_python(distro)
    sh(g, "mkdir -p /root/pip-away && mv /usr/share/python-wheels/pip-*.whl /root/pip-away/")
    before = prop(g, AGENT, "InvocationID")
    g.run(["dpkg-trigger", "--no-await", "/usr/bin/python3"])
    failed = g.run(["dpkg", "--triggers-only", "--pending"], check=False, timeout=300)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0, said
    assert "Once the cause is fixed: sudo dpkg --configure -a" in said, said
    assert g.run(["readlink", VENV]).stdout.strip() == Path(old).name
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() == "active"
    assert prop(g, AGENT, "InvocationID") == before
    sh(g, "mv /root/pip-away/pip-*.whl /usr/share/python-wheels/")
    done = g.run(["dpkg", "--configure", "-a"], timeout=300)
    _assert_rebuilt_and_restarted(distro, done.stdout, old, before)


def _venv_of_an_older_python(distro: Distro) -> str:
    """Make the package's virtualenv look made for another Python; returns its new path."""
    old = f"{LIB}/venv-3.0-e2eolderpython"
    sh(distro.guest, f"mv {distro.state['venv']} {old} && ln -sfn {Path(old).name} {VENV}")
    return old


def _assert_rebuilt_and_restarted(distro: Distro, said: str, old: str, before: str) -> None:
    """make-venv built this Python's virtualenv, removed `old`, and the agent (InvocationID
    `before`) was restarted on it."""
    g = distro.guest
    assert f"make-venv: {VENV} -> venv-{distro.python}-" in said, said
    assert g.run(["readlink", "-f", VENV]).stdout.strip() == distro.state["venv"]
    assert g.run(["test", "-e", old], check=False).returncode != 0, "old virtualenv left"
    wait_for(lambda: g.systemctl("is-active", AGENT, check=False).stdout.strip() == "active",
             30, "the agent back")
    assert prop(g, AGENT, "InvocationID") != before, "the agent was not restarted"


def test_purge_removes_the_virtualenv_and_the_agents_files(distro: Distro) -> None:
    g = distro.guest
    g.run(["apt-get", "purge", "-y", "-q", "ghost-deploy-agent"],
          env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() != "active"
    for path in (LIB, "/usr/bin/ghost-agent", "/usr/share/ghost-deploy-agent",
                 "/var/lib/ghost-agent", "/etc/ghost-agent",
                 "/etc/polkit-1/rules.d/10-ghost-agent.rules"):
        assert g.run(["test", "-e", path], check=False).returncode != 0, f"{path} left"
    # the ci-cd files stay Ghost's to serve
    docs = json.loads(g.run(["cat", f"{CONTENT}/files/ci-cd.json"]).stdout)
    assert re.fullmatch(r"[0-9a-f]{40}", docs["current"]["commit"])
