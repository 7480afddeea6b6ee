"""The box's wall clock jumps (NTP steps it by hours, a box without a battery boots in 1970): retry delays, staleness,
paused-printer probing and failover timing do not change with it. The box sleeps (a suspend): waits count the sleep."""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from edge.app import Agent
from edge.sim.central import CentralSim
from edge.sim.orders import due_at, make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.smtp import SmtpSink
from tests.config.box import unshare_permitted
from tests.helpers import (
    CENTRAL_TOKEN,
    TOKEN,
    agent_process,
    api_client,
    asap,
    db_rows,
    eventually,
    job_rows,
    mail_to,
    post,
    print_latency_sum,
    suspended,
    until,
    wait_until,
    waits_shown,
    wall_clock_off,
)
from tests.printing.conftest import YEARS_56, BoxClock

HOURS_8 = 8 * 3600


@pytest.mark.parametrize("step", [-HOURS_8, HOURS_8])
async def test_a_retry_never_waits_longer_than_its_cap_whatever_the_clock_did(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, step: float
) -> None:
    """A job failed (printer hung up), its retry is due in at most retry_max_s; the clock steps 8 h back (or ahead)
    meanwhile: the retry still comes within the cap, not 8 h later."""
    agent = await make_agent(clock=box_clock, spool={"retry_base_s": 1.0, "retry_max_s": 1.0})
    printers["kitchen"].drop_after = 10
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "failed")
    box_clock.step(step)
    await printers["kitchen"].wait_for_printed(2, timeout=4)  # the cut-short first try, then the retry
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", 1, 1)])


async def test_a_step_while_the_spool_reads_when_its_retry_is_due_does_not_delay_the_retry(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    box_clock: BoxClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clock steps 8 h back just while the spool reads when its failed job is due again (the interleaving that
    made the test above fail now and then: 1 of 2 printed after 10 s). The retry still comes within its cap of 1 s,
    not at the next status poll (10 s) or idle wake-up (30 s) (before: not printed within 4 s)."""
    agent = await make_agent(clock=box_clock, spool={"retry_base_s": 1.0, "retry_max_s": 1.0})
    jobs = agent.spoolers["kitchen"]._jobs
    read_due_at = jobs.next_due_at
    stepped = []

    async def step_while_reading(printer: str, now: float, *, max_delay: float, skip: Collection[int]) -> float | None:
        due = await read_due_at(printer, now, max_delay=max_delay, skip=skip)
        if due is not None and not stepped:  # the failed job's retry
            stepped.append(now)
            box_clock.step(-HOURS_8)
        return due

    monkeypatch.setattr(jobs, "next_due_at", step_while_reading)
    printers["kitchen"].drop_after = 10
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await printers["kitchen"].wait_for_printed(2, timeout=4)
    assert stepped


async def test_a_dead_ticket_retried_after_a_clock_step_reports_the_time_it_really_waited(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A ticket's only attempt is cut short (the printer hangs up): it is dead. A minute passes, NTP steps the clock
    back 8 hours, a person retries it and it prints. Its print latency (/metrics) is the minute and more since it was
    stored, on the monotonic clock (before: 0, taken again from the stepped wall clock)."""
    agent = await make_agent(clock=box_clock, spool={"max_attempts": 1})
    printers["kitchen"].drop_after = 10
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "dead")
        box_clock.advance(61)
        box_clock.step(-HOURS_8)
        (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
        async with api.post(f"/api/v1/jobs/{job_id}/retry") as response:
            assert response.status == 200
        await printers["kitchen"].wait_for_printed(2)  # the cut-short attempt, then the retry
        await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")
        assert 61 <= await print_latency_sum(api, "kitchen") < 120


@pytest.mark.parametrize(("start", "step"), [(-YEARS_56, YEARS_56), (0, HOURS_8), (0, -HOURS_8)])
async def test_a_clock_step_while_tickets_wait_does_not_make_them_stale(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    box_clock: BoxClock,
    start: float,
    step: float,
) -> None:
    """Fresh tickets wait for an offline printer; the clock steps (1970 → now when NTP syncs; 8 h ahead; 8 h back);
    the printer returns: every ticket prints, none is held as stale."""
    box_clock.step(start)
    agent = await make_agent(clock=box_clock)
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        for n in range(2):
            order = make_order(n, print_receipt=False, created_at=None)
            assert (await post(api, order))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    box_clock.step(step)
    printers["kitchen"].set_offline(False)
    await printers["kitchen"].wait_for_printed(2, timeout=6)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "printed"])


