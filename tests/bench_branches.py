"""Figures for branch selection at scale: a remote with 5,000 branches, 300 of them release
branches of the flag. Measures `ghost-agent once` (a deploy, then no-op polls) over a path
remote and over smart HTTP. Prints figures; asserts nothing.

Run: python tests/bench_branches.py [--branches 5000] [--matching 300]
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
from agent.remote import RemoteCache  # noqa: E402
from agent.selection import heads_patterns, select  # noqa: E402
from tests.agentsite import AgentSite  # noqa: E402
from tests.bench_once import _Systemctl  # noqa: E402
from tests.gitremote import GitRemote, SmartHttpGitServer  # noqa: E402

FLAG = "prod-asterix*"


def make_branches(remote: GitRemote, total: int, matching: int) -> str:
    sha = remote.commit_and_push("main", {"index.html": "<h1>B1</h1>\n"}, "B100: base")
    lines = []
    for n in range(matching):
        lines.append(f"create refs/heads/prod-asterix-1.{n // 100}.{n % 100} {sha}\n")
    for n in range(total - matching):
        lines.append(f"create refs/heads/feature/B{n:05d}-work {sha}\n")
    batch = remote.path / "refs.txt"
    batch.write_text("".join(lines))
    with batch.open() as stdin:
        subprocess.run(["git", "-C", str(remote.path), "update-ref", "--stdin"], stdin=stdin,
                       check=True, timeout=120)
    batch.unlink()
    return sha


def timed(host: AgentSite, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        result = host.run("once")
        out.append(time.perf_counter() - started)
        assert result.returncode == 0, result.stderr
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--branches", type=int, default=5000)
    parser.add_argument("--matching", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ghost-agent-bench-") as tmp:
        root = Path(tmp)
        http = SmartHttpGitServer(root / "http-root").start()
        remote = GitRemote(http.project_root, name="site", work_dir=root / "work")
        make_branches(remote, args.branches, args.matching)
        print(f"remote: {args.branches} branches, {args.matching} match {FLAG}")
        for label, url in (("path", str(remote.path)), ("smart HTTP", http.repo_url("site.git"))):
            cache = RemoteCache(root / f"cache-{label}", url, 30)
            started = time.perf_counter()
            snapshot = cache.heads(heads_patterns(FLAG))
            ls_remote = time.perf_counter() - started
            started = time.perf_counter()
            picked = select(snapshot, FLAG)
            selecting = time.perf_counter() - started
            content = root / label / "content"
            (content / "themes").mkdir(parents=True)
            site = SiteServer(content / "themes" / "acme", content_dir=content).start()
            try:
                host = AgentSite(root / label / "host", url, site, _Systemctl(root / label),
                                 flag=FLAG)
                first = timed(host, 1)[0]
                noops = timed(host, args.runs)
            finally:
                site.stop()
            print(f"[{label}] ls-remote: {ls_remote * 1000:.0f} ms for {len(snapshot.heads)} "
                  f"heads; selection: {selecting * 1000:.1f} ms -> {picked.target.branch}")
            print(f"[{label}] once deploying: {first:.2f}s; no-op once: median "
                  f"{statistics.median(noops):.3f}s ({min(noops):.3f}-{max(noops):.3f})")
        http.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
