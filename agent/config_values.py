"""What an agent.toml value may be: Key, the declaration of one key, and the parse functions
that agent/config.py's declarations name.

A parse function takes a value as TOML gave it and returns it normalised (a Path, a float, a
URL without its trailing "/") or raises Invalid saying what was expected. The problem line
shows the value itself (masked when secret), so a message never quotes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import ipaddress
import math
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from agent.redact import register_secret

MAX_SECONDS = 86400.0  # a day: longer timeouts or poll intervals are typos
RELEASE_SEPARATORS = "-/_."
REQUIRED: Any = object()  # Key.default of a key the file must set
PLACEHOLDERS = ("{local_url}", "{public_url}")
# C0 and C1 controls and the Unicode line separators: each would break a line in a log
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Invalid(Exception):
    """A value is not what its key expects; str() says what was expected. `part`: the piece
    of the value at fault, shown instead of the whole (one URL of a list)."""

    def __init__(self, message: str, part: Any = None):
        super().__init__(message)
        self.part = part


@dataclasses.dataclass(frozen=True)
class Key:
    """One agent.toml key, kept in its dataclass field's metadata (see key())."""

    parse: Callable[[Any], Any]  # the TOML value -> the field's value, or raises Invalid
    doc: str  # one line for agent.toml.example
    default: Any = REQUIRED  # as written in TOML; None: optional (off, or phase two derives it)
    example: Any = None  # what agent.toml.example shows where there is no default to show
    credential: str | None = None  # a secret: also read from <key>_file or this credential
    name: str | None = None  # with `into`: the TOML key, which fills several fields
    into: tuple[str, ...] = ()  # (listen -> listen_host, listen_port)


def key(parse: Callable[[Any], Any], doc: str, *, default: Any = REQUIRED,
        required_in_code: bool = False, **more: Any) -> Any:
    """A dataclass field declared as an agent.toml key. Its Python default is the parsed TOML
    default, unless required_in_code (a field after it has none). Secrets stay out of repr()."""
    declared = Key(parse, doc, default, **more)
    options: dict[str, Any] = {"metadata": {"key": declared}, "repr": not declared.credential}
    if not (default is REQUIRED or required_in_code or declared.into):
        options["default"] = None if default is None else parse(default)
    return dataclasses.field(**options)


# --------------------------------------------------------------------------- kinds of value


