"""USB printers through a fake pyusb device object: no USB hardware or USB/IP exists on the test machine, so this is
the one place a fake stands in. It checks what we do with pyusb, not pyusb itself."""

from __future__ import annotations

import errno
import types
from typing import Any

import pytest
import usb.core

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.printing.driver import PrinterDriver, PrinterNotReadyError
from edge.printing.status import PrinterState
from edge.transports import UsbTransport

ONLINE = {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12}
PAPER_OUT = {1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x72}


class FakeUsbPrinter:
    """Behaves like a pyusb Device of an ESC/POS printer: bulk OUT takes bytes, DLE EOT n queues a reply on bulk IN."""

    def __init__(
        self, replies: dict[int, int] | None = ONLINE, *, kernel_driver: bool = True, configured: bool = False
    ) -> None:
        self.replies = replies  # None: never answers status queries
        self.kernel_driver = kernel_driver
        self.configured = configured
        self.received = bytearray()
        self.pending = bytearray()
        self.calls: list[str] = []
        self.fail_write: usb.core.USBError | None = None
        self._ctx = types.SimpleNamespace(dispose=lambda dev: self.calls.append("dispose"))

    def is_kernel_driver_active(self, interface: int) -> bool:
        return self.kernel_driver

    def detach_kernel_driver(self, interface: int) -> None:
        self.calls.append(f"detach {interface}")
        self.kernel_driver = False

    def get_active_configuration(self) -> Any:
        if not self.configured:
            raise usb.core.USBError("Configuration not set", errno=None)
        return object()

    def set_configuration(self) -> None:
        self.calls.append("set_configuration")
        self.configured = True

    def write(self, endpoint: int, data: bytes, timeout: int) -> int:
        assert endpoint == 0x01
        if self.fail_write is not None:
            raise self.fail_write
        self.received += data
        for n in range(1, 5):
            query = b"\x10\x04" + bytes([n])
            if bytes(data) == query and self.replies is not None:
                self.pending.append(self.replies[n])
        if bytes(data) == b"\x1dr\x01" and self.replies is not None and not self.replies[4] & 0x60:
            self.pending.append(0x00)  # GS r 1, paper present: answered once the job before it is out
        return len(data)

    def read(self, endpoint: int, size: int, timeout: int) -> bytes:
        assert endpoint == 0x82 and size >= 1
        if not self.pending:
            raise usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT)
        data, self.pending = bytes(self.pending[:size]), bytearray()
        return data


def transport_for(device: FakeUsbPrinter | None, **kwargs: Any) -> UsbTransport:
    found: list[dict[str, int]] = []

    def find(**ids: int) -> FakeUsbPrinter | None:
        found.append(ids)
        return device

    transport = UsbTransport("counter", 0x04B8, 0x0E15, find=find, **kwargs)
    transport.found = found  # type: ignore[attr-defined]
    return transport


async def test_usb_prints_and_confirms_with_status() -> None:
    """Found by vendor/product id, usblp detached, configured, job bytes on the OUT endpoint, confirmed by a reply."""
    device = FakeUsbPrinter()
    transport = transport_for(device)
    outcome = await PrinterDriver("counter", transport, status_timeout=0.2).print(b"\x1b@hello\n")
    assert (outcome.confirmed, outcome.state) == (True, PrinterState.ONLINE)
    assert b"\x1b@hello\n" in device.received
    assert device.calls == ["detach 0", "set_configuration", "dispose"]
    assert transport.found == [{"idVendor": 0x04B8, "idProduct": 0x0E15}]  # type: ignore[attr-defined]


async def test_usb_paper_out_refuses_the_job() -> None:
    """Paper out read over USB: the job is not sent (no job bytes after the status queries)."""
    device = FakeUsbPrinter(PAPER_OUT)
    driver = PrinterDriver("counter", transport_for(device), status_timeout=0.2)
    assert await driver.status() == PrinterState.PAPER_OUT
    with pytest.raises(PrinterNotReadyError, match="paper out"):
        await driver.print(b"\x1b@job\n")
    assert b"job" not in device.received


async def test_usb_printer_that_never_answers_is_unknown_and_prints() -> None:
    """No reply on the IN endpoint: unknown (not "paper OK"), and printing goes on."""
    device = FakeUsbPrinter(None)
    driver = PrinterDriver("counter", transport_for(device), status_timeout=0.1)
    assert await driver.status() == PrinterState.UNKNOWN
    outcome = await driver.print(b"\x1b@job\n")
    assert (outcome.confirmed, b"job" in device.received) == (False, True)


async def test_unplugged_usb_printer_is_offline() -> None:
    """Not on the bus: the driver reports offline, the transport says where to look."""
    assert await PrinterDriver("counter", transport_for(None)).status() == PrinterState.OFFLINE
    with pytest.raises(DeviceUnreachableError, match=r"counter \(usb 04b8:0e15\): not on the USB bus"):
        transport_for(None).open()


def test_permission_denied_points_to_the_udev_rule() -> None:
    """EACCES from libusb: the message says to install the udev rule, not just "access denied"."""
    device = FakeUsbPrinter()
    device.kernel_driver = True

    def refuse(interface: int) -> None:
        raise usb.core.USBError("Access denied (insufficient permissions)", errno=errno.EACCES)

    device.detach_kernel_driver = refuse  # type: ignore[method-assign]
    with pytest.raises(DeviceUnreachableError, match="udev rule"):
        transport_for(device).open()


def test_unplugged_mid_job_is_a_write_error() -> None:
    """ENODEV while writing: the job may be partly out, so it is a write error (retried, marked COPY)."""
    device = FakeUsbPrinter()
    device.fail_write = usb.core.USBError("No such device", errno=errno.ENODEV)
    transport = transport_for(device)
    transport.open()
    with pytest.raises(DeviceWriteError, match="device gone"):
        transport.write(b"\x1b@job\n")
    transport.close()
