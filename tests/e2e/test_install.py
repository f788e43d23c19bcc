"""The .deb, installed like on a server, in a real systemd with real dbus and polkitd.

packaging/build-deb builds the package (or $GHOST_AGENT_DEB names one already built); a guest
(tests/e2e/guest.py) gets it with `apt-get install ./…deb`. Inside the guest, laid out like
Ghost-CLI's server: the user and group `ghost`, /var/www/ghost/content owned by them (dirs
775), and a stand-in for Ghost's unit, ghost_dev1-website-com.service, that serves the live
theme path over HTTP as user ghost (another engineer runs the real-Ghost scenarios). The git
remote is a bare repository inside the guest served by `git daemon` (a path remote owned
by another user is refused by git's safe.directory check, see docs/operators.md); a Slack
stand-in on 127.0.0.1 receives the webhook, whose URL comes from /etc/credstore through
LoadCredential=.

The tests of this module run in order, each on what the previous one left: install (not
started), configure + `ghost-agent setup` + start, deploy and restart Ghost as ghost-agent
through polkit, what that user is refused, where it cannot write, manual commands through
ghost-agentctl, the unit's verify and security rating, upgrade, remove, purge.

Two things the guest needs that a real server has: /usr/sbin/policy-rc.d (this machine's,
which forbids starting services from maintainer scripts) is removed inside the guest, and `/`
is made rshared (systemd does that at boot outside containers; LoadCredential= needs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.guest import Guest, guest_supported

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GHOST_UNIT = "ghost_dev1-website-com.service"
AGENT = "ghost-agent.service"
REPO_DIR = "/srv/git/site.git"
REMOTE = "git://127.0.0.1:9418/site.git"
WORK = "/srv/git/work"
CONTENT = "/var/www/ghost/content"
LIVE = f"{CONTENT}/themes/acme"
FILES = f"{CONTENT}/files"
PORT = 2368
SLACK_PORT = 8765
SLACK_LOG = "/var/log/slack-stub/posts.jsonl"
WEBHOOK = f"http://127.0.0.1:{SLACK_PORT}/services/T000/B000/e2eSECRETwebhook"
SECURITY_LIMIT = 2.0
#: A theme build with npm, under the unit's sandbox and system-call filter, when npm is here.
NPM = shutil.which("npm", path="/usr/local/bin:/usr/bin:/bin")
BUILD = 'build = [["npm", "ci", "--omit=dev"], ["npm", "run", "build"]]' if NPM else ""
PACKAGE_JSON = json.dumps({"name": "acme", "version": "1.0.0", "private": True, "scripts": {
    "build": "node -e \"require('fs').writeFileSync('built.txt', process.version)\""}})
PACKAGE_LOCK = json.dumps({"name": "acme", "version": "1.0.0", "lockfileVersion": 3,
                           "requires": True,
                           "packages": {"": {"name": "acme", "version": "1.0.0"}}})

CONFIG = f"""\
# /etc/ghost-agent/agent.toml of dev1, as an operator writes it
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
{BUILD}

[ghost]
unit = "{GHOST_UNIT}"
restart_timeout_seconds = 30
verify_seconds = 20

[[checks]]
name = "home"
url = "{{local_url}}/"
contains = "e2e-release"

[slack]
# webhook_url: from /etc/credstore/ghost-agent.slack-webhook-url (LoadCredential=)
"""

GHOST_STANDIN = f"""\
[Unit]
Description=stand-in for Ghost (serves the live theme path)

[Service]
User=ghost
Group=ghost
ExecStart=/usr/bin/python3 -m http.server {PORT} --bind 127.0.0.1 --directory {LIVE}
"""

SLACK_STUB = """\
import http.server, json, sys
LOG = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"path": self.path, "body": body.decode()}) + "\\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


# --------------------------------------------------------------------------- helpers


