"""A configured scanner that is gone (cable pulled, port missing since the start) is told: one mail to the manager after
alerts.scanner_down_min, its all-clear when it is back, the status page and the metrics. The scanner beeps on every
read by itself, so without this the cooks scan on, no order is marked ready, and nobody knows all evening."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.ops.technician import render_status
from edge.sim.scanner import SimScanner
from edge.sim.smtp import SmtpSink
from edge.store.alerts import AlertStore, Signal
from tests.helpers import WAIT_S, Seen, api_client, db_rows, eventually, mail_to, scanner_config

DOWN_S = 3 * 60  # alerts.scanner_down_min's default


async def _group_state(agent: Agent, state: str) -> None:
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM alert_groups WHERE key = 'scanner_offline:bar'"),
        lambda rows: rows == [(state,)],
        what=f"the bar scanner's alert group {state}",
    )


def _text(mail: EmailMessage) -> str:
    return str(mail["Subject"]) + "\n" + mail.get_body(("plain",)).get_content()


async def test_a_scanner_gone_past_the_delay_is_mailed_once_and_its_return_too_a_replug_within_it_not_at_all(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], sink: SmtpSink
) -> None:
    """The kitchen scanner's cable is pulled and stays out past the delay: one mail naming the scanner, its station and
    port and what to do (the cable), then one all-clear when it is plugged back in. The bar's is pulled and put back
    within the delay: no mail, the group is dropped as cleared."""
    clock, seen = SteppedClock(), Seen()
    agent = await make_agent(clock=clock, listen=seen, scanners=scanner_config(sims), **mail_to(sink))
    for name in sims:
        await seen.connected(name)

    sims["kitchen"].unplug()
    await seen.connected("kitchen", False)
    clock.advance(100)
    sims["bar"].unplug()
    await seen.connected("bar", False)
    clock.advance(DOWN_S - 100 + 5)  # kitchen gone past the delay, bar 85 s
    [alarm] = await sink.wait_for(1, timeout=15)
    text = _text(alarm)
    assert "STÖRUNG" in text and "Scanner kitchen" in text, text
    assert str(sims["kitchen"].path) in text and "Station kitchen" in text, text
    assert "Kabel" in text and "bar" not in str(alarm["Subject"]), text

    sims["bar"].plug()
    await seen.connected("bar", True, times=2)
    clock.advance(DOWN_S + 20)
    await eventually(
        lambda: db_rows(agent, "SELECT action, detail FROM alert_log WHERE group_key = 'scanner_offline:bar'"),
        lambda rows: ("suppressed", "cleared") in rows,
        what="the bar scanner's short outage dropped as cleared",
    )

    sims["kitchen"].plug()
    await seen.connected("kitchen", True, times=2)
    mails = await sink.wait_for(2, timeout=15)
    assert "BEHOBEN" in str(mails[1]["Subject"]) and "Scanner kitchen" in str(mails[1]["Subject"])
    assert "weitere" not in _text(mails[1])
    assert len(sink.messages) == 2


async def test_a_scanner_dropping_out_twice_for_seconds_is_no_news(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], sink: SmtpSink
) -> None:
    """A loose plug: the pass scanner is gone for 20 s, back, gone for 20 s again half a minute later, back for good.
    Each time it was back well within the delay, so no mail, as for one such drop-out. Before (the mqtt77 probe, F1):
    the second drop-out made the two one flapping outage, mailed "STÖRUNG … seit über 3 Minuten nicht verbunden … ein
    weiteres Mal" while the scanner worked, and its all-clear after it."""
    clock, seen = SteppedClock(), Seen()
    agent = await make_agent(clock=clock, listen=seen, scanners=scanner_config(sims), **mail_to(sink))
    await seen.connected("bar")
    for times in (1, 2):
        sims["bar"].unplug()
        await seen.connected("bar", False, times=times)
        clock.advance(20)
        sims["bar"].plug()
        await seen.connected("bar", True, times=times + 1)
        clock.advance(30)
    clock.advance(DOWN_S + 130)  # past the first drop-out's delay and group_interval_s: whatever is owed would go
    await eventually(
        lambda: db_rows(
            agent, "SELECT state, notified, fires_since_mail FROM alert_groups WHERE type = 'scanner_offline'"
        ),
        lambda rows: rows == [("resolved", "resolved", 0)],
        what="both drop-outs closed without a mail",
    )
    assert sink.messages == []


