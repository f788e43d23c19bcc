"""agent.trello: comments and labels on the cards of a deploy, with `responses` for Trello."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from agent.config import SiteConfig, TrelloConfig
from agent.models import DeployRecord
from agent.trello import MAX_CARDS, TrelloNotifier, comment_text, short_error

KEY = "CANARYKEY123"
TOKEN = "CANARYTOKEN456"
API = "https://api.trello.test/1"
BOARD = "Brd42xyz"
CARDS_URL = f"{API}/boards/{BOARD}/cards"
LABELS_URL = f"{API}/boards/{BOARD}/labels"
COMMIT = "abc1234" + "0" * 33
LABEL_ID = "lbl-deployed"


def comment_url(trello_id: str) -> str:
    return f"{API}/cards/{trello_id}/actions/comments"


def label_url(trello_id: str) -> str:
    return f"{API}/cards/{trello_id}/idLabels"


def trello_config(**kw) -> TrelloConfig:
    return TrelloConfig(key=KEY, token=TOKEN, board=BOARD, api_url=API,
                        timeout_seconds=kw.pop("timeout_seconds", 3.0), **kw)


SITE = SiteConfig(name="staging1", flag="staging1*", public_url="https://staging1.example.com",
                  local_url="http://127.0.0.1:2368", content_dir=Path("/srv/ghost/content"),
                  ci_cd_dir=Path("/srv/ghost/content/files"))


def record(**kw) -> DeployRecord:
    values = dict(trigger="poll", branch="staging1-1.3.22", version="1.3.22", commit=COMMIT,
                  previous_commit="def5678" + "0" * 33, outcome="deployed",
                  started_at="2024-05-01T03:30:00+00:00", finished_at="2024-05-01T03:31:00+00:00",
                  cards=["B321"], site="staging1")
    values.update(kw)
    return DeployRecord(**values)


def card(trello_id: str, name: str, labels: list[str] | None = None) -> dict:
    return {"id": trello_id, "name": name, "idLabels": labels or []}


@pytest.fixture
def trello() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # root at DEBUG: nothing, at any level, may show a secret
    return caplog


def notifier(**kw) -> TrelloNotifier:
    return TrelloNotifier(trello_config(**kw), site=SITE)


def board(mock: responses.RequestsMock, cards: list[dict], *,
          labels: list[dict] | None = None) -> None:
    mock.get(CARDS_URL, json=cards)
    mock.get(LABELS_URL, json=labels if labels is not None else
             [{"id": "lbl-other", "name": "Urgent"}, {"id": LABEL_ID, "name": "Deployed"}])
    for c in cards:
        mock.post(comment_url(c["id"]), json={"id": "action"})
        mock.post(label_url(c["id"]), json=[LABEL_ID])


def posted(mock: responses.RequestsMock, url: str) -> list[dict[str, list[str]]]:
    """The form bodies of the POSTs to `url`."""
    return [parse_qs(call.request.body) for call in mock.calls
            if call.request.method == "POST" and call.request.url.split("?")[0] == url]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "agent"]


def assert_no_secrets(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in text
    assert TOKEN not in text


# -- comment text ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, "Deployed to staging1 1.3.22 (abc1234): deployed"),
    ({"outcome": "rolled_back", "error": "checks failed: public: HTTP 502"},
     "Deployed to staging1 1.3.22 (abc1234): rolled back: checks failed: public: HTTP 502"),
    ({"outcome": "failed", "error": "build failed: npm ci exited 1\nnpm ERR! details"},
     "Deployed to staging1 1.3.22 (abc1234): failed: build failed: npm ci exited 1"),
    ({"outcome": "rolled_back", "error": None},
     "Deployed to staging1 1.3.22 (abc1234): rolled back"),
    ({"trigger": "manual"}, "Deployed to staging1 1.3.22 (abc1234, manual): deployed"),
    ({"trigger": "recovery"}, "Deployed to staging1 1.3.22 (abc1234): deployed"),
    ({"branch": "main", "version": None}, "Deployed to staging1 main (abc1234): deployed"),
    ({"branch": "(commit abc1234)", "version": None, "trigger": "manual"},
     "Deployed to staging1 (abc1234, manual): deployed"),
    ({"branch": "rc/1.3.22"}, "Deployed to staging1 rc/1.3.22 (abc1234): deployed"),
    ({"branch": "hotfix", "version": "1.3.22"},
     "Deployed to staging1 hotfix 1.3.22 (abc1234): deployed"),
])
def test_comment_text(kw: dict, expected: str) -> None:
    assert comment_text(record(**kw), "staging1") == expected


def test_short_error_is_cut_and_masks_secrets() -> None:
    TrelloNotifier(trello_config(), site=SITE)  # registers the key and token for masking
    assert len(short_error("x" * 1000)) == 200
    assert short_error("x" * 1000).endswith("…")
    assert short_error("\n  boom   here \n second") == "boom here"
    assert KEY not in short_error(f"fetch https://host/?key={KEY} failed")


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, "Deployed to staging1 1.3.22 (abc1234): deployed"),
    ({"outcome": "rolled_back", "error": "restart failed: ghost.service exited"},
     "Deployed to staging1 1.3.22 (abc1234): rolled back: restart failed: ghost.service exited"),
    ({"outcome": "failed", "error": "build failed: exit 1"},
     "Deployed to staging1 1.3.22 (abc1234): failed: build failed: exit 1"),
    ({"trigger": "manual"}, "Deployed to staging1 1.3.22 (abc1234, manual): deployed"),
])
def test_each_card_gets_the_comment(trello, logs, kw: dict, expected: str) -> None:
    board(trello, [card("c1", "[B321] fix the footer"), card("c2", "B322: new theme"),
                   card("c3", "unrelated")])
    notifier().deployed(record(cards=["B321", "B322"], **kw))
    assert posted(trello, comment_url("c1")) == [{"text": [expected]}]
    assert posted(trello, comment_url("c2")) == [{"text": [expected]}]
    assert posted(trello, comment_url("c3")) == []
    assert warnings(logs) == []
    assert_no_secrets(logs)


def test_the_site_name_comes_from_the_config_when_the_record_has_none(trello) -> None:
    board(trello, [card("c1", "B321")])
    notifier().deployed(record(site=None, branch="main", version=None))
    assert posted(trello, comment_url("c1")) == [
        {"text": ["Deployed to staging1 main (abc1234): deployed"]}]


def test_a_secret_in_the_error_never_reaches_the_comment(trello) -> None:
    board(trello, [card("c1", "B321")])
    notifier().deployed(record(outcome="failed", error=f"build failed: token {TOKEN} refused"))
    (body,) = posted(trello, comment_url("c1"))
    assert body == {"text": ["Deployed to staging1 1.3.22 (abc1234): failed: "
                             "build failed: token *** refused"]}


# -- requests: auth, parameters, timeouts -----------------------------------------------------


def test_every_request_carries_the_auth_params_and_the_timeout(trello) -> None:
    board(trello, [card("c1", "B321"), card("c2", "B322", labels=["lbl-other"])])
    notifier(label="Deployed", timeout_seconds=4.5).deployed(record(cards=["B321", "B322"]))
    calls = list(trello.calls)
    assert [(c.request.method, c.request.url.split("?")[0]) for c in calls] == [
        ("GET", CARDS_URL), ("GET", LABELS_URL),
        ("POST", comment_url("c1")), ("POST", label_url("c1")),
        ("POST", comment_url("c2")), ("POST", label_url("c2")),
    ]
    for call in calls:
        query = parse_qs(urlsplit(call.request.url).query)
        assert query["key"] == [KEY]
        assert query["token"] == [TOKEN]
        assert call.request.req_kwargs["timeout"] == 4.5
    listing = parse_qs(urlsplit(calls[0].request.url).query)
    assert listing["fields"] == ["id,name,idLabels"]
    assert listing["filter"] == ["open"]


def test_no_cards_means_no_requests(trello, logs) -> None:
    board(trello, [card("c1", "B321")])
    notifier(label="Deployed").deployed(record(cards=[]))
    assert len(trello.calls) == 0
    assert warnings(logs) == []


def test_pending_does_nothing(trello) -> None:
    notifier().pending("staging1", {"branch": "staging1-1.3.22", "commit": COMMIT,
                                    "reason": "waiting for the window"})
    assert len(trello.calls) == 0


def test_the_board_is_listed_once_per_deploy(trello) -> None:
    board(trello, [card("c1", "B321"), card("c2", "B322"), card("c3", "B323")])
    notifier().deployed(record(cards=["B321", "B322", "B323"]))
    assert sum(c.request.method == "GET" for c in trello.calls) == 1


def test_a_given_session_is_used(trello) -> None:
    board(trello, [card("c1", "B321")])
    session = requests.Session()
    session.headers["X-Probe"] = "yes"
    TrelloNotifier(trello_config(), site=SITE, session=session).deployed(record())
    assert all(c.request.headers.get("X-Probe") == "yes" for c in trello.calls)


# -- labels ----------------------------------------------------------------------------------


def test_the_label_is_added_on_deployed_when_missing(trello, logs) -> None:
    board(trello, [card("c1", "B321"), card("c2", "B322", labels=[LABEL_ID])])
    notifier(label="Deployed").deployed(record(cards=["B321", "B322"]))
    assert posted(trello, label_url("c1")) == [{"value": [LABEL_ID]}]
    assert posted(trello, label_url("c2")) == []  # already there
    assert len(posted(trello, comment_url("c2"))) == 1
    assert warnings(logs) == []


@pytest.mark.parametrize("outcome", ["rolled_back", "failed"])
def test_no_label_unless_deployed(trello, outcome: str) -> None:
    board(trello, [card("c1", "B321")])
    notifier(label="Deployed").deployed(record(outcome=outcome, error="checks failed"))
    assert len(posted(trello, comment_url("c1"))) == 1
    assert posted(trello, label_url("c1")) == []
    assert all(c.request.url.split("?")[0] != LABELS_URL for c in trello.calls)


def test_no_label_configured_means_no_label_requests(trello) -> None:
    board(trello, [card("c1", "B321")])
    notifier().deployed(record())
    assert [c.request.url.split("?")[0] for c in trello.calls] == [CARDS_URL, comment_url("c1")]


def test_the_label_name_matches_ignoring_case_when_no_exact_match(trello) -> None:
    board(trello, [card("c1", "B321")], labels=[{"id": "lbl-x", "name": "deployed"}])
    notifier(label="Deployed").deployed(record())
    assert posted(trello, label_url("c1")) == [{"value": ["lbl-x"]}]


def test_a_label_missing_on_the_board_is_warned_and_cards_are_still_commented(
        trello, logs) -> None:
    board(trello, [card("c1", "B321")], labels=[{"id": "lbl-other", "name": "Urgent"}])
    notifier(label="Deployed").deployed(record())
    assert len(posted(trello, comment_url("c1"))) == 1
    assert posted(trello, label_url("c1")) == []
    assert warnings(logs) == [f"trello: no label 'Deployed' on board {BOARD}; "
                              "commenting without it"]


# -- matching cards --------------------------------------------------------------------------


def test_card_ids_match_as_whole_words_case_sensitive(trello, logs) -> None:
    cards = [card("c1", "[B321] fix"), card("c2", "B321: x"), card("c3", "B3210 other"),
             card("c4", "AB321 other"), card("c5", "b321 lowercase"), card("c6", "B321_x"),
             card("c7", "fix (B321)"), card("c8", "B32 short")]
    board(trello, cards)
    notifier().deployed(record(cards=["B321"]))
    commented = {c["id"] for c in cards if posted(trello, comment_url(c["id"]))}
    assert commented == {"c1", "c2", "c7"}
    assert warnings(logs) == []


def test_b3210_is_not_b321(trello, logs) -> None:
    board(trello, [card("c1", "B3210 bigger"), card("c2", "B321 exact")])
    notifier().deployed(record(cards=["B3210"]))
    assert len(posted(trello, comment_url("c1"))) == 1
    assert posted(trello, comment_url("c2")) == []


def test_a_card_named_by_two_ids_is_commented_once(trello) -> None:
    board(trello, [card("c1", "B321 + B322 together")])
    notifier().deployed(record(cards=["B321", "B322", "B321"]))
    assert len(posted(trello, comment_url("c1"))) == 1


def test_cards_not_on_the_board_are_warned_in_one_line(trello, logs) -> None:
    board(trello, [card("c1", "B321 here")])
    notifier().deployed(record(cards=["B321", "B999", "C100"]))
    assert len(posted(trello, comment_url("c1"))) == 1
    assert warnings(logs) == [
        f"trello: cards B999, C100 not found among the open cards of board {BOARD}"]


def test_at_most_max_cards_per_deploy(trello, logs) -> None:
    ids = [f"B{n}" for n in range(100, 100 + MAX_CARDS + 10)]
    board(trello, [card(f"c{i}", i) for i in ids])
    notifier().deployed(record(cards=ids))
    comments = [c for c in trello.calls if c.request.url.split("?")[0].endswith("/comments")]
    assert len(comments) == MAX_CARDS
    (line,) = warnings(logs)
    assert line.startswith(f"trello: {MAX_CARDS + 10} cards match; updating the first "
                           f"{MAX_CARDS} only")


# -- failures: one warning, no exception, no secret ------------------------------------------


FAILURES = {
    "401": dict(status=401, body="invalid key"),
    "403": dict(status=403, body="unauthorized permission requested"),
    "404": dict(status=404, body="The requested resource was not found."),
    "429": dict(status=429, json={"error": "API_TOKEN_LIMIT_EXCEEDED"}),
    "500": dict(status=500, body="oops"),
    "503": dict(status=503, body="unavailable"),
    "timeout": dict(body=requests.exceptions.ConnectTimeout(
        f"HTTPSConnectionPool: Max retries exceeded with url: /1/boards?key={KEY}&token={TOKEN}")),
    "read-timeout": dict(body=requests.exceptions.ReadTimeout(
        f"Read timed out. url: /1/boards?key={KEY}&token={TOKEN}")),
    "connection": dict(body=requests.exceptions.ConnectionError(
        f"Failed to establish a new connection: /1/boards?key={KEY}&token={TOKEN}")),
    "other": dict(body=requests.exceptions.TooManyRedirects(
        f"Exceeded redirects: {API}/boards?key={KEY}&token={TOKEN}")),
    "invalid-json": dict(status=200, body="<html>not json</html>"),
}
EXPECTED = {
    "401": "HTTP 401 (unauthorized: check the [trello] key and token)",
    "403": "HTTP 403 (forbidden: the token has no access to this board)",
    "404": "HTTP 404 (not found: check the [trello] board)",
    "429": "HTTP 429 (rate limited by Trello)",
    "500": "HTTP 500 (Trello server error)",
    "503": "HTTP 503 (Trello server error)",
    "timeout": "timed out after 3s",
    "read-timeout": "timed out after 3s",
    "connection": "cannot connect to api.trello.test",
    "other": "request failed (TooManyRedirects)",
    "invalid-json": "HTTP 200 but the body is not valid JSON",
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failing_board_listing_is_one_warning(trello, logs, kind: str) -> None:
    trello.get(CARDS_URL, **FAILURES[kind])
    notifier(label="Deployed").deployed(record(cards=["B321", "B322"]))  # never raises
    assert warnings(logs) == [f"trello: list the cards of board {BOARD}: {EXPECTED[kind]}; "
                              "no cards updated for this deploy"]
    assert len(trello.calls) == 1  # Trello is not called again for this record
    assert_no_secrets(logs)


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_failing_label_listing_is_one_warning(trello, logs, kind: str) -> None:
    trello.get(CARDS_URL, json=[card("c1", "B321")])
    trello.get(LABELS_URL, **FAILURES[kind])
    notifier(label="Deployed").deployed(record())
    assert warnings(logs) == [f"trello: list the labels of board {BOARD}: {EXPECTED[kind]}; "
                              "no cards updated for this deploy"]
    assert len(trello.calls) == 2
    assert_no_secrets(logs)


@pytest.mark.parametrize("kind", [k for k in FAILURES if k != "invalid-json"])
def test_a_failing_comment_stops_the_rest(trello, logs, kind: str) -> None:
    trello.get(CARDS_URL, json=[card("c1", "B321"), card("c2", "B322"), card("c3", "B323")])
    trello.post(comment_url("c1"), json={"id": "action"})
    trello.post(comment_url("c2"), **FAILURES[kind])
    trello.post(comment_url("c3"), json={"id": "action"})
    notifier().deployed(record(cards=["B321", "B322", "B323"]))
    assert warnings(logs) == [f"trello: comment on card B322: {EXPECTED[kind]}; "
                              "stopped after 1 of 3 card(s); skipped B323"]
    assert posted(trello, comment_url("c3")) == []
    assert len(trello.calls) == 3
    assert_no_secrets(logs)


@pytest.mark.parametrize("kind", ["401", "429", "500", "timeout"])
def test_a_failing_label_stops_the_rest(trello, logs, kind: str) -> None:
    trello.get(CARDS_URL, json=[card("c1", "B321"), card("c2", "B322")])
    trello.get(LABELS_URL, json=[{"id": LABEL_ID, "name": "Deployed"}])
    trello.post(comment_url("c1"), json={"id": "action"})
    trello.post(label_url("c1"), **FAILURES[kind])
    notifier(label="Deployed").deployed(record(cards=["B321", "B322"]))
    assert warnings(logs) == [f"trello: add label 'Deployed' to card B321: {EXPECTED[kind]}; "
                              "stopped after 1 of 2 card(s); skipped B322"]
    assert posted(trello, comment_url("c2")) == []
    assert_no_secrets(logs)


@pytest.mark.parametrize("listing", ['{"cards": []}', '"a string"', "null", "42"])
def test_an_unexpected_listing_is_one_warning(trello, logs, listing: str) -> None:
    trello.get(CARDS_URL, body=listing, content_type="application/json")
    notifier().deployed(record())
    assert warnings(logs) == [f"trello: list the cards of board {BOARD}: unexpected response; "
                              "no cards updated for this deploy"]


def test_malformed_cards_in_the_listing_are_ignored(trello, logs) -> None:
    trello.get(CARDS_URL, json=[{"name": "B321 no id"}, "junk", {"id": "c1", "name": None},
                                {"id": "c2", "name": "B321 ok", "idLabels": None}])
    trello.post(comment_url("c2"), json={})
    notifier().deployed(record())
    assert len(posted(trello, comment_url("c2"))) == 1
    assert warnings(logs) == []


def test_an_unexpected_error_is_one_warning_and_never_raises(logs) -> None:
    class Broken(requests.Session):
        def request(self, *args, **kwargs):
            raise RuntimeError(f"kaboom {kwargs.get('params')}")

    TrelloNotifier(trello_config(), site=SITE, session=Broken()).deployed(record())
    assert warnings(logs) == ["trello: unexpected RuntimeError; cards not updated for this deploy"]
    assert_no_secrets(logs)


def test_secrets_never_show_at_debug_level_across_a_whole_deploy(trello, logs) -> None:
    board(trello, [card("c1", "B321"), card("c2", "B322")])
    notifier(label="Deployed").deployed(record(cards=["B321", "B322", "B999"]))
    assert any("commented on B321, B322" in r.getMessage() for r in logs.records)
    assert_no_secrets(logs)
    assert KEY not in repr(notifier()) and TOKEN not in repr(notifier())
