"""A restored or new box's may-have-printed mark on central's clock, and pushes before its first recovery run: what the
box before it printed prints again only marked KOPIE / COPY, and nothing is lost (the replace81 probe)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import CLOCK_OFF_S, SYSTEM_CLOCK, Clock, SteppedClock
from edge.config import Settings
from edge.events import CentralLinkChanged, RecoveryCompleted
from edge.ops.backup import backup_database, restore_database
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.states import RunTrigger
from edge.store import identity
from tests.helpers import api_client, db_execute, db_rows, eventually, post
from tests.sync.conftest import Agents

DAY_S = 86_400.0
COPY = "KOPIE / COPY"


def printed(printer: SimPrinter, start: int) -> dict[str, bool]:
    """What ``printer`` printed from its ``start``th paper on: each order number, and whether it was marked COPY."""
    texts = [decode(paper).text for paper in printer.printed[start:]]
    return {number: COPY in text for text in texts for number in _numbers(text)}


_WAITING = "SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'"


def _numbers(text: str) -> list[str]:
    return sorted({word for word in text.replace("#", " ").split() if word.startswith("A-10")})


async def dead_box_with_a_backup(
    central: CentralSim,
    settings: Settings,
    agents: Agents,
    printers: dict[str, SimPrinter],
    *,
    clock: Clock = SYSTEM_CLOCK,
    dies: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Box A, in the store for 90 days, takes A-1001..1003 and is backed up; it takes and prints A-1004..1006, and dies
    with its card (``dies``; else its database stays). ``clock``: box A's. Returns the backup and the orders taken
    since."""
    now = datetime.now(UTC).replace(microsecond=0)
    central.add_orders([make_order(n, created_at=now - timedelta(minutes=30 - n)) for n in (1, 2, 3)])
    agent, events = await agents.start(settings, clock=clock)
    await events.wait(RecoveryCompleted)
    await eventually(lambda: db_rows(agent, _WAITING), lambda rows: rows == [(0,)], what="A-1001..1003 printed")
    await agents.stop(agent)
    await db_execute(settings.agent.db_path, _INSTALLED, repr(time.time() - 90 * DAY_S))
    backup = await backup_database(settings)
    taken = datetime.now(UTC) - timedelta(seconds=2)  # before the restore, in whole seconds
    since = [make_order(n, created_at=taken) for n in (4, 5, 6)]
    central.add_orders(since)
    agent, events = await agents.start(settings, clock=clock)
    await events.wait(RecoveryCompleted)
    await eventually(lambda: db_rows(agent, _WAITING), lambda rows: rows == [(0,)], what="A-1004..1006 printed")
    await agents.stop(agent)
    if not dies:
        return backup, since
    kept = Path(shutil.copy(backup, settings.agent.db_path.parent.parent / backup.name))  # on the technician's stick
    shutil.rmtree(settings.agent.db_path.parent)  # the card died
    return kept, since


_INSTALLED = "UPDATE meta SET value = ? WHERE key = 'may_have_printed_until'"


class Rebooted(SteppedClock):
    """The box's clocks after a reboot: another boot id, whose monotonic clock says nothing of the one before."""

    def boot(self) -> str:
        return "another-boot"


@pytest.mark.parametrize(
    ("box_off_s", "how"),
    [
        (-30 * DAY_S, "restored"),
        (DAY_S, "restored"),
        (0.0, "restored"),
        (-30 * DAY_S, "installed-offline"),
        (DAY_S, "installed-offline"),
        (-30 * DAY_S, "rebooted"),
        (DAY_S, "rebooted"),
    ],
    ids=[
        "a-month-behind",
        "a-day-ahead",
        "right",
        "a-month-behind-installed-offline",
        "a-day-ahead-installed-offline",
        "a-month-behind-rebooted-before-the-start",
        "a-day-ahead-rebooted-before-the-start",
    ],
)
async def test_a_backup_restored_onto_a_new_box_on_a_wrong_clock_prints_what_the_dead_box_printed_since_once_as_copy(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    box_off_s: float,
    how: str,
) -> None:
    """Last night's backup goes onto a new box whose clock is wrong (no battery: the image's date until NTP; or, on the
    documented path, install.sh started the agent before the shop's line was up, then `edge restore`, then the start).
    The orders the dead box took and printed after the backup come back by recovery: each prints once, marked COPY,
    ticket and receipt, none is history; after NTP set the clock, an order central takes prints as an original.
    Before: the restore's mark was the box's clock (a new card's "now", or the fresh database's first start), never
    put on central's: a month behind, A-1004..1006 printed a second time unmarked (the replace81 probe, F1); a day
    ahead, they were history, never printed, and so was every order recovery brought for a day, A-1007 too (F2).
    Rebooted between the restore and the start, the restore's moment is lost with its boot's monotonic clock: the
    mark is the agent's start, put on central's clock the same way."""
    settings = sync_settings()
    backup, _ = await dead_box_with_a_backup(central, settings, agents, printers)
    kitchen, front = printers["kitchen"], printers["front"]
    clock = SteppedClock(wall_offset=box_off_s)
    if how == "installed-offline":  # install.sh's start, the line not up: a fresh database on the wrong clock
        await central.set_up(False)
        agent, _ = await agents.start(settings, clock=clock)
        await agents.stop(agent)
        await central.set_up(True)
    await restore_database(settings, backup, clock=clock)
    tickets, receipts = len(kitchen.printed), len(front.printed)
    if how == "rebooted":
        clock = Rebooted(wall_offset=box_off_s)
    agent, events = await agents.start(settings, clock=clock)
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["stored"], completed.counts["history"]) == (3, 0), completed.counts
    await kitchen.wait_for_printed(tickets + 3)
    await front.wait_for_printed(receipts + 3)
    expected = {"A-1004": True, "A-1005": True, "A-1006": True}
    assert (printed(kitchen, tickets), printed(front, receipts)) == (expected, expected)

    clock.step(-box_off_s)  # NTP sets the clock
    await asyncio.sleep(2)  # a later order: past the restore's second, as central's Date gives it
    central.add_orders([make_order(7)])
    await agent.sync.recovery.trigger(RunTrigger.MANUAL)
    await kitchen.wait_for_printed(tickets + 4)
    assert printed(kitchen, tickets + 3) == {"A-1007": False}


