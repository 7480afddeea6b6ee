"""The MQTT fleet bench (scripts/bench.py, fleet_mqtt): many store sessions on one real Mosquitto, a backend
publishing orders across them, publish → printed measured per order.

What is simulated, and why: 200+ full agent processes do not fit on two cores. One real agent runs (database, intake,
spools, simulated printers); beside its own MQTT link, every other "store" is another real MqttLink (its own paho
client, thread, TCP connection, persistent session, client id and topics) handing its orders to that agent's intake.
So the broker sees one connection and one session per store, as a fleet would make, while storage and printing are
shared: the stores' orders are printed on ``stations`` simulated printers, one spool each, and their status events (one
shared outbox) go out once, on the first store's events topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

from edge.app import Agent
from edge.config import parse_settings
from edge.events import JobPrinted, OrderStored
from edge.sim.broker import AGENT_PASSWORD, AGENT_USER, Backend, Broker
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.states import MqttState
from edge.sync.mqtt import MqttLink

_TOKEN = "fleet-token-0123456789"


class _OrdersOnlyLink(MqttLink):
    """Another store's link: takes its orders like any link, publishes no events. The stores share one outbox here,
    which the real agent's own link publishes once; 200 links each publishing all of it would be 200 times the event
    traffic a fleet makes."""

    async def _publish_loop(self) -> None:
        return


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _publish_paced(
    backend: Backend, batches: list[list[tuple[str, str, bytes]]], rate: float, sent: dict[str, float]
) -> None:
    """In a thread: each batch QoS 1, its send time noted per order id, paced to ``rate`` orders/s."""
    start = time.perf_counter()
    done = 0
    for batch in batches:
        infos = []
        for order_id, topic, payload in batch:
            sent[order_id] = time.perf_counter()
            infos.append(backend.client.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(30)
        done += len(batch)
        ahead = start + done / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


async def measure_mqtt_fleet(
    root: Path, *, agents: int, orders: int, publish_rps: float, stations: int = 8, timeout_s: float = 300.0
) -> dict[str, Any]:
    broker = await asyncio.to_thread(Broker, root / "broker", sys_interval=1)
    await broker.start()
    printers = {f"p{i}": SimPrinter(f"p{i}") for i in range(stations)}
    for printer in printers.values():
        await printer.start()
    config = {
        "agent": {"store_id": "fleet-0", "data_dir": str(root / "agent"), "log_format": "json", "log_level": "warning"},
        "api": {"host": "127.0.0.1", "port": 0, "token": _TOKEN},
        "printers": {n: {"type": "network", "host": "127.0.0.1", "port": p.port} for n, p in printers.items()},
        "stations": {f"s{i}": f"p{i}" for i in range(stations)},
        "mqtt": {"url": broker.url, "username": AGENT_USER, "password": AGENT_PASSWORD},
    }
    settings = parse_settings(config, source="fleet bench")
    agent = Agent(settings)
    links: list[MqttLink] = []
    landed: dict[str, float] = {}
    stored: dict[str, float] = {}
    sent: dict[str, float] = {}
    backend = Backend(broker, subscribe=["$SYS/broker/clients/connected", "bench/ping"])
    all_printed = asyncio.Event()

    def printed(event: JobPrinted) -> None:
        landed.setdefault(event.order_id, time.perf_counter())
        if len(landed) >= orders:
            all_printed.set()

    try:
        await agent.start()
        assert agent.mqtt is not None and agent.deps is not None and agent.db is not None
        agent.bus.subscribe(printed, JobPrinted)
        agent.bus.subscribe(lambda e: stored.__setitem__(e.order_id, time.perf_counter()), OrderStored)
        links.append(agent.mqtt)
        for n in range(1, agents):
            store = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, store_id=f"fleet-{n}"))
            links.append(
                _OrdersOnlyLink(store, intake=agent.deps.intake, db=agent.db, bus=agent.bus, clock=agent.clock)
            )
        await asyncio.gather(*(link.start() for link in links[1:]))
        connected_at = time.perf_counter() + 60
        while sum(link.state == MqttState.CONNECTED for link in links) < agents:
            if time.perf_counter() > connected_at:
                raise TimeoutError(f"{sum(lk.state == MqttState.CONNECTED for lk in links)} of {agents} connected")
            await asyncio.sleep(0.05)
        await backend.connect()
        # The broker's own round trip, as the baseline: the backend publishes to a topic it subscribes to itself.
        pings: dict[bytes, float] = {}
        for n in range(20):
            pings[f"ping-{n}".encode()] = time.perf_counter()
            await backend.publish("bench/ping", f"ping-{n}".encode())
        connections: list[int] = []
        for _ in range(40):  # $SYS/broker/clients/connected comes every second
            connections = [int(p) for p in backend.on("$SYS/broker/clients/connected")]
            if connections and max(connections) > agents:
                break
            await asyncio.sleep(0.1)
        round_trips = [backend.arrived[p] - t for p, t in pings.items() if p in backend.arrived]

        batches: list[list[tuple[str, str, bytes]]] = []
        for start in range(0, orders, 50):
            batch = []
            for n in range(start, min(start + 50, orders)):
                order = make_order(n, prefix=f"f{n % agents}", print_receipt=False)
                order["items"] = [dict(item, station=f"s{n % stations}") for item in order["items"]]
                topic = f"edge/fleet-{n % agents}/orders"
                batch.append((order["id"], topic, json.dumps(order).encode()))
            batches.append(batch)
        t0 = time.perf_counter()
        publisher = threading.Thread(target=_publish_paced, args=(backend, batches, publish_rps, sent), daemon=True)
        publisher.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_printed.wait(), timeout_s)
        await asyncio.to_thread(publisher.join, 30)
        latencies = [landed[k] - sent[k] for k in landed if k in sent]
        commits = [stored[k] - sent[k] for k in stored if k in sent]
        return {
            "agents": agents,
            "orders": orders,
            "printers": stations,
            "publish_rate_orders_per_s": publish_rps,
            "printed_orders": len(landed),
            "broker_connections": max(connections) if connections else None,  # the stores' links and the backend
            "messages_per_s": round(len(landed) / (max(landed.values()) - t0), 1) if landed else None,
            "publish_to_printed_p50_ms": round(_percentile(latencies, 0.5) * 1000, 1) if latencies else None,
            "publish_to_printed_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            # Stored and committed: the moment the PUBACK may go.
            "publish_to_stored_p50_ms": round(_percentile(commits, 0.5) * 1000, 1) if commits else None,
            "publish_to_stored_p99_ms": round(_percentile(commits, 0.99) * 1000, 1) if commits else None,
            "baseline_broker_round_trip_p50_ms": round(_percentile(round_trips, 0.5) * 1000, 3),
            "simulated": "one real agent (database, intake, spools, simulated printers) and one real MqttLink per"
            " store (own paho client, thread, connection, persistent session and topics) feeding its intake; the"
            " shared outbox's events published once, by the first store's link; a paho backend publishing QoS 1"
            " across the stores' topics in bursts of 50; the Mosquitto is real",
        }
    finally:
        await backend.close()
        await asyncio.gather(*(link.stop() for link in links[1:]))
        await agent.stop()
        for printer in printers.values():
            await printer.stop()
        await broker.stop()
