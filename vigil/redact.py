"""Keep secrets out of logs: URL credential redaction and a logging filter for known secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::[^@/\s]*)?@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|key|secret|password|passwd|pwd|auth|signature)=)[^&\s]+")


def redact_url(url: str) -> str:
    """rtsp://admin:hunter2@cam/stream -> rtsp://admin:***@cam/stream; secret query values too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(r"\g<scheme>***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    redacted = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)) if parts.scheme else url
    return _QUERY_SECRET.sub(r"\1***", redacted)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact URL credentials in free text, and every occurrence of the given secret values."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    text = _QUERY_SECRET.sub(r"\1***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


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
