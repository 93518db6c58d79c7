"""Secrets written inline in a config file instead of `${ENV}`: found by walking every `SecretStr`
field of the models over the YAML as written (before `${...}` substitution), so a secret field any
section adds is covered without being listed here. Only the key is ever reported, never the value.

A field named `url` (or `*_url`) is a secret only in its credentials: a password in the user info,
a secret query parameter (token=, key=, sig=, ...), or, in an http(s) URL, a token-like path segment
(Slack- and Teams-style webhook URLs: 16+ characters mixing letters and digits, no dot);
`rtsp://viewer:${CAM_PASSWORD}@cam/stream` is fine. Any other secret
field must take its whole value from the environment.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

from vigil.redact import query_secrets, split_credentials

Path_ = tuple[str | int, ...]
_ENV = "${"
# A path segment that looks like a token: 16+ URL-safe characters mixing letters and digits, no dot
# (a file name is not a token).
_TOKEN_SEGMENT = re.compile(r"^(?=.*[A-Za-z])(?=.*[0-9])[A-Za-z0-9_\-~]{16,}$")


def _leaves(annotation: Any) -> set[Any]:
    """The types an annotation may hold: `list[SecretStr] | None` -> {SecretStr, NoneType}."""
    found: set[Any] = set()
    pending = [annotation]
    while pending:
        item = pending.pop()
        if isinstance(item, types.UnionType) or typing.get_origin(item) is not None:
            pending.extend(typing.get_args(item))
        else:
            found.add(item)
    return found


def url_inline_parts(url: str) -> list[str]:
    """Which credentials of a URL as written are not `${...}` references: 'password', 'query token',
    'path token'."""
    _, _, password, rest = split_credentials(url)
    parts = []
    if password and _ENV not in password:
        parts.append("password")
    if any(_ENV not in value for value in query_secrets(url)):
        parts.append("query token")
    path = re.split(r"[?#]", rest, maxsplit=1)[0].split("/")[1:]
    if url.lower().startswith(("http://", "https://")) and any(_TOKEN_SEGMENT.match(s) for s in path):
        parts.append("path token")
    return parts


def _inline(field: str, value: str) -> str | None:
    """What of `value` is a secret written inline (None: nothing)."""
    if not value.strip():
        return None
    if field == "url" or field.endswith("_url"):
        parts = url_inline_parts(value)
        return " and ".join(parts) if parts else None
    return None if _ENV in value else "value"


def inline_secrets(model: type[BaseModel], raw: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """(key path, what is inline) for every `SecretStr` field of `model` whose YAML value in `raw` (the
    document as written) holds a secret instead of a `${VAR}` reference."""
    if not isinstance(raw, dict):
        return
    for name, info in model.model_fields.items():
        if name not in raw:
            continue
        value, where = raw[name], (*path, name)
        kinds = _leaves(info.annotation)
        if SecretStr in kinds:
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, item in items:
                what = _inline(name, item) if isinstance(item, str) else None
                if what is not None:
                    yield (where if index is None else (*where, index)), what
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                if isinstance(value, list):
                    for index, item in enumerate(value):
                        yield from inline_secrets(kind, item, (*where, index))
                else:
                    yield from inline_secrets(kind, value, where)
