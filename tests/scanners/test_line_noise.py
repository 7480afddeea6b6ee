"""Line noise and codes without a suffix on a serial scanner, through real pyserial on pseudo-terminals: a stray byte
(NUL from a line glitch, XON at power-up, baud noise) or half a code (a cable pulled on a port that stays) must not
spoil the next good scan, and a scanner that ends codes by silence only is read, and says so. A code's bytes arrive
within a few ms of each other; a silence after bytes ends what is pending (the tests keep their silences short)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.sim.orders import make_order
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, db_rows, push_order, scanner_config, wait_until

SILENCE_S = 0.35  # longer than the silence that ends a pending code, far shorter than anyone scans twice


async def scanner_status(api: aiohttp.ClientSession, name: str) -> dict[str, object]:
    async with api.get("/api/v1/scans") as response:
        return next(s for s in (await response.json())["scanners"] if s["name"] == name)


async def test_a_stray_byte_or_noise_between_scans_does_not_spoil_the_next_code(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A NUL, an XON and a burst of baud noise, each arriving on its own between scans: every next ticket is read
    (before: each was rejected, glued to the noise). The noise is dropped once silence ends it, logged with its
    bytes."""
    agent, seen = scan_agent
    orders = [await push_order(agent, i) for i in (1, 2, 3)]
    with capture_logs() as logs:
        for i, (noise, order) in enumerate(zip((b"\x00", b"\x11", b"\xf0\x80\xfe"), orders, strict=True)):
            sims["kitchen"].send(noise)
            await asyncio.sleep(SILENCE_S)
            sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")
            await seen.scans_count(i + 1)
    assert [(s.order_id, s.outcome) for s in seen.scans] == [(o["id"], "order_ready") for o in orders]
    rejected = [e for e in logs if e["event"] == "scan_rejected"]
    assert [e["bytes"] for e in rejected] == ["\\x00", "\\x11", "\\xf0\\x80\\xfe"]
    assert agent.scanners["kitchen"].rejected == 3


