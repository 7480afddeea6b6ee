"""SimPrinter spoken to over raw loopback sockets, the way a printer client would."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.sim.printer import PaperSpeed, SimPrinter, serve
from tests.helpers import wait_until


@pytest.fixture
async def printer(tmp_path: Path) -> AsyncIterator[SimPrinter]:
    sim = SimPrinter("bar", out_dir=tmp_path / "paper")
    await sim.start()
    yield sim
    await sim.stop()


async def send(sim: SimPrinter, *pieces: bytes, expect_replies: int = 0) -> bytes:
    """Sends pieces with a pause between (separate TCP segments), reads the replies, closes."""
    reader, writer = await asyncio.open_connection(*sim.address)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.02)
    replies = await asyncio.wait_for(reader.readexactly(expect_replies), 5)
    writer.close()
    await writer.wait_closed()
    return replies


async def test_queries_answered_and_removed_from_job(printer: SimPrinter, tmp_path: Path) -> None:
    """DLE EOT 1-4 are answered with Epson bytes and are not job bytes, even split across segments."""
    replies = await send(
        printer, b"AB\x10\x04\x01CD\x10", b"\x04", b"\x04EF\x10\x04\x02\x10\x04\x03\x10\x04\x04", expect_replies=5
    )
    assert replies == bytes([0x16, 0x12, 0x12, 0x12, 0x12])
    assert await printer.wait_for_printed(1, timeout=5) == [b"ABCDEF"]
    assert printer.status_queries == 5
    assert (tmp_path / "paper" / "bar-0001.bin").read_bytes() == b"ABCDEF"


async def test_non_query_dle_eot_is_job_data(printer: SimPrinter) -> None:
    """10 04 followed by anything but 1-4 is ordinary data, kept byte for byte."""
    data = b"\x10\x04\x00\x10\x04\x05\x10\x10\x04\x10"
    await send(printer, data)
    assert await printer.wait_for_printed(1, timeout=5) == [data]
    assert printer.status_queries == 0


async def test_flags_change_the_replies(printer: SimPrinter) -> None:
    """Paper out, cover open and near end set the documented bits."""
    query_all = b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"
    printer.paper_out = True
    assert await send(printer, query_all, expect_replies=4) == bytes([0x1E, 0x32, 0x12, 0x72])
    printer.paper_out, printer.cover_open = False, True
    assert await send(printer, query_all, expect_replies=4) == bytes([0x1E, 0x16, 0x12, 0x12])
    printer.cover_open, printer.paper_near_end = False, True
    assert await send(printer, query_all, expect_replies=4) == bytes([0x16, 0x12, 0x12, 0x1E])
    assert printer.jobs == []


async def test_paper_out_takes_bytes_but_prints_nothing(printer: SimPrinter) -> None:
    """With no paper the job is received but does not come out; with paper the next one does."""
    printer.paper_out = True
    await send(printer, b"lost")
    printer.paper_out = False
    await send(printer, b"kept")
    assert await printer.wait_for_printed(1, timeout=5) == [b"kept"]
    assert printer.jobs == [b"lost", b"kept"]


async def test_drop_after_fires_once(printer: SimPrinter) -> None:
    """drop_after cuts one connection after that many job bytes, with a reset, then clears itself."""
    printer.drop_after = 4
    reader, writer = await asyncio.open_connection(*printer.address)
    writer.write(b"\x10\x04\x01123456789")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(2), 5)
    writer.close()
    await send(printer, b"whole")
    assert await printer.wait_for_printed(2, timeout=5) == [b"1234", b"whole"]
    assert printer.dropped == [0]
    assert printer.drop_after is None


async def test_offline_refuses_and_cuts_open_connections(printer: SimPrinter) -> None:
    """Going offline cuts a connection in progress and refuses new ones; back online listens on the same port."""
    reader, writer = await asyncio.open_connection(*printer.address)
    writer.write(b"half a ticket")
    await writer.drain()
    await asyncio.sleep(0.05)
    port = printer.port
    printer.set_offline(True)
    assert await asyncio.wait_for(reader.read(10), 5) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*printer.address)
    printer.set_offline(False)
    assert printer.port == port
    await send(printer, b"again")
    assert await printer.wait_for_printed(2, timeout=5) == [b"half a ticket", b"again"]
    assert printer.dropped == [0]


async def test_an_offline_printer_keeps_its_port_so_no_other_test_takes_it(printer: SimPrinter) -> None:
    """Powered off, the printer still holds its address, as a real one keeps its IP while off: connections are
    refused, yet no other socket can take the port meanwhile. (It was released: another xdist worker's simulator, bound
    to port 0, got it and printed this agent's tickets.)"""
    printer.set_offline(True)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*printer.address)
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError, match="in use"):
            other.bind(printer.address)
    finally:
        other.close()
    printer.set_offline(False)
    await send(printer, b"back")
    assert await printer.wait_for_printed(1, timeout=5) == [b"back"]


