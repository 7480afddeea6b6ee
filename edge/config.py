"""One typed settings object from a TOML file, the secrets file (edge.env) and EDGE_* variables; errors name the key."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import ipaddress
import os
import pwd
import re
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


def _time_of_day(v: str) -> str | None:
    return (
        None if re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) else f"must be a time of day HH:MM, e.g. 04:00, got {v!r}"
    )


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of a Standard Webhooks ``whsec_<base64>`` secret (the prefix is optional, as in the spec's libs)."""
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


_HOST_NAME_RE = re.compile(r"^\.?[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$", re.IGNORECASE)


def _host_names(v: list[str]) -> str | None:
    for n, name in enumerate(v):
        if not _HOST_NAME_RE.match(name):
            return (
                f"entry {n} must be a name like edge.example.com or .example.com (no port, scheme or *), got {name!r}"
            )
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
    # Local time (agent.timezone) the store's business day begins: a plain order number scanned names an order
    # created since then. After midnight, a late night still belongs to the day that began this morning.
    business_day_start: str = dataclasses.field(default="04:00", metadata=_check(_time_of_day))
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
    # Names the status page answers to besides IP addresses, localhost and this box's hostname (DNS rebinding guard).
    allowed_hosts: list[str] = dataclasses.field(default_factory=list, metadata=_check(_host_names))
    # Slow clients (edge/api/server.py): a request head must be complete this long after its first byte, a body
    # this long after it began; a connection with no request is closed after idle_timeout_s.
    header_timeout_s: float = dataclasses.field(default=10.0, metadata=_check(_positive))
    body_timeout_s: float = dataclasses.field(default=30.0, metadata=_check(_positive))
    idle_timeout_s: float = dataclasses.field(default=15.0, metadata=_check(_positive))
    max_connections: int = dataclasses.field(default=256, metadata=_check(_at_least(8)))  # lowered to fit RLIMIT_NOFILE


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
    # Ids (and content hashes) of purged orders are remembered this long: one re-sent within it is a duplicate.
    seen_days: float = dataclasses.field(default=400.0, metadata=_check(_positive))


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
    # The relay's final reply after the message body: RFC 5321 4.5.3.2.6 allows it 10 minutes; giving up sooner
    # resends a mail the relay has most likely taken.
    data_timeout_s: float = dataclasses.field(default=600.0, metadata=_check(_positive))
    ca_file: Path | None = None  # extra CA bundle to trust (a company relay); certificates are always verified
    # A login over security = none to a host that is not this box sends the password in clear: only with this opt-in.
    allow_plain_login: bool = False

    @property
    def sends_password_in_clear(self) -> bool:
        """A user name with security = none to a host other than this box: the password would cross the network."""
        return self.security == "none" and bool(self.username) and not is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """This box by name or address (localhost, 127.0.0.0/8, ::1); any other name may resolve to anywhere."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*")


def parse_recipients(text: str | list[str]) -> list[str]:
    """Comma-separated e-mail addresses (or a list of them), each once; ValueError naming the first entry that is not
    exactly one address. The one parser for alerts.to, alerts.critical_to and setup-notifications."""
    found: list[str] = []
    for entry in text.split(",") if isinstance(text, str) else text:
        entry = entry.strip()
        if not entry:
            continue
        if "<" in entry or ">" in entry:
            raise ValueError(f"{entry!r}: write the bare address (name@example.com), without a name or <>")
        if re.search(r"[;\s,]", entry):
            raise ValueError(f"{entry!r} is not one e-mail address: separate recipients with commas")
        if not _ADDRESS_RE.fullmatch(entry):
            raise ValueError(f"{entry!r} is not an e-mail address (name@example.com)")
        if entry not in found:
            found.append(entry)
    return found


def _recipients(v: list[str]) -> str | None:
    try:
        parse_recipients(v)
    except ValueError as err:
        return str(err)
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertSettings:
    # env EDGE_ALERT_TO, comma-separated
    to: list[str] = dataclasses.field(default_factory=list, metadata=_check(_recipients))
    # also get critical alerts
    critical_to: list[str] = dataclasses.field(default_factory=list, metadata=_check(_recipients))
    group_wait_s: float = dataclasses.field(default=30.0, metadata=_check(_at_least(0)))
    # Critical alerts reach the inbox within 10 s: a short wait lets a blip clear and siblings join.
    critical_group_wait_s: float = dataclasses.field(default=5.0, metadata=_check(_at_least(0)))
    # After a critical mail for a device, its next critical episodes within this long go into the digest.
    critical_storm_s: float = dataclasses.field(default=3600.0, metadata=_check(_at_least(0)))
    group_interval_s: float = dataclasses.field(default=120.0, metadata=_check(_positive))
    repeat_interval_s: float = dataclasses.field(default=4 * 3600.0, metadata=_check(_positive))
    max_per_hour: int = dataclasses.field(default=20, metadata=_check(_at_least(1)))
    opening_hours: str = dataclasses.field(default="", metadata=_check(_hours))  # "HH:MM-HH:MM"; outside, warnings wait
    quiet_hours: str = dataclasses.field(default="", metadata=_check(_hours))  # "HH:MM-HH:MM"; warnings wait
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
    # The contract's largest page: the number of list requests, not the orders, is what the rate limit meters.
    page_size: int = dataclasses.field(
        default=1000, metadata=_check(lambda v: None if 1 <= v <= 1000 else f"must be between 1 and 1000, got {v}")
    )
    # Orders per processing transaction (one fsync each: fewer, bigger ones are kinder to an SD card; a push waits
    # at most one of them), and status events per POST (the contract allows at most 500).
    batch_size: int = dataclasses.field(default=500, metadata=_check(_at_least(1)))
    # Random 0..this delay before a recovery after an outage: small, so the kitchen gets its backlog at once; the
    # rate limit, Retry-After and the backend's 429s protect central from a fleet (scripts/bench.py, fleet).
    start_jitter_s: float = dataclasses.field(
        default=2.0, metadata=_check(lambda v: None if 0 <= v <= 3 else f"must be between 0 and 3 seconds, got {v}")
    )
    schedule_interval_s: float = dataclasses.field(default=900.0, metadata=_check(_at_least(0)))  # 0: no scheduled runs
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


SECRETS_FILE = "edge.env"  # beside the config: /etc/edge/edge.env on an installed box, the unit's EnvironmentFile=


def secrets_path(config_path: Path | None, environ: typing.Mapping[str, str] | None = None) -> Path | None:
    """The one secrets file: EDGE_ENV_FILE, else edge.env beside the config."""
    environ = os.environ if environ is None else environ
    if environ.get("EDGE_ENV_FILE"):
        return Path(environ["EDGE_ENV_FILE"])
    return config_path.parent / SECRETS_FILE if config_path else None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_secrets(path: Path) -> dict[str, str]:
    """The secrets file's KEY=VALUE pairs, refusing a file others may read or one this user cannot, naming the fix."""
    from edge.alerts.envfile import EnvFileError, parse_env  # the file format lives with its writer

    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(str(path), f"cannot be reached as user {_user(os.geteuid())}: {err.strerror}") from None
    if info.st_mode & 0o077:
        raise ConfigError(
            str(path), f"is mode {stat.S_IMODE(info.st_mode):04o}, others may read the secrets; fix: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except PermissionError:
        owner = _user(info.st_uid)
        raise ConfigError(
            str(path),
            f"belongs to {owner} (mode 0600), so user {_user(os.geteuid())} cannot read it;"
            f" fix: chown {_user(os.geteuid())}: {path} (it must belong to the agent's user)",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), f"cannot be read: {err}") from None
    try:
        return parse_env(text, source=str(path))
    except EnvFileError as err:
        raise ConfigError(str(path), str(err).removeprefix(f"{path} ")) from None


