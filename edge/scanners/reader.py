"""One configured scanner: reads codes on a thread of its own, hands each on, reconnects by itself with backoff."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from edge.clock import wait_set
from edge.config import ScannerSettings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.events import EventBus, ScannerConnectionChanged
from edge.log import Summarised
from edge.scanners.codes import TICKET_PREFIX, LineSplitter, NoiseError, decode_line, escape, noise_in_front
from edge.scanners.ports import READ_WAKE_S, ScannerPort, SerialPort

log = structlog.get_logger()

OnCode = Callable[[ScannerSettings, str, float], Awaitable[object]]  # (scanner, code, monotonic time it was read)
OpenPort = Callable[[ScannerSettings], ScannerPort]

_MIN_BACKOFF_S = 0.2
# A line ended by a suffix this soon after a code was cut off short is that code's rest, not a code (a scan again
# takes a person longer than that)
_TAIL_S = 1.0
_REJECTS_LOGGED_S = 60.0  # the same rejected line again: one log line this often, with how many since
_CUT_BY_STOP = "the agent stopped before the code had come whole (its end, or whether one follows): scan it again"
_NO_SUFFIX = (
    "sends no suffix: each code is taken after a short silence; set the scanner to end codes with CR (or LF or Tab)"
)


def _timed_read(port: ScannerPort) -> tuple[bytes, float]:
    """A read and when it returned (monotonic), taken on the reading thread: a busy loop must not make a code's bytes
    look further apart than they came."""
    data = port.read()
    return data, time.monotonic()


def _last_read(port: ScannerPort) -> tuple[bytes, float]:
    """What came since the last read, taken as the port closes, on the reading thread in one go: nothing the scanner
    sent before the close is left in the tty's buffer (where the close drops it)."""
    try:
        return port.read_waiting(), time.monotonic()
    finally:
        port.close()


def open_port(settings: ScannerSettings) -> ScannerPort:
    """Open the configured device; raises DeviceUnreachableError naming it."""
    if settings.type == "hid":
        # evdev is an optional extra (it is compiled at install time); only keyboard-wedge scanners need it.
        from edge.scanners.hid import HidPort

        return HidPort(settings)
    return SerialPort(settings)


