"""Field checks: each returns what is wrong with a value, or None when it is fine; the loader names the key."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config._values import Secret, is_placeholder_token, parse_hours, parse_recipients, shown_url, signing_key

Check = Callable[[Any], str | None]

_NAME_RE = re.compile(r"[a-z0-9_\-]{1,32}")  # fullmatch: "$" would let a trailing newline through


def check(*checks: Check, required: str | None = None, required_key: str | None = None) -> dict[str, Any]:
    """Field metadata: ``checks`` run in order, the first problem stops the load.

    Args:
        required: the field must be set to something (not empty, not zero), else this is the problem.
        required_key: the field that problem is reported under, when it is named together with another one.
    """
    return {"checks": checks, "required": required, "required_key": required_key}


def port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else f"must be a port number between 1 and 65535, got {v}"


def listen_port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be a port number between 1 and 65535 (0: any free port), got {v}"


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be greater than 0, got {v}"


def at_least(low: int) -> Check:
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def between(low: float, high: float, unit: str = "") -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}{unit}, got {v}"


def one_of(*choices: float) -> Check:
    listed = ", ".join(map(str, choices[:-1])) + f" or {choices[-1]}"
    return lambda v: None if v in choices else f"must be {listed}, got {v}"


def given(problem: str) -> Check:
    """Set to something: an empty value is as good as missing."""
    return lambda v: None if v else problem


def timezone(v: str) -> str | None:
    if not v:
        return None
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {v!r} (use a name like Europe/Berlin)"
    return None


def time_of_day(v: str) -> str | None:
    return (
        None if re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) else f"must be a time of day HH:MM, e.g. 04:00, got {v!r}"
    )


def hours(v: str) -> str | None:
    try:
        parse_hours(v)
    except ValueError as err:
        return str(err)
    return None


def recipients(v: list[str]) -> str | None:
    try:
        parse_recipients(v)
    except ValueError as err:
        return str(err)
    return None


def signing_secrets(v: list[Secret]) -> str | None:
    for n, secret in enumerate(v):
        try:
            key = signing_key(secret)
        except ValueError:
            return f"entry {n} is not a whsec_<base64> secret"
        if not 24 <= len(key) <= 64:
            return f"entry {n} must decode to 24-64 bytes (Standard Webhooks), got {len(key)}"
    return None


_HOST_NAME_RE = re.compile(r"^\.?[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*$", re.IGNORECASE)


def host_names(v: list[str]) -> str | None:
    for n, name in enumerate(v):
        if not _HOST_NAME_RE.match(name):
            return (
                f"entry {n} must be a name like edge.example.com or .example.com (no port, scheme or *), got {name!r}"
            )
    return None


def name(v: str) -> str | None:
    return None if _NAME_RE.fullmatch(v) else f"must be 1-32 lowercase letters, digits, '-' or '_', got {v!r}"


def usb_id(v: int) -> str | None:
    return None if 0 <= v <= 0xFFFF else f"must be between 0 and 0xffff, got {v}"


_USB_PORT_RE = re.compile(r"[0-9]{1,3}-[0-9]{1,3}(\.[0-9]{1,3}){0,6}")


def usb_port(v: str) -> str | None:
    """A USB socket as sysfs names it (bus, then the port on each hub): "1-1.2"; empty for any."""
    if not v or _USB_PORT_RE.fullmatch(v):
        return None
    return f"must be a USB socket as `ls /sys/bus/usb/devices` names it, like 1-1.2, got {v!r}"


def absolute_path(example: str) -> Check:
    """A folder written from /: a relative one is taken from wherever a command runs (the agent's unit: /), so each
    `edge` command would use a folder of its own."""
    return lambda v: None if v.is_absolute() else f"must be an absolute path like {example}, got {str(v)!r}"


def existing_file(v: Path) -> str | None:
    return None if v.is_file() else f"{v}: no such file"


_ADDRESS_NAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def network_host(v: str) -> str | None:
    """A host name or IP address (a printer's, the mail relay's), as a socket takes it; the usual slips (a port, a URL)
    named with the fix."""
    if not v:
        return None  # "required" says so
    try:
        ipaddress.ip_address(v.split("%", 1)[0])  # IPv6 with a zone (fe80::1%eth0) too
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", v):  # no name is all digits: glibc would ask DNS for it, or read 10.1 as 10.0.0.1
        return f"{v} is not an IPv4 address: it is four numbers 0-255 with dots, like 192.168.1.30"
    if "://" in v:
        address = urllib.parse.urlsplit(v).hostname or "…"
        return f'is a URL: write only the address, host = "{address}"'
    address, colon, port = v.rpartition(":")
    if colon and port.isdigit() and _ADDRESS_NAME_RE.fullmatch(address.strip("[]")):
        return f'holds a port: write host = "{address.strip("[]")}" and port = {port}'
    return None if _ADDRESS_NAME_RE.fullmatch(v) and len(v) <= 253 else "is not a host name or an IP address"


def helo_name(v: str) -> str | None:
    """What EHLO may carry (RFC 5321 4.1.1.1): a domain, or an address literal such as [192.0.2.7]."""
    if not v or _ADDRESS_NAME_RE.fullmatch(v) or re.fullmatch(r"\[(IPv6:)?[0-9A-Fa-f:.]+\]", v):
        return None
    return f'must be a host name like "till-3.shop.example.com" or an address literal like "[192.0.2.7]", got {v!r}'


def _login_in(v: str) -> bool:
    """Whether a URL carries a login: any "@" in it. Not what a URL parser calls the authority: that ends
    at the first "/", "?" or "#", which a password may hold, and a URL it cannot parse (an unclosed "[") has none, so a
    login got through both (the verify78 probe, V1). A path with "@" in it is refused with them: none of these needs
    one. So a URL a refusal repeats holds no password."""
    return "@" in v


def _bad_url(v: str) -> str:
    """A URL a refusal repeats: scheme and host, not its path, query or login (a key pasted with it stays out of the
    journal); a blank, the usual slip, named."""
    scheme, sep, rest = shown_url(v).partition("://")
    if not sep:
        rest = scheme
    host, slash, _ = rest.partition("/")
    blank = " (it holds a blank)" if " " in v else ""
    return f"{scheme + sep if sep else ''}{host}{'/…' if slash else ''}{blank}"


def central_url(v: str) -> str | None:
    if _login_in(v):  # the box's credential is its token; a password here would be logged and shown with the URL
        return "must not hold a login: the box signs in with central.token (EDGE_CENTRAL_TOKEN in the secrets file)"
    if "?" in v or "#" in v:  # the agent adds its paths after the URL: after a query they never reached central
        return (
            "must not hold a query (?…) or fragment (#…): the agent adds its paths (/v1/…) after the URL, so no call"
            " would reach central; a key central gives goes in central.token (EDGE_CENTRAL_TOKEN in the secrets file),"
            " sent as the bearer token"
        )
    return (
        None
        if not v or re.fullmatch(r"https?://[^/\s]+(/\S*)?", v)
        else f"must be an http:// or https:// URL (or empty: no central API), got {_bad_url(v)!r}"
    )


def _plain_address(v: str, schemes: tuple[str, ...], *, port_required: bool) -> bool:
    """scheme://host[:port] and nothing else: no login, path, query or fragment (IPv6 in brackets)."""
    try:
        parts = urllib.parse.urlsplit(v)
        port = parts.port  # ValueError when not a number in 0-65535
    except ValueError:
        return False
    plain = not (parts.username or parts.password or parts.query or parts.fragment) and parts.path in ("", "/")
    has_port = port is not None if port_required else port != 0
    return bool(parts.scheme in schemes and parts.hostname and plain and has_port and " " not in v)


def proxy_url(v: str) -> str | None:
    """http://host:port of a forward proxy; its login goes in proxy_user and the secrets file, never in the URL."""
    if not v or _plain_address(v, ("http",), port_required=True):
        return None
    if _login_in(v):
        return "must not hold a login: set central.proxy_user and EDGE_CENTRAL_PROXY_PASSWORD in the secrets file"
    return f"must be http://host:port (or empty: no proxy), got {_bad_url(v)!r}"


_CONTROL_NAMES = {"\t": "a tab", "\n": "a line break", "\r": "a line break (carriage return)"}


def bearer_token(v: Secret) -> str | None:
    """A token an Authorization header carries: a control character (a tab or line break pasted with it from a
    spreadsheet cell or a TOML \\n) or a blank at either end cannot go in one (header values are trimmed and end at a
    line break), so every call was refused, and a line break crashed every `edge` command with a traceback printing
    the token (the security81 probe, F6). Named by what and where, never the value."""
    token = v.get()
    bad = next((c for c in token if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        what = _CONTROL_NAMES.get(bad, f"the control character U+{ord(bad):04X}")
        where = "ends in" if token.endswith(bad) else "holds"
        return (
            f"{where} {what} (the value not shown: a secret), which no HTTP request can carry: every call with it would"
            " be refused; write the token without it"
        )
    if token != token.strip(" ") and not is_placeholder_token(token):  # that one's refusal says where the real goes
        return (
            "begins or ends with a blank (the value not shown: a secret), which HTTP trims off: every call with it"
            " would be refused; write the token without it"
        )
    return None


def basic_login(v: str) -> str | None:
    return "must not contain a colon (HTTP Basic, RFC 7617)" if ":" in v else None


def mqtt_url(v: str) -> str | None:
    """mqtt:// or mqtts://, a host name or address (IPv6 in brackets: mqtt://[fd00::5]:1883), a port or none."""
    if not v or _plain_address(v, ("mqtt", "mqtts"), port_required=False):
        return None
    if _login_in(v):
        return "must not hold a login: set mqtt.username and EDGE_MQTT_PASSWORD in the secrets file"
    return f"must be mqtt://host:port or mqtts://host:port (or empty: no MQTT), got {_bad_url(v)!r}"


def topic_prefix(v: str) -> str | None:
    if not v:
        return None
    if any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
        return f"must be a topic path without wildcards or a leading/trailing '/', e.g. edge/store-1, got {v!r}"
    return None
