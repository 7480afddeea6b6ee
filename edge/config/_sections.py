"""The typed settings: one frozen dataclass per config section, each field with its default and its checks."""

from __future__ import annotations

import dataclasses
import importlib
import urllib.parse
from pathlib import Path
from typing import Literal

import edge.config._fields as f
from edge.config._printers import AnyPrinterSettings
from edge.config._values import Secret, is_loopback_host

_NO_SECRET = Secret("")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentSettings:
    store_id: str = dataclasses.field(metadata=f.check(f.name))
    data_dir: Path = dataclasses.field(
        default=Path("/var/lib/edge"), metadata=f.check(f.absolute_path("/var/lib/edge"))
    )
    language: Literal["de", "en"] = "de"
    store_name: str = ""
    timezone: str = dataclasses.field(default="", metadata=f.check(f.timezone))  # "" = the system's zone
    # Local time (agent.timezone) the store's business day begins: a plain order number scanned names an order
    # created since then. After midnight, a late night still belongs to the day that began this morning.
    business_day_start: str = dataclasses.field(default="04:00", metadata=f.check(f.time_of_day))
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edge.db"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiSettings:
    host: str = dataclasses.field(default="127.0.0.1", metadata=f.check(f.network_host))
    port: int = dataclasses.field(default=8765, metadata=f.check(f.listen_port))
    # may be empty only when require_signature is true
    token: Secret = dataclasses.field(default=_NO_SECRET, metadata=f.check(f.bearer_token))
    # Standard Webhooks secrets ("whsec_<base64>"); several during a key rotation.
    signing_secrets: list[Secret] = dataclasses.field(default_factory=list, metadata=f.check(f.signing_secrets))
    require_signature: bool = False  # every /api/ request must carry a valid webhook-signature
    max_body_bytes: int = dataclasses.field(default=256 * 1024, metadata=f.check(f.at_least(1024)))
    shutdown_grace_s: float = dataclasses.field(default=25.0, metadata=f.check(f.positive))
    status_page_public: bool = True  # the read-only status page at / without a token; actions always need one
    # How often the open status page asks for fresh data; an answer not there within twice this (at least 1 s) counts
    # as a failed refresh.
    status_refresh_s: float = dataclasses.field(default=5.0, metadata=f.check(f.positive))
    # Names the status page answers to besides IP addresses, localhost and this box's hostname (DNS rebinding guard).
    allowed_hosts: list[str] = dataclasses.field(default_factory=list, metadata=f.check(f.host_names))
    # Slow clients (edge/api/server.py): a request head must be complete this long after its first byte, a body
    # this long after it began; a connection with no request is closed after idle_timeout_s.
    header_timeout_s: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))
    body_timeout_s: float = dataclasses.field(default=30.0, metadata=f.check(f.positive))
    idle_timeout_s: float = dataclasses.field(default=15.0, metadata=f.check(f.positive))
    # lowered at start-up to fit RLIMIT_NOFILE
    max_connections: int = dataclasses.field(default=256, metadata=f.check(f.at_least(8)))


