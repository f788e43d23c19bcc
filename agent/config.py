"""agent.toml: load it into frozen dataclasses, validating every key.

Any file gives either a Config or a ConfigError that lists every problem at once, one line
each, naming the file, the key and the value (shown safely), so that an operator fixes the
file in one pass; never another exception. Validation runs in two phases, as borgmatic's
config/validate.py does:

1. each value on its own: its type, shape and range (the _Table getters). A value that
   fails is reported and kept out of phase two.
2. the rules that relate values (a default taken from another key, paths that must not
   nest, placeholders in check URLs, ...), run only on values that passed phase one, so a
   bad value is reported once and can never crash them.

Secret values (Slack webhook_url and token, Trello key and token, git credentials, and any
key named like one) are never echoed; they and any credentials in a URL are registered with
agent.redact so that no later log line can leak them either.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import json
import math
import os
import re
import stat
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from agent.errors import ConfigError
from agent.window import host_zone
from agent.redact import MASK, redact, register_secret

DEFAULT_CONFIG_PATH = Path("/etc/ghost-agent/agent.toml")
CONFIG_ENV = "GHOST_AGENT_CONFIG"

MAX_SECONDS = 86400.0  # a day: longer timeouts or poll intervals are typos
MAX_SECRET_BYTES = 64 * 1024  # a secret file larger than this is not a secret file
RELEASE_SEPARATORS = "-/_."
_UTF8_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class SiteConfig:
    name: str
    flag: str
    public_url: str
    local_url: str
    content_dir: Path
    ci_cd_dir: Path
    ci_cd_url: str | None = None  # where the ci-cd files are public; Slack links to them

    @property
    def release_prefix(self) -> str | None:
        """The NAME of a NAME* flag ("staging1" for "staging1*"); None for an exact flag."""
        return self.flag[:-1] if self.flag.endswith("*") else None


@dataclass(frozen=True)
class AgentSection:
    state_dir: Path = Path("/var/lib/ghost-agent")
    history: int = 500


@dataclass(frozen=True)
class GitConfig:
    remote: str
    poll_seconds: float = 10.0
    timeout_seconds: float = 60.0
    ssh_key: Path | None = None


@dataclass(frozen=True)
class DeployConfig:
    path: Path
    releases_dir: Path
    keep: int = 5
    build: tuple[tuple[str, ...], ...] = ()
    build_timeout_seconds: float = 600.0


@dataclass(frozen=True)
class GhostConfig:
    unit: str
    restart_timeout_seconds: float = 90.0
    verify_seconds: float = 60.0
    journal_lines: int = 30


@dataclass(frozen=True)
class WindowConfig:
    start: datetime.time
    minutes: int
    timezone: str | None = None
    spread_minutes: int = 0  # hosts start up to this much later, by a hash of the hostname
    # The zone, resolved once here (the zone files are not read again on every decision).
    zone: datetime.tzinfo | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.zone is None:
            zone = zoneinfo.ZoneInfo(self.timezone) if self.timezone else host_zone()
            object.__setattr__(self, "zone", zone)


@dataclass(frozen=True)
class PromotionConfig:
    """Deploy version V only once the canary sites have run V healthily for bake_minutes."""

    canary_urls: tuple[str, ...]  # each site's public URL (its ci-cd.json is read) or a .json URL
    bake_minutes: int = 60
    healthy_share: float = 1.0  # share of canary sites that must be healthy, 0 < x <= 1
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class FleetConfig:
    """`ghost-agent fleet`: one report of every site's ci-cd.json."""

    sites: tuple[str, ...] = ()  # site public URLs or ci-cd.json URLs
    sites_file: Path | None = None  # one URL per line (# comments allowed)
    out_dir: Path | None = None  # where the fleet's ci-cd.txt/.html/.json go
    at: datetime.time | None = None  # run daily at this local time inside `ghost-agent run`
    timezone: str | None = None
    timeout_seconds: float = 10.0
    slack: bool = False  # post one summary to [slack]
    report_url: str | None = None  # where the report is public (Slack links to it)


@dataclass(frozen=True)
class CheckConfig:
    name: str
    url: str
    status: int = 200
    contains: str | None = None
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class SlackConfig:
    webhook_url: str | None = None
    token: str | None = None
    channel: str | None = None
    timeout_seconds: float = 5.0
    api_url: str = "https://slack.com/api/"  # another base URL only for a stand-in in tests


@dataclass(frozen=True)
class TrelloConfig:
    key: str
    token: str
    board: str  # the board's id or short link (trello.com/b/<short link>/…)
    label: str | None = None  # a label name to add to each card a deploy carries
    timeout_seconds: float = 10.0
    api_url: str = "https://api.trello.com/1"


@dataclass(frozen=True)
class CardsConfig:
    pattern: str = "[A-Z][0-9]{3,}"
    board_url: str | None = None
    require: bool = False


@dataclass(frozen=True)
class PublishConfig:
    """What the public ci-cd files may carry beyond the deploy history itself."""

    # Ghost's journal tail of a failed deploy (request paths, stack traces, readers'
    # addresses): left out unless the operator opts in; e-mail and IP addresses stay masked.
    journal_tail: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    site: SiteConfig
    agent: AgentSection
    git: GitConfig
    deploy: DeployConfig
    ghost: GhostConfig
    window: WindowConfig | None
    checks: tuple[CheckConfig, ...]
    slack: SlackConfig | None
    cards: CardsConfig
    trello: TrelloConfig | None = None
    promotion: PromotionConfig | None = None
    fleet: FleetConfig | None = None
    warnings: tuple[str, ...] = ()  # not errors, but an operator should hear of them
    publish: PublishConfig = PublishConfig()