async def test_a_step_back_does_not_make_a_stale_ticket_fresh(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A ticket waits longer than its stale age for an offline printer; the clock steps 8 h back; the printer returns:
    the ticket is still held, not sprayed into the rush."""
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})  # the clock moves past it
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        assert (await post(api, asap(make_order(1, print_receipt=False))))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw it off
    box_clock.advance(61)  # a minute passes with the printer off: longer than the stale age
    box_clock.step(-HOURS_8)
    printers["kitchen"].set_offline(False)
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "held", timeout=6)
    assert printers["kitchen"].printed == []


@pytest.mark.parametrize("fresh_order", [True, False], ids=["an_order_since", "nothing_since"])
async def test_a_stale_ticket_is_still_held_after_a_restart_with_the_clock_behind_the_last_time_the_store_wrote(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, fresh_order: bool
) -> None:
    """A ticket waits a minute for the kitchen printer, longer than its stale age; meanwhile a fresh order comes in, or
    nothing. The agent stops (a reboot, a power cut's fake-hwclock: no hardware clock, it restores the time it last
    saved) and starts with its clock an hour behind, the printer is back: the old ticket is held, the fresh one
    prints. Before stop 62 (print probe s07 back) the old ticket's wait was read off the clock at the start (behind
    the time its job was stored: no wait at all), and it printed as if fresh. The store's last write bounds "now" from
    below: the fresh order's rows, or with nothing stored since, the time the clean stop wrote (JobStore.mark_stopped).
    """
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})
    printers["kitchen"].set_offline(True)

    def order(seq: int) -> dict:
        return asap(make_order(seq, print_receipt=False, created_at=datetime.fromtimestamp(box_clock.wall(), UTC)))

    async with api_client(agent) as api:
        assert (await post(api, order(1)))[0] == 201
        await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
        box_clock.advance(61)
        if fresh_order:
            assert (await post(api, order(2)))[0] == 201
    await agent.stop()
    box_clock.step(-3600)
    printers["kitchen"].set_offline(False)
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})
    expected = [("ord_000001", "held")] + ([("ord_000002", "printed")] if fresh_order else [])
    await eventually(
        lambda: job_rows(agent, "SELECT order_id, state FROM print_jobs ORDER BY id"),
        lambda rows: rows == expected,
        timeout=6,
    )
    assert ["A-1002" in ticket.decode("cp858") for ticket in printers["kitchen"].printed] == [True] * fresh_order


async def test_a_ticket_that_waited_before_a_step_back_and_a_clean_restart_keeps_its_wait(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """No central link. A ticket waits 35 s for the kitchen printer; NTP sets the clock an hour back; the agent is
    restarted cleanly 10 s later; 30 s after that the printer is back: the ticket has waited 75 s, past its stale age
    (60 s), and is held. A clean stop keeps each waiting job's wait as the monotonic clock measured it. Before (clock
    probe, s04): the stop's time was written on the stepped clock, earlier than the job, the wait before the restart
    was lost, and the ticket printed unmarked into the rush."""
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})
    printers["kitchen"].set_offline(True)
    created = datetime.fromtimestamp(box_clock.wall(), UTC)
    async with api_client(agent) as api:
        assert (await post(api, asap(make_order(1, print_receipt=False, created_at=created))))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    box_clock.advance(35)
    box_clock.step(-3600)
    box_clock.advance(10)
    await agent.stop()
    agent = await make_agent(clock=box_clock, printing={"stale_ticket_min": 1})
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    box_clock.advance(30)
    printers["kitchen"].set_offline(False)
    await eventually(lambda: job_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("held",)])
    assert printers["kitchen"].printed == []


async def killed_then_started_two_hours_ahead(
    tmp_path: Path, printers: dict[str, SimPrinter], shim: Path, extra: str = ""
) -> tuple[AgentProcess, float]:
    """Two fresh kitchen tickets wait for paper; the agent is killed (the watchdog, the OOM killer: no clean stop
    keeps their waits) and starts again in the same boot with its wall clock 2 h ahead (NTP, a person; the monotonic
    clock goes on). Returns the agent started again and the monotonic time the first ticket was answered."""
    agent = agent_process(tmp_path, printers, extra=extra)
    await agent.start()
    printers["kitchen"].paper_out = True
    async with api_client(agent.port) as api:
        taken = time.monotonic()
        for seq in (1, 2):
            order = make_order(seq, print_receipt=False, created_at=datetime.now(UTC))
            assert (await post(api, order))[0] == 201
    await asyncio.sleep(1)
    await agent.kill()
    again = AgentProcess(agent.config, agent.port, agent.log, env=wall_clock_off(shim, 2 * 3600))
    await again.start(timeout=30)
    return again, taken


@pytest.mark.parametrize("end", ["stopped", "killed"])
async def test_a_ticket_that_waited_past_its_stale_age_across_a_suspend_is_held_not_printed(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path, end: str
) -> None:
    """No central link, stale_ticket_min = 1. A kitchen ticket waits for its printer, switched off; the agent is
    stopped cleanly (or killed), the box sleeps 60 s (a desktop image's idle suspend, a laptop's lid) and the agent
    starts again in the same boot: the shim leaves CLOCK_MONOTONIC behind CLOCK_BOOTTIME by the sleep, as the kernel
    does. The printer comes back: the ticket has waited over 60 s of real time and is held. Before stop 83 (the boot83
    probe, F1) its wait was read on CLOCK_MONOTONIC, which does not count a suspend: a few seconds, and it printed
    unmarked as fresh."""
    agent = agent_process(tmp_path, printers, extra="\n[printing]\nstale_ticket_min = 1\n")
    printers["kitchen"].set_offline(True)
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            order = asap(make_order(1, print_receipt=False, created_at=datetime.now(UTC)))
            assert (await post(api, order))[0] == 201
        if end == "stopped":
            assert await agent.terminate() == 0
        else:
            await agent.kill()
    finally:
        await agent.close()
    agent = AgentProcess(agent.config, agent.port, agent.log, env=suspended(wall_clock_shim, 60))
    await agent.start(timeout=30)
    try:
        printers["kitchen"].set_offline(False)
        held = await eventually(
            lambda: db_rows(tmp_path / "data" / "edge.db", "SELECT state FROM print_jobs"),
            lambda rows: bool(rows) and rows[0][0] in ("held", "printed"),
            what="the ticket held or printed",
        )
        assert held == [("held",)]
        assert printers["kitchen"].printed == []
    finally:
        await agent.close()


async def test_fresh_tickets_of_an_agent_killed_and_started_with_the_clock_two_hours_ahead_print(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path
) -> None:
    """Tickets that waited seconds print when the paper is back, after a kill and a start in the same boot with the
    clock 2 h ahead: their waits are the monotonic clock's (the job rows keep it), as after a clean stop. Before stop
    82 (the prom82 probe, F2) they were held as stale (age_s=7209: the wait read off the stepped wall clock) and
    never printed, answered 201."""
    agent, _ = await killed_then_started_two_hours_ahead(tmp_path, printers, wall_clock_shim)
    try:
        printers["kitchen"].paper_out = False
        await printers["kitchen"].wait_for_printed(2, timeout=15)
        await eventually(
            lambda: db_rows(tmp_path / "data" / "edge.db", "SELECT state FROM print_jobs WHERE printer = 'kitchen'"),
            lambda rows: rows == [("printed",), ("printed",)],
        )
    finally:
        await agent.close()


NIGHT = 10 * 3600


def rebooted(tmp_path: Path) -> list[str]:
    """A command prefix (AgentProcess's ``wrap``) under which the agent reads another boot id than the box's, as after
    a power cut: the monotonic clock's times of the run before mean nothing in it (needs root: unshare -m)."""
    boot = tmp_path / "boot_id"
    boot.write_text(f"{uuid.uuid4()}\n")
    mount = f'mount --bind {boot} /proc/sys/kernel/random/boot_id && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]


async def power_cut_then_morning(
    tmp_path: Path, printers: dict[str, SimPrinter], shim: Path, central: CentralSim, *, evening: int, morning: int
) -> tuple[AgentProcess, str]:
    """The evening (box and central ``evening`` s off the real time): the kitchen printer is off, an order is taken
    and its ticket waits; a power cut (SIGKILL). The morning: a new boot with the box's clock ``morning`` s off, central
    on the real time but its first answer 2 s away (DNS, TLS, a router still booting), the printer on. Returns the
    agent of the morning and the evening order's number."""
    link = f'\n[central]\nurl = "{central.url}"\ntoken = "{CENTRAL_TOKEN}"\nstart_jitter_s = 0\n'
    central.clock_offset_s = evening
    agent = agent_process(tmp_path, printers, env=wall_clock_off(shim, evening), extra=link)
    await agent.start()
    printers["kitchen"].set_offline(True)
    order = make_order(1, print_receipt=False, created_at=datetime.fromtimestamp(time.time() + evening, UTC))
    async with api_client(agent.port) as api:
        assert (await post(api, order))[0] == 201
    await asyncio.sleep(0.5)
    await agent.kill()
    central.clock_offset_s, central.latency_s = 0, 2.0
    printers["kitchen"].set_offline(False)
    env = wall_clock_off(shim, morning)
    again = AgentProcess(agent.config, agent.port, agent.log, env=env, wrap=rebooted(tmp_path))
    await again.start(timeout=30)
    return again, order["number"]


@pytest.mark.skipif(not unshare_permitted(), reason="needs `unshare -m` (root) to stage a new boot id")
async def test_a_ticket_from_last_night_is_held_in_the_morning_when_the_box_clock_restored_last_nights_time(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path
) -> None:
    """A ticket waits from the evening (10 h ago); power cut; the box boots with its clock restored to the evening
    (fake-hwclock, no RTC), central answers 2 s after the start. The ticket is held as stale, never printed into the
    morning; an order of the morning prints at once all the same. Before stop 83 (boot83 F3) the spool decided on the
    box's clock before central's first answer and printed the 10-hour-old ticket as an original 75 ms after READY."""
    central = CentralSim("test-store", token=CENTRAL_TOKEN, strict=False)
    await central.start()
    try:
        agent, number = await power_cut_then_morning(
            tmp_path, printers, wall_clock_shim, central, evening=-NIGHT, morning=-NIGHT + 5
        )
        try:
            async with api_client(agent.port) as api:
                assert (await post(api, make_order(2, print_receipt=False, created_at=datetime.now(UTC))))[0] == 201
            await printers["kitchen"].wait_for_printed(1, timeout=15)
            await eventually(
                lambda: db_rows(tmp_path / "data" / "edge.db", "SELECT id, state FROM print_jobs ORDER BY id"),
                lambda rows: rows == [(1, "held"), (2, "printed")],
                what="the evening's ticket held, the morning's printed",
            )
            assert not any(number in ticket.decode("cp858", "replace") for ticket in printers["kitchen"].printed)
        finally:
            await agent.close()
    finally:
        await central.stop()


@pytest.mark.skipif(not unshare_permitted(), reason="needs `unshare -m` (root) to stage a new boot id")
async def test_a_fresh_ticket_prints_after_a_reboot_with_the_box_clock_two_hours_ahead_once_central_answers(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path
) -> None:
    """A ticket seconds old waits; power cut; the box boots with its clock 2 h ahead (a hardware clock kept in local
    time), central answers 2 s after the start: the ticket prints, not held. Before stop 83 (boot83 F3b) it was held
    for a person 13-36 ms after READY, on the box's clock, before central's first answer (a hold is final)."""
    central = CentralSim("test-store", token=CENTRAL_TOKEN, strict=False)
    await central.start()
    try:
        agent, _ = await power_cut_then_morning(tmp_path, printers, wall_clock_shim, central, evening=0, morning=7200)
        try:
            await printers["kitchen"].wait_for_printed(1, timeout=15)
            await eventually(
                lambda: db_rows(tmp_path / "data" / "edge.db", "SELECT state FROM print_jobs"),
                lambda rows: rows == [("printed",)],
                what="the ticket printed",
            )
        finally:
            await agent.close()
    finally:
        await central.stop()


async def test_the_queues_age_after_a_kill_and_a_start_two_hours_ahead_of_central_is_the_real_wait(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path
) -> None:
    """With a central link that has answered (the box is 120 min ahead of it), a ticket that waited seconds before the
    kill and the start 2 h ahead shows its real wait in /metrics (edge_oldest_queued_job_age_seconds) and on the
    status page (oldest_waiting_s), the same corrected wait its hold reads. Before stop 82 (the prom82 probe, F4)
    both said about 7215 s, and EdgeQueueStuck would fire for a ticket 15 s old."""
    central = CentralSim("test-store", token=CENTRAL_TOKEN, strict=False)
    await central.start()
    link = f'\n[central]\nurl = "{central.url}"\ntoken = "{CENTRAL_TOKEN}"\nstart_jitter_s = 0\n'
    agent, taken = await killed_then_started_two_hours_ahead(tmp_path, printers, wall_clock_shim, link)
    try:
        async with api_client(agent.port) as api:
            await until(
                api,
                "/api/v1/status",
                lambda status: (status["central"] or {}).get("box_minus_central_s") is not None,
                "central's clock",
            )
        gauge, shown = await waits_shown(agent.port)
        waited = time.monotonic() - taken
        assert gauge <= waited + 1 and shown <= waited + 1, (gauge, shown, waited)
    finally:
        await agent.close()
        await central.stop()


class RebootedBox(BoxClock):
    """The box's clocks after a reboot: another boot id, whose monotonic clock says nothing of the one before, and no
    word from NTP yet (whatever the test machine's kernel says)."""

    def boot(self) -> str:
        return "another-boot"

    def synchronized(self) -> bool:
        return False


async def test_tickets_from_before_a_reboot_are_aged_on_the_box_clock_when_nothing_confirms_it_within_45_s(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A ticket waits for an offline printer; the box reboots without a central link and without NTP (the WAN still
    out after the power cut), the printer on: the ticket waits, and the status says it waits for the clock; 45 s on
    (the monotonic clock moved, not slept) the box's clock decides as before stop 83: a fresh ticket prints."""
    agent = await make_agent(clock=box_clock)
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False, created_at=datetime.now(UTC))))[0] == 201
    await agent.stop()
    printers["kitchen"].set_offline(False)
    rebooted = RebootedBox()
    agent = await make_agent(clock=rebooted)
    async with api_client(agent) as api, api.get("/api/v1/status") as response:
        assert (await response.json())["waiting_for_clock"] == 1
    await asyncio.sleep(0.5)
    assert printers["kitchen"].printed == []
    rebooted.advance(46)
    await printers["kitchen"].wait_for_printed(1, timeout=5)
    async with api_client(agent) as api, api.get("/api/v1/status") as response:
        assert (await response.json())["waiting_for_clock"] == 0


