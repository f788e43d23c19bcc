"""The shape of ci-cd.json (contract.md, schema 1), declared once.

JSON_SCHEMA is the contract as a JSON Schema (draft 2020-12): what an agent writes. The
tests check the documents this agent writes against it with the jsonschema library (a test
extra; the agent itself does not need it).

The agent also reads other sites' ci-cd.json (the fleet report, the canary check), and needs
less of them: shape_problem() walks the same JSON_SCHEMA with a reader's eyes. It judges
only the values marked as read (reads()), only their JSON types (patterns, formats, enums
and lengths are left to the report, which shows such values as text), and lets each of them
be missing or null unless it is marked as needed. So a document from an older or newer
agent is read as long as what the report reads has the contract's types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.models import OUTCOMES
from agent.text import cut

READER = "x-reader"  # an annotation of the values a reader reads: "needs" or "reads"


def reads(schema: dict, *, needed: bool = False) -> dict:
    """`schema`, marked as read by the fleet report and the canary check (see module doc)."""
    return {**schema, READER: "needs" if needed else "reads"}


def _object(properties: dict, **more: Any) -> dict:
    """An object with all of `properties` required (other keys are allowed: extensions)."""
    return {"type": "object", "required": list(properties), "properties": properties, **more}


# "description" is the phrase an error line ends with: "'abc' is not a 40-hex commit id".
_SHA = "^[0-9a-f]{40}$"
TEXT = {"type": "string", "minLength": 1, "description": "a string"}
TEXT_OR_NULL = {"type": ["string", "null"], "description": "a string or null"}
COMMIT = {"type": "string", "pattern": _SHA, "description": "a 40-hex commit id"}
COMMIT_OR_NULL = {"type": ["string", "null"], "pattern": _SHA,
                  "description": "a 40-hex commit id or null"}
TIME = {"type": "string", "format": "date-time",
        "description": "an ISO time with a UTC offset"}
OUTCOME = {"type": "string", "enum": list(OUTCOMES),
           "description": "one of " + ", ".join(OUTCOMES)}

CHECK = _object({
    "name": TEXT,
    "url": TEXT,
    "ok": {"type": "boolean", "description": "true or false"},
    "status": {"type": ["integer", "null"], "description": "an integer or null"},
    "ms": {"type": "integer", "minimum": 0, "description": "an integer"},
}, description="an object")

DEPLOY = _object({
    "trigger": reads(TEXT),
    "branch": reads(TEXT),
    "version": reads(TEXT_OR_NULL),
    "commit": reads(COMMIT),
    "previous_commit": COMMIT_OR_NULL,
    "outcome": reads(OUTCOME),
    "started_at": reads(TIME),
    "finished_at": reads(TIME),
    "cards": {"type": "array", "items": TEXT, "description": "a list"},
    "uncarded_commits": {"type": "array", "items": COMMIT, "description": "a list"},
    "checks": {"type": "array", "items": CHECK, "description": "a list"},
    "error": TEXT_OR_NULL,
}, description="an object",
    # a deploy that did not succeed says why
    **{"if": {"required": ["outcome"],
              "properties": {"outcome": {"enum": ["rolled_back", "failed"]}}},
       "then": {"properties": {"error": {"not": {"enum": [None, ""]}}}}})

JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ci-cd.json",
    **_object({
        "schema": reads({"const": 1, "description": "1"}, needed=True),
        "site": reads(TEXT, needed=True),
        "flag": reads(TEXT, needed=True),
        "updated_at": reads(TIME),
        "current": reads({**_object({
            "branch": reads(TEXT),
            "commit": reads(COMMIT),
            "version": reads(TEXT_OR_NULL),
            "since": reads(TIME),
        }), "type": ["object", "null"], "description": "an object or null"}),
        "pending": reads({**_object({
            "branch": reads(TEXT),
            "commit": reads(COMMIT),
            "reason": reads(TEXT),
        }), "type": ["object", "null"], "description": "an object or null"}),
        "deploys": reads({"type": "array", "items": DEPLOY, "description": "a list"},
                         needed=True),
    }, description="an object"),
}


# --------------------------------------------------------------------------- the reader


_MISSING = object()


@dataclass(frozen=True)
class _Rule:
    """What the reader checks of one value (compiled once from JSON_SCHEMA)."""

    types: tuple[str, ...]  # the JSON types it may have ("null" added unless needed)
    needed: bool  # it may not be missing (nor null)
    const: Any = _MISSING  # the one value it may have, if any (schema: 1)
    keys: tuple[tuple[str, _Rule], ...] = ()  # an object's values that are read
    items: _Rule | None = None  # a list's items (needed: a hole cannot be read)


def _compile(schema: dict, needed: bool) -> _Rule:
    if "const" in schema:
        return _Rule((), needed, const=schema["const"])
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not needed and "null" not in types:
        types = [*types, "null"]
    keys = tuple((key, _compile(sub, sub[READER] == "needs"))
                 for key, sub in schema.get("properties", {}).items() if READER in sub)
    items = _compile(schema["items"], True) if "items" in schema else None
    return _Rule(tuple(types), needed, keys=keys, items=items)


_NAMES = {"null": "null", "boolean": "a boolean", "integer": "an integer",
          "number": "a number", "string": "a string", "array": "an array",
          "object": "an object"}
_KINDS = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
          list: "array", dict: "object"}
_DOCUMENT = _compile(JSON_SCHEMA, True)


def shape_problem(doc: Any) -> str | None:
    """What keeps the fleet report or the canary check from reading `doc`, or None.

    One line, e.g. "deploys[1] is a string (expected an object)". Never raises.
    """
    if not isinstance(doc, dict):
        return f"the document is {_json_type(doc)} (expected an object)"
    found = _problem(doc, _DOCUMENT)
    if found is None:
        return None
    path, what = found
    where = ""
    for part in reversed(path):
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else part)
    return f"{where} is {what}"


def _problem(value: Any, rule: _Rule) -> tuple[list, str] | None:
    """([the path to the first bad value, innermost first], what it is), or None."""
    if rule.keys and isinstance(value, dict):
        for key, sub in rule.keys:
            found = _value_problem(value.get(key, _MISSING), sub)
            if found is not None:
                found[0].append(key)
                return found
    elif rule.items is not None and isinstance(value, list):
        for index, item in enumerate(value):
            found = _value_problem(item, rule.items)
            if found is not None:
                found[0].append(index)
                return found
    return None


def _value_problem(value: Any, rule: _Rule) -> tuple[list, str] | None:
    if rule.const is not _MISSING:
        if type(value) is type(rule.const) and value == rule.const:
            return None
        shown = "missing" if value is _MISSING or value is None else cut(json.dumps(value), 20)
        return [], f"{shown} (expected {json.dumps(rule.const)})"
    if value is _MISSING:
        return ([], "missing") if rule.needed else None
    kind = _KINDS.get(type(value)) or _kind(value)
    if kind not in rule.types and not (kind == "integer" and "number" in rule.types):
        expected = " or ".join(_NAMES[name] for name in rule.types)
        return [], f"{_json_type(value)} (expected {expected})"
    return _problem(value, rule) if kind in ("object", "array") else None


def _kind(value: Any) -> str:
    """The JSON type of a value of a subclass (a dict subclass handed to summarize)."""
    for cls, kind in _KINDS.items():
        if isinstance(value, cls):
            return kind
    return type(value).__name__


def _json_type(value: Any) -> str:
    kind = _KINDS.get(type(value)) or _kind(value)
    return "a number" if kind in ("integer", "number") else _NAMES.get(kind, kind)
