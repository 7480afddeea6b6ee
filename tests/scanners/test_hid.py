"""Keyboard-wedge scanners: key events become codes (US layout, shift, Enter/Tab); a device that is no keyboard is
refused.

There is no /dev/uinput in the test machine, so no virtual input device can be made: key events are real
evdev.InputEvent objects fed to the decoder and, for the whole path, through a stand-in port object.
"""

from __future__ import annotations

import asyncio
import os
import queue
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

evdev = pytest.importorskip("evdev")
from evdev import InputEvent, ecodes  # noqa: E402

from edge.app import Agent  # noqa: E402
from edge.config import ScannerSettings  # noqa: E402
from edge.events import EventBus  # noqa: E402
from edge.scanners import Scanner, ScanRecorder  # noqa: E402
from edge.scanners.hid import KEYMAPS, KeyDecoder  # noqa: E402
from edge.sim.scanner import SimScanner  # noqa: E402
from edge.store.scans import ScanStore  # noqa: E402
from tests.helpers import Seen, db_rows, push_order, wait_until  # noqa: E402

# Character → the key a scanner presses for it: the main keyboard's, not the keypad's (its keys come last in a keymap).
_KEY_FOR = {
    layout: {chars[shifted]: (code, bool(shifted)) for code, chars in reversed(keymap.items()) for shifted in (1, 0)}
    for layout, keymap in KEYMAPS.items()
}


def key(code: int, value: int) -> InputEvent:
    return InputEvent(0, 0, ecodes.EV_KEY, code, value)


def typed(text: str, layout: str = "us") -> list[InputEvent]:
    """The events a wedge scanner set to ``layout`` sends for ``text``: shift around capitals and symbols, SYN reports
    between."""
    events = []
    for char in text:
        code, shifted = _KEY_FOR[layout][char]
        if shifted:
            events.append(key(ecodes.KEY_LEFTSHIFT, 1))
        events += [key(code, 1), InputEvent(0, 0, ecodes.EV_SYN, 0, 0), key(code, 0)]
        if shifted:
            events.append(key(ecodes.KEY_LEFTSHIFT, 0))
    return events


def test_ticket_code_typed_by_a_wedge_scanner_decodes_exactly() -> None:
    """Lower and upper case, ':' and '_' (shifted), digits and Enter come back as the bytes of the code plus CR."""
    assert KeyDecoder().feed(typed("edge:v1:ord_000001:kitchen\r")) == b"edge:v1:ord_000001:kitchen\r"
    assert KeyDecoder().feed(typed("A-1042\r")) == b"A-1042\r"


def test_a_scanner_typing_a_german_layout_is_read_with_layout_de() -> None:
    """Scanners sold in Germany often type in the German layout: ':' is shift+'.', '_' shift+'-' (the US slash key),
    y and z swapped. Read as US, a ticket code became "edge>v1>…" and matched nothing; with layout = "de" it is the
    code again."""
    code = b"edge:v1:lazy-order_9:bay\r"
    events = typed(code.decode(), "de")
    assert KeyDecoder("de").feed(events) == code
    assert KeyDecoder().feed(events) == b"edge>v1>layz/order?9>baz\r"


def test_modifiers_repeats_and_unknown_keys() -> None:
    """Ctrl with a key types its control character (Ctrl+A: 0x01, noise) and auto-repeat is ignored; a key with no
    character marks the line as noise (0x1a)."""
    decoder = KeyDecoder()
    events = [
        key(ecodes.KEY_LEFTCTRL, 1),
        key(ecodes.KEY_A, 1),
        key(ecodes.KEY_A, 2),
        key(ecodes.KEY_LEFTCTRL, 0),
        key(ecodes.KEY_F5, 1),
        key(ecodes.KEY_TAB, 1),
    ]
    assert decoder.feed(events) == b"\x01\x1a\r"


def held(modifier: int, events: list[InputEvent]) -> list[InputEvent]:
    return [key(modifier, 1), *events, key(modifier, 0)]


def keypad(digits: str) -> list[InputEvent]:
    codes = [getattr(ecodes, f"KEY_KP{d}") for d in digits]
    return [event for code in codes for event in (key(code, 1), key(code, 0))]


