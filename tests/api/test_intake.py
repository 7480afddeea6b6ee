"""POST /api/v1/orders and friends against the real agent on loopback: every status code and its body."""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import re
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from structlog.testing import capture_logs

from edge.app import Agent
from edge.events import JobHeld, OrderConflicted, OrderStored
from edge.printing.decode import decode
from edge.sim.orders import make_order, taken_at
from edge.sim.printer import SimPrinter
from tests.helpers import (
    EXAMPLE,
    TOKEN,
    Recorder,
    api_client,
    db_execute,
    db_rows,
    eventually,
    job_rows,
    post,
    slow_fsync,
)

CHANNELS = ["web", "pos", "phone", "marketplace", "kiosk", "uber-eats", "call-center"]


async def test_contract_example_is_stored_before_the_answer(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """201 comes with the job ids; at that moment a second connection already sees the order and its jobs."""
    status, body = await post(api, example_order)
    assert status == 201
    assert body["order_id"] == "ord_7f3a9c21" and body["status"] == "stored" and len(body["job_ids"]) == 2
    assert await db_rows(agent, "SELECT number FROM orders WHERE id = 'ord_7f3a9c21'") == [("A-1042",)]
    assert (
        sorted(r[0] for r in await db_rows(agent, "SELECT id FROM print_jobs WHERE order_id = 'ord_7f3a9c21'"))
        == body["job_ids"]
    )
    kitchen = await printers["kitchen"].wait_for_printed(1)
    front = await printers["front"].wait_for_printed(1)
    assert decode(kitchen[0]).qr_codes == ["edge:v1:ord_7f3a9c21:kitchen"]
    assert "Apfelschorle" not in decode(kitchen[0]).text  # no production flag, no kitchen ticket
    assert "Apfelschorle" in decode(front[0]).text  # but on the receipt


async def test_duplicate_prints_once_and_conflict_prints_nothing(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Same id and content: 200 duplicate, one ticket. Same id, other content: 409 and nothing printed."""
    assert (await post(api, example_order))[0] == 201
    status, body = await post(api, example_order)
    assert status == 200 and body["status"] == "duplicate"
    changed = copy.deepcopy(example_order)
    changed["items"][0]["qty"] = 3
    status, body = await post(api, changed)
    assert status == 409
    assert body == {
        "error": "conflict",
        "reason": "order ord_7f3a9c21 already exists at revision 1 with other content (items[0].qty differs): the"
        " version stored first stands, printed or printing as it was; this one was not stored",
        "order_id": "ord_7f3a9c21",
        "field": "items[0].qty",
    }
    await printers["kitchen"].wait_for_printed(1)
    # Every job the agent has is printed: nothing is left that could come out a second time.
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "printed"])
    assert len(printers["kitchen"].printed) == 1
    assert len(printers["front"].printed) == 1


async def test_a_conflict_names_the_first_field_that_differs_on_the_normalised_order_and_that_the_first_version_stands(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A till sends an order (printed), then the same id and revision with another created_at, and then written by
    another serialiser (the same instant as +01:00, "9.5" for "9.50") with another quantity: each 409 names the first
    field that differs, in `field` and in the reason, found on the order as it is meant (the reformatted instant and
    price are no difference), and says the first version stands as printed and this one was not stored; the
    reformatted order without the other quantity is a duplicate. Before stop 62: no field, and "nothing was printed"
    although the first version had (probe intake2 s01, s15)."""
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    created = datetime.fromisoformat(example_order["created_at"])
    later = {**copy.deepcopy(example_order), "created_at": (created + timedelta(minutes=1)).isoformat()}
    status, body = await post(api, later)
    assert (status, body["error"], body.get("field")) == (409, "conflict", "created_at"), body
    assert "(created_at differs)" in body["reason"] and "nothing was printed" not in body["reason"], body
    assert "stands" in body["reason"] and "this one was not stored" in body["reason"], body
    rewritten = copy.deepcopy(example_order)
    rewritten["created_at"] = created.astimezone(timezone(timedelta(hours=1))).isoformat()
    rewritten["items"][0]["unit_price"] = "9.5"
    assert (await post(api, rewritten))[1]["status"] == "duplicate"
    rewritten["items"][1]["qty"] = 2
    status, body = await post(api, rewritten)
    assert (status, body.get("field")) == (409, "items[1].qty"), body
    assert "(items[1].qty differs)" in body["reason"], body
    [(payload,)] = await db_rows(agent, "SELECT payload FROM orders")
    kept = json.loads(payload)
    assert (kept["created_at"], kept["items"][1]["qty"]) == (example_order["created_at"], 1)


async def test_a_ticket_for_a_station_no_printer_serves_is_held_and_heard_of_once_per_revision(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict
) -> None:
    """An order with items for a station no printer serves (pastry) is stored (201) with that ticket held: listeners
    hear one JobHeld naming the station (for the manager's mail); the same order again (a duplicate) or an older
    revision adds none; a new revision that keeps the ticket held is heard of again."""
    seen = Recorder()
    agent = await make_agent(listen=seen)
    first = copy.deepcopy(example_order)
    first["items"][1]["station"] = "pastry"
    second = {**copy.deepcopy(first), "revision": 2}
    second["items"][1]["qty"] = 2
    async with api_client(agent) as api:
        status, body = await post(api, first)
        assert status == 201 and len(body["job_ids"]) == 3
        assert (await post(api, first))[0] == 200  # duplicate
        assert (await post(api, second))[1]["status"] == "updated"
        assert (await post(api, first))[1]["status"] == "stale"
    held = seen.of(JobHeld)
    assert [(e.order_id, e.printer, e.station, e.reason) for e in held] == [
        (first["id"], "", "pastry", "no_printer")
    ] * 2
    assert held[0].job_id == held[1].job_id and held[0].order_number == first["number"]


async def test_a_pushed_conflict_is_published_once_and_a_duplicate_not_at_all(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict
) -> None:
    """What listeners hear of pushes: each stored order → one OrderStored; the same again (duplicate) → nothing; other
    content under a stored id (409) → one OrderConflicted for that order, with source push."""
    seen = Recorder()
    agent = await make_agent(listen=seen)
    other = {**copy.deepcopy(example_order), "id": "ord_other", "number": "A-1043"}
    changed = copy.deepcopy(other)
    changed["items"][0]["qty"] = 3
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        assert (await post(api, example_order))[0] == 200  # duplicate of the first
        assert (await post(api, other))[0] == 201
        assert (await post(api, changed))[0] == 409  # conflicts with the second
    assert [(e.order_id, e.source) for e in seen.of(OrderStored)] == [("ord_7f3a9c21", "push"), ("ord_other", "push")]
    assert [(e.order_id, e.source) for e in seen.of(OrderConflicted)] == [("ord_other", "push")]


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda o: o["items"][2].update(qty=0), "items[2].qty", "must be between 1 and 9999, got 0"),
        (
            lambda o: o["items"][0].update(unit_price=9.5),
            "items[0].unit_price",
            'must be a decimal string like "9.50", got number',
        ),
        (
            # a decimal string all the same: the reason says what is wrong with it (before stop 78, the http78 probe's
            # F7: "must be a decimal string like "9.50"", which it is)
            lambda o: o["items"][0].update(unit_price="1234567890.00"),
            "items[0].unit_price",
            "must have at most 9 digits before the point and 4 after, got '1234567890.00'",
        ),
        (lambda o: o.pop("id"), "id", "is required"),
        (lambda o: o.update(items=[]), "items", "must contain at least one item"),
        (
            lambda o: o["items"][0].update(requires_production="yes"),
            "items[0].requires_production",
            "must be true or false, got string",
        ),
        (
            lambda o: o.update(created_at="yesterday"),
            "created_at",
            "must be an ISO 8601 time like 2026-11-22T18:04:11Z, got 'yesterday'",
        ),
        (
            # ISO 8601 allows an offset's seconds, RFC 3339 does not, nor SQLite: retention could not read its date,
            # and such an order was kept for good (the time72 probe)
            lambda o: o.update(created_at="2026-11-22T18:04:11+05:30:15"),
            "created_at",
            "must have an offset in whole minutes like +05:30 (RFC 3339), got '2026-11-22T18:04:11+05:30:15'",
        ),
        (
            lambda o: o["totals"].update(currency="euro"),
            "totals.currency",
            "must be a 3-letter currency code like EUR, got 'euro'",
        ),
        (lambda o: o["fulfilment"].update(table=[1]), "fulfilment.table", "must be a string or a number, got array"),
    ],
)
async def test_invalid_field_is_422_naming_it(
    api: aiohttp.ClientSession, example_order: dict, mutate: Any, field: str, reason: str
) -> None:
    mutate(example_order)
    status, body = await post(api, example_order)
    assert status == 422
    assert body == {"error": "invalid_order", "reason": reason, "field": field}


