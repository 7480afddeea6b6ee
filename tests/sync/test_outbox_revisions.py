"""The status outbox reports order changes and cancellations to the central simulator, once each."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import Settings
from edge.events import JobPrinted, OrderEventsRefused, RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.smtp import SmtpSink
from edge.store.outbox import REJECTED_KEY
from tests.helpers import Recorder, api_client, db_rows, eventually, key_mark, mail_to, post, wait_until
from tests.sync.conftest import Agents


async def test_updated_and_cancelled_are_reported_with_idempotency_keys(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A pushed change and a cancellation reach central as `updated` and `cancelled` events, keyed by order and
    revision (`<id>:updated:2`), with the revision and the reason; a repeated cancel sends nothing more."""
    order = make_order(1, prefix="o")
    central.add_orders([order])
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    changed = json.loads(json.dumps(order)) | {"revision": 2}
    changed["items"][0]["qty"] += 1
    async with api_client(agent) as api:
        assert (await post(api, changed))[0] == 200
        for _ in range(2):
            async with api.post("/api/v1/orders/o_000001/cancel", json={"revision": 3, "reason": "no show"}) as r:
                assert r.status == 200
    await wait_until(lambda: central.events_of("cancelled"), what="the cancellation reported")
    [updated] = central.events_of("updated")
    [cancelled] = central.events_of("cancelled")
    mark = await key_mark(agent)
    assert updated["idempotency_key"] == f"o_000001:updated:2{mark}" and updated["revision"] == 2
    assert cancelled["idempotency_key"] == f"o_000001:cancelled:3{mark}" and cancelled["reason"] == "no show"


async def _printed_and_cancelled(agent: Agent, events: Recorder, order: dict[str, Any]) -> None:
    """``order`` (a kitchen ticket and a receipt) pushed and printed, then cancelled: its STORNO printed too."""
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        await events.wait(JobPrinted, count=2)
        async with api.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2, "reason": "no show"}) as r:
            assert r.status == 200, await r.text()
        await events.wait(JobPrinted, count=3)


