"""agent.state: the state file and the run lock, with real processes holding the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import LockBusy
from agent.models import DeployRecord, Pending, Quarantined, Release, Seen
from agent.state import LOCK_FILE, STATE_FILE, State, StateError, StateStore

REPO_ROOT = Path(__file__).resolve().parent.parent
SHA_A = "a" * 40
SHA_B = "b" * 40

HOLD_LOCK = """
import sys, time
from pathlib import Path
from agent.state import StateStore
store = StateStore(Path(sys.argv[1]))
store.lock()
print("locked", flush=True)
time.sleep(60)
"""

TRY_LOCK = """
import sys
from pathlib import Path
from agent.errors import LockBusy
from agent.state import StateStore
try:
    StateStore(Path(sys.argv[1])).lock()
except LockBusy as exc:
    print("busy:", exc)
    sys.exit(75)
print("locked")
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def py_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def holder(tmp_path: Path):
    """Start a process that holds the lock on tmp_path/state; yields the Popen."""
    procs: list[subprocess.Popen] = []

    def start(state_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            python(HOLD_LOCK, str(state_dir)), stdout=subprocess.PIPE, text=True, env=py_env()
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def sample_state() -> State:
    state = State(
        releases=[Release(SHA_B, "dev1", None, "/r/2", "2026-11-26T14:00:00+00:00"),
                  Release(SHA_A, "dev1", None, "/r/1", "2026-11-25T14:00:00+00:00")],
        seen=Seen("dev1", SHA_B, "2026-11-26T13:59:00+00:00"),
        pending=Pending("dev1", SHA_B, "waiting for the deploy window"),
        quarantine={SHA_A: Quarantined("dev1", "checks failed", "2026-11-26T13:00:00+00:00")},
        last_problem="remote unreachable",
    )
    record = DeployRecord("poll", "dev1", None, SHA_B, SHA_A, "deployed",
                          "2026-11-26T14:00:00+00:00", "2026-11-26T14:00:05+00:00",
                          cards=["B321"])
    state.add_record(record, limit=10)
    return state


# -- save and load --------------------------------------------------------------------------


def test_load_without_a_file_is_empty_state(tmp_path):
    state = StateStore(tmp_path / "state").load()
    assert state.releases == [] and state.current is None and state.history == []


def test_save_load_roundtrip(tmp_path):
    store = StateStore(tmp_path / "state")
    store.save(sample_state())
    loaded = StateStore(tmp_path / "state").load()
    assert loaded == sample_state()
    assert loaded.current.commit == SHA_B
    assert loaded.previous.commit == SHA_A
    assert loaded.history[0]["cards"] == ["B321"]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = StateStore(tmp_path / "state")
    for i in range(5):
        state = sample_state()
        state.last_problem = f"problem {i}"
        store.save(state)
    assert sorted(p.name for p in store.dir.iterdir()) == [STATE_FILE]
    assert json.loads(store.path.read_text())["last_problem"] == "problem 4"


def test_history_is_newest_first_and_bounded(tmp_path):
    state = State()
    for n in range(5):
        state.add_record(DeployRecord("poll", "dev1", None, f"{n:040x}", None, "deployed",
                                      "s", "f"), limit=3)
    assert [r["commit"] for r in state.history] == [f"{n:040x}" for n in (4, 3, 2)]


@pytest.mark.parametrize(
    "text",
    ["{not json", "", "[]", '{"schema": 99, "releases": []}', '{"schema": 1, "releases": [{}]}'],
)
def test_damaged_state_raises_state_error_with_a_clear_message(tmp_path, text):
    store = StateStore(tmp_path / "state")
    store.dir.mkdir()
    store.path.write_text(text)
    with pytest.raises(StateError) as info:
        store.load()
    message = str(info.value)
    assert str(store.path) in message
    assert "damaged" in message
    assert "move it aside" in message
    assert info.value.exit_code == 78


# -- the lock -------------------------------------------------------------------------------


def test_lock_in_another_process_raises_lock_busy_naming_the_pid(tmp_path, holder):
    state_dir = tmp_path / "state"
    proc = holder(state_dir)
    with pytest.raises(LockBusy) as info:
        StateStore(state_dir).lock()
    assert f"pid {proc.pid}" in str(info.value)
    assert str(state_dir / LOCK_FILE) in str(info.value)


def test_second_process_is_refused_while_this_one_holds_the_lock(tmp_path):
    state_dir = tmp_path / "state"
    with StateStore(state_dir):
        other = subprocess.run(python(TRY_LOCK, str(state_dir)), capture_output=True, text=True,
                               env=py_env(), timeout=30)
    assert other.returncode == 75, other.stderr
    assert f"pid {os.getpid()}" in other.stdout
    after = subprocess.run(python(TRY_LOCK, str(state_dir)), capture_output=True, text=True,
                           env=py_env(), timeout=30)
    assert after.returncode == 0, after.stdout + after.stderr


def test_lock_released_when_the_holder_is_sigkilled(tmp_path, holder):
    state_dir = tmp_path / "state"
    proc = holder(state_dir)
    with pytest.raises(LockBusy):
        StateStore(state_dir).lock()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = StateStore(state_dir)
    store.lock()
    try:
        assert (state_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
    finally:
        store.unlock()


def test_unlock_lets_the_next_run_in(tmp_path):
    first = StateStore(tmp_path / "state")
    first.lock()
    with pytest.raises(LockBusy):
        StateStore(tmp_path / "state").lock()
    first.unlock()
    with StateStore(tmp_path / "state"):
        with pytest.raises(LockBusy):
            first.lock()


def test_a_schema_1_file_is_migrated(tmp_path):
    """The state file of the agent before typed records (schema 1) loads as schema 2."""
    store = StateStore(tmp_path)
    store.path.write_text(json.dumps({
        "schema": 1, "releases": [], "history": [],
        "seen": {"branch": "dev1", "commit": SHA_B},
        "quarantine": {SHA_A: {"reason": "checks failed"}},
        "hold": {"at": "2026-11-26T14:00:00+00:00", "by": "ops", "reason": "audit"},
        "last_problem": "cannot read the remote",
    }))
    state = store.load()
    assert state.seen == Seen("dev1", SHA_B, "")
    assert state.quarantine[SHA_A].reason == "checks failed"
    assert state.hold.by == "ops"
    assert state.problems == {"remote": "cannot read the remote"}
    store.save(state)
    assert json.loads(store.path.read_text())["schema"] == 2


def test_a_schema_from_a_newer_agent_is_refused(tmp_path):
    store = StateStore(tmp_path)
    store.path.write_text(json.dumps({"schema": 3}))
    with pytest.raises(StateError, match="schema 3"):
        store.load()


LOCK_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from agent.state import StateStore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # no byte may be written
store = StateStore(Path(sys.argv[1]))
for _ in range(3):
    store.lock()
    store.unlock()
print("locked three times")
"""


def test_the_lock_is_taken_and_given_back_when_its_pid_cannot_be_written(tmp_path):
    """The pid in the lock file only says who holds it: a disk that refuses that write must
    not leave the lock held by a lost file descriptor (the next cycle would be locked out)."""
    (tmp_path / "state").mkdir()
    result = subprocess.run(python(LOCK_ON_A_FULL_DISK, str(tmp_path / "state")),
                            capture_output=True, text=True, env=py_env(), timeout=30)
    assert result.returncode == 0, result.stderr
    assert "locked three times" in result.stdout
