"""The link state follows what real requests experience: a slow central is not a dead one."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import CentralLinkChanged, EventBus, RecoveryCompleted, RecoveryFailed
from edge.ops.technician import render_status
from edge.sim.central import CentralSim
from edge.sim.smtp import SmtpSink
from edge.states import CentralDown
from edge.sync.client import CentralUnreachableError
from edge.sync.monitor import LinkMonitor
from tests.helpers import api_client, db_rows, mail_to, wait_until
from tests.sync.conftest import CENTRAL_TOKEN, Agents


def shipped_timeouts(make_settings: Callable[..., Settings], central: CentralSim, **overrides: Any) -> Settings:
    """[central] with the shipped timeouts and probe timings (unless overridden), no start delay or schedule."""
    keys = {"start_jitter_s": 0, "schedule_interval_s": 0, "rate_limit_rps": 50, **overrides}
    return make_settings(central={"url": central.url, "token": CENTRAL_TOKEN, **keys})


async def test_a_central_answering_in_1_5_s_is_up_recovered_from_and_reported_to_with_default_timeouts(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Every answer (health included) takes 1.5 s, as when a whole fleet reconnects; with the shipped timeouts the
    link is up, the start-up recovery runs and stores the missed orders, and pushed orders' events arrive."""
    central.latency_s = 1.5
    missed = central.create_orders(3, prefix="slow")
    pushed = central.create_orders(2, prefix="slow", start=4)
    agent, events = await agents.start(shipped_timeouts(make_settings, central))
    async with api_client(agent) as session:
        for order in pushed:
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201
    [completed] = await events.wait(RecoveryCompleted, timeout=20)
    assert completed.counts["stored"] == len(missed)
    want = {o["id"] for o in missed + pushed}
    await central.wait_for(lambda: {e["order_id"] for e in central.events_of("received")} == want, timeout=20)
    assert [e.up for e in events.of(CentralLinkChanged)] == [True]


