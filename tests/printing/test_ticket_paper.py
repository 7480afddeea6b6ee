"""What a cook reads on kitchen paper, against the real agent (HTTP in, the simulated printer's bytes out): where a
long line wraps, and how a long ticket ends."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import parse_settings
from edge.printing.decode import decode, preview
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, config_dict, post

# A line that starts with a dash: on a change ticket or a STORNO it says "removed" (`- 1x …`, `  - extra Käse`)
_DASH_FIRST = re.compile(r"^\s*[-–—]\s")
# ... which those markers do at column 0 or 2 only: a line wrapped under a hanging indent starts at column 3 or later
_DASH_FIRST_WRAPPED = re.compile(r"^\s{3,}[-–—]\s")


async def _agent(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp: Path,
    width: int = 48,
    **sections: Any,
) -> Agent:
    """An agent whose kitchen printer is ``width`` columns wide (``sections``: config sections)."""
    raw = config_dict(tmp / "data", printers, **sections)
    raw["printers"]["kitchen"]["width"] = width
    return await make_agent(parse_settings(raw, source="test"))


async def _printed_text(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp: Path,
    order: dict[str, Any],
    *,
    width: int = 48,
    on: str = "kitchen",
) -> str:
    """``order`` taken by an agent whose kitchen printer is ``width`` columns wide: the text of its job on ``on``."""
    agent = await _agent(make_agent, printers, tmp, width=width)
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        (printed,) = await printers[on].wait_for_printed(1)
    return decode(printed).text


def _dash_at_edge(word: str, lead: int, width: int, short: int) -> str:
    """A menu text with " – " whose word before the dash ends ``short`` columns before the paper's edge, after
    ``lead`` columns of the line's head ("1x ", "  + ", "- 1x "): the spaced dash is where the line must break."""
    filler = ("Margherita" * 8)[: width - short - lead - len(word) - 1]
    return f"{word} {filler} – extra Käse, ohne Zwiebeln"


def _item(line_id: str, name: str, *, mods: tuple[str, ...] = (), note: str | None = None) -> dict[str, Any]:
    return {
        "line_id": line_id,
        "sku": line_id,
        "name": name,
        "qty": 1,
        "unit_price": "1.00",
        "requires_production": True,
        "station": "kitchen",
        "modifiers": [{"name": mod, "price": None} for mod in mods],
        "note": note,
    }


