"""`edge health`: the health timer's check of the running agent from outside, every minute."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from edge.api.client import not_the_agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.errors import EdgeError
from edge.mounts import read_only_advice
from edge.ops import last_failure

log = structlog.get_logger()

ApiCall = Callable[[Settings, str, str], Awaitable[tuple[int, Any]]]


async def health(
    settings: Settings,
    api_call: ApiCall,
    *,
    alert: bool,
    clock: Clock = SYSTEM_CLOCK,
    config_problem: str | None = None,
) -> tuple[bool, str]:
    """Asks /ready from outside the agent. With ``alert``, mails the manager when it turns bad (twice in a row) and
    when it recovers, by the alert rules (edge.alerts.agent_down); its state lives in a file between the timer's runs.
    ``config_problem``: what is wrong with the config file now, the likeliest reason an agent that is not there gives.
    """
    agent_tells = False  # not ready only for what the running agent alerts about itself (a check naming its alert)
    try:
        status, body = await api_call(settings, "GET", "/ready")
        healthy = status == 200 and body.get("ready") is True
        failing = failing_checks(body)
        reason = "ready" if healthy else "; ".join(f"{n}: {c.get('detail')}" for n, c in failing.items())
        if not reason:  # the agent's own refusal (it is stopping) names its reason; another program's JSON does not
            reason = str(body.get("reason") or not_the_agent("/ready", status, str(body)[:100]))
        agent_tells = not healthy and bool(failing) and all(c.get("alert") for c in failing.values())
    except EdgeError as err:
        from edge.store.db import card_full, full_card, read_only  # here: a ready agent's check never loads the store

        healthy, reason = False, str(err)
        said = await asyncio.to_thread(last_failure.read, settings.agent.data_dir)
        if config_problem is not None:  # an agent started with this config stops at once: that is why it is not there
            reason = f"its config is broken: {config_problem}"
        elif said is not None:  # what the agent said as its last start failed tells more than a closed port
            reason = f"its last start failed: {said}"
        elif await asyncio.to_thread(read_only, settings.agent.data_dir):  # where it could not even write that down
            reason = f"its data directory {settings.agent.data_dir}: {read_only_advice(settings.agent.data_dir)}"
        elif await asyncio.to_thread(card_full, settings.agent.data_dir):  # nor on a card too full for the note
            reason = f"its data directory {settings.agent.data_dir}: {full_card(settings.agent.data_dir)}"
    if alert:
        from edge.alerts.agent_down import AgentDownAlert

        # Its storage mail says what is wrong and what to do: "not running" would be a second mail, and a wrong one.
        if agent_tells:
            log.warning("agent_not_ready_and_mailing_itself", reason=reason)
        await AgentDownAlert(settings, clock=clock).observe(healthy or agent_tells, reason)
    return healthy, reason


def failing_checks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """/ready's failing checks, as the agent answers them; none in an answer without them (another program's JSON on
    api.port: `"checks": null` crashed the health timer before it mailed, the docs probe's rerun)."""
    checks = body.get("checks")
    if not isinstance(checks, dict):
        return {}
    return {name: c for name, c in checks.items() if isinstance(c, dict) and not c.get("ok")}