@pytest.mark.parametrize("written", ["2026-11-22T18:04:11z", "2026-11-22t18:04:11Z", "2026-11-22t19:04:11.5+01:00"])
async def test_an_rfc_3339_time_in_lower_case_is_taken_as_the_same_time(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, written: str
) -> None:
    """RFC 3339 5.6: "T" and "Z" may be written in lower case. Before (the time72 probe): Python 3.11's ISO reader
    refused them, 422, and a central writing its times so would have had every order refused."""
    example_order["created_at"] = written
    status, body = await post(api, example_order)
    assert status == 201, body
    [(stored,)] = await db_rows(agent, "SELECT created_at FROM orders")
    assert datetime.fromisoformat(stored) == datetime.fromisoformat(written.upper())


async def test_a_leap_second_is_taken_as_the_last_moment_of_its_minute(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict
) -> None:
    """RFC 3339 5.6 allows a leap second (23:59:60); Python's datetime has no place for it. It is taken as the last
    microsecond of its minute, so the order prints. Before (the time72 probe, 1): 422 "must be an ISO 8601 time",
    calling a valid time invalid."""
    example_order["created_at"] = "2026-12-31T23:59:60Z"
    status, body = await post(api, example_order)
    assert status == 201, body
    [(stored,)] = await db_rows(agent, "SELECT created_at FROM orders")
    assert datetime.fromisoformat(stored) == datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


async def test_orders_refused_for_a_field_leave_one_log_line_a_minute_naming_it(
    api: aiohttp.ClientSession, example_order: dict
) -> None:
    """A 422 is the sender's to fix, but the box is where a technician asks why the kitchen never got an order: one
    info line names the field and why, then no more than one a minute per field however many orders repeat it (each
    line is written to the SD card). Before (the change72 probe's side note): nothing in the box's log."""
    example_order["items"][0]["qty"] = 0
    with capture_logs() as logs:
        for n in range(3):
            status, _ = await post(api, {**example_order, "id": f"bad_{n}"})
            assert status == 422
    said = [e for e in logs if e["event"] == "order_refused"]
    assert [(e["log_level"], e["field"], e["path"]) for e in said] == [("info", "items[0].qty", "/api/v1/orders")], said
    assert "between 1 and 9999" in said[0]["reason"]


@pytest.mark.parametrize(
    ("raw", "reason_start"),
    [
        (b"{not json", "the body is not valid JSON"),
        (b"", "the request body is empty"),
        (b'{"a": "\xff"}', "the body is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "the JSON is nested too deeply"),
        (b'{"id": NaN}', "the body is not valid JSON: NaN is not allowed"),
    ],
)
async def test_malformed_body_is_400(api: aiohttp.ClientSession, raw: bytes, reason_start: str) -> None:
    status, body = await post(api, raw, headers={"Content-Type": "application/json"})
    assert status == 400
    assert body["error"] == "malformed_request"
    assert body["reason"].startswith(reason_start)


@pytest.mark.parametrize(
    ("spell", "key"),
    [
        # the sender meant one id and Python's parser keeps the last: acked under an id the sender never saw
        (lambda body: body.replace('"id": "ord_7f3a9c21"', '"id": "ord_7f3a9c21", "id": "ord_other"', 1), "id"),
        # an item's quantity said twice: which one the cook makes must not depend on the parser
        (lambda body: body.replace('"qty": 2', '"qty": 2, "qty": 1', 1), "qty"),
    ],
)
async def test_an_order_that_names_a_key_twice_in_one_object_is_400_naming_it_and_nothing_prints(
    api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter], spell: Any, key: str
) -> None:
    """JSON leaves the meaning of a name repeated in one object open (RFC 8259 4: "names within an object SHOULD be
    unique", parsers differ), I-JSON forbids it (RFC 7493 2.3). Before: 201, the last one taken, so an order could be
    acknowledged under another id than its sender's, or cooked in another quantity than its till showed."""
    body = spell(json.dumps(example_order))
    assert body.count(f'"{key}"') > json.dumps(example_order).count(f'"{key}"')  # the mutation happened
    status, answer = await post(api, body.encode(), headers={"Content-Type": "application/json"})
    assert status == 400, answer
    assert answer["error"] == "malformed_request"
    assert f'"{key}"' in answer["reason"] and "twice" in answer["reason"], answer
    for order_id in ("ord_7f3a9c21", "ord_other"):
        async with api.get(f"/api/v1/orders/{order_id}") as response:
            assert response.status == 404
    status, answer = await post(api, example_order)  # the same order, spelt once: taken and printed
    assert status == 201, answer
    await printers["kitchen"].wait_for_printed(1)
    assert len(printers["kitchen"].jobs) == 1


