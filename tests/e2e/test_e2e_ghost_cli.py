"""Ghost 5 and Ghost 6 installed the way users do (#12): Ghost-CLI's `ghost install` with the
systemd process manager and sqlite3 (no nginx, ssl or mysql), run inside a guest by an operator
user with passwordless sudo, so that Ghost-CLI's own `sudo systemctl daemon-reload` / `start`
reach the guest's systemd. The unit, the layout and the users are then Ghost-CLI's own.

Ghost-CLI installs Ghost 6 with pnpm and Ghost 5 with its own yarn 1. The registry's part
(Ghost-CLI, the release archive, a pnpm store or a yarn offline mirror for its lockfile) is
fetched on the host once and cached (tests/e2e/ghost_cli.py); the guest has no network.
Both run on node 22, the kit's: Ghost-CLI 1.32.5 does not run on node 20.
On this real Ghost-CLI unit the test also checks what the agent relies on: the node Ghost
runs on (read from ExecStart) and gscan under the WorkingDirectory, which passes Ghost's own
theme and stops a broken one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service import node_of
from agent.validate import GSCAN_JS, parse
from tests.e2e.agent_host import LABS_ROOT
from tests.e2e.ghost import GHOST_BUILDS, HTTPS_HEADERS, http_get, wait_http
from tests.e2e.ghost_cli import (
    OPERATOR,
    RegistryStandIn,
    add_operator,
    as_user,
    ensure_ghost_cli_kit,
    ensure_guest_sudo,
    guest_binds,
    install_with_ghost_cli,
)

pytestmark = pytest.mark.e2e

URL = "https://dev1.example.com"
SITE = "/var/www/dev1"
UNIT = "ghost_dev1-example-com.service"


@pytest.fixture
def www() -> Iterator[Path]:
    """A host directory for the guest's /var/www (Ghost with its dependencies is ~700 MB: not
    the guest's tmpfs). Requested before guest_factory, so it is removed after the guest."""
    LABS_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="ghost-cli-www-", dir=LABS_ROOT))
    path.chmod(0o755)  # Ghost-CLI wants every directory above the site readable by others
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("major", ["5", "6"])
def test_e2e_ghost_cli_installs_ghost_under_systemd(major, www, guest_factory, request) -> None:
    version = GHOST_BUILDS[major][0]
    kit = ensure_ghost_cli_kit(major=major)
    assert kit.ghost_version == version
    # What Ghost-CLI does with each release: pnpm when it carries pnpm's lockfile (6), else
    # its own yarn (5).
    assert kit.installer == {"5": "yarn", "6": "pnpm"}[major]
    g = guest_factory(binds=[*guest_binds(kit), www], name=f"ghostagent-e2e-cli{major}")
    sudo = ensure_guest_sudo(g, kit)
    add_operator(g)  # a user with passwordless sudo: Ghost-CLI refuses root

    netns = Path(f"/proc/{g.pid()}/ns/net")
    registry = RegistryStandIn(kit, netns).start()
    request.addfinalizer(registry.stop)
    inst = install_with_ghost_cli(g, kit, www, site="dev1", url=URL)
    print(f"registry stand-in served: {registry.requests}")
    print(f"sudo: {sudo}; {inst.installer}; store copy {inst.copy_seconds:.1f} s; ghost install "
          f"{inst.seconds:.1f} s; compiled in the guest: {list(inst.compiled)}\n"
          f"{inst.output[-2500:]}")
    assert inst.unit == UNIT
    assert inst.installer == kit.installer
    # The package manager shows in the release's node_modules: pnpm leaves .pnpm there, yarn 1
    # its .yarn-integrity.
    marker = {"pnpm": ".pnpm", "yarn": ".yarn-integrity"}[kit.installer]
    g.run(["test", "-e", f"{SITE}/versions/{version}/node_modules/{marker}"])
    # Yarn has no build cache: sqlite3 and re2 took the kit's host builds as their prebuilt
    # downloads instead of compiling for minutes inside the guest.
    assert inst.compiled == (), inst.compiled

    # The layout is Ghost-CLI's: versions/<v> and `current` pointing to it.
    current = g.run(["readlink", "-f", f"{SITE}/current"]).stdout.strip()
    assert current == f"{SITE}/versions/{version}"
    cli_state = json.loads(g.run(["cat", f"{SITE}/.ghost-cli"]).stdout)
    assert cli_state["active-version"] == version
    config = json.loads(g.run(["cat", f"{SITE}/config.production.json"]).stdout)
    assert config["url"] == URL
    assert config["database"]["client"] == "sqlite3"
    assert config["process"] == "systemd"
    assert config["server"] == {"port": 2368, "host": "127.0.0.1"}

    # Its users: the `ghost` system user owns content/; the operator owns the rest.
    ghost_uid = int(g.run(["id", "-u", "ghost"]).stdout)
    assert ghost_uid < 1000  # useradd --system
    owner = g.run(["stat", "-c", "%U:%G", f"{SITE}/content", f"{SITE}/versions"]).stdout.split()
    assert owner == ["ghost:ghost", f"{OPERATOR}:{OPERATOR}"]

    # Its unit, installed in /lib/systemd/system and known to the guest's systemd.
    unit_text = g.run(["cat", f"/lib/systemd/system/{UNIT}"]).stdout
    print(unit_text)
    assert "Type=simple" in unit_text
    assert f"WorkingDirectory={SITE}" in unit_text
    assert f"User={ghost_uid}" in unit_text
    assert unit_text.rstrip().splitlines()[-1] == "WantedBy=multi-user.target"
    show = dict(line.split("=", 1) for line in g.systemctl(
        "show", UNIT, "-p", "Type,ActiveState,UnitFileState,FragmentPath,MainPID,User"
    ).stdout.splitlines())
    assert show["Type"] == "simple"
    assert show["FragmentPath"] == f"/lib/systemd/system/{UNIT}"
    assert show["ActiveState"] == "active"
    assert show["UnitFileState"] == "enabled"  # `ghost start --enable`, the default
    main_user = g.run(["ps", "-o", "user=", "-p", show["MainPID"]]).stdout.strip()
    assert main_user == "ghost"

    # Ghost answers inside the guest's network.
    ready = wait_http("http://127.0.0.1:2368/", 200, timeout=120, headers=HTTPS_HEADERS,
                      netns=netns)
    assert "<html" in ready.response.text.lower()
    print(f"first 200 after the install returned: {ready.seconds:.1f} s")
    site = http_get("http://127.0.0.1:2368/ghost/api/admin/site/", headers=HTTPS_HEADERS,
                    netns=netns).json()
    assert site["site"]["version"] == ".".join(version.split(".")[:2])

    # What the agent finds on this unit (agent/service.py, agent/validate.py): the node Ghost
    # runs on, from ExecStart, and gscan under the WorkingDirectory's `current`; that gscan,
    # run on that node as the agent runs it, passes Ghost's own theme and stops a broken one.
    # The node is the one that ran Ghost-CLI (its unit names process.execPath): the kit's.
    exec_start = g.systemctl("show", "-p", "ExecStart", "--value", UNIT).stdout
    node = node_of(exec_start)
    assert node == str(kit.node), exec_start
    assert g.run([node, "--version"]).stdout.startswith("v22."), node
    workdir = g.systemctl("show", "-p", "WorkingDirectory", "--value", UNIT).stdout.strip()
    gscan = f"{workdir}/current/node_modules/gscan"
    g.run(["test", "-f", f"{gscan}/package.json"])
    casper = f"{SITE}/content/themes/casper"
    broken = "/var/lib/gscan-check/broken"
    g.run(["mkdir", "-p", broken])
    g.run(["cp", "-rL", f"{casper}/.", broken])
    g.run(["sed", "-i", "s/{{{body}}}/{{#if @site.title}}{{{body}}}/", f"{broken}/default.hbs"])
    verdicts = {}
    for theme in (casper, broken):
        out = g.run([node, "-e", GSCAN_JS, gscan, theme], env={"TMPDIR": "/var/lib/gscan-check"},
                    timeout=120)
        verdicts[theme] = parse(out.stdout)
    assert verdicts[casper].ok, verdicts[casper].fatal
    assert [f.code for f in verdicts[broken].fatal] == ["GS005-TPL-ERR"]

    # Ghost-CLI drives it through systemd afterwards too (`ghost restart` -> sudo systemctl).
    r = as_user(g, OPERATOR, ["ghost", "restart", "--no-prompt", "--no-color"], cwd=SITE,
                env={"PATH": kit.path}, timeout=300,
                check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    again = wait_http("http://127.0.0.1:2368/", 200, timeout=120, headers=HTTPS_HEADERS,
                      netns=netns)
    print(f"ghost restart: 200 {again.seconds:.1f} s after it returned")
    ls = as_user(g, OPERATOR, ["ghost", "ls", "--no-color"], cwd=SITE,
                 env={"PATH": kit.path}, timeout=120)
    assert "dev1-example-com" in ls.stdout and "running" in ls.stdout, ls.stdout
