"""The data directory's files other than the database after a power cut: caches that come back empty, cut short or as
garbage are rebuilt, and the agent starts and prints. Which states each file can be left in, and why: the table in
docs/operations.md ("Files and power cuts")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from edge.durable import NoteInPlace
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.powercut import PowerCut
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from edge.sim.smtp import SmtpSink
from tests.helpers import TOKEN, agent_process, api_client, db_rows, edge, eventually, post, wait_until

# How a file written without an fsync (in place, or renamed into place) can come back after a power cut on ext4.
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "cut-short": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(b ^ 0x5A for b in data[:64]) + data[64:],
}


def _damage(paths: list[Path], how: str) -> list[str]:
    """Each file put in the state ``how``; returns their names (for the failure message)."""
    for path in paths:
        path.write_bytes(DAMAGE[how](path.read_bytes()))
    return sorted(p.name for p in paths)


async def _prints_an_order(agent: AgentProcess, kitchen: SimPrinter, front: SimPrinter, n: int, what: str) -> None:
    """The agent (started) takes order ``n`` with a receipt (the front printer's has the logo: python-escpos at work)
    and both tickets reach paper."""
    before = len(kitchen.printed), len(front.printed)
    async with api_client(agent.port) as api:
        status, body = await post(api, make_order(n, prefix="files", print_receipt=True))
        assert status == 201, body
    await wait_until(
        lambda: len(kitchen.printed) > before[0] and len(front.printed) > before[1], 10, f"order {n} printed ({what})"
    )


@pytest.mark.parametrize("how", sorted(DAMAGE))
async def test_caches_torn_by_a_power_cut_are_rebuilt_and_the_agent_prints(tmp_path: Path, how: str) -> None:
    """After a good run (which leaves the printing-check fingerprint, jinja2's compiled templates and python-escpos'
    printer database pickle in data/cache, none of them fsynced), each is put in the state ``how``: the next start is
    READY and prints an order with a logo receipt. Then only the escpos pickle is damaged while the printing check is
    cached (so python-escpos is first imported after READY, by the warm-up): the agent still prints (for "empty")."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    logo = tmp_path / "logo.png"
    await asyncio.to_thread(Image.new("L", (200, 50), 0).save, logo)
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    text = agent.config.read_text(encoding="utf-8")
    agent.config.write_text(text.replace("[printers.front]\n", f'[printers.front]\nlogo = "{logo}"\n'), "utf-8")
    cache = tmp_path / "data" / "cache"
    try:
        await agent.start()
        await _prints_an_order(agent, kitchen, front, 1, "a good run")
        assert await agent.terminate() == 0
        pickles = sorted(cache.glob("*.capabilities.pickle"))
        templates = sorted((cache / "templates").glob("*.cache"))
        assert pickles and templates and (cache / "printing-check").exists()

        data = tmp_path / "data"
        (data / "start-failure").write_text("a note from an older start\n", encoding="utf-8")  # kept by a cut's undo
        damaged = _damage(
            [*pickles, *templates, cache / "printing-check", data / "agent.lock", data / "start-failure"], how
        )
        await agent.start()
        await _prints_an_order(agent, kitchen, front, 2, f"{how}: {damaged}")
        assert await agent.terminate() == 0

        if how != "empty":  # one state is enough for the second case: each start costs ~1-2 s of two shared cores
            return
        damaged = _damage(pickles, how)  # the printing check's fingerprint stays: escpos loads after READY
        await agent.start()
        await _prints_an_order(agent, kitchen, front, 3, f"{how}, printing check cached: {damaged}")
        assert await agent.terminate() == 0
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()


@pytest.mark.parametrize("how", ["empty", "garbage"])  # cut short, its first half keeps the whole note: still read
def test_a_note_in_place_a_power_cut_tore_reads_as_none(tmp_path: Path, how: str) -> None:
    """The storage alert's note on the card is written in place (no new block on a full card), so a power cut can
    tear it: a torn note is no note (the next boot mails the alarm again rather than take garbage as a time)."""
    note = NoteInPlace(tmp_path / "storage-mailed.note")
    with pytest.raises(OSError):
        note.write("{}")  # never made: a write may not take a new block
    note.make()
    note.write('{"boot": "b", "mono": 5.0, "wall": 1790000000.0}')
    assert note.read() == '{"boot": "b", "mono": 5.0, "wall": 1790000000.0}'
    _damage([note.path], how)
    assert note.read() is None
    note.make()  # made again at its full size, blank
    assert note.read() is None and note.path.stat().st_size == NoteInPlace.SIZE


async def test_the_agent_down_alerts_state_survives_a_power_cut(tmp_path: Path, powercut_shim: Path) -> None:
    """`edge health --alert` (the timer) under the power-cut shim: down twice, so the manager gets ALERT; the power
    goes; the agent is back: the manager gets RESOLVED. The state that says "ALERT was mailed" must be durable before
    the command ends, or the cut takes it and the all-clear is never mailed (before: health-state.json was written in
    place and never fsynced, so the cut left nothing of it)."""
    sink = SmtpSink()
    await sink.start()
    port, data_dir = free_port(), tmp_path / "data"
    mail = f"""
[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "none"
sender = "edge@store.test"

[alerts]
to = ["chef@store.test"]
"""
    config = write_config(
        tmp_path / "edge.toml", data_dir=data_dir, api_port=port, token=TOKEN, printers={"kitchen": 9, "front": 9}
    )
    config.write_text(config.read_text(encoding="utf-8") + mail, encoding="utf-8")
    power = PowerCut(powercut_shim, data_dir, tmp_path / "durable")
    env = {**power.env(), "EDGE_AGENT_LANGUAGE": "en"}

    async def health() -> str:
        done = await edge("health", "--alert", "--config", str(config), env=env)
        return done.stdout.strip()

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True, "checks": {}})

    app = web.Application()
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app)
    try:
        assert (await health()).startswith("UNHEALTHY")
        assert (await health()).startswith("UNHEALTHY")
        assert [str(m["Subject"]) for m in sink.messages][-1].endswith("ALERT: edge agent is not running")
        kept = await asyncio.to_thread(power.cut, ("health-state.json",))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        assert (await health()).startswith("healthy")
        subjects = [str(m["Subject"]).split("] ", 1)[1] for m in sink.messages]
        assert subjects == ["ALERT: edge agent is not running", "RESOLVED: edge agent is back"], (
            f"after a power cut that kept {kept} of the health state"
        )
    finally:
        await runner.cleanup()
        await sink.stop()


