"""Load a YAML config into `VigilConfig`, mapping every error to its key path and line.

`parse_config(text, source, env)` validates text (no file I/O); `check_config(path, env)` reads a file,
validates it and checks what needs the file system (the model registry), and returns the config with
its warnings (secrets written inline instead of `${ENV}`); `load_config` does the same and logs the
warnings. Every command that takes `--config` goes through `load_config`, so a config `vigil config
validate` refuses is refused at every stage's start too.
"""

from __future__ import annotations

import difflib
import logging
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vigil.config import VigilConfig, reference_issues
from vigil.config.base import FieldError
from vigil.config.registry import model_issues
from vigil.config.secrets import inline_secrets
from vigil.errors import ConfigError, ConfigIssue

log = logging.getLogger(__name__)
Path_ = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
EMPTY_CONFIG = (
    "the config is empty; a minimal one names the cameras, e.g.\n"
    "      cameras:\n"
    "        - id: front-door\n"
    "          url: rtsp://viewer:${FRONT_DOOR_PASSWORD}@192.0.2.10:554/stream1\n"
    "    (examples/minimal.yaml; examples/full.yaml shows every section)"
)


@dataclass(frozen=True)
class CheckedConfig:
    """A valid config, the warnings about it (each with its key and line), and the line of every key."""

    config: VigilConfig
    warnings: list[ConfigIssue]
    lines: Mapping[Path_, int]


def format_key(path: Path_) -> str:
    """('cameras', 0, 'fps') -> 'cameras[0].fps'"""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _line_map(node: yaml.Node | None, path: Path_ = (), lines: dict[Path_, int] | None = None) -> dict[Path_, int]:
    """Map each key path of a composed YAML document to the 1-based line where it starts."""
    lines = {} if lines is None else lines
    if node is None:
        return lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines)
            # The key's own line wins over the value's (a nested mapping starts on the next line).
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), lines)
    return lines


def _line_of(lines: Mapping[Path_, int], path: Path_) -> int | None:
    # A missing key has no line of its own: report the closest enclosing key that exists.
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _substitute(value: Any, env: Mapping[str, str], path: Path_, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*path, str(k)), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*path, i), issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(
            ConfigIssue(
                format_key(path),
                f"environment variable {name} is not set; export it or write ${{{name}:-default}}",
            )
        )
        return ""

    return _ENV_REF.sub(replace, value)


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The config model class that the mapping at `path` is validated against, if any."""
    model: type[BaseModel] = VigilConfig
    keyed = False  # the previous field was a mapping of sections: this part is its key (a class name)
    for part in path:
        if isinstance(part, int):
            continue
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = [field.annotation]
        found: type[BaseModel] | None = None
        while candidates:
            annotation = candidates.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found = annotation
                break
            if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
                candidates.extend(typing.get_args(annotation))
        if found is None:
            return None
        keyed = typing.get_origin(field.annotation) is dict
        model = found
    return model


def _unknown_key_message(loc: Path_) -> str:
    key = str(loc[-1]) if loc else ""
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key; see docs/configuration.md"
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}allowed here: {', '.join(allowed)}"


def _pydantic_issues(error: ValidationError) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []
    for item in error.errors(include_input=False, include_url=False):
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        message = item["msg"].removeprefix("Value error, ")
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            loc, message = (*loc, *cause.field), str(cause)
        if item["type"] == "extra_forbidden":
            message = _unknown_key_message(loc)
        elif item["type"] == "missing":
            message = "required key is missing"
        found.append((loc, message))
    return found


def parse_config(text: str, source: str, env: Mapping[str, str]) -> VigilConfig:
    """Validate config text (no file I/O). Raises `ConfigError` with every problem found."""
    return check_text(text, source, env).config


def check_text(text: str, source: str, env: Mapping[str, str]) -> CheckedConfig:
    """`parse_config`, keeping the warnings and the key lines."""
    try:
        document = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigIssue("<yaml>", f"not valid YAML: {problem}", line)]) from exc
    if data is None or data == {}:
        # An empty file used to mean "all defaults": a config that watches no camera is a mistake.
        raise ConfigError(source, [ConfigIssue("<root>", EMPTY_CONFIG, 1)])
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("<root>", "the config must be a mapping of sections", 1)])
    lines = _line_map(document)
    issues: list[ConfigIssue] = []
    warnings = [
        ConfigIssue(format_key(path), _inline_message(path, what), _line_of(lines, path))
        for path, what in inline_secrets(VigilConfig, data)
    ]
    data = _substitute(data, env, (), issues)
    try:
        config = VigilConfig.model_validate(data)
    except ValidationError as exc:
        for loc, message in _pydantic_issues(exc):
            issues.append(ConfigIssue(format_key(loc), message, _line_of(lines, loc)))
        raise ConfigError(source, _with_lines(issues, lines)) from None
    issues.extend(reference_issues(config))
    if issues:
        raise ConfigError(source, _with_lines(issues, lines))
    return CheckedConfig(config, warnings, lines)


def _inline_message(path: Path_, what: str) -> str:
    variable = "VIGIL_" + re.sub(r"[^A-Za-z0-9]+", "_", format_key(path)).strip("_").upper()
    if what == "value":
        return f"secret written inline; write ${{{variable}}} and export {variable}, so the file holds no secret"
    return (
        f"{what} written inline in the URL; write that part as ${{{variable}}} and export it, so the file "
        "holds no secret"
    )


def _with_lines(issues: list[ConfigIssue], lines: Mapping[Path_, int]) -> list[ConfigIssue]:
    keyed = {format_key(path): line for path, line in lines.items()}
    result = []
    for issue in issues:
        line = issue.line if issue.line is not None else keyed.get(issue.key)
        if line is None:
            # Walk up 'a.b[0].c' -> 'a.b[0]' -> 'a.b' -> 'a' until a key with a line is found.
            key = issue.key
            while line is None and key:
                key = re.sub(r"(\[\d+\]|\.[^.\[]+|^[^.\[]+)$", "", key)
                line = keyed.get(key)
        result.append(ConfigIssue(issue.key, issue.message, line))
    return result


def check_config(path: str | Path, env: Mapping[str, str]) -> CheckedConfig:
    """Read and validate a config file, including what needs the file system (the model registry).
    Raises `ConfigError`; the warnings come back with the config."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [ConfigIssue("<file>", f"cannot read config: {exc.strerror}")]) from exc
    checked = check_text(text, str(file), env)
    issues = model_issues(checked.config.detect)
    if issues:
        raise ConfigError(str(file), _with_lines(issues, checked.lines))
    return checked


def load_config(path: str | Path, env: Mapping[str, str]) -> VigilConfig:
    """Read and validate a config file (`check_config`), logging its warnings. `env` resolves `${VAR}`
    references (pass `os.environ`)."""
    checked = check_config(path, env)
    for warning in checked.warnings:
        log.warning("%s: %s", path, warning)
    return checked.config
