"""Job state changes are guarded by the state they expect: from the HTTP API (409), in the store, and in the spool."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from edge.app import Agent
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from edge.states import JobState
from edge.store.db import Database
from edge.store.jobs import JobStore, StaleJob
from tests.helpers import api_client, db_rows, eventually, job_rows, post, wait_until


async def test_action_on_a_job_in_the_wrong_state_is_409_and_unknown_job_404(
    agent: Agent, api: aiohttp.ClientSession, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """Release, discard and retry of a printed job answer 409 wrong_state naming the state; a job that does not
    exist is 404; nothing changes."""
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    await printers["kitchen"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: rows[0][0] == "printed")
    (job_id,) = (await job_rows(agent, "SELECT id FROM print_jobs"))[0]
    for action in ("release", "discard", "retry"):
        async with api.post(f"/api/v1/jobs/{job_id}/{action}") as response:
            body = await response.json()
            assert (response.status, body["error"]) == (409, "wrong_state"), (action, body)
            assert "is printed" in body["reason"]
        async with api.post(f"/api/v1/jobs/999/{action}") as response:
            assert response.status == 404
    assert await job_rows(agent) == [("printed", 0, 0)]


async def _store_with_job(tmp_path: Path, state: str, **columns: Any) -> tuple[Database, JobStore, int]:
    db = await Database.open(tmp_path / "edge.db")
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at)"
            " VALUES ('o1', '1', 'h', '{}', 'web', '2026-01-01T00:00:00+00:00', 0)"
        )
        sets = "".join(f", {name}" for name in columns)
        marks = "".join(", ?" for _ in columns)
        cursor = await conn.execute(
            f"INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, idempotency_key{sets})"
            f" VALUES ('o1', 'ticket', 'kitchen', 'kitchen', ?, ?, 'o1:ticket:kitchen:0'{marks}) RETURNING id",
            (state, time.time(), *columns.values()),
        )
        (job_id,) = await cursor.fetchone()
        await cursor.close()
    return db, JobStore(db), job_id


async def _state(tmp_path: Path) -> tuple[str, int]:
    return (await db_rows(tmp_path / "edge.db", "SELECT state, attempts FROM print_jobs"))[0]


@pytest.mark.parametrize("person_did", ["discarded", "queued"])
async def test_a_failure_recorded_late_never_undoes_what_a_person_did(tmp_path: Path, person_did: str) -> None:
    """The spool read a failed job, then a person discarded (or retried) it; the spool's failure record (e.g. a
    render error) changes nothing: the job stays as the person left it."""
    db, jobs, job_id = await _store_with_job(tmp_path, person_did)
    try:
        outcome = await jobs.mark_failed(
            job_id, "o1", error="cannot render", next_attempt_at=0, max_attempts=5, partial=False, expected="failed"
        )
        assert outcome is None
        assert await _state(tmp_path) == (person_did, 0)
        assert (await db_rows(tmp_path / "edge.db", "SELECT COUNT(*) FROM outbox"))[0][0] == 0
    finally:
        await db.close()


async def test_a_stale_hold_never_overrides_a_persons_retry(tmp_path: Path) -> None:
    """The spool found a failed job stale, but a person retried it meanwhile (queued, released): it is not held."""
    db, jobs, job_id = await _store_with_job(tmp_path, "queued", released_at=time.time())
    try:
        assert not await jobs.hold_many("kitchen", [StaleJob(job_id, JobState.FAILED, 3000.0)])
        assert await _state(tmp_path) == ("queued", 0)
    finally:
        await db.close()


@pytest.mark.parametrize("state", ["queued", "held", "discarded", "dead"])
async def test_printed_and_uncertain_records_only_change_a_printing_job(tmp_path: Path, state: str) -> None:
    """A printed mark and a release (a claimed job the spool did not send) only act on a job the spool holds as
    'printing'; anything else is left alone."""
    db, jobs, job_id = await _store_with_job(tmp_path, state)
    try:
        assert await jobs.mark_printed(job_id, "o1") is None
        await jobs.commit_marks("kitchen", release=[job_id])
        assert await _state(tmp_path) == (state, 0)
        assert (await db_rows(tmp_path / "edge.db", "SELECT COUNT(*) FROM outbox"))[0][0] == 0
    finally:
        await db.close()


def _fail_once_to(port: int, monkeypatch: pytest.MonkeyPatch, name: str, error: Exception) -> list[bool]:
    """socket.socket.<name> raises ``error`` once, on the agent's connection to the printer at ``port``; send only
    for job bytes (longer than a 3-byte status query)."""
    original = getattr(socket.socket, name)
    fired: list[bool] = []

    def failing(self: socket.socket, *args: Any) -> Any:
        job_bytes = name != "send" or len(args[0]) > 3
        if not fired and job_bytes and self.family == socket.AF_INET and self.getpeername()[1] == port:
            fired.append(True)
            raise error
        return original(self, *args)

    monkeypatch.setattr(socket.socket, name, failing)
    return fired


@pytest.mark.parametrize(
    ("name", "error", "copy", "attempts"),
    [
        ("setsockopt", OSError(22, "Invalid argument"), 0, 0),  # before any job byte: the printer was not there
        ("send", RuntimeError("a bug in the socket layer"), 1, 1),  # in the write: may be partly out
    ],
)
async def test_any_exception_in_a_transport_ends_in_a_recorded_outcome(
    agent: Agent,
    api: aiohttp.ClientSession,
    example_order: dict,
    printers: dict[str, SimPrinter],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    error: Exception,
    copy: int,
    attempts: int,
) -> None:
    """An exception that is not a device error (setsockopt failing, a bug below the write) never leaves the job
    'printing' until a restart: the job is retried and reaches paper (as COPY if bytes may have gone out)."""
    fired = _fail_once_to(printers["kitchen"].port, monkeypatch, name, error)
    example_order["print_receipt"] = False
    assert (await post(api, example_order))[0] == 201
    printed = await printers["kitchen"].wait_for_printed(1, timeout=8)
    assert fired
    assert ("KOPIE / COPY" in decode(printed[-1]).text) == bool(copy)
    await eventually(lambda: job_rows(agent), lambda rows: rows == [("printed", attempts, copy)])


async def test_a_render_failure_recorded_after_a_person_discarded_the_job_leaves_it_discarded(
    make_agent: Any, tmp_path: Path, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """An operator template that takes a second and then fails for one order: while its retry renders, a person
    discards the job (HTTP); the render failure that follows does not bring the job back (not failed, not dead)."""
    templates = tmp_path / "templates"
    templates.mkdir()
    builtin = (Path(__file__).parents[2] / "edge" / "printing" / "templates" / "ticket.j2").read_text()
    slow_failure = (
        '{% if order.number == "SLOW" %}{% set ns = namespace(a=0) %}'
        "{% for i in range(2000000) %}{% set ns.a = ns.a + i %}{% endfor %}{{ no_such_field }}{% endif %}"
    )
    (templates / "ticket.j2").write_text(slow_failure + builtin)
    agent = await make_agent(
        printing={"template_dir": str(templates)}, spool={"retry_base_s": 0.05, "retry_max_s": 0.1}
    )
    example_order.update(number="SLOW", print_receipt=False)
    spool = agent.spoolers["kitchen"]
    with capture_logs() as logs:

        def renders_failed() -> int:
            return sum(e["event"] == "render_failed" for e in logs)

        async def in_the_retry() -> bool:
            """The first failure is recorded and the retry is rendering (about a second), its failure still to come.
            'job_failed' is the spool's last word on the first attempt (nothing awaited after it), so the job being
            current once it is logged means the retry, not the tail of the first attempt."""
            rows = await job_rows(agent)
            first_done = sum(e["event"] == "job_failed" for e in logs) == 1
            return rows[0][:2] == ("failed", 1) and renders_failed() == 1 and first_done and spool.current_job == 1

        async with api_client(agent) as api:
            assert (await post(api, example_order))[0] == 201
            await eventually(lambda: job_rows(agent), lambda rows: rows[0][:2] == ("failed", 1))
            await wait_until(in_the_retry, what="the retry rendering")
            async with api.post("/api/v1/jobs/1/discard") as response:
                assert response.status == 200, await response.text()
            await wait_until(lambda: renders_failed() == 2 and spool.current_job is None, what="the retry's failure")
    assert await job_rows(agent, "SELECT state, attempts FROM print_jobs") == [("discarded", 1)]
    assert printers["kitchen"].printed == []


async def test_a_ticket_that_cannot_be_rendered_fails_with_the_reason_and_is_not_marked_copy(
    make_agent: Any, tmp_path: Path, example_order: dict, printers: dict[str, SimPrinter]
) -> None:
    """An operator template that fails for one order: nothing is sent, the job counts a failed attempt with the
    template's error as its reason, and it is not marked COPY (no byte of it reached the paper); after max_attempts it
    is dead, for a person to see."""
    templates = tmp_path / "templates"
    templates.mkdir()
    builtin = (Path(__file__).parents[2] / "edge" / "printing" / "templates" / "ticket.j2").read_text()
    (templates / "ticket.j2").write_text('{% if order.number == "BROKEN" %}{{ no_such_field }}{% endif %}' + builtin)
    agent = await make_agent(printing={"template_dir": str(templates)}, spool={"max_attempts": 2})
    example_order.update(number="BROKEN", print_receipt=False)
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    rows = await eventually(
        lambda: job_rows(agent, "SELECT state, attempts, copy, last_error FROM print_jobs"),
        lambda rows: rows[0][0] == "dead",
        what="the job dead",
    )
    ((state, attempts, copy, error),) = rows
    assert (state, attempts, copy) == ("dead", 2, 0)
    assert error.startswith("cannot render the ticket:") and "no_such_field" in error
    assert printers["kitchen"].jobs == []


async def test_a_long_printer_error_is_kept_to_500_characters_and_told_to_central_in_200(tmp_path: Path) -> None:
    """A driver error of 750 characters: a job that dies keeps its first 500 (last_error, what the status page shows)
    and central's 'failed' event carries the first 200; a job put back after a fault keeps the first 500 too."""
    error = "".join(f"{n:04d} " for n in range(150))  # 750 characters, each stretch of 5 unlike any other
    db, jobs, job_id = await _store_with_job(tmp_path, "printing")
    try:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, idempotency_key)"
                " VALUES ('o1', 'receipt', NULL, 'front', 'printing', 0, 'o1:receipt:-:0')"
            )
        outcome = await jobs.mark_failed(job_id, "o1", error=error, next_attempt_at=0, max_attempts=1, partial=False)
        assert outcome is not None and outcome.state == "dead"
        assert await jobs.mark_uncertain(job_id + 1, error)
    finally:
        await db.close()
    rows = await db_rows(tmp_path / "edge.db", "SELECT last_error FROM print_jobs ORDER BY id")
    assert rows == [(error[:500],), (error[:500],)]
    (payload,) = (await db_rows(tmp_path / "edge.db", "SELECT payload FROM outbox WHERE event = 'failed'"))[0]
    assert json.loads(payload)["error"] == error[:200]


async def test_a_printed_mark_on_a_printing_job_records_and_returns_its_time(tmp_path: Path) -> None:
    """mark_printed on the job the spool holds as 'printing': printed, with the time it returns as printed_at, and
    central's 'printed' row written."""
    db, jobs, job_id = await _store_with_job(tmp_path, "printing")
    try:
        printed_at = await jobs.mark_printed(job_id, "o1")
    finally:
        await db.close()
    assert printed_at is not None
    assert await db_rows(tmp_path / "edge.db", "SELECT state, printed_at FROM print_jobs") == [("printed", printed_at)]
    assert await db_rows(tmp_path / "edge.db", "SELECT event FROM outbox") == [("printed",)]
