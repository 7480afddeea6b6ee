"""Backups and restore, the doctor, `edge status`, the external health check, retention and a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from edge.api.client import call_agent
from edge.app import Agent
from edge.config import Settings, parse_settings
from edge.events import StorageProblem, StorageRecovered
from edge.ops.backup import backup_database, restore_database
from edge.ops.health import health
from edge.ops.housekeeping import purge_history, purge_printed_orders
from edge.ops.lock import AgentRunningError
from edge.ops.technician import Check, doctor, render_status
from edge.sim.central import CentralSim
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.proxy import ProxySim
from edge.sim.smtp import SmtpSink
from tests.helpers import (
    TOKEN,
    agent_process,
    api_client,
    config_dict,
    db_execute,
    db_rows,
    edge,
    eventually,
    issue_server_cert,
    mail_to,
    make_ca,
    toml,
)


async def order_ids(db_path: Path) -> list[str]:
    return [row[0] for row in await db_rows(db_path, "SELECT id FROM orders ORDER BY id")]


async def push(agent: Agent, count: int, *, prefix: str = "ord") -> list[str]:
    ids = []
    async with api_client(agent) as api:
        for n in range(count):
            order = make_order(n)
            order["id"] = f"{prefix}-{n:04d}"
            async with api.post("/api/v1/orders", json=order) as response:
                assert response.status == 201, await response.text()
            ids.append(order["id"])
    return ids


async def test_backup_restore_round_trip_keeps_every_order(
    make_settings: Callable[..., Settings], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """A backup taken while the agent runs holds every acknowledged order; restoring it after a loss brings all of them
    back."""
    settings = make_settings(backup={"keep": 2})
    agent = await make_agent(settings)
    ids = await push(agent, 25)
    backup = await backup_database(settings)  # online, under the running agent
    await agent.stop()
    await db_execute(settings.agent.db_path, "DELETE FROM orders")  # the loss
    assert await order_ids(settings.agent.db_path) == []
    safety = (await restore_database(settings, backup)).safety
    assert await order_ids(settings.agent.db_path) == sorted(ids)
    assert safety is not None and await order_ids(safety) == []  # what was replaced is kept, just in case
    agent = await make_agent(settings)  # and the agent starts on the restored database
    await agent.stop()
    for _ in range(3):
        await backup_database(settings)
    assert len([p for p in backup.parent.glob("edge-*.db") if "before-restore" not in p.name]) <= 2


async def test_restore_refuses_while_the_agent_runs(agent: Agent, tmp_path: Path) -> None:
    """`edge restore` will not replace the database under a running agent: it names the agent's pid."""
    backup = await backup_database(agent.settings)
    with pytest.raises(AgentRunningError, match=f"agent pid {os.getpid()}"):
        await restore_database(agent.settings, backup)


def foreign_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE recipes (name TEXT)")
        conn.commit()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("damaged", "not a readable SQLite database"),
        ("empty", "holds no edge agent database"),  # a copy to a USB stick cut short: 0 bytes
        ("foreign", "holds no edge agent database"),  # another program's SQLite file
    ],
)
async def test_restore_rejects_a_file_that_is_not_a_database(
    make_settings: Callable[..., Settings], tmp_path: Path, content: str, words: str
) -> None:
    """A file that is no backup of the agent is refused before anything is touched, in words, and --force is not
    offered. Before, an empty file "recorded no store" and --force was offered, which then failed with "no such table:
    print_jobs"."""
    bad = tmp_path / "bad.db"
    if content == "damaged":
        bad.write_bytes(b"not sqlite at all" * 100)
    elif content == "empty":
        bad.write_bytes(b"")
    else:
        await asyncio.to_thread(foreign_database, bad)
    for force in (False, True):
        with pytest.raises(Exception, match=words) as refused:
            await restore_database(make_settings(), bad, force=force)
        assert "--force" not in str(refused.value)
    assert not (tmp_path / "data" / "edge.db.restoring").exists()


async def test_doctor_checks_each_part(
    agent: Agent, make_settings: Callable[..., Settings], printers: dict[str, SimPrinter]
) -> None:
    """The doctor finds the database sound, the agent ready, the kitchen printer out of paper (fail) and the front one
    online."""
    printers["kitchen"].paper_out = True
    checks = {c.name: c for c in await doctor(make_settings(api={"port": agent.port}), call_agent)}
    assert checks["database integrity"].level == "ok"
    assert checks["database schema"].level == "ok"
    assert checks["disk space"].level == "ok"
    assert checks["clock"].level == "ok"
    assert checks["agent"].level == "ok"
    assert (checks["printer kitchen"].level, checks["printer kitchen"].detail) == ("fail", "paper out")
    assert (checks["printer front"].level, checks["printer front"].detail) == ("ok", "online")
    assert checks["smtp"].level == "warn"


