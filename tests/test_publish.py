"""agent.publish and agent.atomic: the ci-cd files, on real files in tmp_path."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent import atomic, pages, publish, redact
from agent.atomic import write_atomic, write_json_atomic
from agent.models import OUTCOMES, DeployRecord
from agent.publish import FILES, SCHEMA, build_document, render_html, render_txt
from tests.contract_schema import validate_ci_cd

SHA_A = "a1b2c3d" + "0" * 33
SHA_B = "b2c3d4e" + "1" * 33
SHA_C = "c3d4e5f" + "2" * 33
SHA_D = "d4e5f6a" + "3" * 33
SHA_E = "e4f5a6b" + "4" * 33
CANARY = "CANARYSECRET42"
UTC = timezone.utc
PARIS = timezone(timedelta(hours=1))


@pytest.fixture(autouse=True)
def _canary():
    """Every test here has the canary registered (conftest empties the registry after)."""
    redact.register_secret(CANARY)


def check(name, ok, status, ms=12, url="http://127.0.0.1:2368/", error=None):
    return {"name": name, "url": url, "ok": ok, "status": status, "ms": ms, "error": error}


def record(**kw) -> dict:
    base = dict(
        trigger="poll", branch="dev1", version=None, commit=SHA_A, previous_commit=None,
        outcome="deployed", started_at="2026-11-26T15:00:00+01:00",
        finished_at="2026-11-26T15:00:03.400000+01:00", cards=["B321", "B322"],
        uncarded_commits=[SHA_B], checks=[check("home", True, 200), check("public", True, 200)],
        error=None, site="dev1", live_commit=SHA_A, step=None, journal_tail=[],
        history_rewritten=False, duration_ms=3400,
    )
    base.update(kw)
    return DeployRecord(**base).to_dict()


def history() -> list[dict]:
    """Newest first, as the state module hands it over."""
    oldest = record()
    rolled = record(
        trigger="manual", branch="staging1-1.3.22", version="1.3.22", commit=SHA_E,
        previous_commit=SHA_A, outcome="rolled_back",
        started_at="2026-11-26T16:10:30+01:00", finished_at="2026-11-26T15:10:44Z",
        cards=["B400"], uncarded_commits=[],
        checks=[check("home", False, 500, error="HTTP 500"), check("public", False, None,
                error="timed out")],
        error="checks failed: local: 500\nInternal Server Error\n  at line 3",
        step="checks", live_commit=SHA_A, duration_ms=14200,
        journal_tail=["Nov 26 15:10 ghost[1]: boom", "Nov 26 15:10 ghost[1]: stack"],
    )
    newest = record(
        commit=SHA_C, previous_commit=SHA_A, outcome="failed",
        started_at="2026-11-26T17:00:00+00:00", finished_at="2026-11-26T17:01:05+00:00",
        cards=[], uncarded_commits=[SHA_C, SHA_D], checks=[], error="build failed: npm ci",
        step="build", live_commit=None, duration_ms=65000,
    )
    return [newest, rolled, oldest]


def make_doc(**kw) -> dict:
    args = dict(
        site="dev1", flag="dev1",
        current={"branch": "dev1", "commit": SHA_A, "version": None,
                 "since": "2026-11-26T14:00:03+00:00"},
        pending={"branch": "dev1", "commit": SHA_D, "reason": "waiting for the window 03:30"},
        deploys=history(), now=datetime(2026, 11, 26, 18, 0, 0, tzinfo=PARIS),
    )
    args.update(kw)
    return build_document(**args)


# --------------------------------------------------------------------------- contract shape


def validate(doc: dict) -> None:
    """The ci-cd.json shape of contract.md (extensions allowed)."""
    assert validate_ci_cd(doc) == []


# --------------------------------------------------------------------------- build_document


def test_schema_constants():
    assert SCHEMA == 1
    assert FILES == ("ci-cd.txt", "ci-cd.html", "ci-cd.json")
    assert set(OUTCOMES) == {"deployed", "rolled_back", "failed"}


def test_build_document_shape_and_order():
    deploys = history()
    doc = make_doc(deploys=deploys, extra={"hold": {"reason": "manual"}, "quarantine": [SHA_E],
                                           "schema": 99, "site": "evil"})
    validate(doc)
    assert list(doc)[:7] == ["schema", "site", "flag", "updated_at", "current", "pending",
                             "deploys"]
    assert doc["updated_at"] == "2026-11-26T18:00:00+01:00"
    assert [d["commit"] for d in doc["deploys"]] == [d["commit"] for d in deploys]
    assert doc["hold"] == {"reason": "manual"} and doc["quarantine"] == [SHA_E]
    assert doc["schema"] == 1 and doc["site"] == "dev1"  # extra cannot replace core keys


def test_build_document_naive_now_is_utc_and_public_url():
    doc = make_doc(now=datetime(2026, 1, 2, 3, 4, 5), public_url="https://dev1.example.com")  # noqa: DTZ001
    assert doc["updated_at"] == "2026-01-02T03:04:05+00:00"
    assert doc["public_url"] == "https://dev1.example.com"
    validate(doc)


def test_build_document_empty_history():
    doc = make_doc(current=None, pending=None, deploys=[])
    validate(doc)
    assert "nothing pending" in render_html(doc)
    txt = render_txt(doc)
    assert all(line.startswith("#") for line in txt.splitlines())


def test_build_document_redacts_and_does_not_mutate_input():
    deploys = history()
    deploys[1]["error"] = f"push to https://bot:{CANARY}@github.com/acme/site.git failed"
    deploys[1]["journal_tail"] = [f"token={CANARY}"]
    deploys[1]["checks"][0]["url"] = "https://user:pw123@dev1.example.com/"
    deploys[1]["checks"][0]["error"] = f"auth {CANARY}"
    doc = make_doc(deploys=deploys)
    blob = json.dumps(doc)
    assert CANARY not in blob and "pw123" not in blob
    assert doc["deploys"][1]["checks"][0]["url"] == "https://***@dev1.example.com/"
    assert CANARY in deploys[1]["error"]  # the caller's records are untouched
    validate(doc)


# --------------------------------------------------------------------------- publish: files


def test_publish_writes_three_files_atomically(tmp_path):
    target = tmp_path / "content" / "files"
    paths = publish.publish(target, make_doc())
    assert paths == [target / n for n in FILES]
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temp files left
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        assert p.read_bytes().endswith(b"\n")


def test_publish_modes_ignore_umask(tmp_path):
    old = os.umask(0o077)
    try:
        target = tmp_path / "files"
        publish.publish(target, make_doc())
        # and again over existing files
        paths = publish.publish(target, make_doc(pending=None))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_publish_existing_directory_kept(tmp_path):
    target = tmp_path / "files"
    target.mkdir(mode=0o750)
    os.chmod(target, 0o750)  # noqa: S103
    (target / "other.txt").write_text("keep")
    publish.publish(target, make_doc())
    assert (target / "other.txt").read_text() == "keep"
    assert stat.S_IMODE(target.stat().st_mode) == 0o750  # not ours to change


def test_publish_order_txt_html_json(tmp_path, monkeypatch):
    order = []
    real = pages.write_atomic

    def spy(path, data, mode=0o644):
        order.append(Path(path).name)
        real(path, data, mode)

    monkeypatch.setattr(pages, "write_atomic", spy)
    publish.publish(tmp_path, make_doc())
    assert order == list(FILES)


def test_published_json_validates(tmp_path):
    publish.publish(tmp_path, make_doc(extra={"hold": None}))
    raw = (tmp_path / "ci-cd.json").read_text(encoding="utf-8")
    doc = json.loads(raw)
    validate(doc)
    assert raw.startswith('{\n  "schema": 1,')
    assert doc["deploys"][0]["outcome"] == "failed"
    assert doc["deploys"][-1]["outcome"] == "deployed"
    assert "hold" in doc


def test_published_json_keeps_unicode(tmp_path):
    publish.publish(tmp_path, make_doc(pending={"branch": "dev1", "commit": SHA_D,
                                                "reason": "fenêtre à 03:30"}))
    assert "fenêtre à 03:30" in (tmp_path / "ci-cd.json").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- ci-cd.txt


def _events(txt: str) -> list[str]:
    return [line for line in txt.splitlines() if not line.startswith("#")]


def test_txt_oldest_first_one_line_per_event(tmp_path):
    publish.publish(tmp_path, make_doc())
    txt = (tmp_path / "ci-cd.txt").read_text(encoding="utf-8")
    events = _events(txt)
    assert len(events) == 3
    assert events[0] == (
        "2026-11-26T14:00:03Z dev1 dev1 a1b2c3d deployed cards=B321,B322 uncarded=1 "
        "checks=2/2 3.4s"
    )
    assert events[1].startswith(
        "2026-11-26T15:10:44Z dev1 staging1-1.3.22 (1.3.22) e4f5a6b rolled_back cards=B400 "
        "checks=0/2 14.2s trigger=manual"
    )
    assert 'error="checks failed: local: 500 Internal Server Error at line 3"' in events[1]
    assert events[2].startswith("2026-11-26T17:01:05Z dev1 dev1 c3d4e5f failed cards=none "
                                "uncarded=2 checks=none 1m05s")
    assert 'error="build failed: npm ci"' in events[2]
    assert "step=build" in events[2]
    assert "trigger" not in events[0] and "error" not in events[0]


def test_txt_header():
    txt = render_txt(make_doc())
    header = [line for line in txt.splitlines() if line.startswith("#")]
    assert 2 <= len(header) <= 3
    assert txt.startswith("# ")
    joined = "\n".join(header)
    assert "dev1" in header[0] and "updated 2026-11-26T17:00:00Z" in header[0]
    assert "live: dev1 a1b2c3d since 2026-11-26T14:00:03Z" in joined
    assert "pending: dev1 d4e5f6a (waiting for the window 03:30)" in joined
    assert "pending: nothing" in render_txt(make_doc(pending=None))


def test_txt_folds_newlines_everywhere_and_truncates():
    long_error = "line one\r\nline two\u2028" + "x" * 1000
    deploys = [record(error=long_error, outcome="failed", branch="dev1\nevil",
                      cards=["B1\n23"])]
    doc = make_doc(deploys=deploys,
                   pending={"branch": "dev1", "commit": SHA_D, "reason": "a\nb"})
    txt = render_txt(doc)
    events = _events(txt)
    assert len(events) == 1
    line = events[0]
    assert "line one line two" in line
    assert "dev1 evil" in line
    m = re.search(r'error="([^"]*)"', line)
    assert m and len(m.group(1)) <= 300
    assert len(txt.splitlines()) == 4
    assert "(a b)" in txt


def test_txt_error_quotes_escaped():
    txt = render_txt(make_doc(deploys=[record(outcome="failed", error='bad "thing"')]))
    assert r'error="bad \"thing\""' in txt


def test_txt_duration_from_times_when_missing():
    rec = record(duration_ms=None, started_at="2026-11-26T14:00:00Z",
                 finished_at="2026-11-26T14:00:02.500000Z")
    assert " 2.5s" in _events(render_txt(make_doc(deploys=[rec])))[0]


# --------------------------------------------------------------------------- ci-cd.html


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def test_html_at_a_glance(tmp_path):
    publish.publish(tmp_path, make_doc())
    page = (tmp_path / "ci-cd.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'id="live"' in page and 'id="pending"' in page and 'id="history"' in page
    live = page.split('id="live"', 1)[1].split("</section>", 1)[0]
    assert SHA_A in live and "a1b2c3d" in live
    pending = page.split('id="pending"', 1)[1].split("</section>", 1)[0]
    assert "waiting for the window 03:30" in pending
    last = page.split('id="last"', 1)[1].split("</section>", 1)[0]
    assert 'class="badge outcome-failed"' in last
    assert "nothing pending" in render_html(make_doc(pending=None))


def test_html_history_rows():
    page = render_html(make_doc())
    tags = _tags(page)
    rows = [a["class"] for t, a in tags if t == "article"]
    assert rows == ["deploy outcome-failed", "deploy outcome-rolled_back",
                    "deploy outcome-deployed"]  # newest first
    history = page.split('id="history"', 1)[1]
    assert f'title="{SHA_E}"' in history  # full sha in title
    assert "B400" in history and "B321" in history
    assert "d4e5f6a" in history and "without a card" in history  # uncarded flagged
    assert "HTTP 500" in history and "timed out" in history
    assert "<details>" in history and "ghost[1]: boom" in history
    assert "trigger" in history and "manual" in history
    assert "1m05s" in history


def test_html_escapes_hostile_input():
    hostile = '<script>alert("x")</script>'
    deploys = [record(branch=f"dev1{hostile}", outcome="failed", error=f"boom {hostile}",
                      journal_tail=[hostile], cards=[hostile],
                      checks=[check(hostile, False, 500, error=hostile)])]
    doc = make_doc(deploys=deploys, pending={"branch": hostile, "commit": SHA_D,
                                              "reason": hostile},
                   current={"branch": hostile, "commit": SHA_A, "version": hostile,
                            "since": "2026-11-26T14:00:03+00:00"},
                   site="dev1\"><script>", public_url='javascript:alert(1)')
    page = render_html(doc)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "javascript:" not in [a.get("href", "") for _, a in _tags(page)]
    assert not any(a.get("href", "").lower().startswith("javascript") for _, a in _tags(page))


def test_html_self_contained():
    page = render_html(make_doc(public_url="https://dev1.example.com"))
    tags = _tags(page)
    names = {t for t, _ in tags}
    assert "script" not in names and "img" not in names and "iframe" not in names
    assert "<script" not in page.lower()
    for tag, attrs in tags:
        assert "src" not in attrs, tag
        if tag == "link":
            raise AssertionError(f"external link tag: {attrs}")
        for key in attrs:
            assert not key.startswith("on"), (tag, key)
    assert "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|srcset)\s*=\s*["']?https?:""", page, re.I)
    # the only http(s) href is the plain link to the public site
    hrefs = [a["href"] for t, a in tags if "href" in a]
    assert hrefs == ["https://dev1.example.com"]


