"""Security: every mutating route needs credentials; Standard Webhooks signatures, replay window, loud open binds."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

import edge.api.auth as auth_module
from edge.api.auth import GuessBrake
from edge.api.signing import sign
from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import ApiSettings, Settings
from edge.errors import ConfigError
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.process import write_config
from tests.helpers import TOKEN, api_client, config_dict, db_rows, edge, eventually, held_by, toml, wait_until

OLD_KEY = b"o" * 32
NEW_KEY = b"n" * 32
SECRETS = ["whsec_" + base64.b64encode(k).decode() for k in (OLD_KEY, NEW_KEY)]
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_PATHS = {"/health", "/ready", "/metrics"}


def signed_headers(
    body: bytes,
    *,
    key: bytes = NEW_KEY,
    msg_id: str = "msg_1",
    at: float | None = None,
    extra_keys: tuple[bytes, ...] = (),
) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    signatures = " ".join(sign(k, msg_id, stamp, body) for k in (*extra_keys, key))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signatures,
        "Content-Type": "application/json",
    }


@pytest.fixture
async def signed_agent(make_agent: Callable[..., Awaitable[Agent]]) -> Agent:
    """The agent with no bearer token, every /api/ request signed with one of two rotating secrets."""
    return await make_agent(api={"token": "", "signing_secrets": SECRETS, "require_signature": True})


async def stored_orders(agent: Agent) -> list[str]:
    return [r[0] for r in await db_rows(agent, "SELECT id FROM orders ORDER BY id")]


async def test_every_mutating_route_refuses_missing_wrong_and_old_tokens(agent: Agent) -> None:
    """Each POST/PUT/PATCH/DELETE route answers 401 without a token, with a wrong one, and with a rotated-out one."""
    routes = {(r.method, r.resource.canonical) for r in agent._runner.app.router.routes()}  # type: ignore[union-attr]
    mutating = sorted((m, p) for m, p in routes if m in MUTATING)
    assert ("POST", "/api/v1/orders") in mutating
    for n, (method, path) in enumerate(mutating):
        # Each route from an address of its own: a dozen wrong tokens from one address are braked with 429.
        async with api_client(agent, token=None, address=f"127.0.1.{n + 1}") as anonymous:
            url = path.replace("{order_id}", "o-1").replace("{job_id}", "1").replace("{", "").replace("}", "")
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Bearer old-token-before-rotation"},
                {"Authorization": TOKEN},
            ):
                async with anonymous.request(method, url, json={"station": "kitchen"}, headers=headers) as response:
                    assert response.status in (401, 403), (method, path, headers, response.status)
    assert await stored_orders(agent) == []


async def test_api_reads_need_the_token_but_probes_do_not(agent: Agent) -> None:
    """GETs under /api/ are 401 without the token; /health and /ready stay open for systemd and monitoring."""
    async with api_client(agent, token=None) as anonymous:
        for path in ("/api/v1/printers", "/api/v1/jobs", "/api/v1/orders/x"):
            async with anonymous.get(path) as response:
                assert response.status == 401, path
        for path in ("/health", "/ready"):
            async with anonymous.get(path) as response:
                assert response.status == 200, path


async def status_from(agent: Agent, address: str, token: str | None) -> tuple[int, str | None, dict[str, Any]]:
    """GET /api/v1/status from ``address``: the status, Retry-After and the body."""
    async with api_client(agent, token=token, address=address) as client, client.get("/api/v1/status") as response:
        return response.status, response.headers.get("Retry-After"), await response.json()


async def test_wrong_tokens_from_one_address_are_refused_429_for_a_growing_while_and_other_addresses_are_not(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """A machine on the LAN guesses the token: after five wrong ones its requests are answered 429 with Retry-After,
    the token not even looked at (its right one too), for 1 s, then after each wrong one twice as long, at most 60 s;
    the till and the box's own `edge` commands (127.0.0.1) and another PC whose person mistyped are not held up; one
    log line says it, however long the spell; a right token ends it. Before stop 81 wrong tokens were neither slowed
    nor limited: a 4-digit token was found from the LAN in 1.5 s, 7,500 tries (the security81 probe, F3)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    guesser = "127.0.0.2"
    with capture_logs() as logs:
        for n in range(5):
            assert (await status_from(agent, guesser, f"guess-{n}"))[0] == 401
        status, wait, answer = await status_from(agent, guesser, TOKEN)
        assert (status, wait, answer.get("error")) == (429, "1", "too_many_wrong_tokens"), answer
        assert "127.0.0.2" in answer["reason"], answer
        assert (await status_from(agent, "127.0.0.1", TOKEN))[0] == 200  # the till, `edge status`
        assert (await status_from(agent, "127.0.0.3", "a-typo"))[0] == 401  # another PC: its own count
        waits = []
        for n in range(10):
            assert wait is not None
            clock.advance(int(wait))
            assert (await status_from(agent, guesser, f"then-{n}"))[0] == 401  # looked at again once the wait is over
            status, wait, _ = await status_from(agent, guesser, TOKEN)
            assert status == 429
            waits.append(int(wait or 0))
        assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
        clock.advance(60)
        assert (await status_from(agent, guesser, TOKEN))[0] == 200  # the right token ends the spell
        assert (await status_from(agent, guesser, "a-typo"))[0] == 401
    braked = [line for line in logs if line["event"] == "api_token_guesses_braked"]
    assert [(line["remote"], line["log_level"]) for line in braked] == [(guesser, "warning")], braked
    async with api_client(agent) as api, api.get("/metrics") as response:
        assert 'edge_api_requests_rejected_total{reason="too_many_wrong_tokens"} 11.0' in await response.text()


