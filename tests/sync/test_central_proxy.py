"""The central link through a store network's outbound proxy, the only way out of many shops' networks: the box
cannot even resolve central's name; the proxy does (edge/sim/proxy.py)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest

from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.proxy import ProxySim
from tests.helpers import agent_process, api_client, eventually, issue_server_cert, make_ca, post, toml, wait_until
from tests.sync.conftest import CENTRAL_TOKEN, FAST, STORE

# A name only the proxy can resolve (RFC 6761: .invalid never resolves), as central's is for a box behind a proxy.
CENTRAL_HOST = "central.store-chain.invalid"
PROXY_USER, PROXY_PASSWORD = "store-7", "pr0xy-pa55word"


async def link_detail(api: aiohttp.ClientSession) -> str:
    async with api.get("/api/v1/status") as response:
        assert response.status == 200
        central = (await response.json())["central"]
    return "" if central["up"] else central["detail"]


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_a_central_behind_the_stores_proxy_is_reached_through_it_with_its_credentials(
    tmp_path: Path, printers: dict[str, SimPrinter], scheme: str
) -> None:
    """With ``central.proxy`` the link goes through the proxy (a CONNECT tunnel for https, absolute-form requests for
    http). While the proxy is down or refuses the box's credentials, the link is down with a line naming the proxy
    and the settings to check (never the password), and pushed orders print all the same; with the right password
    (changed between runs in the secrets) the agent catches up with what it missed and reports every ticket."""
    with pytest.raises(OSError):
        socket.getaddrinfo(CENTRAL_HOST, 443)  # the direct way is closed, as in the store
    tls = None
    if scheme == "https":
        ca = await asyncio.to_thread(make_ca, tmp_path, "chain")
        cert = await asyncio.to_thread(issue_server_cert, tmp_path, ca, "central", hosts=[CENTRAL_HOST])
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(*cert)
    central = CentralSim(STORE, token=CENTRAL_TOKEN, tls=tls)
    await central.start()
    proxy = ProxySim({CENTRAL_HOST: ("127.0.0.1", central.port)}, user=PROXY_USER, password=PROXY_PASSWORD)
    [pushed, missed] = central.create_orders(2, prefix="proxy")
    values = {**FAST, "url": f"{scheme}://{CENTRAL_HOST}:{central.port}", "proxy": proxy.url, "proxy_user": PROXY_USER}
    env = {"SSL_CERT_FILE": str(ca[0])} if scheme == "https" else {}
    agent = agent_process(
        tmp_path,
        printers,
        env=env | {"EDGE_CENTRAL_PROXY_PASSWORD": "an-old-password"},
        store_id=STORE,
        extra="\n" + toml({"central": values}),
    )
    log = tmp_path / "agent.log"
    right = AgentProcess(agent.config, agent.port, log, env=env | {"EDGE_CENTRAL_PROXY_PASSWORD": PROXY_PASSWORD})
    try:
        await agent.start()  # the proxy is not up yet
        async with api_client(agent.port) as api:
            status, _ = await post(api, pushed)
            assert status == 201
            await wait_until(lambda: any(pushed["number"].encode() in job for job in printers["kitchen"].printed))
            await eventually(
                lambda: link_detail(api),
                lambda detail: f"no answer from the proxy {proxy.url} (central.proxy)" in detail,
                what="the link down, the proxy named",
            )
            await proxy.start()
            detail = await eventually(
                lambda: link_detail(api),
                lambda detail: f"the proxy {proxy.url} refused the box's login (407)" in detail,
                what="the proxy's refusal named",
            )
        assert "central.proxy_user and EDGE_CENTRAL_PROXY_PASSWORD" in detail
        # The agent's log is written by its own thread, a moment after the state the API shows (CI at e2ea24c).
        logged = await eventually(
            lambda: asyncio.to_thread(log.read_text),
            lambda text: "refused the box's login" in text,
            what="the proxy's refusal in the agent's log",
        )
        assert "no answer from the proxy" in logged and "refused the box's login" in logged
        assert central.requests == [] and proxy.refused
        assert await agent.terminate() == 0

        await right.start()
        await central.wait_for(
            lambda: {e["order_id"] for e in central.events_of("printed")} == {pushed["id"], missed["id"]}, timeout=20
        )
        assert sum(missed["number"].encode() in job for job in printers["kitchen"].printed) == 1
        assert central.duplicates == []
        if scheme == "https":
            assert proxy.tunnels and set(proxy.tunnels) == {f"{CENTRAL_HOST}:{central.port}"}
            # All the proxy sees of https is the CONNECT: central's token stays inside the tunnel.
            assert not [head for head in proxy.connect_heads if CENTRAL_TOKEN in head]
        else:
            assert len(proxy.forwarded) == len(central.requests)
            assert all(line.split()[1].startswith(f"http://{CENTRAL_HOST}:") for line in proxy.forwarded)
        assert await right.terminate() == 0
        text = log.read_text()
        assert PROXY_PASSWORD not in text and "an-old-password" not in text
    finally:
        await agent.close()
        await right.close()
        await proxy.stop()
        await central.stop()
