"""agent.redact: credentials in URLs and registered secrets never reach a message."""

from __future__ import annotations

import pytest

from agent import redact as redact_module
from agent.redact import MASK, redact, redact_url, register_secret


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw-SECRET@github.com/acme/site.git",
         f"https://{MASK}@github.com/acme/site.git"),
        ("https://ghp_TOKEN123@github.com/acme/site.git",
         f"https://{MASK}@github.com/acme/site.git"),
        ("http://u:p%40ss@127.0.0.1:8080/x", f"http://{MASK}@127.0.0.1:8080/x"),
    ],
)  # fmt: skip
def test_url_credentials_masked(url, expected):
    assert redact_url(url) == expected
    assert redact(url) == expected


def test_credentials_masked_inside_a_longer_message():
    text = "fatal: unable to access 'https://bot:hunter2-long@git.example.com/x.git/': 403"
    out = redact(text)
    assert "hunter2-long" not in out and "bot" not in out
    assert out == f"fatal: unable to access 'https://{MASK}@git.example.com/x.git/': 403"


def test_several_urls_in_one_text_all_masked():
    out = redact("from https://a:SECRET1@h1/x to https://SECRET2@h2/y")
    assert "SECRET1" not in out and "SECRET2" not in out
    assert out.count(MASK) == 2


@pytest.mark.parametrize(
    "text",
    [
        "git@github.com:acme/site.git",
        "/var/lib/ghost-agent/remote.git",
        "https://github.com/acme/site.git",
        "mail me at ops@example.com",
    ],
)
def test_text_without_url_credentials_is_untouched(text):
    assert redact(text) == text


def test_registered_secret_masked_anywhere():
    register_secret("xoxb-123-SECRET")
    out = redact("slack said: invalid token xoxb-123-SECRET (xoxb-123-SECRET)")
    assert out == f"slack said: invalid token {MASK} ({MASK})"


def test_longest_registered_secret_masked_first():
    register_secret("abcd")
    register_secret("abcdefgh")
    assert redact("token=abcdefgh") == f"token={MASK}"


def test_short_or_empty_secrets_are_not_registered():
    register_secret("abc")
    register_secret("")
    register_secret(None)
    assert redact_module._registered == set()
    assert redact("abc is fine") == "abc is fine"


def test_empty_text():
    register_secret("something")
    assert redact("") == ""


def test_registered_password_with_an_at_sign_is_fully_masked():
    register_secret("p@ss-word")
    out = redact("fatal: cannot reach https://user:p@ss-word@git.example.com/x.git")
    assert "ss-word" not in out
