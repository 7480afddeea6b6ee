"""Printer config: usb and serial sections, profile, stale ages per station; every mistake names its key."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from edge.config import parse_settings
from edge.errors import ConfigError
from edge.printing.profiles import _profile, check_profile, profile

BASE = """
[agent]
store_id = "s1"
[api]
token = "t"
[stations]
kitchen = ["counter", "bar"]
"""


def settings(extra: str) -> Any:
    """The settings as the agent starts with them: read by the config, each printer's profile checked by printing."""
    loaded = parse_settings(tomllib.loads(BASE + extra), source="test")
    for printer in loaded.printers.values():
        check_profile(printer.name, printer.profile)
    return loaded


USB = (
    '[printers.counter]\ntype = "usb"\nvendor_id = 0x04b8\nproduct_id = 0x0e15\nprofile = "TM-T20II"\n'
    'cut = "partial"\ncash_drawer = true\n'
)
SERIAL = (
    '[printers.bar]\ntype = "serial"\ndevice = "/dev/serial/by-id/usb-x"\nbaudrate = 19200\nparity = "even"\n'
    'stopbits = 2\nflow_control = "rtscts"\n'
)


def test_usb_and_serial_printers_parse() -> None:
    """Hex ids as lsusb shows them, serial line settings, and per-station stale ages all arrive typed."""
    s = settings(USB + SERIAL + "[printing]\nstale_ticket_min = 30\n[staleness]\nkitchen = 20\n")
    counter, bar = s.printers["counter"], s.printers["bar"]
    assert (counter.vendor_id, counter.product_id, counter.profile, counter.cut, counter.cash_drawer) == (
        0x04B8,
        0x0E15,
        "TM-T20II",
        "partial",
        True,
    )
    assert (bar.device, bar.baudrate, bar.parity, bar.stopbits, bar.flow_control) == (
        "/dev/serial/by-id/usb-x",
        19200,
        "even",
        2.0,
        "rtscts",
    )
    assert s.printing.stale_ticket_min == 30 and s.staleness == {"kitchen": 20.0}


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            '[printers.counter]\ntype = "usb"\nvendor_id = 0x04b8\n' + SERIAL,
            "printers.counter.vendor_id",
            "product_id are required",
        ),
        (USB + '[printers.bar]\ntype = "serial"\n', "printers.bar.device", "is required for a serial printer"),
        (
            USB.replace('cut = "partial"', 'usb_port = "port 2"') + SERIAL,
            "printers.counter.usb_port",
            "like 1-1.2",
        ),
        (USB.replace("TM-T20II", "TM-X") + SERIAL, "printers.counter.profile", "unknown python-escpos profile 'TM-X'"),
        (USB + SERIAL.replace("stopbits = 2", "stopbits = 3"), "printers.bar.stopbits", "must be 1, 1.5 or 2"),
        (USB + SERIAL.replace('"rtscts"', '"hardware"'), "printers.bar.flow_control", "must be one of"),
        (USB + SERIAL + "[staleness]\nbar = 20\n", "staleness.bar", "not in [stations]"),
        (USB + SERIAL + "[staleness]\nkitchen = -1\n", "staleness.kitchen", "at least 0"),
        (USB + SERIAL + '[printing]\ntemplate = "x"\n', "printing.template", "unknown key"),
        (
            USB.replace('cut = "partial"', 'logo = "/nonexistent/logo.png"') + SERIAL,
            "printers.counter.logo",
            "no such file",
        ),
    ],
)
def test_mistakes_name_the_key(extra: str, key: str, message: str) -> None:
    """Each wrong printer or printing value stops the config check with the key and the reason."""
    with pytest.raises(ConfigError) as caught:
        settings(extra)
    assert caught.value.key == key and message in caught.value.problem


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[printers."counter\\n"]\ntype = "file"\n', "printers.counter\n"),
        ('[printers.counter]\ntype = "file"\n[stations]\n"bar\\n" = "counter"\n', "stations.bar\n"),
        ('[printers.counter]\ntype = "file"\n[central]\nurl = "http://central\\nx"\ntoken = "t"\n', "central.url"),
        ('[printers.counter]\ntype = "file"\n[central]\nurl = "http://central x"\ntoken = "t"\n', "central.url"),
    ],
)
def test_names_and_urls_match_whole(toml: str, key: str) -> None:
    """A name with a trailing newline or a URL with junk after the host is refused, naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(tomllib.loads('[agent]\nstore_id = "s1"\n[api]\ntoken = "t"\n' + toml), source="test")
    assert caught.value.key == key


def test_only_the_models_a_box_asks_for_are_kept_from_the_printer_database() -> None:
    """python-escpos' capability database has 35 models; a box's printers use one or two. Each model asked for is read
    (and kept) on its own: a TM-T20II's width and code pages as before, an unknown name still named with its key.
    Before stop 81 all 35 were built at the first question and kept, 0.14 MB of an idle agent's 50 (issue 17; the
    startup helper of stop 81)."""
    _profile.cache_clear()
    assert profile("TM-T20II").columns == 48 and profile("TM-T20II").code_pages["0"] == "CP437"
    assert profile("TM-T88V").answers_status
    with pytest.raises(ConfigError, match=r"printers.counter.profile: unknown python-escpos profile 'TM-T99'"):
        check_profile("counter", "TM-T99")
    assert _profile.cache_info().currsize == 3  # TM-T20II, TM-T88V and the unknown name's None: not all 35
