"""Several sites on one server: ghost-agent@dev1 and ghost-agent@dev2 in a real systemd, with
real dbus and polkitd, each set up by `ghost-agent setup --instance SITE` from a pip install.

One guest for the module, a server with two real Ghost sites laid out as Ghost-CLI does
(tests/e2e/ghost.write_site): /var/www/dev1 and /var/www/dev2 (content owned by ghost:ghost,
dirs 775), each with its own Ghost 5 under its own unit, ghost_dev1-website-com.service on
:2368 and ghost_dev2-website-com.service on :2369, serving the test theme (a footer line names
the release). One git repository, served by `git daemon`, holds both sites' branches; a Slack
stand-in records the posts, each instance finding its webhook URL in its own credential
/etc/credstore/ghost-agent.<site>.slack-webhook-url.

The tests run in order on what the previous one left.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_host import FOOTER_MARK, make_ghost_kit, own_content_as_ghost, push_theme
from tests.e2e.ghost import HTTPS_HEADERS, ghost_unit
from tests.e2e.guest import Guest, guest_supported
from tests.e2e.test_install import SLACK_STUB, prop, sh, wait_for, wheels  # noqa: F401

pytestmark = pytest.mark.e2e

SITES = {"dev1": 2368, "dev2": 2369}  # site (= instance = branch) -> its Ghost's port
REMOTE = "git://127.0.0.1:9418/site.git"
VENV = "/opt/ghost-agent"
SLACK_PORT = 8765
SLACK_LOG = "/var/log/slack-stub/posts.jsonl"
SECURITY_LIMIT = 2.0
#: What the module's fixture made on the host: "kit" (GhostKit), "work" (the clones' parent,
#: bound into the guest at the same path: the theme's files are written there from here).
_made: dict = {}


def unit(site: str) -> str:
    return f"ghost-agent@{site}.service"


def ghost(site: str) -> str:
    return f"ghost_{site}-website-com.service"


def user(site: str) -> str:
    return f"ghost-agent-{site}"


def live(site: str) -> str:
    return f"/var/www/{site}/content/themes/acme"


def files(site: str) -> str:
    return f"/var/www/{site}/content/files"


def webhook(site: str) -> str:
    return f"http://127.0.0.1:{SLACK_PORT}/services/T000/B000/{site}SECRETwebhook"


def config(site: str) -> str:
    return textwrap.dedent(f"""\
        # /etc/ghost-agent/{site}.toml: no [agent] state_dir, the instance's is taken
        [site]
        name = "{site}"
        flag = "{site}"
        public_url = "https://{site}.website.com"
        local_url = "http://127.0.0.1:{SITES[site]}"
        content_dir = "/var/www/{site}/content"

        [git]
        remote = "{REMOTE}"
        poll_seconds = 1

        [deploy]
        path = "{live(site)}"
        keep = 3

        [ghost]
        unit = "{ghost(site)}"
        restart_timeout_seconds = 30
        verify_seconds = 20

        [[checks]]
        name = "home"
        url = "{{local_url}}/"
        contains = '{FOOTER_MARK}'

        [slack]
        # webhook_url: /etc/credstore/ghost-agent.{site}.slack-webhook-url (LoadCredential=)
        """)


# --------------------------------------------------------------------------- helpers


def ci_cd(g: Guest, site: str) -> str:
    return g.run(["cat", f"{files(site)}/ci-cd.json"], check=False).stdout


def deployed(g: Guest, site: str, commit: str) -> bool:
    text = ci_cd(g, site)
    deploys = json.loads(text)["deploys"] if text else []
    return bool(deploys) and deploys[0]["commit"] == commit and \
        deploys[0]["outcome"] == "deployed"


def home(g: Guest, site: str) -> str:
    """GET / of the site's Ghost, as the public https site (Ghost redirects plain http)."""
    header = "{}: {}".format(*next(iter(HTTPS_HEADERS.items())))
    return g.run(["curl", "-sS", "--max-time", "5", "-H", header,
                  f"http://127.0.0.1:{SITES[site]}/"], check=False).stdout


def footer(site: str, text: str) -> str:
    return f"{site}: {text}"


def push(g: Guest, site: str, text: str) -> str:
    """Commit the test theme whose footer says `site: text` on the branch `site`, push it and
    return the commit."""
    return push_theme(g, _made["kit"], _made["work"] / f"work-{site}", footer(site, text),
                      f"B321 {site} {text}", site)