async def test_a_page_refreshing_with_the_same_wrong_token_is_one_guess_and_the_till_on_that_pc_is_not_braked(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """A status-page tab on a PC still holds an old token and refreshes every 5 s; the same PC is the till. The same
    wrong token sent 50 times is answered 401 each time, never 429, and the till's right token from that address
    gets in; a guesser's six different wrong tokens are still braked (429). Before, every refresh counted as a guess:
    the PC was braked for good with nobody typing, and the till's orders were refused 429 for 71-111 s (the
    verify81 probe, F1)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    pc = "127.0.0.2"
    with capture_logs() as logs:
        for _ in range(50):
            assert (await status_from(agent, pc, "the-old-token"))[:2] == (401, None)
            clock.advance(5)
        assert (await status_from(agent, pc, TOKEN))[0] == 200  # the till on the same PC
        guesser = "127.0.0.4"
        for n in range(5):
            assert (await status_from(agent, guesser, f"guess-{n}"))[0] == 401
            if n < 4:  # after the fifth the address waits, whatever it sends
                assert (await status_from(agent, guesser, f"guess-{n}"))[0] == 401  # the same again: no guess
        assert (await status_from(agent, guesser, "guess-5"))[:2] == (429, "1")
    braked = [line["remote"] for line in logs if line["event"] == "api_token_guesses_braked"]
    assert braked == [guesser], braked


def test_the_brake_on_wrong_tokens_keeps_a_bounded_memory_whatever_addresses_send_them() -> None:
    """Wrong tokens from 40,000 addresses (a client on the LAN taking a new IPv6 address for each): what the brake
    holds does not grow with them, the longest quiet address forgotten first, and one still guessing is still held
    back (the security81 probe, F3: a brake must not be a new way to grow the agent's memory)."""
    now = [0.0]
    brake = GuessBrake(lambda: now[0])
    tracemalloc.start()
    try:
        for n in range(2000):
            brake.wrong(f"fd00::{n:x}", b"Bearer guess")
        before = held_by(auth_module.__file__)
        for n in range(2000, 40000):
            brake.wrong(f"fd00::{n:x}", b"Bearer guess")
            if n % 100 == 0:
                for m in range(6):
                    brake.wrong("192.168.1.66", f"Bearer guess-{n}-{m}".encode())
        grown = held_by(auth_module.__file__) - before
    finally:
        tracemalloc.stop()
    assert grown < 8192, grown
    assert brake.wait_s("192.168.1.66") == 60 and brake.wait_s("fd00::1") == 0


async def test_signed_request_is_accepted_with_either_rotating_secret(signed_agent: Agent) -> None:
    """A request signed with the old or the new secret is stored; a signature list with one good entry is enough."""
    async with api_client(signed_agent, token=None) as session:
        for n, (key, extra) in enumerate([(NEW_KEY, ()), (OLD_KEY, ()), (NEW_KEY, (b"x" * 32,))]):
            body = json.dumps(make_order(n, prefix="sig")).encode()
            async with session.post(
                "/api/v1/orders", data=body, headers=signed_headers(body, key=key, msg_id=f"msg_{n}", extra_keys=extra)
            ) as response:
                assert response.status == 201, await response.text()
        body = b""
        async with session.get("/api/v1/printers", headers=signed_headers(body, msg_id="msg_read")) as response:
            assert response.status == 200
    assert await stored_orders(signed_agent) == ["sig_000000", "sig_000001", "sig_000002"]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda body, h: {k: v for k, v in h.items() if k != "webhook-signature"}, "missing_signature"),
        (lambda body, h: signed_headers(body, key=b"w" * 32), "bad_signature"),
        (lambda body, h: signed_headers(body + b" "), "bad_signature"),
        (lambda body, h: {**h, "webhook-id": "msg_other"}, "bad_signature"),
        (lambda body, h: signed_headers(body, at=time.time() - 6 * 60), "stale_signature"),
        (lambda body, h: signed_headers(body, at=time.time() + 6 * 60), "stale_signature"),
        (lambda body, h: {**h, "webhook-timestamp": "soon"}, "bad_signature"),
        (lambda body, h: {**h, "webhook-signature": "v1,!!!"}, "bad_signature"),
    ],
    ids=["missing", "wrong-key", "body-changed", "id-changed", "6-min-old", "6-min-ahead", "not-a-time", "garbage"],
)
async def test_bad_signatures_are_401_and_counted(signed_agent: Agent, tamper: Any, reason: str) -> None:
    """Missing, wrong, tampered, too old or too new signatures get 401, store nothing and are counted by reason."""
    body = json.dumps(make_order(1, prefix="bad")).encode()
    headers = tamper(body, signed_headers(body))
    async with api_client(signed_agent, token=None) as session:
        async with session.post("/api/v1/orders", data=body, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "unauthorized"
    assert signed_agent.deps is not None and signed_agent.deps.auth is not None
    assert signed_agent.deps.auth.rejected == {reason: 1}
    assert await stored_orders(signed_agent) == []


@pytest.mark.parametrize("tamper", ["missing", "6-min-old", "not-a-time"])
async def test_a_signed_push_waiting_for_100_continue_is_refused_on_its_head_before_its_body(
    signed_agent: Agent, tamper: str
) -> None:
    """A push whose signature headers are missing, too old or not a time can be refused on its head: a sender that
    asked `Expect: 100-continue` gets the 401 at once, not `100 Continue` and a 401 after its upload (RFC 9110
    10.1.1). Before (the verify72 probe, 5b): 100 first, as for every signed push, since the signature check read
    the body before any of its checks."""
    body = json.dumps(make_order(1, prefix="expect")).encode()
    headers = signed_headers(body, at=time.time() - 360 if tamper == "6-min-old" else None)
    if tamper == "missing":
        del headers["webhook-signature"]
    elif tamper == "not-a-time":
        headers["webhook-timestamp"] = "yesterday"
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", signed_agent.port)
    try:
        writer.write(
            f"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    assert await stored_orders(signed_agent) == []


@pytest.mark.parametrize(
    ("signed_s_from_central", "status"), [(0, 201), (-6 * 60, 401)], ids=["just-signed", "6-min-old-on-its-clock"]
)
async def test_signed_pushes_are_timed_on_centrals_clock_when_the_box_clock_is_off(
    make_agent: Callable[..., Awaitable[Agent]], central: CentralSim, signed_s_from_central: float, status: int
) -> None:
    """A box without a battery and with NTP blocked by the shop's firewall runs an hour behind; central signs its
    pushes on its own clock. With a central link, whose answers date central's clock, the signature's timestamp is
    checked against that: a fresh push is taken (before: every signed push refused as "stale", the store took no
    order at all), one signed 6 minutes earlier on central's clock is still refused."""
    central.clock_offset_s = 3600.0
    agent = await make_agent(
        api={"token": "", "signing_secrets": SECRETS, "require_signature": True},
        central={"url": central.url, "token": TOKEN, "start_jitter_s": 0, "probe_max_s": 0.1},
    )
    await wait_until(lambda: agent.sync is not None and agent.sync.monitor.up, what="central answering")
    body = json.dumps(make_order(1, prefix="late_box")).encode()
    async with api_client(agent, token=None) as session:
        answer, _, _ = await send_signed(
            session, "/api/v1/orders", body, "msg_central", at=time.time() + 3600 + signed_s_from_central
        )
    assert answer == status
    assert await stored_orders(agent) == (["late_box_000001"] if status == 201 else [])


async def send_signed(
    session: aiohttp.ClientSession, path: str, body: bytes, msg_id: str, *, at: float | None = None
) -> tuple[int, Any, dict[str, str]]:
    """One attempt of a Standard Webhooks sender: fresh timestamp and signature, the same id and body on each retry."""
    async with session.post(path, data=body, headers=signed_headers(body, msg_id=msg_id, at=at)) as response:
        answer = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, answer, dict(response.headers)


async def copies(agent: Agent, order_id: str) -> int:
    return (await db_rows(agent, "SELECT COUNT(*) FROM print_jobs WHERE order_id = ? AND copy = 1", order_id))[0][0]


async def test_retry_after_a_503_is_accepted(signed_agent: Agent) -> None:
    """A signed push answered 503 (database not writable) and retried with the same webhook-id is stored: 201."""
    body = json.dumps(make_order(1, prefix="busy")).encode()
    assert signed_agent.db is not None
    async with api_client(signed_agent, token=None) as session:
        await signed_agent.db._writer.execute("PRAGMA query_only = ON")  # the disk turned read-only under us
        status, _, _ = await send_signed(session, "/api/v1/orders", body, "msg_busy")
        assert status == 503
        await signed_agent.db._writer.execute("PRAGMA query_only = OFF")
        status, answer, _ = await send_signed(session, "/api/v1/orders", body, "msg_busy")
        assert (status, answer.get("status")) == (201, "stored"), answer
    assert await stored_orders(signed_agent) == ["busy_000001"]


async def test_retry_after_a_lost_201_answers_duplicate(signed_agent: Agent) -> None:
    """The sender never saw the 201 (its connection dropped before the answer): the retry is a 200 duplicate."""
    body = json.dumps(make_order(1, prefix="lost")).encode()
    headers = signed_headers(body, msg_id="msg_lost")
    _, writer = await asyncio.open_connection("127.0.0.1", signed_agent.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /api/v1/orders HTTP/1.1\r\nHost: edge\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body
    )
    await writer.drain()
    writer.close()  # gone before the answer
    for _ in range(200):
        if await stored_orders(signed_agent):
            break
        await asyncio.sleep(0.02)
    async with api_client(signed_agent, token=None) as session:
        status, answer, _ = await send_signed(session, "/api/v1/orders", body, "msg_lost")
    assert (status, answer["status"]) == (200, "duplicate"), answer
    assert await stored_orders(signed_agent) == ["lost_000001"]


async def test_same_id_with_another_body_is_refused(signed_agent: Agent) -> None:
    """A webhook-id that already succeeded, sent again with a different body, is 401 'replayed' and stores nothing."""
    first = json.dumps(make_order(1, prefix="rp")).encode()
    other = json.dumps(make_order(2, prefix="rp")).encode()
    async with api_client(signed_agent, token=None) as session:
        assert (await send_signed(session, "/api/v1/orders", first, "msg_once"))[0] == 201
        status, answer, _ = await send_signed(session, "/api/v1/orders", other, "msg_once")
        assert status == 401 and "another request" in answer["reason"], answer
    assert signed_agent.deps is not None and signed_agent.deps.auth is not None
    assert signed_agent.deps.auth.rejected == {"replayed": 1}
    assert await stored_orders(signed_agent) == ["rp_000001"]


async def test_concurrent_identical_retries_of_a_reprint_print_one_copy(signed_agent: Agent) -> None:
    """Identical signed reprint requests at once (a sender that timed out and retried): one copy, one answer for all."""
    order = make_order(1, prefix="cc", print_receipt=False)
    async with api_client(signed_agent, token=None) as session:
        assert (await send_signed(session, "/api/v1/orders", json.dumps(order).encode(), "msg_order"))[0] == 201
        await eventually(  # the ticket out first: a reprint of one still to print copies nothing
            lambda: db_rows(signed_agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)]
        )
        path, body = f"/api/v1/orders/{order['id']}/reprint", b'{"station": "kitchen"}'
        answers = await asyncio.gather(*(send_signed(session, path, body, "msg_reprint") for _ in range(3)))
    assert [status for status, _, _ in answers] == [201, 201, 201], answers
    assert len({json.dumps(answer, sort_keys=True) for _, answer, _ in answers}) == 1
    assert sum(headers.get("Idempotent-Replayed") == "true" for _, _, headers in answers) == 2
    assert await copies(signed_agent, order["id"]) == 1


async def test_retry_of_a_reprint_after_a_restart_prints_no_second_copy(
    make_agent: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """The agent restarts between a signed reprint and the sender's retry: the retry gets the first answer only."""
    settings = make_settings(api={"token": "", "signing_secrets": SECRETS, "require_signature": True})
    order = make_order(1, prefix="rs", print_receipt=False)
    path, body = f"/api/v1/orders/{order['id']}/reprint", b""
    agent = await make_agent(settings)
    async with api_client(agent, token=None) as session:
        assert (await send_signed(session, "/api/v1/orders", json.dumps(order).encode(), "msg_o"))[0] == 201
        await eventually(  # the ticket out first: a reprint of one still to print copies nothing
            lambda: db_rows(agent, "SELECT state FROM print_jobs"), lambda rows: rows == [("printed",)]
        )
        status, first, _ = await send_signed(session, path, body, "msg_r")
        assert status == 201
    await agent.stop()
    agent = await make_agent(settings)
    async with api_client(agent, token=None) as session:
        status, again, headers = await send_signed(session, path, body, "msg_r")
        assert (status, again, headers.get("Idempotent-Replayed")) == (201, first, "true")
        status, _, _ = await send_signed(session, path, b'{"station": "bar"}', "msg_r")
        assert status == 401  # the same id for another request: refused after the restart too
    assert await copies(agent, order["id"]) == 1


async def test_used_id_is_remembered_for_the_signature_window_then_forgotten(
    make_agent: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """An order's webhook-id refuses another body while a request with it could still pass the 5-minute timestamp
    check (both ways: 10 minutes); after that the timestamp alone guards it and the id is free again."""
    clock = SteppedClock()
    agent = await make_agent(
        make_settings(api={"token": "", "signing_secrets": SECRETS, "require_signature": True}), clock=clock
    )
    orders = [json.dumps(make_order(n, prefix="win")).encode() for n in range(3)]
    async with api_client(agent, token=None) as session:
        assert (await send_signed(session, "/api/v1/orders", orders[0], "m", at=clock.wall()))[0] == 201
        clock.advance(9 * 60)
        assert (await send_signed(session, "/api/v1/orders", orders[1], "m", at=clock.wall()))[0] == 401
        clock.advance(61)
        assert (await send_signed(session, "/api/v1/orders", orders[2], "m", at=clock.wall()))[0] == 201
    assert await stored_orders(agent) == ["win_000000", "win_000002"]


async def test_signature_with_token_needs_both(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """With a token and required signatures, a valid signature without the token is still 401."""
    agent = await make_agent(api={"signing_secrets": SECRETS, "require_signature": True})
    body = json.dumps(make_order(1, prefix="both")).encode()
    async with api_client(agent, token=None) as session:
        async with session.post("/api/v1/orders", data=body, headers=signed_headers(body, msg_id="a")) as response:
            assert response.status == 401
        headers = {**signed_headers(body, msg_id="b"), "Authorization": f"Bearer {TOKEN}"}
        async with session.post("/api/v1/orders", data=body, headers=headers) as response:
            assert response.status == 201


async def test_with_a_token_and_required_signatures_a_persons_requests_need_the_token_and_pushes_both(
    make_agent: Callable[..., Awaitable[Agent]], tmp_path: Path
) -> None:
    """The setup behind a reverse proxy: a token, and signatures required so that an order also proves it came from
    central. A person's requests (the status page's panel and buttons, `edge status`, `edge reprint`) carry the token
    and cannot sign (a browser must not hold the secret); they are let in. An order pushed with the token alone is
    401. Before stop 67 every /api/ request needed a signature: the status page could not release a held ticket, and
    no `edge` command worked (the docs probe, D2)."""
    agent = await make_agent(api={"signing_secrets": SECRETS, "require_signature": True})
    order = make_order(1, prefix="person")
    async with api_client(agent) as session:
        async with session.post("/api/v1/orders", json=order) as response:
            assert response.status == 401 and "webhook" in (await response.json())["reason"]
        body = json.dumps(order).encode()
        async with session.post("/api/v1/orders", data=body, headers=signed_headers(body, msg_id="p1")) as response:
            assert response.status == 201
        async with session.get("/api/v1/status") as response:
            assert response.status == 200, await response.text()
        # out first: a Reprint while a ticket is going out copies nothing beside it (200, waiting)
        await eventually(
            lambda: db_rows(agent, "SELECT state FROM print_jobs"),
            lambda rows: rows == [("printed",)] * 2,
            what="the ticket and the receipt printed",
        )
        async with session.post(f"/api/v1/orders/{order['id']}/reprint") as response:
            assert response.status == 201, await response.text()
    config = tmp_path / "person.toml"
    raw = config_dict(tmp_path / "data", {}) | {
        "api": {"port": agent.port, "token": TOKEN},
        "stations": {},
        "receipts": {},
    }
    config.write_text(toml(raw))
    shown = await edge("status", "--config", str(config))
    assert shown.returncode == 0, shown.stderr


async def test_edge_commands_sign_their_requests_where_signatures_are_the_only_credential(
    signed_agent: Agent, tmp_path: Path
) -> None:
    """No token, signatures required: every /api/ request must be signed, the technician's too. The `edge` commands
    read the same secrets and sign theirs. Before stop 67 they were refused 401 "missing webhook-id …" (D2)."""
    config = tmp_path / "signed.toml"
    raw = config_dict(tmp_path / "data", {}) | {
        "api": {"port": signed_agent.port, "token": "", "signing_secrets": SECRETS, "require_signature": True},
        "stations": {},
        "receipts": {},
    }
    config.write_text(toml(raw))
    shown = await edge("status", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    listed = await edge("jobs", "--config", str(config))
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize(
    ("api", "key", "problem"),
    [
        ({"token": ""}, "api.token", "is required unless api.require_signature is true"),
        ({"require_signature": True}, "api.signing_secrets", "is required when api.require_signature is true"),
        ({"signing_secrets": ["whsec_not base64!"]}, "api.signing_secrets", "entry 0 is not a whsec_<base64> secret"),
        (
            {"signing_secrets": ["whsec_" + base64.b64encode(b"short").decode()]},
            "api.signing_secrets",
            "entry 0 must decode to 24-64 bytes",
        ),
    ],
)
def test_auth_config_mistakes_fail_fast(
    make_settings: Callable[..., Settings], api: dict[str, Any], key: str, problem: str
) -> None:
    """An open API by accident, or an unusable secret, stops the agent at start-up naming the key."""
    with pytest.raises(ConfigError) as caught:
        make_settings(api=api)
    assert caught.value.key == key
    assert caught.value.problem.startswith(problem)


def test_api_binds_to_loopback_by_default() -> None:
    """Without api.host the agent listens on 127.0.0.1 only."""
    assert ApiSettings().host == "127.0.0.1"


async def test_wide_bind_without_token_is_logged_loudly(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """Bound beyond 127.0.0.1 with no token, start-up logs an error-level API_OPEN_WITHOUT_TOKEN; with one a warning."""
    # 127.0.0.2 is still loopback (tests stay off the network) but not the default address.
    for api, expected in (
        ({"host": "127.0.0.2", "token": "", "signing_secrets": SECRETS, "require_signature": True}, "error"),
        ({"host": "127.0.0.2"}, None),
    ):
        with capture_logs() as logs:
            agent = await make_agent(api=api)
            await agent.stop()
        loud = [e for e in logs if e["event"] == "API_OPEN_WITHOUT_TOKEN"]
        assert [e["log_level"] for e in loud] == ([expected] if expected else [])
        assert any(e["event"] == "api_listening_beyond_loopback" for e in logs)


def test_config_written_by_our_scripts_is_private(tmp_path: Path) -> None:
    """The config the crash test and the benchmark write holds the token: mode 0600, even over a wider existing file."""
    path = tmp_path / "edge.toml"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    write_config(path, data_dir=tmp_path / "data", api_port=1, token=TOKEN, printers={"kitchen": 9100, "front": 9101})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TOKEN in path.read_text(encoding="utf-8")


async def test_undecodable_credential_headers_are_401_not_500(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """Raw non-UTF-8 bytes in Authorization or the webhook headers are refused like any wrong credential."""
    agent = await make_agent(api={"signing_secrets": SECRETS})
    stamp = f"webhook-timestamp: {int(time.time())}"
    for raw in (
        b"Authorization: Bearer \xff\xfe",
        f"Authorization: Bearer {TOKEN}\r\nwebhook-id: \xff\r\n{stamp}\r\nwebhook-signature: v1,x".encode("latin-1"),
        f"Authorization: Bearer {TOKEN}\r\nwebhook-id: m\r\n{stamp}\r\nwebhook-signature: v1,\xe9".encode("latin-1"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"GET /api/v1/printers HTTP/1.1\r\nHost: edge\r\n" + raw + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