def text(check: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A string, then `check` on it (which normalises it or raises Invalid)."""
    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise Invalid("expected a string")
        return check(value)
    return parse


def _fits(pattern: str, expected: str) -> Callable[[Any], str]:
    """A string that `pattern` matches whole."""
    def check(value: str) -> str:
        if re.fullmatch(pattern, value):
            return value
        raise Invalid(expected)
    return text(check)


def whole(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        raise Invalid(f"expected a whole number from {low} to {high}")
    return parse


def _number(high: float, expected: str) -> Callable[[Any], float]:
    """A number > 0 and <= high: not a bool (an int in Python), nor inf or nan. Every int is
    finite (and math.isfinite() cannot take one too large for a float)."""
    def parse(value: Any) -> float:
        finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        if finite and not isinstance(value, bool) and 0 < value <= high:
            return float(value)
        raise Invalid(expected)
    return parse


seconds = _number(MAX_SECONDS, f"expected a number of seconds > 0 and <= {MAX_SECONDS:g}")
share = _number(1, "expected a number > 0 and <= 1, e.g. 1.0 or 0.8")


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise Invalid("expected true or false")


def argv_lists(value: Any) -> tuple[tuple[str, ...], ...]:
    """Commands, each a non-empty list of non-empty strings (run without a shell)."""
    expected = 'expected a list of argv lists, e.g. [["npm", "ci", "--omit=dev"]]'
    if not isinstance(value, list):
        raise Invalid(expected)
    for number, argv in enumerate(value, 1):
        if not (isinstance(argv, list) and argv
                and all(isinstance(a, str) and a and "\0" not in a for a in argv)):
            raise Invalid(f"command #{number} is not a non-empty list of non-empty strings; "
                          f"{expected}")
    return tuple(tuple(argv) for argv in value)


def url_list(*, required: bool) -> Callable[[Any], tuple[str, ...]]:
    """http(s) URLs, each without its trailing "/"; a bad one is shown on its own."""
    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid('expected a list of URLs, e.g. ["https://a.website.com"]')
        if required and not value:
            raise Invalid("expected at least one URL")
        for url in value:
            try:
                check_url(url, allow_query=True)
            except Invalid as exc:
                raise Invalid(str(exc), part=url) from None
        return tuple(url.rstrip("/") for url in value)
    return parse


def time_of_day(value: Any) -> datetime.time:
    """"HH:MM", or the same as a TOML time (start = 03:30:00)."""
    if isinstance(value, datetime.time):
        if value.tzinfo is None and value.second == value.microsecond == 0:
            return value
    elif not isinstance(value, str):
        raise Invalid("expected a string")
    elif match := re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", value):  # \d would take "٠٣:٣٠"
        if int(match[1]) <= 23 and int(match[2]) <= 59:
            return datetime.time(int(match[1]), int(match[2]))
    raise Invalid('expected a time "HH:MM" from 00:00 to 23:59, e.g. "03:30"')


# --------------------------------------------------------------------------- strings


word = _fits(r"\S+", "expected one word without spaces")
slack_token = _fits(r"\S+", "expected a Slack token without spaces, e.g. xoxb-…")
nonempty = _fits(r"(?s)(?=.*\S)[^\x00-\x1f\x7f-\x9f\u2028\u2029]*",
                 "expected a non-empty string on one line")
contains = _fits(r"(?s).+", "expected a non-empty string (or leave the key out)")
url_path = _fits(r"/[^\s?#\x00-\x1f\x7f-\x9f]*",
                 "expected a URL path starting with /, without spaces, ? or #")
admin_api_key = _fits(r"(?i)[0-9a-f]{1,64}:(?:[0-9a-f]{2}){16,64}", 'expected Ghost\'s Admin '
                      'API key "id:secret" (hexadecimal, from Settings > Integrations, or an '
                      "Administrator's staff access token)")
routes_file = _fits(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\x00-\x1f\x7f-\x9f]*\.ya?ml",
                   'expected a .yaml file\'s path inside the release, e.g. "routes.yaml"')
redirects_file = _fits(r"(?!/)(?!.*(?:^|/)\.\.(?:/|$))[^\x00-\x1f\x7f-\x9f]*\.(?:ya?ml|json)",
                      'expected a .yaml or .json file\'s path inside the release, e.g. '
                      '"redirects.yaml"')
reload_mode = _fits(r"auto|restart", 'expected "auto" or "restart"')
webhook_secret = _fits(r"[^\s\x00-\x1f\x7f-\x9f]{16,}", "expected at least 16 characters without "
                       "spaces, e.g. from `openssl rand -hex 32`")


@text
def label(value: str) -> str:
    if not value.strip():
        raise Invalid("expected a non-empty name")
    if _CONTROL.search(value):
        raise Invalid("expected a name on one line, without control characters")
    return value


@text
def abs_path(value: str) -> Path:
    if _CONTROL.search(value):
        raise Invalid("expected an absolute path without control characters")
    if not value.startswith("/"):
        raise Invalid("expected an absolute path (starting with /)")
    return Path(value)


def check_url(value: str, *, allow_query: bool = False) -> str:
    """An http(s) URL with a host; credentials in it are registered as secrets."""
    if _CONTROL.search(value) or " " in value:
        raise Invalid("expected an http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:  # not echoed: it may quote part of a secret URL
        raise Invalid("expected an http(s) URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("expected an http(s) URL with a host, e.g. https://example.com")
    if not allow_query and (parts.query or parts.fragment or "?" in value or "#" in value):
        raise Invalid("expected an http(s) URL without ?query or #fragment")
    _register_url_credentials(value)
    return value


base_url = text(lambda value: check_url(value).rstrip("/"))  # the checks add "/" to it
link = text(lambda value: check_url(value, allow_query=True))
slack_api_url = text(lambda value: check_url(value).rstrip("/") + "/")  # slack_sdk joins to it


@text
def slack_webhook(value: str) -> str:
    path = urlsplit(check_url(value)).path  # the path alone is a secret too (logs may show it
    register_secret(path)  # without the host)
    register_secret(path.rstrip("/").rsplit("/", 1)[-1])
    return value


def _register_url_credentials(url: str) -> None:
    """https://user:tok@host -> "tok" is a secret; so is a bare token (https://tok@host)."""
    parts = urlsplit(url)  # called only on a URL that splits
    secret = parts.password
    if secret is None and parts.scheme in ("http", "https"):
        secret = parts.username  # ssh://git@host: the user name is not a secret
    if secret and "@" in parts.netloc:
        register_secret(secret)
        register_secret(unquote(secret))


@text
def url_template(value: str) -> str:
    """A check URL before its placeholders are replaced (phase two makes it a URL)."""
    if _CONTROL.search(value) or " " in value:
        raise Invalid("expected an http(s) URL without spaces or control characters")
    leftover = re.search(r"\{[^{}]*\}", re.sub("|".join(map(re.escape, PLACEHOLDERS)), "", value))
    if leftover:
        raise Invalid(f"unknown placeholder {plain(leftover.group()[:40])}; use "
                      "{local_url} or {public_url}")
    return value


@text
def remote(value: str) -> str:
    if not value:
        raise Invalid("expected a git URL or path")
    if value.startswith("-"):  # git would read it as an option (e.g. --upload-pack=...)
        raise Invalid('expected a git URL or path, not something starting with "-"')
    if _CONTROL.search(value) or re.search(r"\s", value):
        raise Invalid("expected a git URL or path without spaces or control characters")
    if re.match(r"(?i)(ext|fd)::", value):  # git refuses them by default; say so now
        raise Invalid("expected a git URL or path, not the ext:: or fd:: transport "
                      "(they run commands)")
    try:
        urlsplit(value).port  # noqa: B018 -- raises ValueError on a bad host or port
    except ValueError:  # not echoed: it may quote part of a secret URL
        raise Invalid("expected a git URL with a valid host and port, or a path") from None
    _register_url_credentials(value)
    return value


# systemd unit types: a name without one of these suffixes is a service
_UNIT_SUFFIXES = (".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
                  ".path", ".timer", ".slice", ".scope")


@text
def unit(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:_.\\@-]+", value) or len(value) > 255:
        raise Invalid(r"expected a systemd unit name ([A-Za-z0-9:_.\@-]), e.g. ghost_site.service")
    if value.startswith("-"):
        raise Invalid('expected a systemd unit name, not something starting with "-"')
    return value if value.endswith(_UNIT_SUFFIXES) else value + ".service"


def _branch_name_error(name: str) -> str | None:
    """Why git would refuse `name` as a branch name (git check-ref-format), or None."""
    if bad_char := re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name):
        return f"{bad_char.group()!r} is not allowed in a git branch name"
    rules = [
        (name in ("", "@"), 'a branch name cannot be empty or "@"'),
        (".." in name, 'a branch name cannot contain ".."'),
        ("@{" in name, 'a branch name cannot contain "@{"'),
        ("//" in name, 'a branch name cannot contain "//"'),
        (name.startswith("-"), 'a branch name cannot start with "-"'),
        (name.startswith("/"), 'a branch name cannot start with "/"'),
        (name.endswith(("/", ".")), 'a branch name cannot end with "/" or "."'),
        (any(p.startswith(".") or p.endswith(".lock") for p in name.split("/")),
         'a part of a branch name cannot start with "." or end with ".lock"'),
    ]
    return next((reason for broken, reason in rules if broken), None)