def as_user(g: Guest, site: str, *argv: str):
    """argv as the instance's user, from a plain login of it (runuser), outside the sandbox."""
    return g.run(["runuser", "-u", user(site), "--", *argv], check=False)


def in_sandbox(g: Guest, site: str, script: str):
    """script as the instance's user inside its running service's mount namespace."""
    pid = prop(g, unit(site), "MainPID")
    assert pid not in ("", "0"), f"{unit(site)} is not running"
    return g.run(["nsenter", "-t", pid, "-m", "--", "setpriv", f"--reuid={user(site)}",
                  f"--regid={user(site)}", "--init-groups", "--", "/bin/sh", "-c", script],
                 check=False)


def status_blocks(g: Guest) -> dict[str, str]:
    """`systemctl status 'ghost-agent@*'`, cut into one block per unit, by unit name."""
    out = g.systemctl("status", "ghost-agent@*", check=False).stdout
    blocks: dict[str, str] = {}
    for block in re.split(r"^(?=[●○×↻] )", out, flags=re.M):
        match = re.match(r"[●○×↻] (\S+)", block)
        if match:
            blocks[match.group(1)] = block
    return blocks


def status_line(g: Guest, site: str) -> str:
    match = re.search(r'^\s*Status: "(.*)"$', status_blocks(g).get(unit(site), ""), re.M)
    return match.group(1) if match else ""


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:  # noqa: F811
    """The guest with both sites' Ghost, the git daemon, the Slack stand-in, the agent
    pip-installed in /opt/ghost-agent, both configs and credentials; no setup yet."""
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(f"no systemd guest on this machine: {reason}")
    if not shutil.which("node"):
        pytest.skip("node is not installed (Ghost needs it)")
    scratch = tmp_path_factory.mktemp("instances")
    shutil.copytree(wheels, scratch / "wheels")
    _made.update(kit=make_ghost_kit(scratch / "ghost-kit"), work=scratch / "work")
    _lay_out_sites(scratch / "www")
    g = Guest(scratch / "guest", binds=[scratch])
    try:
        g.boot()
        _prepare(g, scratch)
        yield g
    finally:
        g.shutdown()


def _lay_out_sites(www: Path) -> None:
    """Each site as Ghost-CLI lays it out (GhostKit.lay_out_site), the agent to adopt it."""
    for site, port in SITES.items():
        _made["kit"].lay_out_site(www, site, url=f"https://{site}.website.com", port=port,
                                  footer=footer(site, "installed by hand"))


def _prepare(g: Guest, scratch: Path) -> None:
    wheel_dir, work, kit = scratch / "wheels", _made["work"], _made["kit"]
    # policy-rc.d forbids starting services; LoadCredential= needs `/` shared (test_install.py)
    sh(g, f"""set -e
        rm -f /usr/sbin/policy-rc.d
        mount --make-rshared /
        mkdir -p /var/www && mount --bind {scratch / "www"} /var/www
        useradd --system --user-group --home-dir /var/www --no-create-home \
            --shell /usr/sbin/nologin ghost
        useradd --system --user-group --home-dir /srv/git --no-create-home git
        mkdir -p /srv/git /opt/slack-stub /var/log/slack-stub {work}
        git init -q --bare -b dev1 /srv/git/site.git
        chown -R git:git /srv/git/site.git
        /usr/bin/python3 -m venv {VENV}
        {VENV}/bin/pip install --quiet --no-index --find-links {wheel_dir} ghost-deploy-agent
        mkdir -p /etc/ghost-agent
        install -d -m 700 /etc/credstore""", timeout=300)
    for site in SITES:
        own_content_as_ghost(g, f"/var/www/{site}/content")
        sh(g, f"""set -e
            git init -q -b {site} {work}/work-{site}
            git -C {work}/work-{site} remote add origin {REMOTE}
            umask 077
            printf '%s\\n' '{webhook(site)}' > /etc/credstore/ghost-agent.{site}.slack-webhook-url
            """)
        g.write_file(f"/etc/ghost-agent/{site}.toml", config(site), mode=0o640)
        g.install_unit(ghost(site), ghost_unit(f"{site}-website-com", kit.ghost_dir,
                                               Path(f"/var/www/{site}"), user="ghost"))
    g.write_file("/opt/slack-stub/stub.py", SLACK_STUB)
    g.install_unit("slack-stub.service", "[Service]\nExecStart=/usr/bin/python3 "
                   f"/opt/slack-stub/stub.py {SLACK_PORT} {SLACK_LOG}\n")
    g.install_unit("git-daemon.service", textwrap.dedent("""\
        [Service]
        User=git
        ExecStart=/usr/bin/git daemon --reuseaddr --listen=127.0.0.1 --port=9418 \\
            --base-path=/srv/git --export-all --enable=receive-pack /srv/git
        """))
    g.systemctl("start", "slack-stub.service", "git-daemon.service", *map(ghost, SITES))
    wait_for(lambda: g.run(["git", "ls-remote", REMOTE], check=False).returncode == 0, 10,
             "git daemon")
    for site in SITES:
        wait_for(lambda site=site: footer(site, "installed by hand") in home(g, site), 120,
                 f"{site}'s Ghost", on_timeout=lambda site=site: g.journal(ghost(site)))


