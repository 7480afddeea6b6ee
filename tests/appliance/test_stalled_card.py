"""The data card stops finishing writes under the running agent: a worn SD card stalls for seconds during its own
housekeeping, a dying one for good, and neither fails the write (a read-only or full card does: see
test_read_only_card.py). The agent under scripts/slowfsync.c, whose fsyncs wait while a file exists."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.durable import NoteInPlace
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import agent_process, api_client, edge, fresh, in_english, mail_to, post, toml, wait_until

STALL_S = 1.0


def _mailing(sink: SmtpSink, **alerts: float) -> str:
    sections = mail_to(sink)
    # An all-clear comes group_interval_s after its alarm (2 min by default), as for every alert.
    sections["alerts"] |= {"storage_stall_s": STALL_S, "group_interval_s": 0.5} | alerts
    return "\n" + toml(sections)


def _storage_mails(sink: SmtpSink) -> list[Any]:
    return [m for m in sink.messages if "Storage" in str(m["Subject"])]


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
    stall = tmp_path / "stall"
    env = {"LD_PRELOAD": str(fsync_counter_shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_STALL_FILE": str(stall)}
    agent = agent_process(tmp_path, printers, env=env, extra=_mailing(sink), log_level="info")
    await asyncio.to_thread(in_english, agent.config)
    kitchen = printers["kitchen"]
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            stall.touch()
            order = fresh(make_order(1, print_receipt=False))
            storing = asyncio.create_task(post(api, order))
            ready: dict[str, Any] = {}

            async def not_ready() -> bool:
                started = time.monotonic()
                async with api.get("/ready") as response:
                    ready.update(await response.json())
                    assert time.monotonic() - started < 1.0, "/ready waited for the card"
                    return response.status == 503

            async def ready_again() -> bool:
                async with api.get("/ready") as response:
                    return response.status == 200

            await wait_until(not_ready, 10, "/ready to say 503")
            assert "has not finished a write" in ready["checks"]["database_writable"]["detail"], ready
            await wait_until(lambda: _storage_mails(sink), 10, "the storage mail")
            checked = await edge("health", "--alert", "--config", str(agent.config))
            assert checked.returncode == 1 and "has not finished a write" in checked.stdout + checked.stderr, checked
            assert not storing.done() and kitchen.printed == []
            # An order sent while the stall is known is refused at once (503: the sender retries), not held with the
            # first: senders retrying into a hung card would pile their connections up to the cap.
            second = fresh(make_order(2, print_receipt=False))
            status, body = await asyncio.wait_for(post(api, second), 2)
            assert status == 503 and "retry" in str(body), body

            stall.unlink()
            status, body = await asyncio.wait_for(storing, 10)
            assert status == 201, body
            await wait_until(ready_again, 10, "/ready to say 200 again")
            assert (await post(api, second))[0] == 201
            await kitchen.wait_for_printed(2, timeout=10)

            await wait_until(lambda: len(_storage_mails(sink)) >= 2, 10, "the all-clear")
            await asyncio.sleep(0.5)  # a second ticket would be out by now
    finally:
        stall.unlink(missing_ok=True)
        await agent.close()
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


async def test_a_card_that_stalls_again_and_again_costs_the_manager_its_alarm_and_all_clear_once_an_hour(
    tmp_path: Path, printers: dict[str, SimPrinter], sink: SmtpSink, fsync_counter_shim: Path
) -> None:
    """A worn card stalls for a while every few minutes (its own housekeeping). The storage alarm is critical, and
    critical alarms have the storm guard: after its alarm and all-clear, the card's next stalls within
    critical_storm_s go to the digest, and one still on when that window ends is one mail counting the stalls since
    (then its all-clear). Here the window is 10 s: stall 1 (alarm, all-clear), stall 2 within it (no mail), stall 3
    lasting past its end (one alarm, "1 more times", then its all-clear); every order prints once. Before: every stall
    was an ALERT mailed straight to the relay, and after the first none had an all-clear (the outbox's storm guard
    held those): 144 alarms a day from a card stalling every ten minutes, and a manager told the card was still
    failing when it was not."""
    storm_s = 10.0
    stall = tmp_path / "stall"
    env = {"LD_PRELOAD": str(fsync_counter_shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_STALL_FILE": str(stall)}
    agent = agent_process(tmp_path, printers, env=env, extra=_mailing(sink, critical_storm_s=storm_s), log_level="info")
    await asyncio.to_thread(in_english, agent.config)
    await agent.start()
    try:
        async with api_client(agent.port) as api:

            async def ready() -> bool:
                async with api.get("/ready") as response:
                    return response.status == 200

            async def not_ready() -> bool:
                return not await ready()

            async def stalled(n: int, *, until: Callable[[], Awaitable[object]]) -> None:
                """An order sent while the card stalls; the stall lasts until ``until`` holds; the order is taken."""
                stall.touch()
                storing = asyncio.create_task(post(api, fresh(make_order(n, print_receipt=False))))
                await wait_until(not_ready, 10, "the stall seen")
                await until()
                stall.unlink()
                status, body = await asyncio.wait_for(storing, 10)
                assert status == 201, body
                await wait_until(ready, 10, "/ready to say 200 again")

            async def mails(count: int) -> None:
                await wait_until(lambda: len(_storage_mails(sink)) >= count, 15, f"{count} storage mails")

            first_alarm = time.monotonic()
            await stalled(1, until=lambda: mails(1))
            await mails(2)
            await stalled(2, until=lambda: asyncio.sleep(1.0))  # a mail would be out within this
            assert len(_storage_mails(sink)) == 2
            assert time.monotonic() - first_alarm < storm_s - 1, "the second stall came after the window: too slow"
            await stalled(3, until=lambda: mails(3))
            assert time.monotonic() - first_alarm >= storm_s - 1, "the stall still on was mailed within the window"
            await mails(4)
            await printers["kitchen"].wait_for_printed(3, timeout=10)
            await asyncio.sleep(0.5)  # a second ticket would be out by now
    finally:
        stall.unlink(missing_ok=True)
        await agent.close()
    subjects = [str(m["Subject"]).split("] ", 1)[1] for m in _storage_mails(sink)]
    assert subjects == ["ALERT (critical): Storage problem: database", "RESOLVED: Storage problem: database"] * 2
    assert "1 more times since the last mail" in _storage_mails(sink)[2].get_body(("plain",)).get_content()
    assert len(printers["kitchen"].printed) == 3
