#!/usr/bin/env python3
"""Benchmark: measures the agent's figures against a baseline from the same run; prints a table and one JSON
document."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib

# Run from a checkout too, not only with the package installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.config import load_settings
from edge.log import configure_logging
from edge.ops.backup import backup_database
from edge.ops.measure import measure_startup
from edge.orders.model import MAX_ITEMS, parse_order
from edge.printing.decode import decode
from edge.printing.render import Renderer
from edge.sim.alert_latency import measure_fault_to_mail
from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Broker
from edge.sim.broker import available as mosquitto_available
from edge.sim.central import CentralSim
from edge.sim.mqtt_fleet import measure_mqtt_fleet
from edge.sim.orders import due_at, make_order
from edge.sim.ports import free_port
from edge.sim.powercut import build_shim
from edge.sim.printer import PaperSpeed, SimPrinter
from edge.sim.process import AgentProcess, write_config
from edge.sim.recovery_bench import OLD_DEFAULTS, measure_fleet
from edge.sim.smtp import SmtpSink
from edge.store.db import Database
from edge.store.history import add_printed_history

TOKEN = "bench-token-0123456789"

# Orders per client-count run, seconds per print-latency rate, baseline inserts, direct-print samples,
# missed orders for recovery, (stale, recent) missed orders for a stale backlog, seconds idle before reading RSS,
# alert samples, database size for the backup run and how long the old stepwise copy may try.
SIZES = {
    "full": {
        "intake": {1: 500, 8: 2000, 64: 4000},
        "print_s": 10.0,
        "baseline": 2000,
        "direct": 50,
        "recovery": 10_000,
        "stale_backlog": (4500, 300),
        "idle_s": 3.0,
        "alerts": 3,
        "storage": {1: 300, 8: 800},
        "flood_orders": 20,
        "fleet": {"agents": 1000, "old_defaults": True},
        "large": 3,
        "backup": {"megabytes": 200, "cap_s": 60.0},
        "fleet_mqtt": {"agents": 200, "orders": 10_000, "publish_rps": 100.0, "stations": 32, "footprint": True},
    },
    "quick": {
        "intake": {1: 150, 8: 600, 64: 1280},
        "print_s": 3.0,
        "baseline": 600,
        "direct": 20,
        "recovery": 2000,
        "stale_backlog": (1500, 300),
        "idle_s": 1.0,
        "alerts": 1,
        "storage": {1: 100, 8: 400},
        "flood_orders": 10,
        "fleet": {"agents": 300, "old_defaults": False},  # the old defaults' 30 s start delay alone breaks "quick"
        "large": 2,
        "backup": {"megabytes": 64, "cap_s": 20.0},
        "fleet_mqtt": {"agents": 200, "orders": 1000, "publish_rps": 50.0, "stations": 16, "footprint": True},
    },
    "tiny": {
        "intake": {1: 10, 8: 40, 64: 64},
        "print_s": 0.5,
        "baseline": 40,
        "direct": 5,
        "recovery": 100,
        "stale_backlog": (100, 20),
        "idle_s": 0.5,
        "alerts": 1,
        "storage": {1: 10, 8: 40},
        "flood_orders": 0,  # none: the flood takes ~8 s, too long for the CI smoke run
        "fleet": {"agents": 20, "old_defaults": False},
        "large": 1,
        "backup": {"megabytes": 8, "cap_s": 5.0},
        "fleet_mqtt": {"agents": 5, "orders": 10, "publish_rps": 50.0, "stations": 2, "footprint": False},
    },
}
# The fleet: missed orders per store, and what the central simulator answers per second before it sends 429.
FLEET_ORDERS = 20
FLEET_CAPACITY_RPS = 200.0
# Every [central] setting at its default (start delay, probe interval, page size): the figures are what a store gets.
CENTRAL = """
[central]
url = "{url}"
token = "{token}"
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def until(check: Callable[[], object], interval: float = 0.05) -> None:
    """Polls ``check`` until it is true: the agent runs as another process, so its database (or a dict another task
    fills) has no event to wait on. The caller bounds it with asyncio.timeout."""
    while not check():  # noqa: ASYNC110 (see above)
        await asyncio.sleep(interval)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def sqlite_baseline(path: Path, bodies: list[bytes], *, per_commit: int = 1) -> dict[str, float]:
    """Plain sqlite3: INSERT and COMMIT every ``per_commit`` orders in a loop, WAL and synchronous=FULL like the agent's
    store."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
    conn.execute("DELETE FROM orders")
    latencies = []
    started = time.perf_counter()
    for first in range(0, len(bodies), per_commit):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for n, body in enumerate(bodies[first : first + per_commit], start=first):
            conn.execute("INSERT INTO orders (id, payload) VALUES (?, ?)", (f"base_{n}", body.decode()))
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    conn.close()
    return {
        "orders_per_s": round(len(bodies) / wall, 1),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
    }


async def push_orders(port: int, bodies: list[bytes], clients: int) -> dict[str, float]:
    """``clients`` concurrent HTTP clients push every body once; each order counts when its 201 arrives."""
    latencies: list[float] = []
    todo = iter(bodies)

    async def client() -> None:
        connector = aiohttp.TCPConnector(limit=1)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            for body in todo:
                t0 = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", data=body) as response:
                    await response.read()
                    if response.status != 201:
                        raise RuntimeError(f"intake answered {response.status}")
                latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        "orders": len(bodies),
        "orders_per_s": round(len(bodies) / wall, 1),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
    }


async def orders_on_new_connections(port: int, count: int, prefix: str) -> list[float]:
    """Seconds from connecting to the 201, one order after the other, each on a connection of its own."""
    took = []
    for n in range(count):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        t0 = time.perf_counter()
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", json=make_order(n, prefix=prefix)) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(f"intake answered {r.status}")
        took.append(time.perf_counter() - t0)
        await asyncio.sleep(0.1)
    return took


def ticket_order_id(data: bytes) -> str | None:
    codes = decode(data).qr_codes
    return codes[0].split(":")[2] if codes else None


async def watch_printer(printer: SimPrinter, landed: dict[str, float]) -> None:
    """Notes when each ticket's last byte reached the printer, until cancelled."""
    seen = len(printer.printed)
    while True:
        try:
            printed = await printer.wait_for_printed(seen + 1, timeout=3600)
        except TimeoutError:
            continue
        now = time.perf_counter()
        for data in printed[seen:]:
            if (order_id := ticket_order_id(data)) is not None:
                landed.setdefault(order_id, now)
        seen = len(printed)


