"""What anyone who can reach the port may read: operational state only, never a guest's data."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from edge.app import Agent
from edge.sim.printer import SimPrinter
from tests.helpers import api_client

# What the example order carries about its guest: name, phone number, an item note.
PERSONAL = ("JürgenGroß", "Jürgen", "Groß", "+493012345", "1234567", "ohneBasilikum")
PARAM = re.compile(r"\{(\w+)\}")


def leaks(text: str) -> list[str]:
    flat = re.sub(r"\s+", "", text)  # big print on tickets spreads letters apart: "J ü r g e n"
    return [p for p in PERSONAL if p.replace(" ", "") in flat]


async def test_a_guessing_client_without_token_reads_no_personal_data(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict[str, Any], printers: dict[str, SimPrinter]
) -> None:
    """Without the token, every GET route of the running server, with job ids guessed from 0 to 40 and the order id
    seen on the public page, answers without the guest's name, phone number or notes (the ticket text among them)."""
    async with api.post("/api/v1/orders", json=example_order) as response:
        assert response.status == 201
        job_ids = (await response.json())["job_ids"]
    await printers["kitchen"].wait_for_printed(1)
    async with api.get(f"/api/v1/jobs/{job_ids[0]}/preview") as response:  # with the token: the whole ticket
        assert response.status == 200 and leaks(await response.text()), "the ticket no longer shows the guest?"

    assert agent._runner is not None
    templates = sorted({r.resource.canonical for r in agent._runner.app.router.routes() if r.method == "GET"})
    guesses = {"job_id": [str(n) for n in range(41)], "order_id": [example_order["id"]], "run_id": ["1"]}
    answered: dict[str, int] = {}
    async with api_client(agent, token=None) as anonymous:
        for template in templates:
            names = PARAM.findall(template)
            urls = [template]
            for name in names:
                urls = [u.replace("{" + name + "}", value) for u in urls for value in guesses.get(name, ["x"])]
            for url in urls:
                async with anonymous.get(url) as response:
                    text = await response.text(errors="replace")
                    assert not leaks(text), (url, response.status, leaks(text), text[:300])
                    answered[url] = response.status
    assert answered["/"] == 200 and answered["/status/panel"] == 200  # the public page is still there
    assert example_order["number"] in (await _page(agent))  # with the order number: operational, not personal


async def _page(agent: Agent) -> str:
    async with api_client(agent, token=None) as browser, browser.get("/") as response:
        return await response.text()
