"""POST /api/v1/jobs/{id}/reprint: a COPY of that one ticket or receipt, not the whole order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_rows, eventually, post, wait_until


async def dead_receipt(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> tuple[Agent, dict[str, int]]:
    """The front printer hangs up in the receipt (max_attempts = 1: dead); the kitchen ticket printed."""
    printers["front"].drop_after = 10
    agent = await make_agent(spool={"max_attempts": 1})
    async with api_client(agent) as api:
        await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)

    async def states() -> dict[str, str]:
        return {kind: state for kind, state in await db_rows(agent, "SELECT kind, state FROM print_jobs")}

    for _ in range(200):
        if (await states()).get("receipt") == "dead":
            break
        await asyncio.sleep(0.05)
    jobs = {kind: job_id for job_id, kind in await db_rows(agent, "SELECT id, kind FROM print_jobs")}
    assert (await states())["receipt"] == "dead", await states()
    return agent, jobs


async def test_a_jobs_reprint_copies_that_receipt_only_and_refuses_what_cannot_be_reprinted(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The receipt went dead (the guest has none). Reprint of that job: one receipt COPY, no kitchen COPY (the order's
    reprint, all a Reprint in its row could send, gave the kitchen a COPY of food already made). An unknown job is
    404, a discarded one 409, a job id that is not a number 404 naming it."""
    agent, jobs = await dead_receipt(make_agent, example_order, printers)
    async with api_client(agent) as api:
        async with api.post(f"/api/v1/jobs/{jobs['receipt']}/reprint") as response:
            assert response.status == 201, await response.text()
            answer = await response.json()
        copies = await db_rows(agent, "SELECT id, kind FROM print_jobs WHERE copy = 1 AND id > ?", jobs["receipt"])
        assert answer == {"order_id": example_order["id"], "job_ids": [c[0] for c in copies], "waiting": []}
        assert [c[1] for c in copies] == ["receipt"]
        printed = await printers["front"].wait_for_printed(2)  # the original cut short, then the COPY
        assert "KOPIE / COPY" in decode(printed[-1]).text
        async with api.post("/api/v1/jobs/999/reprint") as response:
            assert response.status == 404 and "print job 999 does not exist" in (await response.json())["reason"]
        async with api.post("/api/v1/jobs/x1/reprint") as response:
            assert response.status == 404 and "'x1'" in (await response.json())["reason"]
        await eventually(
            lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE id = ?", answer["job_ids"][0]),
            lambda rows: rows == [("printed",)],
            what="the COPY marked printed",
        )
        async with api.post(f"/api/v1/jobs/{answer['job_ids'][0]}/reprint") as response:
            assert response.status == 201  # a printed COPY can be copied again
        async with api.post(f"/api/v1/jobs/{jobs['receipt']}/discard") as response:
            assert response.status == 200
        async with api.post(f"/api/v1/jobs/{jobs['receipt']}/reprint") as response:
            assert response.status == 409
            assert "discarded" in (await response.json())["reason"]
    assert len(printers["kitchen"].printed) == 1


async def test_a_ticket_not_printed_yet_is_not_reprinted_beside_itself(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is off, the ticket waits for it. A Reprint of that job is refused (409, saying it prints on
    its own); once the printer is back the ticket comes out once, not as original and COPY (before: 201 and a COPY
    queued behind the original, two tickets of one order for the cook)."""
    kitchen = printers["kitchen"]
    kitchen.set_offline(True)
    agent = await make_agent()
    async with api_client(agent) as api:
        await post(api, example_order)
        [(ticket, state)] = await db_rows(agent, "SELECT id, state FROM print_jobs WHERE kind = 'ticket'")
        assert state in ("queued", "printing", "failed"), state
        async with api.post(f"/api/v1/jobs/{ticket}/reprint") as response:
            assert response.status == 409, await response.text()
            assert "not printed yet" in (await response.json())["reason"]
        kitchen.set_offline(False)
        await kitchen.wait_for_printed(1, timeout=20)
        await asyncio.sleep(0.5)  # a second ticket would be out by now
    assert len(kitchen.printed) == 1 and "KOPIE" not in decode(kitchen.printed[0]).text
    assert await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE kind = 'ticket'") == [(1,)]


async def test_two_reprints_of_an_order_pressed_at_once_in_two_places_print_one_copy(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The cook on the status page and the manager on the phone press Reprint for the same order at the same moment,
    while the kitchen printer is busy (here: off): one COPY is queued, the second press is answered with it (200,
    "waiting"), and one COPY comes out. Before: two COPYs (the technician's probe, regressF)."""
    kitchen = printers["kitchen"]
    example_order["print_receipt"] = False
    agent = await make_agent()
    url = f"/api/v1/orders/{example_order['id']}/reprint"
    async with api_client(agent) as api:
        await post(api, example_order)
        await kitchen.wait_for_printed(1)
        kitchen.set_offline(True)

        async def press() -> tuple[int, dict]:
            async with api.post(url, json={"station": "kitchen"}) as response:
                return response.status, await response.json()

        answers = await asyncio.gather(press(), press())
        assert sorted(status for status, _ in answers) == [200, 201], answers
        [(copy,)] = await db_rows(agent, "SELECT id FROM print_jobs WHERE copy = 1")
        assert {tuple(a["job_ids"] or a["waiting"]) for _, a in answers} == {(copy,)}, answers
        kitchen.set_offline(False)
        await kitchen.wait_for_printed(2, timeout=20)
        await asyncio.sleep(0.5)  # a second COPY would be out by now
    assert len(kitchen.printed) == 2 and "KOPIE" in decode(kitchen.printed[1]).text


async def test_a_whole_orders_reprint_copies_what_has_no_copy_waiting_and_names_what_has(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen's COPY waits (its printer out of paper) when someone asks for the whole order again: the receipt is
    copied, the kitchen's COPY is named as waiting, not queued a second time (a mutation run of the change: a `break`
    for its `continue` went unseen)."""
    kitchen = printers["kitchen"]
    agent = await make_agent()
    url = f"/api/v1/orders/{example_order['id']}/reprint"
    async with api_client(agent) as api:
        await post(api, example_order)
        await kitchen.wait_for_printed(1)
        await printers["front"].wait_for_printed(1)
        kitchen.paper_out = True
        async with api.post(url, json={"station": "kitchen"}) as response:
            assert response.status == 201, await response.text()
            [kitchen_copy] = (await response.json())["job_ids"]
        # It meets the paper end and waits in line, its spool paused until a new roll: it claims nothing meanwhile.
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out", 10, "the kitchen paused")
        await eventually(
            lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE id = ?", kitchen_copy),
            lambda rows: rows[0][0] == "queued",
            10,
            "the kitchen's COPY back in line",
        )
        async with api.post(url) as response:
            assert response.status == 201, await response.text()
            answer = await response.json()
    [(receipt_copy,)] = await db_rows(agent, "SELECT id FROM print_jobs WHERE copy = 1 AND kind = 'receipt'")
    assert (answer["job_ids"], answer["waiting"]) == ([receipt_copy], [kitchen_copy]), answer
