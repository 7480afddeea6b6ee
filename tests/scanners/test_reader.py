"""The scanner driver survives what it did not expect: a failing read is logged and the port reopened; a failing store
loses one scan, not the reader."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from edge.config import ScannerSettings
from edge.errors import StoreUnavailableError
from edge.events import EventBus
from edge.scanners import Scanner
from tests.helpers import WAIT_S, Seen


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