def test_ctrl_and_alt_combinations_are_what_a_scanner_means_by_them_not_the_plain_key() -> None:
    """A wedge scanner set to end codes with Ctrl+M (CR, as some are) ends the line; in "ALT mode" (Honeywell,
    Zebra: any character as Alt + its code on the keypad, whatever the layout) Alt+0065 is A; an Alt prefix before
    a code is noise in front of it, not a letter glued to it. Before (the scanner probe's s05, still so in the
    regress rerun): Ctrl and Alt were dropped and the key read plain: "…:kitchen" + Ctrl+M became station
    "kitchenm", "A-1004" in ALT mode the digits "065045049048048052", an Alt+S prefix made "sedge:v1:…"."""
    code = "edge:v1:ord_000003:kitchen"
    assert KeyDecoder().feed(typed(code) + held(ecodes.KEY_LEFTCTRL, [key(ecodes.KEY_M, 1), key(ecodes.KEY_M, 0)])) == (
        code.encode() + b"\r"
    )
    alt_mode = [event for char in "A-1004\r" for event in held(ecodes.KEY_LEFTALT, keypad(f"{ord(char):04d}"))]
    assert KeyDecoder("de").feed(alt_mode) == b"A-1004\r"
    assert KeyDecoder().feed(held(ecodes.KEY_LEFTALT, keypad("0201"))) == "É".encode()  # Windows-1252, as Windows
    assert KeyDecoder().feed(held(ecodes.KEY_LEFTALT, keypad("130"))) == "é".encode()  # without 0: the OEM page 437
    prefixed = KeyDecoder().feed(held(ecodes.KEY_LEFTALT, [key(ecodes.KEY_S, 1), key(ecodes.KEY_S, 0)]) + typed(code))
    assert prefixed == b"\x1a" + code.encode()


class KeyPort:
    """Stand-in for an evdev device (none can be created here): hands the scanner queued key event batches."""

    def __init__(self, layout: str = "us") -> None:
        self.batches: queue.Queue[list[InputEvent]] = queue.Queue()
        self._keys = KeyDecoder(layout)

    def read(self) -> bytes:
        try:
            return self._keys.feed(self.batches.get(timeout=0.2))
        except queue.Empty:
            return b""

    def read_waiting(self) -> bytes:
        try:
            return self._keys.feed(self.batches.get_nowait())
        except queue.Empty:
            return b""

    def close(self) -> None:
        pass


