"""agent/validate.py: Ghost's theme validator, gscan, on a release before the switch (#12).
Real gscan from npm (tests/gscan.py) run by the real node."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.errors import DeployError, HostError
from agent.validate import Validator, find_gscan, parse
from tests.gscan import gscan_package

DEFAULT_HBS = ("<!DOCTYPE html><html><head>{{ghost_head}}</head>"
               "<body>{{{body}}}{{ghost_foot}}</body></html>\n")
THEME = {
    "package.json": json.dumps({"name": "acme", "version": "1.0.0",
                                "engines": {"ghost": ">=5.0.0"},
                                "config": {"posts_per_page": 5}}),
    "default.hbs": DEFAULT_HBS,
    "index.hbs": "{{!< default}}<h1>B101 home</h1>{{#foreach posts}}{{title}}{{/foreach}}\n",
    "post.hbs": "{{!< default}}{{#post}}{{title}}{{/post}}\n",
}
UNCLOSED_IF = DEFAULT_HBS.replace("<body>", "<body>{{#if @site.title}}")


@pytest.fixture(scope="module")
def gscan() -> Path:
    found = gscan_package()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def theme(root: Path, changes: dict[str, str | None] | None = None) -> Path:
    files = {**THEME, **(changes or {})}
    for name, text in files.items():
        if text is not None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    return root


def validator(gscan: Path, tmp_path: Path, **more) -> Validator:
    return Validator(gscan, shutil.which("node") or "node", tmp_path / "gscan-tmp", **more)


def test_a_good_theme_passes_with_its_warnings_kept(gscan, tmp_path):
    result = validator(gscan, tmp_path).check(theme(tmp_path / "release"))
    assert result.ok and result.fatal == ()
    assert result.checked_version == "5.x"
    codes = {f.code for f in result.warnings}
    assert "GS010-PJ-KEYWORDS" in codes  # package.json lacks the "ghost-theme" keyword
    assert all("<" not in f.rule for f in result.warnings)  # gscan's HTML is stripped


@pytest.mark.parametrize("changes, code, file", [
    ({"default.hbs": UNCLOSED_IF}, "GS005-TPL-ERR", "default.hbs"),
    ({"index.hbs": None}, "GS020-INDEX-REQ", "index.hbs"),
])
def test_a_theme_ghost_would_refuse_is_fatal(gscan, tmp_path, changes, code, file):
    result = validator(gscan, tmp_path).check(theme(tmp_path / "release", changes))
    assert not result.ok
    [fatal] = [f for f in result.fatal if f.code == code]
    assert file in fatal.files or fatal.files == ()
    error = result.error()
    assert error.startswith("gscan found fatal errors: ") and code in error
    record = result.to_dict()
    assert record["validator"] == "gscan" and record["fatal"][0]["code"] == code
    json.dumps(record)  # it goes into ci-cd.json as it is


def test_a_release_under_the_temp_dir_keeps_its_files(gscan, tmp_path):
    # Ghost's theme code deletes .git and node_modules from a theme under the temp dir; the
    # validator's TMPDIR is elsewhere, so a release there (as in these tests) keeps them.
    release = theme(tmp_path / "release", {"node_modules/lib/index.js": "module.exports = 1",
                                           ".git-keep/x": "x"})
    validator(gscan, tmp_path).check(release)
    assert (release / "node_modules" / "lib" / "index.js").is_file()


def test_a_gscan_that_cannot_run_is_a_host_error(gscan, tmp_path):
    release = theme(tmp_path / "release")
    with pytest.raises(HostError, match="cannot run gscan"):
        Validator(gscan, str(tmp_path / "no-node"), tmp_path / "t").check(release)
    with pytest.raises(HostError, match="gscan exited with 2"):
        validator(tmp_path / "not-gscan", tmp_path).check(release)  # require() fails


def test_a_missing_release_is_refused_not_called_valid(gscan, tmp_path):
    with pytest.raises(DeployError, match="is not a directory"):
        validator(gscan, tmp_path).check(tmp_path / "gone")


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"errors": 1, "warnings": []}',
                                  '{"errors": ["x"], "warnings": []}'])
def test_an_answer_that_is_not_gscans_json_is_refused(text):
    with pytest.raises(ValueError):
        parse(text)


def test_findings_are_cut_to_size():
    finding = {"code": "GS" + "9" * 100, "rule": "<b>x</b>" * 100, "fatal": True,
               "files": [f"f{i}.hbs" for i in range(50)]}
    result = parse(json.dumps({"version": "6.x", "errors": [finding] * 30, "warnings": []}))
    assert len(result.fatal) == 30 and len(result.to_dict()["fatal"]) == 20
    first = result.fatal[0]
    assert len(first.code) <= 60 and len(first.rule) <= 200 and len(first.files) == 5
    assert result.error().endswith("; and 27 more")


def test_gscan_is_found_in_ghost_clis_layout_and_in_a_plain_install(tmp_path):
    site = tmp_path / "var" / "www" / "ghost"
    package = site / "versions" / "5.130.4" / "node_modules" / "gscan"
    package.mkdir(parents=True)
    (package / "package.json").write_text("{}")
    (site / "current").symlink_to(site / "versions" / "5.130.4")
    assert find_gscan(None, site) == site / "current" / "node_modules" / "gscan"
    assert find_gscan(site / "current", None) == site / "current" / "node_modules" / "gscan"
    assert find_gscan(None, site / "versions" / "5.130.4") == package  # the code itself
    assert find_gscan(None, tmp_path) is None
    assert find_gscan(None, None) is None
