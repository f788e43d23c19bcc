"""Releases readers never see fail (#12), on a real Ghost 5 installed by Ghost-CLI inside the
guest (`ghost install`, systemd, sqlite3: Ghost-CLI's own unit, layout and ghost user;
test_e2e_ghost6.py runs the same on Ghost 6): gscan (the one inside the Ghost install, found
from the Ghost unit's WorkingDirectory) stops a broken theme before the switch, and with an
Admin API key (a custom integration's) a good theme goes live by activation, without a
restart. A probe sends GET / every 20 ms all along and counts every answer that is not a
200."""

# ruff: noqa: F811 - pytest fixtures imported from agent_host are test arguments of the same name
from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.agent_host import (  # noqa: F401 - fixtures
    ReaderProbe,
    Site,
    lab,
    log,
    make_site,
)

pytestmark = pytest.mark.e2e
GHOST_INSTALL = "ghost-cli"  # read by the lab fixture

MakeSite = Callable[..., Site]
def test_e2e_releases_go_live_by_activation_and_broken_ones_never_do(make_site: MakeSite
                                                                      ) -> None:
    site = make_site("dev1", admin_key=True)
    kit = site.lab.kit
    site.start_agent()
    ghost_pid = site.main_pid_of(site.ghost_unit)

    with ReaderProbe(site) as probe:
        good = site.push("dev1", "dev1 footer B301 good", "B301: a good release")
        record = site.wait_record(good.sha)
        site.wait_footer(good.footer, timeout=30)
        pushed_to_live = time.time() - good.at
    log(f"figure: activation: push to live {pushed_to_live:.2f} s, {probe.answers} probes, "
        f"{len(probe.failed)} not 200")
    assert (record["outcome"], record["reload"]) == ("deployed", "activate"), record
    assert record["validation"]["validator"] == "gscan" and record["validation"]["fatal"] == []
    assert probe.failed == [] and probe.answers > 10
    assert site.main_pid_of(site.ghost_unit) == ghost_pid  # Ghost was not restarted

    for why, files, code in (
            ("unclosed if", kit.broken_unclosed_if("dev1 footer B302 broken"), "GS005-TPL-ERR"),
            ("no index", kit.broken_no_index("dev1 footer B303 broken"), "GS020-INDEX-REQ")):
        with ReaderProbe(site) as probe:
            broken = site.push("dev1", "never shown", f"B30x: {why}", files=files)
            record = site.wait_record(broken.sha)
            to_outcome = time.time() - broken.at
        log(f"figure: broken theme ({why}): push to `failed` {to_outcome:.2f} s, "
            f"{probe.answers} probes, {len(probe.failed)} not 200")
        assert (record["outcome"], record["step"]) == ("failed", "validate"), record
        assert code in record["error"], record["error"]
        assert record["live_commit"] == good.sha
        assert probe.failed == [], probe.failed
        assert site.footer_shown() == good.footer
        assert site.main_pid_of(site.ghost_unit) == ghost_pid

    status = site.agent_command("status")
    assert f"validate: gscan at {site.site['root']}/current/node_modules/gscan" in status, status
    assert "the key activated a theme at" in status, status


ROUTES = """routes:
  /about-us/:
    template: page
collections:
  /:
    permalink: /{slug}/
    template: index
taxonomies:
  tag: /tag/{slug}/
  author: /author/{slug}/
"""
REDIRECTS = '[{"from": "^/old-page/$", "to": "/about-us/", "permanent": true}]'


def test_e2e_routes_and_redirects_from_the_repository_reach_ghost(make_site: MakeSite) -> None:
    site = make_site("dev1", admin_key="staff",
                     deploy_extra='routes = "routes.yaml"\nredirects = "redirects.json"')
    kit = site.lab.kit
    site.start_agent()
    assert site.get("/about-us/").status == 404  # Ghost's own routes know no such page

    files = {**kit.theme_text("dev1 footer B401"), "routes.yaml": ROUTES,
             "redirects.json": REDIRECTS}
    first = site.push("dev1", "dev1 footer B401", "B401: routes and redirects", files=files)
    record = site.wait_record(first.sha)
    assert record["outcome"] == "deployed", record
    assert record["settings"] == ["routes.yaml", "redirects.json"], record
    assert site.get("/about-us/").status == 200
    moved = site.get("/old-page/")
    assert moved.status == 301 and moved.headers["location"].endswith("/about-us/"), moved

    # Routes Ghost cannot read: the release fails before anything changes.
    bad = site.push("dev1", "dev1 footer B402", "B402: a tab in routes.yaml",
                    files={**files, "index.hbs": kit.theme_text("x")["index.hbs"],
                           "routes.yaml": ROUTES.replace("  /about-us/:", "\t/about-us/:")})
    record = site.wait_record(bad.sha)
    assert (record["outcome"], record["step"]) == ("failed", "settings"), record
    assert "upload routes.yaml: Ghost answered 400" in record["error"], record["error"]
    assert site.get("/about-us/").status == 200  # Ghost kept the routes it had
    assert site.footer_shown() == "dev1 footer B401"
