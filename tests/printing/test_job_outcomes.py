"""What each outcome of a print job leaves behind, seen from outside: bytes on the simulated printer, rows for central
in the outbox, events for the alerts. (Pinned after mutation testing showed them unpinned: scripts/mutate.py.)"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.app import Agent
from edge.config import parse_settings
from edge.events import JobDead, JobFailed, PrinterStatusChanged
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from tests.helpers import (
    Recorder,
    api_client,
    config_dict,
    db_rows,
    eventually,
    job_rows,
    post,
    status_reads,
    wait_until,
)


async def _failed_rows(agent: Agent) -> list[tuple]:
    return await db_rows(
        agent, "SELECT id, idempotency_key, payload, delivered_at FROM outbox WHERE event = 'failed' ORDER BY id"
    )


async def _until_dead(agent: Agent, kitchen: SimPrinter, job_id: int) -> None:
    async def dead() -> bool:
        if kitchen.drop_after is None:
            kitchen.drop_after = 10  # one-shot in the simulator: re-arm until the job gives up
        rows = await db_rows(agent, "SELECT state FROM print_jobs WHERE id = ?", job_id)
        return rows == [("dead",)]

    await wait_until(dead, what="the job dead")


async def test_a_dead_job_is_reported_to_central_and_alerted_once_even_if_it_dies_again(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A job that fails max_attempts times is dead: central hears it once (one 'failed' outbox row with the job and its
    error) and the alerts hear JobDead with the order number; each attempt before is one JobFailed. Retried by a
    person and dead again, the first row stays as it was (same id and time): central is not told twice."""
    seen = Recorder()
    agent = await make_agent(spool={"max_attempts": 2}, listen=seen)
    kitchen = printers["kitchen"]
    example_order["print_receipt"] = False
    kitchen.drop_after = 10
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        (job_id,) = [r[0] for r in await db_rows(agent, "SELECT id FROM print_jobs")]
        await _until_dead(agent, kitchen, job_id)
        assert await job_rows(agent) == [("dead", 2, 1)]  # two attempts, the second marked COPY (bytes went out)
        (dead,) = await seen.wait(JobDead)
        assert (dead.job_id, dead.order_id, dead.order_number, dead.printer, dead.attempts) == (
            job_id,
            "ord_7f3a9c21",
            "A-1042",
            "kitchen",
            2,
        )
        assert [e.attempts for e in seen.of(JobFailed)] == [1]
        first = await _failed_rows(agent)
        assert len(first) == 1
        ((_, key, payload, _),) = first
        assert key == f"ord_7f3a9c21:failed:{job_id}"
        body = json.loads(payload)
        assert body["job_id"] == job_id and body["event"] == "failed" and "kitchen" in body["error"]

        async with api.post(f"/api/v1/jobs/{job_id}/retry") as response:
            assert response.status == 200
        await seen.wait(JobFailed, 2)  # the retry ran again
        await _until_dead(agent, kitchen, job_id)
        await seen.wait(JobDead, 2)
        assert await _failed_rows(agent) == first


async def test_each_reprint_copies_the_original_jobs_once(
    agent: Agent, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Two reprints of an order with a kitchen ticket and a receipt: each adds one COPY of each, never copies of the
    earlier copies (2 + 2 copies, not 2 + 4)."""
    kitchen, front = printers["kitchen"], printers["front"]
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
        await kitchen.wait_for_printed(1)
        await front.wait_for_printed(1)
        for n in (1, 2):
            async with api.post(f"/api/v1/orders/{example_order['id']}/reprint") as response:
                assert response.status == 201
                assert len((await response.json())["job_ids"]) == 2
            await kitchen.wait_for_printed(1 + n)
            await front.wait_for_printed(1 + n)
        await eventually(lambda: job_rows(agent), lambda rows: all(r[0] == "printed" for r in rows), what="printed")
    keys = [r[0] for r in await db_rows(agent, "SELECT idempotency_key FROM print_jobs ORDER BY id")]
    assert keys == [  # the original is :0, the n-th copy of each job :n
        f"ord_7f3a9c21:{kind}:{station}:{n}"
        for n in range(3)
        for kind, station in (("ticket", "kitchen"), ("receipt", "-"))
    ]
    assert [r[1:] for r in await job_rows(agent)] == [(0, 0), (0, 0), (0, 1), (0, 1), (0, 1), (0, 1)]
    assert len(kitchen.printed) == len(front.printed) == 3
    assert ["KOPIE / COPY" in decode(p).text for p in kitchen.printed] == [False, True, True]


async def test_paper_out_found_between_jobs_pauses_the_spool_before_the_next_order(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """Paper runs out while the printer is idle: the status poll between jobs finds it, the spool pauses and says so
    (PrinterStatusChanged → paper_out, for the alert) before any order needs the printer; an order then waits with no
    attempt spent and prints once, whole, when paper is back."""
    seen = Recorder()
    kitchen = printers["kitchen"]
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["status_poll_s"] = 0.1
    agent = await make_agent(parse_settings(raw, source="test"), listen=seen)
    await wait_until(lambda: kitchen.status_queries >= 3, what="a status poll")
    kitchen.paper_out = True
    (change,) = await seen.wait(PrinterStatusChanged, where=lambda e: e.printer == "kitchen" and e.new == "paper_out")
    assert "between jobs" in change.detail
    assert agent.spoolers["kitchen"].paused_for() is not None
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await status_reads(kitchen, 2)  # still probing, never sending
    assert kitchen.jobs == []
    assert await job_rows(agent) == [("queued", 0, 0)]
    kitchen.paper_out = False
    printed = await kitchen.wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)], what="printed")
    assert "KOPIE" not in decode(printed[0]).text
    assert len(kitchen.jobs) == 1
