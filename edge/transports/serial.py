"""Serial (RS-232 or USB-serial) transport to an ESC/POS printer, through pyserial."""

from __future__ import annotations

import collections
import dataclasses
import sys
import termios
import time

import serial

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.transports.end import End

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
_LF, _CUT = b"\n", b"\x1dV"


@dataclasses.dataclass(frozen=True)
class Pace:
    """What the slowest printer takes, for a line on which nothing holds the host back: its paper at ``lines_per_s``
    and ``cut_s`` a cut, its bytes at ``bytes_per_s``, and ``buffer`` bytes waiting in it (Epson's receive buffers are
    4 KB; a TM-U220 set to its 40-byte buffer needs working flow control)."""

    bytes_per_s: float
    lines_per_s: float
    cut_s: float
    buffer: int = 1024


class _Pacer:
    """Holds back what a printer without working handshake would discard: it takes bytes into its receive buffer as
    fast as the line brings them and prints them at its own pace; once the buffer is full, what comes meanwhile is lost
    (Epson: "data received while the receive buffer is full is discarded"). This follows a printer of ``pace``: each
    piece is sent only once the pieces before it, as that printer would print them, leave room for it."""

    def __init__(self, pace: Pace, line_bytes_per_s: float) -> None:
        self._pace = pace
        self._line_bytes_per_s = line_bytes_per_s
        self._line_free_at = 0.0  # monotonic: when the line has carried everything sent
        self._printed_at = 0.0  # when that printer has printed everything sent
        self._waiting: collections.deque[tuple[float, int]] = collections.deque()  # (printed at, bytes), in order
        self._held = 0  # bytes in _waiting

    def pieces(self, data: bytes) -> list[bytes]:
        """``data`` cut after each line feed, and into pieces of at most _PIECE bytes."""
        out: list[bytes] = []
        start = 0
        while start < len(data):
            end = data.find(_LF, start, start + _PIECE)
            end = min(start + _PIECE, len(data)) if end == -1 else end + 1
            out.append(data[start:end])
            start = end
        return out

    def wait_for_room(self, piece: bytes) -> None:
        while True:
            now = time.monotonic()
            while self._waiting and self._waiting[0][0] <= now:
                self._held -= self._waiting.popleft()[1]
            if not self._waiting or self._held + len(piece) <= self._pace.buffer:
                return
            time.sleep(self._waiting[0][0] - now)

    def sent(self, piece: bytes) -> None:
        pace, now = self._pace, time.monotonic()
        self._line_free_at = max(now, self._line_free_at) + len(piece) / self._line_bytes_per_s
        paper = piece.count(_LF) / pace.lines_per_s + piece.count(_CUT) * pace.cut_s
        self._printed_at = max(self._line_free_at, self._printed_at) + max(len(piece) / pace.bytes_per_s, paper)
        self._waiting.append((self._printed_at, len(piece)))
        self._held += len(piece)


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
        pace: Pace | None = None,
    ) -> None:
        """``pace``: the slowest printer's, followed on a line without working flow control ("none"; "dsrdtr" too on
        Linux, where pyserial sets DTR and nothing else: only RTS/CTS reaches the kernel's termios, as CRTSCTS)."""
        self.device_id = device_id
        self.device = f"serial {device}"
        self.label = f"{self.device} {baudrate} baud"
        # A printer at other line settings reads garbage and answers nothing (the commonest serial set-up mistake): its
        # silence says so, and its tickets come out as unreadable characters.
        settings = (
            f"printers.{device_id}.baudrate ({baudrate}), parity and flow_control match the printer's own (its"
            " self-test page shows them)"
        )
        self.never_answered = f"is it switched on, and do {settings}?"
        self.unanswered = (
            f"on a serial line a printer at other line settings is silent too and prints its tickets as unreadable"
            f" characters: if they do, check that {settings}"
        )
        bits = bytesize + stopbits + (parity != "none") + 1  # and a start bit
        line_bytes_per_s = baudrate / bits
        self.line_bytes_per_s: float | None = line_bytes_per_s
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
        unguarded = flow_control == "none" or (flow_control == "dsrdtr" and sys.platform.startswith("linux"))
        # Kept from job to job: the printer may still be printing the last one when the next one starts.
        self._pacer = _Pacer(pace, line_bytes_per_s) if pace is not None and unguarded else None

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
        pacer = self._pacer
        pieces = pacer.pieces(data) if pacer else [data[at : at + _PIECE] for at in range(0, len(data), _PIECE)]
        try:
            for piece in pieces:
                if pacer:
                    pacer.wait_for_room(piece)
                port.write(piece)
                if pacer:
                    pacer.sent(piece)
        except serial.SerialTimeoutException as err:
            raise DeviceWriteError(
                self.device_id, self.label, f"took no data for {self._write_timeout:g}s (flow control holding?)"
            ) from err
        except _LINE_ERRORS as err:
            # pyserial's own words begin so already ("write failed: [Errno 5] …"): said once.
            said = str(err) if str(err).startswith("write failed") else f"write failed: {err}"
            raise DeviceWriteError(self.device_id, self.label, said) from err

    def read(self, n: int, timeout: float) -> bytes:
        port = self._opened()
        try:
            if port.timeout != timeout:
                port.timeout = timeout  # pyserial rewrites the tty settings on every change
            return port.read(n)
        except _LINE_ERRORS as err:
            raise DeviceWriteError(self.device_id, self.label, f"connection lost: {err}") from err

    def holding_back(self) -> bool:
        return False  # the line's speed is known and planned for (line_bytes_per_s, the pacer)

    def finish(self, timeout: float) -> End:
        return End.UNKNOWN  # a serial line has no end of its own to wait for

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
