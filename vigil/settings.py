"""How a subcommand gets its config: the file given, else built-in defaults (embedded broker)."""

from __future__ import annotations

import os

from vigil.config import VigilConfig
from vigil.config.loader import load_config
from vigil.logs import setup_logging


def resolve_config(path: str | None, log_level: str | None = None) -> VigilConfig:
    """Load `path` (with ${ENV} from the process environment) or return the defaults, and set up
    logging with the config's secrets masked."""
    config = load_config(path, os.environ) if path else VigilConfig()
    setup_logging(log_level or config.log_level, config)
    return config
