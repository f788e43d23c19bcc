# ruff: noqa: F811 - pytest fixtures imported from agent_host are test arguments of the same name
"""Release branches end to end: a staging host (flag "staging1*") reading its remote over ssh
with a deploy key, and a prod host (flag "prod-asterix*") whose deploys wait for the 03:30
window, its unit's clock moved by libfaketime. Asserted through what the real Ghost serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.e2e.agent_host import (  # noqa: F401 - fixtures
    AGENT_UNIT,
    POLL_SECONDS,
    SSH_PORT,
    SSHD_UNIT,
    Lab,
    Site,
    journal_entries,
    lab,
    log,
    make_site,
    wait_for,
)

pytestmark = pytest.mark.e2e

MakeSite = Callable[..., Site]

WINDOW = '\n[window]\nstart = "03:30"\nminutes = 60\ntimezone = "Europe/Paris"\n'


class FooterProbe:
    """Every footer the home page showed while it ran (100 ms apart)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.seen: set[str | None] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.add(self.site.footer_shown())
            except Exception:  # noqa: BLE001 - no answer while Ghost restarts
                self.seen.add(None)
            time.sleep(0.1)

    def __enter__(self) -> FooterProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _accepted_logins(site: Site, since: float) -> int:
    return sum("Accepted publickey" in e.message
               for e in journal_entries(site.g, SSHD_UNIT, since))


def test_e2e_staging_follows_the_newest_release_branch_over_ssh(make_site: MakeSite) -> None:
    site = make_site("staging1", flag="staging1*", transport="ssh")
    assert site.remote_url.startswith(f"ssh://root@127.0.0.1:{SSH_PORT}/")
    site.start_agent()
    kit = site.lab.kit
    r = site.remote

    with FooterProbe(site) as probe:
        # staging1-1.3.9, then staging1-1.3.22 branched from it (and staging10-9.9, which is
        # not a release branch of staging1), reaching the remote together in one push.
        c139 = r.commit("staging1-1.3.9", kit.theme_text("staging1 1.3.9"), "B501: release 1.3.9")
        c1322 = r.commit("staging1-1.3.22", kit.theme_text("staging1 1.3.22"),
                         "B502: release 1.3.22", base="staging1-1.3.9")
        c10 = r.commit("staging10-9.9", kit.theme_text("staging10 9.9"), "B500: not staging1",
                       base="staging1-1.3.9")
        r.git("push", "--quiet", "--atomic", "origin", "staging1-1.3.9", "staging1-1.3.22",
              "staging10-9.9")
        record = site.wait_record(c1322, timeout=60)
        assert record["outcome"] == "deployed", record
        assert (record["branch"], record["version"]) == ("staging1-1.3.22", "1.3.22")
        assert sorted(record["cards"]) == ["B501", "B502"]  # what 1.3.22 carries
        site.wait_footer("staging1 1.3.22", timeout=20)

        # A later commit on the older release branch does not go live.
        late = site.push("staging1-1.3.9", "staging1 1.3.9 hotfix", "B503: late fix on 1.3.9")
        wait_for(lambda: _accepted_logins(site, late.at) >= 3, 30,
                 "three polls over ssh after the push", 0.5)
        assert site.footer_shown() == "staging1 1.3.22"

    doc = site.ci_cd()
    assert [(d["commit"], d["outcome"]) for d in doc["deploys"]] == [(c1322, "deployed")]
    assert doc["current"]["commit"] == c1322 and doc["current"]["version"] == "1.3.22"
    for sha in (c139, c10, late.sha):
        assert site.record_for(sha) is None
    shown = {f for f in probe.seen if f}
    assert shown <= {site.footer(0), "staging1 1.3.22"}, shown

    # The transport really was ssh with the deploy key; the host key was accepted once.
    logins = [e.message for e in journal_entries(site.g, SSHD_UNIT, site.started_at)
              if "Accepted publickey for root" in e.message]
    assert logins, "the agent never logged in over ssh"
    known = site.g.run(["ssh-keygen", "-F", f"[127.0.0.1]:{SSH_PORT}", "-f",
                        f"{site.agent_home()}/.ssh/known_hosts"], check=False)
    assert known.returncode == 0, known.stderr
    host_key = (site.lab.root / "ssh" / "host_key.pub").read_text().split()[1]
    assert host_key in known.stdout


def _faketime(lab: Lab, when: str) -> list[str]:
    """Drop-in lines that start the unit's clock at `when`, Paris time (tests/faketime.py)."""
    return [f"Environment=LD_PRELOAD={lab.faketime_library()}",
            f'Environment="FAKETIME=@{when}"',
            "Environment=FAKETIME_DONT_FAKE_MONOTONIC=1",
            "Environment=TZ=Europe/Paris"]


def test_e2e_prod_waits_for_the_0330_window_under_faketime(make_site: MakeSite, lab: Lab) -> None:
    site = make_site("prod", flag="prod-asterix*", window=WINDOW)
    site.install(_faketime(lab, "2026-11-27 14:00:00"))
    site.start_agent()
    pushed = site.push("prod-asterix-1.3.22", "prod 1.3.22 B600", "B600: release 1.3.22")

    # 14:00 in Paris (the unit's clock): pending, nothing deployed.
    def pending() -> dict | None:
        doc = site.ci_cd_or_none()
        return doc if doc and (doc.get("pending") or {}).get("commit") == pushed.sha else None

    doc = wait_for(pending, 30, "ci-cd.json to show the release as pending", 0.25)
    assert "waiting for the deploy window at 2026-11-28T03:30+01:00" in doc["pending"]["reason"]
    assert doc["updated_at"].startswith("2026-11-27T13:0"), doc["updated_at"]  # 14:0x Paris
    assert doc["deploys"] == []
    wait_for(lambda: "waiting for the deploy window" in site.prop("StatusText"), 10,
             "the unit's status line to say it waits")
    wait_for(lambda: any(pushed.sha[:7] in t and "pending" in t for t in site.slack_texts()),
             15, "the pending message on Slack", 0.2)
    time.sleep(3 * POLL_SECONDS + 1)
    assert site.footer_shown() == site.footer(0)
    assert site.record_for(pushed.sha) is None
    assert site.prop("NRestarts") == "0"

    # The night: the unit restarts with its clock at 03:29:50; the agent deploys once 03:30
    # has passed, not before.
    site.install(_faketime(lab, "2026-11-28 03:29:50"))
    site.g.systemctl("restart", AGENT_UNIT)
    restarted = time.time()
    with FooterProbe(site) as probe:
        record = site.wait_record(pushed.sha, timeout=60)
        site.wait_footer("prod 1.3.22 B600", timeout=20)
    log(f"figure: prod window: deployed {time.time() - restarted:.1f} s after the restart at "
        "03:29:50 (fake)")
    assert record["outcome"] == "deployed", record
    assert record["version"] == "1.3.22"
    assert record["started_at"] >= "2026-11-28T02:30:00+00:00", record  # 03:30 Paris
    assert record["started_at"] < "2026-11-28T02:31:00+00:00", record
    assert time.time() - restarted >= 8  # the first polls, at 03:29:5x, did not deploy
    doc = site.ci_cd()
    assert doc["pending"] is None
    assert doc["current"]["commit"] == pushed.sha
    assert {f for f in probe.seen if f} <= {site.footer(0), "prod 1.3.22 B600"}
