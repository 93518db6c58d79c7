"""Keep secrets out of logs: URL credential redaction and a logging filter for known secrets.

Camera passwords are often typed as they are, so a URL's user info is found without trusting
`urllib` (which cuts the authority at the first '/', '?' or '#', leaving a password such as
`pa#ss` or `pa/ss` in clear): it runs from `://` to the last '@' that a plausible host follows.
When in doubt more is masked, never less.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)(:\d{1,5})?$")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|key|secret|password|passwd|pwd|auth|signature|sig)=)[^&\s]+")


def _userinfo_end(url: str, start: int) -> int | None:
    """Index of the '@' that ends the user info of `url` (authority starting at `start`), if any."""
    end = None
    for index in (i for i, c in enumerate(url) if c == "@" and i >= start):
        host = re.split(r"[/?#]", url[index + 1 :], maxsplit=1)[0]
        if _HOST.match(host):
            end = index
    return end


def split_credentials(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password, rest from the host on); user and password are None when absent."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return "", None, None, url
    start = scheme_end + 3
    at = _userinfo_end(url, start)
    if at is None:
        return url[:start], None, None, url[start:]
    userinfo = url[start:at]
    user, sep, password = userinfo.partition(":")
    return url[:start], user, (password if sep else None), url[at + 1 :]


def redact_url(url: str) -> str:
    """rtsp://admin:hunter2@cam/stream -> rtsp://admin:***@cam/stream; secret query values too."""
    prefix, user, password, rest = split_credentials(url)
    if user is not None:
        url = f"{prefix}{user}:***@{rest}" if password is not None else f"{prefix}***@{rest}"
    return _QUERY_SECRET.sub(r"\1***", url)


def query_secrets(url: str) -> list[str]:
    """The values of a URL's secret query parameters (token=, key=, secret=, sig=, ...)."""
    return [m.group(0)[len(m.group(1)) :] for m in _QUERY_SECRET.finditer(url)]


def redact_endpoint(url: str) -> str:
    """Only scheme://host[:port]: webhook URLs often carry their token in the path (Slack, Teams)."""
    prefix, _, _, rest = split_credentials(url)
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    return f"{prefix}{host}" if prefix else "<url>"


def url_secrets(url: str, path_is_secret: bool = False) -> list[str]:
    """The secret parts of a URL as they may appear in text: the password (raw and decoded), and,
    for endpoints whose path carries a token, the path and query."""
    _, _, password, rest = split_credentials(url)
    found = [password, unquote(password)] if password else []
    if path_is_secret:
        parts = urlsplit(f"x://{rest}")
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(tail) > 1:
            found.append(tail)
    return list(dict.fromkeys(s for s in found if s))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact URL credentials in free text, and every occurrence of the given secret values."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


class SecretFilter(logging.Filter):
    """Rewrites each log record so no registered secret and no URL password is ever emitted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = {s for s in secrets if s}

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message, self._secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Exception text is formatted later by the handler; pre-render it redacted.
            formatter = logging.Formatter()
            record.exc_text = redact_text(formatter.formatException(record.exc_info), self._secrets)
            record.exc_info = None
        return True
