"""USB printers through a fake pyusb device object: no USB hardware or USB/IP exists on the test machine, so this is
the one place a fake stands in. It checks what we do with pyusb, not pyusb itself."""

from __future__ import annotations

import errno
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import usb.core

from edge.app import Agent
from edge.config import Settings, parse_settings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.printing.driver import PrinterDriver, PrinterNotReadyError
from edge.printing.status import PrinterState
from edge.transports import UsbTransport
from tests.helpers import api_client, config_dict, eventually, job_rows, post, wait_until

ONLINE = {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12}
PAPER_OUT = {1: 0x1E, 2: 0x32, 3: 0x12, 4: 0x72}


class FakeUsbPrinter:
    """Behaves like a pyusb Device of an ESC/POS printer: bulk OUT takes bytes, DLE EOT n queues a reply on bulk IN."""

    def __init__(
        self,
        replies: dict[int, int] | None = ONLINE,
        *,
        kernel_driver: bool = True,
        configured: bool = False,
        serial_number: str | None = None,
        port_numbers: tuple[int, ...] = (1,),
    ) -> None:
        self.idVendor, self.idProduct = 0x04B8, 0x0E15
        self.serial_number = serial_number  # pyusb reads the string descriptor (None when the device has none)
        self.bus, self.port_numbers = 1, port_numbers  # sysfs names it "1-1.2" for port_numbers (1, 2)
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


class FakeUsbBus:
    """pyusb's usb.core.find over the fake devices plugged in: the first match, or with find_all every match."""

    def __init__(self, *devices: FakeUsbPrinter) -> None:
        self.devices = list(devices)

    def find(self, *, find_all: bool = False, **ids: int) -> Any:
        found = (d for d in self.devices if all(getattr(d, k) == v for k, v in ids.items()))
        return found if find_all else next(found, None)


def transport_for(device: FakeUsbPrinter | None, **kwargs: Any) -> UsbTransport:
    found: list[dict[str, int]] = []
    bus = FakeUsbBus(*([device] if device else []))

    def find(**ids: Any) -> Any:
        found.append(ids)
        return bus.find(**ids)

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
    assert transport.found == [{"find_all": True, "idVendor": 0x04B8, "idProduct": 0x0E15}]  # type: ignore[attr-defined]


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


def usb_printer(**selector: str) -> dict[str, Any]:
    return {"type": "usb", "vendor_id": 0x04B8, "product_id": 0x0E15, "status_timeout": 0.2, **selector}


def usb_settings(tmp_path: Path, kitchen: dict[str, Any], front: dict[str, Any]) -> Settings:
    raw = config_dict(tmp_path / "data", {})
    raw["printers"] = {"kitchen": kitchen, "front": front}
    return parse_settings(raw, source="test")


def tickets(device: FakeUsbPrinter) -> str:
    return bytes(device.received).decode("cp858", "replace")


@pytest.mark.parametrize("selector", ["serial_number", "usb_port"])
async def test_two_printers_of_one_model_are_told_apart_by_serial_number_or_socket(
    make_agent: Callable[..., Awaitable[Agent]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    example_order: dict[str, Any],
    selector: str,
) -> None:
    """A kitchen and a counter printer of one model on USB share vendor and product id. Each printer's section names
    its device by the serial number the printer reports or by the USB socket it is plugged into (as sysfs and
    `lsusb -t` name it): each ticket prints on its own printer (before: the key was refused, and without it both
    printers' tickets went to whichever device pyusb found first)."""
    kitchen, front = (
        FakeUsbPrinter(serial_number="K0001", port_numbers=(1, 2)),
        FakeUsbPrinter(serial_number="F0002", port_numbers=(1, 3)),
    )
    monkeypatch.setattr(usb.core, "find", FakeUsbBus(front, kitchen).find)
    which = {"serial_number": ("K0001", "F0002"), "usb_port": ("1-1.2", "1-1.3")}[selector]
    agent = await make_agent(
        usb_settings(tmp_path, usb_printer(**{selector: which[0]}), usb_printer(**{selector: which[1]}))
    )
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)] * 2)
    number = example_order["number"]
    assert number in tickets(kitchen) and number in tickets(front)
    kitchen_code = f"edge:v1:{example_order['id']}:kitchen"  # the kitchen ticket's QR code, for the scanner
    assert kitchen_code in tickets(kitchen) and kitchen_code not in tickets(front)
    assert "MwSt" in tickets(front) and "MwSt" not in tickets(kitchen)  # the receipt's tax line


async def test_two_printers_of_one_model_without_a_choice_print_nothing_and_say_which_key_to_set(
    make_agent: Callable[..., Awaitable[Agent]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    example_order: dict[str, Any],
) -> None:
    """Two printers of one model plugged in and the config names neither: no ticket goes to a device picked at random
    (before: both tickets printed on one of them, the kitchen's maybe at the counter); the jobs wait, the printer
    reads offline and says how to choose."""
    devices = FakeUsbPrinter(serial_number="K0001"), FakeUsbPrinter(serial_number="F0002", port_numbers=(2,))
    monkeypatch.setattr(usb.core, "find", FakeUsbBus(*devices).find)
    agent = await make_agent(usb_settings(tmp_path, usb_printer(), usb_printer()))
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    spool = agent.spoolers["kitchen"]
    await wait_until(lambda: spool.state == PrinterState.OFFLINE, what="the kitchen printer offline")
    assert "2 printers 04b8:0e15 on the USB bus (serial K0001 at 1-1, serial F0002 at 1-2)" in spool.state_detail
    assert "serial_number or usb_port" in spool.state_detail
    assert all(b"\x1b@" not in d.received for d in devices)  # status queries only, never a ticket
    assert await job_rows(agent) == [("queued", 0, 0)] * 2
