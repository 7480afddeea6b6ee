"""A cancel that reaches the agent before its order (the order still queued at the broker, or retried by its sender
after a timeout, the cancel sent on another path): kept, and the order prints nothing when it comes. Against the real
agent: HTTP in, bytes out of the simulated printers, rows read from a second connection."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.events import OrderConflicted, OrderRevised, OrderStored
from edge.orders.model import canonical_json, content_hash, meaning, parse_order
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import (
    Recorder,
    api_client,
    cli_config,
    db_execute,
    db_rows,
    edge_blocking,
    eventually,
    post,
    wait_until,
)

ORDER = "ord_7f3a9c21"  # the example order's id


async def cancel(api: aiohttp.ClientSession, body: Any, order_id: str = ORDER) -> tuple[int, Any]:
    async with api.post(f"/api/v1/orders/{order_id}/cancel", json=body) as r:
        return r.status, await r.json()


def revised(order: dict[str, Any], revision: int, **changes: Any) -> dict[str, Any]:
    return copy.deepcopy(order) | {"revision": revision, **changes}


def other_order(order: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(order) | {"id": "ord_other", "number": "B-7"}


async def printed_only_the_other_order(
    api: aiohttp.ClientSession, order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Another order sent after it prints (the spool takes tickets in turn): by then the cancelled order's ticket
    would have printed before it; only the other order's ticket and receipt are on paper."""
    assert (await post(api, other_order(order)))[0] == 201
    kitchen = [decode(b).text for b in await printers["kitchen"].wait_for_printed(1)]
    front = [decode(b).text for b in await printers["front"].wait_for_printed(1)]
    await asyncio.sleep(0.3)  # a ticket of the cancelled order queued behind would be out by now
    assert len(printers["kitchen"].printed) == 1 and len(printers["front"].printed) == 1
    assert "B-7" in kitchen[0] and "A-1042" not in kitchen[0] and "A-1042" not in front[0]


async def test_a_cancel_by_the_number_on_todays_ticket_is_kept_for_that_id_and_the_answer_names_the_order_to_cancel(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict
) -> None:
    """Today's order 912 has ticket number 58; a person cancels "58", as a reprint takes the number on the ticket.
    No order has the id 58, so the cancel is kept for it (the sender's cancel-before-order rule), 202 as before, and
    the answer now says that 58 is the ticket of open order 912 and to cancel that by its id; order 912 stays open.
    Before stop 81 the 202 said nothing of it: the person took ticket 58 for cancelled, and it printed and was made
    (the api80 probe, F6)."""
    assert (await post(api, example_order | {"id": "912", "number": "58"}))[0] == 201
    status, body = await cancel(api, {"revision": 2, "reason": "Gast weg"}, order_id="58")
    assert (status, body["status"], body["order_id"], body["ticket_number_of"]) == (202, "cancel_pending", "58", "912")
    assert "ticket 58 is open order 912" in body["hint"] and "/api/v1/orders/912/cancel" in body["hint"], body
    async with api.get("/api/v1/orders/912") as r:
        assert (await r.json())["status"] == "open"
    cancelled = example_order | {"id": "913", "number": "59", "status": "cancelled"}
    assert (await post(api, cancelled))[1]["status"] == "cancelled"  # stored cancelled: no order to point to
    status, body = await cancel(api, {"revision": 2}, order_id="59")
    assert (status, body) == (202, {"order_id": "59", "status": "cancel_pending", "revision": 2, "job_ids": []})


