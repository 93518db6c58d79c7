"""Load a YAML config into `VigilConfig`, mapping every error to its key path and line."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vigil.config import VigilConfig, reference_issues
from vigil.errors import ConfigError, ConfigIssue

Path_ = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    for part in path:
        if isinstance(part, int):
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
        if item["type"] == "extra_forbidden":
            message = _unknown_key_message(loc)
        elif item["type"] == "missing":
            message = "required key is missing"
        found.append((loc, message))
    return found


def parse_config(text: str, source: str, env: Mapping[str, str]) -> VigilConfig:
    """Validate config text. Raises `ConfigError` with every problem found."""
    try:
        document = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [ConfigIssue("<yaml>", f"not valid YAML: {problem}", line)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("<root>", "the config must be a mapping of sections", 1)])
    lines = _line_map(document)
    issues: list[ConfigIssue] = []
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
    return config


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


def load_config(path: str | Path, env: Mapping[str, str]) -> VigilConfig:
    """Read and validate a config file. `env` resolves `${VAR}` references (pass `os.environ`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [ConfigIssue("<file>", f"cannot read config: {exc.strerror}")]) from exc
    return parse_config(text, str(file), env)
