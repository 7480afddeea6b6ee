"""A box after weeks of business: what the status page, the watchdog and the alert checks read does not grow with the
orders kept for retention (30 days by default; a busy shop keeps tens of thousands of printed tickets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from tests.helpers import agent_process, api_client, db_execute, db_rows, post, wait_until

HISTORY = 12_000  # orders, each with a printed ticket and receipt: ~12 days of a shop taking 1,000 a day
READS = 15  # of each page the status page's panel and `edge status` refresh from


async def _add_history(db: Path, orders: int) -> None:
    """``orders`` printed orders of the past weeks, copied from the one stored order (as the agent stored it)."""
    [(template,)] = await db_rows(db, "SELECT id FROM orders")
    await db_execute(
        db,
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?)"
        " INSERT INTO orders (id, number, content_hash, payload, channel, created_at, received_at, source,"
        " revision, status, meaning_hash)"
        " SELECT 'past_' || i, 'P-' || i, o.content_hash || i, replace(o.payload, o.id, 'past_' || i), o.channel,"
        " o.created_at, o.received_at - 86400 * 20 + i, o.source, 1, 'open', o.meaning_hash FROM k, orders o"
        " WHERE o.id = ?",
        orders,
        template,
    )
    await db_execute(
        db,
        "INSERT INTO print_jobs (order_id, kind, station, printer, state, created_at, printed_at, idempotency_key)"
        " SELECT o.id, j.kind, j.station, j.printer, 'printed', o.received_at, o.received_at + 5,"
        " o.id || ':' || j.kind || ':' || IFNULL(j.station, '') || ':1'"
        " FROM orders o, print_jobs j WHERE o.id LIKE 'past_%' AND j.order_id = ?",
        template,
    )


def _cpu_s(agent: AgentProcess) -> float:
    assert agent.proc is not None
    fields = Path(f"/proc/{agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (USER_HZ = 100 on Linux)


async def _reads_cpu(agent: AgentProcess) -> float:
    """The agent's CPU for READS refreshes of the status panel and the status JSON."""
    async with api_client(agent.port) as api:
        before = await asyncio.to_thread(_cpu_s, agent)
        for _ in range(READS):
            for path in ("/api/v1/status/panel", "/api/v1/status"):
                async with api.get(path) as response:
                    assert response.status == 200
                    await response.read()
        return await asyncio.to_thread(_cpu_s, agent) - before


async def test_the_status_page_costs_the_same_with_weeks_of_printed_orders_kept(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The same refreshes of the status page, on the same agent, before and after 12,000 printed orders are added
    to its database: the agent's CPU for them stays within twice (and 0.15 s) of what it was. Before, each refresh
    counted and scanned every print job ever kept: ~50 times the CPU with this history (~100 ms a refresh at 50,000
    orders on this machine, every 5 s while the page is open)."""
    agent = agent_process(tmp_path, printers)
    await agent.start()
    async with api_client(agent.port) as api:
        status, body = await post(api, make_order(1, prefix="today"))
        assert status == 201, body
    await wait_until(lambda: len(printers["kitchen"].printed) == 1 and len(printers["front"].printed) == 1)
    await _reads_cpu(agent)  # the page's first render (templates) is not what is compared
    fresh = await _reads_cpu(agent)
    await agent.terminate()
    await _add_history(tmp_path / "data" / "edge.db", HISTORY)
    await agent.start()
    await _reads_cpu(agent)
    busy = await _reads_cpu(agent)
    await agent.terminate()
    assert busy <= 2 * fresh + 0.15, f"{busy:.2f} s of CPU with the history, {fresh:.2f} s without"
