"""A damaged git cache (#10 class 1): the cache under state_dir is disposable. When git says
it is broken, it is set aside (remote.git.broken-<time>, the newest one kept), made again
and refilled, with one warning, and the deploy goes on. A healthy cache is never thrown
away because the remote is down. Driven through the real `ghost-agent once` (a process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agent.errors import RemoteError
from agent.remote import RemoteCache
from tests.agentsite import page


def cache_of(host) -> Path:
    return host.state_dir / "cache" / "remote.git"


def set_aside(host) -> list[str]:
    return sorted(p.name for p in cache_of(host).parent.glob("remote.git.broken-*"))


def garbage_head(cache: Path) -> None:
    (cache / "HEAD").write_bytes(b"\x00\xffnot a ref at all\n")


def objects_removed(cache: Path) -> None:
    shutil.rmtree(cache / "objects")


def garbage_config(cache: Path) -> None:
    # chmod 000 does not stop root; a config git cannot parse does.
    (cache / "config").write_bytes(b"[core\x00\xff garbage = = =\n[[[\n")


@pytest.fixture
def deployed(host, git_remote):
    """A host with dev1 v1 live, its cache filled by that deploy."""
    git_remote.commit_and_push("dev1", {"index.html": page("v1")}, "B100 v1")
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    assert cache_of(host).is_dir()
    return host


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("damage", [garbage_head, objects_removed, garbage_config],
                         ids=["garbage-in-HEAD", "objects-removed", "garbage-in-config"])
def test_a_damaged_cache_is_set_aside_refilled_and_the_deploy_goes_on(deployed, git_remote,
                                                                      damage):
    host = deployed
    damage(cache_of(host))
    v2 = git_remote.commit_and_push("dev1", {"index.html": page("v2")}, "B200 v2")
    result = host.run("once")
    assert result.returncode == 0, result.stderr
    assert "deployed" in result.stdout
    assert host.get()[1] == page("v2")
    assert host.state()["releases"][0]["commit"] == v2
    warnings = [line for line in result.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], result.stderr
    assert len(set_aside(host)) == 1
    # the new cache is a whole one: the next push deploys without another warning
    git_remote.commit_and_push("dev1", {"index.html": page("v3")}, "B300 v3")
    again = host.run("once")
    assert again.returncode == 0, again.stderr
    assert "broken" not in again.stderr
    assert host.get()[1] == page("v3")


@pytest.mark.slow  # a real process
def test_only_the_newest_broken_cache_is_kept(deployed, git_remote):
    host = deployed
    for n, damage in enumerate((garbage_head, garbage_config), start=2):
        damage(cache_of(host))
        git_remote.commit_and_push("dev1", {"index.html": page(f"v{n}")}, f"B{n}00 v{n}")
        result = host.run("once")
        assert result.returncode == 0, result.stderr
    kept = set_aside(host)
    assert len(kept) == 1
    config = cache_of(host).parent / kept[0] / "config"
    assert b"garbage" in config.read_bytes()  # the newest damage is the one kept


@pytest.mark.slow  # a real process
def test_an_unreachable_remote_keeps_the_cache(deployed, git_remote, tmp_path):
    host = deployed
    inode = cache_of(host).stat().st_ino
    moved = tmp_path / "remote-away.git"
    shutil.move(git_remote.path, moved)
    result = host.run("once")
    assert result.returncode == 75, result.stderr
    assert cache_of(host).stat().st_ino == inode
    assert set_aside(host) == []
    assert "broken" not in result.stderr
    shutil.move(moved, git_remote.path)
    git_remote.commit_and_push("dev1", {"index.html": page("v2")}, "B200 v2")
    back = host.run("once")
    assert back.returncode == 0, back.stderr
    assert cache_of(host).stat().st_ino == inode
    assert set_aside(host) == []


def test_a_fetch_that_fails_on_the_remote_side_keeps_the_cache(tmp_path, git_remote):
    """The poll's ls-remote sees the remote; the fetch then fails: the cache is checked, found
    healthy and kept."""
    v1 = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 v1")
    cache = RemoteCache(tmp_path / "state" / "cache" / "remote.git", git_remote.url, 20)
    cache.fetch("dev1", v1)
    inode = cache.cache_dir.stat().st_ino
    v2 = git_remote.commit_and_push("dev1", {"index.html": "v2"}, "B200 v2")
    os.rename(git_remote.path, tmp_path / "away.git")
    with pytest.raises(RemoteError, match="cannot fetch dev1"):
        cache.fetch("dev1", v2)
    assert cache.cache_dir.stat().st_ino == inode and cache.has_commit(v1)
    assert list(cache.cache_dir.parent.glob("remote.git.broken-*")) == []