@pytest.mark.parametrize(
    ("head", "reason_start"),
    [
        (
            b"POST /api/v1/orders HTTP/1.1\r\nHost: edge\r\nContent-Length: abc\r\n\r\n",
            "Invalid character in Content-Length",
        ),
        (b"GARBAGE\r\n\r\n", "Invalid method encountered"),
        (b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Till: \x01\r\n\r\n", "Invalid header value char"),
    ],
)
async def test_a_request_head_refused_before_any_handler_is_answered_in_the_apis_json(
    agent: Agent, head: bytes, reason_start: str
) -> None:
    """aiohttp refuses a malformed request head itself, before any handler: its answer was text/plain ("Invalid
    character in Content-Length:" and a caret drawing), where every other refusal of this API is a JSON body a sender
    can parse. Now the same 400 in the API's shape, the first line of aiohttp's reason as ``reason``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(head)
    answer = await asyncio.wait_for(reader.read(), 5)  # the connection closes after a refused head
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"400", answer
    assert b"content-type: application/json" in headers.lower(), answer
    parsed = json.loads(body)
    assert parsed["error"] == "malformed_request" and parsed["reason"].startswith(reason_start), parsed
    assert "\n" not in parsed["reason"], parsed


async def test_an_order_sent_with_a_utf8_byte_order_mark_is_taken(
    api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Some senders put a UTF-8 byte order mark before the JSON (.NET's StreamWriter and PowerShell 5's utf8 do by
    default); RFC 8259 8.1 lets a parser ignore it. Refused with 400, every order of such a backend was lost to the
    kitchen (before: 400 "Unexpected UTF-8 BOM"). It is the same order as without the mark: sent again bare, a
    duplicate."""
    body = json.dumps(example_order).encode()
    status, answer = await post(api, b"\xef\xbb\xbf" + body, headers={"Content-Type": "application/json"})
    assert (status, answer["status"]) == (201, "stored"), answer
    status, answer = await post(api, body, headers={"Content-Type": "application/json"})
    assert (status, answer["status"]) == (200, "duplicate"), answer
    await printers["kitchen"].wait_for_printed(1)


async def test_top_level_array_is_422(api: aiohttp.ClientSession) -> None:
    status, body = await post(api, [1, 2])
    assert (status, body) == (422, {"error": "invalid_order", "reason": "must be an object", "field": "body"})


async def test_auth_missing_and_wrong_token_are_401(agent: Agent, example_order: dict) -> None:
    async with api_client(agent, token=None) as anonymous:
        for headers, reason in (
            ({}, "missing Authorization: Bearer <token> header"),
            ({"Authorization": "Bearer nope"}, "wrong token"),
            ({"Authorization": TOKEN}, "wrong token"),
        ):
            async with anonymous.post("/api/v1/orders", json=example_order, headers=headers) as response:
                assert response.status == 401
                assert await response.json() == {"error": "unauthorized", "reason": reason}
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with anonymous.get("/health") as response:
            assert response.status == 200  # probes need no token
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer  "])
async def test_the_auth_scheme_is_case_insensitive_and_the_token_is_the_token(
    agent: Agent, example_order: dict, scheme: str
) -> None:
    """HTTP's authentication scheme is case-insensitive and may be followed by more than one space (RFC 9110 11.1 and
    11.4): a sender writing "bearer <token>" had every order refused as a "wrong token" (before: 401), with the token
    right. A token that differs is still refused."""
    async with api_client(agent, token=None) as anonymous:
        async with anonymous.post(
            "/api/v1/orders", json=example_order, headers={"Authorization": f"{scheme} {TOKEN}"}
        ) as response:
            assert response.status == 201, await response.text()
        async with anonymous.post(
            "/api/v1/orders", json=example_order, headers={"Authorization": f"{scheme} {TOKEN}x"}
        ) as response:
            assert response.status == 401


@pytest.mark.parametrize(
    "tokens", [(TOKEN, "nope"), ("nope", TOKEN), (TOKEN, TOKEN)], ids=["right-wrong", "wrong-right", "twice"]
)
async def test_two_authorization_headers_are_400_naming_the_header_whichever_comes_first(
    agent: Agent, example_order: dict, tokens: tuple[str, str]
) -> None:
    """A request with two `Authorization` headers (a proxy that adds its own, a till's library and its code each
    setting one) is refused 400 naming the header: which of them counts is not the agent's to guess, and nothing is
    stored. Before stop 62: the first one won, so (right, wrong) was stored 201 and (wrong, right) refused 401 (probe
    intake2 s09)."""
    headers = CIMultiDict([("Authorization", f"Bearer {token}") for token in tokens])
    async with api_client(agent, token=None) as anonymous:
        async with anonymous.post("/api/v1/orders", json=example_order, headers=headers) as response:
            answer = await response.json()
            assert (response.status, answer["error"]) == (400, "malformed_request"), answer
            assert "Authorization" in answer["reason"], answer
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


async def test_body_over_limit_is_413(api: aiohttp.ClientSession, example_order: dict) -> None:
    example_order["padding"] = "x" * (300 * 1024)
    status, body = await post(api, example_order)
    assert status == 413
    assert body["error"] == "request_entity_too_large"


async def test_shutting_down_is_503(agent: Agent, api: aiohttp.ClientSession, example_order: dict) -> None:
    """While draining, intake says 503 with Retry-After so the backend retries; nothing is stored."""
    assert agent.deps is not None
    agent.deps.accepting = False
    async with api.post("/api/v1/orders", json=example_order) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"] == "service_unavailable"
    async with api.get("/ready") as response:
        assert response.status == 503
    agent.deps.accepting = True


async def test_order_status_and_reprint(
    api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """GET shows each job's state; reprint queues copies that print with the COPY mark."""
    await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    await printers["front"].wait_for_printed(1)
    for _ in range(50):
        async with api.get("/api/v1/orders/ord_7f3a9c21") as response:
            body = await response.json()
        if body["printed"]:
            break
        await asyncio.sleep(0.05)
    assert response.status == 200
    assert [(j["kind"], j["station"], j["printer"], j["state"], j["attempts"]) for j in body["jobs"]] == [
        ("ticket", "kitchen", "kitchen", "printed", 0),
        ("receipt", None, "front", "printed", 0),
    ]
    assert body["order"]["number"] == "A-1042"

    async with api.post("/api/v1/orders/ord_7f3a9c21/reprint", json={"station": "kitchen"}) as response:
        assert response.status == 201
        assert len((await response.json())["job_ids"]) == 1
    copy_ticket = (await printers["kitchen"].wait_for_printed(2))[1]
    assert "KOPIE / COPY" in decode(copy_ticket).text
    assert "KOPIE" not in decode(printers["kitchen"].printed[0]).text
    assert len(printers["front"].printed) == 1

    async with api.get("/api/v1/orders/nope") as response:
        assert response.status == 404
        assert await response.json() == {"error": "not_found", "reason": "order nope does not exist"}


async def test_a_reprint_for_a_station_no_utf8_can_carry_is_422_naming_it(
    api: aiohttp.ClientSession, example_order: dict
) -> None:
    """A reprint whose station is a lone surrogate (JSON's "\\ud800"): 422 naming `station`, no job added. Before stop
    66 (the adversarial probe, fuzzdoors F3) a 500: the copy's row could not be written."""
    await post(api, example_order)
    headers = {"Content-Type": "application/json"}
    async with api.post("/api/v1/orders/ord_7f3a9c21/reprint", data=b'{"station": "\\ud800"}', headers=headers) as r:
        assert r.status == 422, await r.text()
        assert (await r.json())["field"] == "station"


async def test_channel_never_changes_routing(api: aiohttp.ClientSession, example_order: dict) -> None:
    """The same order under every channel gets the same tickets on the same printers."""
    plans = set()
    for n, channel in enumerate(CHANNELS):
        order = copy.deepcopy(example_order)
        order["id"] = f"ord_channel_{n}"
        order["channel"] = channel
        status, _ = await post(api, order)
        assert status == 201
        async with api.get(f"/api/v1/orders/{order['id']}") as response:
            jobs = (await response.json())["jobs"]
        plans.add(tuple((j["kind"], j["station"], j["printer"]) for j in jobs))
    assert plans == {(("ticket", "kitchen", "kitchen"), ("receipt", None, "front"))}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
EXAMPLE_PATHS = [
    ("id",),
    ("number",),
    ("created_at",),
    ("items",),
    ("totals",),
    ("fulfilment",),
    ("customer",),
    ("priority",),
    ("print_receipt",),
    ("payment",),
]


@st.composite
def mutated_orders(draw: st.DrawFn) -> Any:

    if draw(st.booleans()):
        return draw(json_values)
    order = copy.deepcopy(EXAMPLE)
    order["id"] = draw(st.text(alphabet="abc_-.0123456789", min_size=1, max_size=8))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(EXAMPLE_PATHS))[0]
        target = order
        nested = order.get(key)
        if isinstance(nested, list) and nested and isinstance(nested[0], dict):
            nested = nested[0]
        if isinstance(nested, dict) and nested and draw(st.booleans()):
            target = nested
            key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(json_values)
    return order


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated_orders())
async def test_random_json_never_gets_a_5xx(api: aiohttp.ClientSession, body: Any) -> None:
    """Whatever JSON arrives, the answer is 2xx, 400, 409 or 422 — never a 5xx."""
    status, answer = await post(api, body)
    assert status in (200, 201, 400, 409, 422), answer
    if status in (400, 422):
        assert answer["reason"]