def test_html_unknown_outcome_class_is_safe():
    page = render_html(make_doc(deploys=[record(outcome='x" onclick="y')]))
    assert 'onclick="' not in page
    rows = [a["class"] for t, a in _tags(page) if t == "article"]
    assert rows == ["deploy outcome-xonclicky"]


# --------------------------------------------------------------------------- secrets


def test_secret_never_in_any_file(tmp_path):
    deploys = history()
    deploys[0]["error"] = f"git fetch https://x-access-token:{CANARY}@github.com/a/b failed"
    deploys[0]["journal_tail"] = [f"Authorization: Bearer {CANARY}", f"\n{CANARY}\n"]
    deploys[1]["checks"][0]["url"] = f"https://dev1.example.com/?key={CANARY}"
    deploys[1]["checks"][0]["error"] = f"401 for {CANARY}"
    deploys[2]["cards"] = [CANARY]
    deploys[2]["branch"] = f"dev1-{CANARY}"
    doc = make_doc(deploys=deploys,
                   pending={"branch": "dev1", "commit": SHA_D, "reason": f"why {CANARY}"},
                   extra={"hold": {"note": CANARY}},
                   public_url=f"https://u:{CANARY}@dev1.example.com")
    publish.publish(tmp_path, doc)
    for name in FILES:
        data = (tmp_path / name).read_bytes()
        assert CANARY.encode() not in data, name
        assert b"x-access-token:" not in data, name
    validate(json.loads((tmp_path / "ci-cd.json").read_text(encoding="utf-8")))


