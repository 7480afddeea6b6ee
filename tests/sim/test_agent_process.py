"""The agent started as a child process by the crash test, the benchmark and the tests' helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, wait_until

# Starts the agent through AgentProcess (from the tests' warm process when a folder for its socket is given), prints
# its pid, then waits to be killed.
STARTER = """
import asyncio, sys
from pathlib import Path
from edge.sim.process import AgentProcess
from tests.warm import Starter

if len(sys.argv) > 4:
    AgentProcess.starter = Starter(Path(sys.argv[4]))

async def main():
    agent = AgentProcess(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
    await agent.start()
    print(agent.proc.pid, flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("warm", [False, True], ids=["exec", "warm"])
async def test_an_agent_ends_when_the_process_that_started_it_is_killed(
    tmp_path: Path, printers: dict[str, SimPrinter], warm: bool
) -> None:
    """The process that started the agent (a benchmark run or a test worker killed at its timeout) dies by SIGKILL:
    the agent gets SIGTERM and ends, instead of running on as an orphan beside the next tests, its printers polled
    and its port held (before: four such agents still ran an hour after timed-out bench runs). ``warm``: the agent
    forked from the tests' warm process (tests/warm.py), which ends with the process that started it."""
    agent = agent_process(tmp_path, printers)
    more = [str(tmp_path)] if warm else []
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STARTER, str(agent.config), str(agent.port), str(agent.log), *more, stdout=subprocess.PIPE
    )
    agent_pid = 0
    try:
        assert starter.stdout is not None
        agent_pid = int(await asyncio.wait_for(starter.stdout.readline(), timeout=30))
        assert _alive(agent_pid)
        assert (_parent(agent_pid) == starter.pid) != warm  # the warm process' child, not its starter's
        starter.kill()
        await starter.wait()
        await wait_until(lambda: not _alive(agent_pid), timeout=15, what="the orphaned agent gone")
    finally:
        if starter.returncode is None:
            starter.kill()
            await starter.wait()
        if agent_pid and _alive(agent_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent_pid, signal.SIGKILL)
