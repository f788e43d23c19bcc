"""The live path in an odd state (issue #9, class 4): a plain file, a dangling symlink or a
symlink out of releases_dir at [deploy] path is one recorded `failed` deploy at the switch
step naming the true cause; nothing more is staged until the path or the commit changes."""

from __future__ import annotations

import pytest

from tests.agentsite import page


def odd_plain_file(host, tmp_path):
    host.live.write_text("not a theme\n")
    return "is a plain file"


def odd_dangling_link(host, tmp_path):
    host.live.symlink_to(tmp_path / "nowhere")
    return "which does not exist"


def odd_link_elsewhere(host, tmp_path):
    elsewhere = tmp_path / "hand-installed-theme"
    elsewhere.mkdir()
    (elsewhere / "index.html").write_text(page("by hand"))
    host.live.symlink_to(elsewhere)
    return "outside"


@pytest.mark.parametrize("make_odd", [odd_plain_file, odd_dangling_link, odd_link_elsewhere])
def test_an_odd_live_path_is_one_failed_deploy_until_it_changes(host, git_remote, tmp_path,
                                                                make_odd):
    cause = make_odd(host, tmp_path)
    sha = git_remote.commit_and_push("dev1", {"index.html": page("B950 x")}, "B950: x")
    result = host.call("once")
    assert result.returncode == 1, result.stderr
    assert cause in result.stdout
    [record] = host.ci_cd()["deploys"]
    assert (record["outcome"], record["step"], record["commit"]) == ("failed", "switch", sha)
    assert cause in record["error"] and str(host.live) in record["error"]
    releases = host.state_dir / "releases"
    staged = sorted(releases.iterdir()) if releases.exists() else []
    assert staged == []
    for _ in range(2):  # later polls: nothing staged, nothing recorded, no restart
        result = host.call("once")
        assert result.returncode == 0, result.stderr
        assert "quarantined" in result.stdout
    assert len(host.ci_cd()["deploys"]) == 1
    assert (sorted(releases.iterdir()) if releases.exists() else []) == []
    assert host.restarts() == 0
    # The operator fixes the path: the same commit deploys.
    host.live.unlink()
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.get("/") == (200, page("B950 x"))