@pytest.mark.parametrize("width", [32, 42, 48])
async def test_a_wrapped_line_never_starts_with_a_dash_that_would_read_as_removed(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
    width: int,
) -> None:
    """A menu name, modifier or note with a spaced dash ("Pizza Margherita (glutenfrei) – extra Käse") wraps with the
    dash at the end of a line, never at the start of the next: on a change ticket a line starting "- " means removed,
    and only the inverse print told them apart. On the ticket, the change ticket and the STORNO, at 32, 42 and 48
    columns. Before (ticket73 probe, R1): `1x Pizza Margherita (glutenfrei)` / `   - extra Käse, ohne Zwiebeln,`."""
    agent = await _agent(make_agent, printers, tmp_path, width)
    edge = _dash_at_edge
    probe = "Pizza Margherita (glutenfrei) – extra Käse, ohne Zwiebeln, mit scharfem Öl aus Kalabrien und Rucola"
    order = copy.deepcopy(example_order)
    order["print_receipt"] = False
    order["items"] = [
        _item(
            "L0",
            probe,
            mods=(edge("Käse", 4, width, 0), edge("Öl", 4, width, 1)),
            note=edge("Gast", 4, width, 0),
        ),
        # a word longer than the line, cut where the paper ends: its last piece fills the line
        _item(
            "L1", edge("Pizza", 3, width, 0), mods=(("Donaudampfschifffahrts" * 5)[: 2 * (width - 4)] + " – scharf",)
        ),
        _item("L2", edge("Pasta", 3, width, 1), mods=(edge("Speck", 4, width, 1),)),  # changed: "~ 1x …"
        _item("L3", edge("Lasagne", 8, width, 0)),  # its quantity changed: "1 -> 2x …"
        _item("L4", edge("Salat", 5, width, 0)),  # removed: "- 1x …"
    ]
    changed = copy.deepcopy(order)
    changed["revision"] = 2
    changed["items"][2]["modifiers"] = [{"name": edge("Chili", 4, width, 0), "price": None}]
    changed["items"][3]["qty"] = 2
    del changed["items"][4]
    changed["items"].append(_item("L5", edge("Suppe", 5, width, 1), note=edge("Allergie", 4, width, 1)))
    cancelled = copy.deepcopy(changed)
    cancelled["revision"], cancelled["status"], cancelled["cancel_reason"] = 3, "cancelled", "Gast – gegangen"

    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
        assert (await post(api, changed))[0] == 200
        await printers["kitchen"].wait_for_printed(2)
        assert (await post(api, cancelled))[0] == 200
        ticket, change, storno = await printers["kitchen"].wait_for_printed(3)

    texts = {
        name: decode(data).text.splitlines()
        for name, data in (("ticket", ticket), ("change", change), ("storno", storno))
    }
    flat = "".join("".join(texts["ticket"]).split())  # without the spaces: a word too long for a line is cut
    for item in order["items"]:  # every letter there, in its order
        for text in (item["name"], *(mod["name"] for mod in item["modifiers"]), item["note"] or ""):
            assert "".join(text.replace("–", "-").split()) in flat, text
    wrong = [f"ticket: {line!r}" for line in texts["ticket"] if _DASH_FIRST.match(line)]
    wrong += [
        f"{name}: {line!r}" for name in ("change", "storno") for line in texts[name] if _DASH_FIRST_WRAPPED.match(line)
    ]
    assert not wrong, "\n".join(wrong) + "\n\n" + preview(ticket, width=width) + preview(change, width=width)


@pytest.mark.parametrize(
    ("language", "closing"), [("de", "== Ende P-150 · 150 Pos. =="), ("en", "== End P-150 · 150 items ==")]
)
async def test_a_long_ticket_ends_with_its_number_and_item_count_a_short_one_does_not(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
    language: str,
    closing: str,
) -> None:
    """A party's ticket runs to hundreds of lines with its number at the head only: the cook at the far end of the
    strip cannot see whose it is, or that it is whole. A ticket longer than 40 lines ends, before its QR code and the
    cut, with a line naming the number and the count of its lines; a short one ends as before (paper is money).
    Before (ticket73 probe, R4): 150 dishes, 463 lines, and the last text line was the rule."""
    agent = await _agent(make_agent, printers, tmp_path, agent={"language": language})
    party = copy.deepcopy(example_order)
    party["id"], party["number"], party["print_receipt"] = "ord_party", "P-150", False
    party["items"] = [
        _item(f"L{n}", f"Gericht Nummer {n:03d} Spezial", mods=(f"Mod {n}",), note=f"Sitz {n}") for n in range(150)
    ]
    small = copy.deepcopy(party)
    small["id"], small["number"], small["items"] = "ord_small", "S-3", party["items"][:3]
    async with api_client(agent) as api:
        assert (await post(api, party))[0] == 201
        assert (await post(api, small))[0] == 201
        printed = await printers["kitchen"].wait_for_printed(2, timeout=30)

    by_code = {decode(data).qr_codes[0]: data for data in printed}
    long_ticket, short_ticket = by_code["edge:v1:ord_party:kitchen"], by_code["edge:v1:ord_small:kitchen"]
    # the last words on the strip, then its QR code and the cut
    paper = [line.strip() for line in preview(long_ticket).splitlines() if line.strip()]
    assert paper[-4:] == ["-" * 48, closing, "[QR edge:v1:ord_party:kitchen]", paper[-1]], paper[-6:]
    assert paper[-1].startswith("✂") and decode(long_ticket).text.count(closing) == 1
    short = [line.strip() for line in preview(short_ticket).splitlines() if line.strip()]
    assert short[-3:-1] == ["-" * 48, "[QR edge:v1:ord_small:kitchen]"], short
    assert not any(closing.split()[1] in line for line in short), short


