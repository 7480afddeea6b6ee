"""The data card stops finishing writes under the running agent: a worn SD card stalls for seconds during its own
housekeeping, a dying one for good, and neither fails the write (a read-only or full card does: see
test_read_only_card.py). The agent under scripts/slowfsync.c, whose fsyncs wait while a file exists."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.durable import NoteInPlace
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.smtp import SmtpSink
from tests.helpers import agent_process, api_client, db_rows, edge, fresh, in_english, mail_to, post, toml, wait_until

STALL_S = 1.0


def _mailing(sink: SmtpSink, **alerts: float) -> str:
    sections = mail_to(sink)
    # An all-clear comes group_interval_s after its alarm (2 min by default), as for every alert.
    sections["alerts"] |= {"storage_stall_s": STALL_S, "group_interval_s": 0.5, "retry_base_s": 0.2, "retry_max_s": 0.4}
    sections["alerts"] |= alerts
    return "\n" + toml(sections)


def _storage_mails(sink: SmtpSink) -> list[Any]:
    return [m for m in sink.messages if "Storage" in str(m["Subject"])]


class FlakyCard:
    """The agent on a card that stalls when told to (scripts/slowfsync.c), each stall with an order waiting on it."""

    def __init__(self, agent: AgentProcess, stall: Path, api: aiohttp.ClientSession, sink: SmtpSink) -> None:
        self.agent, self.stall, self.api, self.sink = agent, stall, api, sink
        self.orders = 0
        self.mailed_at = 0.0  # when mails() last saw its count (monotonic)

    async def ready(self) -> bool:
        async with self.api.get("/ready") as response:
            return response.status == 200

    async def not_ready(self) -> bool:
        return not await self.ready()

    async def stalls(self, *, until: Callable[[], Awaitable[object]], again: bool = False) -> None:
        """An order sent while the card stalls; the stall lasts until ``until`` holds; the order is taken.
        ``again``: the card stalls again the moment that order is stored, before the agent writes more."""
        self.orders += 1
        self.stall.touch()
        storing = asyncio.create_task(post(self.api, fresh(make_order(self.orders, print_receipt=False))))
        await wait_until(self.not_ready, 10, "the stall seen")
        await until()
        self.stall.unlink()
        status, body = await asyncio.wait_for(storing, 10)
        assert status == 201, body
        if not again:
            await wait_until(self.ready, 10, "/ready to say 200 again")

    async def mails(self, count: int) -> None:
        await wait_until(lambda: len(_storage_mails(self.sink)) >= count, 15, f"{count} storage mails")
        self.mailed_at = time.monotonic()


async def _rows_at_least(db: Path, sql: str, count: int) -> bool:
    return (await db_rows(db, sql))[0][0] >= count


@contextlib.asynccontextmanager
async def flaky_card(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, shim: Path, **alerts: float
) -> AsyncIterator[FlakyCard]:
    """The agent (its alert settings: _mailing's, and ``alerts``) on a card that stalls while ``card.stall`` exists."""
    stall = tmp_path / "stall"
    env = {"LD_PRELOAD": str(shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_STALL_FILE": str(stall)}
    agent = agent_process(tmp_path, printers, env=env, extra=_mailing(sink, **alerts), log_level="info")
    await asyncio.to_thread(in_english, agent.config)
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            yield FlakyCard(agent, stall, api, sink)
    finally:
        stall.unlink(missing_ok=True)
        await agent.close()


async def test_a_card_that_stops_finishing_writes_is_told_at_once_and_its_order_prints_once_when_it_resumes(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """The card stops finishing writes while an order is being stored. The order is not answered (it is not durable)
    and nothing prints; after storage_stall_s /ready answers 503 at once naming the stall (not after the card: a
    monitor's request must not hang with the orders), the manager gets one storage mail saying the card stalls,
    `edge health` leaves the mail to the agent, and an order sent meanwhile is refused at once (503). When the card
    finishes the write, the first order is answered 201, /ready is 200 again, the second is taken when sent again,
    each prints once, and the all-clear follows; nothing is left to raise the alarm again. Before:
    /ready 200 throughout (its last good check was kept), no mail, nothing in the log: a box whose card hung took
    orders into a queue nobody heard of."""
    kitchen = printers["kitchen"]
    async with flaky_card(tmp_path, printers, sink, fsync_counter_shim) as card:
        api, agent = card.api, card.agent
        card.stall.touch()
        order = fresh(make_order(1, print_receipt=False))
        storing = asyncio.create_task(post(api, order))
        ready: dict[str, Any] = {}

        async def not_ready() -> bool:
            started = time.monotonic()
            async with api.get("/ready") as response:
                ready.update(await response.json())
                assert time.monotonic() - started < 1.0, "/ready waited for the card"
                return response.status == 503

        await wait_until(not_ready, 10, "/ready to say 503")
        assert "has not finished a write" in ready["checks"]["database_writable"]["detail"], ready
        await card.mails(1)
        checked = await edge("health", "--alert", "--config", str(agent.config))
        assert checked.returncode == 1 and "has not finished a write" in checked.stdout + checked.stderr, checked
        assert not storing.done() and kitchen.printed == []
        # An order sent while the stall is known is refused at once (503: the sender retries), not held with the
        # first: senders retrying into a hung card would pile their connections up to the cap.
        second = fresh(make_order(2, print_receipt=False))
        status, body = await asyncio.wait_for(post(api, second), 2)
        assert status == 503 and "retry" in str(body), body

        card.stall.unlink()
        status, body = await asyncio.wait_for(storing, 10)
        assert status == 201, body
        await wait_until(card.ready, 10, "/ready to say 200 again")
        assert (await post(api, second))[0] == 201
        await kitchen.wait_for_printed(2, timeout=10)

        await card.mails(2)  # the all-clear
        await asyncio.sleep(0.5)  # a second ticket would be out by now
    assert len(kitchen.printed) == 2
    mails = _storage_mails(sink)
    assert len(mails) == 2, [str(m["Subject"]) for m in sink.messages]
    text = mails[0].get_body(("plain",)).get_content()
    assert "has not finished a write" in text, text
    log = agent.log.read_text()
    assert log.count('"storage_problem"') == 1
    # The direct mail's note (for a restart on the same card) went with the stall: left behind, written after the
    # database recorded the mail (it waited for the card too), it would raise the alarm again (1 run in 3 before).
    assert await asyncio.to_thread(NoteInPlace(tmp_path / "data" / "storage-mailed.note").read) is None
    assert "storage_alert_mailed_before" not in log


def _subjects(sink: SmtpSink) -> list[str]:
    return [str(m["Subject"]).split("] ", 1)[1] for m in _storage_mails(sink)]


ALARM_AND_ALL_CLEAR = ["ALERT (critical): Storage problem: database", "RESOLVED: Storage problem: database"]


@pytest.mark.slow(seconds=16)  # the storm window runs out in real time: the agent is its own process
async def test_a_card_that_stalls_again_and_again_costs_the_manager_its_alarm_and_all_clear_once_an_hour(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """A worn card stalls for a while every few minutes (its own housekeeping). The storage alarm is critical, and
    critical alarms have the storm guard: after its alarm and all-clear, the card's next stalls within
    critical_storm_s go to the digest, and one still on when that window ends is one mail counting the stalls since
    (then its all-clear). Here the window is 10 s: stall 1 (alarm) and, at once after it, stall 2 (which holds back
    the record of stall 1's alarm with its occurrences: no second alarm), one all-clear; stall 3 within the window (no
    mail); stall 4 lasting past its end (one alarm, "1 more times", then its all-clear); every order prints once.
    Before: every stall was an ALERT mailed straight to the relay, and after the first none had an all-clear (the
    outbox's storm guard held those): 144 alarms a day from a card stalling every ten minutes, and a manager told the
    card was still failing when it was not; a stall right after another was a second alarm, sent after it was over."""
    storm_s = 10.0
    async with flaky_card(tmp_path, printers, sink, fsync_counter_shim, critical_storm_s=storm_s) as card:
        await card.stalls(until=lambda: card.mails(1), again=True)
        first_alarm = card.mailed_at
        await card.stalls(until=lambda: asyncio.sleep(0.5))  # a mail would be out within this
        await card.mails(2)
        await card.stalls(until=lambda: asyncio.sleep(1.0))
        assert len(_storage_mails(sink)) == 2
        assert time.monotonic() - first_alarm < storm_s - 1, "the third stall came after the window: too slow"
        # Stall 3 told to the digest before stall 4 holds every write: under a full run's load it was still in memory
        # once, and the window's mail counted no stall since (a CI run of stop 67).
        digested = "SELECT COUNT(*) FROM alert_log WHERE action = 'digest' AND detail = 'firing'"
        await wait_until(
            lambda: _rows_at_least(card.agent.config.parent / "data" / "edge.db", digested, 1), 5, "stall 3 digested"
        )
        await card.stalls(until=lambda: card.mails(3))
        assert card.mailed_at - first_alarm >= storm_s - 0.5, "the stall still on was mailed within the window"
        await card.mails(4)
        await printers["kitchen"].wait_for_printed(4, timeout=10)
        await asyncio.sleep(0.5)  # a second ticket would be out by now
    assert _subjects(sink) == ALARM_AND_ALL_CLEAR * 2
    assert "Once more since the last mail" in _storage_mails(sink)[2].get_body(("plain",)).get_content()
    assert len(printers["kitchen"].printed) == 4


@pytest.mark.slow(seconds=8)
async def test_a_stall_over_within_the_storm_window_is_not_mailed_when_the_window_ends(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """The guarded stall's mail waits for the window's end only while the card still stalls: one over by then is the
    digest's, not an alarm about a card that works (its wait would otherwise mail it then)."""
    storm_s = 4.0
    async with flaky_card(tmp_path, printers, sink, fsync_counter_shim, critical_storm_s=storm_s) as card:
        await card.stalls(until=lambda: card.mails(1))
        first_alarm = card.mailed_at
        await card.mails(2)
        await card.stalls(until=lambda: asyncio.sleep(0.2))
        assert time.monotonic() - first_alarm < storm_s - 0.5, "the second stall came after the window: too slow"
        await asyncio.sleep(max(0.0, first_alarm + storm_s + 1.0 - time.monotonic()))  # the window's end, and a second
    assert _subjects(sink) == ALARM_AND_ALL_CLEAR


async def test_a_stall_again_after_its_alarm_was_recorded_but_before_its_all_clear_is_no_second_alarm(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """The card stalls again once the first stall's alarm is recorded as told, while its all-clear still waits for
    group_interval_s: the manager's last news is that alarm, so the second stall is no new mail, and one all-clear
    follows the two. Before: the second stall was mailed as a second ALERT, then the all-clear (one run in ten of the
    storm test under load, seen in this suite)."""
    group_interval_s = 4.0
    async with flaky_card(tmp_path, printers, sink, fsync_counter_shim, group_interval_s=group_interval_s) as card:
        await card.stalls(until=lambda: card.mails(1))
        first_alarm = card.mailed_at

        async def recorded() -> bool:  # the alarm told in the database, the stall's end stored, its all-clear not yet
            rows = await db_rows(
                tmp_path / "data" / "edge.db",
                "SELECT 1 FROM alert_groups WHERE key = 'storage_problem:database' AND state = 'resolved'"
                " AND notified = 'firing' AND mailed = 'firing' AND fires_since_mail = 0",
            )
            return bool(rows)

        await wait_until(recorded, 5, "the alarm recorded as told")
        await card.stalls(until=lambda: asyncio.sleep(1.5))  # a second alarm would be out within this
        assert time.monotonic() - first_alarm < group_interval_s, "too slow: the all-clear was due before the stall"
        assert len(_storage_mails(sink)) == 1, _subjects(sink)
        await card.mails(2)
        await asyncio.sleep(0.5)  # a third mail would be out by now
    assert _subjects(sink) == ALARM_AND_ALL_CLEAR


async def test_a_stalls_alarm_the_relay_could_not_take_is_tried_again_while_the_card_still_stalls(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """The relay is down (restarting, a network blip) when the stall is found: the alarm is tried again, as the
    outbox tries its mails, while the card stalls; a card that stalls for good must not leave the manager untold
    because one attempt failed. Before: one attempt, and nothing more while the card stalled (the outbox, which
    would retry, waits behind the card)."""
    async with flaky_card(tmp_path, printers, sink, fsync_counter_shim) as card:
        await sink.stop()

        async def relay_back_then_the_alarm() -> None:
            await asyncio.sleep(1.0)  # the first attempt fails meanwhile
            await sink.start()
            await card.mails(1)

        await card.stalls(until=relay_back_then_the_alarm)
        await card.mails(2)
    assert _subjects(sink) == ALARM_AND_ALL_CLEAR
