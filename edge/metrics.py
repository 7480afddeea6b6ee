"""Prometheus metrics of one agent: counters fed by bus events, gauges read from the store at scrape time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily

from edge import __version__
from edge.events import (
    AlertSent,
    AlertSuppressed,
    CancelRefused,
    CentralLinkChanged,
    EventBus,
    JobDead,
    JobFailed,
    JobPrinted,
    MqttConnectionChanged,
    MqttOrderRejected,
    OrderConflicted,
    OrderRevised,
    OrderStored,
    OrderTotalsMismatched,
    PrinterStatusChanged,
    RecoveryCompleted,
    RecoveryFailed,
    RecoveryOrderInvalid,
    ScanRecorded,
    StorageProblem,
    StorageRecovered,
)
from edge.printing.ages import JobAges
from edge.printing.spooler import Spooler
from edge.printing.status import BLOCKING_STATES, PrinterState
from edge.scanners import Scanner
from edge.states import WAITING_JOB_STATES, JobState, OrderSource
from edge.store.jobs import JobStore

if TYPE_CHECKING:  # only the type: an agent without [mqtt] never imports paho-mqtt
    from edge.sync.mqtt import MqttLink

# The printer label of jobs no printer serves (a station nobody routes: printer "" in the database).
NO_PRINTER_LABEL = "(none)"

# Paper states get their own 0/1 series so an alert rule can say "paper out" without knowing state codes.
_PAPER = {PrinterState.PAPER_OUT: "out", PrinterState.PAPER_NEAR_END: "near_end"}


class Metrics:
    """One registry per agent (not the process-global one), so a test can run several agents side by side."""

    def __init__(self, bus: EventBus, printers: list[str]) -> None:
        self._bus = bus
        self.registry = r = CollectorRegistry()
        Info("edge_agent", "Version of the running agent", registry=r).info({"version": __version__})
        Gauge("edge_agent_start_time_seconds", "When the agent started (unix seconds)", registry=r).set(time.time())
        self.orders = Counter(
            "edge_orders_received", "Orders stored, by source (push, recovery)", ["source"], registry=r
        )
        self.job_outcomes = Counter(
            "edge_print_job_outcomes",
            "Print attempts by outcome (printed, failed, dead)",
            ["printer", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "edge_print_latency_seconds",
            "Order acknowledged to last byte confirmed at the printer",
            ["printer"],
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.jobs = Gauge("edge_print_jobs", "Print jobs in the database by state", ["printer", "state"], registry=r)
        self._unconfigured: set[str] = set()  # printers of jobs that no configured printer is: "" or gone from config
        self.queue_depth = Gauge(
            "edge_queue_depth", "Jobs waiting to print (queued, printing or failed)", ["printer"], registry=r
        )
        self.oldest = Gauge(
            "edge_oldest_queued_job_age_seconds", "Age of the oldest job not yet printed (0 when none)", registry=r
        )
        self.printer_up = Gauge(
            "edge_printer_up",
            "1 when the printer takes jobs (online, paper near end or unknown)",
            ["printer"],
            registry=r,
        )
        self.paper = Gauge(
            "edge_printer_paper", "1 while the printer reports this paper state", ["printer", "paper"], registry=r
        )
        self.printer_changes = Counter(
            "edge_printer_status_changes", "Printer state transitions, by new state", ["printer", "state"], registry=r
        )
        self.recoveries = Counter("edge_recovery_runs", "Recovery runs finished, by outcome", ["outcome"], registry=r)
        self.recovery_duration = Histogram(
            "edge_recovery_duration_seconds",
            "Duration of completed recovery runs",
            buckets=(1, 5, 15, 60, 300, 900, 3600),
            registry=r,
        )
        self.recovery_conflicts = Counter(
            "edge_recovery_conflicts",
            "Orders recovery found here with other content at central (the local one kept, a person told)",
            registry=r,
        )
        self.recovery_invalid = Counter(
            "edge_recovery_invalid",
            "Orders recovery found at central that fail validation or routing (not stored, a person told)",
            registry=r,
        )
        self.central_up = Gauge(
            "edge_central_api_up", "1 while the central API answers, 0 while it does not", registry=r
        )
        self.emails = Counter(
            "edge_alert_emails",
            "Alert e-mails, by outcome (sent, suppressed) and type",
            ["outcome", "alert_type"],
            registry=r,
        )
        self.scans = Counter("edge_scans", "Barcode scans, by scanner and outcome", ["scanner", "outcome"], registry=r)
        self.scanner_connected = Gauge(
            "edge_scanner_connected",
            "1 while a configured scanner's port is open, 0 while it is gone",
            ["scanner"],
            registry=r,
        )
        self.storage_ok = Gauge("edge_storage_writable", "1 while the database takes writes", registry=r)
        self.totals_mismatched = Counter(
            "edge_order_totals_mismatched",
            "Orders stored whose totals do not add up, by source",
            ["source"],
            registry=r,
        )
        self.order_conflicts = Counter(
            "edge_order_conflicts",
            "Orders refused because their revision was stored before with other content, or cancels at or below the"
            " stored open revision, by source",
            ["source"],
            registry=r,
        )
        self.order_revisions = Counter(
            "edge_order_revisions",
            "Higher revisions of orders stored, by status (open, cancelled)",
            ["status"],
            registry=r,
        )
        self.storage_ok.set(1)
        self.central_up.set(1)  # until the link monitor says otherwise; no monitor means nothing to alert on
        for source in OrderSource:
            self.orders.labels(source)
            self.totals_mismatched.labels(source)
            self.order_conflicts.labels(source)
        for name in printers:
            for outcome in ("printed", "failed", "dead"):
                self.job_outcomes.labels(name, outcome)  # present at 0 from the start, so rate() works on the first job
        self._unsubscribe: list[Callable[[], None]] = [
            bus.subscribe(handler, event) for event, handler in self._handlers().items()
        ]

    def _handlers(self) -> dict[type, Callable[..., None]]:
        return {
            OrderStored: lambda e: self.orders.labels(e.source).inc(),
            JobPrinted: self._job_printed,
            JobFailed: lambda e: self.job_outcomes.labels(e.printer, "failed").inc(),
            JobDead: lambda e: self.job_outcomes.labels(e.printer, "dead").inc(),
            PrinterStatusChanged: lambda e: self.printer_changes.labels(e.printer, e.new).inc(),
            RecoveryCompleted: self._recovery_completed,
            RecoveryFailed: lambda e: self.recoveries.labels("failed").inc(),
            CentralLinkChanged: lambda e: self.central_up.set(1 if e.up else 0),
            AlertSent: lambda e: self.emails.labels("sent", e.alert_type).inc(),
            AlertSuppressed: lambda e: self.emails.labels("suppressed", e.alert_type).inc(),
            ScanRecorded: lambda e: self.scans.labels(e.scanner, e.outcome).inc(),
            StorageProblem: lambda e: self.storage_ok.set(0),
            StorageRecovered: lambda e: self.storage_ok.set(1),
            OrderConflicted: self._order_conflicted,
            CancelRefused: lambda e: None if e.again else self.order_conflicts.labels(e.source).inc(),
            RecoveryOrderInvalid: lambda e: self.recovery_invalid.inc(),
            OrderTotalsMismatched: lambda e: self.totals_mismatched.labels(e.source).inc(),
            OrderRevised: lambda e: self.order_revisions.labels(e.status).inc(),
        }

    def _order_conflicted(self, event: OrderConflicted) -> None:
        if event.again:  # counted when it was refused
            return
        self.order_conflicts.labels(event.source).inc()
        if event.source == OrderSource.RECOVERY:
            self.recovery_conflicts.inc()

    def _job_printed(self, event: JobPrinted) -> None:
        self.job_outcomes.labels(event.printer, "printed").inc()
        self.latency.labels(event.printer).observe(event.latency_s)

    def _recovery_completed(self, event: RecoveryCompleted) -> None:
        self.recoveries.labels("completed").inc()
        self.recovery_duration.observe(event.duration_s)

    def watch_rejections(self, rejected: Mapping[str, int]) -> None:
        """Expose the API's refused-request counts (kept by the auth middleware) as a counter by reason."""

        class _Rejections:
            def collect(self) -> Iterator[CounterMetricFamily]:
                family = CounterMetricFamily(
                    "edge_api_requests_rejected", "API requests refused by auth, by reason", labels=["reason"]
                )
                for reason, count in sorted(rejected.items()):
                    family.add_metric([reason], count)
                yield family

        self.registry.register(_Rejections())

    def watch_mqtt(self, link: MqttLink) -> None:
        """The MQTT link's series, registered only when [mqtt] is configured (no 'down' broker without one)."""
        r = self.registry
        Gauge(
            "edge_mqtt_orders_unacknowledged",
            "Messages the broker delivered that are not acknowledged yet (waiting, being stored, or stored and waiting"
            " for an earlier one's acknowledgement)",
            registry=r,
        ).set_function(lambda: link.unacknowledged)
        Gauge(
            "edge_mqtt_orders_in_progress", "Messages being read, validated and stored now (at most 64)", registry=r
        ).set_function(lambda: link.in_progress)
        connected = Gauge("edge_mqtt_connected", "1 while the MQTT broker link is up", registry=r)
        refused = Gauge("edge_mqtt_refused", "1 while the broker refuses the login or certificate", registry=r)
        rejected = Counter(
            "edge_mqtt_rejected",
            "Messages on the orders topic that were not a valid order, by error",
            ["error"],
            registry=r,
        )
        for error in ("invalid_order", "malformed_request", "conflict", "request_entity_too_large"):
            rejected.labels(error)

        def changed(event: MqttConnectionChanged) -> None:
            connected.set(1 if event.connected else 0)
            refused.set(1 if event.refused else 0)

        self._unsubscribe += [
            self._bus.subscribe(changed, MqttConnectionChanged),
            self._bus.subscribe(lambda e: None if e.again else rejected.labels(e.error).inc(), MqttOrderRejected),
        ]

    async def scrape(
        self, jobs: JobStore, spoolers: Mapping[str, Spooler], ages: JobAges, scanners: Mapping[str, Scanner]
    ) -> bytes:
        """Reads the gauges that are cheaper to ask for than to track, then renders the text format."""
        counts = await jobs.counts()
        oldest = ages.oldest_wait(await jobs.waiting())
        for name, spooler in spoolers.items():
            for state in JobState:
                self.jobs.labels(name, state).set(counts.get((name, state), 0))
            self.queue_depth.labels(name).set(sum(counts.get((name, s), 0) for s in WAITING_JOB_STATES))
            self.printer_up.labels(name).set(0 if spooler.state in BLOCKING_STATES else 1)
            for printer_state, paper in _PAPER.items():
                self.paper.labels(name, paper).set(1 if spooler.state == printer_state else 0)
        # Jobs held for no printer and those of printers that left the config count too: the sums are the database's.
        # A name seen once stays, at 0 once its jobs are gone; there are as few as printers ever configured.
        self._unconfigured |= {printer for printer, _ in counts if printer not in spoolers}
        for printer in self._unconfigured:
            for state in JobState:
                self.jobs.labels(printer or NO_PRINTER_LABEL, state).set(counts.get((printer, state), 0))
        self.oldest.set(oldest or 0.0)
        for name, scanner in scanners.items():
            self.scanner_connected.labels(name).set(1 if scanner.connected else 0)  # never opened yet: gone too
        return generate_latest(self.registry)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
