"""The ci-cd files a real agent writes: ci-cd.json against the contract, ci-cd.html as a
browser (headless Chromium) shows it on a phone and a desktop, and all of them as the site
serves them under /content/files/.

The history is made by `ghost-agent once` (tests/agentsite.py, in this process): a deploy,
a deploy whose checks fail (rolled back) and one whose build fails, once for the module, which
only reads it. Set GHOST_AGENT_SCREENSHOTS=DIR to keep the screenshots for a person to look at.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timezone
from html.parser import HTMLParser
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from agent import publish
from agent.cicd_shape import JSON_SCHEMA
from agent.demo.sitesim import SiteServer
from tests.agentsite import AgentSite, FakeSystemctl, page
from tests.gitremote import GitRemote
from tests.contract_schema import validate_ci_cd

CHROMIUM_TIMEOUT = 60
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PHONE = (390, 844)
DESKTOP = (1366, 900)
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"


# --------------------------------------------------------------------------- a real history


class History:
    """What make_history pushed, and what the agent should have recorded for it."""

    def __init__(self, good: str, bad: str, uncarded: str, broken: str) -> None:
        self.good = good          # B101, deployed and still live
        self.bad = bad            # B102 deletes index.html: checks fail, rolled back
        self.uncarded = uncarded  # a commit message without a card
        self.broken = broken      # B103 on top of it, with a build that exits 3: failed


def make_history(host: AgentSite, git_remote) -> History:
    host.write_config(verify_seconds=0.5)  # the rolled-back deploy's checks give up sooner
    good = git_remote.commit_and_push("dev1", {"index.html": page("B101 first")}, "B101: first")
    result = host.call("once")
    assert result.returncode == 0, result.stdout + result.stderr

    bad = git_remote.commit_and_push("dev1", {"index.html": None}, "B102: drop the index")
    result = host.call("once")
    assert result.returncode == 1, result.stdout + result.stderr

    host.write_config(build=json.dumps([[sys.executable, "-c", "import sys; sys.exit(3)"]]))
    uncarded = git_remote.commit("dev1", {"index.html": page("tidy")}, "tidy up, no card here")
    broken = git_remote.commit("dev1", {"index.html": page("B103 third")}, "B103: third")
    git_remote.push("dev1")
    result = host.call("once")
    assert result.returncode == 1, result.stdout + result.stderr
    return History(good, bad, uncarded, broken)


@pytest.fixture(scope="module")
def _site_with_history(tmp_path_factory) -> Iterator[tuple[AgentSite, History]]:
    """One host (as the make_host fixture builds it) with one real history, for the module."""
    root = tmp_path_factory.mktemp("ci-cd-files")
    git_remote = GitRemote(root / "remote")
    content = root / "site" / "content"
    (content / "themes").mkdir(parents=True)
    site = SiteServer(content / "themes" / "acme", content_dir=content).start()
    with pytest.MonkeyPatch.context() as patch:
        try:
            host = AgentSite(root / "site" / "host", str(git_remote.path), site,
                             FakeSystemctl(root / "systemctl", patch))
            yield host, make_history(host, git_remote)
        finally:
            site.stop()


@pytest.fixture
def host(_site_with_history) -> AgentSite:
    """The module's host: its tests only read what it shows."""
    return _site_with_history[0]


@pytest.fixture
def history(_site_with_history) -> History:
    return _site_with_history[1]


def test_the_real_history_is_what_was_pushed(host, history):
    doc = host.ci_cd()
    assert doc["current"]["commit"] == history.good
    assert [(d["commit"], d["outcome"]) for d in doc["deploys"]] == [
        (history.broken, "failed"), (history.bad, "rolled_back"), (history.good, "deployed")]
    failed, rolled, deployed = doc["deploys"]
    assert deployed["cards"] == ["B101"] and deployed["error"] is None
    assert rolled["cards"] == ["B102"] and rolled["previous_commit"] == history.good
    # the cards since what is live: the rolled-back B102 comes again with B103
    assert failed["cards"] == ["B102", "B103"]
    assert failed["uncarded_commits"] == [history.uncarded]
    assert failed["error"] and rolled["error"]


# --------------------------------------------------------------------------- 1. the contract


def test_real_ci_cd_json_keeps_to_the_contract(host, history):
    assert validate_ci_cd(host.ci_cd()) == []


