"""The ESC/POS commands a laid-out job is made of, byte for byte as python-escpos writes them (its ``set``, native
``qr``, ``cut``, ``print_and_feed`` and ``cashdraw``; tests/printing/test_commands.py holds the two side by side),
without importing it: python-escpos and Pillow cost a Pi ~8 MB for good and ~0.1 s, and only images need them (a
logo, a QR code drawn as an image), which go through python-escpos' own Dummy printer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.printing.profiles import Profile, load_escpos

if TYPE_CHECKING:
    from escpos.printer import Dummy
    from PIL import Image

ESC, GS = b"\x1b", b"\x1d"
_NORMAL = ESC + b"!\x00"
# python-escpos sends ESC ! 0 before each size, and its table's own sizes start with it again: kept, byte for byte
SIZE = {
    "1x": _NORMAL + _NORMAL + _NORMAL,
    "2h": _NORMAL + _NORMAL + ESC + b"!\x10",
    "2w": _NORMAL + _NORMAL + ESC + b"! ",
    "2x": _NORMAL + _NORMAL + ESC + b"!0",
}
BOLD = {False: ESC + b"E\x00", True: ESC + b"E\x01"}
UNDERLINE = {False: ESC + b"-\x00", True: ESC + b"-\x01"}
INVERT = {False: GS + b"B\x00", True: GS + b"B\x01"}
ALIGN = {"left": ESC + b"a\x00", "center": ESC + b"a\x01", "right": ESC + b"a\x02"}
_FULL_CUT, _PART_CUT = GS + b"V\x00", GS + b"V\x01"
DRAWER_PULSE = ESC + b"p\x0022"  # pulse on pin 2: 50 ms on, 50 ms off (the units are 2 ms)
_QR_MODEL_2, _QR_LEVEL_M = 2, 1


class Commands:
    """A job's bytes as they are written; ``output`` is the whole job."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._parts: list[bytes] = []
        self._images: Dummy | None = None

    @property
    def output(self) -> bytes:
        return b"".join(self._parts)

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def feed(self, lines: int) -> None:
        """Print what is buffered and feed ``lines`` lines (ESC d)."""
        if not 0 <= lines <= 255:
            raise ValueError("a feed takes 0 to 255 lines")
        self._parts.append(ESC + b"d" + bytes([lines]))

    def cut(self, *, partial: bool) -> None:
        """Feed to the cutter and cut: the cut asked for if the model has it, else the other one, else none."""
        self.feed(6)
        cuts = [(_PART_CUT, "paperPartCut"), (_FULL_CUT, "paperFullCut")]
        for command, feature in cuts if partial else cuts[::-1]:
            if self.profile.supports(feature):
                self._parts.append(command)
                return

    def end_strip(self, cut: str) -> None:
        """Feed past the cutter and cut as the printer's ``cut`` setting says (full, partial), or only feed past the
        tear bar (none)."""
        if cut == "none":
            self.feed(6)
        else:
            self.cut(partial=cut == "partial")

    def open_drawer(self) -> None:
        self._parts.append(DRAWER_PULSE)

    def qr(self, data: str, *, size: int) -> None:
        """A QR code the printer draws itself (GS ( k: model 2, error correction M); nothing for no data."""
        if not 1 <= size <= 16:
            raise ValueError("a QR code's dots are 1 to 16")
        if not data:
            return
        self._qr_part(b"A", bytes([48 + _QR_MODEL_2, 0]))
        self._qr_part(b"C", bytes([size]))
        self._qr_part(b"E", bytes([48 + _QR_LEVEL_M]))
        self._qr_part(b"P", b"0" + data.encode("utf-8"))
        self._qr_part(b"Q", b"0")

    def _qr_part(self, function: bytes, data: bytes) -> None:
        length = len(data) + 2
        if length > 0xFFFF:
            raise ValueError("a QR code holds at most 65,533 bytes")
        self._parts.append(GS + b"(k" + length.to_bytes(2, "little") + b"1" + function + data)

    def qr_image(self, data: str, *, size: int, image_arguments: dict[str, Any]) -> None:
        """A QR code sent as an image, for a printer that cannot draw one (python-escpos and Pillow draw it)."""
        from escpos.constants import QR_ECLEVEL_M

        printer = self._image_printer()
        printer.qr(data, native=False, ec=QR_ECLEVEL_M, size=size, image_arguments=image_arguments)
        self._take(printer)

    def image(self, image: Image.Image, image_arguments: dict[str, Any]) -> None:
        printer = self._image_printer()
        printer.image(image, **image_arguments)
        self._take(printer)

    def _image_printer(self) -> Dummy:
        # One per job, as before: python-escpos' text encoder keeps its state between the images of a job
        if self._images is None:
            load_escpos()
            from escpos.printer import Dummy

            self._images = Dummy(profile=self.profile.name)
        return self._images

    def _take(self, printer: Dummy) -> None:
        self._parts.append(printer.output)
        printer.clear()
