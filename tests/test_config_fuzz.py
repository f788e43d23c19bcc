"""Any agent.toml gives `check-config` 0 or 78: every problem one line naming the file, never a
traceback, never a secret (issue #9, classes 1 and 6).

Hypothesis mutates agent.toml.example (every optional table filled in): wrong types, missing
and extra keys and tables, odd strings, huge numbers, nested tables where scalars go, then
bytes that are not UTF-8. It runs the CLI in-process, for speed; the cases it found are
pinned below as subprocess runs of the real command.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.redact
from agent import cli
from agent.errors import ExitCode

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "agent.toml.example"
CANARY = "Zq9CANARY7x"  # put only into secret keys: it must never be printed

# CONFIG_FUZZ_SCALE=10 runs ten times as many examples (the default keeps the file near 40 s)
SCALE = float(os.environ.get("CONFIG_FUZZ_SCALE", "1"))
FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the shared checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- the document


def base_document() -> dict:
    """agent.toml.example with every optional table filled in: a valid config."""
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    doc["window"] = {"start": "03:30", "minutes": 60, "timezone": "Europe/Paris",
                     "spread_minutes": 10}
    doc["checks"] = [{"name": "home", "url": "{local_url}/", "status": 200, "contains": "Acme"},
                     {"name": "public", "url": "{public_url}/", "timeout_seconds": 5}]
    doc["slack"] = {"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
                    "timeout_seconds": 5}
    doc["trello"] = {"key": "k3y0000", "token": "t0ken000", "board": "AbCd1234",
                     "label": "deployed", "api_url": "https://api.trello.com/1"}
    doc["promotion"] = {"canary_urls": ["https://a.website.com"], "bake_minutes": 60,
                        "healthy_share": 0.5}
    doc["fleet"] = {"sites": ["https://a.website.com"], "out_dir": "/srv/fleet", "at": "05:00",
                    "timezone": "UTC", "slack": True, "report_url": "https://fleet.example.com"}
    doc["webhook"] = {"listen": "127.0.0.1:9302", "path": "/ghost-agent/webhook",
                      "secret": "s3cret-0123456789abcdef", "rate_per_minute": 60}
    doc["git"]["credentials"] = "deploy:t0ken"
    doc["git"]["remote"] = "https://git.example.com/acme/site.git"
    return doc


BASE = base_document()
SECRET_KEYS = {"slack": ["webhook_url", "token", "webhook_url_file", "token_file"],
               "trello": ["key", "token", "key_file", "token_file"],
               "git": ["credentials", "credentials_file"],
               "webhook": ["secret", "secret_file"]}
KNOWN_KEYS = sorted({key for table in BASE.values() if isinstance(table, dict) for key in table}
                    | {"webhook_url_file", "token_file", "channel", "api_url", "ssh_key",
                       "credentials_file", "key_file", "journal_tail", "board_url",
                       "secret_file"})
TABLE_NAMES = [*BASE, "publish", "windows", "extra", "site.x", ""]


class Raw(str):
    """Written into the TOML text as it is (numbers and nestings no Python value gives)."""


_MUST_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')  # in a TOML basic string


def toml_str(text: str) -> str:
    return '"' + _MUST_ESCAPE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_str(key)


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(doc: dict) -> str:
    """Top-level values first, then one [table] per table (nested ones inline)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- odd values

