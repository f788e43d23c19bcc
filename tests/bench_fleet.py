"""Benchmark of `ghost-agent fleet`'s work (a script, not a test):

    python3 tests/bench_fleet.py [--sites 200] [--deploys 150] [--timeout 10] [--hostile 0]

Starts N local sites in a separate process (one threaded HTTP server on 127.0.0.1 with one
path per site), each serving a realistic ci-cd.json (built by agent.publish.build_document,
`--deploys` deploy records with checks, some sites rolled back, failed, pending or behind),
plus `--hostile` extra sites that drip one byte every 0.5 s (cut off at the timeout) and as
many that answer 10 MB. Then runs fetch_all + summarize + write_report in this process and
prints the wall time of each step and this process's peak RSS (psutil, sampled every 5 ms;
the servers' memory is not counted).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import psutil  # noqa: E402

from agent import fleet, fleet_fetch, fleet_render  # noqa: E402
from agent.publish import build_document  # noqa: E402

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=timezone.utc)


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
    return build_document(site=f"asterix-{index:03d}", flag="prod-asterix*", current=current,
                          pending=pending, deploys=history, now=NOW,
                          public_url=f"https://asterix-{index:03d}.website.com")


def serve(sites: int, deploys: int, hostile: int, queue) -> None:  # type: ignore[no-untyped-def]
    """The child process: one threaded server, one path per site."""
    bodies = {f"/s{i:03d}/content/files/ci-cd.json": json.dumps(realistic_doc(i, deploys),
                                                                 indent=2).encode()
              for i in range(sites)}
    size = sum(len(b) for b in bodies.values())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # type: ignore[no-untyped-def]  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            try:
                if self.path.startswith("/drip"):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    for _ in range(100):
                        time.sleep(0.5)
                        self.wfile.write(b" ")
                    return
                if self.path.startswith("/huge"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * 1024 * 1024))
                    self.end_headers()
                    for _ in range(160):
                        self.wfile.write(b" " * 65536)
                    return
                body = bodies.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    httpd = Server(("127.0.0.1", 0), Handler)
    queue.put((httpd.server_address[1], size))
    httpd.serve_forever(poll_interval=0.05)


class PeakRSS:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--deploys", type=int, default=150, help="history records per site")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--hostile", type=int, default=0,
                        help="also this many dripping and this many 10 MB sites")
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(args.sites, args.deploys, args.hostile, queue),
                         daemon=True)
    server.start()
    try:
        port, size = queue.get(timeout=120)
        base = f"http://127.0.0.1:{port}"
        urls = [f"{base}/s{i:03d}" for i in range(args.sites)]
        urls += [f"{base}/drip{i}" for i in range(args.hostile)]
        urls += [f"{base}/huge{i}" for i in range(args.hostile)]
        mb = 1024 * 1024
        baseline = psutil.Process().memory_info().rss
        print(f"{len(urls)} sites ({args.sites} real, {2 * args.hostile} hostile), "
              f"{args.deploys} deploys each, {size / mb:.1f} MB of ci-cd.json in all "
              f"({size / max(1, args.sites) / 1024:.0f} KB a site), "
              f"{args.workers} workers, timeout {args.timeout:g}s")
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            t0 = time.perf_counter()
            answers = fleet_fetch.fetch_all(urls, args.timeout, max_workers=args.workers)
            t1 = time.perf_counter()
            summary = fleet.summarize(answers, datetime.now(timezone.utc))
            t2 = time.perf_counter()
            paths = fleet_render.write_report(Path(tmp), summary)
            t3 = time.perf_counter()
            sizes = {p.name: p.stat().st_size for p in paths}
        errors: dict[str, int] = {}
        for answer in answers:
            if answer.error:
                errors[answer.error] = errors.get(answer.error, 0) + 1
        slowest = max(a.ms for a in answers)
        print(f"fetch_all     {t1 - t0:7.3f} s   (slowest site {slowest} ms)")
        print(f"summarize     {t2 - t1:7.3f} s")
        print(f"write_report  {t3 - t2:7.3f} s   "
              + ", ".join(f"{k} {v / 1024:.0f} KB" for k, v in sizes.items()))
        print(f"total         {t3 - t0:7.3f} s")
        print(f"peak RSS      {rss.peak / mb:7.1f} MB   (before: {baseline / mb:.1f} MB, "
              f"+{(rss.peak - baseline) / mb:.1f} MB)")
        print("totals        " + json.dumps(summary["totals"]))
        if errors:
            print("errors        " + json.dumps(errors))
    finally:
        server.terminate()
        server.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
