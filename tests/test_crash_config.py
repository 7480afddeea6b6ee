"""A crash with tickets marked printed in the buffer of a printer that cannot say a ticket is out, then a restart with
the config changed: no clear may wipe them (the rename75 probe). Its own module: its runs wait for paper in real time,
and the suite's workers take a module each."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from edge.sim.orders import make_order
from edge.sim.printer import PaperSpeed, SimPrinter
from edge.sim.process import write_config
from tests.helpers import TOKEN, agent_process, api_client, db_rows, eventually, post, wait_until


@pytest.mark.crash
@pytest.mark.slow(seconds=20)
@pytest.mark.parametrize("change", ["renamed", "renamed-and-moved", "replaced"])
async def test_tickets_marked_printed_in_a_printer_without_status_survive_a_crash_and_a_config_change(
    tmp_path: Path, change: str
) -> None:
    """A slow printer that answers no status (``answers_status = "no"``: a one-way print server) gets its tickets
    without asking, each marked printed once sent; its interface ends each connection once the ticket is in its buffer
    (closes_when_taken), so it holds the next ones while it prints one. The agent is killed with a fourth claimed, and
    restarts with the config changed: the printer ``renamed`` (same address), ``renamed-and-moved`` (a new address too),
    or ``replaced``: it is on an address where a printer answering status was on an earlier day. Before (the rename75
    probe, F1, F2, F4: 3 of 3 runs each), the restart found no sign of such a printer under its new name, address or
    history and cleared its buffers, wiping tickets marked printed: an order taken, marked printed, never on paper.
    Now a run records the device it marked such tickets on, and no printer that may be that one is cleared."""
    kitchen = SimPrinter("kitchen", speed=PaperSpeed(mm_per_s=20.0))  # some 4 s a ticket
    kitchen.answer_status, kitchen.closes_when_taken = False, True
    front = SimPrinter("front")
    await kitchen.start()
    await front.start()
    name = "kitchen" if change == "replaced" else "pass"
    blind = {f"EDGE_PRINTERS_{n.upper()}_ANSWERS_STATUS": "no" for n in ("kitchen", name)}
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, env=blind)
    db = tmp_path / "data" / "edge.db"

    async def states() -> list[str]:
        return [state for (state,) in await db_rows(db, "SELECT state FROM print_jobs ORDER BY id")]

    def not_whole() -> list[str]:
        ids = [f"lost_{n:06d}" for n in range(4)]
        return [i for i in ids if not any(i.encode() in piece and b"\x1dV" in piece for piece in kitchen.printed)]

    try:
        if change == "replaced":
            await agent.start()
            await agent.close()
            await asyncio.to_thread(_answered_before, db, "kitchen")
        await agent.start()
        async with api_client(agent.port) as api:
            for n in range(3):
                assert (await post(api, make_order(n, prefix="lost", print_receipt=False)))[0] == 201
            await eventually(states, lambda now: now == ["printed"] * 3, 20, "the first three marked printed")
            assert kitchen.printed == [], "the first ticket out already: the paper is too fast for the test"
            # The fourth is claimed: the printer's buffer is full, its bytes wait.
            assert (await post(api, make_order(3, prefix="lost", print_receipt=False)))[0] == 201
        await eventually(states, lambda now: now == ["printed"] * 3 + ["printing"], 5, "the fourth claimed")
        await agent.kill()
        if change == "renamed-and-moved":
            kitchen.move()
        write_config(
            agent.config,
            data_dir=tmp_path / "data",
            api_port=agent.port,
            token=TOKEN,
            printers={name: kitchen.port, "front": front.port},
            kitchen=name,
        )
        await agent.start()
        await eventually(states, lambda now: now == ["printed"] * 4, 40, "every job printed")
        with contextlib.suppress(AssertionError):  # at paper speed: some 25 s for what the printer still holds
            await wait_until(lambda: not not_whole(), 40, "every order whole on paper")
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
    assert not not_whole(), f"marked printed, never whole on paper: {not_whole()} (cleared {kitchen.cleared}x)"


def _answered_before(db: Path, printer: str) -> None:
    """What a run records of a printer that answered status on the device ``printer`` is on, as an earlier day's."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        (device,) = conn.execute("SELECT value FROM meta WHERE key = ?", (f"printer_device:{printer}",)).fetchone()
        conn.execute("INSERT INTO meta(key, value) VALUES (?, '')", (f"answered_status:{device}",))