_PARTY_NUMBER = "FEIER-2026-1206-A42"  # 19 characters: with the words around it, longer than 32 columns


def _closing(data: bytes, width: int) -> list[str]:
    """The text a job prints after its last rule (before its QR code and the cut): a long ticket's closing line."""
    text = [line.strip() for line in decode(data).text.splitlines() if line.strip()]
    return text[len(text) - text[::-1].index("-" * width) :]


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("de", {"copy": "KOPIE / COPY", "end": "Ende", "items": "Pos.", "changed": "ÄNDERUNG", "cancel": "STORNO"}),
        ("en", {"copy": "KOPIE / COPY", "end": "End", "items": "items", "changed": "CHANGED", "cancel": "CANCELLED"}),
    ],
    ids=["de", "en"],
)
async def test_the_end_of_a_long_copy_change_or_storno_says_what_it_is_whole_at_32_columns(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
    language: str,
    words: dict[str, str],
) -> None:
    """At the far end of a long strip the head is out of sight, so the closing line says what the head says: a COPY
    of a 60-dish party's ticket (the cook holding its end could cook the party twice), a long change ticket
    (ÄNDERUNG) and a long STORNO say so there, with the number and the count; on 32-column paper it breaks only
    between its parts, never inside the number or the count. Before (verify73 probe, 3c/3d): the COPY ended
    `== Ende FEIER-2026-1206-A42 · 60` / `Pos. ==` as the original did, and the 131-line STORNO had no closing line."""
    agent = await _agent(make_agent, printers, tmp_path, 32, agent={"language": language})
    party = copy.deepcopy(example_order)
    party["id"], party["number"], party["print_receipt"] = "ord_party", _PARTY_NUMBER, False
    party["items"] = [_item(f"L{n}", f"Gericht {n:03d} Spezial", mods=(f"Mod {n}",)) for n in range(60)]
    changed = copy.deepcopy(party)
    changed["revision"] = 2
    changed["items"] += [_item(f"M{n}", f"Nachschlag {n:02d}", mods=(f"Mod {n}",)) for n in range(25)]
    cancelled = copy.deepcopy(changed)
    cancelled["revision"], cancelled["status"] = 3, "cancelled"
    async with api_client(agent) as api:
        assert (await post(api, party))[0] == 201
        await printers["kitchen"].wait_for_printed(1, timeout=30)
        async with api.post("/api/v1/orders/ord_party/reprint?by=id") as response:
            assert response.status == 201, await response.text()
        await printers["kitchen"].wait_for_printed(2, timeout=30)
        assert (await post(api, changed))[0] == 200
        await printers["kitchen"].wait_for_printed(3, timeout=30)
        assert (await post(api, cancelled))[0] == 200
        printed = await printers["kitchen"].wait_for_printed(4, timeout=30)

    end, items = f"{words['end']} {_PARTY_NUMBER}", words["items"]
    expected = {  # 32 columns: "== Ende FEIER-2026-1206-A42 · 60 Pos. ==" is 40, so each part on a line of its own
        "original": [f"== {end}", f"60 {items} =="],
        "copy": [f"== {words['copy']}", end, f"60 {items} =="],
        "change": [f"== {words['changed']}", end, f"25 {items} =="],
        "storno": [f"== {words['cancel']}", end, f"85 {items} =="],
    }
    seen = {name: _closing(data, 32) for name, data in zip(expected, printed, strict=True)}
    assert seen == expected, seen