JUNK = [
    "", " ", "not a url", "http://[::1", "https://x:y@[::1", "https://u:t@[::1", "http://[::1]x",
    "http://[v1.x]/", "http://127.0.0.1:99999", "http://h:-1", "http://h:port/", "https://",
    "http://:80", "ftp://x.com", "//x.com", "https://x.com/?q=1#f", "https://x.com%zz",
    "https://\u0130.com", "{local_url}", "{public_url}/x", "{nope}/", "{{local_url}}", "{",
    "-x", "--upload-pack=touch /tmp/x", "/", "/tmp/\x00x", "relative/dir", "/a\u2028b", "*",
    "a*", "staging1-*", "dev1.lock", "a..b", "24:00", "03:30", "3:5", "٠٣:٣٠", "Europe/Paris",
    "zone.tab", "../etc", "Europe", "[A-Z", "(?P<x", "(?<\n)", "a{99999999999}", "\\",
    "(" * 300 + ")" * 300, "\ufeff", "\u2028", "\x85", "\u202e", "\x00", "é", "\U0001f4a5",
    "git@github.com:acme/site.git", "ssh://git@[::1/x", "file:///srv/site.git",
    "https://hooks.slack.com/services/T/B/X", "xoxb-1", "#c", "ghost.service", "-ghost",
    "127.0.0.1:9302", "[::1]:9302", "[::1", "::1:80", "h:0", "h:65536", "/ghost-agent/webhook",
]
HUGE_STRINGS = ["a" * 50_000, "/" + "a/" * 10_000, "https://" + "a" * 20_000,
                "{" * 5_000, "\u2028" * 5_000, "a://" * 5_000]
RAW = [Raw("9" * 5_000), Raw("-" + "9" * 4_400), Raw("0x" + "f" * 5_000), Raw("03:30:00"),
       Raw("03:30:00.5"), Raw("1979-05-27T07:32:00Z"), Raw("[" * 2_000 + "]" * 2_000),
       Raw("{a = " * 1_000 + "1" + "}" * 1_000), Raw("1e400"), Raw("-inf"), Raw("+nan")]

