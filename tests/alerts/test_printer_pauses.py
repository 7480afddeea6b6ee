"""A printer that pauses and says why is not an outage (the print72 probe, P1 and P2): the cook holding the FEED button
for a few seconds mails nobody, a button held for a minute is named as such, and a near-end sensor that flickers
(a loose roll core near the lever's trip point) is one alarm, whose all-clear comes with the new roll."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import Event, PrinterStatusChanged
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.alerts.helpers import polled_every, subject
from tests.helpers import api_client, db_rows, eventually, job_rows, post, status_reads, wait_until

MakeAgent = Callable[..., Awaitable[Agent]]


def kitchen_states(seen: list[str]) -> Callable[[Event], None]:
    def listen(event: Event) -> None:
        if isinstance(event, PrinterStatusChanged) and event.printer == "kitchen":
            seen.append(event.new)

    return listen


def kinds(sink: SmtpSink) -> list[str]:
    """Each mail's kind and title: 'STÖRUNG: Drucker kitchen: Papier fast leer' and the like."""
    return [subject(m).split("] ", 1)[1] for m in sink.messages]


async def ticket_waiting_behind_feed(agent: Agent, kitchen: SimPrinter) -> None:
    """The cook holds FEED as an order comes in: its ticket waits, the spool paused, probing on."""
    kitchen.feed_button = True
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].paused_since is not None, what="the ticket held back")


async def test_the_feed_button_held_for_seconds_while_a_ticket_waits_mails_nobody_and_the_ticket_prints_once(
    alert_settings: Callable[..., Settings], make_agent: MakeAgent, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """FEED held 8 s by the agent's clock, longer than critical_group_wait_s (5 s, the default): the printer answers
    every query and says it is feeding paper (DLE EOT 2 bit 3). The ticket prints once the button is let go, once, no
    COPY; the manager is not mailed. Before: taken for offline, a critical "Drucker kitchen nicht erreichbar … prüfen,
    ob das Netzwerkkabel steckt" for a printer that had answered why it paused."""
    kitchen, clock, seen = printers["kitchen"], SteppedClock(), []
    agent = await make_agent(alert_settings(check_interval_s=0.2), clock=clock, listen=kitchen_states(seen))
    await ticket_waiting_behind_feed(agent, kitchen)
    clock.advance(8)
    await status_reads(kitchen, 3)  # the spool probes on, the rules go round at the moved time
    kitchen.feed_button = False
    await kitchen.wait_for_printed(1, timeout=15)
    assert sink.messages == [], kinds(sink)
    assert await db_rows(agent, "SELECT key FROM alert_groups WHERE subject = 'kitchen'") == []
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)], what="printed once, no COPY")
    assert len(kitchen.printed) == 1
    assert seen[-2:] == ["paper_feeding", "online"], seen


async def test_a_feed_button_held_for_a_minute_is_mailed_naming_the_button_and_its_end_is_told(
    alert_settings: Callable[..., Settings], make_agent: MakeAgent, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """Held a minute (a stuck button, a roll or a box pressing on it) with a ticket waiting: a critical mail that says
    the FEED button holds the printer, not that it cannot be reached; its all-clear once it is let go, and the ticket
    prints once."""
    kitchen, clock = printers["kitchen"], SteppedClock()
    agent = await make_agent(alert_settings(check_interval_s=0.2), clock=clock)
    await ticket_waiting_behind_feed(agent, kitchen)
    clock.advance(61)  # docs/alerts.md: printer_feed_held after 60 s
    [mail] = await sink.wait_for(1, timeout=15)
    body = mail.get_body(("plain",)).get_content()
    assert "STÖRUNG (kritisch): Drucker kitchen: FEED-Taste" in subject(mail), subject(mail)
    assert "FEED-Taste" in body and "Netzwerkkabel" not in body, body
    kitchen.feed_button = False
    await kitchen.wait_for_printed(1, timeout=15)
    clock.advance(121)  # group_interval_s: news about the group at most every 2 min
    await sink.wait_for(2, timeout=15)
    assert kinds(sink)[1] == "BEHOBEN: Drucker kitchen: FEED-Taste gedrückt", kinds(sink)
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 0, 0)], what="printed once, no COPY")
    assert len(kitchen.printed) == 1