def test_real_ci_cd_json_puts_what_the_fleet_reads_before_the_history(host, history):
    """The fleet report decodes the file only up to its first deploys record."""
    from agent.cicd_head import read_head
    from agent.fleet import summarize_site
    from agent.fleet_fetch import SiteAnswer

    raw = (host.content / "files" / "ci-cd.json").read_bytes()
    whole = json.loads(raw)
    assert list(whole)[:7] == ["schema", "site", "flag", "updated_at", "current", "pending",
                               "deploys"]
    head = read_head(raw)
    assert head["deploys"] == whole["deploys"][:1] and head["current"] == whole["current"]
    assert summarize_site(SiteAnswer("https://a", head, None, 1)) == \
        summarize_site(SiteAnswer("https://a", whole, None, 1))


def test_validator_finds_every_deviation(host, history):
    good = host.ci_cd()
    assert validate_ci_cd(good) == []

    doc = copy.deepcopy(good)
    doc["deploys"][0]["outcome"] = "ok"
    doc["deploys"][1]["commit"] = "abc"
    doc["deploys"][2]["checks"][0]["ok"] = "yes"
    doc["deploys"][2]["checks"][0]["status"] = "200"
    doc["deploys"][2]["checks"][1]["ms"] = 1.5
    problems = validate_ci_cd(doc)
    assert "deploys[0].outcome: 'ok' is not one of deployed, rolled_back, failed" in problems
    assert "deploys[1].commit: 'abc' is not a 40-hex commit id" in problems
    assert "deploys[2].checks[0].ok: 'yes' is not true or false" in problems
    assert "deploys[2].checks[0].status: '200' is not an integer or null" in problems
    assert "deploys[2].checks[1].ms: 1.5 is not an integer" in problems
    assert len(problems) == 5, problems

    # out of order: oldest first is wrong (times a minute apart: real deploys of this test
    # may finish within the same second, and equal times are in order either way)
    doc = copy.deepcopy(good)
    for n, record in enumerate(doc["deploys"]):
        record["started_at"] = record["finished_at"] = f"2026-11-26T14:{50 - n:02d}:00+00:00"
    doc["deploys"].reverse()
    problems = validate_ci_cd(doc)
    assert problems and all("newest first" in p for p in problems), problems
    assert problems[0].startswith("deploys[1].finished_at:")

    doc = copy.deepcopy(good)
    doc["schema"] = 2
    doc["updated_at"] = "2026-11-26T14:00:00"  # no offset
    doc["current"]["commit"] = history.good.upper()
    del doc["current"]["since"]
    doc["pending"] = {"branch": "dev1", "commit": history.broken}
    doc["deploys"][1]["error"] = None  # rolled back without saying why
    doc["deploys"][2]["started_at"] = "2999-01-01T00:00:00+00:00"  # after it finished
    doc["deploys"][2]["uncarded_commits"] = ["nope"]
    doc["deploys"][2]["cards"] = "B101"
    problems = validate_ci_cd(doc)
    expected_prefixes = [
        "schema: 2 is not 1",
        "updated_at: '2026-11-26T14:00:00' is not an ISO time with a UTC offset",
        "current.commit:",
        "current.since: missing",
        "pending.reason: missing",
        "deploys[1].error: is empty although the outcome is 'rolled_back'",
        "deploys[2].started_at:",
        "deploys[2].cards: 'B101' is not a list",
        "deploys[2].uncarded_commits[0]: 'nope' is not a 40-hex commit id",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected_prefixes), problems

    assert validate_ci_cd([]) == ["document: list is not an object"]
    assert validate_ci_cd({"schema": 1}) == [
        "site: missing", "flag: missing", "updated_at: missing", "current: missing",
        "pending: missing", "deploys: missing"]


def test_the_contract_is_declared_once_as_a_json_schema():
    """agent.cicd_shape.JSON_SCHEMA is the one declaration: valid JSON Schema (draft
    2020-12), read by jsonschema here and by the agent's own reader (tests/test_fleet.py)."""
    Draft202012Validator.check_schema(JSON_SCHEMA)
    assert JSON_SCHEMA["required"] == ["schema", "site", "flag", "updated_at", "current",
                                       "pending", "deploys"]


def test_validator_allows_extensions_and_nulls(host, history):
    doc = host.ci_cd()
    doc["hold"] = {"reason": "freeze"}
    doc["current"] = None
    doc["pending"] = None
    doc["deploys"][0]["something_new"] = [1, 2, 3]
    doc["deploys"][0]["checks"] = []
    assert validate_ci_cd(doc) == []
    doc["deploys"] = []
    assert validate_ci_cd(doc) == []


# --------------------------------------------------------------------------- 3. served


