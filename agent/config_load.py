"""Loading agent.toml against the declarations in agent/config.py, in two phases.

Any file gives a Config or a ConfigError listing every problem at once, one line each naming
the file, the key and the value (shown safely); never another exception. As borgmatic's
config/validate.py does, phase one checks each value on its own (its declared parse
function); phase two, the rules that relate values, runs only on values that passed phase one
(_Table.passed), so a bad value is reported once and can never crash them.

Secrets (keys declared with a credential, and any key named like one) are never echoed; they
and any credentials in a URL are registered with agent.redact, so no later log line leaks them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from agent.config import (DEFAULT_TABLES, REQUIRED_TABLES, TABLES, CheckConfig, Config,
                          declared_keys)
from agent.config_values import (PLACEHOLDERS, REQUIRED, Invalid, Key, abs_path, check_url,
                                 plain)
from agent.errors import ConfigError
from agent.redact import MASK, redact, register_secret
from agent.text import cut

MAX_SECRET_BYTES = 64 * 1024  # a secret file larger than this is not a secret file
_SECRET_FILE = Key(abs_path, "", default=None)  # <key>_file: the path of a file holding it
_MASKED = json.dumps(MASK)
_UNSHOWN = object()
# Keys whose values are, or may well be, secrets: never echoed, even when they are bad (a
# token pasted into token_file, a private key pasted into ssh_key).
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:token|key|password|passwd|secret|credentials?|webhook_url)(?:_file)?$", re.I)


def load(path: Path) -> Config:
    """agent.config.load_config: the Config, or ConfigError with every problem."""
    problems = _Problems()
    data = _read_toml(path, problems)
    if data is None:
        raise problems.error(path)
    _unknown_tables(problems, data)
    found = {name: _table(problems, data, name) for name in TABLES if name != "checks"}
    check_tables = _check_tables(problems, data)

    # Phase one: each value on its own; every problem is collected.
    t = {name: table.read(TABLES[name]) for name, table in found.items() if table}
    for table in check_tables or ():
        table.read(CheckConfig)

    # Phase two: the rules that relate values, each only on values that passed phase one.
    inline = [f"{table.label} {name}" for table in t.values() for name in table.inline_secrets]
    _git_remote(t["git"], inline)
    _site_defaults(t["site"])
    _state_dir_default(t["agent"])
    _deploy_paths(t["deploy"], t["agent"])
    _settings_need_a_key(t["deploy"], t["ghost"])
    if "window" in t:
        _window_spread(t["window"])
    if "slack" in t:
        _slack_needs(t["slack"])
    if "fleet" in t:
        _fleet_needs(t["fleet"], have_slack="slack" in t)
    checks = _relate_checks(check_tables, t["site"])
    if problems:
        raise problems.error(path)
    built = {name: TABLES[name](**t[name].values) if name in t else None for name in found}
    return Config(path=path, checks=checks, warnings=_readable_secret_warnings(path, inline),
                  **built)


def _read_toml(path: Path, problems: _Problems) -> dict | None:
    """The parsed document, or None with the one problem that stops it being read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.add(f"cannot read config: {exc.strerror or exc}")
        return None
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # the BOM Windows editors write
    try:
        return tomllib.loads(raw[start:].decode("utf-8"))
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line, column = raw.count(b"\n", 0, at) + 1, at - raw.rfind(b"\n", 0, at)
        utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff"))
        advice = "it looks like UTF-16: save it as UTF-8" if utf16 else "save the file as UTF-8"
        problems.add(f"invalid TOML: not UTF-8 text at byte {at} (0x{raw[at]:02x}, line {line}, "
                     f"column {column}): {advice}")
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)  # tomllib's messages name a position, never the text there
        where = re.search(r"\(at line (\d+), column \d+\)", message)
        problems.add(f"{f'line {where[1]}: ' if where else ''}invalid TOML: {message}")
    except ValueError:  # int() refuses more than 4300 digits (sys.int_info)
        problems.add("invalid TOML: a number too long to read")
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        problems.add("invalid TOML: arrays or inline tables nested too deeply")
    return None


# --------------------------------------------------------------------------- problem lines


