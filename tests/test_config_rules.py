"""Config rules: every rule stops the start with its message word for word; each printer type holds its own keys."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge.config import parse_settings
from edge.errors import ConfigError

BASE = '[agent]\nstore_id = "s1"\n[api]\ntoken = "tok-0123456789abcdef"\n[printers.kitchen]\ntype = "file"\n'
SIGNED = BASE.replace('token = "tok-0123456789abcdef"', "require_signature = true")
PLACEHOLDER = BASE.replace("tok-0123456789abcdef", "change-me")
SMTP = '[smtp]\nhost = "smtp.example.com"\n'

RULES = [
    (
        BASE + '[stations]\nkitchen = ["kitchen", "bar"]\n',
        "stations.kitchen",
        "printer 'bar' is not configured (known: kitchen)",
    ),
    (BASE + "[stations]\nkitchen = []\n", "stations.kitchen", "must name at least one printer"),
    (
        BASE + '[stations]\nKitchen = "kitchen"\n',
        "stations.Kitchen",
        "station name must be 1-32 lowercase letters, digits, '-' or '_', got 'Kitchen'",
    ),
    (BASE + "[staleness]\nbar = 5\n", "staleness.bar", "station 'bar' is not in [stations] (known: none)"),
    (
        BASE + '[receipts]\nprinter = "front"\n',
        "receipts.printer",
        "printer 'front' is not configured (known: kitchen)",
    ),
    (BASE + "[receipts]\nby_default = true\n", "receipts.by_default", "is true but receipts.printer is not set"),
    (
        BASE + '[receipts]\nenabled = false\nprinter = "kitchen"\n',
        "receipts.enabled",
        "is false (this box prints no receipts) but receipts.printer is set: unset one of the two",
    ),
    (
        BASE + "[receipts]\nenabled = false\nby_default = true\n",
        "receipts.by_default",
        "is true but receipts.enabled is false (this box prints no receipts)",
    ),
    (
        BASE.replace('token = "tok-0123456789abcdef"', 'token = ""'),
        "api.token",
        "is required unless api.require_signature is true (set it in the config file or EDGE_API_TOKEN)",
    ),
    (
        PLACEHOLDER,
        "api.token",
        "is the example's placeholder 'change-me', which anyone could guess: put a long random token in EDGE_API_TOKEN"
        " in the secrets file edge.env beside the config"
        " (e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
    ),
    (SIGNED, "api.signing_secrets", "is required when api.require_signature is true"),
    (
        BASE + '[central]\nurl = "http://c.example"\n',
        "central.token",
        "is required when central.url is set (set it in the config file or EDGE_CENTRAL_TOKEN)",
    ),
    (
        BASE + SMTP + 'sender = "a@b.test"\n',
        "alerts.to",
        "is required when smtp.host is set (set it in the config file or EDGE_ALERT_TO)",
    ),
    (
        BASE + SMTP + 'security = "none"\nusername = "u"\n[alerts]\nto = ["a@b.test"]\n',
        "smtp.security",
        "is none with a login to smtp.example.com: the password would cross the network unencrypted; use starttls or"
        " tls, or set smtp.allow_plain_login = true for a relay on a network you trust",
    ),
    (
        BASE + SMTP + '[alerts]\nto = ["a@b.test"]\n',
        "smtp.sender",
        "is required when smtp.host is set and smtp.username is empty (EDGE_SMTP_FROM)",
    ),
    (
        BASE + '[scanners.s]\nport = "/dev/ttyACM0"\nstation = "bar"\n',
        "scanners.s.station",
        "station 'bar' is not in [stations] (known: none)",
    ),
    (
        BASE + '[scanners.s]\nport = "/dev/ttyACM0"\n[scanners.t]\nport = "/dev/ttyACM0"\n',
        "scanners.t.port",
        "/dev/ttyACM0 is already the port of scanner 's'",
    ),
    (
        BASE + '[scanners.s]\nport = ""\n',
        "scanners.s.port",
        "is required, e.g. /dev/ttyACM0 or /dev/serial/by-id/usb-...",
    ),
    (
        BASE + "[scanners.s]\nbaudrate = 9600\n",
        "scanners.s.port",
        "is required (set it in the config file or EDGE_SCANNERS_S_PORT)",
    ),
    (
        BASE + '[scanners.S]\nport = "/dev/x"\n',
        "scanners.S",
        "scanner name must be 1-32 lowercase letters, digits, '-' or '_', got 'S'",
    ),
    (
        BASE + '[printers.K]\ntype = "file"\n',
        "printers.K",
        "printer name must be 1-32 lowercase letters, digits, '-' or '_', got 'K'",
    ),
    (BASE + "[printers]\nk = 1\n", "printers.k", "must be a table ([printers.NAME])"),
    (
        BASE + "[printers.k]\nwidth = 48\n",
        "printers.k.type",
        "is required (set it in the config file or EDGE_PRINTERS_K_TYPE)",
    ),
    (
        BASE + '[printers.k]\ntype = "bluetooth"\n',
        "printers.k.type",
        "must be one of 'network', 'usb', 'serial', 'file', got 'bluetooth'",
    ),
    (BASE + '[printers.k]\ntype = "network"\n', "printers.k.host", "is required for a network printer"),
    (BASE + '[printers.k]\ntype = "network"\nhost = ""\n', "printers.k.host", "is required for a network printer"),
    (
        BASE + '[printers.k]\ntype = "usb"\nvendor_id = 1\n',
        "printers.k.vendor_id",
        "and product_id are required for a usb printer (see `lsusb`)",
    ),
    (
        BASE + '[printers.k]\ntype = "usb"\nproduct_id = 1\n',
        "printers.k.vendor_id",
        "and product_id are required for a usb printer (see `lsusb`)",
    ),
    (
        BASE + '[printers.k]\ntype = "usb"\nvendor_id = 0\nproduct_id = 1\n',
        "printers.k.vendor_id",
        "and product_id are required for a usb printer (see `lsusb`)",
    ),
    (
        BASE + '[printers.k]\ntype = "serial"\n',
        "printers.k.device",
        "is required for a serial printer, e.g. /dev/serial/by-id/usb-...",
    ),
    (
        BASE + '[printers.k]\ntype = "file"\nlogo = "/nonexistent.png"\n',
        "printers.k.logo",
        "/nonexistent.png: no such file",
    ),
    (
        BASE + "[nope]\n",
        "nope",
        "unknown section (known: agent, alerts, api, backup, central, mqtt, printers, printing, receipts, retention,"
        " scanners, smtp, spool, staleness, stations)",
    ),
    (
        BASE + "[spool]\nmax_attempt = 1\n",
        "spool.max_attempt",
        "unknown key (known: max_attempts, retry_base_s, retry_max_s, offline_probe_max_s)",
    ),
]


@pytest.mark.parametrize(("toml", "key", "problem"), RULES)
def test_each_rule_names_its_key_word_for_word(toml: str, key: str, problem: str) -> None:
    """Each config mistake stops the check with the same key and the same words as before the loader was split."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(toml), source="test")
    assert (caught.value.key, caught.value.problem) == (key, problem)


