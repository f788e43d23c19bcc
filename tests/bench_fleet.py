"""Benchmark of `ghost-agent fleet` at scale (a script, not a test; it asserts nothing):

    python3 tests/bench_fleet.py [--sites 500,1000,2000] [--repeat 3] [--hostile 20]
                                 [--slow 20] [--timeout 3] [--deploys 150] [--processes N]
                                 [--baseline CHECKOUT]

Stand-ins on 127.0.0.1, in a separate process (one threaded HTTP server, one path per site):
good sites serving a realistic ci-cd.json (agent.publish.build_document, `--deploys` records
with checks; some rolled back, failed, pending or behind); `--slow` sites that answer a good
document after 30-90 % of the timeout; `--hostile` sites, one of each kind in turn: a body
or headers dripping a byte every 0.5 s, a server that never answers, 10 MB with and without
a length, an HTML page, text, the wrong schema, deep nesting, a redirect loop, a reset, a
closed port. Each row runs, each in a fresh process and in turn, `--repeat` times
`ghost-agent fleet --sites FILE --out DIR` (the command's own code, cli.main), and once a
baseline over the same stand-ins: by default the previous approach (fetch_all with its old
16 workers, every document kept, its 50 newest deploys, until summarize), or with
`--baseline CHECKOUT` the same command from another checkout. "spread" rows place the slow
and hostile sites through the list, "last" rows put them at its end, so they start last;
"last+1d" is the next morning's run of a "last" row (last time's slowest sites go first).
procs: the processes that read the sites (agent.fleet_shards.process_count, by default).

Total seconds: the command's wall time after its imports (the median of the runs; worst: the
slowest, which the verdict judges); cpu s: its CPU time (user+system, with its reading
processes': on a busy host, wall time grows and this does not). RSS growth: peak RSS
(sampled every 5 ms) of the command and its reading processes together, minus RSS before
the run (the largest of the runs). Ratio: ours / baseline. The goal (issue #14): 1,000
sites within 5 s, and RSS growth that does not grow with the number of sites.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from agent.fleet_shards import process_count  # noqa: E402
from agent.publish import build_document  # noqa: E402

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)
HOSTILE_KINDS = ("drip-body", "drip-headers", "silent", "huge", "huge-stream", "html", "text",
                 "schema", "deep", "loop", "reset", "refused")
GOAL_SECONDS = 5.0  # for GOAL_SITES good sites (issue #14)
GOAL_SITES = 1000


def _sha(n: int) -> str:
    return f"{n:040x}"


def _record(n: int, version: str, commit: str, previous: str | None, outcome: str,
            finished: datetime) -> dict:
    return {
        "trigger": "poll", "branch": f"prod-asterix-{version}", "version": version,
        "commit": commit, "previous_commit": previous, "outcome": outcome,
        "started_at": (finished - timedelta(seconds=41)).isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "cards": [f"B{300 + n % 97}", f"B{400 + n % 53}"],
        "uncarded_commits": [_sha(n * 7 + 3)] if n % 5 == 0 else [],
        "checks": [
            {"name": "local", "url": "http://127.0.0.1:2368/", "ok": outcome == "deployed",
             "status": 200 if outcome == "deployed" else 500, "ms": 14 + n % 30,
             "error": None if outcome == "deployed" else "HTTP 500"},
            {"name": "public", "url": "https://asterix.website.com/", "ok": True,
             "status": 200, "ms": 48 + n % 40, "error": None},
        ],
        "error": None if outcome == "deployed" else "check local: HTTP 500 (expected 200)",
        "step": None if outcome == "deployed" else "checks",
        "live_commit": previous if outcome != "deployed" else None,
        "history_rewritten": False,
    }


def realistic_doc(index: int, deploys: int) -> dict:
    """Site `index`: 1 in 20 rolled back 1.3.22, 1 in 50 failed, 1 in 25 pending, 1 in 30
    behind on 1.3.21, the rest on 1.3.22; `deploys` records of history, newest first."""
    kind = ("rolled_back" if index % 20 == 7 else "failed" if index % 50 == 13
            else "pending" if index % 25 == 3 else "old" if index % 30 == 11 else "ok")
    live_version = "1.3.22" if kind == "ok" else "1.3.21"
    history = []
    finished = NOW - timedelta(hours=2)
    for n in range(deploys):
        minor = max(0, 22 - n // 6) if kind == "ok" else max(0, 21 - n // 6)
        version = f"1.3.{minor}"
        history.append(_record(n, version, _sha(index * 100_000 + n + 1),
                               _sha(index * 100_000 + n + 2), "deployed", finished))
        finished -= timedelta(hours=20)
    if kind in ("rolled_back", "failed"):
        history.insert(0, _record(0, "1.3.22", _sha(index * 100_000 + 99_999),
                                  history[0]["commit"], kind, NOW - timedelta(hours=1)))
    live = history[1] if kind in ("rolled_back", "failed") else history[0]
    pending = ({"branch": "prod-asterix-1.3.22", "commit": _sha(index + 7),
                "reason": "waiting for the window (opens 03:30 Europe/Paris)"}
               if kind == "pending" else None)
    current = {"branch": f"prod-asterix-{live_version}", "commit": live["commit"],
               "version": live_version, "since": live["finished_at"]}
    return build_document(site=f"asterix-{index:04d}", flag="prod-asterix*", current=current,
                          pending=pending, deploys=history, now=NOW,
                          public_url=f"https://asterix-{index:04d}.website.com")


# --------------------------------------------------------------------------- the stand-ins


def serve(sites: int, deploys: int, queue) -> None:  # type: ignore[no-untyped-def]
    """The stand-ins' process: /s<i> good, /slow<i>-<ms> good after ms, /h<i>-<kind>."""
    docs = {i: json.dumps(realistic_doc(i, deploys), indent=2).encode() for i in range(sites)}
    size = sum(len(b) for b in docs.values())

    def answer(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
               extra: str = "") -> None:
        # one write, as a real server's sendfile would: no Nagle stall between the parts
        head = (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                f"\r\n{extra}\r\n").encode()
        h.wfile.write(head + body)

    def hostile(h: BaseHTTPRequestHandler, kind: str) -> None:
        if kind == "drip-body":
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(200):
                time.sleep(0.5)
                h.wfile.write(b" ")
        elif kind == "drip-headers":
            h.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(200):
                time.sleep(0.5)
                h.wfile.write(b"X")
        elif kind == "silent":
            time.sleep(60)
        elif kind in ("huge", "huge-stream"):
            length = "Content-Length: 10485760\r\n" if kind == "huge" else "Connection: close\r\n"
            h.wfile.write(f"HTTP/1.1 200 OK\r\n{length}\r\n".encode())
            h.close_connection = True
            for _ in range(160):
                h.wfile.write(b" " * 65536)
        elif kind == "html":
            answer(h, 200, b"<!DOCTYPE html><html>Ghost</html>", "text/html")
        elif kind == "text":
            answer(h, 200, b"hello, world\n", "text/plain")
        elif kind == "schema":
            answer(h, 200, b'{"schema": 2}', "application/json")
        elif kind == "deep":
            answer(h, 200, b"[" * 200_000 + b"]" * 200_000, "application/json")
        elif kind == "loop":
            answer(h, 302, b"", "text/plain", f"Location: {h.path}\r\n")
        elif kind == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            h.close_connection = True
        else:
            answer(h, 404, b"", "text/plain")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # type: ignore[no-untyped-def]  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            name = self.path.split("/")[1]
            try:
                if name.startswith("h"):
                    hostile(self, name.split("-", 1)[1])
                elif name.startswith("slow"):
                    index, ms = name[4:].split("-")
                    time.sleep(int(ms) / 1000)
                    answer(self, 200, docs[int(index) % sites], "application/json")
                elif name.startswith("s") and int(name[1:]) < sites:
                    answer(self, 200, docs[int(name[1:])], "application/json")
                else:
                    answer(self, 404, b"", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    httpd = Server(("127.0.0.1", 0), Handler)
    queue.put((httpd.server_address[1], size))
    httpd.serve_forever(poll_interval=0.05)


def site_urls(base: str, closed: str, sites: int, slow: int, hostile: int, timeout: float,
              order: str) -> list[str]:
    """The site list of a row: good sites, with the slow and hostile ones spread through it
    or all at its end."""
    good = [f"{base}/s{i}" for i in range(sites)]
    odd = [f"{base}/slow{i}-{int(timeout * 1000 * (0.3 + 0.6 * i / max(1, slow - 1)))}"
           for i in range(slow)]
    for i in range(hostile):
        kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
        odd.append(closed if kind == "refused" else f"{base}/h{i}-{kind}")
    if order == "last":
        return good + odd
    step = max(1, len(good) // max(1, len(odd)))
    urls = []
    for n, url in enumerate(good):
        urls.append(url)
        if n % step == step - 1 and odd:
            urls.append(odd.pop(0))
    return urls + odd


def closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- one run

# Run in a fresh interpreter (python -c), so each run's RSS is its own: imports first, then
# RSS, then the run with a 5 ms sampler. Prints one JSON line.
RUNNER = r"""
import contextlib, io, json, os, sys, threading, time
import psutil
from datetime import datetime, timezone
from pathlib import Path
from agent import cli, fleet, fleet_fetch, fleet_job, fleet_render
mode, sites_file, out, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
me = psutil.Process()
before = peak = me.memory_info().rss
cpu_before = sum(me.cpu_times()[:4])
stop = threading.Event()
def sample():  # this process and its reading processes, if any, all together
    global peak
    children, ticks = [], 0
    while not stop.wait(0.005):
        if ticks % 20 == 0:
            with contextlib.suppress(psutil.Error):
                children = me.children(recursive=True)
        ticks += 1
        rss = me.memory_info().rss
        for child in children:
            with contextlib.suppress(psutil.Error):
                rss += child.memory_info().rss
        peak = max(peak, rss)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
started = time.perf_counter()
if mode == "command":
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main(["fleet", "--sites", sites_file, "--out", out])
else:  # the previous approach: 16 workers, every document kept until summarize
    urls = [line for line in Path(sites_file).read_text().splitlines() if line]
    answers = fleet_fetch.fetch_all(urls, timeout, max_workers=16)
    summary = fleet.summarize(answers, datetime.now(timezone.utc))
    fleet_render.write_report(Path(out), summary)
    rc = 1 if fleet_job.needs_a_look(summary) else 0
seconds = time.perf_counter() - started
cpu = sum(me.cpu_times()[:4]) - cpu_before  # with the reading processes' (waited for)
stop.set()
sampler.join()
peak = max(peak, me.memory_info().rss)
totals = json.loads((Path(out) / "ci-cd.json").read_text())["totals"]
print(json.dumps({"seconds": seconds, "cpu": cpu, "growth": peak - before, "rc": rc,
                  "totals": totals}))
"""


CONFIG = """\
[site]
name = "bench"
flag = "dev1"
public_url = "https://bench.invalid"
content_dir = "{tmp}/content"
[git]
remote = "{tmp}/remote.git"
[deploy]
path = "{tmp}/content/themes/bench"
[ghost]
unit = "ghost_bench.service"
[fleet]
timeout_seconds = {timeout:g}
"""


def run_once(mode: str, checkout: Path, urls: list[str], timeout: float,
             out: Path | None = None, processes: int = 0) -> dict:
    """One run in a fresh interpreter; `out`: the report directory (a new one if None; one
    holding a report makes this run the next day's); `processes`: [fleet] processes (0: the
    key left out, as a baseline may not know it)."""
    with tempfile.TemporaryDirectory() as tmp:
        sites_file = Path(tmp) / "sites"
        sites_file.write_text("\n".join(urls) + "\n")
        out = out or Path(tmp) / "out"
        # the command reads its timeout from [fleet] timeout_seconds: a config of its own
        config = Path(tmp) / "agent.toml"
        text = CONFIG.format(tmp=tmp, timeout=timeout)
        if processes:
            text += f"processes = {processes}\n"
        config.write_text(text)
        env = {**os.environ, "PYTHONPATH": str(checkout), "GHOST_AGENT_CONFIG": str(config)}
        result = subprocess.run([sys.executable, "-c", RUNNER, mode, str(sites_file), str(out),
                                 str(timeout)], env=env, capture_output=True, text=True,
                                timeout=600, check=False, cwd=tmp)  # not this checkout's
        if result.returncode != 0:
            raise SystemExit(f"{mode} run failed: {result.stderr.strip()[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def _row(count: int, procs: int, args: argparse.Namespace, order: str, runs: list[dict],
         theirs: dict) -> dict:
    """Print one row: the median of our `runs` (and the worst), against the baseline."""
    mb = 1024 * 1024
    runs = sorted(runs, key=lambda r: r["seconds"])
    ours = {**runs[len(runs) // 2], "growth": max(r["growth"] for r in runs)}
    worst = runs[-1]["seconds"]
    judged = count == GOAL_SITES
    ok = worst <= GOAL_SECONDS if judged else True
    print(f"{count:>6} {procs:>5} {order:>8} {ours['seconds']:>8.2f} {worst:>7.2f} "
          f"{ours['cpu']:>6.2f} {ours['growth'] / mb:>7.1f} {theirs['seconds']:>7.2f} "
          f"{theirs['growth'] / mb:>8.1f} {ours['seconds'] / theirs['seconds']:>8.2f} "
          f"{ours['growth'] / max(1, theirs['growth']):>8.2f} "
          f"{'<= 5 s' if judged else '-':>7}  {('met' if ok else 'NOT met') if judged else '-'}",
          flush=True)
    for run in runs:
        if run["totals"] != theirs["totals"]:
            print(f"         the reports differ: {run['totals']} / {theirs['totals']}")
            break
    return ours


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="500,1000,2000",
                        help="good sites per row, comma-separated (default 500,1000,2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours per row")
    parser.add_argument("--processes", type=int, default=0,
                        help="ours with [fleet] processes = N (default: its own choice)")
    parser.add_argument("--hostile", type=int, default=20)
    parser.add_argument("--slow", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--deploys", type=int, default=150, help="history records per site")
    parser.add_argument("--order", default="spread,last",
                        help="where the slow and hostile sites are: spread, last, or both")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout whose `ghost-agent fleet` is the baseline")
    args = parser.parse_args()
    counts = [int(n) for n in args.sites.split(",")]
    orders = args.order.split(",")

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(max(counts), args.deploys, queue), daemon=True)
    server.start()
    try:
        port, size = queue.get(timeout=300)
        base, closed = f"http://127.0.0.1:{port}", closed_port()
        print(f"good sites serve {size / max(counts) / 1024:.0f} KB of ci-cd.json each "
              f"({args.deploys} deploys); timeout {args.timeout:g} s; baseline: "
              + (f"`ghost-agent fleet` of {args.baseline}" if args.baseline else
                 "the previous approach (16 workers, documents kept)"))
        mb = 1024 * 1024
        print(f"{args.hostile} hostile and {args.slow} slow sites in each row; {args.repeat} "
              "runs of ours a row: their median, and the worst (the verdict's)")
        print(f"{'sites':>6} {'procs':>5} {'order':>8} {'total s':>8} {'worst s':>7} "
              f"{'cpu s':>6} {'RSS MB':>7} {'base s':>7} {'base MB':>8} {'ratio s':>8} "
              f"{'ratio MB':>8} {'goal':>7}  verdict")
        rows = []
        for order in orders:
            for count in counts:
                urls = site_urls(base, closed, count, args.slow, args.hostile, args.timeout,
                                 order)
                procs = process_count(len(urls), args.processes)
                if args.baseline:
                    theirs = run_once("command", args.baseline, urls, args.timeout)
                else:
                    theirs = run_once("kept", _REPO_ROOT, urls, args.timeout)
                runs, nights = [], []
                for _ in range(args.repeat):
                    with tempfile.TemporaryDirectory() as out:  # each a first-ever run
                        runs.append(run_once("command", _REPO_ROOT, urls, args.timeout,
                                             Path(out), args.processes))
                        if order == "last":  # the next morning: last time's slowest first
                            nights.append(run_once("command", _REPO_ROOT, urls, args.timeout,
                                                   Path(out), args.processes))
                rows.append((count, procs, _row(count, procs, args, order, runs, theirs), order))
                if nights:
                    _row(count, procs, args, "last+1d", nights, theirs)
        # memory against the number of sites, between rows read by as many processes
        rows = [r for r in rows if r[3] == orders[0]]
        largest = max(rows, key=lambda r: r[0], default=None)
        alike = sorted((r for r in rows if largest and r[1] == largest[1]), key=lambda r: r[0])
        if len(alike) >= 2 and alike[0][0] != alike[-1][0]:
            small, large = alike[0], alike[-1]
            extra = (large[2]["growth"] - small[2]["growth"]) / mb
            per = extra * 1024 / (large[0] - small[0])
            print(f"RSS growth, {large[0]} sites against {small[0]} (both read by "
                  f"{large[1]} processes): {extra:+.1f} MB ({per:+.1f} KB a site; goal: flat)")
    finally:
        server.terminate()
        server.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
