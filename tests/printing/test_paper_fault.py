"""Paper runs out or the cover opens in the middle of a ticket: the ticket is uncertain, never 'printed'."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import parse_settings
from edge.events import JobFailed, JobPrinted, PrinterStatusChanged
from edge.orders.model import parse_order
from edge.printing.decode import decode
from edge.sim.printer import PaperSpeed, SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import (
    api_client,
    config_dict,
    db_rows,
    eventually,
    job_rows,
    mail_to,
    orders,
    post,
    status_reads,
    wait_until,
)


async def outbox(agent: Agent) -> list[tuple[str, dict]]:
    return [(e, json.loads(p)) for e, p in await db_rows(agent, "SELECT event, payload FROM outbox ORDER BY id")]


@pytest.mark.parametrize("asb", [False, True], ids=["", "automatic-status-back"])
@pytest.mark.parametrize("flag", ["paper_out", "cover_open"])
async def test_fault_mid_ticket_reprints_the_whole_ticket_as_copy(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    flag: str,
    asb: bool,
) -> None:
    """Paper runs out (cover opens) after half the ticket's bytes: the job is not marked printed and central is not
    told; the spool pauses with no attempt spent; after a new roll (cover closed) the whole ticket is on paper, marked
    COPY, and only then is central told 'printed', once. The same with a printer whose Automatic Status Back is on
    (a POS driver left it so): the status bytes it sends unasked are not taken for replies to the agent's queries."""
    printed_events: list[JobPrinted] = []
    failed_events: list[JobFailed] = []
    states: list[str] = []
    agent.bus.subscribe(printed_events.append, JobPrinted)
    agent.bus.subscribe(failed_events.append, JobFailed)
    agent.bus.subscribe(lambda e: states.append(e.new), PrinterStatusChanged)
    kitchen = printers["kitchen"]
    kitchen.asb = asb
    example_order["print_receipt"] = False
    ticket_size = len(agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de"))
    setattr(kitchen, f"{flag}_after", ticket_size // 2)
    with capture_logs() as logs:
        assert (await post(api, example_order))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag)
    # The technician's log says what happened and what comes next, once.
    assert [e["action"] for e in logs if e["event"] == "job_uncertain"] == ["reprint as COPY"]
    await status_reads(kitchen, 2)  # paused: several probes
    half = kitchen.printed[0]
    assert len(kitchen.printed) == 1 and len(half) == ticket_size // 2 and not decode(half).qr_codes
    assert await job_rows(agent) == [("queued", 0, 1)]  # uncertain: waits to print again as COPY, no attempt spent
    assert [e for e, _ in await outbox(agent)] == ["received"]  # central is not told it printed
    assert printed_events == [] and failed_events == []

    setattr(kitchen, flag, False)
    printed = await kitchen.wait_for_printed(2, timeout=5)
    copy = decode(printed[1])
    assert "KOPIE / COPY" in copy.text and copy.qr_codes == ["edge:v1:ord_7f3a9c21:kitchen"]
    assert "eine ohne Basilikum" in copy.text  # the whole ticket, not only its second half
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])
    (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
    assert [(e, p.get("job_id")) for e, p in await outbox(agent)] == [("received", None), ("printed", job_id)]
    # The row commits before the loop gets to publish JobPrinted: the event may come a moment after the row shows.
    await wait_until(lambda: len(printed_events) == 1)
    assert len(printed_events) == 1 and failed_events == []
    assert states.count(flag) == 1


async def test_a_roll_put_in_between_two_status_queries_is_not_read_as_the_printer_going_offline(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], example_order: dict
) -> None:
    """Each DLE EOT reply is the printer's state at that instant. A new roll put in right after the printer answered
    query 1 ("offline", as it is at paper end) and before queries 2 and 4 (no paper end any more) read as a printer
    that went offline for one poll: an offline alarm and its all-clear (a critical mail with a ticket waiting) for a
    paper change (seen in a CI run: paper_out -> offline -> online). The printer goes from paper out to online, and
    the waiting ticket prints once."""
    kitchen = printers["kitchen"]
    kitchen.paper_out = True
    agent = await make_agent()
    states: list[str] = []
    agent.bus.subscribe(lambda e: states.append(e.new), PrinterStatusChanged)
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out")
    kitchen.paper_back_after_query_1 = True
    await kitchen.wait_for_printed(1)
    assert "offline" not in states, states
    assert states[-1] == "online" and len(kitchen.printed) == 1, states