def test_publish_redacts_a_document_not_built_by_build_document(tmp_path):
    doc = make_doc()
    doc["deploys"][0]["error"] = f"oops {CANARY}"  # slipped in after build_document
    doc["deploys"][0]["journal_tail"] = [CANARY]
    publish.publish(tmp_path, doc)
    for name in FILES:
        assert CANARY.encode() not in (tmp_path / name).read_bytes(), name


# --------------------------------------------------------------------------- atomic


def test_write_atomic_str_bytes_and_mode(tmp_path):
    p = tmp_path / "a.txt"
    write_atomic(p, "héllo")
    assert p.read_bytes() == "héllo".encode()
    write_atomic(p, b"\x00\x01", mode=0o600)
    assert p.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["a.txt"]


def test_write_atomic_needs_parent(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "a.txt", "x")
    assert not (tmp_path / "missing").exists()


def test_write_atomic_temp_name(tmp_path, monkeypatch):
    seen = []

    def boom(src, dst):
        seen.append(Path(src).name)
        raise OSError("disk on fire")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "ci-cd.json", "x")
    assert len(seen) == 1 and seen[0].startswith(".ci-cd.json.tmp-")


def test_write_atomic_failure_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    p = tmp_path / "ci-cd.json"
    p.write_text("old\n")

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_atomic(p, "new\n")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["ci-cd.json"]


def test_write_atomic_failure_during_write(tmp_path, monkeypatch):
    p = tmp_path / "x.txt"
    p.write_text("old")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="fsync failed"):
        write_atomic(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_publish_failure_leaves_previous_files(tmp_path, monkeypatch):
    publish.publish(tmp_path, make_doc())
    before = {n: (tmp_path / n).read_bytes() for n in FILES}

    def boom(src, dst):
        raise OSError("nope")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        publish.publish(tmp_path, make_doc(pending=None))
    assert {n: (tmp_path / n).read_bytes() for n in FILES} == before
    assert sorted(os.listdir(tmp_path)) == sorted(FILES)


def test_publish_render_error_writes_nothing(tmp_path):
    doc = make_doc()
    doc["extra_thing"] = object()  # not serialisable: fails before any file is touched
    with pytest.raises(TypeError):
        publish.publish(tmp_path, doc)
    assert os.listdir(tmp_path) == []


def test_write_json_atomic(tmp_path):
    p = tmp_path / "s.json"
    write_json_atomic(p, {"b": 1, "a": "é"})
    assert p.read_text(encoding="utf-8") == '{\n  "b": 1,\n  "a": "é"\n}\n'
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
