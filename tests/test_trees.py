"""Trees a plain git export cannot reproduce faithfully (#9 class 2): links out of the
release, submodules, Git LFS files, file names that are not UTF-8. Real git repositories
(tests/gitremote.py), the real RemoteCache.export and Releases.stage."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.lfs import parse_pointer
from agent.releases import Releases
from agent.remote import RemoteCache
from agent.submodules import resolve_url
from agent.trees import TreeError, check_links, may_need_filling
from tests.gitremote import GitRemote, run_git

NOW = datetime(2026, 11, 29, 3, 30, 0, 123456, tzinfo=timezone.utc)
TIMEOUT = 20.0
LFS_PAYLOAD = os.urandom(3000)


def stage(tmp_path: Path, remote: GitRemote, branch: str = "dev1") -> Path:
    """Fetch the branch's head and stage it as the agent does; the staging directory."""
    sha = remote.head(branch)
    cache = RemoteCache(tmp_path / "state" / "cache" / "remote.git", remote.url, TIMEOUT)
    cache.fetch(branch, sha)
    releases = Releases(tmp_path / "releases", tmp_path / "themes" / "acme")
    return releases.stage(sha, NOW, lambda dest: cache.export(sha, dest))


def refused(tmp_path: Path, remote: GitRemote) -> str:
    """Stage, expecting a refusal; its message. Nothing may be left in releases_dir."""
    with pytest.raises(TreeError) as info:
        stage(tmp_path, remote)
    leftovers = os.listdir(tmp_path / "releases") if (tmp_path / "releases").exists() else []
    assert leftovers == []
    assert "\n" not in info.value.message
    return info.value.message


# -- symlinks ----------------------------------------------------------------------------------


def test_an_absolute_link_out_of_the_release_is_refused(tmp_path, git_remote):
    git_remote.commit_and_push("dev1", {"index.hbs": "home"}, "B100 theme",
                               links={"assets/passwd.css": "/etc/passwd"})
    message = refused(tmp_path, git_remote)
    assert "assets/passwd.css -> /etc/passwd" in message


def test_a_relative_link_climbing_out_of_the_release_is_refused(tmp_path, git_remote):
    git_remote.commit_and_push("dev1", {"index.hbs": "home"}, "B100 theme",
                               links={"assets/img/root": "../../../../../../.."})
    assert "assets/img/root -> ../../../../../../.." in refused(tmp_path, git_remote)


def test_a_chain_of_links_that_ends_outside_is_refused(tmp_path, git_remote):
    # d/l -> .. stays inside (it is the release's root), but assets/all walks through it
    # and one level up: into releases_dir, where every other release lies. Read as text,
    # "../d/l/.." would look like "d", inside.
    git_remote.commit_and_push("dev1", {"index.hbs": "home", "d/keep": ""}, "B100 theme",
                               links={"d/l": "..", "assets/all": "../d/l/..",
                                      "a.css": "b.css", "b.css": "/etc/shadow"})
    message = refused(tmp_path, git_remote)
    assert "assets/all -> ../d/l/.." in message
    assert "b.css -> /etc/shadow" in message
    assert "d/l" not in message.replace("../d/l/..", "")  # that link alone stays inside


def test_links_that_stay_inside_the_release_deploy(tmp_path, git_remote):
    git_remote.commit_and_push(
        "dev1", {"index.hbs": "home", "images/logo.svg": "<svg/>", "v2/app.js": "js"},
        "B100 theme",
        links={"assets/logo.svg": "../images/logo.svg", "latest": "v2", "self": ".",
               "d/up": "..", "later.css": "built/later.css", "loop-a": "loop-b",
               "loop-b": "loop-a"})
    staging = stage(tmp_path, git_remote)
    assert (staging / "assets" / "logo.svg").read_text() == "<svg/>"
    assert os.readlink(staging / "latest") == "v2"
    assert (staging / "latest" / "app.js").read_text() == "js"
    assert os.readlink(staging / "later.css") == "built/later.css"  # dangling, inside: fine