async def test_doctor_tells_how_old_the_newest_backup_is_and_warns_when_it_is_too_old(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The doctor said all was well while the nightly backup had failed for nights (the upgrade79 probe, S1): it names
    the newest backup's age, and warns where there is none or it is older than backup.stale_after_h."""
    settings = make_settings()
    backups = tmp_path / "data" / "backups"
    assert _backup(await doctor(settings, call_agent)).level == "warn"  # none yet
    backups.mkdir(parents=True, exist_ok=True)
    newest = backups / "edge-20261204T033000000Z-1.db"
    newest.write_bytes(b"")
    assert _backup(await doctor(settings, call_agent)).level == "ok"
    os.utime(newest, (time.time() - 2 * 86400,) * 2)
    check = _backup(await doctor(settings, call_agent))
    assert check.level == "warn" and "2 d" in check.detail and str(backups) in check.detail, check
    # Taken while the clock was a month ahead, then NTP stepped it back: "newest 0 min old" said all was well while
    # the nightly backups failed since (the verify79 probe, V4); its date tells nothing of its age.
    os.utime(newest, (time.time() + 30 * 86400 + 60,) * 2)
    check = _backup(await doctor(settings, call_agent))
    assert check.level == "warn" and "30 d ahead" in check.detail and "edge backup" in check.detail, check


def _backup(checks: list[Check]) -> Check:
    [check] = [c for c in checks if c.name == "backup"]
    return check


async def test_doctor_warns_of_a_printer_that_cannot_say_a_ticket_is_out(
    make_settings: Callable[..., Settings], printers: dict[str, SimPrinter]
) -> None:
    """A printer that answers DLE EOT but not GS r (a few clones) prints, but the agent cannot tell when a ticket is
    out, so a roll ending half way through one is missed: the technician hears it from the doctor, not from a cook."""
    printers["front"].answer_in_order = False
    checks = {c.name: c for c in await doctor(make_settings(), call_agent)}
    assert (checks["printer kitchen"].level, checks["printer kitchen"].detail) == ("ok", "online")
    assert checks["printer front"].level == "warn" and "does not answer GS r" in checks["printer front"].detail


async def test_doctor_warns_of_serial_ports_named_by_their_kernel_number(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """/dev/ttyUSB0 and /dev/ttyUSB1 are numbered in the order the adapters are found: after a reboot the kitchen's
    printer can be the bar's. The doctor names each such port and the stable names to use instead; a by-id name is
    fine."""
    raw = config_dict(tmp_path / "data", printers)
    raw["printers"]["bar"] = {"type": "serial", "device": "/dev/ttyUSB1", "status_timeout": 0.2}
    raw["scanners"] = {
        "pass": {"port": "/dev/ttyACM0"},
        "door": {"port": "/dev/serial/by-id/usb-Honeywell_Scanner-if00"},
    }
    checks = {c.name: c for c in await doctor(parse_settings(raw, source="test"), call_agent)}
    bar = checks["printer bar port"]
    assert bar.level == "warn" and "/dev/ttyUSB1 is numbered" in bar.detail and "/dev/serial/by-path/" in bar.detail
    assert checks["scanner pass port"].level == "warn"
    assert "scanner door port" not in checks and "printer kitchen port" not in checks


async def test_doctor_warns_of_a_serial_printer_without_working_flow_control(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A serial printer left at flow_control "none" (or "dsrdtr", which pyserial on Linux does not hand to the kernel)
    overruns its receive buffer on a long ticket and loses lines unless the agent slows down to the slowest printer's
    pace: the doctor names the setting to use. RTS/CTS and XON/XOFF are fine."""
    raw = config_dict(tmp_path / "data", printers)
    for name, flow in (("bar", None), ("pass", "dsrdtr"), ("grill", "rtscts"), ("fryer", "xonxoff")):
        raw["printers"][name] = {"type": "serial", "device": f"/dev/serial/by-id/usb-{name}", "status_timeout": 0.2}
        if flow:
            raw["printers"][name]["flow_control"] = flow
    checks = {c.name: c for c in await doctor(parse_settings(raw, source="test"), call_agent)}
    for name, flow in (("bar", "none"), ("pass", "dsrdtr")):
        check = checks[f"printer {name} flow control"]
        assert check.level == "warn" and f'flow_control = "{flow}"' in check.detail
        assert 'flow_control = "rtscts"' in check.detail and '"xonxoff"' in check.detail
    assert "printer grill flow control" not in checks and "printer fryer flow control" not in checks


async def test_a_certificate_refused_for_its_dates_names_the_box_clock(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box without a battery whose NTP is blocked runs days behind (or ahead): to it a valid certificate of central
    or of the mail relay is "not yet valid" (or "expired"), and the link or the mail fails with OpenSSL's words only.
    The doctor (and the link, the mail log) now says what the box's clock says and that a wrong one is the likely
    cause. Here the certificates really ran out yesterday: OpenSSL's verdict, and the hint, are the same."""
    ca = await asyncio.to_thread(make_ca, tmp_path, "public")
    cert = await asyncio.to_thread(issue_server_cert, tmp_path, ca, "server", days=-1)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca[0]))  # the box's CA bundle
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*cert)
    central = CentralSim("test-store", token="central-token-abcdef123456", tls=tls)
    relay = SmtpSink(username="edge", password="relay-pa55word", tls_context=tls)
    await central.start()
    await relay.start()
    try:
        settings = make_settings(
            central={"url": central.url, "token": central.token},
            smtp={
                "host": "127.0.0.1",
                "port": relay.port,
                "security": "starttls",
                "username": "edge",
                "password": "relay-pa55word",
                "sender": "edge@store.test",
            },
            alerts={"to": ["chef@store.test"]},
        )
        checks = {c.name: c for c in await doctor(settings, call_agent)}
    finally:
        await relay.stop()
        await central.stop()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for name in ("central api", "smtp"):
        assert checks[name].level == "fail" and "certificate has expired" in checks[name].detail, checks[name]
        assert f"the box's clock says {today}" in checks[name].detail, checks[name]


