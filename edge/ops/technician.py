"""What a technician runs on the box: the one-screen status, the doctor's checks and the external health check."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from edge.api.client import agent_address, not_the_agent
from edge.clock import RemoteClock, clock_off_words, shown_at
from edge.config import NetworkPrinterSettings, Settings, shown_url
from edge.dns import unresolved
from edge.errors import (
    AlertError,
    ConfigError,
    DeviceUnreachableError,
    EdgeError,
    SchemaTooNewError,
    StoreError,
    StoreUnreadableError,
)
from edge.mounts import read_only_advice
from edge.ops.backup import restore_advice
from edge.ops.health import ApiCall, failing_checks
from edge.ops.owner import unwritable_database
from edge.printing.status import BLOCKING_STATES, PrinterState
from edge.store import migrations
from edge.store.files import card_moved_of_file, check_file

log = structlog.get_logger()

_COLOURS = {"ok": "\033[32m", "warn": "\033[33m", "fail": "\033[31m"}
_RESET = "\033[0m"
_PRINTER_LEVEL = {"online": "ok", "paper_near_end": "warn", "unknown": "warn"}
# A clock behind the newest order by more than this has jumped back (dead RTC battery, no NTP yet).
CLOCK_BEHIND_MAX_S = 300
MOVED_TOLD_S = 7 * 86400  # a card moved into this box: doctor warns for a week after its first start here


def _paint(level: str, text: str, colour: bool) -> str:
    return f"{_COLOURS[level]}{text}{_RESET}" if colour else text


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _row_text(row: dict[str, Any], zone: str | None) -> str:
    def shown(key: str, value: Any) -> Any:
        return shown_at(value, zone) if key.endswith("_at") and isinstance(value, (int, float)) else value

    return ", ".join(f"{k}={shown(k, v)}" for k, v in row.items() if v not in (None, ""))


def render_status(data: dict[str, Any], *, colour: bool, zone: str | None = None) -> str:
    """The answer of GET /api/v1/status as one screen of text, its times in ``zone`` (agent.timezone)."""
    lines = [f"edge agent {data['store_id']}  version {data['version']}  up {_ago(data['uptime_s'])}"]
    if data.get("storage_problem"):
        lines.append(_paint("fail", f"STORAGE: {data['storage_problem']}", colour))
    lines.append("printers:")
    for p in data["printers"]:
        level = _PRINTER_LEVEL.get(p["state"], "fail")
        state = _paint(level, f"{p['state']:<15}", colour)
        lines.append(f"  {p['name']:<16} {state} {p['queued']:>4} waiting {p['dead']:>3} dead  {p['detail']}".rstrip())
    oldest = data["oldest_waiting_s"]
    queue_level = "ok" if not data["queued"] else ("warn" if (oldest or 0) < 300 else "fail")
    # tickets from before a reboot: neither printed nor held until central or NTP confirms the box's clock (an older
    # agent's answer has no such count)
    unsure = f" ({n} waiting for the clock to be confirmed)" if (n := data.get("waiting_for_clock")) else ""
    lines.append(_paint(queue_level, f"queue: {data['queued']} waiting{unsure}, oldest {_ago(oldest)}", colour))
    dead = data["dead_jobs"]
    dead_count = data.get("dead_count", len(dead))  # an older agent's answer has only the list (at most 50)
    lines.append(
        _paint(
            "fail" if dead_count else "ok",
            f"dead jobs: {dead_count}" + (f" (edge jobs --failed; edge retry {dead[0]['id']})" if dead else ""),
            colour,
        )
    )
    # not printed, not failed: waiting for a person to release or discard them, or for the config to route them (no
    # release prints those: "release or discard" sent the technician to a release that printed nothing, config80 F4)
    held = data.get("held_count", len(data.get("held_jobs") or []))
    unrouted = held - data.get("held_releasable", held)
    if held - unrouted:
        tickets = "1 ticket" if held - unrouted == 1 else f"{held - unrouted} tickets"
        lines.append(_paint("warn", f"{tickets} held for a person: edge jobs --held, then release or discard", colour))
    if unrouted:
        jobs = data.get("held_jobs") or []
        named = sorted({j.get("station") or "receipts" for j in jobs if j.get("held_reason") == "no_printer"})
        tickets = "1 ticket" if unrouted == 1 else f"{unrouted} tickets"
        lines.append(
            _paint(
                "warn",
                f"{tickets} held for want of a printer ({', '.join(named) or 'edge jobs --held'}): give it one in"
                " edge.toml ([stations], receipts.printer) and restart, they print then; or discard them",
                colour,
            )
        )
    if scanners := data.get("scanners"):  # an older agent's answer has none
        lines.append("scanners:")
        for sc in scanners:
            level, word = ("ok", "connected") if sc["connected"] else ("fail", "DISCONNECTED")
            gone = "" if sc["connected"] else sc["detail"]
            lines.append(f"  {sc['name']:<16} {_paint(level, f'{word:<15}', colour)} {sc['port']}  {gone}".rstrip())
    central = data.get("central_up")
    link = data.get("central") or {}
    if central is None:
        said = "not configured"
    elif central and link.get("refused"):  # an older agent's answer has no "refused"
        said = _paint("fail", "REFUSED", colour) + f" ({link['refused']})"
    elif central:
        said = _paint("ok", "up", colour)
    else:
        said = _paint("fail", "DOWN", colour) + (f" ({link['detail']})" if link.get("detail") else "")
    lines.append(f"central link: {said}")
    if clock_words := (data.get("central") or {}).get("clock_words"):
        lines.append(_paint("warn", f"{clock_words}: check NTP", colour))
    if (mqtt := data.get("mqtt")) is not None:
        level = {"connected": "ok", "refused": "fail"}.get(mqtt["state"], "warn")
        detail = f" ({mqtt['detail']})" if mqtt.get("detail") else ""
        rejected = f", {mqtt['rejected_total']} messages were not an order" if mqtt.get("rejected_total") else ""
        since = f" since {shown_at(mqtt['since'], zone)}" if mqtt["state"] != "connected" and mqtt.get("since") else ""
        lines.append(f"mqtt link: {_paint(level, mqtt['state'], colour)}{since}{detail}{rejected}")
        if waiting := mqtt.get("events_unpublished"):
            lines.append(_paint("warn", f"  {waiting} status events not yet published", colour))
        if mqtt.get("events_refused"):  # an older agent's answer has none
            lines.append(_paint("fail", f"mqtt events refused: {mqtt['events_refused']}", colour))
        if mqtt.get("not_delivering"):
            lines.append(_paint("fail", f"mqtt orders not delivered: {mqtt['not_delivering']}", colour))
        for r in (mqtt.get("rejected") or [])[:3]:  # the newest; edge doctor and the status page list more
            error = r.get("error") or {}
            what = error.get("field") or error.get("error") or ""
            lines.append(
                f"  not an order: {shown_at(r['received_at'], zone)} {r.get('order_id') or '?'}"
                f" {what}: {str(error.get('reason', ''))[:100]}".rstrip()
            )
    lines.append("last recovery: " + (_row_text(data["recovery"][0], zone) if data["recovery"] else "none"))
    lines.append("last alert: " + (_row_text(data["alerts"][0], zone) if data["alerts"] else "none"))
    if (mail := data.get("mail")) is not None:
        lines.append(_mail_line(mail, colour))
    return "\n".join(lines)


def _mail_line(mail: dict[str, Any], colour: bool) -> str:
    """Whether the manager is told: what the status page's mail line says, for the technician at the box."""
    waiting = f"{mail['pending']} waiting"
    if mail.get("server_error"):
        return "alert mail: " + _paint("fail", f"{waiting}, the relay cannot be used: {mail['server_error']}", colour)
    if dead := mail.get("dead"):
        return "alert mail: " + _paint("fail", f"{waiting}, {len(dead)} refused for good: edge alerts outbox", colour)
    return "alert mail: " + _paint("ok", waiting if mail["pending"] else "ok", colour)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok, warn, fail
    detail: str