@pytest.mark.parametrize("restored", [False, True], ids=["a-new-box", "a-restored-box"])
async def test_orders_pushed_to_a_new_or_restored_box_before_its_first_recovery_run_print_as_copy(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    restored: bool,
) -> None:
    """Central (or a till) pushes the day's orders again as a new box, or a freshly restored one, comes up, before its
    first recovery run listed them (here central's listing is not up yet). The box before it may have printed them:
    orders created before the box's may-have-printed mark print marked COPY, as recovery's would; an order created
    after it prints as an original. Before: every push was stored and printed unmarked, the mark read only for
    recovery's orders: the outcome hung on whether a push beat the first listing by a second (the replace81 probe,
    F3)."""
    settings = sync_settings()
    kitchen = printers["kitchen"]
    if restored:
        backup, again = await dead_box_with_a_backup(central, settings, agents, printers)
        await restore_database(settings, backup)
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        again = [make_order(n, created_at=now - timedelta(minutes=12 - n)) for n in (4, 5, 6)]
    await central.set_up(False)
    start = len(kitchen.printed)
    agent, _ = await agents.start(settings)
    async with api_client(agent) as api:
        for order in again:
            assert (await post(api, order))[0] == 201
        await kitchen.wait_for_printed(start + 3)
        later = make_order(8, created_at=datetime.now(UTC) + timedelta(seconds=1))
        assert (await post(api, later))[0] == 201
        await kitchen.wait_for_printed(start + 4)
    assert printed(kitchen, start) == {"A-1004": True, "A-1005": True, "A-1006": True, "A-1008": False}


async def test_a_push_to_a_new_box_on_a_month_behind_clock_is_judged_on_centrals_clock_once_central_answered(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """A new box a month behind (no battery, NTP not yet through) reaches central, whose listing fails for now (a
    busy backend: its first recovery run waits to try again), and a till pushes an order taken 10 minutes before the
    box started and one taken after. Central's answers date the box's first start at once: the first prints marked
    COPY (the box it replaces may have printed it), the second as an original. Before, the first start was put on
    central's clock only by a run's first page: until then the mark was a month back and both printed unmarked (the
    replace81 probe, F3, on a wrong clock)."""
    central.fail_next(10_000, 503, path="orders")
    earlier = make_order(1, created_at=datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10))
    agent, events = await agents.start(sync_settings(), clock=SteppedClock(wall_offset=-30 * DAY_S))
    await events.wait(CentralLinkChanged, where=lambda e: e.up)
    await asyncio.sleep(1)  # an order taken after the start, in whole seconds
    kitchen = printers["kitchen"]
    async with api_client(agent) as api:
        assert (await post(api, earlier))[0] == 201
        await kitchen.wait_for_printed(1)
        assert (await post(api, make_order(2)))[0] == 201
        await kitchen.wait_for_printed(2)
    assert printed(kitchen, 0) == {"A-1001": True, "A-1002": False}


