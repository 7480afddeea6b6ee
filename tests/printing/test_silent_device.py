"""Something that is not a printer on a printer's address: after a power cut the router gave the kitchen printer a new
address and its old one to a device that accepts TCP 9100 and answers nothing (an office laser's JetDirect raw port,
a label printer, a PC). The agent starts fresh (the box rebooted too). A model that answers status (its profile says
so, or its config) and stays silent is not "a printer without status": its tickets are not sent blind, it is offline
with a detail that says to check its address, they fail over to the backup and the manager is told."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.events import PrinterStatusChanged
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import HTTP_400, NotAPrinter, SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import (
    Recorder,
    api_client,
    config_dict,
    eventually,
    job_rows,
    mail_to,
    post,
    wait_until,
    with_printer,
)

_ESC_AT = b"\x1b@"  # every job starts with it: a device that got one got a ticket


@pytest.fixture
async def not_a_printer() -> AsyncIterator[NotAPrinter]:
    device = NotAPrinter("jetdirect")
    await device.start()
    yield device
    await device.stop()


@pytest.fixture
async def backup() -> AsyncIterator[SimPrinter]:
    printer = SimPrinter("backup")
    await printer.start()
    yield printer
    await printer.stop()


def _settings(
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    kitchen_port: int,
    backup: SimPrinter,
    kitchen: dict[str, Any],
    **overrides: Any,
) -> Any:
    raw = config_dict(tmp_path / "data", printers, printing={"failover_after_s": 1}, **overrides)
    raw["printers"]["kitchen"].update(port=kitchen_port, **kitchen)
    raw["printers"]["backup"] = dict(raw["printers"]["front"], port=backup.port)
    raw["stations"] = {"kitchen": ["kitchen", "backup"], "bar": ["kitchen", "backup"]}
    return parse_settings(raw, source="test")


@pytest.mark.parametrize(
    "kitchen",
    [{"profile": "TM-T88V"}, {"answers_status": "yes"}],
    ids=["profile_answers_status", "configured_answers_status"],
)
async def test_a_device_that_never_answers_on_a_status_printers_address_gets_no_ticket_they_fail_over_and_mail(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    not_a_printer: NotAPrinter,
    backup: SimPrinter,
    sink: SmtpSink,
    tmp_path: Path,
    kitchen: dict[str, Any],
) -> None:
    """The kitchen printer is a TM-T88V (it answers DLE EOT), or configured ``answers_status = "yes"``; on its address
    is a device that takes the connection and never answers. Three orders: none of their tickets goes to that device
    and none is marked printed there; after failover_after_s they print on the backup; GET /api/v1/printers shows the
    kitchen offline with a detail naming the likely cause, and the manager gets the printer_offline mail with it.
    Before: printer_silent, the three tickets sent blind and marked printed on the device, the backup got nothing, the
    kitchen read "unknown" and nobody was told."""
    settings = _settings(tmp_path, printers, not_a_printer.port, backup, kitchen, **mail_to(sink))
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        for n in range(3):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await backup.wait_for_printed(3, timeout=20)
        assert (
            sorted(make_order(n)["number"] in decode(job).text for job in backup.printed for n in range(3)).count(True)
            == 3
        )
        async with api.get("/api/v1/printers") as response:
            listed = {p["name"]: p for p in (await response.json())["printers"]}
    assert _ESC_AT not in not_a_printer.received, "a ticket went to a device that is not a printer"
    rows = await eventually(
        lambda: job_rows(agent, "SELECT printer, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("backup", "printed")] * 3,
        what="the three tickets printed on the backup",
    )
    assert ("kitchen", "printed") not in rows
    assert listed["kitchen"]["state"] == "offline", listed["kitchen"]
    assert "never answered" in listed["kitchen"]["detail"] and "address" in listed["kitchen"]["detail"]
    mails = await sink.wait_for(1, timeout=10)
    offline = [m for m in mails if "kitchen" in str(m["Subject"]) and "nicht erreichbar" in str(m["Subject"])]
    assert offline, [m["Subject"] for m in mails]
    assert "address" in offline[0].get_body().get_content()  # type: ignore[union-attr]


async def test_a_printer_configured_without_status_still_gets_its_tickets_without_waiting(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    backup: SimPrinter,
    tmp_path: Path,
) -> None:
    """A TM-T88V behind a one-way print server cannot answer: ``answers_status = "no"`` says so, and its tickets go
    without the status exchange from the first one on (printed, state unknown), not to the backup."""
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    settings = _settings(tmp_path, printers, kitchen.port, backup, {"profile": "TM-T88V", "answers_status": "no"})
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        for n in range(2):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await kitchen.wait_for_printed(2, timeout=15)
    await eventually(
        lambda: job_rows(agent, "SELECT printer, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("kitchen", "printed")] * 2,
    )
    assert kitchen.status_asked <= 1  # the idle poll at most; no exchange before and after each ticket
    assert backup.printed == []
    assert agent.spoolers["kitchen"].state.value == "unknown"


async def test_the_state_detail_follows_a_new_cause_while_the_printer_stays_offline(
    make_agent: Callable[..., Awaitable[Agent]], make_settings: Callable[..., Any], printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer takes connections and answers nothing (its model answers status): offline, "it accepts
    connections but never answers like a printer ... or the till may hold it". Then it is switched off: connections
    refused. The state stayed offline and its detail the first cause, so `edge status` sent the technician to look at
    the till (the technician probe). The detail follows the cause now."""
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    settings = make_settings(spool={"offline_probe_max_s": 0.2})
    model = dataclasses.replace(settings.printers["kitchen"], profile="TM-T88V")  # a model that answers status
    agent = await make_agent(dataclasses.replace(settings, printers={**settings.printers, "kitchen": model}))

    async def kitchen_detail() -> str:
        async with api_client(agent) as api, api.get("/api/v1/printers") as response:
            return next(p["detail"] for p in (await response.json())["printers"] if p["name"] == "kitchen")

    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await eventually(kitchen_detail, lambda d: "never answer" in d, what="offline, answering nothing")
    kitchen.set_offline(True)
    detail = await eventually(kitchen_detail, lambda d: "never answer" not in d, what="the new cause")
    assert "refused" in detail.lower() and "till" not in detail, detail


