"""A tiny in-process bus of past-tense facts; a failing handler never hurts the publisher."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from edge.states import CentralDown, HoldReason, JobState, JobVariant, OrderSource, RunState, RunTrigger, ScanOutcome

if TYPE_CHECKING:
    from edge.orders.totals import TotalsProblem

log = structlog.get_logger()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderStored(Event):
    order_id: str
    number: str
    job_ids: tuple[int, ...]
    printers: tuple[str, ...]  # where its new jobs wait, so those spools look at once
    source: OrderSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderConflicted(Event):
    order_id: str
    source: OrderSource
    number: str = ""  # the order number as the other side sent it (recovery fills these three)
    reason: str = ""  # how it differs from the stored order, for a person
    run_id: int | None = None  # the recovery run that found it
    # Pushed or over MQTT: the first field that differs ("" unknown), the revision sent and the one that stands here
    field: str = ""
    revision: int = 0
    stands: int = 0
    again: bool = False  # a redelivery answered from its kept reject: see MqttOrderRejected.again


@dataclasses.dataclass(frozen=True, kw_only=True)
class CancelRefused(Event):
    """A cancel at or below the stored open revision: not applied, the order stays open and is made (its sender is
    answered 409 naming the revision to send)."""

    order_id: str
    number: str
    source: OrderSource
    revision: int  # the cancel's
    stored: int  # the stored, open revision
    again: bool = False  # a redelivery answered from its kept reject: see MqttOrderRejected.again


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobPrinted(Event):
    job_id: int
    order_id: str
    printer: str
    latency_s: float  # from the order being stored to the last byte confirmed


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobFailed(Event):
    job_id: int
    order_id: str
    printer: str
    error: str
    attempts: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobDead(Event):
    job_id: int
    order_id: str
    order_number: str
    printer: str
    error: str
    attempts: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterStatusChanged(Event):
    printer: str
    old: str
    new: str
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobHeld(Event):
    """A ticket waited longer than its station's stale age, or its printer left the config and nothing serves its
    station: a person releases (or routes) or discards it."""

    job_id: int
    order_id: str
    printer: str
    age_s: float
    reason: HoldReason = HoldReason.STALE
    order_number: str = ""  # what the staff call the order (mails name it); empty when the order row is gone
    station: str | None = None  # its station (None: a receipt); with printer "", the station no printer serves
    variant: JobVariant | None = None  # a change or void ticket (STORNO): the mail says which, not "a ticket"


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobRedirected(Event):
    job_id: int
    order_id: str
    from_printer: str
    to_printer: str
    state: JobState  # after the move: a dead or stale-held job moved by the config is still dead, or held
    order_number: str = ""  # what the staff call the order (mails name it)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CentralLinkChanged(Event):
    up: bool
    detail: str = ""
    cause: CentralDown = CentralDown.LINE  # why it is down (up: unused)
    down_for_s: float = 0.0  # down this long already when told: central silent since its first unanswered probe


@dataclasses.dataclass(frozen=True, kw_only=True)
class CentralAnswersAgain(Event):
    """The health probe is answered in time again after ``silent_s`` of probes that got through and no answer, the
    link kept up meanwhile (a slow health check is no outage): what central took meanwhile could not reach the box."""

    silent_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecoveryStarted(Event):
    run_id: int
    trigger: RunTrigger


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrdersRecovered(Event):
    """A run of ``trigger`` stored orders new to the box (committed): each id with how long before the store central
    created it, on central's clock as its answers date it. The MQTT link judges from it whether it should have had
    them."""

    run_id: int
    trigger: RunTrigger
    ages_s: tuple[tuple[str, float], ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecoveryCompleted(Event):
    run_id: int
    counts: dict[str, int]
    duration_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecoveryFailed(Event):
    run_id: int
    phase: RunState
    error: str
    retry_in_s: float | None = None  # the agent runs again by itself this soon (central busy, slow or failing)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageProblem(Event):
    detail: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageRecovered(Event):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertSent(Event):
    alert_type: str
    key: str
    resolved: bool
    recipients: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlertSuppressed(Event):
    alert_type: str
    key: str
    reason: str  # silenced, inhibited, outside_hours, cap; dropped: cleared (over within group_wait), moved


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanRecorded(Event):
    scanner: str
    code: str
    outcome: ScanOutcome
    order_id: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScannerConnectionChanged(Event):
    scanner: str
    connected: bool
    detail: str = ""
    first: bool = False  # the run's first word on it: an earlier run may have told the same outage


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecoveryOrderInvalid(Event):
    """Recovery found an order at central that fails validation or routing: not stored, not printed; kept in the run."""

    run_id: int
    order_id: str
    number: str | None
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderTotalsMismatched(Event):
    """An order was stored whose totals do not add up (items, subtotal, discount, total, tax); it prints as sent."""

    order_id: str
    number: str
    problems: tuple[TotalsProblem, ...]
    source: OrderSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextUnprintable(Event):
    """A job printed text its printer's code page cannot show (as "?"): told once per printer and text in a run."""

    printer: str
    order_id: str
    order_number: str
    texts: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderRevised(Event):
    """A higher revision of an order was stored: changed, or cancelled (``status``)."""

    order_id: str
    number: str
    revision: int
    status: str  # open | cancelled
    job_ids: tuple[int, ...]  # the jobs that now show it: rewritten in place, or new change/void tickets
    printers: tuple[str, ...]  # spools to look at once
    source: OrderSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class PushAuthChanged(Event):
    """Orders pushed over HTTP began to be refused for their token or signature (``refused``: the sender's differs
    from the box's, or its clock from ours; every push fails until a person sets them alike), or one was let in again.
    Told on a change only, and the first push let in after a start tells it too (an alarm of an earlier run ends)."""

    refused: bool
    reason: str = ""  # why the first refused push was refused: wrong_token, bad_signature, stale_signature ...
    remote: str = ""  # the sender's address


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttConnectionChanged(Event):
    """The MQTT broker link went up or down; ``refused`` when the broker turned the login or the certificate down
    (a person must fix the config, retrying will not)."""

    connected: bool
    detail: str = ""
    refused: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttEventsRefused(Event):
    """The broker answers the store's events (or status) with a refusal (its ACL): they wait, tried again; ``refused``
    False once it takes them."""

    refused: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttDelivery(Event):
    """Whether the broker delivers on the store's orders topic: ``delivering`` False when recovery brought orders the
    link, subscribed all the while, never got (a broker whose ACL does not let the store read the topic grants the
    subscription and delivers nothing); True again when an order arrives over MQTT."""

    delivering: bool
    detail: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttSessionLost(Event):
    """The broker had no session for this store though it had one before, and no [central] link is set up: orders
    central published meanwhile were never queued for it, and no recovery fetches them."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MqttOrderRejected(Event):
    """A message on the orders topic was not a valid order (or conflicted): acknowledged, kept for a person, reported
    on the events topic; nothing printed."""

    reject_id: int
    order_id: str | None
    error: str  # the HTTP API's error slug: invalid_order, malformed_request, conflict
    reason: str
    # The broker sent the message again (no PUBACK reached it: a crash) and it was answered from its kept reject: the
    # same refusal, its alarm raised again (the crash may have come before the alert rules stored it), counted nowhere.
    again: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderEventsRefused(Event):
    """Central refused an order's oldest pending status event on its own, not for good (a 410 for an order it archived,
    a 409, a 422 without the contract's codes): that order's events wait, tried again now and then; the others' go."""

    order_id: str
    number: str | None  # None when the order's row is gone
    status: int
    reason: str  # central's answer, shortened
    waiting: int  # the order's events pending


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderEventRejected(Event):
    """Central refused one status event for good (the contract's 422 codes): it is never sent again, and central does
    not hear of that change of the order."""

    order_id: str
    number: str | None  # None when the order's row is gone
    event: str  # the status event refused (received, printed, ...)
    status: int
    reason: str  # central's answer, shortened


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseMoved(Event):
    """At the start: the database ran in another box until now (a cloned or moved SD card; identity.record_hardware)."""

    ran_until: float | None  # when the other box took its newest order (its clock); None if it took none


Handler = Callable[[Any], None]


class EventBus:
    """Synchronous fan-out; async consumers put events on their own queue."""

    def __init__(self) -> None:
        self._handlers: list[tuple[type[Event], Handler]] = []

    def subscribe(self, handler: Handler, event_type: type[Event] = Event) -> Callable[[], None]:
        entry = (event_type, handler)
        self._handlers.append(entry)

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for event_type, handler in list(self._handlers):
            if isinstance(event, event_type):
                try:
                    handler(event)
                except Exception:  # a broken subscriber must not stop intake or printing
                    log.exception("event_handler_failed", event_name=event.name)
