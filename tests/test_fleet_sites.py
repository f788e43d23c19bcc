"""agent.fleet_sites: the fleet's site list and each site's ci-cd.json URL."""

from __future__ import annotations

import pytest

from agent import fleet_sites
from agent.config import FleetConfig
from agent.errors import ConfigError


# --------------------------------------------------------------------------- URLs


def test_ci_cd_json_url():
    assert fleet_sites.ci_cd_json_url("https://a.website.com") == \
        "https://a.website.com/content/files/ci-cd.json"
    assert fleet_sites.ci_cd_json_url("https://a.website.com/") == \
        "https://a.website.com/content/files/ci-cd.json"
    assert fleet_sites.ci_cd_json_url("https://a.website.com/blog") == \
        "https://a.website.com/blog/content/files/ci-cd.json"
    assert fleet_sites.ci_cd_json_url("https://x.com/reports/a.JSON") == "https://x.com/reports/a.JSON"


# --------------------------------------------------------------------------- site lists


def test_read_sites_from_config_and_file(tmp_path):
    sites_file = tmp_path / "sites.txt"
    sites_file.write_text(
        "# prod sites\n"
        "https://a.website.com\n"
        "\n"
        "   https://b.website.com/   # the big one\n"
        "https://a.website.com/\n"
        "https://c.website.com/content/files/ci-cd.json\n"
        "  # https://commented.website.com\n"
    )
    config = FleetConfig(sites=("https://z.website.com", "https://b.website.com"),
                         sites_file=sites_file)
    assert fleet_sites.read_sites(config) == [
        "https://z.website.com", "https://b.website.com", "https://a.website.com",
        "https://c.website.com/content/files/ci-cd.json"]
    assert fleet_sites.read_sites(FleetConfig()) == []


def test_read_sites_reports_bad_lines_and_unreadable_files(tmp_path):
    sites_file = tmp_path / "sites.txt"
    sites_file.write_text("https://a.website.com\nwww.b.website.com\nftp://c\n")
    with pytest.raises(ConfigError) as info:
        fleet_sites.read_sites(FleetConfig(sites_file=sites_file))
    assert info.value.problems == [
        f'{sites_file}:2: "www.b.website.com": expected an http(s) URL with a host, '
        "e.g. https://a.website.com",
        f'{sites_file}:3: "ftp://c": expected an http(s) URL with a host, '
        "e.g. https://a.website.com",
    ]
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError) as info:
        fleet_sites.read_sites(FleetConfig(sites_file=missing))
    assert str(missing) in str(info.value) and "No such file" in str(info.value)
