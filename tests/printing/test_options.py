"""Per-printer options in the bytes: cut, QR method and strip height, cash drawer, logo, profile; operator templates."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image

from edge.app import Agent
from edge.config import Settings, parse_settings
from edge.errors import ConfigError
from edge.orders.model import Order, Payment, parse_order
from edge.printing.decode import decode
from edge.printing.render import PrintOptions, Renderer
from edge.sim.printer import SimPrinter
from tests.helpers import EXAMPLE, api_client, config_dict, fresh, post

QR = "edge:v1:ord_7f3a9c21:kitchen"
GS_V0 = re.compile(rb"\x1dv0\x00(.)(.)(.)(.)", re.S)


def raster_images(data: bytes) -> list[tuple[int, int]]:
    """(width in dots, rows) of each GS v 0 raster image."""
    return [
        ((m[0] + 256 * m[1]) * 8, m[2] + 256 * m[3])
        for m in (match.groups() for match in GS_V0.finditer(data))
        for m in [[b[0] for b in m]]
    ]


@pytest.mark.parametrize(
    ("cut", "command", "cuts"), [("full", b"\x1dV\x00", 1), ("partial", b"\x1dV\x01", 1), ("none", None, 0)]
)
def test_cut_follows_the_printer(renderer: Renderer, order: Order, cut: str, command: bytes | None, cuts: int) -> None:
    """full: GS V 0; partial: GS V 1; none: no cut command at all, only a feed past the tear bar."""
    data = renderer.ticket(order, "kitchen", options=PrintOptions(cut=cut))
    assert decode(data).cuts == cuts
    if command:
        assert data.endswith(command)
    else:
        assert data.endswith(b"\x1bd\x06")


def test_native_qr_where_the_profile_has_it_image_otherwise(renderer: Renderer, order: Order) -> None:
    """auto: the printer's own QR command on a profile with qrCode (TM-T88V), a raster image on one without (simple)."""
    native = decode(renderer.ticket(order, "kitchen", options=PrintOptions(profile="TM-T88V")))
    assert native.qr_codes == [QR]
    image = renderer.ticket(order, "kitchen", options=PrintOptions(profile="simple"))
    assert decode(image).qr_codes == [] and raster_images(image)


@pytest.mark.parametrize(
    ("method", "marker"), [("bitImageRaster", b"\x1dv0"), ("bitImageColumn", b"\x1b*"), ("graphics", b"\x1d(L")]
)
def test_qr_image_method_is_configurable(renderer: Renderer, order: Order, method: str, marker: bytes) -> None:
    """Each image method sends its own command family and no native QR command."""
    data = renderer.ticket(order, "kitchen", options=PrintOptions(qr=method))
    assert marker in data and decode(data).qr_codes == [] and b"\x1d(k" not in data


def test_qr_image_is_split_into_fragments(renderer: Renderer, order: Order) -> None:
    """A fragment height smaller than the code splits the image into strips no taller than that."""
    whole = raster_images(renderer.ticket(order, "kitchen", options=PrintOptions(qr="bitImageRaster")))
    strips = raster_images(
        renderer.ticket(order, "kitchen", options=PrintOptions(qr="bitImageRaster", qr_fragment_height=48))
    )
    assert len(whole) == 1 and len(strips) > 1
    assert all(rows <= 48 for _, rows in strips) and sum(rows for _, rows in strips) == whole[0][1]


@pytest.mark.parametrize(
    ("method", "status", "copy", "kicks"),
    [("cash", "paid", False, 1), ("cash", "paid", True, 0), ("card", "paid", False, 0), ("cash", "unpaid", False, 0)],
)
def test_cash_drawer_opens_only_for_cash_receipts(
    renderer: Renderer, order: Order, method: str, status: str, copy: bool, kicks: int
) -> None:
    """The drawer kicks after a receipt paid in cash on a printer with cash_drawer; never for card, never for cash
    still to pay (it opened for "Bar (offen)" too: the paper probe), never on a copy, never on a ticket."""
    cash = dataclasses.replace(order, payment=Payment(method=method, status=status))
    options = PrintOptions(cash_drawer=True)
    assert decode(renderer.receipt(cash, copy=copy, options=options)).drawer_kicks == kicks
    assert decode(renderer.ticket(cash, "kitchen", options=options)).drawer_kicks == 0
    assert decode(renderer.receipt(cash)).drawer_kicks == 0  # printer without a drawer


