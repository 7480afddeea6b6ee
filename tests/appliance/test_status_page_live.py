"""The status page as the manager and the cook read it in a real browser (headless Chromium): data that is no longer
current says so, a backlog of held tickets is counted and listed oldest first, each held ticket tells its order's age
and why it is held, and the page fits a phone."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.app import Agent
from edge.clock import SteppedClock
from edge.errors import StoreError
from edge.ops.technician import render_status
from edge.printing.decode import decode
from edge.sim.orders import taken_at
from edge.sim.printer import SimPrinter
from edge.store.jobs import COPY_JUST_OUT_S, JobStore
from tests.api.test_job_reprint import dead_receipt
from tests.appliance.test_status_page import CHROMIUM, CHROMIUM_ARGS, held_rows, hold_more, hold_tickets
from tests.helpers import TOKEN, api_client, db_execute, db_rows, eventually, ids_meet_numbers, post, until, wait_until

pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed: apt-get install -y chromium"
)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="python playwright is not installed (pip install playwright)"
)

ZONE = "Pacific/Kiritimati"  # UTC+14: a time in the browser's zone (UTC here) cannot pass for the agent's


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            await browser.close()


async def stale_notice(page: Any) -> str:
    return (await page.inner_text("#stale")) if await page.locator("#stale").count() else ""


async def test_a_refresh_that_fails_says_since_when_the_page_is_not_up_to_date_and_a_good_one_clears_it(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    chromium: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page refreshes every api.status_refresh_s (0.3 s here). An agent that does not answer (hung: the request
    is held for good), one that answers 503 (its database failed) and one not reachable at all each leave the page
    saying "Not up to date since HH:MM:SS" (the last good refresh, in agent.timezone) with the data greyed; the
    next good refresh takes both away."""
    agent = await make_agent(agent={"timezone": ZONE}, api={"status_refresh_s": 0.3})
    mode = {"now": "ok"}
    counts = JobStore.counts

    async def failing_counts(self: JobStore, states: Any = None) -> Any:
        if mode["now"] == "503":
            raise StoreError("database disk image is malformed")
        return await counts(self, states)

    monkeypatch.setattr(JobStore, "counts", failing_counts)
    held_requests: list[Any] = []
    asked: list[float] = []

    async def route(request: Any) -> None:
        asked.append(asyncio.get_running_loop().time())
        if mode["now"] == "hang":
            held_requests.append(request)  # never answered: the agent hangs
        elif mode["now"] == "down":
            await request.abort("connectionrefused")
        else:
            await request.continue_()

    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    await page.route("**/status/panel", route)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.wait_for_selector('tr[data-printer="kitchen"]')
    await asyncio.sleep(1)
    assert await stale_notice(page) == ""
    opacity = "getComputedStyle(document.getElementById('panel')).opacity"
    assert await page.evaluate(opacity) == "1"

    seen: dict[str, str] = {}
    hour = datetime.now(ZoneInfo(ZONE)).strftime("%H:")
    for failure in ("hang", "503", "down"):
        mode["now"] = failure
        with contextlib.suppress(playwright_api.TimeoutError):  # a hung refresh is given up after max(2 × 0.3 s, 1 s)
            await page.wait_for_selector("#stale:not([hidden])", timeout=3000)
        seen[failure] = await stale_notice(page)
        seen[failure + " opacity"] = await page.evaluate(opacity)
        mode["now"] = "ok"
        with contextlib.suppress(playwright_api.TimeoutError):
            await page.wait_for_selector("#stale", state="hidden", timeout=3000)
            await page.wait_for_function(f"{opacity} === '1'", timeout=3000)
        seen[failure + " then ok"] = await stale_notice(page)
        seen[failure + " then ok opacity"] = await page.evaluate(opacity)
    # The hour when the loop began or ended: a CI run at 03:00:00 UTC crossed one between the two
    hours = "|".join({hour, datetime.now(ZoneInfo(ZONE)).strftime("%H:")})
    for failure in ("hang", "503", "down"):
        assert re.search(rf"Not up to date since (?:{hours})\d\d:\d\d", seen[failure]), seen
        assert float(seen[failure + " opacity"]) < 1, seen
        assert seen[failure + " then ok"] == "" and seen[failure + " then ok opacity"] == "1", seen
    took = asked[-1] - asked[0]
    assert len(asked) <= took / 0.3 + 3, f"{len(asked)} refreshes in {took:.1f} s: one at a time, 0.3 s apart"
    assert "the agent answered 503 (the order store failed; retry later)" in seen["503"], seen
    assert "no answer from the agent" in seen["hang"] and "agent not reachable" in seen["down"], seen