@text
def flag(value: str) -> str:
    """An exact branch ("dev1") or NAME* for the release branches of NAME ("staging1*")."""
    name = value[:-1]
    if "*" not in value:
        if error := _branch_name_error(value):
            raise Invalid(f"expected a git branch name or NAME* ({error})")
    elif not value.endswith("*") or "*" in name:
        raise Invalid('bad glob: "*" is only allowed once, at the end, as NAME* '
                      '(e.g. "staging1*" for staging1-1.3.22)')
    elif not name:
        raise Invalid('bad glob: a bare "*" would follow every branch; write NAME*, '
                      'e.g. "staging1*"')
    elif (stripped := name.rstrip(RELEASE_SEPARATORS)) != name:
        raise Invalid(f'bad glob: write "{stripped}*", which matches {stripped}-1.2, '
                      f"{stripped}/1.2, {stripped}_1.2 and {stripped}.1.2")
    elif error := _branch_name_error(name):
        raise Invalid(f"bad glob: NAME in NAME* must be a git branch name ({error})")
    return value


@text
def timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if not _have_tz_database():
            raise Invalid("no time zone database on this host (install tzdata)") from None
        raise Invalid('expected an IANA time zone name, e.g. "Europe/Paris" or "UTC"') from None
    return value


@functools.cache
def _have_tz_database() -> bool:
    return bool(zoneinfo.available_timezones())  # walks the whole database: once is enough


@text
def regex(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as exc:  # its message may quote part of the pattern: kept on one line
        why = plain(str(exc))[:120]
    except OverflowError:
        why = "a repeat count is too large"
    except RecursionError:
        why = "groups nested too deeply"
    else:
        if compiled.search("") is None:
            return value
        raise Invalid("expected a regular expression that does not match an empty string")
    raise Invalid(f"expected a Python regular expression ({why})")


@text
def listen(value: str) -> tuple[str, int]:
    """host:port ([::1]:9302 for IPv6) -> (host, port)."""
    host, _, port = value.rpartition(":")
    bare = host[1:-1] if host[:1] + host[-1:] == "[]" else host
    if (re.fullmatch(r"[A-Za-z0-9.-]+", host) or (bare != host and _is_ipv6(bare))) \
            and re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536:
        return bare, int(port)
    raise Invalid('expected host:port, e.g. "127.0.0.1:9302" or "[::1]:9302"')


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def plain(text: str) -> str:
    """Text on one line: unprintable characters escaped as in a quoted string."""
    return text if text.isprintable() else "".join(
        c if c.isprintable() else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
        for c in text)
