"""Framing and parsing of scanner output: suffixes, split reads, noise, the ticket QR format."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.orders.model import parse_order
from edge.printing.render import Renderer
from edge.scanners import LineSplitter, NoiseError, OrderRef, UnknownCode, decode_line, parse_code
from edge.sim.orders import make_order


@pytest.mark.parametrize("suffix", [b"\r", b"\n", b"\r\n"])
def test_each_suffix_ends_a_code(suffix: bytes) -> None:
    """CR, LF and CRLF each end exactly one code; no empty codes appear between CR and LF."""
    splitter = LineSplitter()
    assert splitter.feed(b"A-1001" + suffix + b"edge:v1:ord_1:kitchen" + suffix) == [
        b"A-1001",
        b"edge:v1:ord_1:kitchen",
    ]
    assert splitter.feed(suffix) == []


def test_code_split_across_reads_is_reassembled() -> None:
    """A code arriving a few bytes at a time, CRLF split between two reads, comes out once and whole."""
    splitter = LineSplitter()
    out: list[bytes] = []
    for piece in (b"edg", b"e:v1:ord_", b"000001:kit", b"chen\r", b"\nA-10", b"02\r", b"\n"):
        out += splitter.feed(piece)
    assert out == [b"edge:v1:ord_000001:kitchen", b"A-1002"]


def test_overlong_line_is_dropped_up_to_its_end() -> None:
    """A line longer than the limit is thrown away up to its CR/LF (counted once); the next code is read normally."""
    splitter = LineSplitter(max_line=16)
    assert splitter.feed(b"x" * 20) == []
    assert splitter.feed(b"y" * 20 + b"tail\r\nA-1\r\n") == [b"A-1"]
    assert splitter.overflowed == 1


def test_reset_drops_half_a_code() -> None:
    """After an unplug the half code read before it is not glued to the next one."""
    splitter = LineSplitter()
    splitter.feed(b"edge:v1:ord")
    splitter.reset()
    assert splitter.feed(b"A-1\r") == [b"A-1"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"A-\xff\xfe1", "not UTF-8"),
        (b"A-\x1b1", "control character 0x1b"),
        (b"\x00\x00", "control character 0x00"),
        (b"\xc3", "not UTF-8"),
        ("É42".encode("cp1252"), "not UTF-8 \\(byte 0: 0xc9\\)"),  # a letter in a legacy code page: not noise in front
    ],
)
def test_noise_is_rejected_naming_why(raw: bytes, reason: str) -> None:
    """Bytes that are not UTF-8 or hold control characters are noise, with the reason in the error."""
    with pytest.raises(NoiseError, match=reason):
        decode_line(raw)


@pytest.mark.parametrize(
    "raw",
    [b"\x00A-1", b"\x11\x13A-1", b"\xf0\x80\xfeA-1", b"\xff\x00 A-1", b"\x02A-1\x03", b"A-1\x00"],
)
def test_noise_in_front_of_a_code_and_control_bytes_after_it_are_dropped(raw: bytes) -> None:
    """A stray byte glued in front of a code (NUL, XON/XOFF, broken UTF-8) is noise, not part of the code; so are
    control bytes after it (an STX ... ETX frame)."""
    assert decode_line(raw) == "A-1"


def test_a_silence_ends_a_pending_code() -> None:
    """Bytes left without a suffix are handed out by ``expire`` once nothing came for ``silence_s``; bytes that come
    sooner continue the code. The times are given, not waited for."""
    splitter = LineSplitter(silence_s=0.2)
    assert splitter.feed(b"\x00", at=10.0) == []
    assert splitter.silence_left(10.1) == pytest.approx(0.1)
    assert splitter.expire(10.1) is None
    assert splitter.expire(10.2) == b"\x00"
    assert splitter.silence_left(10.2) is None
    assert splitter.feed(b"edge:v1:o", at=11.0) == [] and splitter.feed(b"rd_1:kitchen", at=11.05) == []
    assert splitter.expire(11.2) is None
    assert splitter.expire(11.25) == b"edge:v1:ord_1:kitchen"
    assert splitter.feed(b"A-1\r", at=12.0) == [b"A-1"]
    assert splitter.silence_left(13.0) is None  # nothing pending after a suffix


def test_umlauts_and_spaces_decode() -> None:
    """UTF-8 text is a code; surrounding spaces and tabs are not part of it."""
    assert decode_line(" Bestellung Größe\t".encode()) == "Bestellung Größe"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("edge:v1:ord_000001:kitchen", OrderRef("ord_000001", "kitchen", 1)),
        ("edge:v1:a.b-c_d:bar-2", OrderRef("a.b-c_d", "bar-2", 1)),
        ("edge:v1:ord_000001:kitchen:12", OrderRef("ord_000001", "kitchen", 12)),
        ("ord_000001", OrderRef("ord_000001", None)),
        ("A-1042", OrderRef("A-1042", None)),
    ],
)
def test_order_references(code: str, expected: OrderRef) -> None:
    """Ticket QR codes name order, station and the revision the ticket shows (1 when it has none); a plain code is
    an order id or number."""
    assert parse_code(code) == expected


@pytest.mark.parametrize(
    "code",
    [
        "edge:v1:ord_1",
        "edge:v1::kitchen",
        "edge:v1:ord 1:kitchen",
        "edge:v1:ord_1:Kitchen",
        "edge:v1:ord_1:kitchen:0",
        "edge:v1:ord_1:kitchen:2:3",
        "edge:v1:ord_1:kitchen:",
        "edge:test:front",
        "edge:v2:x:y",
        "x" * 65,
    ],
)
def test_codes_naming_no_order(code: str) -> None:
    """Malformed tickets, test pages, other versions and overlong plain codes name no order, with a reason."""
    result = parse_code(code)
    assert isinstance(result, UnknownCode) and result.reason


def test_ticket_qr_is_parsed_back_to_its_order_and_station() -> None:
    """The QR code the renderer prints on a kitchen ticket is read back as that order's kitchen ticket."""
    order = parse_order(make_order(7))
    ticket = Renderer().ticket(order, "kitchen", width=48, language="de", copy=False)
    code = f"edge:v1:{order.id}:kitchen"
    assert code.encode() in ticket  # the QR payload travels verbatim in the GS ( k store command
    assert parse_code(code) == OrderRef(order.id, "kitchen", 1)
    later = dataclasses.replace(order, revision=3)
    changed = Renderer().ticket(later, "kitchen", width=48, language="de", copy=False)
    assert f"{code}:3".encode() in changed and parse_code(f"{code}:3") == OrderRef(order.id, "kitchen", 3)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_any_bytes_give_lines_or_noise_never_a_crash(chunks: list[bytes]) -> None:
    """Whatever a broken scanner sends, framing and decoding only ever yield bounded lines or NoiseError."""
    splitter = LineSplitter(max_line=32)
    for chunk in chunks:
        for line in splitter.feed(chunk):
            assert line and len(line) <= 32 and b"\r" not in line and b"\n" not in line
            try:
                parse_code(decode_line(line))
            except NoiseError:
                pass