async def test_a_flickering_near_end_sensor_is_one_alarm_and_its_all_clear_comes_with_the_new_roll(
    alert_settings: Callable[..., Settings], make_agent: MakeAgent, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """The near-end lever of a roll near its end flickers: on, then off for longer than group_interval_s, on again,
    three times, an order in each phase; then the roll is changed. The manager gets the alarm, and its all-clear once
    near end has stayed clear 10 minutes; every ticket prints once. Before: STÖRUNG, a false BEHOBEN (the roll never
    changed), STÖRUNG … about one mail every 1-2 minutes, up to the hour's cap on warnings."""
    kitchen, clock = printers["kitchen"], SteppedClock()
    agent = await make_agent(polled_every(alert_settings(check_interval_s=0.2), 0.2, "kitchen"), clock=clock)
    orders = 0

    async def phase(near_end: bool, seconds: float) -> None:
        nonlocal orders
        kitchen.paper_near_end = near_end
        state = "paper_near_end" if near_end else "online"
        await wait_until(lambda: agent.spoolers["kitchen"].state == state, what=f"the kitchen printer {state}")
        orders += 1
        async with api_client(agent) as api:
            assert (await post(api, make_order(orders, print_receipt=False)))[0] == 201
        await kitchen.wait_for_printed(orders, timeout=15)  # near end is no stop
        clock.advance(seconds)
        await status_reads(kitchen, 5)  # the rules and the checks go round at the moved time

    await phase(True, 31)  # group_wait_s (30 s) for a warning
    await sink.wait_for(1, timeout=15)
    for _ in range(3):
        await phase(False, 130)  # longer than group_interval_s (2 min): a false all-clear was due
        await phase(True, 40)
    await phase(False, 0)  # a new roll
    told = len(sink.messages)
    clock.advance(601)  # docs/alerts.md: near end clear for 10 minutes
    await sink.wait_for(told + 1, timeout=15)
    said = kinds(sink)
    assert said == ["STÖRUNG: Drucker kitchen: Papier fast leer", "BEHOBEN: Drucker kitchen: Papier fast leer"], said
    each_once = [("printed", 0, 0)] * orders
    await eventually(lambda: job_rows(agent), lambda rows: rows == each_once, what="each printed once, no COPY")
    assert len(kitchen.printed) == orders


async def test_a_roll_that_ran_out_after_its_near_end_alarm_is_told_over_as_soon_as_a_new_one_is_in(
    alert_settings: Callable[..., Settings], make_agent: MakeAgent, printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """Near end, then paper out, then a new roll: that is a new roll for sure, and the near end's all-clear does not
    wait the 10 minutes that a flickering lever needs."""
    kitchen, clock = printers["kitchen"], SteppedClock()
    agent = await make_agent(polled_every(alert_settings(check_interval_s=0.2), 0.2, "kitchen"), clock=clock)
    kitchen.paper_near_end = True
    await wait_until(lambda: agent.spoolers["kitchen"].state == "paper_near_end", what="near end seen")
    clock.advance(31)
    await sink.wait_for(1, timeout=15)
    kitchen.paper_out = True
    await wait_until(lambda: agent.spoolers["kitchen"].state == "paper_out", what="paper out seen")
    clock.advance(31)
    await sink.wait_for(2, timeout=15)
    kitchen.paper_out = kitchen.paper_near_end = False
    await wait_until(lambda: agent.spoolers["kitchen"].state == "online", what="the new roll seen")
    clock.advance(121)  # group_interval_s
    await sink.wait_for(4, timeout=15)
    assert sorted(kinds(sink)[2:]) == [
        "BEHOBEN: Drucker kitchen: Papier fast leer",
        "BEHOBEN: Drucker kitchen: Papier leer",
    ], kinds(sink)


@pytest.mark.parametrize("at_the_start", ["paper_near_end", "online"], ids=["near-end", "lever-clear"])
async def test_a_restart_with_the_same_roll_near_its_end_mails_no_second_alarm(
    alert_settings: Callable[..., Settings],
    make_agent: MakeAgent,
    printers: dict[str, SimPrinter],
    sink: SmtpSink,
    at_the_start: str,
) -> None:
    """The near-end alarm is mailed, the agent restarts (systemd, a power cut) on the same data directory with the
    same roll in: its lever reads near end at the start, or clear for a moment (the wobbling core of a nearly used-up
    roll), then near end again. No second alarm, no all-clear in between; the all-clear comes once the roll is
    changed (near end clear 10 minutes)."""
    kitchen, clock = printers["kitchen"], SteppedClock()
    settings = polled_every(alert_settings(check_interval_s=0.2), 0.2, "kitchen")
    agent = await make_agent(settings, clock=clock)
    kitchen.paper_near_end = True
    await wait_until(lambda: agent.spoolers["kitchen"].state == "paper_near_end", what="near end seen")
    clock.advance(31)  # group_wait_s for a warning
    await sink.wait_for(1, timeout=15)
    await agent.stop()
    kitchen.paper_near_end = at_the_start == "paper_near_end"
    agent = await make_agent(settings, clock=clock)
    await wait_until(lambda: agent.spoolers["kitchen"].state == at_the_start, what=f"{at_the_start} at the start")
    clock.advance(130)  # longer than group_interval_s (2 min): an all-clear would be due
    await status_reads(kitchen, 5)  # the rules and the checks go round at the moved time
    kitchen.paper_near_end = True
    await wait_until(lambda: agent.spoolers["kitchen"].state == "paper_near_end", what="near end again")
    clock.advance(40)
    await status_reads(kitchen, 5)
    assert kinds(sink) == ["STÖRUNG: Drucker kitchen: Papier fast leer"], kinds(sink)
    kitchen.paper_near_end = False  # a new roll
    await wait_until(lambda: agent.spoolers["kitchen"].state == "online", what="the new roll seen")
    clock.advance(601)  # docs/alerts.md: near end clear for 10 minutes
    await sink.wait_for(2, timeout=15)
    said = kinds(sink)
    assert said == ["STÖRUNG: Drucker kitchen: Papier fast leer", "BEHOBEN: Drucker kitchen: Papier fast leer"], said
