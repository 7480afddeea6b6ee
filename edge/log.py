"""structlog set-up: JSON in production, readable on a terminal, secrets scrubbed from every line."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

# A secret shorter than this is scrubbed only where it stands alone: a value that is all of it, or a word of its own
# between characters that are not letters or digits ("Bearer 1", "password=abc"). Scrubbed inside other words, a
# one-letter token would blank every such letter of every line. Before, such secrets were not scrubbed at all (the
# security81 probe, F3); the config check warns about a token this short.
_SHORT_SECRET = 4


class RedactSecrets:
    """Replaces every configured secret value wherever it appears in an event, even inside other strings; a short one
    (see _SHORT_SECRET) where it stands alone."""

    def __init__(self, secrets: Iterable[str]) -> None:
        known = {s for s in secrets if s}
        self._secrets = sorted((s for s in known if len(s) >= _SHORT_SECRET), key=len, reverse=True)
        short = sorted((s for s in known if len(s) < _SHORT_SECRET), key=len, reverse=True)
        self._short = re.compile("|".join(rf"(?<![^\W_]){re.escape(s)}(?![^\W_])" for s in short)) if short else None

    def scrub_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return self._short.sub("***", text) if self._short is not None else text

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrub(v) for v in value)
        return value

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if not self._secrets and self._short is None:
            return event_dict
        return {k: self._scrub(v) for k, v in event_dict.items()}


class _Known:
    """The secrets of the settings this process loaded, for text that is no log line (a traceback)."""

    redact = RedactSecrets(())


def known_secrets(secrets: Iterable[str]) -> None:
    _Known.redact = RedactSecrets(secrets)


def without_secrets(text: str) -> str:
    """``text`` with every secret of the loaded settings scrubbed, as log lines are."""
    return _Known.redact.scrub_text(text)


_WRITE_LINES = 256  # at most this many lines in one write


class LogStream:
    """The agent's log lines, written by a thread of their own. Its log is read by another process (journald under
    systemd), which may stop reading: journald waiting on the same stalled card it writes to, a terminal over an SSH
    session gone quiet. A line written on the event loop then blocked the whole agent once the pipe was full: no order
    answered, no ticket printed, /ready silent. Lines beyond ``capacity`` waiting are dropped instead, and their
    count is logged (`log_lines_dropped`) as soon as the reader takes lines again."""

    def __init__(self, stream: TextIO, *, capacity: int = 4096) -> None:
        """``stream``: where the lines go (stderr); written through a file descriptor of its own, so a write blocked
        there never holds the lock of Python's own ``sys.stderr`` (at exit, Python aborts on a daemon thread holding
        it)."""
        self.stream = stream
        self._fd = os.dup(stream.fileno())
        self._encoding = stream.encoding or "utf-8"
        self._lines: queue.Queue[str | None] = queue.Queue(capacity)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self._drop(1)

    def close(self, timeout: float) -> None:
        """Writes what waits, for at most ``timeout`` seconds (a reader that never reads again must not hold the
        exit); lines logged after this are not written."""
        if not self._thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():  # else it may still write to it
            os.close(self._fd)

    def _drop(self, count: int) -> None:
        with self._dropped_lock:
            self._dropped += count

    def _write(self) -> None:
        while True:
            batch = [self._lines.get()]
            while batch[-1] is not None and len(batch) < _WRITE_LINES:  # what else waits goes in the same write
                try:
                    batch.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            if lines := [line for line in batch if line is not None]:
                self._emit(lines)
            if batch[-1] is None:  # close() asked, after these
                return

    def _emit(self, lines: list[str]) -> None:
        if not self._written(lines):
            self._drop(len(lines))
            return
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:  # rendered (and redacted) as every line is, and written here: the queue may be full again
            said = _Said()
            structlog.wrap_logger(said).warning("log_lines_dropped", count=dropped, reason="the log's reader stopped")
            if said.line and not self._written([said.line]):
                self._drop(dropped)

    def _written(self, lines: list[str]) -> bool:
        data = memoryview(("\n".join(lines) + "\n").encode(self._encoding, "backslashreplace"))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:  # the reader is gone for good (a closed pipe): nobody to tell
            return False
        return True


class _Said:
    """A logger that keeps the line rendered for it."""

    line = ""

    def msg(self, message: str) -> None:
        self.line = message

    warning = msg


class _QueuedLogger:
    """structlog's logger for a LogStream: each rendered line is handed over, never written here."""

    def __init__(self, lines: LogStream) -> None:
        self._lines = lines

    def msg(self, message: str) -> None:
        self._lines.put(message)

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = log = msg


class _LibraryLines(logging.Handler):
    """Warnings and errors libraries log through Python's logging (asyncio's "Task exception was never retrieved",
    aiosqlite's, paho's) as our lines: on our stream, in our format, secrets scrubbed. Without a handler Python's last
    resort writes them to stderr itself: unredacted, and on the event loop, where a log reader that stopped reading
    would block the agent again."""

    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger().log(
            record.levelno, "library_log", logger=record.name, message=record.getMessage(), exc_info=record.exc_info
        )


_LIBRARY_LINES = _LibraryLines(logging.WARNING)


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: Any = None,
    lines: LogStream | None = None,
) -> None:
    """``lines``: the lines go out through it (the agent, which must go on whatever its log's reader does), to its
    stream; else each is written to ``stream`` (stderr) as it comes (a command)."""
    stream = lines.stream if lines is not None else stream or sys.stderr
    secrets = list(secrets)
    known_secrets(secrets)
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
        logger_factory=(lambda *_: _QueuedLogger(lines)) if lines else structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.getLogger().addHandler(_LIBRARY_LINES)  # once: a handler already there is not added again


class Summarised:
    """A line that a flood would repeat (requests refused for a wrong token: a till set up wrong, a scanner of the
    network) goes to the log the first time, then at most once every ``every_s`` per kind, with how many were left
    out since: each line is written to the SD card, and a flood must not write one per request.

    At most ``max_kinds`` kinds are kept: a kind taken from what arrives (a scanner's noise by its bytes) must not grow
    the memory or the log without end. A kind said more than ``every_s`` ago with nothing left out since is forgotten
    when room is needed (its next note would be said at once anyway); with no such room, new kinds share one."""

    OTHER_KINDS = "(other kinds)"

    def __init__(
        self,
        event: str,
        *,
        every_s: float = 10.0,
        level: str = "warning",
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 64,
    ) -> None:
        self._event = event
        self._every_s = every_s
        self._level = level
        self._clock = clock
        self._max_kinds = max_kinds
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def _kept(self, kind: str) -> str:
        """``kind``, or the kind shared by those beyond ``max_kinds``."""
        if kind in self._last or len(self._last) < self._max_kinds:
            return kind
        now = self._clock()
        for old in [k for k, at in self._last.items() if now - at >= self._every_s and k not in self._left_out]:
            del self._last[old]
        return kind if len(self._last) < self._max_kinds else self.OTHER_KINDS

    def due(self, kind: str) -> bool:
        """Whether a note of this kind now goes to the log (the caller may then gather what costs to gather)."""
        last = self._last.get(self._kept(kind))
        return last is None or self._clock() - last >= self._every_s

    def note(self, kind: str, **fields: Any) -> None:
        kind = self._kept(kind)
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
        # The same problem, its figures aside: a full card's refusal names its free megabytes, which other writers
        # move between tries.
        if (same := re.sub(r"\d+", "#", problem)) != self._said:
            self._said = same
            structlog.get_logger().warning(self._event, **self._fields, **fields, error=problem)

    def passed(self) -> None:
        self._said = None