# --------------------------------------------------------------------------- entry points


def config_path(cli_value: str | None) -> Path:
    """--config, else $GHOST_AGENT_CONFIG, else /etc/ghost-agent/agent.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def load_config(path: Path | str) -> Config:
    """Read and validate agent.toml (UTF-8; a leading byte order mark is allowed).

    Returns the Config (its .warnings: lines an operator should see, not errors). Raises
    ConfigError (exit code 78) whose .problems hold one line per problem, each starting
    with the file's path; whatever the file holds, no other exception escapes.
    """
    path = Path(path)
    problems = _Problems(path)
    data = _read_toml(path, problems)
    config = _build(path, data, problems) if data is not None else None
    if config is None or problems.texts:
        raise ConfigError(problems.lines())
    return config


# --------------------------------------------------------------------------- problems and values


class _Problems:
    """The problem lines of one file, each prefixed with its path."""

    def __init__(self, path: Path):
        self.path = path
        self.texts: list[tuple[str | _Shown, ...]] = []

    def add(self, *parts: str | _Shown) -> None:
        self.texts.append(parts)

    def lines(self) -> list[str]:
        # Written at the end, once every secret in the file is known: a token read from
        # [slack] is masked in a [site] line too, even where a long value is cut.
        return [f"{self.path}: {redact(''.join(map(str, parts)))}" for parts in self.texts]


@dataclass(frozen=True)
class _Shown:
    """A value in a problem line, shown by _show() when the lines are written."""

    value: Any

    def __str__(self) -> str:
        return _show(self.value)


_MASKED = json.dumps(MASK)


# Keys whose values are, or may well be, secrets: never echoed, even when they are bad (a
# token pasted into token_file, a private key pasted into ssh_key).
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:token|key|password|passwd|secret|credentials?|webhook_url)(?:_file)?$", re.I
)


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _show(value: Any, limit: int = 80) -> str:
    """A value the way it would look in TOML, on one line, secrets masked, long ones cut."""
    text = _toml_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _toml_repr(value: Any, room: int) -> str:
    """`value` as TOML. Only about `room` characters are rendered (the rest would be cut), so
    a huge or deeply nested value costs no more than what is shown."""
    if room <= 0:
        return "…"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(redact(value)[:room])  # redacted before it is cut: no half secret
    if isinstance(value, int):
        try:
            return repr(value)
        except ValueError:  # more digits than Python will write (sys.int_info): hex it is
            return f"{value:#x}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return _joined("[", value, _toml_repr, "]", room)
    if isinstance(value, dict):
        return _joined("{", value.items(), _toml_item, "}", room)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return _quote(redact(repr(value))[:room])


def _toml_item(item: tuple[str, Any], room: int) -> str:
    key, value = item
    shown = _show_key(key)
    if _is_secret_key(key):
        return f"{shown} = {_MASKED}"
    return f"{shown} = {_toml_repr(value, room - len(shown) - 3)}"


def _joined(opening: str, items: Iterable[Any], render: Callable[[Any, int], str],
            closing: str, room: int) -> str:
    """opening + rendered items + closing, rendering no more items than `room` can show."""
    text = opening
    for item in items:
        if len(text) >= room:
            return text + "…"
        text += ("" if text == opening else ", ") + render(item, room - len(text) - 2)
    return text + closing


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _show_key(key: str, limit: int = 60) -> str:
    """A key as TOML writes it: bare when it can be, else quoted; on one line, cut."""
    if _BARE_KEY.fullmatch(key) and len(key) <= limit:
        return key
    text = _quote(key[:limit])
    return text if len(key) <= limit else text[:-1] + '…"'


def _quote(text: str) -> str:
    """A one-line quoted string: control, line-separating and other unprintable characters
    are escaped, so a value can neither forge a second problem line nor hide itself."""
    return _plain(json.dumps(text, ensure_ascii=False))


def _plain(text: str) -> str:
    """Text on one line: unprintable characters escaped as in a quoted string."""
    return text if text.isprintable() else "".join(
        c if c.isprintable() else _escape(c) for c in text
    )


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class _Invalid(Exception):
    """Raised by a value check; the message says what was expected."""


_REQUIRED = object()  # default marker: the key must be present
_ABSENT = object()


class _Table:
    """Pulls typed values out of one TOML table, recording a problem for each bad one.

    A getter returns the (normalised) value, the default when the key is absent, or None
    when the value is bad or a required key is missing: parsing carries on so that every
    problem is found, and load_config raises before any half-built Config escapes. Keys that
    failed are remembered, so that phase two can skip the rules that would read them.
    """

    def __init__(self, problems: _Problems, label: str, data: dict, *, quiet: bool = False):
        self.problems = problems
        self.label = label  # "[git]", "[[checks]] #2"
        self.data = data
        self.quiet = quiet  # the whole table is missing or not a table: reported once already
        self.seen: set[str] = set()
        self.failed: set[str] = set()
        self.inline_secrets: list[str] = []  # secrets written in agent.toml itself

    # -- reporting

    def bad(self, key: str, value: Any, message: str, *, secret: bool = False) -> None:
        shown = _MASKED if secret or _is_secret_key(key) else _Shown(value)
        self.fail(key, message, shown=shown)

    def fail(self, key: str, message: str, *, shown: str | _Shown | None = None) -> None:
        """Report a problem with `key` (its value shown when given) and mark the key failed."""
        self.failed.add(key)
        if shown is None:
            self.problems.add(f"{self.label} {_show_key(key)}: {message}")
        else:
            self.problems.add(f"{self.label} {_show_key(key)} = ", shown, f": {message}")

    def missing(self, key: str, why: str = "required") -> None:
        self.failed.add(key)
        if not self.quiet:
            self.problems.add(f"{self.label} {key}: missing ({why})")

    def unknown(self) -> None:
        """Report the keys nobody asked for (typos, keys from another version)."""
        for key in self.data:
            if key in self.seen:
                continue
            hint = difflib.get_close_matches(key[:100], sorted(self.seen), n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            self.problems.add(f"{self.label} {_show_key(key)}: unknown key{extra}")

    # -- phase two

    def passed(self, *keys: str) -> bool:
        """Did each of `keys` pass phase one (a valid value, or absent with its default)?"""
        return not self.quiet and self.failed.isdisjoint(keys)

    # -- getters

    def has(self, key: str) -> bool:
        return key in self.data

    def _take(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.missing(key)
            return None
        return _ABSENT

    def string(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        check: Callable[[str], Any] | None = None,
        secret: bool = False,
    ) -> Any:
        value = self._take(key, default)
        if value is _ABSENT:
            return default
        if value is None:
            return None
        if not isinstance(value, str):
            self.bad(key, value, "expected a string", secret=secret)
            return None
        if secret:
            register_secret(value)
        if check is None:
            return value
        try:
            return check(value)
        except _Invalid as exc:
            self.bad(key, value, str(exc), secret=secret)
            return None

    def seconds(self, key: str, default: float, *, high: float = MAX_SECONDS) -> float | None:
        value = self._take(key, default)
        if value is _ABSENT:
            return float(default)
        if _is_number(value) and 0 < value <= high:
            return float(value)
        self.bad(key, value, f"expected a number of seconds > 0 and <= {high:g}")
        return None

    def integer(self, key: str, default: Any, *, low: int, high: int | None = None) -> int | None:
        value = self._take(key, default)
        if value is _ABSENT:
            return default
        if value is None:
            return None
        in_range = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if in_range and (high is None or value <= high):
            return value
        expected = f"from {low} to {high}" if high is not None else f">= {low}"
        self.bad(key, value, f"expected a whole number {expected}")
        return None

    def fraction(self, key: str, default: float) -> float | None:
        """A number > 0 and <= 1 (a share)."""
        value = self._take(key, default)
        if value is _ABSENT:
            return float(default)
        if _is_number(value) and 0 < value <= 1:
            return float(value)
        self.bad(key, value, "expected a number > 0 and <= 1, e.g. 1.0 or 0.8")
        return None

    def boolean(self, key: str, default: bool) -> bool | None:
        value = self._take(key, default)
        if value is _ABSENT:
            return default
        if isinstance(value, bool):
            return value
        self.bad(key, value, "expected true or false")
        return None

    def secret(self, key: str, credential: str, *, check: Callable[[str], Any] | None = None,
               required: bool = False) -> Any:
        """A secret from `key`, from the file named by `key_file`, or from the systemd
        credential `credential` ($CREDENTIALS_DIRECTORY, LoadCredential=). Never echoed.
        Returns the checked value, or None when it is absent or bad (then reported)."""
        file_key = f"{key}_file"
        inline = self.string(key, None, check=check, secret=True)
        path = self.path(file_key, None)
        if self.has(key) and self.has(file_key):
            self.fail(file_key, f"set either {key} or {file_key}, not both")
            return None
        if self.has(key):
            if inline is not None:
                self.inline_secrets.append(key)
            return inline
        if self.has(file_key):
            return self._secret_from(file_key, key, path, check) if path else None
        source = self._credential(key, credential)
        if source is None:
            if required and key not in self.failed:
                self.missing(key, f"set {key}, {file_key}, or the systemd credential "
                                  f"{credential}")
            return None
        return self._secret_from(file_key, key, source, check)

    def _credential(self, key: str, credential: str) -> Path | None:
        """The systemd credential's file, when $CREDENTIALS_DIRECTORY holds it."""
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            return None
        candidate = Path(creds) / credential
        try:
            return candidate if candidate.exists() else None
        except OSError as exc:  # e.g. $CREDENTIALS_DIRECTORY not readable by this user
            self.fail(key, f"cannot read the systemd credential {_show(str(candidate))}: "
                           f"{exc.strerror}")
            return None

    def _secret_from(self, file_key: str, key: str, source: Path,
                     check: Callable[[str], Any] | None) -> Any:
        try:
            value = _read_secret(source)
        except _Invalid as exc:
            self.fail(file_key, str(exc), shown=_Shown(str(source)))
            return None
        register_secret(value)
        if check is None:
            return value
        try:
            return check(value)
        except _Invalid as exc:
            self.failed.add(key)
            self.problems.add(f"{self.label} {key} = {_MASKED} (from ", _Shown(str(source)),
                              f"): {exc}")
            return None

    def path(self, key: str, default: Any = _REQUIRED) -> Path | None:
        return self.string(key, default, check=_check_abs_path)

    def argv_lists(self, key: str) -> tuple[tuple[str, ...], ...] | None:
        """A list of commands, each a non-empty list of non-empty strings (no shell)."""
        value = self._take(key, [])
        if value is _ABSENT:
            return ()
        example = 'e.g. [["npm", "ci", "--omit=dev"]]'
        if not isinstance(value, list):
            self.bad(key, value, f"expected a list of argv lists, {example}")
            return None
        commands = []
        for number, argv in enumerate(value, 1):
            ok = (
                isinstance(argv, list)
                and argv
                and all(isinstance(a, str) and a and "\0" not in a for a in argv)
            )
            if not ok:
                self.bad(
                    key,
                    value,
                    f"command #{number} is not a non-empty list of non-empty strings; "
                    f"expected a list of argv lists, {example}",
                )
                return None
            commands.append(tuple(argv))
        return tuple(commands)