class _Problems(list):
    """The problem lines of one file, each as its parts. A value in one is kept as a _Shown
    until error() writes the lines, once every secret in the file is known: a token read from
    [slack] is masked in a [site] line too, even where a long value is cut."""

    def add(self, *parts: Any) -> None:
        self.append(parts)

    def error(self, path: Path) -> ConfigError:
        return ConfigError([f"{path}: {redact(''.join(map(str, parts)))}" for parts in self])


class _Shown:
    def __init__(self, value: Any):
        self.value = value

    def __str__(self) -> str:
        return _show(self.value)


def _show(value: Any, limit: int = 80) -> str:
    """A value the way it would look in TOML, on one line, secrets masked, long ones cut."""
    return cut(_toml(value, limit + 1), limit)


def _toml(value: Any, room: int) -> str:
    """`value` as TOML. Only about `room` characters are rendered (the rest would be cut), so
    a huge or deeply nested value costs no more than what is shown."""
    if room <= 0:
        return "…"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return repr(value)
        except ValueError:  # more digits than Python will write (sys.int_info): hex it is
            return f"{value:#x}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return _joined("[", value, _toml, "]", room)
    if isinstance(value, dict):
        return _joined("{", value.items(), _toml_item, "}", room)
    text = value if isinstance(value, str) else repr(value)
    return _quote(redact(text)[:room])  # redacted before it is cut: no half secret


def _toml_item(item: tuple[str, Any], room: int) -> str:
    shown = _show_key(item[0])
    value = _MASKED if _SECRET_KEY.search(item[0]) else _toml(item[1], room - len(shown) - 3)
    return f"{shown} = {value}"


def _joined(opening: str, items: Iterable[Any], render: Callable[[Any, int], str],
            closing: str, room: int) -> str:
    """opening + rendered items + closing, rendering no more items than `room` can show."""
    text = opening
    for item in items:
        if len(text) >= room:
            return text + "…"
        text += ("" if text == opening else ", ") + render(item, room - len(text) - 2)
    return text + closing