async def test_a_board_that_needs_a_moment_refuses_right_after_a_connection_ends_and_takes_the_next_after_it(
    printer: SimPrinter,
) -> None:
    """``refuse_after_close_s``: a single-socket board listens again only that long after a connection ended."""
    printer.refuse_after_close_s = 0.3
    reader, writer = await asyncio.open_connection(*printer.address)
    writer.write(b"first")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the board hung up: its connection is over
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*printer.address)
    await asyncio.sleep(0.4)
    await send(printer, b"second")
    assert await printer.wait_for_printed(2, timeout=5) == [b"first", b"second"]


async def test_wait_for_printed_times_out(printer: SimPrinter) -> None:
    """Waiting for a job that never comes raises TimeoutError saying how many did."""
    with pytest.raises(TimeoutError, match="0 of 1"):
        await printer.wait_for_printed(1, timeout=0.1)


async def test_serve_runs_until_cancelled(tmp_path: Path) -> None:
    """serve() logs its port, prints what it gets into out_dir and stops when cancelled."""
    with capture_logs() as logs:
        task = asyncio.create_task(serve("cli", 0, tmp_path))
        await wait_until(lambda: any(e["event"] == "sim_printer_listening" for e in logs), 5, "listening")
        port = next(e["port"] for e in logs if e["event"] == "sim_printer_listening")
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        writer.close()
        await wait_until((tmp_path / "cli-0001.bin").exists, 5, "the job in out_dir")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (tmp_path / "cli-0001.bin").read_bytes() == b"hello"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_client_reset_prints_what_arrived(printer: SimPrinter) -> None:
    """A client that resets the connection leaves what it sent printed, like a real printer."""
    # A blocking client socket, as another program would use; connected and written from a thread (off the loop the
    # simulator runs on).
    sock = await asyncio.to_thread(socket.create_connection, printer.address)
    await asyncio.to_thread(sock.sendall, b"partial")
    await asyncio.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    sock.close()
    assert await printer.wait_for_printed(1, timeout=5) == [b"partial"]


@pytest.mark.parametrize(
    ("flag", "replies"), [("paper_out", bytes([0x1E, 0x32, 0x72])), ("cover_open", bytes([0x1E, 0x16, 0x12]))]
)
async def test_fault_mid_job_prints_only_what_came_before_and_status_still_answers(
    printer: SimPrinter, flag: str, replies: bytes
) -> None:
    """Paper runs out (or the cover opens) after 4 job bytes: those 4 are on paper, the rest of the job is not;
    real-time status (DLE EOT 1, 2, 4) still answers, with the fault's bits; the trigger fires once."""
    setattr(printer, f"{flag}_after", 4)
    answer = await send(printer, b"12345678", b"\x10\x04\x01\x10\x04\x02\x10\x04\x04", expect_replies=3)
    assert answer == replies
    assert getattr(printer, flag) and getattr(printer, f"{flag}_after") is None
    assert await printer.wait_for_printed(1, timeout=5) == [b"1234"]
    assert printer.jobs == [b"12345678"]
    setattr(printer, flag, False)  # new roll, cover closed
    await send(printer, b"whole")
    assert await printer.wait_for_printed(2, timeout=5) == [b"1234", b"whole"]


async def test_one_host_at_a_time_the_others_wait_unanswered_and_a_fourth_is_refused(printer: SimPrinter) -> None:
    """Epson's UB-E02 (Technical Reference Guide 4.5): up to three connections, data of all but the first blocked
    until it closes, and no more connections meanwhile; the second is served, answers and prints once the first
    closes."""
    _, first = await asyncio.open_connection(*printer.address)
    second_r, second = await asyncio.open_connection(*printer.address)
    _, third = await asyncio.open_connection(*printer.address)
    second.write(b"\x10\x04\x01SECOND\n")
    await second.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(second_r.read(1), 0.3)  # its status question waits behind the first connection
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*printer.address)
    first.write(b"FIRST\n")
    first.close()
    assert len(await second_r.read(1)) == 1  # answered once the first let go
    second.close()
    third.close()
    assert [bytes(job) for job in await printer.wait_for_printed(2)] == [b"FIRST\n", b"SECOND\n"]
    _, fourth = await asyncio.open_connection(*printer.address)  # a free place again
    fourth.close()