@pytest.fixture(scope="module")
def state() -> dict:
    return {}


# --------------------------------------------------------------------------- the tests


def test_setup_instance_installs_each_site_as_its_own_service(server: Guest,
                                                               state: dict) -> None:
    g = server
    for site in SITES:
        state[f"{site}-v1"] = push(g, site, "release one")
    for site in SITES:
        out = g.run([f"{VENV}/bin/ghost-agent", "setup", "--instance", site]).stdout
        for path in ("/etc/systemd/system/ghost-agent@.service",
                     "/usr/local/sbin/ghost-agentctl",
                     f"/etc/sysusers.d/ghost-agent-{site}.conf",
                     f"/etc/polkit-1/rules.d/10-ghost-agent-{site}.rules",
                     f"/etc/systemd/system/ghost-agent@{site}.service.d/50-setup.conf"):
            assert re.search(rf"^(wrote|unchanged) {re.escape(path)}:", out, re.M), out
        assert f"ran: systemd-sysusers /etc/sysusers.d/ghost-agent-{site}.conf" in out
        assert f"next: `systemctl enable --now {unit(site)}`" in out
        # its own system user, in Ghost's group and systemd-journal, at home in its state
        entry = g.run(["getent", "passwd", user(site)]).stdout.strip().split(":")
        assert entry[5:] == [f"/var/lib/ghost-agent/{site}", "/usr/sbin/nologin"], entry
        assert {"ghost", "systemd-journal"} <= set(g.run(["id", "-nG", user(site)]).stdout.split())
        g.run(["chgrp", user(site), f"/etc/ghost-agent/{site}.toml"])
        # a second run changes nothing
        again = g.run([f"{VENV}/bin/ghost-agent", "setup", "--instance", site]).stdout
        assert "wrote" not in again and "warning" not in again, again
    # the template is the only unit file; each instance has its drop-in
    unit_text = g.run(["cat", "/etc/systemd/system/ghost-agent@.service"]).stdout
    assert f"\nExecStart={VENV}/bin/ghost-agent run --config ${{GHOST_AGENT_CONFIG}}\n" in \
        unit_text
    assert g.run(["test", "-e", "/etc/systemd/system/ghost-agent.service"],
                 check=False).returncode != 0


def test_both_instances_start_and_deploy_as_their_own_users(server: Guest,
                                                            state: dict) -> None:
    g = server
    before = {site: prop(g, ghost(site), "InvocationID") for site in SITES}
    g.systemctl("enable", "--now", *map(unit, SITES))  # Type=notify: back once both are ready
    for site in SITES:
        wait_for(lambda site=site: deployed(g, site, state[f"{site}-v1"]), 60,
                 f"{site}'s first release", on_timeout=lambda site=site: g.journal(unit(site)))
        assert f"{site}: release one" in home(g, site)
        assert prop(g, ghost(site), "InvocationID") != before[site], f"{site}'s Ghost"
        # each under its own user, in its own state directory
        pid = prop(g, unit(site), "MainPID")
        uid = g.run(["id", "-u", user(site)]).stdout.strip()
        proc_status = g.run(["cat", f"/proc/{pid}/status"]).stdout
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", proc_status, re.M)
        target = g.run(["readlink", live(site)]).stdout.strip()
        assert target.startswith(f"/var/lib/ghost-agent/{site}/releases/"), target
        for name in ("state.json", "agent.lock"):
            owner = g.run(["stat", "-c", "%U", f"/var/lib/ghost-agent/{site}/{name}"])
            assert owner.stdout.strip() == user(site), name
        assert g.run(["stat", "-c", "%U", f"/var/cache/ghost-agent/{site}"]).stdout.strip() \
            == user(site)
    # nothing of either site in the single-site agent's places
    assert sorted(g.run(["ls", "/var/lib/ghost-agent"]).stdout.split()) == sorted(SITES)
    for site in SITES:
        r = g.run(["systemd-analyze", "security", "--no-pager", unit(site)], check=False)
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        assert score and float(score.group(1)) <= SECURITY_LIMIT, r.stdout + r.stderr


