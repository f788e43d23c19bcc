"""A stand-in for Ghost serving a theme, for the demo and the tests (standard library only).

What it mimics (see the measured facts about Ghost 5.130):

- At boot the theme's ``index.html`` is read once (through the live symlink) and ``GET /``
  keeps answering with that copy until the next boot, like Ghost's already-rendered
  templates after a symlink switch without a restart.
- A missing or dangling theme folder answers 500 ``The currently active theme "<name>" is
  missing.``; a theme without ``index.html`` answers 500 ``... has fatal errors``; a boot
  copy with an unclosed ``{{#if`` answers 400 with a parse error.
- Other theme files are read at request time (static assets); ``.git*`` and path traversal
  are refused, and like Ghost, ``.hbs``/``.md``/``.json``/``.lock``/``.log`` files of the theme
  are not served.
- ``/content/files/<name>`` is served from ``<content_dir>/files/`` at request time.
- With a public URL, a request for another Host, or (https) without
  ``X-Forwarded-Proto: https``, gets a 301 to the public URL.
- ``POST /__restart`` boots again (what the fake ``systemctl restart`` calls).
- With ``admin_keys``, the Admin API's ``PUT /ghost/api/admin/themes/<name>/activate/``:
  a JWT checked as Ghost checks it (HS256 with the key's secret, aud ``/admin/``, iat at
  most 5 minutes old) or 401; another theme name or a broken theme answers 422 and the
  copy served stays; else the theme is read again, without a boot. ``POST
  .../settings/routes/yaml/`` (field ``routes``) and ``.../redirects/upload/`` (field
  ``redirects``) take a file from a ``staff_keys`` key only (else 403), refuse another field
  or a file YAML or JSON cannot read (a tab in YAML, bad JSON: 400), another extension than
  Ghost's (415), and keep the last one taken in ``settings_files``.

Run in the foreground with ``python -m agent.demo.sitesim --live PATH``.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
import mimetypes
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.demo.serving import BackgroundServer

# Ghost does not serve these from the theme's folder.
_HIDDEN_THEME_SUFFIXES = (".hbs", ".md", ".json", ".lock", ".log")
_CACHE_FOREVER = "public, max-age=31536000"
_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".ico": "image/x-icon",
}


def content_type_for(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def _safe_parts(rel: str) -> list[str] | None:
    """Split a URL path (already unquoted) into safe components, or None if it is unsafe."""
    if "\x00" in rel or "\\" in rel:
        return None
    parts = [p for p in rel.split("/") if p]
    for p in parts:
        if p in (".", "..") or p.lower().startswith(".git"):
            return None
    return parts


def _read_inside(base: Path, parts: list[str]) -> bytes | None:
    """Read base/parts if it is a regular file that really lies inside base; else None."""
    if not parts:
        return None
    try:
        root = base.resolve(strict=True)
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if target != root and root not in target.parents:
        return None
    if not target.is_file():
        return None
    try:
        return target.read_bytes()
    except OSError:
        return None


def _unclosed_if(text: str) -> bool:
    return text.count("{{#if") > text.count("{{/if}}")


class _Handler(BaseHTTPRequestHandler):
    server_version = "GhostSim/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet: no request log on stderr

    # -- helpers ----------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
        head_only: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _redirect_target(self) -> str | None:
        site = self.server.owner
        if not site.public_url:
            return None
        pub = urlsplit(site.public_url)
        want_host = _normal_host(pub.netloc, pub.scheme)
        got_host = _normal_host(self.headers.get("Host", ""), pub.scheme)
        wrong_host = got_host != want_host
        proto = self.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        insecure = pub.scheme == "https" and proto != "https"
        if wrong_host or insecure:
            return site.public_url.rstrip("/") + self.path
        return None

    # -- verbs ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._get(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(head_only=True)

    def do_POST(self) -> None:  # noqa: N802
        site = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        site.requests.append(f"POST {self.path}")
        path = urlsplit(self.path).path
        if path == "/__restart":
            site.boot()
            self._send(200, b"restarted\n")
            return
        kind = _SETTINGS.get(path)
        if kind is None or not site.admin_keys:
            self._send(404, b"Not found\n")
            return
        kid = site.authorized(self.headers.get("Authorization", ""))
        if kid is None:
            self._json(401, {"errors": [{"message": "Authorization failed"}]})
        elif kid not in site.staff_keys:
            self._json(403, {"errors": [{"type": "NoPermissionError", "message":
                                         "You do not have permission to perform this action"}]})
        else:
            status, message = site.take_settings(kind, self.headers.get("Content-Type", ""),
                                                 body)
            self._json(status, {"errors": [{"message": message}]} if message else {kind: []})

    def do_PUT(self) -> None:  # noqa: N802
        site = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        site.requests.append(f"PUT {self.path}")
        path = urlsplit(self.path).path
        prefix, suffix = "/ghost/api/admin/themes/", "/activate/"
        if not (site.admin_keys and path.startswith(prefix) and path.endswith(suffix)):
            self._send(404, b"Not found\n")
            return
        if site.authorized(self.headers.get("Authorization", "")) is None:
            self._json(401, {"errors": [{"type": "UnauthorizedError",
                                         "message": "Authorization failed"}]})
            return
        name = path[len(prefix):-len(suffix)]
        status, message = site.activate(name)
        if status != 200:
            self._json(status, {"errors": [{"type": "ValidationError", "message": message}]})
            return
        self._json(200, {"themes": [{"name": name, "active": True}]})

    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _get(self, head_only: bool) -> None:
        site = self.server.owner
        site.requests.append(f"{self.command} {self.path}")
        if site.fail_with is not None:
            self._send(site.fail_with, b"Site unavailable\n", head_only=head_only)
            return
        location = self._redirect_target()
        if location is not None:
            self._send(
                301,
                f"Moved Permanently. Redirecting to {location}\n".encode(),
                headers={"Location": location, "Cache-Control": _CACHE_FOREVER},
                head_only=head_only,
            )
            return
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            status, body, ctype = site.home()
            self._send(status, body, ctype, {"Cache-Control": "no-cache"}, head_only)
            return
        if path.startswith("/content/files/"):
            parts = _safe_parts(path[len("/content/files/") :])
            data = None
            if parts is not None and site.content_dir is not None:
                data = _read_inside(Path(site.content_dir) / "files", parts)
            self._file_or_404(data, parts, head_only)
            return
        parts = _safe_parts(path)
        data = None
        if parts and not parts[-1].lower().endswith(_HIDDEN_THEME_SUFFIXES):
            data = _read_inside(site.live_path, parts)
        self._file_or_404(data, parts, head_only)

    def _file_or_404(self, data: bytes | None, parts: list[str] | None, head_only: bool) -> None:
        if data is None or not parts:
            self._send(404, b"Not found\n", head_only=head_only)
            return
        headers = {"Cache-Control": _CACHE_FOREVER}
        self._send(200, data, content_type_for(parts[-1]), headers, head_only)


def _normal_host(netloc: str, scheme: str) -> str:
    host = netloc.strip().lower().rsplit("@", 1)[-1]
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


class SiteServer(BackgroundServer):
    """A Ghost stand-in on 127.0.0.1 serving the theme behind ``live_path``."""

    thread_name = "sitesim"
    handler = _Handler

    def __init__(
        self,
        live_path: Path,
        content_dir: Path | None = None,
        public_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_keys: list[str] | None = None,
        staff_keys: list[str] | None = None,
    ) -> None:
        super().__init__(host, port)
        # Admin API keys ("id:secret") the stand-in accepts; none: no Admin API at all. An
        # integration's key activates themes; a staff token may also upload settings files.
        keys = [*(admin_keys or []), *(staff_keys or [])]
        self.admin_keys = {k.partition(":")[0]: bytes.fromhex(k.partition(":")[2])
                           for k in keys}
        self.staff_keys = {k.partition(":")[0] for k in staff_keys or []}
        self.settings_files: dict[str, bytes] = {}
        self.activations = 0
        self.booted_themes: set[str] = set()  # the theme folders seen at the last boot
        self.live_path = Path(live_path)
        self.content_dir = Path(content_dir) if content_dir is not None else None
        self.public_url = public_url
        self.boots = 0
        # While set to a status code, every GET/HEAD answers it (e.g. 503 while "restarting").
        self.fail_with: int | None = None
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._home: tuple[int, bytes, str] = (503, b"Not booted\n", "text/plain; charset=utf-8")

    def on_start(self) -> None:
        self.boot()  # a start is a boot, like Ghost loading its theme

    # -- Ghost-like behaviour ---------------------------------------------------------------
    @property
    def theme_name(self) -> str:
        return self.live_path.name

    def boot(self) -> None:
        """(Re)load the theme the way Ghost does when it starts."""
        home = self._load_home()
        with self._lock:
            self._home = home
            self.boots += 1
            self.booted_themes = {self.theme_name} if self.live_path.exists() else set()

    def activate(self, name: str) -> tuple[int, str]:
        """The Admin API's theme activation: (200, "") and the theme read again, or (422,
        Ghost's reason) with the copy served left as it was."""
        if name != self.theme_name or name not in self.booted_themes:
            # Ghost lists the theme folders when it boots: a name that came later is unknown
            return 422, f"{name} cannot be activated because it is not currently installed."
        home = self._load_home()
        if home[0] != 200:
            return 422, f"Theme {name} is not valid: {home[1].decode().strip()}"
        with self._lock:
            self._home = home
            self.activations += 1
        return 200, ""

    def take_settings(self, kind: str, content_type: str, body: bytes) -> tuple[int, str]:
        """An upload of routes or redirects: (200, "") and the file kept, or (400, why)."""
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        files = {part.get_param("name", header="content-disposition"): part
                 for part in message.iter_parts()} if message.is_multipart() else {}
        part = files.get(kind)
        if part is None:
            return 400, f"Please select a file to upload as the field {kind!r}."
        data, name = part.get_payload(decode=True) or b"", part.get_filename() or ""
        allowed = (".yaml",) if kind == "routes" else (".yaml", ".json")
        if not name.endswith(allowed):  # Ghost checks the file's extension first
            return 415, f"Please select a valid {'/'.join(allowed)} file to upload."
        try:
            if name.endswith(".json"):
                json.loads(data)
            elif b"\t" in data or not data.strip():
                raise ValueError("YAMLException: tabs are not allowed in YAML")
        except ValueError as exc:
            return 400, f"Could not parse {name}: {exc}"
        with self._lock:
            self.settings_files[kind] = data
        return 200, ""

    def authorized(self, header: str) -> str | None:
        """The key id, when `header` is "Ghost <JWT>" with a token Ghost would take (see the
        module doc); else None."""
        scheme, _, jwt = header.partition(" ")
        try:
            head, body, signature = jwt.split(".")
            meta = json.loads(_unb64(head))
            claims = json.loads(_unb64(body))
            secret = self.admin_keys[meta["kid"]]
            expected = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
            now = time.time()
            good = (scheme == "Ghost" and meta.get("alg") == "HS256"
                    and hmac.compare_digest(expected, _unb64(signature))
                    and claims.get("aud") == "/admin/"
                    and now - 300 <= claims["iat"] <= now + 60
                    and claims["exp"] - claims["iat"] <= 300)
        except (ValueError, KeyError, TypeError):
            return None
        return meta["kid"] if good else None

    def home(self) -> tuple[int, bytes, str]:
        with self._lock:
            return self._home

    def _load_home(self) -> tuple[int, bytes, str]:
        name = self.theme_name
        plain = "text/plain; charset=utf-8"
        if not self.live_path.exists():  # missing, or a dangling symlink
            return 500, f'The currently active theme "{name}" is missing.\n'.encode(), plain
        index = self.live_path / "index.html"
        try:
            data = index.read_bytes()
        except OSError:
            msg = (
                f'The currently active theme "{name}" has fatal errors: '
                "index.html is missing (GS020-INDEX-REQ).\n"
            )
            return 500, msg.encode(), plain
        if _unclosed_if(data.decode("utf-8", errors="replace")):
            msg = (
                "Error: parse error: unclosed {{#if}} block in index.html. "
                f'The currently active theme "{name}" has fatal errors (GS005-TPL-ERR).\n'
            )
            return 400, msg.encode(), plain
        return 200, data, "text/html; charset=utf-8"


_SETTINGS = {"/ghost/api/admin/settings/routes/yaml/": "routes",
             "/ghost/api/admin/redirects/upload/": "redirects"}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo.sitesim", description="A Ghost stand-in serving a theme."
    )
    parser.add_argument("--live", required=True, type=Path, help="live theme path (symlink)")
    parser.add_argument("--content-dir", type=Path, default=None)
    parser.add_argument("--public-url", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, default=None)
    args = parser.parse_args(argv)

    # A plain flag: a handler that took a lock (Event.set) could wait forever for the main
    # thread it interrupted inside Event.wait (see agent/wakeup.py).
    stopping: list[int] = []

    def _on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    site = SiteServer(
        args.live,
        content_dir=args.content_dir,
        public_url=args.public_url,
        host=args.host,
        port=args.port,
    )
    try:
        site.start()
    except OSError as exc:
        print(f"sitesim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        if args.port_file is not None:
            _write_port_file(args.port_file, site.port)
        print(f"sitesim: serving {args.live} on {site.url}", flush=True)
        while not stopping:
            time.sleep(0.2)
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
