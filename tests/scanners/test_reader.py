"""The scanner driver survives what it did not expect: a failing read is logged and the port reopened; a failing store
loses one scan, not the reader."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from structlog.testing import capture_logs

from edge.config import ScannerSettings
from edge.errors import StoreUnavailableError
from edge.events import EventBus
from edge.scanners import Scanner
from edge.scanners.ports import ScannerPort
from edge.scanners.reader import open_port
from tests.helpers import WAIT_S, Seen, wait_until


class BrokenOncePort:
    """Stand-in port whose first read fails like a driver bug would; later reads give one code, then silence."""

    opened = 0

    def __init__(self, settings: ScannerSettings) -> None:
        BrokenOncePort.opened += 1
        self._first = BrokenOncePort.opened == 1
        self._sent = False

    def read(self) -> bytes:
        if self._first:
            raise RuntimeError("driver bug")
        if not self._sent:
            self._sent = True
            return b"A-1001\r\n"
        time.sleep(0.05)
        return b""

    def read_waiting(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


async def test_unexpected_read_failure_reopens_the_port() -> None:
    """A read raising something other than a device error is logged with its traceback and reported as a
    disconnect; the driver reopens the port and the next code is handed on."""
    BrokenOncePort.opened = 0
    bus = EventBus()
    seen = Seen(bus)
    codes: list[str] = []
    handed_on = asyncio.Event()

    async def on_code(scanner: ScannerSettings, code: str, read_at: float) -> None:
        codes.append(code)
        handed_on.set()

    scanner = Scanner(ScannerSettings(name="s", port="/dev/null"), on_code, bus, open_port=BrokenOncePort)
    with capture_logs() as logs:
        scanner.start()
        try:
            await asyncio.wait_for(handed_on.wait(), WAIT_S)
        finally:
            await scanner.stop()
    assert codes == ["A-1001"]
    assert seen.connections("s") == [True, False, True]
    assert "RuntimeError('driver bug')" in seen.events[1].detail  # type: ignore[attr-defined]
    failed = [e for e in logs if e["event"] == "scanner_read_failed"]
    assert len(failed) == 1 and failed[0]["exc_info"]


class TwoCodesPort:
    """Stand-in port that gives two codes in one read, then silence."""

    def __init__(self, settings: ScannerSettings) -> None:
        self._sent = False

    def read(self) -> bytes:
        if self._sent:
            time.sleep(0.05)
            return b""
        self._sent = True
        return b"A-1\rA-2\r"

    def read_waiting(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


async def test_a_scan_the_store_refuses_is_logged_and_reading_goes_on() -> None:
    """When storing a scan fails (e.g. disk full) it is logged as scan_not_recorded; the next code is still handled."""
    bus = EventBus()
    handled: list[str] = []
    second = asyncio.Event()

    async def on_code(scanner: ScannerSettings, code: str, read_at: float) -> None:
        if code == "A-1":
            raise StoreUnavailableError("database edge.db: cannot write: database or disk is full")
        handled.append(code)
        second.set()

    scanner = Scanner(ScannerSettings(name="s", port="/dev/null"), on_code, bus, open_port=TwoCodesPort)
    with capture_logs() as logs:
        scanner.start()
        try:
            await asyncio.wait_for(second.wait(), WAIT_S)
        finally:
            await scanner.stop()
    assert handled == ["A-2"]
    assert [(e["event"], e["code"]) for e in logs if e["event"] == "scan_not_recorded"] == [
        ("scan_not_recorded", "A-1")
    ]
    assert scanner.codes == 2


async def test_a_failure_to_open_that_repeats_at_every_retry_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyboard-wedge scanner without a loadable evdev (here made unimportable; `edge config check` and the start
    refuse such a config): each retry fails alike, and its traceback is one log line, not one a retry (before: one
    every reconnect_max_s, for good, on the box's SD card). The scanner stays disconnected, saying why."""
    monkeypatch.delitem(sys.modules, "edge.scanners.hid", raising=False)
    monkeypatch.setitem(sys.modules, "evdev", None)
    tries = 0

    def counted(settings: ScannerSettings) -> ScannerPort:
        nonlocal tries
        tries += 1
        return open_port(settings)

    settings = ScannerSettings(name="wedge", type="hid", port="/dev/input/event7", reconnect_max_s=0.2)
    bus = EventBus()
    seen = Seen(bus)
    scanner = Scanner(settings, lambda *_: asyncio.sleep(0), bus, open_port=counted)
    with capture_logs() as logs:
        scanner.start()
        try:
            await wait_until(lambda: tries >= 4, what="four tries to open the scanner")
        finally:
            await scanner.stop()
    failed = [e for e in logs if e["event"] == "scanner_open_failed"]
    assert len(failed) == 1 and failed[0]["exc_info"], [e["event"] for e in logs]
    assert seen.connections("wedge") == [False]
    assert "evdev" in scanner.detail