def wait_for(check: Callable[[], Any], timeout: float, what: str, step: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(step)


def sh(g: Guest, script: str, check: bool = True, timeout: float = 120,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    return g.run(["/bin/sh", "-c", script], check=check, timeout=timeout, input=input)


def prop(g: Guest, unit: str, name: str) -> str:
    return g.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def as_agent_in_sandbox(g: Guest, script: str) -> subprocess.CompletedProcess[str]:
    """Run script as the user ghost-agent (its groups too) inside the running service's mount
    namespace: what the agent's own processes see and may do."""
    pid = prop(g, AGENT, "MainPID")
    assert pid not in ("", "0"), "the agent is not running"
    return g.run(["nsenter", "-t", pid, "-m", "--", "setpriv", "--reuid=ghost-agent",
                  "--regid=ghost-agent", "--init-groups", "--", "/bin/sh", "-c", script],
                 check=False)


def setup_command(g: Guest, bin_dir: str = "/usr/lib/ghost-deploy-agent/venv/bin") -> list[str]:
    """`ghost-agent setup`; `python -m agent.setup` (the same) while cli.py lacks it."""
    if g.run([f"{bin_dir}/ghost-agent", "setup", "--help"], check=False).returncode == 0:
        return [f"{bin_dir}/ghost-agent", "setup"]
    return [f"{bin_dir}/python3", "-m", "agent.setup", "--exec", f"{bin_dir}/ghost-agent"]


def ci_cd(g: Guest) -> dict:
    r = g.run(["cat", f"{FILES}/ci-cd.json"], check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def deployed(g: Guest, commit: str) -> bool:
    doc = ci_cd(g)
    return bool(doc.get("deploys")) and doc["deploys"][0]["commit"] == commit and \
        doc["deploys"][0]["outcome"] == "deployed"


def home(g: Guest) -> str:
    return g.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{PORT}/"],
                 check=False).stdout


def push_release(g: Guest, text: str) -> str:
    """Commit a release whose home page says `text` on dev1 and push it; return the commit."""
    g.write_file(f"{WORK}/index.html", f'<html><body class="e2e-release">{text}</body></html>\n')
    g.write_file(f"{WORK}/package.json", PACKAGE_JSON + "\n")
    g.write_file(f"{WORK}/package-lock.json", PACKAGE_LOCK + "\n")
    sh(g, f"""set -e
        cd {WORK}
        git add index.html package.json package-lock.json
        git -c user.name=ops -c user.email=ops@example.com commit -q -m 'B321 {text}'
        git push -q origin HEAD:dev1""")
    return sh(g, f"git -C {WORK} rev-parse HEAD").stdout.strip()


def prepare_server(g: Guest) -> None:
    """A Ghost-CLI-like server: user/group ghost, its content directory (dirs 775), the
    Ghost stand-in, another site's unit, a git daemon with the site's repository, and the
    Slack stand-in; /usr/sbin/policy-rc.d gone and `/` rshared (see the module's doc)."""
    sh(g, f"""set -e
        rm -f /usr/sbin/policy-rc.d
        mount --make-rshared /
        useradd --system --user-group --home-dir /var/www/ghost --no-create-home \
            --shell /usr/sbin/nologin ghost
        mkdir -p {CONTENT}/themes {CONTENT}/files {CONTENT}/images
        chown -R ghost:ghost {CONTENT}
        find {CONTENT} -type d -exec chmod 775 {{}} +
        useradd --system --user-group --home-dir /srv/git --no-create-home git
        mkdir -p /srv/git
        git init -q --bare -b dev1 {REPO_DIR}
        chown -R git:git {REPO_DIR}
        git init -q -b dev1 {WORK}
        git -C {WORK} remote add origin {REMOTE}
        mkdir -p /opt/slack-stub /var/log/slack-stub""")
    g.write_file("/opt/slack-stub/stub.py", SLACK_STUB)
    g.install_unit("slack-stub.service", textwrap.dedent(f"""\
        [Service]
        ExecStart=/usr/bin/python3 /opt/slack-stub/stub.py {SLACK_PORT} {SLACK_LOG}
        """))
    g.install_unit(GHOST_UNIT, GHOST_STANDIN)
    g.install_unit("git-daemon.service", textwrap.dedent("""\
        [Service]
        User=git
        ExecStart=/usr/bin/git daemon --reuseaddr --listen=127.0.0.1 --port=9418 \\
            --base-path=/srv/git --export-all --enable=receive-pack /srv/git
        """))
    g.install_unit("other-site.service", "[Service]\nExecStart=/bin/sleep infinity\n")
    g.systemctl("start", "slack-stub.service", GHOST_UNIT, "other-site.service",
                "git-daemon.service")
    wait_for(lambda: g.run(["git", "ls-remote", REMOTE], check=False).returncode == 0, 10,
             "git daemon")


# --------------------------------------------------------------------------- fixtures


_built: dict[str, Path] = {}


def build_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package: $GHOST_AGENT_DEB, else built by packaging/build-deb (once per process:
    test_deb_distros.py installs the same one)."""
    given = os.environ.get("GHOST_AGENT_DEB")
    if given:
        return Path(given).resolve()
    if "deb" in _built and _built["deb"].exists():
        return _built["deb"]
    if shutil.which("dh") is None or shutil.which("dpkg-buildpackage") is None:
        pytest.skip("debhelper/dpkg-dev not installed (tests/run installs them)")
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    done = subprocess.run([str(REPO / "packaging/build-deb"), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    debs = sorted(out.glob("ghost-deploy-agent_*.deb"))
    assert len(debs) == 1, done.stdout
    print(f"\n[install-e2e] built {debs[0].name} in {time.monotonic() - started:.1f}s, "
          f"{debs[0].stat().st_size // 1024} KiB; {done.stdout.strip().splitlines()[-1]}")
    _built["deb"] = debs[0]
    return debs[0]


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package: $GHOST_AGENT_DEB, else built now by packaging/build-deb."""
    return build_deb(tmp_path_factory)


@pytest.fixture(scope="module")
def upgrade_deb(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same package with a higher version: what an upgrade installs. Its requirements.txt
    differs (a comment), as a new version's wheels do: the upgrade builds a new virtualenv."""
    work = tmp_path_factory.mktemp("deb-upgrade")
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    text = control.read_text()
    version = re.search(r"^Version: (.+)$", text, re.M).group(1)
    control.write_text(text.replace(f"Version: {version}", f"Version: {version}+e2e1"))
    relative = "usr/share/ghost-deploy-agent/wheels/requirements.txt"
    with open(tree / relative, "a") as fh:
        fh.write("# the e2e upgrade\n")
    sums = tree / "DEBIAN/md5sums"
    digest = hashlib.md5((tree / relative).read_bytes()).hexdigest()  # noqa: S324 - dpkg's
    sums.write_text(re.sub(rf"^\w+(  {re.escape(relative)})$", rf"{digest}\1", sums.read_text(),
                           flags=re.M))
    target = work / deb.name.replace(f"_{version}_", f"_{version}+e2e1_")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)],
                   check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def server(deb: Path, upgrade_deb: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """A booted guest laid out like a Ghost-CLI server, the .deb not installed yet."""
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(f"no systemd guest on this machine: {reason}")
    if not Path("/usr/lib/polkit-1/polkitd").exists():
        pytest.skip("polkitd is not installed on the host (apt-get install polkitd)")
    scratch = tmp_path_factory.mktemp("install-guest")
    g = Guest(scratch / "guest", binds=[deb.parent, upgrade_deb.parent])
    try:
        g.boot()
        prepare_server(g)
        yield g
    finally:
        g.shutdown()


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    """What one test of this module tells the next ones."""
    return {}


# --------------------------------------------------------------------------- the story


def test_lintian_reports_no_errors(deb: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed")
    done = subprocess.run(["lintian", "--allow-root", str(deb)], capture_output=True,
                          text=True, timeout=600)
    errors = [line for line in done.stdout.splitlines() if line.startswith("E: ")]
    assert not errors, done.stdout
    print(f"\n[install-e2e] lintian: {len(errors)} errors; warnings:\n" +
          "\n".join(line for line in done.stdout.splitlines() if line.startswith("W: ")))


def test_install_creates_the_user_and_does_not_start_the_agent(server: Guest, deb: Path) -> None:
    g = server
    done = g.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb)],
                 env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    assert "ghost-agent setup" in done.stdout  # the next steps are printed
    assert g.run(["ghost-agent", "--version"]).stdout.strip().startswith("ghost-agent ")
    # the agent's virtualenv, made by postinst from the wheels the package ships (the guest
    # has no network), of the system's python3
    venv = g.run(["readlink", "-f", "/usr/lib/ghost-deploy-agent/venv"]).stdout.strip()
    assert venv.startswith("/usr/lib/ghost-deploy-agent/venv-3.")
    assert g.run(["readlink", "-f", "/usr/bin/ghost-agent"]).stdout.strip() == \
        f"{venv}/bin/ghost-agent"
    assert "home = /usr/bin\n" in g.run(["cat", f"{venv}/pyvenv.cfg"]).stdout
    user = g.run(["getent", "passwd", "ghost-agent"]).stdout.strip().split(":")
    assert user[5:] == ["/var/lib/ghost-agent", "/usr/sbin/nologin"] and int(user[2]) < 1000
    assert "systemd-journal" in g.run(["id", "-nG", "ghost-agent"]).stdout.split()
    assert g.systemctl("is-enabled", AGENT, check=False).stdout.strip() == "disabled"
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() == "inactive"
    # the conffile, readable by root and the agent only
    assert g.run(["stat", "-c", "%U:%G %a", "/etc/ghost-agent/agent.toml"]).stdout.strip() == \
        "root:ghost-agent 640"
    # starting before `ghost-agent setup` is refused with a reason
    r = g.systemctl("start", AGENT, check=False)
    assert r.returncode != 0
    assert "Assertion failed" in g.systemctl("status", AGENT, check=False).stdout


def test_setup_and_start_deploy_and_restart_ghost_through_polkit(server: Guest,
                                                                  state: dict) -> None:
    g = server
    sh(g, "cat > /etc/ghost-agent/agent.toml", input=CONFIG)
    sh(g, f"""set -e
        umask 077
        mkdir -p /etc/credstore
        printf '%s\\n' '{WEBHOOK}' > /etc/credstore/ghost-agent.slack-webhook-url""")
    state["v1"] = push_release(g, "release one")
    out = g.run(setup_command(g)).stdout
    for path in ("/etc/polkit-1/rules.d/10-ghost-agent.rules",
                 "/etc/systemd/system/ghost-agent.service.d/50-setup.conf",
                 "/etc/sysusers.d/ghost-agent.conf"):
        assert f"wrote {path}" in out
    assert "/lib/systemd/system/ghost-agent.service" not in out  # the package's own
    assert "ran: systemd-sysusers" in out and "ran: systemctl daemon-reload" in out
    assert "ghost" in g.run(["id", "-nG", "ghost-agent"]).stdout.split()
    before = prop(g, GHOST_UNIT, "InvocationID")

    g.systemctl("enable", "--now", AGENT)  # Type=notify: returns once the agent is ready
    assert g.systemctl("is-active", AGENT).stdout.strip() == "active"
    wait_for(lambda: deployed(g, state["v1"]), 60, "release one deployed", on_timeout=lambda: (
        g.journal(AGENT, 60) + g.journal(GHOST_UNIT, 20)))
    assert "release one" in home(g)
    assert prop(g, GHOST_UNIT, "InvocationID") != before, "Ghost was not restarted"
    target = g.run(["readlink", LIVE]).stdout.strip()
    assert target.startswith("/var/lib/ghost-agent/releases/")
    if NPM:  # the theme's build ran in the release, as ghost-agent, inside the sandbox
        assert g.run(["cat", f"{target}/built.txt"]).stdout.startswith("v")
        assert g.run(["stat", "-c", "%U", f"{target}/built.txt"]).stdout.strip() == "ghost-agent"

    # ... by the agent, running as ghost-agent, unprivileged
    pid = prop(g, AGENT, "MainPID")
    status = g.run(["cat", f"/proc/{pid}/status"]).stdout
    uid = g.run(["id", "-u", "ghost-agent"]).stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$",
                                                                      status, re.M)
    groups = {g.run(["getent", "group", gid]).stdout.split(":")[0]
              for gid in re.search(r"^Groups:\s*(.*)$", status, re.M).group(1).split()}
    assert {"ghost", "systemd-journal"} <= groups
    # the restart went through D-Bus (the agent cannot reach systemd's private socket)
    journal = g.journal(GHOST_UNIT)
    assert "Stopping" in journal or "Stopped" in journal
    # the ci-cd files are Ghost's to serve, the agent's to write
    assert g.run(["stat", "-c", "%U %a", f"{FILES}/ci-cd.json"]).stdout.split() == \
        ["ghost-agent", "644"]
    # Slack got the deploy, the webhook URL coming from the credential store
    posts = wait_for(lambda: g.run(["cat", SLACK_LOG], check=False).stdout, 30, "a Slack post")
    assert "/services/T000/B000/e2eSECRETwebhook" in posts
    assert "e2eSECRETwebhook" not in g.journal(AGENT)
    state["first_release"] = target