@pytest.mark.parametrize("box_off_s", [-30 * DAY_S, 0.0], ids=["a-month-behind", "right"])
async def test_resends_to_a_restored_box_before_central_answers_print_as_copy_changes_too(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    box_off_s: float,
) -> None:
    """Last night's backup goes onto a new box; central does not answer at its start (the shop's line is down), so its
    may-have-printed mark stays on the box's clock, undated. The till resends what the dead box took and printed
    after the backup, and a change of an order in the backup: all of it prints marked COPY, as recovery's listing
    would print it. Before stop 81, on a box a month behind the orders and the change printed a second time unmarked
    (their created_at, a month in the box's future, was judged against the box-clock mark: the verify81b probe, V1);
    on a right clock the change did (a pushed change was marked only if the replaced database had taken it: V4)."""
    settings = sync_settings()
    backup, since = await dead_box_with_a_backup(central, settings, agents, printers)
    clock = SteppedClock(wall_offset=box_off_s)
    await asyncio.sleep(1)  # the restore comes after the dead box took its orders, in whole seconds
    await restore_database(settings, backup, clock=clock)
    await central.set_up(False)
    kitchen = printers["kitchen"]
    start = len(kitchen.printed)
    agent, _ = await agents.start(settings, clock=clock)
    [(payload,)] = await db_rows(agent, "SELECT payload FROM orders WHERE id = 'ord_000001'")
    first = json.loads(payload)
    changed = first | {"revision": 2, "items": [first["items"][0] | {"qty": 7}, *first["items"][1:]]}
    async with api_client(agent) as api:
        for order in since:
            assert (await post(api, order))[0] == 201
        await kitchen.wait_for_printed(start + 3)
        assert (await post(api, changed))[0] == 200
        await kitchen.wait_for_printed(start + 4)
    assert printed(kitchen, start) == {"A-1001": True, "A-1004": True, "A-1005": True, "A-1006": True}


async def test_a_restore_over_the_database_of_a_box_a_month_behind_prints_the_orders_taken_since_as_copy(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """A box living a month behind (NTP blocked; its first start dated by central) takes A-1001..1003, is backed up,
    takes and prints A-1004..1006; the technician restores last night's backup over its database. Recovery brings
    the three back: each prints once, marked COPY, as the restore said ("3 orders taken since the backup are not in
    it"). Before stop 81 they printed a second time unmarked: the mark was the replaced database's newest arrival on
    the box's clock, a month before central's created_at it is compared with, and what the restore recorded as taken
    counted only for pushes (the verify81b probe, V2)."""
    settings = sync_settings()
    clock = SteppedClock(wall_offset=-30 * DAY_S)
    backup, _ = await dead_box_with_a_backup(central, settings, agents, printers, clock=clock, dies=False)
    await asyncio.sleep(1)  # the restore comes after the box took its orders, in whole seconds
    await restore_database(settings, backup, clock=clock)
    kitchen, front = printers["kitchen"], printers["front"]
    tickets, receipts = len(kitchen.printed), len(front.printed)
    _, events = await agents.start(settings, clock=clock)
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 3, completed.counts
    await kitchen.wait_for_printed(tickets + 3)
    await front.wait_for_printed(receipts + 3)
    expected = {"A-1004": True, "A-1005": True, "A-1006": True}
    assert (printed(kitchen, tickets), printed(front, receipts)) == (expected, expected)


# Mark.before on its boundaries: no push can be timed to the exact second from outside, so the rule is pinned here.
MARK_S = 1_800_000_000.0  # a whole second, as the mark always is


def test_an_order_created_in_the_marks_own_second_is_after_the_mark() -> None:
    """The mark is the start of its second, as central's whole-second times are: an order of that very second was
    taken after the start and prints as an original; a millisecond before it may have printed on the box before
    (prints COPY). Before stop 82 no test told `<` from `<=` here (the mut82 mutation run: `at < self.until` → `<=`
    survived), and an order of the start's own second could have printed marked COPY."""
    mark = identity.Mark(MARK_S, unsettled=False, now=MARK_S + DAY_S)
    assert (mark.before(MARK_S), mark.before(MARK_S - 0.001)) == (False, True)


def test_a_time_exactly_a_minute_ahead_of_an_undated_marks_clock_is_still_judged_by_the_mark() -> None:
    """Until central dates the mark, a time more than CLOCK_OFF_S ahead of the box's clock shows the clock is behind
    and counts as before the mark (COPY, the verify81b probe, V1); one exactly CLOCK_OFF_S ahead is a clock within
    the tolerance and is judged by the mark (here after it: an original). Once dated, the box's clock does not count.
    Before stop 82 no test pinned the edge (`>` → `>=` survived, the mut82 mutation run)."""
    now = MARK_S + 3600.0
    undated = identity.Mark(MARK_S, unsettled=True, now=now)
    dated = identity.Mark(MARK_S, unsettled=False, now=now)
    assert (undated.before(now + CLOCK_OFF_S), undated.before(now + CLOCK_OFF_S + 0.001)) == (False, True)
    assert dated.before(now + CLOCK_OFF_S + 0.001) is False


def test_without_a_mark_nothing_is_before_it() -> None:
    """A database upgraded from before the mark existed has none (neither new nor restored since): nothing it is
    sent counts as may-have-printed, and the answer is a plain False, as the print job's NOT NULL copy flag takes it.
    Before stop 82 the no-mark branch ran in no test (the mut82 mutation run: `return False` → `True`, every order
    printed marked COPY, or → `None`, the intake's insert failing, survived as not covered)."""
    mark = identity.Mark(None, unsettled=True, now=MARK_S)
    assert [mark.before(at) for at in (0.0, MARK_S, MARK_S + CLOCK_OFF_S + 1)] == [False, False, False]
