"""`ghost-agent demo`: the real pipeline in a throwaway sandbox. No root, no network.

A local bare git remote with a `dev1` branch, a small web server standing in for Ghost
(it loads the theme at boot, like Ghost), a `systemctl` stand-in that restarts it, and
Slack printed to the console. A push is detected, deployed and verified; a bad push is
rolled back; the ci-cd files are written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from agent.config import load_config
from agent.cycle import Agent
from agent.demo.sitesim import SiteServer
from agent.demo.systemctl import install_shim
from agent.models import DeployRecord
from agent.notifiers import Notifier
from agent.slack_messages import build_message, build_pending_message

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Demo Developer",
    "GIT_AUTHOR_EMAIL": "dev@example.invalid",
    "GIT_COMMITTER_NAME": "Demo Developer",
    "GIT_COMMITTER_EMAIL": "dev@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


class ConsoleNotifier(Notifier):
    """Slack, printed: the plain-text version of the very message Slack would get."""

    def __init__(self, config):
        self.config = config

    def deployed(self, record: DeployRecord) -> None:
        message = build_message(record, site=self.config.site, cards=self.config.cards,
                                remote=self.config.git.remote)
        print(textwrap.indent(message["text"], "    [slack] "))
        if record.uncarded_commits:
            print(f"    [slack] :warning: {len(record.uncarded_commits)} commit(s) without a card")

    def pending(self, site: str, pending: dict) -> None:
        message = build_pending_message(self.config.site, pending)
        print(textwrap.indent(message["text"], "    [slack] "))


def _git(*args: str, cwd: Path) -> str:
    env = dict(os.environ, **GIT_ENV)
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def _push(work: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = work / name
        if text is None:
            path.unlink()
        else:
            path.write_text(text)
    _git("add", "--all", cwd=work)
    _git("commit", "--quiet", "-m", message, cwd=work)
    _git("push", "--quiet", "origin", "dev1", cwd=work)
    return _git("rev-parse", "HEAD", cwd=work)


def _page(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return f"{response.status} {response.read().decode()[:60].strip()!r}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode()[:60].strip()!r}"


def _page_html(headline: str) -> str:
    return f"<html><body><h1>{headline}</h1><footer>acme</footer></body></html>\n"


def run_demo(keep: bool = False) -> int:
    started = time.monotonic()
    sandbox = Path(tempfile.mkdtemp(prefix="ghost-agent-demo-"))
    step = iter(range(1, 100))

    def say(text: str) -> None:
        print(f"\n[{next(step)}] {text}")

    print(f"ghost-agent demo: sandbox {sandbox}")
    saved_env = dict(os.environ)
    site = None
    try:
        say("a site repository with branch dev1 (a bare git remote and a developer's clone)")
        remote = sandbox / "remote" / "site.git"
        work = sandbox / "developer"
        remote.parent.mkdir()
        _git("init", "--quiet", "--bare", str(remote), cwd=sandbox)
        _git("clone", "--quiet", str(remote), str(work), cwd=sandbox)
        _git("checkout", "--quiet", "-b", "dev1", cwd=work)
        first = _push(
            work,
            {"index.html": _page_html("Hello from B101"), "style.css": "h1 { color: teal }\n"},
            "B101: first page",
        )
        print(f"    pushed {first[:7]} 'B101: first page'")

        say("a stand-in for Ghost serving the live theme, and a systemctl that restarts it")
        content = sandbox / "site" / "content"
        live = content / "themes" / "demo"
        live.parent.mkdir(parents=True)
        site = SiteServer(live, content_dir=content).start()
        bin_dir = sandbox / "bin"
        bin_dir.mkdir()
        install_shim(bin_dir)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ["GHOST_AGENT_FAKE_SITE_URL"] = site.url
        os.environ["GHOST_AGENT_FAKE_SYSTEMCTL_LOG"] = str(sandbox / "systemctl.log")
        print(f"    site at {site.url}, live path {live} (a symlink the agent manages)")

        config_file = sandbox / "agent.toml"
        config_file.write_text(
            textwrap.dedent(f"""\
            [site]
            name = "demo"
            flag = "dev1"
            public_url = "{site.url}"
            local_url = "{site.url}"
            content_dir = "{content}"

            [agent]
            state_dir = "{sandbox / "state"}"

            [git]
            remote = "{remote}"
            poll_seconds = 1

            [deploy]
            path = "{live}"
            keep = 3

            [ghost]
            unit = "ghost_demo.service"
            verify_seconds = 3
            """)
        )
        config = load_config(config_file)
        agent = Agent.from_config(config, notifier=ConsoleNotifier(config))
        print(f"    config {config_file}")

        say("the agent polls: it sees dev1, deploys, restarts 'Ghost' and verifies")
        print(f"    {agent.once().message}")
        print(f"    GET / -> {_page(site.url + '/')}")

        say("a developer pushes a change")
        second = _push(
            work, {"index.html": _page_html("New headline for B102")}, "B102: new headline"
        )
        print(f"    pushed {second[:7]} 'B102: new headline'")
        print(f"    {agent.once().message}")
        print(f"    GET / -> {_page(site.url + '/')}")

        say("a bad push (the home page template is deleted, and no card in the message)")
        bad = _push(work, {"index.html": None}, "remove the old page")
        print(f"    pushed {bad[:7]} 'remove the old page'")
        outcome = agent.once()
        print(f"    {outcome.message}")
        print(f"    GET / -> {_page(site.url + '/')}  (the previous release is live again)")

        say("the next poll: the bad commit is quarantined, nothing else happens")
        print(f"    {agent.once().message}")

        say("what the owner can read on the site")
        files = content / "files"
        for name in ("ci-cd.txt", "ci-cd.json", "ci-cd.html"):
            print(f"    {files / name}")
        print(textwrap.indent((files / "ci-cd.txt").read_text(), "    | "))
        print(
            f"    served at {site.url}/content/files/ci-cd.txt -> "
            f"{_page(site.url + '/content/files/ci-cd.txt').split()[0]}"
        )
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
        return 0
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if site:
            site.stop()
        if keep:
            print(f"sandbox kept: {sandbox}")
        else:
            shutil.rmtree(sandbox, ignore_errors=True)
        sys.stdout.flush()
