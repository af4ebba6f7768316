"""Loading a YAML file into a pydantic model, with `a.b=value` overrides and clear errors.

Deployment configs (`serve.config.deployment`) and benchmark scenarios
(`benchmarks.runner.scenario`) load the same way: `load_model` reads the file (a mapping
of fields), applies the command line's overrides, validates once with `model_validate`,
and raises the kind's error (a `ConfigError`) with one line per problem, each naming the
file and the field. `describe_fields` lists a model's fields for `--help-config` and
`python -m benchmarks fields`.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A YAML file or override that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class FileKind:
    """What a kind of YAML file is called in its error messages."""

    noun: str  # in "<file>: config file not found"
    title: str  # in "<file>: invalid deployment config"
    fields_hint: str  # the command that lists the fields
    error: type[ConfigError] = ConfigError
    input_chars: int | None = None  # longest bad value quoted (None: all of it)


def read_yaml_mapping(path: str | os.PathLike[str], kind: FileKind) -> dict[str, Any]:
    """The mapping at the top of a YAML file (empty file: {}). Raises `kind.error`."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise kind.error(f"{source}: {kind.noun} file not found") from None
    except OSError as exc:
        raise kind.error(f"{source}: cannot read {kind.noun} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise kind.error(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise kind.error(
            f"{source}: top level must be a mapping of fields, not {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value parsed as YAML, so `4`, `true`, `{image: 2}` work)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def override_strings(values: Mapping[str, Any]) -> list[str]:
    """{dotted key: value} -> `key=value` strings that `parse_override` reads back (the
    values written as JSON, which is YAML)."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def merge_overrides(
    data: dict[str, Any],
    overrides: Mapping[str, Any] | list[str],
    exclusive: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Return `data` with overrides applied: a {field: value} mapping or `a.b=v` strings.

    `exclusive` names top-level fields of which only one may be set: an override that
    sets one of them (to anything but null) removes the others.
    """
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    pairs = (
        [parse_override(o) for o in overrides]
        if isinstance(overrides, list)
        else [([k], v) for k, v in overrides.items()]
    )
    for path, value in pairs:
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[path[-1]] = value
        if path[0] in exclusive and (value is not None or len(path) > 1):
            for other in exclusive:
                if other != path[0]:
                    merged.pop(other, None)
    return merged


def source_name(path: str | os.PathLike[str] | None) -> str:
    """How a file (or, with none, the command line's overrides) is named in messages."""
    return str(path) if path is not None else "<overrides>"


def invalid_message(source: str, kind: FileKind, problems: Iterable[tuple[str, str]]) -> str:
    """`<source>: invalid <title>`, then one `  <field>: <problem>` line per problem."""
    return "\n".join(
        [f"{source}: invalid {kind.title}", *(f"  {field}: {msg}" for field, msg in problems)]
    )


def format_validation_error(exc: ValidationError, source: str, kind: FileKind) -> str:
    """One line per problem, each naming the file and the field."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (see `{kind.fields_hint}` for the fields)"
        got = ""
        if (
            err["type"] not in ("extra_forbidden", "missing", "value_error")
            and field != "(top level)"
        ):
            shown = repr(err["input"])
            got = f" (got {shown[: kind.input_chars] if kind.input_chars else shown})"
        problems.append((field, f"{msg}{got}"))
    return invalid_message(source, kind, problems)


def load_model(
    model: type[M],
    path: str | os.PathLike[str] | None,
    overrides: Mapping[str, Any] | list[str] | None,
    kind: FileKind,
    *,
    defaults: Mapping[str, Any] | None = None,
    exclusive: tuple[str, ...] = (),
) -> M:
    """Read a YAML file (or none), fill in `defaults` the file leaves out, apply the
    overrides and validate once. Raises `kind.error` naming the file and the field."""
    source = source_name(path)
    data = read_yaml_mapping(path, kind) if path is not None else {}
    data = {**(defaults or {}), **data}
    try:
        data = merge_overrides(data, overrides or {}, exclusive)
    except ConfigError as exc:
        raise kind.error(str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise kind.error(format_validation_error(exc, source, kind)) from None


def describe_fields(model: type[BaseModel], prefix: str = "") -> str:
    """Every field of `model` with its description; fields of nested models are listed
    with dotted names (e.g. `stand_in.preset`)."""
    out = []
    for name, f in model.model_fields.items():
        out.append(f"{prefix}{name}: {f.description}")
        for sub in typing.get_args(f.annotation) or (f.annotation,):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out.append(describe_fields(sub, f"{prefix}{name}."))
    return "\n".join(out)
