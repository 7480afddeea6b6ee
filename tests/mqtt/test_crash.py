"""The agent as a real process, SIGKILLed between commit and PUBACK, again and again: every order printed once."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from email.message import EmailMessage
from pathlib import Path

import pytest

from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import (
    agent_process,
    api_client,
    db_execute,
    db_rows,
    eventually,
    originals_on_paper,
    post,
    samples,
    toml,
)
from tests.mqtt.conftest import ORDERS, HoldingProxy, mqtt_section, needs_mosquitto

ROUNDS = 3
PER_ROUND = 10
# Refuses the alert rules' new group rows: an occurrence stays in memory, as in the moment before its fold.
_HELD = "SELECT RAISE(ABORT, 'held by the test')"

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


def _refused(order: dict, refused: str) -> dict:
    """Revision 2 of ``order`` (its change stored) sent again as what the agent refuses: a cancel at the stored
    revision, the same revision with another note, a revision without items (invalid), or one over api.max_body_bytes
    (too_large: answered from its kept part by another path than the others)."""
    again = copy.deepcopy(order)
    if refused == "cancel":
        again.update(status="cancelled", cancel_reason="Gast weg")
    elif refused == "invalid":
        again.update(revision=3, items=[])
    elif refused == "too_large":
        again["revision"] = 3
        again["items"][0]["note"] = "x" * 300 * 1024
    else:
        again["items"][0]["note"] = "mit Zwiebeln"
    return again


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Redelivered:
    """What the restarted agent did with the refused message the broker sent again."""

    mails: list[EmailMessage]
    metrics: dict
    log: str
    fires: list[tuple]  # fires_total of the alarm groups
    kept: list[tuple]  # the kept reject's error
    outcomes: dict[str, int]  # the link's count of what became of each message it took, in this run (the status API)


async def _refuse_kill_redeliver(
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    broker: Broker,
    backend: Backend,
    sink: SmtpSink,
    refused: str,
    *,
    alarm_stored: bool,
) -> _Redelivered:
    """Revision 2 of an order stored, then ``_refused(…, refused)`` sent once over MQTT with its PUBACK held: refused
    and kept, the agent is SIGKILLed once its alarm is stored (``alarm_stored``), or before (a trigger refuses the
    alarm's row meanwhile: the alert rules fold an occurrence milliseconds after the reject's commit, too short a
    window to hit from outside), and started again; the broker sends the message again."""
    proxy = HoldingProxy(broker.port)
    await proxy.start()
    link = mqtt_section(broker, url=f"mqtt://127.0.0.1:{proxy.port}", reconnect_max_s=0.5)
    mail = {
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        "alerts": {"to": ["chef@store.test"], "group_wait_s": 6},
    }
    agent = agent_process(
        tmp_path, printers, store_id="test-store", extra=f"\n{toml({'mqtt': link, **mail})}", log_level="info"
    )
    db = tmp_path / "data" / "edge.db"
    first = make_order(1, prefix="refused", print_receipt=False)
    change = copy.deepcopy(first) | {"revision": 2}
    change["items"][0]["note"] = "ohne Zwiebeln"
    try:
        await agent.start()
        # Sent until it arrives: an order published before the agent's first SUBSCRIBE lands is not queued for it.
        for _ in range(40):
            await backend.publish(ORDERS, first)
            await asyncio.sleep(0.25)
            if await db_rows(db, "SELECT COUNT(*) FROM orders") == [(1,)]:
                break
        async with api_client(agent.port) as api:
            assert (await post(api, change))[0] == 200
        proxy.hold = True
        if not alarm_stored:
            await db_execute(db, f"CREATE TRIGGER held BEFORE INSERT ON alert_groups BEGIN {_HELD}; END")
        await backend.publish(ORDERS, _refused(change, refused))
        await eventually(
            lambda: db_rows(db, "SELECT COUNT(*) FROM mqtt_rejects"), lambda rows: rows == [(1,)], what="kept refused"
        )
        alarms = "SELECT COUNT(*) FROM alert_groups WHERE state = 'firing'"
        if alarm_stored:
            await eventually(lambda: db_rows(db, alarms), lambda rows: rows[0][0] >= 1, what="its alarm stored")
        else:
            await eventually(lambda: _count(agent.log, "alerts_failed"), bool, what="its alarm's row refused")
        await agent.kill()  # refused and kept, its PUBACK held: the broker never heard it
        if not alarm_stored:
            assert await db_rows(db, alarms) == [(0,)]  # the alarm was in memory only
            await db_execute(db, "DROP TRIGGER held")
        proxy.hold = False
        agent.log.write_text("")  # what the next start logs, only
        await agent.start()
        await eventually(lambda: _count(agent.log, "mqtt_order_rejected_again"), bool, what="the message redelivered")
        mails = await sink.wait_for(1, timeout=30)
        async with api_client(agent.port, token=None) as plain, plain.get("/metrics") as response:
            metrics = samples(await response.text())
        async with api_client(agent.port) as api, api.get("/api/v1/status") as response:
            outcomes = (await response.json())["mqtt"]["counts"]
        log = await asyncio.to_thread(agent.log.read_text)
        fires = await db_rows(db, "SELECT fires_total FROM alert_groups WHERE key LIKE '%:orders' OR key LIKE '%:mqtt'")
        kept = await db_rows(db, "SELECT json_extract(error, '$.error') FROM mqtt_rejects")
    finally:
        await agent.close()
        await proxy.stop()
    return _Redelivered(mails=mails, metrics=metrics, log=log, fires=fires, kept=kept, outcomes=outcomes)


@pytest.mark.slow(seconds=8)
@pytest.mark.crash
@pytest.mark.parametrize("refused", ["cancel", "conflict"])
async def test_a_refused_message_the_broker_redelivers_after_a_crash_is_alerted_and_counted_once(
    tmp_path: Path, printers: dict[str, SimPrinter], broker: Broker, backend: Backend, sink: SmtpSink, refused: str
) -> None:
    """Central sends, once over MQTT, a cancel at the stored revision (or that revision with other content): refused
    (409) and kept. The agent is SIGKILLed once its alarm is stored, before its PUBACK reached the broker, which sends
    the message again at the next start. The manager's one mail names the order and no further occurrence, the alarm
    fired once, and the restarted agent neither warns nor counts it again. Before stop 82 the intake alerted and
    counted the redelivery as a second refusal: "Seit der letzten Mail ein weiteres Mal", fires_total 2,
    edge_order_conflicts_total{source="mqtt"} up again (the dual82 probe, F1)."""
    got = await _refuse_kill_redeliver(tmp_path, printers, broker, backend, sink, refused, alarm_stored=True)
    [alert] = got.mails
    body = alert.get_body(("plain",)).get_content()
    assert "A-1001" in str(alert["Subject"]) and "weitere" not in body, body
    assert got.fires == [(1,)]
    assert got.metrics[("edge_order_conflicts_total", (("source", "mqtt"),))] == 0
    assert '"cancel_not_applied"' not in got.log and '"order_conflict"' not in got.log


@pytest.mark.slow(seconds=8)
@pytest.mark.crash
@pytest.mark.parametrize("refused", ["cancel", "conflict", "invalid", "too_large"])
async def test_a_refused_message_whose_alarm_a_crash_lost_is_alerted_once_when_the_broker_redelivers_it(
    tmp_path: Path, printers: dict[str, SimPrinter], broker: Broker, backend: Backend, sink: SmtpSink, refused: str
) -> None:
    """As above, but the agent is SIGKILLed after the refusal is kept and before the alert rules stored its alarm
    (in its group wait): the redelivery raises that alarm again, as the same occurrence. The manager's one mail names
    the order and no further occurrence, the alarm fired once, and the repeat counts nothing but the link's one
    message taken as rejected. Before stop 83 the redelivery was answered from the kept reject alone: no alarm, no
    mail to the manager (and, mut83: its outcome `"rejected"` → None survived; counted under no key, it failed the
    message's handling after the answer, so it was never acknowledged and the broker held it in flight)."""
    got = await _refuse_kill_redeliver(tmp_path, printers, broker, backend, sink, refused, alarm_stored=False)
    [alert] = got.mails
    body = alert.get_body(("plain",)).get_content()
    mqtt = refused in ("invalid", "too_large")  # mqtt_invalid's alarm, not the intake's
    named = "refused_000001" if mqtt else "A-1001"
    assert named in str(alert["Subject"]) + body and "weitere" not in body, body
    assert got.fires == [(1,)]
    assert got.metrics[("edge_order_conflicts_total", (("source", "mqtt"),))] == 0
    error = {"invalid": "invalid_order", "too_large": "request_entity_too_large"}.get(refused, "conflict")
    assert got.kept == [(error,)]
    assert got.metrics[("edge_mqtt_rejected_total", (("error", error),))] == 0
    assert got.outcomes["rejected"] == 1, got.outcomes