async def test_each_printed_event_says_what_went_out_so_central_tells_a_storno_from_its_ticket(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """An order printed, then cancelled: its STORNO prints after the `cancelled` event, so the order's last event is a
    `printed`. Each `printed` says what went out (kind, variant, revision, copy), so central sees that one is the
    STORNO of revision 2, not the order printed again (before: only `job_id`, the outbox73 probe, D2)."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    order = make_order(1, prefix="told")
    central.add_orders([order])
    await _printed_and_cancelled(agent, events, order)
    await wait_until(lambda: len(central.events_of("printed")) == 3, what="three printed events at central")
    assert [e["event"] for e in central.events.values()] == ["received", "printed", "printed", "cancelled", "printed"]
    shown = [(e.get("kind"), e.get("variant"), e.get("revision"), e.get("copy")) for e in central.events_of("printed")]
    # the ticket and the receipt print on two printers at once, in either order
    assert sorted(shown[:2]) == [("receipt", "original", 1, False), ("ticket", "original", 1, False)]
    assert shown[2] == ("ticket", "cancel", 2, False)


async def test_a_central_refusing_events_after_a_cancel_gets_the_stornos_printed_rejected_not_the_order_set_aside(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """A central that keeps each order's state answers 409 order_cancelled to the STORNO's `printed`, which the box
    wrote after the order's `cancelled`: central has the order's final state, so the event is marked rejected with
    central's answer and logged once as a warning; the order is not set aside and nobody gets a mail. Before, the order
    was set aside and that `printed` offered again every refused_retry_s for ever, after each restart too, with a
    STÖRUNG mail for a cancelled order (the outbox73 probe, D2)."""
    central.order_states = True
    sections = mail_to(sink)
    sections["alerts"] |= {"group_interval_s": 0.1}
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(refused_retry_s=0.5, sections=sections))
        await events.wait(RecoveryCompleted)
        order = make_order(1, prefix="late")
        central.add_orders([order])
        await _printed_and_cancelled(agent, events, order)
        pending = "SELECT idempotency_key FROM outbox WHERE delivered_at IS NULL"
        await eventually(lambda: db_rows(agent, pending), lambda rows: rows == [], what="every event settled")
    assert [e["event"] for e in central.events.values()] == ["received", "printed", "printed", "cancelled"]
    [(key, payload)] = await db_rows(
        agent,
        "SELECT idempotency_key, payload FROM outbox WHERE event = 'printed'"
        " AND json_extract(payload, '$._rejected') IS NOT NULL",
    )
    body = json.loads(payload)
    assert (body["variant"], body[REJECTED_KEY]["status"]) == ("cancel", 409)
    assert "order_cancelled" in body[REJECTED_KEY]["reason"]
    assert [(e["event"], e["log_level"], e["key"]) for e in logs if e["event"].startswith("outbox_event")] == [
        ("outbox_event_after_cancel_refused", "warning", key)
    ]
    assert events.of(OrderEventsRefused) == [] and sink.messages == []


async def test_an_order_central_cancelled_itself_waits_until_the_box_has_the_cancel_then_its_printed_go_as_rejected(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """The guest cancels in the app just after the box took the order: central, which keeps each order's state,
    answers 409 order_cancelled to the `printed` events the box wrote before it heard of the cancel. Not cancelled
    here yet, the order is set aside and a person told, as any order central refuses. Once the cancel is pushed to the
    box, the next retry rejects those `printed` (and the STORNO's) with central's answer, one warning each, and the
    box's `cancelled` behind them goes: every event settled, the alert resolved. Before, only a `printed` written after
    the order's `cancelled` was so: these were offered every refused_retry_s for ever, the `cancelled` waiting behind
    them, the STÖRUNG mail never resolved (the follow-up to the outbox73 probe, D2)."""
    sections = mail_to(sink)
    sections["alerts"] |= {"group_interval_s": 0.1}
    pending = "SELECT idempotency_key, event FROM outbox WHERE delivered_at IS NULL ORDER BY id"
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(refused_retry_s=0.5, sections=sections))
        await events.wait(RecoveryCompleted)
        order = make_order(1, prefix="app")
        central.add_orders([order])
        central.cancel_orders({order["id"]}, after="received")
        async with api_client(agent) as api:
            assert (await post(api, order))[0] == 201
            await events.wait(JobPrinted, count=2)
            [mail] = await sink.wait_for(1)
            assert order["id"] in mail.get_body(("plain",)).get_content()
            waiting = await db_rows(agent, pending)
            assert [event for _, event in waiting] == ["printed", "printed"]
            tried = central.posted[waiting[0][0]]
            await wait_until(lambda: central.posted[waiting[0][0]] > tried, what="the refused printed offered again")
            assert await db_rows(agent, pending) == waiting  # not cancelled here: the order still waits

            async with api.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2, "reason": "app"}) as r:
                assert r.status == 200, await r.text()
            await events.wait(JobPrinted, count=3)
        await eventually(lambda: db_rows(agent, pending), lambda rows: rows == [], what="every event settled")
        [_, resolved] = await sink.wait_for(2)
    assert [e["event"] for e in central.events.values()] == ["received", "cancelled"]
    rejected = await db_rows(
        agent,
        "SELECT idempotency_key, json_extract(payload, '$.variant'), json_extract(payload, '$._rejected.status')"
        " FROM outbox WHERE event = 'printed' AND json_extract(payload, '$._rejected') IS NOT NULL ORDER BY id",
    )
    assert [(variant, status) for _, variant, status in rejected] == [
        ("original", 409),
        ("original", 409),
        ("cancel", 409),
    ]
    assert [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("outbox_event")] == [
        ("outbox_event_after_cancel_refused", "warning")
    ] * 3
    assert len(events.of(OrderEventsRefused)) == 1
    assert order["id"] in resolved.get_body(("plain",)).get_content() and resolved["Subject"] != mail["Subject"]
    assert await db_rows(agent, "SELECT state FROM alert_groups WHERE type = 'central_refused_events'") == [
        ("resolved",)
    ]