def test_logo_is_scaled_to_the_paper(renderer: Renderer, order: Order, tmp_path: Path) -> None:
    """A logo wider than the paper is shrunk to the printable dots (48 characters: 576) and printed before the text."""
    path = tmp_path / "logo.png"
    Image.new("L", (1200, 200), 0).save(path)
    data = renderer.receipt(order, width=48, options=PrintOptions(logo=path))
    (width, rows), *_ = raster_images(data)
    assert (width, rows) == (576, 96)
    assert data.index(b"\x1dv0") < data.index("Bestellung".encode("cp858"))
    assert raster_images(renderer.receipt(order, width=48)) == []


def test_options_come_from_the_printer_config(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Agent start-up tries each printer's options: an unreadable logo is a ConfigError then, not at the first
    receipt."""
    bad = tmp_path / "logo.png"
    bad.write_text("not an image")
    settings = make_settings()
    front = dataclasses.replace(settings.printers["front"], logo=bad)
    with pytest.raises(ConfigError, match=r"printers\.front: .*logo\.png") as caught:
        Agent(dataclasses.replace(settings, printers={**settings.printers, "front": front}))
    assert caught.value.key == "printers.front"


async def test_agent_prints_with_the_operators_template(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """[printing] template_dir: the operator's ticket.j2 is what comes out of the kitchen printer; receipts stay
    built-in."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "ticket.j2").write_text(
        "MEIN TICKET {{ order.number }} {{ station }}\n{{ qr(qr_code) }}\n{{ cut }}\n", encoding="utf-8"
    )
    agent = await make_agent(printing={"template_dir": str(templates)})
    async with api_client(agent) as api:
        assert (await post(api, fresh(json.loads(json.dumps(EXAMPLE)))))[0] == 201
    ticket = decode((await printers["kitchen"].wait_for_printed(1))[0])
    receipt = decode((await printers["front"].wait_for_printed(1))[0])
    assert ticket.text.startswith("MEIN TICKET A-1042 kitchen") and ticket.qr_codes == [QR]
    assert "Summe" in receipt.text


def test_broken_operator_template_stops_the_agent_at_start_up(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A receipt.j2 that fails when it runs is a ConfigError naming printing.template_dir when the agent is built."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "receipt.j2").write_text("{{ order.totals.nothing }}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"printing\.template_dir: receipt\.j2: .*nothing"):
        Agent(make_settings(printing={"template_dir": str(templates)}))


@pytest.mark.parametrize(
    ("profile", "policy", "select", "codec", "euro"),
    [
        ("default", "auto", b"\x1bt\x13", "cp858", b"\xd5"),  # Epson numbering, CP858
        ("TSP600", "auto", b"\x1bt\x04", "cp858", b"\xd5"),  # Star calls CP858 number 4
        ("TM-T88II", "auto", b"\x1bt\x10", "cp1252", b"\x80"),  # no CP858 on this model: CP1252, € still prints
        ("default", "cp437", b"\x1bt\x00", "cp437", b"EUR"),  # forced CP437: no € in it, spelled out
    ],
)
def test_code_page_policy_follows_the_profile(
    renderer: Renderer, order: Order, profile: str, policy: str, select: bytes, codec: str, euro: bytes
) -> None:
    """The job selects the code page the policy picks from the profile's own table, once, and encodes text in it."""
    data = renderer.receipt(order, options=PrintOptions(profile=profile, codepage=policy))
    assert data.startswith(b"\x1b@\x1c." + select) and data.count(b"\x1bt") == 1  # FS .: test_cancel_kanji.py
    assert "Käsespätzle".encode(codec) in data
    total = next(line for line in data.split(b"\n") if b"Summe" in line)
    assert total.rstrip().endswith(euro)


def test_profile_without_a_usable_code_page_stops_the_start(make_settings: Callable[..., Settings]) -> None:
    """A profile whose code page table has none of CP858, CP1252, CP437 is a ConfigError at start-up."""
    settings = make_settings()
    front = dataclasses.replace(settings.printers["front"], profile="AF-240")
    with pytest.raises(ConfigError, match="no code page any of CP858, CP1252, CP437"):
        Agent(dataclasses.replace(settings, printers={**settings.printers, "front": front}))


