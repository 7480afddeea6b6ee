"""POST /api/v1/jobs/release-held: "Release all" prints the tickets the person counted, not those held since."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.sim.printer import SimPrinter
from tests.appliance.test_status_page import held_rows, hold_more, hold_tickets
from tests.helpers import api_client


async def test_release_all_with_the_counted_ids_releases_only_those_still_held_and_reports_the_rest(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The dialog counted 3 held tickets; 2 more were held while it was open, and someone else released one of the
    3. The request carries the 3 ids: the 2 still held of them print, the one released before is reported, and the
    2 held since stay held (they were printed too: "agreed to 3, printed 5"). Without a body (scripts), every held
    ticket prints, as before."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 3)
    counted = [h["job_id"] for h in held]
    later = [h["job_id"] for h in await hold_more(agent, example_order, printers, range(3, 5))]
    async with api_client(agent) as api:
        async with api.post(f"/api/v1/jobs/{counted[0]}/release") as response:
            assert response.status == 200  # someone else, meanwhile
        async with api.post("/api/v1/jobs/release-held", json={"job_ids": counted}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer == {"released": counted[1:], "not_released": counted[:1], "still_held": 2}
        await printers["kitchen"].wait_for_printed(3)
        await asyncio.sleep(0.3)
        assert len(printers["kitchen"].printed) == 3
        assert {k: v for k, v in (await held_rows(agent)).items() if k in later} == {later[0]: "held", later[1]: "held"}
        bad_bodies = ({"job_ids": "1,2"}, {"job_ids": [1, "2"]}, {"job_ids": [True]}, {"ids": [1]}, [1, 2])
        # A negative id or one past SQLite's integers (newfeat probe F5: -1 was taken, 200)
        for bad in (*bad_bodies, {"job_ids": [-1]}, {"job_ids": [0]}, {"job_ids": [2**63]}):
            async with api.post("/api/v1/jobs/release-held", json=bad) as response:
                assert response.status == 422, bad
                assert (await response.json())["field"] == "job_ids"
        async with api.post("/api/v1/jobs/release-held") as response:
            assert response.status == 200
            assert await response.json() == {"released": later, "not_released": [], "still_held": 0}
        await printers["kitchen"].wait_for_printed(5)