def test_a_long_list_of_links_is_named_in_one_line(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    for n in range(15):
        os.symlink(f"/etc/file{n:02}", root / f"link{n:02}")
    with pytest.raises(TreeError) as info:
        check_links(root)
    message = info.value.message
    assert "link00 -> /etc/file00" in message and "link09 -> /etc/file09" in message
    assert "link10" not in message
    assert message.endswith("and 5 more")


# -- submodules --------------------------------------------------------------------------------


def add_submodule(site: GitRemote, url: str, path: str, commit: str) -> None:
    """Record `commit` of the repository at `url` as a submodule at `path` of dev1."""
    site.git("-c", "protocol.file.allow=always", "submodule", "--quiet", "add", url, path)
    site.git("-C", path, "checkout", "--quiet", commit)
    site.git("add", path)


@pytest.fixture
def theme(tmp_path) -> GitRemote:
    """A second remote beside the site's: a theme used as a submodule (../theme.git)."""
    return GitRemote(tmp_path / "remote", name="theme")


def test_a_submodule_is_deployed_with_its_recorded_commit(tmp_path, git_remote, theme):
    pinned = theme.commit_and_push("main", {"partials/card.hbs": "card v1"}, "card v1")
    theme.commit_and_push("main", {"partials/card.hbs": "card v2"}, "card v2")
    git_remote.commit("dev1", {"index.hbs": "home"}, "B100 theme")
    add_submodule(git_remote, "../theme.git", "vendor/theme", pinned)
    git_remote.git("commit", "--quiet", "-m", "B101 the card theme")
    git_remote.push("dev1")
    assert "url = ../theme.git" in (git_remote.work / ".gitmodules").read_text()

    staging = stage(tmp_path, git_remote)
    assert (staging / "vendor" / "theme" / "partials" / "card.hbs").read_text() == "card v1"
    assert not (staging / "vendor" / "theme" / ".git").exists()
    assert list((tmp_path / "state" / "cache" / "submodules").glob("*/remote.git"))


def test_a_nested_submodule_is_deployed_too(tmp_path, git_remote, theme):
    icons = GitRemote(tmp_path / "remote", name="icons")
    icon = icons.commit_and_push("main", {"star.svg": "<svg>star</svg>"}, "star")
    theme.commit("main", {"partials/card.hbs": "card"}, "card")
    add_submodule(theme, "../icons.git", "icons", icon)
    theme.git("commit", "--quiet", "-m", "icons")
    theme.push("main")
    git_remote.commit("dev1", {"index.hbs": "home"}, "B100 theme")
    add_submodule(git_remote, "../theme.git", "vendor/theme", theme.head("main"))
    git_remote.git("commit", "--quiet", "-m", "B101 the card theme")
    git_remote.push("dev1")

    staging = stage(tmp_path, git_remote)
    assert (staging / "vendor" / "theme" / "icons" / "star.svg").read_text() == "<svg>star</svg>"


def test_a_submodule_whose_url_cannot_be_fetched_is_refused(tmp_path, git_remote, theme):
    pinned = theme.commit_and_push("main", {"partials/card.hbs": "card v1"}, "card v1")
    git_remote.commit("dev1", {"index.hbs": "home"}, "B100 theme")
    add_submodule(git_remote, "../theme.git", "vendor/theme", pinned)
    git_remote.git("commit", "--quiet", "-m", "B101 the card theme")
    git_remote.push("dev1")
    shutil.move(theme.path, tmp_path / "theme-moved.git")  # the URL leads nowhere now

    message = refused(tmp_path, git_remote)
    assert message.startswith("submodules cannot be deployed: vendor/theme (")
    assert "cannot fetch" in message


def test_a_submodule_on_a_path_of_this_host_is_refused_for_a_network_remote(
        tmp_path, http_git, http_git_remote, theme):
    pinned = theme.commit_and_push("main", {"secret.txt": "host-only"}, "private")
    http_git_remote.commit("dev1", {"index.hbs": "home"}, "B100 theme")
    add_submodule(http_git_remote, str(theme.path), "vendor/theme", pinned)
    http_git_remote.git("commit", "--quiet", "-m", "B101 pull in a repository of this host")
    http_git_remote.push("dev1")
    sha = http_git_remote.head("dev1")
    cache = RemoteCache(tmp_path / "state" / "cache" / "remote.git",
                        http_git.repo_url("site.git"), TIMEOUT)
    cache.fetch("dev1", sha)
    releases = Releases(tmp_path / "releases", tmp_path / "themes" / "acme")
    with pytest.raises(TreeError, match="is a path on this host"):
        releases.stage(sha, NOW, lambda dest: cache.export(sha, dest))
    assert os.listdir(releases.dir) == []


@pytest.mark.parametrize(("url", "base", "expected"), [
    ("../theme.git", "/srv/git/site.git", "/srv/git/theme.git"),
    ("./theme", "/srv/git/site.git/", "/srv/git/site.git/theme"),
    ("../theme.git", "file:///srv/git/site.git", "file:///srv/git/theme.git"),
    ("../theme.git", "https://git.example/acme/site.git", "https://git.example/acme/theme.git"),
    ("../../other/theme.git", "https://git.example/acme/site.git",
     "https://git.example/other/theme.git"),
    ("../theme.git", "git@github.com:acme/site.git", "git@github.com:acme/theme.git"),
    ("../../theme.git", "git@github.com:acme/site.git", "git@github.com:theme.git"),
    ("../../../theme.git", "https://git.example/acme/site.git", None),
    ("https://git.example/x.git", "/srv/git/site.git", "https://git.example/x.git"),
])
def test_submodule_urls_are_read_as_git_reads_them(url, base, expected):
    assert resolve_url(url, base) == expected


# -- Git LFS -------------------------------------------------------------------------------------

OID = "b233501b779da5a24a4569d57e483be005211f7a044c02a313fd1231dbb97e25"


@pytest.mark.parametrize(("data", "expected"), [
    (f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 3000\n", (OID, 3000)),
    (f"version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{'0' * 64}\n"
     f"oid sha256:{OID}\nsize 12\n", (OID, 12)),
    (f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 3000", None),
    (f"version https://example.invalid/v1\noid sha256:{OID}\nsize 3000\n", None),
    (f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID[:-1]}\nsize 3000\n", None),
    (f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize -1\n", None),
    ("body { color: red }\n", None),
])
def test_lfs_pointers_are_told_from_ordinary_files(data, expected):
    assert parse_pointer(data.encode()) == expected



def lfs_commit(site: GitRemote) -> None:
    """dev1 with a Git LFS file (media/hero.bin) pushed with its object to the bare repo."""
    site.commit("dev1", {"index.hbs": "home"}, "B100 theme")
    site.git("lfs", "install", "--local")
    site.git("lfs", "track", "*.bin")
    (site.work / "media").mkdir()
    (site.work / "media" / "hero.bin").write_bytes(LFS_PAYLOAD)
    site.git("add", ".gitattributes", "media/hero.bin")
    site.git("commit", "--quiet", "-m", "B101 the hero image")
    site.push("dev1")
    pointer = site.git_bare("cat-file", "-p", "dev1:media/hero.bin")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")  # stored as LFS


needs_lfs = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs not installed")


@needs_lfs
def test_an_lfs_file_is_deployed_with_its_content(tmp_path, git_remote):
    lfs_commit(git_remote)
    staging = stage(tmp_path, git_remote)
    assert (staging / "media" / "hero.bin").read_bytes() == LFS_PAYLOAD
    assert (staging / "index.hbs").read_text() == "home"


@needs_lfs
def test_an_lfs_file_is_refused_without_git_lfs(tmp_path, git_remote, monkeypatch):
    lfs_commit(git_remote)
    bare_path = tmp_path / "only-git"  # a PATH where git is, and git-lfs is not
    bare_path.mkdir()
    os.symlink(shutil.which("git"), bare_path / "git")
    monkeypatch.setenv("PATH", str(bare_path))
    assert run_git(["lfs", "version"], check=False).returncode != 0
    message = refused(tmp_path, git_remote)
    assert "git-lfs is not installed" in message and "media/hero.bin" in message


@needs_lfs
def test_an_lfs_file_whose_object_is_gone_is_refused(tmp_path, git_remote):
    lfs_commit(git_remote)
    shutil.rmtree(git_remote.path / "lfs" / "objects")
    message = refused(tmp_path, git_remote)
    assert message.startswith("Git LFS objects cannot be fetched (")
    assert message.endswith(": media/hero.bin")


def test_a_pointer_without_lfs_attributes_deploys_as_the_text_git_gives(tmp_path, git_remote):
    # git-lfs smudges only what .gitattributes marks; a clone would show this text, too.
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{'ab' * 32}\nsize 3000\n"
    git_remote.commit_and_push("dev1", {"index.hbs": "home", "media/hero.bin": pointer},
                               "B102 a pointer committed by hand")
    staging = stage(tmp_path, git_remote)
    assert (staging / "media" / "hero.bin").read_text() == pointer


@pytest.mark.parametrize("layout, expected", [
    ({"index.hbs": "f", "assets/css/a.css": "f"}, False),
    ({"index.hbs": "f", "assets/.gitattributes": "*.bin filter=lfs"}, True),
    ({"index.hbs": "f", "vendor/lib/": None}, True),  # empty: how a submodule is checked out
    ({}, True),
])
def test_only_a_tree_with_a_submodule_or_attributes_may_need_filling(tmp_path, layout,
                                                                     expected):
    root = tmp_path / "tree"
    root.mkdir()
    for name, text in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            path.mkdir()
        else:
            path.write_text(text)
    assert may_need_filling(root) is expected


# -- names that are not UTF-8 ------------------------------------------------------------------


def test_file_names_that_are_not_utf8_deploy(tmp_path, git_remote):
    latin1 = os.fsdecode(b"caf\xe9.css")  # "café.css" as Latin-1 bytes
    git_remote.commit_and_push("dev1", {"index.hbs": "home", latin1: "body{}",
                                        os.fsdecode(b"img/\xff\xfe/x.svg"): "<svg/>"},
                               "B100 theme", links={os.fsdecode(b"alias-\xe9.css"): latin1})
    staging = stage(tmp_path, git_remote)
    names = set(os.listdir(os.fsencode(staging)))
    assert {b"caf\xe9.css", b"alias-\xe9.css", b"index.hbs", b"img"} <= names
    assert (staging / latin1).read_text() == "body{}"
    assert (staging / os.fsdecode(b"img/\xff\xfe/x.svg")).read_text() == "<svg/>"


def test_a_refusal_names_a_path_that_is_not_utf8_readably(tmp_path, git_remote):
    git_remote.commit_and_push("dev1", {"index.hbs": "home"}, "B100 theme",
                               links={os.fsdecode(b"caf\xe9.css"): "/etc/passwd"})
    message = refused(tmp_path, git_remote)
    assert "caf\\xe9.css -> /etc/passwd" in message
    message.encode("utf-8")  # always valid UTF-8: the state file can hold it


# -- the command (in this process) --------------------------------------------------------------


def test_once_refuses_a_link_out_and_keeps_the_live_release(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 v1")
    assert host.call("once").returncode == 0
    live = host.live_target()
    bad = git_remote.commit_and_push("dev1", {"index.html": "v2"}, "B200 v2",
                                     links={"assets/passwd.css": "/etc/passwd"})
    result = host.call("once")
    assert result.returncode == 1, result.stderr
    assert "assets/passwd.css -> /etc/passwd" in result.stdout + result.stderr
    assert host.live_target() == live and host.get()[1] == "v1"
    assert bad in host.state()["quarantine"]
    releases = host.state_dir / "releases"
    assert [p.name for p in releases.iterdir() if p.name.startswith(".")] == []
