"""One webhook POST: what came back (`Attempt`), and the two ways it is sent.

`KeptConnection` (what a deliverer uses) keeps one HTTP/1.1 connection to its endpoint open between posts, so a
burst of alerts pays one TCP (and TLS) handshake instead of one per alert: against a keep-alive receiver on
loopback, 1742 signed posts a second instead of urllib's 539 (`bench/bench_alerts.py`). `post` is urllib's,
used where a proxy is configured (urllib honours `https_proxy` and the like; `http.client` does not).

Neither follows a redirect: urllib would turn a POST answered 301/302/303 into a GET without body and report the
GET's 2xx, so the alert would be acknowledged without ever being received. A 3xx comes back as it is, with its
Location reduced to scheme://host[:port] (endpoint URLs often carry a token in their path).
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from vigil import __version__
from vigil.redact import redact_endpoint

BODY_HEAD = 512
# What is read of a response after its head so the connection can carry the next post; a longer body
# closes the connection instead of being read (a hostile endpoint cannot make a deliverer read megabytes).
DRAIN_BYTES = 64 * 1024
_ERRORS = (http.client.HTTPException, TimeoutError, ConnectionError, OSError)


@dataclass(frozen=True)
class Attempt:
    """Outcome of one HTTP attempt; `status` is None when no response came (refused, timeout)."""

    status: int | None
    body_head: bytes = b""
    error: str = ""
    retry_after: str | None = None
    seconds: float = 0.0
    location: str | None = None  # a 3xx's Location, already reduced to scheme://host[:port]

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def redirected(self) -> bool:
        return self.status is not None and 300 <= self.status < 400

    def describe(self) -> str:
        if self.status is None:
            return self.error
        if self.redirected:
            where = self.location or "a URL it did not name (no Location header)"
            return f"HTTP {self.status}: endpoint redirected to {where}; configure the final URL"
        head = self.body_head.decode("utf-8", "replace")
        return f"HTTP {self.status}: {head}" if head else f"HTTP {self.status}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect, so a 3xx comes back as an `HTTPError` with its status."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fields(headers: dict[str, str]) -> dict[str, str]:
    """The request's header fields: JSON, vigil's user agent, then the signing headers."""
    return {"content-type": "application/json", "user-agent": f"vigil/{__version__}", **headers}


def _answered(url: str, status: int, head: bytes, header: Callable[[str], str | None], started: float) -> Attempt:
    """A response that is not 2xx: its Retry-After, and its Location reduced to scheme://host[:port]."""
    location = header("Location")
    return Attempt(
        status,
        head,
        retry_after=header("Retry-After"),
        seconds=time.monotonic() - started,
        location=redact_endpoint(urljoin(url, location)) if location else None,
    )


def _failed(url: str, exc: BaseException, reason: str, started: float) -> Attempt:
    """No response. The exception text may embed the URL (and the token in its path): only its endpoint stays."""
    reason = reason.replace(url, redact_endpoint(url))
    return Attempt(None, error=f"{type(exc).__name__}: {reason}", seconds=time.monotonic() - started)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
    request = urllib.request.Request(url, data=body, headers=_fields(headers), method="POST")
    start = time.monotonic()
    try:
        # Redirect handling is the only change from urllib's default opener (proxies, HTTPS stay the same). Built
        # per post, so the proxy settings are the environment's now, not at import.
        opener = urllib.request.build_opener(_NoRedirect)
        with opener.open(request, timeout=timeout_s) as response:
            head = response.read(BODY_HEAD)
            return Attempt(response.status, head, seconds=time.monotonic() - start)
    except urllib.error.HTTPError as exc:
        head = exc.read(BODY_HEAD) if exc.fp is not None else b""
        return _answered(url, exc.code, head, exc.headers.get, start)
    except (urllib.error.URLError, *_ERRORS) as exc:
        return _failed(url, exc, str(getattr(exc, "reason", exc)), start)


class KeptConnection:
    """`sender(url, body, headers, timeout_s) -> Attempt` over one kept-alive connection to `url`'s host.

    One per deliverer thread (not thread-safe). A connection the server closed while idle is noticed on the
    next post, which is sent once more on a fresh connection: at worst a receiver that took the request and
    then dropped the connection without answering gets it twice, with the same `webhook-id` (receivers
    de-duplicate by it, as for every retry)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_endpoint(url)}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._proxied: bool | None = None  # decided at the first post (it reads the environment)
        self.connections = 0  # connections opened so far

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
        if url != self.url:
            return post(url, body, headers, timeout_s)
        if self._proxied is None:
            proxies = urllib.request.getproxies()
            self._proxied = ("https" if self._https else "http") in proxies and not urllib.request.proxy_bypass(
                self._host
            )
        if self._proxied:
            return post(url, body, headers, timeout_s)
        start = time.monotonic()
        fields = _fields(headers)
        try:
            reused = self._conn is not None
            try:
                response = self._request(body, fields, timeout_s)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                self.close()  # the server closed the idle connection: once more on a fresh one
                response = self._request(body, fields, timeout_s)
            head = response.read(BODY_HEAD)
            if response.read(DRAIN_BYTES) and not response.isclosed():
                self.close()
            if response.will_close:
                self.close()
        except _ERRORS as exc:
            self.close()
            return _failed(url, exc, str(exc), start)
        if 200 <= response.status < 300:
            return Attempt(response.status, head, seconds=time.monotonic() - start)
        return _answered(url, response.status, head, response.getheader, start)

    def _request(self, body: bytes, fields: dict[str, str], timeout_s: float) -> http.client.HTTPResponse:
        if self._conn is None:
            self._conn = (
                http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s, context=_tls())
                if self._https
                else http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            )
            self.connections += 1
        else:
            self._conn.timeout = timeout_s
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout_s)
        self._conn.request("POST", self._target, body, fields)
        return self._conn.getresponse()


def _tls() -> ssl.SSLContext:
    """What urllib verifies with: the system's CAs (and SSL_CERT_FILE / SSL_CERT_DIR when set)."""
    return ssl.create_default_context()
