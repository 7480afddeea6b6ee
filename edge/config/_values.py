"""Value types and formats settings hold: secrets, webhook keys, times of day, mail addresses, loopback hosts."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re


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


# Tokens that only stand in for a real one (the example's "change-me" and kin), compared without case, - _ or blanks.
_PLACEHOLDER_TOKENS = {"changeme", "replaceme", "secret", "token", "example", "todo"}


def is_placeholder_token(value: object) -> bool:
    return isinstance(value, str) and re.sub(r"[-_\s]", "", value.lower()) in _PLACEHOLDER_TOKENS


def signing_key(secret: Secret) -> bytes:
    """The HMAC key of a Standard Webhooks ``whsec_<base64>`` secret (the prefix is optional, as in the spec's libs)."""
    return base64.b64decode(secret.get().removeprefix("whsec_"), validate=True)


_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_clock(value: str) -> dt.time:
    match = _CLOCK_RE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"must be a time of day HH:MM, got {value!r}")
    return dt.time(int(match.group(1)), int(match.group(2)))


def parse_hours(value: str) -> tuple[dt.time, dt.time] | None:
    """'' → None (no window); 'HH:MM-HH:MM' → (start, end), which may wrap midnight; 'HH:MM' → (t, t)."""
    if not value.strip():
        return None
    parts = value.split("-")
    if len(parts) == 1:
        t = parse_clock(parts[0])
        return t, t
    if len(parts) != 2:
        raise ValueError(f"must be HH:MM-HH:MM, e.g. 08:00-23:00, got {value!r}")
    return parse_clock(parts[0]), parse_clock(parts[1])


_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*")


def check_address(address: str) -> None:
    """ValueError unless ``address`` is one bare address SMTP without SMTPUTF8 (RFC 6531, which many relays lack) can
    carry: the part before the @ in ASCII; an internationalised domain goes as its A-labels (the mailer's
    edge.alerts.addresses, which needs a package this layer does not import)."""
    if not _ADDRESS_RE.fullmatch(address):
        raise ValueError(f"{address!r} is not an e-mail address (name@example.com)")
    ascii_local_part(address)


def ascii_local_part(address: str) -> None:
    """ValueError if the part before the @ is not ASCII: only SMTPUTF8 carries that."""
    if not address.rpartition("@")[0].isascii():
        raise ValueError(
            f"{address!r}: letters like ä, ö, ü or ß before the @ need SMTPUTF8, which most mail servers do not"
            " offer; use an address without them (an umlaut after the @ is fine)"
        )


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
        check_address(entry)
        if entry not in found:
            found.append(entry)
    return found


def shown_url(url: str) -> str:
    """A URL as every message, page and log line shows it: without a login, a query or a fragment, where keys and
    passwords go (Azure Functions' ?code=, ?api_key=; the security81 probe, F2). The settings refuse those parts, so
    this is for what slipped past: a value an error repeats, a URL a library hands back."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    shown = url[:cut] + ("?…" if cut < len(url) else "")
    scheme, sep, rest = shown.rpartition("://")
    if "@" in rest:  # a login: everything before its last "@" may be the password
        rest = "…@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def is_loopback_host(host: str) -> bool:
    """This box by name or address (localhost, 127.0.0.0/8, ::1); any other name may resolve to anywhere."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
