"""agent.toml.example is written from the declarations in agent/config.py: it documents every
key and no other, and every value it shows is valid."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import TABLES, WebhookConfig, declared_keys, load_config
from agent.config_docs import render_example
from agent.config_values import REQUIRED

EXAMPLE = Path(__file__).resolve().parents[1] / "agent.toml.example"
# "[site]", "# [window]", "# [[checks]]"; "name = ...", "# ssh_key = ..."
TABLE_LINE = re.compile(r"(?:# )?\[\[?([a-z_]+)\]\]?")
KEY_LINE = re.compile(r"(# )?([A-Za-z0-9_]+) = ")


def declared() -> set[tuple[str, str]]:
    """(table, key) for every declared key; a secret X is also X_file."""
    keys = set()
    for table, cls in TABLES.items():
        for name, key in declared_keys(cls):
            keys |= {(table, name), (table, f"{name}_file")} if key.credential else {(table, name)}
    return keys


def documented(text: str) -> set[tuple[str, str]]:
    """(table, key) for every key the example shows, commented out or not."""
    keys, table = set(), None
    for line in text.splitlines():
        if TABLE_LINE.fullmatch(line):
            table = TABLE_LINE.fullmatch(line)[1]
        elif KEY_LINE.match(line):
            keys.add((table, KEY_LINE.match(line)[2]))
    return keys


def test_the_example_is_written_from_the_declarations():
    assert EXAMPLE.read_text(encoding="utf-8") == render_example(), (
        "agent.toml.example is out of date: python -m agent.config_docs > agent.toml.example")


def test_the_example_documents_every_key_and_no_other():
    shown = documented(EXAMPLE.read_text(encoding="utf-8"))
    assert shown == declared(), (sorted(declared() - shown), sorted(shown - declared()))
    assert {table for table, _ in shown} == set(TABLES)


def test_a_key_missing_from_the_example_would_be_noticed():
    text = EXAMPLE.read_text(encoding="utf-8").replace("# spread_minutes = 0", "# spread = 0")
    assert ("window", "spread_minutes") in declared() - documented(text)
    assert ("window", "spread") in documented(text) - declared()


def test_every_value_the_example_shows_is_valid(tmp_path):
    """Every table and key uncommented (less the *_file keys, whose files are not here, and
    the alternatives that exclude each other) loads."""
    lines, table = [], None
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if TABLE_LINE.fullmatch(line):
            table = TABLE_LINE.fullmatch(line)[1]
            lines.append(line.removeprefix("# "))
        elif KEY_LINE.match(line):
            name = KEY_LINE.match(line)[2]
            if not (name.endswith("_file") or (table, name) in
                    {("slack", "token"), ("slack", "channel"), ("git", "credentials")}):
                lines.append(line.removeprefix("# "))
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    config = load_config(path)
    assert all(getattr(config, name) is not None for name in TABLES)
    assert [check.name for check in config.checks] == ["home", "public"]
    assert config.webhook == WebhookConfig(listen_host="127.0.0.1", listen_port=9302,
                                           path="/ghost-agent/webhook",
                                           secret="change-me-to-32-random-characters",
                                           rate_per_minute=60)


def test_every_key_has_a_doc_and_a_value_to_show():
    for cls in TABLES.values():
        assert cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("), cls
        for name, key in declared_keys(cls):
            assert key.doc, name
            assert key.default not in (REQUIRED, None) or key.example is not None, name
