"""Serial printers over a pseudo-terminal pair: real pyserial on the agent's side, the simulated printer on the
other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import parse_settings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.orders.model import parse_order
from edge.printing.decode import decode
from edge.printing.driver import PrinterDriver
from edge.printing.render import Renderer
from edge.printing.status import PrinterState
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter, SimSerialPrinter, serve
from edge.sim.process import AgentProcess, write_config
from edge.transports import SerialTransport, TcpTransport
from tests.helpers import TOKEN, api_client, config_dict, db_rows, eventually, post, status_reads, wait_until


@pytest.fixture
async def serial_printer() -> AsyncIterator[SimSerialPrinter]:
    """A simulated ESC/POS printer at the far end of a pseudo-terminal; ``device`` is the path to open."""
    sim = SimSerialPrinter("bar")
    await sim.start()
    yield sim
    await sim.stop()


async def test_serial_prints_the_same_bytes_as_network(
    serial_printer: SimSerialPrinter, printers: dict[str, SimPrinter], example_order: dict
) -> None:
    """One rendered ticket sent over serial and over TCP arrives byte for byte the same, confirmed on both."""
    data = Renderer().ticket(parse_order(example_order), "kitchen")
    network = PrinterDriver(
        "kitchen", TcpTransport("kitchen", "127.0.0.1", printers["kitchen"].port), status_timeout=0.5
    )
    serial = PrinterDriver("bar", SerialTransport("bar", serial_printer.device, baudrate=115200), status_timeout=0.5)
    outcomes = [await network.print(data), await serial.print(data)]
    assert [o.confirmed for o in outcomes] == [True, True]
    await printers["kitchen"].wait_for_printed(1)
    await serial_printer.wait_for_printed(1)
    assert serial_printer.printed == printers["kitchen"].printed == [data]


@pytest.mark.parametrize(
    ("flag", "state"),
    [
        (None, PrinterState.ONLINE),
        ("paper_out", PrinterState.PAPER_OUT),
        ("cover_open", PrinterState.COVER_OPEN),
        ("paper_near_end", PrinterState.PAPER_NEAR_END),
    ],
)
async def test_serial_status_is_read_back(
    serial_printer: SimSerialPrinter, flag: str | None, state: PrinterState
) -> None:
    """DLE EOT over the serial line maps to the same states as over the network."""
    if flag:
        setattr(serial_printer, flag, True)
    driver = PrinterDriver("bar", SerialTransport("bar", serial_printer.device), status_timeout=0.5)
    assert await driver.status() == state


async def test_silent_serial_printer_is_unknown_and_prints(serial_printer: SimSerialPrinter) -> None:
    """A serial printer that ignores status queries: unknown, never "paper OK", and the job still goes out."""
    serial_printer.answer_status = False
    driver = PrinterDriver("bar", SerialTransport("bar", serial_printer.device), status_timeout=0.2)
    assert await driver.status() == PrinterState.UNKNOWN
    outcome = await driver.print(b"\x1b@silent\n")
    assert (outcome.confirmed, outcome.state) == (False, PrinterState.UNKNOWN)
    await serial_printer.stop()  # a job on a silent line ends when the line does
    assert serial_printer.printed == [b"\x1b@silent\n"]


def test_missing_device_is_unreachable(tmp_path: Path) -> None:
    """A serial device that is not there (adapter unplugged) is "unreachable", naming the device."""
    transport = SerialTransport("bar", str(tmp_path / "ttyUSB9"))
    with pytest.raises(DeviceUnreachableError, match="ttyUSB9"):
        transport.open()


@pytest.fixture
def serial_agent(
    make_agent: Callable[..., Awaitable[Agent]],
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    serial_printer: SimSerialPrinter,
) -> Callable[..., Awaitable[Agent]]:
    """Starts an agent whose kitchen and bar stations print on ``serial_printer``, as printer 'bar'."""

    async def start(*, status_timeout: float = 0.5) -> Agent:
        raw = config_dict(tmp_path / "data", printers)
        raw["printers"]["bar"] = {
            "type": "serial",
            "device": serial_printer.device,
            "baudrate": 19200,
            "flow_control": "none",
            "status_timeout": status_timeout,
        }
        raw["stations"] = {"kitchen": "bar", "bar": "bar"}
        return await make_agent(parse_settings(raw, source="test"))

    return start


async def test_a_serial_printer_that_never_answers_is_shown_with_the_line_settings_to_check(
    serial_agent: Callable[..., Awaitable[Agent]], serial_printer: SimSerialPrinter, example_order: dict
) -> None:
    """A serial printer with the `default` profile that never answers status queries is learnt as one without status
    (the rule for answers_status = "auto") and its tickets go out unconfirmed. On a serial line the same silence is
    what line settings that differ from the printer's look like, and its tickets then print as unreadable characters:
    the printer's state detail (GET /api/v1/printers, edge status, the status page) says so, naming the baud rate to
    check. Before (print probe round 3, s06: 9600 configured, 19200 on the printer): the detail was empty, one log
    line said it never answers, and every ticket came out as junk, marked printed."""
    serial_printer.answer_status = False
    agent = await serial_agent(status_timeout=0.2)
    async with api_client(agent) as api:
        for n in range(2):
            order = example_order | {"id": f"ord_{n}", "number": f"N-{n}", "print_receipt": False}
            assert (await post(api, order))[0] == 201
        # Recorded out, not counted at the simulator: it ends a job at the next status query, which a printer learnt
        # silent is no longer sent after its last job (the second ended only at the next poll, 10 s on, in a CI run).
        jobs = "SELECT state FROM print_jobs ORDER BY id"
        await eventually(lambda: db_rows(agent, jobs), lambda rows: rows == [("printed",), ("printed",)], timeout=10)
        await serial_printer.wait_for_printed(1)

        async def detail() -> str:
            listed = (await (await api.get("/api/v1/printers")).json())["printers"]
            return str(next(p["detail"] for p in listed if p["name"] == "bar"))

        await eventually(detail, lambda d: "printers.bar.baudrate (19200)" in d, timeout=5, what="the hint")


@pytest.mark.parametrize("mid_ticket", [False, True])
async def test_agent_pauses_on_paper_out_and_resumes_over_serial(
    serial_agent: Callable[..., Awaitable[Agent]],
    serial_printer: SimSerialPrinter,
    example_order: dict,
    mid_ticket: bool,
) -> None:
    """The whole agent with its kitchen printer on serial: paper out holds the job (no attempt spent), paper back prints
    it; paper running out in the middle of the ticket prints the whole ticket again as COPY."""
    agent = await serial_agent()
    if mid_ticket:
        serial_printer.paper_out_after = 200
    else:
        serial_printer.paper_out = True
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["bar"].state == PrinterState.PAPER_OUT)
    await status_reads(serial_printer, 2)  # probed while paused
    assert await db_rows(agent, "SELECT state, attempts, copy FROM print_jobs") == [("queued", 0, int(mid_ticket))]
    serial_printer.paper_out = False
    printed = await serial_printer.wait_for_printed(1 + mid_ticket, timeout=5)
    assert decode(printed[-1]).qr_codes == ["edge:v1:ord_7f3a9c21:kitchen"]
    assert ("KOPIE / COPY" in decode(printed[-1]).text) == mid_ticket
    if mid_ticket:
        assert len(printed[0]) == 200


async def test_a_serial_printer_switched_off_gets_its_ticket_when_it_is_back_on(
    serial_agent: Callable[..., Awaitable[Agent]],
    serial_printer: SimSerialPrinter,
    example_order: dict,
) -> None:
    """A USB-serial adapter takes bytes whether or not the printer behind it is on. A printer that has answered and
    then falls silent is switched off (or its cable pulled): its next ticket waits, the spool offline, and prints once
    it answers again. Before, the silent printer was "unknown" and printing went on: the ticket went into the void
    and was marked printed."""
    agent = await serial_agent(status_timeout=0.3)
    first, second = (dict(example_order, id=f"ord_{n}", number=f"A-{n}", print_receipt=False) for n in (1, 2))
    async with api_client(agent) as api:
        assert (await post(api, first))[0] == 201
        await serial_printer.wait_for_printed(1, timeout=10)
        serial_printer.set_offline(True)
        assert (await post(api, second))[0] == 201
        await wait_until(lambda: agent.spoolers["bar"].state == PrinterState.OFFLINE, what="the spool offline")
        rows = await db_rows(agent, "SELECT order_id, state, copy FROM print_jobs ORDER BY id")
        assert rows == [("ord_1", "printed", 0), ("ord_2", "queued", 0)]
        assert len(serial_printer.printed) == 1
        serial_printer.set_offline(False)
        printed = await serial_printer.wait_for_printed(2, timeout=10)
    assert decode(printed[-1]).qr_codes == ["edge:v1:ord_2:kitchen"]
    assert "KOPIE / COPY" not in decode(printed[-1]).text
    await wait_until(lambda: agent.spoolers["bar"].state == PrinterState.ONLINE, what="the spool online")


async def test_a_serial_printer_switched_off_in_the_middle_of_a_ticket_prints_it_again_as_copy(
    serial_agent: Callable[..., Awaitable[Agent]],
    serial_printer: SimSerialPrinter,
    example_order: dict,
) -> None:
    """Switched off half way through a ticket, behind a USB-serial adapter that takes the rest all the same: the
    printer that answered before the ticket is silent after it. The ticket may be only partly out: it waits, the spool
    offline, and prints again as COPY once the printer answers. Before, it was marked printed, half of it on paper."""
    agent = await serial_agent(status_timeout=0.3)
    serial_printer.off_after = 200
    async with api_client(agent) as api:
        assert (await post(api, dict(example_order, print_receipt=False)))[0] == 201
        await wait_until(lambda: agent.spoolers["bar"].state == PrinterState.OFFLINE, what="the spool offline")
        assert await db_rows(agent, "SELECT state, copy FROM print_jobs") == [("queued", 1)]
        assert [len(p) for p in serial_printer.printed] == [200]
        serial_printer.set_offline(False)
        printed = await serial_printer.wait_for_printed(2, timeout=10)
    assert "KOPIE / COPY" in decode(printed[-1]).text
    await eventually(
        lambda: db_rows(agent, "SELECT state, copy FROM print_jobs"), lambda rows: rows == [("printed", 1)]
    )


async def test_a_serial_printer_renamed_and_set_to_another_speed_after_a_crash_mid_ticket_is_cleared(
    tmp_path: Path, printers: dict[str, SimPrinter], serial_printer: SimSerialPrinter
) -> None:
    """The agent is killed while a ticket goes out on a serial printer; before the next start the technician renames
    the printer and sets its line to another speed (same port, same printer). The restarted agent clears the printer's
    buffers at first contact (the rest of the cut-short ticket may wait in them) and prints the ticket again as COPY.
    Before, the record of what to clear named the printer and its device with the line's speed ("serial /dev/pts/3
    9600 baud"): renamed and at another speed it matched neither, and nothing was cleared."""
    port = free_port()

    def configure(name: str, baudrate: int) -> Path:
        serial = (
            f'\n[printers.{name}]\ntype = "serial"\ndevice = "{serial_printer.device}"\nbaudrate = {baudrate}\n'
            'flow_control = "none"\nstatus_timeout = 0.5\n'
        )
        return write_config(
            tmp_path / "edge.toml",
            data_dir=tmp_path / "data",
            api_port=port,
            token=TOKEN,
            printers={"front": printers["front"].port},
            kitchen=name,
            extra=serial,
        )

    agent = AgentProcess(configure("kitchen", 9600), port, tmp_path / "agent.log")
    order = make_order(1, prefix="line", print_receipt=False)
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, order))[0] == 201
        # Paced like the slowest printer on a line without flow control: the ticket takes seconds to go out.
        await wait_until(lambda: serial_printer.job_bytes_in > 0, 10, "the ticket going out")
        await agent.kill()
        assert serial_printer.cleared == 0
        configure("pass", 19200)
        await agent.start()
        await wait_until(lambda: serial_printer.cleared == 1, 10, "the buffers cleared")
        await eventually(
            lambda: db_rows(tmp_path / "data" / "edge.db", "SELECT printer, state, copy FROM print_jobs"),
            lambda rows: rows == [("pass", "printed", 1)],
            what="the ticket printed again, as COPY, on the renamed printer",
        )
        assert "KOPIE / COPY" in decode(serial_printer.printed[-1]).text
    finally:
        await agent.close()


