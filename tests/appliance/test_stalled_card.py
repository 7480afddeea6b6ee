"""The data card stops finishing writes under the running agent: a worn SD card stalls for seconds during its own
housekeeping, a dying one for good, and neither fails the write (a read-only or full card does: see
test_read_only_card.py). The agent under scripts/slowfsync.c, whose fsyncs wait while a file exists."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from edge.durable import NoteInPlace
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import agent_process, api_client, edge, fresh, in_english, mail_to, post, toml, wait_until

STALL_S = 1.0


def _mailing(sink: SmtpSink) -> str:
    sections = mail_to(sink)
    sections["alerts"]["storage_stall_s"] = STALL_S
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