async def test_a_health_probe_timing_out_does_not_mark_the_link_down_while_calls_succeed(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Only the health endpoint turns slow (2 s, over the 1 s the timeouts allow) while orders keep flowing and their
    events are taken at once: the link stays up and every event is delivered."""
    settings = shipped_timeouts(
        make_settings, central, connect_timeout_s=0.5, read_timeout_s=0.5, probe_up_s=2.0, probe_max_s=0.2
    )
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    central.health_latency_s = 2.0
    orders = central.create_orders(12, prefix="busy")
    async with api_client(agent) as session:
        for order in orders:  # 12 orders over ~4 s: two probe intervals, each probe timing out
            async with session.post("/api/v1/orders", json=order) as response:
                assert response.status == 201
            await asyncio.sleep(0.33)
    want = {o["id"] for o in orders}
    await central.wait_for(lambda: want <= {e["order_id"] for e in central.events_of("received")}, timeout=10)
    assert [e.up for e in events.of(CentralLinkChanged)] == [True]


async def test_a_health_check_slow_from_the_start_does_not_keep_a_working_central_from_being_used(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Health answers slower than the read timeout from the agent's start on (a dependency check behind it), while
    orders and events answer at once: the probe connected, so central is there; the run brings the missed orders.
    Before, a slow probe counted only beside calls answered lately, and while the link was down no call was made:
    nothing was synced for as long as health stayed slow (probe_central D3)."""
    central.health_latency_s = 2.0
    missed = {o["id"] for o in central.create_orders(3, prefix="slowhealth")}
    settings = shipped_timeouts(make_settings, central, read_timeout_s=0.5, probe_up_s=2.0, probe_max_s=0.2)
    agent, events = await agents.start(settings)
    [completed] = await events.wait(RecoveryCompleted, timeout=15)
    assert completed.counts["stored"] == 3
    stored = await db_rows(agent.settings.agent.db_path, "SELECT id FROM orders")
    assert {order_id for (order_id,) in stored} == missed


async def test_a_busy_central_answering_429_is_up_not_down(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A gateway that answers most calls, probes included, with 429 (too many requests) is a live backend asking for
    patience: the link stays up, with no down and up again on every probe."""
    _, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    central.capacity_rps = 0.5  # about one request in two seconds gets through
    await asyncio.sleep(2.0)  # ten probes at probe_up_s = 0.2
    assert 429 in central.statuses()
    assert [e.up for e in events.of(CentralLinkChanged)] == [True]


async def test_a_line_that_fails_two_ways_in_turn_logs_its_new_reason_at_most_once_a_minute(
    make_settings: Callable[..., Settings],
) -> None:
    """While the link stays down, a new reason is logged (the technician's fix may have done half its work), but a
    flaky line alternating two reasons at every probe does not log twice a second: at most once a minute."""

    class Flaky:
        on_answer: Any = None
        on_unreachable: Any = None
        probes = 0

        async def health(self) -> None:
            self.probes += 1
            raise CentralUnreachableError(f"no answer ({'reset' if self.probes % 2 else 'timed out'})")

    client, clock = Flaky(), SteppedClock()
    settings = make_settings(central={"url": "http://127.0.0.1:9", "token": CENTRAL_TOKEN, "probe_max_s": 0.02})
    monitor = LinkMonitor(client, EventBus(), settings.central, clock=clock)  # type: ignore[arg-type]
    with capture_logs() as logs:
        monitor.start()
        try:
            await wait_until(lambda: client.probes >= 20, what="20 probes")
            clock.advance(60)
            probes = client.probes
            await wait_until(lambda: client.probes >= probes + 4, what="4 more probes")
        finally:
            await monitor.stop()
    assert [e["event"] for e in logs if e["event"].startswith("central_link")] == [
        "central_link_down",
        "central_link_still_down",
        "central_link_still_down",
    ]


async def test_a_central_url_that_redirects_is_named_as_such_not_followed(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """central.url set to the http:// address of a backend that answers every request with 301 to its https://
    address (nginx's usual redirect). Followed, a redirected POST loses its body and becomes a GET (as browsers do):
    status events were never delivered (the backend answered the GET 405) while the link looked up. Not followed, the
    link is down with the reason naming where to point central.url, and nothing reaches the backend half-done."""

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(central.url + request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    old_address = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        [order] = central.create_orders(1, prefix="moved")
        agent, events = await agents.start(sync_settings(url=old_address))
        async with api_client(agent) as session, session.post("/api/v1/orders", json=order) as response:
            assert response.status == 201
        [down] = await events.wait(CentralLinkChanged, timeout=10)
        assert down.up is False and f"moved to {central.url}/v1/health" in down.detail, down.detail
        assert "set central.url" in down.detail
        await asyncio.sleep(0.5)  # the outbox's tries, had they been followed, would be at central by now
        assert central.requests == []
    finally:
        await runner.cleanup()


async def test_central_down_for_maintenance_is_probed_when_its_retry_after_says_not_twice_a_second(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Central's gateway answers every call, health included, 503 with Retry-After: 120 while the backend is upgraded
    (RFC 9110 15.6.4). The link is down, and the next probe waits what it was told (up to central.retry_max_s), not
    probe_max_s: a fleet of 1,000 boxes probing twice a second is 2,000 requests a second against a backend that asked
    for two minutes. Before: 10 probes in 2 s here."""
    agent, events = await agents.start(sync_settings(retry_max_s=5.0))
    await events.wait(RecoveryCompleted)
    central.maintenance_retry_after = 120
    await wait_until(lambda: agent.sync is not None and agent.sync.monitor.up is False, timeout=5)
    down_at = asyncio.get_running_loop().time()
    await asyncio.sleep(2)
    probes = [t for t, _, path, status in central.requests if path == "/v1/health" and status == 503]
    assert len([t for t in probes if t > down_at]) <= 1, probes


@pytest.mark.parametrize("health", ["text", "404"])
async def test_a_health_answer_the_agent_cannot_use_is_a_link_down_not_a_flapping_one(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, health: str
) -> None:
    """central.url points at something that answers, but not as the contract says: a load balancer's "OK" in text,
    or a 404 (a wrong path). The link is down, once, naming the answer, and probed at the slow pace while down
    (central.probe_up_s): a person must fix the address. Before, each probe's answer marked the link up and then down
    again, twice a second, and every "up" started a recovery run against it (40 of each in 8 s)."""

    async def wrong(request: web.Request) -> web.Response:
        if health == "text" and request.path == "/v1/health":
            return web.Response(text="OK")
        raise web.HTTPNotFound()

    requests: list[str] = []
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", wrong)
    app.on_response_prepare.append(lambda request, response: asyncio.sleep(0, requests.append(request.path)))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        address = f"http://127.0.0.1:{runner.addresses[0][1]}"
        _agent, events = await agents.start(sync_settings(url=address, probe_up_s=5.0))
        down, *_ = await events.wait(CentralLinkChanged, timeout=10)
        assert down.up is False and ("not JSON" in down.detail if health == "text" else "404" in down.detail)
        await asyncio.sleep(2)
        assert len(events.of(CentralLinkChanged)) == 1, events.of(CentralLinkChanged)
        assert requests.count("/v1/health") <= 2 and set(requests) == {"/v1/health"}, requests
    finally:
        await runner.cleanup()


async def test_orders_central_took_while_it_answered_nothing_are_recovered_once_it_answers_again(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Central takes connections but answers nothing for a while (its application hung behind the load balancer): the
    link stays up, as for a slow health check, and the orders central takes meanwhile cannot reach the box. Once it
    answers again a recovery run brings them at once. Before, they waited for the schedule (15 minutes by default;
    the central probe helper: 0 of 10 within 30 s, 3 of 3 runs)."""
    settings = shipped_timeouts(
        make_settings, central, connect_timeout_s=0.5, read_timeout_s=0.5, probe_up_s=0.5, probe_max_s=0.2
    )
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    central.latency_s = 3.0  # every answer later than the 1 s a call may take
    missed = {o["id"] for o in central.create_orders(3, prefix="hung")}
    await asyncio.sleep(2.5)  # probes that get no answer
    central.latency_s = 0.0
    [*_, caught_up] = await events.wait(RecoveryCompleted, count=2, timeout=10)
    assert caught_up.counts["stored"] == 3
    stored = await db_rows(agent.settings.agent.db_path, "SELECT id FROM orders")
    assert {order_id for (order_id,) in stored} == missed


async def test_a_central_that_takes_connections_and_answers_nothing_for_long_is_down_and_the_manager_is_told(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central's application hangs behind its load balancer for longer than `silent_down_s`: connections are taken,
    nothing is answered, health included. A short spell reads as a slow health check (up, above); a long one is an
    outage like any other: the link goes down naming what it saw, the manager gets the "central unreachable" mail
    after central_down_min, and when central answers again the link is up, one recovery run brings what it took
    meanwhile and the all-clear follows. Before, the link read up throughout and nobody was told (the central probe
    helper: 40 s of silence, 4 of 4 runs)."""
    sections = mail_to(sink)
    sections["alerts"] |= {"central_down_min": 0.02, "group_interval_s": 0.1}
    timings = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "probe_up_s": 0.3, "probe_max_s": 0.2}
    central_section = {"url": central.url, "token": CENTRAL_TOKEN, "start_jitter_s": 0, "schedule_interval_s": 0}
    settings = make_settings(central=central_section | timings | {"silent_down_s": 1.5}, **sections)
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    central.latency_s = 30.0  # answers nothing a call would wait for
    missed = {o["id"] for o in central.create_orders(2, prefix="hung")}
    [_, down] = await events.wait(CentralLinkChanged, count=2, timeout=10)
    assert not down.up and "answered nothing" in down.detail, down
    [mail] = await sink.wait_for(1, timeout=10)
    # Central's host takes the connections: its service's trouble, not the store's line (stop 77, the central77 probe's
    # C2: "Zentrale nicht erreichbar … Router prüfen" before).
    assert "STÖRUNG: Zentrale antwortet nicht" in str(mail["Subject"]), mail["Subject"]
    assert "answered nothing" in mail.get_body(("plain",)).get_content()  # what the technician looks into
    central.latency_s = 0.0
    await events.wait(CentralLinkChanged, count=3, timeout=10)
    [*_, caught_up] = await events.wait(RecoveryCompleted, count=2, timeout=10)
    assert caught_up.counts["stored"] == 2
    assert {order_id for (order_id,) in await db_rows(agent, "SELECT id FROM orders")} == missed
    [_, all_clear] = await sink.wait_for(2, timeout=10)
    assert "BEHOBEN: Zentrale" in str(all_clear["Subject"]), all_clear["Subject"]
    await asyncio.sleep(1.0)  # room for a second run, which must not come
    assert len(events.of(RecoveryCompleted)) == 2
    assert [e.up for e in events.of(CentralLinkChanged)] == [True, False, True]


async def test_a_line_back_to_a_central_that_turns_connections_away_is_mailed_as_centrals_trouble(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """The store's line goes down (connections time out: nothing reached), and while the link is still down it comes
    back to a central whose service is not there (its host refuses). The mail, due after central_down_min, tells what
    is so when it goes: central's trouble, nothing for the store's router. Before (stop 77's notes): the mail's words
    followed the outage's first cause, "Zentrale nicht erreichbar … Router prüfen", to a manager whose router works."""
    sections = mail_to(sink)
    sections["alerts"] |= {"central_down_min": 0.05}
    settings = sync_settings(probe_max_s=0.3, connect_timeout_s=0.3, sections=sections)
    _, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    await central.stop()
    # A port whose accept queue is full: connections are neither taken nor refused, they time out (a line down).
    blackhole, filler = socket.socket(), socket.socket()
    try:
        blackhole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blackhole.bind(("127.0.0.1", central.port))
        blackhole.listen(0)
        filler.setblocking(False)
        await asyncio.get_running_loop().sock_connect(filler, ("127.0.0.1", central.port))
        [_, down] = await events.wait(CentralLinkChanged, count=2, timeout=10)
        assert down.cause == CentralDown.LINE, down
    finally:
        filler.close()
        blackhole.close()  # the line back, central's port closed: refused
    [mail] = await sink.wait_for(1, timeout=15)
    text = mail.get_body(("plain",)).get_content()
    assert "STÖRUNG: Zentrale antwortet nicht" in str(mail["Subject"]), mail["Subject"]
    assert "Router" not in text, text


async def test_a_hung_centrals_outage_is_dated_from_its_first_unanswered_probe_not_from_when_it_was_called_down(
    central: CentralSim, make_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central takes connections and answers nothing: the link is called down only after `silent_down_s` (2 min here)
    of that, but it went at the first probe left unanswered. The mail's "Seit" and the status's since say then, and
    central_down_min counts from then. Before (stop 77's notes): both said the moment it was called down, two minutes
    late, and the mail came two minutes later than the minutes configured."""
    clock = SteppedClock()
    sections = mail_to(sink)
    sections["alerts"] |= {"central_down_min": 5, "group_interval_s": 0.1}
    timings = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "probe_up_s": 0.3, "probe_max_s": 0.2}
    central_section = {"url": central.url, "token": CENTRAL_TOKEN, "start_jitter_s": 0, "schedule_interval_s": 0}
    settings = make_settings(central=central_section | timings | {"silent_down_s": 120}, **sections)
    agent, events = await agents.start(settings, clock=clock)
    await events.wait(RecoveryCompleted)
    went_silent = clock.wall()
    central.latency_s = 30.0
    await asyncio.sleep(1.5)  # probes that get through and no answer
    clock.advance(125)
    [_, down] = await events.wait(CentralLinkChanged, count=2, timeout=10)
    assert not down.up and "answered nothing" in down.detail, down
    async with api_client(agent) as api:
        async with api.get("/api/v1/status") as response:
            since = (await response.json())["central"]["since"]
    assert went_silent - 1 <= since <= went_silent + 3, since - went_silent
    clock.advance(180)  # 5 minutes and a bit after the first unanswered probe, 3 after the link was called down
    [mail] = await sink.wait_for(1, timeout=15)
    text = mail.get_body(("plain",)).get_content()
    zone = ZoneInfo(settings.agent.timezone or "UTC")
    said = {dt.datetime.fromtimestamp(went_silent + s, zone).strftime("%H:%M") for s in (0, 2)}
    assert any(hhmm in text for hhmm in said), (said, text.replace("\r", ""))
    central.latency_s = 0.0


async def test_a_central_that_refuses_the_boxs_token_is_shown_as_refusing_not_as_up(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """central.token retyped wrong at the box: central's health check (no token) answers, every call of the box is
    refused 401. The status (the page, `edge status`) said "central link: up", with events piling up and no word why
    (the refusal only in the log and in the last recovery's text). Now it says central refuses the box, naming the
    answer and the setting to check, and so does the manager's mail about the failed recovery; once a call is taken
    again it says up."""
    agent, events = await agents.start(sync_settings(token="retyped-wrong-token", sections=mail_to(sink)))
    await events.wait(RecoveryFailed, timeout=10)
    (mail,) = await sink.wait_for(1, timeout=10)
    assert "check central.token" in mail.get_body(("plain",)).get_content()
    async with api_client(agent) as api:
        async with api.get("/api/v1/status") as response:
            data = await response.json()
        refused = data["central"]["refused"]
        assert "HTTP 401" in refused and "check central.token" in refused, data["central"]
        shown = render_status(data, colour=False)
        assert f"central link: REFUSED ({refused})" in shown, shown
        async with api.get("/") as response:
            page = await response.text()
        assert "refuses the box" in page and "check central.token" in page, page

        central.token = "retyped-wrong-token"  # central's side changed to match: the box's calls are taken
        async with api.post("/api/v1/recovery/runs") as response:
            assert response.status in (200, 202), await response.text()
        await events.wait(RecoveryCompleted, timeout=10)
        async with api.get("/api/v1/status") as response:
            data = await response.json()
    assert data["central"]["refused"] == "" and data["central_up"] == 1, data["central"]
    assert "central link: up" in render_status(data, colour=False)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<h1>Fehler: Gateway nicht erreichbar \xe4\xf6\xfc</h1>", "text/html; charset=utf-8"),
        (b"<h1>Bad gateway</h1>", "text/html; charset=x-no-such-charset"),
    ],
    ids=["latin-1-labelled-utf-8", "unknown-charset"],
)
async def test_a_gateway_page_that_is_not_utf_8_is_a_link_down_probed_again_not_the_end_of_the_link(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, body: bytes, content_type: str
) -> None:
    """The shop's gateway answers the first health probe 502 with its own page, in Latin-1 though labelled UTF-8, or
    in a charset Python does not know. The link is down for that answer and probed again, up once central answers,
    and recovery runs. Before: reading the page raised, the link's monitor ended without a word, central was never
    asked again (1 request in 25 s), the link was neither up nor down, so its alarm could never fire (fuzzdoors2 C1)."""
    central.fail_next(1, 502, body=body, content_type=content_type, path="health")
    _agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted, timeout=10)
    down, up = events.of(CentralLinkChanged)[:2]
    assert down.up is False and "502" in down.detail and up.up is True, events.of(CentralLinkChanged)


async def test_central_answering_errors_is_told_as_centrals_trouble_not_the_stores_line(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink
) -> None:
    """Central's gateway answers every call 503 with Retry-After (its maintenance): the link is down, and after
    central_down_min the manager is told that central answers with errors while this store's line works, with
    nothing for the store to check. Before (the mailbox76 probe, F1): "Zentrale nicht erreichbar … Verbindung
    unterbrochen … Internetverbindung und Router prüfen", sending someone to reboot a router that was fine."""
    sections = mail_to(sink)
    sections["alerts"] |= {"central_down_min": 0.02}
    _, events = await agents.start(sync_settings(retry_max_s=1.0, sections=sections))
    await events.wait(RecoveryCompleted)
    central.maintenance_retry_after = 1
    [mail] = await sink.wait_for(1, timeout=10)
    text = mail.get_body(("plain",)).get_content()
    assert "STÖRUNG: Zentrale antwortet mit Fehlern" in str(mail["Subject"]), mail["Subject"]
    assert "Router" not in text and "Internetverbindung dieser Filiale" in text, text


async def test_a_central_host_resetting_every_connection_is_probed_at_the_backoffs_pace_not_the_rate_limits(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Central's host is up and its service down: every connection is reset at once (a closed port behind a balancer
    without backends). The link is down and probed after 0.1 s, doubling up to probe_max_s (1 s here): about 5
    probes in 3 s. Before (the central77 probe, C1): the probe's own failure woke the probe at once, so only the rate
    limit paced it, 5 a second (298 a minute for a 10-minute outage, probe_max_s changing nothing)."""
    agent, events = await agents.start(sync_settings(probe_max_s=1.0, rate_limit_rps=50))
    await events.wait(RecoveryCompleted)
    await central.stop()
    accepts: list[float] = []

    def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepts.append(asyncio.get_running_loop().time())
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", central.port)
    try:
        await wait_until(lambda: agent.sync is not None and agent.sync.monitor.up is False, timeout=5)
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(3)
        probes = [t for t in accepts if t >= started]
    finally:
        server.close()
    assert 1 <= len(probes) <= 7, [round(t - started, 2) for t in probes]


@pytest.mark.parametrize("how", ["resets", "refuses"])
async def test_a_central_host_that_turns_connections_away_is_told_as_centrals_trouble_not_the_stores_line(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, sink: SmtpSink, how: str
) -> None:
    """Central's host is there and its service is not: it resets every connection, or refuses it (a closed port).
    The connection reached central, so the store's line works: after central_down_min the manager is told central's
    service does not answer, nothing for the store's router. Before (the central77 probe, C2): "Zentrale nicht
    erreichbar … Internetverbindung und Router prüfen"."""
    sections = mail_to(sink)
    sections["alerts"] |= {"central_down_min": 0.02}
    _, events = await agents.start(sync_settings(probe_max_s=0.5, sections=sections))
    await events.wait(RecoveryCompleted)
    await central.stop()

    def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", central.port) if how == "resets" else None
    try:
        [mail] = await sink.wait_for(1, timeout=10)
    finally:
        if server is not None:
            server.close()
    text = mail.get_body(("plain",)).get_content()
    assert "STÖRUNG: Zentrale antwortet nicht" in str(mail["Subject"]), mail["Subject"]
    assert "Router" not in text and "Internetverbindung dieser Filiale" in text, text
