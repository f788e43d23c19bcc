"""Reading a long site list in several processes, for the fleet report.

Reading one site costs some 2-3 ms of CPU (HTTP, json.loads, the digest), and Python runs one
thread's code at a time: one process reads about 400 sites a second. A site's deadline starts
when a worker takes it up, so a slow site late in a long list holds the report for its whole
timeout after the rest. With more CPUs, the list is split into shards, each read by
agent.fleet_fetch.fetch_each in a process of its own (multiprocessing's "spawn": a fresh
interpreter, safe beside the service's threads). Shard k holds sites k, k+n, k+2n, ...: each
gets its share of the slow ones the caller put first, and this process reads shard 0 itself.
The answers are the same as one
fetch_each's, in the order of the list. A shard whose process cannot start or dies is read in
this process instead, so the report is whole either way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from agent import fleet_fetch
from agent.fleet_fetch import SiteAnswer, fetch_each

log = logging.getLogger("agent")
SITES_PER_PROCESS = 250  # below this, starting a process (~0.3 s of imports) costs more than
#                          it saves
T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def process_count(sites: int, wanted: int = 0) -> int:
    """How many processes read `sites` sites: `wanted` ([fleet] processes) when > 0, else one
    per usable CPU but at most one per SITES_PER_PROCESS sites; never more than the sites,
    never less than 1."""
    if wanted <= 0:
        wanted = min(usable_cpus(), sites // SITES_PER_PROCESS)
    return max(1, min(wanted, sites))


def fetch_sharded(urls: Sequence[str], timeout: float, digest: Callable[[SiteAnswer], T], *,
                  processes: int, head_only: bool = False) -> list[T]:
    """[digest(answer) for each URL] as agent.fleet_fetch.fetch_each gives it (`head_only`
    is passed on to it), read by
    `processes` processes (1: in this one). `digest` and what it returns must pickle (a
    module-level function, plain data). Never raises for what a site or a process does."""
    urls = list(urls)
    count = max(1, min(processes, len(urls)))
    if count == 1:
        return fetch_each(urls, timeout, digest, head_only=head_only)
    shards = [list(range(k, len(urls), count)) for k in range(count)]
    # the fetches under way stay MAX_WORKERS in all, so the bodies held at once do too
    workers = max(8, fleet_fetch.MAX_WORKERS // count)
    results: list = [None] * len(urls)
    read = [False] * count

    def place(k: int, answers: list) -> None:
        for i, answer in zip(shards[k], answers, strict=True):
            results[i] = answer
        read[k] = True

    try:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(count - 1, mp_context=spawn) as pool:
            futures = {k: pool.submit(fetch_each, [urls[i] for i in shards[k]], timeout,
                                      digest, max_workers=workers, head_only=head_only)
                       for k in range(1, count)}
            # this process reads shard 0 meanwhile: it starts at once, the others once their
            # interpreter has imported the agent (~0.3 s), and that is one process less
            place(0, fetch_each([urls[i] for i in shards[0]], timeout, digest,
                                max_workers=workers, head_only=head_only))
            for k, future in futures.items():
                try:
                    place(k, future.result())
                except Exception as exc:  # noqa: BLE001 - its process died: read it here
                    log.warning("fleet report: a reading process failed (%s); its %d sites "
                                "are read by the report's own", type(exc).__name__,
                                len(shards[k]))
    except Exception as exc:  # noqa: BLE001 - no processes here (e.g. no /dev/shm)
        log.warning("fleet report: cannot start %d reading processes (%s); reading in one",
                    count - 1, type(exc).__name__)
    for k, shard in enumerate(shards):
        if not read[k]:
            place(k, fetch_each([urls[i] for i in shard], timeout, digest,
                                head_only=head_only))
    return results
