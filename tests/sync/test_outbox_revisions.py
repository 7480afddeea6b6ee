"""The status outbox reports order changes and cancellations to the central simulator, once each."""

from __future__ import annotations

import json
from collections.abc import Callable

from edge.config import Settings
from edge.events import RecoveryCompleted
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from tests.helpers import api_client, key_mark, post, wait_until
from tests.sync.conftest import Agents


async def test_updated_and_cancelled_are_reported_with_idempotency_keys(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A pushed change and a cancellation reach central as `updated` and `cancelled` events, keyed by order and
    revision (`<id>:updated:2`), with the revision and the reason; a repeated cancel sends nothing more."""
    order = make_order(1, prefix="o")
    central.add_orders([order])
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    changed = json.loads(json.dumps(order)) | {"revision": 2}
    changed["items"][0]["qty"] += 1
    async with api_client(agent) as api:
        assert (await post(api, changed))[0] == 200
        for _ in range(2):
            async with api.post("/api/v1/orders/o_000001/cancel", json={"revision": 3, "reason": "no show"}) as r:
                assert r.status == 200
    await wait_until(lambda: central.events_of("cancelled"), what="the cancellation reported")
    [updated] = central.events_of("updated")
    [cancelled] = central.events_of("cancelled")
    mark = await key_mark(agent)
    assert updated["idempotency_key"] == f"o_000001:updated:2{mark}" and updated["revision"] == 2
    assert cancelled["idempotency_key"] == f"o_000001:cancelled:3{mark}" and cancelled["reason"] == "no show"
