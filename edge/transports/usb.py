"""USB transport to an ESC/POS printer (printer class, bulk endpoints), through pyusb."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import usb.core
import usb.util

from edge.errors import DeviceUnreachableError, DeviceWriteError

# Bulk IN transfers come in whole packets; asking for less than a packet risks an overflow error.
_PACKET = 64


class UsbTransport:
    """Finds the printer by vendor and product id on each open, like a TCP connect; releases it on close.

    The device node needs read/write access for the agent's user: see the udev rule in docs/printing.md
    (group ``lp``, never mode 0666).
    """

    can_read = True
    line_bytes_per_s: float | None = None
    vanishes_silently = False

    def __init__(
        self,
        device_id: str,
        vendor_id: int,
        product_id: int,
        *,
        interface: int = 0,
        in_ep: int = 0x82,
        out_ep: int = 0x01,
        write_timeout: float = 10.0,
        find: Callable[..., Any] = usb.core.find,
    ) -> None:
        """``find`` is pyusb's ``usb.core.find``; tests hand in a fake USB device through it."""
        self.device_id = device_id
        self.label = f"usb {vendor_id:04x}:{product_id:04x}"
        self._ids = {"idVendor": vendor_id, "idProduct": product_id}
        self._interface = interface
        self._in_ep = in_ep
        self._out_ep = out_ep
        self._write_timeout_ms = int(write_timeout * 1000)
        self._find = find
        self._dev: Any = None
        self._buffer = b""

    def open(self) -> None:
        self.close()
        try:
            dev = self._find(**self._ids)
        except usb.core.NoBackendError as err:
            raise DeviceUnreachableError(self.device_id, self.label, "no USB backend: install libusb-1.0") from err
        except usb.core.USBError as err:
            raise DeviceUnreachableError(self.device_id, self.label, f"USB bus: {err}") from err
        if dev is None:
            raise DeviceUnreachableError(self.device_id, self.label, "not on the USB bus (unplugged or switched off?)")
        try:
            # The kernel's usblp driver claims printers; it must let go before we can write.
            if dev.is_kernel_driver_active(self._interface):
                dev.detach_kernel_driver(self._interface)
        except NotImplementedError:
            pass  # backends other than libusb1 cannot tell; writing will say
        except usb.core.USBError as err:
            raise DeviceUnreachableError(self.device_id, self.label, _usb_problem(err)) from err
        try:
            try:
                dev.get_active_configuration()
            except usb.core.USBError:
                dev.set_configuration()  # not configured yet (first use after plugging in)
        except usb.core.USBError as err:
            raise DeviceUnreachableError(self.device_id, self.label, _usb_problem(err)) from err
        self._dev = dev
        self._buffer = b""

    def write(self, data: bytes) -> None:
        dev = self._opened()
        try:
            written = dev.write(self._out_ep, data, self._write_timeout_ms)
        except usb.core.USBTimeoutError as err:
            raise DeviceWriteError(
                self.device_id, self.label, f"took no data for {self._write_timeout_ms / 1000:g}s"
            ) from err
        except usb.core.USBError as err:
            raise DeviceWriteError(self.device_id, self.label, f"write failed: {_usb_problem(err)}") from err
        if written != len(data):
            raise DeviceWriteError(self.device_id, self.label, f"took {written} of {len(data)} bytes")

    def read(self, n: int, timeout: float) -> bytes:
        dev = self._opened()
        if not self._buffer:
            try:
                self._buffer = bytes(dev.read(self._in_ep, _PACKET, max(1, int(timeout * 1000))))
            except usb.core.USBTimeoutError:
                return b""
            except usb.core.USBError as err:
                raise DeviceWriteError(self.device_id, self.label, f"read failed: {_usb_problem(err)}") from err
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        if self._dev is None:
            return
        dev, self._dev = self._dev, None
        try:
            usb.util.dispose_resources(dev)  # lets go of the interface, so the next open (or another tool) gets it
        except usb.core.USBError:
            pass

    def _opened(self) -> Any:
        if self._dev is None:
            raise DeviceWriteError(self.device_id, self.label, "device is not open")
        return self._dev


def _usb_problem(err: usb.core.USBError) -> str:
    if err.errno == errno.EACCES:
        return (
            "permission denied: the agent's user needs the udev rule for group lp (see docs/printing.md, USB printers)"
        )
    if err.errno == errno.ENODEV:
        return "device gone (unplugged?)"
    return str(err)
