"""PrinterDriver against the simulated network printer on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.printing.driver import PrinterDriver, PrinterNotReadyError, PrintOutcome
from edge.printing.status import PrinterState
from edge.sim.printer import PaperSpeed, SimPrinter
from edge.transports import FileTransport, TcpTransport
from tests.helpers import wait_until

# Text, a QR-ish block and bytes that look like status queries' neighbours, but none is DLE EOT 1-4.
JOB = (
    b"\x1b@\x1b!\x30A-1042\n"
    + "Jürgen Groß 9,50 €\n".encode("cp858", "replace")
    + bytes(range(256)).replace(b"\x10\x04", b"")
    + b"\x1dV\x00"
)

LINE = b"\x1b@A-1042 ready\n"  # a job of one line


def driver_for(sim: SimPrinter, *, status_timeout: float = 1.0, connect_timeout: float = 3.0) -> PrinterDriver:
    return PrinterDriver(
        "kitchen", TcpTransport("kitchen", *sim.address, connect_timeout=connect_timeout), status_timeout=status_timeout
    )


async def test_prints_exact_bytes_and_confirms(printer: SimPrinter) -> None:
    """A healthy printer gets the job byte for byte (status queries aside) and the outcome is confirmed online."""
    outcome = await asyncio.wait_for(driver_for(printer).print(JOB), 5)
    assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE, processed=True)
    assert await printer.wait_for_printed(1, timeout=5) == [JOB]
    assert printer.jobs == [JOB]
    assert printer.status_queries == 3  # 1, 2, 4 before; after it, GS r's reply is the paper's state


@pytest.mark.parametrize(
    ("flag", "state"),
    [
        ("paper_out", PrinterState.PAPER_OUT),
        ("cover_open", PrinterState.COVER_OPEN),
        ("feed_button", PrinterState.PAPER_FEEDING),
    ],
)
async def test_blocking_state_refuses_without_sending(printer: SimPrinter, flag: str, state: PrinterState) -> None:
    """If the printer reports paper out, cover open or paper fed by its FEED button, no job byte is sent and the error
    carries the state."""
    setattr(printer, flag, True)
    driver = driver_for(printer)
    with pytest.raises(PrinterNotReadyError) as caught:
        await asyncio.wait_for(driver.print(b"never sent"), 5)
    assert caught.value.state == state
    assert caught.value.device_id == "kitchen"
    assert caught.value.transport == f"tcp 127.0.0.1:{printer.port}"
    assert await asyncio.wait_for(driver.status(), 5) == state
    setattr(printer, flag, False)
    await asyncio.wait_for(driver.print(JOB), 5)
    await printer.wait_for_printed(1, timeout=5)
    assert printer.jobs == [JOB]
    assert printer.printed == [JOB]


async def test_paper_near_end_still_prints(printer: SimPrinter) -> None:
    """Paper near end is a warning: the job prints and the outcome says near end."""
    printer.paper_near_end = True
    outcome = await asyncio.wait_for(driver_for(printer).print(JOB), 5)
    assert outcome == PrintOutcome(confirmed=True, state=PrinterState.PAPER_NEAR_END, processed=True)
    assert await printer.wait_for_printed(1, timeout=5) == [JOB]


@pytest.mark.parametrize(
    ("flag", "state"),
    [
        (None, PrinterState.ONLINE),
        ("paper_out", PrinterState.PAPER_OUT),
        ("cover_open", PrinterState.COVER_OPEN),
        ("paper_near_end", PrinterState.PAPER_NEAR_END),
    ],
)
async def test_status_reads_the_printer(printer: SimPrinter, flag: str | None, state: PrinterState) -> None:
    """status() reports what the printer says, and sends no job bytes."""
    if flag:
        setattr(printer, flag, True)
    assert await asyncio.wait_for(driver_for(printer).status(), 5) == state
    await asyncio.sleep(0.05)
    assert printer.jobs == []


async def test_offline_is_unreachable_then_prints_on_same_port(printer: SimPrinter) -> None:
    """An unplugged printer fails fast with DeviceUnreachableError; plugged back in, it prints on the same port."""
    driver = driver_for(printer, connect_timeout=3.0)
    port = printer.port
    printer.set_offline(True)
    started = time.monotonic()
    with pytest.raises(DeviceUnreachableError):
        await asyncio.wait_for(driver.print(JOB), 5)
    assert time.monotonic() - started < 1.0
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.OFFLINE
    printer.set_offline(False)
    assert printer.port == port
    assert await asyncio.wait_for(driver.print(JOB), 5) == PrintOutcome(
        confirmed=True, state=PrinterState.ONLINE, processed=True
    )
    assert await printer.wait_for_printed(1, timeout=5) == [JOB]


async def test_dropped_connection_is_write_error(printer: SimPrinter) -> None:
    """A printer that hangs up mid-job gives DeviceWriteError; what it got before is on paper."""
    job = b"x" * 3000
    printer.drop_after = 100
    with pytest.raises(DeviceWriteError):
        await asyncio.wait_for(driver_for(printer).print(job), 5)
    assert await printer.wait_for_printed(1, timeout=5) == [job[:100]]
    assert printer.dropped == [0]
    assert printer.drop_after is None


async def test_silent_printer_still_prints_unconfirmed(printer: SimPrinter) -> None:
    """A printer that never answers status still gets the job; the outcome is unconfirmed and unknown."""
    printer.answer_status = False
    driver = driver_for(printer, status_timeout=0.2)
    outcome = await asyncio.wait_for(driver.print(JOB), 5)
    assert outcome == PrintOutcome(confirmed=False, state=PrinterState.UNKNOWN)
    assert await printer.wait_for_printed(1, timeout=5) == [JOB]
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.UNKNOWN
    assert printer.status_queries == 0


async def test_a_printer_that_never_answered_is_not_asked_around_jobs_until_it_answers_a_poll(
    printer: SimPrinter,
) -> None:
    """Silent twice and never answered: later jobs go without the two status waits; a status poll still asks, and
    once the printer answers, every job is checked before and confirmed after again (paper out is seen)."""
    printer.answer_status = False
    driver = driver_for(printer, status_timeout=0.2)
    await driver.print(JOB)  # asks before and after: two silences
    asked = printer.status_asked
    assert asked == 2
    outcome = await driver.print(JOB)
    assert outcome == PrintOutcome(confirmed=False, state=PrinterState.UNKNOWN)
    assert printer.status_asked == asked  # not asked at all
    assert await driver.status() == PrinterState.UNKNOWN  # the poll asks, and waits
    # Counted when the simulator serves that connection: under load it may still be closing the job's before it.
    await wait_until(lambda: printer.status_asked == asked + 1, timeout=5, what="the poll's query")
    printer.answer_status = True
    assert await driver.status() == PrinterState.ONLINE
    assert (await driver.print(JOB)).confirmed
    printer.paper_out = True
    with pytest.raises(PrinterNotReadyError):
        await driver.print(JOB)
    assert await printer.wait_for_printed(3, timeout=5) == [JOB] * 3


async def test_a_printer_that_answered_once_is_offline_when_silent_and_always_asked(printer: SimPrinter) -> None:
    """Silence from a printer that has answered is never its nature: it is switched off or cut off, so each job asks
    first and is not sent (before: sent as "unknown", and lost on a printer that was off); a status poll says
    offline; once it answers, jobs go again, asked before them."""
    driver = driver_for(printer, status_timeout=0.2)
    assert (await driver.print(JOB)).confirmed
    printer.answer_status = False
    for _ in range(3):
        before = printer.status_asked
        with pytest.raises(DeviceUnreachableError, match="takes the connection but answers nothing"):
            await driver.print(JOB)
        assert printer.status_asked == before + 1
    assert await driver.status() == PrinterState.OFFLINE
    printer.answer_status = True
    before = printer.status_asked
    assert (await driver.print(JOB)).confirmed and printer.status_asked == before + 3  # 1, 2, 4 before; GS r after
    assert await printer.wait_for_printed(2, timeout=5) == [JOB, JOB]


async def test_a_printer_without_gs_r_is_confirmed_by_dle_eot_and_stops_being_asked(printer: SimPrinter) -> None:
    """A clone that answers DLE EOT but ignores GS r: each of its first two jobs waits for the in-order reply for the
    time the job may take, asks it once more alone (an answer would say the one after the job was lost), then counts
    as confirmed on the real-time reply (as before GS r); after that the agent
    does not ask GS r any more (no wait per ticket), and says once what that costs. (A job of one line: the wait is
    planned by a job's lines.)"""
    printer.answer_in_order = False
    # Long enough for a DLE EOT reply on a loaded box (at 0.2 s one went unanswered once beside a full run), and
    # still far above the third job's time.
    driver = driver_for(printer, status_timeout=0.5)
    with capture_logs() as logs:
        for _ in range(3):
            started = time.monotonic()
            outcome = await asyncio.wait_for(driver.print(LINE), 5)
            assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE)
        took_third = time.monotonic() - started
    assert printer.in_order_asked == 4 and printer.in_order_answered == 0  # twice for each of the first two jobs
    assert took_third < 0.2  # no wait for a reply that does not come
    assert [e["event"] for e in logs if e["event"] == "printer_no_in_order_status"] == ["printer_no_in_order_status"]
    assert await printer.wait_for_printed(3, timeout=5) == [LINE] * 3


