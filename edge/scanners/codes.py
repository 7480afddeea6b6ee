"""What a scanner sends: bytes cut into lines at CR/LF, lines checked for noise, codes parsed into order references."""

from __future__ import annotations

import dataclasses
import re

# Ticket QR codes (edge/printing/render.py) carry exactly this; order ids and stations never hold ':'.
TICKET_PREFIX = "edge:v1:"
_REVISION = re.compile(r"[1-9][0-9]{0,8}")  # the revision a ticket shows, after its station when above 1
_ORDER_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # the order model's rule; fullmatch, as every pattern here
MAX_PLAIN = 64  # order ids are at most 64 characters, numbers at most 32
_STATION = re.compile(r"[a-z0-9_\-]{1,32}")
# Longer than any code we print; a line this long without CR/LF is a scanner streaming noise.
MAX_LINE = 256
# CR, LF or Tab (the other usual scanner suffix; a scanner moved from keyboard to serial mode keeps it) ends a code.
_LINE_END = re.compile(rb"[\r\n\t]")
# A scanner sends a code's bytes within a few ms of each other (9600 baud: 1 ms a byte; USB: one or a few packets), so
# this long a silence after bytes ends a code that came without a suffix, or a half code / stray byte (noise).
CODE_SILENCE_S = 0.2
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
    revision: int | None = None  # the revision a ticket shows (1 when its code has none); None for a plain code


@dataclasses.dataclass(frozen=True)
class UnknownCode:
    """Readable, but names no order: a test page, another system's barcode, a mistyped number."""

    reason: str


class LineSplitter:
    """Reassembles reads into lines; CR, LF, CRLF and Tab all end a code, even when split across reads. A silence of
    ``silence_s`` after bytes ends what is pending too (``expire``): a code's bytes come within a few ms of each other,
    so what is left then is a code without a suffix, a cut-off code or a stray byte, never the start of the next code.
    """

    def __init__(self, max_line: int = MAX_LINE, silence_s: float = CODE_SILENCE_S) -> None:
        self.max_line = max_line
        self.silence_s = silence_s
        self.overflowed = 0  # lines thrown away for being too long
        self.overflow_head = b""  # the start of the last one, for the log
        self.last_at: float | None = None  # when the last bytes came (monotonic), if feed was told
        self._buffer = b""
        self._discarding = False  # inside a line already thrown away, until its CR/LF

    def feed(self, data: bytes, at: float | None = None) -> list[bytes]:
        """The lines ``data`` ends; ``at``: when it arrived (monotonic), for ``expire``."""
        if data and at is not None:
            self.last_at = at
        *complete, self._buffer = _LINE_END.split(self._buffer + data)
        lines = []
        for line in complete:
            if self._discarding:
                self._discarding = False
            elif len(line) > self.max_line:
                self.overflowed += 1
                self.overflow_head = line[:64]
            elif line:  # CRLF leaves an empty line between CR and LF (in one read or across two): nothing to report
                lines.append(line)
        if len(self._buffer) > self.max_line:
            if not self._discarding:
                self.overflowed += 1
                self.overflow_head = self._buffer[:64]
            self._discarding = True
            self._buffer = b""
        return lines

    def silence_left(self, now: float) -> float | None:
        """How long until a silence ends what is pending (0: it has); None when nothing is pending."""
        if not (self._buffer or self._discarding) or self.last_at is None:
            return None
        return max(0.0, self.last_at + self.silence_s - now)

    def expire(self, now: float) -> bytes | None:
        """The pending half line if nothing came for ``silence_s`` before ``now`` (bytes arriving at ``now`` are not
        fed yet), and it is dropped from the buffer; else None. An overlong line being skipped simply ends."""
        left = self.silence_left(now)
        if left is None or left > 0:
            return None
        pending = None if self._discarding else self._buffer
        self.reset()
        return pending

    def reset(self) -> None:
        """Drop a half line, e.g. when the scanner was unplugged mid-code."""
        self._buffer = b""
        self._discarding = False


