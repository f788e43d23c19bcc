"""What the public sees (issue #9, class 9): ci-cd.json and ci-cd.html are served to anyone,
so Ghost's journal (request paths, stack traces, members' addresses) stays out of them unless
the operator opts in, and even then e-mail and IP addresses are masked."""

from __future__ import annotations

import json

from tests.agentsite import AgentSite, page

EMAIL = "jane.member@example.org"
IPV4 = "203.0.113.77"
IPV6 = "2001:db8::77"
SERVER_PATH = "/var/www/ghost/versions/6.65.0/core/server/web/members.js"
JOURNAL = [
    f"2026-11-29T03:31:02+0000 ghost[812]: POST /members/api/send-magic-link/ {EMAIL} from {IPV4}",
    f"2026-11-29T03:31:03+0000 ghost[812]: TypeError: boom at {SERVER_PATH}:42:7 ({IPV6})",
]


def install_journalctl(host: AgentSite) -> None:
    """journalctl at the process boundary (there is no journald outside the e2e tier): it
    prints Ghost's last lines, as the real one does for `--unit ghost_…`."""
    script = host.systemctl.bin_dir / "journalctl"
    lines = "\n".join(JOURNAL)
    script.write_text(f"#!/usr/bin/env python3\nprint({lines!r})\n")
    script.chmod(0o755)


def failed_deploy(host: AgentSite, git_remote) -> dict:
    install_journalctl(host)
    git_remote.commit_and_push("dev1", {"index.html": page("B700 good")}, "B700: good")
    assert host.call("once").returncode == 0
    git_remote.commit_and_push("dev1", {"index.html": None}, "B701: drop the index")
    result = host.call("once")
    assert result.returncode == 1, result.stderr
    return host.ci_cd()


def public_text(host: AgentSite) -> str:
    files = host.content / "files"
    return "".join((files / name).read_text() for name in ("ci-cd.json", "ci-cd.html",
                                                            "ci-cd.txt"))


def test_the_journal_tail_stays_out_of_the_public_files(host, git_remote):
    doc = failed_deploy(host, git_remote)
    record = doc["deploys"][0]
    assert record["outcome"] == "rolled_back"
    assert record["journal_tail"] == []
    assert record["error"]  # the agent's own one-line error is there
    text = public_text(host)
    for private in (EMAIL, IPV4, IPV6, SERVER_PATH, "members.js"):
        assert private not in text, private
    # The operator still has it: status and the state.
    state = host.state()
    assert any(EMAIL in line for line in state["history"][0]["journal_tail"])


def test_an_operator_may_publish_the_journal_tail_masked(host, git_remote):
    host.extra_config = "\n[publish]\njournal_tail = true\n"
    host.write_config()
    doc = failed_deploy(host, git_remote)
    tail = doc["deploys"][0]["journal_tail"]
    assert any("send-magic-link" in line for line in tail)
    text = public_text(host)
    for private in (EMAIL, IPV4, IPV6):
        assert private not in text, private
    assert "&lt;email&gt;" in (host.content / "files" / "ci-cd.html").read_text()
    assert "<email>" in json.dumps(tail) and "<ip>" in json.dumps(tail)
