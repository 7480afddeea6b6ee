"""Long tickets on a slow serial line, with and without flow control, through the whole agent: a pseudo-terminal
printer with a speed, a receive buffer and a line rate (tests/printing/slow_serial.py, after Epson's TM-U220)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.errors import DeviceWriteError
from edge.printing import driver as driver_module
from edge.printing.decode import decode
from edge.printing.driver import PrinterDriver
from edge.sim.printer import SimPrinter
from edge.transports import SerialTransport
from tests.helpers import api_client, config_dict, db_rows, eventually, post
from tests.printing.slow_serial import SlowSerialPrinter

# Line and paper 50 times as fast as a TM-U220 at 9600 baud (4.7 lines/s, 960 B/s): 235 lines/s and 48 KB/s, the
# agent's line set to 460800 baud (46 KB/s) to match; the buffer keeps its 4 KB, the tickets their bytes.
SCALE = 50
BAUD = 460800


@pytest.fixture
def faster_slowest_printer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's slowest printer (3 lines/s, 2 KB/s, 1 s a cut) at the test's pace."""
    monkeypatch.setattr(driver_module, "_SLOW_PRINTER_BYTES_PER_S", driver_module._SLOW_PRINTER_BYTES_PER_S * SCALE)
    monkeypatch.setattr(driver_module, "_SLOW_PRINTER_LINES_PER_S", driver_module._SLOW_PRINTER_LINES_PER_S * SCALE)
    monkeypatch.setattr(driver_module, "_SLOW_PRINTER_CUT_S", driver_module._SLOW_PRINTER_CUT_S / SCALE)


def big_order(order: dict[str, Any], number: int, items: int, note: str | None = None) -> dict[str, Any]:
    o = copy.deepcopy(order)
    o.update(id=f"ord_big{number}", number=f"P-{number:03d}", print_receipt=False)
    item = o["items"][1]
    o["items"] = [
        dict(copy.deepcopy(item), sku=f"SKU-{n}", name=f"Käsespätzle mit Röstzwiebeln Nr {n:03d} größer", note=note)
        for n in range(items)
    ]
    total = f"{11.90 * items:.2f}"
    tax = f"{11.90 * items * 7 / 107:.2f}"
    o["totals"] = {"subtotal": total, "discount": "0.00", "tax": [{"rate": "7", "amount": tax}], "total": total}
    o["totals"]["currency"] = "EUR"
    return o


def small_order(order: dict[str, Any], number: int) -> dict[str, Any]:
    return dict(copy.deepcopy(order), id=f"ord_small{number}", number=f"P-{number:03d}", print_receipt=False)


@pytest.fixture
def slow_printers() -> Iterator[list[SlowSerialPrinter]]:
    made: list[SlowSerialPrinter] = []
    yield made
    for printer in made:
        printer.close()


@pytest.fixture
def kitchen_on_serial(
    make_agent: Callable[..., Awaitable[Agent]],
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    slow_printers: list[SlowSerialPrinter],
    faster_slowest_printer: None,
) -> Callable[..., Awaitable[tuple[Agent, SlowSerialPrinter]]]:
    async def start(flow_control: str, *, write_timeout: float = 10.0) -> tuple[Agent, SlowSerialPrinter]:
        printer = SlowSerialPrinter(flow_control="xonxoff" if flow_control == "xonxoff" else "none", scale=SCALE)
        slow_printers.append(printer)
        raw = config_dict(tmp_path / "data", printers)
        raw["printers"]["bar"] = {
            "type": "serial",
            "device": printer.device,
            "baudrate": BAUD,
            "flow_control": flow_control,
            "write_timeout": write_timeout,
            # python-escpos's TM-U220 profile has neither cut nor QR (the autocutter model TM-U220B cuts): the
            # default profile's GS V and GS ( k show on paper whether a ticket came out whole.
            "width": 48,
            "status_timeout": 0.5,
        }
        raw["stations"] = {"kitchen": "bar", "bar": "bar"}
        return await make_agent(parse_settings(raw, source="test")), printer

    return start


def tickets_on_paper(printer: SlowSerialPrinter) -> list[str]:
    """The paper cut into tickets at each cut command; the text of each."""
    return [text for piece in bytes(printer.paper).split(b"\x1dV") if (text := decode(piece).text).strip()]


