"""What a start costs the box: python-escpos' printer database is parsed once, cached in the data folder, and no start
leaves a file behind in the temporary folder (on many boxes /tmp is on the same SD card)."""

from __future__ import annotations

from pathlib import Path

from edge.sim.printer import SimPrinter
from tests.helpers import agent_process


async def test_starts_leave_nothing_in_tmp_and_reuse_the_escpos_cache(tmp_path: Path) -> None:
    """Two starts of the real agent with TMPDIR pointing at an empty folder: no file is left there, the printer
    database is pickled once into data/cache and the second start reads it (the file is not rewritten)."""
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
        # python-escpos still makes an empty folder there on import (mkdtemp() evaluated as a default argument).
        assert [f for f in temp.rglob("*") if f.is_file()] == []
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
