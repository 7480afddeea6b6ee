"""The job preview answers for every job in the database, also one an older version stored that cannot render."""

from __future__ import annotations

import json

import aiohttp

from edge.app import Agent
from edge.sim.printer import SimPrinter
from tests.helpers import db_execute, eventually, job_rows, post


async def test_a_job_that_cannot_render_previews_as_409_not_500(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """An order stored before intake bounded its dates (due in year 9999): its preview answers 409 saying why, never
    a 500."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")
    example_order["fulfilment"]["due_at"] = "9999-12-31T23:59:59+14:00"
    await db_execute(agent, "UPDATE orders SET payload = ?", json.dumps(example_order))
    async with api.get("/api/v1/jobs/1/preview") as response:
        body = await response.json()
        assert (response.status, body["error"]) == (409, "wrong_state"), body
        assert "cannot be rendered" in body["reason"]
