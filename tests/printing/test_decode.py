"""Decoding ESC/POS bytes back to text, QR payloads and cuts, and the human preview."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.printing.decode import decode, preview
from edge.printing.profiles import load_escpos

if TYPE_CHECKING:
    from escpos.printer import Dummy

INIT = b"\x1b@\x1bt\x13"


def dummy() -> Dummy:
    """python-escpos' Dummy printer, imported as the agent does (leaving nothing in the temporary folder)."""
    load_escpos()
    from escpos.printer import Dummy

    return Dummy()


def test_text_uses_the_selected_code_page() -> None:
    """ESC t 19 reads CP858, 16 reads CP1252, 0 reads CP437; the last one selected is reported."""
    assert decode(INIT + b"K\x84se \xd5\n").text == "Käse €"
    assert decode(b"\x1bt\x10\x80 \xe4\n").text == "€ ä"
    cp437 = decode(b"\x1bt\x00\xe1\x9b\n")
    assert cp437.text == "ß¢"
    assert cp437.codepage == 0
    assert decode(b"plain\n").codepage is None


def test_lines_feeds_and_unterminated_text() -> None:
    """LF ends a line, ESC d n feeds n lines, CR prints nothing, and text without a final LF still counts."""
    assert decode(INIT + b"one\r\ntwo\x1bd\x02three").text == "one\ntwo\n\nthree"


def test_styles_are_dropped_but_bold_runs_kept() -> None:
    """Bold (ESC E, ESC ! 8) and inverse (GS B) text is listed run by run; the text itself has no styling."""
    data = INIT + b"a \x1bE\x01bold\x1bE\x00 b\n\x1b!\x08also\x1b!\x00\n\x1dB\x01 inv \x1dB\x00\nx\x1d!\x11big\n"
    decoded = decode(data)
    assert decoded.text == "a bold b\nalso\n inv \nxbig"
    assert decoded.bold_text == ["bold", "also", "inv"]


def test_native_qr_from_python_escpos() -> None:
    """A QR code python-escpos sends natively is read back from its store-data function."""
    printer = dummy()
    printer.qr("edge:v1:ord_1:bar", native=True, size=6)
    printer.qr("second", native=True)
    decoded = decode(INIT + printer.output)
    assert decoded.qr_codes == ["edge:v1:ord_1:bar", "second"]
    assert decoded.text == ""


def test_cut_variants_are_counted() -> None:
    """GS V m, GS V m n and the legacy ESC i / ESC m are cuts; their parameters are not text."""
    data = b"a\x1dV\x00b\x1dV\x01c\x1dV\x41\x03d\x1dVB\x00e\x1bif\x1bmg"
    decoded = decode(data)
    assert decoded.cuts == 6
    assert decoded.text == "a\nb\nc\nd\ne\nf\ng"


def test_images_are_skipped_by_their_declared_size() -> None:
    """Raster (GS v 0) and bit images (ESC *) are skipped whole, even when their data looks like commands."""
    raster = b"\x1dv0\x00\x02\x00\x02\x00" + b"\x1dV\x1bp"  # 2 bytes x 2 rows
    bit_image = b"\x1b*\x00\x03\x00" + b"\x1dV\x00"  # 3 columns, 8-dot mode
    bit_image_24 = b"\x1b*\x21\x01\x00" + b"\x1bd\x09"  # 1 column, 24-dot mode: 3 bytes
    decoded = decode(INIT + b"before\n" + raster + bit_image + bit_image_24 + b"after\n")
    assert decoded.text == "before\nafter"
    assert decoded.cuts == 0
    assert decoded.drawer_kicks == 0
    assert "[IMAGE 16x2]" in preview(INIT + raster)


def test_status_queries_and_settings_print_nothing() -> None:
    """DLE EOT, line spacing, barcode height, print width and left margin are skipped with their parameters."""
    data = b"\x10\x04\x01\x1b2\x1b3\x41\x1dh\x50\x1dW\x00\x02\x1dL\x10\x00\x1b-\x01\x1ba\x01ok\n"
    assert decode(data).text == "ok"


def test_cash_drawer_is_reported() -> None:
    """ESC p and DLE DC4 1 open the cash drawer: counted, and shown in the preview, never as text."""
    data = INIT + b"x\n\x1bp\x00\x19\xfay\n\x10\x14\x01\x00\x01"
    decoded = decode(data)
    assert decoded.drawer_kicks == 2
    assert decoded.text == "x\ny"
    assert preview(data).split("\n") == ["x", "[DRAWER]", "y", "[DRAWER]"]


def test_unknown_and_truncated_commands_do_not_stop_decoding() -> None:
    """An unknown ESC/GS command is skipped with its command byte; a command cut short ends the data quietly."""
    assert decode(b"\x1b\xffHello\x1d\xfe!\n").text == "Hello!"
    assert decode(b"ok\n\x1d(k\xff\xff1P0abc").text == "ok"
    assert decode(b"ok\n\x1b").text == "ok"
    assert decode(b"\x1dv0\x00\xff\xff\xff\xff").text == ""


def test_init_clears_the_buffer_and_styles() -> None:
    """ESC @ drops unprinted text and resets bold, size and alignment."""
    decoded = decode(b"lost\x1b@\x1bE\x01\x1b@kept\n")
    assert decoded.text == "kept"
    assert decoded.bold_text == []


def test_preview_centres_spaces_out_double_width_and_marks_qr_and_cut() -> None:
    """The preview shows the paper: centred lines, double width as spaced letters, [QR ...] and a scissors line."""
    printer = dummy()
    printer._raw(INIT + b"\x1ba\x01\x1b!\x30A-1\n\x1b!\x00\x1ba\x00left\n\x1ba\x02right\n\x1ba\x01")
    printer.qr("edge:v1:o:k", native=True)
    printer.cut()
    shown = preview(printer.output, width=32).split("\n")
    assert shown[0] == " " * 13 + "A - 1"  # 6 columns on paper, centred in 32
    assert shown[1] == "left"
    assert shown[2] == " " * 27 + "right"
    assert shown[3] == " " * 8 + "[QR edge:v1:o:k]"
    assert shown[-1].startswith("✂ ") and " cut " in shown[-1] and len(shown[-1]) == 32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_decode(data: bytes) -> None:
    """Garbage in, best-effort text out: decode and preview never raise and the text holds no control bytes but LF."""
    decoded = decode(data)
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f]", decoded.text)
    preview(data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"\x1b", b"\x1d", b"\x10", b"\x1c", b"(", b"k", b"v", b"0", b"V", b"*", b"\xff", b"\x00", b"a", b"\n"]
        ),
        max_size=300,
    )
)
def test_command_shaped_garbage_decodes(parts: list[bytes]) -> None:
    """Bytes made of command prefixes and length bytes still decode; every command moves forward."""
    decode(b"".join(parts))