def record_dialogs(page: Any, answer: dict[str, bool]) -> list[str]:
    """The messages of the page's confirm() dialogs, each answered as ``answer["accept"]`` says at the time."""
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await (dialog.accept() if answer["accept"] else dialog.dismiss())

    page.on("dialog", lambda dialog: asyncio.ensure_future(on_dialog(dialog)))
    return dialogs


async def test_a_backlog_of_60_held_tickets_is_counted_listed_oldest_first_and_release_all_asks_first(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """60 tickets held (the kitchen printer was off past the stale age): the page says "60 held" (a count, not the
    length of the list it shows), lists the 50 oldest first (they waited longest) and says "and 10 more"; `edge
    status` says 60; Release all asks "Print 60 held tickets now?" first: dismissed, nothing prints; accepted, all
    60 go."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 60)
    job_ids = [h["job_id"] for h in held]
    async with api_client(agent) as api, api.get("/api/v1/status") as response:
        status = await response.json()
    assert "60 tickets held for a person" in render_status(status, colour=False)
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    answer = {"accept": False}
    dialogs = record_dialogs(page, answer)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.wait_for_selector("#held-jobs")
    summary = await page.inner_text("#summary")
    listed = [
        int(j) for j in await page.eval_on_selector_all("#held-jobs tr[data-job]", "rs => rs.map(r => r.dataset.job)")
    ]
    held_section = await page.inner_text("#held")
    assert "60 held" in summary, summary
    assert listed == job_ids[:50], listed
    assert "and 10 more" in held_section, held_section
    await page.fill("#token", TOKEN)
    await page.click("#token-box button")
    await page.click("button[data-release-all]")
    await wait_until(lambda: dialogs, what="a confirmation asked")
    await asyncio.sleep(0.5)
    assert dialogs == ["Print 60 held tickets now?"]
    assert printers["kitchen"].printed == [] and set((await held_rows(agent)).values()) == {"held"}
    answer["accept"] = True
    await page.click("button[data-release-all]")
    await page.wait_for_selector("#message:has-text('Release all done')")
    await printers["kitchen"].wait_for_printed(60, timeout=30)


async def test_a_click_held_down_while_the_panel_refreshes_still_lands(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """The page refreshes its panel every few seconds by replacing it. A button pressed just before a refresh
    arrives and released just after it was pressed on the old panel and let go over the new one: the browser fires
    no click, and the manager's Release all (or Retry, Discard) did nothing, once in a CI run of the test above. A
    refresh that arrives while a button is held down is shown once it is let go."""
    agent, _ = await hold_tickets(make_agent, example_order, printers, 2)
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    dialogs = record_dialogs(page, {"accept": False})
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.fill("#token", TOKEN)
    await page.click("#token-box button")
    await page.wait_for_selector("button[data-release-all]")
    await page.hover("button[data-release-all]")
    await page.mouse.down()
    async with page.expect_response(lambda r: "/status/panel" in r.url):  # a refresh while the button is down
        await page.evaluate(  # the token typed again: the page refreshes at once
            "token => { document.getElementById('token').value = token;"
            " document.getElementById('token-box').requestSubmit(); }",
            TOKEN,
        )
    await asyncio.sleep(0.2)  # its panel is in, or waiting for the press to end
    await page.mouse.up()
    await wait_until(lambda: dialogs, what="the click's confirmation")
    assert dialogs == ["Print 2 held tickets now?"]


async def test_each_held_ticket_shows_its_orders_age_and_why_it_is_held(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """Two orders the till sent late, one 50 minutes old, one 5 hours old, both held as stale (the stale age is
    45 min): each held row gives the order's own age from its created_at (as the hold decision takes it) and when it
    was ordered, in agent.timezone, and why it is held in words; not the seconds since the job was stored, which
    read the same for both."""
    agent = await make_agent(agent={"timezone": ZONE})
    now = datetime.now(UTC)
    ages = {"B-50min": timedelta(minutes=50), "B-5h": timedelta(hours=5)}
    async with api_client(agent) as api:
        for number, age in ages.items():
            order = taken_at(dict(copy.deepcopy(example_order), id=f"ord_{number}", number=number), now - age)
            order["print_receipt"] = False
            async with api.post("/api/v1/orders", json=order) as response:
                assert response.status == 201
        await until(api, "/api/v1/jobs?state=held", lambda body: len(body["jobs"]) == 2, "both tickets held")
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.wait_for_selector("#held-jobs")
    rows = {
        number: " ".join((await page.inner_text(f'#held-jobs tr:has(td:text-is("{number}"))')).split())
        for number in ages
    }
    for number, age in ages.items():
        ordered = (now - age).astimezone(ZoneInfo(ZONE)).strftime("%d.%m. %H:%M")
        assert f"ordered {ordered}" in rows[number], rows
        assert "too old to print unasked" in rows[number], rows
    assert "Order 50 min old" in rows["B-50min"] and "Order 5 h old" in rows["B-5h"], rows


async def test_on_a_375_px_phone_the_page_does_not_scroll_sideways_and_every_button_is_a_finger_wide(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """On a phone 375 px wide (is_mobile: the browser zooms out to fit a wider page) with held and dead tickets,
    the page is no wider than the screen, shown at scale 1, and every button (Release, Discard, Release all, Retry,
    Reprint, the ticket previews) lies on the screen and is at least 44 × 44 px to tap."""
    agent, _ = await hold_tickets(make_agent, example_order, printers, 3)
    context = await chromium.new_context(
        viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = await context.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.wait_for_selector("#held-jobs button[data-release]")
    geometry = await page.evaluate(
        """() => ({
          width: document.documentElement.scrollWidth,
          scale: visualViewport.scale,
          buttons: [...document.querySelectorAll("#panel button")].map(b => {
            const r = b.getBoundingClientRect();
            return {what: b.textContent.trim(), left: r.left, right: r.right, w: r.width, h: r.height};
          }),
        })"""
    )
    assert geometry["width"] <= 375 and geometry["scale"] == 1, geometry
    off = [b for b in geometry["buttons"] if b["left"] < 0 or b["right"] > 375]
    small = [b for b in geometry["buttons"] if b["w"] < 44 or b["h"] < 44]
    assert not off and not small, {"off the screen": off, "too small": small}
    assert {"Release", "Discard", "Release all"} <= {b["what"] for b in geometry["buttons"]}


async def test_a_double_click_or_a_click_again_before_the_answer_is_one_reprint(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], chromium: Any
) -> None:
    """People double-click buttons on web pages, and click again when an answer is slow: a double click on Reprint is
    one reprint (it was two: two COPY tickets for the cook), and so is a second click while the first one's answer is
    still awaited. In a real browser, with the page's own script."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    reprint = f'tr[data-order="{example_order["id"]}"] button[data-reprint]'
    sent: list[str] = []
    answer = asyncio.Event()

    async def slow_answer(route: Any) -> None:
        await answer.wait()
        await route.continue_()

    page = await chromium.new_page()
    page.set_default_timeout(15_000)
    page.on("request", lambda request: sent.append(request.url) if "/reprint" in request.url else None)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.fill("#token", TOKEN)
    async with page.expect_response(lambda response: "/status/panel" in response.url):
        await page.click("#token-box button")
    # A person's double click: the first click's answer is in before the second click (a browser fires it
    # with detail 2) comes, some 100-300 ms later.
    box = await bounds(page, reprint)  # asked again if the panel was being put in when first measured
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down(click_count=1)
    await page.mouse.up(click_count=1)
    await page.wait_for_selector("#message:has-text('Reprinted ')")
    await page.mouse.down(click_count=2)
    await page.mouse.up(click_count=2)
    await printers["kitchen"].wait_for_printed(2)
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs"),
        lambda rows: rows == [("printed",), ("printed",)],
        what="the COPY marked printed",
    )
    clock.advance(COPY_JUST_OUT_S)  # the press below comes a while after that COPY: it wants another
    await page.evaluate("document.getElementById('message').textContent = ''")
    await page.route("**/reprint?by=id", slow_answer)  # the agent's answer to the next one is held back
    await page.click(reprint)
    await wait_until(lambda: len(sent) >= 2)
    await page.click(reprint, force=True)  # again, no answer yet (the button is off meanwhile)
    answer.set()
    await page.wait_for_selector("#message:has-text('Reprinted ')")
    await printers["kitchen"].wait_for_printed(3)
    assert len(sent) == 2, sent
    reprints = await db_rows(agent, "SELECT id FROM print_jobs WHERE copy = 1")
    assert len(reprints) == 2, reprints
    assert all("KOPIE / COPY" in decode(t).text for t in printers["kitchen"].printed[1:])


