"""Figures for `ghost-agent once`: a deploy of a 1,000-file repo, and a no-op poll.

Run: python tests/bench_once.py [--files 1000] [--runs 5]
Uses the same real parts as the tests (a path remote, the Ghost stand-in, the systemctl
stand-in, whose restart costs one short Python process). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.demo.sitesim import SiteServer  # noqa: E402
from tests.agentsite import AgentSite  # noqa: E402
from tests.gitremote import GitRemote  # noqa: E402


class _Systemctl:
    """The systemctl stand-in without pytest's monkeypatch."""

    def __init__(self, root: Path):
        from tests.conftest import FakeSystemctl

        self._fake = FakeSystemctl(root, monkeypatch=None)

    def __getattr__(self, name):
        return getattr(self._fake, name)


def timed(host: AgentSite, *args: str) -> tuple[float, int]:
    started = time.perf_counter()
    result = host.run(*args)
    return time.perf_counter() - started, result.returncode


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ghost-agent-bench-") as tmp:
        root = Path(tmp)
        remote = GitRemote(root / "remote")
        content = root / "site" / "content"
        (content / "themes").mkdir(parents=True)
        site = SiteServer(content / "themes" / "acme", content_dir=content).start()
        try:
            host = AgentSite(root / "host", str(remote.path), site, _Systemctl(root / "sc"))
            deploys, durations = [], []
            for run in range(args.runs):
                files = {f"assets/f{i:04d}.css": f"/* {run} {i} */\n" for i in range(args.files)}
                files["index.html"] = f"<h1>B{100 + run} release {run}</h1>\n"
                remote.commit_and_push("dev1", files, f"B{100 + run}: release {run}")
                seconds, code = timed(host, "once")
                assert code == 0, "deploy failed"
                deploys.append(seconds)
                durations.append(host.ci_cd()["deploys"][0]["duration_ms"] / 1000)
            noops = []
            for _ in range(args.runs):
                seconds, code = timed(host, "once")
                assert code == 0
                noops.append(seconds)
            started = time.perf_counter()
            host.run("--version")
            startup = time.perf_counter() - started
        finally:
            site.stop()
    print(f"repo: {args.files} files, {args.runs} runs each (median, min-max)")
    print(f"deploying once, wall:          {statistics.median(deploys):.3f}s "
          f"({min(deploys):.3f}-{max(deploys):.3f})")
    print(f"  of which the deploy itself:  {statistics.median(durations):.3f}s "
          "(fetch, stage, switch, stand-in restart, checks)")
    print(f"no-op once, wall:              {statistics.median(noops):.3f}s "
          f"({min(noops):.3f}-{max(noops):.3f})")
    print(f"interpreter + import (--version): {startup:.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
