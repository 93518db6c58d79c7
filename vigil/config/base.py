"""Shared base for config models: strict (`extra="forbid"`), frozen, documented fields."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, str_strip_whitespace=True)


class FieldError(ValueError):
    """What a section's `model_validator` raises: a problem of one of its fields, named by `field` (a
    name, or a path such as `("zones", 2, "name")`, relative to the section). Pydantic reports a model
    validator's error at the section's key; the loader moves it to this field's key and line, so a bad
    camera password is reported at `cameras[0].url`, not `cameras[0]`.

        raise FieldError("max_backoff_s", "max_backoff_s must be at least initial_backoff_s")
    """

    def __init__(self, field: str | tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.field: tuple[str | int, ...] = (field,) if isinstance(field, str) else tuple(field)