async def test_a_long_ticket_on_a_slow_line_with_flow_control_prints_once_and_the_next_order_follows(
    kitchen_on_serial: Callable[..., Awaitable[tuple[Agent, SlowSerialPrinter]]], example_order: dict
) -> None:
    """A 250-item order with a note on each item (39 KB, 760 lines) for a TM-U220 on RS-232, with XON/XOFF: the printer
    holds the line each time its 4 KB buffer is nearly full, for as long as it takes to print 128 bytes. pyserial's
    write_timeout bounds a whole write() call, and the job went out in one: once the ticket took longer to go out than
    write_timeout (10 s in the shop; here 1.25 s at 50 times the pace, with the pseudo-terminal's 17 KB in flight, which
    hands the writer room only 4 KB at a time), the job was cut off, the status
    check after it could not get out past XOFF, the printer was taken offline and the job reprinted as COPY, again and
    again; the order behind it never printed. Now the timeout bounds a stall (a chunk that makes no progress), not the
    job: the ticket prints once, whole, cut, and the next order after it."""
    agent, printer = await kitchen_on_serial("xonxoff", write_timeout=1.25)
    async with api_client(agent) as api:
        note = "ohne Speck, mit extra Bergkäse und Schnittlauch"
        assert (await post(api, big_order(example_order, 1, 250, note)))[0] == 201
        await asyncio.sleep(0.2)
        assert (await post(api, small_order(example_order, 2)))[0] == 201
        rows = await eventually(
            lambda: db_rows(agent, "SELECT order_id, state, copy, attempts FROM print_jobs ORDER BY id"),
            lambda rows: all(state in ("printed", "failed", "dead") for _, state, _, _ in rows),
            timeout=30,
            what="both jobs done",
        )
    assert rows == [("ord_big1", "printed", 0, 0), ("ord_small2", "printed", 0, 0)]
    tickets = tickets_on_paper(printer)
    # P-001 at its head and in the closing line of a long ticket, once each: printed once, no COPY after it
    assert [t.count("P-001") for t in tickets] == [2, 0] and "P-002" in tickets[1]
    assert not any("KOPIE" in t for t in tickets)
    assert [f"Nr {n:03d} größer" in tickets[0] for n in range(250)] == [True] * 250
    assert tickets[0].count("Schnittlauch") == 250
    assert decode(bytes(printer.paper)).cuts == 2 and printer.lost == 0


@pytest.mark.parametrize("flow_control", ["none", "dsrdtr"])
async def test_a_long_ticket_on_a_line_without_flow_control_is_paced_and_loses_nothing(
    kitchen_on_serial: Callable[..., Awaitable[tuple[Agent, SlowSerialPrinter]]],
    example_order: dict,
    flow_control: str,
) -> None:
    """The same printer left at Epson's default DTR/DSR handshake, the agent at flow_control "none" (or "dsrdtr",
    which pyserial on Linux does not hand to the kernel: nothing holds writes back). The host sent at the line's rate,
    the printer's 4 KB buffer overran and it discarded what came meanwhile: of a 250-item ticket (12 KB) some 5 KB
    lost, lines garbled, no QR, no cut, and the job marked printed. Now the agent paces such a line to the slowest
    printer the driver plans for (3 lines and 2 KB a second, 1 s a cut, here at 50 times that): the whole ticket
    reaches the paper once, cut, and the next order after it."""
    agent, printer = await kitchen_on_serial(flow_control)
    async with api_client(agent) as api:
        assert (await post(api, big_order(example_order, 1, 250)))[0] == 201
        await asyncio.sleep(0.2)
        assert (await post(api, small_order(example_order, 2)))[0] == 201
        rows = await eventually(
            lambda: db_rows(agent, "SELECT order_id, state, copy, attempts FROM print_jobs ORDER BY id"),
            lambda rows: all(state in ("printed", "dead") for _, state, _, _ in rows),
            timeout=30,
            what="both jobs done",
        )
    assert printer.lost == 0
    assert rows == [("ord_big1", "printed", 0, 0), ("ord_small2", "printed", 0, 0)]
    tickets = tickets_on_paper(printer)
    assert len(tickets) == 2 and "P-002" in tickets[1] and not any("KOPIE" in t for t in tickets)
    assert [f"Nr {n:03d} größer" in tickets[0] for n in range(250)] == [True] * 250
    assert decode(bytes(printer.paper)).qr_codes == ["edge:v1:ord_big1:kitchen", "edge:v1:ord_small2:kitchen"]


async def test_a_gs_r_lost_on_the_way_fails_the_job_instead_of_marking_it_printed(
    slow_printers: list[SlowSerialPrinter],
) -> None:
    """A printer that answers GS r, whose GS r after a job does not come back (lost on the way, as bytes a full
    buffer discards), while DLE EOT says all is well: the ticket is not known to be out. Before, it was taken for a
    printer without GS r and the job marked printed (the overrun probe's garbled ticket, copy 0); now the driver asks
    GS r once more: answered, the printer does answer it, so the job did not get through whole: a write error (the
    spool fails it, an attempt spent, and prints it again as COPY). A printer that never answers GS r is still taken
    at its DLE EOT reply (see tests/printing/test_driver.py)."""
    printer = SlowSerialPrinter(scale=SCALE)
    slow_printers.append(printer)
    driver = PrinterDriver("bar", SerialTransport("bar", printer.device, baudrate=BAUD), status_timeout=0.3)
    printer.lose_gs_r = 1  # the first job of a run: the driver does not know yet whether the printer answers GS r
    with pytest.raises(DeviceWriteError, match="GS r"):
        await driver.print(b"\x1b@first\n")
    assert (await driver.print(b"\x1b@second\n")).processed
    printer.lose_gs_r = 1  # and one known to answer it
    with pytest.raises(DeviceWriteError, match="GS r"):
        await driver.print(b"\x1b@third\n")
