"""Chinese-market clones (Xprinter, ZJiang, HPRT, Goojprt) that ship in GB18030 double-byte (Kanji/Chinese) character
mode, which ESC @ restores: every job cancels it with FS . right after ESC @, so umlauts, ß and € print as themselves
and not as Hanzi (DantSu/ESCPOS-ThermalPrinter-Android#185, mike42/escpos-php#833 and #995). Read back by the
simulator's clone (edge/sim/clone.py: Chinese mode after ESC @ until FS .)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.orders.model import Order
from edge.printing.decode import decode
from edge.printing.render import PrintOptions, Renderer, print_options
from edge.sim.clone import clone_text
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, config_dict, post

_FS_DOT = b"\x1c."
_GERMAN = ("Jürgen Groß", "Käsespätzle", "€")


@pytest.mark.parametrize("profile", ["POS-5890", "default", "TM-T88V"])
def test_a_clone_in_chinese_mode_prints_umlauts_sharp_s_and_euro_as_an_epson_does(
    renderer: Renderer, order: Order, profile: str
) -> None:
    """A receipt and a kitchen ticket read by a clone that is in Chinese mode after ESC @ come out as an Epson prints
    them (the project's decoder), umlauts, ß and € included, for the clones' own profile as for the profile most
    stores leave (default) and an Epson's. Before: every job started ESC @ ESC t n and never sent FS .: the clone
    printed "J乺gen Gro�", "1x K剆esp則zle", "Summe 39,30 �"."""
    options = PrintOptions(profile=profile)
    receipt = renderer.receipt(order, width=32, options=options)
    ticket = renderer.ticket(order, "kitchen", width=32, options=options)
    for data in (receipt, ticket):
        assert clone_text(data) == decode(data).text
        assert data.startswith(b"\x1b@" + _FS_DOT + b"\x1bt"), data[:8]
    on_paper = clone_text(receipt)
    assert all(text in on_paper for text in _GERMAN), on_paper
    assert "Käsespätzle" in clone_text(ticket)
    assert "Jürgen Groß" in clone_text(ticket) or "Jürgen Groß" not in decode(ticket).text


def test_cancel_kanji_false_leaves_fs_dot_out(
    renderer: Renderer, order: Order, printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """``cancel_kanji = false`` (a printer that would print the "." of an FS command it does not know) sends the job
    as before: ESC @ ESC t n, no FS . anywhere. The setting reaches the job's options from the config."""
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["front"]["cancel_kanji"] = False
    settings = parse_settings(raw, source="test")
    assert print_options(settings.printers["kitchen"]).cancel_kanji is True
    off = print_options(settings.printers["front"])
    assert off.cancel_kanji is False
    data = renderer.receipt(order, options=off)
    assert data.startswith(b"\x1b@\x1bt\x13") and _FS_DOT not in data
    assert "Jürgen Groß" in decode(data).text


async def test_the_agent_cancels_chinese_mode_on_every_job(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], tmp_path: Path
) -> None:
    """Through the agent, with the clones' profile (POS-5890, 58 mm): the kitchen ticket and the receipt a clone in
    Chinese mode prints read like the order."""
    raw = config_dict(tmp_path / "data", printers)
    for printer in raw["printers"].values():
        printer.update(profile="POS-5890", width=32)
    agent = await make_agent(parse_settings(raw, source="test"))
    async with api_client(agent) as api:
        assert (await post(api, make_order(0, print_receipt=True)))[0] == 201
        ticket = (await printers["kitchen"].wait_for_printed(1))[0]
        receipt = (await printers["front"].wait_for_printed(1))[0]
    assert clone_text(ticket) == decode(ticket).text
    assert clone_text(receipt) == decode(receipt).text
    assert "€" in clone_text(receipt)
