"""Logging set-up for vigil processes: one line per event, secrets filtered on every handler."""

from __future__ import annotations

import logging
import sys

from pydantic import BaseModel, SecretStr

from vigil.config import VigilConfig
from vigil.redact import SecretFilter, url_secrets

_FILTER = SecretFilter()


def config_secrets(config: VigilConfig) -> list[str]:
    """Every secret value in a loaded config, so the log filter can mask it wherever it appears.

    A camera URL is a secret as a whole, but its host and path are useful in logs: for it only the
    password is registered (the URL redactor masks it wherever a URL is printed). A webhook URL
    often carries its token in the path, so its path and query are registered too."""
    found: list[str] = []
    webhook_urls = {hook.url.get_secret_value() for hook in config.alerts.webhooks}
    # A recording's path is typed as a camera url but is no secret: masking it would hide which
    # file is missing.
    file_paths = {c.url.get_secret_value() for c in config.cameras if "://" not in c.url.get_secret_value()}

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if "://" in secret:
                found.extend(url_secrets(secret, path_is_secret=secret in webhook_urls))
            elif secret not in file_paths:
                found.append(secret)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))

    walk(config)
    return found


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
