"""Whether an order's totals add up, as a receipt (a legal document) must. Pure: the intake logs, counts and alerts
what it finds, and stores and prints the order as sent."""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from edge.orders.model import Item, Order

_CENT = Decimal("0.01")
_HALF_CENT = Decimal("0.005")


def line_total(item: Item) -> Decimal:
    """What an item line costs: quantity times unit price plus its modifiers' prices (per unit, as in the contract)."""
    return item.qty * (item.unit_price + sum((m.price or Decimal(0) for m in item.modifiers), Decimal(0)))


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)  # as a receipt prints it (edge.printing.labels.money)


def _printed_amounts(item: Item) -> list[Decimal]:
    """The amounts a receipt prints for one item line: its price times quantity, and each priced modifier's."""
    return [item.unit_price * item.qty, *(m.price * item.qty for m in item.modifiers if m.price)]


def totals_problems(order: Order) -> list[str]:
    """What does not add up, in words; empty when all is well.

    Items (with modifiers) = subtotal; subtotal - discount = total; tax is included in the prices (the contract
    example: 7 % food, 19 % drinks). With a ``tax_rate`` on every item, each rate's tax line must be its items' share
    of the total within a cent; without, the goods each tax line implies must add up to the total.
    """
    t = order.totals
    problems = []
    items = sum((line_total(item) for item in order.items), Decimal(0))
    if items != t.subtotal:
        problems.append(f"items add up to {items}, subtotal is {t.subtotal}")
    if t.subtotal - t.discount != t.total:
        problems.append(
            f"subtotal {t.subtotal} - discount {t.discount} = {t.subtotal - t.discount}, total is {t.total}"
        )
    if t.discount < 0:
        problems.append(f"discount {t.discount} is negative: a surcharge of {-t.discount} (printed as one)")
    # The guest adds up the amounts as printed, each to the cent: prices in tenths of a cent may not.
    printed = sum((_cents(a) for item in order.items for a in _printed_amounts(item)), Decimal(0))
    if not problems and printed != _cents(t.subtotal):
        problems.append(
            f"the lines add up to {printed} as printed (each to the cent), the subtotal to {_cents(t.subtotal)}"
        )
    if t.tax:
        problems += _item_rate_problems(order) if all(i.tax_rate is not None for i in order.items) else _implied(order)
    return problems


def _item_rate_problems(order: Order) -> list[str]:
    t = order.totals
    share = t.total / t.subtotal if t.subtotal else Decimal(1)  # a discount reduces every rate's goods alike
    gross: dict[Decimal, Decimal] = defaultdict(Decimal)
    for item in order.items:
        assert item.tax_rate is not None  # the caller checked every item has one
        gross[item.tax_rate] += line_total(item) * share
    stated: dict[Decimal, Decimal] = defaultdict(Decimal)
    for line in t.tax:
        stated[line.rate] += line.amount
    problems = []
    for rate in sorted(set(gross) | set(stated)):
        want = gross.get(rate, Decimal(0)) * rate / (100 + rate)
        if abs(stated.get(rate, Decimal(0)) - want) > _CENT:
            problems.append(
                f"tax at {rate} % is {stated.get(rate, Decimal(0))}, its items' share of the total makes "
                f"{want.quantize(_CENT)}"
            )
    return problems


def _implied(order: Order) -> list[str]:
    """Each line's amount, rounded to the cent, implies its goods within a range; the ranges must meet the total."""
    low = high = Decimal(0)
    unbounded = False  # a 0 % line implies nothing about its goods
    for line in order.totals.tax:
        if line.rate == 0:
            unbounded = True
            continue
        factor = (100 + line.rate) / line.rate
        low += (line.amount - _HALF_CENT) * factor
        high += (line.amount + _HALF_CENT) * factor
    total = order.totals.total
    if total < low - _CENT or (not unbounded and total > high + _CENT):
        goods = f"{low.quantize(_CENT)}" + ("" if unbounded else f" to {high.quantize(_CENT)}")
        return [f"tax lines imply goods of {goods} including tax, total is {total}"]
    return []
