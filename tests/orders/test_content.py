"""What "the same content" is: the same order written by another program (its own JSON serialiser, another platform's
text) is a duplicate, another meaning at the same revision a conflict; against the real agent over HTTP."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.orders import taken_at
from edge.sim.printer import SimPrinter
from edge.store.db import connect_writer
from edge.store.migrations import load_migrations, migrate
from tests.helpers import EXAMPLE, api_client, db_execute, db_rows, eventually, in_nfd, job_rows, post


def _order() -> dict[str, Any]:
    """The contract example taken just now, to the second (so a serialiser writing milliseconds changes the text)."""
    return taken_at(copy.deepcopy(EXAMPLE), datetime.now(UTC).replace(microsecond=0))


def _json(order: dict[str, Any]) -> bytes:
    return json.dumps(order, ensure_ascii=False).encode()


def _no_nulls(order: dict[str, Any]) -> dict[str, Any]:
    """Null fields left out (Jackson NON_NULL, Go omitempty)."""
    return json.loads(json.dumps(order), object_hook=lambda d: {k: v for k, v in d.items() if v is not None})


def _milliseconds(order: dict[str, Any]) -> dict[str, Any]:
    """Times as JavaScript's Date.toISOString() writes them: milliseconds always."""
    out = copy.deepcopy(order)
    out["created_at"] = out["created_at"].removesuffix("Z") + ".000Z"
    out["fulfilment"]["due_at"] = out["fulfilment"]["due_at"].removesuffix("Z") + ".000Z"
    return out


def _plus_zero(order: dict[str, Any]) -> dict[str, Any]:
    """Times as Python's datetime.isoformat() writes an aware UTC time."""
    out = copy.deepcopy(order)
    out["created_at"] = out["created_at"].replace("Z", "+00:00")
    return out


def _money_trimmed(order: dict[str, Any]) -> dict[str, Any]:
    """Money through a decimal or number type and back: "9.50" -> "9.5", "0.00" -> "0"."""
    out = copy.deepcopy(order)
    out["items"][0]["unit_price"] = "9.5"
    out["totals"]["discount"] = "0"
    return out


def _default_priority_left_out(order: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(order)
    del out["priority"]
    return out


SAME_ORDER = {
    "nfd": in_nfd,
    "nulls_left_out": _no_nulls,
    "milliseconds": _milliseconds,
    "plus_zero": _plus_zero,
    "money_trimmed": _money_trimmed,
    "default_priority_left_out": _default_priority_left_out,
}


def _more_pizza(order: dict[str, Any]) -> None:
    order["items"][0]["qty"] = 3


def _other_price(order: dict[str, Any]) -> None:
    order["items"][0]["unit_price"] = "9.05"


def _other_note(order: dict[str, Any]) -> None:
    order["items"][0]["note"] = "eine ohne Basilikum, bitte"


def _other_letter(order: dict[str, Any]) -> None:
    order["items"][0]["modifiers"][0]["name"] = "extra Kase"


def _due_an_hour_later(order: dict[str, Any]) -> None:
    """The same digits in another zone: another instant."""
    order["fulfilment"]["due_at"] = order["fulfilment"]["due_at"].replace("Z", "+01:00")


OTHER_MEANING = {
    "qty": _more_pizza,
    "price": _other_price,
    "note": _other_note,
    "letter": _other_letter,
    "due_at": _due_an_hour_later,
}


async def _conflicts(api: aiohttp.ClientSession) -> str:
    async with api.get("/metrics") as response:
        text = await response.text()
    return next(line for line in text.splitlines() if line.startswith('edge_order_conflicts_total{source="push"}'))


@pytest.mark.parametrize("rewrite", SAME_ORDER.values(), ids=SAME_ORDER.keys())
async def test_the_same_order_written_by_another_serialiser_is_a_duplicate_not_a_conflict(
    agent: Agent,
    api: aiohttp.ClientSession,
    printers: dict[str, SimPrinter],
    rewrite: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """A sender's retry rebuilt from its own objects (or the order sent by another program) is the same order in
    other bytes: 200 duplicate, one ticket and one receipt, no conflict counted or alerted. The stored JSON stays the
    one first received. Another quantity at the same revision, written the second way, is still a conflict."""
    order = _order()
    first = _json(order)
    assert (await post(api, first))[0] == 201
    status, body = await post(api, _json(rewrite(order)))
    assert (status, body.get("status")) == (200, "duplicate"), body
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "printed"])
    assert (len(printers["kitchen"].printed), len(printers["front"].printed)) == (1, 1)
    assert await _conflicts(api) == 'edge_order_conflicts_total{source="push"} 0.0'
    [(payload,)] = await db_rows(agent, "SELECT payload FROM orders")
    assert json.loads(payload) == order
    changed = rewrite(order)
    _more_pizza(changed)
    assert (await post(api, _json(changed)))[0] == 409
    assert await _conflicts(api) == 'edge_order_conflicts_total{source="push"} 1.0'


