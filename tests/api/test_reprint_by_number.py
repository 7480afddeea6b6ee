"""POST /api/v1/orders/{ref}/reprint where ids and ticket numbers are both plain integers (a till's running ids, its
numbers restarting daily): "57" may be an older order's id and today's ticket number. A person means the number on the
ticket; a machine that did not say which one it means is asked, never given a guess."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.store.files import order_jobs
from tests.helpers import api_client, db_rows, ids_meet_numbers, post, taken_then


@pytest.fixture
async def store(make_agent: Callable[..., Awaitable[Agent]]) -> Agent:
    """Berlin, 23:30: order id "57" (number 3) and "58" (number 4) two days old; today's "912" has number 57, "913"
    number 59, "70" number 70 (tests/helpers.py ids_meet_numbers)."""
    return await ids_meet_numbers(make_agent)


NUMBERS = {"57": "3", "58": "4", "912": "57", "913": "59", "70": "70"}  # each order's number, by its id


async def reprint(agent: Agent, ref: str, by: str | None = None) -> tuple[int, dict[str, Any]]:
    async with (
        api_client(agent) as api,
        api.post(f"/api/v1/orders/{ref}/reprint", params={"by": by} if by else None) as response,
    ):
        return response.status, await response.json()


async def copies(agent: Agent) -> list[str]:
    """The order of each COPY queued so far, oldest first."""
    return [order_id for (order_id,) in await db_rows(agent, "SELECT order_id FROM print_jobs WHERE copy ORDER BY id")]


async def copy_on_paper(printer: SimPrinter, count: int) -> tuple[str, list[str]]:
    """The ``count``-th ticket the printer printed, a COPY: the number at its head, and its QR codes."""
    ticket = decode((await printer.wait_for_printed(count))[count - 1])
    lines = [line.strip() for line in ticket.text.splitlines() if line.strip()]
    assert lines[0] == "KOPIE / COPY", ticket.text
    return lines[1], ticket.qr_codes


async def test_a_string_that_is_one_orders_id_and_todays_number_of_another_is_asked_about_then_reprints_the_one_named(
    store: Agent, printers: dict[str, SimPrinter]
) -> None:
    """Order id 57 is two days old (number 3); 57 is also the number on today's ticket of order 912. Unsaid which:
    409 ambiguous naming both (id, number, when created) and how to say which, nothing printed. ?by=number: today's
    ticket 57 as a COPY; ?by=id: the old order 57's. Before: a COPY of the two-day-old order 57 came out in the
    kitchen, and the 57 the cook asked for did not."""
    status, answer = await reprint(store, "57")
    assert (status, answer.get("error"), answer.get("field")) == (409, "ambiguous", "by"), answer
    reason = answer["reason"]
    said = ("'57'", "number '3'", "2026-11-27 12:00", "'912'", "number '57'", "2026-11-29 23:30", "by=id", "by=number")
    for named in said:
        assert named in reason, (named, reason)
    assert await copies(store) == []

    status, answer = await reprint(store, "57", by="number")
    assert (status, answer["order_id"]) == (201, "912"), answer
    assert await copies(store) == ["912"]
    head, qr = await copy_on_paper(printers["kitchen"], 6)  # five originals, then this COPY
    assert (head, qr) == ("57", ["edge:v1:912:kitchen"])

    status, answer = await reprint(store, "57", by="id")
    assert (status, answer["order_id"]) == (201, "57"), answer
    assert await copies(store) == ["912", "57"]
    head, qr = await copy_on_paper(printers["kitchen"], 7)
    assert (head, qr) == ("3", ["edge:v1:57:kitchen"])


@pytest.mark.parametrize(
    ("ref", "by", "named"),
    [
        ("58", None, "58"),  # an old order's id, no order of today has that number: the id names it, as before
        ("58", "id", "58"),
        ("58", "number", "58"),  # a person's reading: no order of today has number 58, so the id
        ("59", None, "913"),  # today's number, nobody's id
        ("59", "number", "913"),
        ("70", None, "70"),  # today's order whose id is its number: one order, nothing to ask
        ("70", "id", "70"),
        ("70", "number", "70"),
    ],
)
async def test_a_string_that_names_one_order_reprints_it(
    store: Agent, printers: dict[str, SimPrinter], ref: str, by: str | None, named: str
) -> None:
    """An id or today's number that names exactly one order reprints that order, whichever way it is asked for."""
    status, answer = await reprint(store, ref, by)
    assert (status, answer.get("order_id")) == (201, named), answer
    assert await copies(store) == [named]
    head, qr = await copy_on_paper(printers["kitchen"], 6)
    assert (head, qr) == (NUMBERS[named], [f"edge:v1:{named}:kitchen"])