def _database_checks(settings: Settings) -> list[Check]:
    """The database's checks, then the disk space: asked also where there is no database (yet), since a card too full
    for its first start is why it may be missing or empty."""
    return [*_database_file_checks(settings), _disk_space_check(settings), _backup_check(settings)]


def _backup_check(settings: Settings) -> Check:
    """The newest backup's age: a nightly backup failing night after night said nothing here (the upgrade79 probe)."""
    from edge.alerts.render import wait_text
    from edge.ops.backup import BACKUP_AHEAD_SKEW_S, backup_dir, newest_backup_at

    where, taken = backup_dir(settings), newest_backup_at(settings)
    if taken is None:
        return Check("backup", "warn", f"none in {where} (the nightly edge-backup.timer writes one; now: edge backup)")
    age_s = time.time() - taken
    if age_s < -BACKUP_AHEAD_SKEW_S:  # "0 min old" hid nights of failed backups (the verify79 probe, V4)
        ahead = wait_text(int(-age_s // 60))
        return Check(
            "backup",
            "warn",
            f"newest dated {ahead} ahead of this box's clock in {where}: taken while the clock was wrong, its age"
            " cannot be told (now: edge backup)",
        )
    age_s = max(0.0, age_s)
    stale_h = settings.backup.stale_after_h
    level = "warn" if stale_h and age_s >= stale_h * 3600 else "ok"
    return Check("backup", level, f"newest {wait_text(int(age_s // 60))} old in {where}")


def _database_file_checks(settings: Settings) -> list[Check]:
    path = settings.agent.db_path
    if not path.exists():
        return [Check("database", "fail", f"{path} does not exist (the agent creates it on first start)")]
    if path.stat().st_size == 0:  # a first start that could not write its tables (a full card): the next one does
        return [
            Check(
                "database",
                "fail",
                f"{path} is empty: the agent's first start could not make its tables; its next start with room on"
                " the card does",
            )
        ]
    try:
        found = check_file(path, full=True)
    except StoreUnreadableError as err:  # the user `edge doctor` became cannot open it: no backup mends that
        return [Check("database", "fail", str(err))]
    except StoreError as err:
        from edge.store.db import full_card, no_room, read_only  # here: the doctor's usual run does not load them

        if read_only(path):  # SQLite cannot open a sound WAL database there either: a backup would not mend it
            return [Check("database", "fail", f"{path}: {read_only_advice(path.parent)}")]
        if no_room(path, err.__cause__):  # nor on a card too full for its -shm: room mends it, not a backup
            return [Check("database", "fail", f"{path} cannot be opened: {full_card(path.parent)}")]
        return [Check("database", "fail", f"{path}: {err}; {restore_advice(settings)}")]
    integrity, version, newest = list(found.problems), found.version, found.newest_order_at
    latest = migrations.latest_version(migrations.load_migrations())
    # Sound but not the agent's to write (`sudo cp backup.db edge.db`): the agent's start names it, so does doctor.
    not_ours = unwritable_database(path)
    checks = [
        *([Check("database owner", "fail", not_ours)] if not_ours else []),
        Check(
            "database integrity",
            "ok" if integrity == ["ok"] else "fail",
            "ok" if integrity == ["ok"] else "; ".join(integrity[:3]) + f"; {restore_advice(settings)}",
        ),
        Check(
            "database schema",
            "ok" if version == latest else "fail",
            f"version {version}"
            + (
                ""
                if version == latest
                else f", this agent expects {latest} "
                + ("(edge migrate)" if version < latest else "(written by a newer agent: upgrade this one)")
            ),
        ),
    ]
    now = time.time()
    behind = (newest or 0) - now
    clock_ok = now > 1_767_225_600 and behind < CLOCK_BEHIND_MAX_S  # after 2026-01-01, not behind stored orders
    detail = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)) + (
        "" if clock_ok else f" is {int(max(behind, 0))} s behind the newest order: check NTP / RTC"
    )
    checks.append(Check("clock", "ok" if clock_ok else "fail", detail))
    checks.append(_box_check(path))
    return checks