async def test_line_gone_mid_session_is_a_write_error(serial_printer: SimSerialPrinter) -> None:
    """The far end vanishes (USB-serial adapter pulled) while the port is open: reads and writes raise DeviceWriteError,
    never a bare termios error the spool would not understand."""
    transport = SerialTransport("bar", serial_printer.device)
    transport.open()
    try:
        await serial_printer.stop()
        with pytest.raises(DeviceWriteError):
            transport.read(1, 0.3)
        with pytest.raises(DeviceWriteError):
            transport.write(b"\x1b@" * 2000)
    finally:
        transport.close()


async def test_sim_serial_printer_from_the_command(tmp_path: Path) -> None:
    """`edge sim printer --serial` logs the pseudo-terminal to configure as `device`; a job sent there lands in
    --out."""
    with capture_logs() as logs:
        task = asyncio.create_task(serve("bar", 0, tmp_path, serial=True))
        await wait_until(lambda: any(e["event"] == "sim_printer_listening" for e in logs), 5, "listening")
        device = next(e["device"] for e in logs if e["event"] == "sim_printer_listening")
        outcome = await PrinterDriver("bar", SerialTransport("bar", device), status_timeout=0.5).print(b"\x1b@hello\n")
        assert outcome.confirmed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (tmp_path / "bar-0001.bin").read_bytes() == b"\x1b@hello\n"
