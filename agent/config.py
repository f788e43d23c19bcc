"""agent.toml: load it into frozen dataclasses, validating every key.

Every problem is collected and reported at once (ConfigError.problems), one line each,
naming the file, the key and the value, so that an operator fixes the file in one pass.
Secret values (Slack webhook_url and token) are never echoed; they and any credentials in
a URL are registered with agent.redact so that no later log line can leak them either.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from agent.errors import ConfigError
from agent.redact import MASK, redact, register_secret

DEFAULT_CONFIG_PATH = Path("/etc/ghost-agent/agent.toml")
CONFIG_ENV = "GHOST_AGENT_CONFIG"

MAX_SECONDS = 86400.0  # a day: longer timeouts or poll intervals are typos
RELEASE_SEPARATORS = "-/_."


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
    """Read and validate agent.toml; raise ConfigError listing every problem."""
    path = Path(path)
    problems = _Problems(path)
    data = _read_toml(path, problems)
    if data is None:
        raise ConfigError(problems.lines)
    config = _build(path, data, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


# --------------------------------------------------------------------------- problems and values


class _Problems:
    """The problem lines of one file, each prefixed with its path."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(f"{self.path}: {text}")


def _show(value: Any, limit: int = 80) -> str:
    """A value the way it would look in TOML, credentials masked, long ones cut."""
    text = _toml_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(redact(value), ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return redact(repr(value))


class _Invalid(Exception):
    """Raised by a value check; the message says what was expected."""


_REQUIRED = object()  # default marker: the key must be present
_ABSENT = object()


class _Table:
    """Pulls typed values out of one TOML table, recording a problem for each bad one.

    A getter returns the (normalised) value, the default when the key is absent, or None
    when the value is bad or a required key is missing: parsing carries on so that every
    problem is found, and load_config raises before any half-built Config escapes.
    """

    def __init__(self, problems: _Problems, label: str, data: dict, *, quiet: bool = False):
        self.problems = problems
        self.label = label  # "[git]", "[[checks]] #2"
        self.data = data
        self.quiet = quiet  # the whole table is missing: that was reported once already
        self.seen: set[str] = set()
        self.inline_secrets: list[str] = []  # secrets written in agent.toml itself

    # -- reporting

    def bad(self, key: str, value: Any, message: str, *, secret: bool = False) -> None:
        shown = json.dumps(MASK) if secret else _show(value)
        self.problems.add(f"{self.label} {key} = {shown}: {message}")

    def missing(self, key: str, why: str = "required") -> None:
        if not self.quiet:
            self.problems.add(f"{self.label} {key}: missing ({why})")

    def unknown(self) -> None:
        """Report the keys nobody asked for (typos, keys from another version)."""
        for key in self.data:
            if key in self.seen:
                continue
            hint = difflib.get_close_matches(key, sorted(self.seen), n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            self.problems.add(f"{self.label} {key}: unknown key{extra}")

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
        credential `credential` ($CREDENTIALS_DIRECTORY, LoadCredential=). Never echoed."""
        inline = self.string(key, None, check=check, secret=True)
        file_key = f"{key}_file"
        path = self.path(file_key, None)
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if self.has(key) and self.has(file_key):
            self.problems.add(f"{self.label} {file_key}: set either {key} or {file_key}, not both")
            return None
        if self.has(key):
            if inline is not None:
                self.inline_secrets.append(key)
            return inline
        source = path
        if source is None and not self.has(file_key) and creds:
            candidate = Path(creds) / credential
            try:
                source = candidate if candidate.exists() else None
            except OSError as exc:  # e.g. $CREDENTIALS_DIRECTORY not readable by this user
                self.problems.add(f"{self.label} {key}: cannot read the systemd credential "
                                  f"{candidate}: {exc.strerror}")
                return None
        if source is None:
            if required and not self.has(file_key):
                self.missing(key, f"set {key}, {file_key}, or the systemd credential "
                                  f"{credential}")
            return None
        try:
            value = source.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            self.problems.add(f"{self.label} {file_key} = {_show(str(source))}: "
                              f"cannot read the secret: {reason}")
            return None
        if not value:
            self.problems.add(f"{self.label} {file_key} = {_show(str(source))}: the file is empty")
            return None
        register_secret(value)
        if check is not None:
            try:
                return check(value)
            except _Invalid as exc:
                self.problems.add(f"{self.label} {key} (from {source}) = {json.dumps(MASK)}: "
                                  f"{exc}")
                return None
        return value

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
                    f"command #{number} ({_show(argv, 40)}) is not a non-empty list of "
                    f"non-empty strings; expected a list of argv lists, {example}",
                )
                return None
            commands.append(tuple(argv))
        return tuple(commands)


def _is_number(value: Any) -> bool:
    # bools are ints in Python but not numbers in a config; inf and nan are not durations
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- value checks
# Each takes the raw string, returns the normalised value, or raises _Invalid(expected).


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _Invalid('expected a time "HH:MM" from 00:00 to 23:59, e.g. "03:30"')
    return datetime.time(int(match[1]), int(match[2]))


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if not zoneinfo.available_timezones():
            raise _Invalid("no time zone database on this host (install tzdata)") from None
        raise _Invalid('expected an IANA time zone name, e.g. "Europe/Paris" or "UTC"') from None
    return value


def _check_regex(value: str) -> str:
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise _Invalid(f"expected a Python regular expression ({exc})") from None
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
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add(f"cannot read config: {exc.strerror or exc}")
        return None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.add(f"invalid TOML: not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = re.search(r"\(at line (\d+), column \d+\)", message)
        where = f"line {line[1]}: " if line else ""
        problems.add(f"{where}invalid TOML: {message}")
    return None


_TABLES = ("site", "agent", "git", "deploy", "ghost", "window", "checks", "slack", "cards",
           "trello", "promotion", "fleet")
_SECRET_TABLES = ("slack", "trello")
_REQUIRED_TABLES = ("site", "git", "deploy", "ghost")


def _table(problems: _Problems, data: dict, name: str) -> _Table | None:
    """The reader for [name]; None for an optional table that is absent."""
    value = data.get(name)
    if isinstance(value, dict):
        return _Table(problems, f"[{name}]", value)
    if isinstance(value, list):
        problems.add(f"[[{name}]]: expected a single [{name}] table, not an array of tables")
    elif name in data:
        shown = json.dumps(MASK) if name in _SECRET_TABLES else _show(value)  # may hold one
        problems.add(f"{name} = {shown}: expected a [{name}] table")
    elif name in _REQUIRED_TABLES:
        problems.add(f"[{name}]: missing (required table)")
    else:
        return None
    return _Table(problems, f"[{name}]", {}, quiet=True)


def _build(path: Path, data: dict, problems: _Problems) -> Config:
    for name, value in data.items():
        if name in _TABLES:
            continue
        if isinstance(value, dict):
            hint = difflib.get_close_matches(name, _TABLES, n=1)
            extra = f" (did you mean [{hint[0]}]?)" if hint else ""
            problems.add(f"[{name}]: unknown table{extra}")
        else:
            problems.add(f"{name}: unknown key outside any table (keys belong in a table)")

    site = _site(_table(problems, data, "site"))
    agent = _agent(_table(problems, data, "agent") or _Table(problems, "[agent]", {}))
    git = _git(_table(problems, data, "git"))
    deploy = _deploy(_table(problems, data, "deploy"), agent)
    ghost = _ghost(_table(problems, data, "ghost"))
    window_table = _table(problems, data, "window")
    window = _window(window_table) if window_table else None
    checks = _checks(problems, data.get("checks"), "checks" in data, site)
    slack_table = _table(problems, data, "slack")
    slack = _slack(slack_table) if slack_table else None
    cards = _cards(_table(problems, data, "cards") or _Table(problems, "[cards]", {}))
    trello_table = _table(problems, data, "trello")
    trello = _trello(trello_table) if trello_table else None
    promotion_table = _table(problems, data, "promotion")
    promotion = _promotion(promotion_table) if promotion_table else None
    fleet_table = _table(problems, data, "fleet")
    fleet = _fleet(fleet_table) if fleet_table else None
    if fleet and fleet.slack and slack is None:
        problems.add("[fleet] slack = true: needs a [slack] table")
    inline = [f"[slack] {k}" for k in (slack_table.inline_secrets if slack_table else [])]
    inline += [f"[trello] {k}" for k in (trello_table.inline_secrets if trello_table else [])]
    if git.remote and _url_has_credentials(data.get("git", {}).get("remote")):
        inline.append("[git] remote")
    warnings = _readable_secret_warnings(path, inline)
    return Config(path, site, agent, git, deploy, ghost, window, checks, slack, cards, trello,
                  promotion, fleet, warnings)


def _url_has_credentials(url: Any) -> bool:
    return isinstance(url, str) and "@" in urlsplit(url).netloc and \
        urlsplit(url).scheme in ("http", "https")


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


# --------------------------------------------------------------------------- sections


def _site(t: _Table) -> SiteConfig:
    name = t.string("name", check=_check_label)
    flag = t.string("flag", check=_check_flag)
    public_url = t.string("public_url", check=_check_site_url)
    local_url = t.string("local_url", "http://127.0.0.1:2368", check=_check_site_url)
    content_dir = t.path("content_dir")
    ci_cd_dir = t.path("ci_cd_dir", None)
    if ci_cd_dir is None and not t.has("ci_cd_dir") and content_dir is not None:
        ci_cd_dir = content_dir / "files"
    # Ghost serves content/files/ at /content/files/; nginx may serve them at the root.
    ci_cd_url = t.string("ci_cd_url", None, check=_check_site_url)
    if ci_cd_url is None and not t.has("ci_cd_url") and public_url:
        ci_cd_url = f"{public_url}/content/files"
    t.unknown()
    return SiteConfig(name, flag, public_url, local_url, content_dir, ci_cd_dir, ci_cd_url)


def _agent(t: _Table) -> AgentSection:
    state_dir = t.path("state_dir", AgentSection.state_dir)
    history = t.integer("history", AgentSection.history, low=1, high=100000)
    t.unknown()
    return AgentSection(state_dir, history)


def _git(t: _Table) -> GitConfig:
    remote = t.string("remote", check=_check_remote)
    poll = t.seconds("poll_seconds", GitConfig.poll_seconds)
    timeout = t.seconds("timeout_seconds", GitConfig.timeout_seconds)
    ssh_key = t.path("ssh_key", None)
    credentials = t.secret("credentials", "git-credentials")
    t.unknown()
    if remote and credentials:
        remote = _with_credentials(t, remote, credentials)
    return GitConfig(remote, poll, timeout, ssh_key)


def _with_credentials(t: _Table, remote: str, credentials: str) -> str | None:
    """Put "user:token" (or a bare token) into an https remote URL."""
    parts = urlsplit(remote)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        t.problems.add(f"{t.label} credentials: only for an http(s) remote without "
                       "credentials of its own")
        return None
    user, _, password = credentials.partition(":")
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    register_secret(quote(user, safe="") if not password else quote(password, safe=""))
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def _deploy(t: _Table, agent: AgentSection) -> DeployConfig:
    live = t.path("path")
    releases_dir = t.path("releases_dir", None)
    if releases_dir is None and not t.has("releases_dir") and agent.state_dir is not None:
        releases_dir = agent.state_dir / "releases"
    keep = t.integer("keep", DeployConfig.keep, low=2)
    build = t.argv_lists("build")
    build_timeout = t.seconds("build_timeout_seconds", DeployConfig.build_timeout_seconds)
    t.unknown()
    if live is not None and releases_dir is not None:
        _check_live_path(t, live, releases_dir)
    return DeployConfig(live, releases_dir, keep, build, build_timeout)


def _check_live_path(t: _Table, live: Path, releases_dir: Path) -> None:
    # the live symlink is replaced and old releases are deleted: neither may hold the other
    if live == Path("/"):
        t.bad("path", str(live), "expected the path of the live symlink, not /")
    elif live == releases_dir or live.is_relative_to(releases_dir):
        t.bad("path", str(live), f"must not be inside releases_dir ({releases_dir})")
    elif releases_dir.is_relative_to(live):
        t.bad("releases_dir", str(releases_dir), f"must not be inside path ({live})")


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
    if minutes is not None and spread and spread >= minutes:
        t.problems.add(f"{t.label} spread_minutes = {spread}: must be shorter than the window "
                       f"(minutes = {minutes}), or some hosts would start after it closed")
    return WindowConfig(start, minutes, timezone, spread)


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
    share = t.data.get("healthy_share", PromotionConfig.healthy_share)
    t.seen.add("healthy_share")
    if not _is_number(share) or not 0 < share <= 1:
        t.bad("healthy_share", share, "expected a number > 0 and <= 1, e.g. 1.0 or 0.8")
        share = None
    timeout = t.seconds("timeout_seconds", PromotionConfig.timeout_seconds)
    t.unknown()
    return PromotionConfig(urls, bake, float(share) if share else 1.0, timeout)


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
    if at is not None and out_dir is None and not slack:
        t.problems.add(f"{t.label} at: a daily report needs out_dir or slack = true")
    return FleetConfig(sites or (), sites_file, out_dir, at, timezone, timeout, bool(slack),
                       report_url)


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


def _checks(
    problems: _Problems, value: Any, present: bool, site: SiteConfig
) -> tuple[CheckConfig, ...]:
    if not present:
        return (
            CheckConfig("local", f"{site.local_url}/"),
            CheckConfig("public", f"{site.public_url}/"),
        )
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add(f"checks = {_show(value)}: expected [[checks]] tables (an array of tables)")
        return ()
    if not value:
        problems.add("checks = []: expected at least one [[checks]]; remove it for the defaults")
        return ()
    checks = []
    names: set[str] = set()
    for number, item in enumerate(value, 1):
        check = _check(_Table(problems, f"[[checks]] #{number}", item), site)
        if check.name is not None and check.name in names:
            problems.add(f"[[checks]] #{number} name = {_show(check.name)}: duplicate check name")
        names.add(check.name)
        checks.append(check)
    return tuple(checks)


def _check(t: _Table, site: SiteConfig) -> CheckConfig:
    name = t.string("name", check=_check_label)
    url = _check_url_value(t, site)
    status = t.integer("status", CheckConfig.status, low=100, high=599)
    contains = t.string("contains", None, check=_check_contains)
    timeout = t.seconds("timeout_seconds", CheckConfig.timeout_seconds)
    t.unknown()
    return CheckConfig(name, url, status, contains, timeout)


def _check_contains(value: str) -> str:
    if not value:
        raise _Invalid("expected a non-empty string (or leave the key out)")
    return value


def _check_url_value(t: _Table, site: SiteConfig) -> str | None:
    """url, with {local_url} and {public_url} replaced, must be an http(s) URL."""
    raw = t.string("url")
    if raw is None:
        return None
    url = raw
    for key in ("local_url", "public_url"):
        placeholder = "{" + key + "}"
        if placeholder in url:
            base = getattr(site, key)
            if base is None:  # [site] key is bad: reported there already
                return None
            url = url.replace(placeholder, base)
    leftover = re.search(r"\{[^{}]*\}", url)
    if leftover:
        t.bad(
            "url",
            raw,
            f"unknown placeholder {leftover.group()}; use {{local_url}} or {{public_url}}",
        )
        return None
    try:
        return _check_check_url(url)
    except _Invalid as exc:
        t.bad("url", raw, str(exc))
        return None


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
    api_url = t.string("api_url", SlackConfig.api_url, check=_check_url)
    t.unknown()
    has_webhook = webhook_url is not None or t.has("webhook_url") or t.has("webhook_url_file")
    has_token = token is not None or t.has("token") or t.has("token_file")
    if has_webhook and has_token:
        t.problems.add(f"{t.label} token: set either webhook_url or token (with channel), not both")
    elif not has_webhook and not has_token:
        t.problems.add(f"{t.label} webhook_url: missing (set webhook_url, or token and channel)")
    if has_token and not t.has("channel"):
        t.missing("channel", "required when token is set")
    return SlackConfig(webhook_url, token, channel, timeout, api_url.rstrip("/") + "/")


def _trello(t: _Table) -> TrelloConfig:
    key = t.secret("key", "trello-key", check=_check_word, required=True)
    token = t.secret("token", "trello-token", check=_check_word, required=True)
    board = t.string("board", check=_check_word)
    label = t.string("label", None, check=_check_nonempty)
    timeout = t.seconds("timeout_seconds", TrelloConfig.timeout_seconds)
    api_url = t.string("api_url", TrelloConfig.api_url, check=_check_url)
    t.unknown()
    return TrelloConfig(key, token, board, label, timeout, api_url.rstrip("/"))


def _cards(t: _Table) -> CardsConfig:
    pattern = t.string("pattern", CardsConfig.pattern, check=_check_regex)
    board_url = t.string("board_url", None, check=_check_check_url)
    require = t.boolean("require", CardsConfig.require)
    t.unknown()
    return CardsConfig(pattern, board_url, require)
