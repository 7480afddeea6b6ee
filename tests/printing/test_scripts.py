"""Item names in Greek and Cyrillic on a printer whose code page is Latin (CP858, CP437): readable, not question
marks, and in one script."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from edge.app import Agent
from edge.config import Settings
from edge.printing import text
from edge.printing.decode import decode
from edge.printing.text import printable
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, post

# The Greek letters CP437 has (for maths), as the bytes it prints them with: none may reach the paper in a word that
# is printed in Latin letters.
_GREEK_IN_CP437 = frozenset("ΓΘΣΦΩαδεπστφ".encode("cp437"))


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


async def test_greek_on_a_cp437_printer_prints_whole_in_latin_letters_not_half_in_greek_glyphs(
    make_agent: Callable[..., Awaitable[Agent]], make_settings: Callable[..., Settings], printers: dict[str, SimPrinter]
) -> None:
    """CP437 (a US or German printer without a Greek code page) holds a few Greek letters for maths: Σ, α, π, σ, τ...
    "Σουβλάκι" printed as "Σoyvlαki", each letter the code page had as a Greek glyph and the others transliterated:
    neither a Greek nor a Latin reader can read it. A text whose Greek the code page cannot print whole is
    transliterated whole, short words like "σε" whose letters CP437 has included; Cyrillic (none of it in CP437)
    likewise."""
    settings = make_settings()
    kitchen = dataclasses.replace(settings.printers["kitchen"], codepage="cp437")
    agent = await make_agent(dataclasses.replace(settings, printers={**settings.printers, "kitchen": kitchen}))
    order = make_order(1, print_receipt=False)
    order["items"][0] |= {"name": "Σουβλάκι", "modifiers": [{"name": "σε πίτα", "price": "1.00"}], "note": "ΧΩΡΙΣ"}
    order["items"][1]["name"] = "ЩИ со сметаной"
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    assert ticket.startswith(b"\x1b@\x1c.\x1bt\x00"), ticket[:8]  # the job selects CP437
    for name in (b"2x Souvlaki", b"+ se pita", b"! CHORIS", b"1x SHCHI so smetanoy"):
        assert name in ticket, (name, decode(ticket).text)
    greek = bytes(sorted({byte for byte in ticket if byte in _GREEK_IN_CP437}))
    assert not greek, f"Greek glyphs on paper: {greek.decode('cp437')!r} in {decode(ticket).text!r}"


@pytest.mark.parametrize(
    ("text", "codec", "printed"),
    [
        ("Σουβλάκι", "cp437", "Souvlaki"),  # ου is "ou"; ά loses its accent with the rest, not kept as CP437's α
        ("ΣΟΥΒΛΑΚΙ", "cp437", "SOUVLAKI"),
        ("Μουσακάς", "cp437", "Mousakas"),  # final sigma
        ("ΨΑΡΙ ψητό", "cp437", "PSARI psito"),  # a letter of two in a word in capitals is two capitals
        ("Ψάρι", "cp437", "Psari"),
        ("Θ", "cp858", "Th"),
        ("Αυγολέμονο, ευχαριστώ", "cp858", "Avgolemono, efcharisto"),  # αυ, ευ: v, and f before θ κ ξ π σ τ φ χ ψ
        ("άυλος", "cp858", "aylos"),  # the accent on α: two vowels, not αυ
        ("Käse σε πίτα", "cp437", "Käse se pita"),  # the Latin word keeps its umlaut, CP437 has it
        ("π-Pizza, 2πr", "cp437", "π-Pizza, 2πr"),  # all of its Greek in the code page: as written
        ("π-Pizza", "cp858", "p-Pizza"),
        ("100µg Safran", "cp858", "100µg Safran"),  # the micro sign is Latin-1's, not a Greek letter
        ("100μg Safran, 5 μl", "cp858", "100µg Safran, 5 µl"),  # Greek mu as a unit's prefix: micro, not "100mg"
        ("Μύδια 2 μερίδες", "cp858", "Mydia 2 merides"),  # a word after a number is a word
        ("Ћевапчићи, Пљескавица, Његуш", "cp858", "Cevapcici, Pljeskavica, Njegus"),  # Serbian's own letters
        ("ЉУТО, Џем, Ђувеч, Ѓ", "cp858", "LJUTO, Dzem, Djuvec, G"),
        ("ЩИ, Щи, Ёлка", "cp437", "SHCHI, Shchi, Yolka"),
        ("Борщ Σουβλάκι", "cp1252", "Borshch Souvlaki"),
    ],
)
def test_a_script_the_code_page_cannot_print_whole_is_transliterated_whole(text: str, codec: str, printed: str) -> None:
    """One script per text for the cook: Greek (or Cyrillic) letters print as themselves only if the code page has
    every one of them in the text, else all of them in Latin letters (ISO 843 / ELOT 743 for Greek)."""
    assert printable(text, codec) == printed


@pytest.mark.parametrize(
    ("width", "number", "printed"),
    [
        (48, "ЩУКА-ЖЮ-ЧАЩА-1042", "SHCHUKA-ZHYU-CHASHCHA-1042"),  # 17 letters fit 24 double-width columns, 26 do not
        (32, "ЩУКА-ЖЮ-1042", "SHCHUKA-ZHYU-1042"),  # 58 mm: 12 fit 16, 17 do not
        (48, "LIEFERUNG-2026-1205-00042", "LIEFERUNG-2026-1205-00042"),  # Latin, too long: double height (a guard)
    ],
)
async def test_an_order_number_in_cyrillic_prints_whole_in_the_head_of_ticket_and_receipt(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
    width: int,
    number: str,
    printed: str,
) -> None:
    """The order number is printed at double width when it fits, else at double height only. The templates measured
    the number as sent, but Щ prints as four letters: a number that fitted as sent was split over two lines of the
    head once transliterated, and a cook misreads a number in two parts."""
    settings = make_settings()
    wide = {name: dataclasses.replace(printer, width=width) for name, printer in settings.printers.items()}
    agent = await make_agent(dataclasses.replace(settings, printers=wide))
    order = make_order(1, print_receipt=True) | {"number": number}
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
    [ticket] = await printers["kitchen"].wait_for_printed(1)
    [receipt] = await printers["front"].wait_for_printed(1)
    for job in (ticket, receipt):
        lines = [line.strip() for line in decode(job).text.splitlines()]
        assert any(line.endswith(printed) for line in lines[:8]), lines[:8]


def test_a_letter_is_greek_or_cyrillic_by_its_unicode_block_as_by_its_name() -> None:
    """The script of a letter is told by its Unicode block, not by unicodedata.name(), whose table the start-up
    check's labels ("→", "–") then kept resident in every agent (0.25 MB of the 50 MB idle budget): the same answer
    as the names give, for every letter of the Basic Multilingual Plane but phonetic symbols (small capitals and
    subscripts, no menu's words: "?" either way) and the two Cyrillic modifier letters (now read as their signs)."""
    phonetic = (range(0x1D00, 0x1DC0), range(0xAB30, 0xAB70))
    differ = []
    for point in range(0x10000):
        char = chr(point)
        if any(point in block for block in phonetic) or point in (0xA69C, 0xA69D):
            continue
        named = unicodedata.name(char, "").partition(" ")[0]
        if text._script(char) != (named if named in ("GREEK", "CYRILLIC") and char.isalpha() else None):
            differ.append(f"U+{point:04X}")
    assert differ == []