def read_env(config_path: Path | None, environ: typing.Mapping[str, str] | None = None) -> dict[str, str]:
    """EDGE_* variables: the process environment wins over the secrets file (edge.env beside the config)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    path = secrets_path(config_path, environ)
    if path is not None:
        legacy = path.with_name(".env")
        if "EDGE_ENV_FILE" not in environ and legacy.exists():
            raise ConfigError(
                str(legacy), f"is no longer read: move its lines into {path} (the one secrets file) and delete it"
            )
        merged.update({k: v for k, v in read_secrets(path).items() if k.startswith("EDGE_")})
    merged.update({k: v for k, v in environ.items() if k.startswith("EDGE_")})
    return merged


def check_secrets_owner(path: Path | None, data_dir: Path) -> None:
    """The agent's user owns the data directory; the secrets file must be its too (else the agent cannot read it)."""
    try:
        secrets, data = (path.stat(), data_dir.stat()) if path else (None, None)
    except OSError:
        return  # no secrets file, or no data directory yet: nothing to compare
    if secrets and data and secrets.st_uid != data.st_uid:
        agent = _user(data.st_uid)
        raise ConfigError(
            str(path),
            f"belongs to {_user(secrets.st_uid)}, but the agent's user (owner of {data_dir}) is {agent}, who cannot"
            f" read it; fix: chown {agent}: {path}",
        )


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
    secrets_file = secrets_path(path, environ)
    settings = parse_settings(data, env=read_env(path, environ), source=str(path), secrets_file=secrets_file)
    check_secrets_owner(secrets_file, settings.agent.data_dir)
    return settings


# Tokens that only stand in for a real one (the example's "change-me" and kin), compared without case, - _ or blanks.
_PLACEHOLDER_TOKENS = {"changeme", "replaceme", "secret", "token", "example", "todo"}


def parse_settings(
    data: dict[str, Any], *, env: dict[str, str] | None = None, source: str = "", secrets_file: Path | None = None
) -> Settings:
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
                "hid needs the evdev package (pip install 'edge-agent[hid]'),"
                " or switch the scanner to its serial (USB CDC) mode",
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
    if re.sub(r"[-_\s]", "", api.token.get().lower()) in _PLACEHOLDER_TOKENS:
        raise ConfigError(
            "api.token",
            f"is the example's placeholder {api.token.get().strip()!r}, which anyone could guess: put a long random"
            f" token in EDGE_API_TOKEN in {secrets_file or 'the secrets file edge.env beside the config'}"
            " (e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
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
    if smtp.host and smtp.sends_password_in_clear and not smtp.allow_plain_login:
        raise ConfigError(
            "smtp.security",
            f"is none with a login to {smtp.host}: the password would cross the network unencrypted; use starttls or"
            " tls, or set smtp.allow_plain_login = true for a relay on a network you trust",
        )
    if smtp.host and not (smtp.sender or smtp.username):
        raise ConfigError(
            "smtp.sender", "is required when smtp.host is set and smtp.username is empty (EDGE_SMTP_FROM)"
        )

    return Settings(
        printers=printers, stations=stations, staleness=staleness, scanners=scanners, source=source, **sections
    )
