"""The change plan: what a higher revision of an order means for each station's tickets. Pure code, no I/O.

Lines are matched between revisions by a key: the backend's ``line_id`` when the line has one, else the line's sku,
name, modifier names (in any order), note and allergens (two lines that share all of them are one line, their
quantities added up; free-text dishes often share one sku, and only their names tell them apart). So without a
``line_id`` a quantity change is a quantity change, while another name, modifier, note or allergen is the old line
removed and a new one added; with a ``line_id`` it is one line shown as modified. Modifiers sent in another order
change nothing the cook sees. A line that moves to another station is removed at the old one and added at the new one.

Jobs of the order are planned per station:
- a job that has not printed (queued, held, failed, dead) is rewritten in place to the new revision (a whole ticket
  whose station has no items left, or a change ticket that no longer changes anything, is discarded instead); a COPY
  waiting stays as it is, unless it copies a whole original that has not printed either (nothing of the station out);
- a station whose ticket is printing or printed (on paper, or maybe) and has no job waiting gets a change ticket
  from the revision on paper, if its items or what its head tells (see head_changed) changed; a station with nothing
  (yet, or a person discarded its tickets) gets a whole ticket marked ``added`` if its items changed;
- a cancellation discards every job that has not printed and sends a void ticket to each station with one on paper.

The receipt follows the new revision's ``print_receipt`` (absent: what the order had, see plan_revision): wanted, a
waiting one is rewritten (a COPY waiting to print again is left as it is), and one is added if the order has none
waiting or on paper and the revision turns the receipt on, or after one on paper with receipts.on_change =
"reprint" if what the receipt shows changed (receipt_shown); not wanted (or cancelled), a waiting one is discarded
and one on paper is left (paper is not taken back).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from edge.orders.model import Order
from edge.orders.routing import wants_receipt
from edge.printing.text import on_paper
from edge.states import JobKind, JobState, JobVariant

# Not on paper: rewritten or discarded. Printing counts as on paper: it may be, and the change must follow it.
NOT_PRINTED = frozenset({JobState.QUEUED, JobState.HELD, JobState.FAILED, JobState.DEAD})
ON_PAPER = frozenset({JobState.PRINTING, JobState.PRINTED})

LineKey = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Line:
    """One line of a station's ticket (equal lines merged)."""

    sku: str
    name: str
    qty: int
    modifiers: tuple[str, ...]
    note: str | None
    allergens: tuple[str, ...] = ()

    def shown(self) -> tuple[object, ...]:
        """What the cook reads of the line but its quantity, as paper shows it; modifiers in any order are the same
        dish."""
        return (self.sku, *_read(self.name, self.note), sorted(_read(*self.modifiers)), _read(*self.allergens))


