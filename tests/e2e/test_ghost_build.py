"""Real Ghost 5.130.4, built and cached by tests/e2e/ghost.py, run without systemd.

Ghost runs inside a private network namespace (loopback only, so it never reaches the
internet) with a site laid out like Ghost-CLI's. Checks: the home page, the admin site
endpoint's version, a theme activated through the settings table, and content/files serving.
The figures (build, boot and restart times, RSS, disk size) are printed to stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.ghost import (  # noqa: E402
    GHOST_VERSION,
    GhostProcess,
    PrivateNet,
    activate_theme,
    active_theme,
    build_info,
    du_bytes,
    ensure_ghost_build,
    ghost_unit,
    make_theme,
    write_site,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)"),
    pytest.mark.skipif(not shutil.which("node") or not shutil.which("unshare")
                       or not shutil.which("nsenter"), reason="needs node, unshare, nsenter"),
]

FOOTER = "acme-e2e-footer-7f3c9b"
URL = "https://dev1.example.com"


@pytest.fixture(scope="module")
def ghost_dir() -> Path:
    return ensure_ghost_build()


@pytest.fixture
def private_net() -> Iterator[PrivateNet]:
    with PrivateNet() as net:
        yield net


def _figure(name: str, value: str) -> None:
    print(f"[ghost-e2e figure] {name}: {value}", file=sys.stderr)


def test_build_is_cached(ghost_dir: Path) -> None:
    started = time.monotonic()
    again = ensure_ghost_build()
    cached = time.monotonic() - started
    assert again == ghost_dir
    info = build_info(ghost_dir)
    assert info["ghost"] == GHOST_VERSION
    assert (ghost_dir / "node_modules" / "sqlite3").is_dir()
    _figure("cold build (from marker)", f"{info['build_seconds']} s")
    _figure("cached ensure_ghost_build()", f"{cached * 1000:.0f} ms")
    _figure("build disk size", f"{du_bytes(ghost_dir) / 2**20:.0f} MiB")
    assert cached < 5


def test_unit_text(ghost_dir: Path, tmp_path: Path) -> None:
    text = ghost_unit("dev1-example-com", ghost_dir, tmp_path / "site")
    assert "Type=simple" in text
    assert f"WorkingDirectory={tmp_path / 'site'}" in text
    assert "Environment=NODE_ENV=production" in text
    assert f"{ghost_dir / 'index.js'}" in text
    assert "Restart=on-failure" in text


def test_real_ghost_serves_theme_and_files(ghost_dir: Path, tmp_path: Path,
                                           private_net: PrivateNet) -> None:
    site = write_site(tmp_path / "site", ghost_dir, url=URL)
    make_theme(ghost_dir, site["theme_dir"], footer_text=FOOTER)
    ghost = GhostProcess(ghost_dir, site, net=private_net)
    try:
        ghost.start()
        try:
            boot = ghost.wait_ready(timeout=180)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\n--- ghost log ---\n{ghost.log_tail()}")
        _figure("first boot (DB setup) to 200", f"{boot.seconds:.1f} s, seen {boot.seen}")
        assert FOOTER not in boot.response.text  # the fresh site's theme is "source"
        assert active_theme(site["db"]) == "source"

        # Without X-Forwarded-Proto an https site redirects everything (to https://<Host>/...).
        plain = ghost.get("/", headers={"X-Forwarded-Proto": "http"})
        assert plain.status == 301
        assert plain.headers["location"] == "https://127.0.0.1:2368/"

        api = ghost.get("/ghost/api/admin/site/")
        assert api.status == 200, api.text[:500]
        assert api.json()["site"]["version"] == GHOST_VERSION.rsplit(".", 1)[0]
        assert api.json()["site"]["url"].rstrip("/") == URL

        # content/files is served without a restart, whatever the theme.
        (site["files"] / "ci-cd.txt").write_text("deployed-by: ghost-agent e2e\n")
        served = ghost.get("/content/files/ci-cd.txt")
        assert served.status == 200
        assert served.text == "deployed-by: ghost-agent e2e\n"

        # Activate acme (settings table) while stopped; it takes effect on start.
        ghost.stop()
        assert activate_theme(site["db"], "acme") == "source"
        ghost.start()
        try:
            again = ghost.wait_ready(timeout=120)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{exc}\n--- ghost log ---\n{ghost.log_tail()}")
        _figure("restart to 200", f"{again.seconds:.1f} s, seen {again.seen}")
        assert FOOTER in again.response.text, again.response.text[-2000:]
        assert active_theme(site["db"]) == "acme"
        assert "has fatal errors" not in ghost.log_tail(100_000)

        time.sleep(1)
        ghost.get("/")
        ghost.get("/ghost/api/admin/site/")
        _figure("RSS after restart + a few requests", f"{ghost.rss_bytes() / 2**20:.0f} MiB")
    finally:
        ghost.stop()