def _read_secret(path: Path) -> str:
    """The stripped text of a secret file; raises _Invalid saying why it cannot be had."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or flood
            raise _Invalid("cannot read the secret: not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise _Invalid(f"cannot read the secret: {exc.strerror or 'cannot open it'}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise _Invalid(f"cannot read the secret: larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _Invalid("cannot read the secret: not UTF-8 text") from None
    if not value:
        raise _Invalid("the file is empty")
    return value


def _is_number(value: Any) -> bool:
    # bools are ints in Python but not numbers in a config; inf and nan are not durations
    # (and math.isfinite() cannot take an int too large for a float: every int is finite)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


# --------------------------------------------------------------------------- value checks
# Each takes the raw string, returns the normalised value, or raises _Invalid(expected).


# C0 and C1 controls and the Unicode line separators: each would break a line in a log
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _check_label(value: str) -> str:
    if not value.strip():
        raise _Invalid("expected a non-empty name")
    if _CONTROL.search(value):
        raise _Invalid("expected a name on one line, without control characters")
    return value


def _check_abs_path(value: str) -> Path:
    if _CONTROL.search(value):
        raise _Invalid("expected an absolute path without control characters")
    if not value.startswith("/"):
        raise _Invalid("expected an absolute path (starting with /)")
    return Path(value)


def _check_url(value: str, *, allow_query: bool = False) -> str:
    """An http(s) URL with a host."""
    if _CONTROL.search(value) or " " in value:
        raise _Invalid("expected an http(s) URL without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        # not echoing the exception: it may quote part of a secret URL
        raise _Invalid("expected an http(s) URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("expected an http(s) URL with a host, e.g. https://example.com")
    if not allow_query and (parts.query or parts.fragment or "?" in value or "#" in value):
        raise _Invalid("expected an http(s) URL without ?query or #fragment")
    _register_url_credentials(value)
    return value


def _check_site_url(value: str) -> str:
    # {public_url}/ and {local_url}/ are joined with "/" by the checks
    return _check_url(value).rstrip("/")


def _check_check_url(value: str) -> str:
    return _check_url(value, allow_query=True)


def _check_slack_api_url(value: str) -> str:
    # slack_sdk joins method names to its base URL: it must end with "/"
    return _check_url(value).rstrip("/") + "/"


def _check_trello_api_url(value: str) -> str:
    return _check_url(value).rstrip("/")


_PLACEHOLDERS = ("{local_url}", "{public_url}")


def _check_url_template(value: str) -> str:
    """A check URL before its placeholders are replaced (phase two makes it a URL)."""
    if _CONTROL.search(value) or " " in value:
        raise _Invalid("expected an http(s) URL without spaces or control characters")
    rest = value
    for placeholder in _PLACEHOLDERS:
        rest = rest.replace(placeholder, "")
    leftover = re.search(r"\{[^{}]*\}", rest)
    if leftover:
        raise _Invalid(f"unknown placeholder {_plain(leftover.group()[:40])}; use "
                       "{local_url} or {public_url}")
    return value


def _register_url_credentials(url: str) -> None:
    """https://user:tok@host -> "tok" is a secret; so is a bare token (https://tok@host)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if "@" not in parts.netloc:
        return
    secret = parts.password
    if secret is None and parts.scheme in ("http", "https"):
        secret = parts.username  # ssh://git@host: the user name is not a secret
    if secret:
        register_secret(secret)
        register_secret(unquote(secret))


