"""What a scanner sends: bytes cut into lines at CR/LF, lines checked for noise, codes parsed into order references."""

from __future__ import annotations

import dataclasses
import re

# Ticket QR codes (edge/printing/render.py) carry exactly this; order ids and stations never hold ':'.
TICKET_PREFIX = "edge:v1:"
_ORDER_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # the order model's rule; fullmatch, as every pattern here
MAX_PLAIN = 64  # order ids are at most 64 characters, numbers at most 32
_STATION = re.compile(r"[a-z0-9_\-]{1,32}")
# Longer than any code we print; a line this long without CR/LF is a scanner streaming noise.
MAX_LINE = 256
# CR, LF or Tab (the other usual scanner suffix; a scanner moved from keyboard to serial mode keeps it) ends a code.
_LINE_END = re.compile(rb"[\r\n\t]")
# An AIM symbology identifier (ISO/IEC 15424) a scanner may put in front of each code: "]", the symbology's letter and
# a modifier, e.g. "]Q1" (QR code), "]C0" (Code 128). Tills that sort barcodes by kind have scanners set to send it.
_SYMBOLOGY_ID = re.compile(r"\][A-Za-z][0-9A-Za-z]")


class NoiseError(ValueError):
    """A line that is not a code at all (not UTF-8, control bytes); rejected before it means anything."""


@dataclasses.dataclass(frozen=True)
class OrderRef:
    """An order named by a scan: ``ref`` is an order id or (plain codes only) an order number."""

    ref: str
    station: str | None  # from a ticket's QR code; None for a plain id or number


@dataclasses.dataclass(frozen=True)
class UnknownCode:
    """Readable, but names no order: a test page, another system's barcode, a mistyped number."""

    reason: str


class LineSplitter:
    """Reassembles reads into lines; CR, LF, CRLF and Tab all end a code, even when split across reads."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.overflowed = 0  # lines thrown away for being too long
        self._buffer = b""
        self._discarding = False  # inside a line already thrown away, until its CR/LF

    def feed(self, data: bytes) -> list[bytes]:
        *complete, self._buffer = _LINE_END.split(self._buffer + data)
        lines = []
        for line in complete:
            if self._discarding:
                self._discarding = False
            elif len(line) > self.max_line:
                self.overflowed += 1
            elif line:  # CRLF leaves an empty line between CR and LF (in one read or across two): nothing to report
                lines.append(line)
        if len(self._buffer) > self.max_line:
            self.overflowed += not self._discarding
            self._discarding = True
            self._buffer = b""
        return lines

    def reset(self) -> None:
        """Drop a half line, e.g. when the scanner was unplugged mid-code."""
        self._buffer = b""
        self._discarding = False


def decode_line(line: bytes) -> str:
    """The code as text, without a symbology identifier in front; raises NoiseError naming what is wrong with the
    bytes."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NoiseError(f"not UTF-8 (byte {err.start}: 0x{line[err.start]:02x})") from None
    text = text.strip(" \t")
    if bad := next((c for c in text if not c.isprintable()), None):
        raise NoiseError(f"control character 0x{ord(bad):02x}")
    if _SYMBOLOGY_ID.match(text):
        text = text[3:]
    return text


def parse_code(text: str) -> OrderRef | UnknownCode:
    """A ticket QR ``edge:v1:<order id>:<station>``, or a plain order id or number typed or read from a receipt."""
    if text.startswith(TICKET_PREFIX):
        order_id, sep, station = text[len(TICKET_PREFIX) :].rpartition(":")
        if not sep or not _ORDER_ID.fullmatch(order_id) or not _STATION.fullmatch(station):
            return UnknownCode(f"malformed ticket code (expected {TICKET_PREFIX}<order id>:<station>)")
        return OrderRef(order_id, station)
    if text.lower().startswith("edge>v1>"):  # ':' typed as shift+'.' and read as US: a German-layout scanner
        return UnknownCode(
            'a ticket code typed in a German keyboard layout: set layout = "de" for this scanner (or set the scanner to'
            " the US layout)"
        )
    if text.lower().startswith("edge:"):
        return UnknownCode("an edge code that names no order ticket (test page or newer format)")
    if not text or len(text) > MAX_PLAIN:
        return UnknownCode("neither a ticket code nor an order id or number")
    return OrderRef(text, None)