def test_a_push_is_deployed_and_ghost_restarted_again(server: Guest, state: dict) -> None:
    g = server
    before = prop(g, GHOST_UNIT, "InvocationID")
    state["v2"] = push_release(g, "release two")
    wait_for(lambda: deployed(g, state["v2"]), 60, "release two deployed")
    assert "release two" in home(g)
    assert prop(g, GHOST_UNIT, "InvocationID") != before


def test_the_agent_user_may_restart_ghost_and_nothing_else(server: Guest) -> None:
    g = server
    r = as_agent_in_sandbox(g, f"systemctl restart {GHOST_UNIT}")
    assert r.returncode == 0, r.stderr
    refused = {
        "restart another unit": "systemctl restart other-site.service",
        "stop Ghost": f"systemctl stop {GHOST_UNIT}",
        "start Ghost": f"systemctl start {GHOST_UNIT}",
        "reload-or-restart Ghost": f"systemctl reload-or-restart {GHOST_UNIT}",
        "restart itself": f"systemctl restart {AGENT}",
        "restart polkit": "systemctl restart polkit.service",
        "daemon-reload": "systemctl daemon-reload",
    }
    for what, command in refused.items():
        r = as_agent_in_sandbox(g, command)
        assert r.returncode != 0, f"{what}: allowed"
        assert "Access denied" in r.stderr or "Interactive authentication required" in \
            r.stderr, f"{what}: {r.stderr}"
    # the same from a plain login of that user, outside the sandbox
    r = g.run(["runuser", "-u", "ghost-agent", "--", "systemctl", "restart",
               "other-site.service"], check=False)
    assert r.returncode != 0 and "Access denied" in r.stderr
    assert g.systemctl("is-active", "other-site.service", GHOST_UNIT).stdout.split() == \
        ["active", "active"]


