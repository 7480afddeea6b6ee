"""The OpenAPI document matches the running server: same routes, documented statuses, bodies that fit the schemas."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from openapi_spec_validator import validate as validate_spec

from edge.app import Agent
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import api_client, until
from tests.prove.spec import SPEC, check_answer, documented_routes


def test_document_is_valid_openapi() -> None:
    """The document itself passes the OpenAPI 3.1 validator."""
    validate_spec(SPEC)


def test_every_route_is_documented_and_every_documented_route_exists(full_agent: Agent) -> None:
    """The aiohttp router (every optional route on) and the document list exactly the same (method, path) pairs."""
    assert full_agent._runner is not None
    served = {(r.method, r.resource.canonical) for r in full_agent._runner.app.router.routes() if r.method != "HEAD"}
    assert served == documented_routes()


class Tour:
    """Calls the API and checks each answer against the document; remembers which (method, path) were reached."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.seen: set[tuple[str, str]] = set()

    async def go(self, method: str, template: str, expected: int, url: str | None = None, **kwargs: Any) -> Any:
        async with self.session.request(method, url or template, **kwargs) as response:
            raw = await response.read()
            body = json.loads(raw) if response.content_type == "application/json" else raw
            check_answer(method, template, response.status, response.content_type, body)
            assert response.status == expected, (method, url or template, body)
        self.seen.add((method, template))
        return body


