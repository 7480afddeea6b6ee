"""A tiny in-process bus of past-tense facts; a failing handler never hurts the publisher."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import structlog

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
    source: str  # "push" or "recovery"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderConflicted(Event):
    order_id: str
    source: str


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
                    log.exception("event_handler_failed", event=event.name)