def test_the_agent_cannot_write_outside_its_paths(server: Guest) -> None:
    g = server
    may = {"/var/lib/ghost-agent": "state", f"{CONTENT}/themes": "the live path's directory",
           FILES: "ci-cd files", "/var/cache/ghost-agent": "cache", "/tmp": "its private /tmp",
           "/var/tmp": "its private /var/tmp"}
    for directory, what in may.items():
        r = as_agent_in_sandbox(g, f"touch {directory}/.probe && rm {directory}/.probe")
        assert r.returncode == 0, f"{what} ({directory}): {r.stderr}"
    # group ghost may write Ghost's images directory, the sandbox forbids it: read-only
    assert "ghost" in g.run(["stat", "-c", "%G %a", f"{CONTENT}/images"]).stdout
    for directory in (f"{CONTENT}/images", CONTENT, "/etc/ghost-agent",
                      "/usr/lib/ghost-deploy-agent/venv/lib",
                      "/usr/local/bin", REPO_DIR, "/var/www"):
        r = as_agent_in_sandbox(g, f"touch {directory}/.probe")
        assert r.returncode != 0, f"{directory}: writable"
        assert "Read-only file system" in r.stderr or "Permission denied" in r.stderr, r.stderr
    r = as_agent_in_sandbox(g, f"touch {CONTENT}/images/.probe")
    assert "Read-only file system" in r.stderr, r.stderr
    for hidden in ("/root", "/home"):
        assert as_agent_in_sandbox(g, f"ls {hidden}").returncode != 0
    # but it reads Ghost's journal (the tail of a failed deploy)
    r = as_agent_in_sandbox(g, f"journalctl --no-pager -q -u {GHOST_UNIT} -n 5")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_manual_commands_through_ghost_agentctl(server: Guest, state: dict) -> None:
    g = server
    r = g.run(["ghost-agentctl", "check-config"])
    assert "ok" in r.stdout
    before = prop(g, GHOST_UNIT, "InvocationID")
    r = g.run(["ghost-agentctl", "rollback"], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "release one" in home(g)
    assert prop(g, GHOST_UNIT, "InvocationID") != before  # restarted by ghost-agent, via polkit
    assert g.run(["readlink", LIVE]).stdout.strip() == state["first_release"]
    r = g.run(["ghost-agentctl", "deploy", "--ref", "dev1"], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "release two" in home(g)
    r = g.run(["ghost-agentctl", "hold", "--reason", "e2e"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = g.run(["ghost-agentctl", "release"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # everything under the state directory stays the agent's
    r = sh(g, "find /var/lib/ghost-agent /var/cache/ghost-agent ! -user ghost-agent | head -5")
    assert r.stdout.strip() == ""
    r = g.run(["ghost-agentctl", "status", "--json"])
    assert json.loads(r.stdout)
    assert g.run(["ghost-agentctl"], check=False).returncode == 64


def test_unit_verifies_and_rates_2_or_lower(server: Guest) -> None:
    g = server
    r = g.run(["systemd-analyze", "verify", "--man=no", f"/lib/systemd/system/{AGENT}"],
              check=False)
    assert r.returncode == 0, r.stderr
    assert AGENT not in r.stderr, r.stderr
    r = g.run(["systemd-analyze", "security", "--no-pager", AGENT], check=False)
    match = re.search(r"Overall exposure level for ghost-agent\.service: (\d+\.\d+)", r.stdout)
    assert match, r.stdout + r.stderr
    score = float(match.group(1))
    print(f"\n[install-e2e] systemd-analyze security {AGENT} (with the drop-in): {score}")
    assert score <= SECURITY_LIMIT, r.stdout


def test_upgrade_keeps_config_and_state_and_restarts_the_agent(server: Guest,
                                                                upgrade_deb: Path,
                                                                state: dict) -> None:
    g = server
    config = g.run(["sha256sum", "/etc/ghost-agent/agent.toml"]).stdout
    history = len(ci_cd(g)["deploys"])
    releases = g.run(["ls", "/var/lib/ghost-agent/releases"]).stdout
    before = prop(g, AGENT, "InvocationID")
    venv = g.run(["readlink", "-f", "/usr/lib/ghost-deploy-agent/venv"]).stdout.strip()
    done = g.run(["apt-get", "install", "-y", "-q", str(upgrade_deb)],
                 env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    # a new virtualenv (other wheels), the agent restarted on it, the old one gone
    assert "make-venv: /usr/lib/ghost-deploy-agent/venv -> venv-3." in done.stdout, done.stdout
    new_venv = g.run(["readlink", "-f", "/usr/lib/ghost-deploy-agent/venv"]).stdout.strip()
    assert new_venv != venv
    assert g.run(["test", "-e", venv], check=False).returncode != 0, "old virtualenv left"
    assert "+e2e1" in g.run(["dpkg-query", "-W", "-f", "${Version}",
                             "ghost-deploy-agent"]).stdout
    wait_for(lambda: g.systemctl("is-active", AGENT, check=False).stdout.strip() == "active",
             30, "the agent back after the upgrade")
    assert prop(g, AGENT, "InvocationID") != before, "not restarted by the upgrade"
    assert g.run(["sha256sum", "/etc/ghost-agent/agent.toml"]).stdout == config
    assert g.run(["ls", "/var/lib/ghost-agent/releases"]).stdout == releases
    assert len(ci_cd(g)["deploys"]) == history
    assert g.systemctl("is-enabled", AGENT).stdout.strip() == "enabled"
    # and it still deploys
    state["v3"] = push_release(g, "release three")
    wait_for(lambda: deployed(g, state["v3"]), 60, "release three deployed")
    # configuring the same version again keeps the virtualenv
    done = g.run(["dpkg-reconfigure", "ghost-deploy-agent"],
                 env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    assert "is up to date" in done.stdout, done.stdout
    assert g.run(["readlink", "-f", "/usr/lib/ghost-deploy-agent/venv"]).stdout.strip() == \
        new_venv


def test_remove_stops_the_agent_and_keeps_config_and_state(server: Guest) -> None:
    g = server
    g.run(["apt-get", "remove", "-y", "-q", "ghost-deploy-agent"],
          env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    assert g.systemctl("is-active", AGENT, check=False).stdout.strip() != "active"
    assert g.run(["pgrep", "-u", "ghost-agent"], check=False).stdout == ""
    for path in ("/etc/ghost-agent/agent.toml", "/var/lib/ghost-agent/state.json",
                 "/etc/polkit-1/rules.d/10-ghost-agent.rules"):
        assert g.run(["test", "-e", path], check=False).returncode == 0, path
    for path in ("/usr/lib/ghost-deploy-agent", "/usr/bin/ghost-agent"):  # the virtualenv too
        assert g.run(["test", "-e", path], check=False).returncode != 0, path
    assert "release three" in home(g)  # Ghost keeps serving the live release


def test_purge_removes_state_and_generated_files(server: Guest) -> None:
    g = server
    # What setup writes for an instance ghost-agent@dev2, and secrets of every kind.
    instance_files = ["/etc/polkit-1/rules.d/10-ghost-agent-dev2.rules",
                      "/etc/systemd/system/ghost-agent@dev2.service.d/50-setup.conf",
                      "/etc/sysusers.d/ghost-agent-dev2.conf",
                      "/etc/credstore/ghost-agent.dev2.slack-webhook-url",
                      "/etc/credstore/ghost-agent.ghost-admin-api-key",
                      "/etc/credstore/ghost-agent.webhook-secret"]
    for path in instance_files:
        g.write_file(path, "as setup or an operator writes it\n", 0o600)
    g.run(["apt-get", "purge", "-y", "-q", "ghost-deploy-agent"],
          env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    for path in ("/var/lib/ghost-agent", "/var/cache/ghost-agent", "/etc/ghost-agent",
                 "/etc/polkit-1/rules.d/10-ghost-agent.rules",
                 "/etc/systemd/system/ghost-agent.service.d", "/etc/sysusers.d/ghost-agent.conf",
                 "/etc/credstore/ghost-agent.slack-webhook-url",
                 "/etc/systemd/system/ghost-agent@dev2.service.d", *instance_files):
        assert g.run(["test", "-e", path], check=False).returncode != 0, f"{path} left"
    assert g.run(["dpkg-query", "-W", "ghost-deploy-agent"], check=False).returncode != 0
    # the user stays (files it wrote into Ghost's content directory keep its uid)
    assert g.run(["getent", "passwd", "ghost-agent"], check=False).returncode == 0
    assert "ghost-agent" in g.run(["stat", "-c", "%U", f"{FILES}/ci-cd.json"]).stdout
    g.systemctl("daemon-reload")  # the manager is fine without the unit


# --------------------------------------------------------------------------- a pip install


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as a wheel, with its dependencies' wheels (the guest has no network)."""
    out = tmp_path_factory.mktemp("wheels")
    src = tmp_path_factory.mktemp("wheel-src") / "src"  # setuptools writes build/ next to it
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                           "--disable-pip-version-check", "--wheel-dir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


def test_pip_install_and_setup_make_the_same_service(guest_factory: Callable[..., Guest],
                                                     wheels: Path) -> None:
    """pip install of the wheel into /opt (the system's Python), `ghost-agent setup` renders
    the unit (ExecStart= that venv's ghost-agent), sysusers, polkit rule, drop-in and
    ghost-agentctl; the service deploys and restarts Ghost as ghost-agent."""
    g = guest_factory(binds=[wheels])
    prepare_server(g)
    sh(g, f"""set -e
        /usr/bin/python3 -m venv /opt/ghost-agent
        /opt/ghost-agent/bin/pip install --quiet --no-index --find-links {wheels} \
            ghost-deploy-agent""", timeout=300)
    assert g.run(["/opt/ghost-agent/bin/ghost-agent", "--version"]).returncode == 0
    sh(g, "mkdir -p /etc/ghost-agent && cat > /etc/ghost-agent/agent.toml", input=CONFIG)
    sh(g, f"umask 077 && mkdir -p /etc/credstore && printf '%s\\n' '{WEBHOOK}' "
          "> /etc/credstore/ghost-agent.slack-webhook-url")
    commit = push_release(g, "pip release")
    setup = setup_command(g, "/opt/ghost-agent/bin")
    out = g.run(setup).stdout
    for path in ("/etc/systemd/system/ghost-agent.service", "/usr/local/sbin/ghost-agentctl",
                 "/etc/sysusers.d/ghost-agent.conf", "/etc/polkit-1/rules.d/10-ghost-agent.rules",
                 "/etc/systemd/system/ghost-agent.service.d/50-setup.conf"):
        assert f"wrote {path}" in out, out
    unit = g.run(["cat", "/etc/systemd/system/ghost-agent.service"]).stdout
    assert "\nExecStart=/opt/ghost-agent/bin/ghost-agent run\n" in unit
    assert {"ghost", "systemd-journal"} <= set(g.run(["id", "-nG", "ghost-agent"]).stdout.split())
    g.run(["chgrp", "ghost-agent", "/etc/ghost-agent/agent.toml"])
    g.run(["chmod", "640", "/etc/ghost-agent/agent.toml"])
    # a second run changes nothing
    assert "wrote" not in g.run(setup).stdout
    g.systemctl("enable", "--now", AGENT)
    wait_for(lambda: deployed(g, commit), 60, "the pip install's first deploy",
             on_timeout=lambda: g.journal(AGENT, 60))
    assert "pip release" in home(g)
    r = g.run(["systemd-analyze", "security", "--no-pager", AGENT], check=False)
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout).group(1))
    assert score <= SECURITY_LIMIT
    assert g.run(["systemd-analyze", "verify", "--man=no",
                  "/etc/systemd/system/ghost-agent.service"], check=False).returncode == 0
    assert "ok" in g.run(["/usr/local/sbin/ghost-agentctl", "check-config"]).stdout
