"""agent.cicd_head.read_head: the head of a ci-cd.json (the keys before "deploys" and its
first record) is what json.loads gives of it, for any document, spacing or encoding; text
that is not JSON before that point is refused as json.loads refuses it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cicd_head import WRITTEN_FIRST, read_head
from agent.fleet import summarize_site
from agent.fleet_fetch import SiteAnswer
from agent.publish import build_document
from tests.test_fleet import NOW, fuzzed_docs, record, sha, site_doc


def head_of(doc: object) -> object:
    """What read_head must give of `doc`, from the decoded whole."""
    if not isinstance(doc, dict):
        return doc
    head = {}
    for key, value in doc.items():
        if key == "deploys" and isinstance(value, list):
            if not all(name in head for name in WRITTEN_FIRST):  # not the agent's order
                return {**doc, "deploys": value[:1]}
            head[key] = value[:1]
            break
        head[key] = value
    return head


def test_an_agents_document_is_read_up_to_its_newest_record():
    deploys = [record("1.3.22", sha(1), finished=NOW),
               *[record("1.3.21", sha(n + 2), finished=NOW - timedelta(days=n + 1))
                 for n in range(499)]]
    doc = build_document(site="asterix", flag="prod-asterix*", current=None, pending=None,
                         deploys=deploys, now=NOW, public_url="https://asterix.website.com",
                         extra={"hold": {"by": "ops"}})
    body = json.dumps(doc, indent=2).encode()
    head = read_head(body)
    assert head == {**{k: doc[k] for k in ("schema", "site", "flag", "updated_at", "current",
                                           "pending")}, "deploys": [doc["deploys"][0]]}
    assert list(head) == list(doc)[: list(doc).index("deploys") + 1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
documents = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from([*WRITTEN_FIRST, "deploys", "x", ""]),
                    json_values | st.lists(json_values, max_size=5), max_size=9),
    # the agent's order: every key it writes first, then deploys, then others
    st.tuples(st.fixed_dictionaries({k: json_values for k in WRITTEN_FIRST}),
              st.lists(json_values, max_size=5),
              st.dictionaries(st.sampled_from(["public_url", "hold", "x"]), json_values))
    .map(lambda t: {**t[0], "deploys": t[1], **t[2]}),
)


@settings(max_examples=400, deadline=None)
@given(doc=documents, indent=st.sampled_from([None, 0, 2, "\t"]),
       ascii_only=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16", "utf-32-le"]))
def test_the_head_is_what_json_loads_gives_of_it(doc, indent, ascii_only, encoding):
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    assert read_head(text.encode(encoding)) == head_of(json.loads(text))


@pytest.mark.parametrize("sort_keys", [False, True], ids=["agent's order", "sorted"])
def test_a_report_line_from_the_head_is_the_line_from_the_whole_document(sort_keys):
    """Whatever a site sent, in the agent's order of keys or another."""
    docs = [site_doc("a", "1.3.22"), *fuzzed_docs(300, seed=5)]
    for doc in docs:
        body = json.dumps(doc, sort_keys=sort_keys).encode()
        whole = summarize_site(SiteAnswer("https://a", json.loads(body), None, 1))
        head = summarize_site(SiteAnswer("https://a", read_head(body), None, 1))
        assert head == whole, doc


@pytest.mark.parametrize("text", [
    '{"schema" 1}', '{"schema": 1,}', "{schema: 1}", '{"schema": 1', '{"site": "a"} x',
    '{"a": [1, 2}', '{"deploys": [{"version": "1.3.22"', "", "   ", "{", '{"deploys": [',
    '{"x": 01}', '{"x": "\\q"}',
])
def test_text_json_loads_refuses_before_the_first_record_is_refused(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        read_head(text.encode())


def test_bytes_that_are_not_text_are_refused():
    with pytest.raises(ValueError):
        read_head(b'{"site": "\xff\xfe\xfd"}')


def test_nesting_too_deep_raises_recursion_error_as_json_loads_does():
    deep = '{"current": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(RecursionError):
        read_head(deep.encode())


def test_what_follows_the_first_record_is_not_read():
    """The cost of a long history is not paid, and so it is not judged either."""
    first = {name: n for n, name in enumerate(WRITTEN_FIRST)}
    start = json.dumps(first)[:-1]
    body = f'{start}, "deploys": [{{"version": "1.3.22"}}, this is not JSON'.encode()
    assert read_head(body) == {**first, "deploys": [{"version": "1.3.22"}]}
    body = f'{start}, "deploys": [], "public_url": "https://a"}}'.encode()
    assert read_head(body) == {**first, "deploys": []}
    # deploys that is not an array is read like any other value
    assert read_head(b'{"deploys": {"0": 1}, "flag": "dev1"}') == {"deploys": {"0": 1},
                                                                    "flag": "dev1"}


def test_a_document_in_another_order_is_read_whole():
    """deploys before what the report reads (keys sorted, another tool): all of it is read,
    and judged."""
    assert read_head(b'{"deploys": [1, 2], "flag": "dev1"}') == {"deploys": [1], "flag": "dev1"}
    with pytest.raises(ValueError):
        read_head(b'{"deploys": [1, 2], "flag": "dev1", oops}')
