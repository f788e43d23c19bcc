"""agent.cicd_head.read_head: the head of a ci-cd.json (the keys before "deploys" and its
first record) is what json.loads gives of it, for any document, spacing or encoding; text
that is not JSON before that point is refused as json.loads refuses it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cicd_head import read_head
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
    st.dictionaries(st.sampled_from(["schema", "site", "flag", "current", "deploys", "x", ""]),
                    json_values | st.lists(json_values, max_size=5), max_size=7),
)


@settings(max_examples=400, deadline=None)
@given(doc=documents, indent=st.sampled_from([None, 0, 2, "\t"]),
       ascii_only=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16", "utf-32-le"]))
def test_the_head_is_what_json_loads_gives_of_it(doc, indent, ascii_only, encoding):
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only)
    assert read_head(text.encode(encoding)) == head_of(json.loads(text))


def test_a_report_line_from_the_head_is_the_line_from_the_whole_document():
    """Whatever a site sent, as long as the agent's order (deploys after what is read)."""
    docs = [site_doc("a", "1.3.22"), *fuzzed_docs(300, seed=5)]
    for doc in docs:
        if isinstance(doc.get("deploys"), list):  # the agent's order: deploys last
            doc = {**{k: v for k, v in doc.items() if k != "deploys"}, "deploys": doc["deploys"]}
        body = json.dumps(doc).encode()
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
    body = b'{"schema": 1, "deploys": [{"version": "1.3.22"}, this is not JSON'
    assert read_head(body) == {"schema": 1, "deploys": [{"version": "1.3.22"}]}
    assert read_head(b'{"deploys": [], "flag": "dev1"}') == {"deploys": []}
    # deploys that is not an array is read like any other value
    assert read_head(b'{"deploys": {"0": 1}, "flag": "dev1"}') == {"deploys": {"0": 1},
                                                                    "flag": "dev1"}
