"""agent.proc: real subprocesses, timeouts that kill the whole group, masked errors."""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import time
from pathlib import Path

import psutil
import pytest

from agent import proc
from agent.errors import CommandError
from agent.redact import register_secret

CANARY = "hunter2-CANARY-VALUE"


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(pid: int, within: float = 5.0) -> bool:
    """True once pid no longer exists (or is a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_runs_argv_and_returns_output(tmp_path):
    done = proc.run(py("import os; print(os.getcwd()); print(os.environ['X_TEST'])"),
                    timeout=30, cwd=tmp_path, env={"X_TEST": "hello"})
    assert done.returncode == 0
    assert done.stdout.splitlines() == [str(tmp_path), "hello"]
    assert done.argv[0] == sys.executable


def test_argv_is_not_given_to_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    done = proc.run(["echo", f"$(touch {marker})", ";", "touch", str(marker)], timeout=30)
    assert not marker.exists()
    assert "$(touch" in done.stdout


def test_non_zero_exit_raises_with_stderr_tail():
    code = "import sys\nfor i in range(50): print(f'line {i}', file=sys.stderr)\nsys.exit(4)"
    with pytest.raises(CommandError) as info:
        proc.run(py(code), timeout=30)
    message = str(info.value)
    assert "exited with 4" in message
    assert "line 49" in message
    assert "line 29" not in message  # only the tail (20 lines)


def test_non_zero_exit_without_check_returns():
    done = proc.run(py("import sys; sys.exit(2)"), timeout=30, check=False)
    assert done.returncode == 2


def test_timeout_raises_promptly():
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 0\.5s"):
        proc.run(py("import time; print('starting', flush=True); time.sleep(30)"), timeout=0.5)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        proc.run(py(code), timeout=1.5)
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    assert gone(grandchild), f"grandchild {grandchild} still running after the timeout"


def test_registered_secret_masked_in_the_error():
    register_secret(CANARY)
    code = f"import sys; print('auth failed for {CANARY}', file=sys.stderr); sys.exit(1)"
    with pytest.raises(CommandError) as info:
        proc.run([*py(code), f"--token={CANARY}"], timeout=30)
    message = str(info.value)
    assert CANARY not in message
    assert "auth failed for ***" in message
    assert "--token=***" in message


def test_url_credentials_masked_in_a_timeout_error():
    code = "import sys, time; print('cloning https://bot:pw-CANARY@h/x', file=sys.stderr, " \
           "flush=True); time.sleep(30)"
    with pytest.raises(CommandError) as info:
        proc.run(py(code), timeout=1)
    assert "pw-CANARY" not in str(info.value)
    assert "https://***@h/x" in str(info.value)


def test_missing_program_could_not_start(tmp_path):
    missing = tmp_path / "no-such-program"
    with pytest.raises(CommandError) as info:
        proc.run([str(missing), "--version"], timeout=30)
    assert "could not start" in str(info.value)
    assert str(missing) in str(info.value)


def test_child_gets_no_stdin():
    done = proc.run(py("import sys; print(repr(sys.stdin.read()))"), timeout=30)
    assert done.stdout.strip() == "''"


def test_child_runs_in_its_own_session():
    done = proc.run(py("import os; print(os.getsid(0))"), timeout=30)
    assert int(done.stdout) != os.getsid(0)


def test_path_arguments_are_accepted(tmp_path: Path):
    (tmp_path / "f.txt").write_text("x")
    done = proc.run([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())",
                     tmp_path / "f.txt"], timeout=30)
    assert done.stdout.strip() == "x"


@pytest.mark.slow
def test_timeout_kills_a_grandchild_in_a_session_of_its_own(tmp_path):
    """A build step that starts a helper with setsid: killing the group misses it."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, time\n"
        # start_new_session is setsid(2); DEVNULL: the old runner returned on time, and
        # this test is about what it left running
        "child = subprocess.Popen(['sleep', '60'], start_new_session=True,\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(proc.CommandTimeout, match="timed out"):
        proc.run(py(code), timeout=1.5)
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    assert gone(grandchild), f"grandchild {grandchild} (own session) still running"


@pytest.mark.slow
def test_timeout_kills_a_daemon_whose_parent_exited(tmp_path):
    """A double fork: the daemon is handed to init, outside the tree, holding our pipes."""
    pid_file = tmp_path / "daemon.pid"
    spawner = (
        "import subprocess, sys\n"
        "d = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "open(sys.argv[1], 'w').write(str(d.pid))\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {spawner!r}, {str(pid_file)!r}], check=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(proc.CommandTimeout, match="timed out"):
        proc.run(py(code), timeout=1.5)
    assert time.monotonic() - started < 10
    daemon = int(pid_file.read_text())
    assert gone(daemon), f"daemon {daemon} still running after the timeout"


def test_text_false_returns_stdout_as_bytes_and_stderr_as_text():
    code = ("import sys; sys.stdout.buffer.write(b'caf\\xe9\\r\\n'); "
            "sys.stderr.buffer.write(b'bad \\xff byte')")
    done = proc.run(py(code), timeout=30, text=False)
    assert done.stdout == b"caf\xe9\r\n"
    assert done.stderr == "bad \ufffd byte"


def test_text_false_failure_names_the_output_tail():
    code = "import sys; sys.stdout.buffer.write(b'only \\xff stdout'); sys.exit(3)"
    with pytest.raises(CommandError, match="exited with 3: only \ufffd stdout"):
        proc.run(py(code), timeout=30, text=False)


def test_every_command_is_logged_redacted_with_its_wall_time(caplog):
    caplog.set_level(logging.DEBUG, logger="agent")
    proc.run([*py("pass"), "https://bot:pw-CANARY@git.example/x.git"], timeout=30)
    with pytest.raises(CommandError):
        proc.run(py("import time; time.sleep(5)"), timeout=0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent"]
    assert len(lines) == 2, lines
    assert "https://***@git.example/x.git" in lines[0] and "pw-CANARY" not in lines[0]
    assert re.search(r"` exited with 0 in \d+\.\d{3}s$", lines[0])
    assert re.search(r"` timed out in 0\.\d{3}s$", lines[1])


def test_a_program_that_cannot_start_carries_its_os_error(tmp_path):
    with pytest.raises(proc.CommandNotStarted) as info:
        proc.run([str(tmp_path / "missing")], timeout=30)
    assert info.value.error.errno == errno.ENOENT
