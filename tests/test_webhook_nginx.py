"""The webhook through nginx: the snippet of `ghost-agent setup` for a config with [webhook],
included in a server block, passes signed calls to a real listener and keeps the answers."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import setup as agent_setup
from agent.webhook import WebhookListener

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (tests/run does)")
SECRET = "whsec-NGINX-CANARY"
PATH = "/ghost-agent/webhook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def through_nginx(tmp_path):
    calls: list[str] = []
    hook = WebhookListener("127.0.0.1", 0, PATH, SECRET, calls.append).start()
    settings = SimpleNamespace(listen_host="127.0.0.1", listen_port=hook.address[1], path=PATH)
    snippet = tmp_path / "snippet.conf"
    snippet.write_text(agent_setup.render_nginx_snippet(tmp_path / "files", None, settings))
    (tmp_path / "tmp").mkdir()
    port = free_port()
    temp = " ".join(f"{k}_temp_path {tmp_path}/tmp/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""{user}
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    server {{
        listen 127.0.0.1:{port};
        include {snippet};
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(tmp_path / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield port, calls
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        hook.stop()


def post(port: int, headers: dict[str, str], body: bytes = b"{}") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", PATH, body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_nginx_passes_signed_calls_and_keeps_the_answers(through_nginx):
    port, calls = through_nginx
    body = b'{"ref": "refs/heads/dev1"}'
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert post(port, {"X-Hub-Signature-256": f"sha256={signature}"}, body) == 202
    assert post(port, {"X-Gitlab-Token": SECRET}) == 202
    assert post(port, {"X-Gitlab-Token": "wrong"}) == 401
    assert post(port, {"X-Gitlab-Token": SECRET}, b"x" * (2 << 20)) == 413  # nginx's own cap
    assert calls == ["github", "gitlab"]
