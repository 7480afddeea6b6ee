"""structlog set-up: JSON in production, readable on a terminal, secrets scrubbed from every line."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger


class RedactSecrets:
    """Replaces every configured secret value wherever it appears in an event, even inside other strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short values would blank out ordinary words; real tokens and passwords are longer.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if not self._secrets:
            return event_dict
        return {k: self._scrub(v) for k, v in event_dict.items()}


def configure_logging(
    *, fmt: str = "auto", level: str = "info", secrets: Iterable[str] = (), stream: Any = None
) -> None:
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text before redaction, so a secret inside an exception message is scrubbed too.
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class Summarised:
    """A line that a flood would repeat (requests refused for a wrong token: a till set up wrong, a scanner of the
    network) goes to the log the first time, then at most once every ``every_s`` per kind, with how many were left
    out since: each line is written to the SD card, and a flood must not write one per request."""

    def __init__(
        self,
        event: str,
        *,
        every_s: float = 10.0,
        level: str = "warning",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._event = event
        self._every_s = every_s
        self._level = level
        self._clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def due(self, kind: str) -> bool:
        """Whether a note of this kind now goes to the log (the caller may then gather what costs to gather)."""
        last = self._last.get(kind)
        return last is None or self._clock() - last >= self._every_s

    def note(self, kind: str, **fields: Any) -> None:
        if not self.due(kind):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = self._clock()
        left_out = self._left_out.pop(kind, 0)
        say = getattr(structlog.get_logger(), self._level)
        say(self._event, **fields, **({"more_since_last": left_out} if left_out else {}))

    def passed(self) -> bool:
        """Whether anything was said since the last pass: then the caller says it works again."""
        said = bool(self._last)
        self._last.clear()
        self._left_out.clear()
        return said


class SaidOnce:
    """A problem every retry meets again (a full card refusing a spool's, failover's or the outbox's writes) goes to
    the log once, and again only when it changes or after a try passed: each line is written to that same card, and
    the storage alert tells the manager."""

    def __init__(self, event: str, **fields: Any) -> None:
        self._event = event
        self._fields = fields
        self._said: str | None = None

    def failed(self, problem: str, **fields: Any) -> None:
        if problem != self._said:
            self._said = problem
            structlog.get_logger().warning(self._event, **self._fields, **fields, error=problem)

    def passed(self) -> None:
        self._said = None
