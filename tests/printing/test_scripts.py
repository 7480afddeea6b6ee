"""Item names in Greek and Cyrillic on a printer whose code page is Latin (CP858): readable, not question marks."""

from __future__ import annotations

import aiohttp

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import post


async def test_greek_and_cyrillic_item_names_print_transliterated(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """A Greek salad and a borscht ordered in their own scripts print in Latin letters the cook can read (ISO 843's
    and the usual Russian transliteration); what no Latin letters can say (a pictogram, Chinese) stays "?".
    Before: every Greek and Cyrillic letter printed as "?" (probe_paper D5)."""
    order = make_order(1, print_receipt=False)
    order["items"][0]["name"] = "Ελληνική σαλάτα"
    order["items"][0]["note"] = "Борщ со сметаной, Щи, Ёлка"
    assert (await post(api, order))[0] == 201
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    text = decode(ticket).text
    assert "Elliniki salata" in text, text
    assert "Borshch so smetanoy, Shchi, Yolka" in text, text
