"""Canary promotion: evaluate() on answers with `now` passed in, and check_promotion() against
real canary sites: each a real `ghost-agent once` run (flag "prod-asterix*") on a Ghost
stand-in that serves the ci-cd.json the agent wrote at /content/files/ci-cd.json. Nothing in
those documents is rewritten: the bake time is passed over by moving `now`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import parse_time
from agent.config import PromotionConfig
from agent.fleet_fetch import SiteAnswer
from agent.promotion import check_promotion, evaluate
from tests.agentsite import AgentSite, page
from tests.test_fleet import NOW, closed_port_url, fuzzed_docs, record, sha, site_doc

BAKE = 60


def canary(url: str, version: str | None, *, live_for: timedelta = timedelta(hours=2),
           **kw) -> SiteAnswer:
    """A canary answer live on `version` since NOW - live_for (see test_fleet.site_doc)."""
    return SiteAnswer(url, site_doc(url, version, since=NOW - live_for, **kw), None, 12)


def judge(answers: list[SiteAnswer], version: str = "1.3.22", share: float = 1.0,
          now: datetime = NOW) -> tuple[bool, str]:
    return evaluate(version, answers, bake_minutes=BAKE, healthy_share=share, now=now)


# --------------------------------------------------------------------------- evaluate


def test_all_canaries_healthy_after_the_bake_time():
    ok, why = judge([canary("https://a", "1.3.22"), canary("https://b", "1.3.22")])
    assert ok
    assert why == "canary: 2 of 2 sites healthy on 1.3.22 for 60 min (need 2)"


def test_baking_says_how_long_is_left():
    answers = [canary("https://a", "1.3.22"),
               canary("https://b", "1.3.22", live_for=timedelta(minutes=35))]
    ok, why = judge(answers)
    assert not ok
    assert why == ("canary: 1 of 2 sites healthy on 1.3.22 (need 2): "
                   "https://b baking (25 min left)")
    # exactly at since + bake it is done
    assert judge(answers, now=NOW + timedelta(minutes=25))[0]
    # a few seconds before, one minute is left (rounded up)
    ok, why = judge(answers, now=NOW + timedelta(minutes=24, seconds=50))
    assert not ok and "baking (1 min left)" in why


def test_wrong_version_is_named_with_what_is_live():
    ok, why = judge([canary("https://a", "1.3.21"), canary("https://b", "1.3.22")])
    assert not ok
    assert why == ("canary: 1 of 2 sites healthy on 1.3.22 (need 2): "
                   "https://a not on 1.3.22 (live 1.3.21)")
    # 1.3.22 is not 1.3.2 nor 1.3.220
    assert not judge([canary("https://a", "1.3.220")])[0]
    assert not judge([canary("https://a", "1.3.2")])[0]


def test_versions_are_matched_by_their_numbers():
    answers = [canary("https://a", "1-3-22"), canary("https://b", "1_3_22"),
               canary("https://c", "1.3.22")]
    assert judge(answers, version="1.3.22")[0]
    assert judge(answers, version="1-3-22")[0]
    ok, why = judge(answers, version="1-3-22")
    assert why.startswith("canary: 3 of 3 sites healthy on 1-3-22")


def test_a_rolled_back_or_failed_canary_is_not_healthy():
    # b tried 1.3.22 and rolled back to 1.3.21
    rolled = canary("https://b", "1.3.21", outcome="rolled_back", tried="1.3.22")
    ok, why = judge([canary("https://a", "1.3.22"), rolled])
    assert not ok
    assert why.endswith("https://b last deploy rolled back (1.3.22)")
    # c runs 1.3.22, but its newest deploy (of 1.3.23) failed: not a healthy canary
    failed = canary("https://c", "1.3.22", outcome="failed", tried="1.3.23")
    ok, why = judge([canary("https://a", "1.3.22"), failed])
    assert not ok and why.endswith("https://c last deploy failed (1.3.23)")


def test_the_live_commit_must_have_been_deployed():
    answer = canary("https://a", "1.3.22")
    doc = answer.doc
    doc["deploys"] = [{**doc["deploys"][0], "commit": sha(123)}]
    ok, why = judge([SiteAnswer("https://a", doc, None, 1)])
    assert not ok and why.endswith("https://a no deploy record for the live commit")


def test_unreachable_counts_as_not_healthy():
    answers = [canary("https://a", "1.3.22"), canary("https://b", "1.3.22"),
               SiteAnswer("https://c", None, "timed out after 10s", 10000),
               SiteAnswer("https://d", None, "unreachable: connection refused", 1),
               SiteAnswer("https://e", None, "HTTP 502", 3),
               SiteAnswer("https://f", None, "not JSON (an HTML page)", 3)]
    ok, why = judge(answers)
    assert not ok
    assert why == ("canary: 2 of 6 sites healthy on 1.3.22 (need 6): "
                   "https://c unreachable: timed out after 10s; "
                   "https://d unreachable: connection refused; "
                   "https://e unreachable: HTTP 502; "
                   "https://f bad answer: not JSON (an HTML page)")


def test_healthy_share():
    one_of_two = [canary("https://a", "1.3.22"),
                  SiteAnswer("https://b", None, "unreachable: connection refused", 1)]
    ok, why = judge(one_of_two, share=0.5)
    assert ok
    assert why.startswith("canary: 1 of 2 sites healthy on 1.3.22 for 60 min (need 1): ")
    assert not judge(one_of_two, share=0.51)[0]
    assert not judge(one_of_two, share=1.0)[0]
    # 0.7 of 10 is 7 sites, not 8 (floating point)
    seven = [canary(f"https://s{n}", "1.3.22" if n < 7 else "1.3.21") for n in range(10)]
    ok, why = judge(seven, share=0.7)
    assert ok and "(need 7)" in why


def test_zero_bake_promotes_at_once_and_many_missing_sites_are_counted():
    fresh = [canary(f"https://s{n}", "1.3.22", live_for=timedelta(0)) for n in range(2)]
    assert evaluate("1.3.22", fresh, bake_minutes=0, healthy_share=1.0, now=NOW)[0]
    behind = [canary(f"https://s{n:02d}", "1.3.21") for n in range(14)]
    ok, why = judge(behind)
    assert not ok
    assert why.count("not on 1.3.22") == 10 and why.endswith("; and 4 more")


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d["current"].update(version=1.322), "not on 1.3.22 (live an unreadable version)"),
    (lambda d: d["current"].update(version="v1.3.22"),
     "not on 1.3.22 (live unreadable version 'v1.3.22')"),
    (lambda d: d["current"].update(version=None), "not on 1.3.22 (live no version)"),
    (lambda d: d["current"].update(since="last tuesday"), "live since an unreadable time"),
    (lambda d: d["current"].update(since=1_700_000_000), "live since an unreadable time"),
    (lambda d: d.update(current=None), "nothing live"),
    (lambda d: d.update(current=["x"]), "nothing live"),
    (lambda d: d["current"].update(commit=None), "nothing live"),
    (lambda d: d.update(deploys="all good"), "bad answer: deploys is not a list"),
    (lambda d: d["deploys"].append(7), "bad answer: a deploy record is not an object"),
    (lambda d: d["deploys"][0].update(outcome=["deployed"]),
     "live commit's last deploy is ['deployed'], not deployed"),
])
def test_odd_answers_are_not_healthy_and_never_raise(mutate, why):
    answer = canary("https://a", "1.3.22")
    mutate(answer.doc)
    ok, reason = judge([answer])
    assert not ok
    assert reason == f"canary: 0 of 1 sites healthy on 1.3.22 (need 1): https://a {why}"


def test_odd_arguments_never_raise():
    answers = [canary("https://a", "1.3.22")]
    assert evaluate("not-a-version", answers, bake_minutes=60, healthy_share=1.0,
                    now=NOW) == (False, "canary: cannot read the version 'not-a-version'")
    assert evaluate("1.3.22", [], bake_minutes=60, healthy_share=1.0, now=NOW) == (
        False, "canary: no canary sites configured")
    naive_now = NOW.replace(tzinfo=None)
    assert evaluate("1.3.22", answers, bake_minutes=60, healthy_share=1.0, now=naive_now)[0]
    hostile = SiteAnswer("https://a", {"current": {"commit": object()}}, None, 1)
    assert evaluate("1.3.22", [hostile], bake_minutes=60, healthy_share=1.0, now=NOW)[0] is False


def test_odd_documents_are_judged_without_raising():
    healthy = 0
    for doc in fuzzed_docs(600, seed=7):
        ok, why = judge([SiteAnswer("https://odd", doc, None, 1)], version="1.3.22")
        assert why.startswith("canary: ") and "\n" not in why
        healthy += ok
    assert 0 < healthy < 600  # some mutations leave a healthy canary, most do not


def test_reason_is_one_line_even_for_hostile_text():
    answer = SiteAnswer("https://a", None, "unreachable: x\ny\x00z " + "w" * 500, 1)
    ok, why = judge([answer])
    assert not ok and "\n" not in why and "\x00" not in why and len(why) < 400


def test_record_helper_is_the_contract_shape():
    rec = record("1.3.22", sha(1))
    assert rec["outcome"] == "deployed" and len(rec["commit"]) == 40


# --------------------------------------------------------------------------- real canaries


class Canaries:
    """Several real hosts following "prod-asterix*" on one git remote, each its own Ghost
    stand-in (serving its ci-cd.json) and its own state, sharing the systemctl stand-in."""

    def __init__(self, make_host, git_remote):
        self.make_host = make_host
        self.git_remote = git_remote
        self.hosts: dict[str, AgentSite] = {}

    def add(self, name: str) -> AgentSite:
        host = self.make_host("prod-asterix*", name=name)
        host.write_config(name=name)
        self.hosts[name] = host
        return host

    def release(self, branch: str, headline: str, *, broken: bool = False) -> str:
        files = {"index.html": None} if broken else {"index.html": page(headline)}
        return self.git_remote.commit_and_push(branch, files, f"B1: {headline}")

    def once(self, *names: str) -> None:
        for name in names:
            result = self.hosts[name].call("once")
            assert result.returncode in (0, 1), result.stderr

    def url(self, name: str) -> str:
        return self.hosts[name].site.url

    def since(self, name: str) -> datetime:
        since = parse_time(self.hosts[name].ci_cd()["current"]["since"])
        assert since is not None
        return since


@pytest.fixture
def canaries(make_host, git_remote) -> Canaries:
    return Canaries(make_host, git_remote)


def test_check_promotion_against_real_canary_sites(canaries):
    for name in ("a", "b", "c"):
        canaries.add(name)
    canaries.release("prod-asterix-1.3.21", "1.3.21")
    canaries.once("a", "b", "c")
    # 1.3.22 is released on a branch spelled with dashes; only a and b have deployed it
    canaries.release("prod-asterix-1-3-22", "1.3.22")
    canaries.once("a", "b")
    doc = canaries.hosts["a"].ci_cd()
    assert (doc["flag"], doc["current"]["version"]) == ("prod-asterix*", "1-3-22")
    assert doc["deploys"][0]["outcome"] == "deployed"
    dead = closed_port_url()
    a, b, c = canaries.url("a"), canaries.url("b"), canaries.url("c")
    promotion = PromotionConfig((a, b, c, dead), bake_minutes=30, healthy_share=1.0,
                                timeout_seconds=5)
    now = datetime.now(timezone.utc)

    ok, why = check_promotion(promotion, "1.3.22", now)
    assert not ok
    assert why.startswith("canary: 0 of 4 sites healthy on 1.3.22 (need 4): ")
    assert f"{a} baking (30 min left)" in why or f"{a} baking (29 min left)" in why
    assert f"{b} baking (" in why
    assert f"{c} not on 1.3.22 (live 1.3.21)" in why
    assert f"{dead} unreachable: connection refused" in why

    # half an hour later a and b have baked: 2 of 4 is enough at 0.5, not at 1.0
    later = max(canaries.since("a"), canaries.since("b")) + timedelta(minutes=30)
    ok, why = check_promotion(promotion, "1-3-22", later)
    assert not ok and why.startswith("canary: 2 of 4 sites healthy on 1-3-22 (need 4): ")
    half = PromotionConfig((a, b, c, dead), bake_minutes=30, healthy_share=0.5,
                           timeout_seconds=5)
    ok, why = check_promotion(half, "1.3.22", later)
    assert ok, why
    assert why.startswith("canary: 2 of 4 sites healthy on 1.3.22 for 30 min (need 2): ")

    # c catches up; with the dead site gone from the list every canary is healthy
    canaries.once("c")
    all_three = PromotionConfig((a, b, c), bake_minutes=30, timeout_seconds=5)
    ok, why = check_promotion(all_three, "1.3.22", canaries.since("c") + timedelta(minutes=31))
    assert ok, why
    assert why == "canary: 3 of 3 sites healthy on 1.3.22 for 30 min (need 3)"


def test_a_real_canary_that_rolled_back_holds_the_promotion(canaries):
    canaries.add("a")
    canaries.add("b")
    canaries.release("prod-asterix-1.3.22", "1.3.22")
    canaries.once("a", "b")
    # 1.3.23 breaks the home page: a deploys it, its checks fail, it rolls back to 1.3.22
    canaries.release("prod-asterix-1.3.23", "1.3.23", broken=True)
    canaries.once("a")
    doc = canaries.hosts["a"].ci_cd()
    assert doc["deploys"][0]["outcome"] == "rolled_back"
    assert doc["current"]["version"] == "1.3.22"
    a, b = canaries.url("a"), canaries.url("b")
    promotion = PromotionConfig((a, b), bake_minutes=10, timeout_seconds=5)
    later = datetime.now(timezone.utc) + timedelta(hours=1)

    ok, why = check_promotion(promotion, "1.3.23", later)
    assert not ok
    assert why == (f"canary: 0 of 2 sites healthy on 1.3.23 (need 2): "
                   f"{a} last deploy rolled back (1.3.23); {b} not on 1.3.23 (live 1.3.22)")
    # and a no longer counts for 1.3.22 either: its newest deploy did not succeed
    ok, why = check_promotion(promotion, "1.3.22", later)
    assert not ok
    assert why == (f"canary: 1 of 2 sites healthy on 1.3.22 (need 2): "
                   f"{a} last deploy rolled back (1.3.23)")
