"""The status outbox reports order changes and cancellations to the central simulator, once each."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import EmailMessage
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
        # The refusal's log line follows its commit: waited for too (CI at 2a83f64 left the block between them).
        await wait_until(lambda: any(e["event"].startswith("outbox_event") for e in logs), what="the refusal logged")
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


async def _set_aside_then_cancelled(
    agent: Agent, events: Recorder, central: CentralSim, sink: SmtpSink, order: dict[str, Any], waiting: list[str]
) -> EmailMessage:
    """``order`` (central has it) pushed and printed while central refuses its events: set aside, a person told (the
    mail returned), ``waiting`` its pending events; then the cancel pushed to the box, its STORNO printed."""
    central.add_orders([order])
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        await events.wait(JobPrinted, count=2)
        [mail] = await sink.wait_for(1)
        assert order["id"] in mail.get_body(("plain",)).get_content()
        pending = "SELECT event FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        assert [event for (event,) in await db_rows(agent, pending)] == waiting
        async with api.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2, "reason": "app"}) as r:
            assert r.status == 200, await r.text()
        await events.wait(JobPrinted, count=3)
    return mail


async def test_an_order_central_cancelled_before_its_received_gets_all_but_its_cancelled_rejected_once_cancelled_here(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """The guest cancels in the app before the box's `received` reaches central, which answers 409 order_cancelled
    to any new event of the order but a `cancelled`. Not cancelled here yet, the order is set aside and a person told.
    Once the box has the cancel, its `received` and `printed` are rejected with central's answer, one warning each,
    and its `cancelled` goes: every event settled, the alert resolved. Before, only a refused `printed` or `failed`
    was so: the `received` was offered every refused_retry_s for ever, the `cancelled` waiting behind it."""
    order = make_order(1, prefix="app")
    central.cancel_orders({order["id"]})
    sections = mail_to(sink)
    sections["alerts"] |= {"group_interval_s": 0.1}
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(refused_retry_s=0.5, sections=sections))
        await events.wait(RecoveryCompleted)
        mail = await _set_aside_then_cancelled(agent, events, central, sink, order, ["received", "printed", "printed"])
        pending = "SELECT idempotency_key, event FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        await eventually(lambda: db_rows(agent, pending), lambda rows: rows == [], what="every event settled")
        [_, resolved] = await sink.wait_for(2)
    assert [e["event"] for e in central.events.values()] == ["cancelled"]
    rejected = await db_rows(
        agent,
        "SELECT event, json_extract(payload, '$._rejected.status') FROM outbox"
        " WHERE json_extract(payload, '$._rejected') IS NOT NULL ORDER BY id",
    )
    assert rejected == [("received", 409), ("printed", 409), ("printed", 409), ("printed", 409)]
    assert [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("outbox_event")] == [
        ("outbox_event_after_cancel_refused", "warning")
    ] * 4
    assert len(events.of(OrderEventsRefused)) == 1
    assert order["id"] in resolved.get_body(("plain",)).get_content() and resolved["Subject"] != mail["Subject"]


async def test_a_set_aside_order_goes_within_seconds_once_the_box_stores_its_cancel_not_a_refused_retry_s_later(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central cancelled the order itself just after the box's `received` and refuses its `printed`: the order is set
    aside, its next try refused_retry_s (5 minutes by default) away. Storing the cancel here makes it due at once: the
    box's `cancelled` is at central within seconds, every event settled. Before, it waited out the rest of the 5
    minutes, the `cancelled` and the alert with it."""
    order = make_order(1, prefix="app")
    central.cancel_orders({order["id"]}, after="received")
    agent, events = await agents.start(sync_settings(sections=mail_to(sink)))
    assert agent.settings.central.refused_retry_s == 300
    await events.wait(RecoveryCompleted)
    await _set_aside_then_cancelled(agent, events, central, sink, order, ["printed", "printed"])
    await wait_until(lambda: central.events_of("cancelled"), what="the box's cancelled at central")
    pending = "SELECT idempotency_key, event FROM outbox WHERE delivered_at IS NULL ORDER BY id"
    await eventually(lambda: db_rows(agent, pending), lambda rows: rows == [], what="every event settled")
    assert [e["event"] for e in central.events.values()] == ["received", "cancelled"]


async def test_a_refused_cancelled_of_an_order_cancelled_here_still_sets_it_aside_and_tells_a_person(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """The box has the order cancelled (the cancel came first, the order then came cancelled) and central refuses each
    of its events with a 409: the `received` is rejected as one after a cancel, but the refused `cancelled` itself is
    not central having the order's final state: the order is set aside and a person told, the `cancelled` pending."""
    with capture_logs() as logs:
        agent, events = await agents.start(sync_settings(sections=mail_to(sink)))
        await events.wait(RecoveryCompleted)
        order = make_order(1, prefix="gone")
        central.add_orders([order])
        central.refuse_orders({order["id"]}, status=409)
        async with api_client(agent) as api:
            async with api.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2, "reason": "app"}) as r:
                assert r.status == 202, await r.text()
            assert (await post(api, order))[0] == 200  # stored, cancelled at once: nothing prints
        [mail] = await sink.wait_for(1)
        pending = "SELECT event FROM outbox WHERE delivered_at IS NULL ORDER BY id"
        assert await db_rows(agent, pending) == [("cancelled",)]
    assert order["id"] in mail.get_body(("plain",)).get_content()
    assert [e.order_id for e in events.of(OrderEventsRefused)] == [order["id"]]
    assert await db_rows(agent, "SELECT event FROM outbox WHERE json_extract(payload, '$._rejected.status') = 409") == [
        ("received",)
    ]
    assert [e["event"] for e in logs if e["event"].startswith("outbox_event")] == ["outbox_event_after_cancel_refused"]


async def test_an_order_that_arrives_cancelled_after_its_cancel_was_kept_is_reported_cancelled_with_the_reason(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The till cancels an order by the cancel route before the order is here (kept, 202), and the order then comes
    already cancelled at that revision (central's own cancelled record). Nothing prints, and central hears what the
    box holds: `received`, then `cancelled` with the revision and the till's reason, as when the order comes open.
    Before (the doors76 probe, F1): only `received`, central's view of the box open, the reason lost."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    order = make_order(1, prefix="kept")
    central.add_orders([order])
    async with api_client(agent) as api:
        async with api.post(
            f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2, "reason": "Gast gegangen"}
        ) as r:
            assert r.status == 202, await r.text()
        status, body = await post(api, order | {"revision": 2, "status": "cancelled"})
        assert (status, body["status"]) == (200, "cancelled"), body
    await wait_until(lambda: central.events_of("cancelled"), what="the cancellation reported")
    assert [e["event"] for e in central.events.values()] == ["received", "cancelled"]
    [cancelled] = central.events_of("cancelled")
    assert (cancelled["revision"], cancelled["reason"]) == (2, "Gast gegangen")
