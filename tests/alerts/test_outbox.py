"""The mail outbox against a real SMTP server: slow relays, refusals per mail and per recipient, retry and discard."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.config import Settings
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import db_rows, wait_until

MakeAgent = Callable[..., Awaitable[Agent]]


async def printer_down_with_a_ticket(agent: Agent, printers: dict[str, SimPrinter], n: int = 1) -> None:
    """The kitchen printer unplugged while an order waits for it: a critical printer_offline alert."""
    printers["kitchen"].set_offline(True)
    assert agent.deps is not None
    await agent.deps.intake.accept(make_order(n, prefix="outbox", print_receipt=False))


async def test_slow_final_reply_is_waited_for_not_resent(
    make_agent: MakeAgent, alert_settings: Callable[..., Settings], printers: dict[str, SimPrinter], sink: SmtpSink
) -> None:
    """A relay that answers the message body after 1 s while commands time out after 0.5 s gets the alert once: the
    final reply has its own, longer timeout (RFC 5321 4.5.3.2.6 allows 10 minutes), so nothing is sent again."""
    sink.data_delay_s = 1.0
    settings = alert_settings(
        smtp={"timeout_s": 0.5}, critical_group_wait_s=0, retry_base_s=0.2, retry_max_s=0.4, check_interval_s=0.2
    )
    agent = await make_agent(settings)
    await printer_down_with_a_ticket(agent, printers)
    db = settings.agent.db_path
    await wait_until(
        lambda: db_rows(db, "SELECT COUNT(*) FROM alert_mails WHERE sent_at IS NOT NULL")[0][0] >= 1, 8, "sent"
    )
    await asyncio.sleep(1.5)  # room for a wrong second copy
    assert len(sink.messages) == 1
    assert db_rows(db, "SELECT attempts, last_error FROM alert_mails") == [(1, None)]
