"""What a start costs the box: python-escpos' printer database is parsed once, cached in the data folder, and no start
leaves a file behind in the temporary folder (on many boxes /tmp is on the same SD card)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from edge.sim.printer import SimPrinter
from tests.helpers import agent_process


async def test_starts_leave_nothing_in_tmp_and_reuse_the_escpos_cache(tmp_path: Path) -> None:
    """Two starts of the real agent and an `edge config check` with TMPDIR pointing at an empty folder: nothing is
    left there (before: a folder per process, python-escpos' own), the printer database is pickled once into
    data/cache and the second start reads it (the file is not rewritten)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    temp = tmp_path / "tmp"
    temp.mkdir()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, env={"TMPDIR": str(temp)})
    try:
        await agent.start()
        assert await agent.terminate() == 0
        caches = list((tmp_path / "data" / "cache").glob("*.capabilities.pickle"))
        assert len(caches) == 1
        written = caches[0].stat().st_mtime_ns
        await agent.start()
        assert await agent.terminate() == 0
        assert caches[0].stat().st_mtime_ns == written
        checked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edge", "config", "check", "--config", str(agent.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(temp)},
        )
        assert checked.returncode == 0, checked.stderr
        assert list(temp.iterdir()) == []
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