def _check_remote(value: str) -> str:
    if not value:
        raise _Invalid("expected a git URL or path")
    if value.startswith("-"):
        # git would read it as an option (e.g. --upload-pack=...)
        raise _Invalid('expected a git URL or path, not something starting with "-"')
    if _CONTROL.search(value) or re.search(r"\s", value):
        raise _Invalid("expected a git URL or path without spaces or control characters")
    if re.match(r"(?i)(ext|fd)::", value):
        # git refuses them by default (protocol.allow); say so before a deploy tries
        raise _Invalid("expected a git URL or path, not the ext:: or fd:: transport "
                       "(they run commands)")
    try:
        urlsplit(value).port  # noqa: B018 -- raises ValueError on a bad host or port
    except ValueError:
        # not echoing the exception: it may quote part of a secret URL
        raise _Invalid("expected a git URL with a valid host and port, or a path") from None
    _register_url_credentials(value)
    return value


# systemd unit types: a name without one of these suffixes is a service
_UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
    ".path", ".timer", ".slice", ".scope",
)  # fmt: skip
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+")


def _check_unit(value: str) -> str:
    if not _UNIT_NAME.fullmatch(value) or len(value) > 255:
        raise _Invalid(r"expected a systemd unit name ([A-Za-z0-9:_.\@-]), e.g. ghost_site.service")
    if value.startswith("-"):
        raise _Invalid('expected a systemd unit name, not something starting with "-"')
    return value if value.endswith(_UNIT_SUFFIXES) else value + ".service"


def _branch_name_error(name: str) -> str | None:
    """Why git would refuse `name` as a branch name (git check-ref-format), or None."""
    bad_char = re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name)
    if bad_char:
        return f"{bad_char.group()!r} is not allowed in a git branch name"
    rules = [
        (name == "" or name == "@", 'a branch name cannot be empty or "@"'),
        (".." in name, 'a branch name cannot contain ".."'),
        ("@{" in name, 'a branch name cannot contain "@{"'),
        ("//" in name, 'a branch name cannot contain "//"'),
        (name.startswith("-"), 'a branch name cannot start with "-"'),
        (name.startswith("/"), 'a branch name cannot start with "/"'),
        (name.endswith("/") or name.endswith("."), 'a branch name cannot end with "/" or "."'),
        (
            any(p.startswith(".") or p.endswith(".lock") for p in name.split("/")),
            'a part of a branch name cannot start with "." or end with ".lock"',
        ),
    ]
    for broken, reason in rules:
        if broken:
            return reason
    return None


