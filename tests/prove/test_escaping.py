"""Order text is customer input: on the status page and in alert e-mails a `<script>` stays text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import aiohttp

from edge.app import Agent
from edge.config import Settings
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client

NUMBER = "<script>x()</script>"
ESCAPED = "&lt;script&gt;x()&lt;/script&gt;"


def hostile_order(n: int) -> dict:
    order = make_order(n, prefix="xss")
    order["number"] = NUMBER
    order["customer"]["name"] = "<img src=x onerror=alert(1)>"
    order["items"][0]["note"] = "<script>steal()</script>"
    return order


async def test_status_panel_shows_order_text_as_text(
    agent: Agent, api: aiohttp.ClientSession, printers: dict[str, SimPrinter]
) -> None:
    """The technician's status panel lists the order with its number escaped, never as markup."""
    async with api.post("/api/v1/orders", json=hostile_order(1)) as response:
        assert response.status == 201
    await printers["kitchen"].wait_for_printed(1)
    async with api.get("/api/v1/status/panel") as response:
        assert response.status == 200
        html = await response.text()
    assert ESCAPED in html
    assert "<script" not in html and "<img" not in html


async def test_alert_mail_html_escapes_the_order_number(
    make_settings: Callable[..., Settings], make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """A job that goes dead mails the manager; the HTML part shows the hostile order number escaped."""
    sink = SmtpSink()
    await sink.start()
    settings = make_settings(
        smtp={"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        alerts={"to": ["manager@store.test"], "group_wait_s": 0, "critical_group_wait_s": 0, "disk_free_min_mb": 0},
        spool={"max_attempts": 1},
    )
    printers["kitchen"].drop_after = 10  # the ticket is cut short once: with one attempt allowed, it is dead
    agent = await make_agent(settings)
    try:
        async with api_client(agent) as api:
            async with api.post("/api/v1/orders", json=hostile_order(2)) as response:
                assert response.status == 201
        # The cut also reads as the printer going offline: that mail may come first; the dead job's follows.
        wanted = None
        while wanted is None:
            mails = await sink.wait_for(len(sink.messages) + 1, timeout=15)
            wanted = next((html for html in map(html_part, mails) if "x()" in html), None)
    finally:
        await agent.stop()
        await sink.stop()
    assert ESCAPED in wanted
    assert all("<script" not in html_part(mail) for mail in sink.messages)


def html_part(mail: EmailMessage) -> str:
    return next(part.get_content() for part in mail.walk() if part.get_content_type() == "text/html")
