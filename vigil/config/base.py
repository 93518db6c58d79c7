"""Shared base for config models: strict (`extra="forbid"`), frozen, documented fields."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, str_strip_whitespace=True)
