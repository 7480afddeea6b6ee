"""A printer's replies held up on the way back (a lost TCP segment sent again after its timeout, RFC 6298: 1 s, then
doubling): they arrive late, whole and in order. A late reply is the reply to the query it answers, never the next
one's: read as the next one's, a DLE EOT 1 reply (bit 2: the drawer sensor) said "cover open" to DLE EOT 2 (a printed
ticket reprinted as COPY) or "paper near end" to DLE EOT 4 (a false alert), and a ticket cut short by paper end was
taken for printed when the query after it was the late one. A missed reply is waited for before the next query on its
connection (two status timeouts more) and passed over; a stall longer than that may still be misread, but a ticket
not known to be out is never taken for printed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import parse_settings
from edge.errors import DeviceUnreachableError
from edge.events import PrinterStatusChanged
from edge.orders.model import parse_order
from edge.printing import driver as driver_module
from edge.printing.decode import decode
from edge.printing.driver import PrinterDriver
from edge.printing.status import PrinterState
from edge.sim.printer import SimPrinter
from edge.transports import TcpTransport
from tests.helpers import api_client, config_dict, eventually, job_rows, orders, post, wait_until

# Four lines and a cut: a short kitchen ticket.
TICKET = b"\x1b@" + b"".join(f"{n} x Schnitzel Wiener Art\n".encode() for n in range(1, 5)) + b"\x1dV\x00"
LINE = b"\x1b@A-1042 ready\n"  # a job of one line: a printer without GS r is found out quickest with it
TIMEOUT = 0.5  # the driver's status_timeout
# Longer than any single wait but the job's; shorter than a missed reply is waited for (three timeouts in all).
STALL = 2.5 * TIMEOUT
# Longer than that: what is read then may be wrong, but never "the ticket is out". 3.6: the held replies, from before
# paper ran out, come just as the first query after the wait does (without GS r, a stall at query 2 or 3).
LONG_STALLS = (6 * TIMEOUT, 3.6 * TIMEOUT)
# The job's DLE EOT queries in order: 1, 2 and 4 before it, 1 and 4 after it; where paper runs out in it, DLE EOT 2 in
# between, asked while GS r waits (Epson does not answer GS r at paper end). A stall at each of them in turn.
HEALTHY = [(n, gs_r) for gs_r in (True, False) for n in range(1, 6)]
PAPER_END = [(n, True, LONG_STALLS[0]) for n in range(1, 7)] + [(n, False, LONG_STALLS[0]) for n in range(1, 6)]
PAPER_END += [(n, False, LONG_STALLS[1]) for n in (2, 3)]


def ids(cases: list[tuple[int, bool]] | list[tuple[int, bool, float]]) -> list[str]:
    return [f"query-{c[0]}" + ("" if c[1] else "-without-gs-r") + (f"-{c[2]:g}s" if len(c) > 2 else "") for c in cases]


async def warmed(sim: SimPrinter, *, gs_r: bool) -> PrinterDriver:
    """A driver that has printed three tickets: it knows the printer answers (and whether it answers GS r)."""
    sim.answer_in_order = gs_r
    driver = PrinterDriver("kitchen", TcpTransport("kitchen", *sim.address), status_timeout=TIMEOUT)
    for _ in range(3):
        assert (await asyncio.wait_for(driver.print(LINE), 10)).on_paper
    return driver


@pytest.mark.parametrize(("position", "gs_r"), HEALTHY, ids=ids(HEALTHY))
async def test_a_late_reply_never_says_what_the_printer_did_not(printer: SimPrinter, position: int, gs_r: bool) -> None:
    """A healthy printer whose link stalls at one of the job's queries: the job is printed once and taken for printed,
    or (the stall at the first query) not sent at all; the state read is never one the printer is not in."""
    driver = await warmed(printer, gs_r=gs_r)
    printer.stalls = {printer.status_asked + position: STALL}
    try:
        outcome = await asyncio.wait_for(driver.print(TICKET), 20)
    except DeviceUnreachableError:
        assert position == 1 and printer.job_bytes_in == 3 * len(LINE)  # not one byte of it sent
    else:
        assert outcome.state in (PrinterState.ONLINE, PrinterState.UNKNOWN)
        assert outcome.on_paper
    printer.stalls = {}  # what the stalled connection still holds never reaches the next one
    assert (await asyncio.wait_for(driver.print(TICKET), 10)).state == PrinterState.ONLINE


@pytest.mark.parametrize(("position", "gs_r", "stall"), PAPER_END, ids=ids(PAPER_END))
async def test_a_ticket_cut_short_by_paper_end_is_never_taken_for_printed_for_a_late_reply(
    printer: SimPrinter, position: int, gs_r: bool, stall: float
) -> None:
    """Paper runs out half-way through the ticket while the link stalls, longer than a missed reply is waited for, at
    one of its queries: the ticket is never taken for printed (it is printed again as COPY); before, a stall at the
    first query after the job read as silence, and silence after a job as printed."""
    driver = await warmed(printer, gs_r=gs_r)
    printer.stalls = {printer.status_asked + position: stall}
    printer.paper_out_after = len(TICKET) // 2
    try:
        outcome = await asyncio.wait_for(driver.print(TICKET), 20)
    except DeviceUnreachableError:
        assert position == 1 and printer.job_bytes_in == 3 * len(LINE)
    else:
        assert not outcome.on_paper, outcome
        assert (await printer.wait_for_printed(4))[-1] == TICKET[: len(TICKET) // 2]


async def test_the_agent_prints_a_ticket_once_and_says_nothing_false_when_its_printer_answers_late(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """From outside: an order in over HTTP, the kitchen printer's link stalls at the second query before the ticket
    (its reply, DLE EOT 2, and all after it come 2.5 status timeouts late). The ticket is printed once, not as COPY,
    the order is marked printed, and the printer's state never reads cover open or paper near end (a false alert to
    the manager)."""
    states: list[str] = []
    agent.bus.subscribe(lambda e: states.append(e.new), PrinterStatusChanged)
    kitchen = printers["kitchen"]
    example_order["print_receipt"] = False
    ticket = agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de")
    kitchen.stalls = {kitchen.status_asked + 2: STALL}
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: kitchen.printed == [ticket], timeout=15)
    await wait_until(lambda: not kitchen.stalls, timeout=5)

    async def settled() -> bool:
        return (await job_rows(agent))[0][0] not in ("queued", "printing")

    await wait_until(settled, what="the job's outcome")
    assert await job_rows(agent) == [("printed", 0, 0)]
    await asyncio.sleep(STALL)  # what the printer sent late has come, and was not taken for anything
    assert kitchen.printed == [ticket]
    assert not {"cover_open", "paper_near_end", "paper_out"} & set(states), states


async def test_a_query_the_printer_never_answers_is_not_waited_for_as_a_late_one(printer: SimPrinter) -> None:
    """A printer that ignores DLE EOT 4 (a clone with part of the command set) and GS r: once its DLE EOT 4 reply did
    not come even after the wait (its first ticket, printed again as COPY: what was read after that wait could have
    answered another query), DLE EOT 4 is not waited for again, and each ticket is printed once, read online.
    Taken for the late reply to the DLE EOT 4 before each ticket, the DLE EOT 1 reply after it was passed over, the
    printer read silent after every ticket, offline, and every ticket was printed again as COPY."""
    printer.ignored = {4}
    printer.answer_in_order = False
    driver = PrinterDriver("kitchen", TcpTransport("kitchen", *printer.address), status_timeout=TIMEOUT)
    outcomes = [await asyncio.wait_for(driver.print(LINE), 20) for _ in range(4)]
    assert not outcomes[0].on_paper
    assert [(o.state, o.on_paper) for o in outcomes[1:]] == [(PrinterState.ONLINE, True)] * 3
    assert await printer.wait_for_printed(4) == [LINE] * 4


async def test_a_clone_that_ignores_dle_eot_2_and_4_is_asked_them_only_until_it_is_known_not_to_answer_them(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """Orders in over HTTP to a kitchen clone that answers DLE EOT 1 and GS r but never DLE EOT 2 or 4: each of those
    is waited for once (its reply overtaken by the GS r reply asked after it: it never comes), logged once as
    printer_ignores_query naming it, and not asked again in this run: from the third ticket on, only DLE EOT 1 is asked
    before each, and every ticket prints once, unmarked. Before stop 80 the last query of each exchange never became
    "ignored" (only the next query on its connection settled it), so every ticket of the run waited six
    status_timeouts for DLE EOT 2 (9 s at the default; the netprinter80 probe, F1)."""
    kitchen = printers["kitchen"]
    kitchen.ignored = {2, 4}
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"] |= {"status_timeout": 0.3, "status_poll_s": 3600}
    asked: list[int] = []
    with capture_logs() as logs:
        agent = await make_agent(parse_settings(raw, source="test"))
        async with api_client(agent) as api:
            for n, order in enumerate(orders(example_order, 5), start=1):
                before = kitchen.status_asked
                assert (await post(api, order))[0] == 201
                await wait_until(lambda n=n: len(kitchen.printed) == n, timeout=20, what=f"ticket {n} printed")
                asked.append(kitchen.status_asked - before)
            await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)] * 5, timeout=5)
    assert asked[2:] == [1, 1, 1], asked  # DLE EOT 1 alone
    assert [("KOPIE / COPY" in decode(t).text) for t in kitchen.printed] == [False] * 5
    ignoring = [e for e in logs if e["event"] == "printer_ignores_query"]
    assert sorted(e["query"] for e in ignoring) == ["DLE EOT 2", "DLE EOT 4"], ignoring


async def test_a_clone_without_gs_r_that_ignores_dle_eot_2_prints_its_tickets_once_after_the_first(
    printer: SimPrinter,
) -> None:
    """A clone that answers DLE EOT 1 and 4 only (no DLE EOT 2, no GS r): once DLE EOT 2 went unanswered even late,
    a ticket's wait for GS r no longer polls it, and each ticket after the first two (the first costs a COPY, the
    second is the one that finds GS r missing) is taken for printed, read online. Before stop 80 that poll's silence
    read as a printer answering nothing after the ticket: offline, every ticket printed again as COPY (found while
    fixing the netprinter80 probe's F1)."""
    printer.ignored = {2}
    printer.answer_in_order = False
    driver = PrinterDriver("kitchen", TcpTransport("kitchen", *printer.address), status_timeout=TIMEOUT)
    outcomes = [await asyncio.wait_for(driver.print(LINE), 30) for _ in range(4)]
    assert [(o.state, o.on_paper) for o in outcomes[2:]] == [(PrinterState.ONLINE, True)] * 2, outcomes


@pytest.fixture
def epson_profile_without_gs_r(
    printers: dict[str, SimPrinter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The config of a kitchen clone that answers DLE EOT but never GS r, set up as a TM-T88V (whose profile says it
    answers GS r). The waits are shortened (the backlog's 28 s to 1 s, the slowest printer ten times quicker)."""
    monkeypatch.setattr(driver_module, "_AHEAD_S", 1.0)
    monkeypatch.setattr(driver_module, "_SLOW_PRINTER_LINES_PER_S", 30.0)
    monkeypatch.setattr(driver_module, "_SLOW_PRINTER_CUT_S", 0.1)
    printers["kitchen"].answer_in_order = False
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["profile"] = "TM-T88V"
    return raw


async def test_a_printer_without_gs_r_set_up_with_an_epson_profile_costs_one_copy_and_is_told_to_have_a_wrong_profile(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    epson_profile_without_gs_r: dict[str, Any],
) -> None:
    """A clone that answers DLE EOT but never GS r, configured as a TM-T88V (whose profile says it answers GS r): its
    first ticket waits for GS r as long as an Epson's backlog may take, then fails and prints once more as COPY; from
    then on it is taken for a printer without GS r (its DLE EOT reply after a job confirms it, as for one learnt so),
    its next ticket prints once, at once, and the log (once) and the printer's state detail name
    printers.kitchen.profile as likely wrong. Before stop 62 (print probe s11): every ~30 s the ticket failed and
    printed again as COPY, the station stalled behind it, and the job ended dead though it had printed. What was
    learnt is kept with the printer's address: after a restart the next ticket prints once, without the long wait,
    and the detail still names the profile (before: one more COPY, ~30 s late, after every restart)."""
    kitchen, raw = printers["kitchen"], epson_profile_without_gs_r
    first, second, third = orders(example_order, 3)
    settings = parse_settings(raw, source="test")
    with capture_logs() as logs:
        agent = await make_agent(settings)
        async with api_client(agent) as api:
            assert (await post(api, first))[0] == 201
            await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 1, 1)], timeout=20)
            assert (await post(api, second))[0] == 201
            await eventually(lambda: job_rows(agent), lambda rows: rows[1:] == [("printed", 0, 0)], timeout=5)
            listed = (await (await api.get("/api/v1/printers")).json())["printers"]
        await agent.stop()
        agent = await make_agent(settings)
        async with api_client(agent) as api:
            assert (await post(api, third))[0] == 201
            await eventually(lambda: job_rows(agent), lambda rows: rows[2:] == [("printed", 0, 0)], timeout=5)
            relisted = (await (await api.get("/api/v1/printers")).json())["printers"]
    texts = [decode(t).text for t in kitchen.printed]
    assert [("N-000" in t, "N-001" in t, "N-002" in t, "KOPIE / COPY" in t) for t in texts] == [
        (True, False, False, False),
        (True, False, False, True),
        (False, True, False, False),
        (False, False, True, False),
    ]
    warned = [e for e in logs if e["event"] == "printer_no_in_order_status"]
    assert len(warned) == 1 and "printers.kitchen.profile" in warned[0]["hint"], warned
    for printers_listed in (listed, relisted):
        detail = next(p["detail"] for p in printers_listed if p["name"] == "kitchen")
        assert "printers.kitchen.profile" in detail, printers_listed


async def test_a_printer_learnt_without_gs_r_that_answers_it_after_a_restart_is_waited_for_again(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    epson_profile_without_gs_r: dict[str, Any],
) -> None:
    """What was learnt of a printer on an address is not kept for ever: the clone without GS r is replaced by the
    model its profile names, on the same address. The first status poll of the next run asks GS r once; it answers,
    so the profile is no longer named as wrong, and the next restart does not take it for one without GS r."""
    kitchen, raw = printers["kitchen"], epson_profile_without_gs_r
    agent = await make_agent(parse_settings(raw, source="test"))
    async with api_client(agent) as api:
        assert (await post(api, orders(example_order, 1)[0]))[0] == 201
        await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 1, 1)], timeout=20)
    learnt = "SELECT key FROM meta WHERE key LIKE 'no_gs_r:%'"
    assert await job_rows(agent, learnt) == [(f"no_gs_r:tcp {kitchen.host}:{kitchen.port}",)]
    await agent.stop()
    kitchen.answer_in_order = True
    asked = kitchen.in_order_asked
    raw["printers"]["kitchen"]["status_poll_s"] = 0.2
    agent = await make_agent(parse_settings(raw, source="test"))
    await wait_until(lambda: kitchen.in_order_asked > asked, what="GS r asked at the first poll, with no job")
    async with api_client(agent) as api:

        async def detail() -> str:
            listed = (await (await api.get("/api/v1/printers")).json())["printers"]
            return str(next(p["detail"] for p in listed if p["name"] == "kitchen"))

        await eventually(detail, lambda d: "profile" not in d, timeout=5, what="the caveat gone after the first poll")
        await eventually(lambda: job_rows(agent, learnt), lambda rows: rows == [], what="the address's record gone")