odd_strings = st.one_of(
    st.text(max_size=30),  # any code point: controls, NUL, unassigned, astral
    st.sampled_from(JUNK),
    st.builds(str.__add__, st.sampled_from(JUNK), st.text(max_size=8)),
)
odd_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),
    st.sampled_from([0, -1, 1, 2, 1440, 86400, 86401, 2**63 - 1, -(2**63), 2**64, 10**30]),
    st.floats(),  # nan, inf, subnormals, -0.0
    st.sampled_from([1e308, 5e-324, -0.0, 0.5, 1.0, 1.5]),
)
scalars = st.one_of(
    st.booleans(), odd_numbers, odd_strings, st.sampled_from(RAW + HUGE_STRINGS),
    st.dates(), st.times(), st.datetimes(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=5,
)
url_secrets = st.one_of(
    st.builds(lambda s: f"https://deploy:{CANARY}@{s}", odd_strings),
    st.builds(lambda s: f"https://{CANARY}@{s}", odd_strings),
)
secret_values = st.one_of(
    st.builds(lambda s: s + CANARY, odd_strings),
    st.builds(lambda s: CANARY + s, odd_strings),
    url_secrets,
    st.builds(lambda v: [CANARY, v], values),
    st.builds(lambda v: {"x": CANARY, "y": v}, values),
)


# --------------------------------------------------------------------------- mutations


def tables_of(doc: dict) -> list[str]:
    return [name for name, value in doc.items() if isinstance(value, dict)]


def mutate(doc: dict, data: st.DataObject) -> None:
    """One change to `doc`, drawn from `data`."""
    kind = data.draw(st.sampled_from(["set", "set", "set", "drop", "drop_table", "table_value",
                                      "extra_table", "top_key", "nest", "checks"]))
    tables = tables_of(doc)
    if kind in ("set", "drop", "nest") and tables:
        table = doc[data.draw(st.sampled_from(tables))]
        if kind == "set":
            table[data.draw(keys)] = data.draw(values)
        elif table:
            key = data.draw(st.sampled_from(sorted(table)))
            if kind == "drop":
                del table[key]
            else:
                table[key] = {key: table[key], **data.draw(st.dictionaries(keys, values,
                                                                            max_size=2))}
    elif kind == "drop_table" and doc:
        del doc[data.draw(st.sampled_from(sorted(doc)))]
    elif kind == "table_value":
        doc[data.draw(st.sampled_from(TABLE_NAMES))] = data.draw(
            st.one_of(scalars, st.lists(values, max_size=3),
                      st.lists(st.dictionaries(keys, values, max_size=3), max_size=3)))
    elif kind == "extra_table":
        doc[data.draw(st.sampled_from(TABLE_NAMES))] = data.draw(
            st.dictionaries(keys, values, max_size=4))
    elif kind == "top_key":
        doc[data.draw(keys)] = data.draw(values)
    elif kind == "checks":
        doc["checks"] = data.draw(st.lists(st.dictionaries(keys, values, max_size=5),
                                           max_size=3))


def mutated(data: st.DataObject, *, at_most: int = 4) -> dict:
    doc = copy.deepcopy(BASE)
    for _ in range(data.draw(st.integers(min_value=1, max_value=at_most))):
        mutate(doc, data)
    return doc


def mutate_bytes(raw: bytes, data: st.DataObject) -> bytes:
    """Edits at byte level: not UTF-8, a BOM, a cut, stray bytes."""
    at = data.draw(st.integers(min_value=0, max_value=len(raw)))
    kind = data.draw(st.sampled_from(["insert", "replace", "bom", "cut", "utf16", "binary"]))
    if kind == "insert":
        return raw[:at] + data.draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if kind == "replace":
        byte = data.draw(st.sampled_from([b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xff", b"\x00",
                                          b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x80"]))
        return raw[:at] + byte + raw[at + 1:]
    if kind == "bom":
        return b"\xef\xbb\xbf" + raw
    if kind == "cut":
        return raw[:at]
    if kind == "utf16":
        return raw.decode("utf-8", "replace").encode("utf-16")
    return data.draw(st.binary(max_size=200))


# --------------------------------------------------------------------------- running it


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "agent.toml"


@pytest.fixture(autouse=True)
def _quick_and_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    # argparse looks for translations each time main() builds its parser; "C" skips the
    # search (half of main's time here) and changes nothing else
    monkeypatch.setenv("LANGUAGE", "C")


def check_config(path: Path) -> tuple[int, str, str]:
    """`ghost-agent --config PATH check-config` in this process: (status, stdout, stderr)."""
    agent.redact._registered.clear()  # each example starts with no secrets registered
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["--config", str(path), "check-config"])
    return status, out.getvalue(), err.getvalue()


def assert_clean_outcome(path: Path, status: int, out: str, err: str) -> None:
    """0 with "PATH: ok", or 78 with one line per problem, each naming the file."""
    assert "Traceback" not in out + err, err
    assert status in (ExitCode.OK, ExitCode.CONFIG), (status, err)  # 70 would be a crash
    if status == ExitCode.OK:
        assert out == f"{path}: ok\n"
        return
    lines = err.splitlines()  # splits at \x85, \u2028, ... too: a value must not break a line
    assert lines, "78 without a problem line"
    for line in lines:
        assert line.startswith(f"{path}: "), line
        assert len(line) < 2000, line[:200]


def run_document(path: Path, doc: dict) -> tuple[int, str, str]:
    path.write_text(toml_document(doc), encoding="utf-8")
    status, out, err = check_config(path)
    assert_clean_outcome(path, status, out, err)
    return status, out, err


def test_the_base_document_is_valid(config_file):
    """The fuzz starts from a valid config, so that one mutation reaches the cross-field
    rules of phase two, not only a missing table."""
    assert run_document(config_file, BASE)[0] == ExitCode.OK


@pytest.mark.slow
@settings(FUZZ, max_examples=int(1600 * SCALE))
@given(data=st.data())
def test_any_mutated_config_gives_0_or_78(config_file, data):
    run_document(config_file, mutated(data))


@pytest.mark.slow
@settings(FUZZ, max_examples=int(500 * SCALE))
@given(data=st.data())
def test_secret_values_are_never_printed(config_file, data):
    doc = mutated(data, at_most=2)
    table = data.draw(st.sampled_from(sorted(SECRET_KEYS)))
    if not isinstance(doc.get(table), dict):
        doc[table] = dict(BASE[table])
    doc[table][data.draw(st.sampled_from(SECRET_KEYS[table]))] = data.draw(secret_values)
    if data.draw(st.booleans()):  # a remote holds a secret only as a URL's user info
        doc["git"] = {**BASE["git"], "remote": data.draw(url_secrets)}
    _, out, err = run_document(config_file, doc)
    assert CANARY not in out + err


@pytest.mark.slow
@settings(FUZZ, max_examples=int(500 * SCALE))
@given(data=st.data())
def test_any_bytes_give_0_or_78(config_file, data):
    raw = toml_document(mutated(data, at_most=2) if data.draw(st.booleans()) else BASE).encode()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        raw = mutate_bytes(raw, data)
    config_file.write_bytes(raw)
    status, out, err = check_config(config_file)
    assert_clean_outcome(config_file, status, out, err)


def test_a_huge_value_costs_linear_time(config_file):
    """redact() once took quadratic time on a long run of letters (every position was tried
    as the start of a URL scheme): a 200 kB value took minutes."""
    doc = copy.deepcopy(BASE)
    doc["site"]["name"] = 12
    doc["site"]["flag"] = "a" * 200_000
    started = time.monotonic()
    status, _, err = run_document(config_file, doc)
    assert status == ExitCode.CONFIG
    assert time.monotonic() - started < 5, "showing a huge value must not take this long"
    assert all(len(line) < 400 for line in err.splitlines())


# --------------------------------------------------------------------------- the real command
# Each of these crashed (a traceback, exit 1) before the two-phase validation.


def real_check_config(path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(path), "check-config"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                          env=env)


def one_problem_line(path: Path, doc: dict) -> str:
    path.write_text(toml_document(doc), encoding="utf-8")
    result = real_check_config(path)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}: "), line
    return line


@pytest.mark.parametrize("table", ["slack", "trello"])
@pytest.mark.parametrize(
    ("api_url", "shown", "expected"),
    [
        (5, "5", "expected a string"),
        (["https://slack.com/api/"], '["https://slack.com/api/"]', "expected a string"),
        ("not a url", '"not a url"',
         "expected an http(s) URL without spaces or control characters"),
        ("http://[::1", '"http://[::1"', "expected an http(s) URL with a valid host and port"),
        (f"https://x:{CANARY}@[::1", '"https://***@[::1"',
         "expected an http(s) URL with a valid host and port"),
    ],
)
def test_a_bad_api_url_is_one_line(tmp_path, table, api_url, shown, expected):
    doc = copy.deepcopy(BASE)
    doc[table]["api_url"] = api_url
    line = one_problem_line(tmp_path / "agent.toml", doc)
    assert line == f"{tmp_path / 'agent.toml'}: [{table}] api_url = {shown}: {expected}"
    assert CANARY not in line


@pytest.mark.parametrize("remote", ["https://u:t@[::1", f"https://deploy:{CANARY}@[::1/x.git",
                                    "http://[::1", "https://git.example.com:99999/site.git"])
def test_a_remote_git_cannot_parse_is_one_line(tmp_path, remote):
    doc = copy.deepcopy(BASE)
    doc["git"]["remote"] = remote
    line = one_problem_line(tmp_path / "agent.toml", doc)
    assert "[git] remote = " in line
    assert line.endswith(": expected a git URL with a valid host and port, or a path")
    assert ":t@" not in line and CANARY not in line


@pytest.mark.parametrize(
    ("table", "key", "raw", "expected"),
    [
        ("agent", "history", Raw("9" * 5_000), "invalid TOML: a number too long to read"),
        ("git", "poll_seconds", Raw("9" * 400), "[git] poll_seconds = 99999"),
        ("agent", "history", Raw("0x" + "f" * 5_000), "[agent] history = 0xfff"),
        ("agent", "history", Raw("[" * 2_000 + "]" * 2_000), "nested too deeply"),
        ("cards", "pattern", "(" * 2_000 + ")" * 2_000, "groups nested too deeply"),
        ("cards", "pattern", "a{99999999999}", "a repeat count is too large"),
    ],
)
def test_numbers_and_nestings_python_refuses_are_one_line(tmp_path, table, key, raw, expected):
    doc = copy.deepcopy(BASE)
    doc[table][key] = raw
    assert expected in one_problem_line(tmp_path / "agent.toml", doc)
