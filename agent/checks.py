"""HTTP checks after a restart: every check must pass within a budget while Ghost boots."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.models import CheckResult
from agent.redact import redact

if TYPE_CHECKING:  # requests is imported when checks run: a no-op poll does not pay for it
    import requests

RETRY_PAUSE = 0.5
SETTLED_ROUNDS = 4  # rounds of the same wrong answers from a site that is up (about 2 s)
MAX_BODY = 2_000_000  # bytes read for `contains`; a theme page is far smaller


def site_headers(url: str, local_url: str, public_url: str) -> dict[str, str]:
    """A request to Ghost's own listener must look like one for the public site:
    Ghost answers any other Host or scheme with a 301 to its configured url."""
    headers = {"User-Agent": "ghost-deploy-agent", "Cache-Control": "no-cache"}
    if url == local_url or url.startswith(local_url.rstrip("/") + "/"):
        public = urlsplit(public_url)
        headers["Host"] = public.netloc
        headers["X-Forwarded-Proto"] = public.scheme
        headers["X-Forwarded-Host"] = public.netloc
    return headers


def check_once(check, local_url: str, public_url: str, session: requests.Session) -> CheckResult:
    """One request, no redirects followed (a redirect is a failure worth seeing)."""
    started = time.monotonic()
    status = None
    error = None
    try:
        with session.get(
            check.url,
            headers=site_headers(check.url, local_url, public_url),
            timeout=check.timeout_seconds,
            allow_redirects=False,
            stream=True,
        ) as response:
            status = response.status_code
            body = _read_body(response) if check.contains else b""
        if status != check.status:
            error = f"answered {status}, expected {check.status}"
            if 300 <= status < 400:
                error += f" (redirect to {response.headers.get('Location', '?')})"
        elif check.contains and check.contains.encode() not in body:
            error = f"answered {status} but does not contain {check.contains!r}"
    except _requests().RequestException as exc:
        error = _short_error(exc)
    ms = int((time.monotonic() - started) * 1000)
    return CheckResult(check.name, redact(check.url), error is None, status, ms,
                       redact(error) if error else None)


def run_checks(
    checks: Sequence,
    local_url: str,
    public_url: str,
    budget: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """Retry the checks until all pass or the budget runs out; the last results are returned.

    Checks that passed are not asked again, so a slow public URL does not hold back the rest.
    """
    deadline = time.monotonic() + budget
    results: list[CheckResult | None] = [None] * len(checks)
    settled_rounds = 0
    with _requests().Session() as session:
        session.trust_env = False  # no proxy from the environment between us and the site
        while True:
            for i, check in enumerate(checks):
                if results[i] is None or not results[i].ok:
                    results[i] = check_once(check, local_url, public_url, session)
            if all(r.ok for r in results) or time.monotonic() >= deadline:
                return list(results)
            # A site that is up and keeps giving the same wrong answer (a 400 from a broken
            # template, a 500 for a missing index) will not heal by waiting: roll back sooner.
            booting = any(not r.ok and still_booting(r) for r in results)
            settled_rounds = 0 if booting else settled_rounds + 1
            if settled_rounds >= SETTLED_ROUNDS:
                return list(results)
            sleep(RETRY_PAUSE)


def still_booting(result: CheckResult) -> bool:
    """Connection refused, a timeout, or Ghost's 503 maintenance page: it may yet answer."""
    return result.status is None or result.status in (502, 503, 504)


def _read_body(response: requests.Response) -> bytes:
    """At most MAX_BODY bytes; iter_content turns a stalled or cut body into a requests error."""
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY:
            break
    return b"".join(chunks)


def _short_error(exc: requests.RequestException) -> str:
    # iter_content reports a body that stalls as a ConnectionError wrapping a read timeout
    requests = _requests()
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or reset"
    return type(exc).__name__


def _requests():
    import requests

    return requests
