"""One typed settings object from a TOML file, a .env file and EDGE_* variables; fails fast naming the key."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from edge.errors import ConfigError

_NAME_RE = re.compile(r"^[a-z0-9_\-]{1,32}$")


class Secret:
    """A value that must never reach a log line or a repr."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _check(fn: typing.Callable[[Any], str | None]) -> dict[str, Any]:
    """Field metadata: a check returns a problem description, or None when the value is fine."""
    return {"check": fn}


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else f"must be a port number between 1 and 65535, got {v}"


def _listen_port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be a port number between 1 and 65535 (0: any free port), got {v}"


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be greater than 0, got {v}"


def _at_least(low: int) -> typing.Callable[[int], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def _timezone(v: str) -> str | None:
    if not v:
        return None
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {v!r} (use a name like Europe/Berlin)"
    return None


def _name(v: str) -> str | None:
    return None if _NAME_RE.match(v) else f"must be 1-32 lowercase letters, digits, '-' or '_', got {v!r}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentSettings:
    store_id: str = dataclasses.field(metadata=_check(_name))
    data_dir: Path = Path("/var/lib/edge")
    language: Literal["de", "en"] = "de"
    store_name: str = ""
    timezone: str = dataclasses.field(default="", metadata=_check(_timezone))  # "" = the system's zone
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edge.db"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = dataclasses.field(default=8765, metadata=_check(_listen_port))
    token: Secret = Secret("")
    max_body_bytes: int = dataclasses.field(default=256 * 1024, metadata=_check(_at_least(1024)))
    shutdown_grace_s: float = dataclasses.field(default=25.0, metadata=_check(_positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterSettings:
    name: str
    type: Literal["network", "file"]
    host: str = ""
    port: int = dataclasses.field(default=9100, metadata=_check(_port))
    path: Path | None = None  # file printers: directory for the .bin files (default: data_dir/out/<name>)
    width: int = dataclasses.field(default=48, metadata=_check(lambda v: None if 24 <= v <= 64 else f"must be between 24 and 64 characters, got {v}"))
    connect_timeout: float = dataclasses.field(default=3.0, metadata=_check(_positive))
    write_timeout: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    status_timeout: float = dataclasses.field(default=1.5, metadata=_check(_positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReceiptSettings:
    printer: str | None = None
    by_default: bool = False  # print a receipt when the order does not say
    footer: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpoolSettings:
    max_attempts: int = dataclasses.field(default=5, metadata=_check(_at_least(1)))
    retry_base_s: float = dataclasses.field(default=1.0, metadata=_check(_positive))
    retry_max_s: float = dataclasses.field(default=60.0, metadata=_check(_positive))
    # Offline printers are probed at most this far apart, so printing resumes promptly when they return.
    offline_probe_max_s: float = dataclasses.field(default=3.0, metadata=_check(_positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    agent: AgentSettings
    api: ApiSettings
    printers: dict[str, PrinterSettings]
    stations: dict[str, list[str]]
    receipts: ReceiptSettings
    spool: SpoolSettings
    source: str = ""  # where it came from, for messages

    def secrets(self) -> list[str]:
        """Every secret value, so logging can scrub them wherever they turn up."""
        found = []
        for section in [getattr(self, name) for name in _SECTIONS] + list(self.printers.values()):
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if isinstance(value, Secret) and value:
                    found.append(value.get())
        return found


_SECTIONS: dict[str, type] = {
    "agent": AgentSettings,
    "api": ApiSettings,
    "receipts": ReceiptSettings,
    "spool": SpoolSettings,
}


def _type_name(annotation: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path", Secret: "a string"}.get(annotation, str(annotation))


def _coerce(key: str, value: Any, annotation: Any, *, from_env: bool) -> Any:
    """Turn a TOML value (or an environment string) into the annotated type, or name the key and the problem."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(key, value, args[0], from_env=from_env)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if from_env else [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"must be a string or a list of strings, got {value!r}")
        return value
    if annotation is bool:
        if from_env and isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if from_env and isinstance(value, str):
            try:
                value = annotation(value)
            except ValueError:
                raise ConfigError(key, f"must be {_type_name(annotation)}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (annotation is int and not isinstance(value, int)):
            raise ConfigError(key, f"must be {_type_name(annotation)}, got {value!r}")
        return annotation(value)
    if annotation in (str, Path, Secret):
        if not isinstance(value, str):
            raise ConfigError(key, f"must be {_type_name(annotation)}, got {value!r}")
        return annotation(value)
    raise ConfigError(key, f"unsupported type {annotation}")  # pragma: no cover - a programming error


def _build(cls: type, prefix: str, values: dict[str, Any], env: dict[str, str], env_prefix: str, extra: dict[str, Any] | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields or (extra and key in extra):
            raise ConfigError(f"{prefix}.{key}", f"unknown key (known: {', '.join(k for k in fields if not extra or k not in extra)})")
    kwargs: dict[str, Any] = dict(extra or {})
    for name, f in fields.items():
        if extra and name in extra:
            continue
        key = f"{prefix}.{name}"
        env_name = f"{env_prefix}_{name}".upper()
        if env_name in env:
            kwargs[name] = _coerce(key, env[env_name], hints[name], from_env=True)
        elif name in values:
            kwargs[name] = _coerce(key, values[name], hints[name], from_env=False)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key, f"is required (set it in the config file or {env_name})")
        else:
            continue
        check = f.metadata.get("check")
        if check and kwargs[name] is not None and (problem := check(kwargs[name])):
            raise ConfigError(key, problem)
    return cls(**kwargs)


def read_env(config_path: Path | None, environ: typing.Mapping[str, str] | None = None) -> dict[str, str]:
    """EDGE_* variables: the process environment wins over the .env file beside the config (or EDGE_ENV_FILE)."""
    environ = os.environ if environ is None else environ
    env_file = environ.get("EDGE_ENV_FILE") or (str(config_path.parent / ".env") if config_path else ".env")
    merged: dict[str, str] = {}
    if Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if k.startswith("EDGE_") and v is not None})
    merged.update({k: v for k, v in environ.items() if k.startswith("EDGE_")})
    return merged


def resolve_config_path(cli_path: str | None, environ: typing.Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    raw = cli_path or environ.get("EDGE_CONFIG")
    if not raw:
        raise ConfigError("--config", "no config file given: pass --config PATH or set EDGE_CONFIG")
    return Path(raw)


def load_settings(path: Path, environ: typing.Mapping[str, str] | None = None) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("--config", f"cannot read {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", f"{path} is not valid TOML: {err}") from None
    return parse_settings(data, env=read_env(path, environ), source=str(path))


def parse_settings(data: dict[str, Any], *, env: dict[str, str] | None = None, source: str = "") -> Settings:
    env = env or {}
    known = {*_SECTIONS, "printers", "stations"}
    for section, body in data.items():
        if section not in known:
            raise ConfigError(section, f"unknown section (known: {', '.join(sorted(known))})")
        if not isinstance(body, dict):
            raise ConfigError(section, "must be a table ([section])")
    sections = {name: _build(cls, name, data.get(name, {}), env, f"EDGE_{name}") for name, cls in _SECTIONS.items()}

    printers: dict[str, PrinterSettings] = {}
    for name, body in data.get("printers", {}).items():
        key = f"printers.{name}"
        if problem := _name(name):
            raise ConfigError(key, f"printer name {problem}")
        if not isinstance(body, dict):
            raise ConfigError(key, "must be a table ([printers.NAME])")
        printer = _build(PrinterSettings, key, body, env, f"EDGE_PRINTERS_{name.replace('-', '_')}", extra={"name": name})
        if printer.type == "network" and not printer.host:
            raise ConfigError(f"{key}.host", "is required for a network printer")
        if printer.type == "file" and printer.path is None:
            printer = dataclasses.replace(printer, path=sections["agent"].data_dir / "out" / name)
        printers[name] = printer

    stations: dict[str, list[str]] = {}
    for station, target in data.get("stations", {}).items():
        key = f"stations.{station}"
        if problem := _name(station):
            raise ConfigError(key, f"station name {problem}")
        names = _coerce(key, target, list[str], from_env=False)
        if not names:
            raise ConfigError(key, "must name at least one printer")
        for printer_name in names:
            if printer_name not in printers:
                raise ConfigError(key, f"printer {printer_name!r} is not configured (known: {', '.join(printers) or 'none'})")
        stations[station] = names

    receipts: ReceiptSettings = sections["receipts"]
    if receipts.printer is not None and receipts.printer not in printers:
        raise ConfigError("receipts.printer", f"printer {receipts.printer!r} is not configured (known: {', '.join(printers) or 'none'})")
    if receipts.by_default and receipts.printer is None:
        raise ConfigError("receipts.by_default", "is true but receipts.printer is not set")

    api: ApiSettings = sections["api"]
    if not api.token:
        raise ConfigError("api.token", "is required (set it in the config file or EDGE_API_TOKEN)")

    return Settings(printers=printers, stations=stations, source=source, **sections)