@pytest.mark.parametrize("depth", [900, 940, 970, 990, 1000, 5000])
async def test_deep_json_inside_an_unknown_field_is_refused_not_500(
    api: aiohttp.ClientSession, example_order: dict, depth: int
) -> None:
    """JSON nested hundreds deep inside a field we do not know is refused with the field named, never a 500."""
    nested = "[" * depth + "]" * depth
    raw = json.dumps(example_order)[:-1] + f', "extra": {nested}}}'
    status, body = await post(api, raw.encode(), headers={"Content-Type": "application/json"})
    assert status in (400, 422), body
    assert "deep" in body["reason"]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "[1e999]"])
async def test_a_number_too_large_for_a_float_is_refused_not_stored_as_infinity(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, number: str
) -> None:
    """1e400 is valid JSON but no float: Python reads it as infinity, which standard JSON cannot write back (SQLite's
    JSON functions and central's parser refuse "Infinity"). Refused with 422 naming the field; nothing stored; the
    order's reprint and everything else that reads stored orders keep working."""
    raw = json.dumps(example_order)[:-1] + f', "x_extra": {number}}}'
    status, body = await post(api, raw.encode(), headers={"Content-Type": "application/json"})
    assert (status, body.get("field")) == (422, "x_extra"), body
    assert await db_rows(agent, "SELECT COUNT(*) FROM orders") == [(0,)]


@pytest.mark.parametrize(
    ("field", "number", "reason"),
    [
        ("items[0].qty", "9" * 5000, "must be between 1 and"),
        ("x_extra", "1" * 5000, "too large"),
        ("fulfilment.table", "1" * 5000, "got a number too large"),
        ("fulfilment.table", "-1e400", "got a number too large"),
    ],
    ids=["qty", "unread", "table", "table-1e400"],
)
async def test_an_integer_of_5000_digits_is_refused_naming_its_field_not_called_invalid_json(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, field: str, number: str, reason: str
) -> None:
    """An integer of more digits than Python reads by default (4,300) is valid JSON: as ``qty``, as the table, or in a
    field the agent does not read, it is refused as a number too large is (422 naming the field), never as JSON the
    till sent wrong, and no Python hint reaches the till. Before (the inject81 probe, F2): 400 "the body is not valid
    JSON: Exceeds the limit (4300 digits) for integer string conversion ... use sys.set_int_max_str_digits() to
    increase the limit", no field named. Before stop 81's end a table of 5000 digits or 1e400 read "must be a string
    or a number, got number", which contradicts itself (the verify81 probe, F5)."""
    example_order["items"][0]["qty"] = 2
    example_order["fulfilment"]["table"] = 7
    raw = json.dumps(example_order)
    if field == "x_extra":
        raw = raw[:-1] + ', "x_extra": ' + number + "}"
    elif field == "fulfilment.table":
        raw = raw.replace('"table": 7', '"table": ' + number, 1)
    else:  # the first item's
        raw = raw.replace('"qty": 2', '"qty": ' + number, 1)
    status, body = await post(api, raw.encode(), headers={"Content-Type": "application/json"})
    assert (status, body.get("field")) == (422, field), body
    assert reason in body["reason"] and "sys." not in body["reason"], body
    assert await db_rows(agent, "SELECT COUNT(*) FROM orders") == [(0,)]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.update(id="abc\n"), "id"),
        (lambda o: o["items"][0].update(station="kitchen\n"), "items[0].station"),
        (lambda o: o["items"][0].update(unit_price="9.50\n"), "items[0].unit_price"),
        (lambda o: o["items"][0].update(unit_price="٩.٥٠"), "items[0].unit_price"),
        (lambda o: o["totals"].update(currency="EUR\n"), "totals.currency"),
    ],
)
async def test_a_trailing_newline_or_foreign_digits_never_pass_a_pattern(
    api: aiohttp.ClientSession, example_order: dict, mutate: Any, field: str
) -> None:
    """Patterns match the whole value: "abc\\n" is not an order id (its QR code would not scan)."""
    mutate(example_order)
    status, body = await post(api, example_order)
    assert (status, body["field"]) == (422, field), body


