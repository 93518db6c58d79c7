"""Render the configuration reference (docs/configuration.md) from the models themselves, so the
documentation can never drift from what the validator accepts."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vigil.config import VigilConfig

HEADER = """# Configuration reference

Generated from the config models by `vigil config docs > docs/configuration.md`; a test fails when
this file is stale. A config is one YAML file; unknown keys are errors, every value is bounded, and
`vigil config validate FILE` reports every problem with its key path and line. Any string may use
`${NAME}` or `${NAME:-default}` to take its value from the environment at start, which is how
secrets (camera passwords, SASL passwords, webhook secrets) stay out of the file.
Fields typed *secret* are never printed, logged, or echoed in errors.
"""


def _submodel(annotation: Any) -> type[BaseModel] | None:
    pending = [annotation]
    while pending:
        candidate = pending.pop()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        if isinstance(candidate, types.UnionType) or typing.get_origin(candidate) is not None:
            pending.extend(typing.get_args(candidate))
    return None


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if (isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union) and args:
        return " or ".join(_type_name(a) for a in args)
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = text.replace("typing.", "").replace("pydantic.types.", "").replace("vigil.config.", "")
    for module in ("alerts.", "areas.", "cameras.", "detect.", "kafka.", "base.", "objects.", "web."):
        text = text.replace(module, "")
    return text.replace("SecretStr", "secret").replace("NoneType", "None").replace("|", "or")


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    return f"`{value!r}`" if value not in (None, [], "") else f"`{value!r}`".replace("''", '""')


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
        for name in ("min_length", "max_length", "pattern"):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def _section(model: type[BaseModel], path: str, out: list[str], seen: set[str]) -> None:
    out.append(f"\n## `{path}`\n" if path else "\n## top level\n")
    doc = (model.__doc__ or "").strip().splitlines()
    if doc and not doc[0].startswith("Base of"):
        out.append(doc[0] + "\n")
    out.append("| key | type | default | bounds | meaning |\n|---|---|---|---|---|")
    children: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        child = _submodel(field.annotation)
        out.append(
            f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {_bounds(field)} | {field.title or ''} |"
        )
        if child is not None:
            origin = typing.get_origin(field.annotation)
            suffix = "[]" if origin is list else ".<class>" if origin is dict else ""
            children.append(((f"{path}.{name}" if path else name) + suffix, child))
    for child_path, child in children:
        if child_path not in seen:
            seen.add(child_path)
            _section(child, child_path, out, seen)


def render_markdown() -> str:
    out = [HEADER]
    _section(VigilConfig, "", out, set())
    return "\n".join(out) + "\n"
