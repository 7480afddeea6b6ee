"""The shipped [central] defaults: recovery starts within 5 s of the line coming back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge.config import Settings
from edge.events import CentralLinkChanged, RecoveryStarted
from edge.sim.central import CentralSim
from tests.sync.conftest import CENTRAL_TOKEN, Agents


async def test_with_default_settings_recovery_starts_within_5_s_of_the_line_coming_back(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only url and token set. The agent starts while the line is down; when it comes back the recovery run's first
    call follows within 5 s, even when the random start delay is at its largest."""
    monkeypatch.setattr("edge.sync.recovery.random.uniform", lambda low, high: high)
    central.create_orders(3, prefix="dflt")
    await central.set_up(False)
    _, events = await agents.start(make_settings(central={"url": central.url, "token": CENTRAL_TOKEN}))
    await events.wait(CentralLinkChanged, where=lambda e: not e.up)
    await central.set_up(True)
    [started] = await events.wait(RecoveryStarted, timeout=8)
    assert central.up_at is not None and started.at - central.up_at < 5.0