async def test_each_operation_answers_as_documented(
    full_agent: Agent, printers: dict[str, SimPrinter], central: CentralSim
) -> None:
    """A tour through every operation and its main outcomes; each answer's status and body are in the document."""
    order = make_order(1, prefix="doc")
    async with api_client(full_agent) as api, api_client(full_agent, token=None) as anonymous:
        tour, open_tour = Tour(api), Tour(anonymous)
        orders, one, reprint = "/api/v1/orders", "/api/v1/orders/{order_id}", "/api/v1/orders/{order_id}/reprint"
        stored = await tour.go("POST", orders, 201, json=order)
        await tour.go("POST", orders, 200, json=order)
        await tour.go("POST", orders, 409, json={**order, "number": "A-9"})
        await tour.go("POST", orders, 400, data=b"{", headers={"Content-Type": "application/json"})
        await tour.go("POST", orders, 422, json={**order, "id": "doc_2", "items": []})
        await tour.go("POST", orders, 413, data=b"x" * (full_agent.settings.api.max_body_bytes + 1))
        for coding in ("br", "compress"):  # refused by aiohttp before any handler, and by the agent's reading
            await tour.go("POST", orders, 415, data=b"x", headers={"Content-Encoding": coding})
        await open_tour.go("POST", orders, 401, json=order)
        # Answered and, before stop 80, not in the document (the api80 probe, F4)
        await tour.go("POST", orders, 417, json=order, headers={"Expect": "200-ok"})
        too_big = b"x" * (full_agent.settings.api.max_body_bytes + 1)
        await tour.go("POST", "/api/v1/jobs/release-held", 413, data=too_big)
        await tour.go("POST", "/api/v1/jobs/release-held", 415, data=b"x", headers={"Content-Encoding": "br"})
        await printers["kitchen"].wait_for_printed(1)
        await tour.go("GET", one, 200, f"{orders}/{order['id']}")
        await tour.go("GET", one, 404, f"{orders}/nope")
        await tour.go("POST", reprint, 201, f"{orders}/{order['id']}/reprint", json={"station": "kitchen"})
        await tour.go("POST", reprint, 201, f"{orders}/{order['id']}/reprint")
        await tour.go("POST", reprint, 422, f"{orders}/{order['id']}/reprint", json={"station": 5})
        await tour.go(
            "POST",
            reprint,
            400,
            f"{orders}/{order['id']}/reprint",
            data=b"[",
            headers={"Content-Type": "application/json"},
        )
        await tour.go("POST", reprint, 404, f"{orders}/nope/reprint")
        clash = make_order(3, prefix="doc", print_receipt=False) | {"id": order["number"]}  # an id, today's number
        await tour.go("POST", orders, 201, json=clash)
        await until(  # its ticket out: a reprint of one not printed yet copies nothing
            api,
            f"{orders}/{clash['id']}",
            lambda body: [j["state"] for j in body["jobs"]] == ["printed"],
            "the clash's ticket printed",
        )
        await tour.go("POST", reprint, 409, f"{orders}/{clash['id']}/reprint")  # ambiguous: by=id or by=number
        await tour.go("POST", reprint, 201, f"{orders}/{clash['id']}/reprint?by=id")
        await tour.go("POST", reprint, 422, f"{orders}/{clash['id']}/reprint?by=ticket")
        cancel = "/api/v1/orders/{order_id}/cancel"
        await tour.go("POST", orders, 200, json={**order, "revision": 2, "number": "A-2"})  # updated
        await tour.go("POST", orders, 200, json=order)  # stale
        await tour.go("POST", cancel, 409, f"{orders}/{order['id']}/cancel", json={"revision": 2})  # same revision
        await tour.go("POST", cancel, 200, f"{orders}/{order['id']}/cancel", json={"revision": 3, "reason": "gone"})
        await tour.go("POST", cancel, 422, f"{orders}/{order['id']}/cancel", json={"reason": "no revision"})
        await tour.go(
            "POST", cancel, 400, f"{orders}/x/cancel", data=b"[", headers={"Content-Type": "application/json"}
        )
        await tour.go("POST", cancel, 202, f"{orders}/nope/cancel", json={"revision": 2})  # kept for an order not here
        await tour.go("POST", cancel, 404, f"{orders}/no!pe/cancel", json={"revision": 2})  # no order has that id
        await tour.go("POST", orders, 409, json={**order, "revision": 4})  # a cancelled order is not reopened

        jobs, printed = "/api/v1/jobs", stored["job_ids"][0]
        await tour.go("GET", "/api/v1/printers", 200)
        await tour.go("GET", jobs, 200, f"{jobs}?state=printed&limit=5")
        await tour.go("GET", jobs, 422, f"{jobs}?state=bogus")
        await tour.go("GET", jobs, 422, f"{jobs}?limit=x")
        await tour.go(
            "POST", "/api/v1/jobs/{job_id}/retry", 409, f"/api/v1/jobs/{printed}/retry"
        )  # printed: nothing to retry
        await tour.go("POST", "/api/v1/jobs/{job_id}/retry", 404, "/api/v1/jobs/999999/retry")
        await tour.go("POST", "/api/v1/jobs/{job_id}/release", 409, f"/api/v1/jobs/{printed}/release")  # not held
        await tour.go("POST", "/api/v1/jobs/{job_id}/release", 404, "/api/v1/jobs/999999/release")
        await tour.go("POST", "/api/v1/jobs/release-held", 200)
        await tour.go("POST", "/api/v1/jobs/release-held", 200, json={"job_ids": [1]})
        await tour.go("POST", "/api/v1/jobs/release-held", 422, json={"job_ids": "all"})
        await tour.go("GET", "/api/v1/jobs/{job_id}/preview", 200, f"/api/v1/jobs/{printed}/preview")
        await tour.go("GET", "/api/v1/jobs/{job_id}/preview", 404, "/api/v1/jobs/x/preview")
        job_reprint = "/api/v1/jobs/{job_id}/reprint"
        out = (await tour.go("POST", orders, 201, json=make_order(3, prefix="doc", print_receipt=False)))["job_ids"][0]
        await until(api, f"{jobs}?state=printed", lambda body: out in [j["id"] for j in body["jobs"]], "job printed")
        [copy] = (await tour.go("POST", job_reprint, 201, f"/api/v1/jobs/{out}/reprint"))["job_ids"]
        await tour.go("POST", job_reprint, 404, "/api/v1/jobs/999999/reprint")
        await until(api, f"{jobs}?state=printed", lambda body: copy in [j["id"] for j in body["jobs"]], "COPY out")
        printers["kitchen"].drop_after = 10  # one attempt allowed: this ticket goes dead
        dead = (await tour.go("POST", orders, 201, json=make_order(2, prefix="doc", print_receipt=False)))["job_ids"][0]
        await until(api, f"{jobs}?state=dead", lambda body: dead in [j["id"] for j in body["jobs"]], "job dead")
        await tour.go("POST", "/api/v1/jobs/{job_id}/discard", 200, f"/api/v1/jobs/{dead}/discard")
        await tour.go("POST", job_reprint, 409, f"/api/v1/jobs/{dead}/reprint")  # discarded
        await tour.go("POST", "/api/v1/jobs/{job_id}/discard", 409, f"/api/v1/jobs/{dead}/discard")
        await tour.go("POST", "/api/v1/jobs/{job_id}/discard", 404, "/api/v1/jobs/999999/discard")
        await tour.go("POST", "/api/v1/printers/{name}/test", 200, "/api/v1/printers/front/test")
        await tour.go("POST", "/api/v1/printers/{name}/test", 404, "/api/v1/printers/nope/test")
        printers["front"].set_offline(True)
        await tour.go("POST", "/api/v1/printers/{name}/test", 503, "/api/v1/printers/front/test")
        printers["front"].set_offline(False)

        await tour.go("GET", "/api/v1/scans", 200, "/api/v1/scans?limit=3")
        await tour.go("GET", "/api/v1/scans", 422, "/api/v1/scans?outcome=bogus")
        runs = "/api/v1/recovery/runs"
        await tour.go("GET", "/api/v1/recovery/status", 200)
        started = await tour.go("POST", runs, 202)
        await tour.go("GET", runs, 200, f"{runs}?limit=5")
        await tour.go("GET", runs, 422, f"{runs}?limit=0")
        await tour.go("GET", "/api/v1/recovery/runs/{run_id}", 200, f"{runs}/{started['run_id']}")
        await tour.go("GET", "/api/v1/recovery/runs/{run_id}", 404, f"{runs}/999999")
        await until(
            api,
            f"{runs}/{started['run_id']}",
            lambda run: run["state"] in ("completed", "failed", "cancelled"),
            "run over",
        )
        await tour.go(
            "POST", "/api/v1/recovery/runs/{run_id}/cancel", 409, f"{runs}/{started['run_id']}/cancel"
        )  # already over
        await tour.go("POST", "/api/v1/recovery/runs/{run_id}/cancel", 404, f"{runs}/x/cancel")

        outbox = "/api/v1/alerts/outbox"  # no SMTP here: the alert routes say so (tests/alerts tour them switched on)
        await tour.go("GET", outbox, 200)
        await tour.go("POST", f"{outbox}/{{mail_id}}/retry", 409, f"{outbox}/1/retry")
        await tour.go("POST", f"{outbox}/{{mail_id}}/discard", 409, f"{outbox}/1/discard")
        await tour.go("POST", "/api/v1/alerts/test", 409)
        await tour.go("GET", "/api/v1/status", 200)
        await tour.go("GET", "/api/v1/status/panel", 200)
        await open_tour.go("GET", "/api/v1/status", 401)
        await open_tour.go("GET", "/", 200)
        await open_tour.go("GET", "/", 403, headers={"Host": "rebound.example"})
        await open_tour.go("GET", "/status/panel", 200)
        await open_tour.go("GET", "/static", 404, "/static/no-such-file.js")
        await open_tour.go("GET", "/metrics", 200)
        await open_tour.go("GET", "/health", 200)
        await open_tour.go("GET", "/ready", 200)
        assert full_agent.deps is not None
        full_agent.deps.accepting = False
        await tour.go("POST", orders, 503, json=make_order(3, prefix="doc"))
        await open_tour.go("GET", "/ready", 503)
        full_agent.deps.accepting = True
    assert tour.seen | open_tour.seen == documented_routes()  # the tour reached every operation
