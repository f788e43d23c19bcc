"""agent.fleet_shards: a long site list read by several processes (real spawned
interpreters, real HTTP servers on 127.0.0.1) gives the answers one process gives, in the
list's order; a reading process that dies or cannot start costs time, never a site."""

# ruff: noqa: F401, F811 - the fixture `web` of test_fleet is imported to be a test argument
from __future__ import annotations

import logging
import multiprocessing
import os
import time

import pytest

from agent import cli, fleet_shards
from agent.config import FleetConfig
from agent.fleet import summarize_site
from agent.fleet_fetch import fetch_each
from agent.fleet_job import run_report
from agent.fleet_shards import fetch_sharded, process_count
from tests.test_fleet import NOW, fleet_of_every_state, site_doc, web


def _without_ms(summaries: list) -> list:
    return [(s.url, s.flag, s.versions, {**s.entry, "ms": None}, s.inputs) for s in summaries]


def _sites(web, count: int) -> list[str]:
    urls, _ = fleet_of_every_state(web)
    docs = [site_doc(f"s{n}", f"1.3.{n % 23}") for n in range(count)]
    return urls + [web.json_site(f"n{n}", doc) for n, doc in enumerate(docs)]


@pytest.mark.parametrize("processes", [2, 3])
def test_several_processes_give_the_answers_of_one_in_the_lists_order(web, processes):
    urls = _sites(web, 40)
    one = fetch_each(urls, 5, summarize_site, head_only=True)
    got = fetch_sharded(urls, 5, summarize_site, processes=processes, head_only=True)
    assert _without_ms(got) == _without_ms(one)
    assert [s.url for s in got] == urls


def report_pid(answer):
    """A digest that says which process read the site (it must pickle: module level)."""
    return (answer.url, os.getpid())


def test_the_shards_are_read_by_other_processes_and_this_one(web):
    urls = _sites(web, 9)
    got = fetch_sharded(urls, 5, report_pid, processes=3)
    pids = {pid for _, pid in got}
    assert len(pids) == 3 and os.getpid() in pids
    # shard k holds sites k, k+3, k+6...: one process each
    for k in range(3):
        assert len({pid for _, pid in got[k::3]}) == 1


def die_in_the_second_shard(answer):
    """Kills the reading process of shard 1 (its sites' URLs end in n1, n4, n7...)."""
    if os.getpid() != int(os.environ["FLEET_TEST_PID"]) and answer.url.endswith("/n1"):
        os._exit(3)
    return summarize_site(answer)


def test_a_reading_process_that_dies_costs_no_site(web, monkeypatch, caplog):
    """Three processes, shard 1's dies: its sites are read here, shard 2's are not."""
    monkeypatch.setenv("FLEET_TEST_PID", str(os.getpid()))
    urls = _sites(web, 20)
    assert urls.index(web.base + "/n1") % 3 == 1
    with caplog.at_level(logging.WARNING, logger="agent"):
        got = fetch_sharded(urls, 5, die_in_the_second_shard, processes=3, head_only=True)
    assert _without_ms(got) == _without_ms(fetch_each(urls, 5, summarize_site,
                                                      head_only=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["fleet report: a reading process failed (EOFError); its sites are "
                        "read by the report's own"]


def sleep_outside_the_test(answer):
    """Holds a reading process far past its allowance."""
    if os.getpid() != int(os.environ["FLEET_TEST_PID"]):
        time.sleep(30)
    return summarize_site(answer)


def test_a_reading_process_that_overruns_is_ended_and_its_sites_read_here(web, monkeypatch,
                                                                         caplog):
    monkeypatch.setenv("FLEET_TEST_PID", str(os.getpid()))
    monkeypatch.setattr(fleet_shards, "START_SECONDS", 2)
    urls = _sites(web, 4)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="agent"):
        got = fetch_sharded(urls, 1, sleep_outside_the_test, processes=2)
    assert time.monotonic() - started < 15  # not the 30 s of the stuck process
    assert _without_ms(got) == _without_ms(fetch_each(urls, 5, summarize_site))
    assert "a reading process overran its time" in caplog.text
    assert not [p for p in multiprocessing.active_children() if p.name.endswith("reader")]


def test_no_processes_to_be_had_the_report_reads_in_one(web, monkeypatch, caplog):
    """E.g. a host out of processes or memory."""
    def no_processes(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(fleet_shards.multiprocessing, "get_context", no_processes)
    urls = _sites(web, 6)
    with caplog.at_level(logging.WARNING, logger="agent"):
        got = fetch_sharded(urls, 5, summarize_site, processes=4)
    assert _without_ms(got) == _without_ms(fetch_each(urls, 5, summarize_site))
    assert caplog.text.count("cannot start a reading process (OSError)") == 3


def test_how_many_processes(monkeypatch):
    monkeypatch.setattr(fleet_shards, "usable_cpus", lambda: 4)
    assert process_count(100) == 1  # a small fleet: starting a process costs more
    assert process_count(600) == 2  # one per 250 sites
    assert process_count(10_000) == 4  # one per CPU
    assert process_count(100, wanted=3) == 3  # [fleet] processes decides
    assert process_count(2, wanted=8) == 2  # never more than the sites
    assert process_count(0) == 1
    monkeypatch.setattr(fleet_shards, "usable_cpus", lambda: 1)
    assert process_count(10_000) == 1


def test_the_report_and_the_command_take_the_number_of_processes(web, tmp_path, monkeypatch):
    seen = []

    def fetch_sharded_spy(urls, timeout, digest, *, processes, head_only):
        seen.append((processes, head_only))
        return fetch_sharded(urls, timeout, digest, processes=processes, head_only=head_only)

    monkeypatch.setattr("agent.fleet_job.fetch_sharded", fetch_sharded_spy)
    urls = _sites(web, 3)
    summary = run_report(FleetConfig(sites=tuple(urls), processes=2), now=NOW)
    assert summary["totals"]["sites"] == len(urls)
    sites = tmp_path / "sites"
    sites.write_text("\n".join(urls) + "\n")
    monkeypatch.delenv("GHOST_AGENT_CONFIG", raising=False)
    monkeypatch.setattr(cli, "config_path", lambda named: tmp_path / "absent.toml")
    assert cli.main(["fleet", "--sites", str(sites), "--processes", "3"]) == 1  # a site failed
    assert seen == [(2, True), (3, True)]


@pytest.mark.parametrize("value", ["0", "65", "two", "-1"])
def test_the_command_refuses_a_number_of_processes_out_of_range(value, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["fleet", "--sites", "/dev/null", "--processes", value])
    assert stop.value.code == 2
    assert f"--processes: expected a whole number from 1 to 64, not '{value}'" in \
        capsys.readouterr().err


def test_worst_seconds_bounds_a_report_of_silent_sites(monkeypatch):
    """Sites that never answer take their whole timeout, a round of workers at a time: the
    bound the watchdog is given holds, in one process and in two."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepted by the kernel, never answered
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setattr(fleet_shards.fleet_fetch, "MAX_WORKERS", 4)  # rounds of 4 sites
    try:
        for processes in (1, 2):
            urls = [f"{url}/s{processes}-{n}" for n in range(10)]
            started = time.monotonic()
            got = fetch_sharded(urls, 0.5, summarize_site, processes=processes)
            took = time.monotonic() - started
            assert [s.entry["error"] for s in got] == ["timed out after 0.5s"] * 10
            assert took <= fleet_shards.worst_seconds(10, processes, 0.5), (processes, took)
            if processes == 1:
                assert took >= 0.5 * 3  # three rounds of 4 workers
    finally:
        listener.close()