@pytest.mark.parametrize("other_number", ["58", "\uff15\uff18"], ids=["same", "full-width"])
async def test_a_cancel_by_a_number_on_two_of_todays_tickets_names_both_orders_and_cancels_neither(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, other_number: str
) -> None:
    """Today's open orders 912 and 913 both show ticket number 58 (sent so, or "５８", which prints as 58); a person
    cancels "58". The cancel is kept for the id 58 (202 as before), and the answer says that 58 is on two of today's
    tickets and names both orders to cancel by id, as a reprint by that number names them; both stay open. Before,
    the 202 named neither and said nothing (the verify81 probe, F3: the api80 probe's F6 silence again)."""
    assert (await post(api, example_order | {"id": "912", "number": "58"}))[0] == 201
    assert (await post(api, example_order | {"id": "913", "number": other_number}))[0] == 201
    status, body = await cancel(api, {"revision": 2, "reason": "Gast weg"}, order_id="58")
    assert (status, body["status"], body["order_id"]) == (202, "cancel_pending", "58"), body
    assert body.get("ticket_number_of_orders") == ["912", "913"] and "ticket_number_of" not in body, body
    assert "on 2 of today's open orders" in body.get("hint", ""), body
    assert "912" in body["hint"] and "913" in body["hint"] and "/cancel" in body["hint"], body
    for order_id in ("912", "913"):
        async with api.get(f"/api/v1/orders/{order_id}") as r:
            assert (await r.json())["status"] == "open"


