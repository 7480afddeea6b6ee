"""`edge demo`: the real agent with two simulated network printers and sample orders, all on loopback."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from edge.app import Agent
from edge.clock import wait_set
from edge.config import parse_settings
from edge.events import RecoveryCompleted
from edge.printing.decode import preview
from edge.sim.central import CentralSim
from edge.sim.orders import example_order, make_order
from edge.sim.printer import SimPrinter

DEMO_TOKEN = "demo-token"
CENTRAL_TOKEN = "demo-central-token"
OUTAGE_ORDERS = 3  # waiting at the simulated central API, as if taken online while the store's line was down


def demo_settings(data_dir: Path, *, api_port: int, kitchen_port: int, front_port: int, central_url: str = "") -> dict:
    """The config a technician would write, pointed at the simulators."""
    return {
        "agent": {
            "store_id": "demo-store",
            "store_name": "Demo Pizzeria",
            "data_dir": str(data_dir),
            "language": "de",
            "timezone": "Europe/Berlin",
            "log_format": "console",
        },
        "api": {"host": "127.0.0.1", "port": api_port, "token": DEMO_TOKEN},
        "printers": {
            "kitchen": {"type": "network", "host": "127.0.0.1", "port": kitchen_port, "width": 48},
            "front": {"type": "network", "host": "127.0.0.1", "port": front_port, "width": 42},
        },
        "stations": {"kitchen": "kitchen", "bar": "kitchen"},
        "receipts": {"printer": "front", "footer": "Danke für Ihren Besuch!"},
        "central": {"url": central_url, "token": CENTRAL_TOKEN, "start_jitter_s": 0.0} if central_url else {},
    }


def _show(printer: SimPrinter, seen: int) -> int:
    for data in printer.printed[seen:]:
        print(f"\n===== printer {printer.name}: {len(data)} bytes =====")
        print(preview(data))
    return len(printer.printed)


async def _jobs_of(base: str, orders: list[dict[str, Any]]) -> int:
    """The print jobs the agent queued for these orders, as its API reports them."""
    count = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as session:
        for order in orders:
            async with session.get(f"{base}/api/v1/orders/{order['id']}") as response:
                count += len((await response.json()).get("jobs", []))
    return count


async def _reported(agent: Agent, *, seconds: float) -> None:
    """Gives the outbox a moment to tell central what printed (the last printed marks commit a little later), so the
    summary's event count is what a backend would see."""
    for _ in range(int(seconds * 10)):  # polls a count in the database: there is no event for "outbox empty"
        if agent.sync is None or not await agent.sync.outbox.pending():
            return
        await asyncio.sleep(0.1)


async def run_demo(data_dir: Path, *, once: bool, port: int, orders: int) -> int:
    data_dir = await asyncio.to_thread(data_dir.resolve)  # a syscall: off the loop, like every disk call
    printers = [SimPrinter("kitchen", out_dir=data_dir / "printed"), SimPrinter("front", out_dir=data_dir / "printed")]
    for p in printers:
        await p.start()
    central = CentralSim("demo-store", token=CENTRAL_TOKEN)
    await central.start()
    await central.set_up(False)  # the store's line is down as the box starts
    raw = demo_settings(
        data_dir, api_port=port, kitchen_port=printers[0].port, front_port=printers[1].port, central_url=central.url
    )
    agent = Agent(parse_settings(raw, source="demo"))
    recovered = asyncio.Event()
    agent.bus.subscribe(lambda event: recovered.set(), RecoveryCompleted)
    await agent.start()
    # Taken online meanwhile, after the box started: orders from before a new box's first start would be history or
    # copies (docs/recovery.md). The line comes back and the agent recovers them.
    outage = central.create_orders(OUTAGE_ORDERS, prefix=f"outage{int(time.time())}")
    await central.set_up(True)
    base = f"http://127.0.0.1:{agent.port}"
    print(f"Edge agent demo: API {base}  token {DEMO_TOKEN}  database {agent.settings.agent.db_path}")
    print(
        f"Simulated printers: kitchen 127.0.0.1:{printers[0].port}, front 127.0.0.1:{printers[1].port};"
        f" raw .bin files in {data_dir / 'printed'}"
    )
    print(
        f"Simulated central API: {central.url} with {OUTAGE_ORDERS} orders created during an outage;"
        " the agent recovers them"
    )
    print(
        f"Push your own: curl -H 'Authorization: Bearer {DEMO_TOKEN}' -H 'Content-Type: application/json'"
        f" --data @order.json {base}/api/v1/orders"
    )

    run = int(time.time())  # the ids of this run: a second demo on the kept database takes new orders, not conflicts
    example = example_order()
    example["id"] = f"{example['id']}-{run}"
    samples = [example] + [make_order(i, prefix=f"demo{run}", bar=i % 2 == 1) for i in range(1, orders)]
    expected = 0
    central.add_orders(samples[:orders])  # the backend's orders: it takes status events only for its own
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {DEMO_TOKEN}"}) as session:
        for order in samples[:orders]:
            async with session.post(f"{base}/api/v1/orders", json=order) as response:
                answer = await response.json()
                print(f"POST order {order['number']}: {response.status} {answer.get('status', answer)}")
                if response.status == 201:
                    expected += len(answer["job_ids"])
    try:
        await asyncio.wait_for(recovered.wait(), timeout=15)
    except TimeoutError:
        print("Recovery: no run completed within 15 s")
    else:
        queued = await _jobs_of(base, outage)
        expected += queued
        print(f"Recovery: {len(outage)} orders from the central API stored, {queued} tickets and receipts queued")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    seen = [0 for _ in printers]
    deadline = loop.time() + 30
    try:
        while not stop.is_set():
            seen = [_show(p, n) for p, n in zip(printers, seen, strict=True)]
            if once and (sum(seen) >= expected or loop.time() > deadline):
                await _reported(agent, seconds=5)
                break
            await wait_set(stop, 0.2)
    finally:
        await agent.stop()
        await central.stop()
        for p in printers:
            await p.stop()
    if once and sum(seen) < expected:
        print(f"demo: only {sum(seen)} of {expected} tickets printed within 30 s")
        return 1
    print(
        f"\ndemo: {sum(seen)} tickets printed; the central API got {len(central.events)} status events;"
        f" database kept in {data_dir}"
    )
    return 0
