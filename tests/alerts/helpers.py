"""Helpers the alert tests share (and the technician's day, which sets mail up the same way): events and steps for a
bare Alerter, a printer down with a ticket waiting, the non-interactive setup's arguments, systemd's own reading of
the secrets file."""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import re
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from edge.alerts.alerter import Alerter
from edge.alerts.mailer import Mailer
from edge.app import Agent
from edge.clock import Clock
from edge.config import Secret, Settings
from edge.events import EventBus, JobDead, PrinterStatusChanged
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from edge.store.db import Database
from tests.alerts.conftest import SMTP_USER, relay_settings
from tests.helpers import config_dict, edge, toml

WRONG = "rotated-Passw0rd-nobody-typed"  # the store's old password, after it was changed at the provider


def login_settings(make_settings: Callable[..., Settings], relay: SmtpSink, password: str) -> Settings:
    """Settings that log in to ``relay`` (a ``login_relay``) with ``password``."""
    return relay_settings(make_settings, relay, username=SMTP_USER, password=password, allow_plain_login=True)


def with_password(settings: Settings, password: str) -> Settings:
    """The same settings with another smtp.password: what a technician puts in the secrets file between two runs."""
    return dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, password=Secret(password)))


async def printer_down_with_a_ticket(agent: Agent, printers: dict[str, SimPrinter], n: int = 1) -> None:
    """The kitchen printer unplugged while an order waits for it: a critical printer_offline alert."""
    printers["kitchen"].set_offline(True)
    assert agent.deps is not None
    await agent.deps.intake.accept(make_order(n, prefix="outbox", print_receipt=False))


def alerts_list_line(
    agent: Agent, printers: dict[str, SimPrinter], folder: Path, key: str
) -> Callable[[], Awaitable[str]]:
    """Reads the line `edge alerts list` (its own process, on the agent's data directory) shows for group ``key``."""
    config = folder / "list.toml"
    config.write_text(toml(config_dict(agent.settings.agent.data_dir, printers)), encoding="utf-8")

    async def listed() -> str:
        done = await edge("alerts", "list", "--config", str(config))
        assert done.returncode == 0, done.stderr
        return next(line for line in done.stdout.splitlines() if key in line)

    return listed


def fast(alert_settings: Callable[..., Settings], **alerts: Any) -> Settings:
    """Alert settings that mail at once and retry quickly, so a test sees several rounds in a second or two."""
    return alert_settings(
        **{
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "retry_base_s": 0.2,
            "retry_max_s": 0.4,
            "check_interval_s": 0.2,
            **alerts,
        }
    )


def kitchen_renamed(settings: Settings, new: str = "pass") -> Settings:
    """The same settings with the kitchen printer (same device) renamed ``new``, in [printers] and [stations]: what a
    technician does in edge.toml between two runs."""
    printers = {(new if name == "kitchen" else name): p for name, p in settings.printers.items()}
    printers[new] = dataclasses.replace(printers[new], name=new)
    stations = {s: [new if n == "kitchen" else n for n in names] for s, names in settings.stations.items()}
    return dataclasses.replace(settings, printers=printers, stations=stations)


def polled_every(settings: Settings, seconds: float, printer: str = "front") -> Settings:
    """The same settings with ``printer``'s status asked every ``seconds`` while it is idle."""
    polled = dataclasses.replace(settings.printers[printer], status_poll_s=seconds)
    return dataclasses.replace(settings, printers={**settings.printers, printer: polled})


EXTRA_RE = re.compile(r"Seit der letzten Mail (\d+|ein) weiter(?:e Male|es Mal)")


def offline(printer: str = "kitchen") -> PrinterStatusChanged:
    return PrinterStatusChanged(printer=printer, old="online", new="offline", detail="connection refused")


def online(printer: str = "kitchen") -> PrinterStatusChanged:
    return PrinterStatusChanged(printer=printer, old="offline", new="online")


