"""Amounts as a receipt prints them (edge.printing.labels.money) and the totals check reads them
(edge.orders.totals): in the currency's minor units, never rounded."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217's currencies whose minor unit is not the cent (every other code, known or not, has two decimals).
_DECIMALS = {
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"), 0),
    **dict.fromkeys(("RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("CLF", "UYW"), 4),
}


def minor_unit(currency: str) -> Decimal:
    """The currency's smallest amount: 0.01 for EUR, 0.001 for KWD, 1 for JPY."""
    return Decimal(1).scaleb(-_DECIMALS.get(currency, 2))


def as_printed(amount: Decimal, currency: str) -> Decimal:
    """The amount with its currency's decimals (2400 JPY, 3.500 KWD, 9.50 EUR), or with more where it has them: the
    contract allows four, and a fraction of a cent rounded away on paper left lines that no longer add up."""
    shown = amount.quantize(minor_unit(currency))
    return shown if shown == amount else amount.normalize()  # normalize: 0.4950 is 0.495, its zero says nothing
