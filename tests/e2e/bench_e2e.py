"""Figures of the end-to-end tier, with the agent as a real service next to a real Ghost.

    python3 tests/e2e/bench_e2e.py [--pushes 7] [--tier]

* push-to-live: median (min-max) over --pushes pushes of a visible theme change on dev1, split
  into detection (push -> the agent logs "deploying"), staging (-> systemd stops Ghost: fetch,
  export, switch), restart (systemd stop + start of the Ghost unit), Ghost's boot (-> "Ghost
  booted in"), checks (-> the agent logs "deployed"); and push -> Ghost first serves the new
  footer (a 50 ms probe). poll_seconds and verify_seconds are the tier's (agent_host.py).
* rollback: a template Ghost cannot parse; push -> "rolled_back" recorded, split into the
  failed verification (bounded by verify_seconds) and the way back (switch, restart, verify).
* the agent's RSS while idle under systemd (psutil inside the guest, after some idle polls),
  and Ghost's for scale.
* readers (--readers, #12): per Ghost major (--ghost 5,6), a reader probing GET / every
  20 ms through each kind of release: a good theme by restart, the same by activation through
  the Admin API, and broken themes (an unclosed {{#if}}, index.hbs removed) stopped by gscan;
  for contrast a broken theme without gscan (validate = false), caught by the checks after a
  restart and rolled back. Each row: answers that were not 200 out of all probes, and push ->
  live (the new footer served) or push -> the recorded outcome. With --ghost-cli, Ghost is
  installed by Ghost-CLI inside the guest (as users install it) instead of laid out like it.
* --tier: the wall time of `pytest tests/e2e -k e2e_` (warm: Ghost's build cached); the cold
  figure adds the cached build's own build time (from its marker), which is not redone here.

Root only (it boots a guest); nothing outside 127.0.0.0/8 or the guest's network is touched.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.agent_host import (  # noqa: E402
    AGENT_UNIT,
    POLL_SECONDS,
    VERIFY_SECONDS,
    Lab,
    ReaderProbe,
    first_entry,
    journal_entries,
    rss_kib,
    session,
    timed_push,
)
from tests.e2e.ghost import build_info, ensure_ghost_build  # noqa: E402
from tests.e2e.ghost_cli import ensure_ghost_cli_kit  # noqa: E402
from tests.e2e.guest import guest_supported  # noqa: E402


def out(line: str = "") -> None:
    print(line, flush=True)


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")


def bench_pushes(lab: Lab, pushes: int) -> None:
    site = lab.new_site("dev1")
    try:
        site.start_agent()
        # The first deploy switches away from the hand-installed theme; measure the next ones.
        first = timed_push(site, "dev1", "dev1 footer B700 warm-up", "B700: warm-up")
        out(f"first deploy (not counted): push to live {first.split()['push_to_live']:.2f} s")
        timings = []
        for n in range(pushes):
            t = timed_push(site, "dev1", f"dev1 footer B7{n + 1:02d}", f"B7{n + 1:02d}: push {n}")
            timings.append(t)
            parts = t.split()
            out(f"  push {n + 1}: " + "  ".join(f"{k} {v:.2f}" for k, v in parts.items()))
            time.sleep(0.5)
        out()
        out(f"push-to-live, {pushes} pushes, real Ghost 5.130.4 under systemd "
            f"(poll_seconds={POLL_SECONDS}, median (min-max)):")
        splits = [t.split() for t in timings]
        for key in splits[0]:
            out(f"  {key:<17} {spread([s[key] for s in splits])}")
        checks_ms = [ms for t in timings for ms in t.checks_ms]
        out(f"  (the passing check request itself: median {statistics.median(checks_ms):.0f} ms)")

        # Idle: a few polls with nothing to do, then the agent's RSS, read inside the guest.
        time.sleep(max(10.0, 5 * POLL_SECONDS))
        pid = site.main_pid()
        agent_rss = rss_kib(lab.g, lab.venv, pid)
        ghost_pid = int(site.prop("MainPID", site.ghost_unit))
        ghost_rss = rss_kib(lab.g, lab.venv, ghost_pid)
        out()
        out(f"agent RSS while idle under systemd: {agent_rss / 1024:.1f} MiB "
            f"(MainPID {pid} in the guest, psutil); Ghost: {ghost_rss / 1024:.0f} MiB")

        # Rollback.
        footer = "dev1 footer B799 broken"
        broken = site.push("dev1", footer, "B799: unclosed if",
                           files=lab.kit.broken_unclosed_if(footer))
        record = site.wait_record(broken.sha, timeout=180)
        assert record["outcome"] == "rolled_back", record
        agent = journal_entries(lab.g, AGENT_UNIT, broken.at - 1)
        short = broken.sha[:7]
        detected = first_entry(agent, rf"^deploying dev1 {short}\b")
        failing = first_entry(agent, rf"^dev1 {short} failed .*rolling back")
        done = first_entry(agent, rf"^rolled_back dev1 {short}\b")
        assert detected and failing and done, [e.message for e in agent]
        out()
        out(f"rollback (unclosed {{{{#if}}}}, verify_seconds={VERIFY_SECONDS}): push to "
            f"rolled_back recorded {done.at - broken.at:.1f} s = detection "
            f"{detected.at - broken.at:.1f} + deploy and failing checks "
            f"{failing.at - detected.at:.1f} + switch back, restart, verify "
            f"{done.at - failing.at:.1f}")
        out(f"  record duration_ms {record.get('duration_ms')}, journal_tail "
            f"{len(record.get('journal_tail') or [])} lines")
    finally:
        site.stop_all()


def bench_readers(lab: Lab, major: str) -> list[str]:
    """The reader-facing table rows of one Ghost major (see the module doc)."""
    site = lab.new_site("dev1", admin_key=True)
    kit = lab.kit
    rows = []

    def release(what: str, how: str, ghost_extra: str, files: dict | None, footer: str) -> None:
        site.write_config(ghost_extra=ghost_extra)
        lab.g.systemctl("reload", AGENT_UNIT)  # SIGHUP: the agent reads its config again
        time.sleep(1.5)
        with ReaderProbe(site) as probe:
            pushed = site.push("dev1", footer, f"B8{len(rows):02d}: {what}", files=files)
            record = site.wait_record(pushed.sha, timeout=180)
            if record["outcome"] == "deployed":
                site.wait_footer(footer, timeout=60, step=0.02)
            took = time.time() - pushed.at
            time.sleep(1)  # what readers get right after
        end = "live" if record["outcome"] == "deployed" else record["outcome"]
        ghost = f"{major}.x" + (" (Ghost-CLI)" if lab.cli_kit else "")
        rows.append(f"| {ghost} | {what} | {how} | {len(probe.failed)} of {probe.answers} "
                    f"({', '.join(sorted(set(probe.failed))) or 'none'}) | push → {end} "
                    f"{took:.2f} s |")

    try:
        site.start_agent()
        site.push("dev1", "dev1 footer B800 warm-up", "B800: warm-up")
        site.wait_footer("dev1 footer B800 warm-up", timeout=120)
        time.sleep(2)
        release("good theme", "restart", 'reload = "restart"', None, "dev1 footer B801")
        release("good theme", "activation", "", None, "dev1 footer B802")
        release("unclosed {{#if}}", "gscan, before the switch", "",
                kit.broken_unclosed_if("dev1 footer B803"), "dev1 footer B803")
        release("index.hbs removed", "gscan, before the switch", "",
                kit.broken_no_index("dev1 footer B804"), "dev1 footer B804")
        release("unclosed {{#if}}", "no gscan: restart, checks, rollback",
                'validate = false\nreload = "restart"',
                kit.broken_unclosed_if("dev1 footer B805"), "dev1 footer B805")
    finally:
        site.stop_all()
    return rows


def bench_tier() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/e2e", "-k", "e2e_"], cwd=_REPO_ROOT, check=False,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    summary = [ln for ln in proc.stdout.splitlines() if re.search(r"passed|failed|error", ln)]
    out(f"tier wall time, warm (Ghost build cached): {wall:.0f} s "
        f"(exit {proc.returncode}: {summary[-1] if summary else '?'})")
    info = build_info(ensure_ghost_build())
    out(f"tier wall time, cold: about {wall + float(info['build_seconds']):.0f} s "
        f"(+ the Ghost build, {info['build_seconds']} s when this cache was made; not redone)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=7)
    parser.add_argument("--tier", action="store_true", help="also time the whole e2e tier")
    parser.add_argument("--readers", action="store_true",
                        help="only the readers' table (failed requests per kind of release)")
    parser.add_argument("--ghost", default="5,6", help="Ghost majors for --readers")
    parser.add_argument("--ghost-cli", action="store_true",
                        help="--readers on Ghost installed by Ghost-CLI in the guest")
    args = parser.parse_args()
    ok, reason = guest_supported()
    if not ok:
        out(f"cannot boot a guest here: {reason}")
        return 2
    started = time.monotonic()
    shared = session()
    if args.readers:
        rows = []
        for major in args.ghost.split(","):
            kit = shared.kit_for(major.strip())
            cli_kit = ensure_ghost_cli_kit(major=major.strip()) if args.ghost_cli else None
            with Lab(shared.run_dir / f"readers-{major}-{os.getpid()}", shared.venv, kit,
                     cli_kit) as lab:
                rows += bench_readers(lab, major.strip())
        out(f"GET / every 20 ms through each release (poll_seconds={POLL_SECONDS}, "
            f"verify_seconds={VERIFY_SECONDS}):")
        out("| Ghost | release | went live by | answers not 200 (of all) | time |")
        out("|---|---|---|---|---|")
        for row in rows:
            out(row)
        out(f"bench wall time: {time.monotonic() - started:.0f} s")
        return 0
    out(f"session: venv {shared.venv.seconds:.1f} s, Ghost database "
        f"{shared.kit.template_seconds:.1f} s, run dir {shared.run_dir}")
    with Lab(shared.run_dir / f"bench-{os.getpid()}", shared.venv, shared.kit) as lab:
        out(f"guest booted in {lab.g.boot_seconds:.2f} s; the agent runs as {lab.agent_user}")
        bench_pushes(lab, args.pushes)
    out(f"bench wall time: {time.monotonic() - started:.0f} s")
    if args.tier:
        out()
        bench_tier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
