"""Reads ESC/POS bytes back into text, QR payloads and cuts, for tests and for a human preview of a job (text or
PNG)."""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import ImageFont

ESC, GS, DLE, FS = 0x1B, 0x1D, 0x10, 0x1C
_LF, _FF, _HT = 0x0A, 0x0C, 0x09

_CODECS = {0: "cp437", 16: "cp1252", 19: "cp858"}
_DEFAULT_CODEC = "cp858"
_ALIGN = {0: "left", 48: "left", 1: "center", 49: "center", 2: "right", 50: "right"}

# Commands whose parameters have a fixed length: command byte -> number of parameter bytes.
# Anything not listed (and not handled by name below) is skipped as ESC/GS plus its command byte.
_ESC_PARAMS = {
    b" ": 1, b"$": 2, b"%": 1, b"2": 0, b"3": 1, b"<": 0, b"=": 1, b"G": 1, b"K": 1, b"L": 0, b"M": 1, b"R": 1,
    b"S": 0, b"T": 1, b"U": 1, b"V": 1, b"W": 8, b"\\": 2, b"c": 2, b"e": 1, b"r": 1, b"u": 1, b"v": 0, b"{": 1,
}  # fmt: skip
_GS_PARAMS = {
    b"$": 2, b"/": 1, b":": 0, b"H": 1, b"I": 1, b"L": 2, b"P": 2, b"W": 2, b"\\": 2, b"^": 3, b"a": 1, b"b": 1,
    b"f": 1, b"h": 1, b"r": 1, b"w": 1, b"|": 1,
}  # fmt: skip
_CUT_WITH_FEED = {65, 66, 97, 98, 103, 104}  # GS V m n: these m take a feed amount n


@dataclasses.dataclass
class Decoded:
    text: str  # readable text, lines joined by "\n", styling dropped
    qr_codes: list[str]  # payloads of the QR codes printed
    cuts: int  # number of cut commands
    bold_text: list[str]  # text runs printed bold or inverse, one per run and line
    codepage: int | None  # the last ESC t n seen
    drawer_kicks: int = 0  # ESC p / DLE DC4 1 pulses: a ticket must never open the cash drawer


@dataclasses.dataclass
class _Line:
    """One printed line, or one thing on paper that is not text (a QR code, a cut, an image)."""

    parts: list[tuple[str, bool]] = dataclasses.field(default_factory=list)  # (text, double width)
    align: str = "left"
    mark: str | None = None  # "qr", "cut", "drawer", "image"
    detail: str = ""


