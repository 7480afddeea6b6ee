"""A revision that turns the order's ``print_receipt`` on or off: against the real agent (HTTP in, bytes out of the
simulated printers, rows read from a second connection), and the change plan's receipt rule as pure code."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.events import JobHeld
from edge.orders.changes import ExistingJob, PlannedJob, plan_revision
from edge.orders.model import Order, parse_order
from edge.orders.routing import wants_receipt
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from edge.states import JobKind, JobState
from tests.helpers import EXAMPLE, TIRAMISU, Recorder, api_client, config_dict, db_rows, eventually, post, wait_until

ROWS = "SELECT kind, state, revision, printer, held_reason FROM print_jobs ORDER BY id"
RECEIPT = PlannedJob(JobKind.RECEIPT, None, None, None)


def revised(order: dict[str, Any], revision: int, **changes: Any) -> dict[str, Any]:
    return copy.deepcopy(order) | {"revision": revision, **changes}


def with_tiramisu(order: dict[str, Any], revision: int, **changes: Any) -> dict[str, Any]:
    """Revision ``revision`` with a Tiramisu more (the kitchen gets a change ticket)."""
    out = revised(order, revision, **changes)
    out["items"].append(copy.deepcopy(TIRAMISU))
    return out


async def settled(agent: Agent) -> list[tuple[Any, ...]]:
    """Every job of the agent printed or discarded; its rows (kind, state, revision, printer, held_reason)."""
    return await eventually(
        lambda: db_rows(agent, ROWS),
        lambda rows: bool(rows) and all(r[1] in ("printed", "discarded") for r in rows),
        what="every job printed or discarded",
    )


def texts(printer: SimPrinter) -> list[str]:
    return [decode(data).text for data in printer.printed]


async def _one(printer: SimPrinter) -> list[str]:
    """What ``printer`` printed, once it printed one job."""
    return [decode(data).text for data in await printer.wait_for_printed(1)]


async def nothing_more_on_front(api: aiohttp.ClientSession, order: dict, printers: dict[str, SimPrinter]) -> None:
    """Another order with a receipt, sent now, prints on the front printer: the spool takes jobs in turn, so a receipt
    of ``order`` still in line would be out before it. Only that order's receipt is new on paper."""
    before = len(printers["front"].printed)
    other = copy.deepcopy(order) | {"id": "ord_other", "number": "B-7", "revision": 1, "print_receipt": True}
    assert (await post(api, other))[0] == 201
    await printers["front"].wait_for_printed(before + 1)
    new = texts(printers["front"])[before:]
    assert len(new) == 1 and "B-7" in new[0] and order["number"] not in new[0], new


# --- against the real agent ------------------------------------------------------------------------------------------