async def open_with_token(chromium: Any, agent: Agent) -> Any:
    """The status page in a new tab, the token typed and its refresh in; the page's clock is the test's to stop."""
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    await page.clock.install()
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.fill("#token", TOKEN)
    async with page.expect_response(lambda response: "/status/panel" in response.url):
        await page.click("#token-box button")
    return page


async def stop_the_clock(page: Any) -> None:
    """The page's time stands still: a tap comes right after the next refresh, however slow this machine is."""
    for ahead_s in (0.5, 1.0, 2.0, 4.0):  # a loaded machine may take longer than the margin between the two calls
        try:
            await page.clock.pause_at(await page.evaluate("Date.now()") / 1000 + ahead_s)  # in seconds
            return
        except playwright_api.Error as error:
            if "to the past" not in str(error):
                raise
    raise AssertionError("the page's clock ran past every margin before it could be stopped")


async def refresh_now(page: Any) -> None:
    """The token typed again: the page refreshes at once (its own timer stands still with the clock)."""
    await page.evaluate(
        "token => { document.getElementById('token').value = token;"
        " document.getElementById('token-box').requestSubmit(); }",
        TOKEN,
    )


async def bounds(page: Any, selector: str) -> dict[str, float]:
    """Where a button is (x, y, width, height); asked again if a refresh replaced it while it was measured."""
    for _ in range(50):
        if (box := await page.locator(selector).bounding_box()) is not None:
            return box
        await asyncio.sleep(0.05)
    raise AssertionError(f"{selector} is not on the page")