def test_systemctl_status_shows_each_sites_status_line(server: Guest) -> None:
    g = server
    blocks = status_blocks(g)
    assert sorted(blocks) == sorted(map(unit, SITES)), blocks
    for site in SITES:
        block = blocks[unit(site)]
        assert f"{unit(site)} - ghost-deploy-agent: pull-based deploys of the Ghost site " \
            f"{site}\n" in block
        assert "Active: active (running)" in block
        line = wait_for(lambda site=site: status_line(g, site), 10, f"{site}'s status line")
        print(f"\n[instances-e2e] {unit(site)}: Status: \"{line}\"")
        other = next(s for s in SITES if s != site)
        assert re.search(rf"\b{site}\b", line) and other not in line, line
        # and the journal tells the instances apart
        logged = g.run(["journalctl", "--no-pager", "-q", "-t", f"ghost-agent@{site}"]).stdout
        assert f"watching {site} for {site} every 1s" in logged, logged


def test_a_push_to_dev1_deploys_dev1_only(server: Guest, state: dict) -> None:
    g = server
    dev2 = {"ci_cd": ci_cd(g, "dev2"), "live": g.run(["readlink", live("dev2")]).stdout,
            "ghost": prop(g, ghost("dev2"), "InvocationID"),
            "state": g.run(["cat", "/var/lib/ghost-agent/dev2/state.json"]).stdout}
    dev1_ghost = prop(g, ghost("dev1"), "InvocationID")
    answers: list[str] = []

    def dev1_done() -> bool:
        answers.append(home(g, "dev2"))  # dev2's Ghost keeps serving all along
        return deployed(g, "dev1", state["dev1-v2"])

    state["dev1-v2"] = push(g, "dev1", "release two")
    wait_for(dev1_done, 60, "dev1's second release", on_timeout=lambda: g.journal(unit("dev1")))
    assert "dev1: release two" in home(g, "dev1")
    assert prop(g, ghost("dev1"), "InvocationID") != dev1_ghost
    time.sleep(3)  # three more polls of dev2, which sees nothing new on its branch
    answers.append(home(g, "dev2"))
    assert answers and all("dev2: release one" in a for a in answers), answers
    assert ci_cd(g, "dev2") == dev2["ci_cd"]
    assert g.run(["readlink", live("dev2")]).stdout == dev2["live"]
    assert prop(g, ghost("dev2"), "InvocationID") == dev2["ghost"], "dev2's Ghost restarted"
    after = json.loads(g.run(["cat", "/var/lib/ghost-agent/dev2/state.json"]).stdout)
    for key in ("history", "releases"):
        assert after[key] == json.loads(dev2["state"])[key], key


def test_each_instance_may_restart_its_own_ghost_only(server: Guest) -> None:
    g = server
    for site in SITES:
        other = next(s for s in SITES if s != site)
        mine, theirs = (prop(g, ghost(s), "InvocationID") for s in (site, other))
        r = as_user(g, site, "systemctl", "restart", ghost(site))
        assert r.returncode == 0, r.stderr
        assert prop(g, ghost(site), "InvocationID") != mine
        for what, command in {"restart the other site's Ghost": ["restart", ghost(other)],
                              "stop its own Ghost": ["stop", ghost(site)],
                              "restart the other instance": ["restart", unit(other)],
                              "restart itself": ["restart", unit(site)]}.items():
            r = as_user(g, site, "systemctl", *command)
            assert r.returncode != 0, f"{site}: {what}: allowed"
            assert "Access denied" in r.stderr, f"{site}: {what}: {r.stderr}"
        # the same from inside the running service's sandbox
        r = in_sandbox(g, site, f"systemctl restart {ghost(other)}")
        assert r.returncode != 0 and "Access denied" in r.stderr, r.stderr
        assert prop(g, ghost(other), "InvocationID") == theirs, f"{other}'s Ghost restarted"
    assert g.systemctl("is-active", *map(ghost, SITES), *map(unit, SITES)).stdout.split() == \
        ["active"] * 4


