"""Measures the promise to the manager: seconds from a printer fault to the alert mail in a real SMTP server's inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.app import Agent
from edge.config import parse_settings
from edge.events import PrinterStatusChanged
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink


async def measure_fault_to_mail(work_dir: Path, *, group_wait_s: float | None = 0.0, timeout_s: float = 60.0) -> float:
    """The real agent on loopback, its only printer unplugged, one order waiting for it.

    Returns the seconds from the spool's first failed connect (the PrinterStatusChanged "offline" it publishes)
    to the printer_offline mail arriving at an aiosmtpd server. ``group_wait_s`` applies to critical alerts
    (printer_offline is critical); None keeps every alert setting at its default (the promise: within 10 s).
    """
    sink, printer = SmtpSink(), SimPrinter("kitchen")
    await sink.start()
    await printer.start()
    printer.set_offline(True)
    settings = parse_settings(
        {
            "agent": {
                "store_id": "bench-store",
                "data_dir": str(work_dir),
                "log_format": "json",
                "log_level": "warning",
            },
            "api": {"host": "127.0.0.1", "port": 0, "token": "bench-token-0123456789"},
            "printers": {
                "kitchen": {"type": "network", "host": "127.0.0.1", "port": printer.port, "connect_timeout": 0.5}
            },
            "stations": {"kitchen": "kitchen", "bar": "kitchen"},
            "smtp": {
                "host": "127.0.0.1",
                "port": sink.port,
                "security": "none",
                "sender": "edge@bench.test",
                "timeout_s": 5.0,
            },
            "alerts": {
                "to": ["manager@bench.test"],
                "disk_free_min_mb": 0,
                **(
                    {}
                    if group_wait_s is None
                    else {"group_wait_s": group_wait_s, "critical_group_wait_s": group_wait_s}
                ),
            },
        },
        source="bench",
    )
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    faults: list[float] = []
    agent.bus.subscribe(
        lambda e: faults.append(loop.time()) if e.new == "offline" and not faults else None, PrinterStatusChanged
    )
    await agent.start()
    try:
        assert agent.deps is not None
        await agent.deps.intake.accept(make_order(1, print_receipt=False))
        await sink.wait_for(1, timeout=timeout_s)
        if not faults:
            raise RuntimeError("a mail arrived but the printer never went offline")
        return sink.received_at[0] - faults[0]
    finally:
        await agent.stop()
        await printer.stop()
        await sink.stop()
