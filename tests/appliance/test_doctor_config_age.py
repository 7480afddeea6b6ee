"""`edge doctor` says when edge.toml changed after the running agent started (it runs the file as it was): never for a
file saved just before the start, always for one touched after the agent is ready. Before, the start was taken as now
minus the whole seconds of uptime minus one, and a config written, then the agent started at once (a scripted
rollout, a quick technician) was said to have changed: "restart it" again."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, edge, edge_blocking

CHANGED = "changed after the agent started"


async def _agent_line(config: Path) -> str:
    done = await asyncio.to_thread(edge_blocking, "doctor", "--config", str(config))
    [line] = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["agent"]]
    return line


async def test_a_config_saved_just_before_the_start_is_not_taken_for_a_change_and_one_touched_after_ready_is(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    agent = agent_process(tmp_path, printers)
    try:
        os.utime(agent.config)  # saved now, and the agent started at once
        await agent.start()
        before = await _agent_line(agent.config)
        assert before.startswith("OK") and CHANGED not in before, before
        os.utime(agent.config)  # touched while the agent runs
        after = await _agent_line(agent.config)
        assert after.startswith("WARN") and f"{agent.config} {CHANGED}" in after, after
    finally:
        await agent.close()


async def test_a_config_dated_ahead_of_the_clock_is_not_taken_for_a_change_after_the_restart(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """edge.toml saved while the box's clock was two hours ahead (a clock kept in local time before NTP set it right),
    then the agent restarted as the doctor said: the doctor still said "changed … restart", for up to two hours, so
    the step it named never cleared it (the week79 probe, F1). A file dated ahead of the clock says nothing of when
    it was saved: the agent line is OK."""
    agent = agent_process(tmp_path, printers)
    try:
        ahead = time.time() + 2 * 3600
        os.utime(agent.config, (ahead, ahead))
        await agent.start()
        line = await _agent_line(agent.config)
        assert line.startswith("OK") and CHANGED not in line, line
    finally:
        await agent.close()


@pytest.mark.parametrize("edited", ["port", "host"])
async def test_an_api_port_changed_while_the_agent_runs_is_not_taken_for_an_agent_that_is_down(
    tmp_path: Path, printers: dict[str, SimPrinter], edited: str
) -> None:
    """The technician changes api.port in edge.toml; the restart is still to come. The running agent takes and prints
    orders on the old port: `edge health`, `edge status` and `edge doctor` talk to it there (the port it records
    beside its lock), and the doctor says the config changed after the start, naming the port it runs on. Before stop
    80 they asked the new port only: the health timer mailed the manager "Edge-Agent läuft nicht … Bestellungen werden
    nicht angenommen oder gedruckt" while orders printed, and the doctor said FAIL "is the agent running?" (the
    config80 probe, F8). The same for api.host (the docs' step to a VPN address; the verify80 probe, V1)."""
    agent = agent_process(tmp_path, printers)
    agent.config.write_text(agent.config.read_text().replace("[api]\n", '[api]\nhost = "127.0.0.1"\n'))
    try:
        await agent.start()
        text = agent.config.read_text()
        assert f"port = {agent.port}" in text
        if edited == "port":
            agent.config.write_text(text.replace(f"port = {agent.port}", f"port = {free_port()}"))
        else:  # another loopback address: nothing listens there
            agent.config.write_text(text.replace('host = "127.0.0.1"', 'host = "127.0.0.2"'))
        health = await edge("health", "--config", str(agent.config))
        assert health.returncode == 0, health.stdout + health.stderr
        status = await edge("status", "--config", str(agent.config))
        assert status.returncode == 0, status.stdout + status.stderr
        line = await _agent_line(agent.config)
        assert line.startswith("WARN") and CHANGED in line and f"port {agent.port}" in line, line
    finally:
        await agent.close()


async def test_a_data_dir_moved_without_its_database_is_said_by_the_check_and_the_start(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The technician points agent.data_dir at a new disk and forgets to move edge.db; two tickets still wait in the
    old one. `edge config check` (the step after an edit) says the new folder holds no database and that the first
    start makes an empty one, and the start logs a new database made: before stop 80 check, start, status and doctor
    said nothing, and the two orders answered 201 never printed (the config80 probe, F6)."""
    agent = agent_process(tmp_path, printers, data_dir=tmp_path / "new-disk")
    (tmp_path / "new-disk").mkdir()  # made for it, as operations.md says
    check = await edge("config", "check", "--config", str(agent.config))
    assert check.returncode == 0, check.stderr
    assert f"{tmp_path / 'new-disk'} holds no database yet" in check.stderr, check.stderr
    try:
        await agent.start()
    finally:
        await agent.close()
    log = (tmp_path / "agent.log").read_text()
    assert "database_created" in log, log[-2000:]