# A short kitchen ticket: four lines and a cut.
SHORT_TICKET = b"\x1b@" + b"".join(f"{n} x Schnitzel Wiener Art\n".encode() for n in range(1, 5)) + b"\x1dV\x00"


async def test_an_impact_printer_is_waited_for_by_its_lines_and_a_roll_end_in_its_third_ticket_is_seen(
    printer: SimPrinter,
) -> None:
    """Kitchens use impact printers (heat does not blacken their paper): Epson's TM-U220 prints 4.7 lines a second
    (its spec sheet, 40 columns), so four lines and a cut take 1.6 s for 120 bytes. The wait for GS r after a job is
    planned by its lines at such a speed, not by its bytes at a thermal printer's: before, its first two tickets
    outlasted the wait, it was taken for a printer without GS r, and a roll that ended while its third ticket printed
    from the buffer went unseen (the ticket marked printed, half of it on paper)."""
    printer.speed = PaperSpeed(mm_per_s=20.0)  # 1/6 inch lines at 4.7 lines a second
    driver = driver_for(printer, status_timeout=0.5)  # a reply's time on a busy machine; far below the paper's
    with capture_logs() as logs:
        for _ in range(2):
            outcome = await asyncio.wait_for(driver.print(SHORT_TICKET), 10)
            assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE, processed=True)
        printer.paper_out_after = len(SHORT_TICKET) // 2
        outcome = await asyncio.wait_for(driver.print(SHORT_TICKET), 10)
    assert (outcome.on_paper, outcome.state) == (False, PrinterState.PAPER_OUT)
    assert "printer_no_in_order_status" not in [e["event"] for e in logs]
    printed = await printer.wait_for_printed(3, timeout=5)
    assert printed[:2] == [SHORT_TICKET] * 2 and SHORT_TICKET.startswith(printed[2]) and printed[2] != SHORT_TICKET