@pytest.mark.parametrize(("central_off", "level", "says"), [(0, "ok", "agrees"), (-3600, "warn", "60 min ahead of")])
async def test_doctor_compares_the_box_clock_with_centrals(
    make_settings: Callable[..., Settings], central_off: float, level: str, says: str
) -> None:
    """With a central link the doctor reads central's time from its answer (the Date header) and says whether the
    box's clock agrees: a box an hour ahead (a hardware clock kept in local time) is a warning naming NTP."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    central.clock_offset_s = central_off
    await central.start()
    try:
        settings = make_settings(central={"url": central.url, "token": central.token})
        checks = {c.name: c for c in await doctor(settings, call_agent)}
    finally:
        await central.stop()
    assert checks["central api"].level == level and says in checks["central api"].detail, checks["central api"]


@pytest.mark.parametrize(
    ("token", "store", "says"),
    [
        ("retyped-wrong-token", "test-store", "HTTP 401"),
        ("central-token-abcdef123456", "test-stor", "HTTP 404"),
    ],
)
async def test_doctor_says_when_central_answers_but_refuses_the_box(
    make_settings: Callable[..., Settings], token: str, store: str, says: str
) -> None:
    """Central's health check takes no token, so a box with a mistyped central.token or agent.store_id was "ok" for
    the doctor while central refused its every call. The doctor now also asks for one order as the agent would, and
    names the answer and the setting to check."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    await central.start()
    try:
        settings = make_settings(agent={"store_id": store}, central={"url": central.url, "token": token})
        checks = {c.name: c for c in await doctor(settings, call_agent)}
    finally:
        await central.stop()
    check = checks["central api"]
    setting = "central.token" if "401" in says else "agent.store_id"
    assert check.level == "fail" and says in check.detail and f"check {setting}" in check.detail, check
    assert token not in check.detail


