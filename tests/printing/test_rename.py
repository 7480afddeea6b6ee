"""A printer renamed or removed in the config between runs: its waiting jobs move to the printer that now serves their
station, or are held, visible and alerted; never stranded, never a 500."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import parse_settings
from edge.events import Event, JobHeld, JobRedirected
from edge.ops.technician import render_status
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import (
    api_client,
    config_dict,
    db_execute,
    db_rows,
    eventually,
    job_rows,
    post,
    wait_until,
)


@pytest.fixture
def run(make_agent: Callable[..., Awaitable[Agent]]) -> Callable[..., Awaitable[Agent]]:
    """Runs one agent at a time on the same data directory with the config given; the last one is stopped at the end."""
    running: list[Agent] = []

    async def start(raw: dict[str, Any]) -> Agent:
        if running:
            await running.pop().stop()
        agent = await make_agent(parse_settings(copy.deepcopy(raw), source="test"))
        running.append(agent)
        return agent

    return start


api = api_client


async def queue_orders(agent: Agent, printers: dict[str, SimPrinter], count: int) -> None:
    """``count`` orders (kitchen ticket + receipt) waiting: both printers off."""
    for sim in printers.values():
        sim.set_offline(True)
    async with api(agent) as session:
        for n in range(count):
            assert (await post(session, make_order(n)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")


async def restarted_as(
    run: Callable[..., Any], raw: dict[str, Any], sims: dict[str, SimPrinter], **sections: Any
) -> tuple[Agent, list[tuple[str, str]]]:
    """Two orders (tickets and receipts) waiting under ``raw``; started again with ``sections`` replaced and the
    printers on: the new agent, and each move its log names (from, to), sorted."""
    await queue_orders(await run(raw), sims, 2)
    for sim in sims.values():
        sim.set_offline(False)
    with capture_logs() as logs:
        agent = await run(copy.deepcopy(raw) | sections)
    moves = [(e["from_printer"], e["to_printer"]) for e in logs if e["event"] == "job_moved_to_configured_printer"]
    return agent, sorted(moves)


async def test_renamed_printers_take_their_waiting_jobs_unmarked_as_the_same_devices(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Stop with queued tickets and receipts; rename both printers in the config (same devices); start again: every
    job prints on the new names, the log names each move, and the API lists the new names. The paper is not marked
    as moved: it comes out of the printer it was meant for. Before (stop 74's note, left then): "UMGELEITET von
    kitchen" on every ticket, in the kitchen, as if it belonged to another station."""
    raw = config_dict(tmp_path / "data", printers)
    second, moves = await restarted_as(
        run,
        raw,
        printers,
        printers={"pass": raw["printers"]["kitchen"], "counter": raw["printers"]["front"]},
        stations={"kitchen": "pass", "bar": "pass"},
        receipts={"printer": "counter"},
    )
    assert moves == [("front", "counter")] * 2 + [("kitchen", "pass")] * 2  # the technician's log names each move
    tickets = await printers["kitchen"].wait_for_printed(2)
    await printers["front"].wait_for_printed(2)
    assert not any("UMGELEITET" in decode(t).text for t in tickets), [decode(t).text for t in tickets]
    await eventually(
        lambda: job_rows(second, "SELECT kind, printer, redirected_from, state FROM print_jobs"),
        lambda rows: (
            sorted(set(rows)) == [("receipt", "counter", None, "printed"), ("ticket", "pass", None, "printed")]
        ),
    )
    async with api(second) as session, session.get("/api/v1/printers") as response:
        listed = {p["name"]: p["jobs"]["printed"] for p in (await response.json())["printers"]}
    assert listed == {"pass": 2, "counter": 2}


