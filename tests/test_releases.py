"""agent.releases: release directories and the live symlink, on real files in tmp_path."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.errors import CommandError, DeployError, HostError
from agent.releases import STAGING_PREFIX, Releases
from agent.remote import RemoteCache

NOW = datetime(2026, 11, 26, 14, 0, 3, 123456, tzinfo=timezone.utc)
SHA = "a1b2c3d4e5f6" + "0" * 28


@pytest.fixture
def rel(tmp_path: Path) -> Releases:
    return Releases(tmp_path / "releases", tmp_path / "themes" / "acme")


def writer(**files: str):
    """An export callable: creates dest and writes files into it."""

    def export(dest: Path) -> None:
        dest.mkdir()
        for name, text in files.items():
            (dest / name).write_text(text)

    return export


def release(rel: Releases, n: int, **files: str) -> Path:
    staging = rel.stage(f"{n:012x}" + "f" * 28, NOW + timedelta(seconds=n), writer(**files))
    return rel.finish(staging)


# -- stage, build, finish ------------------------------------------------------------------


def test_stage_exports_into_a_hidden_staging_dir(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    assert staging.parent == rel.dir
    assert staging.name == f"{STAGING_PREFIX}20261126T140003123456Z-a1b2c3d4e5f6"
    assert (staging / "index.html").read_text() == "v1"


def test_build_runs_argv_in_the_staging_dir(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    script = "import pathlib; pathlib.Path('built.txt').write_text(open('index.html').read() + '!')"
    rel.build(staging, [[sys.executable, "-c", script]], timeout=30)
    assert (staging / "built.txt").read_text() == "v1!"


def test_build_failure_raises_command_error_with_stderr(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    code = "import sys; sys.stderr.write('npm ERR! missing\\n'); sys.exit(3)"
    fail = [sys.executable, "-c", code]
    never = [sys.executable, "-c", "open('second.txt', 'w')"]
    with pytest.raises(CommandError) as info:
        rel.build(staging, [fail, never], timeout=30)
    assert "exited with 3" in str(info.value)
    assert "npm ERR! missing" in str(info.value)
    assert not (staging / "second.txt").exists()  # stops at the first failure


def test_build_timeout_raises_command_error(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        rel.build(staging, [[sys.executable, "-c", "import time; time.sleep(30)"]], timeout=0.5)
    assert time.monotonic() - started < 10


def test_finish_gives_the_final_name(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    final = rel.finish(staging)
    assert final == rel.dir / "20261126T140003123456Z-a1b2c3d4e5f6"
    assert (final / "index.html").read_text() == "v1"
    assert not staging.exists()


# -- switch -------------------------------------------------------------------------------


def test_switch_points_the_live_link_and_replaces_it(rel):
    a, b = release(rel, 1, **{"index.html": "A"}), release(rel, 2, **{"index.html": "B"})
    rel.switch(a)
    assert rel.live_path.is_symlink()
    assert (rel.live_path / "index.html").read_text() == "A"
    assert rel.live() == a.resolve()
    rel.switch(b)
    assert (rel.live_path / "index.html").read_text() == "B"
    assert rel.live() == b.resolve()
    assert sorted(p.name for p in rel.live_path.parent.iterdir()) == ["acme"]  # no temp link left


def test_switch_is_atomic_for_a_concurrent_reader(rel):
    a, b = release(rel, 1), release(rel, 2)
    rel.switch(a)
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                target = os.readlink(rel.live_path)
            except OSError as exc:
                problems.append(repr(exc))
                return
            if target not in (str(a), str(b)):
                problems.append(target)
                return
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(2000):
            rel.switch(b if i % 2 else a)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert reads > 0


def test_switch_none_removes_the_link(rel):
    a = release(rel, 1)
    rel.switch(a)
    rel.switch(None)
    assert not rel.live_path.is_symlink() and not rel.live_path.exists()
    assert rel.live() is None
    assert a.is_dir()  # the release itself stays
    rel.switch(None)  # no link: nothing to do


def test_switch_refuses_to_replace_a_real_directory(rel):
    rel.live_path.mkdir(parents=True)
    (rel.live_path / "hand-made.txt").write_text("keep me")
    with pytest.raises(DeployError, match="real directory"):
        rel.switch(release(rel, 1))
    assert (rel.live_path / "hand-made.txt").read_text() == "keep me"
    assert not rel.live_path.is_symlink()


# -- adopt_existing --------------------------------------------------------------------------


def test_adopt_existing_moves_a_plain_dir_into_releases_and_links_it(rel):
    rel.live_path.mkdir(parents=True)
    (rel.live_path / "index.html").write_text("hand installed")
    adopted = rel.adopt_existing(NOW)
    assert adopted == rel.dir / "20261126T140003123456Z-adopted"
    assert (adopted / "index.html").read_text() == "hand installed"
    assert rel.live_path.is_symlink()
    assert rel.live() == adopted.resolve()
    assert (rel.live_path / "index.html").read_text() == "hand installed"


def test_adopt_existing_does_nothing_for_a_link_or_nothing(rel):
    assert rel.adopt_existing(NOW) is None  # no live path at all
    a = release(rel, 1)
    rel.switch(a)
    assert rel.adopt_existing(NOW) is None
    assert rel.live() == a.resolve()


# -- prune ----------------------------------------------------------------------------------


def test_prune_keeps_given_and_live_removes_others(rel):
    r1, r2, r3, r4 = (release(rel, n, **{"index.html": str(n)}) for n in (1, 2, 3, 4))
    rel.switch(r4)
    removed = rel.prune([r3])
    assert sorted(removed) == sorted([r1, r2])
    assert sorted(p.name for p in rel.dir.iterdir()) == sorted([r3.name, r4.name])


def test_prune_never_removes_the_live_release_even_when_not_kept(rel):
    r1, r2 = release(rel, 1), release(rel, 2)
    rel.switch(r1)
    rel.prune([r2])
    assert r1.is_dir() and r2.is_dir()


def test_prune_removes_staging_leftovers(rel):
    live = release(rel, 1)
    rel.switch(live)
    leftover = rel.stage(SHA, NOW, writer(**{"index.html": "half"}))
    index = rel.dir / f".index-{leftover.name}"
    index.write_text("stale index")
    rel.prune([])
    assert not leftover.exists()
    assert not index.exists()
    assert live.is_dir()


def test_prune_never_touches_names_it_did_not_make(rel):
    live = release(rel, 1)
    rel.switch(live)
    foreign = [rel.dir / "my-theme-backup", rel.dir / "20261126-manual", rel.dir / ".staging-x"]
    for path in foreign:
        path.mkdir()
        (path / "file").write_text("mine")
    (rel.dir / "NOTES.txt").write_text("operator notes")
    target = release(rel, 2)
    (rel.dir / "20261126T140003123456Z-linked").symlink_to(target)
    rel.prune([])
    for path in foreign:
        assert (path / "file").read_text() == "mine"
    assert (rel.dir / "NOTES.txt").exists()
    assert (rel.dir / "20261126T140003123456Z-linked").is_symlink()
    assert not target.exists()  # ours, not kept: removed
    assert live.is_dir()


def test_prune_without_releases_dir(rel):
    assert rel.prune([]) == []


def test_adopt_existing_copies_across_filesystems(tmp_path):
    """The theme on one filesystem and releases_dir on another (e.g. /var/www and /var/lib)."""
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp dir")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        live = Path(other) / "themes" / "acme"
        (live / "assets").mkdir(parents=True)
        (live / "index.html").write_text("hand installed")
        os.symlink("index.html", live / "alias.html")
        rel = Releases(tmp_path / "releases", live)
        adopted = rel.adopt_existing(NOW)
        assert adopted == tmp_path / "releases" / "20261126T140003123456Z-adopted"
        assert live.is_symlink() and rel.live() == adopted.resolve()
        assert (live / "index.html").read_text() == "hand installed"
        assert (adopted / "alias.html").is_symlink()  # links are copied as links
        assert sorted(p.name for p in live.parent.iterdir()) == ["acme"]  # nothing left aside


# -- host faults (#9 class 3) -----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs at tmp_path/small (needs root), unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30,
                       check=False)


def remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True, timeout=30)


def test_a_commit_bigger_than_the_disk_is_a_host_error_and_leaves_nothing(tmp_path, small_disk,
                                                                         git_remote):
    sha = git_remote.commit_and_push("dev1", {"index.hbs": "home",
                                              "assets/video.bin": os.urandom(3 << 20)},
                                     "B100 a big file")
    cache = RemoteCache(tmp_path / "state" / "cache" / "remote.git", git_remote.url, 20)
    cache.fetch("dev1", sha)
    rel = Releases(small_disk / "releases", tmp_path / "themes" / "acme")
    with pytest.raises(HostError) as info:
        rel.stage(sha, NOW, lambda dest: cache.export(sha, dest))
    assert "KiB free" in info.value.message or "No space left" in info.value.message
    assert os.listdir(rel.dir) == []  # no .staging-*, no .index-*
    assert info.value.exit_code == 75


def test_a_build_that_fills_the_disk_is_a_host_error_and_leaves_nothing(small_disk):
    rel = Releases(small_disk / "releases", small_disk / "themes" / "acme")
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    fill = ("import sys\ntry:\n    open('bundle.js', 'wb').write(b'x' * (3 << 20))\n"
            "except OSError:\n    pass\nsys.exit('webpack: build broke')")  # says nothing of space
    with pytest.raises(HostError) as info:
        rel.build(staging, [[sys.executable, "-c", fill]], timeout=30)
    assert "KiB free" in info.value.message and "build broke" in info.value.message
    assert os.listdir(rel.dir) == []


@pytest.mark.parametrize("said", ["error: No space left on device",
                                  "npm ERR! nospc ENOSPC: no space left on device, write",
                                  "OSError: [Errno 30] Read-only file system: 'dist'"])
def test_a_build_whose_output_names_a_host_fault_is_a_host_error(rel, said):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    code = f"import sys; sys.stderr.write({said!r} + '\\n'); sys.exit(1)"
    with pytest.raises(HostError, match="build failed"):
        rel.build(staging, [[sys.executable, "-c", code]], timeout=30)
    assert os.listdir(rel.dir) == []


def test_a_build_that_fails_by_itself_stays_a_command_error_and_leaves_nothing(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    with pytest.raises(CommandError):
        rel.build(staging, [[sys.executable, "-c", "raise SystemExit('Permission denied')"]],
                  timeout=30)
    assert os.listdir(rel.dir) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EIO, errno.ENOSPC, errno.EMFILE])
def test_an_export_that_fails_for_the_host_is_a_host_error_and_leaves_nothing(rel, code):
    def export(dest: Path) -> None:
        dest.mkdir()
        (dest / "half.css").write_text("half")
        (rel.dir / f".index-{dest.name}").write_text("index")
        raise OSError(code, os.strerror(code), str(dest / "next.css"))

    with pytest.raises(HostError) as info:
        rel.stage(SHA, NOW, export)
    assert os.strerror(code) in info.value.message
    assert os.listdir(rel.dir) == []


def test_an_export_that_fails_for_the_commit_stays_what_it_was(rel):
    def export(dest: Path) -> None:
        dest.mkdir()
        raise DeployError("cannot read the release tree (x): fatal: not a tree object")

    with pytest.raises(DeployError, match="not a tree object") as info:
        rel.stage(SHA, NOW, export)
    assert not isinstance(info.value, HostError)
    assert os.listdir(rel.dir) == []


def test_finish_on_a_read_only_file_system_is_a_host_error(small_disk):
    rel = Releases(small_disk / "releases", small_disk / "themes" / "acme")
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    remount(small_disk, "ro")
    try:
        with pytest.raises(HostError, match="Read-only file system"):
            rel.finish(staging)
    finally:
        remount(small_disk, "rw")


def test_switch_on_a_read_only_file_system_is_a_host_error_and_keeps_the_link(small_disk):
    rel = Releases(small_disk / "releases", small_disk / "themes" / "acme")
    a, b = release(rel, 1, **{"index.html": "A"}), release(rel, 2, **{"index.html": "B"})
    rel.switch(a)
    remount(small_disk, "ro")
    try:
        with pytest.raises(HostError, match="Read-only file system"):
            rel.switch(b)
        assert rel.live() == a.resolve()
    finally:
        remount(small_disk, "rw")
    assert sorted(os.listdir(rel.live_path.parent)) == ["acme"]  # no temporary link left


def test_the_during_build_failpoint_is_hit_even_without_build_commands(rel):
    staging = rel.stage(SHA, NOW, writer(**{"index.html": "v1"}))
    code = ("import sys; from pathlib import Path; from agent.releases import Releases; "
            "Releases(Path(sys.argv[1]), Path(sys.argv[2])).build(Path(sys.argv[3]), [], 30)")
    env = dict(os.environ, PYTHONPATH=str(REPO), GHOST_AGENT_FAILPOINTS="during-build=kill")
    done = subprocess.run([sys.executable, "-c", code, str(rel.dir), str(rel.live_path),
                           str(staging)], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr
    env["GHOST_AGENT_FAILPOINTS"] = ""
    done = subprocess.run([sys.executable, "-c", code, str(rel.dir), str(rel.live_path),
                           str(staging)], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


# -- the live path in an odd state (#9 class 4) -----------------------------------------------


def test_a_live_path_that_can_be_switched_has_no_problem(rel):
    assert rel.live_path_problem() is None  # absent
    rel.live_path.mkdir(parents=True)
    assert rel.live_path_problem() is None  # a plain directory: adopted
    rel.live_path.rmdir()
    a = release(rel, 1)
    rel.switch(a)
    assert rel.live_path_problem() is None
    os.unlink(rel.live_path)
    os.symlink(os.path.relpath(rel.dir / "20261126T000000000000Z-gone", rel.live_path.parent),
               rel.live_path)
    assert rel.live_path_problem() is None  # dangling, but into releases_dir: switchable


def test_a_live_path_that_is_a_plain_file_is_named(rel):
    rel.live_path.parent.mkdir(parents=True)
    rel.live_path.write_text("oops")
    assert rel.live_path_problem() == f"{rel.live_path} is a plain file"


def test_a_live_path_linking_to_nothing_outside_is_named(rel):
    rel.live_path.parent.mkdir(parents=True)
    os.symlink("/nowhere/acme", rel.live_path)
    assert rel.live_path_problem() == (
        f"{rel.live_path} is a symlink to /nowhere/acme, which does not exist")


def test_a_live_path_linking_outside_releases_is_named(rel, tmp_path):
    elsewhere = tmp_path / "versions" / "5.130" / "acme"
    elsewhere.mkdir(parents=True)
    rel.live_path.parent.mkdir(parents=True)
    os.symlink(elsewhere, rel.live_path)
    assert rel.live_path_problem() == (
        f"{rel.live_path} is a symlink to {elsewhere}, outside {rel.dir}")


def test_the_live_path_signature_changes_when_an_operator_fixes_it(rel, tmp_path):
    assert rel.live_path_signature() == "absent"
    rel.live_path.parent.mkdir(parents=True)
    os.symlink("/nowhere/acme", rel.live_path)
    broken = rel.live_path_signature()
    assert broken == rel.live_path_signature()  # stable while nothing changes
    assert "/nowhere/acme" in broken
    os.unlink(rel.live_path)
    os.symlink(release(rel, 1), rel.live_path)
    fixed = rel.live_path_signature()
    assert fixed != broken
    os.unlink(rel.live_path)
    rel.live_path.write_text("oops")
    assert rel.live_path_signature() not in (broken, fixed, "absent")


def test_finished_lists_release_directories_only_in_the_order_they_were_made(tmp_path):
    releases = Releases(tmp_path / "releases", tmp_path / "live")
    releases.dir.mkdir()
    names = ["20261129T033000000000Z-0123456789ab", "20261130T033000000000Z-ba9876543210",
             "20261130T050000000000Z-adopted"]  # the theme found at the live path at first
    for name in reversed(names):
        (releases.dir / name).mkdir()
    (releases.dir / ".staging-20261130T040000000000Z-aaaaaaaaaaaa").mkdir()  # not finished
    (releases.dir / "20261130T060000000000Z-bbbbbbbbbbbb").symlink_to(releases.dir / names[0])
    (releases.dir / "20261130T070000000000Z-cccccccccccc").write_text("a file")
    assert [d.name for d in releases.finished()] == names
    assert Releases(tmp_path / "missing", tmp_path / "live").finished() == []