@pytest.mark.parametrize(
    ("flag", "clone"),
    [("paper_out", False), ("cover_open", False), ("paper_out", True)],
    ids=["paper_out", "cover_open", "paper_out-clone"],
)
async def test_a_fault_while_a_buffered_ticket_prints_is_seen_and_the_ticket_reprinted(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    flag: str,
    clone: bool,
) -> None:
    """A real printer takes the whole ticket into its receive buffer at once and answers DLE EOT on arrival, then
    prints it line by line (about 0.4 s at 250 mm/s): a roll that runs out half way ends after that answer. The
    ticket must not count as printed: the printer is asked in order (GS r, answered once it has processed the ticket,
    never while it is stopped at paper end), so the fault is seen and the whole ticket prints again as COPY. The same
    with a clone that answers GS r also when stopped, with its paper end bits set."""
    kitchen = printers["kitchen"]
    kitchen.speed = PaperSpeed()
    kitchen.in_order_when_stopped = clone
    example_order["print_receipt"] = False
    ticket_size = len(agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de"))
    setattr(kitchen, f"{flag}_after", ticket_size // 2)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag, what="the stop seen")
    await wait_until(lambda: len(kitchen.printed) == 1, what="the half ticket recorded")
    assert len(kitchen.printed[0]) == ticket_size // 2
    assert await job_rows(agent) == [("queued", 0, 1)]  # uncertain: waits to print again as COPY, no attempt spent
    setattr(kitchen, flag, False)
    printed = await kitchen.wait_for_printed(2)
    assert "KOPIE / COPY" in decode(printed[1]).text
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])
    assert kitchen.in_order_answered >= 1  # the copy was confirmed in order


@pytest.mark.parametrize("share", [0.05, 0.3, 0.7, 0.97])
async def test_wherever_a_roll_ends_in_a_buffered_ticket_it_prints_again_whole_as_copy(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter], share: float
) -> None:
    """The roll ends at any point of a ticket the printer has in its buffer (a faster paper speed keeps the test
    short): what came out is the ticket's start, the ticket is never taken for printed, and the whole of it prints
    again as COPY after a new roll."""
    kitchen = printers["kitchen"]
    kitchen.speed = PaperSpeed(mm_per_s=1000.0)
    example_order["print_receipt"] = False
    ticket = agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de")
    kitchen.paper_out_after = int(len(ticket) * share)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out", what="the paper end seen")
    await wait_until(lambda: len(kitchen.printed) == 1, what="the cut-short ticket recorded")
    assert ticket.startswith(kitchen.printed[0]) and len(kitchen.printed[0]) == int(len(ticket) * share)
    assert await job_rows(agent) == [("queued", 0, 1)]
    kitchen.paper_out = False
    printed = await kitchen.wait_for_printed(2)
    assert "KOPIE / COPY" in decode(printed[1]).text and decode(printed[1]).qr_codes == decode(ticket).qr_codes
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])


@pytest.mark.parametrize("flag", ["paper_out", "cover_open"])
async def test_after_a_new_roll_only_the_copy_prints_not_the_rest_of_the_cut_short_ticket(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter], flag: str
) -> None:
    """An Epson that stops at paper end (or an opened cover) in the middle of a buffered ticket goes on with the rest
    of it once the new roll is in: the cook would find the ticket's second half, without its head, at the top of the
    new roll, then the COPY. The agent clears the printer's buffers (DLE DC4 fn=8) when it sees the stop, so only
    the whole ticket, marked COPY, comes out (before: the fragment, then the copy)."""
    kitchen = printers["kitchen"]
    kitchen.speed = PaperSpeed(mm_per_s=1000.0)
    kitchen.resumes = True
    example_order["print_receipt"] = False
    ticket = agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de")
    setattr(kitchen, f"{flag}_after", len(ticket) // 2)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag, what="the stop seen")
    setattr(kitchen, flag, False)  # a new roll, the cover closed
    printed = await kitchen.wait_for_printed(2)
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])
    assert ticket.startswith(printed[0]) and len(printed[0]) == len(ticket) // 2
    assert "KOPIE / COPY" in decode(printed[1]).text and decode(printed[1]).qr_codes == decode(ticket).qr_codes
    assert len(kitchen.printed) == 2 and kitchen.cleared == 1