def _is_control(byte: int) -> bool:
    return byte < 0x20 or byte == 0x7F


def _legacy_letter(line: bytes, at: int) -> bool:
    """A Latin-1 / Windows-1252 letter (À to ý, not × or ÷; þ and ÿ are as likely baud noise) followed by printable
    ASCII: a scanner set to a legacy code page reading a code that begins with it ("É42"). Dropped as noise, the rest
    was read as another code (order 42)."""
    byte, after = line[at], line[at + 1 : at + 2]
    return 0xC0 <= byte <= 0xFD and byte not in (0xD7, 0xF7) and bool(after) and 0x20 <= after[0] < 0x7F


def _without_noise(line: bytes) -> bytes:
    """``line`` without the noise in front of a code (control bytes, bytes that start no UTF-8 character: a line
    glitch, an XON, baud noise) and without control bytes after it (an ETX, a NUL)."""
    start = 0
    while start < len(line):
        byte = line[start]
        if byte < 0x80 and not _is_control(byte):
            break
        if _legacy_letter(line, start):
            break  # the code's first letter in a legacy code page: decoding rejects the line, naming it
        if byte >= 0x80:  # a UTF-8 lead byte with its continuation bytes starts text
            size = 2 if 0xC2 <= byte <= 0xDF else 3 if 0xE0 <= byte <= 0xEF else 4 if 0xF0 <= byte <= 0xF4 else 0
            try:
                if size:
                    line[start : start + size].decode("utf-8")
                    break
            except UnicodeDecodeError:
                pass
        start += 1
    end = len(line)
    while end > start and _is_control(line[end - 1]):
        end -= 1
    return line[start:end]


def noise_in_front(line: bytes) -> bool:
    """Whether ``line`` has noise in front of its code (see _without_noise); an STX that an ETX after the code closes
    is a frame (a scanner set to frame its codes), not noise."""
    core = _without_noise(line)
    return bool(core) and not line.startswith(core) and not (line.startswith(b"\x02" + core) and line.endswith(b"\x03"))


def decode_line(line: bytes) -> str:
    """The code as text, without noise or a symbology identifier in front (or control bytes after it); raises
    NoiseError naming what is wrong with the bytes (a line that is noise only is judged whole)."""
    core = _without_noise(line)
    if not core.strip(b" \t"):
        core = line
    try:
        text = core.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NoiseError(f"not UTF-8 (byte {err.start}: 0x{core[err.start]:02x})") from None
    text = text.strip(" \t")
    if bad := next((c for c in text if not c.isprintable()), None):
        raise NoiseError(f"control character 0x{ord(bad):02x}")
    if _SYMBOLOGY_ID.match(text):
        text = text[3:]
    return text


def escape(data: bytes, limit: int = 64) -> str:
    """Bytes for a log line: printable ASCII as it is, everything else as \\xNN; at most ``limit`` of them."""
    shown = repr(data[:limit])[2:-1]
    return shown if len(data) <= limit else f"{shown}... ({len(data)} bytes)"


def parse_code(text: str) -> OrderRef | UnknownCode:
    """A ticket QR ``edge:v1:<order id>:<station>``, with ``:<revision>`` after it above revision 1 (tickets printed
    before stop 63: never), or a plain order id or number typed or read from a receipt."""
    if text.startswith(TICKET_PREFIX):
        parts = text[len(TICKET_PREFIX) :].split(":")
        if (
            len(parts) in (2, 3)
            and _ORDER_ID.fullmatch(parts[0])
            and _STATION.fullmatch(parts[1])
            and (len(parts) == 2 or _REVISION.fullmatch(parts[2]))
        ):
            return OrderRef(parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1)
        return UnknownCode(f"malformed ticket code (expected {TICKET_PREFIX}<order id>:<station>:<revision>)")
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
