"""The agent as a real process, SIGKILLed between commit and PUBACK, again and again: every order printed once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, db_rows, eventually, originals_on_paper
from tests.mqtt.conftest import HoldingProxy, needs_mosquitto

ROUNDS = 3
PER_ROUND = 10

pytestmark = needs_mosquitto


async def _count(log: Path, event: str) -> int:
    return (await asyncio.to_thread(log.read_text)).count(f'"{event}"')


@pytest.mark.slow(seconds=4)
@pytest.mark.crash
async def test_sigkill_between_commit_and_puback_redelivers_and_prints_once(tmp_path: Path) -> None:
    """Round after round, orders are stored and printed while their PUBACKs are held, then the agent is SIGKILLed: the
    broker still has them and sends them again at the next start; each is acked as a duplicate and its ticket is on
    paper exactly once without the COPY mark (a ticket cut short by the kill is reprinted marked COPY)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    broker = await asyncio.to_thread(Broker, tmp_path / "broker")
    await broker.start()
    proxy = HoldingProxy(broker.port)
    await proxy.start()
    backend = Backend(broker)
    await backend.connect()
    mqtt = (
        f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{proxy.port}"\nusername = "{AGENT_USER}"\npassword = "{AGENT_PASSWORD}"\n'
        "reconnect_max_s = 0.5\n"
    )
    agent = agent_process(
        tmp_path, {"kitchen": kitchen, "front": front}, store_id="crash-mqtt", extra=mqtt, log_level="info"
    )
    log = agent.log
    db = tmp_path / "data" / "edge.db"
    sent: list[dict] = []
    try:
        await agent.start()
        # The first connection makes the session, and an order published before its SUBSCRIBE lands is not queued for
        # it (a new box's first session: recovery's business): sent again (a duplicate is harmless) until it arrived,
        # the subscription is there for the rounds. Under a loaded full run the first round's orders were lost so.
        first = make_order(ROUNDS * PER_ROUND, prefix="kill", print_receipt=False)
        sent.append(first)
        for _ in range(40):
            await backend.publish("edge/crash-mqtt/orders", first)
            await asyncio.sleep(0.25)
            if await db_rows(db, "SELECT COUNT(*) FROM orders") == [(1,)]:
                break
        assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(1,)]
        for r in range(ROUNDS):
            await eventually(lambda: _count(log, "mqtt_connected"), bool, what="the agent connected")
            proxy.hold = True
            batch = [make_order(r * PER_ROUND + n, prefix="kill", print_receipt=False) for n in range(PER_ROUND)]
            sent += batch
            await backend.publish("edge/crash-mqtt/orders", *batch)
            want = len(sent)
            await eventually(
                lambda: db_rows(db, "SELECT COUNT(*) FROM orders"),
                lambda rows, want=want: rows == [(want,)],
                what="the round's orders committed",
            )
            await agent.kill()  # committed, PUBACKs held: the broker never heard them
            proxy.hold = False
            log.write_text("")  # what the next start logs, only
            await agent.start()
            await eventually(
                lambda: _count(log, "mqtt_order_duplicate"),
                lambda n: n >= PER_ROUND,
                what="the round's orders redelivered and acked as duplicates",
            )
        await eventually(
            lambda: db_rows(db, "SELECT state, COUNT(*) FROM print_jobs GROUP BY state"),
            lambda rows: rows == [("printed", len(sent))],
            20,
            what="every ticket printed (reprints of the ones the kill cut short included)",
        )
        assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(len(sent),)]
    finally:
        await agent.close()
        await backend.close()
        await proxy.stop()
        await broker.stop()
        await kitchen.stop()
        await front.stop()

    originals = originals_on_paper(kitchen.printed)
    assert {order_id for order_id, _ in originals} == {o["id"] for o in sent}
    assert max(originals.values()) == 1  # redelivered orders printed nothing again; an uncertain one says COPY