async def test_the_kitchen_ticket_names_the_guest_with_their_phone_number_the_receipt_does_not(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """A pickup or delivery is handed to a guest the staff may have to call (late, wrong address): the ticket that
    goes with the bag says the guest's name and phone number. The receipt, which the guest takes, does not repeat
    the number."""
    agent = await make_agent()
    async with api_client(agent) as api:
        assert (await post(api, fresh(json.loads(json.dumps(EXAMPLE)))))[0] == 201
    ticket = decode((await printers["kitchen"].wait_for_printed(1))[0])
    receipt = decode((await printers["front"].wait_for_printed(1))[0])
    assert "Jürgen Groß, +49 30 1234567" in ticket.text.splitlines()
    assert "1234567" not in receipt.text


async def test_a_notes_lines_print_as_lines_and_a_long_order_number_stays_whole_on_a_narrow_printer(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """What the till sent as lines of a note (an allergy on its own line) prints as lines, each under the note's
    hanging indent; and an order number too long for double width on a 58 mm printer (32 columns) prints whole at
    double height instead of split mid-number. Before (print probe round 3, s01 and s07): "! ohne Zwiebeln extra
    scharf  Allergie: Nüsse!" as one run-on line, and "LIEF-2026-1205-0" / "0042" in the head."""
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["kitchen"]["width"] = 32
    agent = await make_agent(parse_settings(raw, source="test"))
    order = fresh(json.loads(json.dumps(EXAMPLE)))
    order["number"] = "LIEF-2026-1205-00042"
    order["items"][0]["note"] = "ohne Zwiebeln\nextra scharf\r\nAllergie: Nüsse!"
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
    lines = [line.strip() for line in decode((await printers["kitchen"].wait_for_printed(1))[0]).text.splitlines()]
    assert "LIEF-2026-1205-00042" in lines, lines
    start = lines.index("! ohne Zwiebeln")
    assert lines[start + 1 : start + 3] == ["extra scharf", "Allergie: Nüsse!"], lines


def test_a_logo_on_a_model_narrower_than_the_paper_is_scaled_to_its_dots_and_the_box_starts(tmp_path: Path) -> None:
    """A TM-T88V prints 512 dots on 80 mm paper (180 dpi): a print-quality logo is scaled to those, not to 48
    characters' 576, and `edge config check` says ok. Before (print probe 4, F4): python-escpos' ImageWidthError
    (576 > 512) as a traceback, exit 1, from the check and from every start."""
    from tests.config.box import write_box_config
    from tests.helpers import edge_blocking

    logo = tmp_path / "logo.png"
    Image.new("L", (1000, 200), 0).save(logo)
    config = write_box_config(tmp_path, printers={"kitchen": {"type": "file", "profile": "TM-T88V", "logo": str(logo)}})
    done = edge_blocking("config", "check", "--config", str(config), timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-1500:]
    data = Renderer().receipt(parse_order(fresh(EXAMPLE)), width=48, options=PrintOptions(profile="TM-T88V", logo=logo))
    (width, _), *_ = raster_images(data)
    assert width == 512


async def test_a_tm_t88v_without_a_width_prints_its_own_42_columns(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """A TM-T88V's head is 512 dots (180 dpi on 80 mm paper): 42 characters of its standard font a line (Epson's
    specification; python-escpos' database says the same). Without a width set, its tickets and receipts are 42
    columns. Before (ticket75 probe, F1): every such printer got 48 by default, and a printer carries what does not fit
    on to the next line: "Summe … 3" / "9,30 €", every rule in two."""
    raw = config_dict(tmp_path / "data", printers)
    for name in ("kitchen", "front"):
        raw["printers"][name]["profile"] = "TM-T88V"
    agent = await make_agent(parse_settings(raw, source="test"))
    async with api_client(agent) as api:
        assert (await post(api, fresh(EXAMPLE)))[0] == 201
    for name in ("kitchen", "front"):
        lines = decode((await printers[name].wait_for_printed(1))[0]).text.splitlines()
        assert max(len(line) for line in lines) == 42, (name, lines)


def test_a_width_the_printer_cannot_print_stops_the_check_in_one_line_naming_the_key(tmp_path: Path) -> None:
    """`width = 48` on a TM-T88V (42 a line) is refused by `edge config check`, so by the start, in one line naming
    the key and what fits. Before (ticket75 probe, F1): "ok", and every receipt's amounts split over two lines."""
    from tests.config.box import write_box_config
    from tests.helpers import edge_blocking

    config = write_box_config(tmp_path, printers={"kitchen": {"type": "file", "profile": "TM-T88V", "width": 48}})
    done = edge_blocking("config", "check", "--config", str(config), timeout=60)
    assert done.returncode != 0, done.stdout
    assert "printers.kitchen.width" in done.stderr and "42" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
