"""agent/config.py: loading, defaults, and one clear problem line per mistake."""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path

import pytest

from agent import config as cfg
from agent.config import (
    DEFAULT_CONFIG_PATH,
    CheckConfig,
    Config,
    config_path,
    load_config,
)
from agent.errors import ConfigError, ExitCode
from agent.redact import redact

EXAMPLE = Path(__file__).resolve().parents[1] / "agent.toml.example"

MINIMAL = """\
[site]
name = "dev1"
flag = "dev1"
public_url = "https://dev1.website.com/"
content_dir = "/var/www/ghost/content"

[git]
remote = "git@github.com:acme/site.git"

[deploy]
path = "/var/www/ghost/content/themes/acme"

[ghost]
unit = "ghost_dev1-website-com"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == ExitCode.CONFIG
    assert info.value.problems, "a ConfigError must carry its problems"
    return info.value.problems


def set_key(text: str, table: str, key: str, toml_value: str) -> str:
    """MINIMAL with `key = value` set (replaced or added) in [table]."""
    lines = text.splitlines()
    start = lines.index(f"[{table}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(rf"{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {toml_value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {toml_value}")
    return "\n".join(lines) + "\n"


def drop_key(text: str, key: str) -> str:
    return "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith(f"{key} =")
    )


def one_problem(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems[0]
    return problems[0]


def bad_value(tmp_path: Path, table: str, key: str, toml_value: str, base: str = MINIMAL) -> str:
    """The single problem for [table] key = toml_value; it names the file, key and value."""
    line = one_problem(tmp_path, set_key(base, table, key, toml_value))
    assert f"[{table}] {key} = " in line, line
    return line


# --------------------------------------------------------------------------- valid configs


def test_example_loads_with_expected_values():
    config = load_config(EXAMPLE)
    assert isinstance(config, Config)
    assert config.path == EXAMPLE
    assert config.site.name == "dev1"
    assert config.site.flag == "dev1"
    assert config.site.release_prefix is None
    assert config.site.public_url == "https://dev1.website.com"
    assert config.site.local_url == "http://127.0.0.1:2368"
    assert config.site.content_dir == Path("/var/www/ghost/content")
    assert config.site.ci_cd_dir == Path("/var/www/ghost/content/files")
    assert config.agent.state_dir == Path("/var/lib/ghost-agent")
    assert config.git.remote == "git@github.com:acme/site.git"
    assert config.git.poll_seconds == 10
    assert config.deploy.path == Path("/var/www/ghost/content/themes/acme")
    assert config.deploy.releases_dir == Path("/var/lib/ghost-agent/releases")
    assert config.deploy.keep == 5
    assert config.deploy.build == ()
    assert config.ghost.unit == "ghost_dev1-website-com.service"
    assert config.window is None
    assert config.slack is None
    assert [c.name for c in config.checks] == ["local", "public"]
    assert config.cards.pattern == "[A-Z][0-9]{3,}"


def test_example_optional_tables_load_when_uncommented(tmp_path):
    """The commented [window] and [[checks]] examples are valid too, once uncommented."""
    text = EXAMPLE.read_text(encoding="utf-8")
    # "# [window]", "# start = ...", ...: uncomment; leave [slack] commented (webhook OR token)
    uncommented = (
        re.sub(
            r"^# (\[window\]|\[\[checks\]\]|(?:start|minutes|timezone|name|url|status|contains|"
            r"timeout_seconds) = .*)$",
            r"\1",
            text.split("# [slack]")[0],
            flags=re.M,
        )
        + "# [slack]"
        + text.split("# [slack]")[1]
    )
    config = load_config(write(tmp_path, uncommented))
    assert config.window == cfg.WindowConfig(datetime.time(3, 30), 60, "Europe/Paris")
    assert config.checks == (
        CheckConfig("home", "http://127.0.0.1:2368/", 200, "Acme", 5.0),
        CheckConfig("public", "https://dev1.website.com/"),
    )


def test_minimal_config_gets_the_defaults(tmp_path):
    path = write(tmp_path, MINIMAL)
    config = load_config(path)
    assert config.path == path
    site = config.site
    assert site.public_url == "https://dev1.website.com"  # trailing "/" stripped
    assert site.local_url == "http://127.0.0.1:2368"
    assert site.ci_cd_dir == Path("/var/www/ghost/content/files")
    assert config.agent == cfg.AgentSection(Path("/var/lib/ghost-agent"), 500)
    assert config.git == cfg.GitConfig("git@github.com:acme/site.git", 10, 60, None)
    assert config.deploy == cfg.DeployConfig(
        Path("/var/www/ghost/content/themes/acme"),
        Path("/var/lib/ghost-agent/releases"),
        5,
        (),
        600,
    )
    assert config.ghost == cfg.GhostConfig("ghost_dev1-website-com.service", 90, 60, 30)
    assert config.window is None
    assert config.checks == (
        CheckConfig("local", "http://127.0.0.1:2368/", 200, None, 5),
        CheckConfig("public", "https://dev1.website.com/", 200, None, 5),
    )
    assert config.slack is None
    assert config.cards == cfg.CardsConfig("[A-Z][0-9]{3,}", None, False)


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.site.name = "other"  # type: ignore[misc]


def test_full_config_with_every_table(tmp_path):
    text = MINIMAL.replace('flag = "dev1"', 'flag = "staging1*"') + (
        '[agent]\nstate_dir = "/srv/agent"\nhistory = 20\n'
        '[window]\nstart = "3:05"\nminutes = 90\ntimezone = "Europe/Paris"\n'
        '[[checks]]\nname = "api"\nurl = "{public_url}/ghost/api/content/?key=x"\n'
        'status = 301\ncontains = "ok"\ntimeout_seconds = 2.5\n'
        '[slack]\ntoken = "xoxb-1234-abcd"\nchannel = "#ci-cd"\n'
        '[cards]\npattern = "CARD-[0-9]+"\nboard_url = "https://trello.com/b/x"\nrequire = true\n'
    )
    text = set_key(text, "deploy", "build", '[["npm", "ci"], ["npm", "run", "build"]]')
    text = set_key(text, "deploy", "keep", "2")
    text = set_key(text, "git", "ssh_key", '"/etc/ghost-agent/id_ed25519"')
    text = set_key(text, "git", "poll_seconds", "0.5")
    text = set_key(text, "ghost", "unit", '"ghost.target"')
    config = load_config(write(tmp_path, text))
    assert config.site.release_prefix == "staging1"
    assert config.agent == cfg.AgentSection(Path("/srv/agent"), 20)
    assert config.deploy.releases_dir == Path("/srv/agent/releases")
    assert config.deploy.keep == 2
    assert config.deploy.build == (("npm", "ci"), ("npm", "run", "build"))
    assert config.git.ssh_key == Path("/etc/ghost-agent/id_ed25519")
    assert config.git.poll_seconds == 0.5
    assert config.ghost.unit == "ghost.target"  # a unit suffix is kept
    assert config.window == cfg.WindowConfig(datetime.time(3, 5), 90, "Europe/Paris")
    assert config.checks == (
        CheckConfig("api", "https://dev1.website.com/ghost/api/content/?key=x", 301, "ok", 2.5),
    )
    assert config.slack == cfg.SlackConfig(None, "xoxb-1234-abcd", "#ci-cd", 5)
    assert config.cards == cfg.CardsConfig("CARD-[0-9]+", "https://trello.com/b/x", True)


def test_window_accepts_a_toml_time_literal(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "[window]\nstart = 03:30:00\nminutes = 60\n"))
    assert config.window == cfg.WindowConfig(datetime.time(3, 30), 60, None)


@pytest.mark.parametrize("flag", ["dev1", "feature/new-home", "release_1.2", "staging1*", "a/b*"])
def test_good_flags(tmp_path, flag):
    config = load_config(write(tmp_path, set_key(MINIMAL, "site", "flag", f'"{flag}"')))
    assert config.site.flag == flag


# --------------------------------------------------------------------------- one problem each


def test_wrong_type_names_file_key_and_value(tmp_path):
    line = bad_value(tmp_path, "git", "poll_seconds", '"ten"')
    assert line == (
        f'{tmp_path / "agent.toml"}: [git] poll_seconds = "ten": '
        "expected a number of seconds > 0 and <= 86400"
    )


@pytest.mark.parametrize(
    ("table", "key", "value", "expected"),
    [
        ("git", "poll_seconds", "true", "expected a number of seconds"),  # bools are not numbers
        ("git", "poll_seconds", "0", "expected a number of seconds > 0"),
        ("git", "poll_seconds", "86401", "<= 86400"),
        ("git", "timeout_seconds", "-1", "expected a number of seconds > 0"),
        ("git", "timeout_seconds", "inf", "expected a number of seconds"),
        ("site", "name", "1", "expected a string"),
        ("site", "name", '""', "expected a non-empty name"),
        ("site", "name", '"a\\nb"', "one line"),
        ("agent", "history", "0", "expected a whole number from 1 to 100000"),
        ("agent", "history", "5.0", "expected a whole number"),
        ("deploy", "keep", "1", "expected a whole number from 2 to 1000"),
        ("deploy", "keep", '"5"', "expected a whole number from 2 to 1000"),
        ("ghost", "unit", '"ghost site"', "expected a systemd unit name"),
        ("ghost", "unit", '"-ghost"', "expected a systemd unit name"),
        ("ghost", "journal_lines", "-1", "expected a whole number"),
        ("git", "remote", '"--upload-pack=touch /tmp/x"', 'starting with "-"'),
        ("git", "remote", '""', "expected a git URL or path"),
        ("git", "remote", '"git@github.com:acme/my site.git"', "without spaces"),
        ("git", "remote", '"ext::sh%20-c%20touch%20/tmp/x"', "not the ext:: or fd:: transport"),
        ("git", "remote", '"FD::3"', "not the ext:: or fd:: transport"),
        ("git", "remote", '"https://[::1/site.git"', "expected a git URL with a valid host"),
        ("git", "remote", '"ssh://host:port/site.git"', "with a valid host and port"),
        ("cards", "require", '"yes"', "expected true or false"),
    ],
)
def test_bad_values(tmp_path, table, key, value, expected):
    base = MINIMAL if f"[{table}]" in MINIMAL else MINIMAL + f"[{table}]\n"
    line = bad_value(tmp_path, table, key, value, base)
    assert f"[{table}] {key} = {value}: " in line
    assert expected in line


def test_missing_required_key(tmp_path):
    path = write(tmp_path, drop_key(MINIMAL, "flag"))
    assert problems_of(path) == [f"{path}: [site] flag: missing (required)"]


def test_missing_required_table_is_one_problem(tmp_path):
    text = MINIMAL.replace('[git]\nremote = "git@github.com:acme/site.git"\n', "")
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}: [git]: missing (required table)"]


def test_unknown_key(tmp_path):
    path = write(tmp_path, set_key(MINIMAL, "site", "colour", '"blue"'))
    assert problems_of(path) == [f"{path}: [site] colour: unknown key"]


def test_unknown_key_suggests_the_right_one(tmp_path):
    line = one_problem(tmp_path, set_key(MINIMAL, "git", "poll_second", "5"))
    assert line.endswith("[git] poll_second: unknown key (did you mean poll_seconds?)")


def test_unknown_nested_table_is_an_unknown_key(tmp_path):
    line = one_problem(tmp_path, MINIMAL + "[site.extra]\nx = 1\n")
    assert line.endswith("[site] extra: unknown key")


def test_unknown_table(tmp_path):
    path = write(tmp_path, MINIMAL + "[colours]\nsite = 1\n")
    assert problems_of(path) == [f"{path}: [colours]: unknown table"]


def test_misspelt_table_gets_a_hint(tmp_path):
    line = one_problem(tmp_path, MINIMAL + '[windows]\nstart = "03:30"\n')
    assert line.endswith("[windows]: unknown table (did you mean [window]?)")


def test_key_outside_any_table(tmp_path):
    line = one_problem(tmp_path, 'name = "dev1"\n' + MINIMAL)
    assert line.endswith("name: unknown key outside any table (keys belong in a table)")


def test_table_of_the_wrong_shape(tmp_path):
    line = one_problem(tmp_path, MINIMAL + "[[cards]]\npattern = 'X'\n")
    assert line.endswith("[[cards]]: expected a single [cards] table, not an array of tables")
    line = one_problem(tmp_path, 'cards = "X"\n' + MINIMAL)
    assert line.endswith('cards = "X": expected a [cards] table')


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("public_url", '"dev1.website.com"', "expected an http(s) URL with a host"),
        ("public_url", '"ftp://dev1.website.com"', "expected an http(s) URL with a host"),
        ("public_url", '"https://"', "expected an http(s) URL with a host"),
        ("public_url", '"https://dev1.website.com/?x=1"', "without ?query or #fragment"),
        ("public_url", '"https://dev1.website.com/#top"', "without ?query or #fragment"),
        ("local_url", '"http://127.0.0.1:99999"', "valid host and port"),
        ("local_url", '"http://127.0.0.1 :2368"', "without spaces"),
    ],
)
def test_bad_url(tmp_path, key, value, expected):
    line = bad_value(tmp_path, "site", key, value)
    assert f"[site] {key} = {value}: " in line
    assert expected in line


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("*", 'bad glob: a bare "*" would follow every branch'),
        ("stag*ing", 'bad glob: "*" is only allowed once, at the end, as NAME*'),
        ("*staging1", 'bad glob: "*" is only allowed once, at the end'),
        ("staging1**", 'bad glob: "*" is only allowed once, at the end'),
        ("stag*ing*", 'bad glob: "*" is only allowed once, at the end'),
        ("staging1-*", 'bad glob: write "staging1*"'),
        ("staging1/*", 'bad glob: write "staging1*"'),
        ("staging1.*", 'bad glob: write "staging1*"'),
        ("stag ing*", "bad glob: NAME in NAME* must be a git branch name"),
        ("-staging*", "bad glob: NAME in NAME* must be a git branch name"),
        ("staging[12]", "expected a git branch name or NAME*"),
        ("staging?", "expected a git branch name or NAME*"),
    ],
)
def test_bad_glob_flag(tmp_path, flag, expected):
    line = bad_value(tmp_path, "site", "flag", f'"{flag}"')
    assert f'[site] flag = "{flag}": ' in line
    assert expected in line


@pytest.mark.parametrize(
    "flag",
    ["", "dev 1", "-dev1", "/dev1", "dev1/", "dev1.", "dev1.lock", "a..b", "a//b", "a@{b",
     "a~1", "a^", "a:b", "a\\\\b", "@", "feature/.hidden"],
)  # fmt: skip
def test_bad_exact_flag(tmp_path, flag):
    line = bad_value(tmp_path, "site", "flag", f'"{flag}"')
    assert "expected a git branch name or NAME*" in line


@pytest.mark.parametrize("start", ['"24:00"', '"03:61"', '"3h30"', '"03:30:00"', '""', "330"])
def test_bad_window_time(tmp_path, start):
    base = MINIMAL + '[window]\nstart = "03:30"\nminutes = 60\n'
    line = bad_value(tmp_path, "window", "start", start, base)
    assert f"[window] start = {start}: " in line
    if start != "330":
        assert 'expected a time "HH:MM" from 00:00 to 23:59' in line


def test_good_window_times(tmp_path):
    for text, expected in [("3:30", (3, 30)), ("00:00", (0, 0)), ("23:59", (23, 59))]:
        base = MINIMAL + f'[window]\nstart = "{text}"\nminutes = 1440\n'
        assert load_config(write(tmp_path, base)).window.start == datetime.time(*expected)


@pytest.mark.parametrize("minutes", ["0", "1441", '"60"'])
def test_bad_window_minutes(tmp_path, minutes):
    base = MINIMAL + '[window]\nstart = "03:30"\nminutes = 60\n'
    line = bad_value(tmp_path, "window", "minutes", minutes, base)
    assert "expected a whole number from 1 to 1440" in line


def test_window_needs_start_and_minutes(tmp_path):
    path = write(tmp_path, MINIMAL + "[window]\n")
    assert problems_of(path) == [
        f"{path}: [window] start: missing (required)",
        f"{path}: [window] minutes: missing (required)",
    ]


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "europe/paris", "/etc/passwd", ""])
def test_bad_timezone(tmp_path, zone):
    base = MINIMAL + '[window]\nstart = "03:30"\nminutes = 60\n'
    line = bad_value(tmp_path, "window", "timezone", f'"{zone}"', base)
    assert f'[window] timezone = "{zone}": expected an IANA time zone name' in line


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("site", "content_dir"),
        ("site", "ci_cd_dir"),
        ("agent", "state_dir"),
        ("git", "ssh_key"),
        ("deploy", "path"),
        ("deploy", "releases_dir"),
    ],
)
def test_relative_path(tmp_path, table, key):
    base = MINIMAL if f"[{table}]" in MINIMAL else MINIMAL + f"[{table}]\n"
    line = bad_value(tmp_path, table, key, '"relative/dir"', base)
    # a bad ssh_key may be the private key itself, pasted in: never echoed
    shown = '"***"' if key == "ssh_key" else '"relative/dir"'
    assert line.endswith(f"[{table}] {key} = {shown}: expected an absolute path (starting with /)")


def test_live_path_and_releases_dir_must_not_nest(tmp_path):
    text = set_key(MINIMAL, "deploy", "releases_dir", '"/var/www/ghost/content/themes/acme/r"')
    line = one_problem(tmp_path, text)
    assert "[deploy] releases_dir = " in line
    assert "must not be inside path" in line
    line = bad_value(tmp_path, "deploy", "path", '"/var/lib/ghost-agent/releases/live"')
    assert "must not be inside releases_dir" in line


def test_keep_below_two(tmp_path):
    line = bad_value(tmp_path, "deploy", "keep", "1")
    assert line.endswith("[deploy] keep = 1: expected a whole number from 2 to 1000")


def test_keep_of_thirty_digits(tmp_path):
    line = bad_value(tmp_path, "deploy", "keep", "1" + "0" * 30)
    assert line.endswith("expected a whole number from 2 to 1000")


@pytest.mark.parametrize("pattern", ['"[A-Z"', '"(?P<x"', '"[A-Z]*"'])
def test_bad_regex(tmp_path, pattern):
    line = bad_value(tmp_path, "cards", "pattern", pattern, MINIMAL + "[cards]\n")
    assert f"[cards] pattern = {pattern}: expected a" in line
    assert "regular expression" in line


@pytest.mark.parametrize(
    "build",
    ['"npm ci"', '["npm", "ci"]', "[[]]", '[["npm", ""]]', '[["npm", 1]]', '[["npm"], "ci"]'],
)
def test_build_not_a_list_of_lists(tmp_path, build):
    line = bad_value(tmp_path, "deploy", "build", build)
    assert "expected a list of argv lists" in line


def test_slack_token_without_channel(tmp_path):
    path = write(tmp_path, MINIMAL + '[slack]\ntoken = "xoxb-1111-SECRETCANARY123"\n')
    assert problems_of(path) == [f"{path}: [slack] channel: missing (required when token is set)"]


def test_slack_needs_webhook_or_token(tmp_path):
    line = one_problem(tmp_path, MINIMAL + '[slack]\nchannel = "#ci-cd"\n')
    assert "[slack] webhook_url: missing (set webhook_url, or token and channel)" in line


def test_slack_webhook_and_token_together(tmp_path):
    text = MINIMAL + '[slack]\nwebhook_url = "https://hooks.slack.com/services/T/B/X"\n'
    line = one_problem(tmp_path, text + 'token = "xoxb-1"\nchannel = "#c"\n')
    assert "not both" in line


def test_invalid_toml(tmp_path):
    path = write(tmp_path, '[site]\nname = "dev1"\n[git\nremote = "x"\n')
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: line 3: invalid TOML: ")
    assert "at line 3" in problems[0]


def test_invalid_toml_at_end_of_document(tmp_path):
    path = write(tmp_path, MINIMAL + "keep = ")
    assert problems_of(path) == [f"{path}: invalid TOML: Invalid value (at end of document)"]


def test_not_utf8(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[site]\nname = "\xff"\n')
    (line,) = problems_of(path)
    assert line.startswith(f"{path}: invalid TOML: not UTF-8")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert problems_of(path) == [f"{path}: cannot read config: No such file or directory"]


def test_unreadable_file_is_a_directory(tmp_path):
    (line,) = problems_of(tmp_path)
    assert line.startswith(f"{tmp_path}: cannot read config: ")


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ('url = "{local_url}/"\n', "[[checks]] #1 name: missing (required)"),
        ('name = "x"\n', "[[checks]] #1 url: missing (required)"),
        ('name = "x"\nurl = "/ghost/"\n', '[[checks]] #1 url = "/ghost/": expected an http(s) URL'),
        ('name = "x"\nurl = "{localurl}/"\n', "unknown placeholder {localurl}"),
        ('name = "x"\nurl = "{local_url}/"\nstatus = 700\n', "from 100 to 599"),
        ('name = "x"\nurl = "{local_url}/"\nsize = 7\n', "[[checks]] #1 size: unknown key"),
    ],
)
def test_bad_checks(tmp_path, check, expected):
    line = one_problem(tmp_path, MINIMAL + "[[checks]]\n" + check)
    assert expected in line


def test_duplicate_check_names(tmp_path):
    check = '[[checks]]\nname = "home"\nurl = "{local_url}/"\n'
    line = one_problem(tmp_path, MINIMAL + check + check)
    assert '[[checks]] #2 name = "home": duplicate check name' in line


def test_checks_as_a_single_table(tmp_path):
    line = one_problem(tmp_path, MINIMAL + '[checks]\nname = "home"\nurl = "{local_url}/"\n')
    assert "expected [[checks]] tables" in line


# --------------------------------------------------------------------------- all problems at once


def test_every_problem_is_reported_at_once(tmp_path):
    text = """\