async def test_the_queues_age_after_a_reboot_two_hours_ahead_of_central_is_its_wait_on_centrals_clock(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """A ticket waits for an offline printer; the box reboots (no wait kept on the monotonic clock) with its clock 2 h
    ahead, and central answers: /metrics and the status page show the queue's age on central's clock, as the hold
    reads it (seconds), not 2 h. Before stop 82 (the prom82 probe, F4) the queue's age was the wall clock's alone."""
    central = CentralSim("test-store", token=TOKEN)
    await central.start()
    link = {"url": central.url, "token": TOKEN, "start_jitter_s": 0, "schedule_interval_s": 0}
    late = {"stale_ticket_min": 180}  # not held: a clock 2 h ahead with no answer from central yet holds the ticket
    try:
        agent = await make_agent(clock=box_clock, central=link, printing=late)
        printers["kitchen"].set_offline(True)
        async with api_client(agent) as api:
            order = make_order(1, print_receipt=False, created_at=datetime.fromtimestamp(time.time(), UTC))
            assert (await post(api, order))[0] == 201
        await agent.stop()
        box_clock.step(2 * 3600)
        agent = await make_agent(clock=RebootedBox(wall_offset=box_clock.wall_offset), central=link, printing=late)
        assert agent.deps is not None and agent.deps.sync is not None
        central_time = agent.deps.sync.central_time
        await wait_until(lambda: central_time is not None and central_time.wall() is not None, what="central's Date")
        metric, shown = await waits_shown(agent)
        assert 0 <= metric < 60 and 0 <= shown < 60, (metric, shown)
    finally:
        await central.stop()


@pytest.mark.parametrize("step", [-HOURS_8, HOURS_8])
async def test_a_paused_printer_resumes_within_two_seconds_of_the_fix_across_a_step(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, step: float
) -> None:
    """Paper out pauses the spool; the clock steps 8 h either way; a new roll: the ticket prints within 2 s."""
    agent = await make_agent(clock=box_clock)
    printers["kitchen"].paper_out = True
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "paper_out")
    box_clock.step(step)
    await asyncio.sleep(0.3)
    printers["kitchen"].paper_out = False
    started = time.monotonic()
    await printers["kitchen"].wait_for_printed(1, timeout=5)
    assert time.monotonic() - started < 2.0