async def test_a_dle_eot_inside_image_data_does_not_shift_the_replies(printer: SimPrinter) -> None:
    """Raster image bytes (a logo, a QR code sent as an image) can hold DLE EOT 4; a printer executes it where it
    comes and answers. That answer is not the reply to the query after the job: before, it was, and the printer's
    own DLE EOT 1 reply was read as the roll sensor's ("paper near end" on a full roll)."""
    image = b"\x1dv0\x00\x02\x00\x02\x00" + b"\x10\x04\x04\x00"
    outcome = await asyncio.wait_for(driver_for(printer, status_timeout=0.5).print(JOB + image), 5)
    assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE, processed=True)


async def test_slow_printer_completes_confirmed(printer: SimPrinter) -> None:
    """A printer taking 2000 bytes/s gets a 4 KB job whole, and the confirmation waits for it."""
    printer.bytes_per_s = 2000
    job = bytes(range(32, 128)) * 43  # 4128 bytes
    started = time.monotonic()
    outcome = await asyncio.wait_for(driver_for(printer).print(job), 10)
    elapsed = time.monotonic() - started
    assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE, processed=True)
    assert elapsed > 1.5  # confirmed only once the printer had read the whole job
    assert await printer.wait_for_printed(1, timeout=5) == [job]


