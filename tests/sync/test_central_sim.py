"""The central simulator is the strictest backend the contract (docs/central-api.md) allows: driven over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from tests.sync.conftest import CENTRAL_TOKEN, STORE

MAX_EVENTS = 500  # the contract's batch limit (docs/central-api.md)


@pytest.fixture
async def http(central: CentralSim) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for the simulator, with the store's token."""
    async with aiohttp.ClientSession(
        base_url=central.url, headers={"Authorization": f"Bearer {CENTRAL_TOKEN}"}
    ) as session:
        yield session


async def page(http: aiohttp.ClientSession, since: str, limit: int, store: str = STORE) -> tuple[int, Any]:
    async with http.get(f"/v1/stores/{store}/orders", params={"since": since, "limit": str(limit)}) as response:
        return response.status, await response.json()


async def post(http: aiohttp.ClientSession, events: list[Any], store: str = STORE) -> tuple[int, Any]:
    async with http.post(f"/v1/stores/{store}/events", json={"events": events}) as response:
        return response.status, await response.json()


def event(order_id: str, key: str, kind: str = "received", **fields: Any) -> dict[str, Any]:
    return {"idempotency_key": key, "order_id": order_id, "event": kind, "at": time.time(), **fields}


async def test_ties_on_both_sides_of_a_page_boundary_list_every_order_once(
    central: CentralSim, http: aiohttp.ClientSession
) -> None:
    """Five orders changed in the same second, pages of 2: paging by next_cursor lists each exactly once, because the
    cursor is a position in the change log, not a time."""
    central.create_orders(1, prefix="t")  # an earlier change
    central.add_orders([make_order(n, prefix="tie") for n in range(5)], changed_at=1_800_000_000)
    seen, cursor = [], ""
    for _ in range(10):
        status, body = await page(http, cursor, 2)
        assert status == 200
        seen += [o["id"] for o in body["orders"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    assert sorted(seen) == sorted(["t_000001"] + [f"tie_{n:06d}" for n in range(5)]) and len(seen) == 6


async def test_superseded_versions_make_empty_pages_with_more_to_come(
    central: CentralSim, http: aiohttp.ClientSession
) -> None:
    """An order changed four times, then a new one: with pages of 2 the first two pages hold old versions only, so
    a page may be empty while has_more is true; the newest version and the new order still come."""
    [order] = central.create_orders(1, prefix="e")
    for n in range(3):
        central.add_orders([order | {"number": f"E-{n}"}])
    central.create_orders(1, prefix="e", start=2)
    status, first = await page(http, "", 2)
    assert status == 200 and first["orders"] == [] and first["has_more"] is True
    status, second = await page(http, first["next_cursor"], 2)
    assert [o["number"] for o in second["orders"]] == ["E-2"] and second["has_more"] is True
    status, third = await page(http, second["next_cursor"], 2)
    assert [o["id"] for o in third["orders"]] == ["e_000002"] and third["has_more"] is False


async def test_a_cursor_it_did_not_issue_or_of_another_store_or_before_a_restore_is_a_400_with_a_reason(
    central: CentralSim, http: aiohttp.ClientSession
) -> None:
    """Opaque cursors: a digit string, a tampered cursor, another store's cursor and a cursor from before the backend's
    data was restored are each refused with 400 and a reason; the cursor the simulator issued still works."""
    central.create_orders(3, prefix="c")
    central.add_store("other-store")
    _, first = await page(http, "", 1)
    cursor = first["next_cursor"]
    assert not cursor.isdigit()
    for bad in (str(time.time_ns() // 1000), cursor[:-1] + ("0" if cursor[-1] != "0" else "1")):
        status, body = await page(http, bad, 1)
        assert status == 400 and body["error"] == "invalid_cursor" and body["reason"]
    status, body = await page(http, cursor, 1, store="other-store")
    assert status == 400 and "another store" in body["reason"]
    status, body = await page(http, cursor, 1)
    assert status == 200 and [o["id"] for o in body["orders"]] == ["c_000002"]
    central.restore_backup()
    status, body = await page(http, cursor, 1)
    assert status == 400 and body["error"] == "cursor_expired"


async def test_events_are_validated_and_a_reused_key_with_another_body_is_refused(
    central: CentralSim, http: aiohttp.ClientSession
) -> None:
    """Each batch is applied whole or not at all; a refusal (422) names the event's index, key and reason: unknown type,
    no time, an order of another store or of none, a printed event without its job, a key reused with another body.
    The same event sent again is a duplicate, answered 200."""
    [order] = central.create_orders(1, prefix="v")
    central.add_store("other-store")
    [foreign] = central.create_orders(1, prefix="w", store="other-store")
    good = event(order["id"], "k1")
    assert await post(http, [good]) == (200, {"accepted": 1, "duplicates": 0})
    assert await post(http, [good]) == (200, {"accepted": 0, "duplicates": 1})
    refused = {
        "invalid_event": [event(order["id"], "k2", "eaten"), event(order["id"], "k3") | {"at": "yesterday"}],
        "unknown_order": [event(foreign["id"], "k4"), event("nobody", "k5")],
        "idempotency_key_reused": [good | {"at": good["at"] + 1}],
    }
    refused["invalid_event"].append(event(order["id"], "k6", "printed"))
    for error, events in refused.items():
        for bad in events:
            status, body = await post(http, [event(order["id"], "ok-first"), bad])
            assert status == 422 and body["error"] == error and body["index"] == 1, body
            assert body["idempotency_key"] == bad["idempotency_key"]
    assert set(central.events) == {"k1"}  # nothing of a refused batch was applied, not even its good first event


async def test_batch_and_body_limits_answer_413(central: CentralSim, http: aiohttp.ClientSession) -> None:
    """More than MAX_EVENTS events, or a body over 1 MiB, is refused with 413 before anything is applied."""
    [order] = central.create_orders(1, prefix="l")
    status, body = await post(http, [event(order["id"], f"b{n}") for n in range(MAX_EVENTS + 1)])
    assert status == 413 and body["error"] == "batch_too_large"
    status, body = await post(http, [event(order["id"], "big", note="x" * (1024 * 1024))])
    assert status == 413 and central.events == {}


async def test_slow_drip_and_truncated_bodies(central: CentralSim, http: aiohttp.ClientSession) -> None:
    """A dripped answer arrives whole but slowly; a truncated one promises the full Content-Length and stops halfway,
    which a client sees as a broken payload."""
    central.create_orders(5, prefix="d")
    central.drip_next(1, chunk=1000, interval_s=0.1, path="orders")
    started = time.monotonic()
    status, body = await page(http, "", 5)
    assert status == 200 and len(body["orders"]) == 5 and time.monotonic() - started >= 0.3
    central.truncate_next(1, path="orders")
    with pytest.raises(aiohttp.ClientPayloadError):
        await page(http, "", 5)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_on_429_and_503(central: CentralSim, http: aiohttp.ClientSession, status: int) -> None:
    """A fault answers its status with Retry-After; only the path it was set for is affected."""
    central.create_orders(1, prefix="r")
    central.fail_next(1, status, retry_after=2, path="events")
    assert (await page(http, "", 5))[0] == 200
    async with http.post(f"/v1/stores/{STORE}/events", json={"events": []}) as response:
        assert response.status == status and response.headers["Retry-After"] == "2"


async def test_a_gateway_capacity_answers_429_with_retry_after(
    central: CentralSim, http: aiohttp.ClientSession
) -> None:
    """With capacity_rps set, requests beyond it in a burst are refused with 429 and a Retry-After of at least 1 s."""
    central.capacity_rps = 5.0
    statuses = []
    for _ in range(10):
        async with http.get("/v1/health") as response:
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
    assert statuses.count(200) in (5, 6) and statuses.count(429) >= 4
    await asyncio.sleep(0.25)  # the bucket refills at capacity_rps
    async with http.get("/v1/health") as response:
        assert response.status == 200
