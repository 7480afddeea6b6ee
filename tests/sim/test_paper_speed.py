"""The simulated printer's speed model: paper comes out as fast as on an 80 mm thermal printer, not at once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.sim.orders import make_order
from edge.sim.printer import PaperSpeed, SimPrinter
from tests.helpers import api_client, post


async def test_a_backlog_takes_as_long_as_its_paper(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """Three kitchen tickets at 1,000 mm/s: the second waits for the first's paper, the third for the second's, so the
    three take at least two tickets' paper time; the printer still answers its status meanwhile (never seen offline)."""
    kitchen = printers["kitchen"]
    kitchen.speed = PaperSpeed(mm_per_s=1000.0)
    agent = await make_agent()
    started = time.monotonic()
    async with api_client(agent) as api:
        for n in range(3):
            assert (await post(api, make_order(n, print_receipt=False)))[0] == 201
    printed = await kitchen.wait_for_printed(3)
    took = time.monotonic() - started
    per_ticket = kitchen.speed.seconds(printed[0])
    assert per_ticket > 0.05  # a ticket is several cm of paper
    assert took >= 2 * per_ticket * 0.95, (took, per_ticket)
    assert agent.spoolers["kitchen"].state.value == "online"


def test_paper_length_counts_lines_codes_and_the_cut() -> None:
    """Two lines, one QR code and a cut at the defaults: 2 x 4.23 + 25 + 15 mm at 250 mm/s."""
    job = b"A\nB\n" + b"\x1d(k\x03\x001Q0" + b"\x1dVA\x03"
    assert abs(PaperSpeed().seconds(job) - (2 * 25.4 / 6 + 25 + 15) / 250) < 1e-9
