"""The host's truth wins (issue #10): what the agent remembers is rebuilt from the host and the
remote when it goes wrong. Every case drives the real `ghost-agent` command (a process, as the
issue asks of each case)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.agentsite import AgentSite, agent_argv, page

# Real processes: the command's real boundary, so the slow tier (the full suite runs them).
pytestmark = pytest.mark.slow


def deploy(host: AgentSite, git_remote, text: str, branch: str = "dev1") -> str:
    sha = git_remote.commit_and_push(branch, {"index.html": page(text)}, f"{text}: change")
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    return sha


# -- a live release removed by hand ------------------------------------------------------------

def test_a_live_release_removed_by_hand_is_restored(host, git_remote):
    deploy(host, git_remote, "B101 one")
    sha = deploy(host, git_remote, "B102 two")
    shutil.rmtree(host.live_target())
    restarts = host.restarts()
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B102 two"))
    assert host.live_target().is_dir()
    assert host.live_target().name.endswith(sha[:12])
    assert host.restarts() == restarts + 1
    record = host.ci_cd()["deploys"][0]
    assert (record["trigger"], record["outcome"], record["commit"]) == ("repair", "deployed", sha)
    assert host.state()["releases"][0]["dir"] == str(host.live_target())
    assert "gone" in result.stderr


def test_a_live_release_that_cannot_be_restored_is_a_problem(host, git_remote):
    deploy(host, git_remote, "B103 one")
    shutil.rmtree(host.live_target())
    shutil.rmtree(host.state_dir / "cache")
    host.write_config(remote=str(host.root / "no-such-remote.git"))
    result = host.run("once")
    assert result.returncode == 75
    status = host.run("status", "--json")
    info = json.loads(status.stdout)
    assert "cannot be restored" in info["problems"]["live"]
    assert "problem:  the live release" in host.run("status").stdout


# -- the state file moved aside ---------------------------------------------------------------

def test_a_state_file_moved_aside_is_rebuilt_from_the_disk(host, git_remote):
    first = deploy(host, git_remote, "B110 one")
    second = deploy(host, git_remote, "B111 two")
    history = host.ci_cd()["deploys"]
    (host.state_dir / "state.json").rename(host.state_dir / "state.json.damaged")
    restarts = host.restarts()
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert host.restarts() == restarts  # taken over, not redeployed
    state = host.state()
    assert [r["commit"] for r in state["releases"]] == [second, first]
    assert [d["commit"] for d in host.ci_cd()["deploys"]] == [d["commit"] for d in history]
    result = host.run("rollback")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B110 one"))


def test_pruning_keeps_the_previous_release_after_the_state_was_lost(host, git_remote):
    deploy(host, git_remote, "B120 one")
    previous = deploy(host, git_remote, "B121 two")
    (host.state_dir / "state.json").unlink()
    (host.content / "files" / "ci-cd.json").unlink()  # nothing left to rebuild from
    deploy(host, git_remote, "B122 three")
    names = [d.name for d in (host.state_dir / "releases").iterdir()]
    assert any(name.endswith(previous[:12]) for name in names)


# -- a changed flag --------------------------------------------------------------------------

def test_a_changed_flag_deploys_the_new_flags_newest_branch(make_host, git_remote):
    host = make_host("staging1*")
    deploy(host, git_remote, "B130 staging", branch="staging1-2.0")
    host.flag = "prod-asterix*"
    host.write_config()
    sha = git_remote.commit_and_push("prod-asterix-1.3", {"index.html": page("B131 prod")},
                                     "B131: prod")
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    assert f"deployed prod-asterix-1.3 {sha[:7]}" in result.stdout
    # Within one flag the guard still holds: an older branch never replaces a newer one.
    git_remote.commit_and_push("prod-asterix-1.4", {"index.html": page("B132")}, "B132: x")
    assert host.run("once").returncode == 0
    git_remote.delete_branch("prod-asterix-1.4")
    git_remote.commit_and_push("prod-asterix-1.3", {"index.html": page("B133")}, "B133: x")
    result = host.run("once")
    assert "older than live" in result.stdout


# -- a manual deploy of an older commit -----------------------------------------------------

def test_a_manual_deploy_of_an_older_commit_holds_the_head_back(host, git_remote):
    old = deploy(host, git_remote, "B140 old")
    head = deploy(host, git_remote, "B141 head")
    result = host.run("deploy", "--ref", old)
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B140 old"))
    result = host.run("once")
    assert result.returncode == 0
    assert host.get("/") == (200, page("B140 old"))  # the operator's choice stands
    assert "held back" in result.stdout
    status = host.run("status")
    assert f"held back: {head[:7]}" in status.stdout
    newer = deploy(host, git_remote, "B142 newer")  # the branch moved: deploys again
    assert host.ci_cd()["current"]["commit"] == newer


# -- a failing fetch is visible -----------------------------------------------------------

def test_a_failing_fetch_is_a_problem_naming_the_waiting_commit(host, git_remote):
    deploy(host, git_remote, "B150 one")
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B151 two")}, "B151: two")
    # The remote lost the commit's objects: ls-remote still names it, the fetch fails.
    objects = git_remote.path / "objects"
    for sub in objects.iterdir():
        if len(sub.name) == 2:
            shutil.rmtree(sub)
    shutil.rmtree(objects / "pack", ignore_errors=True)
    result = host.run("once")
    assert result.returncode == 75
    info = json.loads(host.run("status", "--json").stdout)
    assert info["problem_kind"] == "fetch"
    assert sha[:7] in info["problem"]
    assert "problem:  " in host.run("status").stdout
    # The remote heals (a new push of the whole history): the problem clears.
    git_remote.push("dev1", force=True)
    shutil.rmtree(git_remote.path)
    git_remote.git("init", "--bare", "--quiet", str(git_remote.path))
    git_remote.push("dev1", force=True)
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    info = json.loads(host.run("status", "--json").stdout)
    assert info["problem"] is None


# -- a closed pipe --------------------------------------------------------------------------

def test_a_reader_that_closes_the_pipe_early_ends_quietly(host, git_remote):
    deploy(host, git_remote, "B160 one")
    for command in (["status"], ["status", "--json"], ["--help"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first byte, as with `| head -0`
        try:
            agent = subprocess.run([*agent_argv(), "--config", str(host.config_path), *command],
                                   stdout=write_end, stderr=subprocess.PIPE, env=host.env(),
                                   timeout=60, check=False)
        finally:
            os.close(write_end)
        assert b"Traceback" not in agent.stderr, command
        assert b"BrokenPipe" not in agent.stderr, command
        assert agent.returncode == 0, command
