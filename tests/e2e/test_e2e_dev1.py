"""A dev host end to end: the agent as a real systemd service next to a real Ghost.

One guest (systemd as PID 1, private network) per module; each test makes its own Ghost site,
theme repository and agent config (tests/e2e/agent_host.py). Every outcome is asserted through
what Ghost serves (the home page and /content/files/ci-cd.{txt,html,json}), systemd and the Slack
stand-in. The dev1 agent reads its remote over smart HTTP (git http-backend).

Scenarios: a visible push goes live (home page, ci-cd.txt/.html/.json, Slack with the card);
broken themes (unclosed {{#if}}: 400; index.hbs removed: 500) are rolled back with the Ghost
unit's journal tail in the record; SIGKILL of the agent during the build and while Ghost
restarts ends verified and recorded; a SIGSTOPped agent is restarted by the watchdog; a config
error fails the unit once with 78 and says why; the first deploy over a hand-installed theme
directory adopts it.
"""

# ruff: noqa: F811 - pytest fixtures imported from agent_host are test arguments of the same name
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.agent_host import (  # noqa: F401 - fixtures
    AGENT_UNIT,
    Site,
    lab,
    log,
    make_site,
    wait_for,
)

pytestmark = pytest.mark.e2e

MakeSite = Callable[..., Site]


def _figure(name: str, value: str) -> None:
    log(f"figure: {name}: {value}")


def _status(site: Site) -> str:
    return site.g.systemctl("status", AGENT_UNIT, "-n", "30", check=False).stdout


def _slack_for(site: Site, sha: str, *words: str, timeout: float = 15) -> str:
    """The first Slack message for this site that names the commit and all `words`."""
    def found() -> str | None:
        for text in site.slack_texts():
            if sha[:7] in text and all(w in text for w in words):
                return text
        return None

    return wait_for(found, timeout, f"a Slack message naming {sha[:7]} and {words}", 0.2)


# ----------------------------------------------------------------------------------------------


def test_e2e_push_to_dev1_is_served_by_ghost(make_site: MakeSite) -> None:
    site = make_site("dev1")
    assert site.footer_shown() == site.footer(0)
    assert site.theme_dir.resolve() == site.hand_installed  # the theme installed by hand
    site.start_agent()  # Type=notify: returns once the agent said READY=1
    assert site.prop("Type") == "notify"
    assert site.prop("ActiveState") == "active"
    assert site.prop("WatchdogUSec") == "1min"  # the project's unit file, not the drop-in
    assert site.prop("ExecMainStartTimestampMonotonic") != "0"
    assert site.prop("StatusText")  # STATUS= reached systemd

    footer = "dev1 footer B321 new look"
    pushed = site.push("dev1", footer, "B321: new footer for the autumn look")
    seen = site.wait_footer(footer, timeout=60)
    _figure("push to live (first deploy)", f"{seen - pushed.at:.2f} s")
    record = site.wait_record(pushed.sha)
    assert record["outcome"] == "deployed", record
    assert record["cards"] == ["B321"]
    assert record["uncarded_commits"] == []
    assert record["previous_commit"] is None  # the hand-installed theme had no commit
    assert [c["ok"] for c in record["checks"]] == [True]
    assert record["trigger"] == "poll"

    # What Ghost serves: the new theme, and the deploy in all three ci-cd files.
    home = site.home()
    assert home.status == 200
    assert footer in home.text and site.footer(0) not in home.text
    doc = site.ci_cd()
    assert doc["site"] == "dev1" and doc["flag"] == "dev1"
    assert doc["current"]["commit"] == pushed.sha
    assert doc["pending"] is None
    txt = site.get("/content/files/ci-cd.txt")
    assert txt.status == 200
    line = [ln for ln in txt.text.splitlines() if pushed.sha[:7] in ln]
    assert line and "deployed" in line[-1] and "B321" in line[-1], txt.text
    html = site.get("/content/files/ci-cd.html")
    assert html.status == 200
    assert pushed.sha[:7] in html.text and "B321" in html.text

    # The live path is now the agent's symlink to a release directory (a tree without .git).
    live = site.theme_dir.resolve()
    assert live.parent == site.releases_dir.resolve()
    assert (live / "default.hbs").is_file() and not (live / ".git").exists()

    # Slack heard of it, with the card; no secret anywhere.
    text = _slack_for(site, pushed.sha, "B321", "deployed")
    secret = site.webhook_path.rsplit("/", 1)[-1]
    for served in (text, txt.text, html.text, str(doc)):
        assert secret not in served

    # The unit's STATUS= line follows the agent.
    wait_for(lambda: pushed.sha[:7] in site.prop("StatusText"), 10,
             "the unit's status line naming the deployed commit")
    assert site.n_restarts() == 0


