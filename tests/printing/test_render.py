"""Rendering orders to ESC/POS bytes: encoding, layout, language, safety and template overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError
from edge.orders.model import Modifier, Order, parse_order
from edge.printing.decode import decode, preview
from edge.printing.render import PrintOptions, Renderer
from edge.states import OrderStatus

FIXTURE = Path(__file__).parents[1] / "fixtures" / "order-example.json"
GOLDEN = Path(__file__).parent / "golden"
BERLIN = ZoneInfo("Europe/Berlin")
QR = "edge:v1:ord_7f3a9c21:kitchen"
C0 = re.compile("[\x00-\x09\x0b-\x1f]")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(tz=BERLIN)


@pytest.fixture(scope="module")
def order() -> Order:
    return parse_order(json.loads(FIXTURE.read_text(encoding="utf-8")))


def with_item(order: Order, index: int = 0, **changes: object) -> Order:
    items = list(order.items)
    items[index] = dataclasses.replace(items[index], **changes)
    return dataclasses.replace(order, items=tuple(items))


def lines(data: bytes) -> list[str]:
    return decode(data).text.split("\n")


def test_ticket_text_is_cp858_selected_once(renderer: Renderer, order: Order) -> None:
    """A ticket starts with ESC @ and ESC t 19, and umlauts and ß are CP858 bytes."""
    data = renderer.ticket(order, "kitchen")
    assert data.startswith(b"\x1b@\x1c.\x1bt\x13")  # FS . between them: test_cancel_kanji.py
    assert data.count(b"\x1bt") == 1
    assert b"K\x84sesp\x84tzle" in data
    assert b"J\x81rgen Gro\xe1" in data
    assert b"extra K\x84se" in data
    assert b"F\x84llig" in data


def test_receipt_euro_is_byte_d5(renderer: Renderer, order: Order) -> None:
    """€ on a receipt is CP858 0xD5 and the text never switches code page."""
    data = renderer.receipt(order)
    assert b"39,30 \xd5" in data
    assert data.count(b"\x1bt") == 1


def test_all_german_letters_map_to_cp858(renderer: Renderer, order: Order) -> None:
    """ä ö ü Ä Ö Ü ß € land on the CP858 code points the printer expects."""
    data = renderer.ticket(with_item(order, name="äöüÄÖÜß€"), "kitchen")
    assert b"\x84\x94\x81\x8e\x99\x9a\xe1\xd5" in data


def test_ticket_carries_the_scan_code(renderer: Renderer, order: Order) -> None:
    """The ticket's QR code is exactly edge:v1:<order id>:<station>, and the ticket ends with a cut."""
    decoded = decode(renderer.ticket(order, "kitchen"))
    assert decoded.qr_codes == [QR]
    assert decoded.cuts == 1
    assert decoded.codepage == 19


def test_ticket_holds_only_that_stations_production_items(renderer: Renderer, order: Order) -> None:
    """The drink does not require production, so the kitchen ticket leaves it out."""
    text = decode(renderer.ticket(order, "kitchen")).text
    assert "2x Pizza Margherita" in text
    assert "  + extra Käse" in text
    assert "1x Käsespätzle" in text
    assert "Apfelschorle" not in text


def test_note_is_highlighted(renderer: Renderer, order: Order) -> None:
    """A note prints bold and inverse, prefixed with "!"."""
    data = renderer.ticket(order, "kitchen")
    assert "! eine ohne Basilikum" in decode(data).bold_text
    assert "  ! eine ohne Basilikum" in lines(data)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("de", ["Abholung", "Jürgen Groß", "Fällig: 19:30", "Bestellt: 19:04", "Station: kitchen"]),
        ("en", ["Pickup", "Jürgen Groß", "Due: 19:30", "Ordered: 19:04", "Station: kitchen"]),
    ],
)
def test_ticket_header_in_language(renderer: Renderer, order: Order, language: str, expected: list[str]) -> None:
    """The header names fulfilment, customer, due and created time (local time) in the job's language."""
    text = decode(renderer.ticket(order, "kitchen", language=language)).text
    for part in expected:
        assert part in text
    assert "A-1042" in decode(renderer.ticket(order, "kitchen", language=language)).bold_text


def test_due_on_another_day_shows_the_date(renderer: Renderer, order: Order) -> None:
    """A pre-order for tomorrow says which day, not only the time."""
    due = order.fulfilment.due_at.replace(day=23)
    later = dataclasses.replace(order, fulfilment=dataclasses.replace(order.fulfilment, due_at=due))
    assert "Fällig: 23.11. 19:30" in decode(renderer.ticket(later, "kitchen")).text


