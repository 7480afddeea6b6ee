"""The change plan as pure code: diffs between any two revisions, and what each station's jobs get."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.orders.changes import (
    ExistingJob,
    Line,
    LineChange,
    LineKey,
    PlannedJob,
    apply_diff,
    diff_station,
    plan_revision,
    shared_line_ids,
    station_lines,
    struck_lines,
)
from edge.orders.model import Order, parse_order
from edge.states import JobKind, JobState, JobVariant
from tests.helpers import EXAMPLE

STATIONS = ("kitchen", "bar", "grill")


def item(sku: str, station: str, qty: int, modifiers: list[str], note: str | None, line_id: str | None) -> dict:
    out: dict[str, Any] = {
        "sku": sku,
        "name": f"Name {sku}",
        "qty": qty,
        "unit_price": "1.00",
        "requires_production": True,
        "station": station,
        "modifiers": [{"name": m} for m in modifiers],
        "note": note,
    }
    if line_id is not None:
        out["line_id"] = line_id
    return out


ITEMS = st.lists(
    st.builds(
        item,
        sku=st.sampled_from(["A", "B", "C"]),
        station=st.sampled_from(STATIONS),
        qty=st.integers(1, 3),
        modifiers=st.lists(st.sampled_from(["x", "y"]), max_size=3),
        note=st.none() | st.just("n"),
        line_id=st.none() | st.sampled_from(["L1", "L2", "L3"]),
    ),
    min_size=1,
    max_size=6,
)


def order(items: list[dict], revision: int = 1, status: str = "open") -> Order:
    data = copy.deepcopy(EXAMPLE)
    data.update(items=items, revision=revision, status=status)
    return parse_order(data)


def unique_lines(items: list[dict]) -> list[dict]:
    """A line id names one line: later lines with a line id already used lose theirs."""
    seen: set[str] = set()
    for i in items:
        if i.get("line_id") in seen:
            del i["line_id"]
        elif "line_id" in i:
            seen.add(i["line_id"])
    return items


@settings(max_examples=300, deadline=None)
@given(before=ITEMS, after=ITEMS)
def test_applying_the_diff_to_revision_n_gives_revision_n_plus_1(before: list[dict], after: list[dict]) -> None:
    """For every station, revision n's lines with the diff applied read as revision n+1's lines (modifiers in any
    order); a station whose lines did not change gets an empty diff; every entry changes something."""
    old, new = order(unique_lines(before)), order(unique_lines(after), 2)
    for station in STATIONS:
        diff = diff_station(old, new, station)
        ids = shared_line_ids((old, new), station)  # as diff_station keys them
        was, now = station_lines(old, station, ids=ids), station_lines(new, station, ids=ids)
        assert read(apply_diff(was, diff)) == read(now)
        assert (diff == ()) == (read(was) == read(now))
        assert all(c.before != c.after for c in diff)


def read(lines: dict[LineKey, Line]) -> dict[LineKey, tuple[int, tuple[object, ...]]]:
    """What the cook reads of ``lines``."""
    return {key: (line.qty, line.shown()) for key, line in lines.items()}


def test_lines_match_by_sku_modifiers_and_note_and_quantities_add_up() -> None:
    """Without line ids: the same sku with other modifiers is another line; equal lines are one line, their quantities
    added; a quantity change is a quantity change."""
    two_lines = [item("A", "kitchen", 1, ["x"], None, None), item("A", "kitchen", 2, [], None, None)]
    one_more = [item("A", "kitchen", 2, ["x"], None, None), item("A", "kitchen", 2, [], None, None)]
    [change] = diff_station(order(two_lines), order(one_more, 2), "kitchen")
    assert change.change == LineChange.QUANTITY and (change.before, change.after) and change.after
    assert (change.before.qty, change.after.qty) == (1, 2)
    merged = station_lines(order([*two_lines, item("A", "kitchen", 3, ["x"], None, None)]), "kitchen")
    assert sorted(line.qty for line in merged.values()) == [2, 4]


def test_a_line_id_makes_a_modifier_change_one_modified_line() -> None:
    """With a line id, another modifier or note is the same line modified; without one it is removed and added."""
    with_id = diff_station(
        order([item("A", "kitchen", 1, ["x"], None, "L1")]),
        order([item("A", "kitchen", 1, ["y"], "n", "L1")], 2),
        "kitchen",
    )
    assert [c.change for c in with_id] == [LineChange.MODIFIED]
    without = diff_station(
        order([item("A", "kitchen", 1, ["x"], None, None)]),
        order([item("A", "kitchen", 1, ["y"], None, None)], 2),
        "kitchen",
    )
    assert sorted(c.change for c in without) == [LineChange.ADDED, LineChange.REMOVED]


def test_a_storno_strikes_each_dish_a_line_showed_under_its_own_name() -> None:
    """Free-text dishes on one sku stay apart; a line_id that showed another dish in a revision that may be on paper
    too is struck as both (before, the dishes were one line under the last one's name, and the line_id one of them)."""
    free = [{**item("OPEN", "kitchen", 1, [], None, None), "name": name} for name in ("Pommes", "Kinderteller")]
    struck = struck_lines([order(free)], "kitchen")
    assert sorted(c.before.name for c in struck if c.before) == ["Kinderteller", "Pommes"]
    swapped = [order([{**item("A", "kitchen", 1, [], None, "L1"), "name": name}], n) for n, name in enumerate("MS", 1)]
    assert [(c.before.name, c.before.qty) for c in struck_lines(swapped, "kitchen") if c.before] == [("M", 1), ("S", 1)]


def test_a_moved_line_is_removed_at_one_station_and_added_at_the_other() -> None:
    old = order([item("A", "kitchen", 1, [], None, "L1"), item("B", "kitchen", 1, [], None, None)])
    new = order([item("A", "bar", 1, [], None, "L1"), item("B", "kitchen", 1, [], None, None)], 2)
    assert [c.change for c in diff_station(old, new, "kitchen")] == [LineChange.REMOVED]
    assert [c.change for c in diff_station(old, new, "bar")] == [LineChange.ADDED]


def job(job_id: int, station: str, state: JobState, revision: int = 1, **kw: Any) -> ExistingJob:
    return ExistingJob(
        id=job_id,
        kind=JobKind.TICKET,
        station=station,
        state=state,
        revision=revision,
        variant=kw.get("variant"),
        change_from=kw.get("change_from"),
        copy=kw.get("copy", False),
    )


@settings(max_examples=200, deadline=None)
@given(
    before=ITEMS,
    after=ITEMS,
    states=st.lists(st.sampled_from(list(JobState)), min_size=3, max_size=3),
    copies=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_every_station_gets_what_its_paper_needs(
    before: list[dict], after: list[dict], states: list[JobState], copies: list[bool]
) -> None:
    """Per station: a waiting ticket is rewritten (or discarded when nothing is left for it), so nothing extra prints;
    a ticket on paper, or a COPY waiting to print again (it may be on paper already), gets a change ticket exactly
    when its lines changed and stays as it is; a station with nothing gets a whole ticket marked added exactly when
    it has items now. An unchanged station gets nothing."""
    old, new = order(unique_lines(before)), order(unique_lines(after), 2)
    jobs = [
        job(n, s, state, copy=c)
        for n, (s, state, c) in enumerate(zip(STATIONS, states, copies, strict=True))
        if s in old.stations
    ]
    plan = plan_revision(jobs, {1: old}, new, receipt_before=True, previous=old)
    waiting_states = (JobState.QUEUED, JobState.HELD, JobState.FAILED, JobState.DEAD)
    for station in STATIONS:
        mine = [j for j in jobs if j.station == station and j.state != JobState.DISCARDED]
        added = [p for p in plan.add if p.station == station]
        changed = diff_station(old, new, station) != ()
        if mine and mine[0].state in waiting_states and mine[0].copy:  # may be on paper: left, a change follows
            assert mine[0].id not in plan.rewrite and mine[0].id not in plan.discard
            assert added == ([PlannedJob(JobKind.TICKET, station, JobVariant.CHANGE, 1)] if changed else [])
        elif mine and mine[0].state in waiting_states:
            assert added == []
            assert (mine[0].id in plan.rewrite) == bool(new.production_items(station))
            assert (mine[0].id in plan.discard) == (not new.production_items(station))
        elif mine:  # printing or printed
            assert added == ([PlannedJob(JobKind.TICKET, station, JobVariant.CHANGE, 1)] if changed else [])
        else:  # nothing yet, or a person discarded it
            wanted = changed and bool(new.production_items(station))
            assert added == ([PlannedJob(JobKind.TICKET, station, JobVariant.ADDED, None)] if wanted else [])
        if not changed:
            assert added == []


def test_cancel_discards_what_waits_and_voids_what_is_on_paper() -> None:
    """A COPY waiting to print again (its first attempt cut short) is not printed for a cancelled order, but what it
    copies may be in the cook's hand: that station gets a STORNO too."""
    items = [item("A", s, 1, [], None, None) for s in (*STATIONS, "pass")]
    old = order(items)
    jobs = [
        job(1, "kitchen", JobState.PRINTED),
        job(2, "bar", JobState.QUEUED),
        job(3, "grill", JobState.PRINTING),
        job(4, "pass", JobState.QUEUED, copy=True),
    ]
    plan = plan_revision(jobs, {1: old}, order(items, 2, "cancelled"), receipt_before=True, previous=old)
    assert plan.discard == (2, 4) and plan.rewrite == ()
    assert plan.add == (
        PlannedJob(JobKind.TICKET, "kitchen", JobVariant.CANCEL, 1),
        PlannedJob(JobKind.TICKET, "grill", JobVariant.CANCEL, 1),
        PlannedJob(JobKind.TICKET, "pass", JobVariant.CANCEL, 1),
    )


def test_a_waiting_change_ticket_that_no_longer_changes_anything_is_discarded() -> None:
    """1 printed, 2 made a change ticket that still waits, 3 puts revision 1 back: the change ticket is dropped and
    nothing prints."""
    one = order([item("A", "kitchen", 1, [], None, None)])
    jobs = [
        job(1, "kitchen", JobState.PRINTED),
        job(2, "kitchen", JobState.QUEUED, 2, variant=JobVariant.CHANGE, change_from=1),
    ]
    plan = plan_revision(
        jobs, {1: one}, order([item("A", "kitchen", 1, [], None, None)], 3), receipt_before=True, previous=one
    )
    assert plan.discard == (2,) and plan.add == () and plan.rewrite == ()
