"""ci-cd.json against contract.md: the agent's one declaration of the shape
(agent.cicd_shape.JSON_SCHEMA, a JSON Schema) checked with the jsonschema library.

`validate_ci_cd(doc)` returns every deviation it finds, one readable line each
("deploys[1].outcome: 'ok' is not one of deployed, rolled_back, failed"); an empty list means
the document keeps to the contract. Keys the contract does not name are allowed: the
contract lets the agent extend the document. Two rules JSON Schema cannot state are checked
here: a deploy does not finish before it starts, and deploys are newest first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.validators import extend

from agent.cicd_shape import JSON_SCHEMA


def parse_iso(value: Any) -> datetime | None:
    """An ISO 8601 time with a UTC offset ("Z" allowed), else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        return None
    return dt


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_time(value: Any) -> bool:
    return not isinstance(value, str) or parse_iso(value) is not None


# An integer is an int: neither 2.0 (JSON Schema's own reading) nor true.
_Validator = extend(Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)))
_VALIDATOR = _Validator(JSON_SCHEMA, format_checker=_FORMATS)


def _where(path: Any) -> str:
    """deque(["deploys", 1, "commit"]) -> "deploys[1].commit"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _at(doc: Any, path: Any) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _lines(error: Any, doc: Any) -> list[tuple[str, str]]:
    """(where, what) of one jsonschema error."""
    where = _where(error.absolute_path)
    value = error.instance
    if error.validator == "required":
        return [(f"{where}.{key}" if where else key, "missing")
                for key in error.validator_value if key not in value]
    where = where or "document"
    if error.validator == "minLength":
        return [(where, "is empty")]
    if error.validator == "minimum":
        return [(where, f"{value!r} is negative")]
    if error.validator == "not":  # the "then" of a deploy that did not succeed
        outcome = _at(doc, list(error.absolute_path)[:-1]).get("outcome")
        return [(where, f"is empty although the outcome is {outcome!r}")]
    shown = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)
    return [(where, f"{shown} is not {error.schema['description']}")]


def validate_ci_cd(doc: Any) -> list[str]:
    """Every deviation of a ci-cd.json document from contract.md; [] when it keeps to it."""
    problems: dict[str, str] = {}  # where -> what: one line per place
    for error in _VALIDATOR.iter_errors(doc):
        for where, what in _lines(error, doc):
            problems.setdefault(where, what)
    lines = [f"{where}: {what}" for where, what in problems.items()]
    deploys = doc.get("deploys") if isinstance(doc, dict) else None
    newer: tuple[int, datetime] | None = None  # the previous (newer) record's finished_at
    for i, rec in enumerate(deploys if isinstance(deploys, list) else []):
        if not isinstance(rec, dict):
            continue
        started, finished = parse_iso(rec.get("started_at")), parse_iso(rec.get("finished_at"))
        if started and finished and started > finished:
            lines.append(f"deploys[{i}].started_at: {rec['started_at']!r} is after "
                         f"finished_at {rec['finished_at']!r}")
        if finished is None:
            continue
        if newer is not None and finished > newer[1]:
            lines.append(f"deploys[{i}].finished_at: {rec['finished_at']!r} is newer than "
                         f"deploys[{newer[0]}] (deploys must be newest first)")
        newer = (i, finished)
    return lines