async def test_failover_waits_on_the_monotonic_clock(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock
) -> None:
    """The primary has been paused for failover_after_s on the monotonic clock (moved forward, not slept): its
    tickets move to the backup; a wall-clock step of 8 h alone moves nothing."""
    agent = await make_agent(
        clock=box_clock, stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 60}
    )
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")
    box_clock.step(HOURS_8)
    await asyncio.sleep(1.2)  # two failover checks
    assert printers["front"].printed == []
    box_clock.advance(61)
    await printers["front"].wait_for_printed(1, timeout=4)
    await eventually(
        lambda: job_rows(agent, "SELECT printer, redirected_from, state FROM print_jobs"),
        lambda rows: rows == [("front", "kitchen", "printed")],
    )


async def test_a_box_years_behind_dates_its_alarm_by_centrals_clock_and_a_step_back_never_dates_a_mail_earlier(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, sink: SmtpSink
) -> None:
    """A box booted years behind (no battery clock) with a central link: its alarm mail is dated by central's clock,
    which its answers told, not 2021 (mail clients sort by Date: the critical alarm landed years down the inbox), and
    its body says since when on that clock too. Then the clock steps an hour back: the all-clear is not dated before
    the alarm. Before (clock probe, F3): the box's clock on both; before stop 66 (clock probe F2's in-run variant) the
    body's "Since" was still 2021: a five-year outage."""
    central = CentralSim("test-store", token=TOKEN)
    await central.start()
    try:
        box_clock.step(-2000 * 86400)
        mail = mail_to(sink)
        mail["alerts"]["group_interval_s"] = 1  # the all-clear at once
        agent = await make_agent(
            clock=box_clock,
            central={"url": central.url, "token": TOKEN, "start_jitter_s": 0, "schedule_interval_s": 0},
            **mail,
        )
        await wait_until(lambda: central.requests, what="central answered")
        printers["kitchen"].set_offline(True)
        async with api_client(agent) as api:
            assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
        [alarm] = await sink.wait_for(1, timeout=20)
        real = box_clock.wall() - box_clock.wall_offset
        alarm_at = email.utils.parsedate_to_datetime(alarm["Date"]).timestamp()
        assert abs(alarm_at - real) < 120, alarm["Date"]
        assert _since(alarm) == datetime.fromtimestamp(real).strftime("%d.%m.%Y"), _since(alarm)
        box_clock.step(-3600)
        printers["kitchen"].set_offline(False)
        _, cleared = await sink.wait_for(2, timeout=30)
        assert email.utils.parsedate_to_datetime(cleared["Date"]).timestamp() >= alarm_at - 1, cleared["Date"]
        assert _since(cleared) == _since(alarm), _since(cleared)
    finally:
        await central.stop()