async def run(alerter: Alerter) -> int:
    await alerter.step()
    return await alerter.deliver_due()


def dead_ticket(n: int, printer: str) -> JobDead:
    return JobDead(job_id=n, order_id=f"o{n}", order_number=f"A-{n}", printer=printer, error="paper jam", attempts=5)


async def restarted(settings: Settings, db_path: Path, clock: Clock) -> tuple[Alerter, Database]:
    """A new agent's alerter on the same database (the old one gone without a word, as after SIGKILL)."""
    db = await Database.open(db_path)
    return Alerter(settings=settings, db=db, bus=EventBus(), mailer=Mailer(settings.smtp), clock=clock), db


async def two_alarms(alerter: Alerter) -> None:
    """Two tickets dead on two printers: two alarm mails, tried at once."""
    alerter.on_event(dead_ticket(1, "kitchen"))
    alerter.on_event(dead_ticket(2, "front"))
    await run(alerter)


def subject(mail: EmailMessage) -> str:
    return str(mail["Subject"]).strip()  # a folded long subject parses back with a leading space


def extra(text: str) -> int:
    match = EXTRA_RE.search(text)
    return 0 if match is None else 1 if match.group(1) == "ein" else int(match.group(1))


async def add_jobs(db: Database, states: list[str], created_at: float) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at) VALUES ('o1', "
            "'A-1', 'h', '{}', 'web', '2026-01-01T00:00:00Z', ?)",
            (created_at,),
        )
        for n, state in enumerate(states):
            await conn.execute(
                "INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, idempotency_key) VALUES "
                "('o1', 'ticket', 'kitchen', 'kitchen', ?, ?, ?)",
                (state, created_at, f"o1:ticket:kitchen:{n}"),
            )


# systemd's own parser: load_env_file() in src/basic/env-file.c, which PID 1 calls for EnvironmentFile= (execute.c,
# exec_context_load_environment). It lives in the private libsystemd-shared, exported for systemd's own binaries; with
# systemd not running as PID 1 here, calling it through ctypes is the one way to let systemd itself read our file.
_SYSTEMD_LIB = sorted(
    glob.glob("/usr/lib/*/systemd/libsystemd-shared-*.so") + glob.glob("/lib/*/systemd/libsystemd-shared-*.so")
)


def systemd_reads(path: Path) -> dict[str, str]:
    """What a unit with EnvironmentFile=PATH gets, as systemd 252's load_env_file(NULL, path, &strv) returns it."""
    if not _SYSTEMD_LIB:
        pytest.skip("libsystemd-shared not installed (Debian package systemd): cannot ask systemd's own parser")
    lib = ctypes.CDLL(_SYSTEMD_LIB[-1])
    pairs = ctypes.POINTER(ctypes.c_char_p)()
    rc = lib.load_env_file(None, str(path).encode(), ctypes.byref(pairs))
    assert rc == 0, f"systemd's load_env_file failed: {rc}"
    found: dict[str, str] = {}
    n = 0
    while pairs[n]:
        key, _, value = pairs[n].decode("utf-8").partition("=")
        found[key] = value
        n += 1
    return found


def non_interactive(
    config: Path, sink: SmtpSink, cert: Path, *extra: str, to: str = "chef@store.test", password_stdin: bool = True
) -> list[str]:
    """The fleet-rollout form: every answer a flag, the password on stdin (or, without ``password_stdin``, from
    EDGE_SMTP_PASSWORD in the environment)."""
    return [
        "--config",
        str(config),
        "--non-interactive",
        "--provider",
        "custom",
        "--host",
        "127.0.0.1",
        "--port",
        str(sink.port),
        "--security",
        "starttls",
        "--ca-file",
        str(cert),
        "--username",
        SMTP_USER,
        "--from",
        SMTP_USER,
        "--to",
        to,
        *(["--password-stdin"] if password_stdin else []),
        *extra,
    ]
