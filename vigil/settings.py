"""How a subcommand gets its config: the file given, else built-in defaults (embedded broker)."""

from __future__ import annotations

import logging
import os

from vigil.config import VigilConfig
from vigil.config.loader import check_config
from vigil.logs import setup_logging

log = logging.getLogger(__name__)


def resolve_config(path: str | None, log_level: str | None = None) -> VigilConfig:
    """Load `path` (with ${ENV} from the process environment) or return the defaults, and set up
    logging with the config's secrets masked; then log the config's warnings (inline secrets)."""
    checked = check_config(path, os.environ) if path else None
    config = checked.config if checked is not None else VigilConfig()
    setup_logging(log_level or config.log_level, config)
    for warning in checked.warnings if checked is not None else ():
        log.warning("%s: %s", path, warning)
    return config
