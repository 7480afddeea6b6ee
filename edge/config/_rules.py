"""Rules across keys and sections, one named function each: a rule raises ConfigError naming the key to fix."""

from __future__ import annotations

import email.utils
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable

from edge.chars import CONTROL, DIRECTION
from edge.config._sections import ScannerSettings, Settings, Unsafe
from edge.config._values import ascii_local_part, is_loopback_host, is_placeholder_token
from edge.errors import ConfigError


def _known(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"


def stations_name_known_printers(s: Settings) -> None:
    for station, printers in s.stations.items():
        for printer in printers:
            if printer not in s.printers:
                raise ConfigError(
                    f"stations.{station}", f"printer {printer!r} is not configured (known: {_known(s.printers)})"
                )


def staleness_names_known_stations(s: Settings) -> None:
    for station in s.staleness:
        if station not in s.stations:
            raise ConfigError(
                f"staleness.{station}", f"station {station!r} is not in [stations] (known: {_known(s.stations)})"
            )


def scanners_name_known_stations(s: Settings) -> None:
    for scanner in s.scanners.values():
        if scanner.station is not None and scanner.station not in s.stations:
            raise ConfigError(
                f"scanners.{scanner.name}.station",
                f"station {scanner.station!r} is not in [stations] (known: {_known(s.stations)})",
            )


def scanners_have_ports_of_their_own(s: Settings) -> None:
    """Also by two names of one device (a /dev/serial/by-id/... link and the /dev/ttyUSB0 it points to): two readers
    cannot share it, the second could never open it."""
    seen: dict[str, ScannerSettings] = {}
    for scanner in s.scanners.values():
        device = os.path.realpath(scanner.port)  # a link not there yet (the scanner unplugged) names itself
        if other := seen.get(device):
            key = f"scanners.{scanner.name}.port"
            if other.port == scanner.port:
                raise ConfigError(key, f"{scanner.port} is already the port of scanner {other.name!r}")
            raise ConfigError(
                key,
                f"{scanner.port} and scanners.{other.name}.port ({other.port}) are one device ({device}):"
                " one scanner a device",
            )
        seen[device] = scanner


def receipts_printer_exists(s: Settings) -> None:
    printer = s.receipts.printer
    if printer is not None and printer not in s.printers:
        raise ConfigError("receipts.printer", f"printer {printer!r} is not configured (known: {_known(s.printers)})")


def receipts_off_print_nothing(s: Settings) -> None:
    if s.receipts.enabled:
        return
    if s.receipts.printer is not None:
        raise ConfigError(
            "receipts.enabled",
            "is false (this box prints no receipts) but receipts.printer is set: unset one of the two",
        )
    if s.receipts.by_default:
        raise ConfigError("receipts.by_default", "is true but receipts.enabled is false (this box prints no receipts)")


def receipts_by_default_need_a_printer(s: Settings) -> None:
    if s.receipts.by_default and s.receipts.printer is None:
        raise ConfigError("receipts.by_default", "is true but receipts.printer is not set")


def _where_the_token_goes(s: Settings) -> str:
    """The secrets file EDGE_API_TOKEN is looked for in, and when it is empty (a power cut can leave a file written
    without an fsync so) or missing, that too."""
    path = s.secrets_file
    if path is None:
        return "the secrets file edge.env beside the config"
    try:
        empty = path.stat().st_size == 0
    except FileNotFoundError:
        return f"{path} (there is no such file)"
    except OSError:
        return str(path)  # what keeps it from being read is the loader's error, before the rules run
    return f"{path} (it is empty)" if empty else str(path)


def token_or_signature_required(s: Settings) -> None:
    if not s.api.token and not s.api.require_signature:
        if s.secrets_file is None:
            raise ConfigError(
                "api.token",
                "is required unless api.require_signature is true (set it in the config file or EDGE_API_TOKEN)",
            )
        raise ConfigError(
            "api.token",
            f"is required unless api.require_signature is true: set EDGE_API_TOKEN in {_where_the_token_goes(s)}"
            " (or token in [api] of the config file)",
        )


def placeholder_token_refused(s: Settings) -> None:
    token = s.api.token.get()
    if is_placeholder_token(token):
        raise ConfigError(
            "api.token",
            f"is the example's placeholder {token.strip()!r}, which anyone could guess: put a long random token in"
            f" EDGE_API_TOKEN in {_where_the_token_goes(s)}"
            " (e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
        )


def signature_needs_signing_secrets(s: Settings) -> None:
    if s.api.require_signature and not s.api.signing_secrets:
        raise ConfigError("api.signing_secrets", "is required when api.require_signature is true")


def central_url_needs_token(s: Settings) -> None:
    if s.central.url and not s.central.token:
        raise ConfigError(
            "central.token", "is required when central.url is set (set it in the config file or EDGE_CENTRAL_TOKEN)"
        )


def proxy_login_needs_proxy(s: Settings) -> None:
    c = s.central
    if (c.proxy_user or c.proxy_password) and not c.proxy:
        raise ConfigError("central.proxy", "is required when central.proxy_user or its password is set")
    if c.proxy_password and not c.proxy_user:
        raise ConfigError(
            "central.proxy_user", "is required when central.proxy_password is set (EDGE_CENTRAL_PROXY_PASSWORD)"
        )


def mqtt_files_fit(s: Settings) -> None:
    m = s.mqtt
    if not m.url:
        return
    if (m.ca_file or m.cert_file) and not m.tls:
        raise ConfigError("mqtt.url", f"is {m.url}: ca_file and cert_file need mqtts:// (TLS)")
    if bool(m.cert_file) != bool(m.key_file):
        missing = "mqtt.key_file" if m.cert_file else "mqtt.cert_file"
        raise ConfigError(missing, "mutual TLS needs both cert_file and key_file")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(m, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"mqtt.{key}", f"{path}: no such file")
    if m.password and not m.username:
        raise ConfigError("mqtt.username", "is required when mqtt.password is set (EDGE_MQTT_PASSWORD)")


def mail_files_fit(s: Settings) -> None:
    path = s.smtp.ca_file
    if s.smtp.host and path is not None and not path.is_file():
        raise ConfigError("smtp.ca_file", f"{path}: no such file")


def mail_needs_recipients(s: Settings) -> None:
    if s.smtp.host and not s.alerts.to:
        raise ConfigError("alerts.to", "is required when smtp.host is set (set it in the config file or EDGE_ALERT_TO)")


def plain_login_refused(s: Settings) -> None:
    if s.smtp.host and s.smtp.sends_password_in_clear and not s.smtp.allow_plain_login:
        raise ConfigError(
            "smtp.security",
            f"is none with a login to {s.smtp.host}: the password would cross the network unencrypted; use starttls"
            " or tls, or set smtp.allow_plain_login = true for a relay on a network you trust",
        )


def mail_needs_sender(s: Settings) -> None:
    if s.smtp.host and not (s.smtp.sender or s.smtp.username):
        raise ConfigError(
            "smtp.sender", "is required when smtp.host is set and smtp.username is empty (EDGE_SMTP_FROM)"
        )
    if s.smtp.host and (address := email.utils.parseaddr(s.smtp.sender or s.smtp.username)[1]):
        try:
            ascii_local_part(address)  # every mail would fail at the relay: the alerts' only way out
        except ValueError as err:
            raise ConfigError("smtp.sender", str(err)) from None


# Checked in this order once every section is read; the first broken rule stops the load.
RULES: tuple[Callable[[Settings], None], ...] = (
    stations_name_known_printers,
    staleness_names_known_stations,
    scanners_name_known_stations,
    scanners_have_ports_of_their_own,
    receipts_printer_exists,
    receipts_off_print_nothing,
    receipts_by_default_need_a_printer,
    token_or_signature_required,
    placeholder_token_refused,
    signature_needs_signing_secrets,
    central_url_needs_token,
    proxy_login_needs_proxy,
    mqtt_files_fit,
    mail_files_fit,
    mail_needs_recipients,
    plain_login_refused,
    mail_needs_sender,
)


# A token a client on the store's network can try in seconds: the agent does not slow wrong tries (a 4-digit one was
# found in 1.5 s, the security81 probe, F3). install.sh writes 43 characters.
SHORT_TOKEN = 16


def short_token(s: Settings) -> Unsafe | None:
    token = s.api.token.get()
    if not token or len(token) >= SHORT_TOKEN:
        return None
    return Unsafe(
        "api.token",
        f"api.token is {len(token)} characters long: a client on the store's network can guess it; use"
        f" {SHORT_TOKEN} or more random characters (e.g. from: openssl rand -hex 16) as EDGE_API_TOKEN in"
        f" {_where_the_token_goes(s)}, then give it to the senders",
    )


# A store name heads every receipt and every mail subject: longer than this wraps on paper and is cut on a phone.
STORE_NAME_MAX = 60
# What a name shows otherwise than typed: control characters, and direction marks and overrides (they turn the text
# after them around in a mail subject, as they did in dish names before stop 81).
_SHOWN_OTHERWISE = re.compile(f"{CONTROL.pattern}|{DIRECTION.pattern}")


def store_name_shown_badly(s: Settings) -> Unsafe | None:
    """Told, not refused: a name that worked before must not stop a store at its upgrade (the i18n82 probe, F5)."""
    name = s.agent.store_name
    if (hidden := _SHOWN_OTHERWISE.search(name)) is not None:
        return Unsafe(
            "agent.store_name",
            f"agent.store_name holds U+{ord(hidden[0]):04X} at character {hidden.start() + 1}, a character that"
            " shows otherwise than typed (a control character or a text-direction mark): it heads every receipt and"
            " mail subject; type the name again without it",
        )
    if len(name) > STORE_NAME_MAX:
        return Unsafe(
            "agent.store_name",
            f"agent.store_name is {len(name)} characters long: it heads every receipt (wrapped over several lines)"
            f" and every mail subject (cut on a phone); {STORE_NAME_MAX} or fewer read whole",
        )
    return None


def _off_the_box(url: str) -> str | None:
    """The host of ``url`` when it is not this box, else None."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return None if not host or is_loopback_host(host) else host


def mqtt_password_in_clear(s: Settings) -> Unsafe | None:
    m = s.mqtt
    if not (m.url and m.password and not m.tls) or not (host := _off_the_box(m.url)):
        return None
    return Unsafe(
        "mqtt.url",
        f"mqtt.url is mqtt:// to {host} with a password: the password (and every order) crosses the network"
        " unencrypted; use mqtts:// (port 8883) if the broker offers it",
    )


def central_token_in_clear(s: Settings) -> Unsafe | None:
    c = s.central
    if not (c.url.startswith("http://") and c.token) or not (host := _off_the_box(c.url)):
        return None
    return Unsafe(
        "central.url",
        f"central.url is http:// to {host}: central.token (and every order) crosses the network unencrypted;"
        " use https:// (plain http:// only on a network you trust)",
    )


# Told, not refused: each works and worked before (the upgrade rule); the order is the lines'.
WARNINGS: tuple[Callable[[Settings], Unsafe | None], ...] = (
    short_token,
    mqtt_password_in_clear,
    central_token_in_clear,
    store_name_shown_badly,
)
