"""USB transport to an ESC/POS printer (printer class, bulk endpoints), through pyusb."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import usb.core
import usb.util

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.transports.end import End

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
    silent = "does not answer status any more"

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
        serial_number: str = "",
        usb_port: str = "",
        find: Callable[..., Any] | None = None,
    ) -> None:
        """``serial_number``, ``usb_port``: which of several printers with these ids (empty: the only one).
        ``find`` is pyusb's ``usb.core.find``; tests hand in fake USB devices through it."""
        self.device_id = device_id
        self._model = f"{vendor_id:04x}:{product_id:04x}"
        chosen_by = [f"serial {serial_number}"] if serial_number else []
        self.label = self.device = " ".join(["usb", self._model, *chosen_by, *([f"at {usb_port}"] if usb_port else [])])
        self._ids = {"idVendor": vendor_id, "idProduct": product_id}
        self._serial_number, self._usb_port = serial_number, usb_port
        self._interface = interface
        self._in_ep = in_ep
        self._out_ep = out_ep
        self._write_timeout_ms = int(write_timeout * 1000)
        self._find = find or usb.core.find
        self._dev: Any = None
        self._buffer = b""

    def open(self) -> None:
        self.close()
        dev = self._chosen()
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

    def _chosen(self) -> Any:
        """The one device with these ids (and serial number or socket, if set). Printers of one model share the ids:
        with two plugged in and neither named, either could be the kitchen's, so none is."""
        try:
            there = list(self._find(find_all=True, **self._ids))
            chosen = [
                dev
                for dev in there
                if (not self._serial_number or _serial_number(dev) == self._serial_number)
                and (not self._usb_port or _usb_port(dev) == self._usb_port)
            ]
        except usb.core.NoBackendError as err:
            raise DeviceUnreachableError(self.device_id, self.label, "no USB backend: install libusb-1.0") from err
        except usb.core.USBError as err:
            raise DeviceUnreachableError(self.device_id, self.label, f"USB bus: {err}") from err
        if len(chosen) == 1:
            return chosen[0]
        if len(chosen) > 1:
            raise DeviceUnreachableError(
                self.device_id,
                self.label,
                f"{len(chosen)} printers {self._model} on the USB bus ({_describe(chosen)}): set serial_number or"
                " usb_port in its section to say which",
            )
        if there:
            raise DeviceUnreachableError(
                self.device_id, self.label, f"not on the USB bus; printers {self._model} there: {_describe(there)}"
            )
        raise DeviceUnreachableError(self.device_id, self.label, "not on the USB bus (unplugged or switched off?)")

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

    def holding_back(self) -> bool:
        return False  # a bulk write returns once the device took the bytes

    def finish(self, timeout: float) -> End:
        return End.UNKNOWN  # a bulk write returned once the device took the bytes; nothing more to wait for

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


def _serial_number(dev: Any) -> str | None:
    """The serial number the device reports (a string descriptor), None when it has none or it cannot be read."""
    try:
        return str(dev.serial_number) if dev.serial_number else None
    except (ValueError, usb.core.USBError, NotImplementedError):
        return None


def _usb_port(dev: Any) -> str:
    """The socket the device is plugged into, as sysfs names it: bus, then the port on each hub ("1-1.2")."""
    ports = dev.port_numbers
    return f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else f"usb{dev.bus}"


def _describe(devices: list[Any]) -> str:
    return ", ".join(
        f"{f'serial {serial}' if (serial := _serial_number(dev)) else 'no serial number'} at {_usb_port(dev)}"
        for dev in devices
    )


def _usb_problem(err: usb.core.USBError) -> str:
    if err.errno == errno.EACCES:
        return (
            "permission denied: the agent's user needs the udev rule for group lp (see docs/printing.md, USB printers)"
        )
    if err.errno == errno.ENODEV:
        return "device gone (unplugged?)"
    return str(err)