@pytest.mark.parametrize(
    ("password", "level", "says"),
    [("pr0xy-pa55word", "ok", "answers through the proxy"), ("stale", "fail", "check central.proxy_user and")],
)
async def test_doctor_checks_central_through_the_stores_proxy(
    make_settings: Callable[..., Settings], password: str, level: str, says: str
) -> None:
    """Behind a proxy the doctor asks central the way the agent does, and says so; a login the proxy refuses is a
    failure naming the settings to check."""
    central = CentralSim("test-store", token="central-token-abcdef123456")
    await central.start()
    proxy = ProxySim(
        {"central.store-chain.invalid": ("127.0.0.1", central.port)}, user="store-7", password="pr0xy-pa55word"
    )
    await proxy.start()
    try:
        central_section = {
            "url": f"http://central.store-chain.invalid:{central.port}",
            "token": central.token,
            "proxy": proxy.url,
            "proxy_user": "store-7",
            "proxy_password": password,
        }
        checks = {c.name: c for c in await doctor(make_settings(central=central_section), call_agent)}
    finally:
        await proxy.stop()
        await central.stop()
    assert checks["central api"].level == level and says in checks["central api"].detail, checks["central api"]
    assert password not in checks["central api"].detail


@pytest.mark.parametrize(
    ("timezone", "system_zone", "level", "says"),
    [
        ("", "UTC", "warn", "set agent.timezone"),
        ("", "Europe/Berlin", "ok", "the system's"),
        ("Europe/Berlin", "UTC", "ok", "Europe/Berlin (agent.timezone)"),
    ],
)
async def test_doctor_names_the_time_zone_tickets_are_printed_in(
    make_settings: Callable[..., Settings], timezone: str, system_zone: str, level: str, says: str
) -> None:
    """Tickets show due times, alert hours and the digest follow the store's zone: agent.timezone, else the system's.
    A box left in UTC (many images ship so) with no agent.timezone prints every time an hour or two off for a store
    in Berlin; the doctor says so (before: nothing about the zone)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = system_zone
    time.tzset()
    try:
        checks = {c.name: c for c in await doctor(make_settings(agent={"timezone": timezone}), call_agent)}
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert checks["time zone"].level == level and says in checks["time zone"].detail, checks["time zone"]


async def test_doctor_says_when_the_config_changed_after_the_running_agent_started(
    agent: Agent, tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A printer renamed in the file, the agent not restarted: the doctor listed the new name online, `edge printer
    test` said it was not configured, and nothing said the agent runs the file as it was (the technician probe). The
    doctor's agent line now says the file changed after the agent started, and to restart it."""
    config = tmp_path / "edge.toml"
    config.write_text(toml(config_dict(tmp_path / "data", printers, api={"port": agent.port})))
    settings = parse_settings(tomllib.loads(config.read_text()), source=str(config))
    before = time.time() - 3600
    os.utime(config, (before, before))  # written before the agent started
    checks = {c.name: c for c in await doctor(settings, call_agent)}
    assert checks["agent"].level == "ok", checks["agent"]
    os.utime(config)  # edited now, the agent running since before
    checks = {c.name: c for c in await doctor(settings, call_agent)}
    assert checks["agent"].level == "warn", checks["agent"]
    assert f"{config} changed after the agent started" in checks["agent"].detail, checks["agent"]
    assert "systemctl restart edge-agent" in checks["agent"].detail


async def test_doctor_command_exits_non_zero_on_a_failure(tmp_path: Path, printers: dict[str, SimPrinter]) -> None:
    """`edge doctor` prints one line per check and exits 1 when something fails (no database yet, agent down, kitchen
    printer off)."""
    printers["kitchen"].set_offline(True)
    config = tmp_path / "edge.toml"
    config.write_text(toml(config_dict(tmp_path / "data", printers, api={"port": 9})))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "doctor", "--config", str(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[0].startswith("OK") and "config" in lines[0]
    assert any(line.startswith("FAIL") and "database" in line for line in lines)
    assert any(line.startswith("FAIL") and "agent" in line for line in lines)
    assert any(line.startswith("FAIL") and "printer kitchen" in line and "offline" in line for line in lines)
    assert any(line.startswith("OK") and "printer front" in line and "online" in line for line in lines)


async def test_status_screen_shows_printers_queue_and_dead_jobs(
    agent: Agent, make_settings: Callable[..., Settings], printers: dict[str, SimPrinter]
) -> None:
    """`edge status` renders the agent's /api/v1/status: each printer with its state, the queue and the dead jobs,
    colour only on a terminal."""
    printers["kitchen"].set_offline(True)
    await push(agent, 1)
    # The receipt goes out at once; its 'printed' mark rides on the front spool's next commit (within 0.05 s).
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE kind = 'receipt'"),
        lambda rows: rows == [("printed",)],
        what="the receipt recorded as printed",
    )
    for _ in range(100):
        status, data = await call_agent(make_settings(api={"port": agent.port}), "GET", "/api/v1/status")
        if data["printers"][0]["state"] == "offline":
            break
        await asyncio.sleep(0.05)
    assert status == 200
    plain = render_status(data, colour=False)
    assert "kitchen" in plain and "offline" in plain and "queue: 1 waiting" in plain and "dead jobs: 0" in plain
    assert "\033[31m" in render_status(data, colour=True)


