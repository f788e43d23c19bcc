"""Reading a long site list in several processes, for the fleet report.

Reading one site costs some 2 ms of CPU (HTTP, decoding, the digest), and Python runs one
thread's code at a time: one process reads about 500 sites a second. A site's deadline
starts when a worker takes it up, so a slow site late in a long list holds the report for its
whole timeout after the rest. With more CPUs, the list is split into shards, each read by
agent.fleet_fetch.fetch_each: shard 0 by this process, every other one by a process of its
own (multiprocessing's "spawn": a fresh interpreter, safe beside the service's threads),
which sends its answers back through a pipe. Shard k holds sites k, k+n, k+2n, ...: each gets
its share of the slow ones the caller put first. The answers are the same as one
fetch_each's, in the order of the list. A shard whose process cannot start, dies, or
overruns its time is read in this process instead: the report is whole either way.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agent import fleet_fetch
from agent.fleet_fetch import SiteAnswer, fetch_each

log = logging.getLogger("agent")
SITES_PER_PROCESS = 250  # fewer a process, and starting it (~0.3 s of imports) costs more
#                          than it saves
START_SECONDS = 60  # a reading process's allowance to start, import and send its answers
T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def process_count(sites: int, wanted: int = 0) -> int:
    """How many processes read `sites` sites: `wanted` ([fleet] processes) when > 0, else one
    per usable CPU but at most one per SITES_PER_PROCESS sites (so 2 from 500 sites); never
    more than the sites, never less than 1."""
    if wanted <= 0:
        wanted = min(usable_cpus(), sites // SITES_PER_PROCESS)
    return max(1, min(wanted, sites))


def worst_seconds(sites: int, processes: int, timeout: float) -> float:
    """An upper bound of fetch_sharded's seconds for `sites` sites (what the service's
    watchdog must allow the report): every site taking its whole `timeout`, one round of
    workers after another, and with several processes, each of them failing at its deadline
    and its shard then read again by this one."""
    count = max(1, min(processes, sites))
    if count == 1:
        return _rounds_seconds(sites, fleet_fetch.MAX_WORKERS, timeout)
    shard = math.ceil(sites / count)
    return (_reader_seconds(shard, count, timeout)
            + _rounds_seconds(shard, fleet_fetch.MAX_WORKERS, timeout) * count)


def _workers(count: int) -> int:
    """Each process's workers: about MAX_WORKERS fetches under way in all, so about as many
    bodies held at once."""
    return max(4, fleet_fetch.MAX_WORKERS // count)


def _rounds_seconds(sites: int, workers: int, timeout: float) -> float:
    """The longest `sites` fetches take: every one its whole timeout (and the watchdog's
    look), one round of `workers` after another."""
    return (timeout + 1) * math.ceil(sites / workers)


def _reader_seconds(shard: int, count: int, timeout: float) -> float:
    """How long a reading process of `count` may take over `shard` sites, from its start."""
    return START_SECONDS + _rounds_seconds(shard, _workers(count), timeout)


def fetch_sharded(urls: Sequence[str], timeout: float, digest: Callable[[SiteAnswer], T], *,
                  processes: int, head_only: bool = False) -> list[T]:
    """[digest(answer) for each URL] as agent.fleet_fetch.fetch_each gives it (`head_only`
    is passed on to it), read by `processes` processes (1: this one alone). `digest` and what
    it returns must pickle (a module-level function, plain data). Never raises for what a
    site or a reading process does. `timeout`: seconds a site, as for fetch_each."""
    urls = list(urls)
    count = max(1, min(processes, len(urls)))
    if count == 1:
        return fetch_each(urls, timeout, digest, head_only=head_only)
    shards = [urls[k::count] for k in range(count)]
    workers = _workers(count)
    started = time.monotonic()
    readers = [_start(shard, timeout, digest, workers, head_only) for shard in shards[1:]]
    answers: list[list | None] = [fetch_each(shards[0], timeout, digest, max_workers=workers,
                                             head_only=head_only)]
    deadline = started + _reader_seconds(len(shards[0]), count, timeout)
    answers += [_answers_of(reader, deadline) for reader in readers]
    results: list = [None] * len(urls)
    for k, shard in enumerate(shards):
        got = answers[k]
        if got is None or len(got) != len(shard):
            got = fetch_each(shard, timeout, digest, head_only=head_only)
        results[k::count] = got
    return results


def _read_shard(conn: Any, urls: list[str], timeout: float, digest: Callable, workers: int,
                head_only: bool) -> None:
    """A reading process's whole job: its shard's answers, sent back through `conn`."""
    try:
        conn.send(fetch_each(urls, timeout, digest, max_workers=workers, head_only=head_only))
    finally:
        conn.close()


def _start(urls: list[str], timeout: float, digest: Callable, workers: int,
           head_only: bool) -> tuple[Any, Any] | None:
    """(process, the pipe's receiving end) of a new reading process, or None."""
    try:
        spawn = multiprocessing.get_context("spawn")
        receiver, sender = spawn.Pipe(duplex=False)
        process = spawn.Process(target=_read_shard, name="ghost-agent fleet reader",
                                args=(sender, urls, timeout, digest, workers, head_only),
                                daemon=True)
        process.start()
        sender.close()  # the child's end: this process keeps only the other
        return process, receiver
    except Exception as exc:  # noqa: BLE001 - e.g. no more processes: read it here
        log.warning("fleet report: cannot start a reading process (%s); its %d sites are read "
                    "by the report's own", type(exc).__name__, len(urls))
        return None


def _answers_of(reader: tuple[Any, Any] | None, deadline: float) -> list | None:
    """The answers a reading process sent by `deadline` (None if none: it could not start,
    died, sent something else, or overran); the process is gone afterwards."""
    if reader is None:
        return None
    process, receiver = reader
    try:
        if receiver.poll(max(0.0, deadline - time.monotonic())):
            got = receiver.recv()
            return got if isinstance(got, list) else None
        log.warning("fleet report: a reading process overran its time; its sites are read "
                    "by the report's own")
        return None
    except Exception as exc:  # noqa: BLE001 - it died (EOFError) or sent garbage
        log.warning("fleet report: a reading process failed (%s); its sites are read by the "
                    "report's own", type(exc).__name__)
        return None
    finally:
        receiver.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