async def test_control_bytes_in_front_of_a_code_are_dropped(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Control bytes and broken UTF-8 glued in front of a code (in the same burst) are dropped, not the whole code
    (before: 'control character 0x00' / 'not UTF-8'); so is an STX ... ETX frame around a code. A line with a control
    character inside is still rejected, its bytes in the log."""
    agent, seen = scan_agent
    orders = [await push_order(agent, i) for i in (4, 5, 6)]
    with capture_logs() as logs:
        sims["kitchen"].send(f"\x00\x11edge:v1:{orders[0]['id']}:kitchen\r\n".encode())
        sims["kitchen"].send(b"\xff\xfe" + f"edge:v1:{orders[1]['id']}:kitchen\r\n".encode())
        sims["kitchen"].send(f"\x02edge:v1:{orders[2]['id']}:kitchen\x03\r\n".encode())
        sims["kitchen"].send(b"A-\x1b1\r\n")
        await seen.scans_count(3)
        await asyncio.sleep(0.2)  # room for the rejected line's log
    assert [(s.order_id, s.outcome) for s in seen.scans] == [(o["id"], "order_ready") for o in orders]
    [rejected] = [e for e in logs if e["event"] == "scan_rejected"]
    assert (rejected["reason"], rejected["bytes"]) == ("control character 0x1b", "A-\\x1b1")


async def test_a_code_in_a_legacy_code_page_starting_with_a_letter_is_rejected_not_read_without_it(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A scanner set to Windows-1252 (a Honeywell or Datalogic "country" setting) reads a code that begins with a
    letter outside ASCII: its first byte is that letter, not noise. The line is rejected as not UTF-8, naming the byte,
    and the cook scans again once the scanner is set right; no order is marked. Before (the scanner probe's s12):
    the letter was dropped as noise and the rest read as a code: "ÄA-1001" marked order A-1001 ready."""
    agent, seen = scan_agent
    order = await push_order(agent, 1)
    with capture_logs() as logs:
        sims["kitchen"].send("Ä".encode("cp1252") + order["number"].encode() + b"\r\n")
        sims["kitchen"].scan(f"edge:v1:{order['id']}:kitchen")  # scanned again, set right
        await seen.scans_count(1)
        await asyncio.sleep(0.2)  # room for the rejected line's log
    assert [(s.order_id, s.code) for s in seen.scans] == [(order["id"], f"edge:v1:{order['id']}:kitchen")]
    [rejected] = [e for e in logs if e["event"] == "scan_rejected"]
    assert rejected["reason"] == "not UTF-8 (byte 0: 0xc4)", rejected


async def test_half_a_code_from_a_pulled_cable_is_dropped_after_a_silence(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """An RS-232 scanner (the port stays) that has been sending codes with CR LF: its cable is pulled mid-code, and the
    ticket scanned again once it is back. The half code is dropped as cut off, logged with its bytes; the scan after it
    is read (before: glued to the half code, 'edge:v1:…:kitcedge:v1:…' was unknown)."""
    agent, seen = scan_agent
    first, second = await push_order(agent, 7), await push_order(agent, 8)
    sims["kitchen"].scan(f"edge:v1:{first['id']}:kitchen")
    await seen.scans_count(1)
    with capture_logs() as logs:
        sims["kitchen"].send(f"edge:v1:{second['id']}:kitc".encode())
        await asyncio.sleep(SILENCE_S)
        sims["kitchen"].scan(f"edge:v1:{second['id']}:kitchen")
        scans = await seen.scans_count(2)
    assert (scans[1].order_id, scans[1].outcome) == (second["id"], "order_ready")
    assert await db_rows(agent, "SELECT COUNT(*) FROM scans") == [(2,)]
    [rejected] = [e for e in logs if e["event"] == "scan_rejected"]
    assert rejected["bytes"] == f"edge:v1:{second['id']}:kitc" and "cut off" in rejected["reason"]


async def test_a_scanner_without_a_suffix_is_read_by_silence_and_says_so(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], scan_api: aiohttp.ClientSession
) -> None:
    """A scanner left without a suffix (codes end by silence only): each code is read once a short silence ends it
    (before: no row, no log line, codes 0, until 256 bytes made 'no CR or LF within 256 bytes'). The agent says once, in
    the log and in the scanner's status detail, that the scanner sends no suffix."""
    agent, seen = scan_agent
    orders = [await push_order(agent, i) for i in (9, 10, 11)]
    with capture_logs() as logs:
        for i, order in enumerate(orders):
            sims["kitchen"].send(f"edge:v1:{order['id']}:kitchen".encode())
            await seen.scans_count(i + 1)
    assert [(s.order_id, s.outcome) for s in seen.scans] == [(o["id"], "order_ready") for o in orders]
    assert len([e for e in logs if e["event"] == "scanner_sends_no_suffix"]) == 1
    assert not [e for e in logs if e["event"] == "scan_rejected"]
    status = await scanner_status(scan_api, "kitchen")
    assert (status["connected"], status["codes"], status["rejected"]) == (True, 3, 0)
    assert "no suffix" in str(status["detail"])


async def test_the_tail_of_a_code_cut_off_is_not_taken_for_a_code_of_its_own(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """Orders numbered 1042 and 42. A scanner that ends its codes with CR LF sends "1042" in two parts 0.3 s apart (a
    Bluetooth SPP link retransmitting, a glitch on an RS-232 line): "10", a silence that ends it as cut off, then
    "42\\r\\n". The tail is dropped as the rest of the cut-off code, not read as order 42's number: no order is marked
    ready by it. A whole ticket code right after is read as ever. Before stop 62 (the scanner probe, s11): order 42
    was marked ready and central told, while 1042 stayed open."""
    agent, seen = scan_agent
    assert agent.deps is not None
    await push_order(agent, 0)  # a code with its suffix first: this scanner ends its codes
    sims["kitchen"].scan(f"edge:v1:{make_order(0)['id']}:kitchen")
    await seen.scans_count(1)
    whole, short = make_order(1) | {"number": "1042"}, make_order(2) | {"number": "42"}
    for order in (whole, short):
        await agent.deps.intake.accept(order)
    with capture_logs() as logs:
        sims["kitchen"].send(b"10")
        await asyncio.sleep(SILENCE_S)
        sims["kitchen"].send(b"42\r\n")
        sims["kitchen"].scan(f"edge:v1:{whole['id']}:kitchen")
        scans = await seen.scans_count(2)
        await asyncio.sleep(0.2)  # room for a wrong scan to come
    expected = [(make_order(0)["id"], "order_ready"), (whole["id"], "order_ready")]
    assert [(s.order_id, s.outcome) for s in seen.scans] == expected, scans
    assert await db_rows(agent, "SELECT COUNT(*) FROM scans WHERE order_id = ?", short["id"]) == [(0,)]
    rejected = [(e["bytes"], e["reason"]) for e in logs if e["event"] == "scan_rejected"]
    assert [b for b, _ in rejected] == ["10", "42"] and "cut off" in rejected[1][1], rejected


async def test_a_bad_code_lying_under_a_scanner_is_one_log_line_not_one_a_read(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A flyer's QR code too long for a ticket (a vCard) lies under a hands-free scanner that re-reads it twice a
    second: 20 reads, each rejected, are one `scan_rejected` line (the rest counted in the next), as unknown codes
    lying there already are. A different bad code is its own line. Before stop 62 (the scanner probe, s09) each read
    was a warning: about 7,200 lines an hour on the card."""
    agent, _ = scan_agent
    vcard = b"BEGIN:VCARD " + b"x" * 300 + b"\r\n"
    with capture_logs() as logs:
        for _ in range(20):
            sims["kitchen"].send(vcard)
            await asyncio.sleep(0.01)
        sims["kitchen"].send(b"A-\x1b1\r\n")
        await wait_until(lambda: agent.scanners["kitchen"].rejected == 21, what="every read rejected")
    rejected = [e for e in logs if e["event"] == "scan_rejected"]
    assert len(rejected) == 2, [e["reason"] for e in rejected]


@pytest.mark.parametrize("fresh", ["replugged", "restarted"])
async def test_a_number_cut_in_two_right_after_a_replug_or_a_restart_marks_no_order_ready(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], fresh: str
) -> None:
    """Orders numbered A-101 and A-1011. The kitchen scanner ends its codes with CR; its cable is re-seated (or the
    agent restarted), and the first code after that comes in two parts 0.25 s apart: "A-101", a silence, "1\\r". The
    agent cannot yet know the scanner's suffix on this connection, so it waits for more before it takes a piece ended
    by silence: the "1\\r" that follows shows the piece was cut off, and both are rejected. Nothing is marked ready;
    the number scanned again is read. Before stop 68 (the scanner probe, F2) A-101 was marked ready, central told,
    and the tail "1" read as a code of its own."""
    seen = Seen()
    agent = await make_agent(scanners=scanner_config(sims), listen=seen)
    await seen.connected("kitchen")
    assert agent.deps is not None
    short, whole = make_order(1) | {"number": "A-101"}, make_order(2) | {"number": "A-1011"}
    for order in (short, whole):
        await agent.deps.intake.accept(order)
    sims["kitchen"].scan(f"edge:v1:{short['id']}:bar", "\r")  # a code with its suffix: this scanner ends its codes
    await seen.scans_count(1)
    if fresh == "replugged":
        sims["kitchen"].unplug()
        await seen.connected("kitchen", False)
        sims["kitchen"].plug()
        await seen.connected("kitchen", times=2)
    else:
        await agent.stop()
        seen = Seen()
        agent = await make_agent(scanners=scanner_config(sims), listen=seen)
        await seen.connected("kitchen")
    before = len(seen.scans)
    with capture_logs() as logs:
        sims["kitchen"].send(b"A-101")
        await asyncio.sleep(0.25)
        sims["kitchen"].send(b"1\r")
        await asyncio.sleep(1.5)  # longer than a piece waits for its rest
        sims["kitchen"].scan("A-1011", "\r")
        scans = await seen.scans_count(before + 1)
        await asyncio.sleep(0.2)  # room for a wrong scan to come
    assert [(s.code, s.order_id, s.outcome) for s in seen.scans[before:]] == [("A-1011", whole["id"], "order_ready")], (
        scans
    )
    assert await db_rows(agent, "SELECT COUNT(*) FROM order_pickup WHERE order_id = ?", short["id"]) == [(0,)]
    rejected = [(e["bytes"], e["reason"]) for e in logs if e["event"] == "scan_rejected"]
    assert [b for b, _ in rejected] == ["A-101", "1"] and "cut off" in rejected[0][1], rejected


async def test_a_scanner_at_the_wrong_baud_rate_marks_no_order_by_what_its_garble_leaves(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner]
) -> None:
    """A serial scanner sending at 115200 baud to a port left at 9600: each scan arrives as a framing error's NUL and
    one character, its CR lost in the garble (the scan71 probe's UART model). The till numbers its orders 1, 2, 3 each
    day: the noise in front was dropped, the silence ended the rest, and "1" marked order 1 ready, then handed out,
    central told both (before stop 71). A code with noise in front and no suffix after it is garble, rejected naming
    both; the same bytes ended by a suffix, a clean code without one, or one framed STX ... ETX (a scanner set to
    frame its codes, no CR) are still read."""
    agent, seen = scan_agent
    assert agent.deps is not None
    first, second = make_order(1) | {"number": "1"}, make_order(2)
    for order in (first, second):
        await agent.deps.intake.accept(order)
    with capture_logs() as logs:
        for _ in range(2):
            sims["kitchen"].send(b"\x001")
            await asyncio.sleep(SILENCE_S * 3)  # longer than a piece waits for its rest
        sims["kitchen"].send(f"\x02edge:v1:{second['id']}:kitchen\x03".encode())
        await seen.scans_count(1)
        sims["kitchen"].send(f"\x00edge:v1:{first['id']}:kitchen\r".encode())  # a power-on NUL, then a whole code
        await seen.scans_count(2)
        await asyncio.sleep(0.2)  # room for a wrong scan to come
    assert [(s.code, s.outcome) for s in seen.scans] == [
        (f"edge:v1:{second['id']}:kitchen", "order_ready"),
        (f"edge:v1:{first['id']}:kitchen", "order_ready"),
    ]
    [rejected] = [e for e in logs if e["event"] == "scan_rejected"]  # the same bytes again: one line
    assert rejected["bytes"] == "\\x001" and "noise" in rejected["reason"], rejected
    assert agent.scanners["kitchen"].rejected == 2
