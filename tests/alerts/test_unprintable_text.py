"""A dish name no code page of the printer can show (Chinese, Arabic, an emoji) prints as "????" (print probe 3, F2):
the cook gets the item's SKU beside it, and the manager is told once per printer and text, naming the order — the
menu (or the printer) needs changing. Before: "1x ????" on the ticket and the receipt, every job 'printed', no word
to anyone."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.config import Settings
from edge.events import TextUnprintable
from edge.printing.decode import decode
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
    assert set(told[0].texts) == {"宫保鸡丁 (KP-12)", "大份", "a note"}  # the SKU names the menu entry to fix
    [mail] = await sink.wait_for(1, timeout=15)
    assert "kitchen" in str(mail["Subject"]), mail["Subject"]
    body = mail.get_body(("plain",)).get_content()
    assert "宫保鸡丁" in body and "C-1" in body, body
    assert "王北京" not in body and "不要辣" not in body and "+49" not in body, body
