"""Figures for `ghost-agent once`: a deploy of a 1,000-file repo, and a no-op poll.

Run: python tests/bench_once.py [--files 1000] [--runs 5] [--compare OTHER_CHECKOUT]...
With --compare, the no-op `once` of other checkouts of the agent (PYTHONPATH) is timed too,
in turn with this one's, on the same host. Uses the same real parts as the tests (a path
remote, the Ghost stand-in, the systemctl stand-in, whose restart costs one short Python
process). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.demo.sitesim import SiteServer  # noqa: E402
from tests.agentsite import AgentSite, agent_argv  # noqa: E402
from tests.gitremote import GitRemote  # noqa: E402


class _Systemctl:
    """The systemctl stand-in without pytest's monkeypatch."""

    def __init__(self, root: Path):
        from tests.conftest import FakeSystemctl

        self._fake = FakeSystemctl(root, monkeypatch=None)

    def __getattr__(self, name):
        return getattr(self._fake, name)


def timed(host: AgentSite, *args: str, checkout: Path | None = None) -> tuple[float, int]:
    """Wall seconds and exit status of the agent command; from `checkout` when given."""
    env = host.env()
    if checkout:
        env["PYTHONPATH"] = str(checkout)
    argv = [*agent_argv(), "--config", str(host.config_path), *args]
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)
    return time.perf_counter() - started, result.returncode


def figures(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.3f}s ({min(seconds):.3f}-{max(seconds):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="another checkout (holding agent/); may be repeated")
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
            checkouts: list[Path | None] = [None, *args.compare]  # None: this one
            noop_times: dict[Path | None, list[float]] = {c: [] for c in checkouts}
            for run in range(args.runs):
                # each round starts with another checkout: no one always runs first
                turn = run % len(checkouts)
                for checkout in checkouts[turn:] + checkouts[:turn]:
                    seconds, code = timed(host, "once", checkout=checkout)
                    assert code == 0, f"{checkout or 'this checkout'}: no-op once exited {code}"
                    noop_times[checkout].append(seconds)
            noops = noop_times.pop(None)
            others = noop_times
            started = time.perf_counter()
            host.run("--version")
            startup = time.perf_counter() - started
        finally:
            site.stop()
    print(f"repo: {args.files} files, {args.runs} runs each (median, min-max)")
    print(f"deploying once, wall:          {figures(deploys)}")
    print(f"  of which the deploy itself:  {statistics.median(durations):.3f}s "
          "(fetch, stage, switch, stand-in restart, checks)")
    print(f"no-op once, wall:              {figures(noops)}")
    for checkout, times in others.items():
        print(f"  the same from {checkout}: {figures(times)}")
    print(f"interpreter + import (--version): {startup:.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