def test_e2e_broken_theme_is_rolled_back(make_site: MakeSite) -> None:
    # Without gscan before the switch (test_e2e_golive.py has it): the checks after the
    # restart are what catch a broken theme here, and the rollback puts the old one back.
    site = make_site("dev1", ghost_extra="validate = false")
    kit = site.lab.kit
    site.start_agent()
    hand = site.footer(0)  # the theme installed by hand, adopted by the agent's first deploy

    # Watch what visitors get all along.
    seen: set[str | None] = set()
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                seen.add(site.footer_shown())
            except Exception:  # noqa: BLE001 - connection refused while Ghost restarts
                seen.add("(no answer)")
            time.sleep(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        # 1. The first push is a template Ghost cannot parse (GET / answers 400): the agent
        #    goes back to the hand-installed theme it adopted.
        broken = site.push("dev1", "dev1 footer B201 broken", "B201: unclosed if",
                           files=kit.broken_unclosed_if("dev1 footer B201 broken"))
        record = site.wait_record(broken.sha, timeout=120)
        _figure("rollback (push to rolled_back recorded), unclosed {{#if}}",
                f"{time.time() - broken.at:.1f} s with verify_seconds=15")
        assert record["outcome"] == "rolled_back", record
        assert record["step"] == "checks"
        assert "answered 400" in record["error"]
        # Ghost's journal stays out of the public files; the operator has it in the state.
        assert record["journal_tail"] == [], record
        private = json.loads(site.state_dir.joinpath("state.json").read_text())
        tail = next(r["journal_tail"] for r in private["history"] if r["commit"] == broken.sha)
        assert tail, private["history"][0]
        # From the real journalctl of the Ghost unit: its lines carry the unit's identifier
        # and Ghost's own words about the template.
        ident = site.ghost_unit.removesuffix(".service")
        assert any(f"{ident}[" in ln for ln in tail), tail
        assert "Parse error" in "\n".join(tail) or "default.hbs" in "\n".join(tail), tail
        assert site.footer_shown() == hand
        _slack_for(site, broken.sha, "rolled back")

        # The failed commit is quarantined: later polls do not try it again.
        time.sleep(3 * 2 + 1)
        assert [r["commit"] for r in site.ci_cd()["deploys"]].count(broken.sha) == 1
        assert site.footer_shown() == hand

        # 2. A good release.
        good = site.push("dev1", "dev1 footer B200 good", "B200: a good release")
        assert site.wait_record(good.sha)["outcome"] == "deployed"
        site.wait_footer(good.footer, timeout=30)

        # 3. index.hbs removed (GET / answers 500): back to the good release.
        no_index = site.push("dev1", "dev1 footer B202 no index", "B202: drop index.hbs",
                             files=kit.broken_no_index("dev1 footer B202 no index"))
        record = site.wait_record(no_index.sha, timeout=120)
        _figure("rollback (push to rolled_back recorded), index.hbs removed",
                f"{time.time() - no_index.at:.1f} s with verify_seconds=15")
        assert record["outcome"] == "rolled_back", record
        assert "answered 500" in record["error"]
        private = json.loads(site.state_dir.joinpath("state.json").read_text())
        tail = next(r["journal_tail"] for r in private["history"] if r["commit"] == no_index.sha)
        assert any("index" in ln for ln in tail), tail
        assert record["live_commit"] == good.sha
        assert record["previous_commit"] == good.sha
    finally:
        stop.set()
        prober.join(5)

    assert site.footer_shown() == good.footer
    doc = site.ci_cd()
    assert doc["current"]["commit"] == good.sha
    assert [r["outcome"] for r in doc["deploys"]] == ["rolled_back", "deployed", "rolled_back"]
    txt = site.get("/content/files/ci-cd.txt").text
    assert len([ln for ln in txt.splitlines() if "rolled_back" in ln]) == 2, txt
    # Visitors only ever saw a verified theme, an error page while a broken release was being
    # checked (None), or nothing while Ghost restarted: never a broken release's footer.
    assert {s for s in seen if s and s.startswith("dev1 footer")} <= {hand, good.footer}, seen
    assert site.n_restarts() == 0


def test_e2e_first_deploy_adopts_a_hand_installed_theme_dir(make_site: MakeSite) -> None:
    """content/themes/acme is a plain directory (a theme installed by hand). Under the hardened
    unit its directory and the releases are separate mounts (ReadWritePaths=), so the agent
    cannot rename it into the releases: it copies it (EXDEV), then links it."""
    site = make_site("dev1", adopt=True)
    assert site.theme_dir.is_dir() and not site.theme_dir.is_symlink()
    site.start_agent()
    pushed = site.push("dev1", "dev1 footer B310 adopted", "B310: first deploy over a dir")
    try:
        record = site.wait_record(pushed.sha, timeout=30)
    finally:
        staged = sorted(p.name for p in site.releases_dir.iterdir()) \
            if site.releases_dir.exists() else []
    assert record["outcome"] == "deployed", record
    site.wait_footer(pushed.footer, timeout=10)
    assert site.theme_dir.is_symlink()
    assert site.theme_dir.resolve().parent == site.releases_dir.resolve()
    # One release per deploy, nothing half-made; nothing left beside the live link either.
    assert len([n for n in staged if not n.startswith(".")]) <= 2, staged
    assert sorted(p.name for p in site.theme_dir.parent.iterdir()) == ["acme", "casper",
                                                                       "source"]


@pytest.mark.parametrize("moment", ["build", "verify"])
def test_e2e_sigkill_mid_deploy_ends_consistent(make_site: MakeSite, moment: str) -> None:
    """SIGKILL of the agent (its MainPID, inside the guest) in the middle of a deploy: systemd
    restarts it (Restart=on-failure) and the site ends in a verified, recorded state."""
    build = '[["sleep", "5.5"]]' if moment == "build" else "[]"
    site = make_site("dev1", build=build)
    site.start_agent()
    first = site.push("dev1", "dev1 footer B300 first", "B300: first")
    assert site.wait_record(first.sha, timeout=60)["outcome"] == "deployed"
    pid = site.main_pid()
    assert pid > 0

    second = site.push("dev1", "dev1 footer B301 second", "B301: second")

    def builds() -> set[int]:
        found = site.g.run(["pgrep", "-f", "^sleep 5.5$"], check=False).stdout.split()
        return {int(x) for x in found}

    old_builds: set[int] = set()
    if moment == "build":
        # The build command runs in the new release before anything is switched.
        old_builds = wait_for(builds, 30, "the build command to run", 0.05)
    else:
        # Switched, Ghost restarting/being checked: the state records the deploy in flight
        # and the live symlink points at the new release.
        def in_flight() -> bool:
            inflight = site.state().get("inflight") or {}
            return inflight.get("commit") == second.sha and \
                site.theme_dir.resolve() == Path(inflight["dir"]).resolve()

        wait_for(in_flight, 30, "the deploy to be in flight (switched, not verified)", 0.02)
    site.g.run(["kill", "-KILL", str(pid)])
    killed_at = time.time()

    wait_for(lambda: site.n_restarts() >= 1 and site.main_pid() not in (0, pid), 30,
             "systemd to restart the agent")
    # The killed agent's build (its own session, same cgroup) did not outlive it.
    assert not old_builds & builds()
    record = site.wait_record(second.sha, timeout=90)
    _figure(f"SIGKILL during {moment}: kill to verified record", f"{time.time() - killed_at:.1f} s")
    assert record["outcome"] == "deployed", record
    if moment == "verify":
        assert record["trigger"] == "recovery"  # finished by the next run, not re-deployed
    site.wait_footer(second.footer, timeout=30)
    doc = site.ci_cd()
    assert doc["current"]["commit"] == second.sha
    assert site.state().get("inflight") is None
    assert [r["commit"] for r in doc["deploys"]].count(second.sha) == 1
    assert site.prop("ActiveState") == "active"
    journal = "\n".join(e.message for e in site.journal())
    assert "code=killed, status=9/KILL" in journal, journal
    # No half-staged release left behind once the deploy finished.
    wait_for(lambda: not [p for p in site.releases_dir.iterdir() if p.name.startswith(".")], 10,
             "staging leftovers to be pruned")


def test_e2e_hung_agent_is_restarted_by_the_watchdog(make_site: MakeSite) -> None:
    site = make_site("dev1")
    site.install(["WatchdogSec=3"])
    site.start_agent()
    assert site.prop("WatchdogUSec") == "3s"
    time.sleep(4)  # pings keep it alive past one WatchdogSec
    assert site.n_restarts() == 0
    pid = site.main_pid()
    site.g.run(["kill", "-STOP", str(pid)])
    stopped_at = time.time()
    wait_for(lambda: site.n_restarts() >= 1 and site.main_pid() not in (0, pid)
             and site.prop("ActiveState") == "active", 30,
             "systemd to restart the hung agent")
    _figure("watchdog: SIGSTOP to a new agent running (WatchdogSec=3)",
            f"{time.time() - stopped_at:.1f} s")
    journal = "\n".join(e.message for e in site.journal())
    assert "Watchdog timeout" in journal, journal
    # The new agent does its job.
    pushed = site.push("dev1", "dev1 footer B400 after watchdog", "B400: after the watchdog")
    assert site.wait_record(pushed.sha, timeout=60)["outcome"] == "deployed"
    site.wait_footer(pushed.footer, timeout=30)


def test_e2e_config_error_fails_once_and_says_why(make_site: MakeSite) -> None:
    site = make_site("dev1")
    bad = site.config_text().replace("poll_seconds = 2", 'poll_seconds = "2s"') \
        .replace("keep = 5", "keeep = 5")
    site.write_config(bad)
    result = site.start_agent(check=False)
    assert result.returncode != 0
    time.sleep(6)  # RestartSec=1 in the drop-in: a restart loop would show by now
    assert site.n_restarts() == 0
    assert site.prop("ActiveState") == "failed"
    assert site.prop("Result") == "exit-code"
    assert site.prop("ExecMainStatus") == "78"
    status = _status(site)
    assert "status=78/CONFIG" in status, status
    assert re.search(r'\[git\] poll_seconds = "2s": expected a number of seconds', status), status
    assert "[deploy] keeep: unknown key (did you mean keep?)" in status, status
    # Nothing was touched.
    assert site.footer_shown() == site.footer(0)
    assert site.theme_dir.resolve() == site.hand_installed
    assert not site.state_dir.joinpath("state.json").exists()



def test_e2e_a_live_link_out_of_the_releases_is_named_not_replaced(make_site: MakeSite) -> None:
    """content/themes/acme links to a directory the agent did not make: the first deploy is
    one `failed` record at the switch step naming the link, and the site stays as it was."""
    site = make_site("dev1", adopt=False)
    site.start_agent()
    pushed = site.push("dev1", "dev1 footer B330 refused", "B330: over a foreign link")
    record = site.wait_record(pushed.sha, timeout=30)
    assert (record["outcome"], record["step"]) == ("failed", "switch"), record
    assert "outside" in record["error"]
    assert site.theme_dir.resolve() == site.hand_installed
    assert site.footer_shown() == site.footer(0)