class _Reader:
    """Walks the bytes once, keeping the printer's state; every step moves forward, so any input ends."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.lines: list[_Line] = []
        self.line = _Line()
        self.qr_codes: list[str] = []
        self.qr_data = b""
        self.cuts = 0
        self.drawer_kicks = 0
        self.codepage: int | None = None
        self.bold_runs: list[str] = []
        self.run = ""
        self._reset()

    def _reset(self) -> None:
        self.codec = _DEFAULT_CODEC
        self.bold = self.invert = self.wide = False
        self.align = "left"

    def read(self) -> None:
        data = self.data
        while self.pos < len(data):
            byte = data[self.pos]
            if byte >= 0x20 and byte != 0x7F:
                end = self.pos
                while end < len(data) and data[end] >= 0x20 and data[end] != 0x7F:
                    end += 1
                self._text(data[self.pos : end].decode(self.codec, errors="replace"))
                self.pos = end
            elif byte == ESC:
                self._esc()
            elif byte == GS:
                self._gs()
            elif byte == DLE:
                self._dle()
            elif byte == FS:
                self._fs()
            elif byte in (_LF, _FF):
                self._newline()
                self.pos += 1
            elif byte == _HT:
                self._text(" ")
                self.pos += 1
            else:  # CR, DEL and the other control bytes print nothing
                self.pos += 1
        if self.line.parts:
            self._newline()

    def _fs(self) -> None:
        # FS p n m prints a stored image; the other FS commands (Kanji mode) take at most one byte we can skip.
        self.pos += 4 if self._at(1) == ord("p") else 2

    def _at(self, offset: int) -> int | None:
        index = self.pos + offset
        return self.data[index] if index < len(self.data) else None

    def _arg(self, offset: int) -> int:
        """A parameter byte; a command cut short by the end of the data reads as 0."""
        value = self._at(offset)
        return 0 if value is None else value

    def _text(self, text: str) -> None:
        if not self.line.parts:
            self.line.align = self.align
        self.line.parts.append((text, self.wide))
        if self.bold or self.invert:
            self.run += text
        else:
            self._end_run()

    def _end_run(self) -> None:
        if self.run.strip():
            self.bold_runs.append(self.run.strip())
        self.run = ""

    def _newline(self) -> None:
        self._end_run()
        if not self.line.parts:
            self.line.align = self.align
        self.lines.append(self.line)
        self.line = _Line()

    def _mark(self, mark: str, detail: str = "") -> None:
        if self.line.parts:
            self._newline()
        self.lines.append(_Line(align=self.align, mark=mark, detail=detail))

    def _command(self) -> tuple[bytes, int] | None:
        """The command byte after ESC or GS and its first parameter; steps past both prefix bytes (or the lone
        prefix)."""
        command = self._at(1)
        if command is None:
            self.pos += 1
            return None
        n = self._arg(2)
        self.pos += 2  # the prefix and the command byte; each command adds its parameters
        return bytes([command]), n

    def _esc(self) -> None:
        if (found := self._command()) is None:
            return
        key, n = found
        if key == b"@":
            self._reset()
            self.line = _Line()  # ESC @ clears the print buffer
            self.run = ""
        elif key == b"t":
            self.codepage = n
            self.codec = _CODECS.get(n, _DEFAULT_CODEC)
            self.pos += 1
        elif key == b"!":
            self._end_run()
            self.bold, self.wide = bool(n & 0x08), bool(n & 0x20)
            self.pos += 1
        elif key == b"E":
            self._end_run()
            self.bold = bool(n & 1)
            self.pos += 1
        elif key == b"-":
            self.pos += 1
        elif key == b"a":
            self.align = _ALIGN.get(n, self.align)
            self.pos += 1
        elif key == b"d":
            for _ in range(n):
                self._newline()
            self.pos += 1
        elif key == b"J":
            self._newline()
            self.pos += 1
        elif key == b"p":
            self.drawer_kicks += 1
            self._mark("drawer")
            self.pos += 3
        elif key in (b"i", b"m"):
            self.cuts += 1
            self._mark("cut")
        elif key == b"*":
            # ESC * m nL nH: nL + 256 nH columns of 1 byte (8-dot modes) or 3 bytes (24-dot modes).
            columns = self._arg(1) + 256 * self._arg(2)
            self._mark("image", f"{columns} columns")
            self.pos += 3 + columns * (3 if n >= 32 else 1)
        elif key == b"D":
            # ESC D n1 ... nk NUL: tab stops, at most 32 of them.
            end = self.data.find(b"\x00", self.pos, self.pos + 33)
            self.pos = end + 1 if end >= 0 else self.pos + 32
        elif key == b"(":
            self.pos += 3 + self._arg(1) + 256 * self._arg(2)  # ESC ( fn pL pH data
        else:
            self.pos += _ESC_PARAMS.get(key, 0)

    def _gs(self) -> None:
        if (found := self._command()) is None:
            return
        key, n = found
        if key == b"!":
            self._end_run()
            self.wide = (n >> 4) & 0x07 > 0
            self.pos += 1
        elif key == b"B":
            self._end_run()
            self.invert = bool(n & 1)
            self.pos += 1
        elif key == b"V":
            self.cuts += 1
            self._mark("cut")
            self.pos += 2 if n in _CUT_WITH_FEED else 1
        elif key == b"(":
            self._gs_function(n)
        elif key == b"v":
            # GS v 0 m xL xH yL yH: a raster image of (xL + 256 xH) bytes by (yL + 256 yH) rows.
            row_bytes, rows = self._arg(2) + 256 * self._arg(3), self._arg(4) + 256 * self._arg(5)
            self._mark("image", f"{row_bytes * 8}x{rows}")
            self.pos += 6 + row_bytes * rows
        elif key == b"*":
            self._mark("image", "stored")
            self.pos += 2 + n * self._arg(1) * 8  # GS * x y: x * y * 8 bytes
        elif key == b"8":
            # GS 8 L p1 p2 p3 p4 ...: a graphics function with a four-byte length.
            size = sum(self._arg(1 + i) << (8 * i) for i in range(4))
            self.pos += 5 + size
        elif key == b"k":
            self._barcode(n)
        else:
            self.pos += _GS_PARAMS.get(key, 0)

    def _gs_function(self, function: int) -> None:
        """GS ( fn pL pH data: QR codes (fn k, code type 49) are read; everything else is skipped by its length."""
        size = self._arg(1) + 256 * self._arg(2)
        body = self.data[self.pos + 3 : self.pos + 3 + size]
        self.pos += 3 + size
        if function != ord("k") or len(body) < 2 or body[0] != 49:
            return
        if body[1] == 80:  # store the data (cn fn m data)
            self.qr_data = body[3:]
        elif body[1] == 81:  # print the stored symbol
            payload = self.qr_data.decode("utf-8", errors="replace")
            self.qr_codes.append(payload)
            self._mark("qr", payload)

    def _barcode(self, kind: int) -> None:
        """GS k m: a NUL-terminated barcode for m <= 6, else a length byte and the data."""
        if kind <= 6:
            end = self.data.find(b"\x00", self.pos + 1)
            self.pos = end + 1 if end >= 0 else len(self.data)
        else:
            self.pos += 2 + self._arg(1)
        self._mark("barcode")

    def _dle(self) -> None:
        command = self._at(1)
        if command in (0x04, 0x05):  # DLE EOT n / DLE ENQ n: status requests, nothing on paper
            self.pos += 3
        elif command == 0x14:  # DLE DC4 fn m t
            if self._arg(2) == 1:
                self.drawer_kicks += 1
                self._mark("drawer")
            self.pos += 5
        else:
            self.pos += 1


def _read(data: bytes) -> _Reader:
    reader = _Reader(bytes(data))
    reader.read()
    return reader


def decode(data: bytes) -> Decoded:
    """What a job prints, without the styling; never raises, whatever the bytes."""
    reader = _read(data)
    text_lines = ["".join(text for text, _ in line.parts) for line in reader.lines if line.mark is None]
    return Decoded(
        text="\n".join(text_lines),
        qr_codes=reader.qr_codes,
        cuts=reader.cuts,
        bold_text=reader.bold_runs,
        codepage=reader.codepage,
        drawer_kicks=reader.drawer_kicks,
    )


def preview(data: bytes, *, width: int = 48) -> str:
    """The job as it would look on paper ``width`` columns wide: double-width text is spaced out (``A - 1 0``),
    QR codes show as ``[QR payload]``, cuts as a scissors line, a cash drawer pulse as ``[DRAWER]``."""
    out = []
    for line in _read(data).lines:
        if line.mark == "cut":
            out.append("✂ " + " cut ".center(width - 2, "-"))
            continue
        if line.mark == "qr":
            text = f"[QR {line.detail}]"
        elif line.mark is not None:
            text = f"[{line.mark.upper()}{' ' + line.detail if line.detail else ''}]"
        else:
            # A double-width character takes two columns on paper; the space keeps the columns true.
            text = "".join("".join(c + " " for c in part) if wide else part for part, wide in line.parts)
        room = max(width - len(text), 0)
        pad = {"left": 0, "center": room // 2, "right": room}[line.align]
        out.append((" " * pad + text).rstrip())
    return "\n".join(out)


_PNG_CELL = (10, 20)  # pixels per column and per line
_PNG_MARGIN = 12


def preview_png(data: bytes, *, width: int = 48) -> bytes:
    """The text preview as a PNG of a paper strip: one fixed cell per column, so columns line up as on paper."""
    from PIL import Image, ImageDraw  # only `edge preview --png` draws: the agent's start does not load Pillow

    lines = preview(data, width=width).split("\n")
    cell_w, cell_h = _PNG_CELL
    image = Image.new("L", (width * cell_w + 2 * _PNG_MARGIN, len(lines) * cell_h + 2 * _PNG_MARGIN), 255)
    draw = ImageDraw.Draw(image)
    font = _png_font()
    for row, line in enumerate(lines):
        for column, char in enumerate(line):
            if char != " ":
                draw.text((_PNG_MARGIN + column * cell_w, _PNG_MARGIN + row * cell_h), char, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@functools.cache
def _png_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Mono (Debian: fonts-dejavu-core) has umlauts, € and ✂; Pillow's built-in font lacks them."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSansMono.ttf", 16)  # Pillow looks through the system's font folders
    except OSError:
        return ImageFont.load_default(size=16)