async def test_wedge_scan_marks_the_order_ready(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """A code typed by a wedge scanner goes the same way as a serial one: the order is ready, with its outbox row."""
    agent = await make_agent()
    order = await push_order(agent, 1)
    port = KeyPort()
    seen = Seen(agent.bus)
    settings = ScannerSettings(
        name="wedge", type="hid", port="/dev/input/by-id/usb-scanner-event-kbd", station="kitchen"
    )
    assert agent.db is not None
    recorder = ScanRecorder(ScanStore(agent.db, bus=agent.bus))
    scanner = Scanner(settings, recorder.record, agent.bus, open_port=lambda _: port)
    scanner.start()
    await seen.connected("wedge")
    port.batches.put(typed(f"edge:v1:{order['id']}:kitchen\r"))
    (scan,) = await seen.scans_count(1)
    await scanner.stop()
    assert (scan.scanner, scan.outcome) == ("wedge", "order_ready")
    assert await db_rows(agent, "SELECT event FROM outbox WHERE order_id = ? AND event = 'ready'", order["id"]) == [
        ("ready",)
    ]


async def test_a_device_that_is_no_keyboard_is_reported_not_read(tmp_path: Path) -> None:
    """Pointing a hid scanner at a tty (not an input device) is 'disconnected' with the reason; it keeps retrying."""
    sim = SimScanner(tmp_path / "tty-not-an-input-device")
    sim.plug()
    bus = EventBus()
    seen = Seen(bus)

    async def on_code(scanner: ScannerSettings, code: str, read_at: float) -> None:
        raise AssertionError("nothing can be read")

    scanner = Scanner(ScannerSettings(name="wedge", type="hid", port=str(sim.path), reconnect_max_s=0.2), on_code, bus)
    scanner.start()
    try:
        await seen.connected("wedge", False)
        assert "cannot open" in scanner.detail and "Inappropriate ioctl" in scanner.detail
        await asyncio.sleep(0.5)
        assert seen.connections("wedge") == [False]
    finally:
        await scanner.stop()
        sim.unplug()


@pytest.mark.parametrize(("layout", "outcome"), [("de", "order_ready"), ("us", "unknown")])
async def test_a_german_layout_scan_marks_the_order_ready_or_says_which_layout_it_came_in(
    make_agent: Callable[..., Awaitable[Agent]], layout: str, outcome: str
) -> None:
    """The whole path with a German-layout scanner: configured as such, its ticket code marks the order ready; left
    at the US default, the scan is an unknown code whose detail names the keyboard layout to set (before: there was no
    layout to set, and the code read as "edge>v1>…" was looked up as a plain order id)."""
    agent = await make_agent()
    order = await push_order(agent, 1)
    port = KeyPort(layout)
    seen = Seen(agent.bus)
    settings = ScannerSettings(name="wedge", type="hid", port="/dev/input/by-id/usb-scanner-event-kbd", layout=layout)
    assert agent.db is not None
    recorder = ScanRecorder(ScanStore(agent.db, bus=agent.bus))
    scanner = Scanner(settings, recorder.record, agent.bus, open_port=lambda _: port)
    scanner.start()
    await seen.connected("wedge")
    port.batches.put(typed(f"edge:v1:{order['id']}:kitchen\r", "de"))
    (scan,) = await seen.scans_count(1)
    await scanner.stop()
    assert scan.outcome == outcome
    if outcome == "unknown":
        [(detail,)] = await db_rows(agent, "SELECT detail FROM scans")
        assert 'layout = "de"' in detail, detail


# What a German keyboard types with AltGr (right Alt) held: the layout's third level (DIN 2137 T1), independent of the
# decoder's own tables.
_ALTGR_DE = {
    "@": ecodes.KEY_Q,
    "€": ecodes.KEY_E,
    "{": ecodes.KEY_7,
    "[": ecodes.KEY_8,
    "]": ecodes.KEY_9,
    "}": ecodes.KEY_0,
    "\\": ecodes.KEY_MINUS,
    "~": ecodes.KEY_RIGHTBRACE,
    "|": ecodes.KEY_102ND,
}


def typed_de(text: str) -> list[InputEvent]:
    """The events of a German-layout scanner: AltGr around the third-level characters, as ``typed`` otherwise."""
    events = []
    for char in text:
        if char in _ALTGR_DE:
            code = _ALTGR_DE[char]
            events += [key(ecodes.KEY_RIGHTALT, 1), key(code, 1), key(code, 0), key(ecodes.KEY_RIGHTALT, 0)]
        else:
            events += typed(char, "de")
    return events


def test_altgr_characters_of_the_german_layout_decode() -> None:
    """AltGr+9 is "]" on a German keyboard, AltGr+Q "@" and so on: with layout = "de" they come back as typed (before:
    AltGr was ignored and "]Q1" came as "9Q1", an unknown code)."""
    text = "]Q1edge:v1:ord_000001:kitchen [x]{y}\\@~|€\r"
    assert KeyDecoder("de").feed(typed_de(text)) == text.encode()


@pytest.mark.parametrize(
    ("layout", "events"),
    [
        pytest.param("de", [key(ecodes.KEY_RIGHTALT, 1), key(ecodes.KEY_A, 1), key(ecodes.KEY_RIGHTALT, 0)], id="de"),
        pytest.param("us", [key(ecodes.KEY_RIGHTALT, 1), key(ecodes.KEY_9, 1), key(ecodes.KEY_RIGHTALT, 0)], id="us"),
    ],
)
def test_an_altgr_combination_the_layout_lacks_is_noise_never_the_plain_key(layout: str, events: list) -> None:
    """AltGr+A has no character on a German keyboard, and the US layout has no AltGr level: the line is noise, not
    "a" or "9" (before: the plain key's character, a wrong code)."""
    decoded = KeyDecoder(layout).feed([*typed("12", layout), *events, *typed("3\r", layout)])
    assert decoded.startswith(b"12\x1a") and decoded.endswith(b"3\r")
    assert b"12a3" not in decoded and b"1293" not in decoded


class PipeDevice:
    """Stand-in for evdev.InputDevice (there is no /dev/uinput here to make a real one): a pipe carrying raw struct
    input_event records, as /dev/input/eventN delivers them, so the real HidPort selects on it, reads and decodes."""

    writers: ClassVar[dict[str, int]] = {}
    _FORMAT = "llHHi"

    def __init__(self, path: str) -> None:
        self.fd, PipeDevice.writers[path] = os.pipe()
        os.set_blocking(self.fd, False)
        self._rest = b""

    def grab(self) -> None:
        pass

    def ungrab(self) -> None:
        pass

    def close(self) -> None:
        os.close(self.fd)

    def read(self) -> Iterator[InputEvent]:
        size = struct.calcsize(self._FORMAT)
        data = self._rest + os.read(self.fd, size * 256)
        whole = len(data) // size * size
        self._rest = data[whole:]
        for at in range(0, whole, size):
            sec, usec, kind, code, value = struct.unpack(self._FORMAT, data[at : at + size])
            yield InputEvent(sec, usec, kind, code, value)

    @classmethod
    def send(cls, path: str, events: list[InputEvent]) -> None:
        records = b"".join(struct.pack(cls._FORMAT, e.sec, e.usec, e.type, e.code, e.value) for e in events)
        os.write(cls.writers[path], records)


async def wedge_scan(
    make_agent: Callable[..., Awaitable[Agent]],
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    events: Callable[[dict], list[InputEvent]],
) -> tuple[Agent, dict, Scanner, Seen]:
    """The real HidPort of a scanner "wedge" set to ``layout`` reads ``events`` (made for the order) from its device;
    returns once the line is stored or rejected."""
    monkeypatch.setattr(evdev, "InputDevice", PipeDevice)
    agent = await make_agent()
    order = await push_order(agent, 1)
    seen = Seen(agent.bus)
    path = "/dev/input/by-id/usb-scanner-event-kbd"
    settings = ScannerSettings(name="wedge", type="hid", port=path, layout=layout, station="kitchen")
    assert agent.db is not None
    scanner = Scanner(settings, ScanRecorder(ScanStore(agent.db, bus=agent.bus)).record, agent.bus)
    scanner.start()
    await seen.connected("wedge")
    PipeDevice.send(path, events(order))
    await wait_until(lambda: seen.scans or scanner.rejected, what="the line stored or rejected")
    await scanner.stop()
    return agent, order, scanner, seen


async def test_a_german_scanner_sending_the_symbology_identifier_reads_the_ticket(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A German-layout wedge scanner sending the AIM identifier "]Q1" (AltGr+9, Q, 1) in front of the ticket code: the
    order is ready (before: stored as "9Q1edge:v1:…", unknown)."""
    _, order, _, seen = await wedge_scan(
        make_agent, monkeypatch, "de", lambda o: typed_de(f"]Q1edge:v1:{o['id']}:kitchen\r")
    )
    assert [(s.outcome, s.code) for s in seen.scans] == [("order_ready", f"edge:v1:{order['id']}:kitchen")]


async def test_a_german_scanner_left_at_us_has_its_altgr_line_rejected_naming_both_layouts(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same German scanner left at layout = "us": AltGr+9 is no US character, so the line is rejected (never read
    as "9Q1…"), and the reason names the key, the layout, and the layout the code reads as a ticket in (before: stored
    as "9Q1edge:v1:…", unknown, no hint)."""
    with capture_logs() as logs:
        _, _, scanner, seen = await wedge_scan(
            make_agent, monkeypatch, "us", lambda o: typed_de(f"]Q1edge:v1:{o['id']}:kitchen\r")
        )
    assert seen.scans == [] and scanner.rejected == 1
    [reason] = [e["reason"] for e in logs if e["event"] == "scan_rejected"]
    assert reason.startswith("AltGr+9 types nothing in keyboard layout us"), reason
    assert 'scanner layout is us, the code reads as de: set scanners.wedge.layout = "de"' in reason, reason


async def test_a_us_scanner_configured_german_is_told_to_set_the_us_layout(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A US-layout scanner configured layout = "de" by mistake: its ticket code reads "edgeÖv1Öord?000001Ökitchen",
    an unknown code whose detail says which layout it reads as (before: "no order with id or number …", no hint)."""
    agent, order, _, seen = await wedge_scan(
        make_agent, monkeypatch, "de", lambda o: typed(f"edge:v1:{o['id']}:kitchen\r", "us")
    )
    assert [s.outcome for s in seen.scans] == ["unknown"]
    [(code, detail)] = await db_rows(agent, "SELECT code, detail FROM scans")
    assert code == f"edgeÖv1Ö{order['id'].replace('_', '?')}Ökitchen"
    assert detail == 'scanner layout is de, the code reads as us: set scanners.wedge.layout = "us"'
