"""A backlog on a slow shop line: central's pages are ~1.1 KB an order, and the agent allows connect_timeout_s plus
read_timeout_s for a whole answer. A page of 1000 on a 512 kbit/s line takes ~17 s against the 13 s allowed: asked
again at the same size it never arrives, and the missed orders never print."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import structlog

from edge.config import Settings
from edge.events import JobPrinted, RecoveryCompleted, RecoveryFailed, RecoveryStarted
from edge.sim.central import CentralSim
from tests.helpers import db_rows, wait_until
from tests.sync.conftest import Agents

MISSED = 400
# The line scaled to the test's timeouts (0.25 s + 0.75 s for a whole answer): 256 KB/s, so the first page of the
# 400 missed orders (~450 KB) needs 1.7 s, while a page of 100 arrives in 0.4 s.
LINE = 256_000
TIMEOUTS = {"connect_timeout_s": 0.25, "read_timeout_s": 0.75}


@pytest.mark.parametrize("page_size", [1000, 5], ids=["default-1000", "configured-5"])
async def test_a_backlog_on_a_line_too_slow_for_a_whole_page_arrives_in_smaller_pages(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, page_size: int
) -> None:
    """400 missed orders over a line on which a page of 1000 cannot arrive in time: the run completes with every
    order stored and printed, having asked for smaller pages (and kept asking for them) rather than for the same
    page until its tries ran out; the page size it ended with is logged. A page size configured below the agent's
    own floor is used as it is."""
    central.create_orders(MISSED, prefix="s")
    central.line_bytes_per_s = LINE
    with structlog.testing.capture_logs() as logs:
        agent, events = await agents.start(sync_settings(page_size=page_size, **TIMEOUTS))
        await wait_until(lambda: events.of(RecoveryCompleted) or events.of(RecoveryFailed), 40, "the run's end")
    assert not events.of(RecoveryFailed), events.of(RecoveryFailed)
    [completed] = events.of(RecoveryCompleted)
    assert completed.counts["stored"] == MISSED
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(MISSED, MISSED)]
    jobs = await db_rows(db, "SELECT COUNT(*) FROM print_jobs")
    await events.wait(JobPrinted, count=jobs[0][0], timeout=30)
    [validated] = [e for e in logs if e["event"] == "recovery_validated"]
    smaller = [e["page_size"] for e in logs if e["event"] == "recovery_page_smaller"]
    if page_size == 1000:
        assert 10 <= validated["page_size"] <= 250 and smaller == sorted(smaller, reverse=True)
        assert validated["page_size"] == smaller[-1]  # kept for the pages after the first that arrived
    else:
        assert validated["page_size"] == 5 and not smaller


async def test_a_run_stopped_on_a_slow_line_resumes_and_completes(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The agent is stopped while its run lists over the slow line (a restart, a power cut): the next start resumes
    the run, which again finds a page size that fits and completes with every order stored once."""
    central.create_orders(MISSED, prefix="r")
    central.line_bytes_per_s = LINE
    settings = sync_settings(page_size=1000, **TIMEOUTS)
    agent, events = await agents.start(settings)
    [started] = await events.wait(RecoveryStarted)
    db = agent.settings.agent.db_path
    # Stopped once a second list answer is on the line (the first, of 1000, was cut off by the agent's timeout).
    await wait_until(lambda: sum(p.endswith("/orders") for _, _, p, _ in central.requests) >= 2, 10, "two answers")
    await agents.stop(agent)
    assert await db_rows(db, "SELECT id, state FROM recovery_runs") == [(started.run_id, "validation")]

    _, events = await agents.start(settings)
    await wait_until(lambda: events.of(RecoveryCompleted) or events.of(RecoveryFailed), 40, "the resumed run's end")
    assert not events.of(RecoveryFailed), events.of(RecoveryFailed)
    [completed] = events.of(RecoveryCompleted)
    assert completed.run_id == started.run_id and completed.counts["stored"] == MISSED
    assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(MISSED, MISSED)]
