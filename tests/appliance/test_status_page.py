"""The technician's status page at /: server-rendered content, token rules, and a real click in headless Chromium."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from edge.api.status_page import recovery_words
from edge.app import Agent
from edge.clock import SteppedClock
from edge.ops.technician import render_status
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.printer import SimPrinter
from edge.states import RunState, RunTrigger
from edge.store.rows import RecoveryRun
from tests.helpers import TOKEN, api_client, asap, db_rows, until, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that keep Chromium from calling out of a closed sandbox network (see the machine notes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def post(api: aiohttp.ClientSession, order: dict) -> dict:
    async with api.post("/api/v1/orders", json=order) as response:
        assert response.status == 201
        return await response.json()


async def test_page_shows_printers_orders_and_escapes_order_text(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """/ without a token lists each printer with its state, the order with its tickets, version and uptime;
    order text is HTML-escaped."""
    example_order["number"] = "<script>alert(1)</script>"
    await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    async with api_client(agent, token=None) as browser, browser.get("/") as response:
        assert response.status == 200
        html = await response.text()
    assert 'data-printer="kitchen"' in html and 'data-printer="front"' in html
    assert "version 0.1.0" in html and "Up " in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert f'data-order="{example_order["id"]}"' in html


async def test_last_orders_say_at_which_printer_a_ticket_a_failover_moved_came_out(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """The kitchen printer is off and the failover prints the kitchen's ticket on the front printer: Last orders says
    "kitchen: printed at front", and /api/v1/status gives the ticket's printer and the one it was moved from. Before
    (the failover82 probe, s6): "kitchen: printed", read as on paper in the kitchen."""
    printers["kitchen"].set_offline(True)
    agent = await make_agent(stations={"kitchen": ["kitchen", "front"]}, printing={"failover_after_s": 0.5})
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        await post(api, example_order)
        await printers["front"].wait_for_printed(1)
        await until(api, "/api/v1/status", lambda body: body["orders"][0]["jobs"][0]["state"] == "printed", "printed")
        async with api.get("/api/v1/status") as response:
            [job] = (await response.json())["orders"][0]["jobs"]
        async with api.get("/api/v1/status/panel") as response:
            panel = await response.text()
    assert (job["station"], job["printer"], job["redirected_from"]) == ("kitchen", "front", "kitchen")
    assert ">kitchen: printed at front</button>" in panel, panel


async def test_preview_is_the_decoded_ticket_text(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A ticket's preview (with the token) is its ESC/POS bytes decoded to text: order number and items as on paper."""
    job_ids = (await post(api, example_order))["job_ids"]
    async with api.get(f"/api/v1/jobs/{job_ids[0]}/preview") as response:
        assert response.status == 200
        text = await response.text()
    assert "Margherita" in text and "1 0 4 2" in text.replace("A - ", "")
    async with api.get("/api/v1/jobs/abc/preview") as response:
        assert response.status == 404


TZ = "Pacific/Kiritimati"  # UTC+14: a time shown in the system's zone (UTC here) cannot pass for it
ALERT_AT = 1_795_000_000.0


def local(ts: float) -> str:
    """How the page writes a time: the agent's zone, day and month first."""
    return datetime.fromtimestamp(ts, ZoneInfo(TZ)).strftime("%d.%m. %H:%M:%S")


@pytest.fixture
async def central() -> AsyncIterator[CentralSim]:
    sim = CentralSim("test-store", token=TOKEN)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def linked_agent(make_agent: Callable[..., Awaitable[Agent]], central: CentralSim) -> Agent:
    """An agent in Pacific/Kiritimati time with the simulated central API, no scheduled or delayed recovery."""
    return await make_agent(
        agent={"timezone": TZ},
        central={
            "url": central.url,
            "token": TOKEN,
            "start_jitter_s": 0,
            "probe_max_s": 0.1,
            "schedule_interval_s": 0,
        },
    )


async def add_alert_group(agent: Agent, state: str) -> None:
    """An alert group as the alerter writes it, from a second connection in a thread: a blocking write on the test's
    loop would wait for the agent's writer, which waits for that same loop (a deadlock until the busy timeout)."""

    def write() -> None:
        with sqlite3.connect(agent.settings.agent.db_path, timeout=30) as conn:
            conn.execute(
                "INSERT INTO alert_groups(key, type, subject, severity, state, first_at, changed_at)"
                " VALUES ('printer_paper_out:kitchen', 'printer_paper_out', 'kitchen', 'critical', ?, ?, ?)",
                (state, ALERT_AT, ALERT_AT),
            )

    await asyncio.to_thread(write)


