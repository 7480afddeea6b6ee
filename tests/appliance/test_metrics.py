"""/metrics in Prometheus text format, /ready checks, /health."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import AlertSent, CentralLinkChanged, RecoveryCompleted, ScanRecorded
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, db_execute, db_rows, eventually, samples, scrape


async def test_metrics_parse_and_count_what_happened(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """After one order printed on two printers, /metrics (parsed by prometheus_client's parser) counts it, its latency
    and the queue."""
    async with api.post("/api/v1/orders", json=example_order) as response:
        assert response.status == 201
    await printers["kitchen"].wait_for_printed(1)
    await printers["front"].wait_for_printed(1)
    agent.bus.publish(CentralLinkChanged(up=False))
    agent.bus.publish(RecoveryCompleted(run_id=1, counts={"stored": 3}, duration_s=2.5))
    agent.bus.publish(AlertSent(alert_type="printer_offline", key="kitchen", resolved=False, recipients=1))
    agent.bus.publish(ScanRecorded(scanner="counter", code="x", outcome="order_ready", order_id="o"))
    for _ in range(100):  # the printed mark is committed just after the last byte
        async with api_client(agent, token=None) as plain, plain.get("/metrics") as response:
            assert response.status == 200  # no token needed: Prometheus scrapes it
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            got = samples(await response.text())
        # Counters move on events, gauges are read from the database first: wait for both to show it.
        if all(
            got[("edge_print_job_outcomes_total", (("outcome", "printed"), ("printer", p)))] == 1 for p in printers
        ) and all(got[("edge_print_jobs", (("printer", p), ("state", "printed")))] == 1 for p in printers):
            break
        await asyncio.sleep(0.05)
    assert got[("edge_orders_received_total", (("source", "push"),))] == 1
    assert got[("edge_print_job_outcomes_total", (("outcome", "printed"), ("printer", "kitchen")))] == 1
    assert got[("edge_print_latency_seconds_count", (("printer", "kitchen"),))] == 1
    assert got[("edge_print_jobs", (("printer", "kitchen"), ("state", "printed")))] == 1
    assert got[("edge_queue_depth", (("printer", "kitchen"),))] == 0
    assert got[("edge_oldest_queued_job_age_seconds", ())] == 0
    assert got[("edge_printer_up", (("printer", "kitchen"),))] == 1
    assert got[("edge_printer_paper", (("paper", "out"), ("printer", "kitchen")))] == 0
    assert got[("edge_central_api_up", ())] == 0
    assert got[("edge_recovery_runs_total", (("outcome", "completed"),))] == 1
    assert got[("edge_recovery_duration_seconds_sum", ())] == 2.5
    assert got[("edge_alert_emails_total", (("alert_type", "printer_offline"), ("outcome", "sent")))] == 1
    assert got[("edge_scans_total", (("outcome", "order_ready"), ("scanner", "counter")))] == 1
    assert got[("edge_storage_writable", ())] == 1


async def test_every_job_in_the_database_is_in_the_jobs_gauge_also_those_no_configured_printer_has(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A ticket held because no printer serves its station (grill) and a printed one of a printer that has left the
    config count in edge_print_jobs, under printer "(none)" and the old name: the gauge's sums are the database's.
    Before stop 82 (the prom82 probe, F1) only configured printers' jobs were counted: "0 held" on a dashboard while
    the store held a ticket that will never print until someone sets up [stations]."""
    example_order["items"][0]["station"] = "grill"
    async with api.post("/api/v1/orders", json=example_order) as response:
        assert response.status == 201
    await printers["front"].wait_for_printed(1)
    await eventually(
        lambda: db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE printer = 'front' AND state = 'printed'"),
        lambda rows: rows == [(1,)],
    )
    await db_execute(agent, "UPDATE print_jobs SET printer = 'old-front' WHERE printer = 'front'")
    got = await scrape(agent)
    jobs = {labels: value for (name, labels), value in got.items() if name == "edge_print_jobs" and value}
    assert jobs[(("printer", "(none)"), ("state", "held"))] == 1
    assert jobs[(("printer", "old-front"), ("state", "printed"))] == 1
    [(stored,)] = await db_rows(agent, "SELECT COUNT(*) FROM print_jobs")
    assert sum(jobs.values()) == stored


def test_two_agents_keep_separate_metrics(make_settings: Callable[..., Settings]) -> None:
    """Each agent has its own registry: a second one in the same process neither clashes with the first nor shares its
    counts."""
    first, second = Agent(make_settings()), Agent(make_settings())
    first.metrics.orders.labels("push").inc()
    assert first.metrics.registry.get_sample_value("edge_orders_received_total", {"source": "push"}) == 1
    assert second.metrics.registry.get_sample_value("edge_orders_received_total", {"source": "push"}) == 0


async def test_paper_out_and_queue_show_in_metrics(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A printer out of paper reads as down with paper=out, and its waiting job counts in the queue depth and oldest
    age."""
    printers["kitchen"].paper_out = True
    example_order["print_receipt"] = False
    async with api.post("/api/v1/orders", json=example_order) as response:
        assert response.status == 201
    for _ in range(200):
        async with api.get("/metrics") as response:
            got = samples(await response.text())
        if got[("edge_printer_paper", (("paper", "out"), ("printer", "kitchen")))] == 1:
            break
        await asyncio.sleep(0.05)
    assert got[("edge_printer_up", (("printer", "kitchen"),))] == 0
    assert got[("edge_queue_depth", (("printer", "kitchen"),))] == 1
    assert got[("edge_oldest_queued_job_age_seconds", ())] >= 0


async def test_ready_reports_each_check(agent: Agent, api: aiohttp.ClientSession) -> None:
    """/ready answers 200 with database_writable, migrations_current and accepting all ok; /health answers 200."""
    async with api.get("/ready") as response:
        body = await response.json()
        assert response.status == 200
    assert body["ready"] is True
    assert set(body["checks"]) >= {"database_writable", "migrations_current", "accepting"}
    assert all(c["ok"] for c in body["checks"].values())
    async with api.get("/health") as response:
        assert response.status == 200


async def test_ready_goes_not_ready_when_the_database_is_read_only(agent: Agent, api: aiohttp.ClientSession) -> None:
    """With the database refusing writes (query_only on the writer), /ready answers 503 naming database_writable; it
    recovers when writes work."""
    assert agent.db is not None
    await agent.db._writer.execute("PRAGMA query_only = ON")
    async with api.get("/ready") as response:
        body = await response.json()
        assert response.status == 503
    assert body["checks"]["database_writable"]["ok"] is False
    assert "readonly" in body["checks"]["database_writable"]["detail"]
    await agent.db._writer.execute("PRAGMA query_only = OFF")
    async with api.get("/ready") as response:
        assert response.status == 200


async def test_ready_names_an_old_schema(agent: Agent, api: aiohttp.ClientSession) -> None:
    """A database behind the agent's migrations (user_version lowered) makes /ready say migrations_current is not ok."""
    assert agent.db is not None
    [(latest,)] = await db_rows(agent, "PRAGMA user_version")
    await db_execute(agent, f"PRAGMA user_version = {latest - 1}")
    async with api.get("/ready") as response:
        body = await response.json()
        assert response.status == 503
    assert body["checks"]["migrations_current"] == {
        "ok": False,
        "detail": f"schema {latest - 1}, agent expects {latest}",
    }


async def test_refused_api_requests_are_counted_by_reason(agent: Agent) -> None:
    """Requests the auth middleware refuses show in /metrics, by reason, so a fleet view sees probing or a wrong
    token."""
    async with api_client(agent, token=None) as plain:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer wrong"}):
            async with plain.get("/api/v1/printers", headers=headers) as response:
                assert response.status == 401
        async with plain.get("/metrics") as response:
            got = samples(await response.text())
    rejected = {labels: value for (name, labels), value in got.items() if name == "edge_api_requests_rejected_total"}
    assert sum(rejected.values()) == 3
    assert len(rejected) == 2  # missing and wrong token are told apart


async def test_the_oldest_job_age_on_metrics_follows_the_agents_clock(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """With a ticket waiting on a printer out of paper, ten minutes pass on the agent's clock: /metrics' oldest-job
    age says about 600 s. It reads the agent's clock, as the spool's stale hold and the status page do, so a graph
    and an alert never disagree about the same ticket."""
    clock = SteppedClock()
    printers["kitchen"].paper_out = True
    example_order["print_receipt"] = False
    agent = await make_agent(clock=clock)
    async with api_client(agent) as api:
        async with api.post("/api/v1/orders", json=example_order) as response:
            assert response.status == 201
        clock.advance(600)
        async with api.get("/metrics") as response:
            got = samples(await response.text())
        assert 590 <= got[("edge_oldest_queued_job_age_seconds", ())] <= 700, got


def test_the_operations_page_lists_every_metric_the_agent_exports() -> None:
    """docs/operations.md's table is where a technician looks up a metric: every one the agent exports has its row.
    Before stop 67 two were missing (`edge_order_totals_mismatched_total`, `edge_api_requests_rejected_total`: the docs
    probe, D10)."""
    repo = Path(__file__).parents[2]
    exported = set(re.findall(r'"(edge_[a-z_]+)"', (repo / "edge" / "metrics.py").read_text(encoding="utf-8")))
    documented = (repo / "docs" / "operations.md").read_text(encoding="utf-8")
    assert sorted(name for name in exported if f"`{name}" not in documented) == []
