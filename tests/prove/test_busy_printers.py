"""Many printers busy at once: neither order intake nor a printer that is free waits for them."""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, config_dict, post

# asyncio's shared thread pool on this machine (min(32, cores + 4) threads), and more printers than that.
POOL = min(32, (os.cpu_count() or 1) + 4)
BUSY = POOL + 2


@pytest.fixture
async def many_printers() -> AsyncIterator[dict[str, SimPrinter]]:
    """BUSY slow printers (2,100 bytes/s, about what a serial printer at 19,200 baud takes: a long ticket takes
    seconds) and one quick one."""
    sims = {f"p{n}": SimPrinter(f"p{n}") for n in range(BUSY)} | {"free": SimPrinter("free")}
    for name, sim in sims.items():
        if name != "free":
            sim.bytes_per_s = 2100
        await sim.start()
    yield sims
    for sim in sims.values():
        await sim.stop()


def order_for(seq: int, stations: list[str], *, items: int = 1) -> dict[str, Any]:
    """``items`` lines for each of ``stations``."""
    order = make_order(seq, prefix="busy", print_receipt=False)
    item = order["items"][0]
    order["items"] = [
        copy.deepcopy(item) | {"station": station, "sku": f"SKU{n}"} for station in stations for n in range(items)
    ]
    return order


async def test_a_free_printer_and_intake_do_not_wait_while_many_printers_are_busy(
    tmp_path: Path, many_printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """Every slow printer is busy with a ticket of several seconds; then orders for the quick printer come, two at a
    time: each is answered at once and its ticket printed at once. A printer's job holds a thread for as long as the
    printer takes; if printers shared one pool of threads with the rest of the agent, the quick printer's ticket (its
    rendering) and the commits behind an answer would wait for a slow printer to finish."""
    raw = config_dict(tmp_path / "data", many_printers)
    raw["stations"] = {name: name for name in many_printers}
    raw["receipts"] = {}
    agent = await make_agent(parse_settings(raw, source="test"))
    free = many_printers["free"]
    acks: list[float] = []
    async with api_client(agent) as api:

        async def send(order: dict[str, Any]) -> None:
            started = time.monotonic()
            status, body = await post(api, order)
            assert status == 201, body
            acks.append(time.monotonic() - started)

        await asyncio.gather(*(send(order_for(100 + n, [f"p{n}"], items=60)) for n in range(BUSY)))
        deadline = time.monotonic() + 10
        while sum(1 for sim in many_printers.values() if sim.job_bytes_in) < POOL:
            assert time.monotonic() < deadline, "the slow printers did not get their tickets"
            await asyncio.sleep(0.05)
        acks.clear()
        for n in range(1, 4):  # while the slow printers' tickets still go out
            started = time.monotonic()
            await asyncio.gather(send(order_for(2 * n, ["free"])), send(order_for(2 * n + 1, ["free"])))
            await free.wait_for_printed(2 * n, timeout=10)
            printed = time.monotonic() - started
            answered = [round(a, 2) for a in acks[-2:]]
            assert max(answered) < 0.5 and printed < 1.0, (
                f"round {n}: answered in {answered} s, printed in {printed:.2f} s"
            )
