"""Move bytes to and from devices: tcp, serial, usb, file; one blocking transport per kind of connection, run in a
thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from edge.transports.end import End
from edge.transports.file import FileTransport
from edge.transports.tcp import TcpTransport

if TYPE_CHECKING:
    from edge.transports.serial import SerialTransport
    from edge.transports.usb import UsbTransport


class Transport(Protocol):
    """One connection to one device; blocking calls, so a driver runs them on its own thread (see PrinterDriver)."""

    device_id: str
    label: str  # how the device is reached, e.g. "tcp 10.0.0.21:9100"; goes into error messages
    # Which device it is, whatever the line's settings (a serial line's speed): one printer under two names, or renamed
    # between runs, is known by it.
    device: str
    can_read: bool  # False for write-only transports: such a device never answers a status query
    line_bytes_per_s: float | None  # how fast the line carries bytes (a serial line's); None: faster than any printer
    # The device can vanish without the line telling: a USB-serial adapter takes bytes whether the printer is on or not,
    # and a network printer that loses power sends no reset.
    vanishes_silently: bool
    silent: str  # what a device that answered before and now answers nothing most likely is, for people

    def open(self) -> None:
        """Connect; raises DeviceUnreachableError."""

    def write(self, data: bytes) -> None:
        """Send all of ``data``; raises DeviceWriteError."""

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes, b"" if none came within ``timeout``; raises DeviceWriteError if the device hung up."""

    def holding_back(self) -> bool:
        """Whether written bytes still wait on this side for the device to take them (False where it cannot tell)."""

    def finish(self, timeout: float) -> End:
        """After a job sent without asking: the end of the data said, and how the device ended the connection
        within ``timeout``."""

    def close(self) -> None:
        """Disconnect; never raises."""


__all__ = ["End", "FileTransport", "SerialTransport", "TcpTransport", "Transport", "UsbTransport"]


def __getattr__(name: str) -> Any:
    """SerialTransport and UsbTransport load (with pyserial, pyusb) when first named: a box with network printers
    only never pays for them at start-up."""
    if name == "SerialTransport":
        from edge.transports.serial import SerialTransport

        return SerialTransport
    if name == "UsbTransport":
        from edge.transports.usb import UsbTransport

        return UsbTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
