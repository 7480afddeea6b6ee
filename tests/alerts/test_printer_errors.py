"""A printer stopped by an error (DLE EOT 2 bit 6, the kind in DLE EOT 3) is not an unreachable one (print probe 4,
F3): the manager is told which error and what to do, and a recoverable one (an auto-cutter jam the cook has pulled
out) is recovered with DLE ENQ, so the kitchen prints on without a power cycle. Before: "not reachable, check the
network cable", and the printer stayed stopped until someone switched it off and on."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

import pytest

from edge.alerts.render import TEXTS
from edge.app import Agent
from edge.config import Settings
from edge.printing.decode import decode
from edge.printing.status import error_detail, fault_of
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client, post, wait_until


@pytest.mark.parametrize("found_by", ["the ticket", "the poll between jobs"])
async def test_a_cutter_jam_is_mailed_as_one_and_prints_on_once_the_cook_pulled_the_paper_out(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    found_by: str,
) -> None:
    """Found by the ticket's own check, or by the status poll before any ticket came: the same words (the poll's
    said "found by the status poll between jobs" and not which error)."""
    kitchen = printers["kitchen"]
    kitchen.cutter_error = kitchen.cutter_jammed = True
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    order = make_order(1, print_receipt=False)
    if found_by != "the ticket":
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "error", 20, "the printer's error polled")
    async with api_client(agent) as api:
        assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "error", 20, "the printer's error seen")
    [mail] = await sink.wait_for(1, timeout=15)
    body = mail.get_body(("plain",)).get_content()
    assert "kitchen" in str(mail["Subject"]) and "Netzwerkkabel" not in body, body
    assert "Schneidwerk" in body and "auto-cutter error" in body, body  # which error, and what to do about it
    assert "auto-cutter" in agent.spoolers["kitchen"].state_detail, agent.spoolers["kitchen"].state_detail
    assert not kitchen.printed
    kitchen.cutter_jammed = False  # the cook pulls the paper out of the cutter; nobody touches the power
    [ticket] = await kitchen.wait_for_printed(1, timeout=20)
    assert order["number"] in decode(ticket).text
    assert kitchen.recoveries >= 1


async def test_a_german_cutter_jam_mail_names_the_fault_and_what_to_do_in_german(
    alert_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
) -> None:
    """A German store's kitchen printer stops with a cutter jam (DLE EOT 3): the mail's own German text says which
    fault it is and what to do, and the printer's English words come only as what they are, "Technische Meldung
    (englisch)". Before (the i18n82 probe, F2): "meldet eine Störung … (welche: Letzte Meldung)", and under "Letzte
    Meldung" only "auto-cutter error (paper jammed in the cutter?): pull the paper out …, job not sent"."""
    kitchen = printers["kitchen"]
    kitchen.cutter_error = kitchen.cutter_jammed = True
    agent = await make_agent(alert_settings(group_wait_s=0.1, critical_group_wait_s=0.1))
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    [mail] = await sink.wait_for(1, timeout=15)
    assert "Drucker kitchen: Papierstau im Schneidwerk" in str(mail["Subject"]), mail["Subject"]
    for part in ("plain", "html"):
        body = html.unescape(mail.get_body((part,)).get_content())
        assert "Im Schneidwerk des Druckers kitchen klemmt Papier" in body, (part, body)
        assert "Papier aus dem Schneidwerk ziehen und den Deckel schließen" in body, (part, body)
        assert "Letzte Meldung" not in body, (part, body)
        [line] = [line for line in body.splitlines() if "auto-cutter error" in line]
        assert "Technische Meldung (englisch)" in line, (part, line)


@pytest.mark.parametrize(
    ("errors", "fault"),
    [(0x1A, "cutter"), (0x16, "recoverable"), (0x32, "unrecoverable"), (0x52, "auto_recoverable"), (None, "unnamed")],
)
def test_each_fault_a_printer_names_has_its_own_words_in_both_languages(errors: int | None, fault: str) -> None:
    """Each kind DLE EOT 3 names (and none named) is found in the printer's detail, as the alerter reads it, and has a
    mail text of its own in German and English, so no fault mail says which only in English."""
    detail = f"kitchen (tcp 10.0.0.5:9100): {error_detail({} if errors is None else {3: errors})}, job not sent"
    assert fault_of(detail) == fault
    texts = TEXTS[f"printer_error:({fault})"]
    assert set(texts) == {"de", "en"} and all(len(words) == 3 for words in texts.values()), texts