async def test_a_scanner_gone_for_good_after_a_drop_out_is_mailed_from_its_own_start(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], sink: SmtpSink
) -> None:
    """The pass scanner drops out for 20 s; a minute later its cable is pulled for good. The alarm comes the delay
    after that pull, says since then, and is the first mail, not "once more". Before (the mqtt77 probe, F2): it came
    the delay after the drop-out, 80 s into the outage, "Seit" the drop-out (the scanner worked then), "ein weiteres
    Mal"."""
    clock, seen = SteppedClock(), Seen()
    agent = await make_agent(
        clock=clock, listen=seen, scanners=scanner_config(sims), agent={"timezone": "UTC"}, **mail_to(sink)
    )
    await seen.connected("bar")
    sims["bar"].unplug()
    await seen.connected("bar", False)
    clock.advance(20)
    sims["bar"].plug()
    await seen.connected("bar", True, times=2)
    await _group_state(agent, "resolved")
    clock.advance(60)
    sims["bar"].unplug()
    await seen.connected("bar", False, times=2)
    pulled = clock.wall()
    await _group_state(agent, "firing")
    clock.advance(DOWN_S - 30)  # past the drop-out's delay, not yet this outage's
    await eventually(
        lambda: db_rows(agent, "SELECT count(*) FROM alert_log WHERE group_key = 'scanner_offline:bar'"),
        lambda rows: rows[0][0] >= 1,
        what="the drop-out's group looked at after the delay",
    )
    clock.advance(35)
    [alarm] = await sink.wait_for(1, timeout=15)
    text = _text(alarm)
    assert "STÖRUNG" in text and "Scanner bar" in text and "weitere" not in text, text
    shown = re.search(r"Seit: (\S+ \S+)", text)
    assert shown is not None, text
    since = dt.datetime.strptime(shown[1], "%d.%m.%Y %H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    assert pulled - 5 <= since <= pulled + 1, (shown[1], text)


async def test_a_scanner_missing_since_the_start_is_mailed_after_the_delay(
    make_agent: Callable[..., Awaitable[Agent]], sink: SmtpSink, tmp_path: Path
) -> None:
    """A configured scanner whose port was never there in this run (never connected) is gone too: mailed after the
    delay like one unplugged."""
    clock, seen = SteppedClock(), Seen()
    missing = SimScanner(tmp_path / "tty-pass")
    await make_agent(
        clock=clock,
        listen=seen,
        scanners={"pass": {"port": str(missing.path), "reconnect_max_s": 0.3}},
        **mail_to(sink),
    )
    await seen.connected("pass", False)
    clock.advance(DOWN_S + 5)
    [alarm] = await sink.wait_for(1, timeout=15)
    assert "Scanner pass" in str(alarm["Subject"]) and str(missing.path) in _text(alarm)


async def test_restarts_while_a_scanner_is_gone_neither_restart_its_delay_nor_mail_it_again(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    sims: dict[str, SimScanner],
    sink: SmtpSink,
) -> None:
    """The kitchen scanner is pulled, the agent restarts 100 s later (the scanner still gone): its mail comes at the
    delay counted from the pull, not from the restart. Another restart after the mail sends no second alarm; the
    all-clear says no 'once more'."""
    clock = SteppedClock()
    settings = make_settings(scanners=scanner_config(sims), **mail_to(sink))

    async def start() -> tuple[Agent, Seen]:
        seen = Seen()
        agent = await make_agent(settings, clock=clock, listen=seen)
        await seen.connected("bar")
        return agent, seen

    first, seen = await start()
    await seen.connected("kitchen")
    sims["kitchen"].unplug()
    await seen.connected("kitchen", False)
    clock.advance(100)
    await first.stop()

    second, seen = await start()
    await seen.connected("kitchen", False)
    clock.advance(DOWN_S - 100 + 5)
    [alarm] = await sink.wait_for(1, timeout=15)
    assert "Scanner kitchen" in str(alarm["Subject"])
    await second.stop()

    third, seen = await start()
    await seen.connected("kitchen", False)
    clock.advance(130)  # past group_interval_s: the all-clear may go at once
    sims["kitchen"].plug()
    await seen.connected("kitchen", True)
    mails = await sink.wait_for(2, timeout=15)
    assert "BEHOBEN" in str(mails[1]["Subject"]) and "Scanner kitchen" in str(mails[1]["Subject"])
    assert "weitere" not in _text(mails[1]), _text(mails[1])
    assert len(sink.messages) == 2
    assert await db_rows(third, "SELECT fires_total FROM alert_groups WHERE key = 'scanner_offline:kitchen'") == [(1,)]


async def test_a_scanner_pulled_as_the_agent_stops_is_mailed_the_delay_after_the_pull_by_the_next_run(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    sims: dict[str, SimScanner],
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kitchen scanner is pulled and the agent stopped at once, while the alert rules still write the pull down (a
    slow card: the write takes half a second). The stop waits for that write: the next run mails the scanner gone the
    delay after the pull, not the delay after its own start. Before stop 82 the stop cut the write off, it rolled back
    and the pull was forgotten; what made stopping the scanners after the alerter (70a3a2c, for the scan80 probe's F1)
    fail the restart test above in 2 of 3 runs, as that stopped the alerter sooner after the pull."""
    clock = SteppedClock()
    settings = make_settings(scanners=scanner_config(sims), **mail_to(sink))
    writing = asyncio.Event()
    apply = AlertStore.apply

    async def slow_apply(self: AlertStore, signals: list[Signal]) -> list[tuple[Signal, bool]]:
        # The pull's write: not the start's "kitchen connected" (an all-clear), which under load came after the pull,
        # and the stop came before the pull was heard (clean-clone CI at 462ffdd)
        if any(s.key == "scanner_offline:kitchen" and s.firing for s in signals):
            writing.set()
            await asyncio.sleep(0.5)
        return await apply(self, signals)

    monkeypatch.setattr(AlertStore, "apply", slow_apply)
    seen = Seen()
    first = await make_agent(settings, clock=clock, listen=seen)
    await seen.connected("kitchen")
    sims["kitchen"].unplug()
    await asyncio.wait_for(writing.wait(), timeout=WAIT_S)
    await first.stop()
    kept = "SELECT state FROM alert_groups WHERE key = 'scanner_offline:kitchen'"
    assert await db_rows(first, kept) == [("firing",)]

    clock.advance(100)
    seen = Seen()
    await make_agent(settings, clock=clock, listen=seen)
    await seen.connected("kitchen", False)
    clock.advance(DOWN_S - 100 + 5)
    [alarm] = await sink.wait_for(1, timeout=15)
    assert "Scanner kitchen" in str(alarm["Subject"])


async def test_status_and_metrics_show_a_gone_scanner(
    make_agent: Callable[..., Awaitable[Agent]], sims: dict[str, SimScanner], tmp_path: Path
) -> None:
    """GET /api/v1/status (the status page's data) lists every configured scanner with its connection and why not;
    the page shows it; /metrics has edge_scanner_connected per scanner: 0 for one unplugged and for one whose port
    was missing since the start, 1 for one that reads."""
    seen = Seen()
    missing = SimScanner(tmp_path / "tty-pass")
    scanners = scanner_config(sims) | {"pass": {"port": str(missing.path), "reconnect_max_s": 0.3}}
    agent = await make_agent(listen=seen, scanners=scanners)
    await seen.connected("bar")
    await seen.connected("kitchen")
    await seen.connected("pass", False)
    sims["kitchen"].unplug()
    await seen.connected("kitchen", False)
    async with api_client(agent) as api:
        async with api.get("/api/v1/status") as response:
            status = await response.json()
        async with api.get("/api/v1/status/panel") as response:
            panel = await response.text()
        async with api.get("/metrics") as response:
            metrics = await response.text()
    by_name = {s["name"]: s for s in status.get("scanners", [])}
    assert by_name.keys() == {"kitchen", "bar", "counter", "pass"}, status.get("scanners")
    kitchen = by_name["kitchen"]
    assert (kitchen["connected"], kitchen["port"], kitchen["station"]) == (False, str(sims["kitchen"].path), "kitchen")
    assert kitchen["detail"] and by_name["pass"]["detail"]
    assert by_name["pass"]["connected"] is False and by_name["bar"]["connected"] is True
    assert 'data-scanner="kitchen"' in panel and "disconnected" in panel
    assert 'edge_scanner_connected{scanner="kitchen"} 0.0' in metrics
    assert 'edge_scanner_connected{scanner="pass"} 0.0' in metrics
    assert 'edge_scanner_connected{scanner="bar"} 1.0' in metrics
    # `edge status` renders the same answer: each scanner, and why one is gone.
    screen = render_status(status, colour=False)
    assert f"kitchen          DISCONNECTED    {sims['kitchen'].path}" in screen, screen
    assert "bar              connected" in screen, screen


async def test_a_gone_scanners_alarm_ends_when_the_config_no_longer_has_it(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    sims: dict[str, SimScanner],
    sink: SmtpSink,
) -> None:
    """The kitchen scanner was mailed gone, then taken out of the config (it went for good) and the agent restarted:
    its all-clear comes, no reminder every four hours about a scanner that is no longer set up."""
    clock, seen = SteppedClock(), Seen()
    first = await make_agent(clock=clock, listen=seen, scanners=scanner_config(sims), **mail_to(sink))
    await seen.connected("kitchen")
    sims["kitchen"].unplug()
    await seen.connected("kitchen", False)
    clock.advance(DOWN_S + 5)
    await sink.wait_for(1, timeout=15)
    await first.stop()
    clock.advance(130)  # past group_interval_s
    without = {name: body for name, body in scanner_config(sims).items() if name != "kitchen"}
    await make_agent(make_settings(scanners=without, **mail_to(sink)), clock=clock)
    mails = await sink.wait_for(2, timeout=15)
    assert "BEHOBEN" in str(mails[1]["Subject"]) and "Scanner kitchen" in str(mails[1]["Subject"])
