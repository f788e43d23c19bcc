"""The Ansible role packaging/ansible (issue #14) on a real systemd guest, over real ssh.

ansible-core from PyPI (the `test` extras) runs site.yml against a guest laid out like a
Ghost-CLI server with two real Ghost sites, blog and shop, on one host of the group dev1
(tests/e2e/ansible_lab.py): the first run installs the agent with pip from a wheelhouse of
this checkout, writes both sites' configs and secrets, runs `ghost-agent setup --instance`,
and the agents ghost-agent@blog and ghost-agent@shop deploy the pushed commit; a second run
changes nothing, `--check --diff` neither; a changed variable of shop changes shop's config
only and restarts shop's agent only. fleet.yml then installs the morning report's timer on
the same host, whose service reads both sites' ci-cd.json.

The tests of this module run in order, each on what the previous one left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.ansible_lab import (ANSIBLE_DIR, BRANCH, REMOTE, SLACK_LOG, Controller, SiteSpec,
                                   build_wheelhouse, env_without_ansible_config, prepare_server,
                                   push_release, wait_for)
from tests.e2e.agent_host import FOOTER_MARK, make_ghost_kit
from tests.e2e.guest import Guest, guest_supported
from tests.e2e.test_install import build_deb

pytestmark = pytest.mark.e2e

HOST = "ghost-e2e"
SITES = [SiteSpec("blog", 2368), SiteSpec("shop", 2369)]
FLEET_OUT = "/var/www/fleet"
TIMES: dict[str, float] = {}


def site_vars(site: SiteSpec, poll_seconds: float = 1) -> dict[str, Any]:
    """ghost_agent_sites[<site>] as an operator writes it in the inventory."""
    return {
        "site": {"public_url": site.url, "local_url": site.url, "content_dir": site.content},
        "git": {"remote": REMOTE, "poll_seconds": poll_seconds},
        "deploy": {"path": site.live, "keep": 3},
        "ghost": {"unit": site.ghost_unit, "restart_timeout_seconds": 30,
                  "verify_seconds": 20},
        "checks": [{"name": "home", "url": "{local_url}/", "contains": FOOTER_MARK}],
        "slack": {},
        "secrets": {"slack-webhook-url": site.webhook},
    }


def write_inventory(path: Path, controller: Controller, wheels: Path,
                    shop_poll: float = 1, deb: Path | None = None,
                    absent: tuple[str, ...] = ()) -> Path:
    """The four groups of inventory.example.yml; this host in dev1 with two sites (but those
    `absent`, listed in ghost_agent_sites_absent), and the fleet's control host too; the
    agent from the wheelhouse, or the .deb `deb`. JSON is YAML."""
    sites = {s.name: site_vars(s, shop_poll if s.name == "shop" else 1) for s in SITES
             if s.name not in absent}
    install = {"ghost_agent_install_method": "deb", "ghost_agent_deb": str(deb)} if deb \
        else {"ghost_agent_pip_wheels": str(wheels)}
    if absent:
        install["ghost_agent_sites_absent"] = list(absent)
    inventory = {"all": {"children": {
        "ghost_sites": {"children": {
            "dev1": {"vars": {"ghost_agent_flag": "dev1"},
                     "hosts": {HOST: {**controller.host_vars(), **install,
                                      "ghost_agent_sites": sites}}},
            "staging1": {"vars": {"ghost_agent_flag": "staging1*"}, "hosts": {}},
            "prod": {"vars": {"ghost_agent_window": {"start": "03:30", "minutes": 60,
                                                     "timezone": "Europe/Paris",
                                                     "spread_minutes": 20}},
                     "children": {
                         "prod_asterix": {"vars": {"ghost_agent_flag": "prod-asterix*"},
                                          "hosts": {}},
                         "prod_bento": {"vars": {"ghost_agent_flag": "prod-bento*"},
                                        "hosts": {}}}},
        }},
        "fleet_control": {"hosts": {HOST: {"ghost_agent_pip_wheels": str(wheels),
                                           "ghost_agent_fleet_out_dir": FLEET_OUT,
                                           # two reading processes, under the unit's sandbox
                                           "ghost_agent_fleet_processes": 2}}},
    }}}
    path.write_text(json.dumps(inventory, indent=2) + "\n")
    return path


def prop(g: Guest, unit: str, name: str) -> str:
    return g.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def sha(g: Guest, path: str) -> str:
    return g.run(["sha256sum", path]).stdout.split()[0]


def ci_cd(g: Guest, site: SiteSpec) -> dict:
    r = g.run(["cat", f"{site.files}/ci-cd.json"], check=False)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}


def deployed(g: Guest, site: SiteSpec, commit: str) -> bool:
    deploys = ci_cd(g, site).get("deploys") or []
    return bool(deploys) and deploys[0]["commit"] == commit and \
        deploys[0]["outcome"] == "deployed"


def home(g: Guest, site: SiteSpec) -> str:
    return g.run(["curl", "-sS", "--max-time", "5", f"{site.url}/"], check=False).stdout


def agents_journal(g: Guest) -> str:
    return "\n".join(g.journal(s.agent_unit, 40) for s in SITES)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ansible_ok() -> None:
    if Controller.executable() is None:
        pytest.skip("ansible-core is not installed (the `test` extras: pip install -e '.[test]')")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    out = build_wheelhouse(tmp_path_factory.mktemp("wheels"))
    TIMES["wheelhouse"] = time.monotonic() - started
    return out


@pytest.fixture(scope="module")
def lab(ansible_ok: None, wheels: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    yield from _lab(wheels, tmp_path_factory)


def _lab(wheels: Path, tmp_path_factory: pytest.TempPathFactory,
         deb: Path | None = None) -> Iterator[dict[str, Any]]:
    """A guest with two real Ghost sites, sshd for the controller and the inventory (the
    agent from the wheelhouse, or from `deb`)."""
    ok, reason = guest_supported()
    if not ok:
        pytest.skip(f"no systemd guest on this machine: {reason}")
    if not Path("/usr/lib/polkit-1/polkitd").exists():
        pytest.skip("polkitd is not installed on the host (apt-get install polkitd)")
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed on the host")
    if not shutil.which("node"):
        pytest.skip("node is not installed (Ghost needs it)")
    work = tmp_path_factory.mktemp("ansible")
    started = time.monotonic()
    kit = make_ghost_kit(work / "ghost-kit")
    g = Guest(work / "guest", binds=[work], name="ghostagent-ansible")
    controller = None
    try:
        g.boot()
        prepare_server(g, SITES, work, kit)
        controller = Controller(g, work)
        inventory = write_inventory(work / "inventory.yml", controller, wheels, deb=deb)
        TIMES["guest"] = time.monotonic() - started
        yield {"g": g, "controller": controller, "inventory": inventory, "work": work,
               "wheels": wheels}
    finally:
        if controller is not None:
            controller.close()
        g.shutdown()
        print("\n[ansible-e2e] seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                     TIMES.items()))


# --------------------------------------------------------------------------- the story


def test_playbooks_pass_syntax_check_from_the_checkout_and_as_a_collection(
        ansible_ok: None, tmp_path: Path) -> None:
    """site.yml and fleet.yml with the example inventory; the collection builds, installs,
    and its playbooks ghost.deploy_agent.site and .fleet find its roles."""
    exe = Controller.executable()
    assert exe is not None
    env = {**env_without_ansible_config(), "ANSIBLE_HOME": str(tmp_path / "home"),
           "ANSIBLE_NOCOLOR": "1"}
    inventory = ANSIBLE_DIR / "inventory.example.yml"
    for playbook in ("site.yml", "fleet.yml"):
        r = subprocess.run([str(exe), "-i", str(inventory), str(ANSIBLE_DIR / playbook),
                            "--syntax-check"], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    galaxy = exe.parent / "ansible-galaxy"
    built = tmp_path / "built"
    r = subprocess.run([str(galaxy), "collection", "build", str(ANSIBLE_DIR), "--output-path",
                        str(built)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    tarball = next(built.glob("ghost-deploy_agent-*.tar.gz"))
    collections = tmp_path / "collections"
    r = subprocess.run([str(galaxy), "collection", "install", str(tarball), "-p",
                        str(collections)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    for playbook in ("ghost.deploy_agent.site", "ghost.deploy_agent.fleet"):
        r = subprocess.run([str(exe), "-i", str(inventory), playbook, "--syntax-check"],
                           capture_output=True, text=True, env=env, timeout=120,
                           cwd=str(tmp_path))
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(exe.parent / "ansible-doc"), "-t", "role", "-l",
                        "ghost.deploy_agent"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert "ghost.deploy_agent.ghost_agent" in r.stdout, r.stdout + r.stderr


def test_first_run_installs_the_agents_and_they_deploy(lab: dict[str, Any]) -> None:
    g, controller = lab["g"], lab["controller"]
    commit = push_release(g, "release one")
    run = controller.playbook(ANSIBLE_DIR / "site.yml", lab["inventory"])
    TIMES["first run"] = run.seconds
    assert run.rc == 0, run.explain()
    assert run.recap[HOST]["failed"] == 0 and run.recap[HOST]["changed"] > 0, run.explain()
    for site in SITES:
        wait_for(lambda site=site: deployed(g, site, commit), 90, f"{site.name} deployed",
                 on_timeout=lambda: agents_journal(g))
        assert "release one" in home(g, site)
        assert g.systemctl("is-active", site.agent_unit).stdout.strip() == "active"
        assert g.systemctl("is-enabled", site.agent_unit).stdout.strip() == "enabled"
        # each agent runs as its own user, reads its own config
        assert prop(g, site.agent_unit, "User") == f"ghost-agent-{site.name}"
        config = g.run(["cat", f"/etc/ghost-agent/{site.name}.toml"]).stdout
        assert f'name = "{site.name}"' in config and 'flag = "dev1"' in config
        assert "e2eSECRET" not in config  # secrets are never in the config
        cred = f"/etc/credstore/ghost-agent.{site.name}.slack-webhook-url"
        assert g.run(["stat", "-c", "%U %a", cred]).stdout.split() == ["root", "600"]
        assert g.run(["cat", cred]).stdout.strip() == site.webhook
    assert g.run(["stat", "-c", "%a", "/etc/credstore"]).stdout.strip() == "700"
    # the agent came from the wheelhouse into the virtualenv (the guest has no index)
    assert "Name: ghost-deploy-agent" in g.run(["/opt/ghost-agent/bin/pip", "show",
                                                  "ghost-deploy-agent"]).stdout
    # each agent got its own secret: Slack heard from both, each on its own webhook
    posts = wait_for(lambda: [json.loads(line)["path"] for line in
                              g.run(["cat", SLACK_LOG], check=False).stdout.splitlines()
                              if line.strip()], 30, "Slack posts")
    assert {f"/services/T000/B000/e2eSECRET{s.name}" for s in SITES} <= set(posts), posts
    # and no secret in the play's output
    assert "e2eSECRET" not in run.output
    print(f"\n[ansible-e2e] first run {run.seconds:.1f}s, recap {run.recap[HOST]}")


def test_second_run_changes_nothing(lab: dict[str, Any]) -> None:
    g, controller = lab["g"], lab["controller"]
    before = {s.name: prop(g, s.agent_unit, "InvocationID") for s in SITES}
    run = controller.playbook(ANSIBLE_DIR / "site.yml", lab["inventory"])
    TIMES["second run"] = run.seconds
    assert run.rc == 0, run.explain()
    assert run.recap[HOST]["changed"] == 0, "\n".join(run.changed_tasks()) + run.explain()
    assert {s.name: prop(g, s.agent_unit, "InvocationID") for s in SITES} == before
    print(f"\n[ansible-e2e] second run {run.seconds:.1f}s, recap {run.recap[HOST]}")


def test_check_diff_is_clean(lab: dict[str, Any]) -> None:
    controller = lab["controller"]
    run = controller.playbook(ANSIBLE_DIR / "site.yml", lab["inventory"], "--check", "--diff")
    TIMES["check --diff"] = run.seconds
    assert run.rc == 0, run.explain()
    assert run.recap[HOST]["changed"] == 0, "\n".join(run.changed_tasks()) + run.explain()
    assert "--- before" not in run.output, run.explain()  # no diff shown


def test_a_changed_variable_changes_that_site_only(lab: dict[str, Any]) -> None:
    g, controller = lab["g"], lab["controller"]
    blog, shop = SITES
    configs = {s.name: sha(g, f"/etc/ghost-agent/{s.name}.toml") for s in SITES}
    ids = {s.name: (prop(g, s.agent_unit, "InvocationID"),
                    prop(g, s.agent_unit, "ActiveEnterTimestampMonotonic")) for s in SITES}
    inventory = write_inventory(lab["work"] / "inventory-shop-poll.yml", controller,
                                lab["wheels"], shop_poll=2)
    # --check --diff first: it shows the one line that will change, and changes nothing
    check = controller.playbook(ANSIBLE_DIR / "site.yml", inventory, "--check", "--diff")
    assert check.rc == 0, check.explain()
    assert "-poll_seconds = 1\n+poll_seconds = 2" in check.output, check.explain()
    assert sha(g, f"/etc/ghost-agent/{shop.name}.toml") == configs[shop.name]
    run = controller.playbook(ANSIBLE_DIR / "site.yml", inventory)
    TIMES["changed-variable run"] = run.seconds
    assert run.rc == 0, run.explain()
    assert run.changed, run.explain()
    assert all(f"(item={shop.name})" in line for _, line in run.changed), \
        "\n".join(run.changed_tasks())
    tasks = {task for task, _ in run.changed}
    assert any("agent.toml" in t for t in tasks) and any("Restart" in t for t in tasks), tasks
    # shop's config changed, blog's did not
    assert sha(g, f"/etc/ghost-agent/{shop.name}.toml") != configs[shop.name]
    assert sha(g, f"/etc/ghost-agent/{blog.name}.toml") == configs[blog.name]
    assert "poll_seconds = 2" in g.run(["cat", f"/etc/ghost-agent/{shop.name}.toml"]).stdout
    # shop's agent restarted, blog's did not
    after = {s.name: (prop(g, s.agent_unit, "InvocationID"),
                      prop(g, s.agent_unit, "ActiveEnterTimestampMonotonic")) for s in SITES}
    assert after[blog.name] == ids[blog.name]
    assert after[shop.name][0] != ids[shop.name][0]
    assert int(after[shop.name][1]) > int(ids[shop.name][1])
    # both still deploy
    commit = push_release(g, "release two")
    for site in SITES:
        wait_for(lambda site=site: deployed(g, site, commit), 90, f"{site.name} deployed",
                 on_timeout=lambda: agents_journal(g))
    # and the next run is clean again
    again = controller.playbook(ANSIBLE_DIR / "site.yml", inventory)
    assert again.rc == 0 and again.recap[HOST]["changed"] == 0, \
        "\n".join(again.changed_tasks()) + again.explain()


def test_fleet_play_installs_the_morning_report(lab: dict[str, Any]) -> None:
    g, controller = lab["g"], lab["controller"]
    run = controller.playbook(ANSIBLE_DIR / "fleet.yml", lab["inventory"])
    TIMES["fleet run"] = run.seconds
    assert run.rc == 0, run.explain()
    sites = g.run(["cat", "/etc/ghost-agent/fleet-sites"]).stdout
    for site in SITES:
        assert site.url in sites
    timer = "ghost-agent-fleet.timer"
    assert g.systemctl("is-enabled", timer).stdout.strip() == "enabled"
    assert g.systemctl("is-active", timer).stdout.strip() == "active"
    calendar = prop(g, timer, "TimersCalendar")
    assert "05:00:00 Europe/Paris" in calendar, calendar
    # what the timer starts: the report of both sites
    r = g.systemctl("start", "ghost-agent-fleet.service", check=False, timeout=120)
    assert r.returncode == 0, r.stderr + g.journal("ghost-agent-fleet.service")
    report = json.loads(g.run(["cat", f"{FLEET_OUT}/ci-cd.json"]).stdout)
    text = json.dumps(report)
    for site in SITES:
        assert site.name in text, text[:2000]
    # read by a second process too (PrivateDevices, SystemCallFilter...): nothing fell back
    journal = g.journal("ghost-agent-fleet.service")
    assert f"fleet report: {len(SITES)} sites, read by 2 processes" in journal, journal
    assert "reading process" not in journal, journal
    again = controller.playbook(ANSIBLE_DIR / "fleet.yml", lab["inventory"])
    assert again.rc == 0 and again.recap[HOST]["changed"] == 0, \
        "\n".join(again.changed_tasks()) + again.explain()


def test_branch_is_the_hosts_flag(lab: dict[str, Any]) -> None:
    """The flag came from the group: both agents follow dev1 (status names it)."""
    g = lab["g"]
    for site in SITES:
        r = g.run(["/usr/local/sbin/ghost-agentctl", "--instance", site.name, "status",
                   "--json"], check=False, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert BRANCH in r.stdout


def test_a_password_in_a_remote_is_refused_before_anything_changes(lab: dict[str, Any]
                                                                   ) -> None:
    """The config is world-readable and shown by --diff: a token in an https remote must go
    to secrets.git-credentials instead; the role stops at its checks."""
    g, controller, work = lab["g"], lab["controller"], lab["work"]
    before = sha(g, "/etc/ghost-agent/shop.toml")
    inventory = write_inventory(work / "inventory-token.yml", controller, lab["wheels"])
    text = inventory.read_text().replace(f'"remote": "{REMOTE}"',
                                         '"remote": "https://ops:s3cretT0ken@git.example/x.git"',
                                         1)
    inventory.write_text(text)
    run = controller.playbook(ANSIBLE_DIR / "site.yml", inventory)
    assert run.rc != 0 and "nor a password in git.remote" in run.output, run.explain()
    assert "s3cretT0ken" not in run.output
    assert run.recap[HOST]["changed"] == 0
    assert sha(g, "/etc/ghost-agent/shop.toml") == before


def test_a_site_removed_from_the_host_loses_its_agent_and_its_rights(lab: dict[str, Any]
                                                                     ) -> None:
    """shop moves to ghost_agent_sites_absent: its agent stops, is disabled, and its config,
    secrets, polkit rule, drop-in and sysusers entry go; its user may no longer restart
    shop's Ghost. blog's agent is not touched. A second run changes nothing."""
    g, controller = lab["g"], lab["controller"]
    blog, shop = SITES
    as_shop = ["runuser", "-u", f"ghost-agent-{shop.name}", "--", "systemctl", "restart",
               shop.ghost_unit]
    assert g.run(as_shop, check=False).returncode == 0  # its right, so far
    blog_id = prop(g, blog.agent_unit, "InvocationID")
    inventory = write_inventory(lab["work"] / "inventory-no-shop.yml", controller,
                                lab["wheels"], absent=(shop.name,))
    run = controller.playbook(ANSIBLE_DIR / "site.yml", inventory)
    assert run.rc == 0, run.explain()
    assert g.systemctl("is-active", shop.agent_unit, check=False).stdout.strip() == "inactive"
    assert g.systemctl("is-enabled", shop.agent_unit, check=False).stdout.strip() == "disabled"
    for path in (f"/etc/ghost-agent/{shop.name}.toml",
                 f"/etc/credstore/ghost-agent.{shop.name}.slack-webhook-url",
                 f"/etc/polkit-1/rules.d/10-ghost-agent-{shop.name}.rules",
                 f"/etc/systemd/system/ghost-agent@{shop.name}.service.d/50-setup.conf",
                 f"/etc/sysusers.d/ghost-agent-{shop.name}.conf"):
        assert g.run(["test", "-e", path], check=False).returncode != 0, f"{path} left"
    shop_ghost = prop(g, shop.ghost_unit, "InvocationID")
    denied = g.run(as_shop, check=False)  # no rule: polkit asks for an admin, whom nobody is
    assert denied.returncode != 0, denied.stderr
    assert "Interactive authentication required" in denied.stderr, denied.stderr
    assert prop(g, shop.ghost_unit, "InvocationID") == shop_ghost
    assert g.run(["test", "-e", f"/etc/polkit-1/rules.d/10-ghost-agent-{blog.name}.rules"],
                 check=False).returncode == 0
    assert prop(g, blog.agent_unit, "InvocationID") == blog_id
    assert g.systemctl("is-active", blog.agent_unit).stdout.strip() == "active"
    again = controller.playbook(ANSIBLE_DIR / "site.yml", inventory)
    assert again.rc == 0 and again.recap[HOST]["changed"] == 0, \
        "\n".join(again.changed_tasks()) + again.explain()


# --------------------------------------------------------------------------- the .deb way


@pytest.fixture(scope="module")
def deb_lab(ansible_ok: None, wheels: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    deb = build_deb(tmp_path_factory)
    yield from _lab(wheels, tmp_path_factory, deb=deb)


def test_the_deb_way_installs_the_package_and_the_agents_deploy(deb_lab: dict[str, Any]
                                                                 ) -> None:
    """ghost_agent_install_method: deb: the package from the controller, installed by apt
    (its virtualenv built offline at install); then the same sites, agents and checks."""
    g, controller = deb_lab["g"], deb_lab["controller"]
    commit = push_release(g, "release one from the package")
    run = controller.playbook(ANSIBLE_DIR / "site.yml", deb_lab["inventory"])
    TIMES["first run, .deb"] = run.seconds
    assert run.rc == 0, run.explain()
    status = g.run(["dpkg-query", "-W", "-f", "${Status}", "ghost-deploy-agent"]).stdout
    assert status == "install ok installed", status
    assert g.run(["readlink", "-f", "/usr/bin/ghost-agent"]).stdout.startswith(
        "/usr/lib/ghost-deploy-agent/venv")
    assert g.run(["test", "-e", "/opt/ghost-agent"], check=False).returncode != 0  # not pip
    for site in SITES:
        wait_for(lambda site=site: deployed(g, site, commit), 90, f"{site.name} deployed",
                 on_timeout=lambda: agents_journal(g))
        assert "release one from the package" in home(g, site)
        unit_file = prop(g, site.agent_unit, "FragmentPath")
        assert unit_file == "/lib/systemd/system/ghost-agent@.service", unit_file
    again = controller.playbook(ANSIBLE_DIR / "site.yml", deb_lab["inventory"])
    assert again.rc == 0 and again.recap[HOST]["changed"] == 0, \
        "\n".join(again.changed_tasks()) + again.explain()
