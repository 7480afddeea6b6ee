"""Whether an order's totals add up, as a receipt (a legal document) must. Pure: the intake logs, counts and alerts
what it finds, and stores and prints the order as sent."""

from __future__ import annotations

import dataclasses
import enum
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from edge.orders.currency import minor_unit
from edge.orders.model import Item, Order


class TotalsCheck(enum.StrEnum):
    """Which sum does not add up: the key a mail words it by, in its own language (edge/alerts/render.py)."""

    ITEMS = "items"  # the items' lines against the subtotal
    TOTAL = "total"  # subtotal - discount against the total
    SURCHARGE = "surcharge"  # a negative discount
    TAX_RATE = "tax_rate"  # one rate's tax line against its items' share
    TAX_IMPLIED = "tax_implied"  # the goods the tax lines imply against the total


# In English, for the log; "high" is missing where a 0 % line leaves the goods unbounded.
_ENGLISH = {
    TotalsCheck.ITEMS: "items add up to {items}, subtotal is {subtotal}",
    TotalsCheck.TOTAL: "subtotal {subtotal} - discount {discount} = {net}, total is {total}",
    TotalsCheck.SURCHARGE: "discount {discount} is negative: a surcharge of {surcharge} (printed as one)",
    TotalsCheck.TAX_RATE: "tax at {rate} % is {stated}, its items' share of the total makes {want}",
    TotalsCheck.TAX_IMPLIED: "tax lines imply goods of {low} to {high} including tax, total is {total}",
}


@dataclasses.dataclass(frozen=True)
class TotalsProblem:
    """What does not add up, as numbers: a German mail words it in German with the receipt's amounts ("39,30 €"),
    where an English sentence with decimal points stood (the i18n82 probe, F3)."""

    check: TotalsCheck
    amounts: Mapping[str, Decimal]  # in the order's currency; "rate" is a percentage
    currency: str

    def __str__(self) -> str:
        text = _ENGLISH[self.check]
        if "high" not in self.amounts:
            text = text.replace(" to {high}", "")
        return text.format_map(self.amounts)

    def as_details(self) -> dict[str, Any]:
        """As an alert's details keep it (JSON): amounts as strings, exactly as sent."""
        return {
            "check": self.check.value,
            "amounts": {k: str(v) for k, v in self.amounts.items()},
            "currency": self.currency,
        }


def line_total(item: Item) -> Decimal:
    """What an item line costs: quantity times unit price plus its modifiers' prices (per unit, as in the contract)."""
    return item.qty * (item.unit_price + sum((m.price or Decimal(0) for m in item.modifiers), Decimal(0)))


def totals_problems(order: Order) -> list[TotalsProblem]:
    """What does not add up; empty when all is well.

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
        problems.append(TotalsProblem(TotalsCheck.ITEMS, {"items": items, "subtotal": t.subtotal}, t.currency))
    if t.subtotal - t.discount != t.total:
        amounts = {"subtotal": t.subtotal, "discount": t.discount, "net": t.subtotal - t.discount, "total": t.total}
        problems.append(TotalsProblem(TotalsCheck.TOTAL, amounts, t.currency))
    if t.discount < 0:
        amounts = {"discount": t.discount, "surcharge": -t.discount}
        problems.append(TotalsProblem(TotalsCheck.SURCHARGE, amounts, t.currency))
    if t.tax:
        problems += _item_rate_problems(order) if all(i.tax_rate is not None for i in order.items) else _implied(order)
    return problems


def _item_rate_problems(order: Order) -> list[TotalsProblem]:
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
            amounts = {"rate": rate, "stated": stated.get(rate, Decimal(0)), "want": want.quantize(unit)}
            problems.append(TotalsProblem(TotalsCheck.TAX_RATE, amounts, t.currency))
    return problems


def _implied(order: Order) -> list[TotalsProblem]:
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
        amounts = {"low": low.quantize(unit), "total": total} | ({} if unbounded else {"high": high.quantize(unit)})
        return [TotalsProblem(TotalsCheck.TAX_IMPLIED, amounts, order.totals.currency)]
    return []