@pytest.mark.parametrize(
    ("type_", "table", "de", "en"),
    [
        ("dine_in", "12", "Tisch 12", "Table 12"),
        ("delivery", None, "Lieferung", "Delivery"),
        ("drive_through", None, "drive_through", "drive_through"),
    ],
)
def test_fulfilment_labels(renderer: Renderer, order: Order, type_: str, table: str | None, de: str, en: str) -> None:
    """Known fulfilment types get a word per language; unknown ones print as they came."""
    changed = dataclasses.replace(order, fulfilment=dataclasses.replace(order.fulfilment, type=type_, table=table))
    assert de in lines(renderer.ticket(changed, "kitchen", language="de"))
    assert en in lines(renderer.ticket(changed, "kitchen", language="en"))


@pytest.mark.parametrize("language", ["de", "en"])
def test_copy_banner_only_on_copies(renderer: Renderer, order: Order, language: str) -> None:
    """A reprint says KOPIE / COPY at the top, in bold inverse; the first print does not."""
    banner = "KOPIE / COPY"
    assert banner not in decode(renderer.ticket(order, "kitchen", language=language)).text
    copy = decode(renderer.ticket(order, "kitchen", language=language, copy=True))
    assert copy.text.split("\n")[0].strip() == banner
    assert banner in copy.bold_text
    assert banner in decode(renderer.receipt(order, language=language, copy=True)).text
    assert banner not in decode(renderer.receipt(order, language=language)).text


def test_redirected_ticket_says_from_where(renderer: Renderer, order: Order) -> None:
    """A ticket printed elsewhere than planned names the station it was meant for."""
    assert "UMGELEITET von kitchen" in decode(renderer.ticket(order, "kitchen", redirected_from="kitchen")).text
    assert (
        "REDIRECTED from kitchen"
        in decode(renderer.ticket(order, "kitchen", language="en", redirected_from="kitchen")).text
    )


@pytest.mark.parametrize("width", [32, 42, 48])
def test_every_line_fits_the_paper(renderer: Renderer, order: Order, width: int) -> None:
    """No printed line is wider than the paper, counting double-width characters twice."""
    long = with_item(
        order,
        name="Pizza Quattro Stagioni mit extra viel Käse und hausgemachter Salami aus der Region",
        note="bitte in zwei Hälften schneiden und eine Hälfte ohne Zwiebeln, die andere mit doppelt Oliven",
        modifiers=(Modifier(name="Sonderwunsch_ohne_jedes_Leerzeichen_und_sehr_lang", price=Decimal("1.50")),),
    )
    long = dataclasses.replace(long, number="A-1042-9999-LONG-NUMBER")
    for data in (
        renderer.ticket(long, "kitchen", width=width, copy=True, redirected_from="a-very-long-station-name"),
        renderer.receipt(
            long,
            width=width,
            copy=True,
            store_name="Pizzeria Da Mario am Marktplatz in der Altstadt",
            footer="Vielen Dank!",
        ),
        renderer.test_page(printer_name="kitchen-1", width=width, options=PrintOptions(profile="TM-T20II")),
    ):
        assert max(len(line) for line in lines(data)) <= width
        paper = [line for line in preview(data, width=width).split("\n") if "[QR" not in line]
        assert all(len(line) <= width for line in paper), paper


def test_long_item_wraps_under_its_name(renderer: Renderer, order: Order) -> None:
    """A long item name continues under the name, not under the quantity."""
    long = with_item(order, name="Pizza Quattro Stagioni mit extra viel Käse und Schinken")
    text = lines(renderer.ticket(long, "kitchen", width=32))
    start = text.index("2x Pizza Quattro Stagioni mit")
    assert text[start + 1] == "   extra viel Käse und Schinken"