async def centre(page: Any, selector: str) -> tuple[float, float]:
    box = await bounds(page, selector)
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def test_a_tap_where_a_refresh_just_moved_another_held_ticket_is_not_taken_and_discard_names_the_order(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """Two people at the held list: B aims at Discard of the 2nd ticket while A releases the 1st elsewhere. The
    refresh takes the 1st row away and every row moves up: B's tap, just after, would land on Discard of the 3rd
    (an order nobody meant to drop, and the dialog named only "job 3"). A tap on a button a refresh just put where
    another one was is not taken, and says so; the Discard dialog and its answer name the order and the station."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 4)
    first, second, third, fourth = (h["job_id"] for h in held)
    page = await open_with_token(chromium, agent)
    dialogs = record_dialogs(page, {"accept": True})
    x, y = await centre(page, f'#held-jobs button[data-discard="{second}"]')
    await page.mouse.move(x, y)
    await stop_the_clock(page)
    async with api_client(agent) as api, api.post(f"/api/v1/jobs/{first}/release") as response:
        assert response.status == 200  # the other person
    await refresh_now(page)
    await page.wait_for_selector(f'#held-jobs button[data-release="{first}"]', state="detached")
    await page.mouse.click(x, y)  # Discard of the 3rd sits there now
    await page.wait_for_selector("#message:has-text('just moved')", timeout=5_000)
    await asyncio.sleep(0.3)
    await page.clock.resume()
    assert dialogs == []
    assert {k: v for k, v in (await held_rows(agent)).items() if k != first} == {
        second: "held",
        third: "held",
        fourth: "held",
    }
    await page.wait_for_selector("#held-jobs .moved", state="detached", timeout=5_000)  # settled: B looks again
    await page.click(f'#held-jobs button[data-discard="{second}"]')
    await page.wait_for_selector(
        f"#message:has-text('Discard of the kitchen ticket of <b>H-1</b> (job {second}) done')"
    )
    assert dialogs == ["Discard the kitchen ticket of order \u2068<b>H-1</b>\u2069? It will never print."]  # isolated
    assert {k: v for k, v in (await held_rows(agent)).items() if k != first} == {
        second: "discarded",
        third: "held",
        fourth: "held",
    }


async def test_a_tap_where_a_new_order_just_pushed_the_last_orders_down_reprints_nothing_and_names_the_order(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """Last orders are newest first: each new order pushes every row down one. A tap aimed at Reprint of A-1002 just
    after a refresh would reprint A-1003 ("Reprint done (jobs 7)": nobody noticed). The tap is not taken; the
    reprint aimed at, once the rows settled, says "Reprinted A-1002 (job …)" and prints only that order's COPY."""
    agent = await make_agent()
    orders = [dict(example_order, id=f"ord_{n}", number=f"A-100{n}", print_receipt=False) for n in range(1, 5)]
    async with api_client(agent) as api:
        for order in orders[:3]:
            await post(api, order)
        await printers["kitchen"].wait_for_printed(3)
        page = await open_with_token(chromium, agent)
        aimed = 'tr[data-order="ord_2"] button[data-reprint]'
        x, y = await centre(page, aimed)
        await page.mouse.move(x, y)
        await stop_the_clock(page)
        await post(api, orders[3])
        await refresh_now(page)
        await page.wait_for_selector('tr[data-order="ord_4"]')
    await page.mouse.click(x, y)  # A-1003's Reprint sits there now
    await page.wait_for_selector("#message:has-text('just moved')", timeout=5_000)
    await asyncio.sleep(0.3)
    await page.clock.resume()
    assert await db_rows(agent, "SELECT order_id FROM print_jobs WHERE copy = 1") == []
    await page.wait_for_selector("#orders .moved", state="detached", timeout=5_000)
    await page.click(aimed)
    await page.wait_for_selector("#message:has-text('Reprinted A-1002 (job ')")
    await printers["kitchen"].wait_for_printed(5)
    assert await db_rows(agent, "SELECT order_id FROM print_jobs WHERE copy = 1") == [("ord_2",)]
    assert "1002" in decode(printers["kitchen"].printed[4]).text.replace(" ", "")


async def test_a_tap_near_a_buttons_edge_after_rows_shifted_by_part_of_a_row_is_not_taken(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """Rows that move by part of a row (a line of text above them grew) put the row above's button over the top edge of
    the one aimed at, its centre still outside it: a tap near that edge is not taken either. Before (newfeat probe F2),
    only a button whose centre landed in another's place was marked, and the tap reprinted the newer order."""
    agent = await make_agent()
    orders = [dict(example_order, id=f"ord_{n}", number=f"A-100{n}", print_receipt=False) for n in range(1, 4)]
    async with api_client(agent) as api:
        for order in orders:
            await post(api, order)
        await printers["kitchen"].wait_for_printed(3)
    page = await open_with_token(chromium, agent)
    aimed, above = (f'tr[data-order="{o}"] button[data-reprint]' for o in ("ord_2", "ord_3"))
    await stop_the_clock(page)  # no refresh of its own replaces the rows while they are measured
    box = await bounds(page, aimed)
    pitch = box["y"] - (await bounds(page, above))["y"]
    x, y = box["x"] + box["width"] / 2, box["y"] + 2  # a finger near the button's top edge
    shift = pitch - 0.75 * box["height"]  # the row above's button now covers (x, y); its centre is above the aimed box
    await page.evaluate(
        """shift => showPanel(panel.innerHTML.replace('<tr data-order=', '<tr style="height:' + shift + 'px"><td></td>'
        + '</tr><tr data-order='))""",
        shift,
    )
    moved = await bounds(page, above)
    assert moved["y"] < y < moved["y"] + moved["height"] and moved["y"] + moved["height"] / 2 < box["y"], (moved, box)
    await page.mouse.click(x, y)
    await page.wait_for_selector("#message:has-text('just moved')", timeout=5_000)
    await asyncio.sleep(0.3)
    assert await db_rows(agent, "SELECT order_id FROM print_jobs WHERE copy = 1") == []


async def test_release_all_prints_the_tickets_its_dialog_counted_not_those_held_while_it_was_open(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """The dialog asks "Print 3 held tickets now?"; while the page stands (the dialog open, or the count up to a
    refresh old) two more stale orders are held. OK prints the 3 counted; the 2 others stay held and the answer says
    so (it printed all 5: "Release all done (jobs 1, 2, 3, 4, 5)")."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 3)
    counted = [h["job_id"] for h in held]
    page = await open_with_token(chromium, agent)
    dialogs = record_dialogs(page, {"accept": True})
    await stop_the_clock(page)  # the page shows the 3 and does not refresh
    later = [h["job_id"] for h in await hold_more(agent, example_order, printers, range(3, 5))]
    await page.click("button[data-release-all]")
    await page.wait_for_selector("#message:has-text('Release all done')")
    await printers["kitchen"].wait_for_printed(3)
    await asyncio.sleep(0.3)
    assert dialogs == ["Print 3 held tickets now?"]
    message = await page.inner_text("#message")
    assert f"jobs {', '.join(map(str, counted))}" in message and "2 held tickets not counted stay held" in message
    assert len(printers["kitchen"].printed) == 3
    rows = await held_rows(agent)
    assert [rows[j] for j in later] == ["held", "held"] and all(rows[j] != "held" for j in counted)


async def test_release_all_tapped_right_after_a_refresh_that_counted_one_more_is_taken_and_prints_what_it_asked(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """A refresh that only counted one more held ticket leaves Release all where it was, and it is the same button:
    a tap right after it was refused ("that row just moved under your finger": one tap in five on an evening when
    tickets keep being held; the status73 probe, D1). It asks with the count it sends ("Print 4 held tickets now?")
    and prints those 4."""
    agent, held = await hold_tickets(make_agent, example_order, printers, 3)
    page = await open_with_token(chromium, agent)
    dialogs = record_dialogs(page, {"accept": True})
    await stop_the_clock(page)  # the tap comes within the second after the refresh, however slow this machine is
    box = await bounds(page, "button[data-release-all]")
    [later] = await hold_more(agent, example_order, printers, range(3, 4))
    await refresh_now(page)
    await page.wait_for_selector(f'button[data-release-all~="{later["job_id"]}"]')
    assert await bounds(page, "button[data-release-all]") == box  # it did not move
    await page.evaluate("document.getElementById('message').textContent = ''")
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.wait_for_function("document.getElementById('message').textContent !== ''")
    message = await page.inner_text("#message")
    ids = [h["job_id"] for h in held] + [later["job_id"]]
    assert message == f"Release all done (jobs {', '.join(map(str, ids))})", message
    assert dialogs == ["Print 4 held tickets now?"]
    await printers["kitchen"].wait_for_printed(4)
    assert set((await held_rows(agent)).values()) <= {"printing", "printed"}


async def test_a_reprint_the_agent_is_slow_to_answer_stays_one_press_until_its_answer_came(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The card stalls under the reprint's write: no answer within the page's wait (twice the refresh, 1 s here).
    The page gave up ("not confirmed … look again") and forgot the press, so a second press printed a second COPY
    once the card came back. It says "not confirmed yet", keeps Reprint off (across refreshes) until the first
    request really ended, and a press meanwhile sends nothing: one COPY."""
    agent = await make_agent(api={"status_refresh_s": 0.3})
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    card = asyncio.Event()
    asked: list[str] = []
    add_copies = JobStore.add_copies

    async def stalled(self: JobStore, order_id: str, **kwargs: Any) -> list[int]:
        asked.append(order_id)
        await card.wait()  # the write waits for the card
        return await add_copies(self, order_id, **kwargs)

    monkeypatch.setattr(JobStore, "add_copies", stalled)
    page = await open_with_token(chromium, agent)
    reprint = f'tr[data-order="{example_order["id"]}"] button[data-reprint]'
    await page.click(reprint)
    await page.wait_for_selector("#message:has-text('not confirmed yet')", timeout=5_000)
    await asyncio.sleep(0.7)  # refreshes come meanwhile
    assert await page.locator(reprint).is_disabled()
    await page.click(reprint, force=True)  # the second press
    await asyncio.sleep(0.5)
    assert asked == [example_order["id"]]
    card.set()
    await page.wait_for_selector("#message:has-text('Reprinted A-1042 (job 2)')")
    await printers["kitchen"].wait_for_printed(2)
    await asyncio.sleep(0.5)
    assert len(printers["kitchen"].printed) == 2 and asked == [example_order["id"]]
    assert await db_rows(agent, "SELECT id FROM print_jobs WHERE copy = 1") == [(2,)]
    await page.wait_for_selector(f"{reprint}:not([disabled])")  # on again


async def test_reprint_pressed_again_just_after_its_copy_says_the_copy_is_there_and_prints_nothing(
    agent: Agent, example_order: dict, printers: dict[str, SimPrinter], chromium: Any
) -> None:
    """The cook presses Reprint and, its answer in, again a moment later (or another person on another page): the page
    says the COPY is there already, going out or just come out, and nothing more prints. Before, a second COPY."""
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    page = await open_with_token(chromium, agent)
    reprint = f'tr[data-order="{example_order["id"]}"] button[data-reprint]'
    await page.click(reprint)
    await page.wait_for_selector("#message:has-text('Reprinted A-1042 (job 2)')")
    await page.click(reprint)
    await page.wait_for_selector("#message:has-text('A-1042 not reprinted; not copied again: a COPY of it is there')")
    assert "job 2 " in await page.inner_text("#message")
    await printers["kitchen"].wait_for_printed(2)
    await asyncio.sleep(0.5)  # a second COPY would be out by now
    assert len(printers["kitchen"].printed) == 2


# Where each character of ``words`` (their last occurrence in the message line) is drawn, left to right on the screen.
CHARACTERS_X = """words => {
  const nodes = [];
  const walker = document.createTreeWalker(document.getElementById("message"), NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode()); ) nodes.push(node);
  const text = nodes.map((node) => node.data).join("");
  const x = (at) => {
    let node = 0;
    while (at >= nodes[node].length) at -= nodes[node++].length;
    const range = document.createRange();
    range.setStart(nodes[node], at);
    range.setEnd(nodes[node], at + 1);
    return range.getBoundingClientRect().left;
  };
  return words.map((word) => [...word].map((_, i) => x(text.lastIndexOf(word) + i)));
}"""


async def test_an_order_number_with_a_right_to_left_override_does_not_turn_the_pages_words_around(
    make_agent: Callable[..., Awaitable[Agent]], example_order: dict, printers: dict[str, SimPrinter], chromium: Any
) -> None:
    """An order an older intake took with a right-to-left override in its number (U+202E, and Hebrew; refused now):
    Reprint said "Reprinted (6 boj) …": the override ran on past the number into the page's own words. The number is
    set apart (a <bdi>): "(job 2)" reads left to right after it (the status73 probe, D2)."""
    agent = await make_agent()
    example_order["print_receipt"] = False
    async with api_client(agent) as api:
        await post(api, example_order)
    await printers["kitchen"].wait_for_printed(1)
    number = "\u202eA-1042 \u05d0\u05d1\u05d2"
    await db_execute(
        agent,
        "UPDATE orders SET number = ?1, payload = json_set(payload, '$.number', ?1) WHERE id = ?2",
        number,
        example_order["id"],
    )
    page = await open_with_token(chromium, agent)
    await page.click(f'tr[data-order="{example_order["id"]}"] button[data-reprint]')
    await page.wait_for_selector("#message:has-text('Reprinted ')")
    reprinted, job = await page.evaluate(CHARACTERS_X, ["Reprinted", "(job 2)"])
    assert reprinted == sorted(reprinted) and job == sorted(job) and reprinted[-1] < job[0], (reprinted, job)
    assert f"Reprinted <bdi>{number}</bdi> (job 2)" in await page.inner_html("#message")
    await printers["kitchen"].wait_for_printed(2)


async def test_reprint_in_a_dead_receipts_row_prints_that_receipt_not_the_whole_order(
    make_agent: Callable[..., Awaitable[Agent]],
    example_order: dict,
    printers: dict[str, SimPrinter],
    chromium: Any,
) -> None:
    """Dead jobs: "#2 A-1042 front … closed the connection  Retry Reprint". The guest needs a receipt: Reprint in
    that row sent the order's reprint and the kitchen got a COPY of food already made. It reprints that receipt
    (marked COPY) and says so; the whole order's Reprint stays in Last orders."""
    agent, jobs = await dead_receipt(make_agent, example_order, printers)
    page = await open_with_token(chromium, agent)
    await page.click(f'#dead-jobs tr[data-job="{jobs["receipt"]}"] button[data-job-reprint]')
    await page.wait_for_selector("#message:has-text('Reprinted the receipt of A-1042 (job ')")
    await printers["front"].wait_for_printed(2)  # the original cut short, then the COPY
    await asyncio.sleep(0.3)
    assert await db_rows(agent, "SELECT kind FROM print_jobs WHERE id > ?", jobs["receipt"]) == [("receipt",)]
    assert len(printers["kitchen"].printed) == 1
    assert await page.locator(f'#orders tr[data-order="{example_order["id"]}"] button[data-reprint]').count() == 1


async def test_reprint_in_an_old_orders_row_reprints_it_where_its_id_is_the_number_of_a_ticket_of_today(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], chromium: Any
) -> None:
    """A till whose integer ids meet its daily numbers: Last orders lists the two-day-old order id 57 (number 3) and
    today's 57 (order 912). Reprint in the row of 3 reprints order 57, in the row of 57 order 912: the page names the
    row's order by its id and says so (by=id), so it is not asked which one (409 ambiguous, to a caller who does not
    say) and does not get today's ticket 57 for the old order's row."""
    agent = await ids_meet_numbers(make_agent)
    page = await open_with_token(chromium, agent)
    # The oldest row first: a COPY listed in it grows no row above it, where the next tap goes.
    await page.click('#orders tr[data-order="57"] button[data-reprint]')
    await page.wait_for_selector("#message:has-text('Reprinted 3 (job ')")
    await page.click('#orders tr[data-order="912"] button[data-reprint]')
    await page.wait_for_selector("#message:has-text('Reprinted 57 (job ')")
    printed = await printers["kitchen"].wait_for_printed(7)  # five originals, then the two COPYs
    assert [decode(t).qr_codes for t in printed[5:]] == [["edge:v1:57:kitchen"], ["edge:v1:912:kitchen"]]
    assert await db_rows(agent, "SELECT order_id FROM print_jobs WHERE copy ORDER BY id") == [("57",), ("912",)]


async def test_a_wrong_token_typed_into_a_private_page_is_said_to_be_refused(
    chromium: Any, make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """status_page_public = false: a token typed wrong is answered 401, and the page says the token was refused, where
    it said "Enter the API token to see the status." as if none had been typed (the api80 probe, F5)."""
    agent = await make_agent(api={"status_page_public": False})
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.fill("#token", "not-the-token-0123456789abcdef")
    async with page.expect_response(lambda response: "/status/panel" in response.url and response.status == 401):
        await page.click("#token-box button")
    await page.wait_for_function("document.getElementById('message').textContent.length > 0")
    text = await page.inner_text("#message")
    assert "refused" in text, text


async def test_a_page_whose_token_was_refused_stops_sending_it_until_another_is_typed(
    chromium: Any, make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """status_page_public = false, refreshing every 0.3 s: a token typed wrong is refused (401) once, and the page
    says so and sends it no more, for as long as it stays open; a token typed then is sent, and the refreshes go on
    with it. Before, the page sent the refused token with every refresh, for good: a PC that was also the till was
    braked with nobody typing and its orders refused 429 (the verify81 probe, F1)."""
    agent = await make_agent(api={"status_page_public": False, "status_refresh_s": 0.3})
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/status/panel" in r.url else None)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    await page.fill("#token", "not-the-token-0123456789abcdef")
    async with page.expect_response(lambda response: "/status/panel" in response.url and response.status == 401):
        await page.click("#token-box button")
    await asyncio.sleep(2)  # six refreshes' time
    assert sent.count("Bearer not-the-token-0123456789abcdef") == 1, sent
    assert "refused" in await page.inner_text("#message")
    await page.fill("#token", TOKEN)
    async with page.expect_response(lambda response: "/status/panel" in response.url and response.status == 200):
        await page.click("#token-box button")
    await page.wait_for_selector('tr[data-printer="kitchen"]')
    await asyncio.sleep(1)
    assert sent.count(f"Bearer {TOKEN}") >= 3, sent


async def test_a_wrong_token_typed_again_and_again_is_said_to_wait_and_the_box_keeps_working(
    chromium: Any, make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """status_page_public = false: a person types a wrong token six times on a PC. The box looks at none from that
    PC for a while (429): the page says to check the token and in how many seconds to enter it again, not "the agent
    answered 429", and the till on its own address still gets in. Before stop 81 wrong tokens were never slowed: a
    4-digit token was found in 1.5 s (the security81 probe, F3)."""
    agent = await make_agent(api={"status_page_public": False})
    page = await chromium.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"http://127.0.0.1:{agent.port}/")
    for n in range(6):
        status = 401 if n < 5 else 429
        async with page.expect_response(lambda r, s=status: "/status/panel" in r.url and r.status == s):
            await page.fill("#token", f"not-the-token-{n}")
            await page.click("#token-box button")
    await page.wait_for_function("document.getElementById('message').textContent.includes('Too many')")
    text = await page.inner_text("#message")
    assert "check the token" in text and re.search(r"again in \d+ s", text), text
    async with api_client(agent, address="127.0.0.3") as till, till.get("/api/v1/status/panel") as response:
        assert response.status == 200