def _box_check(path: Path) -> Check:
    """Whether the database ran in another box (a cloned or moved SD card, found at the agent's start): told for
    MOVED_TOLD_S after, with what to do. Before stop 81 both boxes of a cloned card said OK here (the replace81 probe,
    F4)."""
    moved = card_moved_of_file(path)
    if moved is None:
        return Check("box", "ok", "no other box ran this database")
    shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moved.at))
    if time.time() - moved.at > MOVED_TOLD_S:
        return Check("box", "ok", f"this database was moved in from another box on {shown}")
    until = "?" if moved.ran_until is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moved.ran_until))
    return Check(
        "box",
        "warn",
        f"this database ran in another box until {until} (its last order there) and in this one since {shown}: a"
        " cloned or moved SD card; orders recovered from before then print marked COPY. If this box replaces that"
        " one, keep the old one off (never run both); if it is another store's box, stop the agent and give it its"
        " own agent.store_id and an empty data_dir",
    )


def _disk_space_check(settings: Settings) -> Check:
    folder = settings.agent.data_dir
    while not folder.exists() and folder != folder.parent:  # not made yet: the file system it will be made on
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    free_mb = usage.free // 2**20
    return Check(
        "disk space",
        "ok" if free_mb >= settings.alerts.disk_free_min_mb else "fail",
        f"{free_mb} MB free of {usage.total // 2**20} MB on {folder}",
    )


