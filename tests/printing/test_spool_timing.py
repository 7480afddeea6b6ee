"""When the spool asks the printer, counted on a stopped clock the test moves (``loop_clock``): the paused printer's
probe backoff, the idle poll's cadence. The timing is the behaviour here (a printer back within 2 s of the fix, no
printer hammered with status reads), so it is pinned exactly rather than bounded in real time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import pairwise
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.config import parse_settings
from edge.events import Event, PrinterStatusChanged
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, config_dict, db_execute, post
from tests.printing.conftest import LoopClock

READ = 3  # status queries per status read: DLE EOT 1, 2 and 4


def read_times(clock: LoopClock, printer: SimPrinter) -> tuple[list[float], Callable[[], None]]:
    """The clock's time at each status read the printer answers from now on, and the callback that records them (one
    read completes per step of ``LoopClock.run``, as it settles after each)."""
    times: list[float] = []
    seen = [printer.status_queries]

    def each() -> None:
        while printer.status_queries >= seen[0] + READ:
            seen[0] += READ
            times.append(clock.mono())

    return times, each


async def test_a_printer_out_of_paper_is_probed_after_a_quarter_second_doubling_to_every_second(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], loop_clock: LoopClock, tmp_path: Path
) -> None:
    """The idle poll finds the kitchen printer out of paper: the state changes at once (the alert's event), the spool
    pauses and reads the status again 0.25 s later, then 0.5 s, then every 1 s (the cap for paper and cover faults, so
    a new roll prints within 2 s), and nothing else asks the printer meanwhile; the printer list keeps saying why it is
    paused. The probe that finds a new roll makes the printer 'online' at once, though nothing waits to print (not at
    the next idle poll)."""
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["status_poll_s"] = 5.0
    changes: list[tuple[str, str, float]] = []

    def heard(event: Event) -> None:
        if isinstance(event, PrinterStatusChanged) and event.printer == "kitchen":
            changes.append((event.new, event.detail, loop_clock.mono()))

    agent = await make_agent(parse_settings(raw, source="test"), clock=loop_clock, listen=heard)
    kitchen = printers["kitchen"]
    loop_clock.freeze()
    kitchen.paper_out = True
    times, each = read_times(loop_clock, kitchen)
    await loop_clock.run(9.0, each=each)  # the poll within 5 s, then 4 s paused
    assert changes[-1] == ("paper_out", "found by the status poll between jobs", times[0])
    intervals = [b - a for a, b in pairwise(times)]
    assert intervals[:5] == pytest.approx([0.25, 0.5, 1.0, 1.0, 1.0], abs=0.03), times
    async with api_client(agent) as api, api.get("/api/v1/printers") as response:
        (shown,) = [p for p in (await response.json())["printers"] if p["name"] == "kitchen"]
    assert (shown["state"], shown["detail"]) == ("paper_out", "found by the status poll between jobs")  # after probes

    kitchen.paper_out = False  # a new roll: the next probe says so at once, nothing waiting to print
    await loop_clock.run(1.0, each=each)
    assert changes[-1] == ("online", "", times[-1])


async def test_an_idle_printer_is_read_every_status_poll_s_from_the_start_and_from_its_last_job(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    loop_clock: LoopClock,
    tmp_path: Path,
    example_order: dict,
) -> None:
    """status_poll_s 2: an idle spool reads its printer's status 2 s after the agent starts, then every 2 s; a job's own
    status reads (before and after its bytes) count as a poll, so the next read comes 2 s after the job, not at once
    and not on the old beat."""
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["status_poll_s"] = 2.0
    loop_clock.freeze()
    started = loop_clock.mono()
    kitchen = printers["kitchen"]
    times, each = read_times(loop_clock, kitchen)  # from before the start: a read while starting counts too
    agent = await make_agent(parse_settings(raw, source="test"), clock=loop_clock)
    await loop_clock.settle()
    each()
    await loop_clock.run(5.0, each=each)
    assert [t - started for t in times] == pytest.approx([2.0, 4.0], abs=0.03), times

    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await loop_clock.until(lambda: kitchen.printed, "printed")
    printed_at = loop_clock.mono()  # 5 s: off the old beat (6 s)
    # its read before it (DLE EOT 1, 2, 4), and its GS r after it, whose reply is the paper's state
    await loop_clock.until(lambda: kitchen.in_order_answered == 1, "the job's GS r reply")
    times, each = read_times(loop_clock, kitchen)
    await loop_clock.run(4.5, each=each)
    assert [t - printed_at for t in times] == pytest.approx([2.0, 4.0], abs=0.03), times


async def test_a_spool_that_cannot_read_its_queue_tries_again_each_second_not_in_a_tight_loop(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    loop_clock: LoopClock,
    example_order: dict,
) -> None:
    """The spool's read of its queue fails (here a column renamed under it by hand; a job row holding a value this
    version does not know is no longer such a failure: test_job_outcomes ends that job): the spool logs the error and
    looks again after 1 s, every second, instead of spinning on the database or giving up."""
    agent = await make_agent(clock=loop_clock)
    kitchen = printers["kitchen"]
    loop_clock.freeze()
    kitchen.paper_out = True
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await loop_clock.until(lambda: agent.spoolers["kitchen"].state.value == "paper_out", "paused")
    await db_execute(agent, "ALTER TABLE print_jobs RENAME COLUMN variant TO variant_by_hand")
    kitchen.paper_out = False
    errors: list[float] = []
    with capture_logs() as logs:

        def each() -> None:
            while sum(e["event"] == "spool_error" for e in logs) > len(errors):
                errors.append(loop_clock.mono())

        await loop_clock.run(4.0, each=each)  # the probe finds the paper back within 1 s, then 3 s of errors
    assert len(errors) >= 3
    assert [b - a for a, b in pairwise(errors)] == pytest.approx([1.0] * (len(errors) - 1), abs=0.03), errors
    assert kitchen.printed == []
