"""Reading the head of a ci-cd.json: what the fleet report needs, at a fraction of the cost.

The report reads a site's schema, site, flag, current, pending and its newest deploy record
(agent.fleet.summarize_site). The agent writes those keys first and "deploys" (newest first,
up to [agent] history records) after them (agent.publish.build_document). So read_head()
decodes the document's top-level keys one value at a time with the standard library's
json.JSONDecoder.raw_decode, and stops after the first deploys record: a site with 500
records costs one record's decoding, not 500 (json.loads of a 141 KB document takes ~1 ms, as
much as its HTTP request).

What is not read is not judged: keys after "deploys" are left out, and so is whatever follows
the first record, even text that is not JSON. json.loads judges everything before it, in the
same way and with the same errors. A document written otherwise (its keys sorted, say) whose
"deploys" comes before one of WRITTEN_FIRST is decoded whole, so nothing the report reads is
missed; of a key written twice before "deploys", the last counts, as for json.loads.
"""

from __future__ import annotations

import json
import re
from typing import Any

# The keys the agent writes before "deploys" (agent.publish.build_document).
WRITTEN_FIRST = ("schema", "site", "flag", "updated_at", "current", "pending")
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_decode = json.JSONDecoder().raw_decode


def read_head(body: bytes) -> Any:
    """The JSON document in `body` (UTF-8, -16 or -32, as json.loads takes it), with a
    top-level "deploys" array cut to its first element and the keys after it left out.

    A document that is not an object, or whose "deploys" comes before one of WRITTEN_FIRST,
    is decoded whole, as json.loads would (its "deploys" then cut the same way). Raises
    json.JSONDecodeError (a ValueError) or UnicodeDecodeError for text json.loads refuses
    before that point, and RecursionError for a value nested too deep."""
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    pos = _skip(text, 0)
    if not text.startswith("{", pos):
        return json.loads(text)
    doc: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        return _end(text, pos + 1, doc)
    while True:
        if not text.startswith('"', pos):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes",
                                       text, pos)
        key, pos = _decode(text, pos)
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        pos = _skip(text, pos + 1)
        if key == "deploys" and text.startswith("[", pos):
            if not all(name in doc for name in WRITTEN_FIRST):
                return first_record_only(json.loads(text))
            pos = _skip(text, pos + 1)
            doc[key] = [] if text.startswith("]", pos) else [_decode(text, pos)[0]]
            return doc
        doc[key], pos = _decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return _end(text, pos + 1, doc)
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)


def first_record_only(doc: Any) -> Any:
    """`doc` (any decoded JSON) with a top-level "deploys" array cut to its first record, as a
    new dict; anything else as it is."""
    if isinstance(doc, dict) and isinstance(doc.get("deploys"), list) \
            and len(doc["deploys"]) > 1:
        return {**doc, "deploys": doc["deploys"][:1]}
    return doc


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    return match.end() if match else pos


def _end(text: str, pos: int, doc: dict) -> dict:
    """The whole object was read: what follows it may only be whitespace, as for json.loads."""
    pos = _skip(text, pos)
    if pos != len(text):
        raise json.JSONDecodeError("Extra data", text, pos)
    return doc
