"""Recovery runs in process: the conflict rule, joining, cancelling, faults and the rate limit, schedule, API."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.cli import main
from edge.config import Settings
from edge.events import CentralLinkChanged, OrderConflicted, RecoveryCompleted, RecoveryFailed, RecoveryStarted
from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from edge.states import RunTrigger
from tests.helpers import (
    TOKEN,
    Recorder,
    api_client,
    db_execute,
    db_rows,
    eventually,
    key_mark,
    slow_fsync,
    wait_until,
)
from tests.sync.conftest import CENTRAL_TOKEN, STORE, Agents


def _printed_json(out: str) -> Any:
    """The JSON the command printed (indented, from a line '{' to a line '}'), without the agent's log lines."""
    start = out.index("\n{\n") + 1 if not out.startswith("{\n") else 0
    return json.loads(out[start : out.index("\n}\n", start) + 2])


api = api_client


async def recovered_and_printed(
    order: dict[str, Any],
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
) -> tuple[Agent, Recorder]:
    """An agent started with ``order`` at central only: its first run brings it, and its kitchen ticket prints."""
    central.add_orders([order])
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    await printers["kitchen"].wait_for_printed(1)
    return agent, events


async def test_conflict_keeps_the_local_order_and_is_reported(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Same id, other content at the backend: the local order wins, nothing is reprinted, the run lists the conflict and
    an
    OrderConflicted event is published."""
    local = make_order(1, prefix="c")
    changed = make_order(1, prefix="c") | {"number": "A-9999"}
    central.add_orders([changed, make_order(2, prefix="c")])
    central.latency_s = 0.3  # keeps the first run busy while the order is pushed
    agent, events = await agents.start(sync_settings())
    async with api(agent.port) as session:
        async with session.post("/api/v1/orders", json=local) as response:
            assert response.status == 201
    [completed] = await events.wait(RecoveryCompleted)
    db = agent.settings.agent.db_path
    assert completed.counts["conflict"] == 1 and completed.counts["stored"] == 1
    [(payload,)] = await db_rows(db, "SELECT payload FROM orders WHERE id = 'c_000001'")
    assert json.loads(payload)["number"] == local["number"]
    assert await db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE order_id = 'c_000001'") == [
        (2,)
    ]  # ticket + receipt from the push, no more
    assert [e.order_id for e in events.of(OrderConflicted) if e.source == "recovery"] == ["c_000001"]
    async with api(agent.port) as session:
        async with session.get(f"/api/v1/recovery/runs/{completed.run_id}") as response:
            run = await response.json()
    assert [c["order_id"] for c in run["conflicts"]] == ["c_000001"] and run["state"] == "completed"
    assert run["conflicts"][0]["reason"].startswith("differs from the order stored here in: number")
    assert [p["phase"] for p in run["phases"]] == ["validation", "processing", "completion"]


async def test_the_same_order_as_centrals_program_writes_it_is_present_not_a_conflict(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The order pushed here, listed by central as its own serialiser writes it (text in NFD, nulls left out, money
    trimmed, times with +00:00 and milliseconds): present, not a conflict; nothing stored or printed again, nobody
    told."""
    local = make_order(1, prefix="s")
    listed = json.loads(
        json.dumps(local),
        object_hook=lambda d: {
            k: unicodedata.normalize("NFD", v) if isinstance(v, str) else v for k, v in d.items() if v is not None
        },
    )
    listed["items"][0]["unit_price"] = "9.5"
    listed["totals"]["discount"] = "0"
    listed["created_at"] = listed["created_at"].replace("Z", ".000+00:00")
    central.add_orders([listed, make_order(2, prefix="s")])
    central.latency_s = 0.3  # keeps the first run busy while the order is pushed
    agent, events = await agents.start(sync_settings())
    async with api(agent.port) as session:
        async with session.post("/api/v1/orders", json=local) as response:
            assert response.status == 201
    [completed] = await events.wait(RecoveryCompleted)
    assert (completed.counts["present"], completed.counts["conflict"], completed.counts["stored"]) == (1, 0, 1)
    assert not events.of(OrderConflicted)
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE order_id = 's_000001'") == [(2,)]


async def test_a_trigger_during_a_run_joins_it(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """While a run is active, POST /recovery/runs answers with that run (joined) instead of starting a second one."""
    central.create_orders(5, prefix="j")
    central.latency_s = 0.5
    agent, events = await agents.start(sync_settings())
    [started] = await events.wait(RecoveryStarted)
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
            body = await response.json()
    assert body["run_id"] == started.run_id and body["joined"] is True
    await events.wait(RecoveryCompleted)
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM recovery_runs") == [(1,)]


async def test_a_conflict_between_two_cancels_names_what_differs_but_not_the_reasons_words(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The box took an order already cancelled ("Gast gegangen"); central lists it cancelled too, in its own words,
    and under another number. The conflict names the number: a cancel's reason is not the order's content (as two
    cancels that differ only in it are one). Before, it named cancel_reason too (central chaos harness, v3 seed 5)."""
    cancelled = {"status": "cancelled"}
    local = make_order(1, prefix="x") | cancelled | {"cancel_reason": "Gast gegangen"}
    changed = make_order(1, prefix="x") | cancelled | {"cancel_reason": "Customer cancelled", "number": "A-9999"}
    central.add_orders([changed])
    central.latency_s = 0.3  # keeps the first run busy while the order is pushed
    agent, events = await agents.start(sync_settings())
    async with api(agent.port) as session:
        async with session.post("/api/v1/orders", json=local) as response:
            assert response.status in (200, 201), await response.text()  # 200: taken, nothing to print
    [completed] = await events.wait(RecoveryCompleted)
    async with api(agent.port) as session:
        async with session.get(f"/api/v1/recovery/runs/{completed.run_id}") as response:
            run = await response.json()
    assert [c["reason"] for c in run["conflicts"]] == [
        "differs from the order stored here in: number; the stored one stands, this one is not printed"
    ]


async def test_cancel_stops_the_run_and_keeps_the_cursor(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A cancelled run ends 'cancelled' at its next page, the confirmed cursor stays where it was; cancelling again is
    409."""
    central.create_orders(30, prefix="x")
    central.latency_s = 0.3
    agent, events = await agents.start(sync_settings(page_size=5))
    [started] = await events.wait(RecoveryStarted)
    async with api(agent.port) as session:
        async with session.post(f"/api/v1/recovery/runs/{started.run_id}/cancel") as response:
            assert response.status == 200, await response.text()
            run = await response.json()
        assert run["state"] == "cancelled" and "cancelled by request" in run["errors"][0]
        async with session.post(f"/api/v1/recovery/runs/{started.run_id}/cancel") as response:
            assert response.status == 409
        async with session.post("/api/v1/recovery/runs/999/cancel") as response:
            assert response.status == 404
        async with session.get("/api/v1/recovery/status") as response:
            status = await response.json()
    assert status["cursor"] == "" and status["active_run"] is None and status["last_run"]["state"] == "cancelled"
    assert not events.of(RecoveryCompleted)


async def test_a_run_waiting_on_a_busy_central_is_cancelled_at_once(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Central answers the orders list 503 with Retry-After (maintenance): the run waits between tries. A technician
    cancels it: the answer is 200 with the run cancelled, at once, and central is not asked again. Before, the cancel
    waited for the whole retry cycle (about 105 s at the defaults, 5 more list calls) and then answered 409, the run
    "failed" (the central probe helper, 2 of 2)."""
    central.create_orders(3, prefix="m")
    central.fail_next(50, 503, retry_after=2.0, path="orders")
    agent, events = await agents.start(sync_settings(max_attempts=6, retry_max_s=2.0))
    [started] = await events.wait(RecoveryStarted)
    listed = lambda: [t for t, _, p, _ in central.requests if p.endswith("/orders")]  # noqa: E731
    await central.wait_for(listed, 10)
    asked = len(listed())
    async with api(agent.port) as session:
        async with asyncio.timeout(1.5), session.post(f"/api/v1/recovery/runs/{started.run_id}/cancel") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["state"] == "cancelled"
    await asyncio.sleep(2.5)  # past the next try's time
    assert len(listed()) == asked, central.requests


async def test_cancelling_a_run_whose_end_is_written_but_not_yet_on_disk_is_409(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a slow disk a run's end is visible (committed) a while before its fsync returns. A cancel in that while is
    409 like any cancel of a run that is over, not 200 with the run "completed" (before: 200, the agent waited for the
    run to end and reported it as if it had cancelled it)."""
    slow_fsync(monkeypatch, 0.3)  # an SD card having a bad moment
    agent, _ = await agents.start(sync_settings())
    db = agent.settings.agent.db_path
    await eventually(lambda: db_rows(db, "SELECT state FROM recovery_runs"), lambda rows: rows == [("completed",)])
    async with api(agent.port) as session, session.post("/api/v1/recovery/runs/1/cancel") as response:
        assert response.status == 409, await response.text()
        assert "completed" in (await response.json())["reason"]


async def test_faults_are_survived_within_the_rate_limit(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """429s with Retry-After and a burst of 500s during a run: it still completes with every order stored, and the
    simulator
    never sees more requests in a second than the configured limit."""
    central.create_orders(200, prefix="f")
    central.fail_next(2, 429, retry_after=0.2)
    central.fail_next(3, 500)
    agent, events = await agents.start(sync_settings(rate_limit_rps=15.0, page_size=40, batch_size=20))
    [completed] = await events.wait(RecoveryCompleted, timeout=30)
    assert completed.counts["stored"] == 200
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM orders") == [(200,)]
    assert [s for *_, s in central.requests].count(429) == 2 and [s for *_, s in central.requests].count(500) == 3
    assert central.mean_rate() <= 15.0 * 1.02
    assert central.max_requests_in(1.0) <= 16  # sent 1/15 s apart; one extra arrival per window for arrival jitter


@pytest.mark.parametrize("status", [429, 503])
async def test_a_run_failed_on_a_passing_overload_is_tried_again_soon_not_at_the_schedule(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, status: int
) -> None:
    """Central answers the orders list 429 (503) with Retry-After for longer than a run's calls retry (a gateway
    shielding a fleet that came back together): the run fails, and another follows after central.retry_max_s (doubling
    while they fail), which brings the missed orders. Before, nothing ran until the schedule (15 minutes by default)
    and the orders waited that long (probe_central D2)."""
    central.create_orders(3, prefix="busy")
    central.fail_next(4, status, retry_after=0.1, path="orders")
    _agent, events = await agents.start(sync_settings(max_attempts=2, retry_max_s=0.3))
    [failed] = await events.wait(RecoveryFailed, timeout=10)
    [completed] = await events.wait(RecoveryCompleted, timeout=10)
    assert completed.run_id > failed.run_id and completed.counts["stored"] == 3
    assert [r.trigger for r in events.of(RecoveryStarted)] == ["startup", "startup", "startup"]


async def test_the_schedule_runs_recovery_without_an_outage(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """With schedule_interval_s set, runs with trigger 'schedule' catch orders that were never pushed."""
    agent, events = await agents.start(sync_settings(schedule_interval_s=0.5))
    await events.wait(RecoveryCompleted)
    central.create_orders(3, prefix="s")
    await events.wait(RecoveryStarted, where=lambda e: e.trigger == "schedule", timeout=10)
    await events.wait(RecoveryCompleted, where=lambda e: e.counts["stored"] == 3, timeout=10)
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM orders WHERE source = 'recovery'") == [
        (3,)
    ]


async def test_recovery_api_needs_the_token_and_says_when_off(
    make_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Without [central] url the recovery routes say so (status 200 enabled=false, trigger 409); no token: 401."""
    agent, _ = await agents.start(make_settings())
    assert agent.sync is None
    async with api(agent.port) as session:
        async with session.get("/api/v1/recovery/status") as response:
            assert (await response.json())["enabled"] is False
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 409 and (await response.json())["error"] == "not_configured"
    async with api_client(agent, token=None) as anonymous:
        async with anonymous.get("/api/v1/recovery/runs") as response:
            assert response.status == 401


async def test_runs_history_and_bad_ids(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """GET /recovery/runs lists runs newest first with counts; unknown or malformed ids are 404, a bad limit 422."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            second = (await response.json())["run_id"]
        await events.wait(RecoveryCompleted, count=2)
        async with session.get("/api/v1/recovery/runs") as response:
            runs = (await response.json())["runs"]
        assert [r["id"] for r in runs] == [second, second - 1] and runs[0]["trigger"] == "manual"
        assert runs[0]["state"] == "completed" and set(runs[0]["counts"]) >= {
            "missing",
            "present",
            "conflict",
            "invalid",
            "stored",
        }
        for path in ("/api/v1/recovery/runs/12345", "/api/v1/recovery/runs/abc", "/api/v1/recovery/runs/%C2%B2"):
            async with session.get(path) as response:
                assert response.status == 404
        async with session.get("/api/v1/recovery/runs?limit=%C2%B2") as response:
            assert response.status == 422 and (await response.json())["field"] == "limit"


async def test_sync_now_right_after_a_run_ended_starts_a_new_run(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A person presses "sync now" the moment a run has completed: a new run starts; it is not "joined" to the run
    that is over (which only had its log line left to write), so what central got since is fetched."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    assert agent.sync is not None
    run_id, joined = await agent.sync.recovery.trigger(RunTrigger.MANUAL)
    assert not joined and run_id == 2
    await events.wait(RecoveryCompleted, count=2)


async def test_status_shows_a_run_as_active_from_the_moment_it_is_recorded(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The status a person (or a script waiting for "no run active") reads is never "last run: waiting, active: none":
    a run is active from the moment its record is written, before its task has started."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    assert agent.sync is not None
    recovery = agent.sync.recovery
    seen: list[dict[str, Any]] = []
    create_run = recovery._runs.create_run

    async def create_and_look(*args: Any, **kwargs: Any) -> int:
        run_id = await create_run(*args, **kwargs)
        assert agent.sync is not None
        seen.append(await agent.sync.status())  # the record is committed; the run's task is not started yet
        return run_id

    recovery._runs.create_run = create_and_look  # type: ignore[method-assign]
    run_id, _ = await recovery.trigger(RunTrigger.MANUAL)
    assert seen[0]["last_run"]["id"] == run_id and seen[0]["active_run"] == run_id, seen[0]


async def test_a_run_after_an_outage_waits_for_the_start_delay(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fleet manners: after the line returns the run is recorded at once ('waiting') but its first call waits the random
    start delay (forced here to its maximum, 0.8 s)."""
    monkeypatch.setattr("edge.sync.recovery.random.uniform", lambda low, high: high)
    await central.set_up(False)
    agent, events = await agents.start(sync_settings(start_jitter_s=0.8))
    await events.wait(CentralLinkChanged, where=lambda e: not e.up)
    await central.set_up(True)
    await events.wait(CentralLinkChanged, where=lambda e: e.up)
    await asyncio.sleep(0.2)
    assert await db_rows(agent.settings.agent.db_path, "SELECT trigger, state FROM recovery_runs") == [
        ("link_back", "waiting")
    ]
    [started] = await events.wait(RecoveryStarted)
    assert started.at - central.up_at >= 0.8
    await events.wait(RecoveryCompleted)


async def test_cli_recovery_run_and_status_go_through_the_agent(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`edge recovery run` starts (or joins) a run via the API and `edge recovery status` shows it; both exit 0."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    config = write_config(
        tmp_path / "cli.toml",
        data_dir=tmp_path / "data",
        api_port=agent.port,
        token=TOKEN,
        printers={name: p.port for name, p in printers.items()},
        store_id=STORE,
        extra=f'[central]\nurl = "{central.url}"\ntoken = "{CENTRAL_TOKEN}"\n',
    )
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["recovery", "run", "--config", str(config)]) == 0
    run_id = _printed_json(capsys.readouterr().out)["run_id"]
    await events.wait(RecoveryCompleted, count=2)
    assert await asyncio.to_thread(main, ["recovery", "status", "--config", str(config)]) == 0
    status = _printed_json(capsys.readouterr().out)
    assert status["enabled"] is True and status["link"]["up"] is True and status["last_run"]["id"] == run_id


async def test_running_again_over_the_same_orders_stores_nothing_twice(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """The backend lists the same 20 orders again (same content): the next run finds them all present, adds no order and
    no print job."""
    orders = central.create_orders(20, prefix="i")
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted, where=lambda e: e.counts["stored"] == 20)
    db = agent.settings.agent.db_path
    jobs_before = await db_rows(db, "SELECT COUNT(*) FROM print_jobs")
    central.add_orders(orders)
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
    second = (await events.wait(RecoveryCompleted, count=2))[1]
    assert second.counts["present"] == 20 and second.counts["missing"] == 0 and second.counts["stored"] == 0
    assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(20,)]
    assert await db_rows(db, "SELECT COUNT(*) FROM print_jobs") == jobs_before


async def test_an_invalid_order_is_reported_with_its_field_and_skipped(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A backend order that fails validation is listed in the run with the field and reason; the others are stored and
    the
    cursor moves on, so one bad order does not block every later run."""
    bad = make_order(1, prefix="v")
    bad["items"][0]["qty"] = 0
    central.add_orders([bad, make_order(2, prefix="v")])
    agent, events = await agents.start(sync_settings())
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["invalid"] == 1 and completed.counts["stored"] == 1
    async with api(agent.port) as session:
        async with session.get(f"/api/v1/recovery/runs/{completed.run_id}") as response:
            run = await response.json()
        async with session.get("/api/v1/recovery/status") as response:
            status = await response.json()
    assert run["invalid"][0]["order_id"] == "v_000001" and run["invalid"][0]["reason"].startswith("items[0].qty: ")
    assert await db_rows(agent.settings.agent.db_path, "SELECT id FROM orders") == [("v_000002",)]
    assert status["cursor"] == run["next_cursor"] != ""


@pytest.mark.parametrize(
    "spoil",
    ["nan-qty", "infinity-note", "surrogate-name", "surrogate-id", "key-twice"],
)
async def test_an_order_central_lists_that_no_json_reader_agrees_on_is_invalid_and_the_run_goes_on(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, spoil: str
) -> None:
    """Central lists an order with NaN or Infinity (what Python's json writes for a float it cannot), a lone surrogate
    (half an emoji, cut by a substring) in a name or its id, or a key named twice: that order is invalid, named, and the
    next one is stored and the cursor moves on. Before stop 66 (the adversarial probe, fuzzdoors F2 and F5) every run
    failed on it (storing its text for a person failed, NaN was taken for a damaged database) and the orders after it
    never printed; the key named twice was taken, the last one winning."""
    bad = make_order(1, prefix="v")
    if spoil == "nan-qty":
        bad["items"][0]["qty"] = float("nan")  # written NaN
    elif spoil == "infinity-note":
        bad["items"][0]["note"] = float("inf")  # written Infinity
    elif spoil == "surrogate-name":
        bad["items"][0]["name"] = "Pizza \ud83c"  # written "\ud83c"
    elif spoil == "surrogate-id":
        bad["id"] = "v_\ud800"
    else:
        central.page_edits = [('"number": "A-1001"', '"number": "A-1001", "number": "B-2"')]
    central.add_orders([bad, make_order(2, prefix="v")])
    agent, events = await agents.start(sync_settings())
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["invalid"] == 1 and completed.counts["stored"] == 1, completed.counts
    assert await db_rows(agent.settings.agent.db_path, "SELECT id FROM orders") == [("v_000002",)]


async def test_a_stop_during_validation_resumes_the_same_run_at_the_next_start(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """Stopping the agent mid-validation leaves the run in its phase (not failed, not cancelled); the next start resumes
    that run, which then stores every order once."""
    central.create_orders(30, prefix="r")
    central.latency_s = 0.2
    settings = sync_settings(page_size=5)
    agent, events = await agents.start(settings)
    [started] = await events.wait(RecoveryStarted)
    db = agent.settings.agent.db_path
    await eventually(
        lambda: db_rows(db, "SELECT COUNT(*) FROM recovery_items"), lambda rows: rows[0][0] >= 5, timeout=10
    )
    await agents.stop(agent)
    assert await db_rows(db, "SELECT id, state FROM recovery_runs") == [(started.run_id, "validation")]

    central.latency_s = 0.0
    _, events = await agents.start(settings)
    [resumed] = await events.wait(RecoveryStarted)
    [completed] = await events.wait(RecoveryCompleted)
    assert resumed.run_id == completed.run_id == started.run_id and completed.counts["stored"] == 30
    assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(30,)]


async def test_a_cursor_the_backend_no_longer_knows_restarts_validation_from_the_beginning(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """If the backend answers 400 to the stored cursor, the run lists from the beginning: orders already here are
    present (not printed again), the new ones are stored, and the run completes instead of failing forever."""
    central.create_orders(5, prefix="b")
    settings = sync_settings()
    agent, events = await agents.start(settings)
    await events.wait(RecoveryCompleted)
    db = agent.settings.agent.db_path
    first_jobs = await db_rows(db, "SELECT COUNT(*) FROM print_jobs")
    await agents.stop(agent)
    await db_execute(db, "UPDATE meta SET value = 'not-a-cursor' WHERE key = 'central_cursor'")
    central.create_orders(2, prefix="b", start=6)
    _, events = await agents.start(settings)
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["present"] == 5 and completed.counts["stored"] == 2
    assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(7,)]
    assert (
        await db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE order_id <= 'b_000005'") == first_jobs
    )  # nothing reprinted
    assert [s for *_, s in central.requests].count(400) == 1


async def test_a_higher_revision_at_central_is_applied_as_an_update_and_reported(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """An order printed here at revision 1 that central holds at revision 2 (one more item): the run applies it as an
    update (a change ticket at the kitchen), the outbox reports `updated` with the revision in its key; a later run
    over the same list changes nothing; a same-revision difference stays a conflict."""
    first = make_order(1, prefix="r")
    agent, events = await recovered_and_printed(first, central, sync_settings, agents, printers)
    db = agent.settings.agent.db_path
    await eventually(lambda: db_rows(db, "SELECT state FROM print_jobs"), lambda r: all(s == "printed" for (s,) in r))
    second = json.loads(json.dumps(first)) | {"revision": 2}
    second["items"][0]["qty"] += 1
    central.add_orders([second])
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
    await events.wait(RecoveryCompleted, 2)
    change = decode((await printers["kitchen"].wait_for_printed(2))[1]).text
    assert "ÄNDERUNG" in change and "Rev. 2" in change
    assert await db_rows(db, "SELECT revision FROM orders") == [(2,)]
    await wait_until(lambda: central.events_of("updated"), what="the update reported")
    assert [e["idempotency_key"] for e in central.events_of("updated")] == [f"r_000001:updated:2{await key_mark(db)}"]
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
    await events.wait(RecoveryCompleted, 3)
    assert len(printers["kitchen"].printed) == 2


async def test_an_order_recovery_brings_after_its_cancel_came_is_stored_cancelled_and_prints_nothing(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """The cancel came here (202, kept) while the order itself only reached central: the run brings it at revision 1
    and stores it cancelled at the cancel's revision, nothing prints, central hears `received` then `cancelled`."""
    agent, events = await agents.start(sync_settings())
    await events.wait(RecoveryCompleted)
    order = make_order(1, prefix="r")
    async with api(agent.port) as session:
        async with session.post(f"/api/v1/orders/{order['id']}/cancel", json={"revision": 2}) as response:
            assert response.status == 202, await response.text()
        central.add_orders([order, make_order(2, prefix="r")])
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
    await events.wait(RecoveryCompleted, 2)
    kitchen = decode((await printers["kitchen"].wait_for_printed(1))[0]).text
    assert "A-1002" in kitchen
    await asyncio.sleep(0.3)  # the cancelled order's ticket, were it queued, would be out by now
    assert len(printers["kitchen"].printed) == 1
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT id, revision, status FROM orders ORDER BY id") == [
        ("r_000001", 2, "cancelled"),
        ("r_000002", 1, "open"),
    ]
    await wait_until(lambda: central.events_of("cancelled"), what="the cancel reported")
    cancelled = [e["idempotency_key"] for e in central.events_of("cancelled")]
    assert cancelled == [f"r_000001:cancelled:2{await key_mark(agent)}"]


async def test_a_change_to_an_order_stored_unreadable_is_a_conflict_and_the_others_are_stored(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """Central holds revision 2 of an order stored here by an older, laxer intake (its time without a zone: this
    version cannot read it), and two orders missing here, all in one batch: the two are stored and print, the change
    is listed as a conflict naming the unreadable field (the local order kept), the run completes. Before: the batch's
    one transaction failed, and with it every run, so the missing orders never printed."""
    first = make_order(1, prefix="u")
    agent, events = await recovered_and_printed(first, central, sync_settings, agents, printers)
    db = agent.settings.agent.db_path
    await db_execute(db, "UPDATE orders SET payload = json_set(payload, '$.created_at', ?)", "2026-11-22T18:04:11")
    second = json.loads(json.dumps(first)) | {"revision": 2}
    second["items"][0]["qty"] += 1
    central.add_orders([second, make_order(2, prefix="u"), make_order(3, prefix="u")])
    async with api(agent.port) as session:
        async with session.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
    [_, completed] = await events.wait(RecoveryCompleted, 2)
    assert completed.counts["stored"] == 2 and completed.counts["conflict"] == 1, completed.counts
    await printers["kitchen"].wait_for_printed(3)
    async with api(agent.port) as session:
        async with session.get(f"/api/v1/recovery/runs/{completed.run_id}") as response:
            run = await response.json()
    [conflict] = run["conflicts"]
    assert conflict["order_id"] == "u_000001" and "created_at" in conflict["reason"], conflict
    assert await db_rows(db, "SELECT id, revision FROM orders ORDER BY id") == [
        ("u_000001", 1),
        ("u_000002", 1),
        ("u_000003", 1),
    ]


async def test_a_disk_that_fills_while_a_batch_is_stored_one_by_one_fails_the_run_and_the_next_stores_the_rest(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, printers: dict[str, SimPrinter]
) -> None:
    """As above, the batch's transaction fails for the change's sake and each order is tried alone, but the disk fills
    before the last one (u_000003) is stored: the run fails naming the disk, not that order (no conflict: its content is
    fine), the one stored before it (u_000002) prints, and once there is room the next run stores the last one and it
    prints. A store that refuses writes ends the one-by-one tries (each after it would only fail again)."""
    first = make_order(1, prefix="u")
    agent, events = await recovered_and_printed(first, central, sync_settings, agents, printers)
    db = agent.settings.agent.db_path
    await db_execute(db, "UPDATE orders SET payload = json_set(payload, '$.created_at', ?)", "2026-11-22T18:04:11")
    await db_execute(
        db,
        "CREATE TRIGGER full BEFORE INSERT ON orders WHEN NEW.id = 'u_000003'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    second = json.loads(json.dumps(first)) | {"revision": 2}
    second["items"][0]["qty"] += 1
    central.add_orders([second, make_order(2, prefix="u"), make_order(3, prefix="u")])
    async with api(agent.port) as session, session.post("/api/v1/recovery/runs") as response:
        assert response.status == 202
    [failed] = await events.wait(RecoveryFailed)
    assert "disk is full" in failed.error, failed
    await printers["kitchen"].wait_for_printed(2)
    assert await db_rows(db, "SELECT id FROM orders ORDER BY id") == [("u_000001",), ("u_000002",)]
    await db_execute(db, "DROP TRIGGER full")  # room again
    async with api(agent.port) as session, session.post("/api/v1/recovery/runs") as response:
        assert response.status == 202
    [*_, completed] = await events.wait(RecoveryCompleted, 2)
    assert completed.counts["stored"] == 1, completed.counts
    printed = await printers["kitchen"].wait_for_printed(3)
    assert "u_000003" in decode(printed[2]).qr_codes[0]
    assert await db_rows(db, "SELECT id, revision FROM orders ORDER BY id") == [
        ("u_000001", 1),
        ("u_000002", 1),
        ("u_000003", 1),
    ]


@pytest.mark.parametrize("pages", [1, 2], ids=["one_page", "across_pages"])
async def test_an_older_version_listed_after_a_newer_one_in_a_run_does_not_undo_it(
    central: CentralSim,
    sync_settings: Callable[..., Settings],
    agents: Agents,
    printers: dict[str, SimPrinter],
    pages: int,
) -> None:
    """Central lists, in one run, order X at revision 2 (cancelled) and after it X at revision 1 (open) again, and
    order W at revision 2 (a quantity changed) and after it W at revision 1; the agent printed both at revision 1
    before. The newest version of each wins, wherever it comes in the listing: X gets its STORNO and W its change
    ticket, and nothing else prints. Before stop 62 (the central probe, s01): the last one listed won, both stayed
    at revision 1, the run said "present" and moved its cursor past the newer versions: the cook cooked a cancelled
    order."""
    x, w = make_order(1, prefix="inv"), make_order(2, prefix="inv")
    central.add_orders([x, w])
    agent, events = await agents.start(sync_settings(**({"page_size": 2} if pages == 2 else {})))
    await events.wait(RecoveryCompleted)
    kitchen = printers["kitchen"]
    await kitchen.wait_for_printed(2)
    cancelled = {**x, "revision": 2, "status": "cancelled", "cancel_reason": "Gast gegangen"}
    changed = json.loads(json.dumps(w)) | {"revision": 2}
    changed["items"][0]["qty"] += 1
    central.add_orders([cancelled, changed])
    central.resend(x)
    central.resend(w)
    async with api(agent.port) as session, session.post("/api/v1/recovery/runs") as response:
        assert response.status == 202
    await events.wait(RecoveryCompleted, count=2)
    db = agent.settings.agent.db_path
    assert await db_rows(db, "SELECT id, revision, status FROM orders ORDER BY id") == [
        ("inv_000001", 2, "cancelled"),
        ("inv_000002", 2, "open"),
    ]
    printed = [decode(data).text for data in await kitchen.wait_for_printed(4)]
    assert "STORNO" in printed[2] + printed[3] and "ÄNDERUNG" in printed[2] + printed[3], printed[2:]
    await asyncio.sleep(0.3)  # nothing more comes
    assert len(kitchen.printed) == 4


@pytest.mark.parametrize(
    "answer",
    ['{"orders": [', "<html><body>Please log in to the guest Wi-Fi</body></html>"],
    ids=["json_cut_off", "captive_portal_page"],
)
async def test_a_page_answered_once_with_something_not_json_is_asked_again_and_the_run_completes(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, answer: str
) -> None:
    """Central took 6 orders during an outage; when the line is back, the second page comes once as a 200 that is not
    JSON (cut off by a proxy, or a captive portal's page), then right. The page is asked again at once, like an answer
    cut off mid-body, and the run completes with all 6 stored, no failed run. Before stop 62 (the central probe, s06):
    the run failed at once, no retry was planned, the orders waited for the quarter-hour schedule and the manager got
    a critical mail."""
    central.create_orders(6, prefix="g")
    central.fail_next(1, 200, body=answer, path="orders", after=1)
    agent, events = await agents.start(sync_settings(page_size=3))
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 6
    assert not events.of(RecoveryFailed)
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM orders") == [(6,)]


@pytest.mark.parametrize("status", [400, 410])
async def test_a_cursor_refused_on_a_later_page_lists_again_from_the_start(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents, status: int
) -> None:
    """Central is restored from a backup while the agent pages through it: the cursor it handed out for page 2 is
    refused (400 cursor_expired, or 410 Gone as sync APIs say it). The run lists again from the beginning, as it does
    when the stored cursor is refused, and completes with every order stored once. Before stop 62 (the central probe,
    s03): only a refusal on the first page was taken so; on a later page the run failed and the orders waited for the
    schedule; a 410 failed the run before stop 71 (the central71 probe)."""
    central.create_orders(6, prefix="e")
    expired = {"error": "cursor_expired", "reason": "restored from a backup"}
    central.fail_next(1, status, body=expired, path="orders", after=1)
    agent, events = await agents.start(sync_settings(page_size=3))
    [completed] = await events.wait(RecoveryCompleted)
    assert completed.counts["stored"] == 6 and not events.of(RecoveryFailed)
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM orders") == [(6,)]


async def test_a_stored_cursor_the_backend_answers_410_gone_is_listed_again_from_the_start(
    central: CentralSim, sync_settings: Callable[..., Settings], agents: Agents
) -> None:
    """A backend that expires its sync cursors answers an old one 410 Gone, as Google Calendar's sync token and
    Microsoft Graph's delta link do ("fullSyncRequired", "syncStateNotFound"), not 400. The run lists from the
    beginning, as for a 400, and the orders central took meanwhile print. Before stop 71 every run failed on the
    stored cursor, for good, the orders never printed and one mail said so (the central71 probe, c1)."""
    central.create_orders(2, prefix="f")
    agent, events = await agents.start(sync_settings())
    [first] = await events.wait(RecoveryCompleted)
    assert first.counts["stored"] == 2
    central.restore_backup(status=410)
    central.create_orders(3, prefix="g")
    async with api_client(agent) as api:
        async with api.post("/api/v1/recovery/runs") as response:
            assert response.status == 202
        second = (await events.wait(RecoveryCompleted, count=2))[1]
    assert (second.counts["present"], second.counts["stored"]) == (2, 3) and not events.of(RecoveryFailed)
    assert 410 in central.statuses()
    assert await db_rows(agent.settings.agent.db_path, "SELECT COUNT(*) FROM orders") == [(5,)]