async def test_the_dishes_of_a_ticket_start_in_one_column_whatever_their_quantities(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A party's ticket with 2, 12 and 150 of a dish: the quantities are right-aligned, so every dish's name starts in
    the same column and the cook reads down one edge. Before (ticket75 probe, F3): each digit more moved the name one
    column right ("2x Pizza", "12x Pasta", "150x Brot")."""
    order = copy.deepcopy(example_order)
    order["print_receipt"] = False
    order["items"] = [_item(f"L{n}", name) for n, name in enumerate(("Pizza", "Pasta", "Brot"))]
    for item, qty in zip(order["items"], (2, 12, 150), strict=True):
        item["qty"] = qty
    text = await _printed_text(make_agent, printers, tmp_path, order)
    lines = {line.strip(): line for line in text.splitlines()}
    starts = {line.index(name) for name in ("Pizza", "Pasta", "Brot") for line in lines.values() if name in line}
    assert len(starts) == 1, [line for line in lines.values() if "x " in line]
    assert {"2x Pizza", "12x Pasta", "150x Brot"} <= set(lines)


async def test_the_goods_of_a_receipt_start_in_one_column_whatever_their_quantities(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The guest's receipt for 2, 12 and 150 of a dish: its quantities are right-aligned as the kitchen's are, so the
    goods' names start in one column. Before (stop 75's note, left then): "2x Pizza", "12x Pasta", "150x Brot"."""
    order = copy.deepcopy(example_order)
    order["print_receipt"] = True
    order["items"] = [_item(f"L{n}", name) for n, name in enumerate(("Pizza", "Pasta", "Brot"))]
    for item, qty in zip(order["items"], (2, 12, 150), strict=True):
        item["qty"] = qty
    order["totals"] = {
        "subtotal": "164.00",
        "discount": "0.00",
        "tax": [{"rate": "7", "amount": "10.73"}],
        "total": "164.00",
        "currency": "EUR",
    }
    receipt = await _printed_text(make_agent, printers, tmp_path, order, on="front")
    lines = [line for line in receipt.splitlines() if "x " in line]
    starts = {line.index(name) for name in ("Pizza", "Pasta", "Brot") for line in lines if name in line}
    assert len(starts) == 1, lines
    assert [line.split()[0] for line in lines] == ["2x", "12x", "150x"], lines


@pytest.mark.parametrize("width", [24, 32])
async def test_a_guests_phone_number_is_never_split_over_two_lines(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
    width: int,
) -> None:
    """A delivery's guest with a long name: the line wraps, and the phone number the driver dials moves to the next
    line whole. Before (ticket75 probe, F4): "Maximilian Schmidt-Hoffmann, +49 30" / "1234567"."""
    order = copy.deepcopy(example_order)
    order["print_receipt"] = False
    order["customer"] = {"name": "Maximilian Schmidt-Hoffmann", "phone": "+49 30 1234567"}
    text = await _printed_text(make_agent, printers, tmp_path, order, width=width)
    assert any(line.strip() == "+49 30 1234567" for line in text.splitlines()), text


@pytest.fixture
def box_in_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The box's own zone is Berlin (agent.timezone left out: the system's zone is the store's)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("zone_from", ["config", "system"])
async def test_a_ticket_in_the_hour_the_autumn_night_repeats_says_which_of_its_two_times_it_means(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    request: pytest.FixtureRequest,
    zone_from: str,
) -> None:
    """In Berlin on 25 October 2026 the clocks go from 03:00 back to 02:00. An order taken at the second 02:50 (CET)
    due at the first 02:10 (CEST, 40 minutes earlier) prints both times with their zone, so the cook does not read
    "due 02:10" under "ordered 02:50" as 40 minutes the wrong way. Other times print as they always did. Before (the
    clock76 probe, D4): "Fällig: 02:10" under "Bestellt: 02:50", nothing to tell them apart; and with the box's own
    zone Berlin and no agent.timezone, still so (the verify76 probe, V3: the system's zone taken as today's offset)."""
    clock = SteppedClock(wall_offset=1792892460.0 - time.time())  # 2026-10-25 01:51 UTC, 02:51 CET
    if zone_from == "system":
        request.getfixturevalue("box_in_berlin")
        agent = await make_agent(clock=clock)
    else:
        agent = await make_agent(clock=clock, agent={"timezone": "Europe/Berlin"})
    order = copy.deepcopy(example_order)
    order["print_receipt"] = False
    order["created_at"] = "2026-10-25T01:50:00Z"  # 02:50 CET
    order["fulfilment"]["due_at"] = "2026-10-25T00:10:00Z"  # 02:10 CEST
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        (ticket,) = await printers["kitchen"].wait_for_printed(1)
    text = decode(ticket).text
    assert "Fällig: 02:10 CEST" in text and "Bestellt: 02:50 CET" in text, text


async def test_a_phone_field_longer_than_a_line_breaks_between_its_groups_not_inside_a_number(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A till that puts two numbers in the phone field, longer than a 24-column line: it breaks between the number's
    groups, as before stop 76, never inside a group. Before (the verify76 probe, V2): "…, 0170 123456" / "7 / 030 …"."""
    order = copy.deepcopy(example_order)
    order["print_receipt"] = False
    order["customer"] = {"name": "Jürgen Groß", "phone": "0170 1234567 / 030 12345678"}
    text = await _printed_text(make_agent, printers, tmp_path, order, width=24)
    words = {word for line in text.splitlines() for word in line.split()}
    assert {"0170", "1234567", "030", "12345678"} <= words, text


async def test_a_note_sent_as_eighty_short_lines_takes_a_few_lines_of_paper_more_than_written_on_one(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    example_order: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A note's line breaks are the till's: its first lines print as lines, empty ones not at all, and from the
    eighth on the rest goes on one line, its parts joined with " / ", so a note takes at most seven lines of paper
    more than the same words on one line, and every word is still on paper. The order is taken as ever. Before
    (the inject81 probe, F4): each break printed a line, 80 words a line each took 80 lines per dish, and 40 dishes
    with a note "a\\n" x 250 (inside the 500-character limit) printed 10,048 lines, about 43 m of paper."""
    agent = await _agent(make_agent, printers, tmp_path)
    words = [f"w{k}" for k in range(80)]  # on one line, " / " between: 467 characters
    broken = copy.deepcopy(example_order)
    broken["id"], broken["number"], broken["print_receipt"] = "ord_lines", "L-1", False
    broken["items"] = [_item(f"L{n}", f"Gericht {n}", note="\n\n".join(words) + "\n") for n in range(10)]
    one_line = copy.deepcopy(broken)
    one_line["id"], one_line["number"] = "ord_one_line", "L-2"
    for item in one_line["items"]:
        item["note"] = " / ".join(words)
    async with api_client(agent) as api:
        assert (await post(api, broken))[0] == 201
        assert (await post(api, one_line))[0] == 201
        printed = await printers["kitchen"].wait_for_printed(2, timeout=30)

    by_code = {decode(data).qr_codes[0]: decode(data).text.splitlines() for data in printed}
    lines, flat = by_code["edge:v1:ord_lines:kitchen"], by_code["edge:v1:ord_one_line:kitchen"]
    assert len(lines) <= len(flat) + 7 * 10, (len(lines), len(flat))
    on_paper = " ".join(lines).split()
    assert all(on_paper.count(word) == 10 for word in words), [w for w in words if on_paper.count(w) != 10]
    paper = [line.strip() for line in lines]
    first = paper.index("! w0")
    assert paper[first : first + 7] == ["! w0", *words[1:7]], paper[first : first + 8]
    assert paper[first + 7].startswith("w7 / w8 / w9"), paper[first : first + 8]