@pytest.mark.parametrize(
    ("raw_field", "field"),
    [
        ('"fulfilment": {"type": "pickup", "table": null, "due_at": "9999-12-31T23:59:59Z"}', "fulfilment.due_at"),
        ('"created_at": "0001-01-01T00:00:00+14:00"', "created_at"),
        ('"channel": "web\\ud800"', "channel"),
        ('"extra": {"note": "\\udfff"}', "extra"),
        ('"fulfilment": {"type": "dine_in", "table": 10000000000000000000000, "due_at": null}', "fulfilment.table"),
    ],
)
async def test_an_order_that_could_never_print_is_refused_not_stored(
    make_agent: Any, example_order: dict, raw_field: str, field: str
) -> None:
    """A due date in year 9999 (it overflows in Europe/Berlin), text with a lone surrogate (it cannot be hashed or
    stored), a table number of 23 digits: refused 422 naming the field, nothing stored, never 201 and never a 500."""
    agent = await make_agent(agent={"timezone": "Europe/Berlin"})
    key = raw_field.split('"')[1]
    example_order.pop(key, None)
    raw = json.dumps(example_order)[:-1] + ", " + raw_field + "}"
    async with api_client(agent) as api:
        status, body = await post(api, raw.encode(), headers={"Content-Type": "application/json"})
    assert (status, body.get("field")) == (422, field), body
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize("name", ["\\ud800", "Pizza \\udfff", " \\ud800 "], ids=["alone", "in-a-name", "among-spaces"])
async def test_an_item_name_with_a_lone_surrogate_is_refused_as_not_unicode_naming_the_item(
    agent: Agent, example_order: dict, name: str
) -> None:
    """An item named by a lone surrogate (JSON's `\\ud800`, which no UTF-8 can carry), alone or in a name: 422 naming
    `items[0].name` and saying it is not valid Unicode, as for the same in any other text, and nothing stored. Before
    stop 62: one alone was "must not be empty" (a surrogate counted as blank, like a control character), one in a
    name was blamed on the whole `items` (probe intake2 s03)."""
    raw = json.dumps(example_order).replace('"Pizza Margherita"', f'"{name}"', 1)
    async with api_client(agent) as api:
        status, body = await post(api, raw.encode(), headers={"Content-Type": "application/json"})
    assert (status, body.get("field")) == (422, "items[0].name"), body
    assert "not valid Unicode (a lone surrogate)" in body["reason"], body
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b'{"not": "gzip"}'),
        ("deflate", b"plain, not deflated"),
        ("gzip", gzip.compress(b"{}")[:-4] + b"bad!"),
        ("x-gzip", gzip.compress(b"{}")[:-4] + b"bad!"),
        ("x-gzip", gzip.compress(b'{"id": "cut short"}')[:-6]),
        ("gzip, identity", gzip.compress(b"{}") + b"more"),
        ("gzip", gzip.compress(json.dumps({"id": "tail", "items": [f"dish {n}" for n in range(300)]}).encode()) + b"!"),
        ("gzip", gzip.compress(b'{"id": "no trailer"}')[:-8]),
    ],
    ids=[
        "plain-labelled-gzip",
        "plain-labelled-deflate",
        "gzip-bad-checksum",
        "x-gzip-bad-checksum",
        "cut-short",
        "tail",
        "lone-gzip-tail",
        "lone-gzip-without-trailer",
    ],
)
async def test_a_body_its_content_encoding_cannot_decode_is_400_naming_it_never_500(
    api: aiohttp.ClientSession, example_order: dict, encoding: str, body: bytes
) -> None:
    """A till or a proxy that labels plain JSON `Content-Encoding: gzip`, or a damaged gzip body: a clear 400 the
    sender does not retry, naming the header. Before: 500 "internal error" (a sender retries a 5xx for ever), and a
    traceback in the log at each try. The till's next order, on its pooled keep-alive connection, is taken: an answer
    after which the connection cannot go on says `Connection: close`. Before stop 78 (the http78 probe, F2) it was
    dropped unsaid after the 400, and that next order met a reset."""
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    status, answer = await post(api, body, headers=headers)
    assert (status, answer["error"]) == (400, "malformed_request"), answer
    assert "Content-Encoding" in answer["reason"], answer
    status, answer = await post(api, example_order)
    assert status == 201, answer


