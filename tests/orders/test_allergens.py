"""A guest's allergies and the order's note, sent beside the contract's fields (``allergens`` and ``note`` of the order
or of an item), reach the kitchen: HTTP in, bytes out of the simulated printers."""

from __future__ import annotations

import copy
import re
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from edge.app import Agent
from edge.errors import InvalidOrderError
from edge.orders.intake import Router
from edge.printing.decode import decode
from edge.printing.render import Renderer
from edge.sim.printer import SimPrinter
from edge.states import OrderSource
from tests.helpers import EXAMPLE, api_client, db_execute, db_rows, eventually, examples, guest_words, job_rows, post

PEANUTS_SESAME = ["Erdnüsse", "Sesam"]
PEANUTS_SESAME_CODED = [{"code": "E", "name": "Erdnüsse"}, {"code": "N", "name": "Sesam"}]


def flat(data: bytes) -> str:
    """A printed job's text on one line, its words single-spaced (a line the layout wrapped reads as one)."""
    return " ".join(decode(data).text.split())


async def printed_all(agent: Agent) -> None:
    await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows), what="all printed")


@pytest.mark.parametrize("allergens", [PEANUTS_SESAME, PEANUTS_SESAME_CODED], ids=["strings", "objects"])
async def test_the_orders_allergens_and_note_print_on_each_stations_ticket_before_the_dishes(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict[str, Any],
    printers: dict[str, SimPrinter],
    allergens: list[Any],
) -> None:
    """The backend sends the guest's allergy and a note with the order, the Käsespätzle with one of its own. The agent
    kept them in the stored payload and printed none of them: the cook cooked without knowing. Each station's ticket
    (kitchen, and the bar's Apfelschorle here) says ALLERGENE in bold inverse after its head, the note below it, and
    the dish's allergens under the dish; the customer's receipt does not, and the job preview shows what the paper
    does."""
    example_order["allergens"] = allergens
    example_order["note"] = "Allergie: Erdnüsse — bitte alles getrennt"
    example_order["items"][1]["allergens"] = [{"code": "I", "name": "Sellerie"}]
    example_order["items"][2].update(requires_production=True, station="bar")
    status, body = await post(api, example_order)
    assert status == 201, body
    tickets = await printers["kitchen"].wait_for_printed(2)
    receipt = (await printers["front"].wait_for_printed(1))[0]
    await printed_all(agent)
    said = "ALLERGENE: Erdnüsse, Sesam Hinweis: Allergie: Erdnüsse - bitte alles getrennt -----"
    for ticket in tickets:
        text = flat(ticket)
        assert said in text, text
        assert "ALLERGENE: Erdnüsse, Sesam" in decode(ticket).bold_text, decode(ticket).bold_text
        head = text[: text.index(said)]
        assert "Station:" in head and not re.search(r"\dx ", head), text  # after the head, before the dishes
    kitchen, bar = sorted((flat(ticket) for ticket in tickets), key=lambda text: "Station: bar" in text)
    assert "1x Käsespätzle ! ALLERGENE: Sellerie -----" in kitchen, kitchen
    assert "2x Apfelschorle 0,5 l -----" in bar, bar
    assert "Erdnüsse" not in decode(receipt).text and "Sellerie" not in decode(receipt).text
    async with api.get(f"/api/v1/jobs/{body['job_ids'][0]}/preview") as response:
        preview = " ".join((await response.text()).split())
    assert "ALLERGENE: Erdnüsse, Sesam Hinweis: Allergie: Erdnüsse - bitte alles getrennt" in preview, preview