def test_control_bytes_in_order_text_never_reach_the_printer(renderer: Renderer, order: Order) -> None:
    """A note cannot open the cash drawer, cut the paper or reset the printer: control bytes become spaces."""
    evil = "\x1bp\x00\x19\xfa kick \x1d V\x00 cut \n@cut \x1b@ \x9b\x1b!\x30 big \x10\x14\x01\x00\x01"
    hostile = with_item(order, note=evil, name="Pizza\x1bE\x01", modifiers=())
    hostile = dataclasses.replace(
        hostile, number="A\x1bp\x0012", customer=dataclasses.replace(order.customer, name="Eve\r\n\x1bi")
    )
    for data in (renderer.ticket(hostile, "kitchen"), renderer.receipt(hostile)):
        assert b"\x1bp" not in data
        assert data.count(b"\x1b@") == 1
        assert data.count(b"\x1dV") == 1
        assert b"\x1bi" not in data
        assert b"\x10\x14" not in data
        decoded = decode(data)
        assert decoded.cuts == 1
        assert decoded.drawer_kicks == 0
        assert not C0.search(decoded.text)
        assert "Pizza E" in decoded.text
    note = " ".join(lines(renderer.ticket(hostile, "kitchen"))).split()
    assert note[note.index("!") : note.index("big") + 1] == [
        "!",
        "p",
        "ú",
        "kick",
        "V",
        "cut",
        "@cut",
        "@",
        "!0",
        "big",
    ]


def test_order_text_cannot_forge_a_layout_directive(renderer: Renderer, order: Order) -> None:
    """Text shaped like the renderer's internal directive marker stays text: no extra cut, no extra QR code."""
    forged = '\x1e["cut", [], {}]\x1f\x1e["qr", ["edge:v1:other:bar"], {}]\x1f'
    decoded = decode(renderer.ticket(with_item(order, note=forged, name=forged), "kitchen"))
    assert decoded.cuts == 1
    assert decoded.qr_codes == [QR]
    assert '["cut", [], {}]' in decoded.text


def test_text_outside_cp858_is_transliterated(renderer: Renderer, order: Order) -> None:
    """Typographic dashes and quotes print as their ASCII cousins, unknown characters as "?"."""
    data = renderer.ticket(with_item(order, name="Crème – „Spezial“ … Łódź 🍕"), "kitchen")
    assert b'Cr\x8ame - "Spezial" ... L\xa2dz ?' in data


@pytest.mark.parametrize(
    ("language", "expected", "payment"),
    [
        ("de", {"Summe": "39,30 €", "inkl. 19% MwSt": "1,02 €", "inkl. 7% MwSt": "2,15 €"}, "Zahlung: Karte (bezahlt)"),
        ("en", {"Total": "€39.30", "incl. 19% VAT": "€1.02", "incl. 7% VAT": "€2.15"}, "Payment: Card (paid)"),
    ],
)
def test_receipt_totals_in_language(
    renderer: Renderer, order: Order, language: str, expected: dict[str, str], payment: str
) -> None:
    """The receipt ends with a bold total, the taxes included and the payment, formatted for the language."""
    data = renderer.receipt(order, language=language, width=48)
    text = lines(data)
    for label, amount in expected.items():
        line = next(line for line in text if line.startswith(label))
        assert line.endswith(amount) and len(line) == 48, line
    assert payment in text
    total_label, total = next(iter(expected.items()))
    assert any(run.startswith(total_label) and run.endswith(total) for run in decode(data).bold_text)


@pytest.mark.parametrize(
    ("language", "item", "modifier"),
    [
        ("de", "2x Pizza Margherita                      19,00 €", "  + extra Käse                            2,00 €"),
        ("en", "2x Pizza Margherita                       €19.00", "  + extra Käse                             €2.00"),
    ],
)
def test_receipt_line_prices_are_right_aligned(
    renderer: Renderer, order: Order, language: str, item: str, modifier: str
) -> None:
    """Each line shows qty x unit price, each priced modifier qty x its price, flush right."""
    text = lines(renderer.receipt(order, language=language))
    assert item in text
    assert text[text.index(item) + 2] == modifier


@pytest.mark.parametrize(
    ("amount", "currency", "de", "en"),
    [
        ("1234.5", "EUR", "1.234,50 €", "€1,234.50"),
        ("9.5", "CHF", "9,50 CHF", "CHF 9.50"),
        ("0.005", "EUR", "0,005 €", "€0.005"),
        ("1000000", "EUR", "1.000.000,00 €", "€1,000,000.00"),
        ("3.5", "KWD", "3,500 KWD", "KWD 3.500"),
        ("2400", "JPY", "2.400 JPY", "JPY 2,400"),
    ],
)
def test_money_follows_the_language(
    renderer: Renderer, order: Order, amount: str, currency: str, de: str, en: str
) -> None:
    """Money is Decimal, with its currency's decimals (more where it has them, never rounded: before stop 80 0.005 €
    printed 0,01 €, the receipt80 probe's R2), German or English separators and currency placement."""
    value = Decimal(amount)
    one = with_item(order, qty=1, unit_price=value, modifiers=())
    one = dataclasses.replace(
        one, items=one.items[:1], totals=dataclasses.replace(order.totals, total=value, currency=currency, tax=())
    )
    assert any(line.endswith(de) for line in lines(renderer.receipt(one, language="de")) if line.startswith("Summe"))
    assert any(line.endswith(en) for line in lines(renderer.receipt(one, language="en")) if line.startswith("Total"))