@pytest.mark.parametrize("change", OTHER_MEANING.values(), ids=OTHER_MEANING.keys())
async def test_another_meaning_at_the_same_revision_is_still_a_conflict(
    api: aiohttp.ClientSession, change: Callable[[dict[str, Any]], None]
) -> None:
    """Another quantity, price, note, letter or time at the same revision is another order: 409, counted."""
    order = _order()
    assert (await post(api, _json(order)))[0] == 201
    changed = copy.deepcopy(order)
    change(changed)
    status, body = await post(api, _json(changed))
    assert (status, body["error"]) == (409, "conflict"), body
    assert await _conflicts(api) == 'edge_order_conflicts_total{source="push"} 1.0'


def _hash_before_the_upgrade(order: dict[str, Any]) -> str:
    """The content hash agents wrote before content meant the order's meaning (frozen here, as the databases in the
    field hold it): sha256 of the canonical JSON bytes, without the revision and an "open" status."""
    view = {k: v for k, v in order.items() if k != "revision" and not (k == "status" and v == "open")}
    return hashlib.sha256(
        json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


async def test_a_retry_of_an_order_an_older_version_stored_is_still_a_duplicate(
    tmp_path: Path, make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """A database an older version wrote (schema 14): one order stored, one purged since (only its seen-order record
    left, kept for retention.seen_days), each with the hash of its JSON bytes. After the upgrade the sender's identical
    retry of each is a duplicate, not a conflict; nothing prints. An order the new version takes keeps that kind of
    hash beside its own, so a rollback's older version still finds its retry a duplicate."""
    stored, purged = _order(), _order() | {"id": "ord_purged", "number": "A-1043"}
    db = tmp_path / "data" / "edge.db"
    db.parent.mkdir()
    conn = await connect_writer(db)
    try:
        await migrate(conn, [m for m in load_migrations() if m.version <= 14])
    finally:
        await conn.close()
    await db_execute(
        db,
        "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at, source)"
        " VALUES (?, ?, ?, ?, 'web', ?, 0, 'push')",
        stored["id"],
        stored["number"],
        _hash_before_the_upgrade(stored),
        json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        stored["created_at"],
    )
    for order in (stored, purged):
        await db_execute(
            db,
            "INSERT INTO seen_orders(id, content_hash, seen_at, revision) VALUES (?, ?, 0, 1)",
            order["id"],
            _hash_before_the_upgrade(order),
        )
    agent = await make_agent()
    async with api_client(agent) as api:
        for order in (stored, purged):
            status, body = await post(api, json.dumps(order, indent=2).encode())
            assert (status, body.get("status")) == (200, "duplicate"), body
        assert await _conflicts(api) == 'edge_order_conflicts_total{source="push"} 0.0'
        taken = _order() | {"id": "ord_new", "number": "A-1044"}
        assert (await post(api, _json(taken)))[0] == 201
    assert await db_rows(db, "SELECT content_hash FROM orders WHERE id = 'ord_new'") == [
        (_hash_before_the_upgrade(taken),)
    ]
    assert await db_rows(db, "SELECT content_hash FROM seen_orders WHERE id = 'ord_new'") == [
        (_hash_before_the_upgrade(taken),)
    ]
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "printed"])
    assert len(printers["kitchen"].printed) == 1  # the new order's ticket; the retries printed nothing


@pytest.mark.parametrize("blank", ["", " ", "\t", "\u200b", "\u00a0"], ids=["empty", "space", "tab", "zwsp", "nbsp"])
async def test_a_blank_item_note_is_no_note_on_paper_and_the_same_order_as_one_without(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter], blank: str
) -> None:
    """An item's note that says nothing (empty, a space, a tab, an invisible space) is no note: the cook's ticket has
    no "!" line for it (an inverted warning line the cook is trained to read, with nothing after it), and the same
    order written by another serialiser with the note null or left out is a duplicate, not a conflict. Before (the
    http78 probe, F3 and F4): "  !  " on paper, and 409 conflict and an order_conflict alert for the retry."""
    order = _order()
    order["items"][0]["note"] = blank
    assert (await post(api, _json(order)))[0] == 201
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    lines = [line.strip() for line in decode(ticket).text.splitlines()]
    assert "!" not in lines, lines
    retry = copy.deepcopy(order)
    retry["items"][0]["note"] = None
    status, body = await post(api, _json(retry))
    assert (status, body.get("status")) == (200, "duplicate"), body
    del retry["items"][0]["note"]
    status, body = await post(api, _json(retry))
    assert (status, body.get("status")) == (200, "duplicate"), body