async def test_printers_whose_names_were_swapped_print_each_waiting_job_where_its_station_is_served_now(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Stop with tickets and receipts waiting; swap the two printers' names in the config and route the stations and
    receipts so that each device keeps its role (the kitchen device now named "front" and serving the kitchen): every
    ticket prints in the kitchen and every receipt at the counter, each move logged. Before: a job moved only when its
    printer's name left the config, so the kitchen's tickets printed at the counter, and nobody was told."""
    raw = config_dict(tmp_path / "data", printers)
    second, moves = await restarted_as(
        run,
        raw,
        printers,
        printers={"front": raw["printers"]["kitchen"], "kitchen": raw["printers"]["front"]},
        stations={"kitchen": "front", "bar": "front"},
        receipts={"printer": "kitchen"},
    )
    assert moves == [("front", "kitchen")] * 2 + [("kitchen", "front")] * 2
    tickets = await printers["kitchen"].wait_for_printed(2)
    receipts = await printers["front"].wait_for_printed(2)
    assert all("Station: kitchen" in decode(t).text for t in tickets), [decode(t).text for t in tickets]
    assert not any("Station:" in decode(r).text for r in receipts), [decode(r).text for r in receipts]
    await eventually(
        lambda: job_rows(second, "SELECT DISTINCT kind, printer, state FROM print_jobs ORDER BY kind"),
        lambda rows: rows == [("receipt", "kitchen", "printed"), ("ticket", "front", "printed")],
    )


async def test_a_station_moved_to_a_new_printer_takes_its_waiting_tickets_and_the_old_one_keeps_the_bars(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is off with kitchen and bar tickets waiting; the technician adds a "pass" printer, routes
    the kitchen station to it and leaves the old printer to the bar: the waiting kitchen tickets print on the pass
    (marked as moved), the bar's stay with the old printer and print there once it is back. Before: the kitchen's
    tickets waited for the old printer, and printed at the bar."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw)
    printers["kitchen"].set_offline(True)
    async with api(first) as session:
        for n in range(2):
            assert (await post(session, make_order(n, bar=True, print_receipt=False)))[0] == 201
    await wait_until(lambda: first.spoolers["kitchen"].state.value == "offline")
    pass_printer = SimPrinter("pass")
    await pass_printer.start()
    try:
        moved = copy.deepcopy(raw)
        moved["printers"]["pass"] = raw["printers"]["kitchen"] | {"port": pass_printer.port}
        moved["stations"] = {"kitchen": "pass", "bar": "kitchen"}
        second = await run(moved)
        on_pass = [decode(t).text for t in await pass_printer.wait_for_printed(2)]
        assert all("Station: kitchen" in t and "UMGELEITET von kitchen" in t for t in on_pass), on_pass
        printers["kitchen"].set_offline(False)
        at_bar = [decode(t).text for t in await printers["kitchen"].wait_for_printed(2)]
        assert all("Station: bar" in t and "UMGELEITET" not in t for t in at_bar), at_bar
        await eventually(
            lambda: job_rows(second, "SELECT DISTINCT station, printer, state FROM print_jobs ORDER BY station"),
            lambda rows: rows == [("bar", "kitchen", "printed"), ("kitchen", "pass", "printed")],
        )
    finally:
        await pass_printer.stop()


async def printed_at_home_unmarked(agent: Agent, printers: dict[str, SimPrinter]) -> None:
    """The kitchen ticket prints on the kitchen printer without a moved mark, and the receipt at the front."""
    [ticket] = [decode(t).text for t in await printers["kitchen"].wait_for_printed(1)]
    assert "Station: kitchen" in ticket and "UMGELEITET" not in ticket, ticket
    await eventually(
        lambda: job_rows(agent, "SELECT kind, printer, redirected_from, state FROM print_jobs ORDER BY kind"),
        lambda rows: rows == [("receipt", "front", None, "printed"), ("ticket", "kitchen", None, "printed")],
    )


async def test_a_ticket_a_failover_left_on_a_backup_the_station_no_longer_has_goes_home_unmarked(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen had the front printer as its backup, and a failover moved a ticket there (both printers then off);
    the technician drops the backup from the kitchen's route: the ticket goes back to the kitchen printer and prints
    there without "UMGELEITET von kitchen" (it is where it was meant to print). Before: it printed at the front
    printer, which no longer serves the kitchen."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw | {"stations": {"kitchen": ["kitchen", "front"]}})
    await queue_orders(first, printers, 1)
    await first.stop()
    # As the failover leaves it (JobStore.redirect): on the backup, marked as moved from the primary.
    failed_over = "UPDATE print_jobs SET printer = 'front', redirected_from = 'kitchen' WHERE kind = 'ticket'"
    await db_execute(raw["agent"]["data_dir"] + "/edge.db", failed_over)
    for sim in printers.values():
        sim.set_offline(False)
    await printed_at_home_unmarked(await run(raw), printers)


async def test_tickets_a_failover_left_on_a_backup_renamed_since_print_there_at_once_while_the_primary_is_still_dead(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is dead and a failover moved its tickets to the front printer, which then ran out of paper
    with two of them waiting; stopped, the technician renames front to counter (same device) and puts paper in, the
    kitchen printer still dead: the two tickets print on the counter at once, still marked as moved from the
    kitchen. Before (the failover82 probe, F1): the start moved them back to the dead kitchen printer, and they
    printed on the counter only after a second failover, ``failover_after_s`` later (a minute at the default)."""
    raw = config_dict(
        tmp_path / "data",
        printers,
        stations={"kitchen": ["kitchen", "front"]},
        printing={"failover_after_s": 0.5},
    )
    kitchen, front = printers["kitchen"], printers["front"]
    kitchen.set_offline(True)
    first = await run(raw)
    async with api(first) as session:
        assert (await post(session, make_order(0, print_receipt=False)))[0] == 201
        [moved] = [decode(t).text for t in await front.wait_for_printed(1)]
        assert "UMGELEITET von kitchen" in moved, moved
        front.paper_out = True  # unseen until the front spool next asks: the failover still takes it for healthy
        for n in (1, 2):
            assert (await post(session, make_order(n, print_receipt=False)))[0] == 201
    await wait_until(lambda: first.spoolers["front"].state.value == "paper_out")
    waiting = "SELECT printer, redirected_from, state FROM print_jobs WHERE id > 1 ORDER BY id"
    assert await job_rows(first, waiting) == [("front", "kitchen", "queued")] * 2
    front.paper_out = False
    renamed = copy.deepcopy(raw)
    renamed["printers"] = {"kitchen": raw["printers"]["kitchen"], "counter": raw["printers"]["front"]}
    renamed["stations"] = {"kitchen": ["kitchen", "counter"]}
    renamed["receipts"] = {"printer": "counter"}
    renamed["printing"] = {"failover_after_s": 60}  # the default: a second failover would take a minute
    with capture_logs() as logs:
        second = await run(renamed)
        tickets = [decode(t).text for t in (await front.wait_for_printed(3))[1:]]
    assert all("Station: kitchen" in t and "UMGELEITET von kitchen" in t for t in tickets), tickets
    moves = [(e["from_printer"], e["to_printer"]) for e in logs if e["event"] == "job_moved_to_configured_printer"]
    assert moves == [("front", "counter")] * 2, moves
    await eventually(lambda: job_rows(second, waiting), lambda rows: rows == [("counter", "kitchen", "printed")] * 2)


async def test_no_route_left_holds_the_jobs_visibly_and_nothing_500s(
    run: Callable[..., Any],
    make_agent: Callable[..., Awaitable[Agent]],
    tmp_path: Path,
    printers: dict[str, SimPrinter],
) -> None:
    """Remove the kitchen printer and its stations' route: the waiting tickets are held (reason given, JobHeld
    published for the alert), listed by the jobs API, the status page and the printers API, their preview answers,
    release/retry/reprint answer 409 naming the problem, and no route answers 500. Put a route back: they print."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw)
    await queue_orders(first, printers, 2)
    await first.stop()
    removed = copy.deepcopy(raw)
    del removed["printers"]["kitchen"]
    removed["stations"] = {}
    for sim in printers.values():
        sim.set_offline(False)
    held_events: list[JobHeld] = []

    def on_event(event: Event) -> None:
        if isinstance(event, JobHeld):
            held_events.append(event)

    second = await make_agent(parse_settings(copy.deepcopy(removed), source="test"), listen=on_event)
    try:
        await printers["front"].wait_for_printed(2)  # receipts still have their printer
        await asyncio.sleep(0.3)
        assert printers["kitchen"].printed == []
        tickets = await job_rows(second, "SELECT id, printer, state, held_reason FROM print_jobs WHERE kind = 'ticket'")
        assert [(p, s, r) for _, p, s, r in tickets] == [("kitchen", "held", "no_printer")] * 2
        ids = [t[0] for t in tickets]
        assert sorted(e.job_id for e in held_events) == ids
        assert all(e.reason == "no_printer" and e.printer == "kitchen" for e in held_events)
        async with api(second) as session:
            async with session.get("/api/v1/jobs", params={"state": "held"}) as response:
                assert sorted(j["id"] for j in (await response.json())["jobs"]) == ids
            async with session.get("/api/v1/status") as response:
                assert sorted(j["id"] for j in (await response.json())["held_jobs"]) == ids
            async with session.get("/api/v1/printers") as response:
                gone = [p for p in (await response.json())["printers"] if p["name"] == "kitchen"]
            assert gone and gone[0]["state"] == "not_configured" and gone[0]["jobs"]["held"] == 2
            async with session.get(f"/api/v1/jobs/{ids[0]}/preview") as response:
                assert response.status == 200 and "edge:v1:ord_000000:kitchen" in await response.text()
            for method, path in (
                ("POST", f"/api/v1/jobs/{ids[0]}/release"),
                ("POST", f"/api/v1/orders/{make_order(0)['id']}/reprint"),
            ):
                async with session.request(method, path, json={"station": "kitchen"}) as response:
                    body = await response.json()
                    assert response.status == 409 and "kitchen" in body["reason"], (path, body)
            async with session.post("/api/v1/jobs/release-held") as response:
                assert (await response.json())["released"] == []
            for path in ("/", "/api/v1/status/panel", "/status/panel", "/api/v1/jobs", "/metrics"):
                async with session.get(path) as response:
                    assert response.status == 200, path
        assert await job_rows(second, "SELECT state FROM print_jobs WHERE kind = 'ticket'") == [("held",)] * 2
    finally:
        await second.stop()

    back = copy.deepcopy(removed)
    back["stations"] = {"kitchen": "front"}
    third = await run(back)
    tickets = (await printers["front"].wait_for_printed(4))[2:]
    assert all("UMGELEITET von kitchen" in decode(t).text for t in tickets)
    await eventually(lambda: job_rows(third, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)] * 4)


async def test_a_printer_taken_out_of_the_config_and_put_back_prints_its_held_tickets_unmarked(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is taken out of the config (its waiting tickets held, no_printer), then put back under its
    own name: the tickets print there, not marked as moved ("UMGELEITET von kitchen" on the kitchen's own printer
    would send the cook looking for another printer)."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw)
    await queue_orders(first, printers, 1)
    removed = copy.deepcopy(raw)
    del removed["printers"]["kitchen"]
    removed["stations"] = {}
    await run(removed)
    for sim in printers.values():
        sim.set_offline(False)
    await printed_at_home_unmarked(await run(raw), printers)


async def test_a_ticket_held_at_a_rename_that_dropped_its_station_prints_unmarked_once_the_station_is_routed_again(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is renamed "kueche" (the same device) and, in the same edit, the kitchen station loses its
    route (the old line named the old name): its waiting ticket is held, no printer. A start later the route comes
    back to kueche: the ticket prints there unmarked, it is the printer it was meant for. Before: "UMGELEITET von
    kitchen" on the kitchen's own printer, the device of "kitchen" forgotten by the run in between (printers78 F4)."""
    raw = config_dict(tmp_path / "data", printers)
    await queue_orders(await run(raw), printers, 1)
    renamed = copy.deepcopy(raw)
    renamed["printers"]["kueche"] = renamed["printers"].pop("kitchen")
    renamed["stations"] = {}
    held = await run(renamed)
    await eventually(
        lambda: job_rows(held, "SELECT kind, state, held_reason FROM print_jobs WHERE kind = 'ticket'"),
        lambda rows: rows == [("ticket", "held", "no_printer")],
    )
    for sim in printers.values():
        sim.set_offline(False)
    routed = copy.deepcopy(renamed)
    routed["stations"] = {"kitchen": "kueche", "bar": "kueche"}
    agent = await run(routed)
    [ticket] = [decode(t).text for t in await printers["kitchen"].wait_for_printed(1)]
    assert "Station: kitchen" in ticket and "UMGELEITET" not in ticket, ticket
    await eventually(
        lambda: job_rows(agent, "SELECT printer, redirected_from, state FROM print_jobs WHERE kind = 'ticket'"),
        lambda rows: rows == [("kueche", None, "printed")],
    )


async def test_a_printed_job_of_a_removed_printer_still_previews(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """History stays readable: a printed ticket whose printer left the config previews (at the default width)."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw)
    async with api(first) as session:
        assert (await post(session, make_order(1, print_receipt=False)))[0] == 201
    await eventually(lambda: job_rows(first), lambda rows: rows == [("printed", 0, 0)])
    removed = copy.deepcopy(raw)
    del removed["printers"]["kitchen"]
    removed["stations"] = {}
    second = await run(removed)
    async with api(second) as session, session.get("/api/v1/jobs/1/preview") as response:
        assert response.status == 200 and "edge:v1:ord_000001:kitchen" in await response.text()
    assert await db_rows(second, "SELECT printer, state FROM print_jobs") == [("kitchen", "printed")]


async def test_each_start_moves_or_holds_a_stranded_job_once_and_leaves_settled_ones_alone(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Restarts with waiting jobs: the same config → nothing moved or held (no events); the kitchen printer and its
    route removed → each ticket held once (JobHeld), and a further start with that config holds nothing again (no
    second alert); the front printer renamed as well → the receipts move (the held tickets before them in line do not
    stop that), the tickets stay held; a route back for the kitchen → each ticket moved once."""
    raw = config_dict(tmp_path / "data", printers)
    removed = copy.deepcopy(raw)
    del removed["printers"]["kitchen"]
    removed["stations"] = {}
    renamed = copy.deepcopy(removed)
    renamed["printers"] = {"counter": raw["printers"]["front"]}
    renamed["receipts"] = {"printer": "counter"}
    back = copy.deepcopy(renamed)
    back["stations"] = {"kitchen": "counter"}
    first = await make_agent(parse_settings(copy.deepcopy(raw), source="test"))
    await queue_orders(first, printers, 2)
    await first.stop()

    async def start(config: dict[str, Any]) -> list[Event]:
        seen: list[Event] = []
        agent = await make_agent(parse_settings(copy.deepcopy(config), source="test"), listen=seen.append)
        await agent.stop()
        return [e for e in seen if isinstance(e, JobHeld | JobRedirected)]

    assert await start(raw) == []
    held = await start(removed)
    assert sorted((type(e).__name__, e.printer) for e in held) == [("JobHeld", "kitchen")] * 2
    assert await start(removed) == []
    moved = await start(renamed)
    assert (
        sorted((type(e).__name__, e.from_printer, e.to_printer) for e in moved)
        == [("JobRedirected", "front", "counter")] * 2
    )
    moved = await start(back)
    assert (
        sorted((type(e).__name__, e.from_printer, e.to_printer) for e in moved)
        == [("JobRedirected", "kitchen", "counter")] * 2
    )


async def test_an_order_with_a_station_no_printer_serves_prints_the_rest_and_holds_that_ticket_until_one_does(
    run: Callable[..., Any],
    make_agent: Callable[..., Awaitable[Agent]],
    tmp_path: Path,
    printers: dict[str, SimPrinter],
) -> None:
    """Central's menu gains a station before the store's config has it (a pastry counter for new desserts): the order
    is taken (201), its kitchen ticket and receipt print, the pastry ticket is held for want of a printer (JobHeld
    names the station, for the manager's mail) and prints by itself once the config routes the station. Before, the
    whole order was refused with 422: the kitchen got nothing, and the sender does not send a 422 again."""
    raw = config_dict(tmp_path / "data", printers)
    order = make_order(1)
    order["items"][1]["station"] = "pastry"
    held: list[JobHeld] = []
    first = await make_agent(
        parse_settings(copy.deepcopy(raw), source="test"),
        listen=lambda e: held.append(e) if isinstance(e, JobHeld) else None,
    )
    async with api(first) as session:
        status, body = await post(session, order)
    assert status == 201, body
    kitchen = await printers["kitchen"].wait_for_printed(1)
    await printers["front"].wait_for_printed(1)
    assert "Pizza" in decode(kitchen[0]).text and order["items"][1]["name"] not in decode(kitchen[0]).text
    await eventually(
        lambda: job_rows(first, "SELECT kind, station, printer, state, held_reason FROM print_jobs ORDER BY id"),
        lambda rows: (
            sorted(rows, key=str)
            == sorted(
                [
                    ("ticket", "kitchen", "kitchen", "printed", None),
                    ("ticket", "pastry", "", "held", "no_printer"),
                    ("receipt", None, "front", "printed", None),
                ],
                key=str,
            )
        ),
    )
    assert [(e.printer, e.station, e.reason) for e in held] == [("", "pastry", "no_printer")]
    async with api(first) as session:
        async with session.get("/api/v1/status") as response:
            assert [j["station"] for j in (await response.json())["held_jobs"]] == ["pastry"]
        async with session.get("/api/v1/printers") as response:
            assert sorted(p["name"] for p in (await response.json())["printers"]) == ["front", "kitchen"]
        async with session.get("/") as response:
            assert response.status == 200
    await first.stop()
    routed = copy.deepcopy(raw)
    routed["stations"]["pastry"] = "kitchen"
    second = await run(routed)
    later = await printers["kitchen"].wait_for_printed(2)
    assert order["items"][1]["name"] in decode(later[1]).text and "UMGELEITET" not in decode(later[1]).text
    await eventually(
        lambda: job_rows(second, "SELECT state FROM print_jobs WHERE station = 'pastry'"),
        lambda rows: rows == [("printed",)],
    )


async def test_a_receipt_asked_for_at_a_store_without_a_receipt_printer_is_held_and_the_tickets_print(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """An order asks for a receipt; the store has no receipt printer (a kitchen-only box): the order is taken, its
    ticket prints, the receipt waits held for a printer (before: the whole order was refused with 422)."""
    raw = config_dict(tmp_path / "data", printers)
    raw["receipts"] = {}
    agent = await make_agent(parse_settings(raw, source="test"))
    async with api(agent) as session:
        status, body = await post(session, make_order(1, print_receipt=True))
    assert status == 201, body
    await printers["kitchen"].wait_for_printed(1)
    await eventually(
        lambda: job_rows(agent, "SELECT kind, printer, state, held_reason FROM print_jobs ORDER BY id"),
        lambda rows: rows == [("ticket", "kitchen", "printed", None), ("receipt", "", "held", "no_printer")],
    )


async def test_a_change_for_a_station_whose_printer_left_the_config_is_held_and_alerted_not_stranded(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The bar closed: its station and printer leave the config, central still sends bar items. A change to an order
    whose bar ticket printed before that is held for want of a printer (JobHeld names the station, for the manager's
    mail), like a new order's bar ticket. Before: the change ticket was queued for the printer that was gone: never
    printed, and nobody told until a restart."""
    bar = SimPrinter("bar")
    await bar.start()
    try:
        raw = config_dict(tmp_path / "data", {**printers, "bar": bar}, stations={"bar": "bar"})
        order = make_order(1, print_receipt=False)
        order["items"][1]["station"] = "bar"
        first = await make_agent(parse_settings(copy.deepcopy(raw), source="test"))
        async with api(first) as session:
            assert (await post(session, order))[0] == 201
        await bar.wait_for_printed(1)
        await eventually(lambda: job_rows(first), lambda rows: all(r[0] == "printed" for r in rows))
        await first.stop()

        del raw["printers"]["bar"], raw["stations"]["bar"]
        held: list[JobHeld] = []
        second = await make_agent(
            parse_settings(raw, source="test"), listen=lambda e: held.append(e) if isinstance(e, JobHeld) else None
        )
        changed = copy.deepcopy(order)
        changed["revision"], changed["items"][1]["qty"] = 2, order["items"][1]["qty"] + 1
        async with api(second) as session:
            status, body = await post(session, changed)
        assert (status, body["status"]) == (200, "updated"), body
        await eventually(
            lambda: job_rows(second, "SELECT station, printer, state, held_reason FROM print_jobs WHERE revision = 2"),
            lambda rows: rows == [("bar", "", "held", "no_printer")],
        )
        assert [(e.station, e.reason) for e in held] == [("bar", "no_printer")]
    finally:
        await bar.stop()


@pytest.mark.parametrize("removed", ["bar", "receipts"])
async def test_a_station_taken_out_of_the_routes_keeps_its_waiting_tickets_held_and_refuses_their_release(
    run: Callable[..., Any], tmp_path: Path, printers: dict[str, SimPrinter], removed: str
) -> None:
    """The bar station (or the receipt printer) is taken out of the config while its tickets wait; the printer that
    served it stays, for the kitchen. The waiting bar tickets (receipts) are held for no printer, and a person's
    Release (one, or all) is refused, 409 naming what has no printer, until the config routes it again: released,
    they printed on the printer that no longer served them, receipts at the front counter that was no longer the
    receipt printer (the config80 probe, F3)."""
    raw = config_dict(tmp_path / "data", printers)
    first = await run(raw)
    for sim in printers.values():
        sim.set_offline(True)
    async with api(first) as session:
        assert (await post(session, make_order(1, bar=True)))[0] == 201
    await wait_until(lambda: first.spoolers["kitchen"].state.value == "offline")
    changed = copy.deepcopy(raw)
    if removed == "bar":
        del changed["stations"]["bar"]
    else:
        del changed["receipts"]["printer"]
    for sim in printers.values():
        sim.set_offline(False)
    second = await run(changed)
    kind = "receipt" if removed == "receipts" else "ticket"
    station_clause = "kind = 'receipt'" if removed == "receipts" else "station = 'bar'"
    await eventually(
        lambda: job_rows(second, f"SELECT state, held_reason FROM print_jobs WHERE {station_clause}"),
        lambda rows: rows == [("held", "no_printer")],
        what=f"the {kind} held for no printer",
    )
    [(job_id,)] = await job_rows(second, f"SELECT id FROM print_jobs WHERE {station_clause}")
    async with api(second) as session:
        async with session.post(f"/api/v1/jobs/{job_id}/release") as response:
            body = await response.json()
            named = "station 'bar'" if removed == "bar" else "receipts"
            assert response.status == 409 and f"no printer serves {named} in the config now" in body["reason"], body
            route = "[stations] bar = PRINTER" if removed == "bar" else "receipts.printer"
            assert f"set {route} and restart" in body["reason"], body
        async with session.post("/api/v1/jobs/release-held") as response:
            assert (await response.json())["released"] == []
        async with session.get("/api/v1/status") as response:
            shown = render_status(await response.json(), colour=False)
    # `edge status` names what waits and the step that prints it, not the release that prints nothing (F4)
    what = "receipts" if removed == "receipts" else "bar"
    assert f"1 ticket held for want of a printer ({what})" in shown and "held for a person" not in shown, shown
    await printers["kitchen"].wait_for_printed(1)  # the kitchen's own ticket
    await asyncio.sleep(0.3)  # a held one would be out by now
    codes = [code for t in printers["kitchen"].printed for code in decode(t).qr_codes]
    if removed == "receipts":
        assert printers["front"].printed == [] and len(codes) == 2, codes  # the kitchen's and the bar's tickets
    else:
        assert codes == ["edge:v1:ord_000001:kitchen"], codes
    assert await job_rows(second, f"SELECT state FROM print_jobs WHERE {station_clause}") == [("held",)]
