"""A network printer set up by its host name (``printers.kitchen.host = "kitchen.test"``): the name is looked up at
each connection, through a resolver the test stands in for (socket.getaddrinfo patched for that name only, other
names go to the system's). A DNS server that does not answer (the store's internet down, the router's forwarder
hanging: glibc waits resolv.conf's timeout x attempts x servers, 10-30 s, then says EAI_AGAIN) is a lookup that blocks
until the test lets it go, the printer itself fine on the LAN."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from edge.app import Agent
from edge.config import parse_settings
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.helpers import api_client, config_dict, eventually, job_rows, mail_to, orders, post, wait_until

NAME = "kitchen.test"
HANG_S = 30.0  # a hanging lookup's longest wait (glibc, three name servers); the test lets it go sooner
CONNECT_S = 1.0  # the kitchen printer's connect_timeout
SLACK_S = 4.0  # a loaded machine's room on top of the waits the agent promises


class Resolver:
    """socket.getaddrinfo for NAME: ``address``'s; while ``answering`` is clear a lookup of NAME blocks until it is set
    (at most HANG_S) and then fails as glibc's does when the DNS server never answered."""

    def __init__(self, real: Callable[..., Any], address: str) -> None:
        self.real = real
        self.address = address
        self.answering = threading.Event()
        self.answering.set()
        self.hanging = 0  # lookups of NAME blocked right now

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != NAME:
            return self.real(host, port, *args, **kwargs)
        if not self.answering.is_set():
            self.hanging += 1
            try:
                self.answering.wait(HANG_S)
            finally:
                self.hanging -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.real(self.address, port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch, printers: dict[str, SimPrinter]) -> Iterator[Resolver]:
    found = Resolver(socket.getaddrinfo, printers["kitchen"].host)
    monkeypatch.setattr(socket, "getaddrinfo", found)
    yield found
    found.answering.set()  # the lookups still blocked end


async def _kitchen_by_name(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], tmp_path: Any, **sections: Any
) -> Agent:
    raw = config_dict(tmp_path / "data", printers, **sections)
    raw["printers"]["kitchen"] |= {"host": NAME, "connect_timeout": CONNECT_S}
    return await make_agent(settings=parse_settings(raw, source="test"))


async def test_a_printer_whose_name_the_dns_does_not_answer_for_is_offline_within_its_connect_timeout_named_so(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp_path: Any,
    resolver: Resolver,
    sink: SmtpSink,
    example_order: dict[str, Any],
) -> None:
    """The DNS stops answering; the next ticket's printer is offline within its connect_timeout (the lookup is given
    up on then, not waited out: before, the ticket waited the resolver's whole wait, and failover's clock only started
    after it), the ticket goes to the backup after failover_after_s, and the state and the manager's mail say the
    printer's name could not be looked up and what to do (before: "Temporary failure in name resolution" under the
    advice to check the printer's network cable)."""
    agent = await _kitchen_by_name(
        make_agent,
        printers,
        tmp_path,
        **mail_to(sink),
        stations={"kitchen": ["kitchen", "front"], "bar": ["kitchen", "front"]},
        printing={"failover_after_s": 1},
    )
    kitchen, front = printers["kitchen"], printers["front"]
    first, second = orders(example_order, 2)
    async with api_client(agent) as api:
        assert (await post(api, first))[0] == 201
        await kitchen.wait_for_printed(1)
        resolver.answering.clear()
        assert (await post(api, second))[0] == 201
        spool = agent.spoolers["kitchen"]
        await wait_until(
            lambda: spool.state.value == "offline", CONNECT_S + SLACK_S, f"offline within {CONNECT_S:g}s and a little"
        )
        said = f"cannot resolve {NAME}: the DNS server does not answer (no internet, or the router's DNS is down)"
        assert said in spool.state_detail, spool.state_detail
        await front.wait_for_printed(1, timeout=CONNECT_S + 1 + SLACK_S)
        assert second["number"].encode() in front.printed[0]
        [mail] = await sink.wait_for(1, timeout=10)
    text = mail.get_body(("plain",)).get_content()
    assert "Drucker kitchen nicht erreichbar" in str(mail["Subject"])
    assert f"Der Name des Druckers kitchen, {NAME}, lässt sich nicht nachschlagen" in text, text
    assert "printers.kitchen.host" in text and "Router" in text and "Netzwerkkabel" not in text, text
    assert said in text, text
    assert len(kitchen.printed) == 1


async def test_a_stop_does_not_wait_for_a_lookup_the_dns_does_not_answer(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp_path: Any,
    resolver: Resolver,
    example_order: dict[str, Any],
) -> None:
    """The agent is stopped while the printer's name is being looked up and the DNS does not answer: the stop waits
    at most the printer's connect_timeout, not for the lookup (before: as long as the resolver waited, 10-30 s; a
    restart waited as long). The ticket waits in the database for the next start."""
    agent = await _kitchen_by_name(make_agent, printers, tmp_path)
    resolver.answering.clear()
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await wait_until(lambda: resolver.hanging, 10, "the printer's name being looked up")
    asked = time.monotonic()
    await agent.stop()
    took = time.monotonic() - asked
    assert took < CONNECT_S + SLACK_S, f"the stop took {took:.1f}s while the lookup hung"
    assert resolver.hanging, "the lookup ended before the stop did: nothing was shown"
    assert await job_rows(agent, "SELECT state FROM print_jobs WHERE printer = 'kitchen'") == [("queued",)]


async def test_a_printer_whose_name_moves_to_a_new_address_prints_there_at_the_next_ticket(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp_path: Any,
    resolver: Resolver,
    example_order: dict[str, Any],
) -> None:
    """DHCP gave the printer a new address after a power cut and its name moved with it: the name is looked up again
    at the next connection, not kept from an earlier one, and the next tickets print there, each once."""
    agent = await _kitchen_by_name(make_agent, printers, tmp_path)
    old = printers["kitchen"]
    moved = SimPrinter("kitchen-moved", host="127.0.0.2", port=old.port)
    batch = orders(example_order, 3)
    async with api_client(agent) as api:
        assert (await post(api, batch[0]))[0] == 201
        await old.wait_for_printed(1)
        old.set_offline(True)
        resolver.address = moved.host
        await moved.start()
        try:
            for order in batch[1:]:
                assert (await post(api, order))[0] == 201
            await moved.wait_for_printed(2)
        finally:
            await moved.stop()
    assert [sum(o["number"].encode() in job for job in moved.printed) for o in batch[1:]] == [1, 1]
    await eventually(
        lambda: job_rows(agent, "SELECT state, copy FROM print_jobs WHERE printer = 'kitchen' ORDER BY id"),
        lambda rows: rows == [("printed", 0)] * 3,
        what="three tickets printed, none as COPY",
    )
