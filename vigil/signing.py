"""Signed media links: HMAC-SHA256 over a path and an expiry, so a webhook receiver (a phone
notification, a chat message) can open an alert's snapshot or clip without a login.

    sig = HMAC-SHA256(web.media_key, "<path>\\n<exp>")    exp: Unix seconds

Used by the alerts stage (links in webhook payloads) and by the review service (`vigil web`), which
verifies them at `/media/alerts/{id}/snapshot.jpg|clip.mp4`. The comparison is constant-time; a
tampered path, expiry or signature, or an expiry in the past, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote

from vigil.config.web import WebConfig

MEDIA_KINDS = ("snapshot.jpg", "clip.mp4")


def media_path(alert_id: str, kind: str) -> str:
    """`/media/alerts/<id>/<kind>`, the id percent-encoded (ids come from a topic, never trusted)."""
    if kind not in MEDIA_KINDS:
        raise ValueError(f"media kind must be one of {MEDIA_KINDS}, got {kind!r}")
    return f"/media/alerts/{quote(alert_id, safe='')}/{kind}"


def signature(key: bytes, path: str, exp: int) -> str:
    return hmac.new(key, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, path: str, exp: int) -> str:
    """`path?exp=…&sig=…`"""
    return f"{path}?exp={exp}&sig={signature(key, path, exp)}"


def verify(key: bytes, path: str, exp: str | None, sig: str | None, now: float | None = None) -> str | None:
    """None when the link is valid, else why it is not (for the 403 body; names no secret)."""
    if not exp or not sig:
        return "link is not signed: exp and sig are required"
    if not exp.isdigit() or len(exp) > 12:
        return "link has an invalid exp"
    if not hmac.compare_digest(signature(key, path, int(exp)), sig.lower()):
        return "link signature does not match (tampered, or signed with another web.media_key)"
    if int(exp) < (time.time() if now is None else now):
        return "link has expired; ask for a fresh one"
    return None


def media_links(web: WebConfig, alert_id: str, started_ns: int) -> dict[str, str]:
    """Absolute signed `snapshot_url` and `clip_url` for an alert, valid `web.link_ttl_s` after its
    start (so every retry of a webhook carries the same links); empty without `web.public_url`."""
    if web.public_url is None or web.media_key is None:
        return {}
    key = web.media_key.get_secret_value().encode()
    exp = int(started_ns // 1_000_000_000 + web.link_ttl_s)
    base = web.public_url.rstrip("/")
    return {
        "snapshot_url": base + sign(key, media_path(alert_id, "snapshot.jpg"), exp),
        "clip_url": base + sign(key, media_path(alert_id, "clip.mp4"), exp),
    }


def with_media_links(body: bytes, web: WebConfig, alert_id: str, started_ns: int) -> bytes:
    """An alert's JSON payload with its signed links added (unchanged without `web.public_url`)."""
    links = media_links(web, alert_id, started_ns)
    if not links:
        return body
    payload: dict[str, Any] = json.loads(body)
    payload.update(links)
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
