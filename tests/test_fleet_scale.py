"""`ghost-agent fleet` over many sites (issue #14): sites slow to answer do not hold the
others up, each document is reduced to its line of the report as it arrives (memory does not
grow with the number of sites), and the report is the same as from whole documents.

Real HTTP servers on 127.0.0.1 (tests.test_fleet.LocalWeb). The speed goal itself is a
benchmark figure: python tests/bench_fleet.py.
"""

# ruff: noqa: F401, F811 - the fixture `web` of test_fleet is imported to be a test argument
from __future__ import annotations

import json
import threading
import time
import tracemalloc
from datetime import timedelta

from agent import fleet_fetch
from agent.config import FleetConfig
from agent.fleet import SiteSummary, summarize, summarize_site
from agent.fleet_fetch import SiteAnswer, fetch_all, fetch_each
from agent.fleet_job import run_report
from tests.test_fleet import (NOW, closed_port_url, fleet_of_every_state, fuzzed_docs,
                              record, send, sha, site_doc, web)


def test_sites_slow_to_answer_are_fetched_side_by_side(web):
    """40 sites that answer only once all 40 are asked at the same time (a barrier): a pool
    of 16 workers, as before, never gets there and every one of them fails."""
    body = json.dumps(site_doc("a", "1.3.22")).encode()
    barrier = threading.Barrier(40, timeout=5)

    def slow(h):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            send(h, 503, b"not all asked at once\n")
            return
        send(h, 200, body, "application/json")

    urls = [web.site(f"s{n}", slow) for n in range(40)]
    answers = fetch_all(urls, timeout=10)
    assert [a.error for a in answers] == [None] * 40


def test_each_answer_is_digested_in_turn_and_only_the_digest_is_kept(web):
    doc = site_doc("a", "1.3.22")
    urls = [web.json_site(f"s{n}", doc) for n in range(12)]
    urls.append(web.json_site("odd", {"schema": 2}))  # the digest judges the shape
    urls.append(closed_port_url())
    lock = threading.Lock()
    now, most = [0], [0]

    def digest(answer: SiteAnswer) -> tuple:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.02)  # long enough for the others to pile up, if they could
        with lock:
            now[0] -= 1
        return (answer.url, answer.error, (answer.doc or {}).get("schema"),
                threading.current_thread().name)

    got = fetch_each(urls, 5, digest)
    assert [g[0] for g in got] == urls
    assert got[0][1:3] == (None, 1)
    assert got[-2][1:3] == (None, 2)
    assert got[-1][1] == "unreachable: connection refused"
    assert all(g[3].startswith("fleet-fetch") for g in got)  # in the thread that fetched
    assert most[0] <= fleet_fetch.PARSERS  # documents held at once, however many sites


