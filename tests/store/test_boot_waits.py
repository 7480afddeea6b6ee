"""The job store's record of this boot (note_boot, boot_waits) and of how a job ended (endings), on a real SQLite file
with the box's clocks and boot id in the test's hands."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from edge.clock import SteppedClock
from edge.orders.intake import Router
from edge.states import JobKind, JobState
from edge.store.db import Database
from edge.store.jobs import JobStore
from edge.store.orders import OrderStore

EXAMPLE = json.loads((Path(__file__).parents[1] / "fixtures" / "order-example.json").read_text(encoding="utf-8"))
ROUTER = Router(
    stations={"kitchen": ["kitchen"], "bar": ["kitchen"]}, receipt_printer="front", receipts_by_default=False
)


class Box(SteppedClock):
    """The box's clocks in one boot: ``boot`` its id; a reboot is another Box, whose monotonic clock is its own."""

    def __init__(self, boot: str, mono_offset: float) -> None:
        super().__init__()
        self._boot = boot
        self.mono_offset = mono_offset

    def boot(self) -> str:
        return self._boot


def order(n: int) -> dict:
    o = copy.deepcopy(EXAMPLE)
    o["id"], o["number"] = f"ord_{n}", f"N-{n}"
    return o


def printer_for(kind: JobKind, station: str | None) -> str:
    return "front" if kind == JobKind.RECEIPT else "kitchen"


async def set_state(db: Database, job_id: int, state: JobState) -> None:
    async with db.transaction() as conn:
        await conn.execute("UPDATE print_jobs SET state = ? WHERE id = ?", (state, job_id))


async def waits_after(box: Box, jobs: JobStore, seconds: float) -> dict[int, float]:
    """boot_waits ``seconds`` later on the box's monotonic clock, rounded: the real time the test takes is less."""
    box.advance(seconds)
    return {job_id: round(wait) for job_id, wait in (await jobs.boot_waits()).items()}


async def test_the_waits_a_kill_leaves_are_those_of_the_jobs_not_done_stored_in_this_boot_on_its_own_clock(
    tmp_path: Path,
) -> None:
    """Boot b1 (monotonic clock at 0 + real): an order's ticket and receipt (jobs 1, 2) wait 5 s. A reboot, b2, whose
    monotonic clock is 2 h further on: nothing of b1 waits on this clock, not even before b2 stores a job; b2 stores
    two orders (jobs 3-6; the second write leaves the boot's first job as it was), its receipt 4 prints: 3, 5, 6 wait
    their seconds. A reboot, b3, where a person's reprint is the first job stored: the COPY waits its seconds. Stop
    83's mutation run (mut83): the boot noted by no write (an order's or a reprint's), kept across boots or counted
    from the wrong job, and the jobs' filter by id, clock or state survived the job and order stores' mutation maps,
    whose tests reach boot_waits in-process only at a first start (stop 82's kill tests run the agent in a
    subprocess, which the map's coverage does not follow)."""
    db = await Database.open(tmp_path / "edge.db")
    try:
        b1 = Box("b1", 0.0)
        orders, jobs = OrderStore(db, clock=b1), JobStore(db, clock=b1)
        assert (await orders.insert(ROUTER.prepare(order(1), "push"))).job_ids == (1, 2)
        assert await waits_after(b1, jobs, 5) == {1: 5, 2: 5}

        b2 = Box("b2", 7200.0)
        orders, jobs = OrderStore(db, clock=b2), JobStore(db, clock=b2)
        assert await jobs.boot_waits() == {}
        assert (await orders.insert(ROUTER.prepare(order(2), "push"))).job_ids == (3, 4)
        b2.advance(3)
        assert (await orders.insert(ROUTER.prepare(order(3), "push"))).job_ids == (5, 6)
        await set_state(db, 4, JobState.PRINTED)
        assert await waits_after(b2, jobs, 4) == {3: 7, 5: 4, 6: 4}

        await set_state(db, 3, JobState.PRINTED)
        b3 = Box("b3", 9000.0)
        jobs = JobStore(db, clock=b3)
        assert (await jobs.add_copies("ord_2", station="kitchen", printer_for=printer_for)).queued == (7,)
        assert await waits_after(b3, jobs, 2) == {7: 2}
    finally:
        await db.close()


async def test_a_ticket_replaced_by_its_copy_ends_as_its_last_copy_did(tmp_path: Path) -> None:
    """Order 1's ticket (job 1) dies; a person's reprint replaces it by COPY 3, which dies too and is replaced by
    COPY 4. While 4 waits, 1 and 3 end queued; once 4 prints, printed; the receipt (2), no COPY, ends as it stands.
    The alarm tests (tests/alerts/test_agent.py) kill stop 83's mutants of endings (mut83: MIN for MAX, the columns
    read) but stage one COPY at most and are outside the job store's mutation map, which this file is in."""
    db = await Database.open(tmp_path / "edge.db")
    try:
        orders, jobs = OrderStore(db), JobStore(db)
        assert (await orders.insert(ROUTER.prepare(order(1), "push"))).job_ids == (1, 2)
        await set_state(db, 1, JobState.DEAD)
        assert (await jobs.add_copies("ord_1", station="kitchen", printer_for=printer_for)).queued == (3,)
        await set_state(db, 3, JobState.DEAD)
        assert (await jobs.add_copies("ord_1", station="kitchen", printer_for=printer_for)).queued == (4,)
        assert await jobs.endings([1, 2, 3]) == {1: JobState.QUEUED, 2: JobState.QUEUED, 3: JobState.QUEUED}
        await set_state(db, 4, JobState.PRINTED)
        assert await jobs.endings([1, 3]) == {1: JobState.PRINTED, 3: JobState.PRINTED}
    finally:
        await db.close()
