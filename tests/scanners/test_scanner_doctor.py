"""What `edge doctor` says of each scanner: the technician's one look at the box."""

from __future__ import annotations

from collections.abc import Callable

from edge.api.client import call_agent
from edge.app import Agent
from edge.config import Settings
from edge.ops.technician import doctor
from edge.sim.scanner import SimScanner
from tests.helpers import Seen, eventually, scanner_config


async def test_the_doctor_tells_a_scanner_unplugged_one_reading_only_noise_and_one_that_reads(
    scan_agent: tuple[Agent, Seen], sims: dict[str, SimScanner], make_settings: Callable[..., Settings]
) -> None:
    """Three scanners: the bar's unplugged, the kitchen's at the wrong baud rate (every line noise: here bytes no code
    has), the counter's reading. The doctor names each as it is, from the running agent; with the agent stopped, from
    the ports on the box. Before stop 68 it said nothing of scanners at all, nor did anything else a technician looks
    at (the scanner probe, F3)."""
    agent, seen = scan_agent
    sims["bar"].unplug()
    await seen.connected("bar", False)
    for _ in range(3):
        sims["kitchen"].send(b"\xf0\x8c\x1c\xe0\x9e\r")
    sims["counter"].send(b"NOT-A-TICKET\r")
    await eventually(
        lambda: _counts(agent), lambda c: c == {"kitchen": (0, 3), "counter": (1, 0)}, what="the reads counted"
    )
    settings = make_settings(api={"port": agent.port}, scanners=scanner_config(sims))
    checks = {c.name: c for c in await doctor(settings, call_agent)}
    assert checks["scanner bar"].level == "fail" and "not connected" in checks["scanner bar"].detail
    kitchen = checks["scanner kitchen"]
    assert kitchen.level == "warn" and "baud" in kitchen.detail and "none a code" in kitchen.detail, kitchen
    assert checks["scanner counter"].level == "ok" and "1 code" in checks["scanner counter"].detail

    await agent.stop()
    checks = {c.name: c for c in await doctor(settings, call_agent)}
    assert checks["scanner bar"].level == "fail" and "does not exist" in checks["scanner bar"].detail
    assert checks["scanner kitchen"].level == "ok" and checks["scanner counter"].level == "ok"


async def _counts(agent: Agent) -> dict[str, tuple[int, int]]:
    return {
        name: (reader.codes, reader.rejected)
        for name, reader in agent.scanners.items()
        if reader.codes or reader.rejected
    }
