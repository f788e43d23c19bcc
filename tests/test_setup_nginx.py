"""The nginx snippet of `ghost-agent setup` (and packaging/nginx/), served by a real nginx.

A server block laid out like Ghost-CLI's /etc/nginx/sites-available/<host>.conf (everything
proxied to Ghost on 127.0.0.1, which here is a stand-in that, like Ghost, sends every file with
`Cache-Control: public, max-age=31536000`), with the snippet `include`d inside it, on a free
port of 127.0.0.1. The ci-cd files must come from the content directory with the right
content types and `Cache-Control: no-store`; everything else must still reach Ghost.
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import setup as agent_setup

REPO = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
YEAR = "public, max-age=31536000"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install "
                                                      "nginx; tests/run does)")

FILES = {
    "ci-cd.txt": "2026-11-26 14:00 dev1 a1b2c3d deployed (B321) d\u00e9ploy\u00e9\n",
    "ci-cd.html": "<!doctype html><meta charset=utf-8><title>dev1</title>"
                  "<p>d\u00e9ploy\u00e9</p>\n",
    "ci-cd.json": '{"schema": 1, "site": "dev1", "note": "d\u00e9ploy\u00e9"}\n',
}
TYPES = {"txt": "text/plain; charset=utf-8", "html": "text/html; charset=utf-8",
         "json": "application/json; charset=utf-8"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _GhostLike(http.server.BaseHTTPRequestHandler):
    """Answers every path like Ghost answers a static file: a year-long public cache."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"ghost:{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Cache-Control", YEAR)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ghost() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GhostLike)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _ghost_cli_site(prefix: Path, port: int, ghost_port: int, snippet: Path) -> Path:
    """An nginx.conf whose server block is Ghost-CLI's site config plus the include line."""
    for d in ("logs", "tmp", "nginx-root"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    temp = " ".join(f"{k}_temp_path {prefix}/tmp/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""  # pytest's tmp dirs are 0700
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    include /etc/nginx/mime.types;
    default_type application/octet-stream;

    # /etc/nginx/sites-available/dev1.website.com.conf, as Ghost-CLI writes it
    server {{
        listen 127.0.0.1:{port};
        server_name dev1.website.com;
        root {prefix}/nginx-root; # Used for acme.sh SSL verification (https://acme.sh)

        location / {{
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Host $http_host;
            proxy_pass http://127.0.0.1:{ghost_port};
        }}

        location ~ /.well-known {{
            allow all;
        }}

        include {snippet};

        client_max_body_size 50m;
    }}
}}
""")
    return conf


@pytest.fixture
def site(tmp_path: Path, ghost: int) -> Iterator[tuple[int, Path]]:
    """nginx on 127.0.0.1:<port> with the rendered snippet; yields (port, ci_cd_dir)."""
    assert NGINX is not None
    ci_cd_dir = tmp_path / "var/www/ghost/content/files"
    ci_cd_dir.mkdir(parents=True)
    for name, text in FILES.items():
        (ci_cd_dir / name).write_text(text, encoding="utf-8")
    snippet = tmp_path / "ghost-agent-ci-cd.conf"
    snippet.write_text(agent_setup.render_nginx_snippet(ci_cd_dir, tmp_path / "agent.toml"))
    port = _free_port()
    conf = _ghost_cli_site(tmp_path / "nginx", port, ghost, snippet)
    error_log = str(tmp_path / "nginx/logs/startup.log")
    check = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", error_log],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-e", error_log],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"nginx did not start (rc {proc.poll()}): {out}")
            time.sleep(0.05)
        yield port, ci_cd_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "dev1.website.com"})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("prefix", ["/", "/content/files/"])
@pytest.mark.parametrize("name", sorted(FILES))
def test_ci_cd_files_come_from_disk_never_cached(site: tuple[int, Path], prefix: str,
                                                 name: str) -> None:
    port, _ = site
    status, headers, body = get(port, f"{prefix}{name}")
    assert status == 200
    assert body.decode("utf-8") == FILES[name]  # from the file, not from Ghost
    assert headers["Content-Type"] == TYPES[name.rsplit(".", 1)[1]]
    assert headers.get_all("Cache-Control") == ["no-store"]
    assert "max-age" not in str(headers) and headers["Expires"] is None
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_new_file_is_served_at_once(site: tuple[int, Path]) -> None:
    port, ci_cd_dir = site
    (ci_cd_dir / "ci-cd.json").write_text('{"schema": 1, "site": "changed"}\n')
    assert get(port, "/ci-cd.json")[2] == b'{"schema": 1, "site": "changed"}\n'


def test_a_missing_file_is_404_not_ghost(site: tuple[int, Path]) -> None:
    port, ci_cd_dir = site
    (ci_cd_dir / "ci-cd.html").unlink()
    status, headers, body = get(port, "/ci-cd.html")
    assert status == 404 and b"ghost:" not in body


@pytest.mark.parametrize("path", ["/", "/ci-cd.txt.bak", "/x/ci-cd.txt", "/content/files/a.txt",
                                  "/ci-cd.xml", "/content/images/ci-cd.json"])
def test_everything_else_still_goes_to_ghost(site: tuple[int, Path], path: str) -> None:
    port, _ = site
    status, headers, body = get(port, path)
    assert (status, body) == (200, f"ghost:{path}".encode())
    assert headers["Cache-Control"] == YEAR


def test_packaged_snippet_is_the_rendering_for_ghost_cli_layout() -> None:
    packaged = (REPO / "packaging/nginx/ghost-agent-ci-cd.conf").read_text()
    assert packaged == agent_setup.render_nginx_snippet(Path("/var/www/ghost/content/files"),
                                                        None)
    assert "alias /var/www/ghost/content/files/$1;" in packaged


def test_packaged_snippet_passes_nginx_t(tmp_path: Path, ghost: int) -> None:
    assert NGINX is not None
    conf = _ghost_cli_site(tmp_path / "nginx", _free_port(), ghost,
                           REPO / "packaging/nginx/ghost-agent-ci-cd.conf")
    check = subprocess.run([NGINX, "-t", "-c", str(conf), "-e", str(tmp_path / "err.log")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