def _since(mail: EmailMessage) -> str:
    """The day in the plain body's "Seit:" line (the agent's timezone is the box's here)."""
    body = mail.get_body(("plain",))
    assert body is not None
    [line] = [line for line in body.get_content().splitlines() if line.startswith("Seit:")]
    return line.split()[1]


async def test_an_all_clear_after_a_step_back_and_a_restart_is_not_dated_before_its_alarm(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], box_clock: BoxClock, sink: SmtpSink
) -> None:
    """Without a central link mails are dated by the box's clock. The kitchen printer's alarm goes; NTP sets the clock
    an hour back (a hardware clock kept in local time); the agent restarts (an upgrade); the printer comes back: the
    all-clear is not dated before its alarm (mail clients sort by Date: the newest mail on top said the printer was
    down). Before stop 66 (clock probe F3, s04) the floor was the run's own memory, and the restart forgot it."""
    mail = mail_to(sink)
    mail["alerts"]["group_interval_s"] = 1  # the all-clear at once
    agent = await make_agent(clock=box_clock, **mail)
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, print_receipt=False)))[0] == 201
    [alarm] = await sink.wait_for(1, timeout=20)
    await agent.stop()
    box_clock.step(-3600)
    agent = await make_agent(clock=box_clock, **mail)
    printers["kitchen"].set_offline(False)
    _, cleared = await sink.wait_for(2, timeout=30)
    assert "BEHOBEN" in cleared["Subject"], cleared["Subject"]
    alarm_at = email.utils.parsedate_to_datetime(alarm["Date"]).timestamp()
    assert email.utils.parsedate_to_datetime(cleared["Date"]).timestamp() >= alarm_at, (alarm["Date"], cleared["Date"])


