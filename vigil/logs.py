"""Logging set-up for vigil processes: one line per event, secrets filtered on every handler."""

from __future__ import annotations

import logging
import sys

from pydantic import SecretStr

from vigil.config import VigilConfig
from vigil.redact import SecretFilter

_FILTER = SecretFilter()


def config_secrets(config: VigilConfig) -> list[str]:
    """Every secret value in a loaded config, so the log filter can mask it wherever it appears."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif hasattr(value, "model_fields"):
            for name in type(value).model_fields:
                walk(getattr(value, name))

    walk(config)
    # Camera URLs are secrets as a whole, but their host part is harmless and useful in logs;
    # the URL redactor masks the password wherever the URL is printed, so register only passwords.
    return [s for s in found if "://" not in s] + [
        s.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        for s in found
        if "://" in s and "@" in s.split("://", 1)[1] and ":" in s.split("://", 1)[1].split("@", 1)[0]
    ]


def setup_logging(level: str = "INFO", config: VigilConfig | None = None) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_vigil", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handler.addFilter(_FILTER)
        handler._vigil = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every reconnect attempt at INFO/WARNING; keep it to real problems.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    if config is not None:
        _FILTER.add(*config_secrets(config))