def _report_peak(web, tmp_path, count: int, body: bytes) -> int:
    """The peak of Python's allocations (bytes) while run_report reads `count` sites."""
    urls = [web.site(f"p{count}-{n}", lambda h: send(h, 200, body, "application/json"))
            for n in range(count)]
    sites_file = tmp_path / f"sites-{count}"
    sites_file.write_text("\n".join(urls) + "\n")
    tracemalloc.start()
    try:
        summary = run_report(FleetConfig(sites_file=sites_file, timeout_seconds=20), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["totals"]["updated"] == count
    return peak


def test_the_reports_memory_does_not_grow_with_the_number_of_sites(web, tmp_path, monkeypatch):
    """Documents of 150 deploys (~100 KB): each kept until the end (cut to 50 deploys), as
    before, took some 150 KB a site. (8 workers: so both runs have as many bodies in
    flight, which MAX_WORKERS bounds.)"""
    monkeypatch.setattr(fleet_fetch, "MAX_WORKERS", 8)
    doc = site_doc("a", "1.3.22")
    doc["deploys"] += [record("1.3.21", sha(9000 + n), finished=NOW - timedelta(days=n + 1))
                       for n in range(149)]
    body = json.dumps(doc, indent=2).encode()
    few = _report_peak(web, tmp_path, 64, body)
    many = _report_peak(web, tmp_path, 256, body)
    # what grows is the report's own lines; a document kept would be 10 times that
    assert (many - few) / (256 - 64) < 16_000, (few, many)


def test_the_report_from_summaries_is_the_report_from_documents(web):
    urls, _ = fleet_of_every_state(web)
    answers = fetch_all(urls, timeout=5)
    whole = summarize(answers, NOW)
    assert summarize([summarize_site(a) for a in answers], NOW) == whole
    # fetched again: the same report but for the times taken
    assert _without_ms(summarize(fetch_each(urls, 5, summarize_site), NOW)) == \
        _without_ms(whole)
    # a site silent today is placed in its group of last time, from a summary too
    silent = [SiteAnswer(a.url, None, "unreachable: connection refused", 3) for a in answers]
    assert summarize([summarize_site(a) for a in silent], NOW, previous=whole) == \
        summarize(silent, NOW, previous=whole)


def _without_ms(summary: dict) -> dict:
    for site in [s for g in summary["groups"] for s in g["sites"]] + summary["unreachable"]:
        site.pop("ms")
    return summary


def test_odd_documents_give_the_same_report_from_summaries():
    good = SiteAnswer("https://good", site_doc("good", "1.3.22"), None, 1)
    dashes = SiteAnswer("https://dashes", site_doc("dashes", "1-3-22"), None, 1)
    for n, doc in enumerate(fuzzed_docs(300, seed=14)):
        answers = [good, SiteAnswer(f"https://odd{n}", doc, None, 1), dashes]
        summaries = [summarize_site(a) for a in answers]
        assert all(isinstance(s, SiteSummary) for s in summaries)
        assert summarize(summaries, NOW) == summarize(answers, NOW)


def test_a_summary_keeps_no_more_than_a_line_of_text_whatever_the_site_sent():
    doc = site_doc("x" * 500_000, "1.3.22", outcome="failed", tried="1.3.23",
                   error="e" * 500_000)
    doc["pad"] = "p" * 500_000
    summary = summarize_site(SiteAnswer("https://a", doc, None, 1))
    assert len(json.dumps([summary.entry, summary.versions, summary.inputs])) < 2_000


def test_a_fetch_past_its_deadline_after_its_body_leaves_the_next_fetch_alone(web,
                                                                              monkeypatch):
    """A's body is read and its kept-alive connection then serves B, while A waits for its
    digest past A's deadline: the watchdog must not shut that connection down under B.

    Two workers, a pool of one connection: A and X start at 0 s; A's body comes at once (its
    connection goes back to the pool), X answers at 0.5 s and its worker takes B, on A's
    connection. A's deadline passes at 3 s; B answers at 3.25 s, within its own (3.5 s)."""
    doc = site_doc("a", "1.3.22")
    body = json.dumps(doc).encode()

    def answer_after(seconds):
        def route(h):
            time.sleep(seconds)
            send(h, 200, body, "application/json")
        return route

    urls = [web.json_site("a", doc), web.site("x", answer_after(0.5)),
            web.site("b", answer_after(2.75))]

    def digest(answer: SiteAnswer) -> SiteAnswer:
        if answer.url == urls[0]:
            time.sleep(3.4)  # A waits past its deadline, its connection long given back
        return answer

    monkeypatch.setattr(fleet_fetch, "PARSERS", 2)
    got = fetch_each(urls, 3.0, digest, max_workers=2, session=_one_connection_session())
    assert [a.error for a in got] == [None, None, None], got
    assert got[2].doc == doc


def _one_connection_session():
    """A session whose pools keep one connection per host, so a fetch reuses the last one's."""
    session = fleet_fetch.make_session(1)
    for prefix in ("http://", "https://"):
        session.mount(prefix, fleet_fetch.DeadlineAdapter(pool_connections=1, pool_maxsize=1))
    return session


def test_the_report_reads_each_site_up_to_its_newest_record(web, tmp_path):
    """Only a site's newest deploy record is news: an odd record further back, or a history
    cut off mid-way, does not make the site a bad answer (nor is it paid for)."""
    doc = site_doc("a", "1.3.22")
    doc["deploys"] += [record("1.3.21", sha(9000 + n), finished=NOW - timedelta(days=n + 1))
                       for n in range(300)]
    odd = {**doc, "site": "odd-record", "deploys": [*doc["deploys"][:5], "oops",
                                                     *doc["deploys"][5:]]}
    whole = json.dumps({**doc, "site": "cut-off"})
    cut_off = whole[: whole.index('"deploys"') + 2000].encode()
    urls = [web.json_site("odd", odd),
            web.site("cut", lambda h: send(h, 200, cut_off, "application/json"))]
    summary = run_report(FleetConfig(sites=tuple(urls)), now=NOW)
    sites = {s["site"]: s for g in summary["groups"] for s in g["sites"]}
    assert {name: s["state"] for name, s in sites.items()} == {"odd-record": "updated",
                                                               "cut-off": "updated"}
    assert sites["cut-off"]["version"] == "1.3.22"
