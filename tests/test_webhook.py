"""The webhook listener (agent/webhook.py) with real HTTP calls on 127.0.0.1: each kind of
signature, every bad call, slow and malformed clients, and the secret kept out of the logs."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import socket
import threading
import time

import pytest

from agent.webhook import MAX_BODY, RateLimit, WebhookListener

SECRET = "whsec-CANARY-7f3a9b"
PATH = "/ghost-agent/webhook"
BODY = b'{"ref": "refs/heads/dev1", "after": "0123456789abcdef0123456789abcdef01234567"}'


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def listener():
    calls: list[str] = []
    hook = WebhookListener("127.0.0.1", 0, PATH, SECRET, calls.append, rate_per_minute=1000,
                           read_timeout=0.5).start()
    hook.calls = calls
    try:
        yield hook
    finally:
        hook.stop()


def post(hook, headers: dict[str, str], body: bytes = BODY, path: str = PATH,
         method: str = "POST") -> tuple[int, str]:
    host, port = hook.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("headers, forge", [
    ({"X-Hub-Signature-256": f"sha256={sign(BODY)}", "X-GitHub-Event": "push"}, "github"),
    ({"X-Gitea-Signature": sign(BODY)}, "gitea"),
    ({"X-Forgejo-Signature": sign(BODY)}, "forgejo"),
    ({"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook"}, "gitlab"),
])
def test_a_signed_call_queues_a_poll(listener, headers, forge):
    assert post(listener, headers)[0] == 202
    assert listener.calls == [forge]
    assert listener.last_accepted["forge"] == forge


@pytest.mark.parametrize("headers", [
    {},
    {"X-Hub-Signature-256": "sha256=" + "0" * 64},
    {"X-Hub-Signature-256": sign(BODY)},  # without the sha256= prefix
    {"X-Hub-Signature-256": f"sha256={sign(b'another body')}"},
    {"X-Hub-Signature-256": f"sha256={sign(BODY, 'another secret')}"},
    {"X-Gitea-Signature": sign(BODY, "another secret")},
    {"X-Forgejo-Signature": ""},
    {"X-Gitlab-Token": "not the secret"},
    {"X-Gitlab-Token": SECRET[:-1]},
])
def test_a_missing_or_bad_signature_is_401_with_no_hint(listener, headers):
    status, text = post(listener, headers)
    assert (status, text) == (401, "unauthorized\n")
    assert listener.calls == []


def test_another_path_is_404_and_another_method_405(listener):
    good = {"X-Gitlab-Token": SECRET}
    assert post(listener, good, path="/other")[0] == 404
    assert post(listener, good, path=PATH + "/x")[0] == 404
    for method in ("GET", "PUT", "DELETE"):
        assert post(listener, good, method=method)[0] == 405
    assert listener.calls == []


def test_a_body_over_the_limit_is_413_and_not_read(listener):
    host, port = listener.address
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\r\n"
                     f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        started = time.monotonic()
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 413")
    assert time.monotonic() - started < 2  # answered without waiting for the body
    assert post(listener, {"X-Gitlab-Token": SECRET}, body=b"x" * 100)[0] == 202


def test_over_the_rate_limit_is_429():
    calls: list[str] = []
    hook = WebhookListener("127.0.0.1", 0, PATH, SECRET, calls.append, rate_per_minute=3).start()
    try:
        statuses = [post(hook, {"X-Gitlab-Token": SECRET})[0] for _ in range(5)]
    finally:
        hook.stop()
    assert statuses == [202, 202, 202, 429, 429]
    assert len(calls) == 3


def test_unsigned_calls_do_not_use_up_the_rate_limit():
    """A flood of unsigned or badly signed calls is answered 401 and leaves the limit to the
    forge's own calls."""
    calls: list[str] = []
    hook = WebhookListener("127.0.0.1", 0, PATH, SECRET, calls.append, rate_per_minute=2).start()
    try:
        flood = [post(hook, headers)[0] for headers in
                 [{}, {"X-Gitlab-Token": "wrong-secret-of-16+"}] * 10]
        signed = [post(hook, {"X-Gitlab-Token": SECRET})[0] for _ in range(3)]
    finally:
        hook.stop()
    assert flood == [401] * 20
    assert signed == [202, 202, 429]
    assert len(calls) == 2


def test_the_rate_limit_refills_with_time():
    now = [0.0]
    limit = RateLimit(60, clock=lambda: now[0])
    assert all(limit.allow() for _ in range(60))
    assert not limit.allow()
    now[0] += 1.0  # one call a second comes back
    assert limit.allow() and not limit.allow()


def test_a_slow_client_is_cut_off_and_the_listener_goes_on(listener):
    host, port = listener.address
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())  # and then nothing
        started = time.monotonic()
        leftover = sock.recv(100)  # the server closes the connection
    assert leftover == b"" or leftover.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3
    assert post(listener, {"X-Gitlab-Token": SECRET})[0] == 202


def test_a_client_that_drips_is_cut_off_at_the_call_limit():
    """A byte every 0.3 s never trips the 0.5 s read timeout; the call is cut off once it has
    been open twice that long, and its slot is free again."""
    calls: list[str] = []
    hook = WebhookListener("127.0.0.1", 0, PATH, SECRET, calls.append,
                           read_timeout=0.5).start()
    try:
        with socket.create_connection(hook.address, timeout=5) as sock:
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\r\n"
                         "Content-Length: 100000\r\n\r\n".encode())
            started = time.monotonic()
            try:
                while time.monotonic() - started < 5:
                    sock.sendall(b"x")
                    time.sleep(0.3)
            except OSError:  # the listener shut the connection
                pass
            cut_after = time.monotonic() - started
        assert cut_after < 2.5
        assert post(hook, {"X-Gitlab-Token": SECRET})[0] == 202
    finally:
        hook.stop()
    assert calls == ["gitlab"]  # the dripped call never counted


@pytest.mark.parametrize("raw", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS hello
    b"GARBAGE\r\n\r\n",
    b"POST " + b"/x" * 40000 + b" HTTP/1.1\r\n\r\n",
    b"POST /ghost-agent/webhook HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /ghost-agent/webhook HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
    b"POST /ghost-agent/webhook HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
])
def test_malformed_requests_never_stop_the_listener(listener, raw):
    host, port = listener.address
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(raw)
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.recv(200)
        except OSError:
            pass
    assert post(listener, {"X-Gitlab-Token": SECRET})[0] == 202
    assert listener.calls == ["gitlab"]


def test_the_secret_never_reaches_the_log(listener, caplog):
    caplog.set_level(logging.DEBUG, logger="agent")
    post(listener, {"X-Gitlab-Token": SECRET})
    post(listener, {"X-Gitlab-Token": "wrong"}, path=f"/x?token={SECRET}")
    post(listener, {"X-Hub-Signature-256": "sha256=00"})
    assert SECRET not in caplog.text


def test_a_burst_of_mixed_calls_is_all_answered(listener):
    """200 calls at once from 8 threads, valid and invalid mixed: every call is answered."""
    statuses: list[int] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        for i in range(25):
            headers = {"X-Gitlab-Token": SECRET if (n + i) % 2 else "bad"}
            try:
                status = post(listener, headers)[0]
            except OSError:
                status = 0
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == 200
    assert set(statuses) <= {202, 401, 503}
    assert statuses.count(202) == len(listener.calls) >= 1