async def test_status_screen_says_when_alert_mail_cannot_go_out(
    make_agent: Callable[..., Awaitable[Agent]],
    make_settings: Callable[..., Settings],
    printers: dict[str, SimPrinter],
) -> None:
    """The relay is down (or refuses the box's login) while an alarm waits to be mailed: `edge status` says so, with
    the relay's error, as the status page does. Before (the ops72 probe, 3): `edge status` showed only "last alert:
    ... firing", and nothing told the technician that the manager had not been told."""
    relay = SmtpSink()
    await relay.start()
    await relay.stop()  # its port, with nobody listening on it
    printers["kitchen"].set_offline(True)
    agent = await make_agent(make_settings(**mail_to(relay)))
    await push(agent, 1)
    settings = make_settings(api={"port": agent.port})

    async def status_data() -> dict[str, Any]:
        return (await call_agent(settings, "GET", "/api/v1/status"))[1]

    data = await eventually(
        status_data, lambda d: bool((d.get("mail") or {}).get("server_error")), what="the relay seen down"
    )
    plain = render_status(data, colour=False)
    [line] = [line for line in plain.splitlines() if line.startswith("alert mail:")]
    assert "waiting" in line and "cannot be used" in line and str(relay.port) in line, plain
    assert "\033[31m" in render_status(data, colour=True).splitlines()[plain.splitlines().index(line)]


def _health_mail(sink: SmtpSink) -> dict[str, Any]:
    """Sections that send the health timer's mail to ``sink``, in English."""
    return {
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        "alerts": {"to": ["chef@store.test"]},
        "agent": {"language": "en"},
    }