async def test_plain_json_labelled_gzip_again_and_again_is_one_warning_not_a_traceback_each(agent: Agent) -> None:
    """A till that labels its plain JSON `Content-Encoding: gzip` retries it: each try is answered 400 naming the
    header, and the log gets at most one summarised `api_bad_request` line, never a traceback. Before stop 62: each
    was also `api_protocol_error` at level error with a ~2 KB "Unhandled exception" traceback (aiohttp draining the
    undecodable body after the answer; 200 tries, probe intake2 s05)."""
    body = json.dumps(make_order(1, prefix="label")).encode()
    request = (
        f"POST /api/v1/orders HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with capture_logs() as logs:
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            writer.write(request)
            answer = await asyncio.wait_for(
                reader.read(), 5
            )  # the agent closes it once done with the request, as asked
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Encoding (gzip)" in answer, answer
    noisy = [line for line in logs if line["log_level"] in ("warning", "error")]
    assert not [line for line in noisy if line["event"] != "api_bad_request"], noisy[:2]
    assert len(noisy) <= 1 and not any("exc_info" in line for line in noisy), noisy
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x1b\x0e\x00\xf8\x8d\x94n\xde\xb4\xd7\xe3\x06"),
        ("zstd", b"(\xb5/\xfd\x00X\x11\x00\x00{}"),
        ("compress", b"\x1f\x9d\x90{\x00"),
        ("gzip, br", b"\x1b\x0e\x00\xf8"),
        ("snappy", b"\xff\x06\x00\x00sNaPpY"),
    ],
    ids=["br", "zstd", "compress", "gzip-then-br", "unknown"],
)
async def test_a_body_in_a_content_coding_the_box_cannot_decode_is_415_and_taken_when_sent_plain(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, encoding: str, body: bytes
) -> None:
    """A sender that compresses with a coding the box does not have (brotli, zstd, LZW, one it made up) gets 415 and
    `Accept-Encoding` naming what the box decodes, as RFC 9110 15.5.16 asks: a client that follows RFC 7694 sends
    again uncompressed, and that is taken. Before: br and zstd were a 400 saying "Please install `Brotli`" (a fault
    of the box read as the sender's, never retried), the others a 400 "not JSON" or, when the body happened to be
    plain, taken under a label the box had ignored."""
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    status, answer = await post(api, body, headers=headers)
    assert (status, answer["error"]) == (415, "unsupported_content_encoding"), answer
    assert encoding.split(",")[-1].strip() in answer["reason"], answer
    async with api.post("/api/v1/orders", data=body, headers=headers) as response:
        assert {c.strip() for c in response.headers["Accept-Encoding"].split(",")} == {"gzip", "deflate", "identity"}
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0
    status, answer = await post(api, example_order)
    assert status == 201, answer


@pytest.mark.parametrize(
    "encoding", ["x-gzip", "X-Gzip", "gzip, identity", "identity, gzip", "deflate, gzip", "gzip, raw-deflate"]
)
async def test_an_order_gzipped_under_another_name_or_a_list_of_codings_is_decoded_and_stored(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, encoding: str
) -> None:
    """`x-gzip` is gzip (RFC 9110 8.4.1.3: a recipient SHOULD take it as such; older tills and proxies still send
    it), and a list of codings is undone last first (8.4). Before: aiohttp decodes only a lone `gzip` or `deflate`,
    so these bodies reached the JSON parser compressed: a 400 "not JSON" the sender does not retry, the order lost."""
    raw = json.dumps(example_order).encode()
    for coding in (c.strip().lower() for c in encoding.split(",")):
        if coding in ("gzip", "x-gzip"):
            raw = gzip.compress(raw)
        elif coding in ("deflate", "raw-deflate"):  # zlib's wrapper, or none: some senders write deflate bare
            packer = zlib.compressobj(wbits=zlib.MAX_WBITS if coding == "deflate" else -zlib.MAX_WBITS)
            raw = packer.compress(raw) + packer.flush()
    header = encoding.replace("raw-deflate", "deflate")
    status, answer = await post(api, raw, headers={"Content-Encoding": header, "Content-Type": "application/json"})
    assert (status, answer.get("order_id")) == (201, example_order["id"]), answer
    assert (await db_rows(agent, "SELECT id FROM orders")) == [(example_order["id"],)]