async def recover_with_a_conflict(agent: Agent, central: CentralSim, example_order: dict) -> int:
    """A-1042 is here; central has 3 orders the agent missed and another version of A-1042; a run reconciles.
    Returns the run's id."""
    async with api_client(agent) as api:
        # The run the agent starts when it first reaches central is over (it would not see the orders below).
        await until(
            api,
            "/api/v1/recovery/status",
            lambda s: s["last_run"] is not None and s["active_run"] is None,
            "start-up run over",
        )
        await post(api, example_order)
        changed = dict(example_order, items=example_order["items"][:1])  # same id, other content
        central.add_orders([changed])
        central.create_orders(3, prefix="missed")
        async with api.post("/api/v1/recovery/runs") as response:
            assert (await response.json())["joined"] is False
            run_id = (await response.json())["run_id"]
        await until(api, f"/api/v1/recovery/runs/{run_id}", lambda run: run["state"] == "completed", "run done")
    return run_id


async def test_page_shows_link_backlog_recovery_and_alerts_in_words_and_agent_time(
    linked_agent: Agent, central: CentralSim, example_order: dict
) -> None:
    """The page says whether the central link is up and since when, how many status events wait for central and
    since when, the last recovery in words ("3 orders recovered, 1 conflict — A-1042") and recent alerts in words,
    all times in agent.timezone, with a Sync now button."""
    agent = linked_agent
    await recover_with_a_conflict(agent, central, example_order)
    await central.set_up(False)  # the line is cut: status events pile up
    async with api_client(agent) as api:
        await post(api, dict(example_order, id="ord_after_cut", number="A-1043"))
        for _ in range(100):
            async with api.get("/api/v1/recovery/status") as response:
                link = (await response.json())["link"]
            if link["up"] is False:
                break
            await asyncio.sleep(0.05)
        async with api.get("/api/v1/status") as response:
            status = await response.json()
    await add_alert_group(agent, "firing")
    [(oldest,)] = await db_rows(agent, "SELECT MIN(created_at) FROM outbox WHERE delivered_at IS NULL")
    [(waiting,)] = await db_rows(agent, "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
    assert status["central"]["up"] is False and status["outbox"] == {"pending": waiting, "oldest_at": oldest}
    async with api_client(agent, token=None) as browser, browser.get("/") as response:
        html = await response.text()
    page = " ".join(re.sub(r"<[^>]+>", " ", html).split())  # the words as a person reads them
    assert f"Times in {TZ}" in page
    assert f"Central link: down since {local(link['since'])}" in page
    assert f"{waiting} status events waiting for central, the oldest since {local(oldest)}" in page
    assert "3 orders recovered, 1 conflict — A-1042" in page
    assert f"{local(ALERT_AT)} Printer paper out — kitchen (critical, firing)" in page
    assert 'data-sync="1"' in html


@pytest.mark.parametrize(("central_ahead_s", "words"), [(0.0, None), (3600.0, "60 min behind central's")])
async def test_page_says_when_the_box_clock_is_off_from_centrals(
    make_agent: Callable[..., Awaitable[Agent]], central: CentralSim, central_ahead_s: float, words: str | None
) -> None:
    """Central's answers carry its time: the status (API and page) gives how far the box's clock is from it, and the
    page says so in words, naming NTP, once that is more than a minute (before: nothing about the box's clock)."""
    central.clock_offset_s = central_ahead_s
    agent = await make_agent(central={"url": central.url, "token": TOKEN, "start_jitter_s": 0, "probe_max_s": 0.1})
    await wait_until(lambda: agent.sync is not None and agent.sync.monitor.up, what="central answering")
    async with api_client(agent) as api, api.get("/api/v1/status") as response:
        status = await response.json()
    assert abs(status["central"]["box_minus_central_s"] + central_ahead_s) <= 2
    async with api_client(agent, token=None) as browser, browser.get("/") as response:
        page = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", await response.text()).split()))
    screen = render_status(status, colour=False)  # `edge status`, from the same answer
    if words is None:
        assert "box's clock" not in page and "box's clock" not in screen
    else:
        assert f"The box's clock is {words}: check NTP" in page
        assert f"the box's clock is {words}: check NTP" in screen


@pytest.fixture
async def closed_agent(make_agent: Callable[..., Awaitable[Agent]]) -> Agent:
    """An agent whose status page is not public."""
    return await make_agent(api={"status_page_public": False})


async def test_closed_page_needs_the_token(closed_agent: Agent) -> None:
    """With status_page_public = false, / is a shell without data; the panel answers 401 without the token, 200 with."""
    async with api_client(closed_agent, token=None) as browser:
        async with browser.get("/") as response:
            html = await response.text()
        assert 'data-printer="kitchen"' not in html and "Enter the API token" in html
        async with browser.get("/status/panel") as response:
            assert response.status == 404
        async with browser.get("/api/v1/status/panel") as response:
            assert response.status == 401
        async with browser.get("/api/v1/status/panel", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
            assert 'data-printer="kitchen"' in await response.text()


NO_FRAMING = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


async def test_every_answer_forbids_framing_and_type_sniffing(agent: Agent) -> None:
    """The page with its token box and its Reprint, Release all and Discard buttons, its panels, its script, the API
    and the answers the agent refuses with (404, 401, a head the parser refuses) each say that no other site may
    frame them and that their type is not to be guessed. Before stop 81 none did: any page a store browser opened
    could lay the status page under a decoy and take the clicks (the security81 probe, F7)."""
    answers: dict[str, dict[str, str]] = {}
    async with api_client(agent, token=None) as browser:
        for path, headers in [
            ("/", {}),
            ("/status/panel", {}),
            ("/static/status.js", {}),
            ("/api/v1/status/panel", {"Authorization": f"Bearer {TOKEN}"}),
            ("/api/v1/status/panel", {}),  # 401
            ("/no/such/page", {}),  # 404
            ("/", {"Host": "evil.example"}),  # 403
            ("/health", {}),
        ]:
            async with browser.get(path, headers=headers) as response:
                await response.read()
                answers[f"{path} {response.status}"] = dict(response.headers)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n")  # the parser's 400
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    writer.close()
    lines = [line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line]
    answers[head.split("\r\n", 1)[0]] = {name: value for name, value in lines}
    assert sorted(answers) == sorted(
        [
            "/ 200",
            "/status/panel 200",
            "/static/status.js 200",
            "/api/v1/status/panel 200",
            "/api/v1/status/panel 401",
            "/no/such/page 404",
            "/ 403",
            "/health 200",
            "HTTP/1.0 400 Bad Request",  # aiohttp answers a head it cannot read as 1.0
        ]
    ), sorted(answers)
    for answer, headers in answers.items():
        assert {name: headers.get(name) for name in NO_FRAMING} == NO_FRAMING, answer


async def test_dead_job_listed_with_retry_and_reprint(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """A job that went dead appears under Dead jobs with Retry and Reprint buttons, and in `edge status` JSON."""
    printers["kitchen"].drop_after = 10  # the printer hangs up mid-job: one failure, and max_attempts = 1 makes it dead
    agent = await make_agent(spool={"max_attempts": 1})
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        job_id = (await post(api, example_order))["job_ids"][0]
        for _ in range(200):
            async with api.get("/api/v1/status") as response:
                status = await response.json()
            if status["dead_jobs"]:
                break
            await asyncio.sleep(0.05)
        assert [j["id"] for j in status["dead_jobs"]] == [job_id]
        async with api.get("/") as response:
            html = await response.text()
    assert f'data-retry="{job_id}"' in html and f'data-reprint="{example_order["id"]}"' in html


@pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed: apt-get install -y chromium"
)
async def test_page_in_headless_chromium_sync_now_and_reprint(
    linked_agent: Agent, central: CentralSim, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """In a real browser: the page shows both printers, the central link, the status backlog, the last recovery in
    words and the alerts in the agent's time; Sync now needs the token, then starts a recovery run; Reprint puts a
    COPY on the kitchen printer and a ticket's preview opens."""
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="python playwright is not installed (pip install playwright)"
    )
    agent = linked_agent
    example_order["print_receipt"] = False
    run_id = await recover_with_a_conflict(agent, central, example_order)
    await printers["kitchen"].wait_for_printed(4)  # A-1042 and the three recovered orders
    await add_alert_group(agent, "resolved")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await browser.new_page()
            page.set_default_timeout(15_000)
            await page.goto(f"http://127.0.0.1:{agent.port}/")
            await page.wait_for_selector('tr[data-printer="kitchen"] .state.online')
            assert await page.locator("#printers tr[data-printer]").count() == 2
            assert await page.inner_text("#zone") == f"Times in {TZ}"
            assert (await page.inner_text("#central")).startswith("Central link: up since ")
            assert "3 orders recovered, 1 conflict — A-1042" in await page.inner_text("#recovery")
            alerts = await page.inner_text("#alerts")
            assert f"{local(ALERT_AT)} Printer paper out — kitchen (critical, resolved)" in alerts
            await page.wait_for_selector("#outbox")
            await page.click("button[data-sync]")  # no token yet
            await page.wait_for_selector("#message:has-text('Enter the API token first')")
            await page.fill("#token", TOKEN)
            # The token's refresh redraws the panel, now whole: a click while it is redrawn may land on nothing (it did
            # once in a loaded whole-suite run: no recovery run started). Clicked once that redraw's answer is in.
            async with page.expect_response(lambda response: "/status/panel" in response.url):
                await page.click("#token-box button")
            await page.wait_for_selector("#message:has-text('Token kept for this tab')")
            await page.click("button[data-sync]")
            await page.wait_for_selector(f"#message:has-text('Sync started (recovery run {run_id + 1})')")
            await page.click(f'tr[data-order="{example_order["id"]}"] button[data-reprint]')
            printed = await printers["kitchen"].wait_for_printed(5, timeout=15)
            await page.wait_for_selector("#message:has-text('Reprinted A-1042 (job 5)')")
            await page.click(f'tr[data-order="{example_order["id"]}"] button[data-preview]')
            await page.locator(
                "#preview[open] pre", has_text="Margherita"
            ).wait_for()  # the preview is fetched, then shown
        finally:
            await browser.close()
    assert "KOPIE / COPY" in decode(printed[4]).text and "1042" in decode(printed[4]).text.replace(" ", "")
    async with api_client(agent) as api, api.get("/api/v1/recovery/runs") as response:
        runs = (await response.json())["runs"]
    assert [(r["id"], r["trigger"]) for r in runs][:2] == [(run_id + 1, "manual"), (run_id, "manual")]


async def hold_tickets(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    count: int,
    **overrides: Any,
) -> tuple[Agent, list[dict]]:
    """An agent whose kitchen printer was off longer than the stale age (0.6 s): ``count`` tickets end up held.
    ``overrides``: more config sections (api={"status_refresh_s": 0.3})."""
    agent = await make_agent(printing={"stale_ticket_min": 1}, clock=SteppedClock(), **overrides)
    held = await hold_more(agent, example_order, printers, range(count))
    assert printers["kitchen"].printed == []
    return agent, held


async def hold_more(agent: Agent, example_order: dict, printers: dict[str, SimPrinter], numbers: range) -> list[dict]:
    """Orders ``numbers`` (ord_000, H-0, …) come while the kitchen printer is off, past the stale age: held too."""
    clock = agent.clock
    assert isinstance(clock, SteppedClock)
    printers["kitchen"].set_offline(True)
    asap(example_order)
    held = []
    async with api_client(agent) as api:

        async def all_held() -> bool:
            async with api.get("/api/v1/status") as response:
                return bool((await response.json())["held_count"] == count)

        count = len(numbers) + len(await held_rows(agent, "held"))
        for n in numbers:
            order = dict(example_order, id=f"ord_{n:03d}", number=f"<b>H-{n}</b>", print_receipt=False)
            held.append({"order": order, "job_id": (await post(api, order))["job_ids"][0]})
        # the spool saw it off (or, on a clock already stepped on, held them at once)
        for _ in range(200):
            if agent.spoolers["kitchen"].state.value == "offline" or await all_held():
                break
            await asyncio.sleep(0.05)
        clock.advance(61)  # a minute passes with the printer off: longer than the stale age
        printers["kitchen"].set_offline(False)
        for _ in range(200):
            if await all_held():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("tickets were not held")
    return held


async def held_rows(agent: Agent, state: str | None = None) -> dict[int, str]:
    """Every job's state by id (only those in ``state`` if given)."""
    return dict(await db_rows(agent, "SELECT id, state FROM print_jobs WHERE ?1 IS NULL OR state = ?1", state))


async def test_held_tickets_listed_with_release_and_discard(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Held tickets appear under "Held tickets" (escaped order number, printer and station, wait, preview, Release /
    Discard, Release all), in the JSON and the summary; the buttons' endpoints release (it prints) and discard (it
    never does)."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 2)
    first, second = (h["job_id"] for h in held)
    async with api_client(agent) as api:
        async with api.get("/api/v1/status") as response:
            status = await response.json()
        assert sorted(j["id"] for j in status["held_jobs"]) == [first, second]
        assert all(
            j["printer"] == "kitchen" and j["station"] == "kitchen" and j["waited_s"] >= 1 for j in status["held_jobs"]
        )
        async with api.get("/") as response:
            html = await response.text()
        assert "2 held" in html and 'id="held-jobs"' in html and "data-release-all" in html
        for job_id in (first, second):
            assert (
                f'data-release="{job_id}"' in html
                and f'data-discard="{job_id}"' in html
                and f'data-preview="{job_id}"' in html
            )
        assert "&lt;b&gt;H-0&lt;/b&gt;" in html and "<b>H-0" not in html
        async with api.post(f"/api/v1/jobs/{first}/release") as response:
            assert response.status == 200
        printed = await printers["kitchen"].wait_for_printed(1)
        async with api.post(f"/api/v1/jobs/{second}/discard") as response:
            assert response.status == 200
        async with api.get("/api/v1/status/panel") as response:
            panel = await response.text()
    assert 'id="held-jobs"' not in panel and "data-release-all" not in panel and "0 held" in panel
    assert "H-0" in decode(printed[0]).text.replace(" ", "")
    await asyncio.sleep(0.3)
    assert len(printers["kitchen"].printed) == 1 and await held_rows(agent) == {first: "printed", second: "discarded"}


@pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed: apt-get install -y chromium"
)
async def test_release_discard_and_release_all_clicks_in_headless_chromium(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """In a real browser: Release prints that held ticket, Discard (confirmed) drops one, Release all the rest."""
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="python playwright is not installed (pip install playwright)"
    )
    agent, held = await hold_tickets(make_agent, example_order, printers, 3)
    first, second, third = (h["job_id"] for h in held)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await browser.new_page()
            page.set_default_timeout(15_000)
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(f"http://127.0.0.1:{agent.port}/")
            await page.wait_for_selector(f'#held-jobs button[data-release="{first}"]')
            await page.fill("#token", TOKEN)
            await page.click("#token-box button")
            await page.click(f'#held-jobs button[data-release="{first}"]')
            printed = await printers["kitchen"].wait_for_printed(1, timeout=15)
            await page.wait_for_selector(
                f"#message:has-text('Release of the kitchen ticket of <b>H-0</b> (job {first}) done')"
            )
            await page.wait_for_selector(f'#held-jobs button[data-release="{first}"]', state="detached")
            # the rows below moved up into its place: their buttons take a tap once they settled (status.js)
            await page.wait_for_selector("#panel .moved", state="detached")
            await page.click(f'#held-jobs button[data-discard="{second}"]')
            await page.wait_for_selector(
                f"#message:has-text('Discard of the kitchen ticket of <b>H-1</b> (job {second}) done')"
            )
            await page.wait_for_selector(f'#held-jobs button[data-discard="{second}"]', state="detached")
            await page.wait_for_selector("#panel .moved", state="detached")
            await page.click("button[data-release-all]")
            printed = await printers["kitchen"].wait_for_printed(2, timeout=15)
            await page.wait_for_selector(f"#message:has-text('Release all done (job {third})')")
            await page.wait_for_selector("#held-jobs", state="detached")
        finally:
            await browser.close()
    assert ["H-0" in decode(p).text.replace(" ", "") for p in printed] == [True, False]
    assert "H-2" in decode(printed[1]).text.replace(" ", "")
    assert await held_rows(agent) == {first: "printed", second: "discarded", third: "printed"}


@pytest.mark.parametrize(
    ("state", "counts", "errors", "conflicts", "words"),
    [
        ("completed", {"stored": 3, "conflict": 1}, [], ["A-1042"], "3 orders recovered, 1 conflict — A-1042"),
        ("completed", {"stored": 1}, [], [], "1 order recovered"),
        ("completed", {"present": 9}, [], [], "No missed orders"),
        (
            "completed",
            {"stored": 1, "history": 30},
            [],
            [],
            "1 order recovered, 30 from before this box or its restore (not printed)",
        ),
        (
            "completed",
            {"stored": 0, "conflict": 7, "invalid": 2},
            [],
            ["A-1", "A-2", "A-3", "A-4", "A-5"],
            "No missed orders, 7 conflicts — A-1, A-2, A-3, A-4, A-5 …, 2 invalid",
        ),
        (
            "failed",
            {"stored": 2},
            ["central API GET …: 503", "page 3: no answer"],
            [],
            "Failed: page 3: no answer (2 orders recovered until then)",
        ),
        ("cancelled", {}, [], [], "Cancelled (no missed orders until then)"),
        ("processing", {"stored": 5}, [], [], "Running (processing)"),
    ],
)
def test_recovery_in_words(state: str, counts: dict, errors: list[str], conflicts: list[str], words: str) -> None:
    """The last recovery run as a sentence: how many recovered, which orders conflicted, why it failed."""
    run = RecoveryRun(
        id=1,
        trigger=RunTrigger.MANUAL,
        state=RunState(state),
        since_cursor="",
        next_cursor=None,
        created_at=0.0,
        started_at=None,
        finished_at=None,
        phases=(),
        counts=counts,
        errors=tuple(errors),
    )
    assert recovery_words(run, conflicts) == words
