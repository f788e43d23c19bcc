"""Ghost's Admin API, for releases without a restart (#12): activate a theme, upload
routes.yaml and redirects.

The key is Ghost's "id:secret" (an integration's Admin API key, or an Administrator's staff
access token). Each request carries a fresh HS256 JWT (header kid=<id>; payload iat, exp,
aud "/admin/"), signed with the secret's bytes: the standard library's hmac is all it takes
(https://ghost.org/docs/admin-api/#token-authentication). Ghost refuses an iat more than
5 minutes old, so a token is never reused.

What a key may do (measured on Ghost 6.65): an integration's key may activate themes and
gets 403 for routes and redirects; a staff token may do all three.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.errors import AgentError, DeployError
from agent.redact import redact, register_secret
from agent.text import cut

if TYPE_CHECKING:  # requests is imported on first use: a no-op poll does not pay for it
    import requests

# Ghost's words for a theme folder it did not see at boot (5.x and 6.x)
_UNKNOWN_THEME = ("not currently installed", "not found in the theme directory")
TOKEN_SECONDS = 300  # Ghost's own limit for exp - iat
ACCEPT_VERSION = "v5.0"  # the Admin API version this client speaks (Ghost 5 and 6)


class AdminError(AgentError):
    """The Admin API could not do what was asked: unreachable, the key refused (401/403), or
    an unexpected answer. Not the release's fault: the agent restarts Ghost instead."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Rejected(DeployError):
    """Ghost checked what was sent and refused it (422 for a theme with fatal errors; 400 or
    422 for routes or redirects it cannot read): the release's fault."""


def parse_key(key: str) -> tuple[str, bytes]:
    """"<24 hex id>:<64 hex secret>" -> (id, secret bytes). Raises ValueError."""
    kid, sep, secret = key.strip().partition(":")
    if not (sep and kid and secret):
        raise ValueError('expected "id:secret"')
    try:
        return kid, bytes.fromhex(secret)
    except ValueError:
        raise ValueError("the part after ':' is not hexadecimal") from None


def token(key: str, now: float) -> str:
    """An Admin API JWT for `key`, issued at `now` (seconds since the epoch)."""
    kid, secret = parse_key(key)
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    payload = {"iat": int(now), "exp": int(now) + TOKEN_SECONDS, "aud": "/admin/"}
    signing = f"{_b64(header)}.{_b64(payload)}"
    signature = hmac.new(secret, signing.encode("ascii"), hashlib.sha256).digest()
    return f"{signing}.{_b64url(signature)}"


def _b64(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class GhostAdmin:
    """The Admin API of the Ghost at `local_url` (its own listener), asked as `public_url`:
    Ghost redirects a request for another host or scheme to its configured url."""

    def __init__(self, local_url: str, public_url: str, key: str, timeout: float,
                 clock: Callable[[], float] = time.time):
        parse_key(key)  # a bad key fails here, not on the first deploy
        register_secret(key)
        register_secret(key.partition(":")[2])
        self.base = local_url.rstrip("/") + "/ghost/api/admin/"
        public = urlsplit(public_url)
        self.headers = {"Accept-Version": ACCEPT_VERSION, "User-Agent": "ghost-deploy-agent",
                        "Host": public.netloc, "X-Forwarded-Proto": public.scheme,
                        "X-Forwarded-Host": public.netloc}
        self._key = key
        self.timeout = timeout
        self.clock = clock

    def activate_theme(self, name: str) -> None:
        """PUT themes/<name>/activate/: Ghost reads the theme folder again and serves it.
        Raises Rejected (422: Ghost's validation refused it) or AdminError (also for a name
        Ghost does not know: it lists the theme folders only when it boots, so a restart is
        what brings that theme in, not the release's fault)."""
        try:
            self._call("PUT", f"themes/{name}/activate/", f"activate theme {name}")
        except Rejected as exc:
            if any(words in exc.message for words in _UNKNOWN_THEME):
                raise AdminError(exc.message, 422) from None
            raise

    def upload_routes(self, name: str, data: bytes) -> None:
        """POST settings/routes/yaml/ with `data` as the field `routes` (a staff token).
        `name`: the file name Ghost is told (it takes .yaml only)."""
        self._upload("settings/routes/yaml/", "routes", name, data)

    def upload_redirects(self, name: str, data: bytes) -> None:
        """POST redirects/upload/ with `data` as the field `redirects` (.yaml or .json)."""
        self._upload("redirects/upload/", "redirects", name, data)

    def _upload(self, endpoint: str, field: str, name: str, data: bytes) -> None:
        files = {field: (name, data, "application/octet-stream")}
        self._call("POST", endpoint, f"upload {name}", files=files)

    def _call(self, method: str, endpoint: str, what: str, **more: Any) -> None:
        import requests

        headers = {**self.headers,
                   "Authorization": f"Ghost {token(self._key, self.clock())}"}
        try:
            with requests.Session() as session:
                session.trust_env = False  # no proxy between the agent and its own Ghost
                response = session.request(method, self.base + endpoint, headers=headers,
                                            timeout=self.timeout, allow_redirects=False,
                                            **more)
        except requests.RequestException as exc:
            raise AdminError(f"{what}: Ghost's Admin API did not answer "
                             f"({type(exc).__name__})") from None
        if 200 <= response.status_code < 300:
            return
        message = f"{what}: Ghost answered {response.status_code}{_reason(response)}"
        if response.status_code in (400, 415, 422):
            raise Rejected(message)
        raise AdminError(message, response.status_code)


def _reason(response: requests.Response) -> str:
    """Ghost's own words from an error answer ({"errors": [{"message", "context"}]})."""
    try:
        errors = response.json().get("errors") or []
        first = errors[0] if isinstance(errors, list) and errors else {}
        words = " ".join(str(first.get(k) or "") for k in ("message", "context")).split()
    except (ValueError, AttributeError):
        return ""
    return f": {cut(redact(' '.join(words)), 300)}" if words else ""
