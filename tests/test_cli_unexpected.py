"""One place for the unexpected (issue #9, class 7): an error that is not a known one ends a
one-shot command in one line and exit 70 (EX_SOFTWARE); --debug shows the traceback."""

from __future__ import annotations

from tests.agentsite import AgentSite, page


def run_with_failpoint(host: AgentSite, point: str, *args: str):
    import subprocess

    from tests.agentsite import agent_argv

    env = host.env()
    env["GHOST_AGENT_FAILPOINTS"] = f"{point}=raise"
    return subprocess.run([*agent_argv(), "--config", str(host.config_path), *args, "once"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_an_unexpected_error_is_one_line_and_exit_70(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B800 x")}, "B800: x")
    result = run_with_failpoint(host, "after-ls-remote")
    assert result.returncode == 70
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "unexpected error" in lines[0] and "rerun with --debug" in lines[0]
    assert "RuntimeError: failpoint after-ls-remote" in lines[0]


def test_debug_shows_the_traceback(host, git_remote):
    git_remote.commit_and_push("dev1", {"index.html": page("B801 x")}, "B801: x")
    result = run_with_failpoint(host, "after-ls-remote", "--debug")
    assert result.returncode == 70
    assert "Traceback" in result.stderr


def test_an_unexpected_error_after_the_switch_is_finished_by_the_next_run(host, git_remote):
    first = git_remote.commit_and_push("dev1", {"index.html": page("B802 one")}, "B802: one")
    assert host.call("once").returncode == 0
    second = git_remote.commit_and_push("dev1", {"index.html": page("B803 two")}, "B803: two")
    assert run_with_failpoint(host, "after-switch").returncode == 70
    result = host.call("once")
    assert result.returncode == 0, result.stderr
    assert host.ci_cd()["current"]["commit"] == second
    assert host.get("/") == (200, page("B803 two"))
    assert first != second