class Scanner:
    """A driver for one scanner. Blocking device calls run on its own thread, never on the event loop."""

    def __init__(
        self, settings: ScannerSettings, on_code: OnCode, bus: EventBus, *, open_port: OpenPort = open_port
    ) -> None:
        self.settings = settings
        self.connected: bool | None = None  # None until the first attempt to open the port
        self.detail = ""
        self.codes = 0  # lines handed on as codes
        self.rejected = 0  # lines thrown away as noise
        self._rejects = Summarised("scan_rejected", every_s=_REJECTS_LOGGED_S)
        self.no_suffix = False  # its codes end by silence only (said once, and in the status detail)
        self._on_code = on_code
        self._bus = bus
        self._open_port = open_port
        # Its own thread: a read that blocks for READ_WAKE_S must not hold one of the loop's shared workers.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scanner-{settings.name}")
        self._splitter = LineSplitter()
        self._suffix_seen = False  # a code ended by CR, LF or Tab came on this connection
        self._cut_at: float | None = None  # when a code was cut off short on this connection (its tail may follow)
        # Ended by silence before the suffix is known on this connection: a whole code, or the head of one cut off
        # (a replug or a start is when a link cuts codes); taken once nothing follows within _TAIL_S.
        self._piece: tuple[bytes, float] | None = None
        self._port: ScannerPort | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def port_open(self) -> bool:
        return self._port is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"scanner-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()  # a blocked read notices within READ_WAKE_S
        if self._task is not None:
            try:
                async with asyncio.timeout(READ_WAKE_S + 2):
                    await self._task
            except TimeoutError:
                log.warning("scanner_stop_timeout", scanner=self.name)
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = _MIN_BACKOFF_S
        failed: str | None = None  # the last failure to open, while they last
        while not self._stopping.is_set():
            try:
                port = await loop.run_in_executor(self._executor, self._open_port, self.settings)
            except (
                Exception
            ) as err:  # DeviceUnreachableError, or a driver bug: retried either way, never the reader's end
                # A bug's traceback once, not at every retry (every reconnect_max_s, for good, on the SD card): the
                # status detail keeps saying it.
                if not isinstance(err, DeviceUnreachableError) and repr(err) != failed:
                    log.exception("scanner_open_failed", scanner=self.name)
                failed = repr(err)
                self._set_connected(False, str(err))
                await self._pause(delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)
                continue
            delay, failed = _MIN_BACKOFF_S, None
            self._port = port
            self._splitter.reset()
            self._set_connected(True, "")
            closed = False
            try:
                await self._read_until_lost(loop, port)
                # Stopping: the scans of its last moments are read too (the scanner beeped for them), to the close.
                last = await loop.run_in_executor(self._executor, _last_read, port)
                closed = True
                await self._feed(*last)
                self._end_at_stop()
            except DeviceWriteError as err:
                self._set_connected(False, str(err))
            except Exception as err:  # an unexpected failure must not end the reader for the rest of the day
                log.exception("scanner_read_failed", scanner=self.name)
                self._set_connected(False, f"read failed: {err!r}")
            finally:
                self._port = None
                if not closed:
                    await loop.run_in_executor(self._executor, port.close)
            await self._pause(delay)  # a port that fails at once after opening must not spin

    async def _pause(self, seconds: float) -> None:
        # Jitter keeps several scanners on one USB hub from retrying in lockstep.
        await wait_set(self._stopping, seconds * random.uniform(0.8, 1.2))

    async def _read_until_lost(self, loop: asyncio.AbstractEventLoop, port: ScannerPort) -> None:
        self._suffix_seen, self._cut_at, self._piece = False, None, None
        while not self._stopping.is_set():
            read = loop.run_in_executor(self._executor, _timed_read, port)
            # While half a line is pending, a silence ends it, and a piece waits for its rest no longer than _TAIL_S:
            # wait for the read no longer than that (the read goes on).
            while (left := self._wait_left(time.monotonic())) is not None:
                done, _ = await asyncio.wait({read}, timeout=left)
                if done:
                    break
                await self._end_by_silence(time.monotonic())
            await self._feed(*await read)

    async def _feed(self, data: bytes, read_at: float) -> None:
        await self._end_by_silence(read_at)  # these bytes came after a silence: what was pending ended before
        overflowed = self._splitter.overflowed
        lines = self._splitter.feed(data, read_at)
        if self._splitter.overflowed != overflowed:
            self._reject(f"no CR or LF within {self._splitter.max_line} bytes", self._splitter.overflow_head)
        for line in lines:
            await self._take(line, read_at, suffixed=True)

    def _end_at_stop(self) -> None:
        """What the stop left pending, once the port is closed: a code whose end never came, or one that came before
        this connection's suffix was known and waited for its rest. Neither is guessed at (the head of A-1011 is
        A-101, another order): each is named, not recorded, to be scanned again."""
        pending = [self._piece[0]] if self._piece is not None else []
        if rest := self._splitter.expire(math.inf):
            pending.append(rest)
        self._piece = None
        for line in pending:
            log.error("scan_not_recorded", scanner=self.name, bytes=escape(line), reason=_CUT_BY_STOP)

    def _wait_left(self, now: float) -> float | None:
        waits = [self._splitter.silence_left(now), None if self._piece is None else self._piece[1] + _TAIL_S - now]
        return min((max(0.0, w) for w in waits if w is not None), default=None)

    async def _end_by_silence(self, now: float) -> None:
        last_at = self._splitter.last_at
        if (pending := self._splitter.expire(now)) and last_at is not None:
            await self._take(pending, last_at, suffixed=False)
        if (piece := self._piece) is not None and now - piece[1] >= _TAIL_S:  # no rest came: it was a whole code
            await self._take_piece(piece)

    async def _take_piece(self, piece: tuple[bytes, float]) -> None:
        self._piece = None
        await self._take(*piece, suffixed=False, waited=True)

    async def _take(self, line: bytes, read_at: float, *, suffixed: bool, waited: bool = False) -> None:
        """A line ended by a suffix, or (``suffixed`` False) by a silence: a code handed on, or noise rejected.
        ``waited``: a piece ended by silence that waited _TAIL_S for its rest in vain."""
        try:
            code = decode_line(line)
        except NoiseError as err:
            # A keyboard-wedge port knows which key made a line noise (an AltGr combination its layout lacks).
            explain = getattr(self._port, "explain", None)
            reason = (explain(line) if explain else None) or str(err)
            self._reject(reason if suffixed else f"{reason}, then silence (no CR, LF or Tab)", line)
            return
        if not code:
            return
        if not suffixed and noise_in_front(line):
            # A scanner at another baud rate than the port's: a framing error's NUL and a character or two, its CR lost
            # in the garble. Read, "1" named today's order 1 (the scan71 probe); a real code comes with its suffix, or
            # clean from a scanner that sends none.
            self._reject(
                "noise in front of it and no CR, LF or Tab after it: garble (a baud rate unlike the port's?)", line
            )
            return
        if (piece := self._piece) is not None:
            if suffixed and read_at - piece[1] <= _TAIL_S:
                # Its rest, with the suffix: "A-101", a pause, "1\r" was A-1011's number, and A-101 names another order.
                self._piece, self._cut_at = None, piece[1]
                self._reject(f"cut off: its rest came {read_at - piece[1]:.1f} s later", piece[0])
            else:  # a second code ended by silence: the scanner sends no suffix, and the piece was a whole code
                await self._take_piece(piece)
        elif not suffixed and not waited and not self._suffix_seen and not self.no_suffix:
            self._piece = (line, read_at)
            return
        if suffixed and self._cut_at is not None:
            cut_at, self._cut_at = self._cut_at, None
            # The rest of the code cut off just before (a link retransmitting, a glitch): "10" then "42" was 1042's
            # number, and 42 alone names another order. A whole ticket code cannot be a tail: it is read.
            if read_at - cut_at <= _TAIL_S and not code.startswith(TICKET_PREFIX):
                self._reject(f"the rest of a code cut off {read_at - cut_at:.1f} s before: not read on its own", line)
                return
        if suffixed:
            self._suffix_seen = True
            if self.no_suffix:
                self.no_suffix = False
                log.info("scanner_sends_suffix", scanner=self.name)
                if self.connected:
                    self.detail = ""
        elif self._suffix_seen:
            # This scanner ends its codes: one that stops short was cut off (a cable pulled on a port that stays). It
            # is not guessed at; but a second one in a row is the scanner set to send none now, and is taken.
            self._suffix_seen = False
            self._cut_at = read_at
            self._reject(f"cut off: no CR, LF or Tab after it within {self._splitter.silence_s} s", line)
            return
        elif not self.no_suffix:
            self.no_suffix = True
            self.detail = _NO_SUFFIX
            log.warning("scanner_sends_no_suffix", scanner=self.name, detail=_NO_SUFFIX)
        self.codes += 1
        try:
            await self._on_code(self.settings, code, read_at)
        except Exception:  # the store failing must not stop the scanner; the next scan may get through
            log.exception("scan_not_recorded", scanner=self.name, code=code)

    def _reject(self, reason: str, line: bytes) -> None:
        self.rejected += 1
        # By its bytes: what lies under a hands-free scanner is read twice a second, each read rejected alike.
        self._rejects.note(escape(line), scanner=self.name, reason=reason, bytes=escape(line))

    def _set_connected(self, connected: bool, detail: str) -> None:
        self.detail = _NO_SUFFIX if connected and not detail and self.no_suffix else detail
        if connected == self.connected:
            return  # transitions only: a port that stays away is logged once, not at every retry
        first, self.connected = self.connected is None, connected
        if connected:
            log.info("scanner_connected", scanner=self.name, port=self.settings.port)
        else:
            log.warning("scanner_disconnected", scanner=self.name, port=self.settings.port, detail=detail)
        self._bus.publish(ScannerConnectionChanged(scanner=self.name, connected=connected, detail=detail, first=first))
