"""Loading: dict / YAML / overrides -> dataclass, with errors naming the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin

import yaml

from dflray.config._base import ConfigError, _check


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        _check(isinstance(value, dict), path, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            _check(type(None) in args, path, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(path, f"invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
            # YAML 1.1 reads a bare off/on/no/yes as a boolean: `mixed_precision=off` means the string.
            value = next((a for a in allowed if str(a).lower() in (("on", "yes", "true") if value
                                                                   else ("off", "no", "false"))), value)
        _check(value in allowed, path, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (tuple, list):
        _check(isinstance(value, (list, tuple)), path, f"expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        _check(isinstance(value, bool), path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-5" (no dot) as a string; users write it that way
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), path,
               f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), path, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Builds a config dataclass from a nested mapping, rejecting unknown keys.

    Args:
        cls: the config dataclass.
        data: nested mapping, e.g. parsed YAML.
        path: dotted prefix used in error messages.

    Raises:
        ConfigError: on an unknown key or an invalid value, naming the field.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, key), f"unknown option (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_join(path, e.path), str(e).split(": ", 1)[-1]) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML dumps and provenance records)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``key.path=value`` strings onto a nested dict; values are parsed as YAML scalars."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(key, "override must look like key.path=value")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{p} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def load_config(cls: type, path: str | None = None, overrides: list[str] | None = None,
                option: str = "--config") -> Any:
    """Loads a root config from an optional YAML file plus ``key.path=value`` overrides.

    Args:
        cls: the root config dataclass, e.g. ``ExtractConfig``.
        path: YAML file (local path or any fsspec URL), or None for defaults.
        overrides: dotted overrides applied after the file.
        option: what the file was given as (``--config``, ``PLAN``), named by errors about the file.

    Raises:
        ConfigError: naming the first invalid field, or ``option`` when the file is missing, unreadable or
            not a YAML mapping.
    """
    data: dict[str, Any] = {}
    if path:
        loaded = _read_yaml(path, option)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(option, f"{path}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def _read_yaml(path: str, option: str) -> Any:
    """The parsed YAML file; every way it can fail is one ``ConfigError`` naming ``option`` and the file."""
    from dflray.io.storage import open_uri

    try:
        with open_uri(path, "rb") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(option, f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(option, f"{path} is a folder, not a YAML file") from None
    except yaml.YAMLError as e:
        raise ConfigError(option, f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    except OSError as e:
        raise ConfigError(option, f"cannot read {path}: {e.strerror or e}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong and where (1-based line and column)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem
