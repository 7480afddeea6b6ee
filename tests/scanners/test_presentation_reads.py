"""A hands-free (presentation) counter scanner re-reads a ticket lying under it every 0.5-1 s: one presentation, not a
hand-out. The hand-out needs the code out of view (no read on that scanner for longer than hand_out_gap_s) and back.
The agent's clock is stepped between reads: no real waiting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.scanner import SimScanner
from tests.helpers import (
    FULL_SCANS,
    Seen,
    commits_seen,
    db_execute,
    db_rows,
    push_order,
    scanner_config,
    wait_until,
)


async def outbox(agent: Agent, order_id: str) -> list[str]:
    """The order's pickup events for central (ready, fulfilled), oldest first."""
    rows = await db_rows(
        agent, "SELECT event FROM outbox WHERE order_id = ? AND event IN ('ready', 'fulfilled') ORDER BY id", order_id
    )
    return [r[0] for r in rows]


async def start(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], clock: SteppedClock, gap_s: float = 3.0
) -> tuple[Agent, Seen]:
    """The real agent whose counter scanner hands out, with the default gap (3 s)."""
    seen = Seen()
    agent = await make_agent(scanners=scanner_config(sims, counter={"hand_out_gap_s": gap_s}), clock=clock, listen=seen)
    for name in sims:
        await seen.connected(name)
    return agent, seen


async def read(seen: Seen, sim: SimScanner, code: str) -> str:
    """One read of ``code``, waited for until it is recorded; its outcome."""
    before = len(seen.scans)
    sim.scan(code)
    return (await seen.scans_count(before + 1))[before].outcome


async def in_view_over_a_restart(
    make_agent: Callable[..., Awaitable[Agent]],
    sims: dict[str, SimScanner],
    clock: SteppedClock,
    agent: Agent,
    order: dict[str, Any],
    *,
    every_s: float,
    gone_s: float,
) -> None:
    """The agent stops and starts again while the order's ready ticket lies under the counter scanner, read every
    ``every_s``: four reads after the start are the same presentation, no hand-out; out of view for ``gone_s`` and
    back, it is handed out."""
    code = f"edge:v1:{order['id']}:kitchen"
    await agent.stop()
    clock.advance(every_s)
    agent, seen = await start(make_agent, sims, clock)
    for _ in range(4):
        assert await read(seen, sims["counter"], code) == "already_done"
        clock.advance(every_s)
    assert await outbox(agent, order["id"]) == ["ready"]
    clock.advance(gone_s - every_s)
    assert await read(seen, sims["counter"], code) == "handed_out"
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def test_a_ticket_lying_under_the_counter_scanner_is_not_handed_out_until_it_comes_back(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The finished ticket is laid under the counter scanner and re-read every 0.75 s for 4.5 s: the first read makes
    the order ready, the others are one presentation (already_done); central hears 'ready', not 'fulfilled'. The food
    collected, the ticket out of view for 3.5 s and shown again: handed out, once."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 1)
    code = f"edge:v1:{order['id']}:kitchen"
    outcomes = []
    for _ in range(7):
        outcomes.append(await read(seen, sims["counter"], code))
        clock.advance(0.75)
    assert outcomes == ["order_ready"] + ["already_done"] * 6
    assert await outbox(agent, order["id"]) == ["ready"]
    assert await scans_of(agent, code) == 1  # the re-reads in view are answered, not written

    clock.advance(3.5 - 0.75)  # nothing read for 3.5 s: the ticket was taken away
    assert await read(seen, sims["counter"], code) == "handed_out"
    assert await read(seen, sims["counter"], code) == "already_done"
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def test_two_tickets_read_alternately_are_each_one_presentation(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """Orders A and B, made ready in the kitchen, both lie under the counter scanner, read in turn every 0.5 s for 6 s:
    neither is handed out (each code's own previous read counts, not the scanner's last). B's ticket is taken away
    while A's stays; B shown again 4 s later is handed out, A is still ready."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    a, b = await push_order(agent, 2), await push_order(agent, 3)
    for order in (a, b):
        assert await read(seen, sims["kitchen"], f"edge:v1:{order['id']}:kitchen") == "order_ready"
    outcomes = []
    for i in range(12):
        clock.advance(0.5)
        outcomes.append(await read(seen, sims["counter"], f"edge:v1:{(a, b)[i % 2]['id']}:kitchen"))
    assert outcomes == ["already_done"] * 12
    for _ in range(8):  # B is gone, A still lies there
        clock.advance(0.5)
        assert await read(seen, sims["counter"], f"edge:v1:{a['id']}:kitchen") == "already_done"
    assert await read(seen, sims["counter"], f"edge:v1:{b['id']}:kitchen") == "handed_out"
    assert await outbox(agent, b["id"]) == ["ready", "fulfilled"]
    assert await outbox(agent, a["id"]) == ["ready"]


async def test_a_restart_between_reads_does_not_make_a_presentation_a_hand_out(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The agent restarts while a ready ticket lies under the counter scanner: the reads after the restart are still
    the same presentation (the previous read is in the scans table), until the ticket is gone and back."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 4)
    code = f"edge:v1:{order['id']}:kitchen"
    assert await read(seen, sims["counter"], code) == "order_ready"
    clock.advance(0.75)
    assert await read(seen, sims["counter"], code) == "already_done"
    await in_view_over_a_restart(make_agent, sims, clock, agent, order, every_s=0.75, gone_s=3.75)  # 1.5-3.75 s


async def test_a_ready_order_is_handed_out_after_the_box_clock_was_stepped_back(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The box clock ran 10 min fast; NTP steps it back after the kitchen made the order ready. The counter reads the
    ticket 20 s later: handed out (a double read is seconds apart; a wall clock stepped back by minutes cannot tell
    one). Before: 'became ready -580.0s ago: taken as a double read', for as long as the step (no 'fulfilled')."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 4)
    code = f"edge:v1:{order['id']}:kitchen"
    assert await read(seen, sims["kitchen"], code) == "order_ready"
    clock.step(-600)
    clock.advance(20)
    assert await read(seen, sims["counter"], code) == "handed_out"
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def scans_of(agent: Agent, code: str) -> int:
    """Rows the scans table holds for reads of ``code``."""
    [(count,)] = await db_rows(agent, "SELECT COUNT(*) FROM scans WHERE code = ?", code)
    return int(count)


async def test_a_ticket_or_a_product_code_lying_under_a_scanner_is_written_once_a_presentation(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """A hands-free scanner re-reads what lies under it every 0.5 s (Zebra's "Timeout Between Decodes, Same Symbol",
    0.5 s by default in presentation mode): a done ticket at the kitchen's scanner, a handed-out one at the counter, a
    drink's barcode. Every read is answered as before, but only the first of a presentation is written: re-reads that
    change nothing cost the card no commit. Taken away for longer than hand_out_gap_s and shown again, the ticket is a
    new presentation, written again. Before: each re-read was a row and a commit with its fsync, about 8 KB on the
    card (an hour of a ticket lying there: 7,200 commits, ~59 MB, /work/probes/scans/lying.py)."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 5)
    ticket, drink = f"edge:v1:{order['id']}:kitchen", "4006381333931"
    assert await read(seen, sims["kitchen"], ticket) == "order_ready"
    clock.advance(4)
    assert await read(seen, sims["counter"], ticket) == "handed_out"
    clock.advance(0.5)  # the first read of each at its scanner since it was laid there, or of the day
    assert await read(seen, sims["kitchen"], ticket) == "already_done"
    assert await read(seen, sims["counter"], ticket) == "already_done"  # 0.5 s after the hand-out: the same showing
    assert await read(seen, sims["bar"], drink) == "unknown"
    assert agent.deps is not None
    async with commits_seen(agent.deps.db.path) as committed:
        commits = 0  # rounds of three reads with a commit between their start and end: before, every one
        for _ in range(20):
            clock.advance(0.5)
            assert await read(seen, sims["kitchen"], ticket) == "already_done"
            assert await read(seen, sims["counter"], ticket) == "already_done"
            assert await read(seen, sims["bar"], drink) == "unknown"
            commits += await committed()
    assert commits <= 2, commits  # the agent's own timers may commit meanwhile (as the clock moves 10 s)
    assert await scans_of(agent, ticket) == 3  # ready, handed out, the kitchen's first read of this showing
    assert await scans_of(agent, drink) == 1
    clock.advance(3.5)  # gone, and back
    assert await read(seen, sims["kitchen"], ticket) == "already_done"
    assert await scans_of(agent, ticket) == 4
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def test_a_ready_ticket_lying_under_the_counter_scanner_writes_a_read_a_minute_and_stays_in_view_over_a_restart(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The counter scanner makes the order ready, and the ticket lies there, re-read every 0.5 s for 115 s: no hand-out,
    and a read is written once a minute, not at each re-read (before: 231 rows, a commit each). The agent restarts
    55 s after the last read written: the ticket is still taken as in view (a start knows the presentation from the
    reads written, at most a minute apart). Gone for longer than hand_out_gap_s and back: handed out."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 6)
    code = f"edge:v1:{order['id']}:kitchen"
    assert await read(seen, sims["counter"], code) == "order_ready"
    for _ in range(230):
        clock.advance(0.5)
        assert await read(seen, sims["counter"], code) == "already_done"
    assert await scans_of(agent, code) == 2  # the first, and one a minute later
    await in_view_over_a_restart(make_agent, sims, clock, agent, order, every_s=0.5, gone_s=4.0)


async def test_a_counter_scanner_without_a_gap_hands_out_at_the_first_read_after_a_restart(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """``hand_out_gap_s = 0`` turns presentations off: the read after the one that made the order ready hands it out,
    also when the agent restarted between the two, seconds apart (a start does not take it as still in view)."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock, gap_s=0)
    order = await push_order(agent, 7)
    code = f"edge:v1:{order['id']}:kitchen"
    assert await read(seen, sims["counter"], code) == "order_ready"
    await agent.stop()
    clock.advance(5)
    agent, seen = await start(make_agent, sims, clock, gap_s=0)
    assert await read(seen, sims["counter"], code) == "handed_out"


async def test_a_hand_out_the_full_card_refused_at_first_is_recorded_as_a_hand_out(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The order made ready at the counter, the ticket taken away for 4 s and shown again: a hand-out. The card
    refuses that scan's write (full), so it is held and recorded once there is room, a second later. It is the
    hand-out it was: handed out, central hears 'fulfilled'. Before stop 62 (the scanner probe, s08) the refused
    attempt counted as a read of the ticket a second before the one that was recorded: "still in view, taken as the
    same presentation", and the hand-out was lost."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 1)
    code = f"edge:v1:{order['id']}:kitchen"
    assert await read(seen, sims["counter"], code) == "order_ready"
    clock.advance(4)
    await db_execute(agent, FULL_SCANS)
    sims["counter"].scan(code)
    await wait_until(lambda: agent.scan_recorder is not None and agent.scan_recorder.held == 1, what="the scan held")
    clock.advance(1)
    await db_execute(agent, "DROP TRIGGER full_scans")  # room again
    [_, held] = await seen.scans_count(2)
    assert held.outcome == "handed_out"
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def hold(agent: Agent, sim: SimScanner, code: str, held: int) -> None:
    """One read of ``code`` the full card refuses: waited for until it is the ``held``-th scan held."""
    sim.scan(code)
    await wait_until(lambda: agent.scan_recorder is not None and agent.scan_recorder.held == held, what="scan held")


async def test_a_ready_read_and_a_hand_out_both_held_for_a_full_card_are_recorded_as_read(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The counter scanner is the pass too: the cook's read makes the order ready, the guest's 8 s later hands it
    out. The card refuses both writes (full), so both are held, and recorded together once there is room: they are
    judged 8 s apart, as read, not by when they were recorded. Before stop 68 (the scanner probe, F1) the hand-out
    was "read by this scanner 0.0s before: still in view": not written, the order left ready, central never told."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 1)
    code = f"edge:v1:{order['id']}:kitchen"
    await db_execute(agent, FULL_SCANS)
    await hold(agent, sims["counter"], code, 1)
    clock.advance(8)
    await hold(agent, sims["counter"], code, 2)
    clock.advance(1)
    await db_execute(agent, "DROP TRIGGER full_scans")  # room again
    scans = await seen.scans_count(2)
    assert [s.outcome for s in scans] == ["order_ready", "handed_out"]
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def test_a_live_read_after_a_late_recorded_read_is_judged_by_when_both_were_read(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """The cook's read at the counter is held 10 s for a full card, then recorded: the order is ready. The guest's
    read 1 s after that recording, 11 s after the cook's, hands it out. Before stop 68 (F1) it was "read by this
    scanner 1.0s before": the recording taken for the read."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 2)
    code = f"edge:v1:{order['id']}:kitchen"
    await db_execute(agent, FULL_SCANS)
    await hold(agent, sims["counter"], code, 1)
    clock.advance(10)
    await db_execute(agent, "DROP TRIGGER full_scans")
    [ready] = await seen.scans_count(1)
    assert ready.outcome == "order_ready"
    clock.advance(1)
    assert await read(seen, sims["counter"], code) == "handed_out"
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]


async def test_a_ready_read_and_a_hand_out_held_over_a_restart_are_recorded_as_read(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner]
) -> None:
    """As above, but the agent is restarted with both reads held (left in the runtime directory): the next run
    records them 8 s apart, as read, and the second hands the order out. Before stop 68 (F1): 0.0 s apart."""
    clock = SteppedClock()
    agent, seen = await start(make_agent, sims, clock)
    order = await push_order(agent, 3)
    code = f"edge:v1:{order['id']}:kitchen"
    await db_execute(agent, FULL_SCANS)
    await hold(agent, sims["counter"], code, 1)
    clock.advance(8)
    await hold(agent, sims["counter"], code, 2)
    await agent.stop()
    await db_execute(agent.settings.agent.db_path, "DROP TRIGGER full_scans")  # room again, the agent down
    clock.advance(5)
    agent, seen = await start(make_agent, sims, clock)
    scans = await seen.scans_count(2)
    assert [s.outcome for s in scans] == ["order_ready", "handed_out"]
    assert await outbox(agent, order["id"]) == ["ready", "fulfilled"]