def test_the_site_serves_the_ci_cd_files(host, history):
    status, txt = host.get("/content/files/ci-cd.txt")
    assert status == 200
    assert txt == host.ci_cd_txt()
    events = [line for line in txt.splitlines() if not line.startswith("#")]
    assert len(events) == 3  # oldest first
    assert f"{history.good[:7]} deployed" in events[0] and "cards=B101" in events[0]
    assert f"{history.bad[:7]} rolled_back" in events[1] and "cards=B102" in events[1]
    assert f"{history.broken[:7]} failed" in events[2] and "cards=B102,B103" in events[2]
    assert "step=build" in events[2] and "exited with 3" in events[2]
    assert f"# live: dev1 {history.good[:7]}" in txt

    status, html_page = host.get("/content/files/ci-cd.html")
    assert status == 200
    assert html_page == (host.content / "files" / "ci-cd.html").read_text(encoding="utf-8")
    classes = [attrs.get("class") for tag, attrs in _tags(html_page) if tag == "article"]
    assert classes == ["deploy outcome-failed", "deploy outcome-rolled_back",
                       "deploy outcome-deployed"]
    for sha in (history.good, history.bad, history.broken):
        assert f'title="{sha}"' in html_page

    status, raw = host.get("/content/files/ci-cd.json")
    assert status == 200
    assert json.loads(raw) == host.ci_cd()


# --------------------------------------------------------------------------- 2. in a browser


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(markup: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser.tags


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}


class _Text(HTMLParser):
    """The text inside the element with a given id (what a reader sees there)."""

    def __init__(self, element_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.element_id = element_id
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id:
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)