def _show_key(name: str, limit: int = 60) -> str:
    """A key as TOML writes it: bare when it can be, else quoted; on one line, cut."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name) and len(name) <= limit:
        return name
    text = _quote(name[:limit])
    return text if len(name) <= limit else text[:-1] + '…"'


def _quote(text: str) -> str:
    """A one-line quoted string: control, line-separating and other unprintable characters
    are escaped, so a value can neither forge a second problem line nor hide itself."""
    return plain(json.dumps(text, ensure_ascii=False))


# --------------------------------------------------------------------------- phase one


class _Table:
    """One TOML table read against its declared keys, a problem recorded for each bad value.

    read() sets each field (table[name]) to its key's value, its default when the key is
    absent, or None when it is bad or missing: reading carries on so that every problem is
    found. has(name): the file sets the key; passed(name): phase two may use its value.
    """

    def __init__(self, problems: _Problems, label: str, data: dict, *, quiet: bool = False):
        self.problems = problems
        self.label = label  # "[git]", "[[checks]] #2"
        self.data = data
        self.quiet = quiet  # the whole table is missing or not a table: reported once already
        self.values: dict[str, Any] = {}  # the dataclass's fields, filled in by read()
        self.seen: set[str] = set()
        self.failed: set[str] = set()
        self.inline_secrets: list[str] = []  # secrets written in agent.toml itself

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.values[name] = value

    def fail(self, name: str, message: str, value: Any = _UNSHOWN, *,
             masked: bool = False) -> None:
        """Report a problem with key `name` and its value, when given; mark the key failed."""
        self.failed.add(name)
        if value is _UNSHOWN:
            self.problems.add(f"{self.label} {_show_key(name)}: {message}")
        else:
            shown = _MASKED if masked else _Shown(value)
            self.problems.add(f"{self.label} {_show_key(name)} = ", shown, f": {message}")

    def missing(self, name: str, why: str = "required") -> None:
        self.failed.add(name)
        if not self.quiet:
            self.problems.add(f"{self.label} {name}: missing ({why})")

    def has(self, name: str) -> bool:
        return name in self.data

    def passed(self, *names: str) -> bool:
        """Did each of `names` pass phase one (a valid value, or absent with its default)?"""
        return not self.quiet and self.failed.isdisjoint(names)

    def read(self, cls: type) -> _Table:
        """Reads the fields of the dataclass `cls`; reports the keys it does not declare."""
        for name, declared in declared_keys(cls):
            value = (self._secret if declared.credential else self._value)(name, declared)
            if declared.into:  # one value, several fields (listen: host and port)
                self.values.update(zip(declared.into, value or [None] * len(declared.into),
                                       strict=True))
            else:
                self[name] = value
        for name in [name for name in self.data if name not in self.seen]:
            hint = difflib.get_close_matches(name[:100], sorted(self.seen), n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            self.problems.add(f"{self.label} {_show_key(name)}: unknown key{extra}")
        return self

    def _value(self, name: str, declared: Key) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if declared.default is REQUIRED:
                self.missing(name)
            return None if declared.default in (REQUIRED, None) else declared.parse(
                declared.default)
        value = self.data[name]
        if declared.credential and isinstance(value, str):
            register_secret(value)  # before it is checked: a bad secret is a secret too
        try:
            return declared.parse(value)
        except Invalid as exc:
            part = value if exc.part is None else exc.part
            masked = bool(declared.credential or _SECRET_KEY.search(name))
            self.fail(name, str(exc), part, masked=masked)
            return None

    def _secret(self, name: str, declared: Key) -> Any:
        """A secret from `name`, from the file `name_file` names, or from its systemd
        credential ($CREDENTIALS_DIRECTORY, LoadCredential=)."""
        file_key = f"{name}_file"
        inline = self._value(name, dataclasses.replace(declared, default=None))
        path = self._value(file_key, _SECRET_FILE)
        if self.has(name) and self.has(file_key):
            self.fail(file_key, f"set either {name} or {file_key}, not both")
            return None
        if self.has(name):
            if inline is not None:
                self.inline_secrets.append(name)
            return inline
        source = path if self.has(file_key) else self._credential(name, declared.credential)
        if source is None:
            if declared.default is REQUIRED and not self.has(file_key) \
                    and name not in self.failed:
                self.missing(name, f"set {name}, {file_key}, or the systemd credential "
                                   f"{declared.credential}")
            return None
        try:
            value = _read_secret(source)
        except Invalid as exc:
            self.fail(file_key, str(exc), str(source))  # the path, not the secret
            return None
        register_secret(value)
        try:
            return declared.parse(value)
        except Invalid as exc:
            self.failed.add(name)
            self.problems.add(f"{self.label} {name} = {_MASKED} (from ", _Shown(str(source)),
                              f"): {exc}")
            return None

    def _credential(self, name: str, credential: str) -> Path | None:
        """The systemd credential's file, when $CREDENTIALS_DIRECTORY holds it."""
        if not (creds := os.environ.get("CREDENTIALS_DIRECTORY")):
            return None
        candidate = Path(creds) / credential
        try:
            return candidate if candidate.exists() else None
        except OSError as exc:  # e.g. $CREDENTIALS_DIRECTORY not readable by this user
            self.fail(name, f"cannot read the systemd credential {_show(str(candidate))}: "
                            f"{exc.strerror}")
            return None