async def test_a_cancel_before_its_order_is_kept_and_the_order_prints_nothing(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cancel (revision 2) comes first: 202 cancel_pending, kept. The order (revision 1) then comes: 200
    cancelled at the cancel's revision, stored with both revisions, its jobs discarded, nothing printed; its sender's
    retry is stale. Before: the cancel was 404 not_found, the order 201 stored and printed, left open."""
    status, body = await cancel(api, {"revision": 2, "reason": "storniert"})
    assert (status, body) == (202, {"order_id": ORDER, "status": "cancel_pending", "revision": 2, "job_ids": []})
    status, body = await post(api, example_order)
    assert (status, body) == (200, {"order_id": ORDER, "status": "cancelled", "revision": 2, "job_ids": []})
    await printed_only_the_other_order(api, example_order, printers)
    assert await db_rows(agent, "SELECT revision, status FROM orders WHERE id = ?", ORDER) == [(2, "cancelled")]
    assert await db_rows(agent, "SELECT DISTINCT state FROM print_jobs WHERE order_id = ?", ORDER) == [("discarded",)]
    assert await db_rows(agent, "SELECT * FROM pending_cancels") == []
    async with api.get(f"/api/v1/orders/{ORDER}") as r:
        shown = await r.json()
    assert [(v["revision"], v["status"]) for v in shown["revisions"]] == [(1, "open"), (2, "cancelled")]
    assert shown["order"]["cancel_reason"] == "storniert"
    status, body = await post(api, example_order)  # its sender's retry
    assert (status, body["status"], body["revision"]) == (200, "stale", 2)
    status, body = await cancel(api, {"revision": 2, "reason": "storniert"})  # the cancel's sender's retry
    assert (status, body["status"]) == (200, "duplicate")


async def test_a_kept_cancels_retry_with_its_reason_in_nfd_or_in_other_words_is_a_duplicate(
    agent: Agent, api: aiohttp.ClientSession
) -> None:
    """A sender on macOS or iOS retries a cancel kept for an order not here with the same reason in NFD: the same
    cancel, 200 duplicate, as for a stored order (text in NFD or NFC is one content: docs/http-api.md). Before: 409
    conflict saying the order "already exists with different content", which it does not, and the manager's conflict
    alert. Another reason at that revision is the same cancel too (a reason is not content; before stop 76 a
    conflict), and the first one's words are kept."""
    reason = "Gäste gegangen, Käsespätzle zurück"
    assert (await cancel(api, {"revision": 2, "reason": reason}))[0] == 202
    status, body = await cancel(api, {"revision": 2, "reason": unicodedata.normalize("NFD", reason)})
    assert (status, body) == (200, {"order_id": ORDER, "status": "duplicate", "revision": 2, "job_ids": []})
    status, body = await cancel(api, {"revision": 2, "reason": "anders"})
    assert (status, body) == (200, {"order_id": ORDER, "status": "duplicate", "revision": 2, "job_ids": []})
    assert await db_rows(agent, "SELECT reason FROM pending_cancels") == [(reason,)]


async def test_a_cancel_kept_for_an_order_not_here_survives_a_restart_and_a_repeat_is_a_duplicate(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The same cancel twice is a duplicate, in other words too; the agent restarts before the order comes, which
    then prints nothing: the kept cancel is in the database, not in memory. No conflict is heard (no order_conflict
    alert); the order stored cancelled is heard as stored, then revised cancelled (metrics, central)."""
    seen = Recorder()
    agent = await make_agent(listen=seen)
    async with api_client(agent) as api:
        assert (await cancel(api, {"revision": 2, "reason": "storniert"}))[0] == 202
        status, body = await cancel(api, {"revision": 2, "reason": "storniert"})
        assert (status, body) == (200, {"order_id": ORDER, "status": "duplicate", "revision": 2, "job_ids": []})
        status, body = await cancel(api, {"revision": 2, "reason": "anders"})
        assert (status, body["status"]) == (200, "duplicate")
    assert seen.of(OrderConflicted) == []
    await agent.stop()
    seen = Recorder()
    agent = await make_agent(listen=seen)
    async with api_client(agent) as api:
        status, body = await post(api, example_order)
        assert (status, body["status"], body["revision"]) == (200, "cancelled", 2)
        await printed_only_the_other_order(api, example_order, printers)
    assert await db_rows(agent, "SELECT revision, status FROM orders WHERE id = ?", ORDER) == [(2, "cancelled")]
    assert next((e.order_id, e.job_ids) for e in seen.of(OrderStored)) == (ORDER, ())
    assert [(e.order_id, e.revision, e.status) for e in seen.of(OrderRevised)] == [(ORDER, 2, "cancelled")]


@pytest.mark.parametrize(
    ("revision", "status", "answer", "stored"),
    [
        (2, "cancelled", (200, "cancelled"), [(2, "cancelled")]),  # the cancelled revision sent whole: stored as sent
        (3, "cancelled", (200, "cancelled"), [(3, "cancelled")]),
        (2, "open", (409, "conflict"), []),  # the same revision, other content: the kept cancel stands
        (3, "open", (409, "wrong_state"), []),  # a cancelled order is not reopened
    ],
    ids=["same-cancelled", "higher-cancelled", "same-open", "higher-open"],
)
async def test_an_order_after_its_cancel_is_taken_as_if_the_cancelled_revision_had_come_first(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    revision: int,
    status: str,
    answer: tuple[int, str],
    stored: list[tuple[int, str]],
) -> None:
    """A revision at or above the kept cancel's: a cancelled one is stored as sent, an open one refused as it would be
    after the cancelled revision sent whole (409: same revision other content, or reopening, naming the kept cancel's
    revision, the one that stands, and naming `status` as what differs from it); nothing prints."""
    assert (await cancel(api, {"revision": 2}))[0] == 202
    code, body = await post(api, revised(example_order, revision, status=status))
    assert (code, body.get("status", body.get("error"))) == answer, body
    if answer == (409, "wrong_state"):
        assert "is cancelled (revision 2)" in body["reason"], body
    if answer == (409, "conflict"):  # before stop 67: "already exists with different content", no field (D7)
        assert "cancel kept" in body["reason"] and "already exists" not in body["reason"], body
        assert body["field"] == "status", body
    await printed_only_the_other_order(api, example_order, printers)
    assert await db_rows(agent, "SELECT revision, status FROM orders WHERE id = ?", ORDER) == stored


async def test_a_cancel_and_its_order_at_once_never_leave_the_order_open(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cancel and the order sent at the same moment: whichever the agent takes first, the order ends cancelled at
    the cancel's revision; its ticket, if it went out first, is followed by a STORNO."""
    (_, cancelled), (_, stored) = await asyncio.gather(cancel(api, {"revision": 2}), post(api, example_order))
    assert (cancelled["status"], stored["status"]) in {("cancel_pending", "cancelled"), ("cancelled", "stored")}
    assert (await post(api, other_order(example_order)))[0] == 201
    await wait_until(lambda: any("B-7" in decode(b).text for b in printers["kitchen"].printed), what="B-7 printed")
    await asyncio.sleep(0.3)  # a ticket of the order queued behind would be out by now
    ours = [t for t in (decode(b).text for b in printers["kitchen"].printed) if "A-1042" in t]
    assert ours == [] or (len(ours) == 2 and "STORNO" in ours[1]), ours
    assert await db_rows(agent, "SELECT revision, status FROM orders WHERE id = ?", ORDER) == [(2, "cancelled")]


async def test_a_kept_cancel_is_forgotten_with_the_seen_orders(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict
) -> None:
    """A kept cancel whose order never came goes after retention.seen_days, like the seen-order records."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock, retention={"every_s": 0.2, "seen_days": 2})
    async with api_client(agent) as api:
        assert (await cancel(api, {"revision": 2}))[0] == 202
    assert await db_rows(agent, "SELECT order_id, revision FROM pending_cancels") == [(ORDER, 2)]
    clock.step(3 * 86400)
    await eventually(lambda: db_rows(agent, "SELECT * FROM pending_cancels"), lambda rows: rows == [], what="forgotten")


@pytest.mark.parametrize(("body", "field"), [({"reason": "x"}, "revision"), ({"revision": 2, "reason": 5}, "reason")])
async def test_a_bad_cancel_for_an_order_not_here_is_refused_and_a_bad_id_is_no_order(
    agent: Agent, api: aiohttp.ClientSession, body: dict, field: str
) -> None:
    """A cancel for an order not here is checked like one for a stored order (422 naming the field); an id no order
    can have is 404 (nothing kept)."""
    status, answer = await cancel(api, body)
    assert (status, answer["field"]) == (422, field)
    assert (await cancel(api, {"revision": 2}, order_id="no!order"))[0] == 404
    assert await db_rows(agent, "SELECT * FROM pending_cancels") == []


@pytest.mark.parametrize("route_first", [True, False], ids=["route-then-payload", "payload-then-route"])
async def test_one_cancel_by_the_route_and_as_the_order_with_other_words_is_one_cancel_not_a_conflict(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    route_first: bool,
) -> None:
    """The till cancels a printed order by the cancel route ("Gast gegangen") and central's pipeline then sends the
    same cancel as the order at that revision, `status: cancelled`, in its own words or none; or the other way round.
    A cancel's reason is not the order's content (as recovery has it): the second is a duplicate, one STORNO prints
    with the words the box got first, nobody is alerted. Before (the doors76 probe, F2): 409 conflict naming
    `cancel_reason`, and the manager mailed "gleiche Revision, anderer Inhalt"."""
    seen = Recorder()
    agent = await make_agent(listen=seen)
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
        by_route = lambda: cancel(api, {"revision": 2, "reason": "Gast gegangen"})  # noqa: E731
        as_order = lambda: post(api, revised(example_order, 2, status="cancelled", cancel_reason="customer left"))  # noqa: E731
        first, second = (by_route, as_order) if route_first else (as_order, by_route)
        status, body = await first()
        assert (status, body["status"]) == (200, "cancelled"), body
        status, body = await second()
        assert (status, body["status"]) == (200, "duplicate"), body
        stornos = [decode(b).text for b in await printers["kitchen"].wait_for_printed(2)][1:]
    assert len(stornos) == 1 and "STORNO" in stornos[0], stornos
    assert ("Gast gegangen" if route_first else "customer left") in stornos[0], stornos[0]
    assert seen.of(OrderConflicted) == []


def _hash_as_before_stop_76(payload: dict[str, Any]) -> str:
    """The meaning hash 33cd6ce wrote for an order: its reason, if cancelled with one, counted as content."""
    view = meaning(parse_order(payload))
    del view["revision"]
    return content_hash(canonical_json(view).encode())


@pytest.mark.parametrize("again", ["other words", "no words", "other spelling"])
async def test_a_cancel_stored_with_its_reason_by_the_version_before_is_the_same_cancel_after_the_upgrade(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, again: str
) -> None:
    """An order stored cancelled with a reason by the version before this one (whose meaning hash counted the reason)
    comes again after the upgrade as the same cancel: in other words, without any, or written otherwise ("9.5" for
    "9.50"). A duplicate, as the new version would take it, and as that version took the last; nobody is mailed.
    Before (the verify76 probe, V1): 409 conflict naming no field, and the manager's conflict mail."""
    sent = revised(example_order, 2, status="cancelled", cancel_reason="Gast gegangen")
    assert (await post(api, sent))[0] == 200  # stored cancelled, as it came
    await db_execute(agent, "UPDATE orders SET meaning_hash = ?", _hash_as_before_stop_76(sent))
    await db_execute(agent, "UPDATE seen_orders SET meaning_hash = ?", _hash_as_before_stop_76(sent))
    again_sent = copy.deepcopy(sent)
    if again == "other words":
        again_sent["cancel_reason"] = "customer left"
    elif again == "no words":
        del again_sent["cancel_reason"]
    else:
        again_sent["items"][0]["unit_price"] = "9.5"
    status, body = await post(api, again_sent)
    assert (status, body.get("status")) == (200, "duplicate"), body


@pytest.mark.parametrize("stored_as", ["readable", "unreadable"])
async def test_two_cancels_of_one_revision_that_differ_in_more_than_words_are_a_conflict(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, stored_as: str
) -> None:
    """The reason is not content, but the rest is: central's cancelled order at the stored cancel's revision with
    another quantity is a conflict (409, the one stored first stands), also when the stored row cannot be read by
    this version (a time without its zone an older intake took) and so cannot be compared as the same cancel."""
    sent = revised(example_order, 2, status="cancelled", cancel_reason="Gast gegangen")
    assert (await post(api, sent))[0] == 200
    if stored_as == "unreadable":
        await db_execute(
            agent, "UPDATE orders SET payload = json_set(payload, '$.created_at', ?)", "2026-11-22T18:04:11"
        )
    other = copy.deepcopy(sent)
    other["items"][1]["qty"] = 2
    status, body = await post(api, other)
    assert (status, body.get("error")) == (409, "conflict"), body


async def test_a_kept_cancel_survives_a_step_down_below_its_schema_and_back(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict,
    tmp_path: Path,
) -> None:
    """A cancel kept for an order not here, then `edge migrate --to 13` (upgrade.sh's rollback to a release before
    kept cancels, schema 14) and up again: the order comes and prints nothing. Before, the step down dropped the kept
    cancel, and the order printed whole: the kitchen cooked a cancelled order (the upgrade79 probe, M2). At 13 the
    cancel is a seen-order record at its revision, so a release of then takes the order below it as stale."""
    first = await make_agent()
    async with api_client(first) as api:
        assert (await cancel(api, {"revision": 2, "reason": "storniert"}))[0] == 202
    await first.stop()
    settings = first.settings
    config = cli_config(tmp_path / "edge.toml", settings.agent.data_dir, printers)
    down = await asyncio.to_thread(edge_blocking, "migrate", "--to", "13", "--config", str(config))
    assert down.returncode == 0, down.stderr
    seen = "SELECT revision FROM seen_orders WHERE id = ?"
    assert await asyncio.to_thread(_rows, settings.agent.db_path, seen, ORDER) == [(2,)]
    up = await asyncio.to_thread(edge_blocking, "migrate", "--config", str(config))
    assert up.returncode == 0, up.stderr
    again = await make_agent(settings)
    async with api_client(again) as api:
        status, body = await post(api, example_order)
        assert (status, body["status"], body["revision"]) == (200, "cancelled", 2), body
        await printed_only_the_other_order(api, example_order, printers)


def _rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()