class LineChange(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    QUANTITY = "quantity"  # the same line, another quantity
    MODIFIED = "modified"  # the same line_id with other modifiers, note, allergens, name or sku (maybe quantity too)


@dataclasses.dataclass(frozen=True)
class ChangedLine:
    change: LineChange
    key: LineKey
    before: Line | None  # None when added
    after: Line | None  # None when removed

    @property
    def modifier_changes(self) -> tuple[tuple[str, int, int], ...]:
        """A modified line's modifiers whose count changed: (name, count before, count after), 0 for none; a
        modifier sent twice is two of it, and one of them taken off is news for the cook."""
        before = Counter(self.before.modifiers if self.before else ())
        after = Counter(self.after.modifiers if self.after else ())
        return tuple((name, before[name], after[name]) for name in before | after if before[name] != after[name])


def line_key(line_id: str | None, line: Line) -> LineKey:
    if line_id is not None:
        return ("id", line_id)
    modifiers = itertools.chain.from_iterable(sorted(_read(*line.modifiers)))
    name, note = _read(line.name, line.note)
    return (
        "sku",
        line.sku,
        "name",
        *name,
        *modifiers,
        "note",
        *note,
        *itertools.chain.from_iterable(_read(*line.allergens)),
    )


def _read(*texts: str | None) -> list[tuple[str, ...]]:
    """Each text as paper shows it (on_paper; None as nothing): lines and revisions are compared by what the cook can
    read, so a soft hyphen, a zero-width space or a no-break space a revision adds or drops changes nothing (they
    printed the dish struck and added again: the inject81 probe, F5)."""
    return [on_paper(text or "") for text in texts]


def _as_after(was: Line, line: Line) -> Line:
    """``was`` with each of its texts that reads as one of ``line``'s written as that one: a change ticket strikes
    and tells again only what reads otherwise."""

    def as_now(old: str | None, new: Sequence[str | None]) -> str | None:
        return next((text for text in new if _read(text) == _read(old)), old)

    return dataclasses.replace(
        was,
        name=as_now(was.name, [line.name]) or was.name,
        modifiers=tuple(as_now(m, line.modifiers) or m for m in was.modifiers),
        note=as_now(was.note, [line.note]),
        allergens=tuple(as_now(a, line.allergens) or a for a in was.allergens),
    )


def shared_line_ids(orders: Sequence[Order | None], station: str) -> frozenset[str]:
    """The line_ids at the station that every revision compared (with lines there) has: the lines compared by them.
    A line whose id one side lacks is compared by what it is on both: a backend that starts sending line_ids with a
    change, or leaves one off, keyed one side by line_id and the other by content, and nothing matched: the dish
    added and struck again (the lifecycle79 probe, F5; the verify79 probe, V3)."""
    ids = [
        {item.line_id for item in items if item.line_id is not None}
        for items in (order.production_items(station) for order in orders if order)
        if items
    ]
    return frozenset(set.intersection(*ids)) if ids else frozenset()


def station_lines(order: Order | None, station: str, *, ids: Collection[str] | None = None) -> dict[LineKey, Line]:
    """A station's production lines by key, in the order they first appear; nothing for no order. ``ids``: the
    line_ids lines are keyed by (shared_line_ids); None: every line's; a line without one is keyed by what it is."""
    lines: dict[LineKey, Line] = {}
    if order is None:
        return lines
    repeats: dict[str, int] = {}
    for item in order.production_items(station):
        modifiers = tuple(m.name for m in item.modifiers)
        line = Line(item.sku, item.name, item.qty, modifiers, item.note, item.allergens)
        line_id = item.line_id if ids is None or item.line_id in ids else None
        key = line_key(line_id, line)
        if line_id is not None:  # a line_id repeated (taken before they were refused): its own line, by position
            repeats[line_id] = seen_times = repeats.get(line_id, -1) + 1
            key = (*key, str(seen_times)) if seen_times else key
        seen = lines.get(key)
        lines[key] = dataclasses.replace(seen, qty=seen.qty + item.qty) if seen else line
    return lines


def diff_station(before: Order | None, after: Order | None, station: str) -> tuple[ChangedLine, ...]:
    """What changed on one station's ticket from ``before`` to ``after`` (either may be None: no ticket)."""
    ids = shared_line_ids((before, after), station)
    old, new = station_lines(before, station, ids=ids), station_lines(after, station, ids=ids)
    changes: list[ChangedLine] = []
    for key, line in new.items():
        was = old.get(key)
        if was is None:
            changes.append(ChangedLine(LineChange.ADDED, key, None, line))
        elif was.shown() != line.shown():
            changes.append(ChangedLine(LineChange.MODIFIED, key, _as_after(was, line), line))
        elif was.qty != line.qty:
            changes.append(ChangedLine(LineChange.QUANTITY, key, _as_after(was, line), line))
    changes.extend(ChangedLine(LineChange.REMOVED, key, line, None) for key, line in old.items() if key not in new)
    return tuple(changes)


def head_changed(before: Order, after: Order) -> bool:
    """Whether what a ticket's head tells the kitchen changed: the order's number (the runner calls it), the kind of
    order, its table or its due time, or the guest's allergies and the order's note (an allergy told after the ticket
    went out must reach the cook), as paper shows them."""
    return (_read(before.number, before.note, *before.allergens), before.fulfilment) != (
        _read(after.number, after.note, *after.allergens),
        after.fulfilment,
    )


def receipt_shown(order: Order) -> tuple[object, ...]:
    """What the customer's receipt (the built-in receipt.j2) shows of an order: its number and time, the kind of
    order and table, the guest's name, each item's name, quantity and price with its modifiers and theirs, the totals
    and taxes, the payment. Not what only the kitchen reads: notes, allergens, the due time."""
    return (
        order.number,
        order.created_at,
        order.fulfilment.type,
        order.fulfilment.table,
        order.customer.name if order.customer else None,
        tuple((i.name, i.qty, i.unit_price, tuple((m.name, m.price) for m in i.modifiers)) for i in order.items),
        order.totals,
        order.payment,
    )


def struck_lines(revisions: Sequence[Order], station: str) -> tuple[ChangedLine, ...]:
    """A STORNO's lines: every line any of ``revisions`` put on one station's paper, at its largest quantity, struck
    (more struck than the cook holds is safe; less is a dish cooked for nobody). A line_id that showed another dish,
    other modifiers or another note in another revision is struck as each of them: the cook may hold either."""
    lines: dict[LineKey, Line] = {}
    ids = shared_line_ids(revisions, station)
    for order in revisions:
        for key, line in station_lines(order, station, ids=ids).items():
            shown = (*key, *line_key(None, line))
            if shown not in lines or line.qty > lines[shown].qty:
                lines[shown] = line
    return tuple(ChangedLine(LineChange.REMOVED, key, line, None) for key, line in lines.items())


def apply_diff(lines: Mapping[LineKey, Line], changes: Sequence[ChangedLine]) -> dict[LineKey, Line]:
    """``lines`` with ``changes`` applied: what the cook holding both tickets reads."""
    out = dict(lines)
    for change in changes:
        if change.after is None:
            del out[change.key]
        else:
            out[change.key] = change.after
    return out


@dataclasses.dataclass(frozen=True)
class ExistingJob:
    id: int
    kind: JobKind
    station: str | None
    state: JobState
    revision: int
    variant: JobVariant | None
    change_from: int | None
    # Waiting to print again marked COPY: an attempt was cut short (paper out, a crash, a write that failed half way)
    # or a person asked for a copy. Either way what it shows may be in the cook's hand already.
    copy: bool = False

    @property
    def on_paper(self) -> bool:
        """Printing, printed, or a COPY waiting to print again: its revision may be on paper."""
        return self.state in ON_PAPER or (self.copy and self.state in NOT_PRINTED)


@dataclasses.dataclass(frozen=True)
class PlannedJob:
    kind: JobKind
    station: str | None
    variant: JobVariant | None
    change_from: int | None  # change and cancel: the revision on paper at its station


@dataclasses.dataclass(frozen=True)
class RevisionPlan:
    rewrite: tuple[int, ...] = ()  # job ids that now show the new revision
    discard: tuple[int, ...] = ()
    add: tuple[PlannedJob, ...] = ()


def paper_revision(jobs: Sequence[ExistingJob]) -> int | None:
    """The revision on paper at one station: the latest ticket that may be on paper there (None: nothing)."""
    printed = [j for j in jobs if j.on_paper]
    return max(printed, key=lambda j: j.id).revision if printed else None


def storno_from(jobs: Sequence[ExistingJob]) -> tuple[int, bool] | None:
    """Where a STORNO at one station strikes from, and whether later revisions may be on paper too: the latest ticket
    surely on paper there (printed), or, when tickets after it may be (printing, or a COPY waiting: its attempt was cut
    short, or a person asked for it), the earliest of them all. Which of the later ones reached paper is known only
    when the STORNO prints (edge/store/jobs.py, PRINTABLE's struck_payloads): a ticket printing now may go back in
    line unsent. None: nothing of the order is on paper there."""
    maybe = [j for j in jobs if j.on_paper]
    printed = [j for j in maybe if j.state == JobState.PRINTED]
    last = max(printed, key=lambda j: j.id) if printed else None
    later = [j for j in maybe if last is None or j.id > last.id]
    if not later:
        return None if last is None else (last.revision, False)
    return min(j.revision for j in (later if last is None else [last, *later])), True


def revisions_needed(jobs: Sequence[ExistingJob]) -> set[int]:
    """The revisions plan_revision reads: what is on paper and what waiting change tickets differ from."""
    needed = {j.revision for j in jobs if j.on_paper}
    needed.update(j.change_from for j in jobs if j.change_from is not None and j.state in NOT_PRINTED)
    return needed


def plan_revision(
    jobs: Sequence[ExistingJob],
    orders: Mapping[int, Order],
    new: Order,
    *,
    receipt_before: bool,
    previous: Order | None = None,
    reprint_receipt: bool = False,
) -> RevisionPlan:
    """What revision ``new`` does to the order's ``jobs``; ``orders``: the revisions named by revisions_needed;
    ``receipt_before``: whether the order wanted a receipt up to ``new`` (its last ``print_receipt`` said so, or, if no
    revision said, its first one planned one); ``previous``: the revision ``new`` follows (a station whose tickets a
    person discarded gets a whole ticket only if its items change now); ``reprint_receipt``: receipts.on_change =
    "reprint"."""
    rewrite: list[int] = []
    discard: list[int] = []
    add: list[PlannedJob] = []
    tickets: dict[str, list[ExistingJob]] = {}
    # A revision that does not say keeps what the order had (the config may have changed since); a cancelled order's
    # sale is gone: no receipt.
    receipt_wanted = wants_receipt(new, by_default=receipt_before) and new.status == "open"
    for job in jobs:
        if job.state == JobState.DISCARDED:
            continue
        if job.kind == JobKind.RECEIPT:
            if job.state in NOT_PRINTED and not receipt_wanted:
                discard.append(job.id)
            elif job.state in NOT_PRINTED and not job.copy:  # a COPY may repeat what the guest holds: left as it is
                rewrite.append(job.id)
        elif job.station is not None:
            tickets.setdefault(job.station, []).append(job)
    receipts = [j for j in jobs if j.kind == JobKind.RECEIPT and j.state != JobState.DISCARDED]
    # Waiting (rewritten above) or maybe on paper: another only to reprint it for the change, if the guest's receipt
    # would read otherwise now (a dish's note or the due time is the kitchen's news, not the guest's). None asked for
    # yet, or dropped by a revision or a person: one only if this revision turns it on.
    if receipts:
        shown = paper_revision(receipts) if all(j.on_paper for j in receipts) else None
        another = reprint_receipt and shown is not None and receipt_shown(orders[shown]) != receipt_shown(new)
    else:
        another = not receipt_before
    if receipt_wanted and another:
        add.append(PlannedJob(JobKind.RECEIPT, None, None, None))
    for station in [*tickets, *(s for s in new.stations if s not in tickets)]:
        station_jobs = tickets.get(station, [])
        waiting = [j for j in station_jobs if j.state in NOT_PRINTED]
        if new.status == "cancelled":
            discard.extend(j.id for j in waiting)
            struck = storno_from(station_jobs)
            # Not for a station a printed change emptied, with nothing after it: its paper holds nothing to strike.
            if struck is not None and (struck[1] or orders[struck[0]].production_items(station)):
                add.append(PlannedJob(JobKind.TICKET, station, JobVariant.CANCEL, struck[0]))
            continue
        # A COPY may repeat what the cook holds: it stays as it is (rewritten, it would differ from the original it
        # claims to copy and hide the change); the change follows it as a ticket of its own. But a COPY a person asked
        # for beside a whole original that has not printed, with nothing of the station printing or printed, copies
        # that original: it shows what the original shows now (kept, it printed the old revision last).
        originals = sorted((j for j in waiting if not j.copy), key=lambda j: j.id)
        # Only one original waits, unless a ticket went back in line unsent (claimed, then its printer was not
        # ready): it keeps its revision, and what a revision planned while it counted as on paper waits behind it.
        # The first one, rewritten, shows the new revision from what is on paper; the ones on top would repeat it.
        discard.extend(j.id for j in originals[1:])
        originals = originals[:1]
        first = originals[0] if originals else None
        later_copies = [j for j in station_jobs if first and j.copy and j.on_paper and j.id > first.id]
        if first and first.variant == JobVariant.CHANGE and later_copies:
            if not any(j.state in NOT_PRINTED for j in later_copies):
                # The COPY a person asked for after it (of the revision then current, the change's) is going out
                # ahead of it: that whole ticket says all the change would, and after it the change would tell the
                # cook "+ 1x Tiramisu" again.
                discard.append(first.id)
            # A COPY waits behind the change ticket: rewritten, the change would go out before that COPY, the cook's
            # last ticket an older revision. It stays. Either way the change from the COPY's revision follows it.
            originals = []
        nothing_out = not any(j.state in ON_PAPER for j in station_jobs)
        if nothing_out and any(j.variant is None for j in originals):
            originals += [j for j in waiting if j.copy and j.variant is None]
        for job in originals:
            base = orders[job.change_from] if job.variant == JobVariant.CHANGE and job.change_from else None
            if base is not None:
                empty = not diff_station(base, new, station) and not head_changed(base, new)
            else:
                empty = not new.production_items(station)
            (discard if empty else rewrite).append(job.id)
        if any(j.id in rewrite for j in originals):
            continue  # a waiting ticket now shows the new revision: nothing extra prints
        # Not a COPY dropped above with the unsent original it copies: it never reached paper.
        on_paper = paper_revision([j for j in station_jobs if j.id not in discard])
        if on_paper is not None:
            # Its lines, or only its head: a due time 20 minutes earlier, another table or an allergy told since is
            # news for the cook too.
            if diff_station(orders[on_paper], new, station) or head_changed(orders[on_paper], new):
                add.append(PlannedJob(JobKind.TICKET, station, JobVariant.CHANGE, on_paper))
        elif new.production_items(station) and diff_station(previous, new, station):
            add.append(PlannedJob(JobKind.TICKET, station, JobVariant.ADDED, None))
    return RevisionPlan(rewrite=tuple(rewrite), discard=tuple(discard), add=tuple(add))
