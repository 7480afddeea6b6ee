#!/usr/bin/env python3
"""Benchmark: scan → order state stored, in ms, through a real pty and pyserial, against a bare fsync'd commit."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.app import Agent
from edge.config import parse_settings
from edge.events import ScanRecorded
from edge.log import configure_logging
from edge.sim.orders import make_order
from edge.sim.scanner import SimScanner


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def baseline_ms(path: Path, n: int) -> list[float]:
    """One INSERT + COMMIT per sample with the agent's durability pragmas: the floor any stored scan pays."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    samples = []
    for i in range(n):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t(v) VALUES (?)", (f"scan {i}",))
        conn.execute("COMMIT")
        samples.append((time.perf_counter() - started) * 1000)
    conn.close()
    return samples


async def scan_ms(work: Path, n: int) -> list[float]:
    """Write each ticket code into the scanner's pty; stop the clock when the agent publishes the committed outcome."""
    sim = SimScanner(work / "tty-kitchen")
    sim.plug()
    settings = parse_settings(
        {
            "agent": {"store_id": "bench", "data_dir": str(work / "data")},
            "api": {"port": 0, "token": "bench-token"},
            "printers": {"kitchen": {"type": "file"}},
            "stations": {"kitchen": "kitchen"},
            "scanners": {"kitchen": {"port": str(sim.path), "station": "kitchen"}},
        }
    )
    agent = Agent(settings)
    recorded: asyncio.Queue[ScanRecorded] = asyncio.Queue()
    agent.bus.subscribe(recorded.put_nowait, ScanRecorded)
    await agent.start()
    try:
        assert agent.deps is not None
        while not agent.scanners["kitchen"].connected:  # noqa: ASYNC110 (connects within ms; a poll is plenty)
            await asyncio.sleep(0.01)
        orders = [make_order(i, print_receipt=False) for i in range(n)]
        for order in orders:
            await agent.deps.intake.accept(order)
        # Tickets are scanned minutes after they print: let the spool finish so rendering does not share the CPU.
        while (await agent.deps.jobs.counts()).get(("kitchen", "printed"), 0) < n:  # noqa: ASYNC110 (a count)
            await asyncio.sleep(0.05)
        samples = []
        for order in orders:
            started = time.perf_counter()
            sim.scan(f"edge:v1:{order['id']}:kitchen")
            event = await asyncio.wait_for(recorded.get(), 10)
            samples.append((time.perf_counter() - started) * 1000)
            assert event.outcome == "order_ready", event
        ready = sqlite3.connect(settings.agent.db_path).execute("SELECT COUNT(*) FROM order_pickup").fetchone()[0]
        assert ready == n, f"{ready} of {n} orders stored as ready"
        return samples
    finally:
        await agent.stop()
        sim.unplug()


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 50), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "max_ms": round(max(samples), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=200)
    args = parser.parse_args()
    configure_logging(level="error")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = summary(baseline_ms(work / "baseline.db", args.scans))
        scan = summary(asyncio.run(scan_ms(work, args.scans)))
    result = {"scan_to_stored": scan, "baseline_commit": base, "ratio_p50": round(scan["p50_ms"] / base["p50_ms"], 2)}
    print(
        f"scan → order state stored: p50 {scan['p50_ms']} ms, p99 {scan['p99_ms']} ms, max {scan['max_ms']} ms "
        f"({scan['n']} scans)"
    )
    print(
        f"baseline fsync'd commit:   p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms  →  ratio p50 "
        f"{result['ratio_p50']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
