"""What a start costs the box: a store that prints text and native QR codes never loads python-escpos or Pillow (~8 MB
of a Pi's memory); where a logo needs them, python-escpos' printer database is parsed once and cached in the data
folder; and no start leaves a file behind in the temporary folder (on many boxes /tmp is on the same SD card)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from edge.app import Agent
from edge.heap import pause_collector
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from edge.store.migrations import latest_version, load_migrations
from edge.systemd import Notifier
from tests.helpers import (
    EXAMPLE,
    FsyncCounter,
    agent_process,
    api_client,
    db_rows,
    edge,
    fresh,
    imported_modules,
    orders,
    post,
    wait_until,
)

_IMAGE_PACKAGES = {"escpos", "PIL", "qrcode", "barcode"}
# What the agent itself needs and a command that only asks it something does not: the web framework, the database.
_AGENT_PACKAGES = {"aiohttp", "aiosqlite", "jinja2"}


async def test_a_store_printing_text_and_native_qr_codes_never_loads_python_escpos_or_pillow(tmp_path: Path) -> None:
    """The real agent, with Python's import log: a first start (the printing check renders every template), a ticket,
    a receipt and a test page with its QR code drawn by the printer, then a restart and another order. Not one module
    of python-escpos, Pillow, qrcode or python-barcode is imported in either run (before: python-escpos and Pillow at
    every check and first ticket, ~8 MB for good), and the bytes on paper are ESC/POS all the same."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, env={"PYTHONPROFILEIMPORTTIME": "1"})
    first, second = orders(fresh(EXAMPLE), 2, receipt=True)
    try:
        for order in (first, second):
            await agent.start()
            async with api_client(agent.port) as api:
                assert (await post(api, order))[0] == 201
                if order is first:
                    async with api.post("/api/v1/printers/front/test") as response:
                        assert response.status == 200, await response.text()
                await wait_until(lambda order=order: any(order["number"].encode() in job for job in front.printed))
            assert await agent.terminate() == 0
        assert any(b"\x1d(k" in job and b"edge:test:front" in job for job in front.printed)  # the printer's own QR
        assert any(b"\x1bE\x01" in job for job in kitchen.printed)  # styled text (bold) on the tickets
        imported = {name.split(".")[0] for name in imported_modules(agent.log.read_text(errors="replace"))}
        assert "jinja2" in imported  # the log is read right: the templates' engine was loaded
        assert imported & _IMAGE_PACKAGES == set()
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()