def _check_flag(value: str) -> str:
    """An exact branch ("dev1") or NAME* for the release branches of NAME ("staging1*")."""
    if "*" not in value:
        error = _branch_name_error(value)
        if error:
            raise _Invalid(f"expected a git branch name or NAME* ({error})")
        return value
    name = value[:-1]
    if not value.endswith("*") or "*" in name:
        raise _Invalid(
            'bad glob: "*" is only allowed once, at the end, as NAME* '
            '(e.g. "staging1*" for staging1-1.3.22)'
        )
    if not name:
        raise _Invalid(
            'bad glob: a bare "*" would follow every branch; write NAME*, e.g. "staging1*"'
        )
    stripped = name.rstrip(RELEASE_SEPARATORS)
    if stripped != name:
        raise _Invalid(
            f'bad glob: write "{stripped}*", which matches {stripped}-1.2, {stripped}/1.2, '
            f"{stripped}_1.2 and {stripped}.1.2"
        )
    error = _branch_name_error(name)
    if error:
        raise _Invalid(f"bad glob: NAME in NAME* must be a git branch name ({error})")
    return value


def _check_time(value: str) -> datetime.time:
    match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", value)  # \d would take "٠٣:٣٠" too
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _Invalid('expected a time "HH:MM" from 00:00 to 23:59, e.g. "03:30"')
    return datetime.time(int(match[1]), int(match[2]))


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if not _have_tz_database():
            raise _Invalid("no time zone database on this host (install tzdata)") from None
        raise _Invalid('expected an IANA time zone name, e.g. "Europe/Paris" or "UTC"') from None
    return value


@functools.cache
def _have_tz_database() -> bool:
    return bool(zoneinfo.available_timezones())  # walks the whole database: once is enough


