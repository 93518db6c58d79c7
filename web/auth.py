"""Who gets in: console sessions (cookie + CSRF token), bearer tokens for scripts, roles, and the
failed-login limit per user name and per client address.

Session ids are random 256-bit tokens; the store keeps only their SHA-256, so a copy of the
database opens no session. A session names its user and role; a user removed from `web.users`
(or whose role changed) loses the session at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

from vigil.config.web import WebConfig
from vigil.passwords import ScryptHash, hash_password, parse_hash, verify_password
from web.store import AlertStore, SessionRow

NS = 1_000_000_000
COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
_MAX_TRACKED = 10_000  # failure counters kept at most (oldest forgotten), so floods cost bounded memory


@dataclass(frozen=True)
class Principal:
    """Who a request is: a user with a session, or a script with a token."""

    name: str
    role: Literal["admin", "viewer"]
    auth: Literal["session", "token"]
    csrf: str | None = None
    expires_ns: int | None = None
    session_hash: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class LoginLimiter:
    """Failed logins within `window_s`, per key ('user:ana', 'addr:10.0.0.7'). After `max_failures`
    within the window, further attempts are refused until the oldest failure leaves it."""

    def __init__(self, window_s: float, max_failures: int) -> None:
        self.window_s = window_s
        self.max_failures = max_failures
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until an attempt is allowed for all `keys` (0: allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                if times is None:
                    continue
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures:
                    wait = max(wait, times[len(times) - self.max_failures] + self.window_s - now)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                times = self._failures.pop(key, None) or deque(maxlen=self.max_failures * 2)
                times.append(now)
                self._failures[key] = times
            while len(self._failures) > _MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def hash_session(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Authenticator:
    def __init__(self, config: WebConfig, store: AlertStore) -> None:
        self.config = config
        self.store = store
        self.users: dict[str, tuple[str, ScryptHash]] = {
            u.name: (u.role, parse_hash(u.password_hash.get_secret_value())) for u in config.users
        }
        self.tokens = [(t.token.get_secret_value().encode(), t.name, t.role) for t in config.tokens]
        self.limiter = LoginLimiter(config.login_window_s, config.login_max_failures)
        # Unknown user names cost one hash like known ones, so timing does not tell which exist.
        self._dummy = parse_hash(hash_password(secrets.token_hex(8)))

    def login(self, username: str, password: str) -> tuple[str, Principal] | None:
        """(session id for the cookie, principal) on success; None on a wrong name or password."""
        known = self.users.get(username)
        ok = verify_password(password, known[1] if known else self._dummy)
        if not (ok and known):
            return None
        session_id = secrets.token_urlsafe(32)
        now = time.time_ns()
        row = SessionRow(
            id_hash=hash_session(session_id),
            name=username,
            role=known[0],
            csrf=secrets.token_urlsafe(24),
            created_ns=now,
            expires_ns=now + self.config.session_ttl_s * NS,
        )
        self.store.add_session(row)
        return session_id, self._principal(row)

    def _principal(self, row: SessionRow) -> Principal:
        role: Literal["admin", "viewer"] = "admin" if row.role == "admin" else "viewer"
        return Principal(row.name, role, "session", row.csrf, row.expires_ns, row.id_hash)

    def from_session(self, session_id: str | None) -> Principal | None:
        if not session_id or len(session_id) > 200:
            return None
        row = self.store.session(hash_session(session_id))
        if row is None:
            return None
        if row.expires_ns <= time.time_ns():
            self.store.end_session(row.id_hash)
            return None
        current = self.users.get(row.name)
        if current is None or current[0] != row.role:
            return None  # removed from web.users, or the role changed: log in again
        return self._principal(row)

    def from_token(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        given = presented.strip().encode()
        found = None
        for token, name, role in self.tokens:  # compare with every token: time does not tell which matched
            if hmac.compare_digest(given, token):
                found = Principal(name, role, "token")
        return found

    def logout(self, principal: Principal) -> None:
        if principal.session_hash is not None:
            self.store.end_session(principal.session_hash)

    @staticmethod
    def csrf_ok(principal: Principal, header: str | None) -> bool:
        if principal.auth == "token":
            return True  # no cookie is involved, so no cross-site request can carry it
        return bool(header) and principal.csrf is not None and hmac.compare_digest(header or "", principal.csrf)
