"""Raw bytes down the real serial scanner path (a pseudo-terminal): noise never changes an order or stops the reader."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.app import Agent
from edge.sim.orders import make_order
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, db_rows


def noise(rng: random.Random) -> list[bytes]:
    """Chunks a broken or confused scanner might send: random bytes, bare terminators, overlong lines, near-miss
    codes."""
    chunks = []
    for _ in range(300):
        kind = rng.randrange(6)
        if kind == 0:
            chunks.append(rng.randbytes(rng.randrange(1, 200)))
        elif kind == 1:
            chunks.append(rng.choice([b"\r", b"\n", b"\r\n", b"\n\r", b"\x00", b"\x1b", b"\x03"]) * rng.randrange(1, 5))
        elif kind == 2:
            chunks.append(b"A" * rng.randrange(200, 5000))
        elif kind == 3:
            chunks.append(b"edge:v1:" + rng.randbytes(rng.randrange(0, 30)) + b"\r")
        elif kind == 4:
            chunks.append("Größe €".encode()[: rng.randrange(1, 10)] + b"\n")
        else:
            chunks.append(rng.randbytes(rng.randrange(1, 50)).replace(b"\r", b"") + b"\r\n")
    return chunks


async def test_random_bytes_on_the_serial_scanner_change_nothing(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path
) -> None:
    """About 150 KB of noise: the scanner stays connected, no order changes state, and the next real scan still
    works."""
    sim = SimScanner(tmp_path / "tty-kitchen")
    sim.plug()
    seen = Seen()
    agent = await make_agent(
        scanners={"kitchen": {"port": str(sim.path), "station": "kitchen", "reconnect_max_s": 0.3}}, listen=seen
    )
    try:
        await seen.connected("kitchen")
        assert agent.deps is not None
        order = make_order(1, prefix="noise", print_receipt=False)
        await agent.deps.intake.accept(order)
        for chunk in noise(random.Random(7)):
            # In a thread: a full pty blocks the write until the agent's reader, on this loop, drains it.
            await asyncio.to_thread(sim.send, chunk)
        sim.send(b"\r\n")  # end whatever half line the noise left
        sim.scan(f"edge:v1:{order['id']}:kitchen")
        await seen.until(lambda: any(s.order_id == order["id"] for s in seen.scans), "the real scan after the noise")
        noise_outcomes = {s.outcome for s in seen.scans if s.order_id != order["id"]}
        assert noise_outcomes <= {"unknown"}
        real = [s.outcome for s in seen.scans if s.order_id == order["id"]]
        assert real == ["order_ready"]  # a one-station order: its one ticket makes it ready
        assert seen.connections("kitchen") == [True]  # never dropped by the noise
        assert agent.scanners["kitchen"].rejected > 0
        assert await db_rows(
            agent, "SELECT event FROM outbox WHERE event NOT IN ('received', 'printed') ORDER BY id"
        ) == [("ready",)]
    finally:
        sim.unplug()