def test_discount_shows_subtotal_and_negative_amount(renderer: Renderer, order: Order) -> None:
    """A discount prints the subtotal and the discount as a negative amount; no discount prints neither."""
    totals = dataclasses.replace(order.totals, discount=Decimal("2.00"), total=Decimal("37.30"))
    de = lines(renderer.receipt(dataclasses.replace(order, totals=totals)))
    assert any(line.startswith("Zwischensumme") and line.endswith("39,30 €") for line in de)
    assert any(line.startswith("Rabatt") and line.endswith("-2,00 €") for line in de)
    en = lines(renderer.receipt(dataclasses.replace(order, totals=totals), language="en"))
    assert any(line.startswith("Discount") and line.endswith("-€2.00") for line in en)
    assert not any(line.startswith("Rabatt") for line in lines(renderer.receipt(order)))


def test_receipt_store_name_and_footer(renderer: Renderer, order: Order) -> None:
    """The store's name heads the receipt; the footer, one or more lines, closes it."""
    text = lines(renderer.receipt(order, store_name="Pizzeria Da Mario", footer="Danke!\nBis bald"))
    assert text[0] == "Pizzeria Da Mario"
    assert text.index("Danke!") + 1 == text.index("Bis bald")


def test_test_page_shows_width_and_qr(renderer: Renderer) -> None:
    """The test page prints a ruler exactly as wide as configured, the character set, a QR code and a cut."""
    decoded = decode(
        renderer.test_page(printer_name="kitchen-1", width=42, language="en", options=PrintOptions(profile="TM-T20II"))
    )
    assert "123456789012345678901234567890123456789012" in decoded.text.split("\n")
    assert "äöü ÄÖÜ ß € é è à ç ñ" in decoded.text
    assert decoded.qr_codes == ["edge:test:kitchen-1"]
    assert decoded.cuts == 1


def test_bad_language_or_width_is_refused(renderer: Renderer, order: Order) -> None:
    """A language without labels or a paper narrower than 24 columns is a programming error, said early."""
    with pytest.raises(ValueError, match="language"):
        renderer.ticket(order, "kitchen", language="fr")
    with pytest.raises(ValueError, match="width"):
        renderer.receipt(order, width=10)