async def test_a_printer_that_hangs_up_mid_ticket_and_then_reports_paper_out_spends_no_attempt(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Paper runs out mid-ticket and the printer hangs up: the write is cut short, and the status read after it says
    paper out. The printer stopped on its own fault: no attempt is spent, the spool pauses with the write's error as
    the reason, and after a new roll the whole ticket prints once more, marked COPY."""
    kitchen = printers["kitchen"]
    kitchen.paper_out_after = 30
    kitchen.drop_after = 40
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out")
    assert await job_rows(agent) == [("queued", 0, 1)]
    # The write's error: the hang-up reads as a close or, when the printer's socket still held our bytes, a reset.
    assert agent.spoolers["kitchen"].state_detail.endswith(("closed the connection", "Connection reset by peer"))
    kitchen.paper_out = False
    printed = await kitchen.wait_for_printed(2)
    assert "KOPIE / COPY" in decode(printed[1]).text
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])


@pytest.mark.parametrize("flag", ["cover_open", "paper_out"])
async def test_a_ticket_cut_short_on_a_strip_still_in_the_printer_is_cut_off_before_its_copy(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter], flag: str
) -> None:
    """The cover opens in the middle of a ticket (a cook clears a jam, looks at the roll): the paper stays in, with
    the half ticket on it, and what the printer prints next goes on the same strip. The COPY now starts by feeding
    that half past the cutter and cutting it off, as a ticket ends. After a paper end the half is on the old roll's
    tail, so the COPY on the new roll starts with no cut (no blank stub). Before (ticket75 probe F2): the half and
    its COPY came out as one strip, the COPY mark in the middle of it."""
    kitchen = printers["kitchen"]
    example_order["print_receipt"] = False
    ticket_size = len(agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=48, language="de"))
    setattr(kitchen, f"{flag}_after", ticket_size // 2)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag)
    setattr(kitchen, flag, False)
    half, copy = await kitchen.wait_for_printed(2, timeout=5)
    assert b"\x1dV" not in half
    head = copy[: copy.index(b"KOPIE")]
    assert (b"\x1dV" in head) is (flag == "cover_open"), head
    assert copy.count(b"\x1dV") == (2 if flag == "cover_open" else 1)
    assert "KOPIE / COPY" in decode(copy).text and "eine ohne Basilikum" in decode(copy).text


async def test_paper_end_late_in_a_ticket_on_a_printer_slower_than_planned_for_is_seen(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """An Epson (its profile: it answers GS r) prints slower than the driver plans for (a line a second: an old impact
    printer, or a backlog ahead of the ticket); the roll ends near the end of the ticket. Its GS r reply comes only
    once the ticket is out, so until then the ticket is not taken for printed: the paper end is seen and the whole
    ticket prints again as COPY. Before, after the planned time the printer was taken for one without GS r, the
    ticket was marked printed from a DLE EOT reply, and its end never came out (probe_paper D1, D2)."""
    kitchen = printers["kitchen"]
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["profile"] = "TM-T88V"
    agent = await make_agent(parse_settings(raw, source="test"))
    kitchen.speed = PaperSpeed(mm_per_s=25.4 / 6)  # a line a second
    example_order["print_receipt"] = False
    ticket = agent.printing.renderer().ticket(parse_order(example_order), "kitchen", width=42, language="de")
    kitchen.paper_out_after = int(len(ticket) * 0.97)  # a TM-T88V's 42 columns
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: kitchen.paper_out, timeout=60, what="the roll ended")
    await asyncio.sleep(1.0)
    assert await job_rows(agent) != [("printed", 0, 0)]
    kitchen.speed = PaperSpeed()
    kitchen.paper_out = False
    printed = await kitchen.wait_for_printed(2, timeout=20)
    assert "KOPIE / COPY" in decode(printed[1]).text
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 1)])


async def test_a_roll_that_ends_early_in_a_long_ticket_fails_over_within_the_write_timeout_and_the_rest_never_prints(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """A catering order's ticket is longer than the printer's buffer and TCP window together. When its roll ends early,
    the printer takes no more bytes: the rest waits in this box's socket, where send() no longer sees it, and status
    queries wait behind it. The printer has taken nothing for write_timeout: that is a stalled write, as when send()
    itself waits that long, and the station fails over; the rest of the ticket still in this box is dropped with the
    connection, so a new roll does not print it after the COPY, and the next connection clears the printer's buffer, so
    neither does what the printer had taken. Before stop 83 nothing cleared that buffer: a headless piece of the ticket
    (no number, no KOPIE) came out on the new roll (the power83 probe, F1). Before that: the station waited as long as
    the slowest printer would take to print the whole ticket (probe_paper: 387 s for a 45 KB ticket) before the next
    order went to the backup, and the whole rest came out after the new roll, unmarked."""
    kitchen, front = printers["kitchen"], printers["front"]
    raw = config_dict(
        tmp_path / "data", printers, stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 0.5}
    )
    raw["printers"]["kitchen"]["write_timeout"] = 1.0
    agent = await make_agent(parse_settings(raw, source="test"))
    kitchen.speed, kitchen.resumes = PaperSpeed(), True  # an Epson: stopped, it waits for a roll, its buffer full
    big = dict(example_order, id="ord_catering", number="C-1", print_receipt=False)
    note = "ohne Zwiebeln, extra scharf " * 5
    big["items"] = [
        dict(example_order["items"][1], sku=f"SKU-{n}", name=f"Gericht {n:03d}", note=note) for n in range(150)
    ]
    small = dict(example_order, id="ord_next", number="C-2", print_receipt=False)
    ticket = agent.printing.renderer().ticket(parse_order(big), "kitchen", width=48, language="de")
    assert len(ticket) > 30_000
    kitchen.paper_out_after = 2_000
    async with api_client(agent) as api:
        assert (await post(api, big))[0] == 201
        assert (await post(api, small))[0] == 201
    loop = asyncio.get_running_loop()
    started = loop.time()
    moved = await front.wait_for_printed(2, timeout=30)
    assert loop.time() - started < 15
    texts = [decode(job).text for job in moved]
    assert "C-1" in texts[0] and "KOPIE / COPY" in texts[0] and "Gericht 149" in texts[0]
    assert "C-2" in texts[1] and "KOPIE / COPY" not in texts[1]
    # Its status cannot be asked while its buffer is full: what the staff are told names the likely cause, not the
    # network or the till (print probe 4, F2: "takes the connection but answers nothing: another device (the till?)").
    detail = agent.spoolers["kitchen"].state_detail
    assert "paper" in detail and "till" not in detail, detail
    # The stall left part of the ticket in the printer's buffer: the next connection (a status probe) clears it.
    await wait_until(lambda: kitchen.cleared, 10, "the printer's buffers cleared")
    kitchen.paper_out = False  # a new roll: nothing more of the ticket prints, neither what the printer held nor the
    await asyncio.sleep(1)  # rest this box held (the paper moves at 250 mm/s: a held piece would be on it by now)
    assert len(kitchen.printed) == 1 and "Gericht 149" not in decode(kitchen.printed[0]).text, kitchen.printed


async def test_a_ticket_longer_than_the_printers_buffer_is_printed_only_once_its_gs_r_says_so(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """A party order's ticket (about 9.5 KB) is longer than the printer's 4 KB buffer: the printer takes its last bytes,
    and the status query behind them, only as it prints. That late DLE EOT reply says the printer has the bytes, not
    that they are on paper; its power is lost while the last ~4 KB print. The ticket comes again whole, as COPY. Before
    (print probe 4, F1): the late reply marked it printed, and the end of the ticket was lost without a word."""
    kitchen = printers["kitchen"]
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["profile"] = "TM-T88V"
    agent = await make_agent(parse_settings(raw, source="test"))
    kitchen.speed = PaperSpeed(mm_per_s=20 * 25.4 / 6)  # 20 lines a second
    party = dict(example_order, id="ord_party", number="P-1", print_receipt=False)
    party["items"] = [
        dict(example_order["items"][1], sku=f"SKU-{n}", name=f"Gericht Nr {n:03d} Partyplatte") for n in range(300)
    ]
    ticket = agent.printing.renderer().ticket(parse_order(party), "kitchen", width=48, language="de")
    assert len(ticket) > 9_000
    kitchen.power_off_after = len(ticket) - 2_000  # on paper: the plug is pulled with the last 2 KB still to print
    async with api_client(agent) as api:
        assert (await post(api, party))[0] == 201
    await wait_until(lambda: not kitchen.powered, timeout=60, what="the plug pulled near the end of the ticket")
    await asyncio.sleep(0.5)
    kitchen.speed = PaperSpeed()
    kitchen.power_on()
    printed = await kitchen.wait_for_printed(2, timeout=30)
    again = decode(printed[1]).text
    assert "KOPIE / COPY" in again and "Gericht Nr 299" in again, again[-300:]
    assert "Gericht Nr 299" not in decode(printed[0]).text  # its end never came out before the power went
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 1, 1)] or rows == [("printed", 0, 1)])


@pytest.mark.parametrize("backup", [True, False], ids=["backup", "no-backup"])
@pytest.mark.parametrize("flag", ["paper_out", "cover_open"])
async def test_a_printer_that_stops_mid_ticket_and_waits_to_go_on_stays_in_its_fault_and_no_unreachable_mail_goes(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    flag: str,
    backup: bool,
) -> None:
    """An Epson at 40 mm/s runs out of paper (or its cover opens) in the middle of the first of three tickets and
    waits to go on with it (``resumes``). While it waits, the agent asks its status every second: the printer stays
    in that fault, the manager gets that one mail and none saying the printer is unreachable, and once the fault is
    cleared every ticket prints once (on the backup after the failover, else on the kitchen printer, the cut one as
    COPY). Before (the failover82 probe, F2): the simulated interface kept each status question's connection open
    while the mechanism was stopped, its three places were taken within seconds, the refused connection read as a
    printer gone (``paper_out`` -> ``offline``), and a second mail "Drucker kitchen nicht erreichbar ... prüfen, ob
    das Netzwerkkabel steckt" went out."""
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.speed, kitchen.resumes = PaperSpeed(mm_per_s=40), True
    stations = {"kitchen": ["kitchen", "front"] if backup else "kitchen"}
    agent = await make_agent(stations=stations, printing={"failover_after_s": 3}, **mail_to(sink))
    states: list[str] = []
    agent.bus.subscribe(lambda e: states.append(e.new) if e.printer == "kitchen" else None, PrinterStatusChanged)
    tickets = orders(example_order, 3)
    ticket = agent.printing.renderer().ticket(parse_order(tickets[0]), "kitchen", width=48, language="de")
    setattr(kitchen, f"{flag}_after", len(ticket) // 2)
    async with api_client(agent) as api:
        for order in tickets:
            assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == flag, what="the stop seen")
    asked = kitchen.status_queries
    # Eight probes (a second apart once paused), or the first sign of the fault read as something else.
    await wait_until(
        lambda: kitchen.status_queries >= asked + 3 * 8 or states[-1] != flag, timeout=20, what="eight probes"
    )
    assert agent.spoolers["kitchen"].state.value == flag and "offline" not in states, states
    setattr(kitchen, flag, False)
    copies = await (front if backup else kitchen).wait_for_printed(3 if backup else 4, timeout=20)
    await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)] * 3)
    texts = [decode(paper).text for paper in copies[-3:]]
    assert ["KOPIE / COPY" in text for text in texts] == [True, False, False], texts
    assert [text.count("N-00") for text in texts] == [1, 1, 1] and "N-000" in texts[0], texts
    assert len(kitchen.printed) == (1 if backup else 4)  # the half of the first, and nothing of it again
    subjects = [m["Subject"] for m in sink.messages]
    assert subjects and not any("nicht erreichbar" in s for s in subjects), subjects


