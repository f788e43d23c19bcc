"""A night of prod, replayed under a moved clock (libfaketime): the canary group deploys at
03:30, the rest waits until the canary has baked, and the 05:00 fleet report tells the owner
how every site fared."""

from __future__ import annotations

import re

import json
import subprocess

import pytest

from tests.agentsite import AgentSite, agent_argv, page
from tests.faketime import faketime_env
from tests.slackstub import SlackStub

pytestmark = pytest.mark.slow  # runs `ghost-agent run` or waits on real time: not in the fast tier

WINDOW = '\n[window]\nstart = "03:30"\nminutes = 120\ntimezone = "Europe/Paris"\n'


def prod_host(make_host, name: str, flag: str, extra: str = "") -> AgentSite:
    host = make_host(flag, name=name)
    host.settings["name"] = name
    host.extra_config = WINDOW + extra
    host.write_config()
    return host


def at(host: AgentSite, when: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*agent_argv(), "--config", str(host.config_path), *args],
                          env=host.env() | faketime_env(when), capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def slack():
    with SlackStub() as stub:
        yield stub


def test_a_night_of_prod(tmp_path, git_remote, make_host, slack):
    canary = prod_host(make_host, "asterix-1", "prod-asterix*")
    sites_file = tmp_path / "fleet-sites.txt"
    bento = prod_host(
        make_host, "bento-1", "prod-bento*",
        extra=(f'\n[promotion]\ncanary_urls = ["{canary.site.url}"]\nbake_minutes = 60\n'
               f'\n[fleet]\nsites_file = "{sites_file}"\nout_dir = "{tmp_path / "fleet"}"\n'
               f'at = "05:00"\ntimezone = "Europe/Paris"\nslack = true\n'
               f'\n[slack]\nwebhook_url = "{slack.webhook_url()}"\n'))
    late = prod_host(make_host, "bento-2", "prod-bento*")
    sites_file.write_text(f"# prod\n{canary.site.url}\n{bento.site.url}\n{late.site.url}\n"
                          "http://127.0.0.1:9\n")

    # The day before: each group's release branch of 1.3.22 is pushed.
    git_remote.commit_and_push("prod-asterix-1.3.22", {"index.html": page("B7 1.3.22")},
                               "B700: release 1.3.22")
    git_remote.commit_and_push("prod-bento-1-3-22", {"index.html": page("B7 1.3.22")},
                               "B700: release 1.3.22", base="prod-asterix-1.3.22")
    for host in (canary, bento, late):
        day = at(host, "2026-11-27 14:00:00", "once")
        assert day.returncode == 0, day.stderr
        assert "waiting for the deploy window" in host.ci_cd()["pending"]["reason"]
    assert canary.get("/")[0] == 500  # nothing deployed by day: no theme yet

    # 03:31: the window opens; the canary deploys, bento waits for it to bake.
    assert at(canary, "2026-11-28 03:31:00", "once").returncode == 0
    assert canary.get("/") == (200, page("B7 1.3.22"))
    waiting = at(bento, "2026-11-28 03:32:00", "once")
    assert waiting.returncode == 0
    reason = bento.ci_cd()["pending"]["reason"]
    assert reason.startswith("canary: 0 of 1 sites healthy on 1-3-22 (need 1)")
    # 59 when the canary's deploy ended within its first second, 60 on a slower machine
    assert re.search(r"baking \((59|60) min left\)", reason), reason

    # 04:35: baked for an hour: bento deploys. bento-2 was down all night.
    assert at(bento, "2026-11-28 04:35:00", "once").returncode == 0
    assert bento.get("/") == (200, page("B7 1.3.22"))
    assert bento.ci_cd()["current"]["version"] == "1-3-22"

    # 05:00: the fleet report.
    report = at(bento, "2026-11-28 05:00:30", "fleet", "--slack")
    assert report.returncode == 1, report.stderr  # bento-2 and one dead site need a look
    summary = json.loads((tmp_path / "fleet" / "ci-cd.json").read_text())
    states = {site["url"]: site["state"] for group in summary["groups"]
              for site in group["sites"]}
    assert states[canary.site.url] == "updated"
    assert states[bento.site.url] == "updated"
    assert states[late.site.url] == "pending"
    assert "unreachable" in (tmp_path / "fleet" / "ci-cd.txt").read_text()
    message = json.dumps(slack.bodies()[-1])
    assert "2 updated, 1 pending, 1 unreachable" in message
    assert "127.0.0.1:9" in message  # the site that needs a look is named


def test_the_daily_report_runs_once_inside_its_hour(tmp_path):
    from datetime import datetime, time
    from zoneinfo import ZoneInfo

    from agent.config import FleetConfig
    from agent.fleet_job import DailyReport

    paris = ZoneInfo("Europe/Paris")
    report = DailyReport(FleetConfig(sites=("http://127.0.0.1:9",), out_dir=tmp_path / "out",
                                     at=time(5, 0), timezone="Europe/Paris", timeout_seconds=1),
                         tmp_path / "state", notifier=None)
    assert not report.due(datetime(2026, 11, 28, 4, 59, tzinfo=paris))
    assert report.due(datetime(2026, 11, 28, 5, 0, tzinfo=paris))
    assert report.run_if_due(datetime(2026, 11, 28, 5, 1, tzinfo=paris)) is not None
    assert (tmp_path / "out" / "ci-cd.txt").exists()
    assert not report.due(datetime(2026, 11, 28, 5, 2, tzinfo=paris))  # once a day
    assert not report.due(datetime(2026, 11, 28, 6, 1, tzinfo=paris))  # too late: tomorrow
    assert report.due(datetime(2026, 11, 29, 5, 0, tzinfo=paris))