async def test_print_never_blocks_the_event_loop(printer: SimPrinter) -> None:
    """While a job goes to a slow printer, other tasks keep running every 10 ms."""
    printer.bytes_per_s = 4000
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        await asyncio.wait_for(driver_for(printer).print(b"y" * 3000), 10)
        elapsed = time.monotonic() - started
    finally:
        ticker.cancel()
    assert elapsed > 0.5
    assert len(ticks) > elapsed / 0.01 * 0.5
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.2


async def test_file_transport_prints_unconfirmed(tmp_path: Path) -> None:
    """A write-only transport prints without asking status: unconfirmed, unknown, exact bytes in the file."""
    driver = PrinterDriver("demo", FileTransport("demo", tmp_path / "out"))
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.UNKNOWN
    assert await asyncio.wait_for(driver.print(JOB), 5) == PrintOutcome(confirmed=False, state=PrinterState.UNKNOWN)
    assert [f.read_bytes() for f in (tmp_path / "out").glob("*.bin")] == [JOB]


async def test_file_transport_unwritable_is_offline(tmp_path: Path) -> None:
    """A directory that cannot be created means unreachable for print() and offline for status()."""
    (tmp_path / "file").write_bytes(b"")
    driver = PrinterDriver("demo", FileTransport("demo", tmp_path / "file" / "out"))
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.OFFLINE
    with pytest.raises(DeviceUnreachableError):
        await asyncio.wait_for(driver.print(JOB), 5)


async def test_hangup_before_job_is_unreachable() -> None:
    """A device that accepts and hangs up at once got no job byte: unreachable for print(), offline for status()."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        driver = PrinterDriver("kitchen", TcpTransport("kitchen", "127.0.0.1", port), status_timeout=1.0)
        with pytest.raises(DeviceUnreachableError, match="hung up before the job was sent"):
            await asyncio.wait_for(driver.print(JOB), 5)
        assert await asyncio.wait_for(driver.status(), 5) == PrinterState.OFFLINE
    finally:
        server.close()
        await server.wait_closed()


async def test_buffers_a_crash_left_a_job_in_are_cleared_at_the_first_contact_that_reaches_the_printer(
    printer: SimPrinter,
) -> None:
    """After a crash the driver clears the printer's buffers before anything else it sends: not while the printer
    cannot be reached (it is tried again), then on the status query that finds it out of paper; the printer's Clear
    response is not taken for a status reply. A job's connection clears the same way, and its outcome is read right."""
    driver = driver_for(printer, status_timeout=0.5)
    driver.clear_at_first_contact()
    printer.set_offline(True)
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.OFFLINE
    assert driver.clearing_first and printer.cleared == 0
    printer.set_offline(False)
    printer.paper_out = True
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.PAPER_OUT
    assert not driver.clearing_first and printer.cleared == 1
    printer.paper_out = False
    assert await asyncio.wait_for(driver.status(), 5) == PrinterState.ONLINE
    assert printer.cleared == 1  # once

    driver.clear_at_first_contact()
    outcome = await asyncio.wait_for(driver.print(JOB), 5)
    assert outcome == PrintOutcome(confirmed=True, state=PrinterState.ONLINE, processed=True)
    assert await printer.wait_for_printed(1, timeout=5) == [JOB] and printer.cleared == 2
