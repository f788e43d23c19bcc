"""The bytes of agent.toml: UTF-8, with or without a byte order mark; anything else is one
clear line naming the file and the byte (issue #9, class 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError, ExitCode

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "agent.toml.example"
BOM = b"\xef\xbb\xbf"


def check_config(path: Path) -> subprocess.CompletedProcess:
    """The real command: `python -m agent --config PATH check-config`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run([sys.executable, "-m", "agent", "--config", str(path), "check-config"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                          env=env)


def the_one_problem(path: Path) -> str:
    result = check_config(path)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def write(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "agent.toml"
    path.write_bytes(raw)
    return path


def test_a_byte_order_mark_is_accepted(tmp_path):
    """Notepad and other Windows editors start a UTF-8 file with EF BB BF."""
    path = write(tmp_path, BOM + EXAMPLE.read_bytes())
    result = check_config(path)
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout) == (ExitCode.OK, f"{path}: ok\n"), result.stderr
    assert load_config(path).site.name == "dev1"


def test_after_a_byte_order_mark_lines_are_counted_as_before(tmp_path):
    path = write(tmp_path, BOM + b'[site]\nname = "dev1"\n[git\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.problems
    assert line.startswith(f"{path}: line 3: invalid TOML: ")


def test_a_byte_order_mark_inside_the_file_is_a_toml_problem(tmp_path):
    path = write(tmp_path, EXAMPLE.read_bytes() + BOM)
    assert "invalid TOML" in the_one_problem(path)


def test_latin1_is_one_line_naming_the_file_and_the_byte(tmp_path):
    raw = b'[site]\nname = "\xff"\n'
    path = write(tmp_path, raw)
    assert the_one_problem(path) == (
        f"{path}: invalid TOML: not UTF-8 text at byte 15 (0xff, line 2, column 9): "
        "save the file as UTF-8"
    )


def test_the_byte_offset_counts_a_byte_order_mark(tmp_path):
    """The offset is the file's, as `cmp` or a hex editor shows it."""
    raw = BOM + b"# caf\xe9\n"
    path = write(tmp_path, raw)
    line = the_one_problem(path)
    assert line.startswith(f"{path}: invalid TOML: not UTF-8 text at byte 8 (0xe9, line 1, ")
    assert raw[8] == 0xE9


def test_utf16_gets_a_hint(tmp_path):
    path = write(tmp_path, EXAMPLE.read_text(encoding="utf-8").encode("utf-16"))
    assert the_one_problem(path) == (
        f"{path}: invalid TOML: not UTF-8 text at byte 0 (0xff, line 1, column 1): "
        "it looks like UTF-16: save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("bad", "name"),
    [
        (b"\xed\xa0\x80", "an encoded surrogate"),
        (b"\xc0\xaf", "an overlong slash"),
        (b"\xf4\x90\x80\x80", "beyond U+10FFFF"),
        (b"\xe2\x82", "a sequence cut short"),
        (b"\x80", "a lone continuation byte"),
    ],
)
def test_every_kind_of_bad_utf8_is_one_line(tmp_path, bad, name):
    text = EXAMPLE.read_bytes()
    at = text.index(b'name = "dev1"') + len(b'name = "')
    path = write(tmp_path, text[:at] + bad + text[at:])
    line = the_one_problem(path)
    assert line.startswith(f"{path}: invalid TOML: not UTF-8 text at byte {at} "), name


def test_the_bytes_around_a_bad_one_are_not_shown(tmp_path):
    """The bad byte may sit inside a secret: only its offset and value are told."""
    path = write(tmp_path, EXAMPLE.read_bytes() + b'[slack]\ntoken = "xoxb-SECRET\xff"\n')
    line = the_one_problem(path)
    assert "SECRET" not in line and "xoxb" not in line


def test_a_nul_byte_is_a_toml_problem(tmp_path):
    path = write(tmp_path, EXAMPLE.read_bytes().replace(b'"dev1"', b'"de\x00v1"', 1))
    line = the_one_problem(path)
    assert line.startswith(f"{path}: line ") and "invalid TOML" in line


@pytest.mark.parametrize("raw", [b"", BOM, b"\n\n", BOM + b"# only a comment\n"])
def test_an_empty_file_lists_the_missing_tables(tmp_path, raw):
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: [{name}]: missing (required table)"
                                   for name in ("site", "git", "deploy", "ghost")]
