"""The dev1 loop end to end, through the `ghost-agent` command (agent.cli.main in this
process; the real process where exit statuses, the lock, kills and signals are the point):
real git remotes (path and smart HTTP), a real HTTP site serving the live path, `systemctl`
at the process boundary."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


import pytest

from agent.state import StateStore
from tests.agentsite import AgentSite, page, wait_for


def deploy_first(host: AgentSite, git_remote) -> str:
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B101 first")}, "B101: first")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    return sha


# -- deploys -----------------------------------------------------------------------------------

def test_first_deploy_goes_live_verified_and_recorded(host, git_remote):
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B101 hello")}, "B101: hello")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert f"deployed dev1 {sha[:7]}" in result.stdout
    assert host.get("/") == (200, page("B101 hello"))
    assert host.restarts() == 1
    # Before it, only a look for gscan in the unit's WorkingDirectory (the validator)
    assert host.systemctl.argvs()[:2] == [["show", "-p", "WorkingDirectory", "--value",
                                           "ghost_dev1.service"],
                                          ["restart", "ghost_dev1.service"]]
    doc = host.ci_cd()
    assert doc["current"]["commit"] == sha
    [record] = doc["deploys"]
    assert record["outcome"] == "deployed"
    assert record["previous_commit"] is None
    assert record["cards"] == ["B101"]
    assert [c["ok"] for c in record["checks"]] == [True, True]
    assert f"{sha[:7]} deployed" in host.ci_cd_txt()
    # Ghost serves what is under the live path; the release carries no .git
    assert host.live.is_symlink()
    assert not (host.live / ".git").exists()


def test_new_commit_replaces_the_live_release(host, git_remote):
    first = deploy_first(host, git_remote)
    second = git_remote.commit_and_push("dev1", {"index.html": page("B102 two")}, "B102: two")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B102 two"))
    latest = host.ci_cd()["deploys"][0]
    assert (latest["commit"], latest["previous_commit"]) == (second, first)
    assert host.state()["releases"][1]["commit"] == first  # kept for rollback


def test_no_op_poll_changes_nothing(host, git_remote):
    deploy_first(host, git_remote)
    files = host.content / "files"
    before = {p.name: p.stat().st_mtime_ns for p in files.iterdir()}
    restarts = host.restarts()
    result = host.call("once")
    assert result.returncode == 0
    assert "up to date" in result.stdout
    assert host.restarts() == restarts
    assert {p.name: p.stat().st_mtime_ns for p in files.iterdir()} == before
    assert len(host.ci_cd()["deploys"]) == 1


def test_force_push_deploys_the_new_head_and_says_history_was_rewritten(host, git_remote):
    first = deploy_first(host, git_remote)
    git_remote.commit("dev1", {"index.html": page("B103 v2")}, "B103: v2")
    git_remote.reset_hard("dev1", first)
    rewritten = git_remote.commit("dev1", {"index.html": page("B104 other")}, "B104: other")
    git_remote.push("dev1", force=True)
    assert host.call("once").returncode == 0
    record = host.ci_cd()["deploys"][0]
    assert record["commit"] == rewritten
    assert host.get("/") == (200, page("B104 other"))


def test_deleted_branch_changes_nothing_live(host, git_remote):
    sha = deploy_first(host, git_remote)
    git_remote.commit_and_push("main", {"README": "x"}, "B900: keep a branch")
    git_remote.git_bare("symbolic-ref", "HEAD", "refs/heads/main")
    git_remote.delete_branch("dev1")
    restarts = host.restarts()
    result = host.call("once")
    assert result.returncode == 0
    assert host.restarts() == restarts
    assert host.get("/") == (200, page("B101 first"))
    assert host.ci_cd()["current"]["commit"] == sha


def test_only_the_newest_of_several_commits_is_deployed(host, git_remote):
    deploy_first(host, git_remote)
    git_remote.commit("dev1", {"index.html": page("B201 a")}, "B201: a")
    git_remote.commit("dev1", {"index.html": page("B202 b")}, "no card here")
    newest = git_remote.commit("dev1", {"index.html": page("B203 c")}, "B203: c")
    git_remote.push("dev1")
    assert host.call("once").returncode == 0
    deploys = host.ci_cd()["deploys"]
    assert len(deploys) == 2
    assert deploys[0]["commit"] == newest
    assert deploys[0]["cards"] == ["B201", "B203"]
    assert len(deploys[0]["uncarded_commits"]) == 1
    assert host.restarts() == 2


def test_deploy_over_smart_http(make_host, http_git, http_git_remote):
    host = make_host(remote=http_git.repo_url("site.git"))
    sha = http_git_remote.commit_and_push("dev1", {"index.html": page("B300 http")}, "B300: x")
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B300 http"))
    assert host.ci_cd()["current"]["commit"] == sha
    assert any("git-upload-pack" in r for r in http_git.requests)


# -- failures and rollback -----------------------------------------------------------------

def test_build_failure_leaves_the_live_release_and_restarts_nothing(host, git_remote):
    deploy_first(host, git_remote)
    live_before = host.live_target()
    host.write_config(build=json.dumps([[sys.executable, "-c",
                                         "import sys; sys.exit('npm ERR! broken')"]]))
    bad = git_remote.commit_and_push("dev1", {"index.html": page("B401 x")}, "B401: x")
    result = host.call("once")
    assert result.returncode == 1
    assert "build failed" in result.stdout
    assert host.restarts() == 1
    assert host.live_target() == live_before
    record = host.ci_cd()["deploys"][0]
    assert (record["commit"], record["outcome"], record["step"]) == (bad, "failed", "build")
    assert "npm ERR! broken" in record["error"]
    assert not list((host.state_dir / "releases").glob(".staging-*"))


def test_build_runs_inside_the_new_release(host, git_remote):
    host.write_config(build=json.dumps([[sys.executable, "-c",
                                         "open('built.txt','w').write('ok')"]]))
    deploy_first(host, git_remote)
    assert host.get("/built.txt") == (200, "ok")


def test_failed_checks_roll_back_and_quarantine(host, git_remote):
    good = deploy_first(host, git_remote)
    bad = git_remote.commit_and_push("dev1", {"index.html": None}, "B500: drop the index")
    result = host.call("once")
    assert result.returncode == 1
    assert "rolled_back" in result.stdout
    assert host.get("/") == (200, page("B101 first"))
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["commit"]) == ("rolled_back", bad)
    assert record["live_commit"] == good
    assert "500" in record["error"]
    assert host.ci_cd()["current"]["commit"] == good
    # quarantined: the next poll does not try again
    restarts = host.restarts()
    assert host.call("once").returncode == 0
    assert host.restarts() == restarts
    assert bad in host.state()["quarantine"]
    # a new commit on the branch releases it
    fixed = git_remote.commit_and_push("dev1", {"index.html": page("B501 fixed")}, "B501: fix")
    assert host.call("once").returncode == 0
    assert host.get("/") == (200, page("B501 fixed"))
    assert host.ci_cd()["current"]["commit"] == fixed


def test_deploy_ref_retries_a_quarantined_commit(host, git_remote):
    deploy_first(host, git_remote)
    bad = git_remote.commit_and_push("dev1", {"index.html": None}, "B510: drop")
    assert host.call("once").returncode == 1
    restarts = host.restarts()
    result = host.call("deploy", "--ref", bad[:10])
    assert result.returncode == 1
    assert host.restarts() > restarts  # it really tried again
    assert host.ci_cd()["deploys"][0]["trigger"] == "manual"


def test_restart_failure_rolls_back(host, git_remote):
    good = deploy_first(host, git_remote)
    host.systemctl.fail(True)
    git_remote.commit_and_push("dev1", {"index.html": page("B600 x")}, "B600: x")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert record["step"] == "restart"
    assert "restart of ghost_dev1.service failed" in record["error"]
    assert record["outcome"] == "failed"  # the rollback's restart failed too
    assert Path(os.path.realpath(host.live)).name.endswith(good[:12])


def test_restart_failure_then_rollback_verifies_is_rolled_back(host, git_remote):
    deploy_first(host, git_remote)
    host.systemctl.fail_next(1)
    git_remote.commit_and_push("dev1", {"index.html": page("B601 x")}, "B601: x")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"]) == ("rolled_back", "restart")
    assert host.get("/") == (200, page("B101 first"))


def test_rollback_that_also_fails_is_failed(host, git_remote):
    deploy_first(host, git_remote)
    # From now on the public URL is down: nothing can verify.
    host.write_config(public_url="http://127.0.0.1:9")
    git_remote.commit_and_push("dev1", {"index.html": page("B700 x")}, "B700: x")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert record["outcome"] == "failed"
    assert "does not verify either" in record["error"]
    assert host.get("/") == (200, page("B101 first"))  # the previous release is what is live


def test_first_deploy_that_fails_is_failed_with_nothing_to_roll_back_to(host, git_remote):
    git_remote.commit_and_push("dev1", {"style.css": "x"}, "B800: no index")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert record["outcome"] == "failed"
    assert "nothing to roll back to" in record["error"]
    assert host.ci_cd()["current"] is None


def test_rollback_command_restores_the_previous_release(host, git_remote):
    first = deploy_first(host, git_remote)
    second = git_remote.commit_and_push("dev1", {"index.html": page("B900 two")}, "B900: two")
    assert host.call("once").returncode == 0
    result = host.call("rollback")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B101 first"))
    record = host.ci_cd()["deploys"][0]
    assert (record["trigger"], record["outcome"], record["commit"]) == ("rollback", "rolled_back",
                                                                          first)
    # the branch head is not redeployed by the next poll
    assert host.call("once").returncode == 0
    assert host.get("/") == (200, page("B101 first"))
    assert second in host.state()["quarantine"]


def test_rollback_without_a_previous_release_says_so(host, git_remote):
    deploy_first(host, git_remote)
    result = host.call("rollback")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("no previous release on disk to roll back to")


def test_keep_prunes_old_releases_but_never_live_or_previous(host, git_remote):
    host.write_config(keep=2)
    deploy_first(host, git_remote)
    for n in range(3):
        git_remote.commit_and_push("dev1", {"index.html": page(f"B95{n}")}, f"B95{n}: n")
        assert host.call("once").returncode == 0
    kept = sorted(p.name for p in (host.state_dir / "releases").iterdir())
    assert len(kept) == 2
    state = host.state()
    assert {Path(r["dir"]).name for r in state["releases"]} == set(kept)
    assert host.live_target().name in kept


# -- temporary trouble, bad config, concurrency: the real process's exit statuses and stderr --

def test_unreachable_remote_exits_75_and_leaves_the_site(host, git_remote):
    deploy_first(host, git_remote)
    host.write_config(remote="https://deploy:S3CRETT0KEN@127.0.0.1:9/site.git")
    result = host.run("once")
    assert result.returncode == 75
    assert "cannot read the remote" in result.stderr
    assert "S3CRETT0KEN" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert host.get("/") == (200, page("B101 first"))
    assert "S3CRETT0KEN" not in (host.state_dir / "state.json").read_text()


def test_concurrent_once_exits_75(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B101 first")}, "B101: first")
    with StateStore(host.state_dir):
        result = host.run("once")
    assert result.returncode == 75
    assert "another ghost-agent run holds" in result.stderr
    assert host.restarts() == 0


@pytest.mark.slow
def test_an_operators_command_waits_for_the_step_under_way(host, git_remote):
    """`hold` and `rollback` while `run` is in a step (here: a test holding the lock for
    1.5 s) wait for the lock and then succeed, instead of exit 75 at once."""
    deploy_first(host, git_remote)
    git_remote.commit_and_push("dev1", {"index.html": page("B102 two")}, "B102: two")
    assert host.run("once").returncode == 0
    store = StateStore(host.state_dir).lock()
    threading.Timer(1.5, store.unlock).start()
    started = time.monotonic()
    held = host.run("hold", "--reason", "checking")
    assert held.returncode == 0, held.stderr
    assert time.monotonic() - started >= 1.4
    assert "waiting up to 300s for the ghost-agent run" in held.stderr
    assert f"(pid {os.getpid()})" in held.stderr
    assert host.state()["hold"]["reason"] == "checking"
    with StateStore(host.state_dir):
        busy = host.run("once")  # a poll never waits: the next one comes soon enough
    assert busy.returncode == 75 and "waiting" not in busy.stderr
    store = StateStore(host.state_dir).lock()
    threading.Timer(1.0, store.unlock).start()
    rolled = host.run("rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert host.get("/") == (200, page("B101 first"))


def test_an_operators_command_gives_up_after_its_wait(host, git_remote, monkeypatch):
    import agent.cycle

    monkeypatch.setattr(agent.cycle, "OPERATOR_LOCK_WAIT", 0.5)
    deploy_first(host, git_remote)
    with StateStore(host.state_dir):
        held = host.call("hold", "--reason", "x")
    assert held.returncode == 75
    assert f"holds {host.state_dir / 'agent.lock'} (pid {os.getpid()}); waited 0.5s" \
        in held.stderr
    assert host.state()["hold"] is None


def test_bad_config_exits_78_listing_every_problem(host):
    host.config_path.write_text(host.config_path.read_text()
                                .replace('flag = "dev1"', 'flag = "stag*ing"')
                                .replace("keep = 3", "keep = 'three'")
                                + "\n[bogus]\nx = 1\n")
    result = host.run("once")
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(str(host.config_path) in line for line in lines)
    assert host.run("check-config").returncode == 78


def test_traceback_only_with_debug(host, git_remote):
    host.write_config(remote=str(host.root / "missing.git"))
    plain = host.run("once")
    assert plain.returncode == 75 and "Traceback" not in plain.stderr
    debug = host.run("once", "--debug")
    assert debug.returncode == 75 and "Traceback" in debug.stderr


def test_status_tells_what_is_live_and_why_nothing_is_pending(host, git_remote):
    sha = deploy_first(host, git_remote)
    bad = git_remote.commit_and_push("dev1", {"index.html": None}, "B990: drop")
    host.call("once")
    text = host.call("status")
    assert text.returncode == 0
    assert f"live:     dev1 {sha[:7]}" in text.stdout
    assert f"held back: {bad[:7]}" in text.stdout
    info = json.loads(host.call("status", "--json").stdout)
    assert info["live"]["commit"] == sha
    assert info["last"]["outcome"] == "rolled_back"
    assert info["window"] is None


# -- killed runs -------------------------------------------------------------------------------

def test_killed_between_staging_and_switch_then_once_is_consistent(host, git_remote, tmp_path):
    deploy_first(host, git_remote)
    live_before = host.live_target()
    started = tmp_path / "build-started"
    slow = tmp_path / "slow"
    slow.write_text("1")
    host.write_config(build=json.dumps([[sys.executable, "-c", (
        f"import os, time; open({str(started)!r}, 'w').close()\n"
        f"while os.path.exists({str(slow)!r}): time.sleep(0.05)")]]))
    git_remote.commit_and_push("dev1", {"index.html": page("B111 new")}, "B111: new")
    agent = host.start("once")
    wait_for(started.exists, what="the build to start")
    host.kill(agent)
    assert host.live_target() == live_before  # untouched
    assert host.get("/") == (200, page("B101 first"))
    slow.unlink()
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B111 new"))
    assert not list((host.state_dir / "releases").glob(".staging-*"))


def test_killed_between_switch_and_checks_then_once_recovers(host, git_remote):
    deploy_first(host, git_remote)
    new = git_remote.commit_and_push("dev1", {"index.html": page("B222 new")}, "B222: new")
    host.systemctl.hang(True)
    agent = host.start("once")
    wait_for(lambda: host.restarts() == 2, what="the restart to begin")
    host.kill(agent)
    assert host.state()["inflight"]["commit"] == new
    assert host.live_target().name.endswith(new[:12])  # switched, not yet verified
    host.systemctl.hang(False)
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    record = host.ci_cd()["deploys"][0]
    assert (record["trigger"], record["outcome"], record["commit"]) == ("recovery", "deployed", new)
    assert host.get("/") == (200, page("B222 new"))
    assert host.state()["inflight"] is None


def test_lock_is_not_stale_after_a_kill(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B101 first")}, "B101: first")
    host.systemctl.hang(True)
    agent = host.start("once")
    wait_for(lambda: host.restarts() == 1, what="the restart to begin")
    host.kill(agent)
    host.systemctl.hang(False)
    result = host.call("once")
    assert result.returncode == 0, result.stderr


# -- the service loop --------------------------------------------------------------------------

@pytest.mark.slow
def test_run_polls_deploys_and_stops_on_sigterm(host, git_remote):
    import signal

    git_remote.commit_and_push("dev1", {"index.html": page("B301 one")}, "B301: one")
    agent = host.start("run")
    try:
        wait_for(lambda: host.get("/") == (200, page("B301 one")), what="the first deploy")
        git_remote.commit_and_push("dev1", {"index.html": page("B302 two")}, "B302: two")
        wait_for(lambda: host.get("/") == (200, page("B302 two")), what="the push to go live")
        restarts = host.restarts()
        time.sleep(1.0)  # several no-op polls
        assert host.restarts() == restarts
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
        assert agent.returncode == 0, stderr
    finally:
        if agent.poll() is None:
            host.kill(agent)
    assert len(host.ci_cd()["deploys"]) == 2


def test_a_no_op_poll_writes_no_state(host, git_remote):
    deploy_first(host, git_remote)
    state_file = host.state_dir / "state.json"
    before = state_file.stat().st_mtime_ns
    assert host.call("once").returncode == 0
    assert state_file.stat().st_mtime_ns == before


def test_unreadable_release_branches_are_reported_once_and_never_deployed(make_host, git_remote):
    host = make_host("staging1*")
    git_remote.commit_and_push("staging1-1.3.9", {"index.html": page("B1 1.3.9")}, "B101: x")
    git_remote.branch_from("staging1-next", "staging1-1.3.9", push=True)
    git_remote.branch_from("staging10-9.0", "staging1-1.3.9", push=True)
    first = host.call("once")
    assert first.returncode == 0
    assert "branch staging1-next: its version cannot be read" in first.stderr
    assert host.ci_cd()["current"]["branch"] == "staging1-1.3.9"
    again = host.call("once")
    assert "cannot be read" not in again.stderr  # said once, not on every poll
    assert "ignored:  staging1-next" in host.call("status").stdout


def test_staging_follows_the_newest_release_branch_only(make_host, git_remote):
    host = make_host("staging1*")
    git_remote.commit_and_push("staging1-1.3.9", {"index.html": page("B1 1.3.9")}, "B101: a")
    assert host.call("once").returncode == 0
    assert host.get("/") == (200, page("B1 1.3.9"))
    git_remote.branch_from("staging1-1.3.22", "staging1-1.3.9")
    newest = git_remote.commit_and_push("staging1-1.3.22", {"index.html": page("B2 1.3.22")},
                                        "B102: b")
    assert host.call("once").returncode == 0
    assert host.get("/") == (200, page("B2 1.3.22"))
    git_remote.commit_and_push("staging1-1.3.9", {"index.html": page("B3 hotfix")}, "B103: c")
    restarts = host.restarts()
    assert host.call("once").returncode == 0
    assert host.restarts() == restarts
    assert host.get("/") == (200, page("B2 1.3.22"))
    assert host.ci_cd()["current"] == {**host.ci_cd()["current"], "commit": newest,
                                       "version": "1.3.22"}


def test_a_live_path_that_cannot_be_adopted_is_a_recorded_failure(host, git_remote):
    """A plain theme directory the agent cannot move: recorded once, quarantined, no leftovers."""
    from agent.config import load_config
    from agent.cycle import Agent
    from agent.errors import DeployError

    host.live.mkdir()
    (host.live / "index.html").write_text(page("hand made"))
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B1")}, "B101: x")
    agent = Agent.from_config(load_config(host.config_path))

    def refuse(now):
        raise DeployError(f"cannot move {host.live} into {agent.releases.dir}: Permission denied")

    agent.releases.adopt_existing = refuse
    outcome = agent.once()
    assert outcome.exit_code == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"], record["commit"]) == ("failed", "switch", sha)
    assert sha in host.state()["quarantine"]
    assert [p.name for p in (host.state_dir / "releases").iterdir()] == []
    assert agent.once().exit_code == 0  # quarantined: not retried every poll
    assert (host.live / "index.html").read_text() == page("hand made")