async def test_a_printer_that_answered_status_before_a_restart_gets_no_ticket_blind_when_a_device_takes_its_address(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    backup: SimPrinter,
    sink: SmtpSink,
    tmp_path: Path,
) -> None:
    """The kitchen printer's profile is python-escpos' "default" (whether it answers status is learnt): it answered
    DLE EOT and printed in the first run. The box restarts (a power cut) and the printer's address now belongs to a
    device that takes TCP 9100 and answers nothing. That the printer answered is remembered with its address, so the
    silence reads as offline, not as "a printer without status": no ticket goes to the device, they fail over to the
    backup, and the detail names the cause. Before (the print probe, s06 stolen): the tickets were sent blind into the
    device and marked printed, the state read "unknown", and central was told they printed."""
    kitchen = printers["kitchen"]
    # The replies to its status queries come late, and the stop comes as soon as the ticket's bytes arrive: while
    # the printer's answers are on their way (a restart right after the first ticket). Stopping waits for the job in
    # flight, and records that the printer answered.
    kitchen.stalls = {asked: 0.3 for asked in range(1, 9)}
    settings = _settings(tmp_path, printers, kitchen.port, backup, {}, **mail_to(sink))
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        assert (await post(api, make_order(0, print_receipt=False)))[0] == 201
    await wait_until(lambda: kitchen.job_bytes_in > 0, what="the ticket on its way")
    await agent.stop()
    await kitchen.wait_for_printed(1, timeout=10)
    await kitchen.stop()
    device = NotAPrinter("jetdirect", port=kitchen.port)
    await device.start()
    try:
        agent = await make_agent(settings)
        async with api_client(agent) as api:
            for n in (1, 2):
                assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
            await backup.wait_for_printed(2, timeout=20)
            async with api.get("/api/v1/printers") as response:
                listed = {p["name"]: p for p in (await response.json())["printers"]}
        assert _ESC_AT not in device.received, "a ticket went to a device that is not a printer"
        await eventually(
            lambda: job_rows(agent, "SELECT printer, state FROM print_jobs ORDER BY id"),
            lambda rows: rows == [("kitchen", "printed"), ("backup", "printed"), ("backup", "printed")],
            what="the two tickets of the second run printed on the backup",
        )
        assert listed["kitchen"]["state"] == "offline", listed["kitchen"]
        assert "address" in listed["kitchen"]["detail"], listed["kitchen"]
    finally:
        await device.stop()


