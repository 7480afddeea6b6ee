"""What a Chinese-market clone makes of a job's bytes (Xprinter XP-58/XP-80C, ZJiang ZJ-5890, HPRT, Goojprt): many
ship in Chinese (GB18030 double-byte, "Kanji") character mode, set by memory switch, and ``ESC @`` puts them back in
it. In that mode a text byte from 0x81 up starts a two-byte character: CP858's ``ü`` (0x81) and the letter after it
print as one Hanzi, ``€`` (0xD5) eats the next byte. ``FS .`` (1C 2E, "cancel Kanji character mode") switches to
single-byte text and the ``ESC t`` code page; ``FS &`` (1C 26) back (Xprinter and ZJiang programmer manuals;
DantSu/ESCPOS-ThermalPrinter-Android#185: an Xprinter XP-300 printed Chinese until 0x1C 0x2E, and ``reset()``
(ESC @) undid it; mike42/escpos-php#833: an Xprinter printed accents wrongly until its default table was changed).

The rest is read as the project's decoder reads it (edge/printing/decode.py)."""

from __future__ import annotations

from edge.printing.decode import _Reader


class _CloneReader(_Reader):
    def __init__(self, data: bytes, *, chinese_default: bool) -> None:
        self.chinese_default = chinese_default
        self.chinese = chinese_default
        self._codec = ""
        super().__init__(data)

    @property
    def codec(self) -> str:
        return "gb18030" if self.chinese else self._codec

    @codec.setter
    def codec(self, value: str) -> None:
        self._codec = value

    def _reset(self) -> None:  # ESC @ (and power on): the memory switch's default mode again
        super()._reset()
        self.chinese = self.chinese_default

    def _fs(self) -> None:
        command = self._at(1)
        if command in (ord("&"), ord(".")):
            self.chinese = command == ord("&")
            self.pos += 2
        else:
            super()._fs()


def clone_text(data: bytes, *, chinese_default: bool = True) -> str:
    """The job's text as such a clone prints it (``chinese_default``: its memory switch leaves Chinese mode on)."""
    reader = _CloneReader(data, chinese_default=chinese_default)
    reader.read()
    return "\n".join("".join(text for text, _ in line.parts) for line in reader.lines if line.mark is None)
