"""What the API's routes work with: the agent's parts, handed over once by the composition root."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from edge.api.auth import Authenticator
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.events import EventBus
from edge.metrics import Metrics
from edge.orders.intake import OrderIntake
from edge.printing.ages import JobAges
from edge.printing.render import Renderer
from edge.printing.spooler import Spooler
from edge.scanners import Scanner
from edge.store.db import Database
from edge.store.jobs import JobStore
from edge.store.orders import OrderStore
from edge.store.rows import PrintableJob
from edge.store.scans import ScanStore

if TYPE_CHECKING:
    from edge.alerts.alerter import Alerter  # imported only when mail is configured ([smtp] host)
    from edge.sync import SyncService  # imported only when a central API is configured ([central] url)
    from edge.sync.mqtt import MqttLink  # imported only when [mqtt] is configured (it loads paho-mqtt)


@dataclasses.dataclass
class ApiDeps:
    settings: Settings
    db: Database
    intake: OrderIntake
    orders: OrderStore
    jobs: JobStore
    spoolers: dict[str, Spooler]
    wake_printer: Callable[[str], None]
    ages: JobAges  # how long jobs have waited, as the spools measure it (the queue's age is that)
    scans: ScanStore  # the scanners' store: its business day names an order by the number on its ticket
    accepting: bool = True  # False while shutting down: writes answer 503
    auth: Authenticator | None = None  # set by make_api; auth.rejected counts refused requests by reason
    metrics: Metrics | None = None
    render_job: Callable[[PrintableJob], bytes] | None = None  # job -> ESC/POS bytes, for the status page preview
    renderer: Callable[[], Renderer] | None = None  # for test pages (edge/api/printing.py); blocking at first call
    started_mono: float = dataclasses.field(default_factory=SYSTEM_CLOCK.mono)  # on ``clock.mono()``: the uptime
    scanners: dict[str, Scanner] = dataclasses.field(default_factory=dict)
    sync: SyncService | None = None  # None when no central API is configured
    clock: Clock = SYSTEM_CLOCK
    alerter: Alerter | None = None  # None when no SMTP server is configured
    mqtt: MqttLink | None = None  # None when no MQTT broker is configured
    bus: EventBus | None = None  # the agent's: what the API itself has to tell (pushes refused for their token)


DEPS = web.AppKey("deps", ApiDeps)


def require_accepting(deps: ApiDeps) -> None:
    """Writes answer 503 while the agent shuts down: the sender retries, against this agent's successor."""
    if not deps.accepting:
        raise web.HTTPServiceUnavailable(text="the agent is shutting down; retry later", headers={"Retry-After": "5"})
