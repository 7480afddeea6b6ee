"""The words and formats of tickets and receipts, in German and English: labels, codes, money, dates."""

from __future__ import annotations

from decimal import Decimal

from edge.orders.currency import as_printed
from edge.orders.model import Fulfilment, Payment

# The labels a template reads as t.NAME (t.copy, t.total, ...).
LABELS: dict[str, dict[str, str]] = {
    "de": {
        "copy": "KOPIE / COPY",  # both words on every copy, as the design names it
        "redirected_from": "UMGELEITET von",
        "changed": "ÄNDERUNG",
        "number_before": "vorher",  # the order's number on the paper before: "(vorher A-1041)"
        "cancelled": "STORNO",
        # A receipt printed after one of an older revision of its order: "Rev. 2 ersetzt den Beleg vom <time>"
        "revised_receipt": "GEÄNDERTER BELEG",
        "replaces": "ersetzt den Beleg",
        "replaced_at": "vom",
        "revision": "Rev.",
        "reason": "Grund",
        "allergens": "ALLERGENE",  # the guest's, sent with the order or a dish: in capitals, as the cook must see them
        "note": "Hinweis",
        "due": "Fällig",
        "asap": "sofort",
        "created": "Bestellt",
        "station": "Station",
        # A long ticket's closing line: "== Ende 1042 · 150 Pos. ==" (its item lines, as a till counts Positionen)
        "end": "Ende",
        "positions": "Pos.",
        "order": "Bestellung",
        "each": "à",
        "subtotal": "Zwischensumme",
        "discount": "Rabatt",
        "surcharge": "Aufschlag",
        "total": "Summe",
        "incl": "inkl.",
        "vat": "MwSt",
        "payment": "Zahlung",
        "test_page": "Testseite",
        "profile": "Profil",
        "width": "Breite",
        "characters": "Zeichen",
        "bold": "Fett",
        "inverse": "Invers",
        "large": "Groß",
    },
    "en": {
        "copy": "KOPIE / COPY",
        "redirected_from": "REDIRECTED from",
        "changed": "CHANGED",
        "number_before": "was",
        "cancelled": "CANCELLED",
        "revised_receipt": "REVISED RECEIPT",
        "replaces": "replaces the receipt",
        "replaced_at": "of",
        "revision": "Rev.",
        "reason": "Reason",
        "allergens": "ALLERGENS",
        "note": "Note",
        "due": "Due",
        "asap": "now",
        "created": "Ordered",
        "station": "Station",
        "end": "End",
        "positions": "items",
        "order": "Order",
        "each": "@",
        "subtotal": "Subtotal",
        "discount": "Discount",
        "surcharge": "Surcharge",
        "total": "Total",
        "incl": "incl.",
        "vat": "VAT",
        "payment": "Payment",
        "test_page": "Test page",
        "profile": "Profile",
        "width": "Width",
        "characters": "characters",
        "bold": "Bold",
        "inverse": "Inverse",
        "large": "Large",
    },
}
# Words the backend sends as codes; codes not listed are printed as they came.
_FULFILMENT = {
    "de": {"pickup": "Abholung", "delivery": "Lieferung", "dine_in": "Tisch"},
    "en": {"pickup": "Pickup", "delivery": "Delivery", "dine_in": "Table"},
}
_PAYMENT = {  # payment methods and statuses share one table, their codes do not overlap
    "de": {
        "card": "Karte",
        "cash": "Bar",
        "voucher": "Gutschein",
        "paid": "bezahlt",
        "unpaid": "offen",
        "pending": "offen",
        "refunded": "erstattet",
    },
    "en": {"card": "Card", "cash": "Cash", "voucher": "Voucher"},
}
DATE_TIME = {"de": "%d.%m.%Y %H:%M", "en": "%Y-%m-%d %H:%M"}
OTHER_DAY = {"de": "%d.%m. %H:%M", "en": "%Y-%m-%d %H:%M"}


def money(amount: Decimal | int, currency: str, language: str) -> str:
    """The amount as printed: its currency's decimals, or more where it has them (edge.orders.currency.as_printed)."""
    if isinstance(amount, float):
        raise TypeError("money must be a Decimal, never a float")
    value = as_printed(Decimal(amount), currency)
    digits = f"{abs(value):,f}"
    if language == "de":
        digits = digits.translate(str.maketrans(",.", ".,"))
    sign = "-" if value < 0 else ""
    if language == "de":
        return f"{sign}{digits} {'€' if currency == 'EUR' else currency}"
    return f"{sign}€{digits}" if currency == "EUR" else f"{sign}{currency} {digits}"


def percent(rate: Decimal, language: str) -> str:
    value = Decimal(rate).normalize()
    text = f"{abs(value) if value.is_zero() else value:f}"  # a till's "-0.00" is 0 %, never "-0%"
    return (text.replace(".", ",") if language == "de" else text) + "%"


def describe_fulfilment(fulfilment: Fulfilment, language: str) -> str:
    """The order type in words, with the table when there is one, e.g. "Abholung, Tisch 4"."""
    label = _FULFILMENT[language].get(fulfilment.type, fulfilment.type)
    if fulfilment.table is None:
        return label
    table = f"{_FULFILMENT[language]['dine_in']} {fulfilment.table}"
    return table if fulfilment.type == "dine_in" else f"{label}, {table}"


def describe_payment(payment: Payment, language: str) -> str:
    """Method and status in words, e.g. "Karte (bezahlt)"."""
    names = _PAYMENT[language]
    return f"{names.get(payment.method, payment.method)} ({names.get(payment.status, payment.status)})"
