"""The card rule for the site's developers: the commit-msg hook, `ghost-agent check-commits`,
and `[cards] require = true` on a host."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agentsite import agent_argv, page
from tests.gitremote import git_env, run_git

HOOK = Path(__file__).resolve().parents[1] / "packaging" / "git-hooks" / "commit-msg"


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "site"
    run_git(["init", "-q", "-b", "main", str(path)])
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    shutil.copy(HOOK, hooks / "commit-msg")
    run_git(["config", "core.hooksPath", str(hooks)], cwd=path)
    return path


def commit(repo: Path, message: str, *, allow_empty: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=repo,
                          env=git_env(), capture_output=True, text=True, timeout=30,
                          check=False)


def test_hook_accepts_a_message_with_a_card(repo):
    assert commit(repo, "B321: fix the footer").returncode == 0
    assert commit(repo, "fix the footer\n\nPart of C1024.").returncode == 0


def test_hook_refuses_a_message_without_a_card(repo):
    result = commit(repo, "fix the footer")
    assert result.returncode == 1
    assert "names no card ID" in result.stderr
    assert run_git(["rev-list", "--all", "--count"], cwd=repo, check=False).stdout.strip() == "0"


def test_hook_lets_merges_and_fixups_through_and_reads_a_custom_pattern(repo):
    assert commit(repo, "B100: base").returncode == 0
    assert commit(repo, "fixup! B100: base").returncode == 0
    assert commit(repo, "Merge branch 'x'").returncode == 0
    run_git(["config", "cards.pattern", "TICKET-[0-9]+"], cwd=repo)
    assert commit(repo, "B321: old style").returncode == 1
    assert commit(repo, "TICKET-7: new style").returncode == 0


def check_commits(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*agent_argv(), "check-commits", *args, "--repo", str(repo)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_check_commits_names_the_uncarded_commits(tmp_path):
    repo = tmp_path / "plain"
    run_git(["init", "-q", "-b", "main", str(repo)])
    run_git(["commit", "-q", "--allow-empty", "-m", "B100: base"], cwd=repo)
    base = run_git(["rev-parse", "HEAD"], cwd=repo).stdout.strip()
    run_git(["commit", "-q", "--allow-empty", "-m", "B101: good"], cwd=repo)
    run_git(["commit", "-q", "--allow-empty", "-m", "quick fix"], cwd=repo)
    bad = run_git(["rev-parse", "HEAD"], cwd=repo).stdout.strip()
    result = check_commits(repo, f"{base}..HEAD")
    assert result.returncode == 1
    assert result.stdout.count("no card ID") == 1
    assert bad[:10] in result.stdout and "quick fix" in result.stdout
    assert check_commits(repo, f"{base}..HEAD~1").returncode == 0
    assert check_commits(repo, f"{base}..HEAD", "--pattern", "quick").returncode == 1  # B101
    bad_range = check_commits(repo, "nope..HEAD")
    assert bad_range.returncode == 2
    assert "cannot read 'nope..HEAD'" in bad_range.stderr


def test_check_commits_does_not_count_merge_commits(tmp_path):
    repo = tmp_path / "merges"
    run_git(["init", "-q", "-b", "main", str(repo)])
    run_git(["commit", "-q", "--allow-empty", "-m", "B100: base"], cwd=repo)
    base = run_git(["rev-parse", "HEAD"], cwd=repo).stdout.strip()
    run_git(["checkout", "-q", "-b", "feature"], cwd=repo)
    run_git(["commit", "-q", "--allow-empty", "-m", "B200: feature"], cwd=repo)
    run_git(["checkout", "-q", "main"], cwd=repo)
    run_git(["commit", "-q", "--allow-empty", "-m", "B201: main work"], cwd=repo)
    run_git(["merge", "-q", "--no-ff", "-m", "Merge branch feature", "feature"], cwd=repo)
    assert check_commits(repo, f"{base}..HEAD").returncode == 0


def test_require_refuses_a_release_with_uncarded_commits(host, git_remote):
    host.extra_config = "\n[cards]\nrequire = true\n"
    host.write_config()
    git_remote.commit_and_push("dev1", {"index.html": page("B1 one")}, "B101: one")
    assert host.call("once").returncode == 0
    git_remote.commit("dev1", {"index.html": page("two")}, "two, no card")
    sha = git_remote.commit("dev1", {"index.html": page("B3 three")}, "B103: three")
    git_remote.push("dev1")
    result = host.call("once")
    assert result.returncode == 1
    record = host.ci_cd()["deploys"][0]
    assert (record["outcome"], record["step"], record["commit"]) == ("failed", "cards", sha)
    assert "1 commit(s) without a card ID" in record["error"]
    assert host.get("/") == (200, page("B1 one"))
    assert host.restarts() == 1
    # an operator may still push it through
    assert host.call("deploy", "--ref", "dev1").returncode == 0
    assert host.get("/") == (200, page("B3 three"))
    assert json.loads(host.call("status", "--json").stdout)["live"]["commit"] == sha
