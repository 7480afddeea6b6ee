"""Anything answered 201 renders: every order the model accepts prints as a ticket and a receipt, in German and
English, in UTC and in the zones furthest east and west."""

from __future__ import annotations

import functools
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import InvalidOrderError
from edge.orders.intake import Router
from edge.orders.model import parse_order
from edge.printing.render import Renderer
from tests.helpers import examples, guest_words

# UTC, the first zone into a new day (UTC+14) and the last (UTC-12).
ZONES = [UTC, ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12")]


@functools.cache
def renderers() -> list[Renderer]:
    """Made at first use, not at import: every test worker imports this module to collect it (0.3 s each)."""
    return [Renderer(tz=zone) for zone in ZONES]


ROUTER = Router(
    stations={"kitchen": ["kitchen"], "bar": ["kitchen"]}, receipt_printer="front", receipts_by_default=True
)

# Any Unicode, lone surrogates included (JSON can carry them): control characters, emoji, combining marks, RTL.
_ANY_CHAR = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())


def text(max_size: int, *, required: bool = True) -> st.SearchStrategy[str]:
    """Up to ``max_size`` characters of anything; a required text has something besides whitespace."""
    strategy = st.text(_ANY_CHAR, min_size=1 if required else 0, max_size=max_size)
    return strategy.filter(lambda t: t.strip()) if required else strategy


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


money = st.one_of(
    st.decimals(min_value=-999_999_999, max_value=999_999_999, places=4).map(str),
    st.sampled_from(["0", "-0.0001", "999999999.9999", "-999999999.9999", "0.5"]),
)
station = st.sampled_from(["kitchen", "bar"])


@st.composite
def moments(draw: st.DrawFn) -> str:
    """An ISO 8601 time with any offset; mostly in 2000-2100, sometimes anywhere from year 1 to 9999."""
    year = draw(st.one_of(st.integers(2000, 2100), st.sampled_from([2000, 2100]), st.integers(1, 9999)))
    moment = draw(st.datetimes(min_value=datetime(year, 1, 1), max_value=datetime(year, 12, 31, 23, 59, 59, 999999)))
    offset = timezone(timedelta(minutes=draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))))
    return moment.replace(tzinfo=draw(st.sampled_from([UTC, offset]))).isoformat().replace("+00:00", "Z")


def item() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "sku": text(64),
            "name": text(200),
            "qty": st.integers(1, 9999),
            "unit_price": money,
            "requires_production": st.booleans(),
            "station": station,
            "modifiers": st.lists(st.fixed_dictionaries({"name": text(200), "price": maybe(money)}), max_size=4),
            "note": maybe(text(500, required=False)),
        },
        optional={
            "tax_rate": maybe(st.decimals(0, "99.9999", places=4).map(str)),
            "unknown": st.just({"a": [1]}),
            "allergens": guest_words(),
        },
    )


orders = st.fixed_dictionaries(
    {
        "id": st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=64),
        "number": text(32),
        "created_at": moments(),
        "channel": text(32),
        "priority": st.integers(-1000, 1000),
        "customer": maybe(st.fixed_dictionaries({"name": maybe(text(100, required=False)), "phone": maybe(text(40))})),
        "fulfilment": st.fixed_dictionaries(
            {
                "type": text(32),
                "table": st.one_of(st.none(), st.integers(-(10**12), 10**40), text(32)),
                "due_at": maybe(moments()),
            }
        ),
        "items": st.one_of(st.lists(item(), min_size=1, max_size=6), st.lists(item(), min_size=40, max_size=60)),
        "totals": st.fixed_dictionaries(
            {
                "subtotal": money,
                "discount": maybe(money),
                "tax": st.lists(
                    st.fixed_dictionaries({"rate": st.sampled_from(["0", "7", "19", "99.9999"]), "amount": money}),
                    max_size=3,
                ),
                "total": money,
                "currency": st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3),
            }
        ),
        "payment": maybe(st.fixed_dictionaries({"method": text(32), "status": text(32)})),
        "print_receipt": maybe(st.booleans()),
    },
    optional={"allergens": guest_words(), "note": guest_words()},
)


@settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(payload=orders, language=st.sampled_from(["de", "en"]), width=st.sampled_from([24, 42, 48, 64]))
def test_every_order_the_model_accepts_renders(payload: dict[str, Any], language: str, width: int) -> None:
    """If intake would store it (validation, routing, hashing all pass), every ticket and the receipt render in both
    languages and all three zones, also as a released, redirected copy."""
    try:
        new = ROUTER.prepare(payload, "push")
    except InvalidOrderError:
        return
    order = new.order
    for renderer in renderers():
        for station in order.stations:
            renderer.ticket(order, station, width=width, language=language)
            renderer.ticket(
                order, station, width=width, language=language, copy=True, released=True, redirected_from="x"
            )
        renderer.receipt(
            order, width=width, language=language, copy=bool(order.priority % 2), store_name="S", footer="F"
        )


@pytest.mark.parametrize(
    "moment", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z", "2101-01-01T00:00:00Z"]
)
@pytest.mark.parametrize("field", ["created_at", "due_at"])
def test_dates_outside_2000_to_2100_are_refused_naming_the_field(moment: str, field: str) -> None:
    """Years outside 2000-2100 are refused at intake: 9999-12-31 would overflow when shown in Europe/Berlin."""
    from edge.sim.orders import example_order

    payload = example_order()
    (payload if field == "created_at" else payload["fulfilment"])[field] = moment
    with pytest.raises(InvalidOrderError) as caught:
        parse_order(payload)
    assert caught.value.field == (field if field == "created_at" else "fulfilment.due_at")