@pytest.mark.crash
async def test_an_alert_and_status_events_from_just_before_a_power_cut_are_still_sent(
    tmp_path: Path, powercut_shim: Path
) -> None:
    """The agent under the power-cut shim (10 ms syncs), the mail relay and the central API both unreachable: orders
    are answered 201 while the kitchen printer is unplugged, so a printer_offline alert is queued in the mail outbox
    and the orders' status events in the central outbox. The power goes the moment the alert's mail is committed;
    the printer is back, the relay and central come up, the agent starts again: the alert is mailed (once, at most
    twice) although nothing is offline any more, and central holds events of every order answered 201."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    kitchen.set_offline(True)
    sink = SmtpSink(port=free_port())  # started only after the cut: until then the alert cannot go
    central = CentralSim("files-cut", token=TOKEN, strict=False)
    await central.start()
    await central.set_up(False)
    port, data_dir = free_port(), tmp_path / "data"
    extra = f'''
[central]
url = "{central.url}"
token = "{TOKEN}"
start_jitter_s = 0
probe_up_s = 0.2
probe_max_s = 0.2
retry_base_s = 0.05
retry_max_s = 0.5

[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "none"
sender = "edge@store.test"

[alerts]
to = ["chef@store.test"]
group_wait_s = 0
critical_group_wait_s = 0
disk_free_min_mb = 0
check_interval_s = 0.2
'''
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data_dir,
        api_port=port,
        token=TOKEN,
        printers={"kitchen": kitchen.port, "front": front.port},
        store_id="files-cut",
        extra=extra,
    )
    db = data_dir / "edge.db"
    power = PowerCut(powercut_shim, data_dir, tmp_path / "durable", sync_ms=10)
    agent = AgentProcess(config, port, tmp_path / "agent.log", env={**power.env(), "EDGE_AGENT_LANGUAGE": "en"})
    answered = []
    try:
        await agent.start()
        async with api_client(port) as api:
            for n in range(5):
                order = make_order(n, prefix="files", print_receipt=False)
                status, body = await post(api, order)
                assert status == 201, body
                answered.append(order["id"])
        await eventually(
            lambda: db_rows(db, "SELECT COUNT(*) FROM alert_mails WHERE kind = 'firing'"),
            lambda rows: rows[0][0] > 0,
            10,
            "the printer_offline mail queued",
        )
        await agent.kill()
        kept = await asyncio.to_thread(power.cut)
        kitchen.set_offline(False)
        await sink.start()
        await central.set_up(True)
        agent = AgentProcess(config, port, tmp_path / "agent.log", env={"EDGE_AGENT_LANGUAGE": "en"})
        await agent.start()

        def offline_mails() -> list[str]:
            return [str(m["Subject"]) for m in sink.messages if "Printer kitchen unreachable" in str(m["Subject"])]

        await wait_until(lambda: offline_mails(), 10, f"the alert mailed after the cut (kept {kept})")
        await central.wait_for(lambda: {e["order_id"] for e in central.events.values()} >= set(answered), 10)
        assert await agent.terminate() == 0
        assert 1 <= len(offline_mails()) <= 2, [str(m["Subject"]) for m in sink.messages]
    finally:
        await agent.close()
        await sink.stop()
        await central.stop()
        await kitchen.stop()
        await front.stop()


async def test_why_the_last_start_failed_survives_a_power_cut(tmp_path: Path, powercut_shim: Path) -> None:
    """A start that fails on a damaged database notes why (and the backup to restore) for the health check, under the
    power-cut shim; the power goes; `edge health` still tells that reason, not only "did not answer"."""
    data_dir = tmp_path / "data"
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data_dir,
        api_port=free_port(),
        token=TOKEN,
        printers={"kitchen": 9, "front": 9},
    )
    power = PowerCut(powercut_shim, data_dir, tmp_path / "durable")
    env = power.env()
    await asyncio.to_thread((data_dir / "edge.db").write_bytes, b"this is no database" * 300)
    failed = await edge("run", "--config", str(config), env=env)
    assert failed.returncode != 0
    kept = await asyncio.to_thread(power.cut, ("start-failure",))
    checked = await edge("health", "--config", str(config))
    assert checked.stdout.startswith("UNHEALTHY: its last start failed:"), (kept, checked.stdout, failed.stderr[-500:])
