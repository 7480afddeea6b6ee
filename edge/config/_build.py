"""Typed values from TOML values and EDGE_* strings: each settings field coerced to its annotation and checked."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge.config._values import Secret
from edge.errors import ConfigError

T = TypeVar("T")


_TYPE_NAMES: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    Path: "a path",
    Secret: "a string",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(key: str, value: Any, annotation: Any, *, from_env: bool) -> Any:
    """Turn a TOML value (or an environment string) into the annotated type, or name the key and the problem."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        # Empty is unset where it comes from the environment, and for a path, which "" never names (it read as ".",
        # the folder a command runs in: `dir = ""`, the example's default under [backup], stopped the start).
        if value is None or (value == "" and (from_env or args[0] is Path)):
            return None
        return coerce(key, value, args[0], from_env=from_env)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if from_env else [value]
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"must be a string or a list of strings, got {_shown(value, item_type)}")
        return [item_type(v) for v in value]
    if annotation is bool:
        if from_env and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if from_env and isinstance(value, str):
            try:
                value = annotation(value)
            except ValueError:
                raise ConfigError(key, f"must be {_TYPE_NAMES[annotation]}, got {value!r}") from None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (annotation is int and isinstance(value, float))
        ):
            raise ConfigError(key, f"must be {_TYPE_NAMES[annotation]}, got {value!r}")
        if not math.isfinite(value):  # TOML's inf and nan, 1e400: a timeout of inf fails at every use, not here
            raise ConfigError(key, f"must be a finite number, got {value}")
        if abs(value) > LARGEST:
            raise ConfigError(key, f"must be at most {LARGEST}, got {value:g}")
        return annotation(value)
    if annotation in (str, Path, Secret):
        if not isinstance(value, str):
            raise ConfigError(key, f"must be {_TYPE_NAMES[annotation]}, got {_shown(value, annotation)}")
        return annotation(value)
    raise ConfigError(key, f"unsupported type {annotation}")  # pragma: no cover - a programming error


def _shown(value: Any, annotation: Any) -> str:
    """A wrong value as an error shows it; a secret's never (the line goes to the journal, every minute by the health
    timer): what it is, and the likely fix (the tech77 probe, F2: a numeric token printed whole)."""
    if annotation is not Secret:
        return repr(value)
    return f"a TOML {type(value).__name__} (not shown: a secret); put it in quotes"


def fields(cls: type) -> Mapping[str, tuple[dataclasses.Field[Any], Any]]:
    """A settings type's fields with their resolved annotations, in declaration order."""
    if (known := _FIELDS.get(cls)) is None:
        hints = typing.get_type_hints(cls)
        known = _FIELDS[cls] = types.MappingProxyType(
            {field.name: (field, hints[field.name]) for field in dataclasses.fields(cls)}
        )
    return known


# Resolving the annotations was most of a config load's time (4.3 ms of 4.5), and the types never change.
_FIELDS: dict[type, Mapping[str, tuple[dataclasses.Field[Any], Any]]] = {}


# No setting needs more (MQTT's session expiry is a 4-byte count of seconds); a timeout of 1e15 s overflows the
# platform's time at every use instead of failing here.
LARGEST = 2**32 - 1

MISSING: Any = object()  # no value from any source: the dataclass default applies


def read(
    prefix: str,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    env_prefix: str,
    name: str,
    field: dataclasses.Field[Any],
    annotation: Any,
    default: Any = MISSING,
) -> Any:
    """One field's value: from EDGE_<PREFIX>_<NAME> (wins), the table, ``default`` or the field's own default,
    coerced and checked; MISSING when none of them has one."""
    key = f"{prefix}.{name}"
    env_name = f"{env_prefix}_{name}".upper()
    if env_name in env:
        value = coerce(key, env[env_name], annotation, from_env=True)
    elif name in values:
        value = coerce(key, values[name], annotation, from_env=False)
    elif default is not MISSING:
        value = default
    elif field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
        return MISSING  # the dataclass fills it in
    elif required := field.metadata.get("required"):
        raise ConfigError(f"{prefix}.{field.metadata.get('required_key') or name}", required)
    else:
        raise ConfigError(key, f"is required (set it in the config file or {env_name})")
    if value is None:
        return value
    if (required := field.metadata.get("required")) and not value:
        raise ConfigError(f"{prefix}.{field.metadata.get('required_key') or name}", required)
    for check in field.metadata.get("checks", ()):
        if problem := check(value):
            raise ConfigError(key, problem)
    return value


def keys(types: Sequence[type]) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    """The fields of several settings types, each name once, in the order the types declare them."""
    merged: dict[str, tuple[dataclasses.Field[Any], Any]] = {}
    for cls in types:
        for name, spec in fields(cls).items():
            merged.setdefault(name, spec)
    return merged


def refuse_unknown(prefix: str, values: Mapping[str, Any], known: Sequence[str]) -> None:
    for key in values:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", f"unknown key (known: {', '.join(known)})")


def build(
    cls: type[T],
    prefix: str,
    values: Mapping[str, Any],
    env: Mapping[str, str],
    env_prefix: str,
    *,
    given: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    also: Sequence[type] = (),
) -> T:
    """``cls`` from its TOML table and EDGE_<PREFIX>_* variables (they win), every value coerced and checked.

    Args:
        given: values the loader decides (a printer's name), not keys of the table.
        defaults: defaults that depend on other sections (a file printer's path under agent.data_dir).
        also: types whose keys the table may hold as well: checked like the others, then left out (a printer
            switched from network to usb may keep its host line, as it always could).
    """
    given, defaults = given or {}, defaults or {}
    own, every = fields(cls), keys([cls, *also])
    refuse_unknown(prefix, values, [name for name in every if name not in given])
    kwargs = dict(given)
    for name, (field, annotation) in every.items():
        if name in given:
            continue
        if name not in own:  # another type's key: checked when it is set, never required, not kept
            read(prefix, values, env, env_prefix, name, field, annotation, None)
        elif (
            value := read(prefix, values, env, env_prefix, name, field, annotation, defaults.get(name, MISSING))
        ) is not MISSING:
            kwargs[name] = value
    return cls(**kwargs)