def _read_secret(path: Path) -> str:
    """The stripped text of a secret file; raises Invalid saying why it cannot be had."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or flood
            raise Invalid("cannot read the secret: not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise Invalid(f"cannot read the secret: {exc.strerror or 'cannot open it'}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise Invalid(f"cannot read the secret: larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Invalid("cannot read the secret: not UTF-8 text") from None
    if not value:
        raise Invalid("the file is empty")
    return value


def _table(problems: _Problems, data: dict, name: str) -> _Table | None:
    """The reader for [name]; None for an optional table that is absent."""
    value = data.get(name)
    if isinstance(value, dict):
        return _Table(problems, f"[{name}]", value)
    if _is_array_of_tables(value):
        problems.add(f"[[{name}]]: expected a single [{name}] table, not an array of tables")
    elif name in data:  # text where a table of secrets belongs may well be one of them
        secrets = any(key.credential for _, key in declared_keys(TABLES[name]))
        shown = _MASKED if secrets and _holds_text(value) else _Shown(value)
        problems.add(f"{name} = ", shown, f": expected a [{name}] table")
    elif name in REQUIRED_TABLES:
        problems.add(f"[{name}]: missing (required table)")
    elif name in DEFAULT_TABLES:
        return _Table(problems, f"[{name}]", {})
    else:
        return None
    return _Table(problems, f"[{name}]", {}, quiet=True)


def _holds_text(value: Any) -> bool:
    if isinstance(value, (list, dict)):
        return any(map(_holds_text, value.values() if isinstance(value, dict) else value))
    return isinstance(value, str)


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _unknown_tables(problems: _Problems, data: dict) -> None:
    for name, value in data.items():
        if name in TABLES:
            continue
        shown = _show_key(name)
        hint = difflib.get_close_matches(name[:100], list(TABLES), n=1)
        extra = f" (did you mean [{hint[0]}]?)" if hint else ""
        if isinstance(value, dict):
            problems.add(f"[{shown}]: unknown table{extra}")
        elif _is_array_of_tables(value):
            problems.add(f"[[{shown}]]: unknown array of tables{extra}")
        else:  # its value is not shown: a misplaced key may well hold a secret
            problems.add(f"{shown}: unknown key outside any table (keys belong in a table)")


def _check_tables(problems: _Problems, data: dict) -> list[_Table] | None:
    """A reader for each [[checks]]; None when there are none (the defaults apply)."""
    if "checks" not in data:
        return None
    value = data["checks"]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.add("checks = ", _Shown(value),
                     ": expected [[checks]] tables (an array of tables)")
        return []
    if not value:
        problems.add("checks = []: expected at least one [[checks]]; remove it for the defaults")
    return [_Table(problems, f"[[checks]] #{n}", item) for n, item in enumerate(value, 1)]


# --------------------------------------------------------------------------- phase two
# Each rule reads only keys that passed phase one (_Table.passed), so their values have the
# types and ranges phase one promised; a key that failed was reported already.


def _site_defaults(site: _Table) -> None:
    if not site.has("ci_cd_dir") and site.passed("content_dir"):
        site["ci_cd_dir"] = site["content_dir"] / "files"
    # Ghost serves content/files/ at /content/files/; nginx may serve them at the root.
    if not site.has("ci_cd_url") and site.passed("public_url"):
        site["ci_cd_url"] = f"{site['public_url']}/content/files"


def _git_remote(git: _Table, inline: list[str]) -> None:
    """An http(s) remote with credentials in its URL holds a secret; one without takes [git]
    credentials: "user:token" (or a bare token)."""
    if not git.passed("remote"):
        return
    parts = urlsplit(git["remote"])
    http = parts.scheme in ("http", "https")
    if http and "@" in parts.netloc:
        inline.append("[git] remote")
    if git["credentials"] is None:
        return
    if not http or "@" in parts.netloc:
        git.fail("credentials", "only for an http(s) remote without credentials of its own")
        return
    user, _, password = git["credentials"].partition(":")
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    register_secret(quote(password or user, safe=""))
    git["remote"] = parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def _state_dir_default(agent: _Table) -> None:
    """Without [agent] state_dir, the service's own directory when systemd names one
    ($STATE_DIRECTORY, from StateDirectory=; the first of several): an instance
    ghost-agent@<site> keeps its lock and history in /var/lib/ghost-agent/<site>. Only a
    directory of ghost-agent's: a command started by some other unit keeps the default (and
    so the service's lock)."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    ours = Path("/var/lib/ghost-agent")  # [agent] state_dir's default (agent/config.py)
    if not agent.has("state_dir") and given and Path(given).is_absolute():
        path = Path(os.path.normpath(given))
        if path == ours or ours in path.parents:
            agent["state_dir"] = path


