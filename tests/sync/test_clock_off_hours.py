"""The manager's opening hours read on central's clock while the box's is known to be off (a hardware clock kept in
local time, a box without a battery): the alerts that wait for opening hours neither wait through a service nor
go out at night."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client, mail_to, post
from tests.sync.conftest import Agents


async def test_a_printer_off_in_service_by_centrals_clock_is_critical_though_the_boxs_clock_says_closed(
    sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink, printers: dict[str, SimPrinter]
) -> None:
    """The box's clock is two hours ahead (its hardware clock in local time, in summer), which central's answers
    show; by central's clock the store is open for another hour or more, by the box's it has closed. The kitchen
    printer goes off with a ticket waiting: the critical mail goes at once, as in service. Before (the clock76 probe,
    D2): held as `outside_hours` by the box's clock, which the agent had logged as off (`box_clock_off`), and nobody
    told."""
    hour = dt.datetime.now(dt.UTC).hour  # the agent's zone here is the system's, UTC; central's clock is this one
    sections = mail_to(sink)
    sections["alerts"]["opening_hours"] = f"{(hour - 1) % 24:02d}:00-{(hour + 2) % 24:02d}:00"
    agent, events = await agents.start(sync_settings(sections=sections), clock=SteppedClock(wall_offset=7200))
    await events.wait(RecoveryCompleted)  # central has answered: its clock is known
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        assert (await post(api, make_order(1, prefix="late", print_receipt=False)))[0] == 201
    [mail] = await sink.wait_for(1, timeout=15)
    assert "STÖRUNG (kritisch): Drucker kitchen nicht erreichbar" in str(mail["Subject"]), mail["Subject"]


async def test_the_links_since_is_the_moment_it_came_up_as_the_clock_now_tells_after_ntp_stepped_it(
    sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The box boots an hour behind, the link comes up, then NTP steps the clock right: the status (and the page) say
    the link is up since the moment it came up, on the clock as it is now, not an hour before. Before (the clock76
    probe, D5): "up since 23:52" of the day before, never corrected."""
    clock = SteppedClock(wall_offset=-3600)
    agent, events = await agents.start(sync_settings(), clock=clock)
    await events.wait(RecoveryCompleted)
    clock.step(3600)  # NTP
    async with api_client(agent) as api, api.get("/api/v1/recovery/status") as response:
        link = (await response.json())["link"]
    assert link["up"] is True and abs(link["since"] - time.time()) < 60, link
