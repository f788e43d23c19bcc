"""Bytes from git that are not UTF-8 (#9 class 1): branch names, commit messages, odd answers.

git accepts a branch named `staging1-` followed by the byte 0xB1; every string the agent
keeps must still be valid UTF-8, so the state file can always be saved."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from agent.errors import RemoteError
from agent.remote import RemoteCache, parse_heads
from agent.selection import heads_patterns, select
from tests.gitremote import GitRemote

SHA1, SHA2 = "1" * 40, "2" * 40


def add_branch(remote: GitRemote, name: bytes, commit: str) -> None:
    """A branch whose name is raw bytes, as a push from any client can make it."""
    subprocess.run([b"git", b"--git-dir", os.fsencode(remote.path), b"update-ref",
                    b"refs/heads/" + name, commit.encode()], check=True, timeout=30)


def add_raw_commit(remote: GitRemote, branch: str, parent: str, message: bytes) -> str:
    """A commit on top of parent whose message is raw bytes (Latin-1, as an old client or
    `git hash-object` writes it; `git commit` itself would convert it), pushed as branch."""
    tree = remote.git_bare("rev-parse", f"{parent}^{{tree}}")
    raw = (f"tree {tree}\nparent {parent}\n"
           "author A <a@example.invalid> 1795984144 +0000\n"
           "committer A <a@example.invalid> 1795984144 +0000\n\n").encode() + message
    sha = subprocess.run(["git", "--git-dir", str(remote.path), "hash-object", "-t", "commit",
                          "-w", "--stdin"], input=raw, capture_output=True, check=True,
                         timeout=30).stdout.decode().strip()
    add_branch(remote, branch.encode(), sha)
    return sha


# -- parsing ls-remote --------------------------------------------------------------------------


def test_a_branch_name_that_is_not_utf8_is_set_apart_with_escapes():
    out = (f"{SHA1}\trefs/heads/staging1-1.0\n".encode()
           + f"{SHA2}\t".encode() + b"refs/heads/staging1-\xb1\n")
    snapshot = parse_heads(out, "/srv/site.git")
    assert snapshot.heads == {"staging1-1.0": SHA1}
    assert snapshot.undecodable == ("staging1-\\xb1",)
    json.dumps(snapshot.undecodable, ensure_ascii=False).encode("utf-8")


def test_surrogate_bytes_are_not_utf8_either():
    out = f"{SHA1}\t".encode() + b"refs/heads/dev1-\xed\xa0\x80\n"  # an encoded surrogate
    snapshot = parse_heads(out, "/srv/site.git")
    assert snapshot.heads == {} and snapshot.undecodable == ("dev1-\\xed\\xa0\\x80",)


@pytest.mark.parametrize("line", [
    b"garbage",
    b"\xff\xfe\x00\x01",
    SHA1.encode() + b" refs/heads/dev1",  # a space, not a tab
    SHA1.encode()[:39] + b"\trefs/heads/dev1",
    SHA1.encode() + b"\trefs/tags/v1",
    SHA1.encode() + b"\trefs/heads/",
])
def test_an_odd_answer_from_the_remote_is_a_remote_error(line):
    with pytest.raises(RemoteError, match="unexpected answer from the remote") as info:
        parse_heads(line + b"\n", "https://user:PW@example.invalid/site.git")
    info.value.message.encode("utf-8")  # valid text even for garbage bytes
    assert "PW" not in info.value.message


# -- a real remote ----------------------------------------------------------------------------


def test_heads_of_a_real_remote_with_such_a_branch(tmp_path, git_remote):
    sha = git_remote.commit_and_push("staging1-1.0", {"index.html": "v1"}, "B100 first")
    add_branch(git_remote, b"staging1-\xb1", sha)
    cache = RemoteCache(tmp_path / "state" / "cache.git", git_remote.url, 20)
    snapshot = cache.heads(heads_patterns("staging1*"))
    assert snapshot.heads == {"staging1-1.0": sha}
    assert snapshot.undecodable == ("staging1-\\xb1",)
    assert select(snapshot, "staging1*").target.branch == "staging1-1.0"


def test_a_commit_message_that_is_not_utf8_is_read_with_replacement_characters(tmp_path,
                                                                               git_remote):
    parent = git_remote.commit_and_push("dev1", {"index.html": "v1"}, "B100 first")
    sha = add_raw_commit(git_remote, "dev1", parent, b"B101 caf\xe9 cr\xe8me\n")
    cache = RemoteCache(tmp_path / "state" / "cache.git", git_remote.url, 20)
    cache.fetch("dev1", sha)
    commits, _ = cache.log(sha, None)
    assert commits[0] == (sha, 1, "B101 caf\ufffd cr\ufffdme")
    for _, _, text in commits:
        text.encode("utf-8")


# -- the command (in this process, through stdout/stderr encoded as a process's) ---------------


def test_once_deploys_beside_a_branch_that_is_not_utf8(make_host, git_remote):
    host = make_host("staging1*")
    first = git_remote.commit_and_push("staging1-1.0", {"index.html": "v1",
                                                       os.fsdecode(b"caf\xe9.css"): "x"},
                                       "B100 first")
    sha = add_raw_commit(git_remote, "staging1-1.0", first, b"no card, caf\xe9\n")
    add_branch(git_remote, b"staging1-\xb1", sha)
    add_branch(git_remote, b"staging1-9.\xff", sha)
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert host.live_target() is not None and host.get()[1] == "v1"
    state = (host.state_dir / "state.json").read_bytes().decode("utf-8")  # strict
    assert json.loads(state)["releases"][0]["commit"] == sha
    assert (host.live / os.fsdecode(b"caf\xe9.css")).read_text() == "x"
    again = host.call("once")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
