"""The serial transport's writes: bounded per stall, not per job (tests/printing/slow_serial.py, after the TM-U220)."""

from __future__ import annotations

import time

import pytest

from edge.errors import DeviceWriteError
from edge.transports import SerialTransport
from tests.printing.slow_serial import SlowSerialPrinter


def test_a_printer_that_takes_nothing_for_the_write_timeout_is_still_cut_off() -> None:
    """Writes are bounded per piece that makes no progress, so a long ticket on a slow line with flow control gets
    through (tests/printing/test_serial_line.py); a printer that holds the line (XOFF) and never lets go is still cut
    off after write_timeout, as before, with the words that say so."""
    printer = SlowSerialPrinter(flow_control="xonxoff", scale=50)
    transport = SerialTransport("bar", printer.device, baudrate=460800, flow_control="xonxoff", write_timeout=0.5)
    try:
        transport.open()
        printer.hold = True
        time.sleep(0.1)  # its XOFF is on the line
        started = time.monotonic()
        with pytest.raises(DeviceWriteError, match=r"took no data for 0\.5s"):
            transport.write(b"\x1b@" + b"x" * 40 + b"\n")
        assert 0.4 < time.monotonic() - started < 2
    finally:
        transport.close()
        printer.close()