async def test_starts_leave_nothing_in_tmp_and_reuse_the_escpos_cache(tmp_path: Path) -> None:
    """Two starts of the real agent with a logo on its receipts (so python-escpos is loaded) and an `edge config
    check` with TMPDIR pointing at an empty folder: nothing is left there (before: a folder per process, python-escpos'
    own), the printer database is pickled once into data/cache and the second start reads it (the file is not
    rewritten)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    temp = tmp_path / "tmp"
    temp.mkdir()
    logo = tmp_path / "logo.png"
    Image.new("L", (200, 50), 0).save(logo)
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, env={"TMPDIR": str(temp)})
    text = agent.config.read_text(encoding="utf-8")
    agent.config.write_text(text.replace("[printers.front]\n", f'[printers.front]\nlogo = "{logo}"\n'), "utf-8")
    try:
        await agent.start()
        assert await agent.terminate() == 0
        caches = list((tmp_path / "data" / "cache").glob("*.capabilities.pickle"))
        assert len(caches) == 1
        written = caches[0].stat().st_mtime_ns
        await agent.start()
        assert await agent.terminate() == 0
        assert caches[0].stat().st_mtime_ns == written
        checked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "edge", "config", "check", "--config", str(agent.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(temp)},
        )
        assert checked.returncode == 0, checked.stderr
        assert list(temp.iterdir()) == []
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()


async def test_the_health_check_its_timer_runs_every_minute_loads_neither_the_web_framework_nor_the_database(
    tmp_path: Path,
) -> None:
    """`edge health --alert` as its timer runs it every minute, mail set up, against the real agent, ready: it answers
    healthy and loads none of aiohttp, aiosqlite or jinja2 (before: all three, a whole agent's imports, ~0.7 s of CPU
    each minute here and more on a Pi). Down, it still mails the manager (twice down is an alert)."""
    kitchen, front, sink = SimPrinter("kitchen"), SimPrinter("front"), SmtpSink()
    for part in (kitchen, front, sink):
        await part.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    mail = f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
    agent.config.write_text(
        agent.config.read_text(encoding="utf-8") + mail + '\n[alerts]\nto = ["chef@store.test"]\n', "utf-8"
    )
    config = str(agent.config)
    try:
        await agent.start()
        checked = await edge("health", "--alert", "--config", config, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert (checked.returncode, checked.stdout.strip()) == (0, "healthy: ready"), checked.stderr[-2000:]
        imported = {name.split(".")[0] for name in imported_modules(checked.stderr)}
        assert "structlog" in imported  # the log is read right: the command's logging was loaded
        assert imported & _AGENT_PACKAGES == set()
        assert await agent.terminate() == 0
        for _ in range(2):
            down = await edge("health", "--alert", "--config", config, env={"EDGE_AGENT_LANGUAGE": "en"})
            assert down.returncode == 1 and down.stdout.startswith("UNHEALTHY"), down.stdout + down.stderr
        await wait_until(lambda: len(sink.messages) == 1)
        assert str(sink.messages[0]["Subject"]).endswith("ALERT: edge agent is not running")
    finally:
        await agent.close()
        for part in (kitchen, front, sink):
            await part.stop()


async def test_a_start_syncs_only_what_it_writes(
    tmp_path: Path, printers: dict[str, SimPrinter], fsyncs: FsyncCounter
) -> None:
    """The real agent on an empty data folder, its fsyncs counted up to READY, then again for a restart with nothing
    to do. A restart syncs what it changes only: the write-ahead log's header (and its folder) and the readiness
    check's write; the start's other writes (the store's record, jobs a crash cut short, jobs on printers gone) find
    nothing to change and sync nothing (before: 6, one for each). The new box's first start costs SQLite's six to make
    the file in WAL mode (its header through a rollback journal, the log's header, the folder twice) and one commit for
    the whole schema more, not one a migration (before: 23 more, 0.29 s of the first start on a card where an fsync
    takes 10 ms); the schema is the latest, whole."""
    agent = agent_process(tmp_path, printers, env=fsyncs.env)
    await agent.start()
    first = fsyncs.count()
    await agent.close()
    stopped = fsyncs.count()
    await agent.start()
    again = fsyncs.count() - stopped
    await agent.close()
    assert 1 <= again <= 3, f"a restart: {again} fsyncs"  # at least: the shim counted
    assert first <= again + 6 + 1, f"first start {first} fsyncs, a restart {again}"
    assert await db_rows(tmp_path / "data" / "edge.db", "PRAGMA user_version") == [(latest_version(load_migrations()),)]


async def test_a_senders_retry_of_a_stored_order_syncs_nothing(
    tmp_path: Path, printers: dict[str, SimPrinter], fsyncs: FsyncCounter
) -> None:
    """A sender that did not hear the answer sends the same order again, often several times: each retry is answered
    200 (a duplicate) and changes nothing, so it costs the card no fsync (before: one each)."""
    agent = agent_process(tmp_path, printers, env=fsyncs.env)
    order = fresh(EXAMPLE)
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            assert (await post(api, order))[0] == 201
            await wait_until(lambda: printers["kitchen"].printed, 10, "the ticket printed")
            await asyncio.sleep(0.3)  # its printed mark and the readiness check are behind it
            before = fsyncs.count()
            assert [(await post(api, order))[0] for _ in range(5)] == [200] * 5
            retries = fsyncs.count() - before
    finally:
        await agent.close()
    assert retries == 0, f"{retries} fsyncs for 5 retries"


def test_the_agent_types_its_files_from_pythons_own_table_not_the_systems_mime_types() -> None:
    """aiohttp read the system's mime.types (2,286 lines on Debian) into its file responses' table as it was imported:
    0.4 MB kept for good. The agent's process has Python's own table (a few hundred types), which still types the
    status page's script."""
    probe = (
        "import json, mimetypes, edge.app, aiohttp.web_fileresponse as f;"
        "print(json.dumps([len(mimetypes.types_map), f.CONTENT_TYPES.guess_type('status.js')[0]]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    types, script = json.loads(done.stdout)
    assert types < 300, f"{types} types: the system's mime.types was read"
    assert script in ("application/javascript", "text/javascript")


async def test_an_idle_agent_with_mail_set_up_loads_the_smtp_client_only_when_it_mails(
    tmp_path: Path, sink: SmtpSink
) -> None:
    """The real agent with the manager's mail set up, Python's import log on: it starts and prints a ticket without
    loading aiosmtplib (0.3 MB of an idle agent's 50, before stop 71 loaded at every start); the kitchen printer then
    goes away, and the alert is mailed: aiosmtplib is loaded then, and works."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    mail = (
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n'
        '\n[alerts]\nto = ["chef@store.test"]\ngroup_wait_s = 0\ncritical_group_wait_s = 0\ndisk_free_min_mb = 0\n'
    )
    agent = agent_process(
        tmp_path, {"kitchen": kitchen, "front": front}, env={"PYTHONPROFILEIMPORTTIME": "1"}, extra=mail
    )
    first, second = orders(fresh(EXAMPLE), 2, receipt=False)
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, first))[0] == 201
            await wait_until(lambda: any(first["number"].encode() in job for job in kitchen.printed))
            idle = {name.split(".")[0] for name in imported_modules(agent.log.read_text(errors="replace"))}
            await kitchen.stop()
            assert (await post(api, second))[0] == 201
            await sink.wait_for(1, timeout=30)
        assert await agent.terminate() == 0
        mailing = {name.split(".")[0] for name in imported_modules(agent.log.read_text(errors="replace"))}
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
    assert "jinja2" in idle and "aiosmtplib" not in idle
    assert "aiosmtplib" in mailing


def test_edge_run_starts_with_the_garbage_collector_paused_and_other_commands_do_not() -> None:
    """Python's cyclic garbage collector went through the start's ~100,000 long-lived objects (modules, classes,
    functions) about 110 times before READY, ~20 ms of a 0.4 s start here (issue 17's start-up goal; the startup
    helper of stop 81). `edge run` pauses it as the package is imported; a command (`edge health`, every minute) does
    not."""
    probe = "import gc, sys; sys.argv[1:] = sys.argv[2:]; import edge; print(gc.isenabled())"
    for command, enabled in (("run", "False"), ("health", "True")):
        done = subprocess.run(
            [sys.executable, "-c", probe, "--", command], capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout.strip() == enabled, (command, done.stdout, done.stderr)


class _Cycle:
    """Garbage only the cyclic collector frees: it refers to itself."""

    itself: _Cycle


async def test_the_garbage_collector_paused_for_the_start_runs_again_from_ready(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's pause (`edge run`, edge/heap.py) ends at READY with one full collection: the start's garbage is
    freed, and what lives on is moved to the oldest generation at once (left to the collector's first run, a young
    one, the bench's idle RSS was ~0.1 MB higher than without the pause); from then on it runs as usual. A process
    that turned the collector off itself keeps it off (only the start's own pause is undone)."""
    pause_collector()
    try:
        garbage = _Cycle()
        garbage.itself = garbage
        collected = weakref.ref(garbage)
        del garbage
        full = gc.get_stats()[2]["collections"]
        at_ready: list[tuple[object, int]] = []  # as the agent arms systemd's watchdog, right after READY=1
        watchdog = Notifier.start_watchdog

        def arm(notifier: Notifier, *args: Any) -> None:
            at_ready.append((collected(), gc.get_stats()[2]["collections"] - full))
            watchdog(notifier, *args)

        monkeypatch.setattr(Notifier, "start_watchdog", arm)
        agent = await make_agent()
        assert gc.isenabled()
        assert at_ready == [(None, 1)]  # the garbage freed, by one full collection
        await agent.stop()
        gc.disable()
        await make_agent()
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_the_agent_runs_and_prints_without_importing_modules_only_other_moments_need(tmp_path: Path) -> None:
    """The real agent, Python's import log on, started and printing an order: importlib.abc (and with it
    importlib.resources, for readers of package data the agent has none of), difflib (a misspelt setting's "did you
    mean") and the alerts commands' modules (their parsers) are never imported. Before stop 81 the package's own
    __init__ imported importlib.abc for one base class (~2 ms and 0.1 MB of every start of every command), the config
    loader difflib (0.6 ms, 0.1 MB), and `edge run` built every command's parser (~7 ms, 0.3 MB) (issue 17; the
    startup helper of stop 81)."""
    imported = await imported_while_printing(tmp_path, receipt=True)
    assert "jinja2" in imported  # the log is read right: the printing stack was loaded
    assert imported & {"importlib.abc", "importlib.resources", "difflib", "edge.alerts.commands"} == set()


async def imported_while_printing(
    tmp_path: Path, *, receipt: bool, asked: Callable[[aiohttp.ClientSession], Awaitable[None]] | None = None
) -> set[str]:
    """The modules the real agent (this config: neither [smtp] nor [central]) imports, Python's import log on, from
    its start through printing one order (its receipt too if ``receipt``) and ``asked`` (more requests), to its stop."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front}, env={"PYTHONPROFILEIMPORTTIME": "1"})
    (order,) = orders(fresh(EXAMPLE), 1, receipt=receipt)
    printer = front if receipt else kitchen
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, order))[0] == 201
            await wait_until(lambda: any(order["number"].encode() in job for job in printer.printed))
            if asked is not None:
                await asked(api)
        assert await agent.terminate() == 0
        return set(imported_modules(agent.log.read_text(errors="replace")))
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()


async def test_edge_run_answers_help_and_mistakes_as_every_command_does() -> None:
    """`edge run` builds only its own parser (the test above): its help, a mistake in its arguments and the command
    list of `edge --help` read as before stop 81, when every command's parser was built at each start."""
    helped = await edge("run", "--help")
    assert (helped.returncode, helped.stdout.splitlines()[0]) == (0, "usage: edge run [-h] [--config CONFIG]")
    wrong = await edge("run", "--bogus")
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr, wrong.stderr
    listed = await edge("--help")
    assert listed.returncode == 0 and all(name in listed.stdout for name in ("run", "doctor", "setup-notifications"))


async def test_a_box_without_mail_or_a_central_api_never_loads_their_code(tmp_path: Path) -> None:
    """The real agent with neither [smtp] nor [central], Python's import log on: it starts, prints an order and
    answers that alert mail and recovery are off, without importing the alerter, the mailer, the alert outbox or any
    of edge.sync (before stop 83 every start imported them all, ~1 MB of an idle agent's 50 MB, issue 17)."""

    async def off(api: aiohttp.ClientSession) -> None:
        for path in ("/api/v1/alerts/outbox", "/api/v1/recovery/status"):
            async with api.get(path) as response:
                assert response.status == 200 and (await response.json())["enabled"] is False, path

    imported = await imported_while_printing(tmp_path, receipt=False, asked=off)
    assert "edge.api.recovery" in imported  # the log is read right: the routes' modules were loaded
    unneeded = {"edge.alerts.alerter", "edge.alerts.mailer", "edge.alerts.outbox", "edge.sync"}
    assert {name for name in imported if name in unneeded or name.startswith("edge.sync.")} == set()
