"""Serial (RS-232 or USB-serial) transport to an ESC/POS printer, through pyserial."""

from __future__ import annotations

import termios

import serial

from edge.errors import DeviceUnreachableError, DeviceWriteError

# termios.error is not an OSError: pyserial lets it through when the tty vanishes under it (adapter unplugged).
_LINE_ERRORS = (serial.SerialException, OSError, termios.error)

_PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}

# pyserial's write_timeout bounds a whole write() call. A job goes out in pieces no larger than this, each with the
# timeout, so the timeout bounds a stall (a printer holding the line back with XOFF or RTS/CTS and never letting go),
# not a long ticket on a slow line: a 9 KB ticket at 9600 baud, held back while a 4.7-line-a-second printer prints,
# outlasts 10 s. Epson's 4 KB-buffer printers signal busy with 128 bytes left and ready again with 256: a piece this
# size gets through one busy spell.
_PIECE = 256


class SerialTransport:
    """Blocking pyserial port, opened per job; a port that cannot be opened is "unreachable", any later failure a write
    error.

    A serial line cannot tell a switched-off printer from a silent one: without hardware flow
    control, bytes go out either way. Status replies (or RTS/CTS holding writes back) are what tell.
    """

    can_read = True
    vanishes_silently = True
    silent = "does not answer status any more (switched off, or its cable pulled)"

    def __init__(
        self,
        device_id: str,
        device: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "none",
        stopbits: float = 1,
        flow_control: str = "none",
        write_timeout: float = 10.0,
    ) -> None:
        self.device_id = device_id
        self.label = f"serial {device} {baudrate} baud"
        bits = bytesize + stopbits + (parity != "none") + 1  # and a start bit
        self.line_bytes_per_s: float | None = baudrate / bits
        self._device = device
        self._options = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": _PARITY[parity],
            "stopbits": stopbits,
            "rtscts": flow_control == "rtscts",
            "dsrdtr": flow_control == "dsrdtr",
            "xonxoff": flow_control == "xonxoff",
        }
        self._write_timeout = write_timeout
        self._port: serial.Serial | None = None

    def open(self) -> None:
        self.close()
        try:
            # exclusive: a second process (a scanner reader, a technician's terminal) must not share the line.
            self._port = serial.Serial(
                self._device, timeout=0, write_timeout=self._write_timeout, exclusive=True, **self._options
            )
            # A late reply to an earlier status query would otherwise be read as the answer to the next one.
            self._port.reset_input_buffer()
        except (*_LINE_ERRORS, ValueError) as err:
            self.close()
            raise DeviceUnreachableError(self.device_id, self.label, f"cannot open: {err}") from err

    def write(self, data: bytes) -> None:
        port = self._opened()
        try:
            for at in range(0, len(data), _PIECE):
                port.write(data[at : at + _PIECE])
        except serial.SerialTimeoutException as err:
            raise DeviceWriteError(
                self.device_id, self.label, f"took no data for {self._write_timeout:g}s (flow control holding?)"
            ) from err
        except _LINE_ERRORS as err:
            raise DeviceWriteError(self.device_id, self.label, f"write failed: {err}") from err

    def read(self, n: int, timeout: float) -> bytes:
        port = self._opened()
        try:
            if port.timeout != timeout:
                port.timeout = timeout  # pyserial rewrites the tty settings on every change
            return port.read(n)
        except _LINE_ERRORS as err:
            raise DeviceWriteError(self.device_id, self.label, f"connection lost: {err}") from err

    def close(self) -> None:
        if self._port is None:
            return
        port, self._port = self._port, None
        try:
            port.close()
        except _LINE_ERRORS:
            pass

    def _opened(self) -> serial.Serial:
        if self._port is None:
            raise DeviceWriteError(self.device_id, self.label, "port is not open")
        return self._port
