"""agent.releases: release directories and the live symlink, on real files in tmp_path."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.errors import CommandError, DeployError
from agent.releases import STAGING_PREFIX, Releases

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