@pytest.mark.parametrize(
    ("ref", "by", "status", "said"),
    [
        ("60", None, 404, "no order with id or number '60'"),
        ("60", "number", 404, "no order with id or number '60'"),
        ("60", "id", 404, "no order with id '60'"),
        ("59", "id", 404, "no order with id '59'"),  # today's number 59, but asked for as an id
        ("57", "ticket", 422, "must be id"),
    ],
)
async def test_a_string_that_names_no_order_the_way_asked_is_refused_naming_why(
    store: Agent, ref: str, by: str | None, status: int, said: str
) -> None:
    """Nothing of that id, nor of that number today: 404 naming what was looked for; a ``by`` that is neither: 422
    naming it. Nothing printed."""
    answer_status, answer = await reprint(store, ref, by)
    assert answer_status == status and said in answer["reason"], answer
    if status == 422:
        assert answer["field"] == "by", answer
    assert await copies(store) == []


async def test_an_id_that_is_the_number_of_two_of_todays_orders_is_asked_about_and_no_number_is_guessed(
    store: Agent, printers: dict[str, SimPrinter]
) -> None:
    """A second order of today with number 57 (the till's counter reset): "57" is the old order's id and the number of
    two of today's. Unsaid: 409 naming the old one; by number: 404 asking for the order id, never one of the two;
    by id: the old order 57."""
    assert isinstance(store.clock, SteppedClock)
    again = make_order(6, print_receipt=False) | {"id": "915", "number": "57"}
    await taken_then(store, store.clock, again, datetime.fromtimestamp(store.clock.wall(), UTC))
    status, answer = await reprint(store, "57")
    assert (status, answer.get("error")) == (409, "ambiguous") and "several orders of today" in answer["reason"], answer
    status, answer = await reprint(store, "57", by="number")
    assert status == 404 and "2 orders of today's" in answer["reason"] and "by=id" in answer["reason"], answer
    assert await copies(store) == []
    status, answer = await reprint(store, "57", by="id")
    assert (status, answer["order_id"]) == (201, "57"), answer
    head, qr = await copy_on_paper(printers["kitchen"], 7)
    assert (head, qr) == ("3", ["edge:v1:57:kitchen"])


async def ticket_head(printer: SimPrinter, count: int) -> str:
    """The number at the head of the ``count``-th ticket the printer printed, as a person reads and types it."""
    ticket = decode((await printer.wait_for_printed(count))[count - 1])
    return " ".join(next(line for line in ticket.text.splitlines() if line.strip()).split())


@pytest.mark.parametrize(
    ("number", "printed"),
    [
        ("\uff21-\uff11\uff10\uff14\uff12", "A-1042"),  # full-width
        ("A-\u0661\u0660\u0664\u0662", "A-1042"),  # Arabic-Indic digits
        ("A-10\u200b42", "A-1042"),  # a zero-width space inside
        ("A-10\u00ad42", "A-1042"),  # a soft hyphen inside
        ("A\u00a01042", "A 1042"),  # a no-break space
        ("\u0429-1047", "Shch-1047"),  # Cyrillic
    ],
    ids=["full-width", "arabic-indic", "zero-width-space", "soft-hyphen", "no-break-space", "cyrillic"],
)
async def test_an_order_whose_number_prints_otherwise_than_sent_is_reprinted_by_the_number_on_its_ticket(
    agent: Agent, example_order: dict[str, Any], printers: dict[str, SimPrinter], number: str, printed: str
) -> None:
    """The till sends a number the printer shows otherwise; the cook reads the ticket's head and asks for a reprint by
    it: the order's COPY prints, and `edge preview` finds the order by it too. Before: 404 "no order with id or number
    'A-1042'" (the inject81 probe, F1)."""
    example_order.update(number=number, print_receipt=False)
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    head = await ticket_head(printers["kitchen"], 1)
    assert head == printed
    status, answer = await reprint(agent, head, by="number")
    assert (status, answer.get("order_id")) == (201, example_order["id"]), answer
    assert await copy_on_paper(printers["kitchen"], 2) == (printed, [f"edge:v1:{example_order['id']}:kitchen"])
    jobs = await asyncio.to_thread(order_jobs, agent.settings.agent.db_path, head)
    assert {job.order_id for job in jobs} == {example_order["id"]}


async def test_two_of_todays_orders_whose_tickets_show_one_number_are_asked_about_never_guessed(
    agent: Agent, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """Today's B-1043 and "B-10\u200b43" (a zero-width space inside) both print "B-1043". The cook holding the second
    ticket asks for a reprint by its number: 404 saying two of today's orders have it, to give the order id; nothing
    printed. Before: 201, a COPY of the other order B-1043 (the inject81 probe, F1)."""
    plain = example_order | {"id": "plain_b", "number": "B-1043", "print_receipt": False}
    hidden = example_order | {"id": "zwsp_b", "number": "B-10\u200b43", "print_receipt": False}
    async with api_client(agent) as api:
        for order in (plain, hidden):
            assert (await post(api, order))[0] == 201
    assert [await ticket_head(printers["kitchen"], n) for n in (1, 2)] == ["B-1043", "B-1043"]
    for by in ("number", None):
        status, answer = await reprint(agent, "B-1043", by)
        assert status == 404 and "2 orders of today's" in answer["reason"] and "by=id" in answer["reason"], answer
    assert await copies(agent) == []
