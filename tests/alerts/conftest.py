"""Alert fixtures: a self-signed certificate made at test time, a real SMTP server (aiosmtpd) with AUTH and STARTTLS, a
fake clock."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.alerts.alerter import Alerter
from edge.alerts.mailer import Mailer
from edge.clock import Clock
from edge.config import Settings
from edge.events import EventBus
from edge.sim.smtp import SmtpSink
from edge.store.db import Database

SMTP_USER, SMTP_PASSWORD = "edge@store.test", "s3cret-app-password"
T0 = 1_790_000_000.0  # a fixed start for the fake clock


class FakeClock(Clock):
    """Time that moves only when the test says so: group_wait and friends without real waiting.

    ``advance`` moves both clocks (time passed); ``step`` jumps the wall clock only, as NTP does."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.monotonic = 1000.0
        self.boot_id = "boot-1"  # a test that reboots the box sets another, and monotonic time from 0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.monotonic

    def boot(self) -> str:
        return self.boot_id

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.monotonic += seconds

    def step(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost: (cert, key). The client trusts it only via smtp.ca_file."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture
async def sink(server_tls: ssl.SSLContext) -> AsyncIterator[SmtpSink]:
    """An SMTP server on loopback that demands STARTTLS, then AUTH, and keeps every mail."""
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD, tls_context=server_tls)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def relay() -> AsyncIterator[SmtpSink]:
    """A plain relay on loopback (no TLS, no login) whose answers a test scripts, as real relays answer."""
    server = SmtpSink()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def login_relay() -> AsyncIterator[SmtpSink]:
    """A relay on loopback that wants a login (PLAIN and LOGIN offered, as Postfix/Dovecot SASL offers them)."""
    server = SmtpSink(username=SMTP_USER, password=SMTP_PASSWORD)
    await server.start()
    yield server
    await server.stop()


def relay_settings(make_settings: Callable[..., Settings], relay: SmtpSink, **smtp: Any) -> Settings:
    return make_settings(
        smtp={"host": "127.0.0.1", "port": relay.port, "security": "none", "sender": "edge@store.test", **smtp},
        alerts={
            "to": ["chef@store.test"],
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "disk_free_min_mb": 0,
            "retry_base_s": 1.0,
            "retry_max_s": 4.0,
        },
    )


def smtp_section(sink: SmtpSink, cert: tuple[Path, Path], **overrides: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": sink.port,
        "security": "starttls",
        "username": SMTP_USER,
        "password": SMTP_PASSWORD,
        "sender": "edge@store.test",
        "ca_file": str(cert[0]),
        "timeout_s": 5.0,
        **overrides,
    }


@pytest.fixture
def alert_settings(
    make_settings: Callable[..., Settings], sink: SmtpSink, cert: tuple[Path, Path]
) -> Callable[..., Settings]:
    """Settings whose mail goes to the test server; keyword arguments override [alerts] keys (``mqtt``: an [mqtt]
    section; ``sections``: more whole sections, e.g. [stations])."""

    def make(
        smtp: dict[str, Any] | None = None,
        mqtt: dict[str, Any] | None = None,
        sections: dict[str, Any] | None = None,
        **alerts: Any,
    ) -> Settings:
        return make_settings(
            agent={"store_name": "Filiale Mitte"},
            **({"mqtt": mqtt} if mqtt else {}),
            **(sections or {}),
            smtp=smtp_section(sink, cert, **(smtp or {})),
            alerts={
                "to": ["chef@store.test", "vize@store.test"],
                "disk_free_min_mb": 0,
                "retry_base_s": 1.0,
                "retry_max_s": 4.0,
                **alerts,
            },
        )

    return make


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The agent's SQLite file in tmp_path, migrated."""
    database = await Database.open(tmp_path / "data" / "edge.db")
    yield database
    await database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_alerter(db: Database, clock: FakeClock) -> Callable[..., Alerter]:
    """An alerter on the test database and fake clock, loops not started: tests drive step() and deliver_due()."""

    def make(settings: Settings, *, database: Database | None = None, bus: EventBus | None = None) -> Alerter:
        return Alerter(
            settings=settings, db=database or db, bus=bus or EventBus(), mailer=Mailer(settings.smtp), clock=clock
        )

    return make