def test_each_instance_writes_its_own_paths_only(server: Guest) -> None:
    g = server
    for site in SITES:
        other = next(s for s in SITES if s != site)
        for directory in (f"/var/lib/ghost-agent/{site}", f"/var/www/{site}/content/themes",
                          files(site), f"/var/cache/ghost-agent/{site}"):
            r = in_sandbox(g, site, f"touch {directory}/.probe && rm {directory}/.probe")
            assert r.returncode == 0, f"{site}: {directory}: {r.stderr}"
        # group ghost could write the other site's content: the sandbox does not let it
        for directory in (f"/var/www/{other}/content/themes", files(other),
                          f"/var/lib/ghost-agent/{other}", "/var/lib/ghost-agent"):
            r = in_sandbox(g, site, f"touch {directory}/.probe")
            assert r.returncode != 0, f"{site} may write {directory}"
            assert "Read-only file system" in r.stderr or "Permission denied" in r.stderr


def test_each_instance_has_its_own_lock(server: Guest, state: dict) -> None:
    """dev1's lock held (as a long step of dev1 would): dev1 waits, dev2 deploys."""
    g = server
    lock = "/var/lib/ghost-agent/dev1/agent.lock"
    g.run(["systemd-run", "--unit=hold-dev1-lock", "--service-type=exec", "flock", lock,
           "sleep", "300"])
    try:
        state["dev1-v3"] = push(g, "dev1", "release three")
        state["dev2-v2"] = push(g, "dev2", "release two")
        wait_for(lambda: deployed(g, "dev2", state["dev2-v2"]), 60, "dev2's release two",
                 on_timeout=lambda: g.journal(unit("dev2")))
        assert "dev2: release two" in home(g, "dev2")
        wait_for(lambda: f"another ghost-agent run holds {lock}" in status_line(g, "dev1"), 30,
                 "dev1 waiting for its lock", on_timeout=lambda: status_line(g, "dev1"))
        assert not deployed(g, "dev1", state["dev1-v3"])
        assert "dev1: release two" in home(g, "dev1")
    finally:
        g.systemctl("stop", "hold-dev1-lock.service", check=False)
    wait_for(lambda: deployed(g, "dev1", state["dev1-v3"]), 60, "dev1's release three",
             on_timeout=lambda: g.journal(unit("dev1")))


def test_each_credential_reaches_its_own_instance_only(server: Guest) -> None:
    g = server
    for site in SITES:
        other = next(s for s in SITES if s != site)
        loaded = g.run(["cat", f"/run/credentials/{unit(site)}/slack-webhook-url"]).stdout
        assert loaded.strip() == webhook(site)
        r = in_sandbox(g, site, f"cat /run/credentials/{unit(other)}/slack-webhook-url")
        assert r.returncode != 0 and f"{other}SECRET" not in r.stdout
    posts = [json.loads(line) for line in
             wait_for(lambda: g.run(["cat", SLACK_LOG], check=False).stdout, 30,
                      "Slack posts").splitlines()]
    for site in SITES:
        other = next(s for s in SITES if s != site)
        mine = [p["body"] for p in posts if p["path"].endswith(f"/{site}SECRETwebhook")]
        assert mine, posts
        assert all(f"{site}.website.com" in body and f"{other}.website.com" not in body
                   for body in mine), mine
        journal = g.journal(unit(site), 500)
        assert "SECRETwebhook" not in journal


def test_ghost_agentctl_runs_manual_commands_as_the_instance(server: Guest,
                                                             state: dict) -> None:
    g = server
    for site in SITES:
        r = g.run(["ghost-agentctl", "--instance", site, "status", "--json"], check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        info = json.loads(r.stdout)
        newest = state[f"{site}-v3"] if site == "dev1" else state[f"{site}-v2"]
        assert info["live"]["commit"] == newest, info["live"]
        assert "ok" in g.run(["ghost-agentctl", "--instance", site, "check-config"]).stdout
    r = g.run(["ghost-agentctl", "--instance", "dev1", "rollback"], check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dev1: release two" in home(g, "dev1") and "dev2: release two" in home(g, "dev2")
    r = sh(g, "find /var/lib/ghost-agent/dev1 ! -user ghost-agent-dev1 | head -5")
    assert r.stdout.strip() == ""  # what ghost-agentctl wrote is the instance's
    r = g.run(["ghost-agentctl", "--instance", "Dev_1", "status"], check=False)
    assert r.returncode == 64 and "--instance 'Dev_1'" in r.stderr
