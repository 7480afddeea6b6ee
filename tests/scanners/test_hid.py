"""Keyboard-wedge scanners: key events become codes (US layout, shift, Enter/Tab); a device that is no keyboard is
refused.

There is no /dev/uinput in the test machine, so no virtual input device can be made: key events are real
evdev.InputEvent objects fed to the decoder and, for the whole path, through a stand-in port object.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

evdev = pytest.importorskip("evdev")
from evdev import InputEvent, ecodes  # noqa: E402

from edge.app import Agent  # noqa: E402
from edge.config import ScannerSettings  # noqa: E402
from edge.events import EventBus  # noqa: E402
from edge.scanners import Scanner, ScanRecorder  # noqa: E402
from edge.scanners.hid import KEYMAPS, KeyDecoder  # noqa: E402
from edge.sim.scanner import SimScanner  # noqa: E402
from edge.store.scans import ScanStore  # noqa: E402
from tests.helpers import Seen, db_rows, push_order  # noqa: E402

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
    """Ctrl/Alt type nothing and auto-repeat is ignored; a key with no character marks the line as noise (0x1a)."""
    decoder = KeyDecoder()
    events = [
        key(ecodes.KEY_LEFTCTRL, 1),
        key(ecodes.KEY_A, 1),
        key(ecodes.KEY_A, 2),
        key(ecodes.KEY_LEFTCTRL, 0),
        key(ecodes.KEY_F5, 1),
        key(ecodes.KEY_TAB, 1),
    ]
    assert decoder.feed(events) == b"a\x1a\r"


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
