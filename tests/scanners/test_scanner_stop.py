"""A stop (systemd stop, an upgrade, a restart) and the scans of its last moments: the scanner beeped for them, so
each is recorded, or named in a log line to be scanned again; never lost without a word."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.scanners import Scanner
from edge.scanners.ports import SerialPort
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.scanner import SimScanner
from edge.sim.smtp import SmtpSink
from tests.helpers import (
    WAIT_S,
    Seen,
    agent_process,
    api_client,
    db_rows,
    eventually,
    log_events,
    post,
    push_order,
    scanner_config,
    wait_until,
)


async def test_a_ticket_scanned_while_the_agent_stops_for_a_ticket_in_flight_is_recorded(
    tmp_path: Path, printers: dict[str, SimPrinter], sims: dict[str, SimScanner]
) -> None:
    """SIGTERM while the kitchen printer still takes a slow ticket: the agent waits for it (the grace period). A cook
    scans the ticket of an order made before, a second into that wait; the order is ready once the agent is down."""
    kitchen = printers["kitchen"]
    scanner = f'\n[scanners.kitchen]\nport = "{sims["kitchen"].path}"\nstation = "kitchen"\n'
    agent = agent_process(tmp_path, printers, extra=scanner, log_level="info")
    db = tmp_path / "data" / "edge.db"
    try:
        await agent.start()
        await wait_until(
            lambda: any(e["event"] == "scanner_connected" for e in log_events(agent.log)), what="the scanner connected"
        )
        made = make_order(1, print_receipt=False)
        async with api_client(agent.port) as api:
            assert (await post(api, made))[0] == 201
            await kitchen.wait_for_printed(1)
            kitchen.bytes_per_s = 160  # the next ticket (about 530 bytes) takes seconds
            assert (await post(api, make_order(2, print_receipt=False)))[0] == 201
        taken = kitchen.job_bytes_in
        await wait_until(lambda: kitchen.job_bytes_in > taken, what="the second ticket going out")
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: any(e["event"] == "agent_stopping" for e in log_events(agent.log)), what="the agent stopping"
        )
        stopping = kitchen.job_bytes_in
        # A second of the printer's progress: the agent is still waiting for the ticket (its API closed), and before
        # this was fixed the scanner's port had long been closed.
        await wait_until(lambda: kitchen.job_bytes_in >= stopping + 160, what="a second more of the slow ticket")
        assert agent.proc.returncode is None
        sims["kitchen"].scan(f"edge:v1:{made['id']}:kitchen", "\r")
        assert await asyncio.wait_for(agent.proc.wait(), timeout=30) == 0  # once the ticket is out
    finally:
        await agent.close()
    assert await db_rows(db, "SELECT scanner, order_id, outcome FROM scans") == [("kitchen", made["id"], "order_ready")]


def _scan_as_the_last_read_returns(monkeypatch: pytest.MonkeyPatch, sim: SimScanner, data: bytes) -> threading.Event:
    """The scanner sends ``data`` just after the port's last read before the stop returned (empty, or with what came
    in its time): bytes that reach the box while the reader is closing the port. Returns the event set once sent."""
    stopping, sent = threading.Event(), threading.Event()
    stop, read = Scanner.stop, SerialPort.read

    async def stop_noted(self: Scanner) -> None:
        stopping.set()
        await stop(self)

    def read_then_scan(self: SerialPort) -> bytes:
        got = read(self)
        if stopping.is_set() and self.label == f"serial {sim.path}" and not sent.is_set():
            sim.send(data)
            # A pty hands written bytes to the other side's buffer later, on a kernel worker: wait until they are
            # in the box's buffer (what the test is about), or a loaded machine closed the port before they were.
            deadline = time.monotonic() + 2.0
            while self._serial.in_waiting < len(data) and time.monotonic() < deadline:
                time.sleep(0.001)
            sent.set()
        return got

    monkeypatch.setattr(Scanner, "stop", stop_noted)
    monkeypatch.setattr(SerialPort, "read", read_then_scan)
    return sent


async def _scanning_agent(make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]) -> Agent:
    """The agent reading the three simulated scanners (started after the test's patches: the reads use them)."""
    seen = Seen()
    agent = await make_agent(scanners=scanner_config(sims), listen=seen)
    for name in sims:
        await seen.connected(name)
    return agent


async def test_a_code_that_comes_as_the_reader_closes_the_port_is_recorded(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code's bytes reach the box after the last read returned and before the port is closed: they are read as
    the port closes and recorded before the store closes. Before, they were left in the tty's buffer and dropped."""
    code = f"edge:v1:{make_order(1)['id']}:kitchen"
    sent = _scan_as_the_last_read_returns(monkeypatch, sims["kitchen"], f"{code}\r".encode())
    agent = await _scanning_agent(make_agent, sims)
    order = await push_order(agent, 1)
    await agent.stop()
    assert sent.is_set()
    rows = await db_rows(agent.settings.agent.db_path, "SELECT scanner, order_id, outcome FROM scans")
    assert rows == [("kitchen", order["id"], "order_ready")]


async def test_a_code_the_stop_cuts_off_is_named_in_one_line_to_scan_again(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the head of a code has come when the port closes (its end never does): it is not guessed at (the head of
    A-1011 is A-101, another order), and one log line names it, not recorded, to be scanned again."""
    head = f"edge:v1:{make_order(1)['id']}:kit"
    sent = _scan_as_the_last_read_returns(monkeypatch, sims["kitchen"], head.encode())
    agent = await _scanning_agent(make_agent, sims)
    await push_order(agent, 1)
    with capture_logs() as logs:
        await agent.stop()
    assert sent.is_set()
    lost = [e for e in logs if e["event"] == "scan_not_recorded"]
    assert [(e["scanner"], e["bytes"]) for e in lost] == [("kitchen", head)], logs
    assert "scan it again" in lost[0]["reason"]
    assert await db_rows(agent.settings.agent.db_path, "SELECT code FROM scans") == []


async def test_tickets_scanned_while_the_alerter_stops_are_recorded(
    tmp_path: Path, printers: dict[str, SimPrinter], sims: dict[str, SimScanner], sink: SmtpSink
) -> None:
    """SIGTERM while the relay still takes an alert mail: the alerter waits for it, and the scanners read on until
    it has stopped, just before the store closes. Two tickets scanned one after the other once the stop has written
    its stop mark (the API, the spools and sync are down by then) are both recorded. Before, the scanners stopped
    ahead of the stop mark and the alerter, a quarter of a second into an idle box's stop, and tickets scanned after
    were lost without a log line (the scan80 probe, F1)."""
    taking, release = asyncio.Event(), asyncio.Event()

    async def held(_: EmailMessage) -> None:  # the relay takes the mail's body and answers once the test says so
        taking.set()
        await release.wait()

    sink.data_reply = held
    gone = tmp_path / "tty-gone"  # the bar scanner unplugged: its alert is the mail the relay holds
    extra = (
        f'\n[scanners.kitchen]\nport = "{sims["kitchen"].path}"\nstation = "kitchen"\n'
        f'\n[scanners.bar]\nport = "{gone}"\nstation = "bar"\n'
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\ngroup_wait_s = 0\ncritical_group_wait_s = 0\nscanner_down_min = 0\n'
        "disk_free_min_mb = 0\ncheck_interval_s = 0.2\n"
    )
    agent = agent_process(tmp_path, printers, extra=extra, log_level="info")
    db = tmp_path / "data" / "edge.db"
    try:
        await agent.start()
        await wait_until(
            lambda: any(e["event"] == "scanner_connected" for e in log_events(agent.log)), what="the scanner connected"
        )
        first, second = make_order(1, print_receipt=False), make_order(2, print_receipt=False)
        async with api_client(agent.port) as api:
            for order in (first, second):
                assert (await post(api, order))[0] == 201
        await printers["kitchen"].wait_for_printed(2)
        await asyncio.wait_for(taking.wait(), timeout=WAIT_S)
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        await eventually(
            lambda: db_rows(db, "SELECT count(*) FROM meta WHERE key = 'stopped_at'"),
            lambda rows: rows == [(1,)],
            what="the stop's mark written (the alerter still waiting for the relay)",
        )

        def recorded(order: dict[str, object]) -> bool:
            return any(e["event"] == "scan_recorded" and e["order_id"] == order["id"] for e in log_events(agent.log))

        sims["kitchen"].scan(f"edge:v1:{first['id']}:kitchen", "\r")
        await wait_until(lambda: recorded(first), what="the first scan recorded")
        sims["kitchen"].scan(f"edge:v1:{second['id']}:kitchen", "\r")  # after the first: the reader was woken
        release.set()
        assert await asyncio.wait_for(agent.proc.wait(), timeout=30) == 0
    finally:
        release.set()
        await agent.close()
    rows = await db_rows(db, "SELECT order_id, outcome FROM scans ORDER BY id")
    assert rows == [(first["id"], "order_ready"), (second["id"], "order_ready")]
