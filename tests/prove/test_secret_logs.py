"""Secrets never reach the logs: a full run with known secrets configured, every log line captured and searched."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator

import pytest
import structlog

from edge.api.signing import sign
from edge.app import Agent
from edge.config import Settings
from edge.log import configure_logging
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client

API_TOKEN = "api-Tok3n-ZZ-visible-nowhere"
SMTP_PASSWORD = "smtp-Pa55-YY-visible-nowhere"
CENTRAL_TOKEN = "central-Tok3n-XX-visible-nowhere"
SIGNING_KEY = b"signing-key-WW-visible-nowhere!!"
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY).decode()


def forms(secret: str) -> set[str]:
    """The secret as written, and the base64 form SMTP AUTH LOGIN would put on the wire."""
    return {secret, base64.b64encode(secret.encode()).decode()}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything logged through structlog and the standard library (aiohttp, aiosmtplib…) at debug level."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved_config, saved_level = structlog.get_config(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved_level)
    structlog.configure(**saved_config)


async def test_full_run_logs_no_secret(
    make_settings: Callable[..., Settings],
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    log_output: io.StringIO,
) -> None:
    """Intake (good and bad credentials), printing, a printer-offline alert mail and a recovery run: no secret in any
    log line."""
    sink = SmtpSink(username="alerts@store.test", password=SMTP_PASSWORD)
    central = CentralSim("test-store", token=CENTRAL_TOKEN)
    await sink.start()
    await central.start()
    central.add_orders([make_order(n, prefix="central", print_receipt=False) for n in range(3)])
    settings = make_settings(
        agent={"log_level": "debug"},
        api={"token": API_TOKEN, "signing_secrets": [SIGNING_SECRET]},
        smtp={
            "host": "127.0.0.1",
            "port": sink.port,
            "security": "none",
            "username": "alerts@store.test",
            "password": SMTP_PASSWORD,
            "sender": "edge@store.test",
        },
        alerts={
            "to": ["manager@store.test"],
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "check_interval_s": 0.2,
            "retry_base_s": 0.1,
            "disk_free_min_mb": 0,
        },
        central={
            "url": central.url,
            "token": CENTRAL_TOKEN,
            "start_jitter_s": 0,
            "probe_max_s": 0.1,
            "rate_limit_rps": 100,
        },
    )
    configure_logging(fmt="json", level="debug", secrets=settings.secrets(), stream=log_output)
    assert {API_TOKEN, SMTP_PASSWORD, CENTRAL_TOKEN, SIGNING_SECRET} <= set(settings.secrets())
    agent = await make_agent(settings)
    try:
        async with api_client(agent, token=None) as session:
            body = json.dumps(make_order(1, prefix="push")).encode()
            headers = {
                "Authorization": f"Bearer {API_TOKEN}",
                "Content-Type": "application/json",
                "webhook-id": "m1",
                "webhook-timestamp": "1",
                "webhook-signature": sign(SIGNING_KEY, "m1", 1, body),
            }
            async with session.post("/api/v1/orders", data=body, headers=headers) as response:
                assert response.status == 401  # stale timestamp: rejected and logged
            async with session.post(
                "/api/v1/orders", data=body, headers={"Authorization": f"Bearer {API_TOKEN}x"}
            ) as response:
                assert response.status == 401  # a near-miss token is logged as rejected, never echoed
            async with session.post(
                "/api/v1/orders",
                data=body,
                headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
            ) as response:
                assert response.status == 201
            await printers["kitchen"].wait_for_printed(1)
            printers["kitchen"].set_offline(
                True
            )  # the next ticket finds the printer gone: an alert mail goes out over SMTP AUTH
            async with session.post(
                "/api/v1/orders", json=make_order(2, prefix="push"), headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as response:
                assert response.status == 201
        await sink.wait_for(1, timeout=20)
        await central.wait_for(lambda: bool(central.events_of("received")), timeout=20)
    finally:
        await agent.stop()
        await central.stop()
        await sink.stop()
    text = log_output.getvalue()
    assert '"event": "agent_ready"' in text and "api_request_rejected" in text  # the capture really saw the run
    for secret in (API_TOKEN, SMTP_PASSWORD, CENTRAL_TOKEN, SIGNING_SECRET, base64.b64encode(SIGNING_KEY).decode()):
        for form in forms(secret):
            assert form not in text, f"a secret ({secret[:6]}…) is in the log"
