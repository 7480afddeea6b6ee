"""A dish name no code page of the printer can show (Chinese, Arabic, an emoji) prints as "????" (print probe 3, F2):
the cook gets the item's SKU beside it, and the manager is told once per printer and text, naming the order — the
menu (or the printer) needs changing. Before: "1x ????" on the ticket and the receipt, every job 'printed', no word
to anyone."""

from __future__ import annotations

import copy
import html
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.config import Settings
from edge.events import TextUnprintable
from edge.printing.decode import decode
from edge.printing.text import CONTROL, INVISIBLE, UNPRINTABLE_NOTE
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import EXAMPLE, api_client, fresh, post


def chinese(order_id: str, number: str, note: str, guest: str) -> dict:
    order = fresh(copy.deepcopy(EXAMPLE)) | {"id": order_id, "number": number, "print_receipt": False}
    order["items"][0] |= {"name": "宫保鸡丁", "sku": "KP-12", "note": note}
    order["items"][0]["modifiers"][0]["name"] = "大份"
    order["customer"]["name"] = guest
    return order


async def test_a_dish_no_code_page_shows_prints_with_its_sku_and_the_manager_is_told_once(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
) -> None:
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    told: list[TextUnprintable] = []
    agent.bus.subscribe(told.append, TextUnprintable)
    async with api_client(agent) as api:
        assert (await post(api, chinese("ord_cn_1", "C-1", "不要辣", "王北京")))[0] == 201
        assert (await post(api, chinese("ord_cn_2", "C-2", "少油 🌶", "李上海")))[0] == 201
        first, second = (decode(data).text for data in await printers["kitchen"].wait_for_printed(2))
    item_line = next(line for line in first.splitlines() if line.startswith("2x"))
    assert "KP-12" in item_line, first  # the cook can tell the dish by its SKU
    assert "Käsespätzle" in first and "(SPAETZLE)" not in first  # a name that prints is left as it is
    assert "KP-12" in second
    # Once per printer and menu text, not per ticket; a guest's note (new with every order, maybe personal) as "a
    # note", once; the guest's name not at all (newfeat probe F4: one mail per order, with names and phone numbers).
    assert [(e.printer, e.order_id) for e in told] == [("kitchen", "ord_cn_1")], told
    assert set(told[0].texts) == {"宫保鸡丁 (KP-12)", "大份", UNPRINTABLE_NOTE}  # the SKU names the menu entry to fix
    [mail] = await sink.wait_for(1, timeout=15)
    assert "kitchen" in str(mail["Subject"]), mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    assert "宫保鸡丁" in body and "C-1" in body, body
    assert "王北京" not in body and "不要辣" not in body and "+49" not in body, body


async def test_an_order_number_in_another_scripts_digits_prints_in_digits_one_with_none_names_the_order(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
) -> None:
    """The ticket's head is what the cook calls out and matches with the screen. A number, or a table, in Arabic-Indic,
    Persian, Devanagari or Thai digits prints in the digits the printer has (their values are Unicode's: ٤٢ is 42); a
    number with no letter or digit the printer can show (an emoji) prints with the order's id beside it, as a dish
    name with its SKU, and is told as text the printer cannot print. Before (the http78 probe, F1): "??" for all of
    them, two orders with the same head, and no word to anyone."""
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    told: list[TextUnprintable] = []
    agent.bus.subscribe(told.append, TextUnprintable)
    numbers = {"ord_ar": "\u0664\u0662", "ord_fa": "\u06f4\u06f3", "ord_hi": "\u096a\u096a", "ord_pizza": "\U0001f355"}
    async with api_client(agent) as api:
        for order_id, number in numbers.items():
            order = fresh(copy.deepcopy(EXAMPLE)) | {"id": order_id, "number": number, "print_receipt": False}
            order["fulfilment"] = {"type": "dine_in", "table": "\u0661\u0662"}
            assert (await post(api, order))[0] == 201
        heads = [decode(data).text for data in await printers["kitchen"].wait_for_printed(len(numbers))]
    assert "42" in heads[0] and "43" in heads[1] and "44" in heads[2], heads
    assert all("12" in head for head in heads), heads  # the table
    assert "ord_pizza" in heads[3], heads[3]
    assert [e.order_id for e in told] == ["ord_pizza"], told


async def test_the_mail_about_a_dish_it_cannot_print_quotes_its_name_on_one_line_with_hidden_characters_named(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
) -> None:
    """A dish name with a line break, ESC, NUL and a right-to-left override (U+202E: a mail client reads the rest of
    the paragraph backwards) is quoted in the manager's mail on one line, each such character named by its code point
    (`<U+000A>`, `<U+202E>`), in the text part and the HTML part alike; the characters it cannot print are still there
    to read. Before (the inject81 probe, F3): the name as sent, its CR/LF splitting the mail into a line
    "Bcc: evil@example.com", and ESC, NUL and U+202E in both parts."""
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    order = chinese("ord_cn_3", "C-3", "", "Wang")
    order["items"][0]["name"] = "炒饭\r\nBcc: evil@example.com\x1b\x00 \u202eazziP"
    order["items"][0]["modifiers"][0]["name"] = "大份\u200b"
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
    [mail] = await sink.wait_for(1, timeout=15)
    for part in ("plain", "html"):
        body = mail.get_body((part,)).get_content()
        hidden = sorted(
            {f"U+{ord(c):04X}" for c in body if (c not in "\r\n\t" and CONTROL.match(c)) or INVISIBLE.match(c)}
        )
        assert not hidden, (part, hidden, body)
        assert not [line for line in body.splitlines() if line.lstrip().startswith("Bcc:")], (part, body)
        quoting = [html.unescape(line) for line in body.splitlines() if "炒饭" in line]  # the sentence, the table
        name = "炒饭<U+000D><U+000A>Bcc: evil@example.com<U+001B><U+0000> <U+202E>azziP"
        assert quoting and all(name in line for line in quoting), (part, quoting)
        assert "大份<U+200B>" in html.unescape(body), body


async def test_a_guests_note_it_cannot_print_is_named_in_the_mails_language(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
) -> None:
    """A German store (agent.language "de"), a dish note with an emoji ("ohne Zwiebeln 🧅"): the mail names the note
    "eine Notiz" in its text and "Notiz" in the order's line, in the text and the HTML part, and the note itself not
    at all. Before (the i18n82 probe, F1): the English words "a note" in the German subject line's text, "Letzte
    Meldung" and the item line ("(Bestellung A-1042: a note)")."""
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    order = fresh(copy.deepcopy(EXAMPLE)) | {"id": "ord_note_1", "number": "A-1042", "print_receipt": False}
    order["items"][0]["note"] = "ohne Zwiebeln 🧅"
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
    [mail] = await sink.wait_for(1, timeout=15)
    for part in ("plain", "html"):
        body = html.unescape(mail.get_body((part,)).get_content())
        assert "(Bestellung A-1042: eine Notiz)" in body, (part, body)
        assert "nicht druckbar: Notiz" in body, (part, body)
        assert "a note" not in body and "Zwiebeln" not in body, (part, body)
