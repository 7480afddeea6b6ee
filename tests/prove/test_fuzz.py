"""Fuzzing the real server from the OpenAPI document: random paths, queries, headers and bodies on every operation."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.app import Agent
from edge.sim.orders import make_order
from tests.helpers import TOKEN, api_client, examples
from tests.prove.spec import SPEC, check_answer

PARAM = re.compile(r"\{\w+\}")
OPERATIONS = sorted((method.upper(), path) for path, ops in SPEC["paths"].items() for method in ops)
EXAMPLES = examples(1500)

nasty_text = st.text(max_size=40) | st.sampled_from(
    ["..", "../../etc/passwd", "%00", "' OR 1=1 --", "<script>", "9" * 40, "-1", "0", "1e3", "null"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda n, station: json.dumps({"station": station}).encode(), st.integers(0, 3), json_values),
    st.integers(0, 10_000).map(lambda n: json.dumps(make_order(n, prefix="fz")).encode()),
    st.integers(1, 200).map(lambda depth: b"[" * depth * 50 + b"]" * depth * 50),
)
auth_headers = st.sampled_from(
    [
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}"},
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {TOKEN}"},
        {
            "Authorization": f"Bearer {TOKEN}",
            "webhook-id": "x",
            "webhook-timestamp": "1",
            "webhook-signature": "v1,AAAA",
        },
        {"Authorization": f"Bearer {TOKEN}", "webhook-signature": "v2,x v1"},
    ]
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ]
)


# Each request from a loopback address of its own, as from a machine on the LAN: from one, a few wrong tokens would
# have every later request answered 429 without being looked at (edge/api/auth.py's GuessBrake).
addresses = st.tuples(st.integers(1, 254), st.integers(0, 255), st.integers(1, 254)).map(
    lambda a: "127.{}.{}.{}".format(*a)
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, dict[str, str], bytes | None, str]:
    method, template = draw(st.sampled_from(OPERATIONS))
    url = PARAM.sub(
        lambda _: (
            quote(
                draw(nasty_text | st.integers(-5, 10**20).map(str) | st.sampled_from(["fz_000001", "kitchen", "1"])),
                safe="",
            )
            or "x"
        ),
        template,
    )
    query = draw(
        st.dictionaries(
            st.sampled_from(["state", "printer", "limit", "x", "état"]),
            nasty_text | st.sampled_from(["queued", "dead", "5", "1001"]),
            max_size=3,
        )
    )
    if query:
        url += "?" + urlencode(query)
    headers = {**draw(auth_headers), "Content-Type": draw(content_types)}
    return method, template, url, headers, draw(bodies), draw(addresses)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
async def test_generated_requests_get_documented_answers_never_5xx(
    full_agent: Agent, request: tuple[str, str, str, dict[str, str], bytes | None, str]
) -> None:
    """Whatever the path parameter, query, credentials, content type or body: a documented status, a JSON body that
    fits, no 5xx."""
    method, template, url, headers, body, address = request
    async with api_client(full_agent, token=None, address=address) as session:
        async with session.request(method, url, data=body, headers=headers) as response:
            raw = await response.read()
            assert response.status < 500, (method, url, response.status, raw[:300])
            answer: Any = json.loads(raw) if response.content_type == "application/json" else raw
            check_answer(method, template, response.status, response.content_type, answer)


async def test_server_is_healthy_after_a_fuzz_storm(agent: Agent, api: aiohttp.ClientSession) -> None:
    """After a burst of junk on every operation, health and readiness are green and a real order is still stored."""
    junk = [b"", b"\x00" * 100, b"{" * 5000, "ü€\udcff".encode("utf-8", "surrogatepass"), b'{"id": 1e999}']
    for method, template in OPERATIONS:
        url = PARAM.sub("%00%2F..", template)
        for body in junk:
            async with api.request(method, url, data=body, headers={"Content-Type": "application/json"}) as response:
                assert response.status < 500, (method, url, body[:20])
    for path in ("/health", "/ready"):
        async with api.get(path) as response:
            assert response.status == 200
    async with api.post("/api/v1/orders", json=make_order(1, prefix="after")) as response:
        assert response.status == 201


header_bytes = st.binary(min_size=0, max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(
        [b"Authorization", b"webhook-id", b"webhook-timestamp", b"webhook-signature", b"Content-Type"]
    ),
    value=header_bytes,
    path=st.sampled_from([b"/api/v1/orders", b"/api/v1/printers", b"/"]),
)
async def test_raw_header_bytes_never_get_a_5xx(agent: Agent, name: bytes, value: bytes, path: bytes) -> None:
    """Any bytes in a credential or content-type header, sent over a raw socket: a 4xx or 2xx answer, never a 5xx."""
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    body = b'{"id": "raw"}'
    writer.write(
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: edge\r\n"
        + name
        + b": "
        + value
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:300]