[site]
name = "dev1"
flag = "staging1-*"
public_url = "dev1.website.com"
content_dir = "var/www/ghost/content"
colour = "blue"

[git]
poll_seconds = "ten"

[deploy]
path = "/var/www/ghost/content/themes/acme"
keep = 1
build = ["npm ci"]

[ghost]
unit = "ghost dev1"

[window]
start = "24:00"
minutes = 60
timezone = "Mars/Olympus"

[cards]
pattern = "[A-Z"

[extras]
x = 1
"""
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 13, "\n".join(problems)
    assert all(p.startswith(f"{path}: ") for p in problems)
    joined = "\n".join(problems)
    for fragment in [
        "[extras]: unknown table",
        '[site] flag = "staging1-*": bad glob',
        '[site] public_url = "dev1.website.com"',
        '[site] content_dir = "var/www/ghost/content"',
        "[site] colour: unknown key",
        "[git] remote: missing (required)",
        '[git] poll_seconds = "ten"',
        "[deploy] keep = 1",
        '[deploy] build = ["npm ci"]',
        '[ghost] unit = "ghost dev1"',
        '[window] start = "24:00"',
        '[window] timezone = "Mars/Olympus"',
        '[cards] pattern = "[A-Z"',
    ]:
        assert fragment in joined
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "; ".join(problems)


# --------------------------------------------------------------------------- secrets

CANARY = "SECRETCANARY123"


@pytest.mark.parametrize(
    "slack",
    [
        f'webhook_url = "not a url {CANARY}"',
        f'webhook_url = "ftp://hooks.slack.com/{CANARY}"',
        f'webhook_url = "https://hooks.slack.com:{CANARY}/x"',
        f'webhook_url = ["https://hooks.slack.com/{CANARY}"]',
        f'token = "xoxb {CANARY}"\nchannel = "#c"',
        f'token = ["{CANARY}"]\nchannel = "#c"',
    ],
)
def test_secrets_are_not_echoed(tmp_path, slack):
    line = one_problem(tmp_path, MINIMAL + "[slack]\n" + slack + "\n")
    assert CANARY not in line
    assert '= "***": ' in line


@pytest.mark.parametrize(
    "text",
    [
        f'slack = "https://hooks.slack.com/{CANARY}"\n' + MINIMAL,
        MINIMAL + f'[[slack]]\nwebhook_url = "https://hooks.slack.com/{CANARY}"\n',
        MINIMAL + f'[slak]\nwebhook_url = "https://hooks.slack.com/{CANARY}"\n',
        MINIMAL + f'[slack]\nwebhook = "https://hooks.slack.com/{CANARY}"\n',
    ],
)
def test_misplaced_secrets_are_not_echoed(tmp_path, text):
    problems = problems_of(write(tmp_path, text))
    assert not any(CANARY in line for line in problems), problems


def test_secrets_are_registered_for_redaction(tmp_path):
    text = MINIMAL + f'[slack]\nwebhook_url = "https://hooks.slack.com/services/T/B/{CANARY}"\n'
    config = load_config(write(tmp_path, text))
    assert config.slack.webhook_url.endswith(CANARY)
    assert CANARY not in redact(f"posting to {config.slack.webhook_url} failed")

    bot = "xoxb-TOKENCANARY456"
    load_config(write(tmp_path, MINIMAL + f'[slack]\ntoken = "{bot}"\nchannel = "#c"\n'))
    assert redact(f"auth failed for {bot}") == "auth failed for ***"


def test_remote_credentials_are_registered_and_not_echoed(tmp_path):
    remote = "https://deploy:REMOTECANARY789@github.com/acme/site.git"
    config = load_config(write(tmp_path, set_key(MINIMAL, "git", "remote", f'"{remote}"')))
    assert config.git.remote == remote
    assert redact("fatal: REMOTECANARY789 rejected") == "fatal: *** rejected"

    bad = "https://TOKENONLYCANARY@github.com/acme/my site.git"
    line = bad_value(tmp_path, "git", "remote", f'"{bad}"')
    assert "CANARY" not in line


# --------------------------------------------------------------------------- config_path


def test_config_path_precedence(monkeypatch):
    monkeypatch.delenv("GHOST_AGENT_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_CONFIG_PATH == Path("/etc/ghost-agent/agent.toml")
    monkeypatch.setenv("GHOST_AGENT_CONFIG", "/env/agent.toml")
    assert config_path(None) == Path("/env/agent.toml")
    assert config_path("/cli/agent.toml") == Path("/cli/agent.toml")
    monkeypatch.setenv("GHOST_AGENT_CONFIG", "")
    assert config_path(None) == DEFAULT_CONFIG_PATH


# --------------------------------------------------------------------------- [publish]


def test_publish_defaults_to_no_journal_tail(tmp_path):
    assert load_config(write(tmp_path, MINIMAL)).publish == cfg.PublishConfig(journal_tail=False)
    assert load_config(EXAMPLE).publish.journal_tail is False


def test_publish_journal_tail_is_an_opt_in(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + "[publish]\njournal_tail = true\n"))
    assert config.publish == cfg.PublishConfig(journal_tail=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.publish.journal_tail = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[publish]\njournal_tail = "yes"\n',
         '[publish] journal_tail = "yes": expected true or false'),
        ("[publish]\njournal_tail = 1\n", "[publish] journal_tail = 1: expected true or false"),
        ("[publish]\njournal_tails = true\n",
         "[publish] journal_tails: unknown key (did you mean journal_tail?)"),
        ("[publish]\njournal_tail = {on = true}\n",
         "[publish] journal_tail = {on = true}: expected true or false"),
    ],
)
def test_bad_publish(tmp_path, text, expected):
    assert one_problem(tmp_path, MINIMAL + text).endswith(expected)


def test_publish_that_is_not_a_table(tmp_path):
    line = one_problem(tmp_path, "publish = true\n" + MINIMAL)
    assert line.endswith("publish = true: expected a [publish] table")


# --------------------------------------------------------------------------- two phases
# A value that fails phase one is reported once; the rules relating it to others skip it.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + '[fleet]\nat = "05:00"\nout_dir = 5\n',
         "[fleet] out_dir = 5: expected a string"),
        (MINIMAL + '[fleet]\nsites = ["https://a.b"]\nslack = "yes"\n',
         '[fleet] slack = "yes": expected true or false'),
        (MINIMAL + '[window]\nstart = "03:30"\nminutes = "60"\nspread_minutes = 90\n',
         '[window] minutes = "60": expected a whole number from 1 to 1440'),
        (set_key(MINIMAL, "site", "public_url", "5") + '[[checks]]\nname = "x"\n'
         'url = "{public_url}/"\n', "[site] public_url = 5: expected a string"),
        (set_key(MINIMAL, "site", "local_url", '"http://[::1"'),
         '[site] local_url = "http://[::1": expected an http(s) URL with a valid host and port'),
        (set_key(set_key(MINIMAL, "git", "remote", '"https://[::1"'), "git", "credentials",
                 '"u:p4ssword"'),
         '[git] remote = "https://[::1": expected a git URL with a valid host and port, or a path'),
        (MINIMAL.replace('remote = "git@github.com:acme/site.git"',
                         'remote = "https://git.example.com/site.git"\ncredentials = 5'),
         '[git] credentials = "***": expected a string'),
        (MINIMAL + '[agent]\nstate_dir = "var/lib"\n',
         '[agent] state_dir = "var/lib": expected an absolute path (starting with /)'),
    ],
)
def test_a_bad_value_is_reported_once(tmp_path, text, expected):
    assert one_problem(tmp_path, text).endswith(expected)


def test_the_cross_field_rules_still_run_on_good_values(tmp_path):
    text = MINIMAL + '[window]\nstart = "03:30"\nminutes = 60\nspread_minutes = 60\n'
    assert "[window] spread_minutes = 60: must be shorter than the window" in \
        one_problem(tmp_path, text)
    text = MINIMAL + '[fleet]\nsites = ["https://a.b"]\nat = "05:00"\n'
    assert one_problem(tmp_path, text).endswith("[fleet] at: a daily report needs out_dir or "
                                                "slack = true")
    text = MINIMAL + '[fleet]\nsites = ["https://a.b"]\nslack = true\n'
    assert one_problem(tmp_path, text).endswith("[fleet] slack = true: needs a [slack] table")
    text = set_key(MINIMAL, "git", "credentials", '"u:p"')
    assert one_problem(tmp_path, text).endswith(
        "[git] credentials: only for an http(s) remote without credentials of its own")


def test_duplicate_names_are_checked_only_among_good_names(tmp_path):
    check = '[[checks]]\nname = 5\nurl = "{local_url}/"\n'
    path = write(tmp_path, MINIMAL + check + check)
    assert problems_of(path) == [f"{path}: [[checks]] #1 name = 5: expected a string",
                                 f"{path}: [[checks]] #2 name = 5: expected a string"]


# --------------------------------------------------------------------------- odd documents


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + '"a\\nb" = 1\n', '[ghost] "a\\nb": unknown key'),
        ('"x\\u2028y" = 1\n' + MINIMAL,
         '"x\\u2028y": unknown key outside any table (keys belong in a table)'),
        (MINIMAL + "[[extra]]\nx = 1\n", "[[extra]]: unknown array of tables"),
        (MINIMAL + "[[window]]\nx = 1\n",
         "[[window]]: expected a single [window] table, not an array of tables"),
        ("git = [1, 2]\n" + MINIMAL.replace('[git]\nremote = "git@github.com:acme/site.git"\n',
                                           ""), "git = [1, 2]: expected a [git] table"),
        (set_key(MINIMAL, "site", "public_url", "{a = 1}"),
         "[site] public_url = {a = 1}: expected a string"),
        (set_key(MINIMAL, "site", "name", '{token = "SECRETCANARY123"}'),
         '[site] name = {token = "***"}: expected a string'),
        (set_key(MINIMAL, "site", "name", '"a\\u2028b"'),
         '[site] name = "a\\u2028b": expected a name on one line, without control characters'),
        (MINIMAL + '[window]\nstart = "٠٣:٣٠"\nminutes = 60\n',
         '[window] start = "٠٣:٣٠": expected a time "HH:MM" from 00:00 to 23:59, e.g. "03:30"'),
        (MINIMAL + '[window]\nstart = "03:30"\nminutes = 60\ntimezone = "zone.tab"\n',
         '[window] timezone = "zone.tab": expected an IANA time zone name, e.g. "Europe/Paris" '
         'or "UTC"'),
        (set_key(MINIMAL, "git", "poll_seconds", "1" + "0" * 400),
         "000…: expected a number of seconds > 0 and <= 86400"),
        (set_key(MINIMAL, "git", "poll_seconds", "nan"),
         "[git] poll_seconds = nan: expected a number of seconds > 0 and <= 86400"),
        (MINIMAL + "[cards]\npattern = 'a{99999999999}'\n",
         "[cards] pattern = \"a{99999999999}\": expected a Python regular expression (a repeat "
         "count is too large)"),
        (MINIMAL + "[cards]\npattern = \"(?<\\n)\"\n", None),
    ],
)
def test_odd_documents_give_one_line_each(tmp_path, text, expected):
    line = one_problem(tmp_path, text)
    assert len(line.splitlines()) == 1 and line.isprintable(), repr(line)
    if expected is not None:
        assert line.endswith(expected), line
    assert "SECRETCANARY123" not in line


def test_a_huge_value_is_cut(tmp_path):
    line = bad_value(tmp_path, "site", "name", "[" + ", ".join(['"' + "x" * 1000 + '"'] * 1000)
                     + "]")
    assert len(line) < len(str(tmp_path)) + 200
    assert "…" in line


def test_a_deep_value_is_cut(tmp_path):
    line = bad_value(tmp_path, "site", "name", "[" * 200 + "]" * 200)
    assert line.endswith(": expected a string")
    assert len(line) < len(str(tmp_path)) + 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9" * 5000, "invalid TOML: a number too long to read"),
        ("[" * 3000 + "]" * 3000, "invalid TOML: arrays or inline tables nested too deeply"),
        ("{a = " * 2000 + "1" + "}" * 2000,
         "invalid TOML: arrays or inline tables nested too deeply"),
    ],
)
def test_documents_python_cannot_read_are_one_line(tmp_path, value, expected):
    path = write(tmp_path, MINIMAL + f"[agent]\nhistory = {value}\n")
    assert problems_of(path) == [f"{path}: {expected}"]


def test_a_secret_is_masked_in_lines_written_before_it_was_read(tmp_path):
    """[site] is read before [slack]: a token pasted in both is masked in both lines."""
    token = "xoxb-SECRETCANARY123"
    text = set_key(MINIMAL, "site", "public_url", f'"{token}"')
    path = write(tmp_path, text + f'[slack]\ntoken = "{token}"\n')
    problems = problems_of(path)
    assert problems == [
        f'{path}: [site] public_url = "***": expected an http(s) URL with a host, e.g. '
        "https://example.com",
        f"{path}: [slack] channel: missing (required when token is set)",
    ]
    # where a long value is cut, the cut does not leave half of the token showing
    text = set_key(MINIMAL, "site", "public_url", f'"{"x" * 70}{token}"')
    [line, _] = problems_of(write(tmp_path, text + f'[slack]\ntoken = "{token}"\n'))
    assert f'[site] public_url = "{"x" * 70}***"' in line


# --------------------------------------------------------------------------- [webhook]

WEBHOOK_SECRET = "whsecCANARY0123456789"


def test_webhook_is_off_without_its_table(tmp_path):
    assert load_config(write(tmp_path, MINIMAL)).webhook is None


def test_webhook_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + f'[webhook]\nsecret = "{WEBHOOK_SECRET}"\n'))
    assert config.webhook == cfg.WebhookConfig(listen_host="127.0.0.1", listen_port=9302,
                                               path="/ghost-agent/webhook",
                                               secret=WEBHOOK_SECRET, rate_per_minute=60)
    assert WEBHOOK_SECRET not in repr(config.webhook)
    assert redact(f"signed with {WEBHOOK_SECRET}") == "signed with ***"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:9400", "127.0.0.1", 9400), ("[::1]:9302", "::1", 9302),
     ("0.0.0.0:80", "0.0.0.0", 80), ("localhost:65535", "localhost", 65535)],
)
def test_webhook_listen(tmp_path, listen, host, port):
    text = MINIMAL + (f'[webhook]\nlisten = "{listen}"\npath = "/hooks/ghost"\n'
                      f'secret = "{WEBHOOK_SECRET}"\nrate_per_minute = 5\n')
    webhook = load_config(write(tmp_path, text)).webhook
    assert (webhook.listen_host, webhook.listen_port) == (host, port)
    assert (webhook.path, webhook.rate_per_minute) == ("/hooks/ghost", 5)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("listen", '"127.0.0.1"', 'expected host:port, e.g. "127.0.0.1:9302" or "[::1]:9302"'),
        ("listen", '"127.0.0.1:0"', "expected host:port"),
        ("listen", '"127.0.0.1:65536"', "expected host:port"),
        ("listen", '":9302"', "expected host:port"),
        ("listen", '"::1:9302"', "expected host:port"),
        ("listen", '"[nope]:9302"', "expected host:port"),
        ("listen", '"http://127.0.0.1:9302"', "expected host:port"),
        ("listen", '"127.0.0.1:٩٣٠٢"', "expected host:port"),
        ("listen", "9302", "expected a string"),
        ("path", '"ghost-agent/webhook"', "expected a URL path starting with /, without spaces, "
         "? or #"),
        ("path", '"/ghost agent"', "expected a URL path starting with /"),
        ("path", '"/hook?x=1"', "expected a URL path starting with /"),
        ("rate_per_minute", "0", "expected a whole number from 1 to 6000"),
        ("rate_per_minute", '"60"', "expected a whole number from 1 to 6000"),
    ],
)
def test_bad_webhook_values(tmp_path, key, value, expected):
    base = MINIMAL + f'[webhook]\nsecret = "{WEBHOOK_SECRET}"\n'
    assert f"[webhook] {key} = {value}: {expected}" in bad_value(tmp_path, "webhook", key,
                                                                  value, base)


@pytest.mark.parametrize("secret", ['"short-CANARY"', '"has a space CANARY0123"', "12345"])
def test_a_bad_webhook_secret_is_not_echoed(tmp_path, secret):
    line = bad_value(tmp_path, "webhook", "secret", secret, MINIMAL + "[webhook]\n")
    assert '[webhook] secret = "***": expected ' in line
    assert "CANARY" not in line and "12345" not in line


def test_webhook_needs_a_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(tmp_path, MINIMAL + '[webhook]\nlisten = "127.0.0.1:9302"\nport = 1\n')
    assert problems_of(path) == [
        f"{path}: [webhook] secret: missing (set secret, secret_file, or the systemd credential "
        "webhook-secret)",
        f"{path}: [webhook] port: unknown key",
    ]


def test_webhook_that_is_not_a_table_is_not_echoed(tmp_path):
    line = one_problem(tmp_path, f'webhook = "{WEBHOOK_SECRET}"\n' + MINIMAL)
    assert line.endswith('webhook = "***": expected a [webhook] table')


def test_unknown_keys_are_reported_in_the_order_of_the_file(tmp_path):
    text = set_key(set_key(set_key(MINIMAL, "site", "zeta", "1"), "site", "alpha", "1"), "site",
                   "mid", "1")
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}: [site] {name}: unknown key"
                                 for name in ("mid", "alpha", "zeta")]
