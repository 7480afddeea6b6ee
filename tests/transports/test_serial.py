"""The serial transport's writes: bounded per stall, not per job (tests/printing/slow_serial.py, after the TM-U220)."""

from __future__ import annotations

import os
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


def test_an_adapter_pulled_mid_ticket_is_named_once_as_a_failed_write() -> None:
    """A USB-serial adapter pulled while a ticket goes out: the write fails with EIO and the status detail the
    technician reads says "write failed" once. Before (the serial74 probe, row 5): "write failed: write failed: [Errno
    5] Input/output error", pyserial's own words behind ours."""
    master, slave = os.openpty()
    transport = SerialTransport("bar", os.ttyname(slave))
    try:
        transport.open()
        os.close(master)  # the adapter is gone: the line's other end with it
        with pytest.raises(DeviceWriteError) as failed:
            transport.write(b"\x1b@" + b"x" * 40 + b"\n")
        assert str(failed.value).count("write failed") == 1, str(failed.value)
        assert "Input/output error" in str(failed.value)
    finally:
        transport.close()
        os.close(slave)
