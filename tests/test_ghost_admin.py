"""agent/ghost_admin.py: the Admin API client (#12), against the Ghost stand-in's Admin API
on 127.0.0.1, which checks each token the way Ghost does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time

import pytest

from agent.demo.sitesim import SiteServer
from agent.ghost_admin import AdminError, GhostAdmin, Rejected, parse_key, token
from agent.redact import redact

KEY = "6489c4b5a1b2c3d4e5f60718:" + "ab" * 32
PUBLIC = "https://dev1.website.com"


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def ghost(tmp_path):
    releases = tmp_path / "releases"
    for name, text in (("one", "<h1>B101 one</h1>"), ("two", "<h1>B102 two</h1>"),
                       ("broken", "{{#if x}}<h1>broken</h1>")):
        (releases / name).mkdir(parents=True)
        (releases / name / "index.html").write_text(text)
    live = tmp_path / "themes" / "acme"
    live.parent.mkdir()
    live.symlink_to(releases / "one")
    server = SiteServer(live, public_url=PUBLIC, admin_keys=[KEY]).start()
    yield server
    server.stop()


def switch(server: SiteServer, release: str) -> None:
    link = server.live_path
    tmp = link.with_name(".tmp-link")
    tmp.symlink_to(link.parent.parent / "releases" / release)
    tmp.replace(link)


def admin(server: SiteServer, key: str = KEY, **more) -> GhostAdmin:
    return GhostAdmin(server.url, PUBLIC, key, timeout=5, **more)


def test_a_token_is_what_ghost_asks_for():
    jwt = token(KEY, now=1_800_000_000.7)
    head, body, signature = jwt.split(".")
    assert json.loads(unb64(head)) == {"alg": "HS256", "typ": "JWT", "kid": KEY[:24]}
    assert json.loads(unb64(body)) == {"iat": 1_800_000_000, "exp": 1_800_000_300,
                                       "aud": "/admin/"}
    secret = bytes.fromhex(KEY.partition(":")[2])
    assert hmac.compare_digest(
        unb64(signature), hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())


def test_activation_serves_the_switched_theme_without_a_boot(ghost):
    assert ghost.home()[1] == b"<h1>B101 one</h1>"
    switch(ghost, "two")
    assert ghost.home()[1] == b"<h1>B101 one</h1>"  # a switch alone serves the old copy
    admin(ghost).activate_theme("acme")
    assert ghost.home()[1] == b"<h1>B102 two</h1>"
    assert (ghost.activations, ghost.boots) == (1, 1)


def test_a_theme_ghost_rejects_is_rejected_and_the_old_one_serves(ghost):
    switch(ghost, "broken")
    with pytest.raises(Rejected, match=r"activate theme acme: Ghost answered 422: Theme acme "
                                       r"is not valid: .*GS005-TPL-ERR"):
        admin(ghost).activate_theme("acme")
    assert ghost.home()[1] == b"<h1>B101 one</h1>"


@pytest.mark.parametrize("key, clock, why", [
    ("6489c4b5a1b2c3d4e5f60718:" + "cd" * 32, time.time, "another secret"),
    ("ffffffffffffffffffffffff:" + "ab" * 32, time.time, "an unknown key id"),
    (KEY, lambda: time.time() - 600, "a token issued 10 minutes ago"),
])
def test_a_token_ghost_would_refuse_is_an_admin_error(ghost, key, clock, why):
    with pytest.raises(AdminError) as info:
        admin(ghost, key, clock=clock).activate_theme("acme")
    assert info.value.status == 401 and not isinstance(info.value, Rejected), why
    assert "Ghost answered 401: Authorization failed" in info.value.message


def test_a_ghost_that_does_not_answer_is_an_admin_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    client = GhostAdmin(f"http://127.0.0.1:{port}", PUBLIC, KEY, timeout=2)
    with pytest.raises(AdminError, match="Admin API did not answer"):
        client.activate_theme("acme")


@pytest.mark.parametrize("bad", ["", "abc", "id:", ":ab", "id:not-hex"])
def test_a_key_that_is_not_id_colon_hex_secret_is_refused(bad):
    with pytest.raises(ValueError):
        parse_key(bad)


def test_the_key_is_masked_wherever_it_shows(ghost):
    admin(ghost)
    secret = KEY.partition(":")[2]
    assert secret not in redact(f"boom {KEY} and {secret}")


# -- routes and redirects (a staff token) ---------------------------------------------------

STAFF = "7489c4b5a1b2c3d4e5f60719:" + "ef" * 32


@pytest.fixture
def staff_ghost(tmp_path):
    live = tmp_path / "themes" / "acme"
    live.parent.mkdir()
    server = SiteServer(live, public_url=PUBLIC, admin_keys=[KEY], staff_keys=[STAFF]).start()
    yield server
    server.stop()


def test_a_staff_token_uploads_routes_and_redirects(staff_ghost):
    routes = "routes:\n  /about/: about\ncollections:\n  /: {permalink: '/{slug}/'}\n"
    admin(staff_ghost, STAFF).upload_routes("routes.yaml", routes.encode())
    redirects = '[{"from": "/old/", "to": "/new/", "permanent": true}]'
    admin(staff_ghost, STAFF).upload_redirects("redirects.json", redirects.encode())
    assert staff_ghost.settings_files == {"routes": routes.encode(),
                                          "redirects": redirects.encode()}


def test_an_integrations_key_may_not_upload_settings(staff_ghost):
    with pytest.raises(AdminError) as info:
        admin(staff_ghost).upload_routes("routes.yaml", b"routes:\n")
    assert info.value.status == 403 and not isinstance(info.value, Rejected)
    assert staff_ghost.settings_files == {}


@pytest.mark.parametrize("name, text, why", [
    ("routes.yaml", "routes:\n\t/x/: x\n", "400: Could not parse"),
    ("redirects.json", "[{not json", "400: Could not parse"),
    ("routes.yml", "routes:\n", "415: Please select a valid .yaml file"),
])
def test_a_file_ghost_cannot_read_is_rejected_and_the_old_one_stays(staff_ghost, name, text,
                                                                    why):
    client = admin(staff_ghost, STAFF)
    upload = client.upload_routes if name.startswith("routes") else client.upload_redirects
    with pytest.raises(Rejected, match=rf"upload {name}: Ghost answered {why}"):
        upload(name, text.encode())
    assert staff_ghost.settings_files == {}


def test_a_theme_name_ghost_has_not_seen_since_its_boot_is_not_the_releases_fault(tmp_path):
    live = tmp_path / "themes" / "acme"
    live.parent.mkdir()
    server = SiteServer(live, public_url=PUBLIC, admin_keys=[KEY]).start()  # boots without it
    try:
        (tmp_path / "release").mkdir()
        (tmp_path / "release" / "index.html").write_text("<h1>B101</h1>")
        live.symlink_to(tmp_path / "release")
        with pytest.raises(AdminError) as info:
            admin(server).activate_theme("acme")
        assert not isinstance(info.value, Rejected)  # a restart brings it in: no quarantine
        assert "is not currently installed" in info.value.message
        server.boot()
        admin(server).activate_theme("acme")
    finally:
        server.stop()
