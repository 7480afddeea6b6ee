"""One typed settings object from a TOML file, a .env file and EDGE_* variables; fails fast naming the key."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
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

_NAME_RE = re.compile(r"[a-z0-9_\-]{1,32}")  # fullmatch: "$" would let a trailing newline through


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


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of a Standard Webhooks ``whsec_<base64>`` secret (the prefix is optional, as in the spec's libraries)."""
    return base64.b64decode(secret.get().removeprefix("whsec_"), validate=True)


def _signing_secrets(v: list[Secret]) -> str | None:
    for n, secret in enumerate(v):
        try:
            key = signing_key(secret)
        except ValueError:
            return f"entry {n} is not a whsec_<base64> secret"
        if not 24 <= len(key) <= 64:
            return f"entry {n} must decode to 24-64 bytes (Standard Webhooks), got {len(key)}"
    return None


def _name(v: str) -> str | None:
    return None if _NAME_RE.fullmatch(v) else f"must be 1-32 lowercase letters, digits, '-' or '_', got {v!r}"


def _usb_id(v: int) -> str | None:
    return None if 0 <= v <= 0xFFFF else f"must be between 0 and 0xffff, got {v}"


def _escpos_profile(v: str) -> str | None:
    from escpos.capabilities import CAPABILITIES  # python-escpos' capability database; only needed here

    return (
        None
        if v in CAPABILITIES["profiles"]
        else f"unknown python-escpos profile {v!r} (e.g. default, TM-T88V, TM-T20II)"
    )


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
    token: Secret = Secret("")  # may be empty only when require_signature is true
    # Standard Webhooks secrets ("whsec_<base64>"); several during a key rotation.
    signing_secrets: list[Secret] = dataclasses.field(default_factory=list, metadata=_check(_signing_secrets))
    require_signature: bool = False  # every /api/ request must carry a valid webhook-signature
    max_body_bytes: int = dataclasses.field(default=256 * 1024, metadata=_check(_at_least(1024)))
    shutdown_grace_s: float = dataclasses.field(default=25.0, metadata=_check(_positive))
    status_page_public: bool = True  # the read-only status page at / without a token; actions always need one


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterSettings:
    name: str
    type: Literal["network", "usb", "serial", "file"]
    host: str = ""
    port: int = dataclasses.field(default=9100, metadata=_check(_port))
    path: Path | None = None  # file printers: directory for the .bin files (default: data_dir/out/<name>)
    # usb printers (pyusb): ids as `lsusb` shows them, e.g. vendor_id = 0x04b8 (Epson)
    vendor_id: int = dataclasses.field(default=0, metadata=_check(_usb_id))
    product_id: int = dataclasses.field(default=0, metadata=_check(_usb_id))
    interface: int = 0
    in_ep: int = dataclasses.field(default=0x82, metadata=_check(_usb_id))
    out_ep: int = dataclasses.field(default=0x01, metadata=_check(_usb_id))
    # serial printers (pyserial): a stable name like /dev/serial/by-id/..., not /dev/ttyUSB0
    device: str = ""
    baudrate: int = dataclasses.field(default=9600, metadata=_check(_positive))
    bytesize: int = dataclasses.field(
        default=8, metadata=_check(lambda v: None if v in (5, 6, 7, 8) else f"must be 5, 6, 7 or 8, got {v}")
    )
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: float = dataclasses.field(
        default=1.0, metadata=_check(lambda v: None if v in (1, 1.5, 2) else f"must be 1, 1.5 or 2, got {v}")
    )
    flow_control: Literal["none", "rtscts", "dsrdtr", "xonxoff"] = "none"
    width: int = dataclasses.field(
        default=48,
        metadata=_check(lambda v: None if 24 <= v <= 64 else f"must be between 24 and 64 characters, got {v}"),
    )
    profile: str = dataclasses.field(
        default="default", metadata=_check(_escpos_profile)
    )  # python-escpos capability profile, e.g. TM-T88V
    # auto: the profile's first of CP858, CP1252 (both with €), CP437 (€ prints as EUR); or one of them by name
    codepage: Literal["auto", "cp858", "cp1252", "cp437"] = "auto"
    cut: Literal["full", "partial", "none"] = "full"
    cash_drawer: bool = False  # kick the drawer on receipts paid in cash
    logo: Path | None = None  # image printed at the top of receipts
    # QR codes: "auto" = the printer's own QR command when the profile has one, else an image made this way
    qr: Literal["auto", "native", "bitImageRaster", "graphics", "bitImageColumn"] = "auto"
    qr_fragment_height: int = dataclasses.field(
        default=960, metadata=_check(_at_least(8))
    )  # some models need smaller image strips
    connect_timeout: float = dataclasses.field(default=3.0, metadata=_check(_positive))
    write_timeout: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    status_timeout: float = dataclasses.field(default=1.5, metadata=_check(_positive))
    status_poll_s: float = dataclasses.field(
        default=10.0, metadata=_check(_positive)
    )  # status query between jobs while idle


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannerSettings:
    name: str
    type: Literal["serial", "hid"] = "serial"  # hid: a keyboard-wedge scanner read through evdev (optional extra)
    port: str  # serial device (best a stable /dev/serial/by-id/... name) or, for hid, /dev/input/by-id/...-event-kbd
    baudrate: int = dataclasses.field(default=9600, metadata=_check(_positive))
    station: str | None = (
        None  # plain codes (order id or number) mark this station's ticket done; unset: the whole order
    )
    hand_out: bool = False  # a scan of an order that is already ready marks it handed out
    hand_out_gap_s: float = dataclasses.field(
        default=3.0, metadata=_check(_at_least(0))
    )  # a rescan sooner is a double read
    reconnect_max_s: float = dataclasses.field(
        default=5.0, metadata=_check(_positive)
    )  # longest wait between reopen attempts


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
    # Offline printers are probed at most this far apart, so printing resumes within 2 s of their return.
    offline_probe_max_s: float = dataclasses.field(default=1.5, metadata=_check(_positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    days: float = dataclasses.field(
        default=30.0, metadata=_check(_positive)
    )  # printed orders older than this are purged
    every_s: float = dataclasses.field(default=3600.0, metadata=_check(_positive))
    batch: int = dataclasses.field(
        default=200, metadata=_check(_at_least(1))
    )  # orders per transaction: the writer is never held long


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackupSettings:
    dir: Path | None = None  # default: data_dir/backups
    keep: int = dataclasses.field(default=7, metadata=_check(_at_least(1)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrintingSettings:
    template_dir: Path | None = (
        None  # operator's ticket.j2 / receipt.j2 / test_page.j2; the built-in ones fill the gaps
    )
    # A job older than this when its printer could print it is held for a person (0: never held);
    # [staleness] STATION = minutes overrides the ticket age per station.
    stale_ticket_min: float = dataclasses.field(default=45.0, metadata=_check(_at_least(0)))
    stale_receipt_min: float = dataclasses.field(default=0.0, metadata=_check(_at_least(0)))
    # A station's primary printer paused this long: its waiting tickets move to the first healthy backup.
    failover_after_s: float = dataclasses.field(default=60.0, metadata=_check(_positive))


def _hours(v: str) -> str | None:
    from edge.alerts.rules import parse_hours  # the alert rules own the format; only needed here

    try:
        parse_hours(v)
    except ValueError as err:
        return str(err)
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str = ""  # empty: no alert mail (the agent works without it)
    port: int = dataclasses.field(default=587, metadata=_check(_port))
    security: Literal["starttls", "tls", "none"] = "starttls"  # none only for a relay on this box or network
    username: str = ""
    password: Secret = Secret("")
    sender: str = ""  # From address (env EDGE_SMTP_FROM); default: username
    timeout_s: float = dataclasses.field(default=15.0, metadata=_check(_positive))
    ca_file: Path | None = None  # extra CA bundle to trust (a company relay); certificates are always verified


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertSettings:
    to: list[str] = dataclasses.field(default_factory=list)  # env EDGE_ALERT_TO, comma-separated
    critical_to: list[str] = dataclasses.field(default_factory=list)  # also get critical alerts
    group_wait_s: float = dataclasses.field(default=30.0, metadata=_check(_at_least(0)))
    critical_group_wait_s: float = dataclasses.field(default=30.0, metadata=_check(_at_least(0)))
    group_interval_s: float = dataclasses.field(default=120.0, metadata=_check(_positive))
    repeat_interval_s: float = dataclasses.field(default=4 * 3600.0, metadata=_check(_positive))
    max_per_hour: int = dataclasses.field(default=20, metadata=_check(_at_least(1)))
    opening_hours: str = dataclasses.field(default="", metadata=_check(_hours))  # "HH:MM-HH:MM"; outside, warnings wait
    quiet_hours: str = dataclasses.field(default="", metadata=_check(_hours))  # "HH:MM-HH:MM"; even critical mail waits
    digest: bool = False  # warnings go into one daily mail at digest_at instead of their own
    digest_at: str = dataclasses.field(default="08:00", metadata=_check(_hours))  # "HH:MM", local time
    status_page_url: str = ""
    template_dir: Path | None = None  # operator's subject.txt / body.txt / body.html; built-in ones fill the gaps
    backlog_age_min: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    backlog_jobs: int = dataclasses.field(default=50, metadata=_check(_at_least(1)))
    central_down_min: float = dataclasses.field(default=5.0, metadata=_check(_at_least(0)))
    disk_free_min_mb: int = dataclasses.field(default=200, metadata=_check(_at_least(0)))
    check_interval_s: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    retry_base_s: float = dataclasses.field(default=5.0, metadata=_check(_positive))
    retry_max_s: float = dataclasses.field(default=600.0, metadata=_check(_positive))


def _central_url(v: str) -> str | None:
    return (
        None
        if not v or re.fullmatch(r"https?://[^/\s]+(/\S*)?", v)
        else f"must be an http:// or https:// URL (or empty: no central API), got {v!r}"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CentralSettings:
    url: str = dataclasses.field(
        default="", metadata=_check(_central_url)
    )  # empty: no central API, sync parts stay off
    token: Secret = Secret("")  # bearer token for the central API; required with url
    connect_timeout_s: float = dataclasses.field(default=3.0, metadata=_check(_positive))
    read_timeout_s: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    max_attempts: int = dataclasses.field(
        default=6, metadata=_check(_at_least(1))
    )  # per request, then the caller gives up
    retry_base_s: float = dataclasses.field(default=0.5, metadata=_check(_positive))
    retry_max_s: float = dataclasses.field(default=30.0, metadata=_check(_positive))
    rate_limit_rps: float = dataclasses.field(
        default=5.0, metadata=_check(_positive)
    )  # every request to central, probes included
    page_size: int = dataclasses.field(
        default=200, metadata=_check(lambda v: None if 1 <= v <= 1000 else f"must be between 1 and 1000, got {v}")
    )
    batch_size: int = dataclasses.field(
        default=100, metadata=_check(_at_least(1))
    )  # orders per processing transaction; outbox events per POST
    start_jitter_s: float = dataclasses.field(
        default=30.0, metadata=_check(_at_least(0))
    )  # random 0..this delay before a recovery after an outage
    schedule_interval_s: float = dataclasses.field(default=900.0, metadata=_check(_at_least(0)))  # 0: no scheduled runs
    probe_timeout_s: float = dataclasses.field(default=1.0, metadata=_check(_positive))
    probe_max_s: float = dataclasses.field(
        default=0.5, metadata=_check(_positive)
    )  # longest gap between health probes while down
    probe_up_s: float = dataclasses.field(
        default=15.0, metadata=_check(_positive)
    )  # gap between health probes while up


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    agent: AgentSettings
    api: ApiSettings
    printers: dict[str, PrinterSettings]
    stations: dict[str, list[str]]
    receipts: ReceiptSettings
    spool: SpoolSettings
    retention: RetentionSettings
    backup: BackupSettings
    printing: PrintingSettings
    smtp: SmtpSettings
    alerts: AlertSettings
    central: CentralSettings
    staleness: dict[str, float] = dataclasses.field(default_factory=dict)  # [staleness] STATION = minutes
    scanners: dict[str, ScannerSettings] = dataclasses.field(default_factory=dict)
    source: str = ""  # where it came from, for messages

    def secrets(self) -> list[str]:
        """Every secret value, so logging can scrub them wherever they turn up."""
        found = []
        for section in [getattr(self, name) for name in _SECTIONS] + list(self.printers.values()):
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, Secret) and item:
                        found.append(item.get())
        return found


_SECTIONS: dict[str, type] = {
    "agent": AgentSettings,
    "api": ApiSettings,
    "receipts": ReceiptSettings,
    "spool": SpoolSettings,
    "retention": RetentionSettings,
    "backup": BackupSettings,
    "printing": PrintingSettings,
    "smtp": SmtpSettings,
    "alerts": AlertSettings,
    "central": CentralSettings,
}

# Names the setup script writes (and the issue promises), mapped to the EDGE_<SECTION>_<KEY> they stand for.
_ENV_ALIASES = {"EDGE_ALERT_TO": "EDGE_ALERTS_TO", "EDGE_SMTP_FROM": "EDGE_SMTP_SENDER"}


def _type_name(annotation: Any) -> str:
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        Path: "a path",
        Secret: "a string",
    }.get(annotation, str(annotation))


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
        item_type = typing.get_args(annotation)[0]
        return [item_type(v) for v in value]
    if annotation is bool:
        if (
            from_env
            and isinstance(value, str)
            and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        ):
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
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (annotation is int and not isinstance(value, int))
        ):
            raise ConfigError(key, f"must be {_type_name(annotation)}, got {value!r}")
        return annotation(value)
    if annotation in (str, Path, Secret):
        if not isinstance(value, str):
            raise ConfigError(key, f"must be {_type_name(annotation)}, got {value!r}")
        return annotation(value)
    raise ConfigError(key, f"unsupported type {annotation}")  # pragma: no cover - a programming error


def _build(
    cls: type,
    prefix: str,
    values: dict[str, Any],
    env: dict[str, str],
    env_prefix: str,
    extra: dict[str, Any] | None = None,
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields or (extra and key in extra):
            raise ConfigError(
                f"{prefix}.{key}", f"unknown key (known: {', '.join(k for k in fields if not extra or k not in extra)})"
            )
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
        # No ${VAR} expansion: a password containing "${" must arrive as typed (setup-notifications writes it quoted).
        merged.update(
            {
                k: v
                for k, v in dotenv_values(env_file, interpolate=False).items()
                if k.startswith("EDGE_") and v is not None
            }
        )
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
    env = (
        {**{target: env[alias] for alias, target in _ENV_ALIASES.items() if alias in env and target not in env}, **env}
        if env
        else {}
    )
    known = {*_SECTIONS, "printers", "stations", "staleness", "scanners"}
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
        printer = _build(
            PrinterSettings, key, body, env, f"EDGE_PRINTERS_{name.replace('-', '_')}", extra={"name": name}
        )
        if printer.type == "network" and not printer.host:
            raise ConfigError(f"{key}.host", "is required for a network printer")
        if printer.type == "usb" and not (printer.vendor_id and printer.product_id):
            raise ConfigError(f"{key}.vendor_id", "and product_id are required for a usb printer (see `lsusb`)")
        if printer.type == "serial" and not printer.device:
            raise ConfigError(f"{key}.device", "is required for a serial printer, e.g. /dev/serial/by-id/usb-...")
        if printer.logo is not None and not printer.logo.is_file():
            raise ConfigError(f"{key}.logo", f"{printer.logo}: no such file")
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
                raise ConfigError(
                    key, f"printer {printer_name!r} is not configured (known: {', '.join(printers) or 'none'})"
                )
        stations[station] = names

    staleness: dict[str, float] = {}
    for station, minutes in data.get("staleness", {}).items():
        key = f"staleness.{station}"
        if station not in stations:
            raise ConfigError(key, f"station {station!r} is not in [stations] (known: {', '.join(stations) or 'none'})")
        staleness[station] = _coerce(key, minutes, float, from_env=False)
        if problem := _at_least(0)(staleness[station]):
            raise ConfigError(key, problem)

    scanners: dict[str, ScannerSettings] = {}
    for name, body in data.get("scanners", {}).items():
        key = f"scanners.{name}"
        if problem := _name(name):
            raise ConfigError(key, f"scanner name {problem}")
        if not isinstance(body, dict):
            raise ConfigError(key, "must be a table ([scanners.NAME])")
        scanner = _build(
            ScannerSettings, key, body, env, f"EDGE_SCANNERS_{name.replace('-', '_')}", extra={"name": name}
        )
        if not scanner.port:
            raise ConfigError(f"{key}.port", "is required, e.g. /dev/ttyACM0 or /dev/serial/by-id/usb-...")
        if scanner.type == "hid" and importlib.util.find_spec("evdev") is None:
            raise ConfigError(
                f"{key}.type",
                "hid needs the evdev package (pip install 'edge-agent[hid]'), or switch the scanner to its serial (USB CDC) mode",
            )
        if scanner.station is not None and scanner.station not in stations:
            raise ConfigError(
                f"{key}.station",
                f"station {scanner.station!r} is not in [stations] (known: {', '.join(stations) or 'none'})",
            )
        if other := next((s.name for s in scanners.values() if s.port == scanner.port), None):
            raise ConfigError(f"{key}.port", f"{scanner.port} is already the port of scanner {other!r}")
        scanners[name] = scanner

    receipts: ReceiptSettings = sections["receipts"]
    if receipts.printer is not None and receipts.printer not in printers:
        raise ConfigError(
            "receipts.printer",
            f"printer {receipts.printer!r} is not configured (known: {', '.join(printers) or 'none'})",
        )
    if receipts.by_default and receipts.printer is None:
        raise ConfigError("receipts.by_default", "is true but receipts.printer is not set")

    api: ApiSettings = sections["api"]
    if not api.token and not api.require_signature:
        raise ConfigError(
            "api.token",
            "is required unless api.require_signature is true (set it in the config file or EDGE_API_TOKEN)",
        )
    if api.require_signature and not api.signing_secrets:
        raise ConfigError("api.signing_secrets", "is required when api.require_signature is true")
    if sections["central"].url and not sections["central"].token:
        raise ConfigError(
            "central.token", "is required when central.url is set (set it in the config file or EDGE_CENTRAL_TOKEN)"
        )

    smtp: SmtpSettings = sections["smtp"]
    if smtp.host and not sections["alerts"].to:
        raise ConfigError("alerts.to", "is required when smtp.host is set (set it in the config file or EDGE_ALERT_TO)")
    if smtp.host and not (smtp.sender or smtp.username):
        raise ConfigError(
            "smtp.sender", "is required when smtp.host is set and smtp.username is empty (EDGE_SMTP_FROM)"
        )

    return Settings(
        printers=printers, stations=stations, staleness=staleness, scanners=scanners, source=source, **sections
    )
