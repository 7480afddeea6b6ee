"""What a scanner port is, and the serial one (pyserial); keyboard-wedge devices are in hid.py. Blocking calls."""

from __future__ import annotations

import os
from typing import Protocol

from edge.config import ScannerSettings
from edge.errors import DeviceUnreachableError, DeviceWriteError

# A blocked read returns at least this often: an unplugged port that just goes silent is noticed, and stop is prompt.
READ_WAKE_S = 0.5
_READ_MAX = 4096


class ScannerPort(Protocol):
    """One open scanner device; blocking calls, run on the scanner's own thread."""

    def read(self) -> bytes:
        """What the scanner sent, b"" after READ_WAKE_S of silence; raises DeviceWriteError when the device is gone."""

    def read_waiting(self) -> bytes:
        """What has come and not been read, without waiting (b"" also when the device is gone): the last read, as the
        port closes."""

    def close(self) -> None:
        """Release the device; never raises."""

    # Optional (a keyboard-wedge port has it): explain(line) -> str | None, why a line read from it is noise when its
    # bytes do not say (see HidPort.explain).


class SerialPort:
    """A read waits for the first byte, then takes all that came with it.

    Not the printers' SerialTransport: that one sets a timeout per read, which reconfigures the tty each
    time; a scanner keeps one timeout for hours of reads and must tell "silent" from "unplugged".
    """

    def __init__(self, settings: ScannerSettings) -> None:
        import serial  # here: an agent without a serial scanner never loads pyserial

        self._settings = settings
        self.label = f"serial {settings.port}"
        try:
            # exclusive: a second agent (or a forgotten `screen`) on the same port would steal half the codes.
            self._serial = serial.Serial(settings.port, settings.baudrate, timeout=READ_WAKE_S, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceUnreachableError(settings.name, self.label, f"cannot open: {err}") from err

    def read(self) -> bytes:
        try:
            data = self._serial.read(1)
            if data and (waiting := self._serial.in_waiting):
                data += self._serial.read(min(waiting, _READ_MAX))
        except OSError as err:  # pyserial's SerialException is one
            raise DeviceWriteError(self._settings.name, self.label, f"connection lost: {err}") from err
        if not data and not os.path.exists(self._settings.port):
            raise DeviceWriteError(self._settings.name, self.label, "the port disappeared (unplugged?)")
        return data

    def read_waiting(self) -> bytes:
        try:
            waiting = self._serial.in_waiting
            return self._serial.read(waiting) if waiting else b""
        except OSError:
            return b""

    def close(self) -> None:
        try:
            self._serial.close()
        except OSError:
            pass