async def test_status_questions_while_a_job_waits_at_paper_end_end_with_their_connections_and_take_no_place(
    printer: SimPrinter,
) -> None:
    """An Epson that goes on with its job after a new roll (``resumes``) keeps that job's connection while it waits;
    a host asking its status meanwhile, one connection after another, is answered each time and never refused, and
    once the roll is in the rest of the job prints. Before (the failover82 probe, F2): each status connection waited
    for the stopped job before it ended, the third filled the interface's three places and the next was refused, which
    the agent read as a printer gone."""
    printer.speed, printer.resumes, printer.paper_out_after = PaperSpeed(), True, 4
    _, job = await asyncio.open_connection(*printer.address)
    job.write(b"1234\n5678\n")
    await job.drain()
    job.close()
    await wait_until(lambda: printer.paper_out, what="the roll ended")
    for _ in range(5):
        assert await send(printer, b"\x10\x04\x04", expect_replies=1) == b"\x72"  # roll end, answered at once
    await wait_until(lambda: len(printer._connections) == 1, what="only the job's connection, waiting for a roll")
    printer.paper_out = False
    # Its start on the old roll, the rest on the new one.
    assert [bytes(paper) for paper in await printer.wait_for_printed(2)] == [b"1234", b"\n5678\n"]


async def test_connections_the_kernel_took_before_it_was_full_are_served_not_reset(printer: SimPrinter) -> None:
    """The simulator listens with a kernel backlog, so a burst of connects all succeed before it accepts the first:
    for the client those connections were taken, and a sender that writes without asking (a printer without status)
    cannot tell a reset afterwards. A printer refuses at connect time (UB-E02 TRG 4.5), so what it accepted it serves.
    Before: the listener closed at the third, resetting the two already established; one ticket of a CI run was
    logged printed and never came out."""

    for n in range(5):  # connects that do not yield to the loop: none accepted yet, all five wait in the backlog
        with socket.socket() as conn:
            conn.setblocking(False)
            assert conn.connect_ex(printer.address) in (0, errno.EINPROGRESS)  # loopback: established at once
            conn.send(f"JOB{n}\n".encode())
    jobs = await printer.wait_for_printed(5, timeout=10)
    assert sorted(bytes(job) for job in jobs) == [f"JOB{n}\n".encode() for n in range(5)]


@pytest.mark.parametrize("off", ["power_off", "unplugged"])
async def test_a_printer_given_a_new_address_while_off_answers_there_only_once_it_is_on(
    printer: SimPrinter, off: str
) -> None:
    """A printer without power (or its cable out) answers at no address, the new one it gets meanwhile neither: a
    connection there is refused until it is on again, then taken. Before (the chaos77 probe, R1): the new address took
    connections while it was off, held them without a word, and printed what queued once its power was back."""
    if off == "power_off":
        printer.power_off()
    else:
        printer.set_offline(True)
    old = printer.port
    printer.move()
    assert printer.port not in (0, old)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", printer.port)
    if off == "power_off":
        printer.power_on()
    else:
        printer.set_offline(False)
    _, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.close()
    await writer.wait_closed()


async def test_a_connection_from_before_a_power_cycle_is_reset_at_its_next_bytes(printer: SimPrinter) -> None:
    """A host that sent a job and keeps its connection while the printer is switched off and on: the rebooted printer
    knows no such connection, and a status query on it is answered with a reset, not a status. Before stop 83 the
    simulator answered it as if nothing had happened, unlike a device (RFC 793, reset generation)."""
    reader, writer = await asyncio.open_connection(*printer.address)
    writer.write(b"JOB\n")
    await writer.drain()
    await wait_until(lambda: printer.job_bytes_in == 4, 5, "the job taken")
    printer.power_off()
    printer.power_on()
    writer.write(b"\x10\x04\x01")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(1), 5)
    writer.close()


async def test_a_host_that_resets_while_the_buffer_is_full_frees_the_printer_for_the_next(printer: SimPrinter) -> None:
    """Paper runs out with the receive buffer full; the host resets its connection (a stalled write given up). The
    printer's TCP handles the reset on arrival, also while its buffer is full, so the next host's connection is served
    at once and a clear sent on it drops what the first left in the buffer. Before stop 83 the simulator noticed the
    reset only once it read again, after a new roll, and the next host waited behind the dead connection."""
    printer.speed, printer.resumes, printer.paper_out_after = PaperSpeed(), True, 100
    first = socket.socket()
    first.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        first.connect(printer.address)
    await asyncio.sleep(0.1)
    with contextlib.suppress(BlockingIOError):
        first.send(b"LINE\n" * 4000)
    await wait_until(lambda: printer.paper_out, 5, "paper out")
    first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.close()  # a reset
    reader, writer = await asyncio.open_connection(*printer.address)
    writer.write(b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08\x10\x04\x01")
    await asyncio.wait_for(reader.readexactly(4), 5)  # the Clear response (3 bytes), then the status
    assert printer.cleared == 1
    writer.close()
    printer.paper_out = False
    await asyncio.sleep(0.5)  # 250 mm/s: a line left in the buffer would be on paper by now
    assert len(printer.printed) == 1 and len(printer.printed[0]) <= 100