async def test_allergens_in_english_are_allergens(
    make_agent: Any, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """A store printing in English reads ALLERGENS and Note."""
    agent = await make_agent(agent={"language": "en"})
    example_order.update(allergens="Peanuts", note="Window table", print_receipt=False)
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    text = flat((await printers["kitchen"].wait_for_printed(1))[0])
    assert "ALLERGENS: Peanuts Note: Window table" in text, text


@pytest.mark.parametrize(
    ("allergens", "note", "printed", "not_understood"),
    [
        (14, None, None, ["allergens (number)"]),
        (
            ["Erdnüsse", [["Sesam"]], {"code": "F"}, {"id": 3}, 7, None, "", {"name": " ", "code": "G"}],
            {"text": "Fenster"},
            "ALLERGENE: Erdnüsse, F, G",
            ["allergens[1] (array)", "allergens[3] (object)", "allergens[4] (number)", "note (object)"],
        ),
        ({"name": "Erdnüsse"}, 42, "ALLERGENE: Erdnüsse", ["note (number)"]),
    ],
    ids=["a-number", "nested-junk", "one-object"],
)
async def test_allergens_of_an_odd_shape_never_refuse_the_order(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict[str, Any],
    printers: dict[str, SimPrinter],
    allergens: Any,
    note: Any,
    printed: str | None,
    not_understood: list[str],
) -> None:
    """Fields off the contract never refuse an order (they were taken before): a number, an array in an array, an
    object without name or code are 201 and print what can be read, and one log line says what was not (where, and its
    JSON type: never the guest's words)."""
    example_order.update(allergens=allergens, note=note, print_receipt=False)
    with capture_logs() as logs:
        status, body = await post(api, example_order)
    assert status == 201, body
    text = flat((await printers["kitchen"].wait_for_printed(1))[0])
    assert "Pizza Margherita" in text, text
    if printed is None:
        assert "ALLERGENE" not in text and "Hinweis" not in text, text
    else:
        assert printed + (" -----" if not isinstance(note, str) else "") in text, text
    said = [entry for entry in logs if entry["event"] == "order_fields_not_understood"]
    assert [entry["fields"] for entry in said] == [not_understood], logs


async def test_a_flood_of_allergens_prints_a_ticket_of_bounded_length(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """A sender gone wrong (60 allergens of 600 characters, for the order and a dish): the order is taken, and the
    ticket stays a ticket. Before: each list cut at 50 entries of 500 characters, a 105,933-byte ticket of 1,478 lines,
    about 8 m of paper (the verify70 probe). An allergen is a word or a few (EU law names 14); a list is cut at 20
    entries of 80 characters, and the log says so."""
    example_order.update(allergens=[f"A{n}-" + "x" * 600 for n in range(60)], print_receipt=False)
    example_order["items"][0]["allergens"] = ["y" * 600] * 60
    with capture_logs() as logs:
        status, body = await post(api, example_order)
    assert status == 201, body
    ticket = (await printers["kitchen"].wait_for_printed(1))[0]
    assert "A19-" in flat(ticket) and "A20-" not in flat(ticket)
    assert len(decode(ticket).text.splitlines()) < 200, len(decode(ticket).text.splitlines())
    said = [entry["fields"] for entry in logs if entry["event"] == "order_fields_not_understood"]
    assert said and "allergens (over 20 entries, cut)" in said[0], said


async def test_what_cannot_be_read_is_told_for_each_revision_that_prints_and_never_for_an_order_read_whole(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """The log line for fields off the contract that cannot be read: none for an order whose allergens read whole, one
    for a revision whose allergens cannot (its change ticket prints without them), none for a cancel (a STORNO prints
    none of them). Pins the two calls and the condition a mutation run left unasserted."""
    example_order.update(allergens=["Erdnüsse"], print_receipt=False)
    with capture_logs() as logs:
        assert (await post(api, example_order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
        await printed_all(agent)
        second = copy.deepcopy(example_order) | {"revision": 2, "allergens": [["Sesam"]], "note": "bitte getrennt"}
        assert (await post(api, second))[0] == 200
        await printers["kitchen"].wait_for_printed(2)
        await printed_all(agent)
        async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 3}) as response:
            assert response.status == 200, await response.text()
    said = [(e["revision"], e["fields"]) for e in logs if e["event"] == "order_fields_not_understood"]
    assert said == [(2, ["allergens[0] (array)"])], said


async def test_a_revision_adding_an_allergy_prints_a_change_ticket_that_names_it(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """The ticket is on paper; the guest then tells of a peanut allergy and the till sends revision 2 with it, nothing
    else changed. The agent answered "updated" and printed nothing: the cook went on cooking with peanuts. An
    ÄNDERUNG ticket now names the allergy, and revision 3 changing it strikes the old one and names the new one; the
    STORNO need not repeat them."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await printed_all(agent)
    second = copy.deepcopy(example_order) | {"revision": 2, "allergens": [{"code": "E", "name": "Erdnüsse"}]}
    status, body = await post(api, second)
    assert status == 200 and body["status"] == "updated" and len(body["job_ids"]) == 1, body
    change = flat((await printers["kitchen"].wait_for_printed(2))[1])
    assert "ÄNDERUNG" in change and "Rev. 2" in change and "ALLERGENE: Erdnüsse" in change, change
    await printed_all(agent)
    third = second | {"revision": 3, "allergens": ["Erdnüsse", "Sesam"], "note": "bitte alles getrennt"}
    assert (await post(api, third))[0] == 200
    change = flat((await printers["kitchen"].wait_for_printed(3))[2])
    assert "- ALLERGENE: Erdnüsse ALLERGENE: Erdnüsse, Sesam Hinweis: bitte alles getrennt" in change, change
    await printed_all(agent)
    async with api.post(f"/api/v1/orders/{example_order['id']}/cancel", json={"revision": 4}) as response:
        assert response.status == 200, await response.text()
    storno = flat((await printers["kitchen"].wait_for_printed(4))[3])
    assert "STORNO" in storno and "ALLERGENE" not in storno, storno


async def test_a_revision_adding_a_dishs_allergen_changes_its_line(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """An item's allergens are told like its note: a revision giving the Käsespätzle (line_id k1) an allergen prints
    the line as changed, with it."""
    example_order["print_receipt"] = False
    example_order["items"][1]["line_id"] = "k1"
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await printed_all(agent)
    second = copy.deepcopy(example_order) | {"revision": 2}
    second["items"][1]["allergens"] = "Sellerie"
    assert (await post(api, second))[0] == 200
    change = flat((await printers["kitchen"].wait_for_printed(2))[1])
    assert "~ 1x Käsespätzle ! ALLERGENE: Sellerie" in change and "Pizza" not in change, change


async def test_a_retry_of_an_order_with_allergens_stored_before_they_were_read_is_a_duplicate(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """An order with allergens stored by a version that did not read them has a meaning hash without them: the same
    bytes sent again after the update are the same order (200 duplicate), not a 409 conflict alerted to the
    manager."""
    example_order.update(allergens=["Erdnüsse"], print_receipt=False)
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await db_execute(agent, "UPDATE orders SET meaning_hash = ?", "0" * 64)  # as an older version hashed it
    status, body = await post(api, example_order)
    assert status == 200 and body.get("status") == "duplicate", (status, body)


# The contract example's meaning_hash as every version before allergens were read stored it (computed at cc9ab5b).
EXAMPLE_MEANING_HASH = "2da053726f9981921e1047adf32c3d4d2e9b6a5bb3a49de3a0ee7fd2e38ef179"


async def test_an_order_without_them_is_hashed_as_before_so_a_retry_of_one_stored_before_is_a_duplicate(
    agent: Agent, api: aiohttp.ClientSession
) -> None:
    """Reading more fields must not change the meaning hash of an order without them: one stored before the update,
    retried by its sender after it, was a 409 conflict, alerted. The row holds the hash an older version wrote."""
    assert (await post(api, EXAMPLE))[0] == 201
    assert await db_rows(agent, "SELECT meaning_hash FROM orders") == [(EXAMPLE_MEANING_HASH,)]


ROUTER = Router(stations={"kitchen": ["kitchen"]}, receipt_printer="front", receipts_by_default=True)


def _refusal(payload: dict[str, Any]) -> str | None:
    """The field intake refuses ``payload`` for, or None: taken."""
    try:
        ROUTER.prepare(payload, OrderSource.PUSH)
    except InvalidOrderError as err:
        return err.field
    return None


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=guest_words(), where=st.sampled_from(["allergens", "note", "items[0].allergens"]))
def test_the_guests_words_refuse_an_order_only_where_any_unknown_field_would(words: Any, where: str) -> None:
    """Anything sent as an order's or an item's allergens or note is taken as the same value under a name the agent
    does not read is (a text no UTF-8 carries is refused under either, as before), and the ticket renders."""
    payload, unknown = copy.deepcopy(EXAMPLE), copy.deepcopy(EXAMPLE)
    field = where.removeprefix("items[0].")
    (payload["items"][0] if "items" in where else payload)[field] = words
    (unknown["items"][0] if "items" in where else unknown)["unread"] = words
    refused = _refusal(payload)
    assert (refused is None) == (_refusal(unknown) is None), refused
    if refused is None:
        order = ROUTER.prepare(payload, OrderSource.PUSH).order
        Renderer().ticket(order, "kitchen")
