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


async def test_latin_letters_without_an_accent_to_drop_and_invisible_marks_print_as_the_cook_reads_them(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """Turkish "acılı" (spicy) printed as "ac?l?", Maltese "Ħobż" as "?obż": letters of their own (dotless i, h with
    a stroke) have no accent to take off. They print as the Latin letter a reader takes them for. Marks that show
    nothing (left-to-right, right-to-left, a soft hyphen, a line separator) printed as "?" or as a visible hyphen in
    the middle of the text; now they print as nothing (a line separator as a space). The paper probe, each run."""
    order = make_order(1, print_receipt=False)
    order["items"][0]["name"] = "Adana acılı Ħobż"
    order["items"][0]["note"] = "bitte\u2028neue Zeile \u200eLRM\u200f \u202eRTL\u202c Glu\u00adten"
    assert (await post(api, order))[0] == 201
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    text = decode(ticket).text
    assert "Adana acili Hobz" in text, text
    assert "bitte neue Zeile LRM RTL Gluten" in " ".join(text.split()), text
    assert "?" not in text, text


async def test_an_item_name_of_invisible_characters_is_refused_naming_the_field(
    api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """A name of only a zero-width space, a bell or a word joiner passed the "must not be empty" check and printed
    "2x" with nothing after it: the cook could not tell what to make. Refused now, naming the field."""
    for name in ("\u200b", "\x07", "\u2060\ufe0f", "\u200e\u200f"):
        order = make_order(1, print_receipt=False)
        order["items"][0]["name"] = name
        status, body = await post(api, order)
        assert status == 422 and body["field"] == "items[0].name", (name, status, body)
    assert printers["kitchen"].printed == []