def _evdev_for_hid(v: str) -> str | None:
    if v != "hid":
        return None
    try:
        # Loaded, not only found: one built for another Python or without its compiled part is found, then fails.
        importlib.import_module("evdev")
    except ImportError as err:
        gone = isinstance(err, ModuleNotFoundError) and err.name == "evdev"
        missing = "which is not installed" if gone else f"which cannot be loaded ({err})"
        return (
            f"hid needs the evdev package, {missing}: run scripts/install.sh again, which builds it for a hid scanner"
            " (elsewhere: pip install 'edge-agent[hid]'; it compiles evdev: a C compiler and the kernel headers), or"
            " switch the scanner to its serial (USB CDC) mode"
        )
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannerSettings:
    name: str
    # hid: a keyboard-wedge scanner read through evdev (optional extra)
    type: Literal["serial", "hid"] = dataclasses.field(default="serial", metadata=f.check(_evdev_for_hid))
    # serial device (best a stable /dev/serial/by-id/... name) or, for hid, /dev/input/by-id/...-event-kbd
    port: str = dataclasses.field(
        metadata=f.check(f.given("is required, e.g. /dev/ttyACM0 or /dev/serial/by-id/usb-..."))
    )
    baudrate: int = dataclasses.field(default=9600, metadata=f.check(f.positive))
    layout: Literal["us", "de"] = "us"  # hid: the keyboard layout the scanner types in
    station: str | None = None  # plain codes (order id or number) mark this station's ticket done; unset: whole order
    hand_out: bool = False  # a scan of an order that is already ready marks it handed out
    hand_out_gap_s: float = dataclasses.field(default=3.0, metadata=f.check(f.at_least(0)))  # sooner: a double read
    reconnect_max_s: float = dataclasses.field(default=5.0, metadata=f.check(f.positive))  # longest wait to reopen


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReceiptSettings:
    # false: this box prints no receipts by design (the till does): no receipt job, whatever an order asks. Apart from
    # an unset printer, which holds what orders ask for (a receipt printer missing by mistake must not lose receipts).
    enabled: bool = True
    printer: str | None = None
    by_default: bool = False  # print a receipt when the order does not say
    footer: str = ""
    # A changed order's printed receipt: left, or printed anew, marked as the revised receipt replacing it
    on_change: Literal["none", "reprint"] = "none"

    @property
    def unserved(self) -> str | None:
        """Receipts left on and no receipt printer: how to say the box prints none by design (the start log says it,
        and `edge config check` should); None otherwise."""
        if self.enabled and self.printer is None:
            return (
                "receipts.printer is not set: a receipt an order asks for is held for a person; if this box prints no"
                " receipts by design (the till prints them), set receipts.enabled = false"
            )
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpoolSettings:
    max_attempts: int = dataclasses.field(default=5, metadata=f.check(f.at_least(1)))
    retry_base_s: float = dataclasses.field(default=1.0, metadata=f.check(f.positive))
    retry_max_s: float = dataclasses.field(default=60.0, metadata=f.check(f.positive))
    # Offline printers are probed at most this far apart, so printing resumes within 2 s of their return.
    offline_probe_max_s: float = dataclasses.field(default=1.5, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    days: float = dataclasses.field(default=30.0, metadata=f.check(f.positive))  # printed orders older are purged
    every_s: float = dataclasses.field(default=3600.0, metadata=f.check(f.positive))
    # orders per transaction: the writer is never held long
    batch: int = dataclasses.field(default=200, metadata=f.check(f.at_least(1)))
    # Ids (and content hashes) of purged orders are remembered this long: one re-sent within it is a duplicate.
    seen_days: float = dataclasses.field(default=400.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackupSettings:
    # default: data_dir/backups
    dir: Path | None = dataclasses.field(default=None, metadata=f.check(f.absolute_path("/media/usb/edge-backups")))
    keep: int = dataclasses.field(default=7, metadata=f.check(f.at_least(1)))
    # The newest backup older than this (none: the database older than this) is mailed (backup_stale); 0: never.
    # The timer backs up nightly: 36 h is one night missed and the day after it.
    stale_after_h: float = dataclasses.field(default=36.0, metadata=f.check(f.at_least(0)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrintingSettings:
    template_dir: Path | None = None  # operator's ticket.j2 / receipt.j2 / test_page.j2; built-in ones fill the gaps
    # A job older than this when its printer could print it is held for a person (0: never held);
    # [staleness] STATION = minutes overrides the ticket age per station.
    stale_ticket_min: float = dataclasses.field(default=45.0, metadata=f.check(f.at_least(0)))
    stale_receipt_min: float = dataclasses.field(default=0.0, metadata=f.check(f.at_least(0)))
    # A station's primary printer paused this long: its waiting tickets move to the first healthy backup.
    failover_after_s: float = dataclasses.field(default=60.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    host: str = dataclasses.field(default="", metadata=f.check(f.network_host))  # empty: no alert mail
    port: int = dataclasses.field(default=587, metadata=f.check(f.port))
    security: Literal["starttls", "tls", "none"] = "starttls"  # none only for a relay on this box or network
    username: str = ""
    password: Secret = _NO_SECRET
    sender: str = ""  # From address (env EDGE_SMTP_FROM); default: username
    timeout_s: float = dataclasses.field(default=15.0, metadata=f.check(f.positive))
    # The relay's final reply after the message body: RFC 5321 4.5.3.2.6 allows it 10 minutes; giving up sooner
    # resends a mail the relay has most likely taken.
    data_timeout_s: float = dataclasses.field(default=600.0, metadata=f.check(f.positive))
    ca_file: Path | None = None  # extra CA bundle to trust (a company relay); certificates are always verified
    # A login over security = none to a host that is not this box sends the password in clear: only with this opt-in.
    allow_plain_login: bool = False
    # The name the agent greets the relay with (EHLO). Empty: the box's fully-qualified name, or its address literal
    # when it has none (RFC 5321 4.1.4): relays that refuse a bare "raspberrypi" (Postfix reject_non_fqdn_helo_hostname)
    # take either.
    helo_name: str = dataclasses.field(default="", metadata=f.check(f.helo_name))

    @property
    def sends_password_in_clear(self) -> bool:
        """A user name with security = none to a host other than this box: the password would cross the network."""
        return self.security == "none" and bool(self.username) and not is_loopback_host(self.host)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertSettings:
    # env EDGE_ALERT_TO, comma-separated
    to: list[str] = dataclasses.field(default_factory=list, metadata=f.check(f.recipients))
    # also get critical alerts
    critical_to: list[str] = dataclasses.field(default_factory=list, metadata=f.check(f.recipients))
    group_wait_s: float = dataclasses.field(default=30.0, metadata=f.check(f.at_least(0)))
    # Critical alerts reach the inbox within 10 s: a short wait lets a blip clear and siblings join.
    critical_group_wait_s: float = dataclasses.field(default=5.0, metadata=f.check(f.at_least(0)))
    # After a critical mail for a device, its next critical episodes within this long go into the digest.
    critical_storm_s: float = dataclasses.field(default=3600.0, metadata=f.check(f.at_least(0)))
    group_interval_s: float = dataclasses.field(default=120.0, metadata=f.check(f.positive))
    repeat_interval_s: float = dataclasses.field(default=4 * 3600.0, metadata=f.check(f.positive))
    max_per_hour: int = dataclasses.field(default=20, metadata=f.check(f.at_least(1)))
    # "HH:MM-HH:MM": outside opening hours and inside quiet hours, warnings wait
    opening_hours: str = dataclasses.field(default="", metadata=f.check(f.hours))
    quiet_hours: str = dataclasses.field(default="", metadata=f.check(f.hours))
    digest: bool = False  # warnings go into one daily mail at digest_at instead of their own
    digest_at: str = dataclasses.field(default="08:00", metadata=f.check(f.hours))  # "HH:MM", local time
    status_page_url: str = ""
    template_dir: Path | None = None  # operator's subject.txt / body.txt / body.html; built-in ones fill the gaps
    backlog_age_min: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))
    backlog_jobs: int = dataclasses.field(default=50, metadata=f.check(f.at_least(1)))
    central_down_min: float = dataclasses.field(default=5.0, metadata=f.check(f.at_least(0)))
    # The MQTT broker out of reach this long is mailed: orders over MQTT do not arrive meanwhile.
    mqtt_down_min: float = dataclasses.field(default=5.0, metadata=f.check(f.at_least(0)))
    # A scanner gone this long is mailed: a cable replugged, a USB port reset, is no news.
    scanner_down_min: float = dataclasses.field(default=3.0, metadata=f.check(f.at_least(0)))
    disk_free_min_mb: int = dataclasses.field(default=200, metadata=f.check(f.at_least(0)))
    # A write the card has not finished in this long is a stall (a worn SD card's, a dying one's): told at once.
    storage_stall_s: float = dataclasses.field(default=20.0, metadata=f.check(f.positive))
    check_interval_s: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))
    retry_base_s: float = dataclasses.field(default=5.0, metadata=f.check(f.positive))
    retry_max_s: float = dataclasses.field(default=600.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CentralSettings:
    url: str = dataclasses.field(default="", metadata=f.check(f.central_url))  # empty: no central API, no sync
    # bearer token for the central API; required with url
    token: Secret = dataclasses.field(default=_NO_SECRET, metadata=f.check(f.bearer_token))
    # The store network's outbound proxy (http://host:port) for central's API and MQTT broker; "": straight to them.
    # The environment's HTTPS_PROXY is not used: a box-wide setting meant for apt must not redirect orders.
    proxy: str = dataclasses.field(default="", metadata=f.check(f.proxy_url))
    proxy_user: str = dataclasses.field(default="", metadata=f.check(f.basic_login))  # the proxy's Basic login
    proxy_password: Secret = _NO_SECRET  # better as EDGE_CENTRAL_PROXY_PASSWORD in edge.env
    connect_timeout_s: float = dataclasses.field(default=3.0, metadata=f.check(f.positive))
    read_timeout_s: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))
    max_attempts: int = dataclasses.field(default=6, metadata=f.check(f.at_least(1)))  # per request, then give up
    retry_base_s: float = dataclasses.field(default=0.5, metadata=f.check(f.positive))
    retry_max_s: float = dataclasses.field(default=30.0, metadata=f.check(f.positive))
    # every request to central, probes included
    rate_limit_rps: float = dataclasses.field(default=5.0, metadata=f.check(f.positive))
    # The contract's largest page: the number of list requests, not the orders, is what the rate limit meters.
    page_size: int = dataclasses.field(default=1000, metadata=f.check(f.between(1, 1000)))
    # Orders per processing transaction (one fsync each: fewer, bigger ones are kinder to an SD card; a push waits
    # at most one of them), and status events per POST (the contract allows at most 500).
    batch_size: int = dataclasses.field(default=500, metadata=f.check(f.at_least(1)))
    # Random 0..this delay before a recovery after an outage: small, so the kitchen gets its backlog at once; the
    # rate limit, Retry-After and the backend's 429s protect central from a fleet (scripts/bench.py, fleet).
    start_jitter_s: float = dataclasses.field(default=2.0, metadata=f.check(f.between(0, 3, " seconds")))
    schedule_interval_s: float = dataclasses.field(default=900.0, metadata=f.check(f.at_least(0)))  # 0: no runs
    probe_max_s: float = dataclasses.field(default=0.5, metadata=f.check(f.positive))  # probe gap while down, at most
    probe_up_s: float = dataclasses.field(default=15.0, metadata=f.check(f.positive))  # probe gap while up
    # Central taking connections and answering nothing (its application hung behind a load balancer) reads as a slow
    # health check, up, for this long; then it is down like any outage (alerts, a recovery run when it answers).
    silent_down_s: float = dataclasses.field(default=60.0, metadata=f.check(f.positive))
    # An order whose status events central refuses (410 for an order it archived, 409, a 422 not for good) is set aside,
    # its events pending, and tried again this often (one event, plus jitter); the other orders' events go meanwhile.
    refused_retry_s: float = dataclasses.field(default=300.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """The broker link (edge/sync/mqtt.py, docs/mqtt.md): orders in, status events and presence out."""

    url: str = dataclasses.field(default="", metadata=f.check(f.mqtt_url))  # empty: no MQTT (nothing is imported)
    username: str = ""
    password: Secret = _NO_SECRET  # better as EDGE_MQTT_PASSWORD in edge.env
    client_id: str = ""  # "": edge-<store_id>; the same across restarts, or the broker forgets the session
    topic_prefix: str = dataclasses.field(default="", metadata=f.check(f.topic_prefix))  # "": edge/<store_id>
    ca_file: Path | None = None  # extra CA to trust besides the system's (mqtts://); the host name is always checked
    cert_file: Path | None = None  # client certificate for mutual TLS, with key_file
    key_file: Path | None = None
    keepalive_s: int = dataclasses.field(default=30, metadata=f.check(f.between(5, 3600, " seconds")))
    # The session (unacknowledged orders, orders published while the box is off) outlives a disconnect this long.
    session_expiry_s: int = dataclasses.field(default=7 * 24 * 3600, metadata=f.check(f.at_least(7 * 24 * 3600)))
    reconnect_max_s: float = dataclasses.field(default=30.0, metadata=f.check(f.positive))  # longest backoff

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "" if self.url else ""  # IPv6 without its brackets

    @property
    def port(self) -> int:
        return (urllib.parse.urlsplit(self.url).port if self.url else None) or (8883 if self.tls else 1883)


# The sections that are one table each, in the order they are read; [printers], [stations], [staleness] and
# [scanners] are tables of named entries, read one by one.
SECTIONS: dict[str, type] = {
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
    "mqtt": MqttSettings,
}


@dataclasses.dataclass(frozen=True)
class UnknownVariable:
    """An EDGE_* variable in the secrets file, or under a section's prefix in the process environment, that names no
    setting (a misspelt key): it changes nothing."""

    line: int | None  # None: set in the process environment (a systemd drop-in, a shell export), not the file
    name: str
    suggestion: str | None = None  # the nearest variable that is a setting

    def __str__(self) -> str:
        where = "" if self.line is None else f"line {self.line}: "
        return f"{where}{self.name}{f' (did you mean {self.suggestion}?)' if self.suggestion else ''}"

    def problem(self) -> str:
        hint = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        where = "" if self.line is None else f"line {self.line}: "
        return f"{where}{self.name} names no setting, so it changes nothing{hint}"


@dataclasses.dataclass(frozen=True)
class Unsafe:
    """A setting that works but puts a secret at risk (a short token, a secret in a file others may read, one sent in
    clear) or shows badly (a store name too long, or with a hidden character): told by `edge config check`, the
    start's log and `edge doctor`, never refused, so that an upgrade does not stop a store that works."""

    key: str  # the setting (or file) to change
    problem: str  # one line: what, why, and the fix; never the secret

    def __str__(self) -> str:
        return self.problem


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    agent: AgentSettings
    api: ApiSettings
    printers: dict[str, AnyPrinterSettings]
    stations: dict[str, list[str]]
    receipts: ReceiptSettings
    spool: SpoolSettings
    retention: RetentionSettings
    backup: BackupSettings
    printing: PrintingSettings
    smtp: SmtpSettings
    alerts: AlertSettings
    central: CentralSettings
    mqtt: MqttSettings = dataclasses.field(default_factory=MqttSettings)  # url "": no MQTT
    staleness: dict[str, float] = dataclasses.field(default_factory=dict)  # [staleness] STATION = minutes
    scanners: dict[str, ScannerSettings] = dataclasses.field(default_factory=dict)
    source: str = ""  # where it came from, for messages
    secrets_file: Path | None = None  # the secrets file it read (edge.env), for messages
    # Keys edge.toml sets that edge.env (or the process environment) overrides, one line each naming the winner, and
    # the EDGE_* variables of edge.env that name no setting: `edge config check` and the start log name them.
    overridden: tuple[str, ...] = ()
    unknown_variables: tuple[UnknownVariable, ...] = ()
    unsafe: tuple[Unsafe, ...] = ()  # settings that work but put a secret at risk or show badly, one line each

    @property
    def unmailed_alerts(self) -> str | None:
        """Recipients set and no relay (mail set up by half): what the agent's start and `edge config check` say;
        None otherwise."""
        if self.alerts.to and not self.smtp.host:
            return (
                "alerts.to is set but smtp.host is not: no alert mail will go out (set mail up with "
                "setup-notifications)"
            )
        return None

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"edge-{self.agent.store_id}"

    @property
    def mqtt_prefix(self) -> str:
        return self.mqtt.topic_prefix or f"edge/{self.agent.store_id}"

    def secrets(self) -> list[str]:
        """Every secret value, so logging can scrub them wherever they turn up."""
        found = []
        for section in [getattr(self, name) for name in SECTIONS] + list(self.printers.values()):
            for field in dataclasses.fields(section):
                value = getattr(section, field.name)
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, Secret) and item:
                        found.append(item.get())
        return found