PRINTER_KEYS = {
    "type",
    "host",
    "port",
    "path",
    "vendor_id",
    "product_id",
    "serial_number",
    "usb_port",
    "interface",
    "in_ep",
    "out_ep",
    "device",
    "baudrate",
    "bytesize",
    "parity",
    "stopbits",
    "flow_control",
    "width",
    "profile",
    "codepage",
    "cut",
    "cash_drawer",
    "logo",
    "qr",
    "qr_fragment_height",
    "connect_timeout",
    "write_timeout",
    "status_timeout",
    "status_poll_s",
    "answers_status",
    "cancel_kanji",
}


def test_unknown_printer_key_lists_every_printer_key() -> None:
    """A misspelt printer key is refused, naming it and listing every key a printer table may hold."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(BASE + '[printers.k]\ntype = "file"\nwidht = 1\n'), source="test")
    assert caught.value.key == "printers.k.widht"
    listed = caught.value.problem.removeprefix("unknown key (known: ").removesuffix(")")
    assert caught.value.problem.startswith("unknown key (known: ") and set(listed.split(", ")) == PRINTER_KEYS


PRINTERS = """
[printers.net]
type = "network"
host = "10.0.0.21"
[printers.stick]
type = "usb"
vendor_id = 0x04b8
product_id = 0x0e15
[printers.old]
type = "serial"
device = "/dev/serial/by-id/usb-x"
[printers.debug]
type = "file"
"""

TRANSPORT_KEYS = {
    "net": {"host", "port", "connect_timeout", "write_timeout"},
    "stick": {"vendor_id", "product_id", "interface", "in_ep", "out_ep", "write_timeout"},
    "old": {"device", "baudrate", "bytesize", "parity", "stopbits", "flow_control", "write_timeout"},
    "debug": {"path"},
}


def test_each_printer_type_holds_only_its_transport_keys(tmp_path: Path) -> None:
    """A network printer has a host and no USB ids, a file printer a path and no port: one settings type per
    transport, each with the keys every printer shares."""
    toml = f'[agent]\nstore_id = "s1"\ndata_dir = "{tmp_path}"\n[api]\ntoken = "tok-0123456789abcdef"\n' + PRINTERS
    printers = parse_settings(tomllib.loads(toml), source="test").printers
    transport_keys = set().union(*TRANSPORT_KEYS.values())
    for name, own in TRANSPORT_KEYS.items():
        printer = printers[name]
        assert {key for key in transport_keys if hasattr(printer, key)} == own, name
        assert hasattr(printer, "width") and hasattr(printer, "status_poll_s")
    assert printers["debug"].path == tmp_path / "out" / "debug"
    assert (printers["stick"].vendor_id, printers["old"].device, printers["net"].port) == (
        0x04B8,
        "/dev/serial/by-id/usb-x",
        9100,
    )


def test_printer_switched_to_another_type_keeps_its_old_keys_accepted() -> None:
    """A printer changed from network to usb that still has its host line starts as before; the stale keys are
    checked as before (a port out of range is still refused) and left out of the usb printer."""
    usb = '[printers.k]\ntype = "usb"\nvendor_id = 1\nproduct_id = 2\nhost = "10.0.0.9"\nport = 9100\n'
    printer = parse_settings(tomllib.loads(BASE + usb), source="test").printers["k"]
    assert (printer.type, printer.vendor_id, printer.product_id) == ("usb", 1, 2)
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads(BASE + usb.replace("port = 9100", "port = 70000")), source="test")
    assert (caught.value.key, caught.value.problem) == (
        "printers.k.port",
        "must be a port number between 1 and 65535, got 70000",
    )


def test_environment_may_switch_a_printers_type() -> None:
    """EDGE_PRINTERS_<NAME>_TYPE wins over the file, and the printer gets the keys of the type it names."""
    env = {"EDGE_PRINTERS_KITCHEN_TYPE": "network", "EDGE_PRINTERS_KITCHEN_HOST": "10.0.0.7"}
    printer = parse_settings(tomllib.loads(BASE), env=env, source="test").printers["kitchen"]
    assert (printer.type, printer.host, printer.port) == ("network", "10.0.0.7", 9100)