async def test_an_order_gzipped_as_several_members_or_labelled_in_two_header_lines_is_decoded_and_stored(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict
) -> None:
    """A gzip body is a series of members (RFC 1952 2.2: what `cat a.gz b.gz`, `pigz --independent` or a streaming
    writer that flushes members make); two Content-Encoding lines are one list (RFC 9110 5.3). Both are decoded whole
    and the order stored. Before (the http78 probe): two members got no answer at all, the connection reset (the
    sender retries the same bytes for ever), and `gzip` + `identity` on two lines a 400 "not UTF-8"."""
    raw = json.dumps(example_order).encode()
    members = gzip.compress(raw[:50]) + gzip.compress(raw[50:])
    status, answer = await post(api, members, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert (status, answer.get("order_id")) == (201, example_order["id"]), answer
    second = {**example_order, "id": example_order["id"] + "-2", "number": "A-2"}
    headers = CIMultiDict([("Content-Encoding", "gzip"), ("Content-Encoding", "identity")])
    headers["Content-Type"] = "application/json"
    status, answer = await post(api, gzip.compress(json.dumps(second).encode()), headers=headers)
    assert (status, answer.get("order_id")) == (201, second["id"]), answer
    assert sorted(await db_rows(agent, "SELECT id FROM orders")) == [(example_order["id"],), (second["id"],)]


@pytest.mark.parametrize("label", ["UTF-8", "utf8", "json", "none"])
async def test_plain_json_under_a_label_that_names_no_coding_is_taken(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, label: str
) -> None:
    """Some HTTP stacks put the charset in Content-Encoding ("UTF-8"): the body is plain JSON under a word that is no
    content coding at all. It is taken as the JSON it is (the box took it before the 415 above existed, and a till
    sending so would otherwise lose every order); a body that is not JSON under such a word is still 415."""
    headers = {"Content-Encoding": label, "Content-Type": "application/json"}
    status, answer = await post(api, json.dumps(example_order).encode(), headers=headers)
    assert (status, answer.get("order_id")) == (201, example_order["id"]), answer
    status, answer = await post(api, gzip.compress(b"{}"), headers=headers)
    assert (status, answer["error"]) == (415, "unsupported_content_encoding"), answer


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip"])
async def test_a_body_that_decodes_to_exactly_max_body_bytes_is_taken_and_one_byte_more_is_413(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, encoding: str
) -> None:
    """The limit is on the decoded body, the same for the codings aiohttp undoes and those the agent does."""
    limit = agent.settings.api.max_body_bytes
    raw = json.dumps(example_order).encode()
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
    status, answer = await post(api, gzip.compress(raw + b" " * (limit - len(raw))), headers=headers)
    assert status == 201, answer
    status, answer = await post(api, gzip.compress(raw + b" " * (limit + 1 - len(raw))), headers=headers)
    assert (status, answer["error"]) == (413, "request_entity_too_large"), answer


async def test_a_body_that_decodes_to_more_than_max_body_bytes_is_413_before_it_is_all_unpacked(
    agent: Agent, api: aiohttp.ClientSession
) -> None:
    """A small x-gzip body that unpacks to 64 MiB (a zip bomb, or a till's runaway log) is refused as too large once
    `api.max_body_bytes` is passed, as aiohttp does for plain gzip, and the box never holds it all."""
    bomb = gzip.compress(b" " * (64 << 20))
    headers = {"Content-Encoding": "x-gzip", "Content-Type": "application/json"}
    status, answer = await post(api, bomb, headers=headers)
    assert (status, answer["error"]) == (413, "request_entity_too_large"), answer
    status, answer = await post(api, bomb, headers={**headers, "Content-Encoding": "gzip"})
    assert (status, answer["error"]) == (413, "request_entity_too_large"), answer


async def test_a_body_declared_larger_than_max_body_bytes_is_413_at_once_not_a_wait_for_it(agent: Agent) -> None:
    """A request whose Content-Length says more than `api.max_body_bytes` is answered 413 as soon as its head is read
    (RFC 9110 15.5.14), while the sender is still sending; what it sends meanwhile is read and dropped for a while (as
    nginx's lingering close does), so a sender that writes its whole body before it reads still gets the answer.
    Before (intake probe): the agent waited for the body and answered 408 after `api.body_timeout_s` (30 s)."""
    declared = agent.settings.api.max_body_bytes * 1000
    head = (
        f"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(head + b'{"id": "')
        await writer.drain()
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer_head.startswith(b"HTTP/1.1 413"), answer_head
        length = int(re.search(rb"Content-Length: (\d+)", answer_head, re.IGNORECASE)[1])  # type: ignore[index]
        answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        assert answer["error"] == "request_entity_too_large" and str(agent.settings.api.max_body_bytes) in str(answer)
    finally:
        writer.close()
    assert (await db_rows(agent, "SELECT id FROM orders")) == []


async def test_a_transfer_coding_the_box_does_not_know_is_501_not_a_misleading_400(
    agent: Agent, example_order: dict
) -> None:
    """`Transfer-Encoding: gzip, chunked` (a transfer coding on top of chunked, RFC 9112 6.1): the box does not undo
    it, and answers 501 naming it (what a server SHOULD answer there), closing the connection; the same order sent
    with Content-Encoding instead is taken. Before (the http78 probe, F7): a 400 "the body is not UTF-8", which blamed
    the order's text."""
    body = gzip.compress(json.dumps(example_order).encode())
    head = (
        f"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # and the connection closed
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 501"), answer
    assert b"Transfer-Encoding (gzip" in answer, answer
    assert (await db_rows(agent, "SELECT id FROM orders")) == []


def _head_expecting_100(extra: str, length: int) -> bytes:
    return (
        f"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


async def _first_answer_to(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The head of the first answer to a request ``head`` sent alone (its body held back)."""
    writer.write(head)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (f"Authorization: Bearer {TOKEN}\r\nExpect: 100-continue, foo\r\n", 417),
        ("Authorization: Bearer not-the-token\r\n", 401),
        (f"Authorization: Bearer {TOKEN}\r\nContent-Encoding: br\r\n", 415),
        (f"Authorization: Bearer {TOKEN}\r\nX-Too-Large: yes\r\n", 413),
    ],
    ids=["unknown-expectation", "wrong-token", "coding-it-cannot-decode", "declared-too-large"],
)
async def test_a_sender_waiting_for_100_continue_is_refused_before_it_sends_its_body(
    agent: Agent, example_order: dict, extra: str, status: int
) -> None:
    """curl, .NET and Java clients send `Expect: 100-continue` with a larger body and wait for the interim answer
    before they send it. A request that will be refused is answered with its final status instead, and the
    connection closed (RFC 9110 10.1.1: a server that will not read the content answers the final status; 15.2.1).
    Before (stop 71's noticed and left): the agent answered `100 Continue` to any request, before its checks, so the
    sender uploaded its whole order to a box that then refused it for its token."""
    length = agent.settings.api.max_body_bytes + 1 if "X-Too-Large" in extra else len(json.dumps(example_order))
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        answer_head = await _first_answer_to(_head_expecting_100(extra, length), reader, writer)
        assert re.match(rb"HTTP/1\.[01] %d " % status, answer_head), answer_head  # 415: refused with the head
        assert b"Content-Type: application/json" in answer_head, answer_head  # the API's errors, all of them
        # The body never came: the answer says the connection ends (an HTTP/1.0 answer does by itself); what the
        # sender may still send is read and dropped for a while (aiohttp's lingering close), as after any 413.
        closes = answer_head.startswith(b"HTTP/1.0") or re.search(rb"\r\nConnection: close\r\n", answer_head, re.I)
        assert closes, answer_head
    finally:
        writer.close()
    assert (await db_rows(agent, "SELECT id FROM orders")) == []


async def test_a_sender_waiting_for_100_continue_is_told_to_go_on_and_its_order_is_taken_once(
    agent: Agent, example_order: dict
) -> None:
    """With a good token the agent answers `100 Continue` to the head alone, then 201 to the body, on one
    connection, which stays open for the next order; aiohttp's own client (`expect100=True`) gets 201 too."""
    body = json.dumps(example_order).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        interim = await _first_answer_to(
            _head_expecting_100(f"Authorization: Bearer {TOKEN}\r\n", len(body)), reader, writer
        )
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        writer.write(body)
        await writer.drain()
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer_head.startswith(b"HTTP/1.1 201"), answer_head
        assert not re.search(rb"\r\nConnection: close\r\n", answer_head, re.IGNORECASE), answer_head
    finally:
        writer.close()
    async with api_client(agent) as api, api.post("/api/v1/orders", json=example_order, expect100=True) as response:
        assert response.status == 200, await response.text()  # the same order again: a duplicate, not a new one
    assert (await db_rows(agent, "SELECT id FROM orders")) == [(example_order["id"],)]


async def test_a_sender_that_half_closes_after_its_request_gets_its_answer(agent: Agent, example_order: dict) -> None:
    """Some senders close their sending side once the request is out (`nc -N`, socat, embedded HTTP stacks): TCP
    still carries the answer back (RFC 9112 9.6 asks a server to read on after a half close). Before: the agent
    closed the connection at the client's FIN: the order was stored and printed, but the sender never got its 201,
    and a retry that it could not tell apart from a lost order."""
    body = json.dumps(example_order).encode()
    head = (
        f"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(head + body)
    await writer.drain()
    writer.write_eof()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 201"), status_line
    # ...and the connection closes after it, as the docs say: `nc -N` exits only then. Before, it stayed open until
    # the idle timeout (15 s), aiohttp having set keep-alive again from the answer (probe_intake D7).
    await asyncio.wait_for(reader.read(), 2)
    writer.close()


async def test_a_line_id_used_twice_is_refused_naming_the_second_line(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A line_id names one line across revisions (change tickets match lines by it): two lines with one line_id, a
    sender's bug, are refused 422 naming the second, in a first revision and in a change, and nothing changes. Before:
    taken, and the change ticket merged the two lines (two pizzas shown turned into a Tiramisu)."""
    for n, item in enumerate(example_order["items"]):
        item["line_id"] = f"L{n + 1}"
    twice = copy.deepcopy(example_order)
    twice["items"][1]["line_id"] = "L1"
    status, body = await post(api, twice)
    assert (status, body["field"]) == (422, "items[1].line_id"), body
    assert "items[0]" in body["reason"], body
    assert (await post(api, example_order))[0] == 201
    change = copy.deepcopy(example_order) | {"revision": 2}
    change["items"].append(copy.deepcopy(change["items"][0]) | {"sku": "TIRAMISU", "name": "Tiramisu", "qty": 1})
    status, body = await post(api, change)
    assert (status, body["field"]) == (422, f"items[{len(change['items']) - 1}].line_id"), body
    assert await db_rows(agent, "SELECT revision FROM orders") == [(1,)]
    await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows), what="printed")
    assert len(printers["kitchen"].printed) == 1


async def test_an_order_its_rows_cannot_take_fails_alone_not_the_orders_sharing_its_commit(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten orders arrive with one whose ticket's key a row left by an older version already holds (a UNIQUE
    constraint): it is refused on its own; the ten share commits and are stored, answered 201. Before, SQLite's
    constraint error counted as the store failing, and every order in that order's commit was answered 503
    (probe_intake D3)."""
    slow_fsync(monkeypatch, 0.05)  # orders that arrive during an fsync share the next commit
    assert (await post(api, example_order))[0] == 201
    await db_execute(
        agent.settings.agent.db_path,
        "INSERT INTO print_jobs(order_id, kind, station, printer, created_at, idempotency_key)"
        " VALUES (?, 'ticket', 'kitchen', 'kitchen', 0, 'ord_poison:ticket:kitchen:0')",
        example_order["id"],
    )
    poison = make_order(0, prefix="poison") | {"id": "ord_poison", "print_receipt": False}
    for turn, count in enumerate((10, 10, 1, 1, 1)):  # commits of eleven, then of two
        others = [make_order(n, prefix=f"t{turn}") for n in range(count)]
        half = count // 2
        answers = await asyncio.gather(*(post(api, o) for o in [*others[:half], poison, *others[half:]]))
        statuses = [status for status, _ in answers]
        assert statuses[:half] + statuses[half + 1 :] == [201] * count, statuses
        assert statuses[half] >= 400, answers[half]


async def test_a_reprint_asked_for_by_the_number_on_the_ticket_reprints_todays_order(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """`edge reprint A-7`, the number on the ticket (as `edge preview` takes it): "order A-7 does not exist" (the
    technician probe). A number names the one order of today's business day with it, as for a scanner; one only of
    other days is named as such, not reprinted."""
    now = datetime.now(UTC)
    today = make_order(1, print_receipt=False)
    today["number"] = "A-7"
    older = taken_at(make_order(2, print_receipt=False), now - timedelta(days=2))
    older["number"] = "A-7"
    old_only = taken_at(make_order(3, print_receipt=False), now - timedelta(days=2))
    old_only["number"] = "B-9"
    for order in (older, old_only, today):
        assert (await post(api, order))[0] == 201
    await eventually(  # its ticket out first: a reprint of one not printed yet copies nothing
        lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE order_id = ?", today["id"]),
        lambda rows: rows == [("printed",)],
    )
    async with api.post("/api/v1/orders/A-7/reprint") as response:
        assert response.status == 201, await response.text()
        assert (await response.json())["order_id"] == today["id"]
    async with api.post("/api/v1/orders/B-9/reprint") as response:
        answer = await response.json()
    assert response.status == 404 and "1 of other days" in answer["reason"], answer


@pytest.mark.parametrize("number", ["A-1\nSTORNO", "A-1\r\nKOPIE", "A-1\u2028STORNO", "A-1\tX"])
async def test_an_order_number_of_more_than_one_line_is_refused_naming_it(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, number: str
) -> None:
    """The order number is the ticket's big head line. One with a line break ("A-1\\nSTORNO") printed as "A-1 STORNO"
    on the kitchen ticket and the receipt: a head that reads like a cancellation. Refused 422 naming `number`, nothing
    stored or printed (the intake probe, s03; before stop 62 it was stored and printed)."""
    agent = await make_agent()
    async with api_client(agent) as api:
        status, body = await post(api, example_order | {"number": number})
    assert (status, body.get("field")) == (422, "number"), body
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize("number", ["\u202eA-1042", "A-1042\u202d", "\u202bA-1\u202c", "\u2067A-1042\u2069"])
async def test_an_order_number_with_a_text_direction_control_is_refused_naming_it(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, number: str
) -> None:
    """A right-to-left override (U+202E) in "A-1042" is invisible on paper, where the ticket reads "A-1042", while the
    status page shows "2401-A": a cook matching tickets to the screen cannot. The number is refused 422
    naming `number`, and so is any embedding, override or isolate (U+202A-U+202E, U+2066-U+2069); nothing is
    stored (the status73 probe, D2: it was taken 201)."""
    agent = await make_agent()
    async with api_client(agent) as api:
        status, body = await post(api, example_order | {"number": number, "print_receipt": False})
    assert (status, body.get("field")) == (422, "number"), body
    assert "text-direction" in body["reason"], body
    assert (await db_rows(agent, "SELECT COUNT(*) FROM orders"))[0][0] == 0


@pytest.mark.parametrize("order_id", [".", "..", "..."])
async def test_an_order_id_of_dots_alone_is_refused_naming_it_no_url_can_name_that_order(
    api: aiohttp.ClientSession, example_order: dict, order_id: str
) -> None:
    """An id "." or ".." passed the pattern; a URL cannot name it (RFC 3986 removes dot segments, `%2e` alike), so
    the status page's Reprint of that order answered "Not Found" or "Method Not Allowed" and nothing printed (the
    api80 probe, F3). Refused at the door, 422 naming the id; nothing stored."""
    status, body = await post(api, example_order | {"id": order_id})
    assert status == 422 and body["field"] == "id", body