def _text_of(markup: str, element_id: str) -> str:
    parser = _Text(element_id)
    parser.feed(markup)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def _all_text(markup: str) -> str:
    class _All(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag, attrs):
            if tag in ("style", "script"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("style", "script") and self.skip:
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = _All()
    parser.feed(markup)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


@pytest.fixture
def chromium(tmp_path: Path):
    """run(url, *args) -> CompletedProcess of headless Chromium with a throwaway profile."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not on PATH (tests/run installs Debian's `chromium` package)")
    profile = tmp_path / "chromium-profile"
    counter = iter(range(1000))

    def run(url: str, *args: str) -> subprocess.CompletedProcess:
        argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}-{next(counter)}", *args, url]
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=CHROMIUM_TIMEOUT, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    return run


def _dump_dom(chromium, path: Path, *args: str) -> str:
    dom = chromium(path.as_uri(), "--dump-dom", *args).stdout
    assert "<html" in dom.lower() and "</html>" in dom.lower(), dom[:500]
    return dom


def _screenshot(chromium, path: Path, png: Path, size: tuple[int, int]) -> tuple[int, int]:
    chromium(path.as_uri(), f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
             "--hide-scrollbars")
    assert png.is_file(), f"no screenshot at {png}"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:16]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert len(data) > 5 * 1024, f"{png} is only {len(data)} bytes: a blank page?"
    keep = os.environ.get("GHOST_AGENT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, Path(keep) / png.name)
    return width, height


def test_chromium_shows_the_real_ci_cd_html(chromium, host, history):
    html_path = host.content / "files" / "ci-cd.html"
    dom = _dump_dom(chromium, html_path)

    live = _text_of(dom, "live")
    assert history.good[:7] in live
    assert "dev1" in live

    articles = [attrs for tag, attrs in _tags(dom) if tag == "article"]
    assert [a.get("class") for a in articles] == [
        "deploy outcome-failed", "deploy outcome-rolled_back", "deploy outcome-deployed"]

    history_text = _text_of(dom, "history")
    for card in ("B101", "B102", "B103"):
        assert card in history_text
    assert "without a card" in history_text and history.uncarded[:7] in history_text
    doc = host.ci_cd()
    failed, rolled, _ = doc["deploys"]
    for rec in (failed, rolled):
        words = " ".join(rec["error"].split())
        assert words[:60] in history_text, (words, history_text)
    assert history.broken[:7] in _text_of(dom, "last")
    assert "failed" in _text_of(dom, "last")


@pytest.mark.slow
def test_chromium_screenshots_phone_and_desktop(chromium, host, history, tmp_path):
    html_path = host.content / "files" / "ci-cd.html"
    phone = _screenshot(chromium, html_path, tmp_path / "ci-cd-phone.png", PHONE)
    desktop = _screenshot(chromium, html_path, tmp_path / "ci-cd-desktop.png", DESKTOP)
    assert phone == PHONE
    assert desktop == DESKTOP


# A fixed square over the top-left corner, painted by the page itself once Chromium has laid
# it out at the window's size: green when nothing is wider than the screen, red when the page
# scrolls sideways, blue while the viewport is not (yet) the expected width. --dump-dom does
# not honour --window-size (its window stays 500px wide), so the answer is read from the
# screenshot's pixels.
_FIT_PROBE = """<div id="fit-probe" style="position:fixed;left:0;top:0;width:24px;height:24px;
z-index:2147483647;background:#00f"></div><script>
function fitProbe(){var d=document.documentElement,p=document.getElementById('fit-probe');
p.style.background=window.innerWidth!==%d?'#00f':(d.scrollWidth>window.innerWidth?'#f00':'#0f0')}
fitProbe();addEventListener('resize',fitProbe);</script>"""


def _png_pixel(data: bytes, x: int, y: int) -> tuple[int, int, int]:
    """The RGB of one pixel of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    pos, idat = 8, b""
    width = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, _, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    for row in range(y + 1):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        prev = line
    r, g, b = prev[x * channels:x * channels + 3]
    return r, g, b


def _fits(chromium, html: str, tmp_path: Path, name: str) -> str:
    probe = tmp_path / f"{name}.html"
    probe.write_text(html.replace("</body>", _FIT_PROBE % PHONE[0] + "</body>"),
                     encoding="utf-8")
    png = tmp_path / f"{name}.png"
    chromium(probe.as_uri(), f"--screenshot={png}", f"--window-size={PHONE[0]},{PHONE[1]}",
             "--hide-scrollbars")
    r, g, b = _png_pixel(png.read_bytes(), 8, 8)
    if g > 200 and r < 60 and b < 60:
        return "fits"
    if r > 200 and g < 60 and b < 60:
        return "scrolls sideways"
    return f"not measured: rgb{(r, g, b)}"


@pytest.mark.slow
def test_chromium_phone_width_has_no_sideways_scrolling(chromium, host, history, tmp_path):
    """On a 390px phone the real page fits the screen: nothing makes it scroll sideways."""
    page_html = (host.content / "files" / "ci-cd.html").read_text(encoding="utf-8")
    # the probe can tell both answers apart
    assert _fits(chromium, "<html><body><p>x</p></body></html>", tmp_path, "narrow") == "fits"
    assert _fits(chromium, '<html><body><div style="width:600px">x</div></body></html>',
                 tmp_path, "wide") == "scrolls sideways"
    assert _fits(chromium, page_html, tmp_path, "ci-cd-probe") == "fits"


def _hostile_document() -> dict:
    sha = "f" * 40
    rec = {
        "trigger": "poll", "branch": f"dev1{HOSTILE_SCRIPT}", "version": None,
        "commit": sha, "previous_commit": None, "outcome": "failed",
        "started_at": "2026-11-26T14:00:00+00:00", "finished_at": "2026-11-26T14:00:03+00:00",
        "cards": [HOSTILE_IMG], "uncarded_commits": [],
        "checks": [{"name": HOSTILE_IMG, "url": "http://127.0.0.1:2368/", "ok": False,
                    "status": 500, "ms": 3, "error": HOSTILE_SCRIPT}],
        "error": f"boom {HOSTILE_SCRIPT} {HOSTILE_IMG}",
        "journal_tail": [HOSTILE_SCRIPT],
    }
    return publish.build_document(
        site="dev1", flag="dev1",
        current={"branch": f"dev1{HOSTILE_IMG}", "commit": sha, "version": None,
                 "since": "2026-11-26T14:00:03+00:00"},
        pending={"branch": HOSTILE_SCRIPT, "commit": sha, "reason": HOSTILE_IMG},
        deploys=[rec], now=datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc),
    )


def test_chromium_hostile_text_stays_text(chromium, tmp_path):
    doc = _hostile_document()
    assert validate_ci_cd(doc) == []
    html_path = tmp_path / "hostile.html"
    html_path.write_text(publish.render_html(doc), encoding="utf-8")
    dom = _dump_dom(chromium, html_path)
    assert "<script" not in dom.lower()
    assert "<img" not in dom.lower()
    tags = _tags(dom)
    assert not any(tag in ("script", "img", "iframe") for tag, _ in tags)
    assert not any(key.startswith("on") for _, attrs in tags for key in attrs)
    # escaped, so a reader sees the text as it was
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom
    text = _all_text(dom)
    assert f"boom {HOSTILE_SCRIPT} {HOSTILE_IMG}" in text
    assert HOSTILE_IMG in _text_of(dom, "live")
    assert HOSTILE_SCRIPT in _text_of(dom, "pending")
