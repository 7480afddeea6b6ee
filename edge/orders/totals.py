"""Whether an order's totals add up, as a receipt (a legal document) must. Pure: the intake logs, counts and alerts
what it finds, and stores and prints the order as sent."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from edge.orders.currency import minor_unit
from edge.orders.model import Item, Order


def line_total(item: Item) -> Decimal:
    """What an item line costs: quantity times unit price plus its modifiers' prices (per unit, as in the contract)."""
    return item.qty * (item.unit_price + sum((m.price or Decimal(0) for m in item.modifiers), Decimal(0)))


def totals_problems(order: Order) -> list[str]:
    """What does not add up, in words; empty when all is well.

    Items (with modifiers) = subtotal; subtotal - discount = total; tax is included in the prices (the contract
    example: 7 % food, 19 % drinks). With a ``tax_rate`` on every item, each rate's tax line must be its items' share
    of the total within the currency's minor unit (a cent, a fils, a yen); without, the goods each tax line implies
    must add up to the total. A receipt prints every amount as sent, never rounded (edge.orders.currency.as_printed),
    so the amounts on paper add up when these do.
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
    unit = minor_unit(t.currency)
    for rate in sorted(set(gross) | set(stated)):
        want = gross.get(rate, Decimal(0)) * rate / (100 + rate)
        if abs(stated.get(rate, Decimal(0)) - want) > unit:
            problems.append(
                f"tax at {rate} % is {stated.get(rate, Decimal(0))}, its items' share of the total makes "
                f"{want.quantize(unit)}"
            )
    return problems


def _implied(order: Order) -> list[str]:
    """Each line's amount, rounded to the currency's minor unit, implies its goods within a range; the ranges must meet
    the total."""
    unit = minor_unit(order.totals.currency)
    low = high = Decimal(0)
    unbounded = False  # a 0 % line implies nothing about its goods
    for line in order.totals.tax:
        if line.rate == 0:
            unbounded = True
            continue
        factor = (100 + line.rate) / line.rate
        low += (line.amount - unit / 2) * factor
        high += (line.amount + unit / 2) * factor
    total = order.totals.total
    if total < low - unit or (not unbounded and total > high + unit):
        goods = f"{low.quantize(unit)}" + ("" if unbounded else f" to {high.quantize(unit)}")
        return [f"tax lines imply goods of {goods} including tax, total is {total}"]
    return []