async def test_a_ticket_a_printer_without_status_never_took_prints_again_as_copy(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    backup: SimPrinter,
    tmp_path: Path,
) -> None:
    """A printer that cannot answer status gets its tickets blind; its interface takes the connection and, once the
    ticket's bytes are in, resets it unread (a connection it could not serve; the night74 probe saw it when the
    printer's three connections were full). The agent waits for the printer's own end after a blind ticket, as CUPS's
    socket backend does ("waiting for printer to finish"): a reset there is a ticket not taken, printed again as COPY.
    Before: the agent had closed its side already, never saw the reset, and marked the ticket printed: an order
    taken, marked printed, never on paper."""
    kitchen = printers["kitchen"]
    kitchen.answer_status = False
    kitchen.reset_unread = 1
    settings = _settings(tmp_path, printers, kitchen.port, backup, {"profile": "TM-T88V", "answers_status": "no"})
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        printed = await kitchen.wait_for_printed(1, timeout=15)
    assert kitchen.reset_connections == 1
    assert "KOPIE / COPY" in decode(printed[0]).text
    await eventually(
        lambda: job_rows(agent, "SELECT printer, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("kitchen", "printed")],
    )
    assert backup.printed == []


async def test_a_printer_without_status_that_ends_every_connection_with_a_reset_prints_each_ticket_once(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    backup: SimPrinter,
    tmp_path: Path,
) -> None:
    """Some interfaces end every connection with a reset once they have read and printed it (an embedded stack that
    aborts rather than closes). A reset after a blind ticket may be that ticket dropped unread, so the first is
    printed again as COPY; a reset after the job before ended so too is the printer's way, and the ticket is taken.
    Before (the blind75 probe, F1, on the first fix): every ticket printed five times (four COPYs), then went dead."""
    kitchen = printers["kitchen"]
    kitchen.answer_status, kitchen.resets_at_end = False, True
    settings = _settings(tmp_path, printers, kitchen.port, backup, {"profile": "TM-T88V", "answers_status": "no"})
    agent = await make_agent(settings)
    async with api_client(agent) as api:
        for n in range(3):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        printed = await kitchen.wait_for_printed(4, timeout=30)
    await eventually(
        lambda: job_rows(agent, "SELECT state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("printed",)] * 3,
    )
    pieces = [(decode(piece).qr_codes, "KOPIE / COPY" in decode(piece).text) for piece in printed]
    first = decode(printed[0]).qr_codes
    assert sorted(copy for _, copy in pieces) == [False, False, False, True], pieces
    assert (first, True) in pieces and len({tuple(codes) for codes, _ in pieces}) == 3, pieces
    await asyncio.sleep(0.5)  # nothing more comes
    assert len(kitchen.printed) == 4 and backup.printed == []


async def test_a_printer_without_status_that_keeps_its_end_open_is_not_waited_for_at_every_ticket(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    backup: SimPrinter,
    tmp_path: Path,
) -> None:
    """A print server that reads a job to its end and keeps its side of the connection open (CUPS's socket backend
    has `waiteof=false` for such devices): the agent waits for its end once, at most the ticket's time, and from then
    on only a moment, for a reset. Five tickets come out in far less than five such waits (some 6.5 s each). Before
    (the blind75 probe, F2, on the first fix): every ticket waited it, about 9 tickets a minute."""
    jobs: list[bytes] = []
    kept: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to the host's end; its own end stays open
        if data.startswith(b"\x1b@"):
            jobs.append(data)
        kept.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = _settings(tmp_path, printers, port, backup, {"answers_status": "no"})
        agent = await make_agent(settings)
        async with api_client(agent) as api:
            for n in range(5):
                assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
        await wait_until(lambda: len(jobs) == 5, timeout=20, what="five tickets at the print server")
        assert backup.printed == []
    finally:
        for writer in kept:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("reply", [0xFF, 0x02], ids=["0xff", "fixed-bit-4-clear"])
async def test_a_printer_answering_status_with_bytes_that_are_not_replies_is_told_so_not_as_silent(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Any],
    printers: dict[str, SimPrinter],
    reply: int,
) -> None:
    """The kitchen printer prints a ticket, then answers every DLE EOT with a byte that is not a status reply (0xFF, or
    its flags with the fixed bit 4 clear: firmware, or a model whose replies are not ESC/POS's). The next ticket waits
    (no reply says it can print) and the printer's detail says what is true: it answers with bytes that are not status
    replies, check its profile or model. Before stop 80 it read "takes the connection but answers nothing: another
    device (the till?) may be printing on it", sending the technician to look for a till (the netprinter80 probe,
    F3)."""
    kitchen = printers["kitchen"]
    agent = await make_agent(make_settings(spool={"offline_probe_max_s": 0.2}))

    async def kitchen_detail() -> str:
        async with api_client(agent) as api, api.get("/api/v1/printers") as response:
            return str(next(p["detail"] for p in (await response.json())["printers"] if p["name"] == "kitchen"))

    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        await kitchen.wait_for_printed(1, timeout=15)
        kitchen.status_byte = reply
        assert (await post(api, make_order(2, print_receipt=False)))[0] == 201
    detail = await eventually(kitchen_detail, lambda d: "answer" in d, timeout=30, what="the detail of its replies")
    assert "not ESC/POS status replies" in detail and "printers.kitchen.profile" in detail, detail
    assert "till" not in detail, detail
    assert len(kitchen.printed) == 1


async def _kitchen_listed(agent: Agent) -> dict[str, Any]:
    async with api_client(agent) as api, api.get("/api/v1/printers") as response:
        return dict(next(p for p in (await response.json())["printers"] if p["name"] == "kitchen"))


def _told_as_not_a_printer(kitchen: dict[str, Any]) -> bool:
    return kitchen["state"] == "offline" and "never answers like a printer" in kitchen["detail"]


async def test_a_web_server_that_took_a_printers_address_is_told_as_not_a_printer_not_as_out_of_paper(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Any],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
) -> None:
    """The kitchen printer prints a ticket; then its address answers with a web server that meets any bytes with
    "HTTP/1.1 400 Bad Request ..." and closes. The next order's ticket waits, nothing goes to the web server, the
    printer is offline with the documented "it accepts connections but never answers like a printer: check the
    printer's address", and the manager gets one mail naming the address, not one about paper; back on that port, the
    printer prints the ticket once. Before stop 81 the text's letters were read as status replies ('R', 'r', 'v'
    carry a reply's fixed bits): the printer read paper_out, flapping with offline every ~2 s, and the manager was
    mailed "out of paper: put in a new paper roll" and "unreachable ... Broken pipe" (the netprinter80 probe, F2)."""
    kitchen = printers["kitchen"]
    seen = Recorder()
    agent = await make_agent(make_settings(spool={"offline_probe_max_s": 0.2}, **mail_to(sink)), listen=seen)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        await kitchen.wait_for_printed(1, timeout=15)
        await kitchen.stop()
        web = NotAPrinter("web", port=kitchen.port, answer=HTTP_400)
        await web.start()
        try:
            assert (await post(api, make_order(2, print_receipt=False)))[0] == 201
            listed = await eventually(
                lambda: _kitchen_listed(agent), _told_as_not_a_printer, timeout=20, what="told as not a printer"
            )
            await wait_until(lambda: web.connections >= 5, timeout=20, what="a few more probes of the web server")
            mails = [m for m in await sink.wait_for(1, timeout=10) if "kitchen" in str(m["Subject"])]
            assert await job_rows(agent, "SELECT state FROM print_jobs ORDER BY id") == [("printed",), ("queued",)]
        finally:
            await web.stop()
    assert f"127.0.0.1:{kitchen.port}" in listed["detail"] and "address" in listed["detail"], listed
    assert "till" not in listed["detail"], listed
    states = [e.new for e in seen.of(PrinterStatusChanged) if e.printer == "kitchen"]
    assert "paper_out" not in states and states.count("offline") == 1, states
    assert _ESC_AT not in web.received, "a ticket went to the web server"
    assert [str(m["Subject"]).endswith("Drucker kitchen nicht erreichbar") for m in mails] == [True], [
        m["Subject"] for m in mails
    ]
    body = mails[0].get_body().get_content()  # type: ignore[union-attr]
    assert f"127.0.0.1:{kitchen.port}" in body and "never answers like a printer" in body, body
    assert "Papierrolle" not in body and "paper" not in body, body  # no new roll asked for (its checklist names paper)
    await kitchen.start()
    printed = await kitchen.wait_for_printed(2, timeout=20)
    assert make_order(2)["number"] in decode(printed[1]).text and "KOPIE" not in decode(printed[1]).text
    await eventually(
        lambda: job_rows(agent, "SELECT state FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("printed",), ("printed",)],
    )
    await asyncio.sleep(0.5)  # nothing more comes
    assert len(kitchen.printed) == 2


async def test_a_device_answering_in_text_from_the_start_gets_no_ticket_which_prints_once_its_address_is_corrected(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Any],
    printers: dict[str, SimPrinter],
) -> None:
    """The kitchen printer (python-escpos' "default" profile: whether it answers is learnt) is set up with the address
    of a web server that answers any bytes with an HTTP 400 page. An order's ticket waits and nothing goes to the web
    server; the printer is offline, told as a device that is not a printer. The address corrected in the config and
    the agent restarted, the ticket prints once, unmarked. Before stop 81 the page's letters read as status replies:
    paper_out (the netprinter80 probe, F2)."""
    kitchen = printers["kitchen"]
    web = NotAPrinter("web", answer=HTTP_400)
    await web.start()
    seen = Recorder()
    settings = make_settings(spool={"offline_probe_max_s": 0.2})
    try:
        agent = await make_agent(with_printer(settings, "kitchen", port=web.port), listen=seen)
        async with api_client(agent) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        listed = await eventually(
            lambda: _kitchen_listed(agent), _told_as_not_a_printer, timeout=20, what="told as not a printer"
        )
        await wait_until(lambda: web.connections >= 4, timeout=20, what="a few more probes of the web server")
        assert await job_rows(agent, "SELECT state FROM print_jobs") == [("queued",)]
        await agent.stop()
    finally:
        await web.stop()
    assert f"127.0.0.1:{web.port}" in listed["detail"], listed
    assert "paper_out" not in [e.new for e in seen.of(PrinterStatusChanged) if e.printer == "kitchen"]
    assert _ESC_AT not in web.received, "a ticket went to the web server"
    agent = await make_agent(settings)
    printed = await kitchen.wait_for_printed(1, timeout=20)
    assert make_order(1)["number"] in decode(printed[0]).text and "KOPIE" not in decode(printed[0]).text
    await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)])
    await asyncio.sleep(0.5)  # nothing more comes
    assert len(kitchen.printed) == 1