@pytest.mark.parametrize("step_s", [-2 * 3600, 2 * 3600])
async def test_held_tickets_show_their_real_wait_and_age_after_a_kill_and_a_start_with_the_clock_stepped(
    tmp_path: Path, printers: dict[str, SimPrinter], wall_clock_shim: Path, step_s: int
) -> None:
    """Two tickets held as stale (stale after 3 s, the printer off that long); the agent is killed and starts again
    in the same boot with its wall clock stepped 2 h (NTP, a person). The status API and page show each held ticket's
    wait and its order's age as the hold reads them, seconds, not the stepped wall clock's. Before stop 83 (the boot83
    probe, F5) they said "waited -7179 s, order 0 s old" after a step back and "order 2 h old" after one forward: a
    person may discard an order seconds old, answered 201, as two hours stale."""
    agent = agent_process(tmp_path, printers, extra="\n[printing]\nstale_ticket_min = 0.05\n")
    await agent.start()
    printers["kitchen"].set_offline(True)
    db = tmp_path / "data" / "edge.db"
    async with api_client(agent.port) as api:
        taken = time.monotonic()
        for seq in (1, 2):
            order = due_at(
                make_order(seq, print_receipt=False, created_at=datetime.now(UTC)), None
            )  # as soon as may be
            assert (await post(api, order))[0] == 201
    await asyncio.sleep(3.5)
    printers["kitchen"].set_offline(False)  # the spool looks again: too old by now, held
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE state = 'held'"), lambda r: r == [(2,)], what="held"
    )
    await agent.kill()
    agent = AgentProcess(agent.config, agent.port, agent.log, env=wall_clock_off(wall_clock_shim, step_s))
    await agent.start(timeout=30)
    try:
        async with api_client(agent.port) as api, api.get("/api/v1/status") as response:
            held = (await response.json())["held_jobs"]
        real = time.monotonic() - taken
        assert len(held) == 2
        for job in held:
            assert 0 <= job["waited_s"] <= real + 1 and 0 <= job["order_age_s"] <= real + 1, (job, real)
            assert job["waited_s"] >= 3 and job["order_age_s"] >= 3, (job, real)  # held at 3 s: not a fresh one
    finally:
        await agent.close()
