"""An MQTT order is PUBACKed only once it is durable: the agent under scripts/powercut.c takes orders from a real broker
and loses power three times while they come (tests/test_power_cut.py for HTTP; the model: docs/testing.md). An
order PUBACKed and then lost by the cut would never come again: the broker forgets what was acknowledged."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker
from edge.sim.orders import make_order
from edge.sim.powercut import PowerCut
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, db_rows, eventually, originals_on_paper, wait_until
from tests.mqtt.conftest import needs_mosquitto

CUTS = 3
PER_CUT = 40
BURST = 10  # orders published at once: several arrive together and are stored together, some acked, some not yet
TOPIC = "edge/cut-mqtt/orders"

pytestmark = needs_mosquitto


async def _stored(db: Path) -> int:
    return (await db_rows(db, "SELECT COUNT(*) FROM orders"))[0][0]


@pytest.mark.slow(seconds=8)
@pytest.mark.crash
async def test_a_power_cut_loses_no_pubacked_order(tmp_path: Path, powercut_shim: Path) -> None:
    """Orders published in bursts of 10, one after another, the power cut three times while they are being stored:
    in the end every order published is stored and its ticket on paper, none unmarked twice."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    broker = await asyncio.to_thread(Broker, tmp_path / "broker")
    await broker.start()
    backend = Backend(broker)
    await backend.connect()
    mqtt = (
        f'\n[mqtt]\nurl = "{broker.url}"\nusername = "{AGENT_USER}"\npassword = "{AGENT_PASSWORD}"\n'
        "reconnect_max_s = 0.5\n"
    )
    power = PowerCut(powercut_shim, tmp_path / "data", tmp_path / "durable", sync_ms=10)  # an SD card's syncs
    agent = agent_process(
        tmp_path, {"kitchen": kitchen, "front": front}, store_id="cut-mqtt", extra=mqtt, env=power.env()
    )
    db = tmp_path / "data" / "edge.db"
    sent: list[dict] = []
    rng = random.Random(5)
    publisher: asyncio.Task[None] | None = None
    try:
        await agent.start()
        # Sent until it arrived: an order published before the first session's SUBSCRIBE lands is not queued for it
        # (see tests/mqtt/test_crash.py); after this the session is the broker's, across every cut.
        sent.append(make_order(CUTS * PER_CUT, prefix="cut", print_receipt=False))
        for _ in range(40):
            await backend.publish(TOPIC, sent[0])
            await asyncio.sleep(0.25)
            if await _stored(db) == 1:
                break
        assert await _stored(db) == 1
        # Orders keep coming while the power goes: some arrived, some being stored, some acked.
        sent += [make_order(n, prefix="cut", print_receipt=False) for n in range(CUTS * PER_CUT)]

        async def publish() -> None:
            for at in range(1, len(sent), BURST):
                await backend.publish(TOPIC, *sent[at : at + BURST])

        publisher = asyncio.create_task(publish())
        for _ in range(CUTS):
            target = await _stored(db) + rng.randint(5, PER_CUT // 2)
            # Or all published: with orders lost (acked, not durable) the count may never get there.
            await wait_until(lambda t=target, p=publisher: p.done() or _stored_at_least(db, t), 20, f"{target} stored")
            await agent.kill()
            await asyncio.to_thread(power.cut)
            await agent.start()
        await asyncio.wait_for(publisher, 20)
        await eventually(lambda: _stored(db), lambda n: n == len(sent), 20, "every order published stored")
        await eventually(
            lambda: db_rows(db, "SELECT state, COUNT(*) FROM print_jobs GROUP BY state"),
            lambda rows: rows == [("printed", len(sent))],
            20,
            "every ticket printed",
        )
    finally:
        if publisher is not None:
            publisher.cancel()
        await agent.close()
        await backend.close()
        await broker.stop()
        await kitchen.stop()
        await front.stop()

    originals = originals_on_paper(kitchen.printed)
    assert {order_id for order_id, _ in originals} == {o["id"] for o in sent}
    assert max(originals.values()) == 1


async def _stored_at_least(db: Path, n: int) -> bool:
    return await _stored(db) >= n