async def print_latency_at(
    port: int, kitchen: SimPrinter, rate: float, seconds: float, prefix: str
) -> dict[str, float]:
    """Orders sent at a steady ``rate``; latency runs from each 201 arriving to its ticket's last byte at the
    printer."""
    count = max(2, int(rate * seconds))
    acked: dict[str, float] = {}
    landed: dict[str, float] = {}
    watcher = asyncio.create_task(watch_printer(kitchen, landed))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def send(order: dict[str, Any]) -> None:
            async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", data=json.dumps(order)) as response:
                await response.read()
                if response.status != 201:
                    raise RuntimeError(f"intake answered {response.status}")
            acked[order["id"]] = time.perf_counter()

        start = time.perf_counter()
        sends = []
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            sends.append(asyncio.create_task(send(make_order(n, prefix=prefix, print_receipt=False))))
        await asyncio.gather(*sends)
    async with asyncio.timeout(60 + count / 10):
        await until(lambda: set(acked) <= set(landed))
    watcher.cancel()
    latencies = [landed[o] - acked[o] for o in acked]
    return {"orders": count, "p50_ms": ms(percentile(latencies, 0.5)), "p99_ms": ms(percentile(latencies, 0.99))}


async def direct_print(printer: SimPrinter, ticket: bytes, samples: int) -> dict[str, float]:
    """Baseline: the same ticket bytes written straight to the simulated printer over TCP, no agent in between."""
    latencies = []
    for _ in range(samples):
        before = len(printer.printed)
        t0 = time.perf_counter()
        _, writer = await asyncio.open_connection(printer.host, printer.port)
        writer.write(ticket)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        await printer.wait_for_printed(before + 1)
        latencies.append(time.perf_counter() - t0)
    return {"p50_ms": ms(percentile(latencies, 0.5)), "p99_ms": ms(percentile(latencies, 0.99))}


async def smtp_send_ms(samples: int) -> float:
    """Baseline for alert latency: median time for aiosmtplib to hand one small mail to the same kind of sink."""
    sink = SmtpSink()
    await sink.start()
    times = []
    try:
        for n in range(samples):
            t0 = time.perf_counter()
            await aiosmtplib.send(
                f"Subject: bench {n}\r\n\r\nx".encode(),
                sender="a@bench.test",
                recipients=["b@bench.test"],
                hostname="127.0.0.1",
                port=sink.port,
            )
            await sink.wait_for(n + 1)
            times.append(time.perf_counter() - t0)
    finally:
        await sink.stop()
    return ms(percentile(times, 0.5))


def children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def command_cpu(args: list[str], runs: int = 3) -> float:
    """The median CPU seconds of `edge ARGS` (the health timer's check runs every minute on the box)."""
    spent = []
    for _ in range(runs):
        before = children_cpu_s()
        subprocess.run([sys.executable, "-m", "edge", *args], check=True, capture_output=True, timeout=60)
        spent.append(children_cpu_s() - before)
    return statistics.median(spent)


def bare_python() -> dict[str, float]:
    """Baseline footprint: a bare interpreter's start-up, CPU and resident memory."""
    t0, cpu = time.perf_counter(), children_cpu_s()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    startup, cpu = time.perf_counter() - t0, children_cpu_s() - cpu
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
    finally:
        proc.communicate(b"")
    return {"startup_s": round(startup, 3), "rss_mb": round(rss, 1), "cpu_s": cpu}


def build_slowfsync(cache: Path) -> Path | None:
    """scripts/slowfsync.c (fsync/fdatasync counter and delay) compiled; None when there is no C compiler."""
    try:
        return build_shim(cache, "slowfsync.c")
    except RuntimeError:
        return None


class SyncCounter:
    """The shim's shared counter file: how many fsync/fdatasync calls the agent made so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(bytes(8))

    def read(self) -> int:
        return int.from_bytes(self.path.read_bytes()[:8], "little")


def written_bytes(pid: int) -> int:
    """Bytes this process caused to be sent to storage (``write_bytes`` in /proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for pid {pid}")


_BASELINE_SCRIPT = """
import sqlite3, sys
path, count, body = sys.argv[1], int(sys.argv[2]), sys.stdin.read()
def written():
    return int(next(l.split()[1] for l in open("/proc/self/io") if l.startswith("write_bytes:")))
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA synchronous = FULL")
conn.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
before = written()
for n in range(count):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO orders (id, payload) VALUES (?, ?)", (str(n), body))
    conn.execute("COMMIT")
conn.close()
print(written() - before)
"""


def storage_baseline(shim: Path, root: Path, body: bytes, count: int) -> dict[str, float]:
    """Plain sqlite3 under the same shim: one INSERT + COMMIT per order (WAL, synchronous=FULL), nothing else."""
    counter = SyncCounter(root / "baseline-storage.count")
    env = {**os.environ, "LD_PRELOAD": str(shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_COUNT_FILE": str(counter.path)}
    done = subprocess.run(
        [sys.executable, "-c", _BASELINE_SCRIPT, str(root / "baseline-storage.db"), str(count)],
        input=body.decode(),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "baseline_fsyncs_per_order": round(counter.read() / count, 2),
        "baseline_kb_written_per_order": round(int(done.stdout) / count / 1024, 1),
    }


async def wait_all_printed(db_path: Path, timeout: float) -> float:  # noqa: ASYNC109 (a deadline for a measurement)
    """Polls a read-only connection until no print job is left unprinted; returns when (perf_counter)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        async with asyncio.timeout(timeout):
            await until(
                lambda: not db.execute("SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'").fetchone()[0], 0.01
            )
        return time.perf_counter()
    finally:
        db.close()


def largest_order(seq: int) -> dict[str, Any]:
    """The largest legal order: MAX_ITEMS items, each with a modifier and a note, a kitchen ticket and a receipt."""
    order = make_order(seq, prefix="large", print_receipt=True)
    pizza = order["items"][0]
    order["items"] = [
        pizza | {"sku": f"P-{n}", "name": f"Pizza Nummer {n} mit Käse, Basilikum und Öl"} for n in range(MAX_ITEMS)
    ]
    total = f"{MAX_ITEMS * 2 * 10.50:.2f}"
    order["totals"] = {"subtotal": total, "discount": "0.00", "total": total, "currency": "EUR", "tax": []}
    return order


def render_cpu_ms(order: dict[str, Any], kind: str) -> float:
    """CPU time of one render (best of 5), as the spool's thread spends it."""
    renderer, parsed = Renderer(), parse_order(order)
    render = (lambda: renderer.ticket(parsed, "kitchen")) if kind == "ticket" else (lambda: renderer.receipt(parsed))
    render()
    best = math.inf
    for _ in range(5):
        t0 = time.process_time()
        render()
        best = min(best, time.process_time() - t0)
    return ms(best)


async def small_acks(session: aiohttp.ClientSession, port: int, prefix: str, until: asyncio.Future[Any]) -> list[float]:
    """Small orders at 50/s until ``until`` is done: the seconds each took to be answered 201."""
    latencies: list[float] = []
    n = 0
    while not until.done():
        t0 = time.perf_counter()
        body = json.dumps(make_order(n, prefix=prefix, print_receipt=False))
        async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", data=body) as response:
            await response.read()
            if response.status != 201:
                raise RuntimeError(f"intake answered {response.status}")
        latencies.append(time.perf_counter() - t0)
        n += 1
        await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - t0)))
    return latencies