def test_override_template_wins_per_file(tmp_path: Path, order: Order) -> None:
    """An operator's ticket.j2 replaces the built-in one; the other templates stay built-in. Its values, and its own
    text, are stripped of control bytes too."""
    (tmp_path / "ticket.j2").write_text(
        "{{ style(bold=true) }}EIGENES TICKET {{ order.number }}{{ plain }}\n{{ items[0].note }}\x1bp\n{{ cut }}\n",
        encoding="utf-8",
    )
    renderer = Renderer(template_dir=tmp_path, tz=BERLIN)
    data = renderer.ticket(with_item(order, note="a\x1bp\x00b"), "kitchen")
    decoded = decode(data)
    assert decoded.text.split("\n")[:2] == ["EIGENES TICKET A-1042", "a p b p"]
    assert decoded.bold_text[0] == "EIGENES TICKET A-1042"
    assert b"\x1bp" not in data
    assert "Summe" in decode(renderer.receipt(order)).text


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% if %}\n", r"ticket\.j2: .*line 1"),
        ("ok\n{{ order.number }\n", r"ticket\.j2: .*line 2"),
        ("{{ order.nmber }}\n", r"ticket\.j2: .*nmber.*line 1"),
        ("{{ style(size='huge') }}x\n", r"ticket\.j2: .*size"),
    ],
)
def test_broken_override_fails_at_start_up(tmp_path: Path, template: str, message: str) -> None:
    """A template that does not compile, or fails when it runs, is a ConfigError from Renderer(), not at the first
    order."""
    (tmp_path / "ticket.j2").write_text(template, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        Renderer(template_dir=tmp_path)
    assert caught.value.key == "printing.template_dir"


def test_missing_override_dir_is_a_config_error(tmp_path: Path) -> None:
    """A template_dir that does not exist is reported at start-up."""
    with pytest.raises(ConfigError, match="not a directory"):
        Renderer(template_dir=tmp_path / "nope")


def revisions(order: Order) -> tuple[Order, Order, Order]:
    """Revision 1 (the example with a line id on the Käsespätzle and a Bruschetta), revision 2 (one pizza more, the
    Käsespätzle with another modifier and note, no Bruschetta, a Tiramisu) and revision 3 (cancelled)."""
    pizza, spaetzle, drink = order.items
    spaetzle = dataclasses.replace(spaetzle, line_id="L2")
    bruschetta = dataclasses.replace(spaetzle, sku="BRUSCH", name="Bruschetta", line_id=None)
    first = dataclasses.replace(order, items=(pizza, spaetzle, bruschetta, drink))
    second = dataclasses.replace(
        order,
        revision=2,
        items=(
            dataclasses.replace(pizza, qty=3),
            dataclasses.replace(spaetzle, modifiers=(Modifier("kleine Portion", None),), note="ohne Röstzwiebeln"),
            dataclasses.replace(spaetzle, sku="TIRAMISU", name="Tiramisu", line_id=None),
            drink,
        ),
    )
    cancelled = dataclasses.replace(second, revision=3, status=OrderStatus.CANCELLED, cancel_reason="Gast gegangen")
    return first, second, cancelled


GOLDEN_JOBS = {
    "change_de": lambda r, o: r.change(revisions(o)[1], revisions(o)[0], "kitchen", language="de"),
    "change_en": lambda r, o: r.change(revisions(o)[1], revisions(o)[0], "kitchen", language="en"),
    "cancel_de": lambda r, o: r.change(revisions(o)[2], revisions(o)[1], "kitchen", language="de"),
    "cancel_en": lambda r, o: r.change(revisions(o)[2], revisions(o)[1], "kitchen", language="en"),
    "added_de": lambda r, o: r.ticket(o, "kitchen", language="de", change_revision=2),
    "ticket_de": lambda r, o: r.ticket(o, "kitchen", language="de"),
    "ticket_en": lambda r, o: r.ticket(o, "kitchen", language="en"),
    "receipt_de": lambda r, o: r.receipt(
        o, language="de", store_name="Pizzeria Da Mario", footer="Danke für Ihren Besuch!"
    ),
    "receipt_en": lambda r, o: r.receipt(
        o, language="en", store_name="Pizzeria Da Mario", footer="Thank you for your visit!"
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_JOBS))
def test_golden_output(renderer: Renderer, order: Order, name: str) -> None:
    """The example order renders byte for byte as reviewed. After a deliberate change, regenerate with
    EDGE_UPDATE_GOLDEN=1 and look at the .txt previews before committing them."""
    data = GOLDEN_JOBS[name](renderer, order)
    text = preview(data, width=48) + "\n"
    if os.environ.get("EDGE_UPDATE_GOLDEN"):
        (GOLDEN / f"{name}.bin").write_bytes(data)
        (GOLDEN / f"{name}.txt").write_text(text, encoding="utf-8")
    assert text == (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
    assert data == (GOLDEN / f"{name}.bin").read_bytes()


ANY_TEXT = st.text(max_size=120)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=ANY_TEXT,
    note=st.none() | ANY_TEXT,
    customer=ANY_TEXT,
    modifier=ANY_TEXT,
    width=st.sampled_from([32, 42, 48]),
    language=st.sampled_from(["de", "en"]),
)
def test_any_order_text_prints_safely(
    renderer: Renderer,
    order: Order,
    name: str,
    note: str | None,
    customer: str,
    modifier: str,
    width: int,
    language: str,
) -> None:
    """Whatever text an order carries, the job renders, fits the paper and holds no command but ours."""
    first = order.items[0]
    changed = with_item(
        order, name=name, note=note, modifiers=(dataclasses.replace(first.modifiers[0], name=modifier),)
    )
    changed = dataclasses.replace(changed, customer=dataclasses.replace(order.customer, name=customer))
    for data in (
        renderer.ticket(changed, "kitchen", width=width, language=language),
        renderer.receipt(changed, width=width, language=language),
    ):
        assert b"\x1bp" not in data
        assert data.count(b"\x1b@") == 1
        decoded = decode(data)
        assert not C0.search(decoded.text)
        assert decoded.cuts == 1
        assert decoded.drawer_kicks == 0
        assert max(len(line) for line in decoded.text.split("\n")) <= width
    assert decode(renderer.ticket(changed, "kitchen", width=width)).qr_codes == [QR]