def _unreachable(printer: NetworkPrinterSettings) -> str:
    """Why the agent cannot connect to a network printer, naming what to check; "" when it takes the connection.
    Connected to as the agent's transport does (the same lookup and timeout); "offline" alone left the technician to
    the agent's log for the reason."""
    from edge.transports import TcpTransport

    where, key = f"{printer.host}:{printer.port}", f"printers.{printer.name}"
    transport = TcpTransport(printer.name, printer.host, printer.port, connect_timeout=printer.connect_timeout)
    try:
        transport.open()
    except DeviceUnreachableError as err:
        cause = err.__cause__
        if unresolved_words := unresolved(err, printer.host):
            return f"{where}: {unresolved_words}; check {key}.host"
        if isinstance(cause, ConnectionRefusedError):
            return f"{where} refuses connections: wrong port ({key}.port), or not a network printer"
        timed_out = isinstance(cause, TimeoutError)
        if timed_out or getattr(cause, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            within = f" in {printer.connect_timeout:g}s" if timed_out else ""
            return f"no answer from {where}{within}: the printer is off, or {key}.host is the wrong address"
        return f"{where}: {cause or err}"
    transport.close()
    return ""


async def _printer_checks(settings: Settings) -> list[Check]:
    from edge.printing.drivers import make_driver  # the agent's own drivers: the doctor sees what the agent sees

    async def one(name: str) -> Check:
        printer = settings.printers[name]
        if isinstance(printer, NetworkPrinterSettings) and (why := await asyncio.to_thread(_unreachable, printer)):
            return Check(f"printer {name}", "fail", f"offline: {why}")
        driver = make_driver(printer)
        try:
            state = await driver.status()
            in_order = await driver.answers_in_order() if state == PrinterState.ONLINE else None
        finally:
            driver.close()
        if in_order is False:  # answers DLE EOT, not GS r: it cannot say when a ticket is out (docs/printing.md)
            return Check(
                f"printer {name}",
                "warn",
                "online, but it does not answer GS r: a ticket that paper runs out on while the printer prints it "
                "from its buffer counts as printed (use a model that does, e.g. an Epson TM)",
            )
        level = (
            "fail"
            if state in BLOCKING_STATES
            else ("warn" if state in (PrinterState.PAPER_NEAR_END, PrinterState.UNKNOWN) else "ok")
        )
        return Check(f"printer {name}", level, state.value.replace("_", " "))

    return list(await asyncio.gather(*(one(name) for name in settings.printers)))


# Names the kernel numbers in the order it finds the adapters: after a reboot or a replug ttyUSB0 and ttyUSB1 can swap.
_NUMBERED_PORT = re.compile(r"/dev/tty(USB|ACM)[0-9]+")


def _port_name_checks(settings: Settings) -> list[Check]:
    """A serial printer or scanner named by its kernel number: the kitchen's tickets could print at the bar."""
    ports = [(f"printer {n}", p.device) for n, p in settings.printers.items() if p.type == "serial"]
    ports += [(f"scanner {n}", s.port) for n, s in settings.scanners.items() if s.type == "serial"]
    return [
        Check(
            f"{what} port",
            "warn",
            f"{port} is numbered in the order adapters are found and can change at a reboot: use its "
            "/dev/serial/by-id/ name, or /dev/serial/by-path/ (the USB socket) for adapters without a serial number",
        )
        for what, port in ports
        if _NUMBERED_PORT.fullmatch(port)
    ]


async def _scanner_checks(settings: Settings, api_call: ApiCall, agent: dict[str, Any] | None) -> list[Check]:
    """Each scanner as the running agent sees it (connected; reading codes, or only lines that are none: a wrong baud
    rate reads so), else, with the agent down, whether its port is on the box."""
    if not settings.scanners:
        return []
    seen: dict[str, dict[str, Any]] = {}
    if agent is not None:
        with contextlib.suppress(EdgeError):
            status, body = await api_call(settings, "GET", "/api/v1/scans?limit=1")
            if status == 200 and isinstance(body, dict) and isinstance(body.get("scanners"), list):
                seen = {s["name"]: s for s in body["scanners"] if isinstance(s, dict) and "name" in s}
    checks = []
    for name, scanner in settings.scanners.items():
        what, port, state = f"scanner {name}", scanner.port, seen.get(name)
        if state is None:  # the agent does not run: what the box shows
            if await asyncio.to_thread(os.path.exists, port):
                checks.append(Check(what, "ok", f"{port} is there (the agent is not running: nothing read)"))
            else:
                checks.append(Check(what, "fail", f"{port} does not exist: is it plugged in? (ls /dev/serial/by-id/)"))
        elif not state.get("connected"):
            checks.append(Check(what, "fail", f"{port}: not connected ({state.get('detail') or 'no reason given'})"))
        elif (rejected := state.get("rejected") or 0) and not state.get("codes"):
            checks.append(
                Check(
                    what,
                    "warn",
                    f"{port}: {rejected} lines read since the start, none a code: a wrong baud rate (scanners.{name}"
                    f".baudrate = {scanner.baudrate}), or the scanner set to add a prefix (docs/scanners.md)",
                )
            )
        else:
            codes = state.get("codes") or 0
            checks.append(Check(what, "ok", f"{port}: connected, {codes} code{'' if codes == 1 else 's'} read"))
    return checks


def _flow_control_checks(settings: Settings) -> list[Check]:
    """A serial printer without working flow control: a long ticket would overrun its buffer, so the agent sends at
    the slowest printer's pace (3 lines a second) once its first kilobyte is out."""
    return [
        Check(
            f"printer {name} flow control",
            "warn",
            f'flow_control = "{p.flow_control}" holds nothing back (pyserial on Linux hands only RTS/CTS to the '
            "kernel): long tickets go out at 3 lines a second; set the printer's handshake and flow_control = "
            '"rtscts" (or "xonxoff")',
        )
        for name, p in settings.printers.items()
        if p.type == "serial" and p.flow_control in ("none", "dsrdtr")
    ]


async def _smtp_check(settings: Settings) -> Check:
    from edge.alerts.mailer import Mailer

    if not settings.smtp.host:
        return Check("smtp", "warn", "not configured: no alert mails")
    smtp = settings.smtp
    mailer = Mailer(smtp)
    resting = await _login_resting(settings)
    try:
        greeting = await mailer.check(next(iter(settings.alerts.to or settings.alerts.critical_to), None))
    except AlertError as err:
        return Check("smtp", "fail", f"{err}{resting}")
    login = f"logged in as {smtp.username}" if smtp.username else "without a login"
    return Check(
        "smtp",
        "ok",
        f"{smtp.host}:{smtp.port} takes mail from {mailer.sender} ({login}, greeted as {greeting}){resting}",
    )


async def _login_resting(settings: Settings) -> str:
    """What the check says when the agent's alert mail rests after the relay refused this very login: a person's
    check logs in all the same (one more failed login, should it still be wrong), and says until when alert mail
    waits."""
    from edge.alerts.login_rest import rest_until
    from edge.store.files import login_rest_of_file

    rest = await asyncio.to_thread(login_rest_of_file, settings.agent.db_path)
    until = None if rest is None else await rest_until(rest, settings.smtp, time.time())
    if until is None:
        return ""
    return (
        f"; this check logged in although alert mail rests after the relay refused this login: not tried before"
        f" {shown_at(until, settings.agent.timezone)} (`edge alerts test` tries at once)"
    )


async def _central_check(settings: Settings) -> Check:
    from edge.sync.client import CentralClient, CentralRejectedError

    if not settings.central.url:
        return Check("central api", "warn", "not configured")
    central_time = RemoteClock("central")
    client = CentralClient(settings.central, settings.agent.store_id, central_time=central_time)
    answers = f"{shown_url(settings.central.url)} answers" + (
        f" through the proxy {settings.central.proxy}" if settings.central.proxy else ""
    )
    await client.start()
    try:
        await client.health(look_up_first=True)
        # Health takes no token: one order asked for as the agent asks is what shows central lets the box in.
        await client.orders_since("", 1)
    except CentralRejectedError as err:
        return Check("central api", "fail", f"{answers}, but refuses the box: {err}")
    except EdgeError as err:
        return Check("central api", "fail", str(err))
    finally:
        await client.close()
    box_minus_central = central_time.box_minus_theirs()
    if box_minus_central is None:
        return Check("central api", "ok", f"{answers} (without its time: no Date header)")
    # The agent takes the ages of orders on central's clock; the box's own still dates tickets, events and mails.
    off = clock_off_words(box_minus_central, "central")
    if off is None:
        return Check("central api", "ok", f"{answers}; the box's clock agrees with central's")
    return Check(
        "central api",
        "warn",
        f"{answers}, but {off}: check NTP (timedatectl); times on tickets, events and mails follow the box's clock",
    )


async def _mqtt_check(settings: Settings, agent: dict[str, Any] | None) -> Check:
    """The broker, logged in to from here; and, when the agent runs, its own link's state."""
    if not settings.mqtt.url:
        return Check("mqtt broker", "ok", "not configured (orders come over HTTP push only)")
    from edge.sync.mqtt import probe  # loads paho-mqtt: only when MQTT is configured

    if problem := await asyncio.to_thread(probe, settings):
        return Check("mqtt broker", "fail", f"{shown_url(settings.mqtt.url)}: {problem}")
    link = (agent or {}).get("mqtt") or {}
    seen = f"; the agent's link: {link['state']} {link.get('detail', '')}".rstrip() if link else ""
    rejected = (
        f"; {link['rejected_total']} messages were not an order (edge status)" if link.get("rejected_total") else ""
    )
    # The login says nothing of the orders topic: a broker grants a subscription its ACL will not deliver on, and the
    # store may not publish there to try. Only the agent's link, seeing orders come by recovery, can tell.
    missed = f"; orders not delivered: {link['not_delivering']}" if link.get("not_delivering") else ""
    level = "fail" if missed else "warn" if link and (link["state"] != "connected" or rejected) else "ok"
    return Check("mqtt broker", level, f"{shown_url(settings.mqtt.url)} accepts the login{seen}{rejected}{missed}")


async def _agent_status(settings: Settings, api_call: ApiCall) -> dict[str, Any] | None:
    try:
        status, body = await api_call(settings, "GET", "/api/v1/status")
    except EdgeError:
        return None
    return body if status == 200 and isinstance(body, dict) else None


async def _agent_check(settings: Settings, api_call: ApiCall, agent: dict[str, Any] | None) -> Check:
    """``agent``: its GET /api/v1/status answer, read once for the doctor's checks."""
    try:
        status, body = await api_call(settings, "GET", "/ready")
    except EdgeError as err:
        return Check("agent", "fail", str(err))
    if status == 200 and body.get("ready") is True:
        host, port = agent_address(settings)
        ready = f"running, ready on port {port}" + (f" (edge.toml: {settings.api.port})" * (port != settings.api.port))
        if settings.api.host not in (host, "0.0.0.0", "::"):
            ready += f" at {host} (edge.toml: {settings.api.host})"
        if changed := _changed_since_start(settings, agent):
            return Check(
                "agent",
                "warn",
                f"{ready}, but {changed} changed after the agent started: it runs what was there then (the checks"
                " below read the file as it is now); take it up with: sudo systemctl restart edge-agent",
            )
        return Check("agent", "ok", ready)
    failing = [f"{name}: {c.get('detail') or 'not ok'}" for name, c in failing_checks(body).items()]
    if not failing and not body.get("reason"):  # not the agent's /ready: another program's JSON on api.port
        return Check("agent", "fail", not_the_agent(f"port {settings.api.port}", status, str(body)[:100]))
    return Check("agent", "fail", "not ready: " + ("; ".join(failing) or str(body["reason"])))


# /proc's process start and uptime count in ticks of 1/100 s: each may be that much short.
_PROC_TICKS_S = 0.02


def _process_started(data_dir: Path, uptime_s: float) -> float | None:
    """When the agent holding ``data_dir`` started (its process, before it read any file), on the wall clock; None
    when that cannot be read (no lock line, no /proc) or is not that agent's (its pid since reused by a process that
    started after the agent did). The status API's uptime is whole seconds and counted from after the imports: a file
    saved just before the start was taken for one changed after it."""
    try:
        holder = (data_dir / "agent.lock").read_text(errors="replace").split()
        if holder[:2] != ["agent", "pid"]:
            return None
        stat = Path(f"/proc/{int(holder[2])}/stat").read_text()
        since_boot_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    start_ticks = int(stat.rpartition(")")[2].split()[19])  # field 22, starttime (proc(5)); the name may hold spaces
    now = time.time()
    started = now - since_boot_s + start_ticks / os.sysconf("SC_CLK_TCK")
    return started if started <= now - uptime_s + 1 else None


def restart_hint(settings: Settings) -> str:
    """For a command the running agent refused (401, 404): the words to add if the config or secrets file changed after
    it started, so it refused by what was there before (a token rotated, a printer added); "" if neither, or unknown."""
    started = _process_started(settings.agent.data_dir, 0)  # the agent's process: no uptime known, it refused
    changed = "" if started is None else _changed_after(settings, started + _PROC_TICKS_S)
    if not changed:
        return ""
    return (
        f"{changed} changed after the agent started: it still runs with what was there then; take it up with: "
        "sudo systemctl restart edge-agent"
    )


def _changed_since_start(settings: Settings, status: dict[str, Any] | None) -> str:
    """The config or secrets file written after the running agent started ("" if neither, or unknown)."""
    if status is None or not isinstance(status.get("uptime_s"), (int, float)):
        return ""
    started = _process_started(settings.agent.data_dir, status["uptime_s"])
    if started is None:
        started = time.time() - status["uptime_s"] - 1  # uptime is whole seconds
    else:
        started += _PROC_TICKS_S
    return _changed_after(settings, started)


def _changed_after(settings: Settings, started: float) -> str:
    """The config or secrets file written after ``started`` (wall clock), "" if neither. One dated ahead of the clock
    (saved while it was ahead, NTP set it right since) says nothing of when it was saved: a restart, the step named,
    did not clear it for hours (the week79 probe, F1)."""
    files = [Path(settings.source), *([settings.secrets_file] if settings.secrets_file else [])]
    now = time.time()
    for path in files:
        with contextlib.suppress(OSError):
            if path.is_file() and started < path.stat().st_mtime <= now:
                return str(path)
    return ""


def _zone_check(settings: Settings) -> Check:
    """The zone of the times on tickets and the status page, of alert hours and the business day."""
    if settings.agent.timezone:
        return Check("time zone", "ok", f"{settings.agent.timezone} (agent.timezone)")
    local = dt.datetime.now().astimezone()
    if local.utcoffset() == dt.timedelta(0):  # many images ship in UTC: a store elsewhere sees every time off
        return Check(
            "time zone",
            "warn",
            f"the system's, {local.tzname()}: tickets, the status page and alert hours show UTC; set agent.timezone to "
            "the store's zone (e.g. Europe/Berlin)",
        )
    return Check("time zone", "ok", f"the system's, {local.tzname()} (agent.timezone is not set)")


def check_startable(settings: Settings) -> None:
    """ConfigError for what `edge run` would refuse to start with beyond the keys: the printing check (templates,
    profiles, logos; not its cache) and a database that is another store's; SchemaTooNewError for one a newer agent
    wrote."""
    from edge.printing.check import PrintingCheck
    from edge.store.files import schema_of_file, store_of_file
    from edge.store.identity import check_store
    from edge.store.migrations import load_migrations, refuse_newer

    PrintingCheck(settings, cache_dir=None)
    check_store(settings.agent.store_id, store_of_file(settings.agent.db_path), settings.agent.db_path)
    if (version := schema_of_file(settings.agent.db_path)) is not None:
        refuse_newer(version, load_migrations())


def _config_check(settings: Settings) -> Check:
    try:
        check_startable(settings)
    except (ConfigError, SchemaTooNewError) as err:
        return Check("config", "fail", f"{settings.source}: {err}: the agent will not start")
    return Check("config", "ok", f"{settings.source}: {len(settings.printers)} printers")


async def doctor(settings: Settings, api_call: ApiCall) -> list[Check]:
    """Every check, in the order a technician would go through them."""
    checks = [await asyncio.to_thread(_config_check, settings)]
    checks += [Check("config", "warn", unsafe.problem) for unsafe in settings.unsafe]
    checks.append(_zone_check(settings))
    checks += await asyncio.to_thread(_database_checks, settings)
    agent = await _agent_status(settings, api_call)  # None when it does not answer
    checks.append(await _agent_check(settings, api_call, agent))
    checks += await _printer_checks(settings)
    checks += _port_name_checks(settings)
    checks += _flow_control_checks(settings)
    checks += await _scanner_checks(settings, api_call, agent)
    # At once: without internet each may wait out a name lookup the router's DNS does not answer (10-30 s).
    checks += await asyncio.gather(_smtp_check(settings), _central_check(settings), _mqtt_check(settings, agent))
    return checks


def render_checks(checks: list[Check], *, colour: bool) -> str:
    return "\n".join(f"{_paint(c.level, f'{c.level.upper():<4}', colour)}  {c.name:<20} {c.detail}" for c in checks)
