"""The central link over HTTPS, as every real backend serves it: the agent process verifies the backend's certificate
against the box's CAs (SSL_CERT_FILE stands for the system's bundle here), and its import leaves the CA bundle
unread for TLS contexts it never uses."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path

from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, api_client, issue_server_cert, make_ca, post, toml, wait_until
from tests.sync.conftest import CENTRAL_TOKEN, FAST, STORE


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


def central_section(url: str) -> str:
    return "\n" + toml({"central": {**FAST, "url": url}})


async def test_an_https_central_is_trusted_only_with_a_certificate_the_box_trusts(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A backend whose certificate no CA of the box vouches for gets nothing from the agent: no order is fetched from
    it, no event is sent to it, and the agent says the link is down; orders pushed meanwhile print all the same. Once
    the backend serves a certificate the box trusts, the agent fetches what it missed and reports every ticket."""
    box_ca = await asyncio.to_thread(make_ca, tmp_path, "public")  # openssl runs in threads: the loop keeps going
    stranger_ca = await asyncio.to_thread(make_ca, tmp_path, "stranger")
    trusted = await asyncio.to_thread(issue_server_cert, tmp_path, box_ca, "central")
    untrusted = await asyncio.to_thread(issue_server_cert, tmp_path, stranger_ca, "impostor")
    central = CentralSim(STORE, token=CENTRAL_TOKEN, tls=server_context(untrusted))
    await central.start()
    [pushed, missed] = central.create_orders(2, prefix="tls")
    agent = agent_process(
        tmp_path,
        printers,
        env={"SSL_CERT_FILE": str(box_ca[0])},
        store_id=STORE,
        extra=central_section(central.url),
    )
    log = tmp_path / "agent.log"
    try:
        assert central.url.startswith("https://")
        await agent.start()
        async with api_client(agent.port) as api:
            status, _ = await post(api, pushed)
        assert status == 201
        await wait_until(lambda: any(pushed["number"].encode() in job for job in printers["kitchen"].printed))
        await wait_until(lambda: "certificate verify failed" in log.read_text(), what="the link down, named")
        assert [line for line in log.read_text().splitlines() if "central_link_down" in line]
        assert central.requests == []  # not one request got past the handshake
        assert not any(missed["number"].encode() in job for job in printers["kitchen"].printed)

        await central.set_up(False)  # the backend's certificate is replaced by one from a CA the box trusts
        central.tls = server_context(trusted)
        await central.set_up(True)
        await central.wait_for(
            lambda: {e["order_id"] for e in central.events_of("printed")} == {pushed["id"], missed["id"]}, timeout=20
        )
        assert sum(missed["number"].encode() in job for job in printers["kitchen"].printed) == 1
        assert central.duplicates == []
        assert await agent.terminate() == 0
    finally:
        await agent.close()
        await central.stop()


def test_importing_the_agent_reads_no_ca_bundle_for_tls_contexts_it_never_uses(tmp_path: Path) -> None:
    """aiohttp makes two TLS contexts when it is imported, each parsing the system's whole CA bundle (tens of ms and
    about a megabyte each on a small box), for clients that bring no context of their own. The agent's only HTTPS
    client, the central link, brings its own, so the agent imports aiohttp without that work; a context made
    afterwards reads what one made before it did, and an operator's own SSL_CERT_FILE is left as it was (here a CA
    of our own: the test does not depend on the machine's bundle)."""
    operators_ca, _ = make_ca(tmp_path, "operator")
    probe = (
        "import os, ssl\n"
        "before = ssl.create_default_context().cert_store_stats()['x509_ca']\n"
        "import edge.cli, aiohttp.connector as c\n"
        "after = ssl.create_default_context().cert_store_stats()['x509_ca']\n"
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'], c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()"
        "['x509_ca'], after == before, os.environ.get('SSL_CERT_FILE'))"
    )
    for given in (None, str(operators_ca)):
        env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
        env |= {"SSL_CERT_FILE": given} if given else {}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0", "0", "True", str(given)], out.stdout


def test_a_tls_context_another_thread_makes_while_aiohttp_is_imported_still_trusts_the_boxs_cas(tmp_path: Path) -> None:
    """Not reading the CA bundle for aiohttp's own contexts points SSL_CERT_FILE, for the whole process, at nothing
    while aiohttp is imported. Since a command imports aiohttp only when it first needs it, that can be while another
    thread makes a context (`edge doctor` imports it for its central check while its mail check connects): that
    context must still trust the box's CAs (here a CA of our own as SSL_CERT_FILE), or a good relay reads as a bad
    certificate. Before: contexts made meanwhile held no CA."""
    operators_ca, _ = make_ca(tmp_path, "operator")
    probe = (
        "import ssl, threading\n"
        "import edge\n"
        "seen, done = [], threading.Event()\n"
        "def make():\n"
        "    while not done.is_set() or not seen:\n"
        "        seen.append(ssl.create_default_context().cert_store_stats()['x509_ca'])\n"
        "thread = threading.Thread(target=make)\n"
        "thread.start()\n"
        "import aiohttp.connector\n"
        "done.set()\n"
        "thread.join()\n"
        "print(min(seen), len(seen))\n"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(operators_ca)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fewest, made = map(int, out.stdout.split())
    assert made > 1 and fewest == 1, out.stdout
