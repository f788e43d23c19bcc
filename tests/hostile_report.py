"""The hostile-input matrix of issue #9, through the real `ghost-agent` command.

    .venv/bin/python tests/hostile_report.py [--jobs N] [--only TEXT] [--no-kill] [--no-strace]

Each case (tests/hostile_cases.py) gets a throwaway host in its own temporary directory: a git
remote over smart HTTP whose URL carries a password, a Ghost stand-in, the systemctl
stand-in, and a Slack stand-in behind a webhook URL that carries a token (the canary secrets).
Every run of the command is counted:

- crashes: an exit status outside the contract's 0/1/2/70/75/78, a signal other than the
  intended SIGKILL of a failpoint, or no end within the run's time limit;
- tracebacks: "Traceback" in what the run printed;
- shell execs: execve of a shell (/bin/sh, /bin/bash, /bin/dash, /usr/bin/sh, /usr/bin/bash,
  /usr/bin/dash) anywhere in the run's process tree, seen by `strace -f -e trace=execve`
  ("not measured" without strace);
- leaked secrets: a canary secret (or the basic-auth header made of it) found in any run's
  stdout or stderr, any file under state_dir (cache, releases, spool), the ci-cd files, or a
  body the Slack stand-in received.

The kill points (agent/failpoints.py) are tried first: a deploy killed at each, then a fresh
`once`, then tests/hostile_cases.consistency_problems on what is left.
Everything listens on 127.0.0.1; the script stops by itself (each run has a time limit).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from agent.failpoints import POINTS  # noqa: E402
from tests.hostile_cases import (CANARIES, CASES, CONFIGS, REFS, REMOTES, STRACE,  # noqa: E402
                                 TREES, Case, Run, kill_point_case, new_sandbox)

KILL = "kill points"
ORDER = [KILL, REFS, TREES, CONFIGS, REMOTES, CANARIES]


@dataclass
class Result:
    category: str
    name: str
    runs: list[Run] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the case itself could not be set up
    marker: bool = False  # an injected `touch PWNED` ran
    measured: bool = False  # strace watched the runs
    hit: bool | None = None  # kill points: the point was reached
    problems: list[str] = field(default_factory=list)  # kill points: inconsistencies
    seconds: float = 0.0

    @property
    def crashes(self) -> list[Run]:
        return [r for r in self.runs if r.crashed]

    @property
    def tracebacks(self) -> list[Run]:
        return [r for r in self.runs if r.traceback]

    @property
    def shells(self) -> list[str]:
        return [s for r in self.runs for s in (r.shells or [])]


def run_case(category: str, name: str, flag: str, body, trace: bool) -> Result:
    result = Result(category, name)
    started = time.monotonic()
    try:
        sandbox = new_sandbox(flag, trace=trace)
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the report
        result.error = f"sandbox: {type(exc).__name__}: {exc}"
        return result
    result.measured = sandbox.trace
    try:
        outcome = body(sandbox)
        if category == KILL:
            result.hit, result.problems = outcome
    except Exception as exc:  # noqa: BLE001
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        result.error = f"setup: {last[:300]}"
    finally:
        result.runs = list(sandbox.runs)
        result.notes = list(sandbox.notes)
        try:
            result.leaks = sandbox.leaks()
        except Exception as exc:  # noqa: BLE001
            result.notes.append(f"leak scan failed: {exc}")
        result.marker = sandbox.marker.exists()
        sandbox.close()
        shutil.rmtree(sandbox.root, ignore_errors=True)
        result.seconds = time.monotonic() - started
    return result


def jobs_for(args: argparse.Namespace) -> list[tuple]:
    trace = not args.no_strace
    jobs: list[tuple] = []
    if not args.no_kill:
        for point in POINTS:
            if args.only and args.only not in point and args.only not in KILL:
                continue
            jobs.append((KILL, point, "dev1",
                         lambda sb, point=point: kill_point_case(sb, point), trace))
    for case in CASES:
        case: Case
        text = f"{case.category} {case.name}"
        if args.only and args.only not in text:
            continue
        jobs.append((case.category, case.name, case.flag, case.setup, trace))
    return jobs


def table(results: list[Result], measured: bool) -> list[str]:
    lines = ["| category | cases | crashes | tracebacks | shell execs | leaked secrets |",
             "|---|---|---|---|---|---|"]
    total = Result("total", "")
    for category in [*ORDER, "total"]:
        rows = results if category == "total" else [r for r in results
                                                    if r.category == category]
        if not rows:
            continue
        runs = sum(len(r.runs) for r in rows)
        crashes = sum(len(r.crashes) for r in rows)
        tracebacks = sum(len(r.tracebacks) for r in rows)
        shells = str(sum(len(r.shells) for r in rows)) if measured else "not measured"
        leaks = sum(len(r.leaks) for r in rows)
        name = f"**{category}**" if category == "total" else category
        lines.append(f"| {name} | {len(rows)} ({runs} runs) | {crashes} | {tracebacks} | "
                     f"{shells} | {leaks} |")
    del total
    return lines


def kill_line(results: list[Result]) -> str:
    kills = [r for r in results if r.category == KILL]
    if not kills:
        return "kill points: not tried"
    hit = [r for r in kills if r.hit]
    consistent = [r for r in hit if not r.problems and not r.error]
    missed = [r.name for r in kills if not r.hit]
    bad = [r.name for r in hit if r.problems or r.error]
    line = (f"kill points: {len(kills)} tried, {len(hit)} reached (SIGKILL), "
            f"{len(consistent)} consistent after a restart")
    if missed:
        line += f"; never reached: {', '.join(missed)}"
    if bad:
        line += f"; inconsistent: {', '.join(bad)}"
    return line


def details(results: list[Result], verbose: bool = False) -> list[str]:
    lines = []
    for r in results:
        exits = ", ".join(f"{run.label.split(' ')[0] or '?'}={run.returncode}"
                          + ("(timeout)" if run.timed_out else "") for run in r.runs)
        findings = []
        if r.error:
            findings.append(f"case error: {r.error}")
        for problem in r.problems:
            findings.append(f"inconsistent: {problem}")
        for run in r.crashes:
            tail = run.text().strip().splitlines()[-1:] or [""]
            findings.append(f"crash: `{_short(run.label)}` -> {run.returncode}"
                            + (" (timed out)" if run.timed_out else "") + f": {tail[0][:200]}")
        for run in r.runs:
            if run.returncode == 70:
                tail = run.text().strip().splitlines()[-1:] or [""]
                findings.append(f"internal error (exit 70) in `{_short(run.label)}`: "
                                f"{tail[0][:200]}")
        for run in r.tracebacks:
            lines_ = [x for x in run.text().splitlines() if x.strip()]
            findings.append(f"traceback in `{_short(run.label)}`: "
                            f"{(lines_[-1] if lines_ else '')[:200]}")
        for shell in sorted(set(r.shells)):
            findings.append(f"shell exec ({r.shells.count(shell)}x): {shell}")
        for leak in r.leaks:
            findings.append(f"leak: {leak}")
        if r.marker:
            findings.append("an injected `touch PWNED` ran")
        findings += r.notes
        if verbose:
            for run in r.runs:
                said = (run.stdout.decode("utf-8", "replace").strip().splitlines()
                        or run.text().strip().splitlines() or [""])
                findings.append(f"`{_short(run.label)}` -> {run.returncode}: {said[-1][:160]}")
        head = f"- [{r.category}] {r.name} ({r.seconds:.0f}s; exits: {exits or 'none'})"
        lines.append(head)
        lines += [f"    - {f}" for f in findings]
    return lines


def _short(label: str) -> str:
    return label if len(label) <= 80 else label[:77] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--only", default="", help="only cases whose category/name has TEXT")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill points")
    parser.add_argument("--no-strace", action="store_true", help="do not count shell execs")
    parser.add_argument("--details", action="store_true", help="list every case's exits too")
    args = parser.parse_args(argv)
    measured = STRACE is not None and not args.no_strace
    started = time.monotonic()
    jobs = jobs_for(args)
    print(f"running {len(jobs)} cases ({args.jobs} at a time)"
          + ("" if measured else "; shell execs not measured (no strace)"), file=sys.stderr)
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_case, *job) for job in jobs]
        for future in futures:
            result = future.result()
            results.append(result)
            print(f"  {result.category}: {result.name}: {len(result.runs)} runs, "
                  f"{result.seconds:.0f}s", file=sys.stderr)
    print("\n".join(table(results, measured)))
    shells = [s for r in results for s in r.shells]
    git_local = [s for s in shells if "git-upload-pack '" in s]
    if git_local:
        print()
        print(f"Of the {len(shells)} shell execs, {len(git_local)} are git's own "
              "`sh -c \"git-upload-pack '<path>'\"` (git's transport to a remote given as a "
              f"local path); {len(shells) - len(git_local)} other(s).")
    print()
    print(kill_line(results))
    print()
    print(f"{sum(len(r.runs) for r in results)} runs of `ghost-agent` in "
          f"{time.monotonic() - started:.0f}s; crashes and tracebacks count runs, shell execs "
          "count execve calls of a shell, leaked secrets count (secret, place) findings.")
    shown = [r for r in results if args.details or r.error or r.problems or r.crashes
             or any(run.returncode == 70 for run in r.runs) or r.tracebacks or r.shells
             or r.leaks or r.marker or r.notes or r.hit is False]
    if shown:
        print()
        print("Findings:" if not args.details else "Cases:")
        print("\n".join(details(shown, args.details)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