def _deploy_paths(deploy: _Table, agent: _Table) -> None:
    """releases_dir defaults to <state_dir>/releases; it and the live path must not nest (the
    live symlink is replaced and old releases are deleted: neither may hold the other)."""
    if not deploy.has("releases_dir") and agent.passed("state_dir"):
        deploy["releases_dir"] = agent["state_dir"] / "releases"
    live, releases = deploy["path"], deploy["releases_dir"]
    if not deploy.passed("path", "releases_dir") or releases is None:
        return
    if live == Path("/"):
        deploy.fail("path", "expected the path of the live symlink, not /", str(live))
    elif live.is_relative_to(releases):  # or the same path
        deploy.fail("path", f"must not be inside releases_dir ({_show(str(releases))})", str(live))
    elif releases.is_relative_to(live):
        deploy.fail("releases_dir", f"must not be inside path ({_show(str(live))})", str(releases))


def _settings_need_a_key(deploy: _Table, ghost: _Table) -> None:
    """routes and redirects go to Ghost through its Admin API: they need a key."""
    for name in ("routes", "redirects"):
        if deploy.passed(name) and deploy[name] is not None \
                and ghost.passed("admin_api_key") and ghost["admin_api_key"] is None:
            deploy.fail(name, "needs [ghost] admin_api_key (an Administrator's staff access "
                        "token): Ghost takes it only through its Admin API", deploy[name])


def _window_spread(window: _Table) -> None:
    spread, minutes = window["spread_minutes"], window["minutes"]
    if window.passed("minutes", "spread_minutes") and spread and spread >= minutes:
        window.fail("spread_minutes", f"must be shorter than the window (minutes = {minutes}), "
                    "or some hosts would start after it closed", spread)


def _slack_needs(slack: _Table) -> None:
    """Which keys are there (not their values) says how Slack is reached."""
    webhook = slack["webhook_url"] is not None or any(map(slack.has, ("webhook_url",
                                                                     "webhook_url_file")))
    token = slack["token"] is not None or any(map(slack.has, ("token", "token_file")))
    if webhook and token:
        slack.fail("token", "set either webhook_url or token (with channel), not both")
    elif not webhook and not token:
        slack.missing("webhook_url", "set webhook_url, or token and channel")
    if token and not slack.has("channel"):
        slack.missing("channel", "required when token is set")


def _fleet_needs(fleet: _Table, *, have_slack: bool) -> None:
    if fleet.passed("at", "out_dir", "slack") and fleet["at"] is not None \
            and fleet["out_dir"] is None and not fleet["slack"]:
        fleet.fail("at", "a daily report needs out_dir or slack = true")
    if fleet.passed("slack") and fleet["slack"] and not have_slack:
        fleet.fail("slack", "needs a [slack] table", True)


def _relate_checks(checks: list[_Table] | None, site: _Table) -> tuple[CheckConfig, ...]:
    """The checks with their URLs filled in, each name used once; without [[checks]],
    GET {local_url}/ and GET {public_url}/."""
    if checks is None:
        if not site.passed("local_url", "public_url"):
            return ()
        return (CheckConfig("local", f"{site['local_url']}/"),
                CheckConfig("public", f"{site['public_url']}/"))
    names: set[str] = set()
    for check in checks:
        if check.passed("name") and check["name"] in names:
            check.fail("name", "duplicate check name", check["name"])
        names.add(check["name"])
        if check.passed("url"):
            check["url"] = _check_url(check, site)
    return tuple(CheckConfig(**check.values) for check in checks)


def _check_url(check: _Table, site: _Table) -> str | None:
    """The URL, {local_url} and {public_url} replaced, must be an http(s) URL."""
    url = check["url"]
    for placeholder in PLACEHOLDERS:
        if placeholder in url:
            if not site.passed(placeholder[1:-1]):  # reported under [site] already
                return None
            url = url.replace(placeholder, site[placeholder[1:-1]])
    try:
        return check_url(url, allow_query=True)
    except Invalid as exc:
        check.fail("url", str(exc), check["url"])
        return None


def _readable_secret_warnings(path: Path, inline: list[str]) -> tuple[str, ...]:
    """A file that holds a secret must not be readable by every user on the host."""
    if inline:
        with contextlib.suppress(OSError):
            if (mode := path.stat().st_mode) & 0o004:
                return (f"{path}: warning: {', '.join(inline)} holds a secret and the file is "
                        f"readable by everyone (mode {mode & 0o777:o}); chmod 640 it, or use "
                        "the *_file keys or systemd credentials",)
    return ()
