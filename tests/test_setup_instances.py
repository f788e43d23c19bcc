"""`ghost-agent setup --instance SITE`: one of several sites on a server, as the instance
ghost-agent@SITE.service of the template unit, with its own user, state, credentials,
polkit rule and drop-in, written under --root beside the other sites' and the single-site
agent's without touching them. ghost-agentctl --instance runs a command as that instance.

tests/e2e/test_e2e_instances.py runs two instances in a real systemd with polkit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import setup as agent_setup
from agent.config import load_config
from agent.errors import ExitCode
from agent.setup.layout import Service
from agent.setup.templates import render_dropin, render_unit
from tests.configs import MINIMAL_CONFIG
from tests.test_setup_command import EXEC, setup, tree
from tests.test_setup_templates import SECURITY_LIMIT, security_score

REPO = Path(__file__).resolve().parents[1]


def site_config(tmp_path: Path, site: str, extra: str = "") -> Path:
    """/etc/ghost-agent/<site>.toml as it would be, in tmp_path."""
    path = tmp_path / "etc-ghost-agent" / f"{site}.toml"
    path.parent.mkdir(exist_ok=True)
    port = 2368 + sum(map(ord, site)) % 1000  # each site's Ghost listens on a port of its own
    text = (MINIMAL_CONFIG.replace("dev1", site).replace("/var/www/ghost", f"/var/www/{site}")
            .replace("[site]\n", f'[site]\nlocal_url = "http://127.0.0.1:{port}"\n', 1) + extra)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def instance(site: str, config: Path, root: Path, *more: str) -> tuple[int, str, str]:
    return setup(f"--instance={site}", "--config", str(config), "--root", str(root),
                 "--exec", EXEC, *more)


# --------------------------------------------------------------------------- the files


def test_an_instance_gets_its_own_files(tmp_path: Path, root: Path) -> None:
    config = site_config(tmp_path, "dev1")
    code, out, err = instance("dev1", config, root)
    assert (code, err) == (ExitCode.OK, "")
    files = tree(root)
    assert sorted(files) == [
        "etc/polkit-1/rules.d/10-ghost-agent-dev1.rules",
        "etc/systemd/system/ghost-agent@.service",
        "etc/systemd/system/ghost-agent@dev1.service.d/50-setup.conf",
        "etc/sysusers.d/ghost-agent-dev1.conf",
        "usr/local/sbin/ghost-agentctl",
    ]
    assert files["etc/systemd/system/ghost-agent@.service"] == render_unit(EXEC, template=True)
    assert [line for line in files["etc/sysusers.d/ghost-agent-dev1.conf"].splitlines()
            if not line.startswith("#")] == [
        'u ghost-agent-dev1 - "ghost-deploy-agent for dev1" /var/lib/ghost-agent/dev1 '
        "/usr/sbin/nologin",
        "m ghost-agent-dev1 systemd-journal",
        "m ghost-agent-dev1 ghost",
    ]
    rule = files["etc/polkit-1/rules.d/10-ghost-agent-dev1.rules"]
    assert 'if (subject.user === "ghost-agent-dev1") {' in rule
    assert 'action.lookup("unit") === "ghost_dev1-website-com.service" &&' in rule
    assert "run `ghost-agent setup --instance dev1` again" in rule
    dropin = files["etc/systemd/system/ghost-agent@dev1.service.d/50-setup.conf"]
    assert [line for line in dropin.splitlines() if line and not line.startswith("#")] == [
        "[Service]",
        f"Environment=GHOST_AGENT_CONFIG={config}",  # not /etc/ghost-agent/dev1.toml: named
        "ReadWritePaths=-/var/www/dev1/content/themes",
        "ReadWritePaths=-/var/www/dev1/content/files",
    ]
    assert "systemctl edit ghost-agent@dev1`" in dropin
    assert "ran:" not in out and "--- would" not in out
    assert "ran: systemd-sysusers" not in out  # --root runs nothing
    assert "STATE_DIRECTORY" not in os.environ  # setup's own view is gone


def test_the_instances_default_config_is_its_own(tmp_path: Path, root: Path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("GHOST_AGENT_CONFIG", "/etc/ghost-agent/agent.toml")  # one site's
    code, _, err = setup("--instance", "dev1", "--root", str(root), "--exec", EXEC)
    assert code == ExitCode.CONFIG
    assert err.startswith("/etc/ghost-agent/dev1.toml: cannot read config"), err
    # and a drop-in for that path does not name it
    config = load_config(site_config(tmp_path, "dev1"))
    dropin = render_dropin(config, Path("/etc/ghost-agent/dev1.toml"), Service.instance("dev1"))
    assert "GHOST_AGENT_CONFIG" not in dropin


def test_two_instances_and_the_single_site_agent_share_nothing(tmp_path: Path,
                                                                root: Path) -> None:
    single = tmp_path / "agent.toml"
    single.write_text(MINIMAL_CONFIG, encoding="utf-8")
    assert setup("--config", str(single), "--root", str(root), "--exec", EXEC)[0] == ExitCode.OK
    first = tree(root)
    (root / "etc/nginx").mkdir()
    for site in ("dev1", "dev2"):
        code, out, err = instance(site, site_config(tmp_path, site), root)
        assert (code, err) == (ExitCode.OK, ""), out
        assert "warning: ghost-agent.service is set up on this host too" in out
    files = tree(root)
    for name, text in first.items():  # the single-site agent's files, as they were
        assert files[name] == text, name
    added = sorted(set(files) - set(first))
    assert added == [
        "etc/nginx/snippets/ghost-agent-dev1-ci-cd.conf",
        "etc/nginx/snippets/ghost-agent-dev2-ci-cd.conf",
        "etc/polkit-1/rules.d/10-ghost-agent-dev1.rules",
        "etc/polkit-1/rules.d/10-ghost-agent-dev2.rules",
        "etc/systemd/system/ghost-agent@.service",
        "etc/systemd/system/ghost-agent@dev1.service.d/50-setup.conf",
        "etc/systemd/system/ghost-agent@dev2.service.d/50-setup.conf",
        "etc/sysusers.d/ghost-agent-dev1.conf",
        "etc/sysusers.d/ghost-agent-dev2.conf",
    ]
    rule = files["etc/polkit-1/rules.d/10-ghost-agent-dev2.rules"]
    assert '"ghost-agent-dev2"' in rule and '"ghost_dev2-website-com.service"' in rule
    assert "dev1" not in rule
    snippet = files["etc/nginx/snippets/ghost-agent-dev2-ci-cd.conf"]
    assert "alias /var/www/dev2/content/files/$1;" in snippet
    assert "include /etc/nginx/snippets/ghost-agent-dev2-ci-cd.conf;" in snippet


def test_each_instance_keeps_its_own_ghost_group(tmp_path: Path, root: Path) -> None:
    dev1, dev2 = site_config(tmp_path, "dev1"), site_config(tmp_path, "dev2")
    instance("dev1", dev1, root, "--ghost-group", "www")
    instance("dev2", dev2, root)
    instance("dev1", dev1, root)  # remembers www, from its own sysusers file
    assert "m ghost-agent-dev1 www" in (root / "etc/sysusers.d/ghost-agent-dev1.conf").read_text()
    assert "m ghost-agent-dev2 ghost" in (root / "etc/sysusers.d/ghost-agent-dev2.conf").read_text()


def test_dry_run_prints_the_instance_and_writes_nothing(tmp_path: Path, root: Path) -> None:
    code, out, _ = instance("dev1", site_config(tmp_path, "dev1"), root, "--dry-run")
    assert code == ExitCode.OK and list(root.iterdir()) == []
    assert f"--- would write {root}/etc/polkit-1/rules.d/10-ghost-agent-dev1.rules" in out
    assert "--- would skip (--root): systemd-sysusers /etc/sysusers.d/ghost-agent-dev1.conf" \
        in out


def test_unit_only_writes_the_template_and_the_instances_user(root: Path) -> None:
    code, _, err = setup("--instance", "dev1", "--root", str(root), "--exec", EXEC,
                         "--unit-only")
    assert (code, err) == (ExitCode.OK, "")
    assert sorted(tree(root)) == ["etc/systemd/system/ghost-agent@.service",
                                  "etc/sysusers.d/ghost-agent-dev1.conf",
                                  "usr/local/sbin/ghost-agentctl"]


def test_the_packaged_template_is_left_alone(tmp_path: Path, root: Path) -> None:
    packaged = root / "lib/systemd/system/ghost-agent@.service"
    packaged.parent.mkdir(parents=True)
    packaged.write_text("packaged\n")
    code, _, err = setup("--instance", "dev1", "--config", str(site_config(tmp_path, "dev1")),
                         "--root", str(root))  # no --exec needed
    assert (code, err) == (ExitCode.OK, "")
    assert packaged.read_text() == "packaged\n"
    assert "etc/systemd/system/ghost-agent@.service" not in tree(root)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("site", ["Dev1", "dev_1", "-dev1", "dev1-", "dev.1", "d" * 20,
                                  "dev 1", "dev1/x", "\u00e9t\u00e9"])
def test_a_name_that_cannot_be_an_instance_is_refused(tmp_path: Path, root: Path,
                                                      site: str) -> None:
    code, out, err = instance(site, site_config(tmp_path, "dev1"), root)
    assert code == ExitCode.FAILED and out == ""
    assert err.count("\n") == 1 and f"--instance {site!r}: expected 1 to 19 lowercase" in err
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("site", ["agent", "releases", "cache", "tmp", "slack-spool", "fleet",
                                  "fleet-last-run"])
def test_names_of_the_single_site_agent_are_reserved(tmp_path: Path, root: Path,
                                                     site: str) -> None:
    code, _, err = instance(site, site_config(tmp_path, "dev1"), root)
    assert code == ExitCode.FAILED and f"--instance {site}: reserved" in err
    assert list(root.iterdir()) == []


def test_the_longest_name_makes_a_31_character_user(tmp_path: Path, root: Path) -> None:
    site = "a" * 19
    code, _, err = instance(site, site_config(tmp_path, "dev1"), root)
    assert (code, err) == (ExitCode.OK, "")
    assert len(Service.instance(site).user) == 31  # sysusers: at most 31


@pytest.mark.parametrize(("line", "owner"), [
    ('[agent]\nstate_dir = "/var/lib/ghost-agent/dev2"', "instance dev2's"),
    ('[agent]\nstate_dir = "/var/lib/ghost-agent"', "the single-site ghost-agent.service's"),
    ('[agent]\nstate_dir = "/var/lib/ghost-agent/releases"',
     "the single-site ghost-agent.service's"),
])
def test_a_state_dir_of_another_service_is_refused(tmp_path: Path, root: Path, line: str,
                                                   owner: str) -> None:
    config = site_config(tmp_path, "dev1", "\n" + line + "\n")
    code, _, err = instance("dev1", config, root)
    assert code == ExitCode.FAILED, err
    assert f"[agent] state_dir = {line.split('= ')[1].strip(chr(34))} is in {owner} state; " \
        "instance dev1 keeps its own in /var/lib/ghost-agent/dev1" in err
    assert err.count("\n") == 1 and list(root.iterdir()) == []


def test_a_releases_dir_of_another_instance_is_refused(tmp_path: Path, root: Path) -> None:
    text = MINIMAL_CONFIG.replace('path = "/var/www/ghost/content/themes/acme"\n',
                                  'path = "/var/www/ghost/content/themes/acme"\n'
                                  'releases_dir = "/var/lib/ghost-agent/dev2/releases"\n')
    config = tmp_path / "dev1.toml"
    config.write_text(text)
    code, _, err = instance("dev1", config, root)
    assert code == ExitCode.FAILED and "[deploy] releases_dir" in err and "instance dev2's" in err


def test_its_own_or_an_outside_state_dir_is_taken(tmp_path: Path, root: Path) -> None:
    own = site_config(tmp_path, "dev1", '\n[agent]\nstate_dir = "/var/lib/ghost-agent/dev1"\n')
    assert instance("dev1", own, root)[0] == ExitCode.OK
    dropin = root / "etc/systemd/system/ghost-agent@dev1.service.d/50-setup.conf"
    assert "/var/lib/ghost-agent" not in re.sub(r"(?m)^#.*\n", "", dropin.read_text())
    outside = site_config(tmp_path, "dev1", '\n[agent]\nstate_dir = "/srv/dev1"\n')
    assert instance("dev1", outside, root)[0] == ExitCode.OK
    assert re.findall(r"^ReadWritePaths=(.*)$", dropin.read_text(), re.M) == [
        "-/srv/dev1", "-/var/www/dev1/content/themes", "-/var/www/dev1/content/files"]


def test_the_instances_credentials_count_not_the_single_sites(tmp_path: Path, root: Path,
                                                              monkeypatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = site_config(tmp_path, "dev1", "\n[slack]\n")  # the webhook URL from the credstore
    store = root / "etc/credstore"
    store.mkdir(parents=True)
    single = store / "ghost-agent.slack-webhook-url"
    single.write_text("https://hooks.slack.com/services/T000/B000/SINGLE\n")
    single.chmod(0o600)
    code, _, err = instance("dev1", config, root)
    assert code == ExitCode.CONFIG and "[slack] webhook_url: missing" in err
    own = store / "ghost-agent.dev1.slack-webhook-url"
    own.write_text("https://hooks.slack.com/services/T000/B000/DEV1\n")
    own.chmod(0o600)
    code, out, err = instance("dev1", config, root)
    assert (code, err) == (ExitCode.OK, "")
    assert "DEV1" not in out and "CREDENTIALS_DIRECTORY" not in os.environ


# --------------------------------------------------------------------------- the template


def test_the_template_differs_from_the_unit_in_its_names_only() -> None:
    single = render_unit("/usr/bin/ghost-agent").splitlines()
    template = render_unit("/usr/bin/ghost-agent", template=True).splitlines()
    settings = [line for line in single if line and not line.startswith("#")]
    named = re.compile(r"ghost-agent|GHOST_AGENT|Description=")
    for line in settings:  # every setting without a name in it is in the template as it is
        if not named.search(line):
            assert line in template, line
    for line in ("User=ghost-agent-%i", "Group=ghost-agent-%i", "StateDirectory=ghost-agent/%i",
                 "CacheDirectory=ghost-agent/%i", "WorkingDirectory=/var/lib/ghost-agent/%i",
                 "Environment=GHOST_AGENT_CONFIG=/etc/ghost-agent/%i.toml",
                 "ExecStart=/usr/bin/ghost-agent run --config ${GHOST_AGENT_CONFIG}",
                 "AssertPathExists=/etc/systemd/system/ghost-agent@%i.service.d/50-setup.conf",
                 "Environment=XDG_CACHE_HOME=/var/cache/ghost-agent/%i",
                 "SyslogIdentifier=ghost-agent@%i"):
        assert line in template, line
    for name in agent_setup.CREDENTIALS:
        assert f"LoadCredential={name}:ghost-agent.%i.{name}" in template
    # and only two settings more: the config's path and the journal's identifier
    assert len([line for line in template if line and not line.startswith("#")]) == \
        len(settings) + 2


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_an_instance_passes_verify_and_rates_2_or_lower(tmp_path: Path) -> None:
    tool = _analyze()
    unit = tmp_path / "ghost-agent@dev1.service"  # the template, loaded as instance dev1
    unit.write_text(render_unit(shutil.which("true") or "/bin/true", template=True))
    done = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "ghost-agent@" not in done.stderr, done.stderr
    assert security_score(tool, unit) <= SECURITY_LIMIT


# --------------------------------------------------------------------------- ghost-agentctl


@pytest.fixture
def ctl(tmp_path: Path):
    """Run packaging/ghost-agentctl with systemctl and systemd-run stand-ins that print what
    they are asked: (status, systemd-run's argv, stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        '#!/bin/sh\necho "$@" >> "$CTL_LOG.systemctl"\n'
        'case "$*" in *ghost-agent@dev1*) echo "PYTHONUNBUFFERED=1 '
        'GHOST_AGENT_CONFIG=/etc/ghost-agent/dev1.toml";; esac\n')
    (bin_dir / "systemd-run").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$CTL_LOG"\n')
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    log = tmp_path / "ctl.log"

    def run(*argv: str) -> tuple[int, list[str], str]:
        log.unlink(missing_ok=True)
        done = subprocess.run(["/bin/sh", str(REPO / "packaging/ghost-agentctl"), *argv],
                              capture_output=True, text=True, timeout=30,
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CTL_LOG": str(log)})
        args = log.read_text().splitlines() if log.exists() else []
        return done.returncode, args, done.stderr
    return run


def test_ghost_agentctl_instance_runs_as_the_instance(ctl) -> None:
    code, args, err = ctl("--instance", "dev1", "status", "--json")
    assert code == 0, err
    for arg in ("--uid=ghost-agent-dev1", "--gid=ghost-agent-dev1",
                "--property=StateDirectory=ghost-agent/dev1",
                "--property=CacheDirectory=ghost-agent/dev1",
                "--property=WorkingDirectory=/var/lib/ghost-agent/dev1",
                "--property=LoadCredential=slack-webhook-url:ghost-agent.dev1.slack-webhook-url",
                "--setenv=GHOST_AGENT_CONFIG=/etc/ghost-agent/dev1.toml",
                "--setenv=XDG_CACHE_HOME=/var/cache/ghost-agent/dev1"):
        assert arg in args, (arg, args)
    assert args[-3:] == ["/usr/bin/ghost-agent", "status", "--json"]


def test_ghost_agentctl_without_instance_is_the_single_site_agent(ctl) -> None:
    code, args, err = ctl("rollback")
    assert code == 0, err
    for arg in ("--uid=ghost-agent", "--property=StateDirectory=ghost-agent",
                "--property=LoadCredential=slack-token:ghost-agent.slack-token",
                "--setenv=GHOST_AGENT_CONFIG=/etc/ghost-agent/agent.toml",
                "--setenv=npm_config_cache=/var/cache/ghost-agent/npm"):
        assert arg in args, (arg, args)
    assert args[-2:] == ["/usr/bin/ghost-agent", "rollback"]


@pytest.mark.parametrize("argv", [("--instance",), ("--instance", "Dev1", "status"),
                                  ("--instance", "dev1/../x", "status"),
                                  ("--instance", "-x", "status"), ("--instance", "dev1")])
def test_ghost_agentctl_refuses_a_bad_instance_or_no_command(ctl, argv) -> None:
    code, args, err = ctl(*argv)
    assert code == 64 and args == [] and err.count("\n") == 1, err


@pytest.mark.parametrize(("what", "dev2_extra"), [
    ("[site] local_url", 'local_url = "http://127.0.0.1:2368"'),
    ("[ghost] unit", 'unit = "ghost_dev1-website-com"'),
    ("[deploy] path", 'path = "/var/www/dev1/content/themes/acme"'),
])
def test_what_another_instance_holds_is_refused(tmp_path: Path, root: Path, what: str,
                                                dev2_extra: str) -> None:
    """Two agents must not restart one Ghost, write one theme or check each other's site."""
    dev1 = site_config(tmp_path, "dev1").read_text()
    key = dev2_extra.split(" = ")[0]
    (tmp_path / "etc-ghost-agent" / "dev1.toml").write_text(
        re.sub(rf"^{key} = .*$", dev2_extra, dev1, count=1, flags=re.M) if key in dev1
        else dev1.replace("[site]\n", f"[site]\n{dev2_extra}\n", 1))
    assert instance("dev1", tmp_path / "etc-ghost-agent" / "dev1.toml", root)[0] == ExitCode.OK
    dev2 = site_config(tmp_path, "dev2").read_text()
    section = {"[site] local_url": "[site]", "[ghost] unit": "[ghost]",
               "[deploy] path": "[deploy]"}[what]
    dev2 = re.sub(rf"^{key} = .*$", "", dev2, flags=re.M)
    path = tmp_path / "etc-ghost-agent" / "dev2.toml"
    path.write_text(dev2.replace(f"{section}\n", f"{section}\n{dev2_extra}\n", 1))
    code, out, err = instance("dev2", path, root)
    assert code == ExitCode.FAILED, out
    assert err.count("\n") == 1 and f"--instance dev2: {what} " in err, err
    assert "is instance dev1's too" in err
    assert not (root / "etc/systemd/system/ghost-agent@dev2.service.d").exists()


def test_a_webhook_port_of_another_instance_is_refused(tmp_path: Path, root: Path) -> None:
    hook = '\n[webhook]\nsecret = "0123456789abcdef0123"\n'
    assert instance("dev1", site_config(tmp_path, "dev1", hook), root)[0] == ExitCode.OK
    code, _, err = instance("dev2", site_config(tmp_path, "dev2", hook), root)
    assert code == ExitCode.FAILED and "[webhook] listen 127.0.0.1:9302 is instance dev1's" in err
    other_port = hook + 'listen = "127.0.0.1:9303"\n'
    assert instance("dev2", site_config(tmp_path, "dev2", other_port), root)[0] == ExitCode.OK