# The raw copies compare like with like (each ends with an fsync); `edge backup` as shipped adds a
# quick_check of the copy, the fsync of its folder and the pruning of old files.
BACKUP_WAYS = ("one_step", "vacuum_into", "edge_backup", "baseline_steps_256")


def vacuum_into(db_path: Path, target: Path) -> Path:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)  # VACUUM INTO does not sync its output; the shipped backup does, so this one must too
    os.close(fd)
    return target


def copy_in_steps(db_path: Path, target: Path, pages: int) -> Path:
    """SQLite's backup API ``pages`` at a time (-1: all in one step), then an fsync."""
    src, dst = sqlite3.connect(db_path), sqlite3.connect(target)
    try:
        src.backup(dst, pages=pages)
    finally:
        dst.close()
        src.close()
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return target


async def backup_under_load(port: int, copy: Any, *, prefix: str, cap_s: float) -> tuple[float, float]:
    """Runs ``copy`` while a client pushes an order every 50 ms: (seconds it took, capped at ``cap_s``; intake p99 ms).
    A copy still running at the cap is let finish once the orders stop, so the run ends. ``prefix`` keeps each way's
    order ids apart (ids from ``id(copy) % 10_000`` collided now and then: a resent id with other content, a 409)."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def busy() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for n in itertools.count():
                if stop.is_set():
                    return
                t0 = time.perf_counter()
                order = make_order(n, prefix=prefix)
                async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", json=order) as response:
                    if response.status != 201:
                        raise RuntimeError(f"intake answered {response.status}")
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)

    writer = asyncio.create_task(busy())
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    task = asyncio.ensure_future(copy())
    await asyncio.wait([task], timeout=cap_s)
    seconds = min(time.perf_counter() - started, cap_s)
    stop.set()
    await writer
    await task
    return round(seconds, 3), ms(percentile(latencies, 0.99))


class Bench:
    def __init__(self, root: Path, size: dict[str, Any]) -> None:
        self.root, self.size = root, size
        self.printers: dict[str, SimPrinter] = {}
        self.agents: list[AgentProcess] = []

    async def config(self, name: str, extra: str = "", *, speed: PaperSpeed | None = None) -> tuple[Path, int]:
        """Fresh simulated printers living in this process (printing at ``speed``, None: instantly), and a config (own
        data dir) for an agent that uses them."""
        self.printers = {"kitchen": SimPrinter("kitchen", speed=speed), "front": SimPrinter("front", speed=speed)}
        for printer in self.printers.values():
            await printer.start()
        port = free_port()
        path = write_config(
            self.root / f"{name}.toml",
            data_dir=self.root / name,
            api_port=port,
            token=TOKEN,
            printers={n: p.port for n, p in self.printers.items()},
            extra=extra,
        )
        return path, port

    async def start_agent(self, name: str, extra: str = "") -> AgentProcess:
        config, port = await self.config(name, extra)
        agent = AgentProcess(config, port, self.root / f"{name}.log")
        self.agents.append(agent)
        await agent.start()
        return agent

    async def stop_agent(self, agent: AgentProcess) -> None:
        await agent.close()
        for printer in self.printers.values():
            await printer.stop()

    async def footprint(self) -> dict[str, Any]:
        """Start-up to systemd READY=1 and idle RSS (edge.ops.measure), against a bare Python interpreter: a box's first
        start (fresh data dir) and a restart (what every later start is: caches in the data dir are there); then the
        first ticket after a start, order pushed to paper (lazy imports must not make the cook wait)."""
        config, _ = await self.config("footprint")
        seen = await asyncio.to_thread(measure_startup, config, idle_s=self.size["idle_s"])
        again = await asyncio.to_thread(measure_startup, config, idle_s=self.size["idle_s"])
        for printer in self.printers.values():
            await printer.stop()
        base = await asyncio.to_thread(bare_python)
        agent = await self.start_agent("first-ticket")
        first_ticket = await self.first_ticket(agent, 0)
        # A restart takes its start-up printing check from the cache: the printing stack loads after READY, in a thread
        # (edge/printing/check.py); an order pushed the moment it is ready must not wait much longer for that.
        await agent.terminate()
        await agent.start()
        first_ticket_restart = await self.first_ticket(agent, 1)
        health_cpu = await asyncio.to_thread(command_cpu, ["health", "--alert", "--config", str(agent.config)])
        await self.stop_agent(agent)
        return {
            "startup_to_ready_s": round(seen.ready_s, 3),
            "restart_to_ready_s": round(again.ready_s, 3),
            "idle_rss_mb": round(seen.idle_rss_kib / 1024, 1),
            "restart_idle_rss_mb": round(again.idle_rss_kib / 1024, 1),
            "first_ticket_after_start_ms": ms(first_ticket),
            "first_ticket_after_restart_ms": ms(first_ticket_restart),
            "stop_s": round(seen.stop_s, 3),
            "baseline_startup_s": base["startup_s"],
            "baseline_rss_mb": base["rss_mb"],
            "health_check_cpu_ms": ms(health_cpu),
            "baseline_python_cpu_ms": ms(base["cpu_s"]),
        }

    async def first_ticket(self, agent: AgentProcess, seq: int) -> float:
        """Seconds from pushing one order to its kitchen ticket on paper (the ``seq``-th ticket of that printer)."""
        started = time.perf_counter()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            url = f"http://127.0.0.1:{agent.port}/api/v1/orders"
            async with session.post(url, json=make_order(seq, prefix="first", print_receipt=False)) as response:
                assert response.status == 201, await response.text()
        await self.printers["kitchen"].wait_for_printed(seq + 1)
        return time.perf_counter() - started

    async def intake(self) -> dict[str, Any]:
        agent = await self.start_agent("intake")
        bodies = [
            json.dumps(make_order(n, prefix="bench", print_receipt=n % 3 == 0)).encode()
            for n in range(self.size["baseline"])
        ]
        # Threads for the blocking parts: the simulated printers on this loop keep serving the agent meanwhile.
        baseline = await asyncio.to_thread(sqlite_baseline, self.root / "baseline.db", bodies)
        intake: dict[str, Any] = {}
        offset = 0
        for clients, count in self.size["intake"].items():
            # Fresh ids per run: every order is a new one for the agent (a repeat would be a duplicate, not a store).
            run_bodies = [
                json.dumps(make_order(offset + n, prefix=f"c{clients}", print_receipt=n % 3 == 0)).encode()
                for n in range(count)
            ]
            offset += count
            figures = await push_orders(agent.port, run_bodies, clients)
            intake[f"clients_{clients}"] = figures | {
                "baseline_orders_per_s": baseline["orders_per_s"],
                "baseline_p50_ms": baseline["p50_ms"],
                "baseline_p99_ms": baseline["p99_ms"],
                # Three significant figures, not two decimals: a slow box's 37 orders/s beside 11,000 was 0.0.
                "ratio_to_baseline": float(f"{figures['orders_per_s'] / baseline['orders_per_s']:.3g}"),
            }
        await self.stop_agent(agent)
        return intake

    async def print_latency(self) -> dict[str, Any]:
        agent = await self.start_agent("printing")
        kitchen = self.printers["kitchen"]
        result: dict[str, Any] = {}
        for rate in (10, 100):
            result[f"rate_{rate}_per_s"] = await print_latency_at(
                agent.port, kitchen, rate, self.size["print_s"], prefix=f"r{rate}"
            )
        direct = await direct_print(kitchen, kitchen.printed[0], self.size["direct"])
        for figures in result.values():
            figures |= {"baseline_p50_ms": direct["p50_ms"], "baseline_p99_ms": direct["p99_ms"]}
        await self.stop_agent(agent)
        return result

    async def recovery(self) -> dict[str, Any]:
        """The central API comes back with N orders the agent missed, every [central] setting at its default: seconds
        from the line's return to the first order fetch (the link probe and the random start delay; goal under 5 s),
        until all are stored with their jobs queued (goal for 10,000: under 10 s) and until the run completed."""
        count = self.size["recovery"]
        central = CentralSim("sim-store", token=TOKEN)
        await central.start()
        orders = central.create_orders(count, prefix="missed")
        await central.set_up(False)
        agent = await self.start_agent("recovery", CENTRAL.format(url=central.url, token=TOKEN))
        db = sqlite3.connect(f"file:{self.root / 'recovery' / 'edge.db'}?mode=ro", uri=True)
        try:
            await central.set_up(True)
            assert central.up_at is not None
            up_mono = time.monotonic()  # the simulator stamps its requests with time.monotonic()
            async with asyncio.timeout(120 + count / 50):
                await until(
                    lambda: db.execute("SELECT COUNT(*) FROM orders WHERE source = 'recovery'").fetchone()[0] >= count
                )
                stored_s = time.time() - central.up_at
                first_fetch = min(t for t, _, path, _ in central.requests if path.endswith("/orders"))
                finished = "SELECT finished_at FROM recovery_runs WHERE state = 'completed' ORDER BY id DESC LIMIT 1"
                await until(lambda: db.execute(finished).fetchone() is not None)
                row = db.execute(finished).fetchone()
        finally:
            db.close()
            await self.stop_agent(agent)
            await central.stop()
        bodies = [json.dumps(o).encode() for o in orders]
        baseline = await asyncio.to_thread(sqlite_baseline, self.root / "baseline-recovery.db", bodies, per_commit=100)
        return {
            "orders": count,
            "line_back_to_start_s": round(first_fetch - up_mono, 2),
            "stored_s": round(stored_s, 2),
            "orders_per_s": round(count / stored_s, 1),
            "run_completed_s": round(row[0] - central.up_at, 2),
            "baseline_orders_per_s": baseline["orders_per_s"],
        }

    async def stale_backlog(self) -> dict[str, Any]:
        """A busy outage's backlog: central brings S missed orders older than the stale age (45 min) and R recent ones
        behind them. Seconds from the run's end until the last recent ticket is on paper (every stale one is held
        first, or beside it), against the same R orders brought alone (baseline). Goal: about the baseline; before
        the stale tickets were held a commit and a look at the whole queue each, 1,500 of them took ~10 s."""
        stale, recent = self.size["stale_backlog"]
        with_stale = await self.backlog_printed("stale-backlog", stale, recent)
        alone = await self.backlog_printed("recent-alone", 0, recent)
        return {
            "stale_orders": stale,
            "recent_orders": recent,
            "last_recent_printed_s": with_stale,
            "baseline_recent_alone_printed_s": alone,
            "ratio_to_baseline": float(f"{with_stale / alone:.3g}"),
        }

    async def backlog_printed(self, name: str, stale: int, recent: int) -> float:
        """Seconds from the end of a recovery run bringing ``stale`` orders 50 min to 4 h old and ``recent`` ones
        under 40 min old (in that order, as central lists them) to the last recent ticket on paper."""
        central = CentralSim("sim-store", token=TOKEN)
        await central.start()
        agent = await self.start_agent(name, CENTRAL.format(url=central.url, token=TOKEN) + "start_jitter_s = 0.0\n")
        db_path = self.root / name / "edge.db"
        db = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        landed: dict[str, float] = {}
        watcher = asyncio.create_task(watch_printer(self.printers["kitchen"], landed))
        completed = "SELECT COUNT(*), MAX(finished_at) FROM recovery_runs WHERE state = 'completed'"
        try:
            async with asyncio.timeout(120 + (stale + recent) / 20):
                await until(lambda: db.execute(completed).fetchone()[0] >= 1)
                # An old box: the outage's orders are not from before its database (history, never printed).
                since = repr(time.time() - 6 * 3600)
                db.execute("UPDATE meta SET value = ? WHERE key = 'may_have_printed_until'", (since,))
                now = datetime.now(UTC).replace(microsecond=0)
                old = [now - timedelta(hours=4) + n * timedelta(hours=3) / max(stale, 1) for n in range(stale)]
                new = [now - timedelta(minutes=40) + n * timedelta(minutes=39) / recent for n in range(recent)]
                orders = [
                    due_at(make_order(n, prefix="backlog", created_at=at, print_receipt=False), None)
                    for n, at in enumerate(old + new)
                ]
                central.add_orders(orders)
                wanted = {o["id"] for o in orders[stale:]}
                async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
                    url = f"http://127.0.0.1:{agent.port}/api/v1/recovery/runs"
                    async with session.post(url) as response:
                        assert response.status == 202, await response.text()
                await until(lambda: db.execute(completed).fetchone()[0] >= 2)
                finished = db.execute(completed).fetchone()[1]
                await until(lambda: wanted <= landed.keys())
                last = max(landed[order_id] for order_id in wanted)
                # landed is on the perf counter, the run's end on the wall clock: both taken now
                return round(time.time() - finished - (time.perf_counter() - last), 2)
        finally:
            watcher.cancel()
            db.close()
            await self.stop_agent(agent)
            await central.stop()

    async def alert_latency(self) -> dict[str, Any]:
        """Printer unplugged -> printer_offline mail in the SMTP sink (edge.sim.alert_latency): with group wait 0, and
        with every alert setting at its default (critical_default_ms; the goal is under 10 s)."""
        samples, defaults = [], []
        for n in range(self.size["alerts"]):
            samples.append(await measure_fault_to_mail(self.root / f"alerts-{n}", group_wait_s=0.0))
            defaults.append(await measure_fault_to_mail(self.root / f"alerts-default-{n}", group_wait_s=None))
        return {
            "fault_to_mail_p50_ms": ms(percentile(samples, 0.5)),
            "baseline_smtp_send_p50_ms": await smtp_send_ms(5),
            "critical_default_ms": ms(max(defaults)),
        }

    async def storage(self, fsync_ms: float) -> dict[str, Any]:
        """What an order costs the storage (fsyncs, bytes written, from the first push to the last ticket printed) and
        what an SD card's slow fsync does to intake: the agent runs under scripts/slowfsync.c. Printers are instant,
        except in the paper_speed run: there they print at 250 mm/s (edge.sim.printer.PaperSpeed) and are the
        bottleneck; its paper_s is how long the kitchen printer's paper alone took."""
        shim = build_slowfsync(self.root)
        if shim is None:
            return {"skipped": "no C compiler (cc) to build scripts/slowfsync.c; storage figures need it"}
        sample = json.dumps(make_order(0, prefix="baseline")).encode()
        baseline = await asyncio.to_thread(
            storage_baseline, shim, self.root, sample, max(self.size["storage"].values())
        )
        result: dict[str, Any] = {"fsync_ms": fsync_ms}
        for delay, label in ((0, "cost"), (fsync_ms, f"fsync_{fsync_ms:g}ms")):
            for clients, count in self.size["storage"].items():
                name = f"{label}_clients_{clients}"
                result[name] = await self.storage_run(shim, name, clients, count, delay) | baseline
        count = max(4, self.size["storage"][8] // 10)  # a real printer's pace: ~0.3 s per ticket
        name = f"fsync_{fsync_ms:g}ms_paper_speed_clients_8"
        result[name] = await self.storage_run(shim, name, 8, count, fsync_ms, speed=PaperSpeed()) | baseline
        result["store_pace_with_central"] = (
            await self.storage_pace(shim, max(3, self.size["storage"][1] // 5)) | baseline
        )
        return result

    async def storage_pace(self, shim: Path, count: int) -> dict[str, Any]:
        """What an order costs the card at a store's pace, where the runs above share their commits in bursts: each
        order pushed once the one before is on paper and central has its events (``received``, ``printed`` for each
        ticket and receipt), the agent linked to central and its printers at paper speed."""
        central = CentralSim("sim-store", token=TOKEN)
        await central.start()
        counter = SyncCounter(self.root / "storage-pace.count")
        env = {"LD_PRELOAD": str(shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_COUNT_FILE": str(counter.path)}
        link = CENTRAL.format(url=central.url, token=TOKEN)
        config, port = await self.config("storage-pace", link, speed=PaperSpeed())
        agent = AgentProcess(config, port, self.root / "storage-pace.log", env=env)
        self.agents.append(agent)
        await agent.start()
        assert agent.proc is not None
        db = sqlite3.connect(f"file:{self.root / 'storage-pace' / 'edge.db'}?mode=ro", uri=True)
        events = 0
        try:
            async with asyncio.timeout(60 + count * 5):
                completed = "SELECT 1 FROM recovery_runs WHERE state = 'completed'"
                await until(lambda: db.execute(completed).fetchone() is not None)  # the start's run writes its own
                syncs, written = counter.read(), written_bytes(agent.proc.pid)
                async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
                    for n in range(count):
                        receipt = n % 3 == 0
                        order = make_order(n, prefix="pace", print_receipt=receipt)
                        central.add_orders([order])
                        async with session.post(f"http://127.0.0.1:{port}/api/v1/orders", json=order) as response:
                            assert response.status == 201, await response.text()
                        wanted = 3 if receipt else 2  # received, and printed for the ticket (and the receipt)
                        prefix = f"{order['id']}:"
                        await until(lambda p=prefix, w=wanted: sum(k.startswith(p) for k in central.events) == w)
                        events += wanted
                figures = {
                    "orders": count,
                    "fsyncs_per_order": round((counter.read() - syncs) / count, 2),
                    "kb_written_per_order": round((written_bytes(agent.proc.pid) - written) / count / 1024, 1),
                    "events_per_order": round(events / count, 2),
                }
        finally:
            db.close()
            await self.stop_agent(agent)
            await central.stop()
        return figures

    async def storage_run(
        self, shim: Path, name: str, clients: int, count: int, delay: float, *, speed: PaperSpeed | None = None
    ) -> dict[str, Any]:
        counter = SyncCounter(self.root / f"storage-{name}.count")
        env = {"LD_PRELOAD": str(shim), "SLOWFSYNC_MS": str(int(delay)), "SLOWFSYNC_COUNT_FILE": str(counter.path)}
        config, port = await self.config(f"storage-{name}", speed=speed)
        agent = AgentProcess(config, port, self.root / f"storage-{name}.log", env=env)
        self.agents.append(agent)
        await agent.start()
        assert agent.proc is not None
        bodies = [json.dumps(make_order(n, prefix=name, print_receipt=n % 3 == 0)).encode() for n in range(count)]
        syncs, written = counter.read(), written_bytes(agent.proc.pid)
        pushed = await push_orders(port, bodies, clients)
        last_ack = time.perf_counter()
        printed = await wait_all_printed(self.root / f"storage-{name}" / "edge.db", timeout=60 + count / 2)
        figures = {
            "orders": count,
            "fsyncs_per_order": round((counter.read() - syncs) / count, 2),
            "kb_written_per_order": round((written_bytes(agent.proc.pid) - written) / count / 1024, 1),
            "acks_per_s": pushed["orders_per_s"],
            "p50_ms": pushed["p50_ms"],
            "p99_ms": pushed["p99_ms"],
            "last_ack_to_all_printed_s": round(printed - last_ack, 3),
        }
        if speed is not None:
            figures["paper_s"] = round(sum(speed.seconds(job) for job in self.printers["kitchen"].printed), 2)
        await self.stop_agent(agent)
        return figures

    async def api_flood(self) -> dict[str, Any]:
        """Authenticated orders on new connections while 1,100 slow-loris connections (edge.sim.flood, its own
        process) hammer an agent limited to 256 file descriptors; baseline: the same orders before the flood."""
        connections, fd_limit, count = 1100, 256, self.size["flood_orders"]
        config, port = await self.config("flood")
        agent = AgentProcess(config, port, self.root / "flood.log", nofile=fd_limit)
        self.agents.append(agent)
        await agent.start()
        calm = await orders_on_new_connections(port, count, prefix="calm")
        flood = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "edge.sim.flood", "--port", str(port), "--connections", str(connections)),
            *("--seconds", str(2.5 + count * 0.5)),
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(1.5)  # the flood fills what the agent lets it fill
        lines_before = len(agent.log.read_bytes().splitlines())
        loud = await orders_on_new_connections(port, count, prefix="flood")
        log_lines = len(agent.log.read_bytes().splitlines()) - lines_before
        opened = int((await flood.communicate())[0] or 0)
        await self.stop_agent(agent)
        print(
            f"api flood: {opened} slow connections opened, {fd_limit} fds, {log_lines} agent log lines meanwhile",
            file=sys.stderr,
        )
        return {
            "orders": count,
            "p50_ms": ms(percentile(loud, 0.5)),
            "max_ms": ms(max(loud)),
            "baseline_p50_ms": ms(percentile(calm, 0.5)),
            "baseline_max_ms": ms(max(calm)),
        }

    async def fleet(self) -> dict[str, Any]:
        """1,000 stores whose line comes back at once, against a central with a fixed capacity (edge.sim.recovery_bench
        .measure_fleet): peak requests/s at central, 429s sent, time until every agent has its missed orders, for the
        shipped defaults and (full size) the defaults before issue 13 with the request pattern before issue 15."""
        size = self.size["fleet"]
        common = {"agents": size["agents"], "orders_per_agent": FLEET_ORDERS, "capacity_rps": FLEET_CAPACITY_RPS}
        return {
            **common,
            "simulated": "per agent the real CentralClient (its own rate limiter, retries, Retry-After) and"
            " LinkMonitor, running the recovery's requests (list every page, report every order's received event);"
            " no database and no printing per agent; all in this process",
            "new_defaults": await measure_fleet(**common),
            "old_defaults": await measure_fleet(**common, central=OLD_DEFAULTS, report_per_batch=True)
            if size["old_defaults"]
            else None,
        }

    async def fleet_mqtt(self) -> dict[str, Any] | None:
        """Stores on one real Mosquitto, a backend publishing orders across them (edge.sim.mqtt_fleet says what is
        simulated): publish -> printed p50/p99, broker connections, messages/s, against the broker's own round trip.
        Then (not in --tiny) one agent's start-up and idle RSS with [mqtt] (paho imported, connected) against the same
        agent without it. None without mosquitto."""
        if not mosquitto_available():
            return None
        size = dict(self.size["fleet_mqtt"])
        footprint = size.pop("footprint")  # two more agent starts: not in the CI smoke size
        fleet = await measure_mqtt_fleet(self.root / "fleet_mqtt", **size)
        if not footprint:
            return fleet
        broker = await asyncio.to_thread(Broker, self.root / "footprint_broker")
        await broker.start()
        mqtt = f'\n[mqtt]\nurl = "{broker.url}"\nusername = "{AGENT_USER}"\npassword = "{AGENT_PASSWORD}"\n'
        seen = {}
        try:
            for name, extra in (("with", mqtt), ("without", "")):
                config, _ = await self.config(f"footprint_{name}_mqtt", extra)
                seen[name] = await asyncio.to_thread(measure_startup, config, idle_s=self.size["idle_s"])
                for printer in self.printers.values():
                    await printer.stop()
        finally:
            await broker.stop()
        return fleet | {
            "startup_to_ready_s": round(seen["with"].ready_s, 3),
            "idle_rss_mb": round(seen["with"].idle_rss_kib / 1024, 1),
            "baseline_startup_without_mqtt_s": round(seen["without"].ready_s, 3),
            "baseline_idle_rss_without_mqtt_mb": round(seen["without"].idle_rss_kib / 1024, 1),
        }

    async def printing(self) -> dict[str, Any]:
        """The largest legal order (500 items): render CPU per ticket and receipt, and how small orders pushed at 50/s
        are answered while it is taken, rendered and printed, against the same small orders with nothing else going
        on (same agent, same run)."""
        agent = await self.start_agent("large")
        kitchen, front = self.printers["kitchen"], self.printers["front"]
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        idle: list[float] = []
        during: list[float] = []
        big_ack: list[float] = []
        to_paper: list[float] = []
        async with aiohttp.ClientSession(headers=headers) as session:
            for run in range(self.size["large"]):
                idle += await small_acks(session, agent.port, f"idle{run}", asyncio.ensure_future(asyncio.sleep(1.0)))
                body = json.dumps(largest_order(run))
                kitchen_before, front_before = len(kitchen.printed), len(front.printed)

                async def large(body: str = body, k: int = kitchen_before, f: int = front_before) -> None:
                    t0 = time.perf_counter()
                    async with session.post(f"http://127.0.0.1:{agent.port}/api/v1/orders", data=body) as response:
                        await response.read()
                    acked = time.perf_counter()
                    big_ack.append(acked - t0)
                    await kitchen.wait_for_printed(k + 1, timeout=60)
                    await front.wait_for_printed(f + 1, timeout=60)
                    to_paper.append(time.perf_counter() - acked)

                work = asyncio.ensure_future(large())
                during += await small_acks(session, agent.port, f"during{run}", work)
                await work
        await self.stop_agent(agent)
        return {
            "render_500_items_ticket_cpu_ms": await asyncio.to_thread(render_cpu_ms, largest_order(0), "ticket"),
            "render_500_items_receipt_cpu_ms": await asyncio.to_thread(render_cpu_ms, largest_order(0), "receipt"),
            "baseline_example_ticket_cpu_ms": await asyncio.to_thread(render_cpu_ms, make_order(0), "ticket"),
            "ack_500_items_p50_ms": ms(percentile(big_ack, 0.5)),
            "ack_to_paper_500_items_p50_s": round(percentile(to_paper, 0.5), 3),
            "small_ack_during_500_items_p50_ms": ms(percentile(during, 0.5)),
            "small_ack_during_500_items_max_ms": ms(max(during)),
            "baseline_small_ack_idle_p50_ms": ms(percentile(idle, 0.5)),
            "baseline_small_ack_idle_max_ms": ms(max(idle)),
        }

    async def backup(self) -> dict[str, Any]:
        """Backups of a database of N MiB while the agent (its own process) takes an order every 50 ms: the backup API
        in one step, VACUUM INTO and `edge backup` as shipped (edge.ops.backup_database), against the old copy in
        256-page steps, which starts over at every commit of the agent (a time equal to cap_s: not done by then).
        Intake p99 during each shows what the agent felt."""
        size = self.size["backup"]
        config, port = await self.config("backup")
        db_path = self.root / "backup" / "edge.db"
        await (await Database.open(db_path)).close()
        await asyncio.to_thread(add_printed_history, db_path, megabytes=size["megabytes"])
        agent = await self.start_prepared_agent(config, port, "backup")
        settings = load_settings(config)
        copies = self.root / "copies"
        copies.mkdir()

        async def shipped() -> Path:
            return await backup_database(settings)

        async def one_step() -> Path:
            return await asyncio.to_thread(copy_in_steps, db_path, copies / "one-step.db", -1)

        async def vacuum() -> Path:
            return await asyncio.to_thread(vacuum_into, db_path, copies / "vacuum.db")

        async def steps() -> Path:
            return await asyncio.to_thread(copy_in_steps, db_path, copies / "steps.db", 256)

        result: dict[str, Any] = {
            "database_mb": round(db_path.stat().st_size / 2**20, 1),
            "order_every_ms": 50,
            "cap_s": size["cap_s"],
        }
        ways = {"one_step": one_step, "vacuum_into": vacuum, "edge_backup": shipped, "baseline_steps_256": steps}
        for name in BACKUP_WAYS:
            result[f"{name}_s"], result[f"{name}_intake_p99_ms"] = await backup_under_load(
                port, ways[name], prefix=f"bk-{name}", cap_s=size["cap_s"]
            )
        await self.stop_agent(agent)
        return result

    async def start_prepared_agent(self, config: Path, port: int, name: str) -> AgentProcess:
        agent = AgentProcess(config, port, self.root / f"{name}.log")
        self.agents.append(agent)
        await agent.start()
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close()


async def run(size: dict[str, Any], *, fsync_ms: float = 10.0, only: Collection[str] = ()) -> dict[str, Any]:
    """Every part, or those named in ``only`` (the others null)."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        bench = Bench(Path(tmp), size)
        parts: dict[str, Callable[[], Awaitable[Any]]] = {
            "intake": bench.intake,
            "print_latency": bench.print_latency,
            "recovery": bench.recovery,
            "stale_backlog": bench.stale_backlog,
            "alert_latency": bench.alert_latency,
            "footprint": bench.footprint,
            "storage": lambda: bench.storage(fsync_ms),
            "fleet": bench.fleet,
            "printing": bench.printing,
            "backup": bench.backup,
            "fleet_mqtt": bench.fleet_mqtt,
        }
        if size["flood_orders"]:
            parts["api_flood"] = bench.api_flood
        try:
            return {name: await part() if not only or name in only else None for name, part in parts.items()}
        finally:
            await bench.close()


def table(result: dict[str, Any]) -> str:
    rows = ["figure                          value        baseline"]
    for clients, f in (result["intake"] or {}).items():
        rows.append(
            f"intake {clients:<12} orders/s  {f['orders_per_s']:>9}   {f['baseline_orders_per_s']:>9}  "
            f"(x{f['ratio_to_baseline']})"
        )
        rows.append(
            f"intake {clients:<12} p50/p99 ms {f['p50_ms']:>6}/{f['p99_ms']:<7} "
            f"{f['baseline_p50_ms']:>5}/{f['baseline_p99_ms']}"
        )
    for rate, f in (result["print_latency"] or {}).items():
        rows.append(
            f"ack->paper {rate:<14} p50/p99 ms {f['p50_ms']:>6}/{f['p99_ms']:<7} "
            f"{f['baseline_p50_ms']:>5}/{f['baseline_p99_ms']}"
        )
    for key in ("recovery", "alert_latency", "footprint"):
        if result[key] is None:
            rows.append(f"{key:<31} not landed")
    if f := result["recovery"]:
        rows.append(
            f"recovery {f['orders']} orders/s     {f['orders_per_s']:>9}   {f['baseline_orders_per_s']:>9}  (stored in "
            f"{f['stored_s']} s)"
        )
    if f := result.get("stale_backlog"):
        rows.append(
            f"stale backlog {f['stale_orders']}+{f['recent_orders']} last recent s {f['last_recent_printed_s']:>5}"
            f"   {f['baseline_recent_alone_printed_s']:>9}  (x{f['ratio_to_baseline']})"
        )
    if f := result["alert_latency"]:
        rows.append(
            f"fault -> mail ms                {f['fault_to_mail_p50_ms']:>9}   {f['baseline_smtp_send_p50_ms']:>9}"
        )
        rows.append(f"fault -> mail, defaults ms      {f['critical_default_ms']:>9}   (goal < 10000)")
    for key, f in (result.get("storage") or {}).items():
        if isinstance(f, dict) and "acks_per_s" not in f:  # the store's pace: one order at a time
            rows.append(
                f"storage {key:<22} {f['fsyncs_per_order']:>5} fsyncs/order ({f['baseline_fsyncs_per_order']})"
                f" {f['kb_written_per_order']:>6} KB/order ({f['baseline_kb_written_per_order']}),"
                f" {f['events_per_order']} events to central an order"
            )
        elif isinstance(f, dict):
            rows.append(
                f"storage {key:<22} {f['acks_per_s']:>7} acks/s {f['fsyncs_per_order']:>5} fsyncs/order"
                f" ({f['baseline_fsyncs_per_order']}) {f['kb_written_per_order']:>6} KB/order"
                f" ({f['baseline_kb_written_per_order']}) printed {f['last_ack_to_all_printed_s']} s after last ack"
            )
    for name in ("new_defaults", "old_defaults"):
        if f := (result.get("fleet") or {}).get(name):
            rows.append(
                f"fleet {name:<12} all stored s   {f['all_stored_s']!s:>9}   peak {f['peak_requests_in_1s']}/s,"
                f" {f['responses_429']} x 429 (capacity {f['capacity_rps']:g}/s)"
            )
    if f := result.get("fleet_mqtt"):
        rows.append(
            f"mqtt fleet {f['agents']} stores       publish->printed p50/p99 ms {f['publish_to_printed_p50_ms']}/"
            f"{f['publish_to_printed_p99_ms']}, {f['messages_per_s']} msg/s, {f['broker_connections']} connections"
        )
        if "startup_to_ready_s" in f:
            rows.append(
                f"start-up / idle RSS with [mqtt] {f['startup_to_ready_s']} s / {f['idle_rss_mb']} MB   without:"
                f" {f['baseline_startup_without_mqtt_s']} s / {f['baseline_idle_rss_without_mqtt_mb']} MB"
            )
    if f := result.get("backup"):
        for name in BACKUP_WAYS:
            took = f[f"{name}_s"]
            state = f"not done in {took} s" if took >= f["cap_s"] else f"{took} s"
            rows.append(
                f"backup {f['database_mb']} MiB {name:<19} {state:<18} (intake p99 {f[f'{name}_intake_p99_ms']} ms)"
            )
    if f := result["footprint"]:
        rows.append(f"start-up to READY s             {f['startup_to_ready_s']:>9}   {f['baseline_startup_s']:>9}")
        rows.append(f"restart to READY s              {f['restart_to_ready_s']:>9}   {f['baseline_startup_s']:>9}")
        rows.append(f"first ticket after start ms     {f['first_ticket_after_start_ms']:>9}")
        rows.append(f"first ticket after restart ms   {f['first_ticket_after_restart_ms']:>9}")
        rows.append(f"edge health CPU ms              {f['health_check_cpu_ms']:>9}   {f['baseline_python_cpu_ms']:>9}")
        rows.append(f"idle RSS MB                     {f['idle_rss_mb']:>9}   {f['baseline_rss_mb']:>9}")
    if f := result.get("api_flood"):
        rows.append(
            f"order in a flood p50/max ms     {f['p50_ms']:>5}/{f['max_ms']:<7}"
            f" {f['baseline_p50_ms']:>5}/{f['baseline_max_ms']}"
        )
    if f := result.get("printing"):
        ticket, example = f["render_500_items_ticket_cpu_ms"], f["baseline_example_ticket_cpu_ms"]
        rows.append(f"500-item ticket render cpu ms   {ticket:>9}   {example:>9}")
        during = f"{f['small_ack_during_500_items_p50_ms']}/{f['small_ack_during_500_items_max_ms']}"
        idle = f"{f['baseline_small_ack_idle_p50_ms']}/{f['baseline_small_ack_idle_max_ms']}"
        rows.append(f"ack beside 500 items p50/max ms {during:>13}   {idle}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 60 s")
    parser.add_argument("--tiny", action="store_true", help="a smoke-test size for CI (a few seconds)")
    parser.add_argument(
        "--fsync-ms", type=float, default=10.0, help="extra ms per fsync in the storage section (an SD card: 10)"
    )
    parser.add_argument("--only", action="append", default=[], help="run this part only (again for more)")
    args = parser.parse_args(argv)
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    os.environ.pop("EDGE_CONFIG", None)  # the bench writes its own configs
    configure_logging(level="warning", stream=sys.stderr)  # stdout carries only the JSON document
    result = asyncio.run(run(size, fsync_ms=args.fsync_ms, only=args.only))
    print(table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