async def test_health_check_mails_when_the_agent_stays_down_and_when_it_is_back(
    agent: Agent, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """`edge health --alert`: the second failed check in a row mails the manager once; the first good check after mails
    RESOLVED."""
    sink = SmtpSink()
    await sink.start()
    try:
        mail = _health_mail(sink)
        # Nothing listens on the discard port, and no agent holds this data directory (one that did would be asked
        # on the port it noted: an api.port changed before its restart)
        nobody = mail | {"agent": mail["agent"] | {"data_dir": str(tmp_path / "nobody")}}
        down = make_settings(api={"port": 9}, **nobody)
        assert (await health(down, call_agent, alert=True))[0] is False
        assert sink.messages == []  # one miss may be a restart
        await health(down, call_agent, alert=True)
        await health(down, call_agent, alert=True)
        assert len(await sink.wait_for(1)) == 1
        assert "ALERT: edge agent is not running" in sink.messages[0]["Subject"]
        healthy, _ = await health(make_settings(api={"port": agent.port}, **mail), call_agent, alert=True)
        assert healthy
        assert "RESOLVED" in (await sink.wait_for(2))[1]["Subject"]
    finally:
        await sink.stop()


# What another program on api.port may answer: a router's page, or JSON that is no answer of the agent's
_FOREIGN = {
    "html": ("<html><body>FRITZ!Box</body></html>", "text/html"),
    "json-null": ("null", "application/json"),
    "json-list": ("[]", "application/json"),
    "empty": ("", "application/json"),
    "json-without-checks": ('{"ready": false, "checks": null}', "application/json"),
}


@pytest.mark.parametrize("answer", list(_FOREIGN))
async def test_another_program_on_the_api_port_is_said_as_such_and_the_health_timer_mails(
    make_settings: Callable[..., Settings], tmp_path: Path, answer: str
) -> None:
    """The agent is stopped and another web service answers on api.port (a mistyped port, a router's page, another
    service's JSON): every command that asks the agent ended in a JSONDecodeError traceback, and `edge health
    --alert`, the timer's, crashed instead of mailing "not running" (the technician probe). Now one line says the port
    answers but not as the agent, and the timer mails. Before stop 67 an answer in JSON that is not the agent's
    (null, a list, nothing) still crashed the timer, and the doctor said "OK agent running" (the docs probe, D1)."""
    text, content_type = _FOREIGN[answer]

    async def foreign(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", foreign)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink = SmtpSink()
    await sink.start()
    try:
        mail = _health_mail(sink)
        other = make_settings(api={"port": port}, **mail)
        for _ in range(2):  # the second miss in a row mails
            healthy, said = await health(other, call_agent, alert=True)
            assert not healthy and "not as the edge agent" in str(said), said
        assert "not running" in str((await sink.wait_for(1))[0]["Subject"])
        config = tmp_path / "edge.toml"
        raw = config_dict(tmp_path / "data", {}) | {
            "api": {"port": port, "token": TOKEN},
            "stations": {},
            "receipts": {},
        }
        config.write_text(toml(raw))
        shown = await edge("status", "--config", str(config))
        assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
        assert f"127.0.0.1:{port} answers, but not as the edge agent" in shown.stderr, shown.stderr
        doctor = await edge("doctor", "--config", str(config))
        assert re.search(r"FAIL\s+agent\s", doctor.stdout) and "Traceback" not in doctor.stderr, doctor.stdout
    finally:
        await sink.stop()
        await runner.cleanup()


async def test_a_printer_name_or_order_id_typed_with_an_umlaut_or_a_space_is_asked_for_not_a_traceback(
    agent: Agent, make_settings: Callable[..., Settings]
) -> None:
    """`edge printer test Küche` ended in a UnicodeEncodeError traceback, `edge reprint "A 1001"` in "did not answer
    ...; is the agent running?" (the technician probe): the name went into the URL as typed. Now the agent is asked,
    and says what it does not know."""
    settings = make_settings(api={"port": agent.port})
    status, answer = await call_agent(settings, "POST", "/api/v1/printers/Küche/test")
    assert status == 404 and "Küche" in answer["reason"], answer
    status, answer = await call_agent(settings, "POST", "/api/v1/orders/A 1001/reprint")
    assert status == 404 and "A 1001" in answer["reason"], answer


async def all_printed(db_path: Path) -> None:
    """Waits (5 s at most) until every job's printed mark is committed; it lands just after the last byte."""
    await eventually(
        lambda: db_rows(db_path, "SELECT COUNT(*) FROM print_jobs WHERE state != 'printed'"),
        lambda rows: rows[0][0] == 0,
        5,
        "every job recorded printed",
    )


async def test_retention_purges_old_printed_orders_in_batches(agent: Agent, printers: dict[str, SimPrinter]) -> None:
    """Printed orders older than the retention age whose status reached central are deleted in batches; waiting or
    undelivered ones stay."""
    ids = await push(agent, 12)
    await printers["kitchen"].wait_for_printed(12)
    await printers["front"].wait_for_printed(12, timeout=20)
    db_path = agent.settings.agent.db_path
    await all_printed(db_path)

    def write() -> None:  # a second connection, off the event loop
        with sqlite3.connect(db_path) as conn:
            conn.execute(
                "UPDATE orders SET received_at = received_at - 40 * 86400,"
                " created_at = strftime('%Y-%m-%dT%H:%M:%SZ', julianday(created_at) - 40) WHERE id != ?",
                (ids[0],),
            )
            conn.execute("UPDATE outbox SET delivered_at = 1 WHERE order_id != ?", (ids[1],))

    await asyncio.to_thread(write)
    assert agent.db is not None
    purged = await purge_printed_orders(agent.db, older_than_s=30 * 86400, batch=4)
    assert purged == 10
    assert await order_ids(db_path) == sorted(ids[:2])  # too young, and not yet reported to central

    def check() -> None:  # a second connection, off the event loop
        with sqlite3.connect(db_path) as conn:
            assert (
                conn.execute("SELECT COUNT(*) FROM print_jobs WHERE order_id NOT IN (?, ?)", ids[:2]).fetchone()[0] == 0
            )
            assert conn.execute("SELECT COUNT(*) FROM outbox WHERE order_id NOT IN (?, ?)", ids[:2]).fetchone()[0] == 0

    await asyncio.to_thread(check)


async def test_retention_drops_old_history_and_keeps_recent(agent: Agent) -> None:
    """Scans, sent or discarded alert mails, alert log lines, ended silences and finished recovery runs past the
    retention age go; younger rows, unsent and dead-lettered mails (a person still has to decide) and unfinished runs
    stay, so the database stays bounded."""
    old, young = time.time() - 40 * 86400, time.time()
    db_path = agent.settings.agent.db_path

    def write() -> None:  # a second connection, off the event loop
        with sqlite3.connect(db_path) as conn:
            for at in (old, young):
                conn.execute(
                    "INSERT INTO scans(scanned_at, scanner, code, outcome) VALUES (?, 's', 'x', 'unknown')", (at,)
                )
                conn.execute("INSERT INTO alert_log(at, group_key, action) VALUES (?, 'k', 'mailed')", (at,))
                conn.execute(
                    "INSERT INTO alert_silences(matcher, starts_at, ends_at) VALUES ('x', ?, ?)", (at - 60, at)
                )
                for sent, state in ((at, "sent"), (None, "pending"), (None, "dead"), (None, "discarded")):
                    conn.execute(
                        "INSERT INTO alert_mails(kind, recipients, subject, text_body, html_body, created_at, "
                        "next_attempt_at, sent_at, state)"
                        " VALUES ('test', '[]', 's', 't', 'h', ?, ?, ?, ?)",
                        (at, at, sent, state),
                    )
                for finished in (at, None):
                    conn.execute(
                        "INSERT INTO recovery_runs(trigger, state, created_at, finished_at) VALUES ('manual', "
                        "'completed', ?, ?)",
                        (at, finished),
                    )

    await asyncio.to_thread(write)
    assert agent.db is not None
    removed = await purge_history(agent.db, older_than_s=30 * 86400, batch=1)
    assert removed == {
        "scans": 1,
        "alert_log": 1,
        "alert_mails": 2,
        "alert_silences": 1,
        "alert_groups": 0,
        "mqtt_rejects": 0,
        "recovery_items": 0,
        "recovery_runs": 1,
    }

    def check() -> None:  # a second connection, off the event loop
        with sqlite3.connect(db_path) as conn:
            assert [r[0] for r in conn.execute("SELECT scanned_at FROM scans")] == [young]
            left = conn.execute("SELECT state, COUNT(*) FROM alert_mails GROUP BY state ORDER BY state").fetchall()
            assert left == [("dead", 2), ("discarded", 1), ("pending", 2), ("sent", 1)]  # unsent never go
            assert conn.execute("SELECT COUNT(*) FROM recovery_runs").fetchone()[0] == 3

    await asyncio.to_thread(check)


async def test_full_database_answers_503_raises_an_event_and_recovers(agent: Agent) -> None:
    """With no room left (PRAGMA max_page_count at the current size), intake answers 503 + Retry-After, StorageProblem
    is
    published and /ready fails; when room is back the storage probe publishes StorageRecovered and orders are stored
    again."""
    events: list[object] = []
    agent.bus.subscribe(events.append, StorageProblem)
    agent.bus.subscribe(events.append, StorageRecovered)
    assert agent.db is not None
    writer = agent.db._writer
    pages = (await (await writer.execute("PRAGMA page_count")).fetchone())[0]
    await writer.execute(f"PRAGMA max_page_count = {pages}")
    answers = []
    async with api_client(agent) as api:
        for n in range(200):  # the free space left in the last pages runs out within a few orders
            order = make_order(n)
            order["id"] = f"full-{n}"
            async with api.post("/api/v1/orders", json=order) as response:
                answers.append(response.status)
                if response.status == 503:
                    assert response.headers["Retry-After"]
                    break
        assert answers[-1] == 503 and set(answers[:-1]) <= {201}
        assert [type(e) for e in events] == [StorageProblem]
        assert "full" in events[0].detail
        async with api.get("/metrics") as response:
            assert "edge_storage_writable 0.0" in await response.text()
        async with api.get("/ready") as response:
            assert response.status == 503  # small writes may pass; there is no room for an order
            assert "full" in (await response.json())["checks"]["database_writable"]["detail"]
        await writer.execute("PRAGMA max_page_count = 1073741823")  # space is back
        assert agent._housekeeping is not None
        await agent._housekeeping.probe_storage()  # what the scheduler runs every 10 s while writes fail
        assert [type(e) for e in events] == [StorageProblem, StorageRecovered]
        order = make_order(999)
        order["id"] = "after-full"
        async with api.post("/api/v1/orders", json=order) as response:
            assert response.status == 201
        async with api.get("/ready") as response:
            assert response.status == 200
    assert "after-full" in await order_ids(agent.settings.agent.db_path)


async def test_orders_refused_on_a_full_card_say_so_and_cost_the_card_one_log_line_not_one_each(agent: Agent) -> None:
    """A sender's steady stream meets a full card: every order is answered 503 naming the full card (the backend's
    operator sees why), and the log, written to that same card, says it once, not once per order. Before: 987 error
    lines in 15 s, and a 503 that said only "cannot take writes right now" (the disk-fault probe, diskfault F4)."""
    assert agent.db is not None
    writer = agent.db._writer
    pages = (await (await writer.execute("PRAGMA page_count")).fetchone())[0]
    await writer.execute(f"PRAGMA max_page_count = {pages}")
    reasons = []
    with capture_logs() as logs:
        async with api_client(agent) as api:
            for n in range(60):
                order = make_order(n)
                order["id"] = f"stream-{n}"
                async with api.post("/api/v1/orders", json=order) as response:
                    if response.status == 503:
                        reasons.append((await response.json())["reason"])
    await writer.execute("PRAGMA max_page_count = 1073741823")
    assert len(reasons) >= 40 and all("card is full" in r for r in reasons), reasons[:3]
    refused = [e for e in logs if e["event"] == "store_unavailable"]
    assert len(refused) <= 1, refused[:3]  # none here where this process's agent said it within the last minute


async def test_scheduler_runs_the_purge_on_its_own(agent: Agent, printers: dict[str, SimPrinter]) -> None:
    """The retention timer purges by itself at retention.every_s: an old, printed, reported order disappears without a
    call."""
    from edge.clock import RemoteClock
    from edge.config import RetentionSettings
    from edge.ops.housekeeping import Housekeeping

    ids = await push(agent, 1)
    await printers["kitchen"].wait_for_printed(1)
    await printers["front"].wait_for_printed(1)
    db_path = agent.settings.agent.db_path
    await all_printed(db_path)

    def write() -> None:  # a second connection, off the event loop
        with sqlite3.connect(db_path) as conn:
            conn.execute(
                "UPDATE orders SET received_at = received_at - 2 * 86400,"
                " created_at = strftime('%Y-%m-%dT%H:%M:%SZ', julianday(created_at) - 2)"
            )
            conn.execute("UPDATE outbox SET delivered_at = 1")

    await asyncio.to_thread(write)
    assert agent.db is not None
    central = RemoteClock("central")  # its clock known: the only order, 2 days old, is not the newest time known
    central.heard(time.time(), 0.0)
    housekeeping = Housekeeping(agent.db, RetentionSettings(days=1, every_s=0.2, batch=10), central=central)
    housekeeping.start()
    try:
        for _ in range(100):
            if await order_ids(db_path) == []:
                break
            await asyncio.sleep(0.05)
    finally:
        await housekeeping.stop()
    assert ids and await order_ids(db_path) == []


async def test_database_size_stays_bounded_across_purges(tmp_path: Path) -> None:
    """Rounds of 1,000 old printed orders, each purged after: freed pages are reused, so the file stops growing after
    the first round."""
    from edge.store.db import Database

    db = await Database.open(tmp_path / "edge.db")
    payload = json.dumps({"note": "x" * 1500})
    sizes = []
    try:
        for round_ in range(3):
            async with db.transaction() as conn:
                for n in range(1000):
                    order_id = f"r{round_}-{n}"
                    await conn.execute(
                        "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at) "
                        "VALUES (?, ?, 'h', ?, 'web', '2026-01-01', 0)",
                        (order_id, str(n), payload),
                    )
                    await conn.execute(
                        "INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, idempotency_key) "
                        "VALUES (?, 'ticket', 'kitchen', 'kitchen', 'printed', 0, ?)",
                        (order_id, f"{order_id}:ticket"),
                    )
            await db._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # count the database's pages, not the log's
            sizes.append((tmp_path / "edge.db").stat().st_size)
            assert await purge_printed_orders(db, older_than_s=86400, batch=200) == 1000
    finally:
        await db.close()
    assert sizes[2] <= sizes[0] * 1.1, sizes


async def test_a_second_edge_run_on_a_running_agents_data_is_refused_without_a_stop_in_the_log(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A technician runs `edge run` by hand while the service runs: refused in one line naming the agent; its log
    says nothing of stopping, which the journal would show beside the running agent's lines as if that one stopped
    (before stop 71: `agent_stopping`, `agent_stopped`, the real71a probe)."""
    running = agent_process(tmp_path, printers, log_level="info")
    await running.start()
    try:
        second = await edge("run", "--config", str(running.config))
        assert second.returncode == 1 and "is in use by agent pid" in second.stderr, second
        assert "agent_stopping" not in second.stderr + second.stdout, second.stderr
        assert running.proc is not None and running.proc.returncode is None
        assert await running.terminate() == 0
    finally:
        await running.close()
