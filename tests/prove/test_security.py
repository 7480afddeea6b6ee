"""Security: every mutating route needs credentials; Standard Webhooks signatures, replay window, loud open binds."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.api.auth import Authenticator, sign
from edge.app import Agent
from edge.config import ApiSettings, Secret, Settings
from edge.errors import ConfigError
from edge.sim.orders import make_order
from edge.sim.process import write_config
from tests.conftest import TOKEN

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
async def signed_agent(make_settings: Callable[..., Settings]) -> AsyncIterator[Agent]:
    """The agent with no bearer token, every /api/ request signed with one of two rotating secrets."""
    agent = Agent(make_settings(api={"token": "", "signing_secrets": SECRETS, "require_signature": True}))
    await agent.start()
    yield agent
    await agent.stop()


def stored_orders(agent: Agent) -> list[str]:
    with sqlite3.connect(agent.settings.agent.db_path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]


async def test_every_mutating_route_refuses_missing_wrong_and_old_tokens(agent: Agent) -> None:
    """Each POST/PUT/PATCH/DELETE route in the router answers 401 without a token, with a wrong one, and with a rotated-out one."""
    routes = {(r.method, r.resource.canonical) for r in agent._runner.app.router.routes()}  # type: ignore[union-attr]
    mutating = sorted((m, p) for m, p in routes if m in MUTATING)
    assert ("POST", "/api/v1/orders") in mutating
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{agent.port}") as anonymous:
        for method, path in mutating:
            url = path.replace("{order_id}", "o-1").replace("{job_id}", "1").replace("{", "").replace("}", "")
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Bearer old-token-before-rotation"},
                {"Authorization": TOKEN},
            ):
                async with anonymous.request(method, url, json={"station": "kitchen"}, headers=headers) as response:
                    assert response.status in (401, 403), (method, path, headers, response.status)
    assert stored_orders(agent) == []


async def test_api_reads_need_the_token_but_probes_do_not(agent: Agent) -> None:
    """GETs under /api/ are 401 without the token; /health and /ready stay open for systemd and monitoring."""
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{agent.port}") as anonymous:
        for path in ("/api/v1/printers", "/api/v1/jobs", "/api/v1/orders/x"):
            async with anonymous.get(path) as response:
                assert response.status == 401, path
        for path in ("/health", "/ready"):
            async with anonymous.get(path) as response:
                assert response.status == 200, path


async def test_signed_request_is_accepted_with_either_rotating_secret(signed_agent: Agent) -> None:
    """A request signed with the old or the new secret is stored; a signature list with one good entry is enough."""
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{signed_agent.port}") as session:
        for n, (key, extra) in enumerate([(NEW_KEY, ()), (OLD_KEY, ()), (NEW_KEY, (b"x" * 32,))]):
            body = json.dumps(make_order(n, prefix="sig")).encode()
            async with session.post(
                "/api/v1/orders", data=body, headers=signed_headers(body, key=key, msg_id=f"msg_{n}", extra_keys=extra)
            ) as response:
                assert response.status == 201, await response.text()
        body = b""
        async with session.get("/api/v1/printers", headers=signed_headers(body, msg_id="msg_read")) as response:
            assert response.status == 200
    assert stored_orders(signed_agent) == ["sig_000000", "sig_000001", "sig_000002"]


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
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{signed_agent.port}") as session:
        async with session.post("/api/v1/orders", data=body, headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["error"] == "unauthorized"
    assert signed_agent.deps is not None and signed_agent.deps.auth is not None
    assert signed_agent.deps.auth.rejected == {reason: 1}
    assert stored_orders(signed_agent) == []


async def test_replayed_webhook_id_is_rejected(signed_agent: Agent) -> None:
    """The same signed request sent twice: the first is stored, the replay is 401 'replayed' even with a fresh order."""
    first = json.dumps(make_order(1, prefix="rp")).encode()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{signed_agent.port}") as session:
        async with session.post(
            "/api/v1/orders", data=first, headers=signed_headers(first, msg_id="msg_once")
        ) as response:
            assert response.status == 201
        async with session.post(
            "/api/v1/orders", data=first, headers=signed_headers(first, msg_id="msg_once")
        ) as response:
            assert response.status == 401
            assert "already used" in (await response.json())["reason"]
    assert signed_agent.deps is not None and signed_agent.deps.auth is not None
    assert signed_agent.deps.auth.rejected == {"replayed": 1}
    assert stored_orders(signed_agent) == ["rp_000001"]


async def test_replay_memory_lasts_the_window_and_then_forgets() -> None:
    """A webhook-id is remembered while its timestamp could still pass; after that the timestamp alone refuses it."""
    now = [1_000_000.0]
    auth = Authenticator(
        ApiSettings(signing_secrets=[Secret(s) for s in SECRETS], require_signature=True), clock=lambda: now[0]
    )
    body = b"{}"
    headers = signed_headers(body, msg_id="m", at=now[0])
    assert auth._check_signature(headers, body) is None
    now[0] += 299
    assert auth._check_signature(headers, body) == ("replayed", "webhook-id 'm' was already used")
    now[0] += 2
    assert auth._check_signature(headers, body)[0] == "stale_signature"  # type: ignore[index]
    now[0] += 700
    auth._check_signature(signed_headers(body, msg_id="n", at=now[0]), body)
    assert list(auth._seen) == ["n"]  # the old id is forgotten: memory stays bounded


async def test_signature_with_token_needs_both(make_settings: Callable[..., Settings]) -> None:
    """With a token and required signatures, a valid signature without the token is still 401."""
    agent = Agent(make_settings(api={"signing_secrets": SECRETS, "require_signature": True}))
    await agent.start()
    try:
        body = json.dumps(make_order(1, prefix="both")).encode()
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{agent.port}") as session:
            async with session.post("/api/v1/orders", data=body, headers=signed_headers(body, msg_id="a")) as response:
                assert response.status == 401
            headers = {**signed_headers(body, msg_id="b"), "Authorization": f"Bearer {TOKEN}"}
            async with session.post("/api/v1/orders", data=body, headers=headers) as response:
                assert response.status == 201
    finally:
        await agent.stop()


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


async def test_wide_bind_without_token_is_logged_loudly(make_settings: Callable[..., Settings]) -> None:
    """Bound beyond 127.0.0.1 with no token, start-up logs an error-level API_OPEN_WITHOUT_TOKEN; with a token only a warning."""
    # 127.0.0.2 is still loopback (tests stay off the network) but not the default address.
    for api, expected in (
        ({"host": "127.0.0.2", "token": "", "signing_secrets": SECRETS, "require_signature": True}, "error"),
        ({"host": "127.0.0.2"}, None),
    ):
        agent = Agent(make_settings(api=api))
        with capture_logs() as logs:
            await agent.start()
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


async def test_undecodable_credential_headers_are_401_not_500(make_settings: Callable[..., Settings]) -> None:
    """Raw non-UTF-8 bytes in Authorization or the webhook headers are refused like any wrong credential."""
    agent = Agent(make_settings(api={"signing_secrets": SECRETS}))
    await agent.start()
    try:
        for raw in (
            b"Authorization: Bearer \xff\xfe",
            f"Authorization: Bearer {TOKEN}\r\nwebhook-id: \xff\r\nwebhook-timestamp: {int(time.time())}\r\nwebhook-signature: v1,x".encode(
                "latin-1"
            ),
            f"Authorization: Bearer {TOKEN}\r\nwebhook-id: m\r\nwebhook-timestamp: {int(time.time())}\r\nwebhook-signature: v1,\xe9".encode(
                "latin-1"
            ),
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
            writer.write(b"GET /api/v1/printers HTTP/1.1\r\nHost: edge\r\n" + raw + b"\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    finally:
        await agent.stop()