async def test_a_printer_that_may_still_hold_a_stalled_tickets_connection_is_said_to(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """A long ticket stalls (the roll ended, the printer takes no more for write_timeout) and the reset that ends its
    connection never reaches the printer (as in a network that dropped everything at that moment: the simulated
    printer does not hear it), so its interface keeps the dead connection and serves no other: the agent's probes are
    taken and never answered. The state detail says that the printer may still hold that connection and what frees
    it. Before stop 83 it named only the printer's own stops, and on a real interface the kitchen stayed offline for
    its 5-minute connection time-out after a 30 s network blip with nothing telling why (the power83 probe, F2)."""
    kitchen = printers["kitchen"]
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["write_timeout"] = 1.0
    agent = await make_agent(parse_settings(raw, source="test"))
    kitchen.speed, kitchen.resumes, kitchen.hears_resets = PaperSpeed(), True, False  # an Epson whose buffer is full
    big = dict(example_order, id="ord_catering", number="C-1", print_receipt=False)
    note = "ohne Zwiebeln, extra scharf " * 5
    big["items"] = [
        dict(example_order["items"][1], sku=f"SKU-{n}", name=f"Gericht {n:03d}", note=note) for n in range(150)
    ]
    kitchen.paper_out_after = 2_000
    async with api_client(agent) as api:
        assert (await post(api, big))[0] == 201
    await wait_until(
        lambda: "may still hold that connection" in agent.spoolers["kitchen"].state_detail,
        30,
        "the held connection named in the detail",
    )
    detail = agent.spoolers["kitchen"].state_detail
    assert agent.spoolers["kitchen"].state.value == "offline" and "switched off and on" in detail, detail
