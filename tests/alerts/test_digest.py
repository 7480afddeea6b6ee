"""The daily digest: never lost to a failed write, sent once on the October DST night and not skipped in March."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from edge.alerts.alerter import Alerter
from edge.alerts.mailer import Mailer
from edge.clock import RemoteClock
from edge.config import Settings
from edge.errors import StoreError
from edge.events import EventBus, PrinterStatusChanged
from edge.sim.smtp import SmtpSink
from edge.store.db import Database
from tests.alerts.conftest import FakeClock
from tests.helpers import db_execute

BERLIN = ZoneInfo("Europe/Berlin")


def cover(printer: str, is_open: bool) -> PrinterStatusChanged:
    return PrinterStatusChanged(printer=printer, old="online", new="cover_open" if is_open else "online")


async def run(alerter: Alerter) -> int:
    await alerter.step()
    return await alerter.deliver_due()


def digests(sink: SmtpSink) -> list[str]:
    return [str(m["Subject"]) for m in sink.messages if "TAGESÜBERSICHT" in str(m["Subject"])]


async def test_digest_survives_a_failed_insert(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock, sink: SmtpSink
) -> None:
    """If writing the digest mail fails, the digest is not marked as sent: it goes out at the next try, complete."""
    settings = alert_settings(digest=True, digest_at="08:00")
    clock.now = dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.datetime.now().astimezone().tzinfo).timestamp()
    alerter = make_alerter(settings)
    alerter.on_event(cover("front", True))
    clock.advance(60)
    await run(alerter)  # into the digest
    clock.advance(3600)
    await db_execute(  # the next insert of a digest mail fails, like a full disk
        settings.agent.db_path,
        "CREATE TRIGGER fail_digest BEFORE INSERT ON alert_mails WHEN NEW.kind = 'digest'"
        " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    )
    with contextlib.suppress(StoreError):
        await run(alerter)
    assert digests(sink) == []
    await db_execute(settings.agent.db_path, "DROP TRIGGER fail_digest")
    clock.advance(60)
    await run(alerter)
    assert len(digests(sink)) == 1
    assert "Drucker front: Deckel offen" in sink.messages[-1].get_body(("plain",)).get_content()


async def walk(alerter: Alerter, clock: FakeClock, sink: SmtpSink, until: float, every: float = 300.0) -> list[float]:
    """The rules running every 5 minutes, a new warning (cover open) every hour; returns when each digest went."""
    sent_at: list[float] = []
    n = 0
    while clock.now < until:
        if n % 12 == 0:
            alerter.on_event(cover(f"p{n}", True))
        clock.advance(every)
        await run(alerter)
        if len(digests(sink)) > len(sent_at):
            sent_at.append(clock.now)
        n += 1
    return sent_at


async def test_digest_once_on_the_october_night(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock, sink: SmtpSink
) -> None:
    """With digest_at 02:30 in Europe/Berlin, the night the clocks go back (02:30 comes twice) has one digest, at the
    first 02:30."""
    settings = alert_settings(digest=True, digest_at="02:30")
    settings = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, timezone="Europe/Berlin"))
    clock.now = dt.datetime(2026, 10, 24, 23, 0, tzinfo=dt.UTC).timestamp()  # 01:00 CEST on the 25th
    alerter = make_alerter(settings)
    [sent_at] = await walk(alerter, clock, sink, dt.datetime(2026, 10, 25, 4, 0, tzinfo=dt.UTC).timestamp())
    sent = dt.datetime.fromtimestamp(sent_at, BERLIN)
    assert (sent.hour, sent.utcoffset()) == (2, dt.timedelta(hours=2))  # 02:30-02:35 summer time, the first one


async def test_digest_not_skipped_in_march(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock, sink: SmtpSink
) -> None:
    """With digest_at 02:30 in Europe/Berlin, the night the clocks go forward (02:30 never comes) has its digest."""
    settings = alert_settings(digest=True, digest_at="02:30")
    settings = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, timezone="Europe/Berlin"))
    clock.now = dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC).timestamp()  # 00:00 CET on the 29th
    alerter = make_alerter(settings)
    [sent_at] = await walk(alerter, clock, sink, dt.datetime(2026, 3, 29, 5, 0, tzinfo=dt.UTC).timestamp())
    assert dt.datetime.fromtimestamp(sent_at, BERLIN).hour == 3  # 02:30 standard time is 03:30 summer time


async def test_digest_once_when_the_clock_steps_across_digest_at(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock, sink: SmtpSink
) -> None:
    """The digest follows the wall clock: a step forward across digest_at sends it once (not zero or twice), a step
    back across it afterwards does not send it again, and what was collected meanwhile goes in the next one."""
    settings = alert_settings(digest=True, digest_at="08:00")
    clock.now = dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.datetime.now().astimezone().tzinfo).timestamp()
    alerter = make_alerter(settings)
    alerter.on_event(cover("front", True))
    clock.advance(60)
    await run(alerter)
    clock.step(8 * 3600)  # 07:01 -> 15:01
    await run(alerter)
    clock.advance(60)
    await run(alerter)
    assert len(digests(sink)) == 1
    alerter.on_event(cover("bar", True))
    clock.advance(60)
    await run(alerter)
    clock.step(-8 * 3600)  # back to 07:03, before digest_at again
    for _ in range(3):
        clock.advance(1800)  # through 08:00 once more
        await run(alerter)
    assert len(digests(sink)) == 1
    clock.advance(24 * 3600)
    await run(alerter)
    assert len(digests(sink)) == 2
    assert "Drucker bar: Deckel offen" in sink.messages[-1].get_body(("plain",)).get_content()


async def test_the_digest_goes_at_its_hour_by_centrals_clock_while_the_boxs_is_known_to_be_off(
    alert_settings: Callable[..., Settings], db: Database, clock: FakeClock, sink: SmtpSink
) -> None:
    """The box's clock is two hours ahead (a hardware clock kept in local time, in summer), which central's answers
    show. digest_at 08:00: the digest goes at 08:00 by central's clock, as the opening hours are read, not at 08:00
    by the box's (06:00 in the store, before the manager's day and before the night's news is in). Before (stop 76's
    notes, the clock76 probe's D2 for the digest): the digest's hour was read on the box's clock alone."""
    settings = alert_settings(digest=True, digest_at="08:00")
    settings = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, timezone="Europe/Berlin"))
    clock.now = dt.datetime(2026, 6, 1, 7, 30, tzinfo=BERLIN).timestamp()  # the box's clock, two hours ahead
    central = RemoteClock("central", clock)
    central.heard(clock.now - 7200, 0.0)
    alerter = Alerter(
        settings=settings, db=db, bus=EventBus(), mailer=Mailer(settings.smtp), clock=clock, central=central
    )
    alerter.on_event(cover("front", True))
    sent_at: list[float] = []
    for _ in range(36):  # the rules every 5 minutes for three hours
        clock.advance(300)
        await run(alerter)
        if digests(sink) and not sent_at:
            sent_at.append(central.as_theirs(clock.now))
    [when] = sent_at
    store_hour = dt.datetime.fromtimestamp(when, BERLIN)
    assert (store_hour.hour, store_hour.minute // 5) == (8, 0), store_hour


async def test_a_digest_tells_a_warning_once_not_its_reminders_and_counts_only_repeats(
    alert_settings: Callable[..., Settings], make_alerter: Callable[..., Alerter], clock: FakeClock, sink: SmtpSink
) -> None:
    """A cover open since morning, reminded hourly, and another opened three times: the digest lists each once,
    the repeated one "(3×)". Before, each reminder was a line of its own, "ERINNERUNG: … (0×)" under the same
    "STÖRUNG … (1×)": 0 times for a condition still on, the same news again (the week79 probe, F2)."""
    settings = alert_settings(digest=True, digest_at="12:00", repeat_interval_s=3600)
    clock.now = dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.datetime.now().astimezone().tzinfo).timestamp()
    alerter = make_alerter(settings)
    alerter.on_event(cover("front", True))
    for _ in range(3):
        alerter.on_event(cover("bar", True))
        clock.advance(60)
        await run(alerter)
        alerter.on_event(cover("bar", False))
        clock.advance(600)
        await run(alerter)
    while not digests(sink):
        clock.advance(300)
        await run(alerter)
    body = sink.messages[-1].get_body(("plain",)).get_content()
    lines = [line for line in body.splitlines() if "Deckel offen" in line]
    assert "(0×)" not in body and not any("ERINNERUNG" in line for line in lines), body
    assert any("Drucker bar" in line and "(3×)" in line for line in lines), body
    assert [line for line in lines if "Drucker front" in line and "STÖRUNG" in line] != [], body