async def test_a_revision_asking_for_a_receipt_prints_it_once(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Revision 1 without a receipt (print_receipt false) prints the kitchen ticket only; revision 2, otherwise the
    same, asks for the receipt: 200 updated with the receipt's job, and the receipt prints once on the receipt
    printer, showing revision 2; no change ticket (the kitchen's lines did not change). Before: 200 updated, no job,
    and no receipt ever printed."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await settled(agent)
    status, body = await post(api, revised(example_order, 2, print_receipt=True))
    assert (status, body["status"], body["revision"]) == (200, "updated", 2), body
    assert len(body["job_ids"]) == 1, body
    [receipt] = await _one(printers["front"])
    assert "A-1042" in receipt and "MwSt" in receipt and "Pizza Margherita" in receipt
    rows = await settled(agent)
    assert rows == [("ticket", "printed", 1, "kitchen", None), ("receipt", "printed", 2, "front", None)]
    assert len(printers["kitchen"].printed) == 1
    # A further change that keeps asking for it does not print it again (receipts.on_change = "none").
    assert (await post(api, with_tiramisu(example_order, 3, print_receipt=True)))[0] == 200
    await printers["kitchen"].wait_for_printed(2)
    await settled(agent)
    await nothing_more_on_front(api, example_order, printers)


async def test_a_revision_turning_the_receipt_on_with_a_change_prints_the_new_revisions_receipt(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Revision 2 adds a Tiramisu and asks for the receipt: the kitchen gets its change ticket, the customer a receipt
    of revision 2 (with the Tiramisu)."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await settled(agent)
    status, body = await post(api, with_tiramisu(example_order, 2, print_receipt=True))
    assert (status, body["status"], len(body["job_ids"])) == (200, "updated", 2), body
    [receipt] = await _one(printers["front"])
    assert "Tiramisu" in receipt and "MwSt" in receipt
    change = decode((await printers["kitchen"].wait_for_printed(2))[1]).text
    assert "+ 1x Tiramisu" in change
    assert [r[:3] for r in await settled(agent)] == [
        ("ticket", "printed", 1),
        ("receipt", "printed", 2),
        ("ticket", "printed", 2),
    ]


async def test_a_revision_dropping_the_receipt_while_it_waits_discards_it(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Revision 1 asks for a receipt while the receipt printer is off, so it waits; revision 2 says print_receipt
    false: the waiting receipt is discarded, and nothing of the order prints when the printer is back. Before: the
    receipt was rewritten to revision 2 and printed."""
    printers["front"].set_offline(True)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["front"].state.value == "offline", what="front offline")
    status, body = await post(api, revised(example_order, 2, print_receipt=False))
    assert (status, body["status"], body["job_ids"]) == (200, "updated", []), body
    assert await db_rows(agent, "SELECT state, revision FROM print_jobs WHERE kind = 'receipt'") == [("discarded", 1)]
    printers["front"].set_offline(False)
    await nothing_more_on_front(api, example_order, printers)
    assert texts(printers["front"]) and all("A-1042" not in text for text in texts(printers["front"]))
    assert [r[:3] for r in (await settled(agent))[:2]] == [("ticket", "printed", 1), ("receipt", "discarded", 1)]


async def test_an_order_whose_waiting_receipt_a_revision_dropped_reads_printed_once_its_tickets_are(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The receipt waits, a revision drops it, the kitchen's ticket prints: everything the order still wants is on
    paper, and `GET /api/v1/orders/{id}` says `printed: true`; an order of which nothing is to print does not.
    Before (the evening76 probe, F2): `printed: false` for good, the discarded receipt counted as not printed."""
    printers["front"].set_offline(True)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["front"].state.value == "offline", what="front offline")
    assert (await post(api, revised(example_order, 2, print_receipt=False)))[0] == 200
    await settled(agent)
    async with api.get(f"/api/v1/orders/{example_order['id']}") as response:
        shown = await response.json()
    assert shown["printed"] is True, [(j["kind"], j["state"]) for j in shown["jobs"]]
    never = copy.deepcopy(example_order) | {"id": "ord_never", "number": "B-9", "revision": 2, "status": "cancelled"}
    assert (await post(api, never))[0] == 200  # comes cancelled: nothing to print (before, `printed: true`)
    async with api.get("/api/v1/orders/ord_never") as response:
        shown = await response.json()
    assert shown["jobs"] == [] and shown["printed"] is False, shown


async def test_a_receipt_dropped_and_asked_for_again_prints_once(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The receipt waits (printer off), revision 2 drops it, revision 3 asks for it again: one receipt, of revision
    3, prints when the printer is back."""
    printers["front"].set_offline(True)
    assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: agent.spoolers["front"].state.value == "offline", what="front offline")
    assert (await post(api, revised(example_order, 2, print_receipt=False)))[0] == 200
    status, body = await post(api, with_tiramisu(example_order, 3, print_receipt=True))
    assert (status, body["status"]) == (200, "updated"), body
    printers["front"].set_offline(False)
    [receipt] = await _one(printers["front"])
    assert "A-1042" in receipt and "Tiramisu" in receipt
    assert [r[:3] for r in await settled(agent)] == [
        ("ticket", "printed", 1),
        ("receipt", "discarded", 1),
        ("receipt", "printed", 3),
        ("ticket", "printed", 3),  # the kitchen's change ticket
    ]
    await nothing_more_on_front(api, example_order, printers)


async def test_a_printed_receipt_stays_the_only_one_when_a_revision_drops_it_and_asks_again(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The receipt printed; revision 2 says print_receipt false (paper is not taken back: nothing happens), revision
    3 says true again: the customer holds a receipt already, and receipts.on_change = "none" prints none anew."""
    assert (await post(api, example_order))[0] == 201
    await printers["front"].wait_for_printed(1)
    await settled(agent)
    assert (await post(api, revised(example_order, 2, print_receipt=False)))[1]["job_ids"] == []
    status, body = await post(api, with_tiramisu(example_order, 3, print_receipt=True))
    assert (status, len(body["job_ids"])) == (200, 1), body  # the kitchen's change ticket only
    await printers["kitchen"].wait_for_printed(2)
    rows = await settled(agent)
    assert [r[:3] for r in rows] == [("ticket", "printed", 1), ("receipt", "printed", 1), ("ticket", "printed", 3)]
    await nothing_more_on_front(api, example_order, printers)
    assert len(printers["front"].printed) == 2


async def test_receipts_on_change_reprint_follows_the_revisions_print_receipt(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """receipts.on_change = "reprint": a change that says print_receipt false prints no new receipt; the next one
    asking for it again prints the new revision's receipt, once."""
    agent = await make_agent(receipts={"on_change": "reprint"})
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await printers["front"].wait_for_printed(1)
        await settled(agent)
        status, body = await post(api, with_tiramisu(example_order, 2, print_receipt=False))
        assert (status, len(body["job_ids"])) == (200, 1), body  # the change ticket
        await printers["kitchen"].wait_for_printed(2)
        await settled(agent)
        assert len(printers["front"].printed) == 1
        status, body = await post(api, with_tiramisu(example_order, 3, print_receipt=True))
        assert (status, len(body["job_ids"])) == (200, 1), body  # the receipt: the kitchen's lines are as in 2
        [_, receipt] = [decode(d).text for d in await printers["front"].wait_for_printed(2)]
        assert "Tiramisu" in receipt
        assert [r[:3] for r in await settled(agent)] == [
            ("ticket", "printed", 1),
            ("receipt", "printed", 1),
            ("ticket", "printed", 2),
            ("receipt", "printed", 3),
        ]
        await nothing_more_on_front(api, example_order, printers)


async def test_a_receipt_asked_for_where_no_printer_prints_receipts_is_held_and_heard_of(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """No receipts.printer: revision 2 asking for a receipt gets one held (no_printer), as revision 1's would have
    been, and listeners hear one JobHeld for it (the manager is told to route receipts)."""
    raw = config_dict(tmp_path / "data", printers)
    del raw["receipts"]
    seen = Recorder()
    agent = await make_agent(parse_settings(raw, source="test"), listen=seen)
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await settled(agent)
        status, body = await post(api, revised(example_order, 2, print_receipt=True))
    assert (status, body["status"], len(body["job_ids"])) == (200, "updated", 1), body
    rows = await db_rows(agent, ROWS)
    assert rows == [("ticket", "printed", 1, "kitchen", None), ("receipt", "held", 2, "", "no_printer")]
    [held] = seen.of(JobHeld)
    assert (held.job_id, held.station, held.reason, held.printer) == (body["job_ids"][0], None, "no_printer", "")
    assert printers["front"].printed == []


async def test_a_cancelled_revision_asking_for_a_receipt_gets_none(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """An order without a receipt, cancelled by a revision that says print_receipt true: STORNO at the kitchen, no
    receipt for a sale that no longer exists."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await settled(agent)
    status, body = await post(api, revised(example_order, 2, status="cancelled", print_receipt=True))
    assert (status, body["status"]) == (200, "cancelled"), body
    storno = decode((await printers["kitchen"].wait_for_printed(2))[1]).text
    assert "STORNO" in storno
    assert [r[:2] for r in await settled(agent)] == [("ticket", "printed"), ("ticket", "printed")]
    await nothing_more_on_front(api, example_order, printers)


async def test_a_receipt_promised_under_one_config_is_kept_by_a_change_under_another(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Revision 1 leaves print_receipt to receipts.by_default (on): its receipt waits (front printer off). The config
    turns the default off and the agent restarts; revision 2 adds a dessert and says nothing about the receipt: the
    receipt promised stays and prints, of revision 2. Before: discarded, as if revision 2 had turned it off."""
    del example_order["print_receipt"]
    printers["front"].set_offline(True)
    agent = await make_agent(receipts={"by_default": True})
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
    await agent.stop()
    agent = await make_agent(receipts={"by_default": False})
    async with api_client(agent) as api:
        # Found off again (its spool paused, the receipt back in line): a receipt claimed at this moment counts as
        # maybe on paper and is left as it is, which is another test's story.
        await wait_until(lambda: agent.spoolers["front"].state.value == "offline")
        status, body = await post(api, with_tiramisu(example_order, 2))
        assert (status, body["status"]) == (200, "updated"), body
        printers["front"].set_offline(False)
        [receipt] = [decode(d).text for d in await printers["front"].wait_for_printed(1)]
    assert "Tiramisu" in receipt and "KOPIE" not in receipt, receipt


@pytest.mark.parametrize("on_change", ["none", "reprint"])
async def test_a_receipt_cut_short_by_paper_out_then_a_change_reprints_what_was_on_paper(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], on_change: str
) -> None:
    """Paper runs out halfway through revision 1's receipt: its COPY waits for the new roll. A change (revision 2)
    leaves that COPY as it was (the guest may hold half of revision 1; a COPY of revision 2 would copy what was never
    on paper); with receipts.on_change = "reprint" revision 2's receipt follows, not a COPY but marked as the revised
    receipt replacing revision 1's. Before: the COPY was rewritten to revision 2, and "reprint" printed no receipt of
    revision 2 unmarked."""
    front = printers["front"]
    front.paper_out_after = 250
    agent = await make_agent(receipts={"on_change": on_change})
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await wait_until(lambda: agent.spoolers["front"].state.value == "paper_out")
        assert (await post(api, with_tiramisu(example_order, 2)))[0] == 200
        front.paper_out = False
        after = [decode(d).text for d in await front.wait_for_printed(3 if on_change == "reprint" else 2)][1:]
    copy_, *rest = after
    assert "KOPIE" in copy_ and "Tiramisu" not in copy_, copy_
    if on_change == "reprint":
        assert len(rest) == 1 and "Tiramisu" in rest[0] and "KOPIE" not in rest[0], rest
        assert "GEÄNDERTER BELEG" in rest[0] and "Rev. 2 ersetzt den Beleg" in rest[0], rest
    else:
        assert rest == [], rest


async def test_a_reprint_brings_no_receipt_a_revision_dropped_before_it_printed(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The receipt waits (front printer off) and revision 2 says print_receipt false: discarded, never on paper. A
    reprint then copies the kitchen's ticket only: the order has no receipt. Before: a KOPIE receipt printed."""
    printers["front"].set_offline(True)
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    assert (await post(api, revised(example_order, 2, print_receipt=False)))[0] == 200
    printers["front"].set_offline(False)
    async with api.post(f"/api/v1/orders/{example_order['id']}/reprint") as r:
        assert (r.status, len((await r.json())["job_ids"])) == (201, 1)
    [_, copy_] = [decode(d).text for d in await printers["kitchen"].wait_for_printed(2)]
    assert "KOPIE" in copy_
    await nothing_more_on_front(api, example_order, printers)
    assert len(printers["front"].printed) == 1  # the other order's receipt


@pytest.mark.parametrize("then", ["nothing", "a change not saying"])
async def test_a_receipt_turned_off_while_it_prints_and_cut_short_is_not_printed_again(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter], then: str
) -> None:
    """The receipt is going out (slowly) when revision 2 says print_receipt false; paper runs out halfway through it.
    The guest wants no receipt: after the new roll nothing more of it prints, as for a cancel in that spot. Before: a
    KOPIE of it printed. Also when a revision 3 that does not say print_receipt (a Tiramisu more) comes first: not
    saying keeps what the order had (revision 2's no), and the kitchen gets its change ticket. Before: only the
    current revision's flag counted when the cut-short receipt went back in line, so a KOPIE of it printed."""
    front = printers["front"]
    front.bytes_per_s, front.paper_out_after = 1000, 300
    assert (await post(api, example_order))[0] == 201
    printing = "SELECT 1 FROM print_jobs WHERE kind = 'receipt' AND state = 'printing'"
    await eventually(lambda: db_rows(agent, printing), bool, what="the receipt going out")
    assert (await post(api, revised(example_order, 2, print_receipt=False)))[0] == 200
    if then == "a change not saying":
        silent = with_tiramisu(example_order, 3)
        silent.pop("print_receipt")
        assert (await post(api, silent))[0] == 200
        await printers["kitchen"].wait_for_printed(2)
    await wait_until(lambda: agent.spoolers["front"].state.value == "paper_out")
    await front.wait_for_printed(1)  # the half on paper
    front.paper_out, front.bytes_per_s = False, None
    await nothing_more_on_front(api, example_order, printers)
    assert next(r[:2] for r in await db_rows(agent, ROWS) if r[0] == "receipt") == ("receipt", "discarded")


@pytest.mark.parametrize("on_change", ["none", "reprint"])
async def test_a_receipt_claimed_when_a_change_comes_and_sent_back_unsent_prints_the_change(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], on_change: str
) -> None:
    """Two orders' receipts go out in one burst; while the first prints (slowly), revision 2 of the second adds a
    Tiramisu: its receipt, claimed, counts as maybe on paper, so the plan leaves it (and, with receipts.on_change =
    "reprint", adds a receipt of revision 2). Paper runs out in the first: the second goes back in line unsent. It
    never was on paper, so the guest gets one receipt, of revision 2, with the Tiramisu, not marked as replacing
    another: the one sent back shows revision 2, or, beside the reprint, is dropped. Before: it printed revision 1, so
    the guest's receipt lacked the Tiramisu ("none") or came twice, once without it ("reprint")."""
    agent = await make_agent(receipts={"on_change": on_change})
    front = printers["front"]
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await front.wait_for_printed(1)  # a fast job: the spool now claims several at a time
        front.set_offline(True)
        first = copy.deepcopy(example_order) | {"id": "ord_first", "number": "B-1"}
        other = copy.deepcopy(example_order) | {"id": "ord_second", "number": "B-2"}
        for sent in (first, other):
            assert (await post(api, sent))[0] == 201
        await wait_until(lambda: agent.spoolers["front"].state.value == "offline", what="front offline")
        # The burst a spool claims follows its last job's time at the printer: on a loaded machine the first
        # receipt's send took so long that it claimed one job at a time, and the second was never claimed (a
        # clean-clone CI run at 27fa30b). The scenario is a fast printer's burst: set here, not hoped for.
        agent.spoolers["front"]._last_send_s = 0.001
        front.bytes_per_s, front.paper_out_after = 200, 300
        front.set_offline(False)
        claimed = "SELECT 1 FROM print_jobs WHERE order_id = 'ord_second' AND kind = 'receipt' AND state = 'printing'"
        await eventually(lambda: db_rows(agent, claimed), bool, what="the second receipt claimed")
        assert (await post(api, with_tiramisu(other, 2)))[0] == 200
        await wait_until(lambda: agent.spoolers["front"].state.value == "paper_out")
        front.paper_out, front.bytes_per_s = False, None
        await front.wait_for_printed(4)  # the first order's, B-1's half, its KOPIE, B-2's
        await nothing_more_on_front(api, other, printers)
    second = [text for text in texts(front) if "B-2" in text]
    assert len(second) == 1 and "Tiramisu" in second[0] and "KOPIE" not in second[0], second
    assert "GEÄNDERTER BELEG" not in second[0], second


# --- the plan as pure code -------------------------------------------------------------------------------------------


def order(revision: int = 1, *, print_receipt: bool | None, status: str = "open", **fields: Any) -> Order:
    data = copy.deepcopy(EXAMPLE)
    data.update(revision=revision, status=status, **fields)
    data.pop("print_receipt")
    if print_receipt is not None:
        data["print_receipt"] = print_receipt
    return parse_order(data)


def receipt(job_id: int, state: JobState, *, copy: bool = False) -> ExistingJob:
    return ExistingJob(job_id, JobKind.RECEIPT, None, state, 1, None, None, copy=copy)


TICKET = ExistingJob(1, JobKind.TICKET, "kitchen", JobState.PRINTED, 1, None, None)


@pytest.mark.parametrize(
    ("print_receipt", "by_default", "wanted"),
    [(None, False, False), (None, True, True), (True, False, True), (True, True, True), (False, True, False)],
)
def test_the_order_says_whether_it_wants_a_receipt_else_the_config(
    print_receipt: bool | None, by_default: bool, wanted: bool
) -> None:
    assert wants_receipt(order(print_receipt=print_receipt), by_default=by_default) is wanted


def plan(jobs: list[ExistingJob], previous: Order, new: Order, *, before: bool, reprint: bool = False) -> Any:
    return plan_revision(
        [TICKET, *jobs], {1: previous}, new, previous=previous, receipt_before=before, reprint_receipt=reprint
    )


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.HELD, JobState.FAILED, JobState.DEAD])
@pytest.mark.parametrize("copy_", [False, True])
def test_a_waiting_receipt_no_longer_wanted_is_discarded(state: JobState, copy_: bool) -> None:
    """Also a COPY waiting to print again: the customer does not want it (as for a cancel)."""
    p = plan([receipt(2, state, copy=copy_)], order(print_receipt=True), order(2, print_receipt=False), before=True)
    assert (p.discard, p.rewrite, p.add) == ((2,), (), ())


@pytest.mark.parametrize("state", [JobState.PRINTING, JobState.PRINTED])
@pytest.mark.parametrize("reprint", [False, True])
def test_a_receipt_on_paper_is_left_and_not_reprinted_for_a_revision_that_wants_none(
    state: JobState, reprint: bool
) -> None:
    p = plan(
        [receipt(2, state)], order(print_receipt=True), order(2, print_receipt=False), before=True, reprint=reprint
    )
    assert (p.discard, p.rewrite, p.add) == ((), (), ())


@pytest.mark.parametrize(
    "jobs",
    [[], [receipt(2, JobState.DISCARDED)]],
    ids=["never-asked-for", "dropped-by-a-revision"],
)
def test_a_revision_turning_the_receipt_on_adds_one(jobs: list) -> None:
    p = plan(jobs, order(print_receipt=False), order(2, print_receipt=True), before=False)
    assert (p.discard, p.rewrite, p.add) == ((), (), (RECEIPT,))


@pytest.mark.parametrize("after", [True, None])
def test_a_receipt_a_person_discarded_is_not_brought_back_while_the_order_still_asks_the_same(
    after: bool | None,
) -> None:
    """Like a station whose ticket a person discarded: only a revision that turns the receipt on gets one."""
    p = plan([receipt(2, JobState.DISCARDED)], order(print_receipt=None), order(2, print_receipt=after), before=True)
    assert p.add == ()


@pytest.mark.parametrize(
    ("before", "jobs", "rewritten"), [(True, [receipt(2, JobState.QUEUED)], (2,)), (False, [], ())]
)
def test_a_revision_that_does_not_say_keeps_what_the_order_had(before: bool, jobs: list, rewritten: tuple) -> None:
    """Whatever receipts.by_default says now: the order's receipt was decided when it came (or when a revision said)."""
    p = plan(jobs, order(print_receipt=None), order(2, print_receipt=None), before=before)
    assert (p.discard, p.rewrite, p.add) == ((), rewritten, ())


def test_a_waiting_receipt_still_wanted_shows_the_new_revision() -> None:
    p = plan([receipt(2, JobState.QUEUED)], order(print_receipt=True), order(2, print_receipt=True), before=True)
    assert (p.discard, p.rewrite, p.add) == ((), (2,), ())


# Revision 2 paid in cash, not by card: something the guest's receipt shows changed.
PAID_IN_CASH = {"payment": {"method": "cash", "status": "paid"}}


@pytest.mark.parametrize("reprint", [False, True])
def test_a_receipt_copy_waiting_to_print_again_is_left_as_it_is(reprint: bool) -> None:
    """A receipt cut short prints again as COPY of what the guest may hold, not of a revision never on paper; with
    receipts.on_change = "reprint" the new revision's receipt follows it (a revision whose receipt reads otherwise)."""
    p = plan(
        [receipt(2, JobState.QUEUED, copy=True)],
        order(print_receipt=True),
        order(2, print_receipt=True, **PAID_IN_CASH),
        before=True,
        reprint=reprint,
    )
    assert (p.discard, p.rewrite, p.add) == ((), (), (RECEIPT,) if reprint else ())


@pytest.mark.parametrize("reprint", [False, True])
def test_a_receipt_turned_on_again_after_one_printed_prints_once_at_most(reprint: bool) -> None:
    """The customer holds a receipt: only receipts.on_change = "reprint" prints the new revision's (one that reads
    otherwise), once."""
    p = plan(
        [receipt(2, JobState.PRINTED)],
        order(print_receipt=False),
        order(2, print_receipt=True, **PAID_IN_CASH),
        before=False,
        reprint=reprint,
    )
    assert p.add == ((RECEIPT,) if reprint else ())


@pytest.mark.parametrize(
    ("change", "reprinted"),
    [
        ({"note": "bitte klingeln"}, False),
        ({"allergens": ["Sellerie"]}, False),
        ({"fulfilment": dict(EXAMPLE["fulfilment"], due_at="2026-11-22T19:00:00Z")}, False),
        ({"items": [dict(EXAMPLE["items"][0], note="beide ohne Basilikum"), *EXAMPLE["items"][1:]]}, False),
        ({"number": "A-1042B"}, True),
        ({"fulfilment": dict(EXAMPLE["fulfilment"], type="dine_in", table="4")}, True),
        ({"customer": dict(EXAMPLE["customer"], name="Jürgen Klein")}, True),
        ({"items": [dict(EXAMPLE["items"][0], unit_price="9.90"), *EXAMPLE["items"][1:]]}, True),
        ({"totals": dict(EXAMPLE["totals"], total="38.30", discount="1.00")}, True),
        (PAID_IN_CASH, True),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else str(value),
)
@pytest.mark.parametrize("state", [JobState.PRINTING, JobState.PRINTED])
def test_receipts_on_change_reprint_prints_again_only_what_reads_otherwise_on_the_receipt(
    change: dict[str, Any], reprinted: bool, state: JobState
) -> None:
    """receipts.on_change = "reprint": a receipt on paper gets a revised one only if the new revision's receipt reads
    otherwise (number, kind and table, guest, items and prices, totals, payment); a note, an allergy, the due time are
    the kitchen's news. Before stop 80 every revision printed one, the same receipt again (the receipt80 probe, R3)."""
    new = order(2, print_receipt=True, **change)
    p = plan([receipt(2, state)], order(print_receipt=True), new, before=True, reprint=True)
    assert [job for job in p.add if job.kind == JobKind.RECEIPT] == ([RECEIPT] if reprinted else [])


@pytest.mark.parametrize("jobs", [[], [receipt(2, JobState.QUEUED)], [receipt(2, JobState.PRINTED)]])
def test_a_cancelled_order_never_gets_a_receipt(jobs: list) -> None:
    p = plan(
        jobs,
        order(print_receipt=False),
        order(2, print_receipt=True, status="cancelled"),
        before=False,
        reprint=True,
    )
    assert RECEIPT not in p.add
    assert p.discard == tuple(j.id for j in jobs if j.state == JobState.QUEUED)