def _check_regex(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as exc:  # its message may quote part of the pattern: kept on one line
        raise _Invalid(f"expected a Python regular expression ({_plain(str(exc))[:120]})"
                       ) from None
    except OverflowError:
        raise _Invalid("expected a Python regular expression (a repeat count is too large)"
                       ) from None
    except RecursionError:
        raise _Invalid("expected a Python regular expression (groups nested too deeply)"
                       ) from None
    if compiled.search("") is not None:
        raise _Invalid("expected a regular expression that does not match an empty string")
    return value


def _check_token(value: str) -> str:
    if not value or re.search(r"\s", value):
        raise _Invalid("expected a Slack token without spaces, e.g. xoxb-…")
    return value


def _check_word(value: str) -> str:
    if not value or re.search(r"\s", value):
        raise _Invalid("expected one word without spaces")
    return value


def _check_nonempty(value: str) -> str:
    if not value.strip() or _CONTROL.search(value):
        raise _Invalid("expected a non-empty string on one line")
    return value



# --------------------------------------------------------------------------- reading


def _read_toml(path: Path, problems: _Problems) -> dict | None:
    """The parsed document, or None with the one problem that stops it being read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add(f"cannot read config: {exc.strerror or exc}")
        return None
    text = _decode(raw, problems)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)  # tomllib's messages name a position, never the text there
        line = re.search(r"\(at line (\d+), column \d+\)", message)
        where = f"line {line[1]}: " if line else ""
        problems.add(f"{where}invalid TOML: {message}")
    except ValueError:  # int() refuses more than 4300 digits (sys.int_info)
        problems.add("invalid TOML: a number too long to read")
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        problems.add("invalid TOML: arrays or inline tables nested too deeply")
    return None


def _decode(raw: bytes, problems: _Problems) -> str | None:
    """UTF-8 text; the byte order mark some Windows editors write first is dropped."""
    start = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    try:
        return raw[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(_not_utf8(raw, start + exc.start))
        return None


def _not_utf8(raw: bytes, offset: int) -> str:
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
    advice = "it looks like UTF-16: save it as UTF-8" if utf16 else "save the file as UTF-8"
    return (f"invalid TOML: not UTF-8 text at byte {offset} (0x{raw[offset]:02x}, line {line}, "
            f"column {column}): {advice}")


_TABLES = ("site", "agent", "git", "deploy", "ghost", "window", "checks", "slack", "cards",
           "trello", "promotion", "fleet", "publish")
_SECRET_TABLES = ("slack", "trello")
_REQUIRED_TABLES = ("site", "git", "deploy", "ghost")
_DEFAULT_TABLES = ("agent", "cards", "publish")  # absent: every key takes its default


def _table(problems: _Problems, data: dict, name: str) -> _Table | None:
    """The reader for [name]; None for an optional table that is absent."""
    value = data.get(name)
    if isinstance(value, dict):
        return _Table(problems, f"[{name}]", value)
    if _is_array_of_tables(value):
        problems.add(f"[[{name}]]: expected a single [{name}] table, not an array of tables")
    elif name in data:
        shown = _MASKED if name in _SECRET_TABLES else _Shown(value)  # it may hold a secret
        problems.add(f"{name} = ", shown, f": expected a [{name}] table")
    elif name in _REQUIRED_TABLES:
        problems.add(f"[{name}]: missing (required table)")
    elif name in _DEFAULT_TABLES:
        return _Table(problems, f"[{name}]", {})
    else:
        return None
    return _Table(problems, f"[{name}]", {}, quiet=True)


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _unknown_tables(problems: _Problems, data: dict) -> None:
    for name, value in data.items():
        if name in _TABLES:
            continue
        shown = _show_key(name)
        hint = difflib.get_close_matches(name[:100], _TABLES, n=1)
        extra = f" (did you mean [{hint[0]}]?)" if hint else ""
        if isinstance(value, dict):
            problems.add(f"[{shown}]: unknown table{extra}")
        elif _is_array_of_tables(value):
            problems.add(f"[[{shown}]]: unknown array of tables{extra}")
        else:  # its value is not shown: a misplaced key may well hold a secret
            problems.add(f"{shown}: unknown key outside any table (keys belong in a table)")


def _build(path: Path, data: dict, problems: _Problems) -> Config:
    _unknown_tables(problems, data)
    t = {name: _table(problems, data, name) for name in _TABLES if name != "checks"}

    # Phase one: each value on its own (type, shape, range); every problem is collected.
    site = _site(t["site"])
    agent = _agent(t["agent"])
    git, credentials = _git(t["git"])
    deploy = _deploy(t["deploy"])
    ghost = _ghost(t["ghost"])
    window = _window(t["window"]) if t["window"] else None
    checks = _checks(problems, data)
    slack = _slack(t["slack"]) if t["slack"] else None
    cards = _cards(t["cards"])
    trello = _trello(t["trello"]) if t["trello"] else None
    promotion = _promotion(t["promotion"]) if t["promotion"] else None
    fleet = _fleet(t["fleet"]) if t["fleet"] else None
    publish = _publish(t["publish"])

    # Phase two: the rules that relate values, each only on values that passed phase one.
    warnings = _readable_secret_warnings(path, _inline_secrets(t, git))
    site = _site_defaults(t["site"], site)
    git = _git_credentials(t["git"], git, credentials)
    deploy = _deploy_paths(t["deploy"], deploy, t["agent"], agent)
    _window_spread(t["window"], window)
    all_checks = _relate_checks(checks, t["site"], site)
    _fleet_needs(t["fleet"], fleet, have_slack=slack is not None)
    return Config(path, site, agent, git, deploy, ghost, window, all_checks, slack, cards,
                  trello, promotion, fleet, warnings, publish)


def _inline_secrets(t: dict[str, _Table | None], git: GitConfig) -> list[str]:
    """The secrets written in agent.toml itself, as "[table] key"."""
    inline = []
    for name in (*_SECRET_TABLES, "git"):  # [git] credentials = "user:token"
        table = t[name]
        inline += [f"[{name}] {key}" for key in (table.inline_secrets if table else [])]
    if t["git"].passed("remote") and _url_has_credentials(git.remote):
        inline.append("[git] remote")
    return inline


def _url_has_credentials(url: str) -> bool:
    parts = urlsplit(url)  # a remote that passed phase one splits
    return "@" in parts.netloc and parts.scheme in ("http", "https")


def _readable_secret_warnings(path: Path, inline: list[str]) -> tuple[str, ...]:
    """A file that holds a secret must not be readable by every user on the host."""
    if not inline:
        return ()
    try:
        mode = path.stat().st_mode
    except OSError:
        return ()
    if not mode & 0o004:
        return ()
    return (f"{path}: warning: {', '.join(inline)} holds a secret and the file is readable by "
            f"everyone (mode {mode & 0o777:o}); chmod 640 it, or use the *_file keys or "
            "systemd credentials",)


# --------------------------------------------------------------------------- sections: phase one
# Each reads its table's keys one by one and returns its dataclass; a bad or missing value is
# None there (load_config raises before such a Config escapes).


def _site(t: _Table) -> SiteConfig:
    name = t.string("name", check=_check_label)
    flag = t.string("flag", check=_check_flag)
    public_url = t.string("public_url", check=_check_site_url)
    local_url = t.string("local_url", "http://127.0.0.1:2368", check=_check_site_url)
    content_dir = t.path("content_dir")
    ci_cd_dir = t.path("ci_cd_dir", None)
    ci_cd_url = t.string("ci_cd_url", None, check=_check_site_url)
    t.unknown()
    return SiteConfig(name, flag, public_url, local_url, content_dir, ci_cd_dir, ci_cd_url)


def _agent(t: _Table) -> AgentSection:
    state_dir = t.path("state_dir", AgentSection.state_dir)
    history = t.integer("history", AgentSection.history, low=1, high=100000)
    t.unknown()
    return AgentSection(state_dir, history)


def _git(t: _Table) -> tuple[GitConfig, str | None]:
    """[git], and the credentials that phase two puts into the remote URL."""
    remote = t.string("remote", check=_check_remote)
    poll = t.seconds("poll_seconds", GitConfig.poll_seconds)
    timeout = t.seconds("timeout_seconds", GitConfig.timeout_seconds)
    ssh_key = t.path("ssh_key", None)
    credentials = t.secret("credentials", "git-credentials")
    t.unknown()
    return GitConfig(remote, poll, timeout, ssh_key), credentials


def _deploy(t: _Table) -> DeployConfig:
    live = t.path("path")
    releases_dir = t.path("releases_dir", None)
    keep = t.integer("keep", DeployConfig.keep, low=2, high=1000)
    build = t.argv_lists("build")
    build_timeout = t.seconds("build_timeout_seconds", DeployConfig.build_timeout_seconds)
    t.unknown()
    return DeployConfig(live, releases_dir, keep, build, build_timeout)


def _ghost(t: _Table) -> GhostConfig:
    unit = t.string("unit", check=_check_unit)
    restart_timeout = t.seconds("restart_timeout_seconds", GhostConfig.restart_timeout_seconds)
    verify = t.seconds("verify_seconds", GhostConfig.verify_seconds)
    journal_lines = t.integer("journal_lines", GhostConfig.journal_lines, low=0, high=10000)
    t.unknown()
    return GhostConfig(unit, restart_timeout, verify, journal_lines)


def _window(t: _Table) -> WindowConfig:
    start = _window_start(t)
    minutes = t.integer("minutes", _REQUIRED, low=1, high=1440)
    timezone = t.string("timezone", None, check=_check_timezone)
    spread = t.integer("spread_minutes", 0, low=0, high=1440)
    t.unknown()
    return WindowConfig(start, minutes, timezone, spread)


def _window_start(t: _Table) -> datetime.time | None:
    # an unquoted TOML time (start = 03:30:00) means the same as "03:30"
    value = t.data.get("start")
    if isinstance(value, datetime.time):
        t.seen.add("start")
        if value.tzinfo is None and value.second == 0 and value.microsecond == 0:
            return value
        t.bad("start", value, 'expected a time "HH:MM" from 00:00 to 23:59, e.g. "03:30"')
        return None
    return t.string("start", check=_check_time)


def _url_list(t: _Table, key: str, *, required: bool) -> tuple[str, ...] | None:
    value = t.data.get(key)
    t.seen.add(key)
    if value is None:
        if required:
            t.missing(key)
        return () if not required else None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        t.bad(key, value, 'expected a list of URLs, e.g. ["https://a.website.com"]')
        return None
    urls = []
    for url in value:
        try:
            urls.append(_check_check_url(url).rstrip("/"))
        except _Invalid as exc:
            t.bad(key, url, str(exc))
            return None
    if required and not urls:
        t.bad(key, value, "expected at least one URL")
        return None
    return tuple(urls)


def _promotion(t: _Table) -> PromotionConfig:
    urls = _url_list(t, "canary_urls", required=True)
    bake = t.integer("bake_minutes", PromotionConfig.bake_minutes, low=0, high=7 * 1440)
    share = t.fraction("healthy_share", PromotionConfig.healthy_share)
    timeout = t.seconds("timeout_seconds", PromotionConfig.timeout_seconds)
    t.unknown()
    return PromotionConfig(urls, bake, share, timeout)


def _fleet(t: _Table) -> FleetConfig:
    sites = _url_list(t, "sites", required=False)
    sites_file = t.path("sites_file", None)
    out_dir = t.path("out_dir", None)
    at = t.string("at", None, check=_check_time)
    timezone = t.string("timezone", None, check=_check_timezone)
    timeout = t.seconds("timeout_seconds", FleetConfig.timeout_seconds)
    slack = t.boolean("slack", False)
    report_url = t.string("report_url", None, check=_check_site_url)
    t.unknown()
    return FleetConfig(sites or (), sites_file, out_dir, at, timezone, timeout, slack,
                       report_url)


def _checks(problems: _Problems, data: dict) -> list[tuple[_Table, CheckConfig]] | None:
    """Each [[checks]] with its reader; None when there are none (the defaults apply)."""
    if "checks" not in data:
        return None
    value = data["checks"]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add("checks = ", _Shown(value),
                     ": expected [[checks]] tables (an array of tables)")
        return []
    if not value:
        problems.add("checks = []: expected at least one [[checks]]; remove it for the defaults")
        return []
    tables = [_Table(problems, f"[[checks]] #{n}", item) for n, item in enumerate(value, 1)]
    return [(t, _check(t)) for t in tables]


def _check(t: _Table) -> CheckConfig:
    name = t.string("name", check=_check_label)
    url = t.string("url", check=_check_url_template)  # phase two fills in the placeholders
    status = t.integer("status", CheckConfig.status, low=100, high=599)
    contains = t.string("contains", None, check=_check_contains)
    timeout = t.seconds("timeout_seconds", CheckConfig.timeout_seconds)
    t.unknown()
    return CheckConfig(name, url, status, contains, timeout)


def _check_contains(value: str) -> str:
    if not value:
        raise _Invalid("expected a non-empty string (or leave the key out)")
    return value


def _slack(t: _Table) -> SlackConfig:
    webhook_url = t.secret("webhook_url", "slack-webhook-url", check=_check_url)
    if webhook_url:
        # The path alone is the secret too (logs may show a URL without its host).
        path = urlsplit(webhook_url).path
        register_secret(path)
        register_secret(path.rstrip("/").rsplit("/", 1)[-1])
    token = t.secret("token", "slack-token", check=_check_token)
    channel = t.string("channel", None, check=_check_nonempty)
    timeout = t.seconds("timeout_seconds", SlackConfig.timeout_seconds)
    api_url = t.string("api_url", SlackConfig.api_url, check=_check_slack_api_url)
    t.unknown()
    # which keys are there (not their values) says how Slack is reached
    has_webhook = webhook_url is not None or t.has("webhook_url") or t.has("webhook_url_file")
    has_token = token is not None or t.has("token") or t.has("token_file")
    if has_webhook and has_token:
        t.fail("token", "set either webhook_url or token (with channel), not both")
    elif not has_webhook and not has_token:
        t.missing("webhook_url", "set webhook_url, or token and channel")
    if has_token and not t.has("channel"):
        t.missing("channel", "required when token is set")
    return SlackConfig(webhook_url, token, channel, timeout, api_url)


def _trello(t: _Table) -> TrelloConfig:
    key = t.secret("key", "trello-key", check=_check_word, required=True)
    token = t.secret("token", "trello-token", check=_check_word, required=True)
    board = t.string("board", check=_check_word)
    label = t.string("label", None, check=_check_nonempty)
    timeout = t.seconds("timeout_seconds", TrelloConfig.timeout_seconds)
    api_url = t.string("api_url", TrelloConfig.api_url, check=_check_trello_api_url)
    t.unknown()
    return TrelloConfig(key, token, board, label, timeout, api_url)


def _cards(t: _Table) -> CardsConfig:
    pattern = t.string("pattern", CardsConfig.pattern, check=_check_regex)
    board_url = t.string("board_url", None, check=_check_check_url)
    require = t.boolean("require", CardsConfig.require)
    t.unknown()
    return CardsConfig(pattern, board_url, require)


def _publish(t: _Table) -> PublishConfig:
    journal_tail = t.boolean("journal_tail", PublishConfig.journal_tail)
    t.unknown()
    return PublishConfig(journal_tail)


# --------------------------------------------------------------------------- phase two
# Each rule reads only keys that passed phase one (_Table.passed), so their values have the
# types and ranges phase one promised; a key that failed was reported already.


def _site_defaults(t: _Table, site: SiteConfig) -> SiteConfig:
    changes: dict[str, Any] = {}
    if not t.has("ci_cd_dir") and t.passed("content_dir"):
        changes["ci_cd_dir"] = site.content_dir / "files"
    # Ghost serves content/files/ at /content/files/; nginx may serve them at the root.
    if not t.has("ci_cd_url") and t.passed("public_url"):
        changes["ci_cd_url"] = f"{site.public_url}/content/files"
    return dataclasses.replace(site, **changes)


def _git_credentials(t: _Table, git: GitConfig, credentials: str | None) -> GitConfig:
    if credentials is None or not t.passed("remote"):
        return git
    return dataclasses.replace(git, remote=_with_credentials(t, git.remote, credentials))


def _with_credentials(t: _Table, remote: str, credentials: str) -> str | None:
    """Put "user:token" (or a bare token) into an https remote URL."""
    parts = urlsplit(remote)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        t.fail("credentials", "only for an http(s) remote without credentials of its own")
        return None
    user, _, password = credentials.partition(":")
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    register_secret(quote(user, safe="") if not password else quote(password, safe=""))
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def _deploy_paths(t: _Table, deploy: DeployConfig, agent_t: _Table,
                  agent: AgentSection) -> DeployConfig:
    """releases_dir defaults to <state_dir>/releases; it and the live path must not nest."""
    if not t.has("releases_dir") and agent_t.passed("state_dir"):
        deploy = dataclasses.replace(deploy, releases_dir=agent.state_dir / "releases")
    if t.passed("path", "releases_dir") and deploy.releases_dir is not None:
        _check_live_path(t, deploy.path, deploy.releases_dir)
    return deploy


def _check_live_path(t: _Table, live: Path, releases_dir: Path) -> None:
    # the live symlink is replaced and old releases are deleted: neither may hold the other
    if live == Path("/"):
        t.bad("path", str(live), "expected the path of the live symlink, not /")
    elif live == releases_dir or live.is_relative_to(releases_dir):
        t.bad("path", str(live), f"must not be inside releases_dir ({_show(str(releases_dir))})")
    elif releases_dir.is_relative_to(live):
        t.bad("releases_dir", str(releases_dir), f"must not be inside path ({_show(str(live))})")


def _window_spread(t: _Table | None, window: WindowConfig | None) -> None:
    if t is None or window is None or not t.passed("minutes", "spread_minutes"):
        return
    if window.spread_minutes and window.spread_minutes >= window.minutes:
        t.fail("spread_minutes", "must be shorter than the window (minutes = "
               f"{window.minutes}), or some hosts would start after it closed",
               shown=str(window.spread_minutes))


def _relate_checks(checks: list[tuple[_Table, CheckConfig]] | None, site_t: _Table,
                   site: SiteConfig) -> tuple[CheckConfig, ...]:
    """The checks with their URLs filled in, each name used once; without [[checks]],
    GET {local_url}/ and GET {public_url}/."""
    if checks is None:
        if not site_t.passed("local_url", "public_url"):
            return ()
        return (CheckConfig("local", f"{site.local_url}/"),
                CheckConfig("public", f"{site.public_url}/"))
    names: set[str] = set()
    for t, check in checks:
        if t.passed("name") and check.name in names:
            t.bad("name", check.name, "duplicate check name")
        names.add(check.name)
    return tuple(
        dataclasses.replace(check, url=_check_url_value(t, check.url, site_t, site))
        if t.passed("url") else check
        for t, check in checks
    )


def _check_url_value(t: _Table, template: str, site_t: _Table, site: SiteConfig) -> str | None:
    """The URL, {local_url} and {public_url} replaced, must be an http(s) URL."""
    url = template
    for placeholder in _PLACEHOLDERS:
        if placeholder in url:
            key = placeholder[1:-1]
            if not site_t.passed(key):  # reported under [site] already
                return None
            url = url.replace(placeholder, getattr(site, key))
    try:
        return _check_check_url(url)
    except _Invalid as exc:
        t.bad("url", template, str(exc))
        return None


def _fleet_needs(t: _Table | None, fleet: FleetConfig | None, *, have_slack: bool) -> None:
    if t is None or fleet is None:
        return
    if t.passed("at", "out_dir", "slack") and fleet.at is not None and fleet.out_dir is None \
            and not fleet.slack:
        t.fail("at", "a daily report needs out_dir or slack = true")
    if t.passed("slack") and fleet.slack and not have_slack:
        t.fail("slack", "needs a [slack] table", shown="true")
