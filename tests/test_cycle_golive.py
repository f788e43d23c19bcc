"""Releases readers never see fail (#12), through the whole `ghost-agent` command: gscan
before the switch (real gscan from npm), and a theme activation through the Admin API
instead of a restart (the Ghost stand-in's Admin API checks each token as Ghost does)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agentsite import AgentSite, agent_argv, page
from tests.gscan import gscan_package
from tests.test_validate import THEME, UNCLOSED_IF

KEY = "6489c4b5a1b2c3d4e5f60718:" + "ab" * 32


def with_admin_key(host: AgentSite, key: str = KEY, extra: str = "", *, accepted: str = KEY,
                   staff: bool = False) -> None:
    """The stand-in takes `accepted` (an integration's key, or with `staff` a staff token);
    the agent is given `key` (a file, as an operator would)."""
    kid, _, secret = accepted.partition(":")
    host.site.admin_keys = {kid: bytes.fromhex(secret)}
    if staff:
        host.site.staff_keys = {kid}
    key_file = host.root / "admin-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    host.write_config(ghost_extra=f'admin_api_key_file = "{key_file}"\n{extra}')


def push(git_remote, text: str, extra: dict | None = None) -> str:
    return git_remote.commit_and_push("dev1", {"index.html": page(text), **(extra or {})},
                                      f"{text}: change")


def deploy_first(host: AgentSite, git_remote) -> str:
    sha = push(git_remote, "B101 first")
    assert host.call("once").returncode == 0
    return sha


# -- activation instead of a restart -------------------------------------------------------


def test_a_release_goes_live_by_activation_without_a_restart(host, git_remote):
    with_admin_key(host)
    assert "; the key has not been tried yet" in host.call("check-config").stdout
    deploy_first(host, git_remote)  # the first release boots Ghost: nothing to compare to
    restarts = host.restarts()
    push(git_remote, "B102 second")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.restarts() == restarts
    assert host.site.activations == 1
    assert host.get("/") == (200, page("B102 second"))
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["reload"]) == ("deployed", "activate")
    assert "reload=activate" in host.ci_cd_txt()
    assert "theme through the Admin API" in host.call("status").stdout
    assert "; the key activated a theme at " in host.call("check-config").stdout


def test_a_theme_ghost_refuses_never_goes_live_and_nothing_restarts(host, git_remote):
    with_admin_key(host)
    first = deploy_first(host, git_remote)
    restarts = host.restarts()
    bad = git_remote.commit_and_push("dev1", {"index.html": "{{#if x}}<h1>B103</h1>"},
                                     "B103: unclosed if")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("failed", "validate")
    assert record["error"].startswith("validate failed: activate theme acme: Ghost answered "
                                      "422")
    assert record["live_commit"] == first
    assert host.restarts() == restarts  # readers never saw a restart nor the broken theme
    assert host.get("/") == (200, page("B101 first"))
    assert host.live_target().name.endswith(first[:12])
    assert bad in host.state()["quarantine"]
    assert host.call("once").returncode == 0  # quarantined: not tried again


def test_a_release_that_changes_package_json_config_restarts(host, git_remote):
    with_admin_key(host)
    deploy_first(host, git_remote)
    restarts = host.restarts()
    push(git_remote, "B104 more posts", {"package.json": json.dumps(
        {"name": "acme", "config": {"posts_per_page": 25}})})
    assert host.call("once").returncode == 0
    assert host.restarts() == restarts + 1 and host.site.activations == 0
    assert host.ci_cd()["deploys"][0]["reload"] == "restart"


def test_reload_restart_always_restarts(host, git_remote):
    with_admin_key(host, extra='reload = "restart"')
    deploy_first(host, git_remote)
    restarts = host.restarts()
    push(git_remote, "B105 x")
    assert host.call("once").returncode == 0
    assert host.restarts() == restarts + 1 and host.site.activations == 0


def test_a_refused_key_falls_back_to_a_restart_and_says_so(host, git_remote):
    with_admin_key(host, key="6489c4b5a1b2c3d4e5f60718:" + "cd" * 32)  # a wrong secret
    deploy_first(host, git_remote)
    restarts = host.restarts()
    push(git_remote, "B106 x")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.restarts() == restarts + 1
    assert host.get("/") == (200, page("B106 x"))
    assert host.ci_cd()["deploys"][0]["reload"] == "restart"
    status = host.call("status").stdout
    assert "Ghost answered 401" in status and "restarted instead" in status
    assert "cd" * 32 not in status + result.stderr  # the secret never shows
    assert "the key FAILED: activate theme acme: Ghost answered 401" in host.call(
        "check-config").stdout


def test_failed_checks_roll_back_by_activating_the_previous_release(host, git_remote):
    with_admin_key(host)
    deploy_first(host, git_remote)
    restarts = host.restarts()
    host.extra_config = '\n[[checks]]\nname = "home"\nurl = "{local_url}/"\ncontains = "B101"\n'
    host.write_config()
    push(git_remote, "B200 other text")  # renders, but not what the check wants
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("rolled_back", "checks")
    assert host.restarts() == restarts and host.site.activations == 2
    assert host.get("/") == (200, page("B101 first"))


# -- gscan before the switch ---------------------------------------------------------------


@pytest.fixture
def gscan_install(tmp_path) -> Path:
    """An install_dir holding node_modules/gscan (a real one, from npm)."""
    found = gscan_package()
    if isinstance(found, str):
        pytest.skip(found)
    return found.parent.parent


def theme_files(text: str, changes: dict | None = None) -> dict:
    """A real Handlebars theme (gscan reads it) plus the index.html the stand-in serves."""
    return {**THEME, "index.html": page(text), **(changes or {})}


def test_a_release_gscan_finds_fatal_never_goes_live(host, git_remote, gscan_install):
    host.write_config(ghost_extra=f'install_dir = "{gscan_install}"')
    first = git_remote.commit_and_push("dev1", theme_files("B201 one"), "B201: theme")
    assert host.call("once").returncode == 0
    record = host.ci_cd()["deploys"][0]
    assert record["validation"]["fatal"] == [] and record["validation"]["warnings"]
    restarts = host.restarts()
    git_remote.commit_and_push("dev1", theme_files("B202 two", {"default.hbs": UNCLOSED_IF}),
                               "B202: unclosed if")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("failed", "validate")
    assert record["error"].startswith("validate failed: gscan found fatal errors: "
                                      "GS005-TPL-ERR")
    assert record["validation"]["fatal"][0]["files"] == ["default.hbs"]
    assert host.restarts() == restarts and host.live_target().name.endswith(first[:12])
    assert host.get("/") == (200, page("B201 one"))
    assert "gscan=1fatal/" in host.ci_cd_txt()
    assert f"validate: gscan at {gscan_install}" in host.call("status").stdout


def broken_gscan(tmp_path: Path) -> Path:
    """An install_dir whose node_modules/gscan is there but cannot load (a half install)."""
    package = tmp_path / "ghost" / "node_modules" / "gscan"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"name": "gscan", "main": "lib/missing.js"}')
    return tmp_path / "ghost"


@pytest.mark.skipif(not shutil.which("node"), reason="needs node")
def test_a_gscan_that_cannot_run_is_skipped_unless_validate_is_true(host, git_remote,
                                                                    tmp_path):
    install = broken_gscan(tmp_path)
    host.write_config(ghost_extra=f'install_dir = "{install}"')
    push(git_remote, "B204 x")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert "gscan exited with 2" in result.stderr and "deploying without validation" \
        in result.stderr
    host.write_config(ghost_extra=f'install_dir = "{install}"\nvalidate = true')
    push(git_remote, "B205 y")
    result = host.call("once")
    assert result.returncode == 75 and "gscan exited with 2" in result.stderr


def test_validate_true_without_gscan_waits_for_the_host(host, git_remote, tmp_path):
    host.write_config(ghost_extra=f'validate = true\ninstall_dir = "{tmp_path}"')
    push(git_remote, "B203 x")
    result = host.call("once")
    assert result.returncode == 75
    assert "cannot validate: missing: gscan was not found under [ghost] install_dir" \
        in result.stderr
    assert host.live_target() is None  # nothing went live unvalidated


def test_without_gscan_validation_is_off_and_status_says_why(host, git_remote):
    deploy_first(host, git_remote)
    assert host.ci_cd()["deploys"][0]["validation"] is None
    assert "validate: off: gscan was not found under the WorkingDirectory of " \
           "ghost_dev1.service; set [ghost] install_dir" in host.call("status").stdout


# -- routes.yaml and redirects from the repository ------------------------------------------

STAFF = "7489c4b5a1b2c3d4e5f60719:" + "ef" * 32
ROUTES = "routes:\n  /about/: about\n"


def with_settings(host: AgentSite, key: str = STAFF) -> None:
    """A staff token the stand-in takes, and [deploy] routes and redirects in the config."""
    with_admin_key(host, key, accepted=STAFF, staff=True)
    text = host.config_path.read_text().replace(
        "[ghost]", 'routes = "site/routes.yaml"\nredirects = "site/redirects.json"\n\n[ghost]')
    host.config_path.write_text(text)


def settings_push(git_remote, text: str, routes: str = ROUTES,
                  redirects: str = '[{"from": "/a/", "to": "/b/"}]', **more) -> str:
    return git_remote.commit_and_push("dev1", {"index.html": page(text),
                                               "site/routes.yaml": routes,
                                               "site/redirects.json": redirects, **more},
                                      f"{text}: change")


def test_changed_settings_files_go_to_ghost_and_unchanged_ones_do_not(host, git_remote):
    with_settings(host)
    settings_push(git_remote, "B401 first")
    assert host.call("once").returncode == 0
    assert host.site.settings_files == {"routes": ROUTES.encode(),
                                        "redirects": b'[{"from": "/a/", "to": "/b/"}]'}
    record = host.ci_cd()["deploys"][0]
    assert record["settings"] == ["site/routes.yaml", "site/redirects.json"]
    new_routes = ROUTES + "  /team/: team\n"
    settings_push(git_remote, "B402 second", routes=new_routes)
    host.site.settings_files.clear()
    assert host.call("once").returncode == 0
    assert host.site.settings_files == {"routes": new_routes.encode()}  # redirects unchanged
    assert host.ci_cd()["deploys"][0]["settings"] == ["site/routes.yaml"]
    assert "settings=site/routes.yaml" in host.ci_cd_txt()


def test_routes_ghost_refuses_fail_the_release_before_anything_changes(host, git_remote):
    with_settings(host)
    first = settings_push(git_remote, "B403 first")
    assert host.call("once").returncode == 0
    restarts = host.restarts()
    bad = settings_push(git_remote, "B404 tab", routes="routes:\n\t/x/: x\n")
    assert host.call("once").returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("failed", "settings")
    assert "upload routes.yaml: Ghost answered 400" in record["error"]
    assert host.site.settings_files["routes"] == ROUTES.encode()  # Ghost kept its file
    assert host.live_target().name.endswith(first[:12]) and host.restarts() == restarts
    assert bad in host.state()["quarantine"]


def test_a_key_that_may_not_upload_settings_waits_and_says_why(host, git_remote):
    with_settings(host, key=KEY)  # an integration's key: themes only
    host.site.admin_keys[KEY.partition(":")[0]] = bytes.fromhex(KEY.partition(":")[2])
    settings_push(git_remote, "B405 x")
    result = host.call("once")
    assert result.returncode == 75
    assert "Ghost answered 403" in result.stderr and "staff access token" in result.stderr
    assert host.live_target() is None


def test_a_rollback_puts_the_previous_settings_back(host, git_remote):
    with_settings(host)
    settings_push(git_remote, "B406 first")
    assert host.call("once").returncode == 0
    host.site.fail_with = 500  # the new release will not verify
    settings_push(git_remote, "B407 second", routes=ROUTES + "  /new/: new\n")
    result = host.call("once")
    host.site.fail_with = None
    assert result.returncode == 1
    assert host.ci_cd()["deploys"][0]["outcome"] == "failed"  # nothing verifies while 500
    assert host.site.settings_files["routes"] == ROUTES.encode()  # the previous one is back


def test_settings_files_need_an_admin_api_key(host):
    text = host.config_path.read_text().replace("[ghost]", 'routes = "routes.yaml"\n\n[ghost]')
    host.config_path.write_text(text)
    result = host.call("check-config")
    assert result.returncode == 78
    assert '[deploy] routes = "routes.yaml": needs [ghost] admin_api_key' in result.stderr


def test_a_refusal_after_a_file_ghost_took_gives_it_the_live_files_back(host, git_remote):
    with_settings(host)
    settings_push(git_remote, "B410 first")
    assert host.call("once").returncode == 0
    # routes.yaml is taken, then redirects.json is refused: Ghost must not keep the new routes
    settings_push(git_remote, "B411 second", routes=ROUTES + "  /new/: new\n",
                  redirects="[{not json")
    assert host.call("once").returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("failed", "settings")
    assert host.site.settings_files["routes"] == ROUTES.encode()
    # and a later release with the live routes sends nothing it need not
    host.site.settings_files.clear()
    settings_push(git_remote, "B412 third")
    assert host.call("once").returncode == 0
    assert host.site.settings_files == {}


def test_an_operators_rollback_puts_the_previous_settings_back(host, git_remote):
    with_settings(host)
    settings_push(git_remote, "B413 first")
    assert host.call("once").returncode == 0
    settings_push(git_remote, "B414 second", routes=ROUTES + "  /team/: team\n")
    assert host.call("once").returncode == 0
    result = host.call("rollback")
    assert result.returncode == 0, result.stderr
    assert host.site.settings_files["routes"] == ROUTES.encode()
    assert host.get("/") == (200, page("B413 first"))


def test_a_run_killed_after_the_upload_gives_ghost_the_live_files_back(host, git_remote):
    with_settings(host)
    settings_push(git_remote, "B415 first")
    assert host.call("once").returncode == 0
    settings_push(git_remote, "B416 second", routes=ROUTES + "  /kill/: kill\n")
    env = {**host.env(), "GHOST_AGENT_FAILPOINTS": "after-rename=kill"}
    killed = subprocess.run([*agent_argv(), "--config", str(host.config_path), "once"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert killed.returncode == -9  # SIGKILL: the failpoint was reached
    assert host.site.settings_files["routes"] != ROUTES.encode()  # Ghost took the new ones
    assert host.call("hold").returncode == 0  # so the next run only recovers
    assert host.call("once").returncode == 0
    assert host.site.settings_files["routes"] == ROUTES.encode()
    assert host.get("/") == (200, page("B415 first"))
